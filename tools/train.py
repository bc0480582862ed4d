"""Train lvc's variable-rate intra and inter models together from a packed training set.

    python tools/pack_data.py --out .data/train.npz          # once, from ../shared/data/train
    python tools/train.py --data .data/train.npz --minutes 30 --out-dir .out/run1 \
        [--init lvcodec/weights]                              # resume from shipped weights

Each step codes a batch of photo crops and the first frame of short sequences with the intra model,
then the next frames as P-frames from the *decoded* previous frame (motion found by block search, as
the encoder does), so the inter model learns on its own references (error propagation included). The
quality level is drawn per sample, so one model learns all rates. Loss per frame:
``lambda[q] * 255^2 * MSE_YUV + bpp`` with MSE_YUV = (6 MSE_Y + MSE_U + MSE_V) / 8.

Uses CUDA when available (TF32), the CPU otherwise; ``--bf16`` runs the pixel transforms under bf16
autocast (the entropy models and hyper-transforms stay fp32; only worth it where the CPU has AMX or AVX512-BF16,
it warns otherwise). Writes ``intra.safetensors``/``inter.safetensors`` (CDF tables built) and, on
``--save-optimizer``, a ``ckpt.pt`` that ``--resume`` continues exactly.

On a CPU, ``--intra-only`` and ``--inter-only`` train one model while the other is kept exactly as loaded;
two such runs (one thread each) can go side by side and their outputs be combined.
"""

from __future__ import annotations

import argparse
import csv
import glob
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from lvcodec import motion  # noqa: E402
from lvcodec.codec import mv_lambda  # noqa: E402
from lvcodec.frames import hflip_layout  # noqa: E402
from lvcodec.models import (LAMBDAS, NUM_QUALITIES, InterModel, IntraModel, fitted_after_training,  # noqa: E402
                            mse_yuv, upgrade_state)
from lvcodec.train.data import read_pack  # noqa: E402
from lvcodec.weights import load_state, save_state  # noqa: E402
from lvcodec.zoo import HyperpriorV1  # noqa: E402

ENCODER_FIELD = HyperpriorV1.MOTION_FIELDS[0]


def to6(y: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """uint8 Y (B,H,W) and UV (B,2,H/2,W/2) -> float (B,6,H/2,W/2)."""
    return torch.cat((F.pixel_unshuffle(y[:, None].float(), 2), uv.float()), 1) / 255.0


def bpp(lik: dict, pixels: int) -> torch.Tensor:
    return sum(torch.log(v).flatten(1).sum(1) for v in lik.values()) / (-math.log(2) * pixels)


def round8(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.clamp(0, 1) * 255) / 255


def use_bf16(*modules: torch.nn.Module) -> None:
    """Run ``modules`` (the pixel transforms) under bf16 autocast in channels_last, returning fp32, while
    the entropy models and the hyper-transforms stay fp32: about 1.8x faster on CPUs with AMX. The
    state dict is unchanged (same names, saved contiguous)."""
    for mod in modules:
        mod.to(memory_format=torch.channels_last)
        inner = mod.forward

        def forward(x, inner=inner):
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                return inner(x.contiguous(memory_format=torch.channels_last)).float()

        mod.forward = forward


def save(out_dir, intra, inter, opt, aux_opt, step, rng, with_optimizer: bool, qmean=None,
         inter_frozen: bool = False, intra_frozen: bool = False) -> None:
    """Write intra/inter.safetensors (CDF tables built) and, with ``with_optimizer``, ``ckpt.pt``. A frozen
    model (the inter model under ``--intra-only``, the intra model under ``--inter-only``) is written as
    loaded: its fitted tables are not rebuilt."""
    if not intra_frozen:
        intra.update(force=True)
    if not inter_frozen:
        inter.update(force=True)
    meta = {"steps": str(step), "lambdas": ",".join(map(str, LAMBDAS))}
    for name, mod in (("intra", intra), ("inter", inter)):
        h = save_state(mod, os.path.join(out_dir, f"{name}.safetensors"), meta)
        print(f"{name}.safetensors sha256={h}", flush=True)
    if with_optimizer:
        torch.save({"intra": intra.state_dict(), "inter": inter.state_dict(), "opt": opt.state_dict(),
                    "aux_opt": aux_opt.state_dict(), "step": step, "rng": torch.get_rng_state(),
                    "np_seed": int(rng.integers(2**63)), "qmean": qmean}, os.path.join(out_dir, "ckpt.pt"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=".data/train.npz")
    ap.add_argument("--out-dir", default=".out/train")
    ap.add_argument("--init", help="folder with intra/inter.safetensors to start from")
    ap.add_argument("--resume", help="ckpt.pt to continue exactly")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: time only)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--final-lr", type=float, default=2e-5)
    ap.add_argument("--batch-img", type=int, default=16)
    ap.add_argument("--batch-seq", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--radius", type=int, default=4, help="coarsest-level motion search radius")
    ap.add_argument("--aux-lr", type=float, default=5e-3)
    ap.add_argument("--save-optimizer", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", action="store_true", help="pixel transforms in bf16 autocast (CPU with AMX, GPU)")
    ap.add_argument("--save-every", type=float, default=0, help="also save every this many minutes (0: at the end only)")
    ap.add_argument("--blocks", default="16,32,64",
                    help="motion block sizes drawn per batch of P-frames (the encoder chooses among them per frame; "
                         "the search weight is scaled by 16/block as the encoder does)")
    ap.add_argument("--intra-only", action="store_true",
                    help="train the intra model alone (the inter model is saved unchanged): each step codes "
                         "--batch-img photo crops and --batch-seq single frames drawn from the sequences; "
                         "about 6x more I-frames per second on a CPU than the joint step")
    ap.add_argument("--inter-only", action="store_true",
                    help="train the inter model alone (the intra model is saved unchanged): no photo crops; each "
                         "sequence's first frame is coded by the frozen intra model without gradients, the "
                         "following frames train the inter model on its own decoded references")
    ap.add_argument("--qnorm", action="store_true",
                    help="weigh each quality's loss by the inverse of its running mean, so the low rates are not "
                         "drowned by the high ones (a q8 sample's loss is ~25x a q1 sample's)")
    args = ap.parse_args()
    if args.intra_only and args.inter_only:
        ap.error("--intra-only and --inter-only exclude each other")
    if args.inter_only:
        args.batch_img = 0

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    d = read_pack(args.data)
    img_y = torch.from_numpy(d["img_y"]).to(dev)
    img_uv = torch.from_numpy(d["img_uv"]).to(dev)
    seq_y = torch.from_numpy(d["seq_y"]).to(dev)
    seq_uv = torch.from_numpy(d["seq_uv"]).to(dev)
    T = seq_y.shape[1]

    intra, inter = IntraModel().to(dev), InterModel().to(dev)
    if args.init:
        for name, mod in (("intra", intra), ("inter", inter)):
            (path,) = sorted(glob.glob(os.path.join(args.init, f"{name}*.safetensors")))[:1]
            mod.load_state_dict(upgrade_state(mod, load_state(path, None)))
    trained = [(n, p) for n, p in (([] if args.inter_only else list(intra.named_parameters()))
                                   + ([] if args.intra_only else list(inter.named_parameters())))
               if not fitted_after_training(n)]
    params = [p for n, p in trained if not n.endswith("quantiles")]
    aux_params = [p for n, p in trained if n.endswith("quantiles")]
    opt = torch.optim.Adam(params, lr=args.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=args.aux_lr)
    step = 0
    if args.inter_only:  # references as the decoder makes them: quantized latents, no noise
        intra.eval()
    if args.resume:
        ck = torch.load(args.resume, map_location=dev, weights_only=True)
        intra.load_state_dict(upgrade_state(intra, ck["intra"]))
        inter.load_state_dict(upgrade_state(inter, ck["inter"]))
        opt.load_state_dict(ck["opt"])
        aux_opt.load_state_dict(ck["aux_opt"])
        step = ck["step"]
        torch.set_rng_state(ck["rng"].cpu())
        rng = np.random.default_rng(ck["np_seed"])
    lambdas = torch.tensor(LAMBDAS, device=dev)
    blocks = [int(b) for b in args.blocks.split(",")]
    # running mean of the per-sample loss of each quality, I- and P-frames apart (--qnorm)
    qmean = torch.zeros(2, NUM_QUALITIES, device=dev)
    if args.resume and ck.get("qmean") is not None:
        qmean = ck["qmean"].to(dev)

    def weigh(per_sample: torch.Tensor, qq: torch.Tensor, row: int) -> torch.Tensor:
        """Mean loss of a batch; with --qnorm each sample's loss divided by its quality's running mean
        (times the mean over qualities, so the scale stays that of the plain loss)."""
        if not args.qnorm:
            return per_sample.mean()
        with torch.no_grad():
            for k in qq.unique():
                v = per_sample[qq == k].mean()
                m = qmean[row, k]
                qmean[row, k] = v if m == 0 else 0.99 * m + 0.01 * v
            m = qmean[row]
            scale = m[m > 0].mean() / m[qq]
        return (per_sample * scale).mean()

    if args.bf16:
        from lvcodec.train.precision import slow_bf16_warning

        if msg := slow_bf16_warning(dev.type):
            print(f"warning: {msg}", file=sys.stderr, flush=True)
        use_bf16(intra.g_a, intra.g_s, inter.g_a, inter.g_s, inter.fuse)

    os.makedirs(args.out_dir, exist_ok=True)
    log = open(os.path.join(args.out_dir, "log.csv"), "a", newline="")
    w = csv.writer(log)
    t0 = time.time()
    budget = args.minutes * 60
    c = args.crop
    stats = []
    last_save = t0
    while True:
        el = time.time() - t0
        if el > budget or (args.steps and step >= args.steps):
            break
        frac = min(el / budget, 1.0) if not args.steps else step / args.steps
        lr = args.lr if frac < 0.75 else args.final_lr
        for g in opt.param_groups:
            g["lr"] = lr

        # -- photo crops + first frames: intra ------------------------------------------------
        i = torch.from_numpy(rng.integers(0, img_y.shape[0], args.batch_img)).to(dev)
        oy = int(rng.integers(0, (img_y.shape[1] - c) // 2 + 1)) * 2
        ox = int(rng.integers(0, (img_y.shape[2] - c) // 2 + 1)) * 2
        if args.batch_img:
            xi = to6(img_y[i, oy:oy + c, ox:ox + c], img_uv[i, :, oy // 2:(oy + c) // 2, ox // 2:(ox + c) // 2])
        else:  # --inter-only: the sequences' first frames alone
            xi = torch.zeros((0, 6, c // 2, c // 2), device=dev)
        s = torch.from_numpy(rng.integers(0, seq_y.shape[0], args.batch_seq)).to(dev)
        if args.intra_only:  # one frame of each sequence, any position
            t = torch.from_numpy(rng.integers(0, T, args.batch_seq)).to(dev)
            seq = [to6(seq_y[s, t], seq_uv[s, t])]
        else:
            seq = [to6(seq_y[s, t], seq_uv[s, t]) for t in range(T)]
        if rng.random() < 0.5:
            xi = hflip_layout(xi)
            seq = [hflip_layout(x) for x in seq]
        if rng.random() < 0.5:  # play sequences backwards
            seq = seq[::-1]
        x_intra = torch.cat((xi, seq[0]), 0)
        q = torch.from_numpy(rng.integers(0, NUM_QUALITIES, x_intra.shape[0])).to(dev)
        with torch.set_grad_enabled(not args.inter_only):
            out = intra(x_intra, q)
            dist = mse_yuv(out["x_hat"], x_intra)
            rate = bpp(out["likelihoods"], 4 * x_intra.shape[-1] * x_intra.shape[-2])
            loss_i = weigh(lambdas[q] * 255**2 * dist + rate, q, 0)

        # -- following frames: inter from the decoded previous frame -----------------------------
        qs = q[args.batch_img:]
        ref = round8(out["x_hat"][args.batch_img:]).detach()
        lam_mv = torch.tensor([mv_lambda(int(k) + 1) for k in qs], device=dev).view(-1, 1, 1, 1)
        loss_p, d_p, r_p = 0.0, torch.zeros(()), torch.zeros(())
        for t in range(1, len(seq)):
            cur = seq[t]
            block = blocks[int(rng.integers(0, len(blocks)))] if len(blocks) > 1 else blocks[0]
            mv = motion.search(cur, ref, lam=lam_mv * motion.BLOCK / block, block=block, radius=args.radius)
            pred = motion.compensate(ref, mv, field=ENCODER_FIELD)  # the field the encoder codes with
            mvd = mv - motion.mv_prediction(mv)
            o = inter(cur, pred, qs, mvd)
            dd = mse_yuv(o["x_hat"], cur)
            rr = bpp(o["likelihoods"], 4 * cur.shape[-1] * cur.shape[-2])
            loss_p = loss_p + weigh(lambdas[qs] * 255**2 * dd + rr, qs, 1) / (T - 1)
            d_p, r_p = d_p + dd.detach(), r_p + rr.detach()
            ref = round8(o["x_hat"]).detach()
        loss = loss_i + loss_p

        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        aux = (0 if args.inter_only else intra.aux_loss()) + (0 if args.intra_only else inter.aux_loss())
        aux_opt.zero_grad(set_to_none=True)
        aux.backward()
        aux_opt.step()
        step += 1

        with torch.no_grad():
            psnr_i = (10 * torch.log10(1 / dist.clamp_min(1e-10))).mean().item()
            psnr_p = float("nan") if args.intra_only else (10 * torch.log10((T - 1) / d_p.clamp_min(1e-10))).mean().item()
            stats.append((loss.item(), psnr_i, rate.mean().item(), psnr_p, (r_p / (T - 1)).mean().item()))
        if args.save_every and time.time() - last_save > args.save_every * 60:
            save(args.out_dir, intra, inter, opt, aux_opt, step, rng, args.save_optimizer, qmean,
                 inter_frozen=args.intra_only, intra_frozen=args.inter_only)
            last_save = time.time()
        if step % 200 == 0:
            m = np.mean(stats, 0)
            stats = []
            row = [step, round(time.time() - t0), lr, *np.round(m, 4), round(aux.item(), 2)]
            w.writerow(row)
            log.flush()
            print(f"step {step} t={row[1]}s lr={lr:g} loss={m[0]:.3f} I: {m[1]:.2f}dB {m[2]:.3f}bpp "
                  f"P: {m[3]:.2f}dB {m[4]:.3f}bpp aux={aux.item():.1f}", flush=True)

    save(args.out_dir, intra, inter, opt, aux_opt, step, rng, args.save_optimizer, qmean,
         inter_frozen=args.intra_only, intra_frozen=args.inter_only)
    print(f"done: {step} steps in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
