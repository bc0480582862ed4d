"""Motion search and the vector prediction that the decoder inverts."""

import numpy as np
import pytest
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


def test_every_motion_block_size_decodes_exactly_and_the_encoder_keeps_the_cheapest():
    """A P-frame may use 8, 16, 32 or 64 pixel motion blocks (its first symbol says which); the encoder codes
    the sizes from 16 up, or down where no larger one pays, keeps the one of lowest actual cost, and the
    decoder rebuilds exactly the encoder's picture."""
    from lvcodec import mvcoding
    from lvcodec.models import LAMBDAS, mse_yuv
    from lvcodec.zoo import load_models, mv_lambda

    intra, inter = load_models()
    pic = to_tensor(demo_clip(1, 256, 192)[0], 64)
    cur = torch.roll(pic, shifts=(1, -3), dims=(-2, -1))
    ref = torch.round(intra.compress(pic, 3)["x_hat"].clamp(0, 1) * 255) / 255

    def cost(out, q):
        mse = mse_yuv(out["x_hat"].clamp(0, 1), cur).item()
        return LAMBDAS[q] * 255**2 * mse + len(out["strings"][0]) * 8 / (cur[0, 0].numel() * 4)

    chosen = set()
    for q in (0, 7):
        coded = []
        for block in mvcoding.BLOCK_SIZES:
            mv = motion.search(cur, ref, lam=mv_lambda(q + 1) * 16 / block, block=block)
            assert mv.shape[-2:] == (192 // block, 256 // block)
            for skip in (False, True):  # with the latent, and the prediction alone
                out = inter.compress(cur, ref, mv, q, skip=skip)
                assert torch.equal(inter.decompress(out["strings"], out["shape"], ref, q)["x_hat"], out["x_hat"])
                coded.append(out)
        best = inter.encode(cur, ref, q, mv_lambda(q + 1), masked=False)
        (k,) = [k for k, out in enumerate(coded) if out["strings"] == best["strings"]]  # one of them, exactly
        assert torch.equal(best["x_hat"], coded[k]["x_hat"])
        j = k // 2  # the size chosen; the walk coded its neighbours in size and stopped where they cost more
        neighbours = coded[2 * max(j - 1, 0):2 * (j + 2)]
        assert cost(best, q) <= min(cost(out, q) for out in neighbours)
        chosen.add(mvcoding.BLOCK_SIZES[j])
        # a region mask is tried at the chosen size, and kept only where it costs less
        masked = inter.encode(cur, ref, q, mv_lambda(q + 1))
        assert cost(masked, q) <= cost(best, q)
        assert torch.equal(inter.decompress(masked["strings"], masked["shape"], ref, q)["x_hat"], masked["x_hat"])
    assert chosen & {32, 64}  # a pan is cheaper with larger blocks at some rate


def test_the_block_size_comes_first_and_a_corrupt_one_is_an_error():
    import pytest

    from lvcodec import mvcoding
    from lvcodec.models import InterModel, RansReader, RansWriter

    tables = InterModel()._vector_tables(0)
    mvd = np.zeros((2, 3, 4), np.int64)
    mvd[:, 1, 2] = (5, -3)

    def stream(put_size):
        # a block size alone would be too short a stream: CompressAI's rANS flush sizes its buffer by the
        # number of symbols, so one symbol overflows it; real P-frames code many after it
        w = RansWriter()
        put_size(w)
        mvcoding.encode(w, tables, mvd)
        return RansReader(w.flush())

    modes = [(f, b) for f in motion.FIELDS for b in mvcoding.BLOCK_SIZES if mvcoding.has_mode(b, f)]
    assert len(modes) == 7 and ("smooth", 8) not in modes
    for field, block in modes:
        r = stream(lambda w, block=block, field=field: mvcoding.encode_block_size(w, block, field))
        assert mvcoding.decode_block_size(r) == (block, field)
        assert np.array_equal(mvcoding.decode(r, tables, 3, 4), mvd)
    with pytest.raises(ValueError, match="no motion mode"):
        mvcoding.encode_block_size(RansWriter(), 8, "smooth")
    r = stream(lambda w: w.put_with_tables([7], [0], mvcoding._BLOCK_TABLES))  # the escape: no motion mode
    with pytest.raises(ValueError, match="motion mode"):
        mvcoding.decode_block_size(r)


def _interpolate_reference(p: np.ndarray, dx: int, dy: int, bits: int) -> np.ndarray:
    """Integer bilinear interpolation of a whole plane moved by (dx, dy) / 2^bits samples, edges repeated,
    written out pixel by pixel (the normative formula of SPEC §7.1)."""
    h, w = p.shape
    one = 1 << bits
    out = np.zeros_like(p)
    for i in range(h):
        for j in range(w):
            x, y = j + (dx >> bits), i + (dy >> bits)
            fx, fy = dx & (one - 1), dy & (one - 1)
            at = lambda yy, xx: int(p[min(max(yy, 0), h - 1), min(max(xx, 0), w - 1)])
            acc = ((one - fx) * (one - fy) * at(y, x) + fx * (one - fy) * at(y, x + 1)
                   + (one - fx) * fy * at(y + 1, x) + fx * fy * at(y + 1, x + 1))
            out[i, j] = (acc + (1 << (2 * bits - 1))) >> (2 * bits)
    return out


def _luma_reference(p: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """H.264's luma interpolation of a whole plane moved by (dx, dy) quarter samples, edges repeated, written
    out sample by sample with the standard's names (ITU-T H.264 §8.4.2.2.1; SPEC §7.1)."""
    h, w = p.shape
    at = lambda yy, xx: int(p[min(max(yy, 0), h - 1), min(max(xx, 0), w - 1)])
    tap = lambda v: v[0] - 5 * v[1] + 20 * v[2] + 20 * v[3] - 5 * v[4] + v[5]
    clip = lambda v: min(max(v, 0), 255)
    b1 = lambda yy, xx: tap([at(yy, xx + k) for k in range(-2, 4)])  # between (yy, xx) and (yy, xx + 1)
    h1 = lambda yy, xx: tap([at(yy + k, xx) for k in range(-2, 4)])  # between (yy, xx) and (yy + 1, xx)
    half_b = lambda yy, xx: clip((b1(yy, xx) + 16) >> 5)
    half_h = lambda yy, xx: clip((h1(yy, xx) + 16) >> 5)
    centre = lambda yy, xx: clip((tap([b1(yy + k, xx) for k in range(-2, 4)]) + 512) >> 10)
    avg = lambda u, v: (u + v + 1) >> 1
    out = np.zeros_like(p)
    for i in range(h):
        for j in range(w):
            x, y, fx, fy = j + (dx >> 2), i + (dy >> 2), dx & 3, dy & 3
            G, H, M = at(y, x), at(y, x + 1), at(y + 1, x)
            b, hh, jj = half_b(y, x), half_h(y, x), centre(y, x)
            m, s = half_h(y, x + 1), half_b(y + 1, x)
            out[i, j] = {
                (0, 0): G, (1, 0): avg(G, b), (2, 0): b, (3, 0): avg(H, b),
                (0, 1): avg(G, hh), (1, 1): avg(b, hh), (2, 1): avg(b, jj), (3, 1): avg(b, m),
                (0, 2): hh, (1, 2): avg(hh, jj), (2, 2): jj, (3, 2): avg(jj, m),
                (0, 3): avg(M, hh), (1, 3): avg(hh, s), (2, 3): avg(jj, s), (3, 3): avg(m, s),
            }[fx, fy]
    return out


@pytest.mark.parametrize("dx, dy", [(dx, dy) for dx in range(-5, 3) for dy in (-6, -3, 0, 1, 2, 3, 9)])
def test_luma_interpolation_is_h264s_at_every_quarter_sample_position(dx, dy):
    """Luma of the block field is interpolated exactly as H.264 does (6-tap half samples, quarter samples
    the rounded-up mean of two neighbours), at all 16 sub-sample phases, whole and negative offsets, and
    across the picture's edges."""
    rng = np.random.default_rng(1000 + dx * 31 + dy)
    p = rng.integers(0, 256, (12, 20)).astype(np.int64)
    v = torch.full((1, 12, 20), 0, dtype=torch.long)
    got = motion._interpolate_luma(torch.from_numpy(p)[None, None], v + dx, v + dy)[0, 0].numpy()
    assert np.array_equal(got, _luma_reference(p, dx, dy))


def test_the_block_field_moves_each_block_by_integer_interpolation():
    """The "block" field moves each block of the 8-bit reference by its own vector, luma in quarter-pel
    steps with H.264's 6-tap interpolation and chroma (half the vector) in eighth-pel steps with H.264's
    integer bilinear weights: the decoder computes the same integers everywhere."""
    from lvcodec.frames import Picture

    rng = np.random.default_rng(3)
    y, u, v = (rng.integers(0, 256, s, dtype=np.uint8) for s in ((64, 64), (32, 32), (32, 32)))
    ref = to_tensor(Picture(y, u, v), 64)
    mv = torch.tensor([[[[5, -7], [0, 13]], [[-3, 2], [0, -9]]]], dtype=torch.int32)  # 2x2 blocks of 32
    pred = motion.compensate(ref, mv, field="block")
    py = np.round(motion.luma(pred)[0, 0].numpy() * 255).astype(np.int64)
    for bi in range(2):
        for bj in range(2):
            dx, dy = int(mv[0, 0, bi, bj]), int(mv[0, 1, bi, bj])
            luma_ref = _luma_reference(y.astype(np.int64), dx, dy)
            block = np.s_[32 * bi:32 * (bi + 1), 32 * bj:32 * (bj + 1)]
            assert np.array_equal(py[block], luma_ref[block])
            for c, plane in ((4, u), (5, v)):
                chroma_ref = _interpolate_reference(plane.astype(np.int64), dx, dy, 3)
                cblock = np.s_[16 * bi:16 * (bi + 1), 16 * bj:16 * (bj + 1)]
                got = np.round(pred[0, c].numpy() * 255).astype(np.int64)
                assert np.array_equal(got[cblock], chroma_ref[cblock])
    assert torch.equal(motion.compensate(ref, torch.zeros_like(mv), field="block"), ref)
    with pytest.raises(ValueError, match="motion field"):
        motion.compensate(ref, mv, field="wavy")


def test_the_encoder_takes_the_block_field_where_blocks_move_apart():
    """Where neighbouring blocks move differently, the smooth field bends the still part around the moving
    one: offered both fields, the encoder signals the block field, and the decoder predicts with it; and
    a smooth-field picture decodes with the smooth prediction."""
    from lvcodec.zoo import load_models, mv_lambda

    _, inter = load_models()
    ref = to_tensor(demo_clip(1, 128, 128)[0], 64)
    cur = ref.clone()
    cur[..., :, 32:] = torch.roll(ref, shifts=-2, dims=-1)[..., :, 32:]  # right half: 4 luma px left
    out = inter.encode(cur, ref, 5, mv_lambda(6), blocks=(16,), fields=motion.FIELDS)
    assert out["field"] == "block"
    assert torch.equal(inter.decompress(out["strings"], out["shape"], ref, 5)["x_hat"], out["x_hat"])
    smooth = inter.encode(cur, ref, 5, mv_lambda(6), blocks=(16,), fields=("smooth",))
    assert smooth["field"] == "smooth" and smooth["skip"] is not None
    assert torch.equal(inter.decompress(smooth["strings"], smooth["shape"], ref, 5)["x_hat"], smooth["x_hat"])


def test_the_encoder_takes_8x8_blocks_where_small_parts_move_apart():
    """Where every 8x8 block moves its own way, 16x16 blocks cannot follow: the encoder, which tries sizes
    from 16x16 up and then down, codes the picture with 8x8 blocks, the search finds their vectors (also on
    a picture over 512 pixels wide, where it searches from a coarser level), and the decoder rebuilds it."""
    from lvcodec.zoo import load_models, mv_lambda

    _, inter = load_models()
    for w, h in ((128, 128), (576, 64)):
        ref = to_tensor(demo_clip(1, w, h)[0], 64)
        luma = torch.nn.functional.pixel_shuffle(ref[:, :4], 2)
        rng = np.random.default_rng(0)
        shifts = rng.integers(-2, 3, size=(2, h // 8, w // 8))  # whole luma pixels per 8x8 block
        cur_y = luma.clone()
        for i in range(h // 8):
            for j in range(w // 8):
                moved = torch.roll(luma, shifts=(int(shifts[1, i, j]), int(shifts[0, i, j])), dims=(-2, -1))
                cur_y[..., 8 * i:8 * i + 8, 8 * j:8 * j + 8] = moved[..., 8 * i:8 * i + 8, 8 * j:8 * j + 8]
        cur = torch.cat((torch.nn.functional.pixel_unshuffle(cur_y, 2), ref[:, 4:]), 1)
        mv = motion.search(cur, ref, lam=0.0, block=8)
        inner = mv[0, :, 1:-1, 1:-1].numpy()
        assert (inner == -4 * shifts[:, 1:-1, 1:-1]).mean() > 0.7  # most vectors point back to the source
        out = inter.encode(cur, ref, 6, mv_lambda(7))
        assert 2 * cur.shape[-1] // out["mv"].shape[-1] == 8
        assert torch.equal(inter.decompress(out["strings"], out["shape"], ref, 6)["x_hat"], out["x_hat"])


def test_a_skipped_latent_decodes_to_the_prediction_and_a_still_scene_skips():
    """A P-frame may skip its latent (the prediction is the picture): the encoder takes that when it is
    cheaper, as on a still scene, and the decoder rebuilds it exactly."""
    from lvcodec.zoo import load_models, mv_lambda

    intra, inter = load_models()
    pic = to_tensor(demo_clip(1, 192, 128)[0], 64)
    ref = torch.round(intra.compress(pic, 3)["x_hat"].clamp(0, 1) * 255) / 255
    mv = torch.zeros(1, 2, 128 // 32, 192 // 32, dtype=torch.int32)
    out = inter.compress(pic, ref, mv, 2, skip=True)
    assert torch.equal(out["x_hat"], motion.compensate(ref, mv, field="block"))
    assert torch.equal(inter.decompress(out["strings"], out["shape"], ref, 2)["x_hat"], out["x_hat"])
    for q in (0, 7):
        still = inter.encode(ref, ref, q, mv_lambda(q + 1))  # the reference again: nothing to code
        assert still["skip"] and torch.equal(torch.round(still["x_hat"] * 255), torch.round(ref * 255))
        assert len(still["strings"][0]) < 16
        assert torch.equal(inter.decompress(still["strings"], still["shape"], ref, q)["x_hat"], still["x_hat"])


def test_the_plane_mask_sends_planes_the_prediction_matches_better():
    """With a coded latent, each plane (luma, U, V) whose synthesis is further from the source than the
    prediction is sent as the prediction; the mask is coded after ŷ and the decoder applies it."""
    from lvcodec.zoo import load_models

    intra, inter = load_models()
    pic = to_tensor(demo_clip(1, 192, 128)[0], 64)
    ref = torch.round(intra.compress(pic, 3)["x_hat"].clamp(0, 1) * 255) / 255
    cur = ref.clone()
    cur[:, :4] = pic[:, :4]  # new luma, chroma exactly the reference's: the prediction's chroma is exact
    mv = torch.zeros(1, 2, 128 // 16, 192 // 16, dtype=torch.int32)
    out = inter.compress(cur, ref, mv, 7)
    assert out["mask"] & 0b110 == 0b110
    assert torch.equal(out["x_hat"][:, 4:], motion.compensate(ref, mv, field="block")[:, 4:])
    assert torch.equal(inter.decompress(out["strings"], out["shape"], ref, 7)["x_hat"], out["x_hat"])


def test_latent_flag_and_plane_mask_round_trip_and_their_escapes_are_errors():
    import pytest

    from lvcodec import mvcoding
    from lvcodec.models import RansReader, RansWriter

    def stream(*puts):
        w = RansWriter()
        for put in puts:
            put(w)
        w.put_with_tables([0, 0], [0, 0], mvcoding._BLOCK_TABLES)  # a stream of one symbol is too short to flush
        return RansReader(w.flush())

    for mode in (mvcoding.LATENT, mvcoding.SKIP, mvcoding.MASKED):
        for mask in range(8):
            r = stream(lambda w: mvcoding.encode_latent_flag(w, mode), lambda w: mvcoding.encode_plane_mask(w, mask))
            assert mvcoding.decode_latent_flag(r) == mode and mvcoding.decode_plane_mask(r) == mask
    with pytest.raises(ValueError, match="latent flag"):
        mvcoding.decode_latent_flag(stream(lambda w: w.put_with_tables([3], [0], mvcoding._FLAG_TABLES)))
    with pytest.raises(ValueError, match="plane mask"):
        mvcoding.decode_plane_mask(stream(lambda w: w.put_with_tables([8], [0], mvcoding._MASK_TABLES)))


def test_region_masks_round_trip_and_their_escape_is_an_error():
    import pytest

    from lvcodec import mvcoding
    from lvcodec.models import RansReader, RansWriter

    rng = np.random.default_rng(3)
    for shape in ((1, 1), (1, 7), (5, 1), (6, 10)):
        for p in (0.1, 0.5, 0.9):
            region = rng.random(shape) < p
            w = RansWriter()
            mvcoding.encode_region_mask(w, region)
            w.put_with_tables([0, 0], [0, 0], mvcoding._BLOCK_TABLES)
            assert np.array_equal(mvcoding.decode_region_mask(RansReader(w.flush()), *shape), region)
    w = RansWriter()
    w.put_with_tables([1, 2], [0, 1], mvcoding._REGION_TABLES)  # a set bit, then the escape
    w.put_with_tables([0, 0], [0, 0], mvcoding._BLOCK_TABLES)
    with pytest.raises(ValueError, match="region mask"):
        mvcoding.decode_region_mask(RansReader(w.flush()), 1, 2)


def test_a_masked_latent_codes_only_the_regions_that_changed():
    """Where one 64x64 region of a still picture changes, the encoder codes the latent there alone (the
    region mask) and the rest of the picture is the prediction, exactly; the decoder rebuilds it. A mask
    the caller gives is coded as given."""
    from lvcodec.models import _spread
    from lvcodec.zoo import load_models, mv_lambda

    intra, inter = load_models()
    pics = demo_clip(12, 256, 192)
    ref = torch.round(intra.compress(to_tensor(pics[0], 64), 4)["x_hat"].clamp(0, 1) * 255) / 255
    cur = ref.clone()
    cur[..., 32:64, 64:96] = to_tensor(pics[11], 64)[..., 64:96, 0:32]  # region (1, 2): new content
    out = inter.encode(cur, ref, 4, mv_lambda(5), blocks=(16,))
    assert out["region"] is not None and out["region"][1, 2] and int(out["region"].sum()) <= 2
    keep = ~_spread(out["region"], ref).expand_as(ref)
    assert torch.equal(out["x_hat"][keep], ref[keep])  # unchanged regions: the prediction, bit for bit
    assert torch.equal(inter.decompress(out["strings"], out["shape"], ref, 4)["x_hat"], out["x_hat"])
    full = inter.compress(cur, ref, out["mv"], 4)
    assert len(out["strings"][0]) < len(full["strings"][0])
    region = torch.zeros(3, 4, dtype=torch.bool)
    region[0, 0] = region[2, 3] = True
    given = inter.compress(cur, ref, out["mv"], 4, region=region)
    assert torch.equal(given["region"], region)
    assert torch.equal(inter.decompress(given["strings"], given["shape"], ref, 4)["x_hat"], given["x_hat"])
