"""Print a compact markdown summary (for the README) of a ``rd_x264.py`` results JSON.

    python benchmarks/summary.py benchmarks/results/rd_x264.json
"""

from __future__ import annotations

import json
import os
import statistics
import sys


def summary(path: str) -> str:
    d = json.load(open(path))
    lines = ["| clip | lvc q1 | lvc q4 | lvc q8 | x264 crf38 | x264 crf30 | x264 crf22 | lvc enc / dec fps (median) |",
             "|---|---|---|---|---|---|---|---|"]
    for c in d["clips"]:
        rows = {r["setting"]: r for r in c["rows"]}
        cell = lambda r: f"{r['bpp']:.3f} bpp, {r['psnr_yuv']:.1f} dB"  # noqa: E731
        lvc = [r for r in c["rows"] if r["codec"] == "lvc"]
        fps = f"{statistics.median(r['enc_fps'] for r in lvc):.2f} / {statistics.median(r['dec_fps'] for r in lvc):.2f}"
        lines.append(f"| {os.path.basename(c['clip'])} ({c['width']}x{c['height']}) | " + " | ".join(
            cell(rows[k]) for k in ("q1", "q4", "q8", "crf38", "crf30", "crf22")) + f" | {fps} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/rd_x264.json"))
