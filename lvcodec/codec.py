"""The lvc video codec: GOP policy, the decoded picture buffer, and the encode/decode drivers.

Every ``keyint``-th frame is an I-frame coded by :class:`~lvcodec.models.IntraModel`; the others are
P-frames: the encoder searches block motion against the *decoded* previous picture (the one-frame
DPB), codes the vectors, and codes the frame given its motion-compensated prediction with
:class:`~lvcodec.models.InterModel`. The encoder keeps exactly what the decoder will have (closed loop):
the DPB holds the reconstruction rounded to 8 bits, computed by the same code the decoder runs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Iterable, Iterator

import numpy as np

from . import bitstream as bs
from .errors import BitstreamError, InputError, OutputExistsError
from .frames import Picture, from_tensor, quantize8, read_pictures, to_tensor

DEFAULT_QUALITY = 4
DEFAULT_KEYINT = 32
MODEL_NAME = "lvc-hyperprior-v1"
MODEL_ID = 1
#: Shipped weights: file name and SHA-256 (checked at load).
WEIGHTS = {
    "intra": ("intra-f235ebb4.safetensors", "f235ebb4639714df8ac53bbb257c1843028624ef441ea552e4e6c8c854a3ea9b"),
    "inter": ("inter-18ec3b73.safetensors", "18ec3b73c1536763a56ecb14906a1c66546e8836173891fdc22b8ee0621c4b17"),
}


def mv_lambda(q: int) -> float:
    """Smoothness weight of the motion search at quality ``q`` (1..8): stronger at low rates."""
    return 0.25 * 1.9 ** (-(q - 1) / 2)


def weights_hash() -> bytes:
    """SHA-256 identifying the shipped weights, written in every stream header: the SHA-256 of the
    concatenated hex SHA-256s of the weight files (intra, inter)."""
    return hashlib.sha256("".join(h for _, h in WEIGHTS.values()).encode()).digest()


@lru_cache(maxsize=1)
def load_models():
    """The shipped intra and inter models (eval mode, CPU), weights verified against their SHA-256."""
    from .models import InterModel, IntraModel
    from .weights import WEIGHTS_DIR, load_state

    intra, inter = IntraModel(), InterModel()
    intra.load_state_dict(load_state(WEIGHTS_DIR / WEIGHTS["intra"][0], WEIGHTS["intra"][1]))
    inter.load_state_dict(load_state(WEIGHTS_DIR / WEIGHTS["inter"][0], WEIGHTS["inter"][1]))
    return intra.eval(), inter.eval()


def check_quality(quality: int) -> int:
    from .models import NUM_QUALITIES

    if not isinstance(quality, (int, np.integer)) or not 1 <= quality <= NUM_QUALITIES:
        raise ValueError(f'invalid quality "{quality}", should be between 1 and {NUM_QUALITIES}')
    return int(quality)


class Encoder:
    """Codes pictures one by one into packets; ``encode`` also returns the decoder's reconstruction."""

    def __init__(self, width: int, height: int, quality: int = DEFAULT_QUALITY, keyint: int = DEFAULT_KEYINT):
        if keyint < 1 or keyint > 65535:
            raise ValueError(f'invalid keyint "{keyint}", should be between 1 and 65535')
        self.quality = check_quality(quality)
        self.keyint = keyint
        self.width, self.height = width, height
        self.intra, self.inter = load_models()
        self.ref = None  # DPB: decoded previous picture, padded, 6-channel layout
        self.count = 0

    def encode(self, pic: Picture) -> tuple[bs.Packet, Picture]:
        import torch

        from . import motion

        if (pic.width, pic.height) != (self.width, self.height):
            raise InputError(f"frame {self.count} is {pic.width}x{pic.height}, the stream is "
                             f"{self.width}x{self.height} (size changes are not supported)")
        q = self.quality - 1
        with torch.no_grad():
            x = to_tensor(pic, self.intra.downsampling)
            if self.count % self.keyint == 0:
                out = self.intra.compress(x, q)
                packet = bs.Packet(bs.FRAME_I, pic.pts, [out["strings"][0][0], out["strings"][1][0]])
            else:
                mv = motion.search(x, self.ref, lam=mv_lambda(self.quality))
                mvd = mv - motion.mv_prediction(mv)
                mv_string = self.inter.mv_entropy.compress(mvd.float())[0]
                pred = motion.compensate(self.ref, mv)
                out = self.inter.compress(x, pred, q)
                packet = bs.Packet(bs.FRAME_P, pic.pts, [mv_string, out["strings"][0][0], out["strings"][1][0]])
            self.ref = quantize8(out["x_hat"])
        self.count += 1
        return packet, from_tensor(self.ref, self.width, self.height, pic.pts)


class Decoder:
    """Decodes the packets of one stream in order; :meth:`conceal` stands in for a lost picture."""

    def __init__(self, header: bs.SequenceHeader):
        from .models import NUM_QUALITIES

        if header.weights_sha256 != weights_hash():
            raise BitstreamError(f"stream was made with other weights ({header.weights_sha256.hex()[:16]}..., "
                                 f"this lvcodec has {weights_hash().hex()[:16]}...)")
        self.header = header
        self.intra, self.inter = load_models()
        m = self.intra.downsampling
        self.hp = -(-header.height // m) * m
        self.wp = -(-header.width // m) * m
        if (header.coded_width, header.coded_height) != (self.wp, self.hp):
            raise BitstreamError(f"coded size {header.coded_width}x{header.coded_height} does not match "
                                 f"model {header.model_name} ({self.wp}x{self.hp} for {header.width}x{header.height})")
        if header.quality > NUM_QUALITIES:
            raise BitstreamError(f"quality {header.quality} out of range (1..{NUM_QUALITIES})")
        self.num_qualities = NUM_QUALITIES
        self.ref = None
        self.concealed = 0

    def decode(self, packet: bs.Packet) -> Picture:
        """The picture of ``packet``; a damaged or undecodable packet raises :class:`BitstreamError`."""
        import torch

        from . import motion

        if packet.damaged:
            raise BitstreamError(f"CRC mismatch in packet pts={packet.pts}")
        quality = packet.quality or self.header.quality
        if quality > self.num_qualities:
            raise BitstreamError(f"quality {quality} out of range in packet pts={packet.pts}")
        q = quality - 1
        zshape = (self.hp // 64, self.wp // 64)
        try:
            with torch.no_grad():
                if packet.frame_type == bs.FRAME_I:
                    if len(packet.substreams) != 2:
                        raise BitstreamError(f"I-frame pts={packet.pts} has {len(packet.substreams)} substreams")
                    y_s, z_s = packet.substreams
                    x_hat = self.intra.decompress([[y_s], [z_s]], zshape, q)["x_hat"]
                else:
                    if self.ref is None:
                        raise BitstreamError(f"P-frame pts={packet.pts} has no reference (stream starts mid-GOP)")
                    if len(packet.substreams) != 3:
                        raise BitstreamError(f"P-frame pts={packet.pts} has {len(packet.substreams)} substreams")
                    mv_s, y_s, z_s = packet.substreams
                    mvd = self.inter.mv_entropy.decompress([mv_s], (self.hp // motion.BLOCK, self.wp // motion.BLOCK))
                    mvd = torch.round(mvd).to(torch.int64)[0].numpy()
                    mv = torch.from_numpy(motion.mv_from_residual(mvd))[None].to(torch.int32)
                    pred = motion.compensate(self.ref, mv)
                    x_hat = self.inter.decompress([[y_s], [z_s]], zshape, pred, q)["x_hat"]
        except (RuntimeError, ValueError, IndexError, OverflowError) as e:
            if isinstance(e, BitstreamError):
                raise
            raise BitstreamError(f"corrupt payload in packet pts={packet.pts}: {e}") from None
        self.ref = quantize8(x_hat)
        return from_tensor(self.ref, self.header.width, self.header.height, packet.pts)

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
                    colour: dict | None = None) -> EncodeStats:
    """Encode ``pictures`` to the binary file object ``fp``; return exact sizes and the PSNR.

    ``colour`` optionally gives the H.273 colour description written in the header
    (``colour_primaries``, ``transfer_characteristics``, ``matrix_coefficients``, ``full_range``)."""
    enc = Encoder(width, height, quality, keyint)
    rate = Fraction(rate).limit_denominator(1 << 20)
    header = bs.SequenceHeader(width, height, rate.numerator, rate.denominator, MODEL_ID, enc.quality,
                               keyint, weights_hash(), **(colour or {}))
    w = bs.Writer(fp, header)
    n, psnr_sum, t0 = 0, 0.0, time.perf_counter()
    for pic in pictures:
        packet, recon = enc.encode(pic)
        w.write(packet)
        psnr_sum += psnr_yuv(pic, recon)
        n += 1
        if progress is not None:
            progress.update(1)
    if n == 0:
        raise InputError("no frames to encode")
    w.close()
    return EncodeStats(n, w.bytes_written, width, height, time.perf_counter() - t0, psnr_sum / n, rate=rate)


def encode(src: str, dst: str, quality: int = DEFAULT_QUALITY, keyint: int = DEFAULT_KEYINT,
           overwrite: bool = False, max_frames: int | None = None, progress: bool = False) -> EncodeStats:
    """Encode the video file ``src`` (anything PyAV reads, ``-`` for stdin) to the ``.lvc`` file ``dst``.

    The output appears only when complete (``-`` writes to stdout)."""
    check_quality(quality)
    out = _AtomicOutput(dst, overwrite)  # refuses an existing output before any work
    info, pictures = read_pictures(src, max_frames)
    with out, _bar(progress, "encode") as bar:
        stats = encode_pictures(pictures, out.fp, info.width, info.height, info.rate, quality, keyint, bar,
                                info.colour)
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
                pics.append(dec.decode(packet))
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
