"""Exceptions of lvc. Each also inherits the builtin a caller would expect (as PyAV's do)."""

import functools
import sys


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


def cli_errors(interrupted: str = "lvc: interrupted"):
    """Decorator for the ``lvc`` commands: an :class:`LvcError` or ``OSError`` becomes one line on stderr and
    its exit code instead of a traceback; Ctrl-C prints ``interrupted`` and exits 130."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            import click

            try:
                return fn(*args, **kwargs)
            except LvcError as e:
                click.echo(f"lvc: error: {e}", err=True)
                sys.exit(e.exit_code)
            except KeyboardInterrupt:
                click.echo(interrupted, err=True)
                sys.exit(130)
            except OSError as e:
                click.echo(f"lvc: error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), err=True)
                sys.exit(1)

        return wrapper

    return deco
