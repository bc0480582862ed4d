"""Rate–distortion of trained models, measured through their real coding path.

Each held-out clip is coded as the codec codes it (:class:`lvcodec.codec.Encoder`: the first frame with
the intra model, then P-frames with motion searched against the *decoded* previous frame, vectors coded
with the inter model's factorized prior), every substream is entropy-coded to bytes, and a separate
decoder state decodes them again. The rate is the bytes of all substreams (the container's few header
bytes per frame are not counted); the distortion is PSNR-YUV of the decoded pictures. A decoded picture
that differs from the encoder's reconstruction is reported (the loop would not be closed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..codec import mv_lambda, psnr_yuv
from ..frames import Picture, from_tensor, quantize8, to_tensor


@dataclass
class RD:
    quality: int
    bytes: int = 0
    pixels: int = 0
    psnr_sum: float = 0.0
    frames: int = 0
    mismatches: int = 0  # decoded pictures that differ from the encoder's reconstruction

    @property
    def bpp(self) -> float:
        return 8 * self.bytes / self.pixels if self.pixels else float("nan")

    @property
    def psnr(self) -> float:
        return self.psnr_sum / self.frames if self.frames else float("nan")


@dataclass
class RDResult:
    video: list[RD] = field(default_factory=list)  # held-out clips: one I-frame, then P-frames
    images: list[RD] = field(default_factory=list)  # held-out images: I-frames
    clips: list[str] = field(default_factory=list)
    image_names: list[str] = field(default_factory=list)
    frames_per_clip: list[int] = field(default_factory=list)

    @property
    def mismatches(self) -> int:
        return sum(r.mismatches for r in self.video + self.images)


@torch.no_grad()
def _code_clip(intra, inter, pics: list[Picture], quality: int, rd: RD) -> None:
    q = quality - 1
    m = intra.downsampling
    enc_ref = dec_ref = None
    for k, pic in enumerate(pics):
        x = to_tensor(pic, m)
        if k == 0:
            out = intra.compress(x, q)
            x_dec = intra.decompress(out["strings"], out["shape"], q)["x_hat"]
        else:
            out = inter.encode(x, enc_ref, q, mv_lambda(quality))
            # decoder side: only the stream and its own reference
            x_dec = inter.decompress(out["strings"], out["shape"], dec_ref, q)["x_hat"]
        strings = out["strings"]
        enc_ref, dec_ref = quantize8(out["x_hat"]), quantize8(x_dec)
        rd.mismatches += int(not torch.equal(enc_ref, dec_ref))
        rd.bytes += sum(len(s) for s in strings)
        rd.pixels += pic.width * pic.height
        rd.psnr_sum += psnr_yuv(pic, from_tensor(dec_ref, pic.width, pic.height))
        rd.frames += 1


def measure_rd(intra, inter, clips: list[tuple[str, list[Picture]]], images: list[tuple[str, Picture]],
               qualities: tuple[int, ...], progress=None) -> RDResult:
    """Code ``clips`` (I then P-frames) and ``images`` (I-frames) at each quality; models need their CDF
    tables (``update(force=True)``) and eval mode."""
    res = RDResult(clips=[c for c, _ in clips], image_names=[n for n, _ in images],
                   frames_per_clip=[len(p) for _, p in clips])
    for quality in qualities:
        if clips:
            rd = RD(quality)
            for _, pics in clips:
                _code_clip(intra, inter, pics, quality, rd)
                if progress:
                    progress.update(len(pics))
            res.video.append(rd)
        if images:
            rd = RD(quality)
            for _, pic in images:
                _code_clip(intra, inter, [pic], quality, rd)
                if progress:
                    progress.update(1)
            res.images.append(rd)
    return res


def rd_table(res: RDResult) -> str:
    """Markdown table: bpp and PSNR-YUV per quality."""
    cols = []
    if res.video:
        cols.append(("held-out video", {r.quality: r for r in res.video}))
    if res.images:
        cols.append(("held-out images (I)", {r.quality: r for r in res.images}))
    if not cols:
        return "(no held-out data was measured)\n"
    head = "| quality | " + " | ".join(f"{n} bpp | {n} PSNR-YUV (dB)" for n, _ in cols) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(cols))]
    for q in sorted({q for _, d in cols for q in d}):
        cells = []
        for _, d in cols:
            r = d.get(q)
            cells += [f"{r.bpp:.4f}", f"{r.psnr:.2f}"] if r else ["", ""]
        lines.append(f"| {q} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
