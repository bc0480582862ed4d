"""Bench inputs: the clips to code, read once and kept in memory as 8-bit 4:2:0 pictures.

A clip is a path to anything PyAV reads (y4m included), or ``demo`` / ``demo:WxH`` for the built-in
generated clip (:func:`lvcodec.demo.demo_clip`, 25 fps, default 352x288). Only the first ``frames``
frames are used. Every codec codes exactly the same pictures: with ``downscale`` a clip wider than 640
pixels is first cropped to a multiple of 4 and halved by a 2x2 area (mean) filter; an odd size is cropped
to even (the anchors' yuv420p needs it).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

DEMO_SIZE = (352, 288)
DOWNSCALE_ABOVE = 640  # --downscale halves clips wider than this


@dataclass
class Clip:
    name: str
    source: str
    pictures: list = field(repr=False)
    rate: Fraction
    source_width: int
    source_height: int
    pix_fmt: str
    preprocessing: list[str]

    @property
    def width(self) -> int:
        return self.pictures[0].width

    @property
    def height(self) -> int:
        return self.pictures[0].height

    @property
    def frames(self) -> int:
        return len(self.pictures)

    def digest(self) -> str:
        """SHA-256 of the pictures' planes and the frame rate: what the codecs are given."""
        h = hashlib.sha256(f"{self.width}x{self.height}@{self.rate}".encode())
        for p in self.pictures:
            for a in (p.y, p.u, p.v):
                h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def info(self) -> dict:
        return {"name": self.name, "source": self.source, "width": self.width, "height": self.height,
                "frames": self.frames, "rate": str(self.rate), "source_width": self.source_width,
                "source_height": self.source_height, "source_pix_fmt": self.pix_fmt,
                "preprocessing": self.preprocessing, "sha256": self.digest()}


def _avg2x2(a: np.ndarray) -> np.ndarray:
    b = a.astype(np.uint16)
    s = b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)


def downscale2x(pic):
    """2x area downscale (rounded mean of 2x2) of each plane, after cropping luma to a multiple of 4."""
    from ..frames import Picture

    h4, w4 = pic.height // 4 * 4, pic.width // 4 * 4
    return Picture(_avg2x2(pic.y[:h4, :w4]), _avg2x2(pic.u[: h4 // 2, : w4 // 2]),
                   _avg2x2(pic.v[: h4 // 2, : w4 // 2]), pic.pts)


def crop_even(pic):
    from ..frames import Picture

    h, w = pic.height // 2 * 2, pic.width // 2 * 2
    return Picture(pic.y[:h, :w], pic.u[: h // 2, : w // 2], pic.v[: h // 2, : w // 2], pic.pts)


def parse_demo(spec: str) -> tuple[int, int] | None:
    """(width, height) when ``spec`` names the generated clip (``demo`` or ``demo:WxH``), else None."""
    if spec == "demo":
        return DEMO_SIZE
    if spec.startswith("demo:"):
        try:
            w, h = (int(v) for v in spec[5:].lower().split("x"))
        except ValueError:
            raise ValueError(f'"{spec}": the generated clip is "demo" or "demo:WIDTHxHEIGHT"') from None
        if not (16 <= w <= 4096 and 16 <= h <= 4096):
            raise ValueError(f'"{spec}": size should be between 16x16 and 4096x4096')
        return w, h
    return None


def load_clip(spec: str, frames: int, downscale: bool = False) -> Clip:
    """Read the first ``frames`` pictures of ``spec`` (a video path, or ``demo[:WxH]``)."""
    size = parse_demo(spec)
    if size is not None:
        from ..demo import demo_clip

        pics = demo_clip(frames, *size)
        name, rate, pix_fmt = f"demo-{size[0]}x{size[1]}", Fraction(25), "rgb24 (generated)"
        sw, sh = size
    else:
        from ..frames import read_pictures

        info, it = read_pictures(spec, frames)
        pics = list(it)
        name, rate, pix_fmt, sw, sh = Path(spec).name, info.rate, info.pix_fmt, info.width, info.height
    steps = []
    if downscale and pics[0].width > DOWNSCALE_ABOVE:
        pics = [downscale2x(p) for p in pics]
        steps.append(f"2x area downscale (2x2 mean) from {sw}x{sh} after cropping to a multiple of 4")
    if pics[0].width % 2 or pics[0].height % 2:
        w0, h0 = pics[0].width, pics[0].height
        pics = [crop_even(p) for p in pics]
        steps.append(f"cropped {w0}x{h0} to even {pics[0].width}x{pics[0].height}")
    for i, p in enumerate(pics):
        p.pts = i
    return Clip(name, display_path(spec), pics, rate, sw, sh, pix_fmt, steps)


def default_bench_dir() -> Path | None:
    """``../shared/data/bench`` next to the current directory or next to this repository, if present."""
    repo = Path(__file__).resolve().parents[2]
    for d in (Path.cwd() / ".." / "shared" / "data" / "bench", repo.parent / "shared" / "data" / "bench"):
        if d.is_dir() and any(p.is_file() for p in d.iterdir()):
            return d.resolve()
    return None


def default_clips() -> list[str]:
    """Every file in :func:`default_bench_dir`, else the generated clip."""
    d = default_bench_dir()
    if d is None:
        return ["demo"]
    return sorted(str(p) for p in d.iterdir() if p.is_file() and not p.name.startswith("."))


def display_path(spec: str) -> str:
    """A clip's source as recorded: relative to the current directory when below it, else as given."""
    if parse_demo(spec) is not None:
        return spec
    try:
        return os.path.relpath(spec)
    except ValueError:
        return spec
