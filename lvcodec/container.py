"""``lvcodec.open``: ``.lvc`` files in the shape PyAV users know.

Reading::

    with lvcodec.open("clip.lvc") as f:
        print(f.header.width, f.frames, f.rate)
        for packet in f.demux():                # Packets, with pts, is_keyframe, size
            ...
        for frame in f.decode(start_frame=10):   # Pictures: uint8 numpy planes y, u, v and pts
            ...

Writing::

    with lvcodec.open("out.lvc", "w", width=352, height=288, rate=25, quality=4, keyint=32) as f:
        for picture in pictures:                 # Pictures, or (H, W, 3) uint8 RGB arrays
            f.encode(picture)                    # returns the packets written

The file is written to a temporary name and renamed into place when it is closed without error.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Iterator

import numpy as np

from . import bitstream as bs
from .codec import (DEFAULT_KEYINT, DEFAULT_QUALITY, DecodeStats, Encoder, _AtomicOutput, _open_lvc, decode,
                    psnr_yuv)
from .frames import Picture
from .registry import DEFAULT_MODEL


def open(path: str, mode: str = "r", *, width: int | None = None, height: int | None = None,
         rate: Fraction | int | float = 25, quality: int = DEFAULT_QUALITY, keyint: int = DEFAULT_KEYINT,
         model: str = DEFAULT_MODEL, overwrite: bool = False, preset: str | None = None):
    """Open a ``.lvc`` file: ``"r"`` gives an :class:`InputContainer`, ``"w"`` an :class:`OutputContainer`
    (``width`` and ``height`` may be left out: the first picture sets them; ``preset`` is the encoder
    effort, one of the model's presets)."""
    if mode == "r":
        return InputContainer(path)
    if mode == "w":
        return OutputContainer(path, width, height, rate, quality, keyint, model, overwrite, preset)
    raise ValueError(f'invalid mode "{mode}", should be "r" or "w"')


class InputContainer:
    """A ``.lvc`` file open for reading. ``header`` is parsed at once; ``frames`` comes from the index."""

    def __init__(self, path: str):
        self.path = path
        self._fp = _open_lvc(path)
        try:
            self._reader = bs.Reader(self._fp)
            index = self._reader.read_index()
        except BaseException:
            self.close()
            raise
        self.header = self._reader.header
        self.version = self._reader.version
        self.keyframes = [e.frame for e in index.entries] if index else None
        self.frames = self._reader_footer_frames()

    def _reader_footer_frames(self) -> int | None:
        """Frame count from the footer (None on a pipe)."""
        fp = self._fp
        if not bs._seekable(fp):
            return None
        here = fp.tell()
        try:
            fp.seek(-bs.Footer.SIZE, 2)
            return bs.Footer.unpack(fp.read(bs.Footer.SIZE)).frame_count
        finally:
            fp.seek(here)

    @property
    def rate(self) -> Fraction:
        return Fraction(self.header.fps_num, self.header.fps_den)

    @property
    def time_base(self) -> Fraction:
        return Fraction(self.header.tb_num, self.header.tb_den)

    def demux(self) -> Iterator[bs.Packet]:
        """The packets in stream order, without decoding them."""
        yield from self._reader.packets()

    def decode(self, start_frame: int = 0, frames: int | None = None, conceal: bool = False,
               format: str = "numpy", stats: DecodeStats | None = None) -> Iterator[Picture]:
        """Decoded pictures (see :func:`lvcodec.decode`): ``format="numpy"`` gives uint8 numpy planes,
        ``"torch"`` the same planes as uint8 torch tensors."""
        if format not in ("numpy", "torch"):
            raise ValueError(f'invalid format "{format}", should be "numpy" or "torch"')
        for pic in decode(self.path, start_frame, frames, conceal, stats):
            if format == "torch":
                import torch

                pic = Picture(torch.from_numpy(pic.y), torch.from_numpy(pic.u), torch.from_numpy(pic.v), pic.pts)
            yield pic

    def close(self) -> None:
        if self._fp is not None and self.path != "-":
            self._fp.close()
        self._fp = None

    def __enter__(self) -> "InputContainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class OutputContainer:
    """A ``.lvc`` file open for writing: :meth:`encode` pictures, then :meth:`close` (or use ``with``)."""

    def __init__(self, path: str, width: int | None, height: int | None, rate, quality: int, keyint: int,
                 model: str, overwrite: bool, preset: str | None = None):
        from .registry import model_class

        model_class(model).check_preset(preset)  # an unknown preset fails before the file is touched
        self.path = path
        self.rate = Fraction(rate).limit_denominator(1 << 20)
        self.quality, self.keyint, self.model, self.preset = quality, keyint, model, preset
        self._out = _AtomicOutput(path, overwrite)
        self._encoder: Encoder | None = None
        self._writer: bs.Writer | None = None
        self.size = (width, height) if width and height else None
        if self.size:
            self._start(*self.size)
        self.psnr_sum = 0.0
        self.frames = 0

    def _start(self, width: int, height: int) -> None:
        self._encoder = Encoder(width, height, self.quality, self.keyint, self.model, preset=self.preset)
        self._out.__enter__()
        self._writer = bs.Writer(self._out.fp, self._encoder.header(self.rate))
        self.size = (width, height)

    @property
    def bytes_written(self) -> int:
        """Bytes of the file so far (its exact size once closed)."""
        return self._writer.bytes_written if self._writer else self._closed_bytes

    _closed_bytes = 0

    def encode(self, frame) -> list[bs.Packet]:
        """Code one picture (a :class:`Picture` or an (H, W, 3) uint8 RGB array); returns its packets,
        already written. ``reconstruction`` then holds what a decoder will output for it."""
        if isinstance(frame, np.ndarray):
            frame = _from_rgb(frame, self.frames)
        if self._encoder is None:
            self._start(frame.width, frame.height)
        packets = self._encoder.encode(frame)
        for packet in packets:
            self._writer.write(packet)
        self.reconstruction = self._encoder.reconstruction
        self.psnr_sum += psnr_yuv(frame, self.reconstruction)
        self.frames += 1
        return packets

    def close(self) -> None:
        """Finish the file (index, footer) and move it into place."""
        if self._writer is None:
            return
        try:
            self._writer.close()
        except BaseException as e:
            self._abort(e)
            raise
        self._closed_bytes = self._writer.bytes_written
        self._writer = None
        self._out.__exit__(None, None, None)

    def _abort(self, exc: BaseException) -> None:
        if self._writer is not None:
            self._writer = None
            self._out.__exit__(type(exc), exc, None)

    def __enter__(self) -> "OutputContainer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort(exc)


def _from_rgb(rgb: np.ndarray, pts: int) -> Picture:
    import av

    from .frames import from_av

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    pic = from_av(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24"))
    pic.pts = pts
    return pic

