"""Shipped weights: safetensors files with pinned SHA-256, loaded offline; nothing is unpickled."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

WEIGHTS_DIR = Path(__file__).parent / "weights"


class WeightsError(ValueError):
    """A weights file is missing, or its SHA-256 does not match the registry."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_state(path: str | os.PathLike, sha256: str | None) -> dict[str, torch.Tensor]:
    """Read a safetensors state dict, refusing a file whose hash differs from ``sha256``."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256:
            raise WeightsError(f"weights file {path.name} has SHA-256 {got[:16]}…, expected {sha256[:16]}…")
    return load_file(str(path))


def save_state(model: torch.nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> str:
    """Write ``model``'s state dict (CDF tables included) as safetensors; return its SHA-256."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=metadata or {})
    return sha256_file(path)
