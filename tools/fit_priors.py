"""Fit the factorized priors of model 1 (ẑ of the intra and inter models, and the motion-vector residuals)
to the symbols the encoder actually codes, one prior per quality level.

These priors are fixed CDF tables in the weights. Training fits them with uniform noise standing in for
rounding, on training crops; this tool fits them by maximum *discrete* likelihood (the probabilities the
range coder uses) on whole pictures:

1. code the first frames of every training video at every quality level exactly as ``lvc encode`` does
   (whole pictures, not crops: a crop is mostly picture edge, where the vector prediction is zero), clips
   wider than 640 pixels halved with an area filter as the benchmark does, and keep every symbol of ẑ
   (I- and P-frames) and every vector residual;
2. fit each prior, each quality's channels on that quality's symbols. The ẑ priors keep their medians
   (so ẑ, the entropy parameters of ŷ and every decoded picture stay exactly the same: only the bits
   change); the vector prior is fitted whole.

The work is done by :mod:`lvcodec.train.priors` (``lvc train`` runs the same fit before it exports).
Weights from before the priors were per quality load too (their shared priors are repeated per quality
first). The benchmark clips are never read.

    python tools/fit_priors.py --videos ../shared/data/train/video --weights lvcodec/weights --out-dir .out/fit
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from lvcodec.bench.clips import DOWNSCALE_ABOVE, crop_even, downscale2x  # noqa: E402
from lvcodec.frames import read_pictures  # noqa: E402
from lvcodec.models import NUM_QUALITIES, InterModel, IntraModel, upgrade_state  # noqa: E402
from lvcodec.train import priors  # noqa: E402
from lvcodec.weights import load_state, save_state  # noqa: E402


def load(model, path: str):
    model.load_state_dict(upgrade_state(model, load_state(path, None)))
    return model.eval()


def load_pair(folder: str):
    """The intra and inter models of the first ``intra*`` / ``inter*`` weights files in ``folder``."""
    (ipath,) = sorted(glob.glob(os.path.join(folder, "intra*.safetensors")))[:1]
    (ppath,) = sorted(glob.glob(os.path.join(folder, "inter*.safetensors")))[:1]
    return load(IntraModel(), ipath), load(InterModel(), ppath)


def _find(folder: str, extensions: tuple[str, ...]) -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
                  if os.path.isfile(p) and p.lower().endswith(extensions))


def find_videos(folder: str) -> list[str]:
    return _find(folder, (".mp4", ".mkv", ".avi", ".mov", ".webm", ".y4m"))


def find_images(folder: str) -> list[str]:
    return _find(folder, (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"))


def write_pair(intra, inter, out_dir: str, note: dict) -> None:
    """Write ``intra.safetensors`` and ``inter.safetensors`` into ``out_dir`` and print their hashes."""
    os.makedirs(out_dir, exist_ok=True)
    for name, model in (("intra", intra), ("inter", inter)):
        path = os.path.join(out_dir, f"{name}.safetensors")
        print(f"wrote {path} sha256={save_state(model, path, note)}", flush=True)


def read_clips(videos: list[str], frames: int, exclude: tuple[str, ...]):
    """(name, pictures) of the first ``frames`` frames of each video, halved above 640 pixels as the
    benchmark does; an unreadable file is skipped, not fatal."""
    for path in videos:
        if any(e in os.path.basename(path) for e in exclude):
            continue
        try:
            _, it = read_pictures(path, frames)
            pics = [crop_even(p) for p in it]
        except Exception as e:
            print(f"skip {path}: {e}", flush=True)
            continue
        if pics and pics[0].width > DOWNSCALE_ABOVE:
            pics = [downscale2x(p) for p in pics]
        yield os.path.relpath(path), pics


def parser(doc: str, out_dir: str) -> argparse.ArgumentParser:
    """The arguments the fitting tools share: where the videos, the weights and the output are."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", default="../shared/data/train/video", help="folder searched for videos")
    ap.add_argument("--weights", default="lvcodec/weights", help="folder with intra*/inter*.safetensors")
    ap.add_argument("--out-dir", default=out_dir, help="where intra.safetensors and inter.safetensors go")
    return ap


def main() -> None:
    ap = parser(__doc__, ".out/fit")
    ap.add_argument("--frames", type=int, default=6, help="first N frames of each video")
    ap.add_argument("--exclude", default="carphone_distorted", help="comma-separated name parts to skip")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", help="npz of collected symbols: read if it exists, else written")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    intra, inter = load_pair(args.weights)
    if args.cache and os.path.exists(args.cache):
        with np.load(args.cache) as f:
            sym = {p: [[torch.from_numpy(f[k]) for k in sorted((k for k in f.files if k.startswith(f"{p}/{q}/")),
                                                                key=lambda n: int(n.rsplit("/", 1)[1]))]
                        for q in range(NUM_QUALITIES)] for p in priors.COLLECTED}
    else:
        clips = read_clips(find_videos(args.videos), args.frames, tuple(e for e in args.exclude.split(",") if e))
        sym = priors.collect(intra, inter, clips, say=lambda s: print(s, flush=True))
        if args.cache:
            np.savez_compressed(args.cache, **{f"{p}/{q}/{i}": t.numpy() for p in priors.COLLECTED
                                               for q, v in enumerate(sym[p]) for i, t in enumerate(v)})
    priors.fit_priors(intra, inter, None, args.steps, symbols=sym)
    write_pair(intra, inter, args.out_dir, {"priors": "fitted by tools/fit_priors.py"})


if __name__ == "__main__":
    main()
