"""How good can the intra model's pictures get? Prints, per clip (first frame), the PSNR of the intra
autoencoder *without quantization* (synthesis of the unquantized latent): no quality level can decode
better than that, so it is the ceiling of the I-frames, and through them of the GOP. Then the coded
bpp and PSNR of each quality level, to show where the rate stops buying quality.

    python tools/ceiling.py [--weights DIR] [--downscale] [--levels] CLIP...

Split of the luma error: ``low`` is the error of the 2x2 block means (the half-resolution picture),
``detail`` the error of what is left within each 2x2 block (the sub-pixel detail the 6-channel layout
carries in its four luma channels).
"""

from __future__ import annotations

import argparse
import glob
import math
import os

import torch
import torch.nn.functional as F

from lvcodec.bench.clips import load_clip
from lvcodec.frames import to_tensor
from lvcodec.models import IntraModel, upgrade_state
from lvcodec.weights import load_state
from lvcodec.zoo import load_models


def _psnr(mse: float) -> float:
    return 10 * math.log10(1 / max(mse, 1e-12))


def luma(x: torch.Tensor) -> torch.Tensor:
    return F.pixel_shuffle(x[:, :4], 2)


def split_error(x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, float]:
    """PSNRs (dB) of a 6-channel picture against the source: luma, chroma, and the luma error split into
    the 2x2 block means and the detail within the blocks."""
    x_hat = x_hat.clamp(0, 1)
    y, y_hat = luma(x), luma(x_hat)
    low, low_hat = F.avg_pool2d(y, 2), F.avg_pool2d(y_hat, 2)
    det = y - F.interpolate(low, scale_factor=2, mode="nearest")
    det_hat = y_hat - F.interpolate(low_hat, scale_factor=2, mode="nearest")
    return {
        "luma": _psnr(F.mse_loss(y_hat, y).item()),
        "chroma": _psnr(F.mse_loss(x_hat[:, 4:], x[:, 4:]).item()),
        "low": _psnr(F.mse_loss(low_hat, low).item()),
        "detail": _psnr(F.mse_loss(det_hat, det).item()),
    }


def load_intra(folder: str | None) -> IntraModel:
    if folder is None:
        return load_models()[0]
    (path,) = sorted(glob.glob(os.path.join(folder, "intra*.safetensors")))[:1]
    model = IntraModel()
    model.load_state_dict(upgrade_state(model, load_state(path, None)))
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="+")
    ap.add_argument("--weights", help="folder with intra*.safetensors (default: the shipped weights)")
    ap.add_argument("--downscale", action="store_true", help="2x area downscale of clips wider than 640, as the bench")
    ap.add_argument("--levels", action="store_true", help="also code the frame at every quality level")
    args = ap.parse_args()

    intra = load_intra(args.weights)
    print("clip | unquantized: luma (low / detail) chroma" + (" | per level: bpp luma" if args.levels else ""))
    for spec in args.clips:
        clip = load_clip(spec, 1, downscale=args.downscale)
        x = to_tensor(clip.pictures[0], intra.downsampling)
        with torch.no_grad():
            e = split_error(intra.g_s(intra.g_a(x)), x)
        line = f"{clip.name}: {e['luma']:.2f} ({e['low']:.2f} / {e['detail']:.2f}) {e['chroma']:.2f}"
        if args.levels:
            pixels = x.shape[-1] * x.shape[-2] * 4
            for q in range(intra.gain.shape[0]):
                out = intra.compress(x, q)
                line += f" | q{q + 1} {len(out['strings'][0]) * 8 / pixels:.3f} {split_error(out['x_hat'], x)['luma']:.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
