"""Model construction for training: one function from a model name and its arguments to the
(intra, inter) pair. The only place ``lvc train`` learns what a model name means (kept small on purpose:
a model registry can take it over)."""

from __future__ import annotations

import glob
import os
from typing import Any, Callable

from ..errors import InputError


def _lvc_hyperprior_v1(N: int = 96, M: int = 128, Nz: int = 96, F: int = 48):
    from ..models import InterModel, IntraModel

    return IntraModel(N, M, Nz), InterModel(N, M, Nz, F=F)


_BUILDERS: dict[str, Callable[..., tuple[Any, Any]]] = {
    "lvc-hyperprior-v1": _lvc_hyperprior_v1,
}


def model_names() -> list[str]:
    return sorted(_BUILDERS)


def build_models(name: str, **args):
    """A fresh (intra, inter) model pair of the model ``name`` built with ``args`` (e.g. ``N=16, M=16,
    Nz=16`` for a tiny test model); an unknown name or argument is an :class:`InputError`."""
    if name not in _BUILDERS:
        raise InputError(f'unknown model "{name}", should be one of {", ".join(model_names())}')
    try:
        return _BUILDERS[name](**args)
    except TypeError as e:
        raise InputError(f"model {name}: bad arguments {args} ({e})") from None


def init_weights(intra, inter, folder: str) -> list[str]:
    """Load ``intra*.safetensors`` and ``inter*.safetensors`` from ``folder`` (``"shipped"``: the weights
    that ship with lvcodec) into the models; return the files read."""
    from ..models import upgrade_state
    from ..weights import WEIGHTS_DIR, load_state

    where = str(WEIGHTS_DIR) if folder == "shipped" else folder
    read = []
    for kind, model in (("intra", intra), ("inter", inter)):
        found = sorted(glob.glob(os.path.join(where, f"{kind}*.safetensors")))
        if len(found) != 1:
            raise InputError(f"[model] init: {where} should hold one {kind}*.safetensors, it holds {len(found)}")
        try:
            model.load_state_dict(upgrade_state(model, load_state(found[0], None)))
        except RuntimeError as e:  # "Error(s) in loading state_dict ...:" then one line per problem
            lines = [x.strip() for x in str(e).splitlines() if x.strip()]
            detail = (lines[1] if len(lines) > 1 else lines[0] if lines else "")[:200]
            raise InputError(f"[model] init: {found[0]} does not fit the model ({detail})") from None
        read.append(found[0])
    return read
