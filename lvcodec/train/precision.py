"""Mixed precision for training: bf16 autocast inside the analysis and synthesis transforms only.

The entropy models (their likelihoods decide the rate), GDN (a normalisation that squares its input) and
everything between the transforms (gains, quantization, the loss) stay in fp32: the transforms' outputs
are cast back to fp32 and GDN runs with autocast off. Done with forward hooks, so the models' code and
state dicts are untouched (a model exported from a bf16 run is the same kind of file)."""

from __future__ import annotations

import torch
from compressai.layers import GDN

TRANSFORMS = ("g_a", "g_s", "h_a", "h_s", "fuse")
#: CPU flags (Linux /proc/cpuinfo) of native bf16 arithmetic; without them oneDNN emulates bf16 and a
#: training step is several times *slower* than in fp32 (measured: the inter synthesis' forward and
#: backward 0.17 s fp32 against 1.5 s bf16 on an AVX2 AMD EPYC, 2 threads)
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU does bf16 arithmetic natively (AMX or AVX512-BF16); None where it cannot be told."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return any(fl in flags for fl in BF16_FLAGS)
    except OSError:
        pass
    return None


def slow_bf16_warning(device_type: str) -> str | None:
    """A one-line warning when bf16 autocast was asked for on a CPU that would emulate it, else None."""
    if device_type == "cpu" and cpu_has_native_bf16() is False:
        return ("this CPU has no native bf16 (no AMX or AVX512-BF16 flag): bf16 autocast is emulated and "
                "several times slower than fp32 here")
    return None


def _float(x):
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.float()
    if isinstance(x, (tuple, list)):
        return type(x)(_float(v) for v in x)
    return x


def _hook(module: torch.nn.Module, device_type: str, dtype: torch.dtype | None) -> None:
    """Run ``module`` under autocast to ``dtype`` (None: autocast off, inputs cast to fp32); its output is fp32."""
    stack: list = []

    def pre(mod, args):
        ctx = torch.autocast(device_type, dtype=dtype) if dtype is not None else \
            torch.autocast(device_type, enabled=False)
        ctx.__enter__()
        stack.append(ctx)
        return _float(args) if dtype is None else None

    def post(mod, args, out):
        stack.pop().__exit__(None, None, None)
        return _float(out)

    module.register_forward_pre_hook(pre)
    module.register_forward_hook(post)


def autocast_transforms(model: torch.nn.Module, device_type: str, dtype: torch.dtype = torch.bfloat16) -> None:
    """Make ``model``'s transforms (``g_a``, ``g_s``, ``h_a``, ``h_s``, ``fuse``) run in ``dtype``, GDN in fp32."""
    for name in TRANSFORMS:
        m = getattr(model, name, None)
        if m is not None:
            _hook(m, device_type, dtype)
    for m in model.modules():
        if isinstance(m, GDN):
            _hook(m, device_type, None)
