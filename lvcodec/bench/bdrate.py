"""Bjøntegaard-delta rate (G. Bjøntegaard, VCEG-M33, 2001) through the ``bjontegaard`` package.

BD-rate is the average difference in log-rate between two RD curves over the metric interval where both
exist, as a percentage: −20 % means the test codec needs 20 % fewer bits than the anchor for the same
quality. The package interpolates log10(rate) as a function of the metric, piecewise: ``akima`` (the
package's recommendation, and what the targets use) or ``pchip``.

Before interpolation each curve is sorted by rate and a point that is not better than every cheaper point
is dropped (it is dominated, and the interpolation needs a metric that increases with the rate); the
dropped points are reported. The overlap is the package's measure: the length of the metric interval both
curves cover divided by the length of the interval either covers. Below ``min_overlap`` (default 0.75,
the package's) a warning is raised and recorded: the number then extrapolates neither curve but rests on a
small common range. With no overlap, or fewer than two points left on a curve, there is no BD-rate.

:func:`bd_metric` is the companion figure (BD-PSNR, generalised to any metric): the average quality gain
at equal rate, over the common log-rate interval; it exists where the rates overlap even when the qualities
do not.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

METHODS = ("akima", "pchip")
DEFAULT_MIN_OVERLAP = 0.75


class OverlapWarning(UserWarning):
    """Two RD curves share too small a metric range for a trustworthy BD-rate."""


@dataclass
class BDResult:
    value: float | None  # percent; None when it cannot be computed
    overlap: float  # 0..1, see the module docstring
    method: str
    interval: tuple[float, float] | None = None  # the common metric interval
    note: str = ""  # why there is no value, or the overlap warning
    dropped: dict = field(default_factory=dict)  # {"anchor": [...], "test": [...]} indices of dominated points

    def as_dict(self) -> dict:
        return asdict(self)


def monotone(points) -> tuple[list[tuple[float, float]], list[int]]:
    """(points sorted by rate with dominated ones removed, indices of the removed points)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    kept, dropped, best = [], [], -math.inf
    for i in order:
        r, m = points[i]
        if not (math.isfinite(r) and math.isfinite(m)) or r <= 0 or m <= best:
            dropped.append(i)
            continue
        kept.append((r, m))
        best = m
    return kept, sorted(dropped)


def bd_rate(anchor, test, method: str = "akima", min_overlap: float = DEFAULT_MIN_OVERLAP,
            warn: bool = True) -> BDResult:
    """BD-rate in percent of ``test`` against ``anchor``, each a sequence of (rate, metric) points
    (any rate unit, the same for both; a metric where higher is better, e.g. PSNR in dB)."""
    return _bd(anchor, test, method, min_overlap, warn, "rate")


def bd_metric(anchor, test, method: str = "akima", min_overlap: float = DEFAULT_MIN_OVERLAP,
              warn: bool = True) -> BDResult:
    """BD-PSNR generalised to any metric: the average metric gain of ``test`` over ``anchor`` at equal rate
    (in the metric's unit, e.g. dB), over the log-rate interval both curves cover. Defined where the rates
    overlap, so it still says something when the qualities do not (and BD-rate cannot)."""
    return _bd(anchor, test, method, min_overlap, warn, "metric")


def _bd(anchor, test, method, min_overlap, warn, kind) -> BDResult:
    import bjontegaard as bd
    import numpy as np

    if method not in METHODS:
        raise ValueError(f'invalid BD-rate method "{method}", should be one of {", ".join(METHODS)}')
    a, da = monotone(list(anchor))
    t, dt = monotone(list(test))
    dropped = {k: v for k, v in (("anchor", da), ("test", dt)) if v}
    if len(a) < 2 or len(t) < 2:
        return BDResult(None, 0.0, method, None, "fewer than two usable points on a curve", dropped)
    axis = 1 if kind == "rate" else 0  # the common interval: of the metric (BD-rate) or of log rate (BD-metric)
    what = "quality" if kind == "rate" else "rate"
    xa = [p[axis] if axis else math.log10(p[0]) for p in a]
    xt = [p[axis] if axis else math.log10(p[0]) for p in t]
    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    union = max(xa[-1], xt[-1]) - min(xa[0], xt[0])
    overlap = max(hi - lo, 0.0) / union if union > 0 else 0.0
    interval = (lo, hi) if kind == "rate" else (10**lo, 10**hi)
    if hi <= lo:
        return BDResult(None, 0.0, method, None, f"the curves do not overlap in {what}", dropped)
    fn = bd.bd_rate if kind == "rate" else bd.bd_psnr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package's own overlap warning: we report ours
        v = float(fn([p[0] for p in a], [p[1] for p in a], [p[0] for p in t], [p[1] for p in t], method=method,
                     require_matching_points=False, min_overlap=0))
    note = ""
    if overlap < min_overlap:
        note = f"curves overlap over {overlap:.0%} of their {what} range only (< {min_overlap:.0%})"
        if warn:
            warnings.warn(note, OverlapWarning, stacklevel=3)
    if not np.isfinite(v):
        return BDResult(None, overlap, method, interval, "interpolation gave no finite value", dropped)
    return BDResult(v, overlap, method, interval, note, dropped)
