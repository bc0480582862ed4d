"""Running a benchmark: the configuration, the per-clip loop, the result cache, parallel clips, and the
assembled results (what ``results.json`` holds)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import codecs as C
from .bdrate import DEFAULT_MIN_OVERLAP, METHODS, bd_metric, bd_rate

DEFAULT_CODECS = ("lvc", "x264", "x265", "svtav1")
DEFAULT_QUALITIES = tuple(range(1, 9))
DEFAULT_CRFS = (22, 26, 30, 34, 38)  # x264 / x265: about 0.02-0.4 bpp on the bench clips
DEFAULT_SVTAV1_CRFS = (27, 36, 45, 54, 63)  # SVT-AV1 (1..63): about the same PSNR range on the bench clips
#: metrics that get BD-rates (MS-SSIM in dB, see lvcodec.bench.metrics)
BD_METRICS = ("psnr_yuv", "msssim_y_db", "psnr_rgb", "msssim_rgb_db")
BD_METRIC_METRICS = ("psnr_yuv", "msssim_y_db")  # metrics that also get a BD-metric (BD-PSNR) figure
CACHE_VERSION = 2  # bump when what a run measures changes


@dataclass(frozen=True)
class BenchConfig:
    """What to run. ``codecs`` are families (``lvc``, ``x264``, ``x265``, ``svtav1``) or explicit names
    (``x264-intra``); ``intra`` adds the all-intra variant of every family listed."""

    codecs: tuple[str, ...] = DEFAULT_CODECS
    intra: bool = True
    frames: int = 32
    keyint: int = 32
    qualities: tuple[int, ...] = DEFAULT_QUALITIES
    crfs: tuple[int, ...] = DEFAULT_CRFS
    svtav1_crfs: tuple[int, ...] = DEFAULT_SVTAV1_CRFS
    downscale: bool = False
    anchor: str = "x264"
    jobs: int = 1
    min_overlap: float = DEFAULT_MIN_OVERLAP
    cache: bool = True  # reuse cached runs (results are cached either way)

    def __post_init__(self):
        for name in self.codecs:
            C.split(name)
        if self.frames < 1 or not 1 <= self.keyint <= 65535:
            raise ValueError(f"frames ({self.frames}) must be >= 1 and keyint ({self.keyint}) in 1..65535")
        if self.jobs < 1:
            raise ValueError(f'invalid jobs "{self.jobs}", should be at least 1')
        for q in self.qualities:
            if not 1 <= q <= 255:
                raise ValueError(f'invalid quality "{q}", should be between 1 and 255')
        for c in self.crfs:
            if not 0 <= c <= 51:
                raise ValueError(f'invalid x264/x265 CRF "{c}", should be between 0 and 51')
        for c in self.svtav1_crfs:
            if not 1 <= c <= 63:
                raise ValueError(f'invalid SVT-AV1 CRF "{c}", should be between 1 and 63')
        if self.anchor not in self.run_codecs():
            raise ValueError(f'anchor "{self.anchor}" is not among the codecs run ({", ".join(self.run_codecs())})')

    def run_codecs(self) -> list[str]:
        """The codec names run, low-delay ones first."""
        names = list(dict.fromkeys(self.codecs))
        if self.intra:
            names += [n + C.INTRA_SUFFIX for n in names if not n.endswith(C.INTRA_SUFFIX)]
        names = list(dict.fromkeys(names))
        return sorted(names, key=lambda n: (C.split(n)[1], C.family_order(C.split(n)[0])))

    def settings(self, name: str) -> tuple[int, ...]:
        family = C.split(name)[0]
        if C.is_model(family):
            from ..registry import model_class

            return tuple(q for q in self.qualities if q <= model_class(C.model_of(family)).num_qualities)
        return self.svtav1_crfs if family == "svtav1" else self.crfs

    def runs_per_clip(self) -> int:
        return sum(len(self.settings(n)) for n in self.run_codecs())


# -- cache -------------------------------------------------------------------------------------------


def _library_ids(family: str) -> dict:
    if C.is_model(family):
        import lvcodec

        return {"lvcodec": lvcodec.__version__}
    import av

    return {"av": av.__version__, "libavcodec": ".".join(map(str, av.library_versions["libavcodec"]))}


def cache_key(clip_digest: str, name: str, value: int, config: BenchConfig) -> str:
    """Hash of everything a run depends on: the pictures, the codec and every option (lvc: the weights
    hash; anchors: the FFmpeg build), and the measuring code's version."""
    key = {"v": CACHE_VERSION, "clip": clip_digest, "codec": name, "value": value,
           "options": C.run_options(name, value, config.keyint), "libs": _library_ids(C.split(name)[0])}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# -- one clip ------------------------------------------------------------------------------------------


def bench_clip(spec: str, config: BenchConfig, out: Path, notify=None) -> dict:
    """Every run of ``config`` on one clip (cached runs are read back); ``notify(event)`` after each run."""
    from .clips import load_clip

    notify = notify or (lambda e: None)
    try:
        clip = load_clip(spec, config.frames, config.downscale)
    except Exception as e:  # noqa: BLE001 - a clip that cannot be read is reported, the others still run
        notify({"clip": spec, "skipped": config.runs_per_clip(), "error": str(e)})
        return {"name": Path(spec).name, "source": spec, "error": f"{type(e).__name__}: {e}", "runs": []}
    info = clip.info()
    cache_dir = out / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for name in config.run_codecs():
        for value in config.settings(name):
            key = cache_key(info["sha256"], name, value, config)
            path = cache_dir / f"{key}.json"
            rec = None
            if config.cache and path.exists():
                try:
                    rec = json.loads(path.read_text())
                    rec["from_cache"] = True
                except (OSError, ValueError):
                    rec = None
            if rec is None:
                try:
                    rec = C.run(name, value, clip, config.keyint)
                except Exception as e:  # noqa: BLE001 - recorded; the benchmark goes on
                    rec = {"codec": name, "setting": C.setting_label(name, value), "value": value,
                           "error": f"{type(e).__name__}: {e}"}
                else:
                    rec["cache_key"] = key
                    _write_atomic(path, json.dumps(rec))
                    rec["from_cache"] = False
            runs.append(rec)
            notify({"clip": clip.name, "run": rec})
    return {**info, "runs": runs}


def _worker(spec, config, out, queue, threads):
    if threads:
        import torch

        torch.set_num_threads(threads)
    return bench_clip(spec, config, Path(out), queue.put)


# -- the whole benchmark ------------------------------------------------------------------------------


def _describe_event(e: dict) -> str:
    if "error" in e:
        return f"{e['clip']}: skipped ({e['error']})"
    r = e["run"]
    if "error" in r:
        return f"{e['clip']} {r['codec']} {r['setting']}: FAILED {r['error']}"
    flag = "" if r["checks"]["ok"] else "  CHECK FAILED: " + "; ".join(r["checks"]["problems"])
    return (f"{e['clip']} {r['codec']} {r['setting']}: {r['bpp']:.4f} bpp, PSNR-YUV {r['psnr_yuv']:.2f} dB, "
            f"MS-SSIM-Y {r['msssim_y']:.4f}, enc {r['enc_fps']:.2f} fps, dec {r['dec_fps']:.2f} fps"
            f"{' (cached)' if r.get('from_cache') else ''}{flag}")


def run_bench(clips=None, config: BenchConfig | None = None, out="bench-out", progress: bool = True,
              report: bool = True) -> dict:
    """Run the benchmark on ``clips`` (paths or ``demo[:WxH]``; default :func:`~lvcodec.bench.clips.default_clips`)
    and write ``results.json`` (and, with ``report``, ``report.md`` and the PNG plots) into ``out``.

    Returns the results as written. Runs already in ``out/cache`` are not repeated."""
    from tqdm import tqdm

    from .clips import default_clips

    config = config or BenchConfig()
    specs = list(clips) if clips else default_clips()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    prov = provenance(config)
    total = len(specs) * config.runs_per_clip()
    tty = sys.stderr.isatty()
    bar = tqdm(total=total, desc="bench", unit="run", file=sys.stderr, disable=not (progress and tty),
               dynamic_ncols=True)
    done = [0]

    def notify(e):
        n = e.get("skipped", 1)
        done[0] += n
        bar.update(n)
        if "run" in e:
            bar.set_postfix_str(f"{e['clip']} {e['run']['codec']} {e['run']['setting']}", refresh=False)
        if progress and not tty:  # a log file gets one line per run instead of a bar
            print(f"[{done[0]}/{total}] {_describe_event(e)}", file=sys.stderr, flush=True)

    try:
        if config.jobs == 1 or len(specs) == 1:
            clip_results = [bench_clip(s, config, out, notify) for s in specs]
        else:
            clip_results = _run_parallel(specs, config, out, notify)
    finally:
        bar.close()
    prov["seconds"] = round(time.time() - started, 1)
    prov["runs_from_cache"] = sum(bool(r.get("from_cache")) for c in clip_results for r in c.get("runs", []))
    prov["load_average_end"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    results = assemble(clip_results, config, prov)
    _write_atomic(out / "results.json", dumps(results))
    if report:
        from .report import write_report

        write_report(results, out)
    return results


def _run_parallel(specs, config, out, notify):
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")  # no fork of a process that may hold torch threads
    jobs = min(config.jobs, len(specs))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ctx.Manager() as manager, ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        q = manager.Queue()
        futures = [pool.submit(_worker, s, config, str(out), q, threads) for s in specs]
        while not all(f.done() for f in futures):
            try:
                notify(q.get(timeout=0.2))
            except queue_mod.Empty:
                pass
        while True:
            try:
                notify(q.get_nowait())
            except queue_mod.Empty:
                break
        return [f.result() for f in futures]


def dumps(results: dict) -> str:
    """JSON, indented, but with one line per list of numbers (the per-frame series) and per BD record, so
    that the file stays readable."""
    marker = "\u0000bd-records\u0000"
    text = json.dumps({**results, "bd": marker}, indent=1)
    text = re.sub(r"\[[-+0-9.eE,\s]*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(0)[1:-1].split(",") if x.strip()) + "]",
                  text)
    bd = "[\n" + ",\n".join("  " + json.dumps(r) for r in results.get("bd", [])) + "\n ]"
    return text.replace(json.dumps(marker), bd) + "\n"


# -- results ---------------------------------------------------------------------------------------------


def _ok_runs(clip: dict, name: str) -> list[dict]:
    return [r for r in clip.get("runs", []) if r.get("codec") == name and "error" not in r]


def bd_pairs(config: BenchConfig) -> list[tuple[str, str]]:
    """(test, anchor) pairs that get BD figures: every codec against the chosen anchor, and lvc and lvc
    all-intra against every other codec."""
    names = config.run_codecs()
    pairs = [(n, config.anchor) for n in names if n != config.anchor]
    for test in ("lvc", "lvc-intra"):
        if test in names:
            pairs += [(test, a) for a in names if a != test]
    return list(dict.fromkeys(pairs))


def bd_records(clips: list[dict], config: BenchConfig) -> list[dict]:
    """BD figures of :func:`bd_pairs` per clip, metric and method, plus the mean over clips (of the clips
    where one exists; ``clips_used`` counts them). ``kind`` "rate": BD-rate in percent (all of
    :data:`BD_METRICS`); "metric": the average metric gain at equal rate, e.g. BD-PSNR in dB (PSNR-YUV and
    MS-SSIM-Y only)."""
    recs = []
    for clip in clips:
        for test, anchor in bd_pairs(config):
            for metric in BD_METRICS:
                a = [(r["bpp"], r[metric]) for r in _ok_runs(clip, anchor)]
                t = [(r["bpp"], r[metric]) for r in _ok_runs(clip, test)]
                for kind, fn in (("rate", bd_rate), ("metric", bd_metric)):
                    if kind == "metric" and metric not in BD_METRIC_METRICS:
                        continue
                    for method in METHODS:
                        res = fn(a, t, method, config.min_overlap, warn=False)
                        recs.append({"clip": clip["name"], "test": test, "anchor": anchor, "kind": kind,
                                     "metric": metric, **res.as_dict()})
    groups = {}
    for r in recs:
        groups.setdefault((r["test"], r["anchor"], r["kind"], r["metric"], r["method"]), []).append(r)
    for (test, anchor, kind, metric, method), rs in groups.items():
        vals = [r["value"] for r in rs if r["value"] is not None]
        low = [r["clip"] for r in rs if r["note"]]
        recs.append({"clip": "mean", "test": test, "anchor": anchor, "kind": kind, "metric": metric,
                     "method": method, "value": sum(vals) / len(vals) if vals else None, "clips_used": len(vals),
                     "clips": len(rs), "overlap": min(r["overlap"] for r in rs),
                     "note": (f"{len(rs) - len(vals)} of {len(rs)} clips have no value; " if len(vals) < len(rs)
                              else "") + (f"low overlap or no value on {', '.join(low)}" if low else "")})
    return recs


def speed_summary(clips: list[dict], config: BenchConfig) -> dict:
    """Per codec and clip: median encode/decode fps and the largest peak-memory deltas over its runs."""
    import statistics

    out = {}
    for name in config.run_codecs():
        per = {}
        for clip in clips:
            rs = _ok_runs(clip, name)
            if not rs:
                continue
            per[clip["name"]] = {
                "width": clip["width"], "height": clip["height"],
                "enc_fps": statistics.median(r["enc_fps"] for r in rs),
                "dec_fps": statistics.median(r["dec_fps"] for r in rs),
                "enc_delta_mb": max((r["memory"]["enc_delta_mb"] or 0) for r in rs),
                "dec_delta_mb": max((r["memory"]["dec_delta_mb"] or 0) for r in rs),
                "enc_peak_mb": max(r["memory"]["enc_peak_mb"] for r in rs),
                "dec_peak_mb": max(r["memory"]["dec_peak_mb"] for r in rs)}
        if per:
            vals = list(per.values())
            per["mean"] = {k: sum(v[k] for v in vals) / len(vals)
                           for k in ("enc_fps", "dec_fps", "enc_delta_mb", "dec_delta_mb")}
        out[name] = per
    return out


def assemble(clip_results: list[dict], config: BenchConfig, prov: dict) -> dict:
    ok = [c for c in clip_results if "error" not in c]
    failed = [f"{c['name']} {r['codec']} {r['setting']}: {r['error']}" for c in ok for r in c["runs"] if "error" in r]
    failed += [f"{c['name']}: {c['error']}" for c in clip_results if "error" in c]
    checks = [f"{c['name']} {r['codec']} {r['setting']}: {p}" for c in ok for r in c["runs"]
              if "error" not in r for p in r["checks"]["problems"]]
    return {"provenance": prov, "config": {**asdict(config), "run_codecs": config.run_codecs()},
            "codecs": {n: {"label": C.label(n), "settings": list(config.settings(n)),
                           "options": C.run_options(n, "<setting>", config.keyint)}  # type: ignore[arg-type]
                       for n in config.run_codecs()},
            "clips": clip_results, "bd": bd_records(ok, config),
            "speed": speed_summary(ok, config), "failed_runs": failed, "check_problems": checks}


# -- provenance -------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            return round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


def _git_state() -> dict | None:
    """Commit of the lvcodec checkout that ran (None when not in a git checkout) and whether the package
    had uncommitted changes."""
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "lvcodec"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "lvcodec_modified": [ln[3:] for ln in dirty.splitlines()]}


def provenance(config: BenchConfig) -> dict:
    import av
    import compressai
    import numpy
    import torch

    import lvcodec

    from ..codec import MODEL_NAME, WEIGHTS, weights_hash

    return {
        "command": " ".join(["python -m lvcodec.bench" if sys.argv[0].endswith("__main__.py")
                             else Path(sys.argv[0]).name] + sys.argv[1:]),
        "cwd": os.getcwd(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "lvcodec": lvcodec.__version__, "model": MODEL_NAME, "weights_hash": weights_hash().hex(),
        "weights_files": {k: v[0] for k, v in WEIGHTS.items()},
        "torch": torch.__version__, "compressai": compressai.__version__, "av": av.__version__,
        "numpy": numpy.__version__, "python": platform.python_version(),
        "ffmpeg_libraries": {k: ".".join(map(str, v)) for k, v in av.library_versions.items()},
        "codec_libraries": codec_library_versions([C.split(n)[0] for n in config.run_codecs()]),
        "git": _git_state(),
        "machine": {"cpu": _cpu_model(), "cpu_count": os.cpu_count(), "memory_gb": _mem_total_gb(),
                    "platform": platform.platform()},
        "torch_threads": torch.get_num_threads() if config.jobs == 1
        else max(1, (os.cpu_count() or 1) // config.jobs),
        "load_average_start": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def codec_library_versions(families) -> dict:
    """Versions of libx264 / libx265 (from the SEI they write) and SVT-AV1 (from its log) in this FFmpeg."""
    import numpy as np

    from ..frames import Picture
    from . import anchors

    pics = [Picture(np.full((64, 64), 100 + 9 * i, np.uint8), np.full((32, 32), 128, np.uint8),
                    np.full((32, 32), 128, np.uint8), i) for i in range(2)]
    out = {}
    for fam in sorted(set(families) & {"x264", "x265", "svtav1"}):
        try:
            if fam == "svtav1":
                out[fam] = _svt_version(pics)
                continue
            packets, _ = anchors.encode(fam, pics, 25, 30, 2)
            m = re.search(rb"(x264 - core \d+(?: r\d+ [0-9a-f]+)?|x265 \(build \d+\) - [\w.+-]+)", packets[0][0])
            out[fam] = m.group(1).decode() if m else "unknown"
        except Exception as e:  # noqa: BLE001 - provenance only
            out[fam] = f"unknown ({type(e).__name__})"
    return out


def _svt_version(pics) -> str:
    """SVT-AV1's version from ``svt_av1_get_version()`` of the library PyAV loaded (found in
    ``/proc/self/maps`` after one tiny encode; Linux only)."""
    import ctypes

    from . import anchors

    anchors.encode("svtav1", pics, 25, 40, 2)
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({ln.split()[-1] for ln in f if "libsvtav1enc" in ln.lower()})
        fn = ctypes.CDLL(libs[0]).svt_av1_get_version
        fn.restype = ctypes.c_char_p
        return f"SVT-AV1 {fn().decode()}"
    except (OSError, IndexError, AttributeError):
        return "unknown"
