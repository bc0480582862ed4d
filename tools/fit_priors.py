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

Weights from before the priors were per quality load too (their shared priors are repeated per quality
first). The benchmark clips are never read.

    python tools/fit_priors.py --videos ../shared/data/train/video --weights lvcodec/weights --out-dir .out/fit
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import numpy as np
import torch
from compressai.entropy_models import EntropyBottleneck

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from lvcodec import motion, mvcoding  # noqa: E402
from lvcodec.bench.clips import DOWNSCALE_ABOVE, crop_even, downscale2x  # noqa: E402
from lvcodec.codec import mv_lambda  # noqa: E402
from lvcodec.frames import quantize8, read_pictures, to_tensor  # noqa: E402
from lvcodec.models import NUM_QUALITIES, InterModel, IntraModel, upgrade_state  # noqa: E402
from lvcodec.weights import load_state, save_state  # noqa: E402
from lvcodec.zoo import HyperpriorV1  # noqa: E402

PRIORS = ("intra_z", "inter_z", "mv")


def load(model, path: str):
    model.load_state_dict(upgrade_state(model, load_state(path, None)))
    return model.eval()


def z_symbols(model, y: torch.Tensor, q: int) -> torch.Tensor:
    """The symbols of ẑ that :meth:`_put_latent` codes for the latent ``y`` at quality index ``q``: (Nz, n)."""
    qt = torch.tensor([q])
    z_g = model.h_a(y * model._g(model.gain, qt)) * model._g(model.zgain, qt)
    return torch.round(z_g - model.z_medians(q).view(1, -1, 1, 1))[0].flatten(1).to(torch.int32)


@torch.no_grad()
def collect(intra: IntraModel, inter: InterModel, videos: list[str], frames: int, exclude: tuple[str, ...]):
    """Symbols per prior and quality index: {prior: [[(C, n) int tensors] * NUM_QUALITIES]}."""
    offsets = HyperpriorV1.INTRA_OFFSETS
    out = {p: [[] for _ in range(NUM_QUALITIES)] for p in PRIORS}
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
        for x in xs:  # any picture may be an I-frame
            y = intra.g_a(x)
            for q in range(NUM_QUALITIES):
                out["intra_z"][q].append(z_symbols(intra, y, q))
        for q in range(NUM_QUALITIES):
            ref = quantize8(intra.compress(xs[0], min(q + offsets[q], NUM_QUALITIES - 1))["x_hat"])
            for x in xs[1:]:
                mv = motion.search(x, ref, lam=mv_lambda(q + 1))
                out["mv"][q].append((mv - motion.mv_prediction(mv))[0])  # (2, Hb, Wb) field
                pred = motion.compensate(ref, mv)
                out["inter_z"][q].append(z_symbols(inter, inter.g_a(torch.cat((x - pred, pred), 1)), q))
                ref = quantize8(inter.compress(x, ref, mv, q)["x_hat"])
        print(f"{os.path.relpath(path)}: {len(pics)} frames {pics[0].width}x{pics[0].height} "
              f"{time.time() - t0:.0f}s", flush=True)
    return out


def fit(eb: EntropyBottleneck, symbols: list[list[torch.Tensor]], steps: int, keep_medians: bool) -> None:
    """Maximum discrete likelihood of each quality's symbols (``symbols[q]``: (C, n) tensors) under channels
    C*q .. C*q+C-1 of ``eb``; the fit runs on their histograms. With ``keep_medians`` the symbols are
    offsets from the medians (ẑ) and the quantiles (medians and table ranges) stay as they are; without,
    they are the values themselves (vector residuals) and the quantiles are fitted too."""
    hists = []
    for v in symbols:
        flat = torch.cat([t.flatten(1) for t in v], 1)
        hists += [torch.unique(flat[c], return_counts=True) for c in range(flat.shape[0])]
    assert len(hists) == eb.channels, (len(hists), eb.channels)
    k = max(len(vals) for vals, _ in hists)
    data = torch.zeros(1, eb.channels, 1, k)
    weight = torch.zeros(1, eb.channels, 1, k)
    for c, (vals, counts) in enumerate(hists):
        data[0, c, 0, : len(vals)] = vals.float()
        weight[0, c, 0, : len(vals)] = counts.float()
    per_q = eb.channels // NUM_QUALITIES

    def bits() -> torch.Tensor:
        centre = eb._get_medians().detach().view(1, -1, 1, 1) if keep_medians else 0
        _, lik = eb(data + centre, training=False)
        return -(torch.log2(lik) * weight).view(NUM_QUALITIES, -1).sum(1) / weight.view(NUM_QUALITIES, -1).sum(1) * per_q

    with torch.no_grad():
        before = bits()
    eb.train()
    opt = torch.optim.Adam([p for n, p in eb.named_parameters() if not n.endswith("quantiles")], lr=1e-2)
    aux_opt = None if keep_medians else torch.optim.Adam([eb.quantiles], lr=1e-2)
    for step in range(steps):
        if step == int(steps * 0.7):
            for g in opt.param_groups:
                g["lr"] = 1e-3
        loss = bits().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if aux_opt is not None:
            aux = eb.loss()
            aux_opt.zero_grad()
            aux.backward()
            aux_opt.step()
    eb.eval()
    eb.update(force=True)
    with torch.no_grad():
        after = bits()
    for q in range(NUM_QUALITIES):
        n = int(weight.view(NUM_QUALITIES, -1)[q].sum()) // per_q
        print(f"  quality {q + 1}: {n} symbols per channel, bits per position (all {per_q} channels) "
              f"{before[q]:.3f} -> {after[q]:.3f}")


def table_bits(cdf: torch.Tensor, fields: list[torch.Tensor]) -> float:
    """Bits per residual component of ``fields`` under one quality's context tables ``cdf`` (CONTEXTS rows),
    escapes counted with the range coder's bypass cost."""
    freq = (cdf[:, 1:] - cdf[:, :-1]).double().numpy() / 2**mvcoding.PRECISION
    total, n = 0.0, 0
    for f in fields:
        f = f.numpy().astype(np.int64)
        ctx = mvcoding.contexts(f)
        inr = np.abs(f) <= mvcoding.RANGE
        total += -np.log2(freq[ctx[inr], f[inr] + mvcoding.RANGE]).sum()
        esc = f[~inr]
        # CompressAI's escape: the raw value in 4-bit chunks after a 4-bit chunk count
        raw = np.where(esc < 0, -2 * (esc + mvcoding.RANGE) - 1, 2 * (esc - mvcoding.RANGE - 1))
        chunks = np.ceil(np.log2(raw + 1) / 4)
        total += (-np.log2(freq[ctx[~inr], -1]) + 4 + 4 * chunks).sum()
        n += f.size
    return total / max(n, 1)


def fit_vector_tables(inter: InterModel, fields: list[list[torch.Tensor]]) -> None:
    """Count the context histograms of the vector residual fields and install them as the inter model's tables."""
    c = mvcoding.CONTEXTS
    before = [table_bits(inter.mv_cdf[q * c:(q + 1) * c], fields[q]) for q in range(NUM_QUALITIES)]
    inter.set_vector_tables(mvcoding.fit_pmfs([[f.numpy() for f in fs] for fs in fields]))
    for q in range(NUM_QUALITIES):
        after = table_bits(inter.mv_cdf[q * c:(q + 1) * c], fields[q])
        print(f"  quality {q + 1}: bits per component {before[q]:.3f} -> {after:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", default="../shared/data/train/video", help="folder searched for videos")
    ap.add_argument("--weights", default="lvcodec/weights", help="folder with intra*/inter*.safetensors")
    ap.add_argument("--out-dir", default=".out/fit", help="where intra.safetensors and inter.safetensors go")
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

    (ipath,) = sorted(glob.glob(os.path.join(args.weights, "intra*.safetensors")))[:1]
    (ppath,) = sorted(glob.glob(os.path.join(args.weights, "inter*.safetensors")))[:1]
    intra, inter = load(IntraModel(), ipath), load(InterModel(), ppath)
    if args.cache and os.path.exists(args.cache):
        with np.load(args.cache) as f:
            sym = {p: [[torch.from_numpy(f[k]) for k in sorted((k for k in f.files if k.startswith(f"{p}/{q}/")),
                                                                key=lambda n: int(n.rsplit("/", 1)[1]))]
                        for q in range(NUM_QUALITIES)] for p in PRIORS}
    else:
        videos = sorted(p for p in glob.glob(os.path.join(args.videos, "**", "*"), recursive=True)
                        if os.path.isfile(p) and p.lower().endswith((".mp4", ".mkv", ".avi", ".mov", ".webm", ".y4m")))
        sym = collect(intra, inter, videos, args.frames, tuple(e for e in args.exclude.split(",") if e))
        if args.cache:
            np.savez_compressed(args.cache, **{f"{p}/{q}/{i}": t.numpy() for p in PRIORS
                                               for q, v in enumerate(sym[p]) for i, t in enumerate(v)})
    for name, eb, keep in (("intra_z", intra.entropy_bottleneck, True), ("inter_z", inter.entropy_bottleneck, True),
                           ("mv", inter.mv_entropy, False)):
        print(f"{name}:")
        fit(eb, sym[name], args.steps, keep)
    print("mv (context tables, lvcodec/mvcoding.py):")
    fit_vector_tables(inter, sym["mv"])
    os.makedirs(args.out_dir, exist_ok=True)
    for name, model in (("intra", intra), ("inter", inter)):
        path = os.path.join(args.out_dir, f"{name}.safetensors")
        print(f"wrote {path} sha256={save_state(model, path, {'priors': 'fitted by tools/fit_priors.py'})}")


if __name__ == "__main__":
    main()
