"""The ``lvc`` command line: a thin click layer over :mod:`lvcodec.codec` (no codec logic here)."""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from fractions import Fraction

import click

from .errors import cli_errors


NUM_QUALITIES = 8  # lvcodec.models.NUM_QUALITIES (kept here so --help needs no torch)
QUALITY = click.IntRange(1, NUM_QUALITIES)
# compressai uses torch.jit.script, which newer torch flags as deprecated: not the user's concern.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\..*")


_errors = cli_errors()  # one-line errors and documented exit codes instead of a traceback


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lvcodec")
def main() -> None:
    """lvc — a learned video codec. Exit codes: 0 ok, 1 error, 2 bad input, 3 bad stream,
    4 output exists, 130 interrupted."""


@main.command()
@click.argument("src")
@click.argument("dst")
@click.option("-q", "--quality", type=click.IntRange(1, 255), default=4, show_default=True,
              help=f"1 (smallest) .. {NUM_QUALITIES} (best) for the default model")
@click.option("--keyint", type=click.IntRange(1, 65535), default=32, show_default=True, help="I-frame period")
@click.option("--intra-offset", type=click.IntRange(0, 255), default=None,
              help="code I-frames this many quality levels above -q (default: the model's; for the default model 2 at "
                   "-q 1, 1 at -q 2..3, else 0)")
@click.option("--preset", default=None,
              help="encoder effort, like x264's: for the default model faster, fast or medium (default); "
                   "every preset's streams decode alike")
@click.option("--frames", type=click.IntRange(1), default=None, help="encode at most this many frames")
@click.option("-y", "--overwrite", is_flag=True, help="overwrite DST if it exists")
@click.option("--model", default="lvc-hyperprior-v1", show_default=True, help="a registered model (lvc models)")
@click.option("--quiet", is_flag=True, help="no progress bar or summary")
@_errors
def encode(src, dst, quality, keyint, intra_offset, preset, frames, overwrite, model, quiet):
    """Encode SRC (any video PyAV reads; - for stdin) to the .lvc file DST (- for stdout)."""
    from .codec import encode as run
    from .registry import model_class

    cls = model_class(model)
    levels = cls.num_qualities
    if quality > levels:
        raise click.BadParameter(f"{quality} is not in the range 1..{levels} of model {model}",
                                 param_hint="'-q' / '--quality'")
    try:
        cls.check_preset(preset)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--preset'") from None
    st = run(src, dst, quality=quality, keyint=keyint, overwrite=overwrite, max_frames=frames,
             progress=not quiet, model=model, intra_offset=intra_offset, preset=preset)
    if st.source_pix_fmt not in ("yuv420p", "yuvj420p"):
        click.echo(f"lvc: note: input is {st.source_pix_fmt}, coded as 8-bit 4:2:0 (yuv420p)", err=True)
    if st.variable_rate:
        click.echo(f"lvc: note: input has a variable frame rate, coded at a constant "
                   f"{float(st.rate):.6g} fps (frame timing is not kept)", err=True)
    if not quiet:
        click.echo(f"{st.frames} frames {st.width}x{st.height}, {st.bytes} bytes, {st.bpp:.4f} bpp, "
                   f"PSNR-YUV {st.psnr_yuv:.2f} dB, {st.fps:.2f} fps", err=True)


@main.command()
@click.argument("src")
@click.argument("dst", required=False)
@click.option("--start-frame", type=click.IntRange(0), default=0, show_default=True,
              help="first frame to output (decoding starts at the keyframe before it, found through the index)")
@click.option("--frames", type=click.IntRange(1), default=None, help="output at most this many frames")
@click.option("--conceal", is_flag=True,
              help="replace damaged or missing frames by the last good one and resync at the next keyframe")
@click.option("--md5", is_flag=True, help="print the MD5 of each decoded frame (Y, U, V planes) to stdout")
@click.option("-y", "--overwrite", is_flag=True, help="overwrite DST if it exists")
@click.option("--quiet", is_flag=True, help="no progress bar or summary")
@_errors
def decode(src, dst, start_frame, frames, conceal, md5, overwrite, quiet):
    """Decode the .lvc file SRC (- for stdin) to DST: .y4m, .mkv (lossless FFV1), .mp4 (H.264) or .yuv;
    - writes y4m to stdout. DST may be left out with --md5."""
    import contextlib
    import hashlib

    from .codec import DecodeStats, _AtomicOutput, _bar, decode as run
    from .errors import LvcError
    from .writers import format_for, open_writer

    if dst is None and not md5:
        raise click.UsageError("missing argument DST (or give --md5)")
    if dst == "-" and md5:
        raise click.UsageError("--md5 prints to stdout: give DST as a file")
    if dst is not None:
        format_for(dst)  # refuse an unknown output type before doing anything
    out = _AtomicOutput(dst, overwrite) if dst is not None else contextlib.nullcontext()
    st = DecodeStats()
    t0 = time.perf_counter()
    with out, _bar(not quiet, "decode") as bar:
        w = None
        for i, pic in enumerate(run(src, start_frame, frames, conceal, st)):
            if w is None and dst is not None:
                w = open_writer(out.fp, dst, pic.width, pic.height, Fraction(st.header.fps_num, st.header.fps_den))
            if w is not None:
                w.write(pic)
            if md5:
                digest = hashlib.md5(pic.y.tobytes() + pic.u.tobytes() + pic.v.tobytes()).hexdigest()
                click.echo(f"{start_frame + i:6d} {pic.pts:8d} {digest}")
            bar.update(1)
        if st.frames == 0:
            raise LvcError(f"{src}: no frames to output (start frame {start_frame})")
        if w is not None:
            w.close()
    if conceal and st.concealed:
        click.echo(f"lvc: warning: {st.concealed} damaged or missing frames concealed", err=True)
    if not quiet:
        dt = time.perf_counter() - t0
        click.echo(f"{st.frames} frames decoded, {st.frames / dt if dt else 0:.2f} fps", err=True)


@main.command()
@click.argument("src")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")
@click.option("--frames/--no-frames", "per_frame", default=True, show_default=True, help="per-frame table")
@_errors
def info(src, as_json, per_frame):
    """Describe the .lvc file SRC like ffprobe: header, model, duration, bitrate and per-frame packets."""
    import json

    from .probe import probe

    r = probe(src)
    if as_json:
        if not per_frame:
            r.pop("frames")
        click.echo(json.dumps(r, indent=2))
        return
    h = r["header"]
    click.echo(f"lvc {r['version']}  {h['width']}x{h['height']} (coded {h['coded_width']}x{h['coded_height']})  "
               f"{h['fps_num']}/{h['fps_den']} fps  time base {h['tb_num']}/{h['tb_den']}")
    click.echo(f"model {h['model']} (weights sha256 {h['weights_sha256'][:16]}...)  quality {h['quality']}  "
               f"keyint {h['keyint']}  entropy coder {h['entropy_coder']}")
    click.echo(f"4:2:0 8-bit  colour primaries {h['colour_primaries']}  transfer {h['transfer_characteristics']}  "
               f"matrix {h['matrix_coefficients']}  {'full' if h['full_range'] else 'limited'} range")
    if per_frame:
        click.echo("   frame      pts  type  quality     bytes")
        for f in r["frames"]:
            click.echo(f"{f['frame']:8d} {f['pts']:8d}  {f['type']:>4}  {f['quality']:7d}  {f['bytes']:8d}")
    s = r["summary"]
    click.echo(f"{s['frames']} frames ({s['keyframes']} keyframes), {s['duration']:.3f} s, {s['file_bytes']} bytes, "
               f"{s['bitrate_kbps']:.1f} kbit/s, container overhead {s['overhead_bytes']} bytes "
               f"({100 * s['overhead_share']:.2f} %)")


@main.command("models")
@_errors
def models_():
    """List the registered models: shipped ones and installed plugins (entry points "lvcodec.models")."""
    from .registry import list_models, model_class

    for name in list_models():
        c = model_class(name)
        click.echo(f"{name:24s} id 0x{c.model_id:04x}  qualities 1..{c.num_qualities}  "
                   f"{'intra+inter' if c.has_inter else 'intra only'}  {c.__module__}.{c.__qualname__}")


@main.command()
@click.option("-q", "--quality", type=QUALITY, default=4, show_default=True)
@click.option("--frames", type=click.IntRange(2, 300), default=32, show_default=True)
@click.option("--keyint", type=click.IntRange(1, 65535), default=32, show_default=True)
@click.option("--size", default="352x288", show_default=True, help="WIDTHxHEIGHT of the generated clip")
@_errors
def demo(quality, frames, keyint, size):
    """Encode and decode a built-in clip (a pan and zoom over scikit-image's photos) and report
    bits per pixel, PSNR and speed."""
    from .codec import decode as dec, encode_pictures, psnr_yuv
    from .demo import demo_clip

    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f'"{size}" is not WIDTHxHEIGHT', param_hint="--size") from None
    click.echo(f"generating a {frames}-frame {w}x{h} clip (pan and zoom over scikit-image photos)", err=True)
    pics = demo_clip(frames, w, h)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "demo.lvc")
        with open(path, "wb") as f:
            st = encode_pictures(pics, f, w, h, Fraction(25), quality, keyint)
        t0 = time.perf_counter()
        decoded = list(dec(path))
        dt = time.perf_counter() - t0
    psnr = sum(psnr_yuv(a, b) for a, b in zip(pics, decoded)) / len(pics)
    click.echo(f"quality {quality}, keyint {keyint}: {st.bytes} bytes, {st.bpp:.4f} bpp, "
               f"PSNR-YUV {psnr:.2f} dB, encode {st.fps:.2f} fps, decode {len(decoded) / dt:.2f} fps")


from .bench.cli import bench  # noqa: E402  (lvc bench; imports nothing heavy until it runs)

main.add_command(bench)

from .train.cli import train  # noqa: E402  (lvc train; imports nothing heavy until it runs)

main.add_command(train)
