"""Rate-distortion and speed of lvc next to x264 (through PyAV), per clip.

For each clip the first ``--frames`` frames (default 32) are read once with
``lvcodec.frames.read_pictures`` and kept in memory; both codecs code exactly those pictures with one
intra frame every ``--keyint`` frames (default 32) and no B-frames.

* lvc: ``lvcodec.codec.encode_pictures`` at each quality in ``--qualities`` (default 1..8) into a real
  temporary file; rate = size of that file on disk. Decoded with ``lvcodec.decode``.
* x264: libx264 through PyAV (no external binaries), yuv420p, preset=medium, tune=psnr, crf in ``--crfs``
  (default 22,26,30,34,38), x264-params ``keyint=K:min-keyint=K:scenecut=0:bframes=0``; rate = sum of the
  encoded packet sizes (raw Annex-B H.264 elementary stream, no container). Decoded with PyAV's h264
  decoder. The script checks that the settings took effect: one packet per frame, decode order ==
  presentation order, an IDR exactly every K frames, and the option string x264 writes into its SEI.

bpp = bits * 8 / (frames * width * height). PSNR-YUV per frame = (6 PSNR-Y + PSNR-U + PSNR-V) / 8
(``lvcodec.psnr_yuv``), averaged over frames, against the source pictures.
Encode fps = frames / encode seconds (lvc: the ``encode_pictures`` call, after one untimed warm-up
encode+decode of two frames per clip so model loading is not counted; x264: feeding prepared
``av.VideoFrame`` s and flushing). Decode fps = frames / seconds to get numpy 4:2:0 planes back
(lvc: iterating ``lvcodec.decode``; x264: h264 decode + ``lvcodec.frames.from_av``).

x264 with yuv420p needs even frame sizes; the bench clips are all even (with ``--downscale`` clips are
first cropped to a multiple of 4 so that the halved size stays even).

Exact command line used for the closing note (run from the repository root)::

    nice -n 5 python benchmarks/rd_x264.py --out benchmarks/results/rd_x264.json \
        | tee benchmarks/results/rd_x264.md

(defaults: all files in ../shared/data/bench, --frames 32 --keyint 32 --qualities 1,2,3,4,5,6,7,8
--crfs 22,26,30,34,38, no --downscale)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BENCH = REPO.parent / "shared" / "data" / "bench"
X264_PRESET = "medium"
X264_TUNE = "psnr"
X264_THREAD_TYPE = "FRAME"


# ----------------------------------------------------------------------------------------------- input

def load_clip(path: str, frames: int, downscale: bool):
    """(info, list of source Pictures) for the first ``frames`` frames of ``path``."""
    from lvcodec.frames import read_pictures

    info, it = read_pictures(path, frames)
    pics = list(it)
    if downscale and info.width > 640:
        pics = [downscale2x(p) for p in pics]
    return info, pics


def _avg2x2(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
    b = a[:h, :w].astype(np.uint16)
    s = b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)


def downscale2x(pic):
    """2x area downscale (mean of 2x2) of each plane, after cropping luma to a multiple of 4."""
    from lvcodec.frames import Picture

    h4, w4 = pic.height // 4 * 4, pic.width // 4 * 4
    y = pic.y[:h4, :w4]
    u, v = pic.u[: h4 // 2, : w4 // 2], pic.v[: h4 // 2, : w4 // 2]
    return Picture(_avg2x2(y), _avg2x2(u), _avg2x2(v), pic.pts)


def mean_psnr(src, dec) -> float:
    from lvcodec import psnr_yuv

    if len(src) != len(dec):
        raise RuntimeError(f"decoded {len(dec)} frames, expected {len(src)}")
    return float(np.mean([psnr_yuv(a, b) for a, b in zip(src, dec)]))


def bpp(nbytes: int, frames: int, w: int, h: int) -> float:
    return nbytes * 8 / (frames * w * h)


# ------------------------------------------------------------------------------------------------- lvc

def warm_up_lvc(pics, rate: Fraction, quality: int, keyint: int) -> None:
    """Encode and decode the first two pictures once, untimed: model loading and first-call costs."""
    import io

    from lvcodec import bitstream as bs
    from lvcodec.codec import Decoder, encode_pictures

    buf = io.BytesIO()
    encode_pictures(pics[:2], buf, pics[0].width, pics[0].height, rate, quality=quality, keyint=keyint)
    buf.seek(0)
    reader = bs.Reader(buf)
    dec = Decoder(reader.header)
    for packet in reader.packets():
        dec.decode(packet)


def run_lvc(pics, rate: Fraction, quality: int, keyint: int) -> dict:
    import lvcodec
    from lvcodec.codec import encode_pictures

    w, h, n = pics[0].width, pics[0].height, len(pics)
    fd, path = tempfile.mkstemp(suffix=".lvc")
    os.close(fd)
    try:
        t0 = time.perf_counter()
        with open(path, "wb") as fp:
            stats = encode_pictures(pics, fp, w, h, rate, quality=quality, keyint=keyint)
        t_enc = time.perf_counter() - t0
        size = os.path.getsize(path)
        t0 = time.perf_counter()
        dec = list(lvcodec.decode(path))
        t_dec = time.perf_counter() - t0
    finally:
        os.unlink(path)
    return {"codec": "lvc", "setting": f"q{quality}", "quality": quality, "bytes": size,
            "bpp": bpp(size, n, w, h), "psnr_yuv": mean_psnr(pics, dec),
            "encoder_psnr_yuv": stats.psnr_yuv, "encode_s": t_enc, "decode_s": t_dec,
            "enc_fps": n / t_enc, "dec_fps": n / t_dec}


# ------------------------------------------------------------------------------------------------ x264

def x264_params(keyint: int) -> str:
    return f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=0"


def x264_options(crf: int, keyint: int) -> dict:
    return {"preset": X264_PRESET, "tune": X264_TUNE, "crf": str(crf), "x264-params": x264_params(keyint)}


def x264_encode(pics, rate: Fraction, crf: int, keyint: int):
    """Encode with libx264; return (packets as (bytes, pts, is_keyframe), seconds)."""
    import av

    w, h = pics[0].width, pics[0].height
    if w % 2 or h % 2:
        raise ValueError(f"x264 yuv420p needs an even frame size, got {w}x{h}")
    cc = av.CodecContext.create("libx264", "w")
    cc.width, cc.height, cc.pix_fmt = w, h, "yuv420p"
    cc.time_base = Fraction(1) / Fraction(rate)
    cc.framerate = Fraction(rate)
    cc.gop_size = keyint
    cc.max_b_frames = 0
    cc.thread_type = X264_THREAD_TYPE  # frame threads, as the x264 CLI (PyAV's default gives slices)
    cc.options = x264_options(crf, keyint)
    frames = []
    for i, p in enumerate(pics):
        f = p.to_av()
        f.pts = i
        f.time_base = cc.time_base
        frames.append(f)
    out = []
    t0 = time.perf_counter()
    for f in frames:
        out.extend(cc.encode(f))
    out.extend(cc.encode(None))
    secs = time.perf_counter() - t0
    return [(bytes(p), p.pts, p.is_keyframe) for p in out], secs


def x264_decode(packets):
    """Decode Annex-B packets with PyAV's h264 decoder; return (Pictures, seconds)."""
    import av

    from lvcodec.frames import from_av

    t0 = time.perf_counter()
    dc = av.CodecContext.create("h264", "r")
    pics = []
    for data, _, _ in packets:
        for fr in dc.decode(av.Packet(data)):
            pics.append(from_av(fr))
    for fr in dc.decode(None):
        pics.append(from_av(fr))
    return pics, time.perf_counter() - t0


def x264_sei_options(packets) -> str | None:
    """The option string x264 writes into its user-data SEI (first packet), if present."""
    m = re.search(rb"options: ([ -~]+)", packets[0][0]) if packets else None
    return m.group(1).decode() if m else None


def check_x264(packets, n: int, keyint: int, sei: str | None) -> list[str]:
    """Problems with how the x264 settings were applied (empty list when all is as asked)."""
    problems = []
    if len(packets) != n:
        problems.append(f"{len(packets)} packets for {n} frames")
    pts = [p[1] for p in packets]
    if pts != sorted(pts):
        problems.append("decode order != presentation order (B-frames or reordering)")
    keys = [i for i, p in enumerate(packets) if p[2]]
    if keys != list(range(0, n, keyint)):
        problems.append(f"key frames at {keys}, expected every {keyint}")
    if sei is None:
        problems.append("no x264 SEI option string found")
    else:
        opts = dict(kv.split("=", 1) for kv in sei.split() if "=" in kv)
        want = {"bframes": "0", "keyint": str(keyint), "scenecut": "0"}
        for k, v in want.items():
            if opts.get(k) != v:
                problems.append(f"SEI {k}={opts.get(k)}, expected {v}")
        if opts.get("psy") not in (None, "0"):
            problems.append(f"SEI psy={opts.get('psy')} (tune=psnr should disable psy)")
    return problems


def run_x264(pics, rate: Fraction, crf: int, keyint: int) -> dict:
    w, h, n = pics[0].width, pics[0].height, len(pics)
    packets, t_enc = x264_encode(pics, rate, crf, keyint)
    dec, t_dec = x264_decode(packets)
    size = sum(len(p[0]) for p in packets)
    sei = x264_sei_options(packets)
    return {"codec": "x264", "setting": f"crf{crf}", "crf": crf, "bytes": size,
            "bpp": bpp(size, n, w, h), "psnr_yuv": mean_psnr(pics, dec), "encode_s": t_enc,
            "decode_s": t_dec, "enc_fps": n / t_enc, "dec_fps": n / t_dec, "packets": len(packets),
            "keyframes": [i for i, p in enumerate(packets) if p[2]], "sei_options": sei,
            "problems": check_x264(packets, n, keyint, sei)}


# ----------------------------------------------------------------------------------------- reporting

def bd_rate(anchor: list[dict], test: list[dict]) -> tuple[str, float | None]:
    """BD-rate (PSNR-YUV, akima) of ``test`` against ``anchor`` as (text, value); 'n/a' when it can't."""
    try:
        import bjontegaard as bd

        # interpolation runs over the distortion axis: order by PSNR (a rate that dips is then harmless)
        a = sorted(anchor, key=lambda r: r["psnr_yuv"])
        t = sorted(test, key=lambda r: r["psnr_yuv"])
        pa, pt = [r["psnr_yuv"] for r in a], [r["psnr_yuv"] for r in t]
        lo, hi = max(min(pa), min(pt)), min(max(pa), max(pt))
        if hi <= lo:
            return "n/a (PSNR ranges do not overlap)", None
        v = float(bd.bd_rate([r["bpp"] for r in a], pa, [r["bpp"] for r in t], pt, method="akima",
                             require_matching_points=False))
        if not np.isfinite(v):
            return "n/a", None
        frac = (hi - lo) / (max(pa) - min(pa))
        return f"{v:+.1f}% (over PSNR-YUV {lo:.2f}..{hi:.2f} dB, {frac:.0%} of the x264 range)", v
    except Exception as e:  # noqa: BLE001 - an optional figure; never fail the run for it
        return f"n/a ({type(e).__name__}: {e})", None


def table(rows: list[dict]) -> str:
    lines = ["| codec | setting | bpp | PSNR-YUV (dB) | enc fps | dec fps |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['codec']} | {r['setting']} | {r['bpp']:.4f} | {r['psnr_yuv']:.2f} | "
                     f"{r['enc_fps']:.2f} | {r['dec_fps']:.2f} |")
    return "\n".join(lines)


def provenance(args) -> dict:
    import av
    import torch

    import lvcodec

    return {
        "command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "lvcodec": lvcodec.__version__, "torch": torch.__version__, "av": av.__version__,
        "ffmpeg_libraries": {k: ".".join(map(str, v)) for k, v in av.library_versions.items()},
        "python": platform.python_version(),
        "machine": {"processor": platform.processor(), "platform": platform.platform(),
                    "cpu_count": os.cpu_count()},
        "torch_threads": torch.get_num_threads(),
        "frames": args.frames, "keyint": args.keyint, "qualities": args.qualities, "crfs": args.crfs,
        "downscale": args.downscale,
        "x264": {"codec": "libx264 via PyAV", "pix_fmt": "yuv420p", "gop_size": args.keyint,
                 "max_b_frames": 0, "thread_type": X264_THREAD_TYPE, "options": x264_options("<crf>", args.keyint)},
        "rate_definition": {"lvc": "size of the .lvc file on disk",
                            "x264": "sum of encoded packet sizes (Annex-B elementary stream, no container)"},
        "psnr_definition": "mean over frames of (6 PSNR-Y + PSNR-U + PSNR-V)/8 against the source pictures",
    }


# ---------------------------------------------------------------------------------------------- main

def bench_clip(path: str, args) -> dict:
    info, pics = load_clip(path, args.frames, args.downscale)
    w, h, n = pics[0].width, pics[0].height, len(pics)
    print(f"## {Path(path).name}: {w}x{h}"
          f"{f' (downscaled from {info.width}x{info.height})' if (w, h) != (info.width, info.height) else ''}"
          f", {n} frames, {float(info.rate):.3f} fps, source pix_fmt {info.pix_fmt}\n", flush=True)
    rows = []
    if args.qualities:
        warm_up_lvc(pics, info.rate, args.qualities[0], args.keyint)
    for q in args.qualities:
        rows.append(run_lvc(pics, info.rate, q, args.keyint))
        print(f"  lvc q{q} done", file=sys.stderr, flush=True)
    for c in args.crfs:
        rows.append(run_x264(pics, info.rate, c, args.keyint))
        print(f"  x264 crf{c} done", file=sys.stderr, flush=True)
    print(table(rows))
    lvc = [r for r in rows if r["codec"] == "lvc"]
    x264 = [r for r in rows if r["codec"] == "x264"]
    text, value = bd_rate(x264, lvc)
    print(f"\nBD-rate (PSNR-YUV, akima) of lvc vs x264: {text}")
    problems = sorted({p for r in x264 for p in r["problems"]})
    print("x264 settings check: " + ("ok (1 packet/frame, no reordering, IDR every keyint, SEI options match)"
                                     if not problems else "PROBLEMS: " + "; ".join(problems)))
    if x264 and x264[0]["sei_options"]:
        print(f"x264 SEI options ({x264[0]['setting']}): `{x264[0]['sei_options']}`")
    print(flush=True)
    return {"clip": str(path), "width": w, "height": h, "source_width": info.width,
            "source_height": info.height, "frames": n, "rate": str(info.rate), "pix_fmt": info.pix_fmt,
            "rows": rows, "bd_rate_lvc_vs_x264_percent": value, "bd_rate_text": text}


def int_list(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("clips", nargs="*", help=f"videos (default: every file in {DEFAULT_BENCH})")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--keyint", type=int, default=32)
    ap.add_argument("--qualities", type=int_list, default=list(range(1, 9)), help="comma list (default 1..8)")
    ap.add_argument("--crfs", type=int_list, default=[22, 26, 30, 34, 38], help="comma list")
    ap.add_argument("--downscale", action="store_true", help="2x area downscale of clips wider than 640")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "rd_x264.json"))
    args = ap.parse_args(argv)
    if not args.clips:
        args.clips = sorted(str(p) for p in DEFAULT_BENCH.iterdir() if p.is_file())
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    prov = provenance(args)
    print(f"# lvc vs x264: first {args.frames} frames, keyint {args.keyint}\n")
    print(f"lvcodec {prov['lvcodec']}, torch {prov['torch']} ({prov['torch_threads']} threads), "
          f"PyAV {prov['av']}, libavcodec {prov['ffmpeg_libraries'].get('libavcodec')}; "
          f"{prov['machine']['processor'] or platform.machine()}, {prov['machine']['cpu_count']} CPUs.")
    print(f"x264: libx264 via PyAV, preset={X264_PRESET}, tune={X264_TUNE}, "
          f"x264-params {x264_params(args.keyint)}. Rate: lvc = .lvc file size; "
          f"x264 = sum of packet sizes (raw H.264, no container). PSNR-YUV = (6Y+U+V)/8, mean over frames.\n",
          flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clips = []
    for c in args.clips:  # the JSON is rewritten after every clip, so a cut-short run keeps what it did
        clips.append(bench_clip(c, args))
        prov["complete"] = len(clips) == len(args.clips)
        out.write_text(json.dumps({"provenance": prov, "clips": clips}, indent=1) + "\n")
    print(f"results written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
