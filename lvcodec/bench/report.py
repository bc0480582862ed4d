"""What a benchmark leaves to read: RD plots (PNG) and ``report.md`` made from the results dict.

Plots: one per clip (``rd_<clip>.png``: PSNR-YUV and MS-SSIM-Y in dB against bpp, log rate axis; low-delay
codecs solid, all-intra dashed) and ``rd_summary.png`` (every clip side by side)."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

from . import codecs as C

COLORS = {"lvc": "tab:red", "x264": "tab:blue", "x265": "tab:green", "svtav1": "tab:purple"}
METRIC_LABELS = {"psnr_yuv": "PSNR-YUV (dB)", "msssim_y_db": "MS-SSIM-Y (dB)", "psnr_rgb": "PSNR-RGB (dB)",
                 "msssim_rgb_db": "MS-SSIM-RGB (dB)"}
PLOT_METRICS = ("psnr_yuv", "msssim_y_db")


def plot_name(clip_name: str) -> str:
    return "rd_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(clip_name).stem) + ".png"


def _curves(ax, clip: dict, codecs: list[str], metric: str, legend: bool) -> None:
    for name in codecs:
        rs = sorted((r for r in clip["runs"] if r.get("codec") == name and "error" not in r),
                    key=lambda r: r["bpp"])
        if not rs:
            continue
        family, intra = C.split(name)
        ax.plot([r["bpp"] for r in rs], [r[metric] for r in rs], color=COLORS.get(family, "tab:orange"),
                ls="--" if intra else "-", marker="x" if intra else "o", ms=4, lw=1.3,
                alpha=0.65 if intra else 1.0, label=C.label(name))
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(fmt)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(METRIC_LABELS[metric])
    if legend:
        ax.legend(fontsize=7)


def plot_clip(clip: dict, codecs: list[str], path: Path, config: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PLOT_METRICS), figsize=(11, 4.2))
    for i, (ax, metric) in enumerate(zip(axes, PLOT_METRICS)):
        _curves(ax, clip, codecs, metric, legend=i == 0)
    fig.suptitle(f"{clip['name']} ({clip['width']}x{clip['height']}, {clip['frames']} frames, "
                 f"keyint {config['keyint']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_summary(clips: list[dict], codecs: list[str], path: Path, config: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(clips)
    fig, axes = plt.subplots(len(PLOT_METRICS), n, figsize=(3.6 * n + 0.6, 3.3 * len(PLOT_METRICS)),
                             squeeze=False)
    for j, clip in enumerate(clips):
        for i, metric in enumerate(PLOT_METRICS):
            ax = axes[i][j]
            _curves(ax, clip, codecs, metric, legend=False)
            if i == 0:
                ax.set_title(f"{clip['name']} {clip['width']}x{clip['height']}", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    ncol = min(len(labels), 2 * n + 1)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8)
    fig.suptitle(f"lvc bench: {n} clip{'s' if n > 1 else ''}, first {config['frames']} frames, "
                 f"keyint {config['keyint']}")
    rows = -(-len(labels) // ncol)
    fig.tight_layout(rect=(0, 0.035 * rows + 0.01, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- markdown --------------------------------------------------------------------------------------------


def _bd_index(results: dict) -> dict:
    return {(r["clip"], r["test"], r["anchor"], r["kind"], r["metric"], r["method"]): r for r in results["bd"]}


def _cell(rec: dict | None) -> str:
    if rec is None:
        return "–"
    if rec["value"] is None:
        return "n/a"
    mark = ""
    if rec["clip"] != "mean" and rec.get("note"):
        mark = f" ({rec['overlap']:.0%} overlap)"
    elif rec["clip"] == "mean" and rec["clips_used"] < rec["clips"]:
        mark = f" ({rec['clips_used']}/{rec['clips']} clips)"
    unit = " %" if rec["kind"] == "rate" else " dB"
    return f"{rec['value']:+.{1 if rec['kind'] == 'rate' else 2}f}{unit}{mark}"


def bd_table(results: dict, test: str, anchors: list[str], method: str = "akima",
             metrics=PLOT_METRICS, kind: str = "rate") -> str:
    """Markdown: BD-rate (``kind`` "rate") or BD-metric ("metric") of ``test`` against each of ``anchors``,
    per clip and mean, on ``metrics``."""
    idx = _bd_index(results)
    head = ["clip"] + [f"vs {C.label(a)} {METRIC_LABELS[m].split(' (')[0]}" for a in anchors for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    names = [c["name"] for c in results["clips"] if "error" not in c] + ["mean"]
    for clip in names:
        cells = [_cell(idx.get((clip, test, a, kind, m, method))) for a in anchors for m in metrics]
        lines.append(f"| {'**mean**' if clip == 'mean' else clip} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def speed_table(results: dict) -> str:
    """Markdown: median encode / decode fps of each codec per clip, and the mean over clips."""
    clips = [c for c in results["clips"] if "error" not in c]
    head = ["codec"] + [f"{c['name']} ({c['width']}x{c['height']})" for c in clips] + ["mean"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for name, per in results["speed"].items():
        cells = []
        for key in [c["name"] for c in clips] + ["mean"]:
            s = per.get(key)
            cells.append("–" if s is None else f"{s['enc_fps']:.2f} / {s['dec_fps']:.2f}")
        lines.append(f"| {C.label(name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def memory_table(results: dict) -> str:
    clips = [c for c in results["clips"] if "error" not in c]
    head = ["codec"] + [c["name"] for c in clips]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for name, per in results["speed"].items():
        cells = []
        for c in clips:
            s = per.get(c["name"])
            cells.append("–" if s is None else f"{s['enc_delta_mb']:.0f} / {s['dec_delta_mb']:.0f}")
        lines.append(f"| {C.label(name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(results: dict) -> str:
    """The headline tables (lvc against each anchor; speed): what the README shows."""
    names = results["config"]["run_codecs"]
    anchors = [n for n in names if n != "lvc" and not C.split(n)[1]]
    parts = []
    if "lvc" in names and anchors:
        parts.append("BD-rate of lvc (Akima; negative: lvc needs fewer bits for the same quality; n/a: the "
                     "curves do not overlap in quality):\n\n" + bd_table(results, "lvc", anchors))
        parts.append("BD-PSNR / BD-MS-SSIM of lvc (Akima; the average quality difference at equal rate, in dB; "
                     "positive: lvc is better):\n\n" + bd_table(results, "lvc", anchors, kind="metric"))
    parts.append("Encode / decode fps (median over the rate points):\n\n" + speed_table(results))
    return "\n\n".join(parts)


def _load_text(runs: list[dict], prov: dict) -> str:
    loads = sorted(r["measured"]["load_average"][0] for r in runs if "load_average" in r.get("measured", {}))
    if loads:
        return (f"1-minute load average when a run started: median {loads[len(loads) // 2]:.1f}, "
                f"range {loads[0]:.1f}–{loads[-1]:.1f}")
    return f"load average at start {prov['load_average_start']}, at end {prov['load_average_end']}"


def _fmt_opts(opts: dict) -> str:
    return ", ".join(f"`{k}={v}`" for k, v in opts.items())


def report_markdown(results: dict) -> str:
    prov, cfg = results["provenance"], results["config"]
    names = cfg["run_codecs"]
    clips = [c for c in results["clips"] if "error" not in c]
    ld = [n for n in names if not C.split(n)[1]]
    ai = [n for n in names if C.split(n)[1]]
    anchor = cfg["anchor"]
    runs = [r for c in clips for r in c["runs"] if "error" not in r]
    cached = prov.get("runs_from_cache", 0)
    when = sorted(r["measured"]["at"] for r in runs if "measured" in r)
    took = (f"{len(runs) - cached} runs measured in {prov['seconds']:.0f} s"
            + (f", {cached} read from the cache" if cached else ""))
    if when and cached:
        took += f" (measurements from {when[0]} to {when[-1]})"
    out = ["# lvc bench: rate–distortion against H.264, H.265 and AV1", "",
           f"{prov['time']} · `{prov['command']}` · {len(clips)} clip(s), first {cfg['frames']} frames, "
           f"keyint {cfg['keyint']}" + (", clips wider than 640 pixels downscaled 2x (area)" if cfg["downscale"]
                                        else "") + f" · {took}", ""]
    if results["failed_runs"] or results["check_problems"]:
        out += ["**Problems:**", ""] + [f"- failed: {p}" for p in results["failed_runs"]] + \
               [f"- settings check: {p}" for p in results["check_problems"]] + [""]
    out += ["## Summary", "", "![RD curves](rd_summary.png)", ""]
    if "lvc" in names:
        others = [n for n in ld if n != "lvc"]
        if others:
            out += ["### lvc against the anchors (low delay)", "",
                    "BD-rate, Akima interpolation (negative: lvc needs fewer bits for the same quality; "
                    "n/a: the curves do not overlap in quality; a percentage in brackets: the curves overlap "
                    f"over less than {cfg['min_overlap']:.0%} of their quality range):", "",
                    bd_table(results, "lvc", others), "", "The same with PCHIP interpolation:", "",
                    bd_table(results, "lvc", others, "pchip"), "",
                    "BD-PSNR / BD-MS-SSIM (Akima): the average quality difference at equal rate over the rates "
                    "both curves cover, in dB (positive: lvc is better); defined even where the qualities do "
                    "not overlap:", "", bd_table(results, "lvc", others, kind="metric"), ""]
        ai_others = [n for n in ai if n != "lvc-intra"]
        if "lvc-intra" in names:
            out += ["### All-intra ablation", "",
                    "lvc against lvc all-intra (keyint 1): what lvc's P-frames buy (Akima):", "",
                    bd_table(results, "lvc", ["lvc-intra"]), ""]
            if ai_others:
                out += ["lvc all-intra against the anchors in all-intra mode (Akima):", "",
                        bd_table(results, "lvc-intra", ai_others), ""]
    rest = [n for n in names if n != anchor]
    if rest:
        idx = _bd_index(results)
        out += [f"### Every codec against {C.label(anchor)}", "",
                "Mean BD-rate over the clips (the per-clip values are in `results.json`):", "",
                "| codec | PSNR-YUV Akima | PSNR-YUV PCHIP | MS-SSIM-Y Akima | MS-SSIM-Y PCHIP | PSNR-RGB Akima | "
                "MS-SSIM-RGB Akima |", "|---|---:|---:|---:|---:|---:|---:|"]
        for n in rest:
            cells = [_cell(idx.get(("mean", n, anchor, "rate", m, meth))) for m, meth in
                     (("psnr_yuv", "akima"), ("psnr_yuv", "pchip"), ("msssim_y_db", "akima"),
                      ("msssim_y_db", "pchip"), ("psnr_rgb", "akima"), ("msssim_rgb_db", "akima"))]
            out.append(f"| {C.label(n)} | " + " | ".join(cells) + " |")
        out.append("")
    out += ["### Speed and memory", "",
            "Encode / decode frames per second, median over the rate points of each codec:", "",
            speed_table(results), "",
            "Peak memory each phase needed (MB, encode / decode: the largest over the rate points of the peak "
            "resident set size during the phase minus the resident size at its start):", "",
            memory_table(results), ""]
    m = prov["machine"]
    out += ["## Method", "",
            f"- **Machine**: {m['cpu']}, {m['cpu_count']} CPUs, {m['memory_gb']} GB; {m['platform']}; torch "
            f"threads {prov['torch_threads']}; {_load_text(runs, prov)}. The fps are wall-clock on this machine, "
            "shared with other work while it ran: not a claim about others.",
            f"- **Software**: lvcodec {prov['lvcodec']}, model `{prov['model']}`, weights hash "
            f"`{prov['weights_hash']}`; torch {prov['torch']}, CompressAI {prov['compressai']}, PyAV {prov['av']}, "
            "FFmpeg " + ", ".join(f"{k} {v}" for k, v in prov["ffmpeg_libraries"].items()) + "; "
            + ", ".join(f"{v}" for v in prov["codec_libraries"].values()) + ".",
            "- **Rates** come from real bytes: lvc, the size of the `.lvc` file; the anchors, the sum of their "
            "packet sizes (the elementary stream: Annex-B H.264/H.265, AV1 OBUs; no container). "
            "bpp = bytes · 8 / (frames · width · height).",
            "- **Metrics** per frame against the source pictures, averaged over frames: PSNR-Y/U/V; "
            "PSNR-YUV = (6·Y + U + V) / 8 on 4:2:0; PSNR-RGB on 8-bit RGB from BT.601 limited-range "
            "conversion (chroma repeated 2x2; the same for every codec); MS-SSIM (Wang et al. 2003, 5 scales) "
            "on luma and on RGB, shown in dB as −10·log10(1 − MS-SSIM). Definitions: "
            "`lvcodec/bench/metrics.py`.",
            f"- **BD-rate**: the `bjontegaard` package, Akima and PCHIP, log-rate over the metric; dominated points "
            f"dropped first; the overlap is the common quality range over the union of both ranges, and is "
            f"flagged below {cfg['min_overlap']:.0%}. Means are over the clips that have a value.",
            "- **Speed**: encode fps = frames / seconds of the encode call (lvc after an untimed warm-up; "
            "anchors with frames prepared and the encoder opened); decode fps = frames / seconds to get 4:2:0 "
            "planes back. Peak memory per phase from Linux `VmHWM`, reset before each phase (after handing "
            "freed heap memory back with `malloc_trim`), minus the resident size at the phase's start.",
            "- **Settings checks**: " + ("all passed (anchors: one packet per frame, no reordering, key frames "
                                         "exactly every keyint frames, and the options in x264's / x265's SEI or "
                                         "the AV1 frame headers; lvc: the stream header and a drift-free decode)."
                                         if not results["check_problems"] else
                                         f"{len(results['check_problems'])} problem(s), listed at the top."),
            "", "Codec settings (CRF / quality sweeps and every option passed):", "",
            "| codec | settings | options |", "|---|---|---|"]
    for n, d in results["codecs"].items():
        opts = dict(d["options"])
        inner = opts.pop("options", {})
        out.append(f"| {C.label(n)} | {', '.join(map(str, d['settings']))} | {_fmt_opts(opts)}"
                   + (f"; {_fmt_opts(inner)}" if inner else "") + " |")
    out += ["", "Clips:", "", "| clip | source | coded size | frames | fps | source format | preprocessing | "
            "sha256 of the pictures |", "|---|---|---|---:|---:|---|---|---|"]
    for c in results["clips"]:
        if "error" in c:
            out.append(f"| {c['name']} | {c['source']} | – | – | – | – | not read: {c['error']} | – |")
            continue
        out.append(f"| {c['name']} | `{c['source']}` | {c['width']}x{c['height']} | {c['frames']} | "
                   f"{float(Fraction(c['rate'])):.3f} | {c['source_width']}x{c['source_height']} "
                   f"{c['source_pix_fmt']} | {'; '.join(c['preprocessing']) or '–'} | `{c['sha256'][:16]}` |")
    out += ["", "## Per clip", ""]
    for c in clips:
        out += [f"### {c['name']} ({c['width']}x{c['height']})", "", f"![{c['name']}]({plot_name(c['name'])})", "",
                "| codec | setting | bpp | PSNR-Y | PSNR-U | PSNR-V | PSNR-YUV | PSNR-RGB | MS-SSIM-Y | "
                "MS-SSIM-RGB | enc fps | dec fps | enc / dec MB |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in c["runs"]:
            if "error" in r:
                out.append(f"| {C.label(r['codec'])} | {r['setting']} | failed: {r['error']} |" + " |" * 10)
                continue
            mem = r["memory"]
            out.append(f"| {C.label(r['codec'])} | {r['setting']} | {r['bpp']:.4f} | {r['psnr_y']:.2f} | "
                       f"{r['psnr_u']:.2f} | {r['psnr_v']:.2f} | {r['psnr_yuv']:.2f} | {r['psnr_rgb']:.2f} | "
                       f"{r['msssim_y']:.4f} | {r['msssim_rgb']:.4f} | {r['enc_fps']:.2f} | {r['dec_fps']:.2f} | "
                       f"{mem['enc_delta_mb'] or 0:.0f} / {mem['dec_delta_mb'] or 0:.0f} |")
        out.append("")
    return "\n".join(out)


def write_report(results: dict, out: Path) -> list[Path]:
    """Write the per-clip and summary PNGs and ``report.md`` into ``out``; return their paths."""
    out = Path(out)
    cfg = results["config"]
    names = cfg["run_codecs"]
    clips = [c for c in results["clips"] if "error" not in c]
    written = []
    for c in clips:
        p = out / plot_name(c["name"])
        plot_clip(c, names, p, cfg)
        written.append(p)
    if clips:
        p = out / "rd_summary.png"
        plot_summary(clips, names, p, cfg)
        written.append(p)
    p = out / "report.md"
    p.write_text(report_markdown(results) + "\n")
    written.append(p)
    return written
