"""The ``lvc train`` command: a thin click layer over :func:`lvcodec.train.loop.run` (torch is imported only
when the command runs, so ``lvc --help`` stays fast)."""

from __future__ import annotations

import click

from ..errors import cli_errors


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--out", type=click.Path(file_okay=False), default=None,
              help="run folder (default: [train] out in CONFIG)")
@click.option("--resume", is_flag=True, help="continue the run in the run folder from its checkpoint")
@click.option("-y", "--overwrite", is_flag=True, help="start over in a run folder that holds a run")
@click.option("--stop-after", type=click.IntRange(1), default=None,
              help="stop after this many steps in all (a checkpoint is written; continue with --resume)")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="override [train] device")
@click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads per process")
@click.option("--check", is_flag=True, help="read CONFIG, scan the data and print the plan; train nothing")
@click.option("--quiet", is_flag=True, help="no progress bar or log lines")
@cli_errors(interrupted="lvc: interrupted (continue from the last checkpoint with --resume)")
def train(config, out, resume, overwrite, stop_after, device, threads, check, quiet):
    """Train a model as the TOML file CONFIG describes (data, model, stages, evaluation): checkpoints,
    log.csv, and at the end safetensors weights and MODEL_CARD.md in the run folder. Runs the same under
    torchrun (torchrun --nproc_per_node N -m lvcodec.train CONFIG) with DistributedDataParallel.
    See docs/training.md."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\..*")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.distributed\..*")
    if resume and overwrite:
        raise click.UsageError("--resume and -y/--overwrite exclude each other")
    threads_before = None
    try:
        from .config import load_config

        cfg = load_config(config)
        from .loop import run

        import torch

        if threads:
            threads_before = torch.get_num_threads()
            torch.set_num_threads(threads)
        res = run(cfg, out, resume=resume, overwrite=overwrite, stop_after=stop_after, device=device,
                  progress=not quiet, check_only=check)
    finally:
        if threads_before:
            import torch

            torch.set_num_threads(threads_before)
    if check or not res.finished:
        return
    if res.rd is not None and not quiet and res.files:
        from .evaluate import rd_table

        click.echo(rd_table(res.rd), nl=False)
