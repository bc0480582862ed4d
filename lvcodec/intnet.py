"""Exact fixed-point inference for the networks that feed the entropy coder.

The entropy parameters of ŷ (means and scale indices) come from the hyper-synthesis ``h_s(ẑ)``. In
floating point, a convolution's sum is reduced in an order that depends on the library, the thread count
and the device, so the encoder and the decoder can compute slightly different values, a scale index can
flip, and the range decoder derails (CompressAI #279, #340). This module runs such a network *exactly*:
every machine computes the same bits.

Ballé, Johnston, Minnen, "Integer networks for data compression with latent-variable models", ICLR 2019,
train networks with integer arithmetic in the loop. Ours differs in two ways:

- **post-training**: the float network is trained as usual and turned into fixed point when the weights
  are loaded (deterministically: elementwise rounding of the float32 weights), so no retraining and no new
  weight files;
- **exact through float64**: each layer is computed with integer-valued operands carried in float64. An
  IEEE-754 double represents every integer below 2^53 exactly, and the product and sum of such integers
  are exact as long as every partial sum stays below 2^53 — then *any* summation order (threads, SIMD
  width, GEMM blocking, GPU reduction trees) gives the same result. :func:`_check_exact` proves the bound
  for each layer when it is built.

Fixed-point formats (``a_int = round(a * 2**F)``):

- the input is the integer symbol tensor of ẑ; the per-channel offset (the medians of the
  ``EntropyBottleneck``) and gain (``inv_zgain[q]``) are folded into the first layer: its input is
  ``s * 2**IN_FRAC + round(median * 2**IN_FRAC)`` and its weights are ``W * inv_zgain[q]``;
- weights are quantized per output channel with a power-of-two scale, ``|W_int| <= 2**WEIGHT_BITS``;
  biases sit at the accumulator's scale;
- activations between layers have ``ACT_FRAC`` fraction bits and are clamped to ``|a_int| < 2**ACT_BITS``
  (the shipped models' ``h_s`` activations stay below 12 in magnitude; the range holds 256).
  With these formats the fixed-point ``h_s`` is within about 1e-5 (relative to the largest output) of
  the float one;
- requantization and LeakyReLU use only elementwise operations on exact values (a power-of-two multiply,
  an integer multiply, ``torch.round``), which IEEE-754 defines to the bit on every platform.

Bound: every partial sum of an output is at most the sum of its terms' magnitudes, fan-in x max|W_int| x
max|a_int|, plus the bias (kept below ``2**(WEIGHT_BITS + ACT_BITS)``). The largest fan-in in lvc's ``h_s``
is its last layer's, 3x3 x 192 channels = 1728 < 2^11 (a 5x5 stride-2 transposed convolution adds only
3x3 taps per output: 9 x 128 = 1152), so ``|partial sum| <= 1728 * 2^18 * (2^24 - 1) + 2^42
< 7.7e15 < 2^53 = 9.0e15``.

On CUDA, cuDNN is switched off around these convolutions (no TF32, FFT or Winograd algorithms); PyTorch's
native float64 convolution is an im2col/col2im plus a float64 GEMM, whose products and sums are exact here.
Devices without float64 (MPS) compute on the CPU.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHT_BITS = 18  # |W_int| <= 2**18
ACT_BITS = 24  # |a_int| <= 2**24 - 1
ACT_FRAC = 16  # activations: 16 fraction bits (range +-256)
IN_FRAC = 16  # input: symbols + medians with 16 fraction bits (|symbol| up to 255, clamped beyond)
LEAKY_FRAC = 20  # LeakyReLU slope as an integer over 2**20
EXACT_LIMIT = 2**53


def _pow2(exponents: torch.Tensor) -> torch.Tensor:
    """Exact float64 powers of two (computed in Python, so no libm ``exp2`` is involved)."""
    return torch.tensor([math.ldexp(1.0, int(e)) for e in exponents.flatten().tolist()],
                        dtype=torch.float64).view(exponents.shape)


def _exponent_below(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Per element, the largest integer e with |x| * 2**e <= 2**bits (x == 0 gives a large e)."""
    _, k = torch.frexp(x.abs().double())  # |x| = m * 2**k, m in [0.5, 1)
    return torch.where(x == 0, torch.full_like(k, 1 << 10), bits - k)


class FixedPointConv:
    """One ``Conv2d`` / ``ConvTranspose2d`` in fixed point: integer weights and bias as float64 tensors.

    The input has ``in_frac`` fraction bits; the output accumulator of channel ``o`` has
    ``in_frac + exp[o]`` fraction bits, ``exp[o]`` being the weights' per-channel exponent.
    """

    def __init__(self, layer: nn.Conv2d | nn.ConvTranspose2d, in_frac: int, in_scale: torch.Tensor | None = None,
                 in_max: float = 2**ACT_BITS - 1):
        if layer.groups != 1 or layer.dilation != (1, 1):
            raise ValueError(f"unsupported layer {layer}: groups and dilation must be 1")
        self.transposed = isinstance(layer, nn.ConvTranspose2d)
        self.stride, self.padding = layer.stride, layer.padding
        self.output_padding = layer.output_padding if self.transposed else (0, 0)
        w = layer.weight.detach().double().cpu()  # float32 -> float64 is exact
        if in_scale is not None:  # fold a per-input-channel gain: float32 x float32 is exact in float64
            s = in_scale.detach().double().cpu()
            w = w * (s.view(-1, 1, 1, 1) if self.transposed else s.view(1, -1, 1, 1))
        out_dim = 1 if self.transposed else 0
        wmax = w.abs().amax(dim=[d for d in range(4) if d != out_dim])
        b = layer.bias.detach().double().cpu() if layer.bias is not None else torch.zeros_like(wmax)
        # largest power of two keeping the weights within WEIGHT_BITS and the bias within the bound
        exp = torch.minimum(_exponent_below(wmax, WEIGHT_BITS),
                            _exponent_below(b, WEIGHT_BITS + ACT_BITS) - in_frac)
        exp = torch.where(exp > 1000, torch.zeros_like(exp), exp)  # all-zero channel
        shape = [1, 1, 1, 1]
        shape[out_dim] = -1
        self.weight = torch.round(w * _pow2(exp).view(shape))
        self.bias = torch.round(b * _pow2(exp + in_frac))
        self.exp, self.in_frac = exp, in_frac
        # terms summed into one output: a transposed convolution's output sees only ceil(k / stride) taps
        # per dimension (the others fall between the input samples)
        kh, kw = self.weight.shape[2:]
        if self.transposed:
            kh, kw = -(-kh // self.stride[0]), -(-kw // self.stride[1])
        fan_in = self.weight.shape[0 if self.transposed else 1] * kh * kw
        _check_exact(fan_in, self.weight.abs().max().item(), in_max, self.bias.abs().max().item())

    def to(self, device) -> FixedPointConv:
        self.weight, self.bias = self.weight.to(device), self.bias.to(device)
        return self

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        """Integer accumulator (float64, exact) for the integer-valued float64 input ``a``."""
        with _exact_conv_mode(a.device):
            if self.transposed:
                return F.conv_transpose2d(a, self.weight, self.bias, self.stride, self.padding, self.output_padding)
            return F.conv2d(a, self.weight, self.bias, self.stride, self.padding)


def _check_exact(fan_in: int, w_max: float, a_max: float, b_max: float) -> None:
    """Every partial sum of a layer is bounded by fan_in * max|W| * max|a| + max|b|: keep it below 2^53."""
    bound = fan_in * w_max * a_max + b_max
    if bound >= EXACT_LIMIT:
        raise ValueError(f"fixed-point layer is not exact in float64: bound {bound:.3g} >= 2^53")


@contextlib.contextmanager
def _exact_conv_mode(device: torch.device):
    if device.type == "cuda":  # cuDNN could pick FFT-based algorithms; PyTorch's native path is im2col + GEMM
        with torch.backends.cudnn.flags(enabled=False):
            yield
    else:
        yield


def requantize(acc: torch.Tensor, shift: torch.Tensor, leaky_slope: float | None) -> torch.Tensor:
    """acc * 2**shift (per channel) rounded to an integer, then an optional fixed-point LeakyReLU and the
    activation clamp. Every step is an elementwise IEEE operation on exact values."""
    a = torch.round(acc * shift)
    if leaky_slope == 0.0:  # ReLU
        a = a.clamp(min=0.0)
    elif leaky_slope is not None:
        slope = float(round(leaky_slope * 2**LEAKY_FRAC))
        a = torch.where(a < 0, torch.round(a * slope * 2.0**-LEAKY_FRAC), a)  # |a * slope| < 2^24 * 2^14: exact
    lim = float(2**ACT_BITS - 1)
    return a.clamp(-lim, lim)


class IntegerNetwork:
    """A ``Sequential`` of Conv2d / ConvTranspose2d layers and (Leaky)ReLUs computed exactly in fixed point.

    ``net(symbols)`` takes the integer symbols ``s`` (any float dtype, integer-valued) of an input whose
    real value is ``(s + in_offset[c]) * in_scale[c]`` per channel and returns the float32 output of the
    float network's fixed-point twin, bit-identical on every platform.

    ``in_bound`` bounds ``|s + in_offset|`` (the input is clamped to it): the exactness bound of the first
    layer is proved for it rather than for the full activation range, which lets a first layer with a
    large fan-in (the checkerboard context's 3x3 x 256 = 2304) stay exact for small inputs.
    """

    def __init__(self, seq: nn.Sequential, in_offset: torch.Tensor, in_scale: torch.Tensor | None = None,
                 in_bound: float | None = None):
        self.layers: list[FixedPointConv] = []
        self.slopes: list[float | None] = []
        lim = 2**ACT_BITS - 1
        self.in_limit = float(lim if in_bound is None else min(lim, in_bound * 2**IN_FRAC))
        frac = IN_FRAC
        for m in seq:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                first = not self.layers
                self.layers.append(FixedPointConv(m, frac, in_scale if first else None,
                                                  self.in_limit if first else lim))
                self.slopes.append(None)
                frac = ACT_FRAC
            elif isinstance(m, (nn.LeakyReLU, nn.ReLU)) and self.layers and self.slopes[-1] is None:
                self.slopes[-1] = m.negative_slope if isinstance(m, nn.LeakyReLU) else 0.0
            else:
                raise ValueError(f"unsupported module in an integer network: {m}")
        if self.slopes[-1] is not None:
            raise ValueError("an integer network must end with a convolution")
        off = in_offset.detach().double().cpu().flatten()
        self.in_offset = torch.round(off * 2.0**IN_FRAC).view(1, -1, 1, 1)
        # per-channel multipliers taking accumulator l to the next activation format / to real values
        self.shifts = []
        for i, layer in enumerate(self.layers):
            out_frac = ACT_FRAC if i + 1 < len(self.layers) else 0
            self.shifts.append(_pow2(out_frac - layer.in_frac - layer.exp).view(1, -1, 1, 1))
        self.device = torch.device("cpu")

    def to(self, device) -> IntegerNetwork:
        device = torch.device(device)
        if device.type == "mps":  # no float64 on MPS: compute on the CPU
            device = torch.device("cpu")
        for layer in self.layers:
            layer.to(device)
        self.in_offset = self.in_offset.to(device)
        self.shifts = [s.to(device) for s in self.shifts]
        self.device = device
        return self

    @torch.no_grad()
    def __call__(self, symbols: torch.Tensor) -> torch.Tensor:
        out_device = symbols.device
        a = (symbols.to(self.device, torch.float64) * 2.0**IN_FRAC + self.in_offset).clamp(-self.in_limit, self.in_limit)
        for i, (layer, slope, shift) in enumerate(zip(self.layers, self.slopes, self.shifts)):
            acc = layer(a)
            if i + 1 < len(self.layers):
                a = requantize(acc, shift, slope)
            else:
                a = acc * shift  # exact: the accumulator times a power of two
        return a.float().to(out_device)  # one correctly rounded cast
