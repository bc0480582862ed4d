"""``python -m lvcodec.train CONFIG`` = ``lvc train CONFIG``; the form torchrun takes:
``torchrun --nproc_per_node 2 -m lvcodec.train CONFIG``."""

from .cli import train

train(prog_name="python -m lvcodec.train")
