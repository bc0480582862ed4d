"""Training lvc's models: ``lvc train CONFIG`` (see ``docs/training.md``).

Submodules: :mod:`.config` (the TOML file), :mod:`.data` (videos and images to batches), :mod:`.build`
(model names to models), :mod:`.loop` (stages, loss, checkpoints, DDP), :mod:`.distributed` (torchrun),
:mod:`.precision` (bf16 autocast of the transforms), :mod:`.evaluate` (RD through compress/decompress) and
:mod:`.export` (safetensors and the model card). Importing this package is cheap: torch loads on first use
of :func:`build_models` or :func:`train`.
"""

from __future__ import annotations

from .config import Config, load_config, parse_config

__all__ = ["Config", "build_models", "load_config", "parse_config", "train"]


def build_models(name: str, **args):
    """A fresh (intra, inter) pair of the model ``name``, e.g. ``build_models("lvc-hyperprior-v1", N=16, M=16, Nz=16)``."""
    from .build import build_models as _build

    return _build(name, **args)


def train(config, out: str | None = None, **kwargs):
    """Run the training ``config`` describes (a :class:`Config` or a TOML path); see :func:`.loop.run`."""
    from .loop import run

    if not isinstance(config, Config):
        config = load_config(config)
    return run(config, out, **kwargs)
