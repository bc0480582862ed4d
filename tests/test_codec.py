"""Round trips and rate behaviour of the codec through the Python API."""

import io
from fractions import Fraction

import numpy as np
import pytest

import lvcodec
from lvcodec.codec import Encoder, encode_pictures
from lvcodec.demo import demo_clip

from .helpers import decode_stream, encode_stream, noise_pictures


def test_decode_is_bit_identical_to_encoder_reconstruction(clip_pics, tmp_path):
    data, recon = encode_stream(clip_pics, quality=4, keyint=4)  # I and P frames, two GOPs
    decoded = decode_stream(data, tmp_path)
    assert len(decoded) == len(clip_pics)
    for r, d in zip(recon, decoded):
        for a, b in ((r.y, d.y), (r.u, d.u), (r.v, d.v)):
            assert a.dtype == np.uint8 and np.array_equal(a, b)


def test_encoding_twice_gives_identical_bytes(clip_pics):
    assert encode_stream(clip_pics, 3)[0] == encode_stream(clip_pics, 3)[0]


def test_rate_and_quality_rise_with_quality(clip_pics):
    rates, psnrs = [], []
    for q in range(1, 9):
        st = encode_pictures(clip_pics, io.BytesIO(), 96, 64, Fraction(25), quality=q, keyint=32)
        rates.append(st.bpp)
        psnrs.append(st.psnr_yuv)
    assert all(a < b for a, b in zip(rates, rates[1:])), rates
    assert all(a < b for a, b in zip(psnrs, psnrs[1:])), psnrs


@pytest.mark.parametrize("size", [(33, 17), (1, 1), (2, 2), (65, 63), (17, 40)])
def test_odd_sizes_round_trip_at_the_right_size(size, tmp_path):
    w, h = size
    pics = noise_pictures(3, w, h)
    data, recon = encode_stream(pics, keyint=2)
    decoded = decode_stream(data, tmp_path)
    assert len(decoded) == 3
    for p, d, r in zip(pics, decoded, recon):
        assert d.y.shape == (h, w)
        assert d.u.shape == d.v.shape == ((h + 1) // 2, (w + 1) // 2)
        assert np.array_equal(d.y, r.y)


def test_p_frames_pay_off():
    """keyint 32 is >= 60 % smaller than all-intra at the same quality, PSNR-YUV within 1 dB (at 0.22x the
    bytes the P-frames sit 0.8 dB below the I-frames at q6: the intra model has been trained further than
    the inter model; all-intra at a quarter of the bytes would be several dB worse)."""
    pics = demo_clip(16, 128, 96)
    for q in (2, 6):
        intra = encode_pictures(pics, io.BytesIO(), 128, 96, Fraction(25), quality=q, keyint=1)
        inter = encode_pictures(pics, io.BytesIO(), 128, 96, Fraction(25), quality=q, keyint=32)
        assert inter.bytes <= 0.4 * intra.bytes, (q, inter.bytes, intra.bytes)
        assert inter.psnr_yuv >= intra.psnr_yuv - 1.0, (q, inter.psnr_yuv, intra.psnr_yuv)


def test_file_api_round_trip(clip_path, clip_pics, tmp_path):
    out = tmp_path / "a.lvc"
    st = lvcodec.encode(clip_path, str(out), quality=5, keyint=8)
    assert st.frames == len(clip_pics) and st.bytes == out.stat().st_size
    decoded = list(lvcodec.decode(str(out)))
    psnr = np.mean([lvcodec.psnr_yuv(a, b) for a, b in zip(clip_pics, decoded)])
    assert abs(psnr - st.psnr_yuv) < 1e-9
    h = lvcodec.read_header(str(out))
    assert (h.width, h.height, h.quality, h.keyint, h.fps_num, h.fps_den) == (96, 64, 5, 8, 25, 1)


def test_invalid_quality_and_keyint_are_refused(clip_path, tmp_path):
    with pytest.raises(ValueError, match="quality"):
        lvcodec.encode(clip_path, str(tmp_path / "x.lvc"), quality=9)
    with pytest.raises(ValueError, match="keyint"):
        Encoder(16, 16, 4, keyint=0)
    assert not (tmp_path / "x.lvc").exists()


def test_size_change_mid_stream_is_an_error():
    enc = Encoder(32, 32)
    enc.encode(noise_pictures(1, 32, 32)[0])
    with pytest.raises(lvcodec.InputError, match="size"):
        enc.encode(noise_pictures(1, 34, 32)[0])


def test_reads_other_pixel_formats(tmp_path):
    """An RGB or gray source is converted to 4:2:0 and coded."""
    import av

    path = str(tmp_path / "rgb.mkv")
    with av.open(path, "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 48, 32, "bgr0"
        for i in range(3):
            img = np.full((32, 48, 3), 40 * i, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="bgr0")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    st = lvcodec.encode(path, str(tmp_path / "rgb.lvc"))
    assert st.frames == 3 and st.psnr_yuv > 30
    assert st.source_pix_fmt == "bgr0"


def test_frames_are_coded_at_their_gop_position_quality(clip_pics, tmp_path):
    """The default model codes I-frames of low-rate streams 1-2 levels up (capped at the top level) and
    three P-frames in four one level down (never below 1); those packets carry their quality, every 4th
    P-frame uses the header's, and the decoder follows (bit-exact)."""
    enc = Encoder(96, 64, 3, 6)
    packets = [enc.encode(p)[0] for p in clip_pics[:7]]
    assert [p.quality for p in packets] == [4, 2, 2, 2, None, 2, 4]
    assert [Encoder(96, 64, 1, 6).inter_quality(i) for i in range(1, 6)] == [1] * 5
    assert [Encoder(96, 64, 8, 6).inter_quality(i) for i in range(1, 6)] == [7, 7, 7, 8, 7]
    assert [Encoder(96, 64, q, 4).intra_quality for q in range(1, 9)] == [3, 3, 4, 4, 5, 6, 7, 8]
    assert Encoder(96, 64, 7, 4, intra_offset=3).intra_quality == 8
    assert Encoder(96, 64, 3, 1).intra_quality == 3  # all-intra: every frame at the stream's quality
    assert Encoder(96, 64, 3, 4, intra_offset=0).intra_quality == 3
    with pytest.raises(ValueError, match="intra offset"):
        Encoder(96, 64, 3, 4, intra_offset=-1)
    data, recon = encode_stream(clip_pics, quality=3, keyint=6)
    for r, d in zip(recon, decode_stream(data, tmp_path)):
        assert np.array_equal(r.y, d.y) and np.array_equal(r.u, d.u)


@pytest.mark.parametrize("preset", ["faster", "fast"])
def test_every_preset_decodes_exactly(preset, clip_pics, tmp_path):
    """The presets change only the encoder's choices: each one's stream decodes to its reconstruction."""
    data, recon = encode_stream(clip_pics[:5], quality=3, keyint=4, preset=preset)
    decoded = decode_stream(data, tmp_path)
    assert len(decoded) == 5
    for r, d in zip(recon, decoded):
        assert np.array_equal(r.y, d.y) and np.array_equal(r.u, d.u) and np.array_equal(r.v, d.v)


def test_presets_differ_only_in_the_encoders_choices(monkeypatch):
    from lvcodec.models import InterModel
    from lvcodec.registry import load_model

    model = load_model()
    assert model.presets == ("faster", "fast", "medium") and model.with_preset(None) is model
    faster, fast = model.with_preset("faster"), model.with_preset("fast")
    assert faster.inter is model.inter and fast.intra is model.intra  # the weights are shared
    assert (faster.refine_steps, fast.refine_steps) == (0, model.refine_steps) and model.refine_steps > 0
    assert len({faster.encoder_version, model.encoder_version, fast.encoder_version}) == 3
    assert model.preset == "medium"  # making the others left the shared default as it was

    seen = []
    encode = InterModel.encode
    monkeypatch.setattr(InterModel, "encode", lambda self, *a, **k: seen.append(k["decide"]) or encode(self, *a, **k))
    pics = demo_clip(2, 64, 64)
    for preset in (None, "fast"):
        encode_stream(pics, preset=preset)
    assert seen == ["coded", "estimate"]


def test_an_unknown_preset_is_refused(clip_path, tmp_path):
    with pytest.raises(ValueError, match='unknown preset "placebo".*faster, fast, medium'):
        Encoder(64, 64, preset="placebo")
    with pytest.raises(ValueError, match="placebo"):
        lvcodec.encode(clip_path, str(tmp_path / "o.lvc"), preset="placebo")
    with pytest.raises(ValueError, match="placebo"):
        lvcodec.open(str(tmp_path / "p.lvc"), "w", preset="placebo")
    assert not list(tmp_path.iterdir())


def test_estimated_block_size_codes_what_the_estimates_pick(monkeypatch):
    """decide="estimate" codes the latent once, at the block size the estimates pick, the prediction alone
    at the one of the cheapest prediction, and decodes exactly."""
    import torch

    from lvcodec import mvcoding
    from lvcodec.frames import to_tensor
    from lvcodec.models import ESTIMATE_PREDICTION_WEIGHT, NUM_QUALITIES, InterModel
    from lvcodec.zoo import load_models, mv_lambda

    inter = load_models()[1]
    pics = demo_clip(2, 128, 128)
    x, ref = (to_tensor(p, 64) for p in pics)
    coded = []
    code = InterModel._code_picture
    monkeypatch.setattr(InterModel, "_code_picture", lambda self, x, ref, mv, q, skip=False, **k: coded.append(
        (2 * x.shape[-1] // mv.shape[-1], skip)) or code(self, x, ref, mv, q, skip, **k))
    for q in (0, NUM_QUALITIES - 1):
        lam = mv_lambda(q + 1)
        est = {b: inter._estimate(x, ref, b, q, lam) for b in mvcoding.BLOCK_SIZES}
        assert all(0 < e["mv_bits"] < e["bits"] and 0 < e["pred_distortion"] for e in est.values())
        latent = min(est, key=lambda b: est[b]["bits"] + ESTIMATE_PREDICTION_WEIGHT * est[b]["pred_distortion"])
        alone = min(est, key=lambda b: est[b]["pred_distortion"] + est[b]["mv_bits"])
        for masked in (False, True):  # with the region mask, tried on the latent's candidate
            coded.clear()
            out = inter.encode(x, ref, q, lam, decide="estimate", masked=masked)
            assert coded in ([(latent, False), (alone, True)], [(latent, False), (latent, False), (alone, True)][:3 if masked else 2])
            assert 2 * x.shape[-1] // out["mv"].shape[-1] == (alone if out["skip"] else latent)
            dec = inter.decompress(out["strings"], out["shape"], ref, q)["x_hat"]
            assert torch.equal(dec, out["x_hat"])
    with pytest.raises(ValueError, match="unknown block size decision"):
        inter.encode(x, ref, 0, 0.1, decide="exhaustive")


def test_a_still_picture_costs_little_after_its_i_frame():
    """Nothing moves: at the lowest quality the vector priors make each P-frame a few dozen bytes."""
    pic = demo_clip(1, 256, 192)[0]
    enc = Encoder(256, 192, quality=1, keyint=32)
    sizes = [enc.encode(pic)[0].size for _ in range(6)]
    assert all(s <= 0.08 * sizes[0] for s in sizes[1:]), sizes


def test_refined_key_frames_decode_exactly_and_never_cost_more(clip_pics):
    import torch

    from lvcodec.frames import to_tensor
    from lvcodec.models import LAMBDAS, mse_yuv
    from lvcodec.zoo import load_models

    intra = load_models()[0]
    x = to_tensor(clip_pics[0], 64)

    def cost(out, q):  # what the encoder minimises: lambda 255^2 MSE_YUV + real bits per luma pixel
        mse = mse_yuv(out["x_hat"].clamp(0, 1), x).item()
        return LAMBDAS[q] * 255**2 * mse + len(out["strings"][0]) * 8 / (x[0, 0].numel() * 4)

    for q in (0, 4, 7):
        plain, refined = intra.compress(x, q), intra.compress(x, q, refine=10)
        assert cost(refined, q) <= cost(plain, q)
        assert torch.equal(intra.decompress(refined["strings"], refined["shape"], q)["x_hat"], refined["x_hat"])
    assert cost(refined, 7) < 0.995 * cost(plain, 7)  # at high rates even a 96x64 picture gains (~1 %)


def test_only_streams_with_p_frames_refine_their_i_frames(clip_pics, monkeypatch):
    from lvcodec.zoo import HyperpriorV1

    calls = []
    keyframe = HyperpriorV1.encode_keyframe

    def spy(self, x, quality):
        calls.append(quality)
        return keyframe(self, x, quality)

    monkeypatch.setattr(HyperpriorV1, "encode_keyframe", spy)
    encode_stream(clip_pics[:3], quality=4, keyint=1)  # all-intra: plain, fast I-frames
    assert calls == []
    encode_stream(clip_pics[:5], quality=4, keyint=4)  # I P P P I
    assert len(calls) == 2


@pytest.mark.parametrize("kind", ["intra", "inter"])
def test_a_latent_that_synthesises_nan_is_a_clean_error(kind, clip_pics, tmp_path, monkeypatch):
    """A corrupt latent can drive the synthesis to inf or NaN, which has no 8-bit value: the decoder names
    the packet instead of writing platform-defined samples."""
    from lvcodec.errors import BitstreamError
    from lvcodec.models import InterModel, IntraModel

    data, _ = encode_stream(clip_pics[:2], quality=4, keyint=2)
    model = IntraModel if kind == "intra" else InterModel
    decompress = model.decompress

    def poisoned(self, *args, **kwargs):
        out = decompress(self, *args, **kwargs)
        out["x_hat"][..., 0, 0] = float("nan")
        return out

    monkeypatch.setattr(model, "decompress", poisoned)
    with pytest.raises(BitstreamError, match=r"pts=%d: .*not finite" % (0 if kind == "intra" else 1)):
        decode_stream(data, tmp_path)
