"""Estimate what a conventional residual layer (8x8 DCT, no learning) on top of lvc's pictures would buy.

    python tools/residual_probe.py CLIP [--quality 2] [--step 16] [--p-step-scale 2] [--frames 8] [--skip-only]

Codes the first ``--frames`` pictures of CLIP (2x area-downscaled, as the bench does) with lvc at
``--quality`` and keyint 32, then adds to every decoded picture a layer coding its remaining error: an
orthonormal 8x8 DCT per plane, a dead-zone quantizer of step ``--step`` (times ``--p-step-scale`` on
P-frames), and per 8x8 block a coded/not-coded choice by rate and distortion (λ = 0.14·step² per bit, the
H.264 relation between λ and the quantizer step). The layer's picture is the reference of the next
P-frame, as it would be in a codec. With ``--skip-only`` P-frames are the motion-compensated prediction
alone (vectors coded by lvc, no latent), so the layer codes the whole prediction error.

The layer's rate is an *estimate*: the ideal static entropy of each coefficient position over the coded
blocks, plus the coded-block flags; no layer is written. lvc's bytes are real. This is a research probe
for deciding whether such a layer is worth building (it is not part of the codec or its bitstream).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from scipy.fft import dctn, idctn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from lvcodec.bench.clips import downscale2x  # noqa: E402  (the bench's preprocessing)
from lvcodec.codec import Encoder, mv_lambda  # noqa: E402
from lvcodec.frames import Picture, read_pictures, to_tensor  # noqa: E402

LAMBDA_PER_STEP2 = 0.14


def entropy_bits(symbols: np.ndarray) -> float:
    _, counts = np.unique(symbols, return_counts=True)
    return float(-(counts * np.log2(counts / counts.sum())).sum())


def code_layer(err: np.ndarray, step: float) -> tuple[float, np.ndarray]:
    """Estimated bits of coding the error plane ``err`` and what the layer reconstructs of it."""
    h, w = err.shape[0] // 8 * 8, err.shape[1] // 8 * 8
    c = dctn(err[:h, :w].reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3), axes=(2, 3), norm="ortho")
    q = np.sign(c) * np.floor(np.abs(c) / step + 0.3)  # dead zone: round with offset 0.3
    nonzero = np.abs(q).max((2, 3)) > 0
    coded = nonzero
    lam = LAMBDA_PER_STEP2 * step**2
    gain = (c**2).sum((2, 3)) - ((c - q * step) ** 2).sum((2, 3))
    for _ in range(3):  # block choices and the statistics they are priced with, to a fixed point
        if not coded.any():
            break
        bits = np.zeros(coded.shape)
        for i in range(8):
            for j in range(8):
                values, counts = np.unique(q[coded][:, i, j], return_counts=True)
                cost = -np.log2(counts / counts.sum())
                k = np.searchsorted(values, q[..., i, j]).clip(0, len(values) - 1)
                bits += np.where(values[k] == q[..., i, j], cost[k], 16.0)
        p = coded.mean().clip(1e-4, 1 - 1e-4)
        new = nonzero & (gain > lam * (bits - np.log2(1 - p) + np.log2(p)))
        if (new == coded).all():
            break
        coded = new
    q = q * coded[..., None, None]
    p = coded.mean().clip(1e-4, 1 - 1e-4)
    bits = coded.size * float(-(p * np.log2(p) + (1 - p) * np.log2(1 - p)))
    if coded.any():
        bits += sum(entropy_bits(q[coded][:, i, j]) for i in range(8) for j in range(8))
    out = np.zeros_like(err)
    out[:h, :w] = idctn(q * step, axes=(2, 3), norm="ortho").transpose(0, 2, 1, 3).reshape(h, w)
    return bits, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clip")
    ap.add_argument("--quality", type=int, default=2)
    ap.add_argument("--step", type=float, default=16.0, help="quantizer step of the layer on I-frames")
    ap.add_argument("--p-step-scale", type=float, default=2.0, help="P-frames' step relative to --step")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--skip-only", action="store_true", help="P-frames: the motion-compensated prediction alone")
    ap.add_argument("--no-downscale", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    _, pictures = read_pictures(args.clip, args.frames)
    enc = None
    if args.skip_only:
        from lvcodec import motion
    total_lvc = total_layer = pixels = 0
    psnrs = []
    for i, pic in enumerate(pictures):
        pic = pic if args.no_downscale else downscale2x(pic)
        if enc is None:
            enc = Encoder(pic.width, pic.height, quality=args.quality, keyint=32)
            if args.skip_only:
                inter, step_p = enc.model.inter, args.step * args.p_step_scale

                def encode_inter(x, ref, quality):  # cheapest luma error + λ·bits over the block sizes
                    best = None
                    for block in (16, 32, 64):
                        mv = motion.search(x, ref, lam=mv_lambda(quality) * motion.BLOCK / block, block=block)
                        c = inter._code_picture(x, ref, mv, quality - 1, skip=True)
                        sse = ((c["x_syn"].clamp(0, 1) - x) ** 2)[:, :4].sum().item() * 255**2
                        cost = sse + LAMBDA_PER_STEP2 * step_p**2 * len(c["strings"][0]) * 8
                        if best is None or cost < best[0]:
                            best = (cost, c)
                    return best[1]["strings"], best[1]["x_syn"]

                enc.model.encode_inter = encode_inter
        (packet,) = enc.encode(pic)
        lvc_bits = sum(len(s) for s in packet.substreams) * 8
        rec = enc.reconstruction
        step = args.step if i % enc.keyint == 0 else args.step * args.p_step_scale
        layer_bits, planes, mse = 0.0, [], []
        for src, dec in zip((pic.y, pic.u, pic.v), (rec.y, rec.u, rec.v)):
            err = src.astype(np.float64) - dec
            bits, fix = code_layer(err, step)
            out = np.clip(np.round(dec + fix), 0, 255).astype(np.uint8)
            layer_bits += bits
            planes.append(out)
            mse.append(((src.astype(np.float64) - out) ** 2).mean())
        psnr = 10 * np.log10(255**2 / ((6 * mse[0] + mse[1] + mse[2]) / 8))
        enc.ref = to_tensor(Picture(*planes), enc.model.downsampling)  # the layer is in the loop
        n = pic.y.size
        print(f"frame {i} {'IP'[i % enc.keyint > 0]}: lvc {lvc_bits / n:.4f} bpp + layer {layer_bits / n:.4f} bpp "
              f"-> PSNR-YUV {psnr:.2f} dB", flush=True)
        total_lvc, total_layer, pixels = total_lvc + lvc_bits, total_layer + layer_bits, pixels + n
        psnrs.append(psnr)
    print(f"{os.path.basename(args.clip)} q{args.quality} step {args.step:g} (P x{args.p_step_scale:g}"
          f"{', skip only' if args.skip_only else ''}): {(total_lvc + total_layer) / pixels:.4f} bpp "
          f"(lvc {total_lvc / pixels:.4f}) at PSNR-YUV {np.mean(psnrs):.2f} dB over {len(psnrs)} frames")


if __name__ == "__main__":
    main()
