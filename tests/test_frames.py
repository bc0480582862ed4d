"""The 6-channel 4:2:0 layout of lvcodec.frames."""

import numpy as np
import torch
import torch.nn.functional as F

from lvcodec.frames import Picture, from_tensor, hflip_layout, quantize8, to_tensor


def _picture(w=24, h=16, seed=0):
    rng = np.random.default_rng(seed)
    return Picture(rng.integers(0, 256, (h, w), np.uint8), rng.integers(0, 256, (h // 2, w // 2), np.uint8),
                   rng.integers(0, 256, (h // 2, w // 2), np.uint8), 0)


def test_layout_round_trip():
    p = _picture(22, 14)
    q = from_tensor(quantize8(to_tensor(p, 8)), 22, 14)
    assert np.array_equal(p.y, q.y) and np.array_equal(p.u, q.u) and np.array_equal(p.v, q.v)


def test_hflip_layout_mirrors_the_picture():
    """Training augmentation: mirroring the layout must equal the layout of the mirrored picture, luma
    sub-pixels included (flipping only the half-resolution grid scrambles fine luma detail)."""
    p = _picture()
    m = Picture(p.y[:, ::-1].copy(), p.u[:, ::-1].copy(), p.v[:, ::-1].copy(), 0)
    assert torch.equal(hflip_layout(to_tensor(p, 8)), to_tensor(m, 8))
    assert not torch.equal(to_tensor(p, 8).flip(-1), to_tensor(m, 8))


def test_hflip_layout_matches_pixel_unshuffle():
    y = torch.rand(2, 1, 8, 12)
    uv = torch.rand(2, 2, 4, 6)
    x = torch.cat((F.pixel_unshuffle(y, 2), uv), 1)
    xm = torch.cat((F.pixel_unshuffle(y.flip(-1), 2), uv.flip(-1)), 1)
    assert torch.equal(hflip_layout(x), xm)
