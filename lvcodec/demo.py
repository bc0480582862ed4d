"""A built-in test clip: a camera pan and zoom over scikit-image's sample photos (no downloads)."""

from __future__ import annotations

import numpy as np

from typing import Iterator

from .frames import Picture, from_av


def demo_clip(frames: int = 32, width: int = 352, height: int = 288) -> list[Picture]:
    """``frames`` pictures of a smooth pan and zoom across a mosaic of three skimage photos."""
    return list(iter_demo_clip(frames, width, height))


def iter_demo_clip(frames: int = 32, width: int = 352, height: int = 288) -> Iterator[Picture]:
    """:func:`demo_clip` made one picture at a time (for long clips: nothing is kept)."""
    import av
    import torch
    import torch.nn.functional as F
    from skimage import data

    tiles = [data.astronaut(), data.coffee()[:, :512], data.chelsea()[:, :451]]
    h = min(t.shape[0] for t in tiles)
    mosaic = np.concatenate([t[:h] for t in tiles], axis=1)  # ~ 300 x 1475 RGB
    src = torch.from_numpy(mosaic).permute(2, 0, 1)[None].float()
    H, W = mosaic.shape[:2]
    for t in range(frames):
        # A camera panning right at ~3 output pixels per frame while zooming in 0.5 % per frame
        # (bouncing back at the edge of the mosaic), as a hand-held or tripod pan would.
        zoom = 1.0 + 0.005 * t
        ch = H / zoom
        cw = min(ch * width / height, W)
        span = W - cw
        pos = (0.05 * span + t * 3.0 * cw / width) % (2 * span) if span > 0 else 0.0
        x0 = pos if pos <= span else 2 * span - pos
        y0 = (H - ch) * 0.5
        theta = torch.tensor([[cw / W, 0, (2 * x0 + cw) / W - 1], [0, ch / H, (2 * y0 + ch) / H - 1]],
                             dtype=torch.float32)[None]
        grid = F.affine_grid(theta, (1, 3, height, width), align_corners=False)
        rgb = F.grid_sample(src, grid, mode="bilinear", align_corners=False)
        rgb = rgb[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        pic = from_av(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24"))
        pic.pts = t
        yield pic
