"""``python -m lvcodec.bench ...`` is ``lvc bench ...``."""

from .cli import bench

bench(prog_name="python -m lvcodec.bench")
