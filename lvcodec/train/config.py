"""The training configuration: a TOML file read into frozen dataclasses.

Every key is checked: an unknown key, a wrong type or a value out of range is one line naming the file,
the key and what is allowed (an :class:`~lvcodec.errors.InputError`, exit code 2 on the command line).
Relative paths are taken relative to the directory ``lvc train`` runs in. No torch here: a bad config
fails fast.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Callable

from ..errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

NUM_QUALITIES = 8  # lvcodec.models.NUM_QUALITIES, repeated so reading a config needs no torch
MODEL_MULTIPLE = 64  # lvcodec.models downsampling: crops are a multiple of it
TRAINABLE = ("intra", "inter")


@dataclass(frozen=True)
class ModelConfig:
    """``[model]``: which model to build (see :func:`lvcodec.train.build_models`) and where to start."""

    name: str = "lvc-hyperprior-v1"
    args: tuple[tuple[str, Any], ...] = ()  # constructor arguments, e.g. {N = 16, M = 16, Nz = 16}
    init: str | None = None  # folder with intra*.safetensors and inter*.safetensors, or "shipped"

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.args)


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: folders of videos and images (searched recursively), or a packed ``.npz``."""

    video: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    packed: str | None = None  # an .npz made by tools/pack_data.py
    crop: int = 128  # square training crops, luma pixels (a multiple of 64)
    downscale_above: int = 0  # halve (2x2 area filter) sources whose larger side exceeds this; 0: never
    max_frames: int = 300  # frames read from the start of each video
    max_stride: int = 2  # frames of a training sequence are 1..max_stride source frames apart
    cache_mb: int = 1024  # decoded frames and images kept in memory (least recently used go first)
    holdout: float = 0.1  # share of the files kept out of training for the final RD measurement


@dataclass(frozen=True)
class TrainConfig:
    """``[train]``: everything that is not data, model or a stage."""

    out: str = ".out/train"  # run folder: checkpoint, log.csv, exported weights and model card
    seed: int = 0
    device: str = "auto"  # auto (CUDA when available), cpu, cuda
    precision: str = "auto"  # auto (bf16 autocast of the transforms on CUDA, fp32 on CPU), fp32, bf16
    lambdas: tuple[float, ...] | None = None  # per quality 1..8; default lvcodec.models.LAMBDAS
    search_radius: int = 4  # coarsest-level radius of the motion search during training
    motion_blocks: tuple[int, ...] = (16, 32, 64)  # block sizes drawn per P-frame batch (the encoder's choices)
    clip_grad: float = 1.0  # gradient-norm clip, 0: off
    checkpoint_every: int = 500  # steps; a checkpoint is also written at the end of every stage
    log_every: int = 50  # steps per row of log.csv
    deterministic: bool = False  # torch.use_deterministic_algorithms (GPU: exact resumes, slower)


@dataclass(frozen=True)
class StageConfig:
    """One ``[[stage]]``: ``steps`` optimizer steps on a fixed mix of intra and P-frame work."""

    name: str
    steps: int
    lr: float = 1e-4
    lr_final: float | None = None  # learning rate of the last quarter of the stage (default: lr)
    aux_lr: float = 1e-3  # entropy-bottleneck quantiles (the "aux" loss)
    images: int = 8  # image crops per step and process, coded as I-frames
    sequences: int = 0  # video sequences per step and process
    frames: int = 1  # per sequence: 1 = one I-frame; n >= 2: an I-frame then n-1 P-frames
    train: tuple[str, ...] = ()  # models updated: intra, inter (default: intra, plus inter if frames >= 2)

    @property
    def p_frames(self) -> int:
        return self.frames - 1 if self.sequences else 0


@dataclass(frozen=True)
class EvalConfig:
    """``[eval]``: the RD measurement after training, on held-out files, through compress/decompress."""

    qualities: tuple[int, ...] = tuple(range(1, NUM_QUALITIES + 1))  # [] skips the measurement
    frames: int = 8  # first frames of each held-out video (one I-frame, then P-frames)
    crop: int = 256  # centre crop, luma pixels; 0: whole frames
    videos: int = 4  # at most this many held-out videos
    images: int = 8  # at most this many held-out images


@dataclass(frozen=True)
class PriorsConfig:
    """``[priors]``: before export, the fixed priors (ẑ, vector residuals) are fitted to the symbols the
    encoder codes on whole pictures of training videos (:mod:`lvcodec.train.priors`), then the
    checkerboard context of ŷ to its latents (:mod:`lvcodec.train.context`)."""

    videos: int = 30  # at most this many training videos; 0 skips the fit
    frames: int = 6  # first frames of each (one I-frame, then P-frames)
    steps: int = 3000  # optimizer steps of each ẑ / vector prior fit
    context_steps: int = 20000  # then the checkerboard context of ŷ, fitted on the same videos; 0 skips it


@dataclass(frozen=True)
class Config:
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    stages: tuple[StageConfig, ...]
    eval: EvalConfig
    path: str = ""  # the file it was read from
    text: str = field(default="", repr=False)  # its text (kept in checkpoints and the model card)
    priors: PriorsConfig = PriorsConfig()

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)


# -- checking ---------------------------------------------------------------------------------------


class _Bad(Exception):
    pass


def _int(lo: int | None = None, hi: int | None = None, multiple: int = 1) -> Callable:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Bad("should be an integer")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise _Bad(f"should be {_range(lo, hi)}")
        if v % multiple:
            raise _Bad(f"should be a multiple of {multiple}")
        return v

    return check


def _range(lo, hi) -> str:
    if hi is None:
        return f">= {lo}"
    return f"between {lo} and {hi}" if lo is not None else f"<= {hi}"


def _float(lo: float = 0.0, hi: float | None = None, lo_open: bool = False) -> Callable:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _Bad("should be a number")
        if (v <= lo if lo_open else v < lo) or (hi is not None and v > hi):
            raise _Bad(f"should be {'>' if lo_open else '>='} {lo}" + (f" and <= {hi}" if hi is not None else ""))
        return float(v)

    return check


def _str(choices: tuple[str, ...] | None = None) -> Callable:
    def check(v):
        if not isinstance(v, str) or not v:
            raise _Bad("should be a non-empty string")
        if choices and v not in choices:
            raise _Bad(f"should be one of {', '.join(choices)}")
        return v

    return check


def _bool(v):
    if not isinstance(v, bool):
        raise _Bad("should be true or false")
    return v


def _paths(v):
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(p, str) and p for p in v):
        raise _Bad("should be a folder or a list of folders")
    return tuple(v)


def _optional(check: Callable) -> Callable:
    return lambda v: None if v is None else check(v)


def _lambdas(v):
    if not isinstance(v, list) or len(v) != NUM_QUALITIES:
        raise _Bad(f"should be a list of {NUM_QUALITIES} numbers (quality 1 to {NUM_QUALITIES})")
    out = tuple(_float(0.0, lo_open=True)(x) for x in v)
    return out


def _qualities(v):
    if not isinstance(v, list):
        raise _Bad("should be a list of qualities")
    out = tuple(_int(1, NUM_QUALITIES)(x) for x in v)
    if len(set(out)) != len(out):
        raise _Bad("has a quality twice")
    return tuple(sorted(out))


def _motion_blocks(v):
    from ..mvcoding import BLOCK_SIZES

    if not isinstance(v, list) or not v or not all(isinstance(x, int) and x in BLOCK_SIZES for x in v):
        raise _Bad(f"should be a list of motion block sizes among {', '.join(map(str, BLOCK_SIZES))}")
    return tuple(sorted(set(v)))


def _train_list(v):
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v or not all(x in TRAINABLE for x in v):
        raise _Bad(f"should be a list of {' and/or '.join(TRAINABLE)}")
    return tuple(x for x in TRAINABLE if x in v)


def _model_args(v):
    if not isinstance(v, dict) or not all(isinstance(x, (int, float, str, bool)) for x in v.values()):
        raise _Bad("should be a table of numbers, strings or booleans, e.g. {N = 16, M = 16, Nz = 16}")
    return tuple(sorted(v.items()))


_CHECKS: dict[type, dict[str, Callable]] = {
    ModelConfig: {"name": _str(), "args": _model_args, "init": _optional(_str())},
    DataConfig: {
        "video": _paths, "images": _paths, "packed": _optional(_str()),
        "crop": _int(MODEL_MULTIPLE, 4096, MODEL_MULTIPLE), "downscale_above": _int(0),
        "max_frames": _int(2), "max_stride": _int(1, 16), "cache_mb": _int(0),
        "holdout": _float(0.0, 0.9),
    },
    TrainConfig: {
        "out": _str(), "seed": _int(0, 2**63 - 1), "device": _str(("auto", "cpu", "cuda")),
        "precision": _str(("auto", "fp32", "bf16")), "lambdas": _optional(_lambdas),
        "search_radius": _int(1, 64), "motion_blocks": _motion_blocks, "clip_grad": _float(0.0), "checkpoint_every": _int(1),
        "log_every": _int(1), "deterministic": _bool,
    },
    StageConfig: {
        "name": _str(), "steps": _int(1), "lr": _float(0.0, 1.0, lo_open=True),
        "lr_final": _optional(_float(0.0, 1.0, lo_open=True)), "aux_lr": _float(0.0, 1.0, lo_open=True),
        "images": _int(0, 4096), "sequences": _int(0, 4096), "frames": _int(1, 64), "train": _train_list,
    },
    EvalConfig: {
        "qualities": _qualities, "frames": _int(1, 4096), "crop": _int(0, 8192, 2), "videos": _int(0),
        "images": _int(0),
    },
    PriorsConfig: {"videos": _int(0), "frames": _int(2, 4096), "steps": _int(1), "context_steps": _int(0)},
}


def _section(cls, table: Any, where: str, path: str):
    if not isinstance(table, dict):
        raise InputError(f"{path}: {where} should be a table")
    checks = _CHECKS[cls]
    known = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in table.items():
        if key not in checks:
            raise InputError(f"{path}: unknown key {where}.{key} (known: {', '.join(known)})")
        try:
            kwargs[key] = checks[key](value)
        except _Bad as e:
            raise InputError(f"{path}: {where}.{key} = {_show(value)} {e}") from None
    missing = [f.name for f in fields(cls)
               if f.default is MISSING and f.default_factory is MISSING and f.name not in kwargs]
    if missing:
        raise InputError(f"{path}: {where} needs {', '.join(missing)}")
    return cls(**kwargs)



def _show(v: Any) -> str:
    s = repr(v) if not isinstance(v, str) else f'"{v}"'
    return s if len(s) <= 40 else s[:37] + "..."


def parse_config(text: str, path: str = "<config>") -> Config:
    """A :class:`Config` from TOML text; every problem is an :class:`InputError` of one line."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML ({e})") from None
    sections = {"model", "data", "train", "stage", "eval", "priors"}
    for key in doc:
        if key not in sections:
            raise InputError(f"{path}: unknown section [{key}] "
                             "(known: [model], [data], [train], [[stage]], [eval], [priors])")
    model = _section(ModelConfig, doc.get("model", {}), "[model]", path)
    data = _section(DataConfig, doc.get("data", {}), "[data]", path)
    train = _section(TrainConfig, doc.get("train", {}), "[train]", path)
    ev = _section(EvalConfig, doc.get("eval", {}), "[eval]", path)
    pr = _section(PriorsConfig, doc.get("priors", {}), "[priors]", path)
    raw = doc.get("stage")
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{path}: no [[stage]]: give at least one, e.g. [[stage]] name = \"intra\" steps = 1000")
    stages = []
    for i, t in enumerate(raw, 1):
        where = f"[[stage]] {i}" + (f' ("{t["name"]}")' if isinstance(t, dict) and isinstance(t.get("name"), str) else "")
        s = _section(StageConfig, t, where, path)
        if not s.train:
            s = replace(s, train=("intra", "inter") if s.frames >= 2 else ("intra",))
        _check_stage(s, where, path)
        stages.append(s)
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise InputError(f"{path}: two stages are named the same ({', '.join(names)})")
    if not data.video and not data.images and not data.packed:
        raise InputError(f"{path}: [data] has no video, images or packed: give at least one")
    if any(s.images for s in stages) and not data.images and not data.packed:
        raise InputError(f"{path}: a stage asks for images but [data] has no images folder")
    if any(s.sequences for s in stages) and not data.video and not data.packed:
        raise InputError(f"{path}: a stage asks for sequences but [data] has no video folder")
    return Config(model, data, train, tuple(stages), ev, path, text, pr)


def _check_stage(s: StageConfig, where: str, path: str) -> None:
    if s.images + s.sequences == 0:
        raise InputError(f"{path}: {where} codes nothing: set images or sequences above 0")
    if "inter" in s.train and (s.frames < 2 or not s.sequences):
        raise InputError(f"{path}: {where} trains inter but has no P-frames: set frames >= 2 and sequences >= 1")
    if s.frames >= 2 and s.sequences and "inter" not in s.train:
        raise InputError(f"{path}: {where} codes P-frames but does not train inter: add it to train")


def load_config(path: str | os.PathLike) -> Config:
    """Read and check the TOML file ``path``."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    return parse_config(text, path)
