"""Motion search and the vector prediction that the decoder inverts."""

import numpy as np
import torch

from lvcodec import motion
from lvcodec.demo import demo_clip
from lvcodec.frames import to_tensor


def test_search_finds_a_global_shift():
    pic = to_tensor(demo_clip(1, 256, 192)[0], 64)
    cur = torch.roll(pic, shifts=(1, -3), dims=(-2, -1))  # luma: 2 px down, 6 px left
    mv = motion.search(cur, pic)
    inner = mv[0, :, 2:-2, 2:-2]
    assert (inner[0] == 24).float().mean() > 0.9 and (inner[1] == -8).float().mean() > 0.9
    pred = motion.compensate(pic, mv)
    err = (pred - cur)[..., 8:-8, 8:-8].abs().mean()
    assert err < 1e-3


def test_vector_residuals_invert_in_raster_order():
    rng = np.random.default_rng(1)
    mv = torch.from_numpy(rng.integers(-40, 40, (1, 2, 5, 7))).to(torch.int32)
    mvd = (mv - motion.mv_prediction(mv))[0].numpy()
    assert np.array_equal(motion.mv_from_residual(mvd), mv[0].numpy())
