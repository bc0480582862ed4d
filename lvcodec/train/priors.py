"""Fitting the fixed priors of the shipped model family to the symbols the encoder actually codes.

Training fits the factorized priors (ẑ of the intra and inter models, the motion-vector residuals) with
uniform noise standing in for rounding, on training crops. Here they are fitted by maximum *discrete*
likelihood (the probabilities the range coder uses) on whole pictures, one prior per quality level:

1. :func:`collect` codes the first frames of training videos at every quality level exactly as
   ``lvc encode`` does (whole pictures, not crops: a crop is mostly picture edge, where the vector
   prediction is zero) and keeps every symbol of ẑ (I- and P-frames) and every vector residual field;
2. :func:`fit` fits each ẑ prior, each quality's channels on that quality's symbols, keeping the medians
   (so ẑ, the entropy parameters of ŷ and every decoded picture stay exactly the same: only the bits
   change); :func:`fit_vector_tables` counts the context tables of the vector residuals
   (:mod:`lvcodec.mvcoding`); the factorized vector prior, which only prices vectors in training, is
   fitted whole.

:func:`fit_priors` does all of it; ``lvc train`` runs it before exporting, ``tools/fit_priors.py`` on
existing weights.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from compressai.entropy_models import EntropyBottleneck

from .. import motion, mvcoding
from ..codec import mv_lambda
from ..frames import quantize8, to_tensor
from ..models import NUM_QUALITIES, InterModel, IntraModel, _expand
from ..zoo import HyperpriorV1

PRIORS = ("intra_z", "inter_z", "mv")
#: what :func:`collect` gathers: the symbols of the priors, and the bits of ŷ under each of :data:`SCALE_FACTORS`
COLLECTED = PRIORS + ("intra_y", "inter_y")
#: the factors on the scales of ŷ' among which :func:`fit_scales` chooses, per quality and channel: steps
#: of 2 % (in the log) from 0.3 to 1.6, 1 included
SCALE_FACTORS = torch.exp(0.02 * torch.arange(-60, 24, dtype=torch.float64)).float()
#: how ``lvc encode``'s default preset chooses the block size: the fitted tables price what it codes
DEFAULT_DECIDE = HyperpriorV1.PRESETS[HyperpriorV1.default_preset]["decide"]


def _z_grid(model, y: torch.Tensor, q: int) -> torch.Tensor:
    """The symbols of ẑ (1, Nz, Hz, Wz) that :meth:`_put_latent` codes for the latent ``y`` at quality index
    ``q`` (where a region mask leaves a sample out, it codes 0 instead)."""
    qt = torch.tensor([q])
    z_g = model.h_a(y * model._g(model.gain, qt)) * model._g(model.zgain, qt)
    return torch.round(z_g - model.z_medians(q).view(1, -1, 1, 1))


def z_symbols(model, y: torch.Tensor, q: int, region: torch.Tensor | None = None) -> torch.Tensor:
    """The symbols of ẑ that :meth:`_put_latent` codes for the latent ``y`` at quality index ``q``: (Nz, n);
    with ``region``, those of the samples it sets (a masked P-frame codes no others)."""
    sym = _z_grid(model, y, q)[0]
    return (sym.flatten(1) if region is None else sym[:, region]).to(torch.int32)


def y_params(model, y: torch.Tensor, q: int, region: torch.Tensor | None = None):
    """The exact means and (calibrated) scales of ŷ' that :meth:`_put_latent` codes the latent ``y`` with at
    quality index ``q`` (with ``region``, ẑ is 0 outside it), before the checkerboard context."""
    z_sym = _z_grid(model, y, q)
    if region is not None:
        z_sym = z_sym * region
    return model._params_exact(z_sym + model.z_medians(q).view(1, -1, 1, 1), q)


@torch.no_grad()
def y_costs(model, y: torch.Tensor, q: int, region: torch.Tensor | None = None) -> torch.Tensor:
    """Bits of each channel of ŷ that :meth:`_put_latent` codes for the latent ``y`` at quality index ``q``
    (with ``region``, only under the samples it sets), were its scales those of ``h_s`` times each of
    :data:`SCALE_FACTORS` instead of times ``scale_calib``: (M, len(SCALE_FACTORS)). As the coder prices
    them: each scale is replaced by the entry of the scale table its index picks."""
    qt = torch.tensor([q])
    means, scales = y_params(model, y, q, region)
    scales = scales / model._g(model.scale_calib, qt)
    sym = torch.round(y * model._g(model.gain, qt) - means)[0]
    scales = scales[0]
    if region is not None:
        sel = _expand(region, 4)
        sym, scales = sym[:, sel], scales[:, sel]
    sym, scales = sym.flatten(1), scales.flatten(1)
    gc = model.gaussian_conditional
    out = torch.empty(sym.shape[0], len(SCALE_FACTORS))
    for i, f in enumerate(SCALE_FACTORS):
        table = gc.scale_table[gc.build_indexes(scales * f).long()]
        out[:, i] = -torch.log2(gc.likelihood_lower_bound(gc._likelihood(sym, table))).sum(1)
    return out


@torch.no_grad()
def collect(intra: IntraModel, inter: InterModel, clips, intra_offsets=HyperpriorV1.INTRA_OFFSETS,
            say=None):
    """Code each clip (``(name, pictures)``, whole pictures, at least two) at every quality level as
    ``lvc encode`` does (the I-frame ``intra_offsets[q]`` levels up, then P-frames) and keep every symbol of
    ẑ (any picture may be an I-frame), every vector residual field and the bits of ŷ by scale factor
    (:func:`y_costs`; the I-frames' latents unrefined). Every P-frame is coded at the
    level being collected, not at the encoder's per-position levels (``HyperpriorV1.INTER_OFFSETS``), so
    that every level gets the symbols of every P-frame, however short the clips (with them, the top level
    would come only from every 4th P-frame); a P-frame's reference is then one level better or worse
    than the encoder's would be, nothing more.
    Returns {name: [[(C, n) int tensors, (2, Hb, Wb) fields for "mv", (M, factors) bits for "*_y"] *
    NUM_QUALITIES]} for each name of :data:`COLLECTED`."""
    out = {p: [[] for _ in range(NUM_QUALITIES)] for p in COLLECTED}
    for name, pics in clips:
        if len(pics) < 2:
            continue
        xs = [to_tensor(p, 64) for p in pics]
        t0 = time.time()
        for x in xs:
            y = intra.g_a(x)
            for q in range(NUM_QUALITIES):
                out["intra_z"][q].append(z_symbols(intra, y, q))
                out["intra_y"][q].append(y_costs(intra, y, q))
        for q in range(NUM_QUALITIES):
            ref = quantize8(intra.compress(xs[0], min(q + intra_offsets[q], NUM_QUALITIES - 1))["x_hat"])
            for x in xs[1:]:
                coded = inter.encode(x, ref, q, mv_lambda(q + 1), decide=DEFAULT_DECIDE)
                mv = coded["mv"]
                out["mv"][q].append((mv - motion.mv_prediction(mv))[0])
                pred = motion.compensate(ref, mv, field=coded["field"])
                if not coded["skip"]:  # a skipped latent codes no ẑ
                    y = inter.g_a(torch.cat((x - pred, pred), 1))
                    out["inter_z"][q].append(z_symbols(inter, y, q, coded["region"]))
                    out["inter_y"][q].append(y_costs(inter, y, q, coded["region"]))
                ref = quantize8(coded["x_hat"])
        if say:
            say(f"{name}: {len(pics)} frames {pics[0].width}x{pics[0].height} {time.time() - t0:.0f}s")
    return out


def fit(eb: EntropyBottleneck, symbols: list[list[torch.Tensor]], steps: int, keep_medians: bool,
        say=print) -> None:
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
        say(f"  quality {q + 1}: {n} symbols per channel, bits per position (all {per_q} channels) "
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


def fit_vector_tables(inter: InterModel, fields: list[list[torch.Tensor]], say=print) -> None:
    """Count the context histograms of the vector residual fields and install them as the inter model's tables."""
    c = mvcoding.CONTEXTS
    before = [table_bits(inter.mv_cdf[q * c:(q + 1) * c], fields[q]) for q in range(NUM_QUALITIES)]
    inter.set_vector_tables(mvcoding.fit_pmfs([[f.numpy() for f in fs] for fs in fields]))
    for q in range(NUM_QUALITIES):
        after = table_bits(inter.mv_cdf[q * c:(q + 1) * c], fields[q])
        say(f"  quality {q + 1}: bits per component {before[q]:.3f} -> {after:.3f}")


def fit_scales(model, costs: list[list[torch.Tensor]], say=print) -> None:
    """Set ``model.scale_calib`` to the factor of :data:`SCALE_FACTORS` that codes the collected latents in
    the fewest bits, per quality and channel (``costs[q]``: (M, factors) tensors of :func:`y_costs`); a
    quality with no latents keeps its factors."""
    for q, v in enumerate(costs):
        if not v:
            say(f"  quality {q + 1}: no latents, factors kept")
            continue
        total = torch.stack(v).sum(0)  # (M, factors)
        best = total.argmin(1)
        one = int(torch.argmin((SCALE_FACTORS - 1).abs()))
        before, after = float(total[:, one].sum()), float(total.gather(1, best[:, None]).sum())
        model.scale_calib[q] = SCALE_FACTORS[best]
        f = model.scale_calib[q]
        say(f"  quality {q + 1}: bits of ŷ {before:.0f} -> {after:.0f} ({100 * (after / before - 1):+.1f} %), "
            f"factors {float(f.min()):.2f} .. {float(f.max()):.2f}, median {float(f.median()):.2f}")


def fit_priors(intra: IntraModel, inter: InterModel, clips, steps: int = 3000, say=print, symbols=None) -> dict:
    """Collect the symbols of ``clips`` (see :func:`collect`; or take ``symbols`` already collected) and fit
    all three priors, the vector tables and the scale factors of ŷ in place. Returns the symbols."""
    sym = symbols if symbols is not None else collect(intra, inter, clips, say=say)
    for name, eb, keep in (("intra_z", intra.entropy_bottleneck, True), ("inter_z", inter.entropy_bottleneck, True),
                           ("mv", inter.mv_entropy, False)):
        say(f"{name}:")
        fit(eb, sym[name], steps, keep, say)
    say("mv (context tables, lvcodec/mvcoding.py):")
    fit_vector_tables(inter, sym["mv"], say)
    for name, model in (("intra_y", intra), ("inter_y", inter)):
        say(f"{name} (scale factors):")
        fit_scales(model, sym.get(name, [[]] * NUM_QUALITIES), say)
    return sym
