"""Distortion metrics of a decoded 8-bit 4:2:0 picture against its source, per frame.

* **PSNR-Y/U/V**: ``10 log10(255² / MSE)`` of each plane, capped at 100 dB (an identical plane).
  **PSNR-YUV** = (6 PSNR-Y + PSNR-U + PSNR-V) / 8, the usual weighting for 4:2:0 (same as
  :func:`lvcodec.codec.psnr_yuv`).
* **PSNR-RGB**: one MSE over the three channels of both pictures converted to 8-bit RGB by
  :func:`yuv420_to_rgb` (BT.601 limited range, chroma upsampled by sample replication, rounded and
  clipped to 0..255 as a player would show it). The same conversion is applied to every codec, whatever the
  clip's colour tags say, so it is a fixed, documented yardstick rather than a colorimetric claim.
* **MS-SSIM** (Wang, Simoncelli & Bovik, "Multi-scale structural similarity for image quality assessment",
  2003): 5 scales, 11-tap Gaussian window σ = 1.5, K = (0.01, 0.03), exponents
  (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2x2 average-pool between scales, 'valid' filtering, negative
  terms clamped to 0 — the definition CompressAI and DCVC use through ``pytorch-msssim``, whose numbers
  :func:`ms_ssim` reproduces (tests/test_bench.py checks it where that package is installed). Written here
  on numpy and ``scipy.ndimage`` so that the benchmark needs no extra dependency. One difference: the
  standard definition needs the smaller side above 160 pixels (QCIF is 144 high); on smaller pictures the
  window is truncated to the size of the picture at that scale, as TensorFlow's ``tf.image.ssim_multiscale``
  does, instead of failing.
  **MS-SSIM-Y** is computed on luma (the plane ``libvmaf``'s MS-SSIM uses); **MS-SSIM-RGB** is the mean over
  the R, G, B channels of :func:`yuv420_to_rgb`. For curves and BD-rates MS-SSIM is taken in dB,
  ``-10 log10(1 - MS-SSIM)``, which spreads the high-quality end where values crowd towards 1.

Per-clip values are the mean over frames of the per-frame values (PSNRs are averaged in dB).
"""

from __future__ import annotations

import math

import numpy as np

PSNR_CAP = 100.0
MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: Metric keys of :func:`frame_metrics`, in report order.
FRAME_METRICS = ("psnr_y", "psnr_u", "psnr_v", "psnr_yuv", "psnr_rgb", "msssim_y", "msssim_rgb")

# BT.601 limited range ("studio swing") Y'CbCr -> R'G'B', 8 bit (ITU-R BT.601-7, inverted):
#   R = 1.164384 (Y - 16)                     + 1.596027 (V - 128)
#   G = 1.164384 (Y - 16) - 0.391762 (U - 128) - 0.812968 (V - 128)
#   B = 1.164384 (Y - 16) + 2.017232 (U - 128)
BT601_LIMITED = np.array([[1.164384, 0.0, 1.596027],
                          [1.164384, -0.391762, -0.812968],
                          [1.164384, 2.017232, 0.0]])


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(peak * peak / mse))


def yuv420_to_rgb(pic) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a 4:2:0 picture: BT.601 limited range, chroma repeated 2x2 (see module doc)."""
    h, w = pic.height, pic.width
    u = np.repeat(np.repeat(pic.u, 2, 0), 2, 1)[:h, :w].astype(np.float64) - 128.0
    v = np.repeat(np.repeat(pic.v, 2, 0), 2, 1)[:h, :w].astype(np.float64) - 128.0
    ycc = np.stack((pic.y.astype(np.float64) - 16.0, u, v), -1)
    rgb = ycc @ BT601_LIMITED.T
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _gauss(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _blur_valid(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter of the last two axes, 'valid' part only."""
    from scipy.ndimage import correlate1d

    r = g.size // 2
    out = correlate1d(correlate1d(a, g, axis=-2, mode="constant"), g, axis=-1, mode="constant")
    return out[..., r : a.shape[-2] - r, r : a.shape[-1] - r]


def _pool2(a: np.ndarray) -> np.ndarray:
    """2x2 average pooling; an odd size gets one zero row/column in front, counted in the mean (this is
    what ``F.avg_pool2d(kernel_size=2, padding=size % 2)`` does in pytorch-msssim)."""
    ph, pw = a.shape[-2] % 2, a.shape[-1] % 2
    if ph or pw:
        a = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(ph, 0), (pw, 0)])
    h, w = a.shape[-2] // 2 * 2, a.shape[-1] // 2 * 2
    a = a[..., :h, :w]
    return 0.25 * (a[..., 0::2, 0::2] + a[..., 1::2, 0::2] + a[..., 0::2, 1::2] + a[..., 1::2, 1::2])


def ms_ssim(x: np.ndarray, y: np.ndarray, data_range: float = 255.0, win_size: int = 11, sigma: float = 1.5,
            weights=MSSSIM_WEIGHTS, k=(0.01, 0.03)) -> np.ndarray:
    """MS-SSIM of two images per channel: ``x``, ``y`` are (H, W) or (C, H, W); returns shape ``x.shape[:-2]``.

    Wang et al. 2003 as described in the module docstring (the window shrinks, to an odd size, where a
    scale is smaller than ``win_size``). Written on numpy and ``scipy.ndimage`` (which scikit-image
    needs anyway): separable filtering there is about ten times faster than ``torch.conv2d`` on CPU."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim not in (2, 3):
        raise ValueError(f"ms_ssim needs two (H, W) or (C, H, W) images of one shape, got {x.shape} and {y.shape}")
    c1, c2 = (k[0] * data_range) ** 2, (k[1] * data_range) ** 2
    terms = []
    for level in range(len(weights)):
        n = min(win_size, x.shape[-2], x.shape[-1])
        n -= 1 - n % 2  # odd, so the window stays centred
        g = _gauss(n, sigma)
        mu_x, mu_y = _blur_valid(x, g), _blur_valid(y, g)
        sxx = _blur_valid(x * x, g) - mu_x**2
        syy = _blur_valid(y * y, g) - mu_y**2
        sxy = _blur_valid(x * y, g) - mu_x * mu_y
        cs_map = (2 * sxy + c2) / (sxx + syy + c2)
        if level == len(weights) - 1:
            ssim_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs_map
            terms.append(np.maximum(ssim_map.mean((-2, -1)), 0.0))
        else:
            terms.append(np.maximum(cs_map.mean((-2, -1)), 0.0))
            x, y = _pool2(x), _pool2(y)
    return np.prod([t ** w for t, w in zip(terms, weights)], axis=0)


def msssim_db(value: float) -> float:
    """MS-SSIM in dB, ``-10 log10(1 - value)`` (capped at 100 dB like PSNR)."""
    return PSNR_CAP if value >= 1.0 else min(PSNR_CAP, -10 * math.log10(1.0 - value))


def frame_metrics(src, dec) -> dict[str, float]:
    """All :data:`FRAME_METRICS` of the decoded picture ``dec`` against the source picture ``src``."""
    if (src.width, src.height) != (dec.width, dec.height):
        raise ValueError(f"decoded picture is {dec.width}x{dec.height}, the source {src.width}x{src.height}")
    py, pu, pv = psnr(src.y, dec.y), psnr(src.u, dec.u), psnr(src.v, dec.v)
    rgb_s, rgb_d = yuv420_to_rgb(src), yuv420_to_rgb(dec)

    m_y = float(ms_ssim(src.y, dec.y))
    m_rgb = float(ms_ssim(rgb_s.transpose(2, 0, 1), rgb_d.transpose(2, 0, 1)).mean())
    return {"psnr_y": py, "psnr_u": pu, "psnr_v": pv, "psnr_yuv": (6 * py + pu + pv) / 8,
            "psnr_rgb": psnr(rgb_s, rgb_d), "msssim_y": m_y, "msssim_rgb": m_rgb}


def sequence_metrics(sources, decoded) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(means over frames, per-frame lists) of :data:`FRAME_METRICS`; MS-SSIM means also in dB
    (``msssim_y_db``, ``msssim_rgb_db``: the dB of the mean MS-SSIM)."""
    if len(sources) != len(decoded):
        raise ValueError(f"decoded {len(decoded)} frames, expected {len(sources)}")
    per = {k: [] for k in FRAME_METRICS}
    for s, d in zip(sources, decoded):
        for k, v in frame_metrics(s, d).items():
            per[k].append(v)
    mean = {k: float(np.mean(v)) for k, v in per.items()}
    mean["msssim_y_db"] = msssim_db(mean["msssim_y"])
    mean["msssim_rgb_db"] = msssim_db(mean["msssim_rgb"])
    return mean, per
