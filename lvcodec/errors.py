"""Exceptions of lvc. Each also inherits the builtin a caller would expect (as PyAV's do)."""


class LvcError(Exception):
    """Base of every error lvc raises on purpose; the CLI prints its message on one line."""

    exit_code = 1


class InputError(LvcError, ValueError):
    """The input video cannot be read or coded (not video, no video stream, no frames, too large...)."""

    exit_code = 2


class BitstreamError(LvcError, ValueError):
    """A ``.lvc`` stream is malformed: bad magic, unsupported version, truncation, CRC mismatch..."""

    exit_code = 3


class OutputExistsError(LvcError, FileExistsError):
    """The output exists and overwriting was not asked for."""

    exit_code = 4
