"""Decoding is exact everywhere: entropy parameters from the exact fixed-point h_s (lvcodec/intnet.py),
pictures independent of the CPU thread count (docs/determinism.md says what is guaranteed)."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from compressai.entropy_models import GaussianConditional

from lvcodec import intnet
from lvcodec import layer as lvlayer
from lvcodec import models as lvmodels
from lvcodec.codec import load_models
from lvcodec.registry import load_model
from lvcodec.demo import demo_clip
from lvcodec.zoo import HyperpriorV1

from .helpers import decode_stream, encode_stream

W, H = 96, 64


@pytest.fixture(scope="module")
def pics():
    return demo_clip(5, W, H)


@pytest.fixture(scope="module")
def pics128():
    """Large enough that oneDNN splits reductions across threads (at 96x64 it happens not to)."""
    return demo_clip(4, 128, 128)


@pytest.fixture(scope="module")
def pics_tall():
    """Tall enough (16 latent rows) that the pixel synthesis runs in two bands."""
    return demo_clip(3, 64, 16 * 4 * lvmodels.BAND_HALO)


@pytest.fixture
def threads():
    """Set the torch thread count inside a test; restored afterwards."""
    n = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(n)


def _same_pictures(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for p, r in zip(a, b)
                                    for x, y in ((p.y, r.y), (p.u, r.u), (p.v, r.v)))


def ulp_noise(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Every element moved by exactly one ulp, up or down at random."""
    g = torch.Generator().manual_seed(seed)
    up = torch.rand(x.shape, generator=g) < 0.5
    to = torch.where(up, torch.tensor(float("inf")), torch.tensor(float("-inf"))).to(x.device, x.dtype)
    return torch.nextafter(x, to)


# -- thread counts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("enc_threads, dec_threads", [(1, 2), (2, 1), (1, 3)])
def test_decoding_with_another_thread_count_is_bit_identical(pics128, tmp_path, threads, enc_threads,
                                                             dec_threads):
    threads(enc_threads)
    data, recon = encode_stream(pics128, keyint=3)  # I P P I
    threads(dec_threads)
    assert _same_pictures(decode_stream(data, tmp_path), recon)


@pytest.mark.parametrize("enc_threads, dec_threads", [(1, 2), (2, 1)])
def test_banded_decoding_with_another_thread_count_is_bit_identical(pics_tall, tmp_path, threads, enc_threads,
                                                                    dec_threads):
    threads(enc_threads)
    data, recon = encode_stream(pics_tall, keyint=2)  # I P I
    threads(dec_threads)
    assert _same_pictures(decode_stream(data, tmp_path), recon)


@pytest.mark.parametrize("n", [1, 2])
def test_banded_synthesis_is_the_whole_picture_synthesis(threads, n):
    """The two bands, each with its halo, give exactly the rows of one pass over the whole picture."""
    model = load_model()
    g = torch.Generator().manual_seed(n)
    rows = 4 * lvmodels.BAND_HALO + 1  # odd: the bands differ in height
    y = torch.round(torch.randn((1, 128, rows, 6), generator=g) * 3)
    pred = torch.rand((1, 6, 8 * rows, 48), generator=g)
    threads(1)
    with torch.no_grad():
        whole = (model.intra.g_s(y), model.inter._synth(y, pred))
        threads(n)
        banded = (lvmodels.synthesize(model.intra.g_s, y), lvmodels.synthesize(model.inter._synth, y, pred))
    assert all(torch.equal(a, b) for a, b in zip(whole, banded))
    assert torch.get_num_threads() == n  # restored


# -- the floating-point path perturbed ----------------------------------------------------------------


class _Recorder:
    """Records, per coded latent ŷ of either model, its entropy parameters (means, scales) and symbols:
    at the encoder from what goes into the rANS stream, at the decoder from what comes out."""

    def __init__(self, monkeypatch):
        self.params, self.symbols = [], []
        params_exact = lvmodels._GainedHyperprior._params_exact

        def params(model, z_g_hat, q):
            means, scales = params_exact(model, z_g_hat, q)
            self.params.append((means.clone(), scales.clone()))
            return means, scales

        put, get = lvmodels.RansWriter.put, lvmodels.RansReader.get

        def put_rec(w, model, symbols, indexes):
            if isinstance(model, GaussianConditional):
                self.symbols.append((indexes.clone(), symbols.clone()))
            return put(w, model, symbols, indexes)

        def get_rec(r, model, indexes):
            out = get(r, model, indexes)
            if isinstance(model, GaussianConditional):
                self.symbols.append((indexes.clone(), out.clone()))
            return out

        monkeypatch.setattr(lvmodels._GainedHyperprior, "_params_exact", params)
        monkeypatch.setattr(lvmodels.RansWriter, "put", put_rec)
        monkeypatch.setattr(lvmodels.RansReader, "get", get_rec)

    @property
    def rows(self):
        return [(i, m, s, y) for (m, s), (i, y) in zip(self.params, self.symbols)]


def _perturb_float_path(monkeypatch, models, z_inputs):
    """±1 ulp on every float that the decoder computes around the entropy coder: the decoded ẑ and
    motion vectors (the inputs of the hyper path), every layer of the float h_s, the synthesis output."""
    handles = []
    get_factorized = lvmodels.get_factorized

    def noisy(r, eb, shape, **kw):
        out = ulp_noise(get_factorized(r, eb, shape, **kw), seed=len(z_inputs))
        if any(eb is m.entropy_bottleneck for m in models):
            z_inputs.append(out)
        return out

    monkeypatch.setattr(lvmodels, "get_factorized", noisy)
    for m in models:
        for layer in [*m.h_s, m.g_s]:
            handles.append(layer.register_forward_hook(lambda mod, i, o: ulp_noise(o, seed=7)))
    return handles


def test_ulp_noise_on_the_float_path_changes_no_entropy_parameter(pics, tmp_path, monkeypatch):
    # one coding per picture (no refinement or block size candidates), so the encoder's records pair with
    # the decoder's
    monkeypatch.setattr(load_model(), "refine_steps", 0)
    monkeypatch.setattr(HyperpriorV1, "MOTION_BLOCKS", (32,))
    monkeypatch.setattr(HyperpriorV1, "REGION_MASK", False)
    # every P-frame codes its latent (a skipped one would leave an encoder record with no decoder record)
    encode = lvmodels.InterModel.encode
    monkeypatch.setattr(lvmodels.InterModel, "encode", lambda self, *a, **k: encode(self, *a, **{**k, "skip": False}))
    # no residual layer (integer arithmetic only, nothing for the noise to reach): it changes the references,
    # and with them whether a P-frame skips its latent, which this count of hyper-latents relies on
    monkeypatch.setattr(lvlayer, "encode", lambda x, x_hat, lam, **kw: (None, x_hat))
    models = load_models()
    data, recon = encode_stream(pics[:4], keyint=3)
    with monkeypatch.context() as mp:
        enc = _Recorder(mp)
        encode_stream(pics[:4], keyint=3)  # same stream again, recording the encoder's parameters
    with monkeypatch.context() as mp:
        clean = _Recorder(mp)
        assert _same_pictures(decode_stream(data, tmp_path), recon)
    z_noisy = []
    with monkeypatch.context() as mp:
        noisy = _Recorder(mp)
        handles = _perturb_float_path(mp, models, z_noisy)
        try:
            decoded = decode_stream(data, tmp_path)  # still decodes, with every symbol and parameter exact
        finally:
            for h in handles:
                h.remove()
    assert len(decoded) == 4 and len(z_noisy) == 4
    assert len(enc.rows) == len(clean.rows) == len(noisy.rows) == 4
    for e, c, n in zip(enc.rows, clean.rows, noisy.rows):
        for a, b, d in zip(e, c, n):  # indexes, means, scales, symbols
            assert torch.equal(a, b) and torch.equal(b, d)

    # Contrast: the same noise on ẑ moves the float h_s's outputs, not the exact one's.
    intra = models[0]
    z_noisy_i = z_noisy[0]
    med = intra.z_medians(3).view(1, -1, 1, 1)
    z_clean = torch.round(z_noisy_i - med) + med
    assert not torch.equal(z_clean, z_noisy_i)
    qt = torch.tensor([3])
    with torch.no_grad():
        float_clean = intra._params(z_clean * intra._g(intra.inv_zgain, qt), qt)
        float_noisy = intra._params(z_noisy_i * intra._g(intra.inv_zgain, qt), qt)
    assert not all(torch.equal(a, b) for a, b in zip(float_clean, float_noisy))
    exact_clean, exact_noisy = intra._params_exact(z_clean, 3), intra._params_exact(z_noisy_i, 3)
    assert all(torch.equal(a, b) for a, b in zip(exact_clean, exact_noisy))


# -- intnet -------------------------------------------------------------------------------------------


def _symbols(seed=0, shape=(1, 96, 3, 4)):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-8, 9, shape, generator=g).float()


@pytest.mark.parametrize("q", [0, 7])
def test_integer_h_s_matches_the_float_h_s(q):
    for m in load_models():
        sym = _symbols(q)
        z = sym + m.z_medians(q).view(1, -1, 1, 1)
        qt = torch.tensor([q])
        with torch.no_grad():
            means_f, scales_f = m._params(z * m._g(m.inv_zgain, qt), qt, calibrated=True)
        means, scales = m._params_exact(z, q)
        for a, b in ((means, means_f), (scales, scales_f)):
            assert (a - b).abs().max() <= 1e-4 * b.abs().max()
        gc = m.gaussian_conditional
        assert (gc.build_indexes(scales) == gc.build_indexes(scales_f)).float().mean() > 0.999


def test_integer_h_s_is_identical_for_any_thread_count(threads):
    net = intnet.IntegerNetwork(load_models()[0].h_s, load_models()[0].z_medians(5),
                                load_models()[0].inv_zgain[5])
    sym = _symbols(1, (1, 96, 5, 7))
    outs = []
    for n in (1, 2, 3):
        threads(n)
        outs.append(net(sym))
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def _as_conv(layer: intnet.FixedPointConv, a: torch.Tensor):
    """A layer as a plain stride-1-or-s convolution of a (zero-stuffed, padded) input: (input, weight,
    stride, padding) so that it can be computed as unfold + matmul in any order or in int64."""
    w = layer.weight
    if not layer.transposed:
        return a, w, layer.stride, layer.padding
    (sh, sw), (ph, pw), (oh, ow) = layer.stride, layer.padding, layer.output_padding
    k = w.shape[2]
    n, c, h, wd = a.shape
    z = a.new_zeros(n, c, (h - 1) * sh + 1, (wd - 1) * sw + 1)
    z[:, :, ::sh, ::sw] = a
    z = F.pad(z, (k - 1 - pw, k - 1 - pw + ow, k - 1 - ph, k - 1 - ph + oh))
    return z, w.flip(2, 3).transpose(0, 1), (1, 1), (0, 0)


def _conv_by_matmul(layer, a, dtype=torch.float64, perm=None):
    z, w, stride, pad = _as_conv(layer, a)
    n, cout = a.shape[0], w.shape[0]
    cols = F.unfold(z.double(), w.shape[2:], padding=pad, stride=stride)  # (n, cin*kh*kw, L): a copy
    wm = w.reshape(cout, -1)
    if perm is not None:  # another summation order
        cols, wm = cols[:, perm], wm[:, perm]
    out = wm.to(dtype) @ cols.to(dtype) + layer.bias.to(dtype).view(1, -1, 1)  # int64: exact
    oh = (z.shape[2] + 2 * pad[0] - w.shape[2]) // stride[0] + 1
    return out.view(n, cout, oh, -1)


def _worst_case_input(layer, shape, o, y, x, limit=2**intnet.ACT_BITS - 1):
    """The input in range that makes output (o, y, x) as large as it can be: |a| at its limit, signs
    of the weights that multiply it (the gradient of that output)."""
    a = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    out = (F.conv_transpose2d(a, layer.weight, None, layer.stride, layer.padding, layer.output_padding)
           if layer.transposed else F.conv2d(a, layer.weight, None, layer.stride, layer.padding))
    out[0, o, y, x].backward()
    return limit * torch.sign(a.grad)


def _check_exact(layer, cin, hw, at_least, limit=2**intnet.ACT_BITS - 1):
    out_dim = 1 if layer.transposed else 0
    o = int(layer.weight.abs().sum(dim=[d for d in range(4) if d != out_dim]).argmax())
    a = _worst_case_input(layer, (1, cin, hw, hw), o, hw // 2, hw // 2, limit)
    acc = layer(a)  # the library's float64 convolution
    exact = _conv_by_matmul(layer, a, torch.int64)  # integer arithmetic: the true value
    assert torch.equal(acc.long(), exact) and torch.equal(acc, exact.double())
    assert at_least <= acc.abs().max() < 2**53
    terms = _as_conv(layer, a)[1][0].numel()  # cin * kh * kw
    perm = torch.randperm(terms, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_conv_by_matmul(layer, a, perm=perm), acc)  # other summation orders
    assert torch.equal(_conv_by_matmul(layer, a, perm=perm.flip(0)), acc)


def test_fixed_point_layers_of_h_s_are_exact_in_any_summation_order():
    m = load_models()[0]
    net = intnet.IntegerNetwork(m.h_s, m.z_medians(7), m.inv_zgain[7])
    for layer, cin, hw in zip(net.layers, (96, 128, 192), (3, 6, 8)):
        _check_exact(layer, cin, hw, 2.0**47)


@pytest.mark.parametrize("make", [lambda: torch.nn.Conv2d(192, 4, 3, padding=1),
                                  lambda: torch.nn.ConvTranspose2d(128, 4, 5, 2, 2, 1)],
                         ids=["conv3x3x192", "deconv5x5x128"])
def test_fixed_point_layers_are_exact_at_the_bound(make):
    """Every weight at full scale and every input at its limit: the largest sums the formats allow
    (about 2^52.8 for h_s's largest fan-in) are still exact."""
    layer = make()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        layer.weight.copy_(torch.where(torch.rand(layer.weight.shape, generator=g) < 0.5, -0.999, 0.999))
        layer.bias.zero_()
    fp = intnet.FixedPointConv(layer, intnet.ACT_FRAC)
    assert fp.weight.abs().min() > 0.99 * 2**intnet.WEIGHT_BITS
    _check_exact(fp, layer.in_channels, 5, 2.0**52)


def test_the_context_net_is_exact_at_its_input_bound():
    """The checkerboard context's first layer sums 3x3 x 256 inputs: exact for inputs within its bound
    (symbols clamped to ±32, scale indexes 0..63: below 64 · 2^16) even with every weight at full scale,
    though a network built for the full activation range would not be, and is refused."""
    ctx = lvmodels.CheckerboardContext(128)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        w = ctx.net[0].weight
        w.copy_(torch.where(torch.rand(w.shape, generator=g) < 0.5, -0.999, 0.999))
        ctx.net[0].bias.zero_()
    net = ctx.integer()
    assert net.in_limit == 64 * 2**intnet.IN_FRAC
    _check_exact(net.layers[0], 256, 5, 2.0**50, limit=net.in_limit)
    with pytest.raises(ValueError, match="not exact"):
        intnet.IntegerNetwork(ctx.net, torch.zeros(256))


@pytest.mark.parametrize("model", [0, 1], ids=["intra", "inter"])
def test_a_context_decodes_exactly_with_and_without_a_region_mask(model):
    """ŷ in two passes: the decoder rebuilds the context's refined parameters from the anchors it has read,
    exactly (a random context, so every mean and most scale indexes move), masked or not."""
    m = copy.deepcopy(load_models()[model])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.context.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    y = torch.randn(1, m.M, 8, 12, generator=g) * 3
    region = torch.tensor([[True, False, True], [False, True, True]])
    for reg in (None, region):
        w = lvmodels.RansWriter()
        y_hat = m._put_latent(w, y, 4, reg)
        r = lvmodels.RansReader(w.flush())
        assert torch.equal(m._get_latent(r, (2, 3), 4, reg), y_hat)
    sel, anchors = m._coded_samples((8, 12), None, y.device)
    delta, offset = m.context.exact(m._int_context(y.device), torch.round(y * anchors), torch.full(y.shape, 30))
    assert (delta != 0).all() and (offset != 0).float().mean() > 0.5


def test_the_fixed_point_h_s_follows_the_weights():
    m = copy.deepcopy(load_models()[0])
    net = m._int_h_s(2, torch.device("cpu"))
    assert m._int_h_s(2, torch.device("cpu")) is net  # cached
    with torch.no_grad():
        m.h_s[4].bias.add_(1.0)  # as an optimizer step or load_state_dict would
    changed = m._int_h_s(2, torch.device("cpu"))
    assert changed is not net and not torch.equal(changed.layers[-1].bias, net.layers[-1].bias)


def test_an_inexact_format_is_refused(monkeypatch):
    monkeypatch.setattr(intnet, "ACT_BITS", 40)
    m = load_models()[0]
    with pytest.raises(ValueError, match="not exact"):
        intnet.IntegerNetwork(m.h_s, m.z_medians(0), m.inv_zgain[0])


# -- devices ------------------------------------------------------------------------------------------


def _cross_device(enc_device, dec_device, pics):
    """Code an I-frame and a P-frame with the models on ``enc_device``, decode them on ``dec_device``:
    ŷ (and so every symbol and entropy parameter) must be bit-identical."""
    from lvcodec.frames import quantize8, to_tensor
    from lvcodec.models import RansReader, RansWriter

    models = {d: [copy.deepcopy(m).to(d) for m in load_models()] for d in {enc_device, dec_device}}
    x0, x1 = (to_tensor(p, 64) for p in pics[:2])
    for which, x, extra in ((0, x0, ()), (1, x1, (quantize8(x0),))):
        enc, dec = models[enc_device][which], models[dec_device][which]
        with torch.no_grad():
            w = RansWriter()
            y_hat = enc._put_latent(
                w, enc.g_a(x.to(enc_device) if which == 0 else torch.cat((x - extra[0], extra[0]), 1).to(enc_device)),
                4)
            y_dec = dec._get_latent(RansReader(w.flush()), (x.shape[-2] // 32, x.shape[-1] // 32), 4)
        assert torch.equal(y_hat.cpu(), y_dec.cpu())


def test_cross_device_check_on_cpu(pics):
    _cross_device("cpu", "cpu", pics)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("enc_device, dec_device", [("cuda", "cpu"), ("cpu", "cuda")])
def test_gpu_and_cpu_decode_each_others_streams(pics, enc_device, dec_device):
    _cross_device(enc_device, dec_device, pics)
