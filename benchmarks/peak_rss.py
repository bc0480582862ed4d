"""Peak memory (RSS) of encoding and decoding as the clip gets longer: it must not grow with the length.

Each measurement runs in a fresh process (so ``ru_maxrss`` is that run's own peak): an encode of ``N``
frames of the built-in pan-and-zoom clip (made one picture at a time, streamed into a ``.lvc`` file), then
a decode of that file to a y4m on /dev/null.

    python benchmarks/peak_rss.py                          # 720p x 30 and x 300, 1080p x 30
    python benchmarks/peak_rss.py --runs 1280x720x30 --quality 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def _child(op: str, size: str, frames: int, quality: int, path: str) -> None:
    from fractions import Fraction

    import torch

    torch.set_num_threads(int(os.environ.get("LVC_THREADS", "2")))
    w, h = (int(v) for v in size.split("x"))
    t0 = time.perf_counter()
    if op == "encode":
        from lvcodec.codec import encode_pictures
        from lvcodec.demo import iter_demo_clip

        with open(path, "wb") as f:
            encode_pictures(iter_demo_clip(frames, w, h), f, w, h, Fraction(25), quality=quality, keyint=32)
    else:
        from lvcodec.codec import decode
        from lvcodec.writers import open_writer

        with open(os.devnull, "wb") as f:
            wr = open_writer(f, "out.y4m", w, h, Fraction(25))
            for pic in decode(path):
                wr.write(pic)
            wr.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak_rss_mib": round(rss / 1024, 1), "seconds": round(time.perf_counter() - t0, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="1280x720x30,1280x720x300,1920x1080x30")
    ap.add_argument("--quality", type=int, default=4)
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        op, size, frames, quality, path = args.child
        _child(op, size, int(frames), int(quality), path)
        return
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for run in args.runs.split(","):
            w, h, n = run.split("x")
            path = os.path.join(d, "clip.lvc")
            row = {"size": f"{w}x{h}", "frames": int(n), "quality": args.quality}
            for op in ("encode", "decode"):
                out = subprocess.run([sys.executable, __file__, "--child", op, f"{w}x{h}", n, str(args.quality), path],
                                     check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                row[f"{op}_peak_rss_mib"], row[f"{op}_seconds"] = r["peak_rss_mib"], r["seconds"]
            row["file_bytes"] = os.path.getsize(path)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| clip | frames | encode peak RSS (MiB) | decode peak RSS (MiB) | encode s | decode s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['frames']} | {r['encode_peak_rss_mib']} | {r['decode_peak_rss_mib']} | "
              f"{r['encode_seconds']} | {r['decode_seconds']} |")


if __name__ == "__main__":
    main()
