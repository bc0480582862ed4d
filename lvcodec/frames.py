"""8-bit 4:2:0 pictures: reading any video PyAV reads, padding, and the models' tensor layout.

A :class:`Picture` holds three uint8 planes: Y (H, W) and U, V (ceil(H/2), ceil(W/2)). Models see a
picture padded (edge replication) to a multiple of the model's downsampling and laid out as 6 channels
at half resolution: the 2x2 pixel-unshuffle of Y (4 channels) then U and V.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import numpy as np

from .errors import InputError

MAX_DIM = 8192  # documented limit on width and height (luma samples)


@dataclass
class Picture:
    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    pts: int = 0

    @property
    def width(self) -> int:
        return self.y.shape[1]

    @property
    def height(self) -> int:
        return self.y.shape[0]

    def to_av(self):
        """As a yuv420p ``av.VideoFrame``."""
        import av

        w, h = self.width, self.height
        f = av.VideoFrame(w, h, "yuv420p")
        for plane, arr in zip(f.planes, (self.y, self.u, self.v)):
            buf = np.zeros((arr.shape[0], plane.line_size), np.uint8)
            buf[:, : arr.shape[1]] = arr
            plane.update(buf)
        f.pts = self.pts
        return f


def from_av(frame) -> Picture:
    """Planes of an ``av.VideoFrame`` converted to 8-bit 4:2:0 (converted if it is in another format)."""
    f = frame if frame.format.name == "yuv420p" else frame.reformat(format="yuv420p")
    w, h = f.width, f.height
    cw, ch = (w + 1) // 2, (h + 1) // 2
    planes = []
    for p, (pw, ph) in zip(f.planes, ((w, h), (cw, ch), (cw, ch))):
        a = np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[:ph, :pw]
        planes.append(a.copy())
    return Picture(*planes, pts=frame.pts if frame.pts is not None else 0)


@dataclass
class VideoInfo:
    width: int
    height: int
    rate: Fraction
    pix_fmt: str
    colour: dict | None = None  # H.273 colour description for the stream header
    variable_rate: bool = False  # set while reading: the source's frame durations differ


def _colour(cc, pix_fmt: str) -> dict:
    """H.273 code points of the coded 4:2:0 pictures, from the source's codec context."""
    def code(name: str) -> int:
        v = getattr(cc, name, None)
        v = int(getattr(v, "value", v) or 2)
        return v if 0 <= v < 256 else 2

    if not pix_fmt.startswith("yuv") and not pix_fmt.startswith("nv") and not pix_fmt.startswith("gray"):
        # converted by libswscale's default: BT.601 limited range
        return {"colour_primaries": 2, "transfer_characteristics": 2, "matrix_coefficients": 6, "full_range": 0}
    rng = getattr(cc, "color_range", 0)
    rng = int(getattr(rng, "value", rng) or 0)
    return {"colour_primaries": code("color_primaries"), "transfer_characteristics": code("color_trc"),
            "matrix_coefficients": code("colorspace"), "full_range": int(rng == 2 or pix_fmt.startswith("yuvj"))}


def open_video(src: str):
    """Open ``src`` (a path, or ``-`` for standard input) with PyAV; return (container, stream)."""
    import av

    try:
        container = av.open(sys.stdin.buffer if src == "-" else src, "r")
    except FileNotFoundError:
        raise InputError(f"{src}: no such file") from None
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise InputError(f"{src}: not a readable video ({_av_reason(e)})") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{src}: has no video stream")
    stream = container.streams.video[0]
    w, h = stream.codec_context.width, stream.codec_context.height
    if w > MAX_DIM or h > MAX_DIM:
        container.close()
        raise InputError(f"{src}: {w}x{h} is larger than the supported {MAX_DIM}x{MAX_DIM}")
    return container, stream


def _av_reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e).splitlines()[0]


def read_pictures(src: str, max_frames: int | None = None) -> tuple[VideoInfo, Iterator[Picture]]:
    """Info about the first video stream of ``src`` and an iterator over its frames as 4:2:0 pictures."""
    import av

    container, stream = open_video(src)
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    pix = stream.codec_context.pix_fmt or "unknown"
    info = VideoInfo(stream.codec_context.width, stream.codec_context.height, Fraction(rate), pix,
                     _colour(stream.codec_context, pix))

    def gen() -> Iterator[Picture]:
        n = 0
        prev = step = None
        try:
            for frame in container.decode(stream):
                if frame.pts is not None:
                    if prev is not None:
                        if step is None:
                            step = frame.pts - prev
                        elif frame.pts - prev != step:
                            info.variable_rate = True
                    prev = frame.pts
                if max_frames is not None and n >= max_frames:
                    break
                if frame.width > MAX_DIM or frame.height > MAX_DIM:
                    raise InputError(f"{src}: {frame.width}x{frame.height} is larger than the supported "
                                     f"{MAX_DIM}x{MAX_DIM}")
                pic = from_av(frame)
                pic.pts = n
                n += 1
                yield pic
        except av.error.FFmpegError as e:
            raise InputError(f"{src}: corrupt or truncated video after {n} frames ({_av_reason(e)})") from None
        finally:
            container.close()
        if n == 0:
            raise InputError(f"{src}: contains no video frames")

    return info, gen()


def padded_size(width: int, height: int, multiple: int) -> tuple[int, int]:
    return -(-width // multiple) * multiple, -(-height // multiple) * multiple


def to_tensor(pic: Picture, multiple: int):
    """(1, 6, Hp/2, Wp/2) float tensor in [0, 1], planes edge-padded to ``multiple`` luma samples."""
    import torch
    import torch.nn.functional as F

    wp, hp = padded_size(pic.width, pic.height, multiple)
    y = np.pad(pic.y, ((0, hp - pic.height), (0, wp - pic.width)), mode="edge")
    u = np.pad(pic.u, ((0, hp // 2 - pic.u.shape[0]), (0, wp // 2 - pic.u.shape[1])), mode="edge")
    v = np.pad(pic.v, ((0, hp // 2 - pic.v.shape[0]), (0, wp // 2 - pic.v.shape[1])), mode="edge")
    ty = F.pixel_unshuffle(torch.from_numpy(y)[None, None].float(), 2)
    tuv = torch.from_numpy(np.stack((u, v)))[None].float()
    return torch.cat((ty, tuv), 1) / 255.0


def hflip_layout(x):
    """Mirror a batch in the 6-channel layout of :func:`to_tensor` left to right, as if the pictures had been
    mirrored before the layout was made: the half-resolution grid flips *and* the two luma sub-pixel columns
    of each 2x2 block swap (pixel-unshuffle channels 0<->1 and 2<->3). Flipping only the grid would scramble
    luma detail finer than 2 pixels."""
    return x.flip(-1)[:, [1, 0, 3, 2, 4, 5]]


def quantize8(x):
    """Round a model output to the 8-bit grid the decoder stores (the DPB holds these values)."""
    import torch

    return torch.round(x.clamp(0, 1) * 255.0) / 255.0


def from_tensor(x, width: int, height: int, pts: int = 0) -> Picture:
    """Inverse of :func:`to_tensor` for an 8-bit-rounded tensor: crop back to the display size."""
    import torch
    import torch.nn.functional as F

    x8 = (x * 255.0).round().clamp(0, 255).to(torch.uint8)
    y = F.pixel_shuffle(x8[:, :4], 2)[0, 0].numpy()
    cw, ch = (width + 1) // 2, (height + 1) // 2
    return Picture(y[:height, :width].copy(), x8[0, 4, :ch, :cw].numpy().copy(),
                   x8[0, 5, :ch, :cw].numpy().copy(), pts)
