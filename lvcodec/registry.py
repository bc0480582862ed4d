"""The model registry: any model that follows :class:`CodecModel` gets the ``.lvc`` container, the CLI
(``lvc encode --model NAME``) and the benchmark (``lvc bench --codecs NAME``) for free.

Register in your own code with the decorator, or from a package through the entry-point group
``lvcodec.models`` (``[project.entry-points."lvcodec.models"] my-codec = "my_pkg.codec:MyCodec"``)::

    @lvcodec.register_model("my-codec", model_id=0x8001)
    class MyCodec(lvcodec.CodecModel):
        ...

``model_id`` is the number written into streams (``bitstream/SPEC.md`` §7): ids below 0x8000 are assigned
in the spec for the models lvcodec ships; 0x8000..0xFFFF are free for third-party and experimental
models. A stream also carries the SHA-256 of the weights, so a stream never meets the wrong model
silently, whatever the id.
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

from .errors import BitstreamError, LvcError

ENTRY_POINT_GROUP = "lvcodec.models"
DEFAULT_MODEL = "lvc-hyperprior-v1"
PRIVATE_IDS = range(0x8000, 0x10000)


class ModelError(LvcError, KeyError):
    """An unknown model name, or a registration that clashes with another."""

    exit_code = 2

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CodecModel:
    """What a model provides to be coded into ``.lvc`` files. Subclass it and register the subclass.

    Pictures reach a model as float tensors (1, 6, H/2, W/2) in [0, 1] — the 2x2 pixel-unshuffle of Y
    then U and V of an 8-bit 4:2:0 picture (:func:`lvcodec.frames.to_tensor`) — padded so that the luma
    size is a multiple of :attr:`downsampling`. Reconstructions come back in the same layout; the codec
    rounds them to 8 bits, and the rounded picture is the reference of the next P-frame (closed loop).

    Contract:

    - ``__init__()`` takes no arguments and loads the weights (verify their hash).
    - :meth:`weights_sha256` identifies the weights (32 bytes); it goes into every stream header.
    - :meth:`encode_intra` / :meth:`decode_intra` code a picture alone; :meth:`encode_inter` /
      :meth:`decode_inter` code it given the decoded previous picture (only if :attr:`has_inter`).
      ``encode_*`` return ``(substreams, x_hat)``, with ``x_hat`` exactly what ``decode_*`` will return
      from those substreams: the decoder must rebuild the same entropy parameters on any machine.
    - ``quality`` is 1..:attr:`num_qualities`; higher is better quality and more bits.
    - :meth:`encode_keyframe` codes the I-frames of streams with P-frames, which the whole GOP predicts
      from; by default it is :meth:`encode_intra`, and a model may spend more encoder effort there.
    - :meth:`intra_offset` is how many quality levels above the stream's quality the encoder codes
      I-frames by default (a better reference for the whole GOP; such packets carry their quality).
    - :meth:`inter_offset` is the same for each P-frame, by its position in the GOP (default 0).
    - :attr:`presets` names the encoder effort levels the model offers, fastest first (x264-style
      ``--preset``), and :meth:`with_preset` returns the model coding at one of them. A preset changes only
      the encoder's choices: every preset's streams decode alike.
    - Training is the model's own business (e.g. CompressAI-style ``forward`` returning
      ``{"x_hat", "likelihoods"}``); ``lvc train`` knows the built-in models.
    """

    name: str = ""  # set by register_model
    model_id: int = 0  # set by register_model
    num_qualities: int = 1
    downsampling: int = 64
    has_inter: bool = False
    #: substreams of an I and of a P packet (informative; listed by ``lvc info`` and the docs)
    substreams_intra: tuple[str, ...] = ()
    substreams_inter: tuple[str, ...] = ()
    #: substreams a packet of either kind may add after those (a packet has all, some or none of them)
    substreams_optional: tuple[str, ...] = ()
    #: set by the encoder: (width, height) of the picture within the padded tensors, so that a model can
    #: spend nothing on the padding (None: all of it counts)
    display_size: tuple[int, int] | None = None
    #: names the encoder's choices (search, refinement) for the same weights: change it when they change,
    #: so benchmark results cached for the old encoder are not reused
    encoder_version: str = ""
    #: encoder effort levels, fastest first, and the one used when none is asked for (``None``: no choice)
    presets: tuple[str, ...] = ()
    default_preset: str | None = None

    def with_preset(self, preset: str | None) -> "CodecModel":
        """This model coding at the encoder effort ``preset`` (one of :attr:`presets`; ``None``: the
        default). A model with presets overrides :meth:`_configure`; the result may share the weights."""
        if self.check_preset(preset) in (None, self.default_preset):
            return self
        import copy

        other = copy.copy(self)
        other._configure(preset)
        return other

    @classmethod
    def check_preset(cls, preset: str | None) -> str | None:
        """``preset`` if it is ``None`` or one of :attr:`presets`, else a ValueError naming the ones offered."""
        if preset is not None and preset not in cls.presets:
            offered = f"available: {', '.join(cls.presets)}" if cls.presets else "it has none"
            raise ValueError(f'unknown preset "{preset}" for model {cls.name} ({offered})')
        return preset

    def _configure(self, preset: str) -> None:
        """Set this (copied) instance's encoder choices to those of ``preset``."""
        raise NotImplementedError

    def intra_offset(self, quality: int) -> int:
        """Levels above ``quality`` at which the encoder codes I-frames of streams with P-frames (default 0)."""
        return 0

    def inter_offset(self, quality: int, index: int) -> int:
        """Levels added to ``quality`` for the P-frame ``index`` pictures after its I-frame (default 0); a
        result outside the model's levels is clamped, and such packets carry their quality."""
        return 0

    def weights_sha256(self) -> bytes:
        raise NotImplementedError

    def encode_intra(self, x, quality: int):
        raise NotImplementedError

    def decode_intra(self, substreams: list[bytes], coded_size: tuple[int, int], quality: int):
        raise NotImplementedError

    def encode_keyframe(self, x, quality: int):
        """Code an I-frame that P-frames will predict from (the I-frames of streams with P-frames). The
        packet is an ordinary I-frame, decoded by :meth:`decode_intra`; only the encoder's effort may differ."""
        return self.encode_intra(x, quality)

    def encode_inter(self, x, ref, quality: int):
        raise NotImplementedError

    def decode_inter(self, substreams: list[bytes], coded_size: tuple[int, int], ref, quality: int):
        raise NotImplementedError


C = TypeVar("C", bound=type)

_models: dict[str, type[CodecModel]] = {}
_loaded: dict[str, CodecModel] = {}
_lock = threading.Lock()
_entry_points_done = False


def register_model(name: str, model_id: int) -> Callable[[C], C]:
    """Class decorator: register a :class:`CodecModel` subclass under ``name`` and stream id ``model_id``."""

    def deco(cls: C) -> C:
        if not (isinstance(cls, type) and issubclass(cls, CodecModel)):
            raise TypeError(f"{cls!r} is not a CodecModel subclass")
        if not 1 <= model_id <= 0xFFFF:
            raise ValueError(f"model_id {model_id} out of range (1..65535)")
        for other in _models.values():
            if other.model_id == model_id and other.name != name:
                raise ModelError(f'model id 0x{model_id:04x} is taken by "{other.name}"')
        old = _models.get(name)
        if old is not None and old is not cls and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ModelError(f'a model named "{name}" is already registered ({old.__module__}.{old.__qualname__})')
        cls.name, cls.model_id = name, model_id
        _models[name] = cls
        _loaded.pop(name, None)
        return cls

    return deco


def _load_entry_points() -> None:
    """Import third-party models advertised under the ``lvcodec.models`` entry-point group (once)."""
    global _entry_points_done
    if _entry_points_done:
        return
    _entry_points_done = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as e:  # a broken plugin must not break lvc
            import warnings

            warnings.warn(f"lvcodec: could not load model plugin {ep.name!r} ({ep.value}): {e}", stacklevel=2)
            continue
        if isinstance(obj, type) and issubclass(obj, CodecModel) and obj.name not in _models:
            raise ModelError(f'plugin "{ep.name}" ({ep.value}) is not registered: decorate it with '
                             f"@lvcodec.register_model(name, model_id)")


def _builtin() -> None:
    from . import zoo  # noqa: F401  (registers the shipped models)


def list_models() -> list[str]:
    """Names of every registered model: the shipped ones and those of installed plugins."""
    _builtin()
    _load_entry_points()
    return sorted(_models)


def model_class(name: str) -> type[CodecModel]:
    _builtin()
    if name not in _models:
        _load_entry_points()
    try:
        return _models[name]
    except KeyError:
        raise ModelError(f'unknown model "{name}" (available: {", ".join(sorted(_models))})') from None


def model_class_by_id(model_id: int) -> type[CodecModel]:
    _builtin()
    for _ in range(2):
        for cls in _models.values():
            if cls.model_id == model_id:
                return cls
        _load_entry_points()
    raise BitstreamError(f"stream needs model id 0x{model_id:04x}, which is not installed "
                         f"(installed: {', '.join(f'{c.name} 0x{c.model_id:04x}' for c in _models.values())})")


def load_model(name: str = DEFAULT_MODEL, quality: int | None = None) -> CodecModel:
    """The model ``name`` with its weights loaded (one shared instance per name).

    ``quality``, when given, is checked against the model's range (a ``ValueError`` naming it)."""
    cls = model_class(name)
    if quality is not None:
        check_quality(quality, cls.num_qualities)
    with _lock:
        if name not in _loaded:
            _loaded[name] = cls()
        return _loaded[name]


def check_quality(quality, num_qualities: int) -> int:
    import numbers

    if isinstance(quality, bool) or not isinstance(quality, numbers.Integral) or not 1 <= quality <= num_qualities:
        raise ValueError(f'invalid quality "{quality}", should be between 1 and {num_qualities}')
    return int(quality)
