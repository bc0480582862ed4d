"""Regenerate the conformance vectors in ``bitstream/vectors/`` — only on purpose (the format or the
shipped weights changed): the test suite checks the decoder against what is committed.

    LVC_REGENERATE_VECTORS=1 python tools/make_vectors.py

Each vector is a folder holding ``stream.lvc`` (made from synthetic pictures, never from outside data)
and ``expected.json``: the frame count, size, and the MD5 of each decoded picture (Y, U, V planes
concatenated, display size), as ``lvc decode stream.lvc --md5`` prints them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import lvcodec  # noqa: E402
from lvcodec.codec import encode_pictures, weights_hash  # noqa: E402
from lvcodec.demo import demo_clip  # noqa: E402
from lvcodec.zoo import HyperpriorV1  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent / "bitstream" / "vectors"

#: name -> (width, height, frames, quality, keyint, what it exercises)
VECTORS = {
    "ip-64x64-q1": (64, 64, 6, 1, 4, "lowest quality; an I-frame, P-frames, a second GOP"),
    "ip-96x64-q8": (96, 64, 5, 8, 32, "highest quality, P-frames over a pan and zoom"),
    "odd-33x17-q4": (33, 17, 4, 4, 2, "odd size: padding and cropping, chroma rounding up"),
    "intra-1x1-q3": (1, 1, 2, 3, 1, "smallest picture, all-intra"),
    "wide-200x40-q5": (200, 40, 4, 5, 3, "more than one hyper-latent column, keyint 3"),
    "layer-128x64-q6": (128, 64, 4, 6, 32, "thin lines: I- and P-frames with the residual layer (SPEC §7.2)"),
    "smooth-96x64-q4": (96, 64, 4, 4, 32, "P-frames with the smooth motion field (SPEC §7.1)"),
    "block8-96x64-q6": (96, 64, 4, 6, 32, "P-frames with 8x8 motion blocks (SPEC §7.1)"),
    "region-192x128-q5": (192, 128, 4, 5, 32, "P-frames with a region mask: a patch moving over a still picture (SPEC §7.1)"),
}
#: encoder settings (HyperpriorV1 attributes) of the vectors that need a mode the encoder would not pick
#: on their clip: the smooth motion field (the shipped encoder uses the block one), 8x8 blocks alone
ENCODER = {"smooth-96x64-q4": {"MOTION_FIELDS": ("smooth",)}, "block8-96x64-q6": {"MOTION_BLOCKS": (8,)}}


def grid_clip(n: int, width: int, height: int):
    """Thin bright lines on black, panning a pixel a frame, with coloured squares: detail the autoencoders
    blur, so the encoder sends the residual layer."""
    from lvcodec.frames import Picture

    pics = []
    for t in range(n):
        yy, xx = np.mgrid[:height, :width]
        y = np.where(((xx + t) % 8 == 0) | ((yy + t) % 8 == 0), 235, 20).astype(np.uint8)
        ch, cw = (height + 1) // 2, (width + 1) // 2
        cy, cx = np.mgrid[:ch, :cw]
        square = ((cx // 8 + cy // 8 + t // 2) % 3 == 0)
        u = np.where(square, 90, 128).astype(np.uint8)
        v = np.where(square, 200, 128).astype(np.uint8)
        pics.append(Picture(y, u, v, t))
    return pics


def patch_clip(n: int, width: int, height: int):
    """A still picture with a 40x40 patch of another moving 6 pixels a frame to the right: the encoder
    codes the latent of the regions the patch covers (the region mask) and predicts the rest."""
    from lvcodec.frames import Picture

    still, other = demo_clip(1, width, height)[0], demo_clip(30, width, height)[-1]
    pics = []
    for t in range(n):
        planes = [still.y.copy(), still.u.copy(), still.v.copy()]
        for plane, src, s in zip(planes, (other.y, other.u, other.v), (1, 2, 2)):
            y0, x0, size = 40 // s, (20 + 6 * t) // s, 40 // s
            plane[y0:y0 + size, x0:x0 + size] = src[y0:y0 + size, :size]
        pics.append(Picture(*planes, t))
    return pics


def md5(pic) -> str:
    return hashlib.md5(pic.y.tobytes() + pic.u.tobytes() + pic.v.tobytes()).hexdigest()


def main() -> None:
    if os.environ.get("LVC_REGENERATE_VECTORS") != "1":
        sys.exit("refusing to overwrite the conformance vectors: set LVC_REGENERATE_VECTORS=1 to do it on purpose")
    for name, (w, h, n, q, k, about) in VECTORS.items():
        d = ROOT / name
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "stream.lvc", "wb") as f:
            clip = grid_clip if name.startswith("layer") else patch_clip if name.startswith("region") else demo_clip
            pics = clip(n, w, h)
            settings = ENCODER.get(name, {})
            saved = {a: getattr(HyperpriorV1, a) for a in settings}
            for a, v in settings.items():
                setattr(HyperpriorV1, a, v)
            try:
                encode_pictures(pics, f, w, h, Fraction(25), quality=q, keyint=k)
            finally:
                for a, v in saved.items():
                    setattr(HyperpriorV1, a, v)
        decoded = list(lvcodec.decode(str(d / "stream.lvc")))
        expected = {"description": about, "width": w, "height": h, "frames": len(decoded), "quality": q,
                    "keyint": k, "weights_sha256": weights_hash().hex(), "lvcodec": lvcodec.__version__,
                    "md5": [md5(p) for p in decoded]}
        (d / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
        print(f"{name}: {(d / 'stream.lvc').stat().st_size} bytes, {len(decoded)} frames")


if __name__ == "__main__":
    main()
