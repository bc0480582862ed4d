"""Re-fit the inter model's motion-vector prior to the vectors the encoder's search actually produces.

The vector prior (an ``EntropyBottleneck`` over median-predicted vector residuals) only ever receives
gradients from the rate of the vectors, and the vectors come from a non-differentiable search, so it can
be fitted on its own: run the encoder's search on training sequences against *decoded* references (as
the encoder does, at qualities drawn uniformly), then maximise the likelihood of the residuals. Use after
a change to the search, or to finish a short training run. Only ``mv_entropy`` changes.

    python tools/fit_mv_prior.py --data .data/train.npz --weights lvcodec/weights --out .out/inter.safetensors
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from lvcodec import motion  # noqa: E402
from lvcodec.codec import mv_lambda  # noqa: E402
from lvcodec.models import NUM_QUALITIES, InterModel, IntraModel  # noqa: E402
from lvcodec.weights import load_state, save_state  # noqa: E402
from train import round8, to6  # noqa: E402


@torch.no_grad()
def collect(intra, inter, seq_y, seq_uv, rng, batch=16):
    """Vector residuals of every transition of every sequence, references decoded by the models."""
    out = []
    for s in range(0, seq_y.shape[0], batch):
        frames = [to6(seq_y[s:s + batch, t], seq_uv[s:s + batch, t]) for t in range(seq_y.shape[1])]
        q = torch.from_numpy(rng.integers(0, NUM_QUALITIES, frames[0].shape[0]))
        lam = torch.tensor([mv_lambda(int(k) + 1) for k in q]).view(-1, 1, 1, 1)
        ref = round8(intra(frames[0], q)["x_hat"])
        for cur in frames[1:]:
            mv = motion.search(cur, ref, lam=lam)
            out.append(mv - motion.mv_prediction(mv))
            ref = round8(inter(cur, motion.compensate(ref, mv), q)["x_hat"])
    return torch.cat(out).float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=".data/train.npz")
    ap.add_argument("--weights", default="lvcodec/weights")
    ap.add_argument("--out", default=".out/inter.safetensors")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    intra, inter = IntraModel(), InterModel()
    for name, mod in (("intra", intra), ("inter", inter)):
        (path,) = sorted(glob.glob(os.path.join(args.weights, f"{name}*.safetensors")))[:1]
        mod.load_state_dict(load_state(path, None))
    intra.eval(), inter.eval()
    d = np.load(args.data)
    mvd = collect(intra, inter, torch.from_numpy(d["seq_y"]), torch.from_numpy(d["seq_uv"]), rng)
    eb = inter.mv_entropy
    eb.train()
    n = mvd.numel()
    print(f"{mvd.shape[0]} vector fields, {n // 2} vectors; residual 0: {(mvd == 0).float().mean():.1%}")

    def bits() -> float:
        with torch.no_grad():
            _, lik = eb(mvd, training=False)
            return float(-torch.log2(lik).sum() / n)

    print(f"before: {bits():.3f} bits per component")
    main_p = [p for k, p in eb.named_parameters() if not k.endswith("quantiles")]
    opt = torch.optim.Adam(main_p, lr=1e-2)
    aux_opt = torch.optim.Adam([eb.quantiles], lr=1e-2)
    for step in range(args.steps):
        if step == int(args.steps * 0.7):
            for g in opt.param_groups:
                g["lr"] = 1e-3
        _, lik = eb(mvd)  # uniform noise: the continuous relaxation used in training
        loss = -torch.log2(lik).sum() / n
        opt.zero_grad()
        loss.backward()
        opt.step()
        aux = eb.loss()
        aux_opt.zero_grad()
        aux.backward()
        aux_opt.step()
    eb.eval()
    eb.update(force=True)
    print(f"after: {bits():.3f} bits per component (aux {eb.loss().item():.2f})")
    h = save_state(inter, args.out, {"mv_prior": "refit by tools/fit_mv_prior.py"})
    print(f"wrote {args.out} sha256={h}")


if __name__ == "__main__":
    main()
