"""Writers for decoded video: y4m (our own, byte-exact 4:2:0), lossless FFV1 in .mkv and H.264 in .mp4
(both through PyAV). Chosen by the output's extension; ``-`` writes y4m to stdout."""

from __future__ import annotations

from fractions import Fraction

from .errors import InputError
from .frames import Picture

FORMATS = {".y4m": "y4m", ".mkv": "ffv1", ".mp4": "h264", ".yuv": "raw"}


def format_for(path: str) -> str:
    if path == "-":
        return "y4m"
    import os

    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise InputError(f"{path}: unsupported output type '{ext}' (use one of {', '.join(FORMATS)})")
    return FORMATS[ext]


class Y4MWriter:
    def __init__(self, fp, width: int, height: int, rate: Fraction):
        self.fp = fp
        fp.write(f"YUV4MPEG2 W{width} H{height} F{rate.numerator}:{rate.denominator} Ip A1:1 C420jpeg\n".encode())

    def write(self, pic: Picture) -> None:
        self.fp.write(b"FRAME\n")
        for p in (pic.y, pic.u, pic.v):
            self.fp.write(p.tobytes())

    def close(self) -> None:
        self.fp.flush()


class RawWriter(Y4MWriter):
    def __init__(self, fp, width: int, height: int, rate: Fraction):
        self.fp = fp

    def write(self, pic: Picture) -> None:
        for p in (pic.y, pic.u, pic.v):
            self.fp.write(p.tobytes())


class AVWriter:
    """FFV1 (lossless) in Matroska, or H.264 (x264, CRF 12, near-transparent) in MP4."""

    def __init__(self, fp, width: int, height: int, rate: Fraction, codec: str):
        import av

        fmt = "matroska" if codec == "ffv1" else "mp4"
        self.container = av.open(fp, "w", format=fmt)
        name = "ffv1" if codec == "ffv1" else "libx264"
        self.stream = self.container.add_stream(name, rate=rate)
        self.stream.width, self.stream.height = width + width % 2, height + height % 2
        if codec == "ffv1":
            self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        if name == "libx264":
            self.stream.options = {"crf": "12", "preset": "medium"}
        self.width, self.height = width, height

    def write(self, pic: Picture) -> None:
        import numpy as np

        if (self.stream.width, self.stream.height) != (pic.width, pic.height):  # x264 needs even sizes
            y = np.pad(pic.y, ((0, self.stream.height - pic.height), (0, self.stream.width - pic.width)), mode="edge")
            pic = Picture(y, pic.u, pic.v, pic.pts)
        frame = pic.to_av()
        frame.pts = None
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def open_writer(fp, path: str, width: int, height: int, rate: Fraction):
    kind = format_for(path)
    if kind == "y4m":
        return Y4MWriter(fp, width, height, rate)
    if kind == "raw":
        return RawWriter(fp, width, height, rate)
    return AVWriter(fp, width, height, rate, kind)
