"""The ``lvc bench`` command: a thin click layer over :func:`lvcodec.bench.run.run_bench` (imports nothing
heavy until it runs, so ``lvc --help`` stays fast)."""

from __future__ import annotations

import sys

import click

from ..errors import cli_errors

FAMILIES = ("lvc", "x264", "x265", "svtav1")


def _int_list(lo: int, hi: int):
    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            vals = tuple(int(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f'"{value}" is not a comma-separated list of integers') from None
        bad = [v for v in vals if not lo <= v <= hi]
        if not vals or bad:
            raise click.BadParameter(f'"{value}": values should be between {lo} and {hi}')
        return vals

    return parse


def _codecs(ctx, param, value):
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    from .codecs import is_model

    for n in names:
        fam = n.removesuffix("-intra")
        if fam not in FAMILIES and not is_model(fam):
            raise click.BadParameter(f'unknown codec "{n}", should be one of {", ".join(FAMILIES)} '
                                     'or a registered model (lvc models), optionally with "-intra"')
    if not names:
        raise click.BadParameter("no codec given")
    return names


@click.command()
@click.argument("clips", nargs=-1)
@click.option("--codecs", default="lvc,x264,x265,svtav1", show_default=True, callback=_codecs,
              help="comma-separated: lvc, x264, x265, svtav1 or a registered model (low delay); "
                   "NAME-intra for one all-intra variant")
@click.option("--intra/--no-intra", default=True, show_default=True,
              help="also run every listed codec in all-intra mode (keyint 1; lvc-intra is the ablation)")
@click.option("--frames", type=click.IntRange(1), default=32, show_default=True, help="first N frames of each clip")
@click.option("--keyint", type=click.IntRange(1, 65535), default=32, show_default=True,
              help="I-frame period of every low-delay codec")
@click.option("--qualities", default="1,2,3,4,5,6,7,8", show_default=True, callback=_int_list(1, 8),
              help="lvc qualities")
@click.option("--crfs", default="22,26,30,34,38", show_default=True, callback=_int_list(0, 51),
              help="x264 and x265 CRFs")
@click.option("--svtav1-crfs", default="27,36,45,54,63", show_default=True, callback=_int_list(1, 63),
              help="SVT-AV1 CRFs")
@click.option("--downscale", is_flag=True, help="halve clips wider than 640 pixels (2x2 area filter) first")
@click.option("--anchor", default="x264", show_default=True, help="codec the BD-rates of all others are taken against")
@click.option("--out", "out", default="bench-out", show_default=True, type=click.Path(file_okay=False),
              help="folder for results.json, report.md, the PNGs and the run cache")
@click.option("-j", "--jobs", type=click.IntRange(1), default=1, show_default=True,
              help="clips benchmarked in parallel processes (timings then share the CPU)")
@click.option("--no-cache", is_flag=True, help="run everything again (the cache in --out is rewritten)")
@click.option("--quiet", is_flag=True, help="no progress bar or summary")
@cli_errors(interrupted="lvc: interrupted (finished runs are cached: the same command resumes)")
def bench(clips, codecs, intra, frames, keyint, qualities, crfs, svtav1_crfs, downscale, anchor, out, jobs,
          no_cache, quiet):
    """Rate–distortion benchmark of lvc against x264, x265 and SVT-AV1 (through PyAV) on CLIPS: videos PyAV
    reads, or demo / demo:WxH for a generated clip. Default: every file in ../shared/data/bench if that
    exists, else the generated clip. Writes results.json, report.md and RD plots into --out; an interrupted
    run resumes from the cache there."""
    import os
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\..*")
    from .clips import parse_demo
    from .run import BenchConfig, run_bench

    for c in clips:
        try:
            if parse_demo(c) is None and not os.path.isfile(c):
                raise click.BadParameter(f"{c}: no such file", param_hint="CLIPS")
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="CLIPS") from None
    try:
        config = BenchConfig(codecs=codecs, intra=intra, frames=frames, keyint=keyint, qualities=qualities,
                             crfs=crfs, svtav1_crfs=svtav1_crfs, downscale=downscale, anchor=anchor, jobs=jobs,
                             cache=not no_cache)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    results = run_bench(list(clips) or None, config, out, progress=not quiet)
    if not quiet:
        from .report import summary_markdown

        click.echo(summary_markdown(results))
        click.echo(f"\nresults: {out}/results.json, {out}/report.md, {out}/rd_summary.png", err=True)
    problems = results["failed_runs"] + results["check_problems"]
    for p in problems:
        click.echo(f"lvc: bench: {p}", err=True)
    if problems:
        sys.exit(1)
