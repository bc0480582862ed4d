"""Fit the residual layer's table parameters (``lvcodec/layer.py``: CBF_PARAMS, LAST_PARAMS, LEVEL_PARAMS)
to the symbols the encoder codes on training videos.

    python tools/fit_layer.py [--frames 4] [--qualities 1,3,5,8] [--preset fast] VIDEO...

Each video's first frames are coded with the lvc encoder (2x area downscale above 640 pixels wide, as the
benchmark does) at each quality; every layer the encoder sends is collected, and each table's parameters are
chosen by maximum likelihood over the collected symbols, with the tables built exactly as the decoder
builds them. Prints the three parameter tuples to paste into ``lvcodec/layer.py``. The encoder's choices
depend on the tables, so fitting twice (paste, then fit again) settles them. Never fit on the bench clips.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lvcodec import codec, layer  # noqa: E402
from lvcodec.bench.clips import load_clip  # noqa: E402


def collect(videos: list[str], frames: int, qualities: list[int], preset: str) -> dict[int, Counter]:
    """Counts of (table index) -> Counter(symbol) over every layer coded."""
    counts: dict[int, Counter] = defaultdict(Counter)
    orig = layer.symbols

    def recording(planes):
        groups = orig(planes)
        for syms, idx in groups:
            for s, i in zip(syms, idx):
                counts[i][s] += 1
        return groups

    layer.symbols = recording
    try:
        for path in videos:
            clip = load_clip(path, frames, downscale=True)
            for q in qualities:
                enc = codec.Encoder(clip.pictures[0].width, clip.pictures[0].height, quality=q, keyint=32,
                                    preset=preset)
                sent = sum(len(enc.encode(p)[0].substreams) > 1 for p in clip.pictures)
                print(f"{clip.name} q{q}: {sent} of {len(clip.pictures)} pictures with a layer", file=sys.stderr)
    finally:
        layer.symbols = orig
    return counts


def _loglik(cdf: list[int], counts: Counter, offset: int) -> float:
    f = np.diff(np.array(cdf, np.float64))
    esc = len(f) - 1
    total = 0.0
    for s, n in counts.items():
        i = s - offset
        i = i if 0 <= i < esc else esc
        total += n * math.log2(f[i] / 65536.0)
    return total


def fit_level(counts: Counter, start: tuple[int, int]) -> tuple[int, int]:
    """(zero, ratio) maximizing the likelihood: a coarse grid, then +-8 around the best."""
    if sum(counts.values()) < 50:
        return start

    def ll(z, r):
        return _loglik(layer.weights_cdf(layer.level_weights(z, r)), counts, -layer.LEVEL_RANGE)

    best = max(((ll(z, r), z, r) for z in range(1, 256, 8) for r in range(1, 256, 8)))
    _, z0, r0 = best
    best = max(((ll(z, r), z, r) for z in range(max(1, z0 - 8), min(255, z0 + 8) + 1)
                for r in range(max(1, r0 - 8), min(255, r0 + 8) + 1)))
    return best[1], best[2]


def fit(counts: dict[int, Counter]):
    cbf = []
    for i in range(6):
        c = counts[layer.T_CBF + i]
        n = c[0] + c[1]
        cbf.append(layer.CBF_PARAMS[i] if n < 50 else min(255, max(1, round(256 * (c[0] + 0.5) / (n + 1)))))
    last = []
    for chroma in range(2):
        c = counts[layer.T_LAST + chroma]
        last.append(tuple(c[b] + 1 for b in range(layer.BANDS)) if sum(c.values()) >= 50
                    else layer.LAST_PARAMS[chroma])
    level = []
    for chroma in range(2):
        bands = []
        for band in range(layer.BANDS):
            ms = []
            for m in range(4):
                t = layer.T_LEVEL + ((chroma * layer.BANDS) + band) * 4 + m
                ms.append(fit_level(counts[t], layer.LEVEL_PARAMS[chroma][band][m]))
            bands.append(tuple(ms))
        level.append(tuple(bands))
    return tuple(cbf), tuple(last), tuple(level)


def bits(counts: dict[int, Counter], params) -> float:
    """Total bits of the collected symbols with tables built from ``params`` (cbf, last, level)."""
    saved = layer.CBF_PARAMS, layer.LAST_PARAMS, layer.LEVEL_PARAMS
    layer.CBF_PARAMS, layer.LAST_PARAMS, layer.LEVEL_PARAMS = params
    layer.tables.cache_clear()
    try:
        cdfs, _, offsets = layer.tables()
        return -sum(_loglik(cdfs[i], c, offsets[i]) for i, c in counts.items())
    finally:
        layer.CBF_PARAMS, layer.LAST_PARAMS, layer.LEVEL_PARAMS = saved
        layer.tables.cache_clear()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="+")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--qualities", default="1,3,5,8")
    ap.add_argument("--preset", default="fast")
    args = ap.parse_args()
    if any("/bench/" in v or "carphone" in v for v in args.videos):  # carphone_distorted: a bench clip's copy
        sys.exit("fit_layer: never fit on the bench clips (or copies of them)")
    counts = collect(args.videos, args.frames, [int(q) for q in args.qualities.split(",")], args.preset)
    params = fit(counts)
    old = bits(counts, (layer.CBF_PARAMS, layer.LAST_PARAMS, layer.LEVEL_PARAMS))
    new = bits(counts, params)
    n = sum(sum(c.values()) for c in counts.values())
    print(f"{n} symbols: {old / 8:.0f} bytes with the current tables, {new / 8:.0f} with the fitted ones",
          file=sys.stderr)
    print(f"CBF_PARAMS = {params[0]}\nLAST_PARAMS = {params[1]}\nLEVEL_PARAMS = {params[2]}")


if __name__ == "__main__":
    main()
