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


def _coded_field(mvd, q=0):
    from lvcodec import mvcoding
    from lvcodec.models import InterModel, RansReader, RansWriter

    tables = InterModel()._vector_tables(q)
    w = RansWriter()
    mvcoding.encode(w, tables, mvd)
    data = w.flush()
    return data, mvcoding.decode(RansReader(data), tables, *mvd.shape[1:])


def test_vector_residuals_round_trip_through_the_context_coder_escapes_included():
    rng = np.random.default_rng(2)
    for hb, wb in ((1, 1), (1, 9), (6, 1), (5, 7), (23, 40)):
        mvd = rng.integers(-6, 7, (2, hb, wb)) * (rng.random((2, hb, wb)) < 0.3)
        mvd[0, 0, 0], mvd[1, -1, -1] = 65, -4000  # outside the tables' -64..64: escape
        for q in (0, 7):
            _, back = _coded_field(mvd, q)
            assert np.array_equal(back, mvd), (hb, wb, q)


def test_a_still_field_codes_in_a_few_bytes_and_contexts_follow_the_neighbours():
    """A field of zero residuals (a still picture) costs almost nothing; the table of a residual is chosen by
    the size of its left and top neighbours' residuals and, for y, by whether x is zero."""
    from lvcodec import mvcoding

    data, _ = _coded_field(np.zeros((2, 23, 40), np.int64))
    assert len(data) * 8 <= 0.2 * 2 * 23 * 40  # under a fifth of a bit per residual, even with generic tables
    mvd = np.zeros((2, 3, 3), np.int64)
    mvd[:, 0, 0] = (30, 0)  # a large residual top-left
    mvd[0, 1, 1] = 2
    ctx = mvcoding.contexts(mvd)
    assert ctx[0, 0, 1] == ctx[0, 1, 0] == 4  # next to |30|: the top bucket (>= 25)
    assert ctx[0, 2, 2] == 0 and ctx[0, 0, 0] == 0  # no non-zero neighbour
    assert ctx[0, 1, 2] == 1 and ctx[0, 2, 1] == 1  # next to |2|
    assert ctx[1, 1, 1] == 2 * mvcoding.NB + ctx[0, 1, 1]  # y where x != 0
    assert ctx[1, 2, 2] == mvcoding.NB  # y where x == 0, quiet neighbours
