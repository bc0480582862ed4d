"""The lvc video codec: GOP policy, the decoded picture buffer, and the encode/decode drivers.

Every ``keyint``-th frame is an I-frame coded by :class:`~lvcodec.models.IntraModel`; the others are
P-frames: the encoder searches block motion against the *decoded* previous picture (the one-frame
DPB), codes the vectors, and codes the frame given its motion-compensated prediction with
:class:`~lvcodec.models.InterModel`. The encoder keeps exactly what the decoder will have (closed loop):
the DPB holds the reconstruction rounded to 8 bits, computed by the same code the decoder runs.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Iterator

import numpy as np

from . import bitstream as bs
from .errors import BitstreamError, InputError, OutputExistsError
from .frames import Picture, from_tensor, quantize8, read_pictures, to_tensor
from .registry import DEFAULT_MODEL, check_quality as _check_quality, load_model, model_class, model_class_by_id
from .zoo import WEIGHTS, load_models, mv_lambda, weights_hash  # noqa: F401  (re-exported)

DEFAULT_QUALITY = 4
DEFAULT_KEYINT = 32
MODEL_NAME = DEFAULT_MODEL
MODEL_ID = 1


def check_quality(quality: int, model: str = DEFAULT_MODEL) -> int:
    """``quality`` as an int, or a ValueError naming it and the model's range."""
    return _check_quality(quality, model_class(model).num_qualities)


class Encoder:
    """Codes pictures one by one into packets with a registered model, PyAV-style: ``encode(picture)``
    returns the packets ready so far (lvc has no reordering delay: one per picture) and ``flush()`` the
    rest (none). The DPB is the decoded previous picture; ``reconstruction`` is what a decoder outputs
    for the last picture encoded."""

    def __init__(self, width: int, height: int, quality: int = DEFAULT_QUALITY, keyint: int = DEFAULT_KEYINT,
                 model: str = DEFAULT_MODEL, intra_offset: int | None = None, preset: str | None = None):
        if not isinstance(keyint, int) or not 1 <= keyint <= 65535:
            raise ValueError(f'invalid keyint "{keyint}", should be between 1 and 65535')
        # the encoder effort (CodecModel.presets); the stream decodes the same whatever the preset
        import copy

        # a copy per encoder: the shared model instance must not carry this stream's picture size
        self.model = copy.copy(load_model(model).with_preset(preset))
        self.model.display_size = (width, height)
        self.quality = _check_quality(quality, self.model.num_qualities)
        self.keyint = keyint if self.model.has_inter else 1
        if intra_offset is None:
            intra_offset = self.model.intra_offset(self.quality)
        if not isinstance(intra_offset, int) or intra_offset < 0:
            raise ValueError(f'invalid intra offset "{intra_offset}", should be 0 or more')
        # I-frames of a stream with P-frames are coded better than the P-frames that predict from them
        # (all-intra streams keep the stream's quality); the packet then carries its own quality
        self.intra_quality = (min(self.quality + intra_offset, self.model.num_qualities) if self.keyint > 1
                              else self.quality)
        self.width, self.height = width, height
        self.ref = None  # DPB: decoded previous picture, padded, 6-channel layout
        self.count = 0
        self.reconstruction: Picture | None = None

    def header(self, rate: Fraction, colour: dict | None = None) -> bs.SequenceHeader:
        """The sequence header of the stream this encoder makes."""
        m = self.model.downsampling
        return bs.SequenceHeader(self.width, self.height, rate.numerator, rate.denominator, self.model.model_id,
                                 self.quality, self.keyint, self.model.weights_sha256(),
                                 coded_width=-(-self.width // m) * m, coded_height=-(-self.height // m) * m,
                                 **(colour or {}))

    def inter_quality(self, index: int) -> int:
        """Quality of the P-frame ``index`` pictures after its I-frame (the model's :meth:`inter_offset`
        applied to the stream's quality, kept within the model's levels)."""
        q = self.quality + self.model.inter_offset(self.quality, index)
        return min(max(q, 1), self.model.num_qualities)

    def encode(self, pic: Picture) -> list[bs.Packet]:
        """Code ``pic``; returns its packet (in a list, like PyAV's ``stream.encode``)."""
        import torch

        if (pic.width, pic.height) != (self.width, self.height):
            raise InputError(f"frame {self.count} is {pic.width}x{pic.height}, the stream is "
                             f"{self.width}x{self.height} (size changes are not supported)")
        with torch.no_grad():
            x = to_tensor(pic, self.model.downsampling)
            if self.count % self.keyint == 0:
                code = self.model.encode_keyframe if self.keyint > 1 else self.model.encode_intra
                subs, x_hat = code(x, self.intra_quality)
                packet = bs.Packet(bs.FRAME_I, pic.pts, subs,
                                   self.intra_quality if self.intra_quality != self.quality else None)
            else:
                q = self.inter_quality(self.count % self.keyint)
                subs, x_hat = self.model.encode_inter(x, self.ref, q)
                packet = bs.Packet(bs.FRAME_P, pic.pts, subs, q if q != self.quality else None)
            self.ref = quantize8(x_hat)
        self.count += 1
        self.reconstruction = from_tensor(self.ref, self.width, self.height, pic.pts)
        return [packet]

    def flush(self) -> list[bs.Packet]:
        """Packets still held back at the end of the stream: none (no reordering)."""
        return []


class Decoder:
    """Decodes the packets of one stream in order; :meth:`conceal` stands in for a lost picture."""

    def __init__(self, header: bs.SequenceHeader):
        self.model = load_model(model_class_by_id(header.model_id).name)
        if header.weights_sha256 != self.model.weights_sha256():
            raise BitstreamError(f"stream was made with other weights ({header.weights_sha256.hex()[:16]}..., "
                                 f"this lvcodec has {self.model.weights_sha256().hex()[:16]}... for {self.model.name})")
        self.header = header
        m = self.model.downsampling
        self.hp = -(-header.height // m) * m
        self.wp = -(-header.width // m) * m
        if (header.coded_width, header.coded_height) != (self.wp, self.hp):
            raise BitstreamError(f"coded size {header.coded_width}x{header.coded_height} does not match "
                                 f"model {self.model.name} ({self.wp}x{self.hp} for {header.width}x{header.height})")
        if header.quality > self.model.num_qualities:
            raise BitstreamError(f"quality {header.quality} out of range (1..{self.model.num_qualities})")
        self.ref = None
        self.concealed = 0

    def decode(self, packet: bs.Packet) -> list[Picture]:
        """The pictures of ``packet`` (one: lvc has no reordering delay); a damaged or undecodable packet
        raises :class:`BitstreamError`."""
        import torch

        if packet.damaged:
            raise BitstreamError(f"CRC mismatch in packet pts={packet.pts}")
        quality = packet.quality or self.header.quality
        if quality > self.model.num_qualities:
            raise BitstreamError(f"quality {quality} out of range in packet pts={packet.pts}")
        kind = "I" if packet.frame_type == bs.FRAME_I else "P"
        names = self.model.substreams_intra if kind == "I" else self.model.substreams_inter
        extra = len(self.model.substreams_optional)
        if names and not len(names) <= len(packet.substreams) <= len(names) + extra:
            codes = f"{len(names)}" + (f" to {len(names) + extra}" if extra else "")
            raise BitstreamError(f"{kind}-frame pts={packet.pts} has {len(packet.substreams)} substreams, "
                                 f"{self.model.name} codes {codes}")
        try:
            with torch.no_grad():
                if kind == "I":
                    x_hat = self.model.decode_intra(packet.substreams, (self.hp, self.wp), quality)
                else:
                    if self.ref is None:
                        raise BitstreamError(f"P-frame pts={packet.pts} has no reference (stream starts mid-GOP)")
                    if not self.model.has_inter:
                        raise BitstreamError(f"P-frame pts={packet.pts} in a stream of intra-only model {self.model.name}")
                    x_hat = self.model.decode_inter(packet.substreams, (self.hp, self.wp), self.ref, quality)
        except (RuntimeError, ValueError, IndexError, OverflowError) as e:
            if isinstance(e, BitstreamError):
                raise
            raise BitstreamError(f"corrupt payload in packet pts={packet.pts}: {e}") from None
        if not torch.isfinite(x_hat).all():  # any model: NaN has no 8-bit value
            raise BitstreamError(f"corrupt payload in packet pts={packet.pts}: the decoded picture is not finite")
        self.ref = quantize8(x_hat)
        return [from_tensor(self.ref, self.header.width, self.header.height, packet.pts)]

    def conceal(self, pts: int) -> Picture:
        """A stand-in for a lost picture: the last decoded one repeated (mid-grey before any), which
        also stays the reference of the next P-frame."""
        import torch

        if self.ref is None:
            self.ref = torch.full((1, 6, self.hp // 2, self.wp // 2), 128 / 255)
        self.concealed += 1
        return from_tensor(self.ref, self.header.width, self.header.height, pts)


# -- file-level drivers ---------------------------------------------------------------------------


@dataclass
class EncodeStats:
    frames: int
    bytes: int
    width: int
    height: int
    seconds: float
    psnr_yuv: float  # mean over frames, of the encoder's reconstruction (= the decoded video)
    source_pix_fmt: str = "yuv420p"  # the input's pixel format (anything else was converted to 8-bit 4:2:0)
    variable_rate: bool = False  # the input's frame durations varied (coded at a constant rate)
    rate: Fraction = Fraction(25)  # the frame rate written in the header

    @property
    def bpp(self) -> float:
        return self.bytes * 8 / (self.frames * self.width * self.height)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else float("inf")


class _AtomicOutput:
    """Write to a temporary file beside ``path`` and rename it into place only on success."""

    def __init__(self, path: str, overwrite: bool):
        self.path = path
        self.fp = None
        if path != "-" and os.path.exists(path) and not overwrite:
            raise OutputExistsError(f"{path} already exists (use -y to overwrite)")

    def __enter__(self):
        import sys

        if self.path == "-":
            self.fp = sys.stdout.buffer
            self.tmp = None
        else:
            d = os.path.dirname(os.path.abspath(self.path))
            fd, self.tmp = tempfile.mkstemp(prefix=".lvc-", suffix=os.path.splitext(self.path)[1], dir=d)
            self.fp = os.fdopen(fd, "wb")
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.tmp is None:
            if exc_type is None:
                self.fp.flush()
            return False
        self.fp.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            os.unlink(self.tmp)
        return False


def psnr_yuv(a: Picture, b: Picture) -> float:
    """PSNR-YUV = (6 PSNR-Y + PSNR-U + PSNR-V) / 8 on 8-bit planes (capped at 100 dB)."""
    ps = []
    for p, r in ((a.y, b.y), (a.u, b.u), (a.v, b.v)):
        mse = np.mean((p.astype(np.float64) - r.astype(np.float64)) ** 2)
        ps.append(100.0 if mse == 0 else min(100.0, 10 * np.log10(255.0**2 / mse)))
    return (6 * ps[0] + ps[1] + ps[2]) / 8


def encode_pictures(pictures: Iterable[Picture], fp, width: int, height: int, rate: Fraction,
                    quality: int = DEFAULT_QUALITY, keyint: int = DEFAULT_KEYINT, progress=None,
                    colour: dict | None = None, model: str = DEFAULT_MODEL,
                    intra_offset: int | None = None, preset: str | None = None) -> EncodeStats:
    """Encode ``pictures`` to the binary file object ``fp``; return exact sizes and the PSNR.

    ``colour`` optionally gives the H.273 colour description written in the header
    (``colour_primaries``, ``transfer_characteristics``, ``matrix_coefficients``, ``full_range``);
    ``model`` names a registered model (:func:`lvcodec.list_models`); ``intra_offset`` overrides its
    I-frame quality offset (:attr:`Encoder.intra_quality`); ``preset`` picks the encoder effort among the
    model's :attr:`~lvcodec.CodecModel.presets` (default: the model's ``default_preset``)."""
    enc = Encoder(width, height, quality, keyint, model, intra_offset, preset)
    rate = Fraction(rate).limit_denominator(1 << 20)
    w = bs.Writer(fp, enc.header(rate, colour))
    n, psnr_sum, t0 = 0, 0.0, time.perf_counter()
    for pic in pictures:
        for packet in enc.encode(pic):
            w.write(packet)
        psnr_sum += psnr_yuv(pic, enc.reconstruction)
        n += 1
        if progress is not None:
            progress.update(1)
    if n == 0:
        raise InputError("no frames to encode")
    w.close()
    return EncodeStats(n, w.bytes_written, width, height, time.perf_counter() - t0, psnr_sum / n, rate=rate)


def encode(src: str, dst: str, quality: int = DEFAULT_QUALITY, keyint: int = DEFAULT_KEYINT,
           overwrite: bool = False, max_frames: int | None = None, progress: bool = False,
           model: str = DEFAULT_MODEL, intra_offset: int | None = None, preset: str | None = None) -> EncodeStats:
    """Encode the video file ``src`` (anything PyAV reads, ``-`` for stdin) to the ``.lvc`` file ``dst``
    with the registered model ``model``. The output appears only when complete (``-`` writes to stdout)."""
    check_quality(quality, model)
    model_class(model).check_preset(preset)  # an unknown preset fails before any work
    out = _AtomicOutput(dst, overwrite)  # refuses an existing output before any work
    info, pictures = read_pictures(src, max_frames)
    with out, _bar(progress, "encode") as bar:
        stats = encode_pictures(pictures, out.fp, info.width, info.height, info.rate, quality, keyint, bar,
                                info.colour, model, intra_offset, preset)
    stats.source_pix_fmt = info.pix_fmt
    stats.variable_rate = info.variable_rate
    return stats


def _bar(enabled: bool, desc: str):
    """A progress bar on stderr (shown only when stderr is a terminal); a context manager."""
    import sys

    from tqdm import tqdm

    return tqdm(desc=desc, unit="frame", file=sys.stderr, leave=False, disable=None if enabled else True)


def _open_lvc(path: str):
    import sys

    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: {e.strerror}") from None


def read_header(path: str) -> bs.SequenceHeader:
    """The sequence header of the ``.lvc`` file ``path``."""
    with _open_lvc(path) as fp:
        return bs.Reader(fp).header


@dataclass
class DecodeStats:
    """Filled in by :func:`decode` as it goes."""

    frames: int = 0  # pictures yielded
    concealed: int = 0  # of which stand-ins for damaged or missing packets
    decoded: int = 0  # packets decoded (including those before ``start_frame``)
    start: int = 0  # frame number decoding started from (the keyframe at or before start_frame)
    header: bs.SequenceHeader | None = None


#: most pictures concealed for one gap in the stream (a keyframe pts far ahead is not trusted further)
MAX_CONCEAL_GAP = 1 << 12


def decode(path: str, start_frame: int = 0, frames: int | None = None, conceal: bool = False,
           stats: DecodeStats | None = None) -> Iterator[Picture]:
    """Decode the ``.lvc`` file ``path`` (``-`` for stdin), yielding 4:2:0 pictures (numpy planes).

    ``start_frame``/``frames`` select frames ``start_frame .. start_frame + frames - 1``: decoding starts
    at the keyframe at or before ``start_frame``, found through the stream's index (from the start only
    when the index cannot be reached, e.g. on a pipe). Damage raises :class:`BitstreamError`; with
    ``conceal`` a damaged or missing picture is replaced by the last good one instead, decoding resyncs at
    the next keyframe, and ``stats.concealed`` counts the stand-ins."""
    if start_frame < 0 or (frames is not None and frames < 1):
        raise ValueError("start_frame must be >= 0 and frames >= 1")
    stats = stats if stats is not None else DecodeStats()
    fp = _open_lvc(path)
    try:
        reader = bs.Reader(fp)
        stats.header = reader.header
        dec = Decoder(reader.header)
        n = 0
        if start_frame:
            try:
                e = reader.seek_frame(start_frame)
            except BitstreamError:
                if not conceal:
                    raise
                e = None  # a damaged index: read from the start
            n = e.frame if e else 0
        stats.start = n
        last_pts = None
        for packet in reader.packets(recover=conceal):
            pics = []
            if conceal and last_pts is not None and packet.pts > last_pts + 1:  # packets lost before a resync
                pics += [dec.conceal(p) for p in range(last_pts + 1, min(packet.pts, last_pts + 1 + MAX_CONCEAL_GAP))]
            try:
                pics += dec.decode(packet)
                stats.decoded += 1
            except BitstreamError:
                if not conceal:
                    raise
                pics.append(dec.conceal(packet.pts))
            last_pts = packet.pts
            for pic in pics:
                if n >= start_frame:
                    stats.frames += 1
                    stats.concealed = dec.concealed
                    yield pic
                    if frames is not None and stats.frames >= frames:
                        return
                n += 1
        stats.concealed = dec.concealed
    finally:
        if path != "-":
            fp.close()
