"""Context-adaptive coding of the block vector residuals (``bitstream/SPEC.md`` §7.1).

A P-frame's vector field is coded as residuals from the median prediction (:func:`lvcodec.motion.mv_prediction`).
How those residuals are distributed depends mostly on *where* they are: next to blocks whose residuals are
zero (static background, smooth motion) almost all are zero; next to large ones (an object edge, a search
that found a different match) they are large too. A single factorized prior per quality prices every
position the same and pays for that. Measured on the residuals the encoder codes on the training videos
(``tools/fit_priors.py``): 1.44 bits per component with the per-quality factorized prior at quality 1,
1.09 with these tables; 2.76 -> 2.33 at quality 8.

Each residual is coded with one of :data:`CONTEXTS` tables per quality level, chosen from symbols the decoder
already has:

- ``s`` = |left residual| + |top residual| (both components of the neighbouring blocks; zero outside the
  picture), bucketed by :data:`BUCKETS` into 0..4;
- the x component uses table ``bucket``; the y component table ``5 + bucket`` if the block's x residual is
  zero, else ``10 + bucket`` (the two components of a block are far from independent).

Residuals in [-:data:`RANGE`, :data:`RANGE`] are coded with the table; the rest by the range coder's escape
(the table's last symbol, then the value in bypass chunks). The tables are fixed CDFs in the inter weights,
fitted on training videos by ``tools/fit_priors.py``.

The field's block size (8, 16, 32 or 64 luma pixels, :data:`BLOCK_SIZES`) and how it is applied (the motion
field, :data:`lvcodec.motion.FIELDS`) are chosen by the encoder per frame and coded first, in one symbol
(the motion mode, :data:`MOTION_MODES`, :func:`encode_block_size`); every size and field uses the same
tables.

Coding order: anti-diagonals of the block grid (``i + j`` = 0, 1, ...), and within one, the x residuals of
its blocks top to bottom, then their y residuals. Every context then depends on an earlier diagonal or on
the x residuals just decoded, so the decoder asks the range decoder for a whole diagonal at a time (two
calls per diagonal rather than two per block).
"""

from __future__ import annotations

import numpy as np
import torch


#: Motion block sizes (luma pixels) a P-frame may use; the encoder picks one per frame
BLOCK_SIZES = (8, 16, 32, 64)
#: the motion modes (field, block size) a P-frame may use, by index ``k``: coded first, with
#: :data:`MOTION_MODE_CDF` (SPEC §7.1); 8x8 blocks only with the block field
MOTION_MODES = (("smooth", 16), ("smooth", 32), ("smooth", 64), ("block", 16), ("block", 32), ("block", 64),
                ("block", 8))
#: fixed range-coder table of the motion mode: the smooth field's modes 1/64 each (the encoder uses the block
#: field), the block field's four about 15/64 each, then the escape
MOTION_MODE_CDF = (0, 1024, 2048, 3072, 18688, 34304, 49920, 65535, 65536)
RANGE = 64  # residuals in [-RANGE, RANGE] (quarter-pel) have a table entry; larger ones escape
BUCKETS = (1, 3, 9, 25)  # |left| + |top| thresholds: 5 buckets
NB = len(BUCKETS) + 1
CONTEXTS = 3 * NB  # x: NB tables; y: NB given x == 0, NB given x != 0
PRECISION = 16


def _bucket(s: np.ndarray) -> np.ndarray:
    """Table of an x residual (0..NB-1) from |left| + |top| of its neighbours."""
    return np.digitize(s, BUCKETS)


def _y_table(bucket: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Table of a y residual: its block's bucket, split by whether the block's x residual is zero."""
    return NB + bucket + NB * (x != 0)


def contexts(mvd: np.ndarray) -> np.ndarray:
    """Table index (0..CONTEXTS-1) of every residual of ``mvd`` (2, Hb, Wb), as the decoder derives it."""
    a = np.abs(mvd).sum(0)
    s = np.zeros_like(a)
    s[:, 1:] += a[:, :-1]
    s[1:, :] += a[:-1, :]
    b = _bucket(s)
    return np.stack((b, _y_table(b, mvd[0])))


def diagonals(hb: int, wb: int):
    """(rows, columns) of the blocks of each anti-diagonal of an (hb, wb) grid, in order, rows increasing."""
    for d in range(hb + wb - 1):
        i = np.arange(max(0, d - wb + 1), min(d, hb - 1) + 1)
        yield i, d - i


def coding_order(hb: int, wb: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(component, row, column) of each residual in coding order."""
    c, r, k = [], [], []
    for i, j in diagonals(hb, wb):
        for comp in (0, 1):
            c.append(np.full(len(i), comp))
            r.append(i)
            k.append(j)
    return np.concatenate(c), np.concatenate(r), np.concatenate(k)


def quantized_cdfs(pmfs: np.ndarray) -> torch.Tensor:
    """Range-coder tables from probabilities (T, 2*RANGE + 2): the residuals -RANGE..RANGE, then the escape.
    Every entry gets a non-zero frequency. Returns (T, 2*RANGE + 3) int32."""
    from compressai._CXX import pmf_to_quantized_cdf

    rows = []
    for p in np.asarray(pmfs, np.float64):
        p = np.maximum(p, 1e-9)
        rows.append(pmf_to_quantized_cdf((p / p.sum()).tolist(), PRECISION))
    return torch.tensor(rows, dtype=torch.int32)


def default_pmfs(qualities: int) -> np.ndarray:
    """Generic starting tables (a zero spike over a geometric tail, sharper next to zero residuals), used
    until ``tools/fit_priors.py`` fits them: (qualities * CONTEXTS, 2*RANGE + 2)."""
    v = np.abs(np.arange(-RANGE, RANGE + 1))
    rows = []
    for _ in range(qualities):
        for ctx in range(CONTEXTS):
            b = ctx % NB
            p0, r = 0.9 - 0.15 * b, 0.6 + 0.08 * b
            tail = (1 - p0) * (1 - r) / 2 * r ** np.maximum(v - 1, 0)
            p = np.where(v == 0, p0, tail)
            rows.append(np.append(p * 0.999, 0.001))
    return np.array(rows)


def fit_pmfs(fields: list[list[np.ndarray]], prior_weight: float = 16.0) -> np.ndarray:
    """Tables fitted to residual fields: ``fields[q]`` the (2, Hb, Wb) fields coded at quality index ``q``.

    Each context's histogram is smoothed towards its quality's context-free histogram (itself smoothed by
    half a count per entry), weighted as ``prior_weight`` observations, so rare contexts and values still
    get sensible probabilities."""
    n = 2 * RANGE + 2
    rows = []
    for fs in fields:
        counts = np.zeros((CONTEXTS, n))
        for f in fs:
            f = np.asarray(f, np.int64)
            ctx = contexts(f)
            inr = np.abs(f) <= RANGE
            np.add.at(counts, (ctx[inr], f[inr] + RANGE), 1)
            np.add.at(counts, (ctx[~inr], n - 1), 1)
        base = counts.sum(0) + 0.5
        base /= base.sum()
        for c in range(CONTEXTS):
            rows.append((counts[c] + prior_weight * base) / (counts[c].sum() + prior_weight))
    return np.array(rows)


class VectorTables:
    """The tables of one quality level in the form the range coder takes (lists, converted once)."""

    def __init__(self, cdf: torch.Tensor):
        cdf = cdf.to(torch.int32).cpu()
        self.args = (cdf.tolist(), [cdf.shape[1]] * cdf.shape[0], [-RANGE] * cdf.shape[0])


_BLOCK_TABLES = ([list(MOTION_MODE_CDF)], [len(MOTION_MODE_CDF)], [0])


def has_mode(block: int, field: str) -> bool:
    """Whether a P-frame can use blocks of ``block`` luma pixels with the motion field ``field``."""
    return (field, block) in MOTION_MODES


def encode_block_size(w, block: int, field: str = "smooth") -> None:
    """Put the motion block size ``block`` and field ``field`` (one of :data:`MOTION_MODES`) into ``w``, as
    one symbol."""
    if not has_mode(block, field):
        raise ValueError(f"no motion mode for {block}x{block} blocks with the {field} field")
    w.put_with_tables([MOTION_MODES.index((field, block))], [0], _BLOCK_TABLES)


def decode_block_size(r) -> tuple[int, str]:
    """Inverse of :func:`encode_block_size`: (block size, field); a corrupt symbol (the escape) is an
    error, not a guess."""
    (k,) = r.get_with_tables([0], _BLOCK_TABLES)
    if not 0 <= k < len(MOTION_MODES):
        raise ValueError(f"corrupt stream: motion mode {k}")
    field, block = MOTION_MODES[k]
    return block, field


#: a P-frame's latent mode: the latent (ẑ, ŷ) follows the vectors and covers the picture (``LATENT``); none
#: follows and the picture is the motion-compensated prediction itself (``SKIP``); or the latent is coded
#: only in the 64x64 regions a region mask marks, the rest of the picture being the prediction (``MASKED``)
LATENT, SKIP, MASKED = 0, 1, 2
#: fixed range-coder table of the latent mode: three about equally likely values, then the escape
LATENT_FLAG_CDF = (0, 21845, 43690, 65535, 65536)
_FLAG_TABLES = ([list(LATENT_FLAG_CDF)], [len(LATENT_FLAG_CDF)], [0])


def encode_latent_flag(w, mode: int) -> None:
    """Put the P-frame's latent mode (:data:`LATENT`, :data:`SKIP` or :data:`MASKED`) into ``w``; ``True``
    and ``False`` are :data:`SKIP` and :data:`LATENT`."""
    w.put_with_tables([int(mode)], [0], _FLAG_TABLES)


def decode_latent_flag(r) -> int:
    """Inverse of :func:`encode_latent_flag`; the escape is an error."""
    (k,) = r.get_with_tables([0], _FLAG_TABLES)
    if k not in (LATENT, SKIP, MASKED):
        raise ValueError(f"corrupt stream: latent flag {k}")
    return k


#: fixed range-coder tables of the region mask of a MASKED P-frame, one bit per 64x64 luma region (one
#: sample of ẑ), in raster order, table ``n`` = how many of its left and top neighbours are set (outside the
#: picture: not set): P(set) about 1/5, 1/2 and 4/5; then the escape
REGION_CDFS = ((0, 52429, 65535, 65536), (0, 32768, 65535, 65536), (0, 13107, 65535, 65536))
_REGION_TABLES = ([list(c) for c in REGION_CDFS], [len(c) for c in REGION_CDFS], [0] * len(REGION_CDFS))


def _region_contexts(region: np.ndarray) -> np.ndarray:
    """Table of every bit of ``region`` (Hz, Wz): how many of its left and top neighbours are set."""
    n = np.zeros(region.shape, np.int64)
    n[:, 1:] += region[:, :-1]
    n[1:, :] += region[:-1, :]
    return n


def encode_region_mask(w, region: np.ndarray) -> None:
    """Put the region mask ``region`` (Hz, Wz booleans: where the latent is coded) into ``w``."""
    region = np.asarray(region, np.int64)
    w.put_with_tables(region.reshape(-1).tolist(), _region_contexts(region).reshape(-1).tolist(), _REGION_TABLES)


def decode_region_mask(r, hz: int, wz: int) -> np.ndarray:
    """Inverse of :func:`encode_region_mask` for an (``hz``, ``wz``) mask, one row at a time (each bit's
    table depends on its left neighbour); the escape is an error."""
    region = np.zeros((hz + 1, wz + 1), np.int64)  # a row and column of zeros top and left
    for i in range(hz):
        for j in range(wz):
            (k,) = r.get_with_tables([int(region[i + 1, j] + region[i, j + 1])], _REGION_TABLES)
            if k not in (0, 1):
                raise ValueError(f"corrupt stream: region mask bit {k}")
            region[i + 1, j + 1] = k
    return region[1:, 1:].astype(bool)


#: a coded latent's plane mask: bit 0 luma, bit 1 U, bit 2 V; a set bit sends that plane as the prediction
#: instead of the synthesis (chosen by the encoder by distortion). 0..7 equally likely, then the escape.
ALL_PLANES = 7
PLANE_MASK_CDF = (0, 8192, 16384, 24576, 32768, 40960, 49152, 57344, 65535, 65536)
_MASK_TABLES = ([list(PLANE_MASK_CDF)], [len(PLANE_MASK_CDF)], [0])


def encode_plane_mask(w, mask: int) -> None:
    """Put the plane mask (0..7) of a P-frame with a coded latent into ``w``."""
    w.put_with_tables([mask], [0], _MASK_TABLES)


def decode_plane_mask(r) -> int:
    """Inverse of :func:`encode_plane_mask`; the escape is an error."""
    (k,) = r.get_with_tables([0], _MASK_TABLES)
    if not 0 <= k <= ALL_PLANES:
        raise ValueError(f"corrupt stream: plane mask {k}")
    return k


def encode(w, tables: VectorTables, mvd: np.ndarray) -> None:
    """Put the residual field ``mvd`` (2, Hb, Wb) into ``w`` (a :class:`lvcodec.models.RansWriter`)."""
    mvd = np.asarray(mvd, np.int64)
    comp, row, col = coding_order(*mvd.shape[1:])
    ctx = contexts(mvd)
    w.put_with_tables(mvd[comp, row, col].tolist(), ctx[comp, row, col].tolist(), tables.args)


def decode(r, tables: VectorTables, hb: int, wb: int) -> np.ndarray:
    """Read a residual field (2, ``hb``, ``wb``) from ``r`` (a :class:`lvcodec.models.RansReader`)."""
    mvd = np.zeros((2, hb, wb), np.int64)
    a = np.zeros((hb + 1, wb + 1), np.int64)  # |x| + |y| per block, one row/column of zeros top and left
    for i, j in diagonals(hb, wb):
        b = _bucket(a[i + 1, j] + a[i, j + 1])  # left, top
        x = np.array(r.get_with_tables(b.tolist(), tables.args), np.int64)
        y = np.array(r.get_with_tables(_y_table(b, x).tolist(), tables.args), np.int64)
        mvd[0, i, j], mvd[1, i, j] = x, y
        a[i + 1, j + 1] = np.abs(x) + np.abs(y)
    return mvd
