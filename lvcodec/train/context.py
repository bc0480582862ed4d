"""Fitting the checkerboard context of ŷ (:class:`lvcodec.models.CheckerboardContext`) after training.

The context refines the hyperprior's mean and scale index of the non-anchor half of ŷ from the anchors'
symbols. Everything it depends on (the transforms, ``h_s``, ``scale_calib``) stays frozen, so it is fitted
on its own, on the CPU, in minutes:

1. :func:`collect` keeps, for latents the encoder codes, what the coder sees: the residual of the gained
   latent from the hyperprior's mean (``y' - mean``), the scale indexes and the coded samples. I-frames:
   every picture given, at the requested qualities; P-frames: coded as ``lvc encode`` codes them (motion,
   skip and region mask chosen by the encoder), each quality from its own I-frame;
2. :func:`fit` trains the context on random 24x24 crops (checkerboard phase kept), uniform noise standing in
   for the rounding of the new residual, the scales snapped to the coder's table;
3. :func:`coded_bits` counts the non-anchor half's bits as the coder does (rounded residuals, table
   scales, rounded index offsets), before and after.

``tools/fit_context.py`` runs it on existing weights (after ``tools/fit_priors.py``: the context takes
the calibrated scale indexes as input, so it is fitted last).
"""

from __future__ import annotations

import contextlib
import math
import random
import time

import torch

from ..codec import mv_lambda
from ..frames import quantize8, to_tensor
from ..models import NUM_QUALITIES, SCALE_STEP, CheckerboardContext, _expand, anchor_mask
from ..zoo import HyperpriorV1
from .priors import DEFAULT_DECIDE, y_params

CROP = 24  # crop size (samples of ŷ) in training: even, so a crop keeps the checkerboard's phase


@torch.no_grad()
def residuals(model, y: torch.Tensor, q: int, region: torch.Tensor | None = None) -> tuple:
    """What the coder sees of the latent ``y`` (batch of 1) at quality index ``q``: ``y' - mean`` (M, H, W)
    float16, the calibrated scale indexes (M, H, W) uint8 and the coded samples (H, W) bool (all, or those
    under ``region``)."""
    means, scales = y_params(model, y, q, region)
    y_g = y * model._g(model.gain, torch.tensor([q]))
    idx = model.gaussian_conditional.build_indexes(scales)
    sel = torch.ones(y.shape[-2:], dtype=torch.bool) if region is None else _expand(region, 4)
    return (y_g - means)[0].half(), idx[0].to(torch.uint8), sel


@contextlib.contextmanager
def _recording(model):
    """Records (latent, region) of every ``model._put_latent`` call inside the block (an instance attribute
    shadows the method meanwhile)."""
    seen, put = [], model._put_latent

    def recorded(w, y, q, region=None, bits=None):
        seen.append((y.detach().clone(), None if region is None else region.clone()))
        return put(w, y, q, region, bits)

    model._put_latent = recorded
    try:
        yield seen
    finally:
        del model._put_latent


@torch.no_grad()
def collect(intra, inter, clips, qualities=range(NUM_QUALITIES), intra_pictures: int = 2,
            intra_offsets=HyperpriorV1.INTRA_OFFSETS, say=None) -> dict:
    """Latents of ``clips`` (``(name, pictures)``, whole pictures) as :func:`residuals` gives them:
    ``{"intra": [...], "inter": [...]}``, each a list of (clip number, item). I-frames: ``intra_pictures``
    pictures of each clip spread over it; P-frames: every later picture of the clip coded by the encoder
    after an I-frame of the first (``intra_offsets`` levels up, as ``lvc encode`` does), each at the
    quality collected (none when ``inter`` is None), keeping every latent the encoder codes on the way
    (each block size it tries, masked or not: all are latents the coder may code)."""
    out = {"intra": [], "inter": []}
    for n, (name, pics) in enumerate(clips):
        t0 = time.time()
        xs = [to_tensor(p, 64) for p in pics]
        k = min(intra_pictures, len(xs))
        for i in sorted({round(j * (len(xs) - 1) / max(k - 1, 1)) for j in range(k)}):
            y = intra.g_a(xs[i])
            out["intra"] += [(n, residuals(intra, y, q)) for q in qualities]
        for q in qualities if inter is not None else ():
            ref = quantize8(intra.compress(xs[0], min(q + intra_offsets[q], NUM_QUALITIES - 1))["x_hat"])
            for x in xs[1:]:
                with _recording(inter) as coded_latents:
                    coded = inter.encode(x, ref, q, mv_lambda(q + 1), decide=DEFAULT_DECIDE)
                out["inter"] += [(n, residuals(inter, y, q, region)) for y, region in coded_latents]
                ref = quantize8(coded["x_hat"])
        if say:
            say(f"{name}: {len(pics)} frames, {len(out['intra'])} I / {len(out['inter'])} P latents, "
                f"{time.time() - t0:.0f}s")
    return out


def _likelihood(gc, values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return gc.likelihood_lower_bound(gc._likelihood(values, scales))


def _loss(context: CheckerboardContext, gc, r: torch.Tensor, idx: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """Training loss: bits per coded non-anchor sample, the new residual's rounding replaced by noise."""
    anchors = anchor_mask(*r.shape[-2:])
    first, second = (sel & anchors).float(), (sel & ~anchors).float()
    sym = torch.round(r) * first
    delta, t = context(sym[None], idx[None])
    table = gc.scale_table[idx.long()]
    v = r - delta[0] + (torch.rand_like(r) - 0.5)
    bits = -torch.log2(_likelihood(gc, v, table * torch.exp(SCALE_STEP * t[0])))
    return (bits * second).sum() / second.sum().clamp(min=1)


def fit(context: CheckerboardContext, gc, items: list, steps: int, lr: float = 5e-4, seed: int = 0,
        say=None, every: int = 5000) -> None:
    """Train ``context`` in place on ``items`` (from :func:`residuals`): ``steps`` Adam steps, one random
    crop each, learning rate ``lr`` on a cosine to zero, gradients clipped at norm 1."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    items = [it for it in items if bool((it[2] & ~anchor_mask(*it[2].shape)).any())]
    if not items or steps <= 0:
        return
    opt = torch.optim.Adam(context.parameters(), lr=lr)
    context.train()
    t0, total = time.time(), 0.0
    for step in range(steps):
        r, idx, sel = items[rng.randrange(len(items))]
        h, w = r.shape[-2:]
        i = rng.randrange(max(h - CROP, 0) // 2 + 1) * 2
        j = rng.randrange(max(w - CROP, 0) // 2 + 1) * 2
        r, idx, sel = (t[..., i:i + CROP, j:j + CROP] for t in (r, idx, sel))
        if not bool(sel.any()):
            continue
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = _loss(context, gc, r.float(), idx, sel)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(context.parameters(), 1.0)
        opt.step()
        total += loss.item()
        if say and (step + 1) % every == 0:
            say(f"  step {step + 1}: {total / every:.4f} bits per non-anchor sample ({time.time() - t0:.0f}s)")
            total = 0.0
    context.eval()


@torch.no_grad()
def coded_bits(model, items: list) -> tuple[float, float]:
    """Bits of the coded non-anchor samples of ``items`` as the coder counts them: with the hyperprior's
    parameters alone, and with the model's context (its exact fixed-point twin)."""
    gc = model.gaussian_conditional
    before = after = 0.0
    for r, idx, sel in items:
        r, idx = r.float()[None], idx.int()[None]
        anchors = anchor_mask(*r.shape[-2:])
        second = sel & ~anchors
        sym = torch.round(r) * (sel & anchors)
        means, idx2 = model._refined(sym, torch.zeros_like(r), idx, anchors)
        e0 = -torch.log2(_likelihood(gc, torch.round(r), gc.scale_table[idx.long()]))
        e1 = -torch.log2(_likelihood(gc, torch.round(r - means), gc.scale_table[idx2.long()]))
        before += float(e0[..., second].sum())
        after += float(e1[..., second].sum())
    return before, after


def fit_contexts(intra, inter, clips, steps: int, qualities=range(NUM_QUALITIES), inter_qualities=(1, 4, 7),
                 intra_pictures: int = 2, images=(), hold_out: int = 4, seed: int = 0, say=print) -> dict:
    """Collect the latents of ``clips`` (a list; :func:`collect`: I-frames at ``qualities``, P-frames coded
    at ``inter_qualities``, 0-based) and of ``images`` (``(name, [picture])``, I-frames at ``qualities``)
    and fit the context of both models in place, ``steps`` each, on every clip and image but each
    ``hold_out``-th (0: on all). Returns {"intra"/"inter": (held-out bits with the hyperprior alone, with
    the context)} (zeros without held-out latents)."""
    data = collect(intra, None, clips, qualities, intra_pictures, say=say)
    data["intra"] += collect(intra, None, images, qualities, 1)["intra"]
    data["inter"] = collect(intra, inter, clips, inter_qualities, 0, say=say)["inter"]
    out = {}
    held = lambda n: hold_out and n % hold_out == hold_out - 1  # noqa: E731
    for name, model in (("intra", intra), ("inter", inter)):
        train = [it for n, it in data[name] if not held(n)]
        test = [it for n, it in data[name] if held(n)]
        say(f"{name}: {len(train)} latents to fit on, {len(test)} held out")
        fit(model.context, model.gaussian_conditional, train, steps, seed=seed, say=say)
        out[name] = coded_bits(model, test)
        before, after = out[name]
        if before:
            say(f"{name}: held-out bits of the non-anchor half {before:.0f} -> {after:.0f} "
                f"({100 * (after / before - 1):+.2f} %)")
    return out
