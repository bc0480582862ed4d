"""Fit the checkerboard context of ŷ (lvcodec.models.CheckerboardContext) of the intra and inter models on
the latents the encoder codes, with everything else frozen; run it after ``tools/fit_priors.py`` (the
context takes the calibrated scale indexes as input).

Every 4th clip is held out: the context is trained on the others and the held-out latents' bits of the
non-anchor half (counted as the coder counts them) are printed before and after. The benchmark clips are
never read. The work is done by :mod:`lvcodec.train.context`.

    python tools/fit_context.py --weights .out/fit --out-dir .out/ctx
"""

from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fit_priors import find_images, find_videos, load_pair, parser, read_clips, write_pair  # noqa: E402  (tools/)

from lvcodec.models import NUM_QUALITIES  # noqa: E402
from lvcodec.train import context  # noqa: E402


def main() -> None:
    ap = parser(__doc__, ".out/ctx")
    ap.add_argument("--frames", type=int, default=6, help="first N frames of each video (P-frames: all but the first)")
    ap.add_argument("--intra-pictures", type=int, default=2, help="I-frame latents per video")
    ap.add_argument("--images", default="", help="folder searched for photos, I-frame latents too (e.g. "
                    "../shared/data/train/images)")
    ap.add_argument("--qualities", default="1,2,3,4,5,6,7,8", help="qualities (1..8) of the I-frame latents")
    ap.add_argument("--inter-qualities", default="2,5,8", help="qualities (1..8) at which P-frames are coded")
    ap.add_argument("--exclude", default="carphone_distorted", help="comma-separated name parts to skip")
    ap.add_argument("--steps", type=int, default=20000, help="training steps per model")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    say = lambda s: print(s, flush=True)  # noqa: E731

    intra, inter = load_pair(args.weights)
    clips = list(read_clips(find_videos(args.videos), args.frames, tuple(e for e in args.exclude.split(",") if e)))
    images = list(read_clips(find_images(args.images), 1, ())) if args.images else []
    qs = lambda s: [int(v) - 1 for v in s.split(",") if 1 <= int(v) <= NUM_QUALITIES]  # noqa: E731
    t0 = time.time()
    context.fit_contexts(intra, inter, clips, args.steps, qs(args.qualities), qs(args.inter_qualities),
                         args.intra_pictures, images, seed=args.seed, say=say)
    say(f"done in {time.time() - t0:.0f}s")
    write_pair(intra, inter, args.out_dir, {"context": "fitted by tools/fit_context.py"})


if __name__ == "__main__":
    main()
