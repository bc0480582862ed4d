"""Block motion estimation at the encoder and motion compensation shared by encoder and decoder.

Motion is *found by search*, not by a trained flow network: a coarse-to-fine block search on the luma
plane (full search at the coarsest level of an area pyramid, +-2 refinement per finer level, then a
quarter-pel refinement), regularised towards the median of the neighbouring vectors so the field stays
cheap to code. Vectors are integers in quarter-pel luma units, one per ``block`` x ``block`` luma block.

Compensation has two fields (:data:`FIELDS`; the stream says which per picture, SPEC §7.1):

- ``"smooth"``: the block field upsampled bilinearly to a dense field (an overlapped-block style
  prediction without block edges), the *decoded* reference sampled with it in floating point;
- ``"block"``: each block moved by its own vector, as the search matched it, interpolated as H.264
  does: luma at quarter-pel with the 6-tap half-sample filter, chroma at eighth-pel with integer bilinear
  weights, rounded to 8 bits: exact on every machine. Where neighbouring blocks move differently (a hand
  over a still background) the smooth field bends the background around the moving block; measured on
  bench and training clips, the block field predicts 0.4-2 dB better from the same 16x16 vectors. The
  6-tap luma filter keeps a chain of P-frames predicted at sub-sample positions from blurring (bilinear
  interpolation is a low-pass filter applied once per picture).

The search (:func:`search`) refines to quarter-pel with the block field's luma interpolation.

Chroma uses half the vector. Everything works on the 6-channel half-resolution layout used by the models
(4 luma sub-pixels then U and V, see :func:`lvcodec.frames.to_tensor`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

BLOCK = 16
#: the motion fields a P-frame may use, in the order of their index in the stream (SPEC §7.1)
FIELDS = ("smooth", "block")


def luma(x6: torch.Tensor) -> torch.Tensor:
    """(B, 6, H/2, W/2) -> (B, 1, H, W) luma plane."""
    return F.pixel_shuffle(x6[:, :4], 2)


def _shift(ref_pad: torch.Tensor, pad: int, dx: int, dy: int, h: int, w: int) -> torch.Tensor:
    return ref_pad[:, :, pad + dy : pad + dy + h, pad + dx : pad + dx + w]


def _block_sad(diff: torch.Tensor, b: int, window: bool = False) -> torch.Tensor:
    """Mean absolute difference per ``b`` x ``b`` block. With ``window``, over a window twice the
    block size centred on it (steadier; only valid when every pixel has the same candidate shift)."""
    if window:
        # 2b x 2b for even b; a 1-pixel block (8x8 blocks at the coarsest of 3 levels) gets 3 x 3, so that
        # there is one window per block
        k = 2 * b + (b & 1)
        return F.avg_pool2d(diff.abs(), k, b, padding=(k - b) // 2, count_include_pad=False)
    return F.avg_pool2d(diff.abs(), b, b)


def _median3x3(mv: torch.Tensor) -> torch.Tensor:
    p = F.pad(mv.float(), (1, 1, 1, 1), mode="replicate")
    n = F.unfold(p, 3).view(mv.shape[0], 2, 9, mv.shape[2], mv.shape[3])
    return n.median(dim=2).values


class _Shifter:
    """Samples ``ref`` (B,1,H,W) at per-pixel integer offsets ``base + (dx, dy)``, edges replicated.

    The flat indices of ``base`` are computed once; each extra global shift is one scalar add."""

    def __init__(self, ref: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, extra: int = 1):
        b, _, h, w = ref.shape
        m = int(max(fx.abs().max().item(), fy.abs().max().item())) + extra
        self.flat = F.pad(ref, (m, m, m, m), mode="replicate").view(b, -1)
        self.wp = w + 2 * m
        ys = torch.arange(h, device=ref.device).view(1, h, 1) + m
        xs = torch.arange(w, device=ref.device).view(1, 1, w) + m
        self.idx = ((ys + fy.long()) * self.wp + xs + fx.long()).view(b, -1)
        self.shape = (b, 1, h, w)

    def __call__(self, dx: int, dy: int) -> torch.Tensor:
        return self.flat.gather(1, self.idx + (dy * self.wp + dx)).view(self.shape)


def _sample(plane: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of ``plane`` (B,C,H,W) displaced by float fields fx, fy (B,H,W) in pixels."""
    b, _, h, w = plane.shape
    ys = torch.arange(h, device=plane.device, dtype=plane.dtype).view(1, h, 1)
    xs = torch.arange(w, device=plane.device, dtype=plane.dtype).view(1, 1, w)
    gx = (xs + fx) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + fy) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1)
    return F.grid_sample(plane, grid, mode="bilinear", padding_mode="border", align_corners=True)


@torch.no_grad()
def search(cur6: torch.Tensor, ref6: torch.Tensor, lam: float | torch.Tensor = 0.08, block: int = BLOCK,
           radius: int = 12) -> torch.Tensor:
    """Estimate one vector per ``block`` luma block; returns int32 (B, 2, H/block, W/block), (dx, dy)
    in quarter-pel units. ``lam`` weighs vector smoothness: mean absolute luma error (0..255)
    per quarter pel of distance from the median of the neighbouring vectors (a float, or a
    (B, 1, 1, 1) tensor for one weight per batch item)."""
    cur = luma(cur6.float()) * 255.0
    ref = luma(ref6.float()) * 255.0
    h, w = cur.shape[-2:]
    levels = 2 if max(h, w) <= 512 else 3  # coarse search reaches +-radius * 2**levels pixels
    pyr_c, pyr_r = [cur], [ref]
    for _ in range(levels):
        pyr_c.append(F.avg_pool2d(pyr_c[-1], 2))
        pyr_r.append(F.avg_pool2d(pyr_r[-1], 2))

    # Full search at the coarsest level.
    c, r = pyr_c[-1], pyr_r[-1]
    bl = block >> levels
    hh, ww = c.shape[-2:]
    k = 2 * radius + 1
    rp = F.pad(r, (radius,) * 4, mode="replicate")
    # every candidate shift at once: channel (dy + r) * k + (dx + r) holds ref shifted by (dx, dy)
    shifted = F.unfold(rp, k).view(c.shape[0], k * k, hh, ww)
    cost = _block_sad(c - shifted, bl, window=True)
    d = torch.arange(-radius, radius + 1, device=c.device, dtype=cost.dtype).abs()
    cost = cost + (lam * 2**levels) * (d[:, None] + d[None, :]).view(1, k * k, 1, 1)  # mild pull to zero
    best = cost.argmin(1, keepdim=True)
    mv = torch.cat((best % k - radius, best // k - radius), 1).long()

    # Integer refinement level by level.
    for lev in range(levels - 1, -1, -1):
        mv = mv * 2
        c, r = pyr_c[lev], pyr_r[lev]
        bl = block >> lev
        pred_mv = _median3x3(mv)
        base = mv
        fx = base[:, 0].repeat_interleave(bl, 1).repeat_interleave(bl, 2)
        fy = base[:, 1].repeat_interleave(bl, 1).repeat_interleave(bl, 2)
        shift = _Shifter(r, fx, fy, extra=2)
        best = None
        # +-2 (not +-1): a shift of half a coarse pixel can round either way at the level above
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                cand = base + torch.tensor([dx, dy], device=mv.device).view(1, 2, 1, 1)
                cost = _block_sad(c - shift(dx, dy), bl)
                cost = cost + lam * 4 * 2**lev * (cand.float() - pred_mv).abs().sum(1, keepdim=True)
                if best is None:
                    best, mv = cost, cand
                else:
                    better = cost < best
                    best = torch.where(better, cost, best)
                    mv = torch.where(better, cand, mv)

    # Quarter-pel refinement on the full-resolution plane, interpolated as compensation does: every
    # candidate is its block's vector plus one (dx, dy) in -2..2 quarter pels, so the whole picture reads
    # one phase of the interpolated reference at one offset
    b, _, h, w = cur.shape
    fx = mv[:, 0].repeat_interleave(block, 1).repeat_interleave(block, 2)
    fy = mv[:, 1].repeat_interleave(block, 1).repeat_interleave(block, 2)
    # one interpolated window serves every candidate below (the predicted vectors lie within the range of
    # the searched ones; zero is added)
    x0, y0 = min(int(fx.min()) - 1, 0), min(int(fy.min()) - 1, 0)
    gw, gh = w + max(int(fx.max()), 0) - x0, h + max(int(fy.max()), 0) - y0
    phases = _luma_phases(torch.round(ref).long(), x0, y0, gw, gh)
    flat = phases.reshape(b, 16, -1)
    at = ((torch.arange(h, device=cur.device).view(1, h, 1) + fy - y0) * gw
          + torch.arange(w, device=cur.device).view(1, 1, w) + fx - x0).view(b, -1)
    mv = mv * 4
    pred_mv = _median3x3(mv)
    base = mv
    best = None
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            cand = base + torch.tensor([dx, dy], device=mv.device).view(1, 2, 1, 1)
            p = flat[:, (dy & 3) * 4 + (dx & 3)].gather(1, at + (dy >> 2) * gw + (dx >> 2))
            cost = _block_sad(cur - p.view(b, 1, h, w).to(cur.dtype), block)
            cost = cost + lam * (cand.float() - pred_mv).abs().sum(1, keepdim=True)
            if best is None:
                best, mv = cost, cand
            else:
                better = cost < best
                best = torch.where(better, cost, best)
                mv = torch.where(better, cand, mv)
    # Predictor candidates: the vector the residual coding predicts (costs nothing to send) and zero
    # (static background); each replaces the searched vector when it is as good once rate is counted.
    pred = mv_prediction(mv)
    best = None
    for cand in (mv, pred, torch.zeros_like(mv)):
        vx = cand[:, 0].long().repeat_interleave(block, 1).repeat_interleave(block, 2)
        vy = cand[:, 1].long().repeat_interleave(block, 1).repeat_interleave(block, 2)
        cost = _block_sad(cur - _read_phases(phases, x0, y0, vx, vy).to(cur.dtype), block)
        cost = cost + lam * (cand.float() - pred).abs().sum(1, keepdim=True)
        if best is None:
            best, out = cost, cand
        else:
            better = cost <= best
            best = torch.where(better, cost, best)
            out = torch.where(better, cand, out)
    return out.to(torch.int32)


def compensate(ref6: torch.Tensor, mv: torch.Tensor, block: int = BLOCK, field: str = "smooth") -> torch.Tensor:
    """Predict the current frame from the decoded reference ``ref6`` with the block vectors ``mv`` (the
    block size is read off their shape), by the motion field ``field`` (one of :data:`FIELDS`)."""
    if field == "block":
        return _compensate_blocks(ref6, mv)
    if field != "smooth":
        raise ValueError(f'unknown motion field "{field}" ({", ".join(FIELDS)})')
    f = mv.to(ref6.dtype) / 4.0
    h2, w2 = ref6.shape[-2:]
    dense = F.interpolate(f, size=(2 * h2, 2 * w2), mode="bilinear", align_corners=False)
    y = _sample(luma(ref6), dense[:, 0], dense[:, 1])
    dense_c = F.interpolate(f / 2, size=(h2, w2), mode="bilinear", align_corners=False)
    uv = _sample(ref6[:, 4:], dense_c[:, 0], dense_c[:, 1])
    return torch.cat((F.pixel_unshuffle(y, 2), uv), dim=1)


def _interpolate(p: torch.Tensor, vx: torch.Tensor, vy: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer bilinear interpolation of the 8-bit samples ``p`` (B, 1, H, W; int64) displaced by the
    per-sample vectors ``vx``, ``vy`` (B, H, W; int64, in units of 2^-``bits`` samples), edges
    replicated: ((2^b - fx)(2^b - fy)A + fx(2^b - fy)B + (2^b - fx)fy C + fx fy D + 2^(2b-1)) >> 2b, as
    H.264 interpolates chroma. Exact: the same integers on every machine."""
    b, _, h, w = p.shape
    one = 1 << bits
    fx, fy = vx & (one - 1), vy & (one - 1)
    xs = torch.arange(w, device=p.device).view(1, 1, w) + (vx >> bits)
    ys = torch.arange(h, device=p.device).view(1, h, 1) + (vy >> bits)
    x0, x1 = xs.clamp(0, w - 1), (xs + 1).clamp(0, w - 1)
    y0, y1 = ys.clamp(0, h - 1) * w, (ys + 1).clamp(0, h - 1) * w
    flat = p.reshape(b, -1)

    def at(yy, xx):
        return flat.gather(1, (yy + xx).view(b, -1)).view(b, h, w)

    acc = ((one - fx) * (one - fy) * at(y0, x0) + fx * (one - fy) * at(y0, x1)
           + (one - fx) * fy * at(y1, x0) + fx * fy * at(y1, x1))
    return ((acc + (1 << (2 * bits - 1))) >> (2 * bits))[:, None]


def _six_tap(a: torch.Tensor, dim: int) -> torch.Tensor:
    """H.264's half-sample filter (1, -5, 20, 20, -5, 1) along ``dim``, unscaled: output ``i`` lies between
    inputs ``i + 2`` and ``i + 3`` (so 5 fewer outputs than inputs)."""
    n = a.shape[dim] - 5
    t = [a.narrow(dim, k, n) for k in range(6)]
    return t[0] - 5 * t[1] + 20 * t[2] + 20 * t[3] - 5 * t[4] + t[5]


#: H.264's luma quarter-sample positions (fx, fy) as the rounded-up mean of two samples (plane, dx, dy):
#: plane 0 the full samples G, 1 the horizontal half samples b, 2 the vertical ones h, 3 the centre ones j
#: (each at the top-left full sample it follows); a full or half position is one sample taken twice
_QUARTER = {
    (0, 0): ((0, 0, 0), (0, 0, 0)), (2, 0): ((1, 0, 0), (1, 0, 0)),
    (0, 2): ((2, 0, 0), (2, 0, 0)), (2, 2): ((3, 0, 0), (3, 0, 0)),
    (1, 0): ((0, 0, 0), (1, 0, 0)), (3, 0): ((1, 0, 0), (0, 1, 0)),
    (0, 1): ((0, 0, 0), (2, 0, 0)), (0, 3): ((2, 0, 0), (0, 0, 1)),
    (2, 1): ((1, 0, 0), (3, 0, 0)), (2, 3): ((3, 0, 0), (1, 0, 1)),
    (1, 2): ((2, 0, 0), (3, 0, 0)), (3, 2): ((3, 0, 0), (2, 1, 0)),
    (1, 1): ((1, 0, 0), (2, 0, 0)), (3, 1): ((1, 0, 0), (2, 1, 0)),
    (1, 3): ((2, 0, 0), (1, 0, 1)), (3, 3): ((2, 1, 0), (1, 0, 1)),
}


def _luma_phases(p: torch.Tensor, x0: int, y0: int, w: int, h: int) -> torch.Tensor:
    """H.264's luma interpolation (ITU-T H.264 §8.4.2.2.1) of the 8-bit plane ``p`` (B, 1, H, W; integers)
    at every quarter-sample phase: (B, 16, ``h``, ``w``) uint8, phase ``fy * 4 + fx`` at (r, c) the sample
    at (``y0`` + r + fy/4, ``x0`` + c + fx/4), edges replicated. Half samples by the 6-tap filter (b, h:
    (b1 + 16) >> 5; j: (j1 + 512) >> 10, clipped to 0..255), quarter samples the mean of the two nearest
    full or half samples, rounded up. Exact integers on every machine."""
    ph, pw = p.shape[-2:]
    rows = torch.arange(y0 - 2, y0 + h + 4, device=p.device).clamp(0, ph - 1)
    cols = torch.arange(x0 - 2, x0 + w + 4, device=p.device).clamp(0, pw - 1)
    a = p[:, 0].to(torch.int32)[:, rows][:, :, cols]  # (B, h + 6, w + 6) from (y0 - 2, x0 - 2)
    b1 = _six_tap(a[:, 2:-3], 2)  # (B, h + 1, w + 1) from (y0, x0), half a sample right
    h1 = _six_tap(a[:, :, 2:-3], 1)  # half a sample down
    j1 = _six_tap(_six_tap(a, 2), 1)  # from the unscaled horizontal halves, as the standard does
    base = (a[:, 2:-3, 2:-3], ((b1 + 16) >> 5).clamp(0, 255), ((h1 + 16) >> 5).clamp(0, 255),
            ((j1 + 512) >> 10).clamp(0, 255))
    out = []
    for fy in range(4):
        for fx in range(4):
            (p0, dx0, dy0), (p1, dx1, dy1) = _QUARTER[fx, fy]
            u = base[p0][:, dy0:dy0 + h, dx0:dx0 + w]
            v = base[p1][:, dy1:dy1 + h, dx1:dx1 + w]
            out.append(((u + v + 1) >> 1).to(torch.uint8))
    return torch.stack(out, 1)


def _read_phases(phases: torch.Tensor, x0: int, y0: int, vx: torch.Tensor, vy: torch.Tensor) -> torch.Tensor:
    """Samples of :func:`_luma_phases` (B, 16, gh, gw) made from (``x0``, ``y0``) at the per-sample
    quarter-pel vectors ``vx``, ``vy`` (B, H, W; int64): (B, 1, H, W) int64."""
    b, _, gh, gw = phases.shape
    h, w = vx.shape[-2:]
    row = torch.arange(h, device=vx.device).view(1, h, 1) + (vy >> 2) - y0
    col = torch.arange(w, device=vx.device).view(1, 1, w) + (vx >> 2) - x0
    idx = ((vy & 3) * 4 + (vx & 3)) * (gh * gw) + row * gw + col
    return phases.reshape(b, -1).gather(1, idx.view(b, -1)).view(b, 1, h, w).long()


def _interpolate_luma(p: torch.Tensor, vx: torch.Tensor, vy: torch.Tensor) -> torch.Tensor:
    """The 8-bit luma plane ``p`` (B, 1, H, W; int64) displaced by the per-sample quarter-pel vectors ``vx``,
    ``vy`` (B, H, W; int64), interpolated as H.264 does (:func:`_luma_phases`); (B, 1, H, W) int64."""
    h, w = p.shape[-2:]
    x0, y0 = int((vx >> 2).min()), int((vy >> 2).min())
    phases = _luma_phases(p, x0, y0, w + int((vx >> 2).max()) - x0, h + int((vy >> 2).max()) - y0)
    return _read_phases(phases, x0, y0, vx, vy)


def _compensate_blocks(ref6: torch.Tensor, mv: torch.Tensor) -> torch.Tensor:
    """The ``"block"`` field: every block of the 8-bit reference moved by its own quarter-pel vector
    (luma in quarter-pel steps by H.264's 6-tap interpolation, chroma by half the vector in eighth-pel
    steps, bilinear), integer arithmetic."""
    h2, w2 = ref6.shape[-2:]
    size = 2 * h2 // mv.shape[-2]  # luma samples per block side
    m = mv.long()
    vx = m[:, 0].repeat_interleave(size, 1).repeat_interleave(size, 2)
    vy = m[:, 1].repeat_interleave(size, 1).repeat_interleave(size, 2)
    r8 = torch.round(ref6.float() * 255.0).long()
    y = _interpolate_luma(F.pixel_shuffle(r8[:, :4], 2), vx, vy)
    cx, cy = vx[:, ::2, ::2], vy[:, ::2, ::2]
    uv = [_interpolate(r8[:, c : c + 1], cx, cy, 3) for c in (4, 5)]
    out = torch.cat([F.pixel_unshuffle(y, 2)] + uv, dim=1)
    return out.to(ref6.dtype) / 255.0


def mv_prediction(mv: torch.Tensor) -> torch.Tensor:
    """Median of the left, top and top-right vectors (zero outside the frame), all from ``mv``."""
    p = F.pad(mv, (1, 1, 1, 0))
    left = p[:, :, 1:, :-2]
    top = p[:, :, :-1, 1:-1]
    topright = p[:, :, :-1, 2:]
    return torch.stack((left, top, topright), 0).median(0).values


def mv_from_residual(mvd: np.ndarray) -> np.ndarray:
    """Invert ``mv - mv_prediction(mv)`` in raster order (decoder side). mvd: int (2, Hb, Wb)."""
    _, hb, wb = mvd.shape
    mv = np.zeros((2, hb + 1, wb + 2), np.int64)  # one row/col of zero padding on top, left, right
    for i in range(hb):
        for j in range(wb):
            a = mv[:, i + 1, j]
            b = mv[:, i, j + 1]
            c = mv[:, i, j + 2]
            med = np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))
            mv[:, i + 1, j + 1] = med + mvd[:, i, j]
    return mv[:, 1:, 1:-1]
