"""Regenerate the committed benchmark: ``benchmarks/results`` and the README's results table and plot.

    nice -n 5 python benchmarks/bench.py           # = lvc bench --downscale --out benchmarks/results
    python benchmarks/bench.py --readme            # print the README summary of benchmarks/results/results.json

Run from the repository root (the clips default to ../shared/data/bench). Other arguments go to
``lvc bench`` (``--jobs 2``, ``--codecs lvc,x264``, clip paths, ...); ``lvc bench --help`` lists them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--readme"]:
        from lvcodec.bench.report import summary_markdown

        print(summary_markdown(json.loads((RESULTS / "results.json").read_text())))
        return 0
    from lvcodec.bench.cli import bench

    out = str(RESULTS.relative_to(Path.cwd())) if RESULTS.is_relative_to(Path.cwd()) else str(RESULTS)
    return bench(["--downscale", "--out", out, *argv], prog_name="benchmarks/bench.py", standalone_mode=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
