"""Container overhead: the share of a ``.lvc`` file that is not entropy-coded payload (header, packet
headers, CRCs, index, footer), per clip, at the lowest quality (where it weighs most).

    python benchmarks/container_overhead.py [CLIP ...] [--quality 1] [--frames 32] [--keyint 32] [--downscale]

Default clips: ``../shared/data/bench`` (as ``lvc bench``), otherwise a generated clip.
"""

from __future__ import annotations

import argparse
import io
import sys
from fractions import Fraction


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="*")
    ap.add_argument("--quality", type=int, default=1)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--keyint", type=int, default=32)
    ap.add_argument("--downscale", action="store_true", help="2x area downscale of clips wider than 640")
    args = ap.parse_args()

    from lvcodec import bitstream as bs
    from lvcodec.bench.clips import default_clips, display_path, load_clip
    from lvcodec.codec import encode_pictures

    rows = []
    for spec in args.clips or default_clips():
        clip = load_clip(spec, args.frames, args.downscale)
        buf = io.BytesIO()
        encode_pictures(clip.pictures, buf, clip.width, clip.height, Fraction(clip.rate), args.quality, args.keyint)
        data = buf.getvalue()
        payload = sum(p.size for p in bs.Reader(io.BytesIO(data)).packets())
        rows.append((display_path(spec), clip.width, clip.height, len(clip.pictures), len(data), payload))
        print(f"{rows[-1]}", file=sys.stderr, flush=True)
    print(f"quality {args.quality}, {args.frames} frames, keyint {args.keyint}"
          f"{', 2x downscaled above 640 px' if args.downscale else ''}\n")
    print("| clip | size | frames | file bytes | payload bytes | overhead bytes | overhead |")
    print("|---|---|---|---|---|---|---|")
    for name, w, h, n, total, payload in rows:
        print(f"| {name} | {w}x{h} | {n} | {total} | {payload} | {total - payload} | {100 * (total - payload) / total:.2f} % |")
    t = sum(r[4] for r in rows)
    p = sum(r[5] for r in rows)
    print(f"| all | | | {t} | {p} | {t - p} | {100 * (t - p) / t:.2f} % |")


if __name__ == "__main__":
    main()
