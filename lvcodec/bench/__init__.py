"""``lvc bench``: rate–distortion and speed of lvc against H.264, H.265 and AV1, all in-process through
PyAV, with every option recorded.

    from lvcodec.bench import BenchConfig, run_bench
    results = run_bench(["clip.mp4"], BenchConfig(frames=32, keyint=32), out="bench-out")

Modules: :mod:`~lvcodec.bench.clips` (inputs), :mod:`~lvcodec.bench.anchors` (x264, x265, SVT-AV1 through
PyAV and the checks that their settings took effect), :mod:`~lvcodec.bench.codecs` (one measured run of any
codec), :mod:`~lvcodec.bench.metrics` (PSNRs, MS-SSIM), :mod:`~lvcodec.bench.bdrate` (BD-rate),
:mod:`~lvcodec.bench.run` (configuration, cache, parallel clips, results), :mod:`~lvcodec.bench.report`
(plots and ``report.md``), :mod:`~lvcodec.bench.cli` (the ``lvc bench`` command).
"""

from .bdrate import BDResult, bd_rate
from .run import BenchConfig, run_bench

__all__ = ["BDResult", "BenchConfig", "bd_rate", "run_bench"]
