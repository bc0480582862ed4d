"""The residual layer of model 1 (``bitstream/SPEC.md`` §7.2): what the autoencoders cannot reconstruct,
coded with an exact integer 8x8 transform.

Why: the learned transforms have a fidelity ceiling. Without any quantization the intra autoencoder gives
25.5 dB luma on the first frame of 03_blocks (a cutting mat: thin white lines on black) and 28.4 dB on
bear, so on such pictures no quality level gets better, however many bits it spends. A layer that needs
no learning lifts that ceiling: the error left in the decoded 8-bit picture is coded per 8x8 block of each
plane with the integer DCT of H.265 (exact in int64 arithmetic, so every machine decodes the same
samples), a uniform quantizer whose step the encoder picks per picture, and context tables built by
integer arithmetic from a few parameters each (:data:`LEVEL_PARAMS`, ...), so the tables are the same on
every machine without being stored. The encoder codes a block only where it pays by rate and
distortion, and sends no layer at all where none pays (the packet then has one substream fewer).

Syntax (one rANS stream, the packet's second substream):

1. the step index ``s`` (0..:data:`STEPS` - 1, uniform table); the step is ``step64(s) / 64`` in units of
   the orthonormal DCT's coefficients;
2. for each plane (Y, then U, V), on the coded (padded) picture, 8x8 blocks:

   a. the coded-block flags, by anti-diagonals of the block grid (top to bottom within one), table
      ``3 * chroma + left + top`` (neighbours outside the grid count 0);
   b. for the coded blocks in raster order, the band of the last non-zero level in zigzag order
      (:data:`BAND_STARTS`, table of the plane kind), then for the same blocks the position within the
      band (a uniform table of the band's size);
   c. the levels, zigzag position ``k`` = 63 down to 0, for each ``k`` those of the coded blocks whose last
      position is ``k`` or more (raster order), table (chroma, band of ``k``, ``m``) with ``m`` = 3 at
      the last position, else min(2, |level at k+1| + |level at k+2|); levels beyond +-:data:`LEVEL_RANGE`
      are the escape and the range coder's bypass chunks.

The tables adapt within the picture (backward adaptation, the same at both ends): each symbol group
above (one anti-diagonal of flags; one plane's bands; one zigzag position's levels) is coded with the
current tables, after which every flag, band and level table it used counts its symbols
(:data:`ADAPT_RATE` each, on top of its static frequencies) and is rebuilt from the counts. The step and
the positions within a band are never adapted. A new picture starts from the static tables.

Reconstruction: per coded block, ``R = (T^T (L * step64(s)) T + 2^20) >> 21`` (``L`` the 8x8 levels,
``T`` :data:`T8`, int64), added to the decoded picture's samples, clipped to 0..255.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import numpy as np

from .mvcoding import diagonals

#: the 8x8 integer DCT of H.265 (rows: basis functions, norm about 64 * sqrt(8); T8 @ T8.T ~ 2^15 I)
T8 = np.array([
    [64, 64, 64, 64, 64, 64, 64, 64],
    [89, 75, 50, 18, -18, -50, -75, -89],
    [83, 36, -36, -83, -83, -36, 36, 83],
    [75, -18, -89, -50, 50, 89, 18, -75],
    [64, -64, -64, 64, 64, -64, -64, 64],
    [50, -89, 18, 75, -75, -18, 89, -50],
    [36, -83, 83, -36, -36, 83, -83, 36],
    [18, -50, 75, -89, 89, -75, 50, -18],
], np.int64)
SHIFT = 21  # 2^15 (T8 norm squared) * 64 (step64 is in 1/64 units)
STEP_BASE = (40, 45, 51, 57, 64, 72)  # step64(s) = STEP_BASE[s % 6] << (s // 6): 0.625 .. 256 sample units
STEPS = 48
MAX_LEVEL = 4095  # a decoded level beyond this is an error (a real one is at most 8 * 255 / 0.625 = 3264)
LEVEL_RANGE = 31  # levels -31..31 have table entries; larger ones escape
BAND_STARTS = (0, 1, 3, 6, 10, 15, 28, 64)  # zigzag positions of the 7 bands
BANDS = len(BAND_STARTS) - 1
PRECISION = 16
ROUNDING = 0.35  # the encoder's first guess at each level: floor(|c| / step + ROUNDING)
#: count added to a symbol each time it is coded, against static frequencies that sum to 2^16 (so the
#: static table weighs as much as 64 symbols): 4.6-5.3 % fewer layer bits than static tables when adapted
#: per symbol on training videos (rates 1/32..1/512 of 2^16); adapting once per whole symbol group kept only
#: a fifth of that, hence :data:`ADAPT_CHUNK`
ADAPT_RATE = 1024
#: the longest run of symbols coded with the same tables: longer groups are coded (and adapt) in chunks
ADAPT_CHUNK = 256

# The table parameters, fitted by tools/fit_layer.py on training videos (never the bench clips); part of
# the format (SPEC §7.2): changing one changes how streams decode.
#: P(flag = 0) in 1/256, by 3 * chroma + (left + top) coded neighbours
CBF_PARAMS = (246, 165, 54, 248, 177, 67)
#: weights of the band of the last level (7 bands), luma then chroma
LAST_PARAMS = ((924, 296, 162, 198, 277, 1646, 9838), (1074, 509, 489, 426, 377, 634, 530))
#: (P(0) in 1/256, tail ratio in 1/256) per chroma, band, m (0..2: |next two levels|; 3: the last position)
LEVEL_PARAMS = (
    (  # luma: bands 0..6, each m = 0, 1, 2, 3
        ((220, 3), (199, 17), (152, 81), (1, 2)),
        ((228, 5), (212, 10), (184, 33), (1, 1)),
        ((229, 3), (212, 9), (187, 25), (1, 1)),
        ((219, 6), (201, 12), (176, 22), (1, 1)),
        ((211, 12), (186, 19), (160, 38), (1, 2)),
        ((203, 27), (167, 41), (138, 76), (1, 8)),
        ((207, 31), (178, 44), (141, 76), (1, 11)),
    ),
    (  # chroma: bands 0..6, each m = 0, 1, 2, 3
        ((144, 16), (144, 14), (148, 36), (1, 2)),
        ((137, 60), (132, 62), (111, 98), (1, 15)),
        ((148, 74), (141, 74), (116, 114), (1, 18)),
        ((177, 50), (145, 65), (108, 107), (1, 11)),
        ((192, 39), (167, 52), (124, 84), (1, 5)),
        ((209, 23), (184, 35), (136, 70), (1, 2)),
        ((226, 16), (211, 22), (170, 22), (1, 2)),
    ),
)


def step64(s: int) -> int:
    """Quantizer step of index ``s`` in 1/64 sample units (doubles every 6 indexes)."""
    return STEP_BASE[s % 6] << (s // 6)


def _zigzag() -> np.ndarray:
    """Raster index (8 * row + column) of each zigzag position 0..63 (JPEG order)."""
    pos = sorted(((i + j, i if (i + j) % 2 else j, 8 * i + j) for i in range(8) for j in range(8)))
    return np.array([p[2] for p in pos], np.int64)


ZIGZAG = _zigzag()
BAND_OF = np.repeat(np.arange(BANDS), np.diff(BAND_STARTS))  # band of each zigzag position


# -- tables (integer arithmetic only, so every machine builds the same ones) -------------------------------


def weights_cdf(weights) -> list[int]:
    """A range-coder table (CompressAI quantized CDF, 16-bit) over ``len(weights)`` symbols and the escape:
    frequency ``max(1, w * 65535 // sum)`` each, the escape 1, the largest (first of equals) taking up the
    remainder so that they sum to 2^16. Integer arithmetic in int64 (exact: the static weights stay below
    2^33 and the adapted counts below 2^47, so every product is below 2^63)."""
    w = np.asarray(weights, np.int64)
    f = np.maximum(1, w * 65535 // int(w.sum()))
    big = int(np.argmax(f))
    f[big] += 65535 - int(f.sum())
    if f[big] < 1:
        raise ValueError("table weights too uneven")
    return [0] + np.cumsum(np.append(f, 1)).tolist()


def level_weights(zero: int, ratio: int) -> list[int]:
    """Weights of levels -LEVEL_RANGE..LEVEL_RANGE: 0 has ``zero``/256 of the mass, the rest falls off
    geometrically by ``ratio``/256 per step of magnitude, symmetric."""
    t = [1 << 24]
    for _ in range(LEVEL_RANGE - 1):
        t.append(max(1, t[-1] * ratio >> 8))
    tail = sum(t) * 2
    side = [max(1, (256 - zero) * v * (1 << 24) // tail) for v in t]
    return side[::-1] + [zero << 24] + side


def uniform_cdf(n: int) -> list[int]:
    return weights_cdf([1] * n)


#: table indexes within :func:`tables`
T_STEP = 0
T_CBF = 1  # + 3 * chroma + ctx
T_LAST = 7  # + chroma
T_OFFSET = 9  # + band
T_LEVEL = 16  # + ((chroma * BANDS) + band) * 4 + m


@lru_cache(maxsize=1)
def tables() -> tuple[list, list, list]:
    """All tables of the layer as (cdfs, lengths, offsets) lists for the range coder."""
    cdfs, offsets = [uniform_cdf(STEPS)], [0]
    for c in CBF_PARAMS:
        cdfs.append(weights_cdf((c, 256 - c)))
        offsets.append(0)
    for w in LAST_PARAMS:
        cdfs.append(weights_cdf(w))
        offsets.append(0)
    for b in range(BANDS):
        cdfs.append(uniform_cdf(BAND_STARTS[b + 1] - BAND_STARTS[b]))
        offsets.append(0)
    for plane in LEVEL_PARAMS:
        for band in plane:
            for zero, ratio in band:
                cdfs.append(weights_cdf(level_weights(zero, ratio)))
                offsets.append(-LEVEL_RANGE)
    return cdfs, [len(c) for c in cdfs], offsets


def _adapted(t: int) -> bool:
    """Whether table ``t`` adapts (flags, bands, levels; not the step nor the positions within a band)."""
    return T_CBF <= t < T_OFFSET or t >= T_LEVEL


class AdaptiveTables:
    """The tables of one picture's layer as they adapt: :meth:`local` gives the tables of a symbol group,
    :meth:`update` counts the group's symbols and rebuilds the tables it used. Encoder and decoder call
    both for the same groups in the same order, so they hold the same tables at every symbol."""

    def __init__(self):
        cdfs, _, offsets = tables()
        self.cdfs, self.offsets = list(cdfs), offsets
        self.counts: dict[int, np.ndarray] = {}

    def local(self, idx: list[int]) -> tuple[list[int], tuple[list, list, list]]:
        """The group's table indexes renumbered into the tables it uses, and those tables."""
        used = sorted(set(idx))
        pos = {t: i for i, t in enumerate(used)}
        cdfs = [self.cdfs[t] for t in used]
        return [pos[t] for t in idx], (cdfs, [len(c) for c in cdfs], [self.offsets[t] for t in used])

    def update(self, syms: list[int], idx: list[int]) -> None:
        """Count the coded group ``syms`` (escapes are not counted) and rebuild its adapted tables."""
        if not ADAPT_RATE:
            return
        touched = set()
        for (t, v), n in Counter(zip(idx, syms)).items():
            if not _adapted(t):
                continue
            c = self.counts.get(t)
            if c is None:
                c = self.counts[t] = np.diff(np.array(self.cdfs[t], np.int64))[:-1]  # escape excluded
            a = v - self.offsets[t]
            if 0 <= a < len(c):
                c[a] += ADAPT_RATE * n
                touched.add(t)
        for t in touched:
            self.cdfs[t] = weights_cdf(self.counts[t])


def write(w, groups: list[tuple[list[int], list[int]]]) -> None:
    """Code symbol groups (symbols, table indexes) into the range coder ``w``, adapting after each."""
    state = AdaptiveTables()
    for syms, idx in groups:
        for a in range(0, len(idx), ADAPT_CHUNK):
            s, i = syms[a:a + ADAPT_CHUNK], idx[a:a + ADAPT_CHUNK]
            w.put_with_tables(s, *state.local(i))
            state.update(s, i)


def _read(r, state: AdaptiveTables, idx: list[int]) -> list[int]:
    """Decode one symbol group with the tables ``idx``, chunk by chunk as :func:`write` coded it."""
    out = []
    for a in range(0, len(idx), ADAPT_CHUNK):
        i = idx[a:a + ADAPT_CHUNK]
        syms = r.get_with_tables(*state.local(i))
        state.update(syms, i)
        out += syms
    return out


@lru_cache(maxsize=1)
def _costs() -> np.ndarray:
    """Bits of each table symbol (-log2 of its probability), (tables, longest table); the escape's entry
    is its bits plus a guess for the bypass chunks."""
    cdfs, lengths, _ = tables()
    out = np.full((len(cdfs), max(lengths)), 30.0)
    for i, c in enumerate(cdfs):
        f = np.diff(np.array(c, np.float64))
        out[i, :len(f)] = -np.log2(f / 65536.0)
    return out


# -- transform ---------------------------------------------------------------------------------------


def to_blocks(plane: np.ndarray) -> np.ndarray:
    """(H, W) -> (H/8 * W/8, 8, 8) in raster order of the blocks."""
    h, w = plane.shape
    return plane.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3).reshape(-1, 8, 8)


def from_blocks(blocks: np.ndarray, h: int, w: int) -> np.ndarray:
    return blocks.reshape(h // 8, w // 8, 8, 8).transpose(0, 2, 1, 3).reshape(h, w)


def inverse(levels: np.ndarray, s: int) -> np.ndarray:
    """Exact reconstruction of the residual from zigzag levels (n, 64) int64 at step index ``s``: (n, 8, 8)."""
    c = np.zeros((len(levels), 64), np.int64)
    c[:, ZIGZAG] = levels * step64(s)
    c = c.reshape(-1, 8, 8)
    return (np.matmul(np.matmul(T8.T, c), T8) + (1 << (SHIFT - 1))) >> SHIFT


def forward(res: np.ndarray) -> np.ndarray:
    """Orthonormal-scale DCT coefficients of residual blocks (n, 8, 8), in zigzag order (n, 64), float64
    (encoder only)."""
    t = T8.astype(np.float64)
    c = np.matmul(np.matmul(t, res.astype(np.float64)), t.T) / 32768.0
    return c.reshape(-1, 64)[:, ZIGZAG]


# -- contexts ----------------------------------------------------------------------------------------


def last_positions(levels: np.ndarray) -> np.ndarray:
    """Zigzag position of the last non-zero level per block, -1 for none."""
    nz = levels != 0
    return np.where(nz.any(1), 63 - np.argmax(nz[:, ::-1], 1), -1)


def level_contexts(levels: np.ndarray, last: np.ndarray) -> np.ndarray:
    """m (0..3) of every zigzag position of coded blocks (n, 64), as the decoder derives it."""
    a = np.abs(levels)
    nxt = np.zeros_like(a)
    nxt[:, :-1] += a[:, 1:]
    nxt[:, :-2] += a[:, 2:]
    m = np.minimum(nxt, 2)
    m[np.arange(64)[None, :] == last[:, None]] = 3
    return m


def cbf_contexts(flags: np.ndarray) -> np.ndarray:
    """left + top coded flags (0..2) of every block of a (hb, wb) flag grid."""
    f = flags.astype(np.int64)
    ctx = np.zeros_like(f)
    ctx[:, 1:] += f[:, :-1]
    ctx[1:, :] += f[:-1, :]
    return ctx


def _level_table(chroma: int, k, m) -> np.ndarray:
    return T_LEVEL + ((chroma * BANDS) + BAND_OF[k]) * 4 + m


# -- encoder -----------------------------------------------------------------------------------------


def _level_bits(levels: np.ndarray, chroma: int) -> np.ndarray:
    """Estimated bits of each block's last position and levels (n,), from the tables."""
    cost = _costs()
    last = last_positions(levels)
    m = level_contexts(levels, last)
    k = np.arange(64)[None, :]
    tab = _level_table(chroma, k, m)
    sym = np.clip(levels, -LEVEL_RANGE - 1, LEVEL_RANGE + 1) + LEVEL_RANGE  # escape index for both signs
    sym = np.where(sym > 2 * LEVEL_RANGE, 2 * LEVEL_RANGE + 1, sym)
    sym = np.where(sym < 0, 2 * LEVEL_RANGE + 1, sym)
    bits = np.where(k <= last[:, None], cost[tab, sym], 0.0).sum(1)
    lb = BAND_OF[np.maximum(last, 0)]
    bits += cost[T_LAST + chroma, lb] + np.log2(np.diff(BAND_STARTS))[lb]
    return np.where(last >= 0, bits, 0.0)


def quantize(coef: np.ndarray, s: int, lam: float, chroma: int) -> np.ndarray:
    """Levels of zigzag coefficients (n, 64) by rate and distortion: each level is the rounded one, one
    less, or 0, whichever costs least as ``lam`` * squared error (the transform is near orthonormal, so
    coefficient and sample errors match) + its bits in the table of the context the rounded levels give."""
    step = step64(s) / 64.0
    a = np.abs(coef) / step
    rounded = np.minimum(np.floor(a + ROUNDING), MAX_LEVEL).astype(np.int64)
    sign = np.where(coef < 0, -1, 1)
    last = last_positions(rounded)
    tab = _level_table(chroma, np.arange(64)[None, :], level_contexts(rounded, last))
    cost = _costs()
    best, best_j = None, None
    for cand in (rounded, np.maximum(rounded - 1, 0), np.zeros_like(rounded)):
        sym = np.where(cand > LEVEL_RANGE, 2 * LEVEL_RANGE + 1, cand + LEVEL_RANGE)
        j = lam * (a - cand) ** 2 * step * step + cost[tab, sym]
        if best is None:
            best, best_j = cand, j
        else:
            better = j < best_j
            best, best_j = np.where(better, cand, best), np.where(better, j, best_j)
    return sign * best


class Plane:
    """One plane's source and decoded blocks, their transform and their weighted error: what every step the
    encoder tries starts from (computed once per picture)."""

    def __init__(self, src: np.ndarray, rec: np.ndarray, chroma: int, mask: np.ndarray | None):
        self.shape, self.chroma = src.shape, chroma
        self.sb, self.rb = to_blocks(src.astype(np.int64)), to_blocks(rec.astype(np.int64))
        self.coef = forward(self.sb - self.rb)
        self.wgt = mask if mask is not None else 1.0
        self.d0 = (((self.sb - self.rb) ** 2).sum((1, 2))) * self.wgt


class PlaneChoice:
    """One plane's coded blocks at one step: levels, flags, the reconstruction and its cost."""

    def __init__(self, plane: Plane, s: int, lam: float):
        h, w = plane.shape
        chroma, rb, d0 = plane.chroma, plane.rb, plane.d0
        self.shape, self.chroma, self.s = (h, w), chroma, s
        levels = quantize(plane.coef, s, lam, chroma)
        nz = (levels != 0).any(1)
        new = np.clip(rb + inverse(levels, s), 0, 255)
        d1 = (((plane.sb - new) ** 2).sum((1, 2))) * plane.wgt
        bits = _level_bits(levels, chroma)
        gain = lam * (d0 - d1) - bits - 1.0
        flags = nz & (gain > 0)
        self.flags = flags.reshape(h // 8, w // 8)
        self.levels = levels
        self.blocks = np.where(flags[:, None, None], new, rb)
        self.distortion = float(np.where(flags, d1, d0).sum())
        self.bits = float(self._flag_bits() + bits[flags].sum())

    def _flag_bits(self) -> float:
        cost = _costs()
        ctx = cbf_contexts(self.flags)
        return float(cost[T_CBF + 3 * self.chroma + ctx, self.flags.astype(np.int64)].sum())

    def picture(self) -> np.ndarray:
        return from_blocks(self.blocks, *self.shape)

    def symbols(self, groups: list) -> None:
        """Append this plane's symbol groups (symbols, table indexes) in coding order."""
        flags = self.flags
        ctx = cbf_contexts(flags)
        for i, j in diagonals(*flags.shape):
            groups.append((flags[i, j].astype(np.int64).tolist(), (T_CBF + 3 * self.chroma + ctx[i, j]).tolist()))
        lv = self.levels[flags.reshape(-1)]
        if not len(lv):
            return
        last = last_positions(lv)
        band = BAND_OF[last]
        groups.append((band.tolist(), [T_LAST + self.chroma] * len(lv)))
        groups.append(((last - np.array(BAND_STARTS)[band]).tolist(), (T_OFFSET + band).tolist()))
        m = level_contexts(lv, last)
        for k in range(63, -1, -1):
            sel = last >= k
            groups.append((lv[sel, k].tolist(), _level_table(self.chroma, k, m[sel, k]).tolist()))


def planes_of(x6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U, V (int64 sample arrays) of a 6-channel layout tensor (1, 6, H/2, W/2) in [0, 1]."""
    import torch.nn.functional as F

    a = (x6.detach().float().cpu() * 255.0).round()
    y = F.pixel_shuffle(a[:, :4], 2)[0, 0]
    return y.numpy().astype(np.int64), a[0, 4].numpy().astype(np.int64), a[0, 5].numpy().astype(np.int64)


def tensor_of(planes) -> "torch.Tensor":  # noqa: F821
    """Inverse of :func:`planes_of`."""
    import torch
    import torch.nn.functional as F

    y, u, v = (torch.from_numpy(np.ascontiguousarray(p, np.float32)) for p in planes)
    ty = F.pixel_unshuffle(y[None, None], 2)
    return torch.cat((ty, torch.stack((u, v))[None]), 1) / 255.0


def _masks(shape: tuple[int, int], display: tuple[int, int] | None):
    """Per-block weight of the luma and chroma planes: the share of each block inside the display area
    (the padding is never seen), or None for all."""
    if display is None:
        return None, None
    h, w = shape
    dw, dh = display
    out = []
    for (ph, pw), (vh, vw) in (((h, w), (dh, dw)), ((h // 2, w // 2), (-(-dh // 2), -(-dw // 2)))):
        m = np.zeros((ph, pw))
        m[:vh, :vw] = 1.0
        out.append(to_blocks(m).mean((1, 2)))
    return out


def encode(x, x_hat, lam: float, steps=None, display: tuple[int, int] | None = None):
    """Choose and code the layer of a picture.

    ``x`` is the source and ``x_hat`` the decoded picture (8-bit values), both 6-channel layout tensors;
    ``lam`` weighs distortion against bits as in training (lambda * 255^2 * MSE_YUV + bpp, so a squared
    sample error costs ``lam * 0.75`` bits in luma and ``lam * 0.5`` in chroma). ``steps`` are the step
    indexes to try (default: three around the one that suits ``lam``). Returns ``(data, x_new)``: the
    substream and the picture with the layer, or ``(None, x_hat)`` when no step pays."""
    from .models import RansWriter

    src, rec = planes_of(x), planes_of(x_hat)
    my, mc = _masks(src[0].shape, display)
    planes = [Plane(a, b, chroma, m) for a, b, chroma, m in zip(src, rec, (0, 1, 1), (my, mc, mc))]
    weight = (0.75, 0.5, 0.5)  # of a squared sample error, luma and chroma (times lam)
    if steps is None:
        steps = suggested_steps(lam)
    best, best_cost = None, None
    base = lam * (0.75 * float(planes[0].d0.sum()) + 0.5 * (float(planes[1].d0.sum()) + float(planes[2].d0.sum())))
    for s in steps:
        choice = [PlaneChoice(p, s, lam * wt) for p, wt in zip(planes, weight)]
        cost = sum(c.bits + lam * wt * c.distortion for c, wt in zip(choice, weight)) + 6 + 16
        if best_cost is None or cost < best_cost:
            best, best_cost = choice, cost
    if best is None or best_cost >= base:
        return None, x_hat
    w = RansWriter()
    write(w, symbols(best))
    return w.flush(), tensor_of([c.picture() for c in best]).to(x_hat.device)


def symbols(planes: list[PlaneChoice]) -> list[tuple[list[int], list[int]]]:
    """The symbol groups of a layer (the planes' choices at one step), each (symbols, table indexes), in
    coding order: the tables adapt after each group (:func:`write`)."""
    groups = [([planes[0].s], [T_STEP])]
    for c in planes:
        c.symbols(groups)
    return groups


def suggested_steps(lam: float) -> tuple[int, ...]:
    """Step indexes to try at ``lam``: around the step whose squared size is about 7 squared sample
    errors per bit of luma (the high-rate rule of thumb lambda_SSE = 0.14 step^2)."""
    target = (1.0 / (0.75 * lam) / 0.14) ** 0.5
    s = min(range(STEPS), key=lambda i: abs(np.log(step64(i) / 64.0 / target)))
    return tuple(i for i in (s - 2, s, s + 2) if 0 <= i < STEPS)


# -- decoder -----------------------------------------------------------------------------------------


def decode(data: bytes, x_hat):
    """The picture ``x_hat`` (8-bit values, 6-channel layout) with the layer ``data`` added."""
    from .models import RansReader

    state = AdaptiveTables()
    r = RansReader(data)
    (s,) = _read(r, state, [T_STEP])
    if not 0 <= s < STEPS:
        raise ValueError(f"corrupt stream: layer step index {s}")
    out = []
    for chroma, plane in zip((0, 1, 1), planes_of(x_hat)):
        h, w = plane.shape
        hb, wb = h // 8, w // 8
        flags = np.zeros((hb + 1, wb + 1), np.int64)  # a row and a column of zeros top and left
        for i, j in diagonals(hb, wb):
            ctx = flags[i + 1, j] + flags[i, j + 1]
            f = np.array(_read(r, state, (T_CBF + 3 * chroma + ctx).tolist()), np.int64)
            if ((f < 0) | (f > 1)).any():
                raise ValueError("corrupt stream: layer block flag")
            flags[i + 1, j + 1] = f
        coded = np.flatnonzero(flags[1:, 1:].reshape(-1))
        blocks = to_blocks(plane)
        if len(coded):
            n = len(coded)
            band = np.array(_read(r, state, [T_LAST + chroma] * n), np.int64)
            if ((band < 0) | (band >= BANDS)).any():
                raise ValueError("corrupt stream: layer band")
            off = np.array(_read(r, state, (T_OFFSET + band).tolist()), np.int64)
            size = np.diff(BAND_STARTS)[band]
            if ((off < 0) | (off >= size)).any():
                raise ValueError("corrupt stream: layer position")
            last = np.array(BAND_STARTS)[band] + off
            lv = np.zeros((n, 66), np.int64)
            for k in range(63, -1, -1):
                sel = np.flatnonzero(last >= k)
                a = np.abs(lv[sel, k + 1]) + np.abs(lv[sel, k + 2])
                m = np.where(last[sel] == k, 3, np.minimum(a, 2))
                lv[sel, k] = _read(r, state, _level_table(chroma, k, m).tolist())
            lv = lv[:, :64]
            if (np.abs(lv) > MAX_LEVEL).any():
                raise ValueError("corrupt stream: layer level out of range")
            blocks = blocks.copy()
            blocks[coded] = np.clip(blocks[coded] + inverse(lv, s), 0, 255)
        out.append(from_blocks(blocks, h, w))
    return tensor_of(out).to(x_hat.device)
