"""The ``lvc`` command line: a thin click layer over :mod:`lvcodec.codec` (no codec logic here)."""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
import warnings
from fractions import Fraction

import click


NUM_QUALITIES = 8  # lvcodec.models.NUM_QUALITIES (kept here so --help needs no torch)
QUALITY = click.IntRange(1, NUM_QUALITIES)
# compressai uses torch.jit.script, which newer torch flags as deprecated: not the user's concern.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\..*")


def _errors(fn):
    """One-line error and a documented exit code instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .errors import LvcError

        try:
            return fn(*args, **kwargs)
        except LvcError as e:
            click.echo(f"lvc: error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("lvc: interrupted", err=True)
            sys.exit(130)
        except OSError as e:
            click.echo(f"lvc: error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lvcodec")
def main() -> None:
    """lvc — a learned video codec. Exit codes: 0 ok, 1 error, 2 bad input, 3 bad stream,
    4 output exists, 130 interrupted."""


@main.command()
@click.argument("src")
@click.argument("dst")
@click.option("-q", "--quality", type=QUALITY, default=4, show_default=True, help="1 (smallest) .. 8 (best)")
@click.option("--keyint", type=click.IntRange(1, 65535), default=32, show_default=True, help="I-frame period")
@click.option("--frames", type=click.IntRange(1), default=None, help="encode at most this many frames")
@click.option("-y", "--overwrite", is_flag=True, help="overwrite DST if it exists")
@click.option("--quiet", is_flag=True, help="no progress bar or summary")
@_errors
def encode(src, dst, quality, keyint, frames, overwrite, quiet):
    """Encode SRC (any video PyAV reads; - for stdin) to the .lvc file DST (- for stdout)."""
    from .codec import encode as run

    st = run(src, dst, quality=quality, keyint=keyint, overwrite=overwrite, max_frames=frames,
             progress=not quiet)
    if st.source_pix_fmt not in ("yuv420p", "yuvj420p"):
        click.echo(f"lvc: note: input is {st.source_pix_fmt}, coded as 8-bit 4:2:0 (yuv420p)", err=True)
    if not quiet:
        click.echo(f"{st.frames} frames {st.width}x{st.height}, {st.bytes} bytes, {st.bpp:.4f} bpp, "
                   f"PSNR-YUV {st.psnr_yuv:.2f} dB, {st.fps:.2f} fps", err=True)


@main.command()
@click.argument("src")
@click.argument("dst")
@click.option("-y", "--overwrite", is_flag=True, help="overwrite DST if it exists")
@click.option("--quiet", is_flag=True, help="no progress bar or summary")
@_errors
def decode(src, dst, overwrite, quiet):
    """Decode the .lvc file SRC (- for stdin) to DST: .y4m, .mkv (lossless FFV1), .mp4 (H.264) or .yuv;
    - writes y4m to stdout."""
    from . import bitstream as bs
    from .codec import Decoder, _AtomicOutput, _bar, _open_lvc
    from .writers import format_for, open_writer

    format_for(dst)  # refuse an unknown output type before doing anything
    fp = _open_lvc(src)
    try:
        reader = bs.Reader(fp)
        h = reader.header
        out = _AtomicOutput(dst, overwrite)
        dec = Decoder(h)
        t0, n = time.perf_counter(), 0
        with out, _bar(not quiet, "decode") as bar:
            w = open_writer(out.fp, dst, h.width, h.height, Fraction(h.fps_num, h.fps_den))
            for packet in reader.packets():
                w.write(dec.decode(packet))
                n += 1
                bar.update(1)
            w.close()
    finally:
        if src != "-":
            fp.close()
    if not quiet:
        dt = time.perf_counter() - t0
        click.echo(f"{n} frames {h.width}x{h.height} decoded, {n / dt if dt else 0:.2f} fps", err=True)


@main.command()
@click.argument("src")
@_errors
def info(src):
    """Print the header and the per-frame packet table of the .lvc file SRC."""
    from . import bitstream as bs
    from .codec import _open_lvc

    fp = _open_lvc(src)
    try:
        r = bs.Reader(fp)
        h = r.header
        click.echo(f"lvc {r.version[0]}.{r.version[1]}  {h.width}x{h.height}  {h.fps_num}/{h.fps_den} fps  "
                   f"model {bs.MODEL_IDS[h.model_id]} ({h.weights_hash.hex()})  quality {h.quality}  "
                   f"keyint {h.keyint}")
        total, rows = 0, []
        for p in r.packets():
            total += p.size
            rows.append(f"{p.pts:6d}  {'I' if p.is_keyframe else 'P'}  {p.size:8d}")
        click.echo("   pts  type   bytes")
        click.echo("\n".join(rows))
        dur = len(rows) * h.fps_den / h.fps_num
        click.echo(f"{len(rows)} frames, {dur:.2f} s, payload {total} bytes, "
                   f"{total * 8 / dur / 1000 if dur else 0:.1f} kbit/s")
    finally:
        fp.close()


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
