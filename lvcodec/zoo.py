"""The models lvcodec ships, registered under their fixed stream ids (``bitstream/SPEC.md`` §7)."""

from __future__ import annotations

import hashlib
from functools import lru_cache

from .registry import CodecModel, register_model

#: Shipped weights of lvc-hyperprior-v1: file name and SHA-256 (checked at load).
WEIGHTS = {
    "intra": ("intra-29530fba.safetensors", "29530fbac770e8d08672a49f2103b3aac78035722c5f3d955944351c9d26747c"),
    "inter": ("inter-6a5eafd5.safetensors", "6a5eafd58f3cccf3a46ab94954f438fa47e8b771ba1fd16616fb92d1d65b625d"),
}


def mv_lambda(q: int) -> float:
    """Smoothness weight of the motion search at quality ``q`` (1..8): stronger at low rates."""
    return 0.25 * 1.9 ** (-(q - 1) / 2)


def _encoder_version(decide: str, refine: int) -> str:
    """Names a preset's encoder choices (benchmark results are cached under it)."""
    blocks = "stop-exact" if decide == "coded" else "by-estimate"
    return f"keyframe-refine-{refine}-best-lr-by-q+blocks-8-16-32-64-{blocks}+skip+plane-mask+p-offsets-0-1-1-1+layer-2+block-field-6tap+region-mask"


def weights_hash() -> bytes:
    """SHA-256 identifying the shipped weights, written in every stream header: the SHA-256 of the
    concatenated hex SHA-256s of the weight files (intra, inter)."""
    return hashlib.sha256("".join(h for _, h in WEIGHTS.values()).encode()).digest()


@lru_cache(maxsize=1)
def load_models():
    """The shipped intra and inter models (eval mode, CPU), weights verified against their SHA-256."""
    from .models import InterModel, IntraModel, upgrade_state
    from .weights import WEIGHTS_DIR, load_state

    intra, inter = IntraModel(), InterModel()
    for model, key in ((intra, "intra"), (inter, "inter")):
        model.load_state_dict(upgrade_state(model, load_state(WEIGHTS_DIR / WEIGHTS[key][0], WEIGHTS[key][1])))
    return intra.eval(), inter.eval()


@register_model("lvc-hyperprior-v1", model_id=1)
class HyperpriorV1(CodecModel):
    """Variable-rate mean-scale hyperprior I-frames (:class:`~lvcodec.models.IntraModel`) and P-frames
    coded given a block-motion-compensated prediction (:class:`~lvcodec.models.InterModel`); the motion
    is found by search at the encoder (:mod:`lvcodec.motion`) and coded with the inter model's vector
    prior."""

    has_inter = True
    num_qualities = 8  # = len(lvcodec.models.LAMBDAS); kept here so the registry needs no torch
    downsampling = 64
    substreams_intra = ("z+y",)  # one rANS stream: the hyper-latent, then the latent
    substreams_inter = ("motion+z+y",)  # one rANS stream: block size, latent flag, vectors, [ẑ, ŷ, plane mask]
    #: I and P packets may add the residual layer (lvcodec.layer, SPEC §7.2) as a second rANS stream
    substreams_optional = ("layer",)
    #: the layer's rate-distortion weight relative to the picture's quality: I-frames' detail is inherited
    #: by the P-frames that predict from them, so it is worth more bits there (MODEL_CARD.md)
    LAYER_WEIGHT = {"keyframe": 2.0, "intra": 1.0, "inter": 1.0}
    #: I-frame quality offset per quality level: a better I-frame pays off at low rates only (MODEL_CARD.md)
    INTRA_OFFSETS = (2, 1, 1, 0, 0, 0, 0, 0)
    #: P-frame quality offset by position in the GOP, repeating every 4 pictures after the I-frame: every
    #: 4th P-frame at the stream's quality, the others one level below (clamped at 1); the better ones
    #: refresh the reference chain (MODEL_CARD.md)
    INTER_OFFSETS = (0, -1, -1, -1)
    #: gradient steps refining the latent of the I-frames of streams with P-frames (all-intra streams stay
    #: fast); about 2.4 s per 640x368 picture on 2 cores, -2.3 % BD-rate (MODEL_CARD.md)
    KEYFRAME_REFINE_STEPS = 20
    #: motion block sizes a P-frame may use (InterModel.encode; any subset of mvcoding.BLOCK_SIZES decodes):
    #: 16 only is about twice as fast to encode, -15 % BD-rate with 16, 32 and 64; 8 (tried only where 32
    #: does not beat 16) pays on detailed motion (MODEL_CARD.md)
    MOTION_BLOCKS = (8, 16, 32, 64)
    #: motion fields a P-frame may use (InterModel.encode; both decode): the block field alone, since on the
    #: bench clips it beat choosing per picture by the prediction's error (MODEL_CARD.md)
    MOTION_FIELDS = ("block",)
    #: whether a P-frame may code its latent only in the 64x64 regions where it pays (the region mask, SPEC
    #: §7.1), tried at the chosen block size for one more synthesis (MODEL_CARD.md)
    REGION_MASK = True
    #: encoder effort levels (``lvc encode --preset``): how the block size is chosen (InterModel.encode's
    #: ``decide``) and the key frames' refinement steps. Measured in MODEL_CARD.md.
    PRESETS = {
        "faster": {"decide": "estimate", "refine": 0},
        "fast": {"decide": "estimate", "refine": KEYFRAME_REFINE_STEPS},
        "medium": {"decide": "coded", "refine": KEYFRAME_REFINE_STEPS},
    }
    presets = tuple(PRESETS)
    default_preset = "medium"
    encoder_version = _encoder_version(**PRESETS[default_preset])

    def _configure(self, preset: str) -> None:
        self.preset = preset
        self.decide = self.PRESETS[preset]["decide"]
        self.refine_steps = self.PRESETS[preset]["refine"]
        self.encoder_version = _encoder_version(**self.PRESETS[preset])

    def intra_offset(self, quality: int) -> int:
        return self.INTRA_OFFSETS[quality - 1]

    def inter_offset(self, quality: int, index: int) -> int:
        return self.INTER_OFFSETS[index % len(self.INTER_OFFSETS)]

    def __init__(self):
        self.intra, self.inter = load_models()
        self._configure(self.default_preset)

    def weights_sha256(self) -> bytes:
        return weights_hash()

    def _add_layer(self, x, out: dict, quality: int, kind: str):
        """The packet's substreams and picture with the residual layer, when it pays (lvcodec.layer)."""
        from . import layer
        from .frames import quantize8
        from .models import LAMBDAS

        x_hat = quantize8(out["x_hat"])
        lam = LAMBDAS[quality - 1] * self.LAYER_WEIGHT[kind]
        data, x_new = layer.encode(x, x_hat, lam, display=self.display_size)
        return (list(out["strings"]) + [data], x_new) if data is not None else (out["strings"], x_hat)

    @staticmethod
    def _decode_layer(substreams, x_hat):
        import torch

        if not torch.isfinite(x_hat).all():  # a corrupt latent can drive the synthesis to inf or NaN
            raise ValueError("corrupt stream: the synthesised picture is not finite")
        if len(substreams) < 2:
            return x_hat
        from . import layer
        from .frames import quantize8

        return layer.decode(substreams[1], quantize8(x_hat))

    def encode_intra(self, x, quality: int):
        return self._add_layer(x, self.intra.compress(x, quality - 1), quality, "intra")

    def encode_keyframe(self, x, quality: int):
        # the GOP inherits the key frame's quality: refine its latent by gradient steps on the RD cost
        out = self.intra.compress(x, quality - 1, refine=self.refine_steps)
        return self._add_layer(x, out, quality, "keyframe")

    def decode_intra(self, substreams, coded_size, quality: int):
        x_hat = self.intra.decompress(substreams, (coded_size[0] // 64, coded_size[1] // 64), quality - 1)["x_hat"]
        return self._decode_layer(substreams, x_hat)

    def encode_inter(self, x, ref, quality: int):
        # motion block size chosen per frame (InterModel.encode), the latent kept or skipped by actual cost
        out = self.inter.encode(x, ref, quality - 1, mv_lambda(quality), blocks=self.MOTION_BLOCKS,
                                decide=self.decide, fields=self.MOTION_FIELDS, masked=self.REGION_MASK)
        return self._add_layer(x, out, quality, "inter")

    def decode_inter(self, substreams, coded_size, ref, quality: int):
        h, w = coded_size
        x_hat = self.inter.decompress(substreams, (h // 64, w // 64), ref, quality - 1)["x_hat"]
        return self._decode_layer(substreams, x_hat)
