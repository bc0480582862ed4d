"""The codecs under test, one uniform run each: encode real bytes, decode them, measure.

Codec names: ``lvc``, ``x264``, ``x265``, ``svtav1`` (low delay: an I-frame every ``keyint`` frames, P
frames between, no reordering) and the same with ``-intra`` (all-intra: keyint 1). ``lvc-intra`` is the
ablation that shows what lvc's P-frames buy.

One run = one codec at one setting (lvc quality or anchor CRF) on one clip:

* **rate**: lvc, the size of the ``.lvc`` file written by :func:`lvcodec.codec.encode_pictures`; anchors, the
  sum of the encoded packet sizes (elementary stream, no container) less x264's / x265's informational
  SEI (see :mod:`lvcodec.bench.anchors`). bpp = bytes * 8 / (frames * W * H).
* **time**: encode fps = frames / seconds of the encode call (lvc: ``encode_pictures``, which also computes
  the reconstruction's PSNR; one untimed two-frame encode and decode per process first, so model loading is
  not counted; anchors: feeding prepared ``av.VideoFrame`` s and flushing, encoder opened beforehand).
  Decode fps = frames / seconds to get numpy 4:2:0 planes back (lvc: iterating :func:`lvcodec.decode`;
  anchors: PyAV decode + conversion to planes).
* **memory**: the process's peak resident set size during the encode and during the decode (Linux:
  ``VmHWM`` after resetting it through ``/proc/self/clear_refs``), and that peak minus the resident size at
  the start of the phase: the memory the phase itself needed (lvc's weights are already loaded then, the
  source pictures already in memory; freed heap memory is first handed back with glibc's ``malloc_trim`` so
  that earlier runs' leftovers do not hide it). Elsewhere only ``ru_maxrss``, the peak over the whole
  process.
* **checks**: that the settings took effect (see :mod:`lvcodec.bench.anchors`; lvc: the header's quality,
  keyint and weights hash, one decoded picture per source picture, and decoded pictures identical to the
  encoder's reconstruction, i.e. the same PSNR).
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time

from . import anchors
from .metrics import sequence_metrics

FAMILIES = ("lvc", "x264", "x265", "svtav1")
INTRA_SUFFIX = "-intra"
CODEC_LABELS = {"lvc": "lvc", "x264": "x264", "x265": "x265", "svtav1": "SVT-AV1"}


def is_model(family: str) -> bool:
    """Whether ``family`` is lvc itself or another model of the registry (``lvc models``)."""
    if family == "lvc":
        return True
    if family in FAMILIES:
        return False
    from ..registry import list_models

    return family in list_models()


def model_of(family: str) -> str:
    """Registry name of the model behind a model family (``lvc`` is the default model)."""
    from ..registry import DEFAULT_MODEL

    return DEFAULT_MODEL if family == "lvc" else family


def split(name: str) -> tuple[str, bool]:
    """(family, all-intra?) of a codec name such as ``x265-intra``; registered model names are families."""
    intra = name.endswith(INTRA_SUFFIX)
    family = name[: -len(INTRA_SUFFIX)] if intra else name
    if family not in FAMILIES and not is_model(family):
        raise ValueError(f'unknown codec "{name}", should be one of '
                         f'{", ".join(FAMILIES)} or a registered model (optionally with "{INTRA_SUFFIX}")')
    return family, intra


def family_order(family: str) -> int:
    return FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)


def label(name: str) -> str:
    family, intra = split(name)
    return CODEC_LABELS.get(family, family) + (" all-intra" if intra else "")


def setting_label(name: str, value: int) -> str:
    return f"q{value}" if is_model(split(name)[0]) else f"crf{value}"


def _intra_offset(model, quality) -> int | str:
    from ..registry import load_model

    if isinstance(quality, int) and 1 <= quality <= model.num_qualities:
        return load_model(model.name).intra_offset(quality)
    return "the model's, per quality"


def run_options(name: str, value: int, keyint: int) -> dict:
    """Every option of one run (what goes into the results and the cache key)."""
    from ..registry import model_class

    family, intra = split(name)
    k = 1 if intra else keyint
    if is_model(family):
        model = model_class(model_of(family))
        from .. import __version__
        from ..bitstream import VERSION

        return {"codec": "lvc", "model": model.name, "model_id": model.model_id,
                "weights_hash": _model_weights(model.name).hex(), "encoder": model.encoder_version, "quality": value,
                "keyint": k if model.has_inter else 1, "intra_offset": _intra_offset(model, value) if k > 1 else 0,
                "lvcodec": __version__, "container": ".".join(map(str, VERSION)),
                "api": "lvcodec.codec.encode_pictures / lvcodec.decode"}
    d = anchors.describe(family, k)
    d["options"] = anchors.encoder_options(family, value, k)
    d["keyint"] = k
    return d


# -- memory ----------------------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``), so that the resident size at the start
    of a phase is what is live, not what earlier runs freed (which would hide the phase's own peak)."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        import ctypes
        import ctypes.util

        try:
            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None


class PeakMemory:
    """Peak resident memory of this process while the ``with`` block runs (see the module docstring)."""

    def __enter__(self):
        _release_free_memory()
        self.method = "VmHWM after malloc_trim and clear_refs"
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak RSS ("hiwater_rss") to the current RSS (Linux >= 4.0)
        except OSError:
            self.method = "ru_maxrss (peak over the whole process)"
        self.start_kb = _status_kb("VmRSS")
        return self

    def __exit__(self, *exc):
        peak = _status_kb("VmHWM") if self.method.startswith("VmHWM") else None
        if peak is None:
            r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = r // 1024 if sys.platform == "darwin" else r
            self.method = "ru_maxrss (peak over the whole process)"
        self.peak_mb = peak / 1024
        self.delta_mb = (peak - self.start_kb) / 1024 if self.start_kb is not None else None
        return False


# -- runs --------------------------------------------------------------------------------------------


_LVC_WARM = False


def warm_up_lvc(clip) -> None:
    """Encode and decode two frames once per process, untimed: model loading and first-call costs."""
    global _LVC_WARM
    if _LVC_WARM:
        return
    import lvcodec

    from ..codec import encode_pictures

    fd, path = tempfile.mkstemp(suffix=".lvc")
    try:
        with os.fdopen(fd, "wb") as f:
            encode_pictures(clip.pictures[:2], f, clip.width, clip.height, clip.rate, quality=4, keyint=2)
        for _ in lvcodec.decode(path):
            pass
    finally:
        os.unlink(path)
    _LVC_WARM = True


def _model_weights(model: str) -> bytes:
    from ..registry import load_model

    return load_model(model).weights_sha256()


def _run_lvc(clip, quality: int, keyint: int, model: str) -> dict:
    import lvcodec

    from ..codec import encode_pictures
    from ..registry import load_model

    warm_up_lvc(clip)
    m = load_model(model)
    keyint = keyint if m.has_inter else 1
    n = clip.frames
    fd, path = tempfile.mkstemp(suffix=".lvc")
    try:
        with os.fdopen(fd, "wb") as f, PeakMemory() as m_enc:
            t0 = time.perf_counter()
            stats = encode_pictures(clip.pictures, f, clip.width, clip.height, clip.rate,
                                    quality=quality, keyint=keyint, model=model)
            f.flush()
            t_enc = time.perf_counter() - t0
        size = os.path.getsize(path)
        header = lvcodec.read_header(path)
        with PeakMemory() as m_dec:
            t0 = time.perf_counter()
            decoded = list(lvcodec.decode(path))
            t_dec = time.perf_counter() - t0
    finally:
        os.unlink(path)
    problems = []
    stream_hash = getattr(header, "weights_sha256", None) or getattr(header, "weights_hash", b"")
    for what, got, want in (("quality", header.quality, quality), ("keyint", header.keyint, keyint),
                            ("weights hash", stream_hash.hex(), m.weights_sha256().hex()),
                            ("decoded frames", len(decoded), n)):
        if got != want:
            problems.append(f"{what} {got}, expected {want}")
    mean, per = sequence_metrics(clip.pictures, decoded)
    if abs(mean["psnr_yuv"] - stats.psnr_yuv) > 1e-6:
        problems.append(f"decoded PSNR-YUV {mean['psnr_yuv']:.6f} != encoder's reconstruction "
                        f"{stats.psnr_yuv:.6f} (decoder drift)")
    return {"bytes": size, "frame_bytes": None, "enc_s": t_enc, "dec_s": t_dec, "mem_enc": m_enc,
            "mem_dec": m_dec, "metrics": mean, "per_frame": per, "problems": problems,
            "details": {"encoder_psnr_yuv": stats.psnr_yuv}}


def _run_anchor(family: str, clip, crf: int, keyint: int) -> dict:
    with PeakMemory() as m_enc:
        packets, t_enc = anchors.encode(family, clip.pictures, clip.rate, crf, keyint)
    problems, details = anchors.check(family, packets, clip.frames, keyint)
    with PeakMemory() as m_dec:
        decoded, t_dec = anchors.decode(family, packets)
    if len(decoded) != clip.frames:
        problems.append(f"decoded {len(decoded)} frames, expected {clip.frames}")
        decoded = decoded[: clip.frames]
    mean, per = sequence_metrics(clip.pictures[: len(decoded)], decoded)
    sei = [anchors.info_sei_bytes(family, p[0]) for p in packets]
    sizes = [len(p[0]) - s for p, s in zip(packets, sei)]
    details["packet_bytes"] = sum(len(p[0]) for p in packets)
    details["info_sei_bytes"] = sum(sei)
    return {"bytes": sum(sizes), "frame_bytes": sizes, "enc_s": t_enc, "dec_s": t_dec, "mem_enc": m_enc,
            "mem_dec": m_dec, "metrics": mean, "per_frame": per, "problems": problems, "details": details}


def run(name: str, value: int, clip, keyint: int) -> dict:
    """One run of codec ``name`` at ``value`` (quality or CRF) on ``clip``: a JSON-ready record."""
    family, intra = split(name)
    k = 1 if intra else keyint
    measured = measurement_context()
    r = _run_lvc(clip, value, k, model_of(family)) if is_model(family) else _run_anchor(family, clip, value, k)
    n = clip.frames
    me, md = r["mem_enc"], r["mem_dec"]
    return {
        "codec": name, "family": family, "mode": "all-intra" if intra else "low-delay",
        "setting": setting_label(name, value), "value": value, "keyint": k,
        "bytes": r["bytes"], "bpp": r["bytes"] * 8 / (n * clip.width * clip.height), "frames": n,
        "encode_s": r["enc_s"], "decode_s": r["dec_s"], "enc_fps": n / r["enc_s"], "dec_fps": n / r["dec_s"],
        "memory": {"enc_peak_mb": me.peak_mb, "enc_delta_mb": me.delta_mb, "dec_peak_mb": md.peak_mb,
                   "dec_delta_mb": md.delta_mb, "method": me.method},
        **r["metrics"],
        "checks": {"ok": not r["problems"], "problems": r["problems"], **r["details"]},
        "per_frame": {**{k: [round(v, 5) for v in vs] for k, vs in r["per_frame"].items()},
                      "bytes": r["frame_bytes"]},
        "options": run_options(name, value, keyint),
        "measured": measured,
    }


def measurement_context() -> dict:
    """When and under what load a run was measured (a cached run keeps its own)."""
    ctx = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if hasattr(os, "getloadavg"):
        ctx["load_average"] = [round(v, 2) for v in os.getloadavg()]
    if "torch" in sys.modules:
        ctx["torch_threads"] = sys.modules["torch"].get_num_threads()
    return ctx
