"""Learned intra and inter models of lvc.

Both follow one contract (CompressAI's): ``forward`` for training returns ``{"x_hat", "likelihoods"}``;
``compress`` returns ``{"strings", "shape"}``; ``decompress(strings, shape, ...)`` returns ``{"x_hat"}``;
``update()`` builds the CDF tables. Frames enter as the 6-channel half-resolution layout of 4:2:0 video
(4 luma sub-pixels from a 2x2 pixel-unshuffle, then U and V), values in [0, 1].

Both are mean-scale hyperprior models (Minnen, Balle, Toderici, "Joint autoregressive and hierarchical
priors for learned image compression", NeurIPS 2018, without the autoregressive part) made variable-rate
with per-quality gain vectors on the latents (Cui et al., "Asymmetric gained deep image compression
with continuous rate adaptation", CVPR 2021)::

    x ──g_a──> y ──×gain[q]──> y' ──Q──> ŷ' ──×inv_gain[q]──> ŷ ──g_s──> x̂
                    │                          ▲ means, scales (for y')
                    └──h_a──> z ──×zgain[q]──Q──> ẑ' ──×inv_zgain[q]──h_s──┘

The entropy parameters of ŷ depend on ẑ alone (decoded symbols), never on decoded pixels. ``compress``
and ``decompress`` compute them with an exact fixed-point twin of ``h_s`` (:mod:`lvcodec.intnet`), so the
encoder and every decoder get the same bits on any machine, thread count or device; ``forward``
(training) uses the float ``h_s``.

:class:`InterModel` codes a P-frame given its motion-compensated prediction ``pred`` (built from the
*decoded* previous frame): the analysis sees the frame and the prediction, the synthesis adds a
correction to the prediction, fusing its features with the prediction at the end. Its motion field (8, 16, 32
or 64 pixel blocks, the encoder's choice per frame, applied block by block or upsampled smoothly as the
stream says) is coded with the context tables of :mod:`lvcodec.mvcoding`;
a factorized ``EntropyBottleneck`` over the vector residuals prices them in training. The encoder may also
skip the latent (the prediction is the picture) and send any plane (luma, U, V) as the prediction's where the
synthesis would be further from the source (the plane mask): both chosen by actual cost (:meth:`InterModel.encode`).
"""

from __future__ import annotations

import contextlib
import functools
import math
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn as nn
import torch.nn.functional as F
from compressai.ans import BufferedRansEncoder, RansDecoder
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.entropy_models.entropy_models import EntropyModel
from compressai.layers import GDN
from compressai.models import CompressionModel
from compressai.models.utils import conv, deconv

from . import mvcoding
from .intnet import IntegerNetwork

#: Rate-distortion trade-off per quality level (1..8): loss = lambda * 255^2 * MSE_YUV + bpp.
LAMBDAS = tuple(round(0.0008 * 1.9**i, 6) for i in range(8))
NUM_QUALITIES = len(LAMBDAS)
SCALES_MIN, SCALES_MAX, SCALES_LEVELS = 0.11, 256.0, 64


#: Encoder-side refinement of I-frame latents (:meth:`IntraModel.compress`): Adam learning rate (in
#: quantization bins) per quality index and its decay per step. Smaller steps suit the coarse latents of
#: the low qualities (MODEL_CARD.md)
REFINE_LRS, REFINE_DECAY = (0.01, 0.01, 0.01, 0.01, 0.01, 0.02, 0.02, 0.02), 0.9


def mse_yuv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error of 6-channel pictures (B,6,H,W), weighted as PSNR-YUV:
    (6 MSE_Y + MSE_U + MSE_V) / 8."""
    d = (a.float() - b) ** 2
    return (6 * d[:, :4].mean((1, 2, 3)) + d[:, 4].mean((1, 2)) + d[:, 5].mean((1, 2))) / 8


#: weight of the prediction's distortion when InterModel.encode (decide="estimate") picks the block size to
#: code the latent at: 0 ranks by estimated bits alone, 1 by the prediction alone (MODEL_CARD.md)
ESTIMATE_PREDICTION_WEIGHT = 0.1


def coded_cost(x_hat: torch.Tensor, x: torch.Tensor, data: bytes, q: int) -> float:
    """What the encoder's choices minimise: λ[q]·255²·MSE_YUV of the picture ``x_hat`` coded as ``data``
    against ``x`` (batch of 1), plus the real bits per luma pixel."""
    return LAMBDAS[q] * 255**2 * mse_yuv(x_hat.clamp(0, 1), x).item() + len(data) * 8 / (x[0, 0].numel() * 4)


def scale_table() -> torch.Tensor:
    return torch.exp(torch.linspace(math.log(SCALES_MIN), math.log(SCALES_MAX), SCALES_LEVELS))


def _gain_init(n: int, channels: int, ratio: float = 1.38) -> torch.Tensor:
    g = torch.tensor([ratio ** (i - (n - 1) / 2) for i in range(n)])
    return g[:, None].repeat(1, channels)


def _version_of(t: torch.Tensor) -> int:
    """The in-place modification counter of ``t`` (-1 for inference tensors, which keep none)."""
    try:
        return t._version
    except RuntimeError:
        return -1


class RansWriter:
    """The symbols of several entropy models, in coding order, in one rANS stream (one flush): a picture
    costs one flush and one size field however many latents it has. The decoder reads them back in the
    same order with :class:`RansReader`."""

    def __init__(self):
        self._enc = BufferedRansEncoder()

    def put(self, model: EntropyModel, symbols: torch.Tensor, indexes: torch.Tensor) -> None:
        self._enc.encode_with_indexes(symbols.reshape(-1).int().tolist(), indexes.reshape(-1).int().tolist(),
                                      *_tables(model))

    def put_with_tables(self, symbols: list[int], indexes: list[int], tables: tuple[list, list, list]) -> None:
        """Symbols coded with explicit tables (``cdfs``, ``cdf_lengths``, ``offsets`` as lists)."""
        self._enc.encode_with_indexes(symbols, indexes, *tables)

    def flush(self) -> bytes:
        return self._enc.flush()


class RansReader:
    """Reads what a :class:`RansWriter` wrote, model by model, in the same order."""

    def __init__(self, data: bytes):
        self._dec = RansDecoder()
        self._dec.set_stream(data)

    def get(self, model: EntropyModel, indexes: torch.Tensor) -> torch.Tensor:
        """The integer symbols (as float32, shaped like ``indexes``)."""
        values = self._dec.decode_stream(indexes.reshape(-1).int().tolist(), *_tables(model))
        return torch.tensor(values, dtype=torch.float32, device=indexes.device).reshape(indexes.shape)

    def get_with_tables(self, indexes: list[int], tables: tuple[list, list, list]) -> list[int]:
        """Inverse of :meth:`RansWriter.put_with_tables`, for the next ``len(indexes)`` symbols."""
        return self._dec.decode_stream(indexes, *tables)


def _tables(model: EntropyModel) -> tuple[list, list, list]:
    return (model._quantized_cdf.tolist(), model._cdf_length.reshape(-1).int().tolist(),
            model._offset.reshape(-1).int().tolist())


def _medians(eb: EntropyBottleneck) -> torch.Tensor:
    return eb._get_medians().detach().view(1, -1, 1, 1)


def put_factorized(w: RansWriter, eb: EntropyBottleneck, x: torch.Tensor, first: int = 0,
                   region: torch.Tensor | None = None) -> torch.Tensor:
    """Code ``x`` (1, C, H, W) with the factorized prior ``eb`` (symbols around its medians, as
    ``EntropyBottleneck.compress`` does), channel c of ``x`` by channel ``first + c`` of ``eb``; returns the
    dequantized values the decoder will get. With ``region`` (H, W booleans) only the samples it sets are
    coded (all channels, in the same order); the others are symbol 0 (the medians)."""
    c = x.size(1)
    med = _medians(eb)[:, first:first + c]
    symbols = torch.round(x - med)
    indexes = eb._build_indexes(x.size()) + first
    if region is None:
        w.put(eb, symbols, indexes)
    else:
        symbols = symbols * region.to(symbols.device)
        w.put(eb, symbols[..., region.to(symbols.device)], indexes[..., region.to(indexes.device)])
    return symbols + med


def get_factorized(r: RansReader, eb: EntropyBottleneck, shape: tuple[int, int], channels: int | None = None,
                   first: int = 0, region: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of :func:`put_factorized` for a (1, ``channels``, *shape) tensor (default: all of ``eb``'s)."""
    c = eb._quantized_cdf.size(0) if channels is None else channels
    indexes = eb._build_indexes((1, c, *shape)) + first
    med = _medians(eb)[:, first:first + c]
    if region is None:
        return r.get(eb, indexes) + med
    symbols = torch.zeros(indexes.shape, device=med.device)
    symbols[..., region.to(med.device)] = r.get(eb, indexes[..., region.to(indexes.device)]).to(med.device)
    return symbols + med


def _grouped_likelihoods(eb: EntropyBottleneck, x: torch.Tensor, q: torch.Tensor, training: bool | None = None,
                         rounded: bool = False):
    """Likelihoods of ``x`` (B, C, H, W) under channels C*q[b] .. C*q[b]+C-1 of ``eb``, item by item (one prior
    per quality level); ``training`` as for ``EntropyBottleneck.forward``. With ``rounded``, ``x`` is already
    on the coder's grid (e.g. rounded straight through) and the likelihoods of its bins stay differentiable
    in ``x`` (``forward`` would round again and cut the gradient)."""
    b, c, h, w = x.shape
    idx = (c * q.view(-1, 1) + torch.arange(c, device=q.device)).view(b, c, 1, 1).expand(b, c, h, w)
    full = x.new_zeros((b, eb.channels, h, w), dtype=torch.float32).scatter(1, idx, x.float())
    if rounded:  # EntropyBottleneck.forward's layout: (C, 1, N)
        lik = eb._likelihood(full.permute(1, 0, 2, 3).reshape(eb.channels, 1, -1))[0]
        lik = eb.likelihood_lower_bound(lik).reshape(eb.channels, b, h, w).permute(1, 0, 2, 3)
    else:
        _, lik = eb(full, training=training)
    return lik.gather(1, idx)


def _round_ste(x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to the integer grid offset by ``centre``, with a straight-through gradient."""
    return x + (torch.round(x - centre) + centre - x).detach()


def _expand(region: torch.Tensor, k: int) -> torch.Tensor:
    """The region grid of ẑ samples (Hz, Wz) spread over a grid ``k`` times finer in each direction (4: the
    samples of ŷ)."""
    return region.repeat_interleave(k, 0).repeat_interleave(k, 1)


#: The scale table's step in the log: ``scale_table()`` is geometric, one index up multiplies the scale by
#: exp(SCALE_STEP)
SCALE_STEP = math.log(SCALES_MAX / SCALES_MIN) / (SCALES_LEVELS - 1)


def anchor_mask(h: int, w: int, device=None) -> torch.Tensor:
    """The checkerboard's anchors on an (h, w) grid of ŷ: the samples (i, j) with i + j even (coded first,
    by the hyperprior alone); the others are coded second, given the anchors (:class:`CheckerboardContext`)."""
    i, j = torch.arange(h, device=device), torch.arange(w, device=device)
    return (i[:, None] + j[None]) % 2 == 0


def _put(w: RansWriter, gc: GaussianConditional, symbols: torch.Tensor, indexes: torch.Tensor, where: torch.Tensor):
    """Code the samples of ``symbols`` (1, C, H, W) that ``where`` (H, W) sets: channel by channel, each in
    raster order."""
    if bool(where.any()):
        w.put(gc, symbols[..., where], indexes[..., where])


def _get(r: RansReader, gc: GaussianConditional, symbols: torch.Tensor, indexes: torch.Tensor, where: torch.Tensor):
    """Inverse of :func:`_put`: reads into ``symbols`` in place."""
    if bool(where.any()):
        symbols[..., where] = r.get(gc, indexes[..., where]).to(symbols.device)


class CheckerboardContext(nn.Module):
    """A checkerboard context for the non-anchor half of ŷ (He et al., "Checkerboard context model for
    efficient learned image compression", CVPR 2021), made cheap and exact: it refines the hyperprior's
    parameters rather than replacing them, and it sees integers only.

    From the anchors' symbols (``round(y' - mean)``, zero elsewhere, clamped to ±:attr:`SYMBOL_CLAMP`) and
    the hyperprior's scale indexes (divided by 8) it predicts, for every non-anchor sample, a mean shift
    (added to the hyperprior's mean) and a log-scale offset in [-2, 1] (times 8: an offset of the scale
    index, rounded; :attr:`OFFSETS` bounds it). The coder runs its exact fixed-point twin
    (:class:`~lvcodec.intnet.IntegerNetwork`), so the decoder rebuilds the same parameters on every machine.

    It is fitted after training, with the transforms, ``h_s`` and ``scale_calib`` frozen
    (:mod:`lvcodec.train.context`). Its last layer starts at zero: an unfitted context changes nothing but
    the coding order."""

    SYMBOL_CLAMP = 32
    INDEX_UNIT = 8  # the second half of the output times 8 is the scale-index offset
    OFFSETS = (-16, 8)  # = the log-scale range [-2, 1] in index steps

    def __init__(self, M: int, hidden: int = 64):
        super().__init__()
        self.M = M
        self.net = nn.Sequential(nn.Conv2d(2 * M, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 1),
                                 nn.ReLU(), nn.Conv2d(hidden, 2 * M, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, anchors: torch.Tensor, indexes: torch.Tensor):
        """Float (training) version: mean shifts and continuous scale-index offsets, both (B, M, H, W)."""
        c = self.SYMBOL_CLAMP
        inp = torch.cat((anchors.clamp(-c, c), indexes.float() / self.INDEX_UNIT), 1)
        delta, t = self.net(inp).chunk(2, 1)
        lo, hi = self.OFFSETS
        return delta, (t * self.INDEX_UNIT).clamp(lo, hi)

    def integer(self) -> IntegerNetwork:
        """The exact fixed-point twin of :attr:`net` (inputs: the anchors' symbols, then the scale indexes)."""
        scale = torch.cat((torch.ones(self.M), torch.full((self.M,), 1.0 / self.INDEX_UNIT)))
        return IntegerNetwork(self.net, torch.zeros(2 * self.M), scale, in_bound=SCALES_LEVELS)

    def exact(self, net: IntegerNetwork, anchors: torch.Tensor, indexes: torch.Tensor):
        """The coder's version with ``net`` = :meth:`integer`: mean shifts (float32) and integer
        scale-index offsets, bit-identical everywhere (the symbols clamped, the offsets times 8 (exact),
        clamped and rounded, all elementwise)."""
        c = self.SYMBOL_CLAMP
        delta, t = net(torch.cat((anchors.clamp(-c, c), indexes.float()), 1)).chunk(2, 1)
        lo, hi = self.OFFSETS
        return delta, torch.round((t * self.INDEX_UNIT).clamp(lo, hi)).int()


class _GainedHyperprior(CompressionModel):
    """Shared hyperprior, gains and coding logic; subclasses give the analysis and synthesis."""

    downsampling = 64  # luma pixels per hyper-latent sample: the frame is padded to this multiple

    def __init__(self, N: int = 96, M: int = 128, Nz: int = 96, qualities: int = NUM_QUALITIES):
        super().__init__()
        self.N, self.M, self.Nz = N, M, Nz
        # one prior of ẑ per quality level (channels Nz*q .. Nz*q+Nz-1): ẑ's statistics change with the gains
        self.entropy_bottleneck = EntropyBottleneck(Nz * qualities)
        self.gaussian_conditional = GaussianConditional(None)
        self.h_a = nn.Sequential(
            conv(M, Nz, 3, 1), nn.LeakyReLU(inplace=True),
            conv(Nz, Nz, 5, 2), nn.LeakyReLU(inplace=True),
            conv(Nz, Nz, 5, 2),
        )
        self.h_s = nn.Sequential(
            deconv(Nz, M, 5, 2), nn.LeakyReLU(inplace=True),
            deconv(M, M * 3 // 2, 5, 2), nn.LeakyReLU(inplace=True),
            conv(M * 3 // 2, M * 2, 3, 1),
        )
        self.gain = nn.Parameter(_gain_init(qualities, M))
        self.inv_gain = nn.Parameter(1.0 / _gain_init(qualities, M))
        self.zgain = nn.Parameter(_gain_init(qualities, Nz, 1.15))
        self.inv_zgain = nn.Parameter(1.0 / _gain_init(qualities, Nz, 1.15))
        # a factor per quality and channel on the scales of ŷ' that the coder uses (and the encoder's search
        # prices by), fitted after training to the symbols the encoder codes (lvcodec.train.priors): the
        # uniform noise of training widens the scales that rounding needs; training itself ignores it
        self.register_buffer("scale_calib", torch.ones(qualities, M))
        self.context = CheckerboardContext(M)

    # -- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def _g(table: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return table[q][:, :, None, None]

    def z_medians(self, q: torch.Tensor | int) -> torch.Tensor:
        """Medians of ẑ' at quality index ``q``: (Nz,) for an int, (B, Nz, 1, 1) for a (B,) tensor."""
        med = self.entropy_bottleneck._get_medians().detach().view(-1, self.Nz)
        return med[q] if isinstance(q, int) else med[q][:, :, None, None]

    def _z_likelihoods(self, z_g: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Training-time likelihoods of ẑ' (uniform noise) under the prior of each item's quality."""
        return _grouped_likelihoods(self.entropy_bottleneck, z_g, q)

    def _params(self, z_hat: torch.Tensor, q: torch.Tensor, calibrated: bool = False):
        means, scales = self.h_s(z_hat).chunk(2, 1)
        g = self._g(self.gain, q)
        scales = scales.abs() * g  # parameters of the gained latent y' = y * gain
        return means * g, scales * self._g(self.scale_calib, q) if calibrated else scales

    def _code(self, y: torch.Tensor, q: torch.Tensor):
        """Training-time quantization: noise for the rates, straight-through rounding for ŷ."""
        y_g = y * self._g(self.gain, q)
        z = self.h_a(y_g)
        z_g = z * self._g(self.zgain, q)
        z_lik = self._z_likelihoods(z_g, q)
        # straight-through rounding of z around the medians for the hyper-synthesis
        z_hat = _round_ste(z_g, self.z_medians(q)) * self._g(self.inv_zgain, q)
        means, scales = self._params(z_hat, q)
        _, y_lik = self.gaussian_conditional(y_g, scales, means=means)
        y_g_hat = _round_ste(y_g, means)
        y_hat = y_g_hat * self._g(self.inv_gain, q)
        return y_hat, {"y": y_lik, "z": z_lik}

    def _integer(self, name: str, q: int | None, device: torch.device, src: list[torch.Tensor], build) -> IntegerNetwork:
        """The exact fixed-point network ``name`` (for quality index ``q``, or None), ``build()`` on first use
        and rebuilt whenever a tensor of ``src`` it derives from changes (``load_state_dict``, ``update``, an
        optimizer step or ``.to()`` all change data or version)."""
        key = (name, q, str(device), tuple((t.data_ptr(), _version_of(t)) for t in src))
        cache = self.__dict__.setdefault("_integer_cache", {})
        if key not in cache:
            for k in [k for k in cache if k[0] == name and k[3] != key[3]]:
                del cache[k]  # built from stale weights
            cache[key] = build().to(device)
        return cache[key]

    def _int_h_s(self, q: int, device: torch.device) -> IntegerNetwork:
        """The exact fixed-point ``h_s`` for quality index ``q`` (its first layer folds the medians of ẑ and
        ``inv_zgain[q]``)."""
        src = [*self.h_s.parameters(), self.entropy_bottleneck.quantiles, self.inv_zgain]
        return self._integer("h_s", q, device, src,
                             lambda: IntegerNetwork(self.h_s, self.z_medians(q), self.inv_zgain[q]))

    def _int_context(self, device: torch.device) -> IntegerNetwork:
        """The exact fixed-point checkerboard context net."""
        return self._integer("context", None, device, list(self.context.parameters()), self.context.integer)

    def _params_exact(self, z_g_hat: torch.Tensor, q: int):
        """Entropy parameters of y' from the decoded ẑ' (= symbols + medians), bit-identical everywhere:
        the symbols are recovered exactly, ``h_s`` runs in exact fixed point, the rest is elementwise."""
        z_med = self.z_medians(q).view(1, -1, 1, 1)
        symbols = torch.round(z_g_hat - z_med)  # exact: z_g_hat = float(symbols) + medians, |symbols| << 2^22
        means, scales = self._int_h_s(q, z_g_hat.device)(symbols).chunk(2, 1)
        qt = self._qt(z_g_hat, q)
        g = self._g(self.gain, qt)
        return means * g, scales.abs() * g * self._g(self.scale_calib, qt)

    def _put_latent(self, w: RansWriter, y: torch.Tensor, q: int, region: torch.Tensor | None = None,
                    bits: dict | None = None) -> torch.Tensor:
        """Code the latent ``y`` (ẑ, then ŷ given ẑ) into ``w``; returns ŷ exactly as the decoder gets it.
        ŷ goes in two passes: its anchors (:func:`anchor_mask`) with the hyperprior's parameters, then the
        other samples with the parameters the checkerboard context refines from the anchors.
        With ``region`` (a boolean (Hz, Wz) grid, one per sample of ẑ) only the samples of ẑ it sets and the
        4x4 samples of ŷ under each are coded; the others are symbol 0 (ẑ its median, ŷ its mean). With
        ``bits``, puts there the estimated bits of every sample of ẑ (``"z"``, (1, 1, Hz, Wz)) and of ŷ
        (``"y"``, (1, 1, Hy, Wy)), summed over channels, from the probabilities of their symbols."""
        qt = self._qt(y, q)
        y_g = y * self._g(self.gain, qt)
        z_g = self.h_a(y_g) * self._g(self.zgain, qt)
        z_g_hat = put_factorized(w, self.entropy_bottleneck, z_g, first=self.Nz * q, region=region)
        means, scales = self._params_exact(z_g_hat, q)
        gc = self.gaussian_conditional
        indexes = gc.build_indexes(scales)
        sel, anchors = self._coded_samples(y_g.shape[-2:], region, y_g.device)
        first = sel & anchors
        symbols = torch.round(y_g - means) * first
        _put(w, gc, symbols, indexes, first)
        means, indexes = self._refined(symbols, means, indexes, anchors)
        second = sel & ~anchors
        symbols = torch.where(anchors, symbols, torch.round(y_g - means) * second)
        _put(w, gc, symbols, indexes, second)
        if bits is not None:
            z_lik = _grouped_likelihoods(self.entropy_bottleneck, z_g_hat, qt, rounded=True)
            table = gc.scale_table.to(indexes.device)[indexes.long()]
            y_lik = gc.likelihood_lower_bound(gc._likelihood(symbols, table))
            bits["z"] = -torch.log2(z_lik).sum(1, keepdim=True)
            bits["y"] = -torch.log2(y_lik).sum(1, keepdim=True)
        # ŷ' = symbols + means, the same elementwise sum the decoder computes
        return (symbols + means) * self._g(self.inv_gain, qt)

    @staticmethod
    def _coded_samples(shape, region: torch.Tensor | None, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples of ŷ the stream codes (all, or those under ``region``) and the checkerboard's anchors."""
        sel = (torch.ones(tuple(shape), dtype=torch.bool, device=device) if region is None
               else _expand(region.to(device), 4))
        return sel, anchor_mask(*shape, device=device)

    def _refined(self, first: torch.Tensor, means: torch.Tensor, indexes: torch.Tensor, anchors: torch.Tensor):
        """The means and scale indexes of ŷ' for its second pass: the hyperprior's at the anchors, refined by
        the checkerboard context elsewhere, from ``first`` (the anchors' symbols, zero elsewhere)."""
        delta, offset = self.context.exact(self._int_context(means.device), first, indexes)
        means = torch.where(anchors, means, means + delta)
        indexes = torch.where(anchors, indexes, (indexes + offset).clamp(0, SCALES_LEVELS - 1).to(indexes.dtype))
        return means, indexes

    def _get_latent(self, r: RansReader, shape: tuple[int, int], q: int, region: torch.Tensor | None = None) -> torch.Tensor:
        """Inverse of :meth:`_put_latent`: ŷ from the stream, ``shape`` the size of ẑ."""
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        z_g_hat = get_factorized(r, eb, shape, channels=self.Nz, first=self.Nz * q, region=region)
        means, scales = self._params_exact(z_g_hat, q)
        indexes = gc.build_indexes(scales)
        sel, anchors = self._coded_samples(scales.shape[-2:], region, scales.device)
        symbols = torch.zeros(scales.shape, device=scales.device)
        _get(r, gc, symbols, indexes, sel & anchors)
        means, indexes = self._refined(symbols, means, indexes, anchors)
        _get(r, gc, symbols, indexes, sel & ~anchors)
        return (symbols + means) * self._g(self.inv_gain, self._qt(symbols, q))

    def _rd_cost(self, y_g: torch.Tensor, q: int, distortion) -> torch.Tensor:
        """λ[q]·255²·distortion + bits per luma pixel of the gained latent ``y_g``, with straight-through
        rounding of ẑ and ŷ and the discrete likelihoods the coder uses (differentiable in ``y_g``); the
        non-anchor half of ŷ is rounded and priced with the parameters the (float) checkerboard context
        refines from the anchors, as the coder codes it."""
        qt, gc = self._qt(y_g, q), self.gaussian_conditional
        z_hat = _round_ste(self.h_a(y_g) * self._g(self.zgain, qt), self.z_medians(qt))
        z_lik = _grouped_likelihoods(self.entropy_bottleneck, z_hat, qt, rounded=True)
        means, scales = self._params(z_hat * self._g(self.inv_zgain, qt), qt, calibrated=True)
        anchors = anchor_mask(*y_g.shape[-2:], device=y_g.device)
        first = (_round_ste(y_g, means) - means) * anchors  # the anchors' symbols
        delta, offset = self.context(first, gc.build_indexes(scales))
        means = torch.where(anchors, means, means + delta)
        scales = torch.where(anchors, scales, scales * torch.exp(SCALE_STEP * offset))
        y_hat = _round_ste(y_g, means)
        y_lik = gc.likelihood_lower_bound(gc._likelihood(y_hat, scales, means))
        bits = -(torch.log2(y_lik).sum() + torch.log2(z_lik).sum())
        pixels = y_g.shape[-2] * y_g.shape[-1] * 256  # ŷ is at 1/16 of the luma resolution
        return LAMBDAS[q] * 255**2 * distortion(y_hat * self._g(self.inv_gain, qt)) + bits / pixels

    def refine_latent(self, y: torch.Tensor, q: int, distortion, steps: int, lr: float | None = None,
                      decay: float = REFINE_DECAY) -> torch.Tensor:
        """Encoder-side search the decoder never pays for: ``steps`` Adam steps on the latent ``y`` (batch of 1)
        lowering the rate-distortion cost of quality index ``q`` (:meth:`_rd_cost`); ``distortion(ŷ)`` is the
        distortion of the picture synthesised from ŷ. Steps are in units of the quantization bin (the
        gained latent); the learning rate (by default :data:`REFINE_LRS` of ``q``) decays by ``decay`` per
        step. Returns the latent of the lowest cost seen on the way (the rounding makes the cost jump, so the
        last step is not always the best): ``y`` itself when no step lowered it."""
        g = self.gain[q].view(1, -1, 1, 1).detach()
        y_g = (y.detach() * g).requires_grad_(True)
        opt = torch.optim.Adam([y_g], lr=REFINE_LRS[q] if lr is None else lr)
        best_cost, best = math.inf, None
        with torch.enable_grad():
            for step in range(steps + 1):
                cost = self._rd_cost(y_g, q, distortion)
                if cost.item() < best_cost:
                    best_cost, best = cost.item(), (y_g.detach().clone() if step else None)
                if step == steps:
                    break
                (y_g.grad,) = torch.autograd.grad(cost, [y_g])
                opt.step()
                for group in opt.param_groups:
                    group["lr"] *= decay
        return y if best is None else best / g

    @staticmethod
    def _qt(x: torch.Tensor, q: int) -> torch.Tensor:
        return torch.full((x.shape[0],), q, dtype=torch.long, device=x.device)

    def update(self, scale_table_=None, force: bool = False, update_quantiles: bool = False) -> bool:
        self.__dict__.pop("_integer_cache", None)
        return super().update(scale_table=scale_table() if scale_table_ is None else scale_table_,
                              force=force, update_quantiles=update_quantiles)


def fitted_after_training(name: str) -> bool:
    """Whether the parameter ``name`` is fitted after training (the checkerboard context,
    :mod:`lvcodec.train.context`) rather than trained: the training loss never uses it."""
    return name.startswith("context.")


def upgrade_state(model: nn.Module, state: dict) -> dict:
    """``state`` with the shared (one quality) priors of older weights repeated for every quality level, as
    ``model`` (one prior per quality for ẑ and for the vectors) expects, the generic vector context tables
    and unit scale factors (``scale_calib``) where ``state`` has none; other entries are left as they are."""
    own = model.state_dict()
    out = dict(state)
    if "scale_calib" in own and "scale_calib" not in state:  # weights from before the fitted scales: none
        out["scale_calib"] = torch.ones_like(own["scale_calib"])
    for k in own:  # weights from before the checkerboard context: an unfitted one (its last layer zero)
        if k.startswith("context.") and k not in state:
            out[k] = own[k]
    if "mv_cdf" in own and "mv_cdf" not in state:  # weights from before the vector contexts: generic tables
        out["mv_cdf"] = own["mv_cdf"]
    for prefix in ("entropy_bottleneck.", "mv_entropy."):
        key = prefix + "quantiles"
        if key not in state or key not in own or state[key].shape == own[key].shape:
            continue
        old, new = state[key].shape[0], own[key].shape[0]
        if new % old:
            continue
        for k, v in state.items():
            if k.startswith(prefix) and not k.endswith("target") and v.dim() and v.shape[0] == old:
                out[k] = v.repeat(new // old, *([1] * (v.dim() - 1)))
    return out


def _analysis(cin: int, N: int, M: int) -> nn.Sequential:
    return nn.Sequential(
        conv(cin, N, 5, 2), GDN(N),
        conv(N, N, 5, 2), GDN(N),
        conv(N, N, 5, 2), GDN(N),
        conv(N, M, 3, 1),
    )


def _synthesis(M: int, N: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        conv(M, N, 3, 1), GDN(N, inverse=True),
        deconv(N, N, 5, 2), GDN(N, inverse=True),
        deconv(N, N, 5, 2), GDN(N, inverse=True),
        deconv(N, cout, 5, 2),
    )


_PLANES = (slice(0, 4), slice(4, 5), slice(5, 6))  # luma (4 sub-pixel channels), U, V of the 6-channel layout


def _best_field(x: torch.Tensor, ref: torch.Tensor, mv: torch.Tensor, fields: tuple[str, ...]) -> tuple[str, torch.Tensor]:
    """The motion field among ``fields`` (of :data:`lvcodec.motion.FIELDS`) whose prediction of the picture
    ``x`` from ``ref`` with the vectors ``mv`` has the lowest MSE-YUV (the first on ties), and that
    prediction; a single field is not compared."""
    from . import motion

    preds = [(motion.compensate(ref, mv, field=f), f) for f in fields]
    pred, field = preds[0] if len(preds) == 1 else min(preds, key=lambda pf: mse_yuv(pf[0], x).item())
    return field, pred


def _fields_for(block: int, fields: tuple[str, ...]) -> tuple[str, ...]:
    """The motion fields among ``fields`` that a P-frame can use with ``block`` x ``block`` blocks."""
    return tuple(f for f in fields if mvcoding.has_mode(block, f))


def _plane_mask(x_syn: torch.Tensor, pred: torch.Tensor, x: torch.Tensor) -> int:
    """Bit ``i`` set where plane ``i`` of the prediction is closer to ``x`` than the synthesis (MSE)."""
    mask = 0
    for i, sl in enumerate(_PLANES):
        if (pred[:, sl] - x[:, sl]).square().mean() < (x_syn[:, sl].clamp(0, 1) - x[:, sl]).square().mean():
            mask |= 1 << i
    return mask


def _compose(x_syn: torch.Tensor, pred: torch.Tensor, mask: int) -> torch.Tensor:
    """The synthesis with the planes of ``mask`` replaced by the prediction's."""
    if not mask:
        return x_syn
    out = x_syn.clone()
    for i, sl in enumerate(_PLANES):
        if mask >> i & 1:
            out[:, sl] = pred[:, sl]
    return out


def _coded(out: dict) -> dict:
    """A coding of :meth:`InterModel._code_picture` as :meth:`InterModel.compress` and ``encode`` return it:
    the decoded picture as ``x_hat``, without the encoder's working entries."""
    out["x_hat"] = out.pop("x_syn")
    for key in ("y", "y_hat", "pred", "bits"):
        del out[key]
    return out


#: layout samples (half the luma resolution) per side of a region of a MASKED P-frame: 64x64 luma, one
#: sample of ẑ
REGION = 32


def _spread(region: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The region grid (Hz, Wz) as a (1, 1, H, W) mask over the layout-resolution picture ``like``."""
    return _expand(region.to(like.device), REGION)[None, None]


def _region_errors(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """MSE-YUV of ``a`` against ``x`` split by region (1, 1, Hz, Wz): the regions' values sum to
    ``mse_yuv(a, x)``."""
    d = (a.clamp(0, 1) - x) ** 2
    e = (6 * d[:, :4].mean(1, keepdim=True) + d[:, 4:5] + d[:, 5:6]) / 8
    return F.avg_pool2d(e, REGION) * (REGION * REGION / e[0, 0].numel())


@contextlib.contextmanager
def _one_thread(x: torch.Tensor):
    """Run the pixel synthesis of ``compress``/``decompress`` on one CPU thread: oneDNN and MKL split some
    reductions (GDN's 1x1 convolution, transposed convolutions, convolutions with few output channels)
    across threads, so their float results depend on the thread count, and a P-frame chain would drift
    between an encoder and a decoder that use different counts. One thread fixes the summation order."""
    n = torch.get_num_threads()
    if x.device.type != "cpu" or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# The exact pixel synthesis runs in two horizontal bands at once, one per Python thread, each on one
# intra-op thread (so the result still does not depend on the thread count: the split depends only on
# the picture's size). Each band is computed with BAND_HALO latent rows of the other band around the cut:
# the synthesis (g_s, then fuse for P-frames) sees at most 3.2 latent rows either side, so every kept row
# is the one a whole-picture synthesis computes (tests/test_determinism.py checks it is bit-identical here).
BAND_HALO = 4
_LAYOUT_PER_LATENT = 8  # rows of the 6-channel layout per latent row (three stride-2 stages)


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """The worker that computes the bottom band (made on first use)."""
    return ThreadPoolExecutor(1, thread_name_prefix="lvc-band")


def synthesize(fn, y_hat: torch.Tensor, *beside: torch.Tensor) -> torch.Tensor:
    """``fn(y_hat, *beside)`` as the decoder computes it: on one intra-op thread (:func:`_one_thread`),
    and on a CPU, for pictures of at least ``4 * BAND_HALO`` latent rows, as two horizontal bands computed
    at once (the top one on this thread, the bottom one on a worker), about 1.5x faster on two cores.
    ``beside`` are layout-resolution inputs (the prediction), cut into the same bands."""
    rows = y_hat.shape[2]
    if y_hat.device.type != "cpu" or rows < 4 * BAND_HALO:
        with _one_thread(y_hat):
            return fn(y_hat, *beside)
    k, grad = _LAYOUT_PER_LATENT, torch.is_grad_enabled()

    def band(lo: int, hi: int) -> torch.Tensor:
        a, b = max(lo - BAND_HALO, 0), min(hi + BAND_HALO, rows)
        torch.set_num_threads(1)  # also sets this thread's OpenMP count, which a worker does not inherit
        with torch.set_grad_enabled(grad):  # grad mode is per thread
            out = fn(y_hat[:, :, a:b], *(t[:, :, a * k:b * k] for t in beside))
        return out[:, :, (lo - a) * k:(hi - a) * k]

    mid = rows // 2
    with _one_thread(y_hat):
        bottom = _pool().submit(band, mid, rows)
        top = band(0, mid)
        return torch.cat((top, bottom.result()), 2)


class IntraModel(_GainedHyperprior):
    """I-frame model: a variable-rate mean-scale hyperprior on the 6-channel 4:2:0 layout."""

    def __init__(self, N: int = 96, M: int = 128, Nz: int = 96, qualities: int = NUM_QUALITIES):
        super().__init__(N, M, Nz, qualities)
        self.g_a = _analysis(6, N, M)
        self.g_s = _synthesis(M, N, 6)

    def forward(self, x: torch.Tensor, q: torch.Tensor):
        y_hat, lik = self._code(self.g_a(x), q)
        return {"x_hat": self.g_s(y_hat), "likelihoods": lik}

    def _reconstruct(self, y_hat: torch.Tensor) -> torch.Tensor:
        return synthesize(self.g_s, y_hat)

    @torch.no_grad()
    def compress(self, x: torch.Tensor, q: int, refine: int = 0):
        """Code one picture (batch of 1) at quality index ``q``: ``strings`` is ``[stream]``, one rANS
        stream holding ẑ then ŷ; ``x_hat`` is exactly what :meth:`decompress` returns. With ``refine`` > 0
        the latent is also refined by that many gradient steps (:meth:`refine_latent`), and whichever of
        the two codings has the lower actual cost (λ·255²·MSE + real bits per pixel) is kept."""
        y = self.g_a(x)
        candidates = [y]
        if refine:
            refined = self.refine_latent(y, q, lambda y_hat: mse_yuv(self.g_s(y_hat), x).sum(), refine)
            if refined is not y:  # no step lowered the cost: nothing else to code
                candidates.append(refined)
        best = None
        for y in candidates:
            w = RansWriter()
            x_hat = self._reconstruct(self._put_latent(w, y, q))
            data = w.flush()
            cost = coded_cost(x_hat, x, data, q)
            if best is None or cost < best[0]:
                best = (cost, data, x_hat)
        shape = (x.shape[-2] // 32, x.shape[-1] // 32)
        return {"strings": [best[1]], "shape": shape, "x_hat": best[2]}

    @torch.no_grad()
    def decompress(self, strings, shape, q: int):
        return {"x_hat": self._reconstruct(self._get_latent(RansReader(strings[0]), shape, q))}


class InterModel(_GainedHyperprior):
    """P-frame model: conditional residual coding given the motion-compensated prediction."""

    def __init__(self, N: int = 96, M: int = 128, Nz: int = 96, qualities: int = NUM_QUALITIES, F: int = 48):
        super().__init__(N, M, Nz, qualities)
        self.g_a = _analysis(12, N, M)
        self.g_s = _synthesis(M, N, F)
        self.fuse = nn.Sequential(
            conv(F + 6, F, 3, 1), nn.LeakyReLU(inplace=True),
            conv(F, F, 3, 1), nn.LeakyReLU(inplace=True),
            conv(F, 6, 3, 1),
        )
        # one prior per quality level (channels 2q, 2q+1: x and y): the encoder's search keeps more of the
        # field on its prediction at low qualities, so a shared prior would overprice the zero residuals.
        # Training uses it to price the vectors; the coder uses the context tables below.
        self.mv_entropy = EntropyBottleneck(2 * qualities, init_scale=16)
        # range-coder tables of the vector residuals: mvcoding.CONTEXTS per quality level (fitted by
        # tools/fit_priors.py; generic until then)
        self.register_buffer("mv_cdf", mvcoding.quantized_cdfs(mvcoding.default_pmfs(qualities)))

    def set_vector_tables(self, pmfs) -> None:
        """Replace the vector tables by ones built from probabilities (qualities * CONTEXTS, 2*RANGE + 2)."""
        self.mv_cdf = mvcoding.quantized_cdfs(pmfs).to(self.mv_cdf.device)

    def _vector_tables(self, q: int) -> mvcoding.VectorTables:
        key = (q, self.mv_cdf.data_ptr(), _version_of(self.mv_cdf))
        cache = self.__dict__.setdefault("_mv_tables_cache", {})
        if key not in cache:
            cache.clear()
            cache[key] = mvcoding.VectorTables(self.mv_cdf[q * mvcoding.CONTEXTS:(q + 1) * mvcoding.CONTEXTS])
        return cache[key]

    def mv_likelihoods(self, mvd: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Likelihoods (B, 2, Hb, Wb) of the integer vector residuals ``mvd`` under the prior of each item's
        quality: the discrete probabilities the coder uses (the vectors come from a search, so there is
        no gradient to relax for; this trains the prior alone, by maximum likelihood)."""
        return _grouped_likelihoods(self.mv_entropy, mvd, q, training=False)

    def _synth(self, y_hat, pred):
        return pred + self.fuse(torch.cat((self.g_s(y_hat), pred), 1))

    def forward(self, x: torch.Tensor, pred: torch.Tensor, q: torch.Tensor, mvd: torch.Tensor | None = None):
        y_hat, lik = self._code(self.g_a(torch.cat((x - pred, pred), 1)), q)
        if mvd is not None:
            lik["mv"] = self.mv_likelihoods(mvd, q)
        return {"x_hat": self._synth(y_hat, pred), "likelihoods": lik}

    def _reconstruct(self, y_hat, pred, mask: int = 0, region: torch.Tensor | None = None):
        """The decoded picture: the synthesis from ŷ and the prediction, with the planes of ``mask`` (bit 0:
        luma, 1: U, 2: V) and the 64x64 regions ``region`` does not set taken from the prediction instead;
        all of it when the latent is skipped."""
        if y_hat is None:
            return pred
        if region is None:
            return _compose(synthesize(self._synth, y_hat, pred), pred, mask)
        # only the latent rows of the regions' rows are synthesised, with BAND_HALO rows of context either
        # side (as synthesize's bands): every kept row is the one a whole-picture synthesis computes
        rows = torch.nonzero(region.any(1)).flatten()
        lo, hi = int(rows[0]) * 4, (int(rows[-1]) + 1) * 4  # latent rows: 4 per sample of ẑ
        a, b, k = max(lo - BAND_HALO, 0), min(hi + BAND_HALO, y_hat.shape[2]), _LAYOUT_PER_LATENT
        part = synthesize(self._synth, y_hat[:, :, a:b], pred[:, :, a * k:b * k])
        x_syn = pred.clone()
        x_syn[:, :, lo * k:hi * k] = part[:, :, (lo - a) * k:(hi - a) * k]
        return _compose(torch.where(_spread(region, pred), x_syn, pred), pred, mask)

    @torch.no_grad()
    def compress(self, x: torch.Tensor, ref: torch.Tensor, mv: torch.Tensor, q: int, skip: bool = False,
                 field: str = "block", region: torch.Tensor | None = None):
        """Code one picture (batch of 1) given the decoded reference ``ref`` and the block vectors ``mv``
        the encoder chose (:func:`lvcodec.motion.search`, any block size of :data:`mvcoding.BLOCK_SIZES`,
        read off the shape of ``mv``), applied by the motion field ``field``: ``strings`` is ``[stream]``, one rANS stream holding the block size,
        the latent flag, the vector residuals, then (unless ``skip``) ẑ, ŷ and the plane mask; ``x_hat`` is
        exactly what :meth:`decompress` returns."""
        return _coded(self._code_picture(x, ref, mv, q, skip, field=field, region=region))

    def _code_picture(self, x, ref, mv, q, skip: bool = False, pred=None, field: str = "block",
                      region: torch.Tensor | None = None, y: torch.Tensor | None = None):
        """Code the picture with the vectors ``mv`` applied by the motion field ``field``: without the
        latent when ``skip``; with ``region`` (booleans, one per 64x64 luma region) the latent only in the
        regions it sets and the prediction elsewhere. Each plane whose synthesis is further from ``x``
        than the prediction is sent as the prediction (the plane mask). ``x_syn`` is the decoded picture,
        synthesised exactly as the decoder does; a latent over the whole picture also gives its estimated
        bits per sample of ẑ and ŷ (``bits``, for :meth:`_region`). ``y`` is the analysis of ``x`` given
        ``pred`` when the caller has it already."""
        from . import motion

        w = RansWriter()
        mvcoding.encode_block_size(w, 2 * x.shape[-1] // mv.shape[-1], field)
        mode = mvcoding.SKIP if skip else mvcoding.LATENT if region is None else mvcoding.MASKED
        mvcoding.encode_latent_flag(w, mode)
        mvcoding.encode(w, self._vector_tables(q), (mv - motion.mv_prediction(mv))[0].cpu().numpy())
        if pred is None:  # the same vectors and field: the same prediction
            pred = motion.compensate(ref, mv, field=field)
        y_hat, mask, x_syn, bits = None, mvcoding.ALL_PLANES, pred, None
        if not skip:
            if region is not None:
                mvcoding.encode_region_mask(w, region.cpu().numpy())
            else:
                bits = {}
            if y is None:
                y = self.g_a(torch.cat((x - pred, pred), 1))
            y_hat = self._put_latent(w, y, q, region, bits)
            x_syn = self._reconstruct(y_hat, pred, region=region)
            mask = _plane_mask(x_syn, pred, x)
            mvcoding.encode_plane_mask(w, mask)
            x_syn = _compose(x_syn, pred, mask)
        shape = (x.shape[-2] // 32, x.shape[-1] // 32)
        return {"strings": [w.flush()], "shape": shape, "mv": mv, "field": field, "skip": skip, "mask": mask,
                "region": region, "y": y, "y_hat": y_hat, "pred": pred, "x_syn": x_syn, "bits": bits}

    def _region(self, cand: dict, x: torch.Tensor, q: int) -> torch.Tensor | None:
        """The 64x64 regions where the latent of ``cand`` (coded over the whole picture) pays for itself:
        where λ·255² times the error it removes from the prediction exceeds its estimated bits (of ẑ's
        sample and ŷ's 4x4 samples there). None when that is every region or none (the whole latent or
        no latent is then the same choice)."""
        pixels = x[0, 0].numel() * 4
        saved = _region_errors(cand["pred"], x) - _region_errors(cand["x_syn"], x)
        bits = cand["bits"]["z"] + F.avg_pool2d(cand["bits"]["y"], 4) * 16
        region = (LAMBDAS[q] * 255**2 * saved - bits / pixels)[0, 0] > 0
        return None if bool(region.all()) or not bool(region.any()) else region

    def _masked(self, cand: dict, x: torch.Tensor, ref: torch.Tensor, q: int) -> dict | None:
        """``cand`` (a latent over the whole picture) coded again with the latent only where it pays
        (:meth:`_region`); None where no region mask is worth trying."""
        if cand["skip"] or cand["region"] is not None:
            return None
        region = self._region(cand, x, q)
        if region is None:
            return None
        return self._code_picture(x, ref, cand["mv"], q, pred=cand["pred"], field=cand["field"], region=region,
                                  y=cand["y"])

    @torch.no_grad()
    def encode(self, x: torch.Tensor, ref: torch.Tensor, q: int, lam: float,
               blocks: tuple[int, ...] = mvcoding.BLOCK_SIZES, skip: bool = True, decide: str = "coded",
               fields: tuple[str, ...] = ("block",), masked: bool = True):
        """Find the motion and code the picture (:meth:`compress`), choosing the motion block size among
        ``blocks`` and, with ``skip``, whether to send the latent at all (the prediction as the picture: at
        low rates the latent often buys less than it costs), and with ``masked``, whether to send it only
        in the 64x64 regions where it pays (:meth:`_region`; tried at the chosen block size), by the lowest
        actual cost (λ·255²·MSE + real bits per pixel). ``lam`` is the search's smoothness weight for 16x16 blocks
        (:func:`lvcodec.zoo.mv_lambda`); a block k times larger spreads its vector's bits over k² times the
        pixels, so it searches with ``lam / k``. Measured on training clips, larger blocks win at low rates
        and on smooth motion, small ones where the motion is detailed.

        ``fields`` are the motion fields (:data:`lvcodec.motion.FIELDS`) the encoder may use; with more than
        one, each block size takes the one whose prediction has the lower MSE-YUV. The default is the block
        field alone: on bench clips it beat that per-picture choice (MODEL_CARD.md).

        ``decide`` says how the block size is chosen:

        - ``"coded"``: the picture is coded once per block size (with and without the latent), from 16x16
          up, stopping at the first size that costs more than the one before; where no larger size pays,
          from 16x16 down likewise (8x8 blocks pay where the motion is detailed);
        - ``"estimate"``: every size is searched and ranked without synthesis (the costly part of a
          coding): the picture is coded with the latent only at the size of the fewest estimated bits
          (the vectors' real bits plus the latent's, from the entropy model's likelihoods of its rounded
          values) plus :data:`ESTIMATE_PREDICTION_WEIGHT` times the prediction's λ·255²·MSE (the latent
          corrects most of the prediction's error, not all), and without the latent at the size whose
          prediction costs least as the picture. On the bench clips 1.2-1.6x faster than ``"coded"``
          for +2.8 % BD-rate (MODEL_CARD.md)."""
        from . import motion

        if decide not in ("coded", "estimate"):
            raise ValueError(f'unknown block size decision "{decide}" (coded, estimate)')
        if decide == "estimate":
            est = [self._estimate(x, ref, block, q, lam, _fields_for(block, fields)) for block in blocks
                   if _fields_for(block, fields)]
            by_pred = min(est, key=lambda e: e["pred_distortion"] + e["mv_bits"])
            by_latent = min(est, key=lambda e: e["bits"] + ESTIMATE_PREDICTION_WEIGHT * e["pred_distortion"])
            cands = [self._code_picture(x, ref, by_latent["mv"], q, pred=by_latent["pred"], field=by_latent["field"])]
            if masked and (m := self._masked(cands[0], x, ref, q)) is not None:
                cands.append(m)
            if skip:
                cands.append(self._code_picture(x, ref, by_pred["mv"], q, skip=True, pred=by_pred["pred"],
                                                field=by_pred["field"]))
            # synthesised as the decoder does already
            return _coded(min(cands, key=lambda c: coded_cost(c["x_syn"], x, c["strings"][0], q)))

        def coded(block):
            mv = motion.search(x, ref, lam=lam * motion.BLOCK / block, block=block)
            field, pred = _best_field(x, ref, mv, _fields_for(block, fields))
            cands = [self._code_picture(x, ref, mv, q, pred=pred, field=field)]
            if skip:
                cands.append(self._code_picture(x, ref, mv, q, skip=True, pred=pred, field=field))
            cost, best = min(((coded_cost(c["x_syn"], x, c["strings"][0], q), c) for c in cands), key=lambda t: t[0])
            return cost, best, cands[0]

        # the cost falls then rises with the block size: from the first size of motion.BLOCK or more, go up
        # while the cost falls; where no larger size paid, go down from there while it falls
        def walk(best, order):
            moved = False
            for block in order:
                cand = coded(block)
                if cand[0] >= best[0]:
                    break
                best, moved = cand, True
            return best, moved

        sizes = sorted(b for b in blocks if _fields_for(b, fields))
        start = next((i for i, b in enumerate(sizes) if b >= motion.BLOCK), len(sizes) - 1)
        best, went_up = walk(coded(sizes[start]), sizes[start + 1:])
        if not went_up:
            best, _ = walk(best, reversed(sizes[:start]))
        out = best[1]
        # at the chosen block size, the latent only where it pays (one more synthesis)
        if masked and (m := self._masked(best[2], x, ref, q)) is not None:
            if coded_cost(m["x_syn"], x, m["strings"][0], q) < best[0]:
                out = m
        # every candidate was synthesised as the decoder does (in bands, as fast as one pass on all
        # threads), so the chosen one needs no second synthesis
        return _coded(out)

    def _estimate(self, x: torch.Tensor, ref: torch.Tensor, block: int, q: int, lam: float,
                  fields: tuple[str, ...] = ("block",)) -> dict:
        """The motion searched with ``block`` x ``block`` blocks (``mv``) and its prediction (``pred``), with
        what :meth:`encode` ranks block sizes by, in bits per luma pixel: the prediction's λ·255²·MSE
        (``pred_distortion``), the vectors' real bits (``mv_bits``; the block size and flag symbols cost the
        same for every size) and an estimate of the bits of the vectors and the latent together (``bits``:
        the latent's from the likelihoods of its rounded values, without synthesis or coding)."""
        from . import motion

        mv = motion.search(x, ref, lam=lam * motion.BLOCK / block, block=block)
        field, pred = _best_field(x, ref, mv, fields)
        w = RansWriter()
        mvcoding.encode(w, self._vector_tables(q), (mv - motion.mv_prediction(mv))[0].cpu().numpy())
        pixels = x[0, 0].numel() * 4
        mv_bits = len(w.flush()) * 8 / pixels
        _, lik = self._code(self.g_a(torch.cat((x - pred, pred), 1)), torch.tensor([q], device=x.device))
        latent_bits = sum(-torch.log2(v).sum().item() for v in lik.values()) / pixels
        return {"mv": mv, "field": field, "pred": pred,
                "pred_distortion": LAMBDAS[q] * 255**2 * mse_yuv(pred, x).item(),
                "mv_bits": mv_bits, "bits": mv_bits + latent_bits}

    @torch.no_grad()
    def decompress(self, strings, shape, ref: torch.Tensor, q: int):
        from . import motion

        r = RansReader(strings[0])
        block, field = mvcoding.decode_block_size(r)
        mode = mvcoding.decode_latent_flag(r)
        hb, wb = ref.shape[-2] * 2 // block, ref.shape[-1] * 2 // block
        mvd = mvcoding.decode(r, self._vector_tables(q), hb, wb)
        mv = torch.from_numpy(motion.mv_from_residual(mvd))[None].to(torch.int32).to(ref.device)
        pred = motion.compensate(ref, mv, field=field)
        if mode == mvcoding.SKIP:
            return {"x_hat": pred}
        region = None
        if mode == mvcoding.MASKED:
            region = torch.from_numpy(mvcoding.decode_region_mask(r, *shape))
        y_hat = self._get_latent(r, shape, q, region)
        return {"x_hat": self._reconstruct(y_hat, pred, mvcoding.decode_plane_mask(r), region)}
