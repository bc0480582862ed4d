"""Fit the inter model's motion-vector priors to the vectors the encoder's search actually produces.

The vector prior (an ``EntropyBottleneck`` over median-predicted vector residuals, one pair of channels per
quality level) only ever receives gradients from the rate of the vectors, and the vectors come from a
non-differentiable search, so it can be fitted on its own:

1. code the first frames of every training video at every quality level exactly as ``lvc encode`` does
   (whole pictures, not training crops: a crop is mostly picture edge, where the vector prediction is
   zero), clips wider than 640 pixels halved with an area filter as the benchmark does, and keep the
   vector residuals of every P-frame;
2. maximise the *discrete* likelihood of those residuals (the probabilities the range coder uses),
   each quality level's prior on its own residuals.

Only ``mv_entropy`` changes; weights from before the priors were per quality load too (their shared
prior is dropped). The benchmark clips are never read.

    python tools/fit_mv_prior.py --videos ../shared/data/train/video --weights lvcodec/weights \
        --out .out/inter.safetensors
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from lvcodec import motion  # noqa: E402
from lvcodec.bench.clips import DOWNSCALE_ABOVE, crop_even, downscale2x  # noqa: E402
from lvcodec.codec import mv_lambda  # noqa: E402
from lvcodec.frames import quantize8, read_pictures, to_tensor  # noqa: E402
from lvcodec.models import NUM_QUALITIES, InterModel, IntraModel  # noqa: E402
from lvcodec.weights import load_state, save_state  # noqa: E402
from lvcodec.zoo import HyperpriorV1  # noqa: E402


def load_inter(path: str) -> InterModel:
    """The inter model of ``path``; a shared (2-channel) vector prior of older weights is replaced by init."""
    inter = InterModel()
    state = load_state(path, None)
    own = inter.state_dict()
    if any(state[k].shape != own[k].shape for k in own if k.startswith("mv_entropy.") and k in state):
        state.update({k: v for k, v in own.items() if k.startswith("mv_entropy.")})  # start from init
    inter.load_state_dict(state)
    return inter


@torch.no_grad()
def collect(intra: IntraModel, inter: InterModel, videos: list[str], frames: int, exclude: tuple[str, ...]):
    """Vector residuals per quality (index 0..7): lists of (2, Hb, Wb) int tensors."""
    offsets = HyperpriorV1.INTRA_OFFSETS
    out = [[] for _ in range(NUM_QUALITIES)]
    for path in videos:
        if any(e in os.path.basename(path) for e in exclude):
            continue
        try:
            _, it = read_pictures(path, frames)
            pics = [crop_even(p) for p in it]
        except Exception as e:  # an unreadable training file is skipped, not fatal
            print(f"skip {path}: {e}", flush=True)
            continue
        if len(pics) < 2:
            continue
        if pics[0].width > DOWNSCALE_ABOVE:
            pics = [downscale2x(p) for p in pics]
        xs = [to_tensor(p, 64) for p in pics]
        t0 = time.time()
        for q in range(NUM_QUALITIES):
            ref = quantize8(intra.compress(xs[0], min(q + offsets[q], NUM_QUALITIES - 1))["x_hat"])
            for x in xs[1:]:
                mv = motion.search(x, ref, lam=mv_lambda(q + 1))
                out[q].append((mv - motion.mv_prediction(mv))[0])
                ref = quantize8(inter.compress(x, ref, mv, q)["x_hat"])
        print(f"{os.path.relpath(path)}: {len(pics)} frames {pics[0].width}x{pics[0].height} "
              f"{time.time() - t0:.0f}s", flush=True)
    return out


def fit(inter: InterModel, mvd: list[list[torch.Tensor]], steps: int) -> None:
    """Maximum likelihood of each quality's residuals under its own channels of the prior. The residuals
    are small integers, so the fit runs on their histograms (value, count) per quality and component."""
    hists = []
    for v in mvd:
        flat = torch.cat([f.reshape(2, -1) for f in v], 1)
        hists.append([torch.unique(flat[c], return_counts=True) for c in range(2)])
    k = max(len(vals) for h in hists for vals, _ in h)
    data = torch.zeros(len(hists), 2, 1, k)
    weight = torch.zeros(len(hists), 2, 1, k)
    for i, h in enumerate(hists):
        for c, (vals, counts) in enumerate(h):
            data[i, c, 0, : len(vals)] = vals.float()
            weight[i, c, 0, : len(vals)] = counts.float()
    q = torch.arange(len(hists))
    eb = inter.mv_entropy
    eb.train()

    def bits() -> torch.Tensor:
        return -(torch.log2(inter.mv_likelihoods(data, q)) * weight).sum((1, 2, 3)) / weight.sum((1, 2, 3))

    with torch.no_grad():
        before = bits()
    main_p = [p for n, p in eb.named_parameters() if not n.endswith("quantiles")]
    opt = torch.optim.Adam(main_p, lr=1e-2)
    aux_opt = torch.optim.Adam([eb.quantiles], lr=1e-2)
    for step in range(steps):
        if step == int(steps * 0.7):
            for g in opt.param_groups:
                g["lr"] = 1e-3
        loss = bits().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        aux = eb.loss()
        aux_opt.zero_grad()
        aux.backward()
        aux_opt.step()
    eb.eval()
    eb.update(force=True)
    with torch.no_grad():
        after = bits()
    for i in range(len(hists)):
        zero = (weight[i] * (data[i] == 0)).sum() / weight[i].sum()
        print(f"quality {i + 1}: {int(weight[i].sum()) // 2} vectors, residual 0: {zero:.1%}, "
              f"bits per component {before[i]:.3f} -> {after[i]:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", default="../shared/data/train/video", help="folder searched for videos")
    ap.add_argument("--weights", default="lvcodec/weights", help="folder with intra*/inter*.safetensors")
    ap.add_argument("--out", default=".out/inter.safetensors")
    ap.add_argument("--frames", type=int, default=6, help="first N frames of each video")
    ap.add_argument("--exclude", default="carphone_distorted", help="comma-separated name parts to skip")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--cache", help="npz of collected residuals: read if it exists, else written")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    intra = IntraModel()
    (ipath,) = sorted(glob.glob(os.path.join(args.weights, "intra*.safetensors")))[:1]
    (ppath,) = sorted(glob.glob(os.path.join(args.weights, "inter*.safetensors")))[:1]
    intra.load_state_dict(load_state(ipath, None))
    inter = load_inter(ppath)
    inter.mv_entropy.update(force=True)  # tables for the (not yet fitted) prior: collect() codes vectors
    intra.eval(), inter.eval()
    videos = sorted(p for p in glob.glob(os.path.join(args.videos, "**", "*"), recursive=True)
                    if os.path.isfile(p) and p.lower().endswith((".mp4", ".mkv", ".avi", ".mov", ".webm", ".y4m")))
    if args.cache and os.path.exists(args.cache):
        with np.load(args.cache) as f:
            mvd = [[torch.from_numpy(f[k]) for k in sorted(f.files, key=lambda n: int(n.split("_")[1]))
                    if k.startswith(f"q{q}_")] for q in range(NUM_QUALITIES)]
    else:
        mvd = collect(intra, inter, videos, args.frames, tuple(e for e in args.exclude.split(",") if e))
        if args.cache:
            np.savez_compressed(args.cache, **{f"q{q}_{i}": f.numpy() for q, v in enumerate(mvd)
                                               for i, f in enumerate(v)})
    fit(inter, mvd, args.steps)
    h = save_state(inter, args.out, {"mv_prior": "fitted by tools/fit_mv_prior.py"})
    print(f"wrote {args.out} sha256={h}")


if __name__ == "__main__":
    main()
