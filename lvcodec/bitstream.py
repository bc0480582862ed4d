"""The ``.lvc`` file layout (version 0.1): a torch-free reader and writer. See ``bitstream/SPEC.md``.

    file      = magic "LVC\\x1a" | major u8 | minor u8 | SequenceHeader | Packet* | end u8 (0xFF)
    Packet    = frame_type u8 (0 = I, 1 = P) | pts varint | n u8 | size varint * n | payload * n
                | crc32 u32 (zlib CRC-32 of everything before it in the packet)

All integers are little-endian; varints are unsigned LEB128. The writer streams (nothing is held
back) and returns the bytes it wrote so rates are exact.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from .errors import BitstreamError

MAGIC = b"LVC\x1a"
VERSION = (0, 1)
END = 0xFF
FRAME_I, FRAME_P = 0, 1
MAX_DIM = 8192
MAX_SUBSTREAMS = 8
MAX_SUBSTREAM_BYTES = 1 << 28

#: Model ids written into streams: a fixed table, never derived from registration order.
MODEL_IDS = {1: "lvc-hyperprior-v1"}


def write_varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    for i in range(10):
        if pos >= len(buf):
            raise BitstreamError("truncated stream (inside a varint)")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7
    raise BitstreamError("malformed varint (more than 10 bytes)")


@dataclass(frozen=True)
class SequenceHeader:
    width: int
    height: int
    fps_num: int
    fps_den: int
    model_id: int
    quality: int
    keyint: int
    weights_hash: bytes  # first 8 bytes of the SHA-256 over the model's weight files

    _FMT = "<HHIIBBH8s"
    SIZE = struct.calcsize(_FMT)

    def pack(self) -> bytes:
        return struct.pack(self._FMT, self.width, self.height, self.fps_num, self.fps_den, self.model_id,
                           self.quality, self.keyint, self.weights_hash)

    @classmethod
    def unpack(cls, buf: bytes) -> "SequenceHeader":
        if len(buf) < cls.SIZE:
            raise BitstreamError("truncated stream (inside the sequence header)")
        h = cls(*struct.unpack(cls._FMT, buf[: cls.SIZE]))
        if not (1 <= h.width <= MAX_DIM and 1 <= h.height <= MAX_DIM):
            raise BitstreamError(f"frame size {h.width}x{h.height} out of range (1..{MAX_DIM})")
        if h.fps_num == 0 or h.fps_den == 0:
            raise BitstreamError(f"invalid frame rate {h.fps_num}/{h.fps_den}")
        if h.model_id not in MODEL_IDS:
            raise BitstreamError(f"unknown model id {h.model_id} (known: {sorted(MODEL_IDS)})")
        if h.keyint == 0:
            raise BitstreamError("invalid keyint 0")
        return h


@dataclass
class Packet:
    frame_type: int
    pts: int
    substreams: list[bytes] = field(default_factory=list)

    @property
    def is_keyframe(self) -> bool:
        return self.frame_type == FRAME_I

    @property
    def size(self) -> int:
        return sum(len(s) for s in self.substreams)

    def pack(self) -> bytes:
        body = bytearray([self.frame_type])
        body += write_varint(self.pts)
        body.append(len(self.substreams))
        for s in self.substreams:
            body += write_varint(len(s))
        for s in self.substreams:
            body += s
        body += struct.pack("<I", zlib.crc32(body))
        return bytes(body)


class Writer:
    """Streams a ``.lvc`` file to a binary file object; ``bytes_written`` is exact."""

    def __init__(self, fp: BinaryIO, header: SequenceHeader):
        self.fp = fp
        self.bytes_written = 0
        self._write(MAGIC + bytes(VERSION) + header.pack())

    def _write(self, b: bytes) -> int:
        self.fp.write(b)
        self.bytes_written += len(b)
        return len(b)

    def write(self, packet: Packet) -> int:
        return self._write(packet.pack())

    def close(self) -> None:
        self._write(bytes([END]))
        self.fp.flush()


class Reader:
    """Reads a ``.lvc`` stream from a binary file object, packet by packet (works on pipes)."""

    def __init__(self, fp: BinaryIO):
        self.fp = fp
        head = self._read(len(MAGIC) + 2, "file header")
        if head[:4] != MAGIC:
            raise BitstreamError("not an .lvc stream (bad magic)")
        major, minor = head[4], head[5]
        if major != VERSION[0]:
            raise BitstreamError(f"unsupported .lvc version {major}.{minor} (this reader: {VERSION[0]}.x)")
        self.version = (major, minor)
        self.header = SequenceHeader.unpack(self._read(SequenceHeader.SIZE, "sequence header"))

    def _read(self, n: int, what: str) -> bytes:
        b = self.fp.read(n)
        if len(b) != n:
            raise BitstreamError(f"truncated stream (inside the {what})")
        return b

    def packets(self) -> Iterator[Packet]:
        while True:
            t = self.fp.read(1)
            if not t:
                raise BitstreamError("truncated stream (no end marker)")
            if t[0] == END:
                return
            if t[0] not in (FRAME_I, FRAME_P):
                raise BitstreamError(f"invalid frame type {t[0]}")
            body = bytearray(t)
            pts = self._varint(body)
            n = self._read(1, "packet header")
            body += n
            if n[0] == 0 or n[0] > MAX_SUBSTREAMS:
                raise BitstreamError(f"invalid substream count {n[0]}")
            sizes = [self._varint(body) for _ in range(n[0])]
            if any(s > MAX_SUBSTREAM_BYTES for s in sizes):
                raise BitstreamError("substream size out of range")
            subs = [self._read(s, "packet payload") for s in sizes]
            for s in subs:
                body += s
            (crc,) = struct.unpack("<I", self._read(4, "packet CRC"))
            if crc != zlib.crc32(body):
                raise BitstreamError(f"CRC mismatch in packet pts={pts}")
            yield Packet(t[0], pts, subs)

    def _varint(self, body: bytearray) -> int:
        raw = bytearray()
        while True:
            b = self._read(1, "packet header")
            raw += b
            if not b[0] & 0x80:
                break
            if len(raw) >= 10:
                raise BitstreamError("malformed varint (more than 10 bytes)")
        body += raw
        return read_varint(bytes(raw), 0)[0]
