"""The ``.lvc`` container, version 1.0: typed syntax elements and a torch-free streaming reader/writer.

The normative description is ``bitstream/SPEC.md``; this module follows it section by section::

    file    = magic "LVC\\x1a" | major u8 | minor u8 | SequenceHeader | unit* | END 0xFF | Footer
    unit    = frame packet (first byte < 0x80) | chunk (first byte 0x80..0xFE: type | size | body | crc)
    Footer  = index_offset u64 | frame_count u32 | crc32c u32

Frame packets carry one coded picture; the keyframe index is an ancillary chunk written at the end, and
the fixed-size footer points at it so a reader can seek without scanning. Every byte after the magic and
version is covered by a CRC-32C (Castagnoli). Integers are little-endian; varints are unsigned LEB128.

Nothing here imports torch, so ``lvc info`` is instant and the parser can be fuzzed on its own. Writing
streams (only the tiny keyframe index is held back until :meth:`Writer.close`); reading works on pipes
(packets in order) and, on seekable files, through the index (:meth:`Reader.seek_frame`).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

import google_crc32c

from .errors import BitstreamError

MAGIC = b"LVC\x1a"
VERSION = (1, 0)

# unit type byte (the first byte of every unit after the sequence header)
FRAME_I, FRAME_P = 0, 1
_FT_MASK, _PTS_FLAG, _QUALITY_FLAG, _N_SHIFT = 0x03, 0x04, 0x08, 4
CRITICAL_CHUNKS = range(0x80, 0xC0)  # a reader that does not know one must stop
ANCILLARY_CHUNKS = range(0xC0, 0xFF)  # a reader that does not know one skips it
CHUNK_INDEX = 0xC0
END = 0xFF

MAX_DIM = 8192
MAX_PAD = 256  # coded size - display size
MAX_SUBSTREAMS = 8
MAX_PACKET_BYTES = 1 << 26  # 64 MiB: far above any picture up to 8192x8192
MAX_CHUNK_BYTES = 1 << 24
MAX_PTS = (1 << 53) - 1

#: Model ids written into streams: a fixed table, never derived from registration order. Ids
#: 0x8000..0xFFFF are for third-party models (resolved by the decoder's model registry).
MODEL_IDS = {1: "lvc-hyperprior-v1"}
PRIVATE_MODEL_IDS = range(0x8000, 0x10000)
#: Entropy coder ids.
ENTROPY_CODERS = {1: "rans64"}
CHROMA_420 = 1


def crc32c(data: bytes) -> int:
    return google_crc32c.value(bytes(data))


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
    """(value, next position) of the varint at ``buf[pos:]``."""
    n = shift = 0
    for _ in range(10):
        if pos >= len(buf):
            raise BitstreamError("truncated stream (inside a varint)")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7
    raise BitstreamError("malformed varint (more than 10 bytes)")


def _zigzag(n: int) -> int:
    return 2 * n if n >= 0 else -2 * n - 1


def _unzigzag(n: int) -> int:
    return n // 2 if n % 2 == 0 else -(n + 1) // 2


# -- sequence header ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceHeader:
    """Everything a decoder needs before the first packet (SPEC.md §3)."""

    width: int  # display size, luma samples
    height: int
    fps_num: int
    fps_den: int
    model_id: int
    quality: int
    keyint: int
    weights_sha256: bytes  # 32 bytes: identifies the exact weights the stream needs
    coded_width: int = 0  # 0: the display size rounded up to 64 (filled in by __post_init__)
    coded_height: int = 0
    tb_num: int = 0  # time base of pts; 0: 1/frame rate
    tb_den: int = 0
    chroma_format: int = CHROMA_420
    bit_depth: int = 8
    colour_primaries: int = 2  # ITU-T H.273 code points; 2 = unspecified
    transfer_characteristics: int = 2
    matrix_coefficients: int = 2
    full_range: int = 0
    entropy_coder: int = 1

    _FMT = "<HHHHIIIIBBBBBBH32sHBB"
    BODY_SIZE = struct.calcsize(_FMT)

    def __post_init__(self):
        if not self.coded_width:
            object.__setattr__(self, "coded_width", -(-self.width // 64) * 64)
        if not self.coded_height:
            object.__setattr__(self, "coded_height", -(-self.height // 64) * 64)
        if not self.tb_num:
            object.__setattr__(self, "tb_num", self.fps_den)
            object.__setattr__(self, "tb_den", self.fps_num)

    @property
    def model_name(self) -> str:
        if self.model_id in PRIVATE_MODEL_IDS:
            return f"third-party 0x{self.model_id:04x}"
        return MODEL_IDS.get(self.model_id, f"unknown ({self.model_id})")

    def pack(self) -> bytes:
        body = struct.pack(
            self._FMT, self.width, self.height, self.coded_width, self.coded_height, self.fps_num,
            self.fps_den, self.tb_num, self.tb_den, self.chroma_format, self.bit_depth,
            self.colour_primaries, self.transfer_characteristics, self.matrix_coefficients,
            self.full_range, self.model_id, self.weights_sha256, self.keyint, self.quality,
            self.entropy_coder)
        out = struct.pack("<H", len(body)) + body
        return out + struct.pack("<I", crc32c(out))

    @classmethod
    def unpack(cls, buf: bytes) -> "SequenceHeader":
        """Parse and validate a header; ``buf`` is exactly size u16 | body | crc."""
        (size,) = struct.unpack_from("<H", buf)
        (crc,) = struct.unpack_from("<I", buf, 2 + size)
        if crc != crc32c(buf[: 2 + size]):
            raise BitstreamError("CRC mismatch in the sequence header")
        if size < cls.BODY_SIZE:
            raise BitstreamError(f"sequence header too short ({size} bytes, at least {cls.BODY_SIZE})")
        # a newer minor version may append fields: they are ignored here (SPEC.md §6)
        f = struct.unpack_from(cls._FMT, buf, 2)
        h = cls(width=f[0], height=f[1], coded_width=f[2] or -1, coded_height=f[3] or -1, fps_num=f[4],
                fps_den=f[5], tb_num=f[6] or -1, tb_den=f[7], chroma_format=f[8], bit_depth=f[9],
                colour_primaries=f[10], transfer_characteristics=f[11], matrix_coefficients=f[12],
                full_range=f[13], model_id=f[14], weights_sha256=f[15], keyint=f[16], quality=f[17],
                entropy_coder=f[18])
        h.validate()
        return h

    def validate(self) -> None:
        """Raise :class:`BitstreamError` for any field out of range (before anything is allocated)."""
        if not (1 <= self.width <= MAX_DIM and 1 <= self.height <= MAX_DIM):
            raise BitstreamError(f"frame size {self.width}x{self.height} out of range (1..{MAX_DIM})")
        for c, d in ((self.coded_width, self.width), (self.coded_height, self.height)):
            if not d <= c <= min(MAX_DIM, d + MAX_PAD):
                raise BitstreamError(f"coded size {self.coded_width}x{self.coded_height} out of range "
                                     f"for a {self.width}x{self.height} picture")
        if self.fps_num == 0 or self.fps_den == 0:
            raise BitstreamError(f"invalid frame rate {self.fps_num}/{self.fps_den}")
        if self.tb_num <= 0 or self.tb_den == 0:
            raise BitstreamError(f"invalid time base {self.tb_num}/{self.tb_den}")
        if self.chroma_format != CHROMA_420 or self.bit_depth != 8:
            raise BitstreamError(f"unsupported format (chroma format {self.chroma_format}, "
                                 f"{self.bit_depth} bits; this reader: 4:2:0, 8 bits)")
        if self.full_range > 1:
            raise BitstreamError(f"invalid full_range flag {self.full_range}")
        if self.model_id not in MODEL_IDS and self.model_id not in PRIVATE_MODEL_IDS:
            raise BitstreamError(f"unknown model id {self.model_id} (known: {sorted(MODEL_IDS)})")
        if self.entropy_coder not in ENTROPY_CODERS:
            raise BitstreamError(f"unknown entropy coder id {self.entropy_coder}")
        if self.keyint == 0:
            raise BitstreamError("invalid keyint 0")
        if not 1 <= self.quality <= 255:
            raise BitstreamError(f"invalid quality {self.quality}")


# -- frame packets ----------------------------------------------------------------------------------


@dataclass
class Packet:
    """One coded picture (SPEC.md §4). ``quality`` None means the sequence header's quality."""

    frame_type: int
    pts: int
    substreams: list[bytes] = field(default_factory=list)
    quality: int | None = None
    #: set by the reader: position in the file, frame number, and whether the CRC failed
    offset: int = field(default=-1, compare=False)
    frame: int = field(default=-1, compare=False)
    damaged: bool = field(default=False, compare=False)

    @property
    def is_keyframe(self) -> bool:
        return self.frame_type == FRAME_I

    @property
    def size(self) -> int:
        """Entropy-coded payload bytes."""
        return sum(len(s) for s in self.substreams)

    def pack(self, prev_pts: int | None = None) -> bytes:
        """Bytes of the packet; pts is implicit when it is ``prev_pts + 1`` (never for keyframes)."""
        n = len(self.substreams)
        if self.frame_type not in (FRAME_I, FRAME_P):
            raise ValueError(f"invalid frame type {self.frame_type}")
        if not 1 <= n <= MAX_SUBSTREAMS:
            raise ValueError(f"a packet holds 1..{MAX_SUBSTREAMS} substreams, not {n}")
        if not 0 <= self.pts <= MAX_PTS:
            raise ValueError(f"pts {self.pts} out of range")
        explicit = self.is_keyframe or prev_pts is None or self.pts != prev_pts + 1
        b = self.frame_type | ((n - 1) << _N_SHIFT)
        body = bytearray()
        if explicit:
            b |= _PTS_FLAG
            body += write_varint(self.pts)
        if self.quality is not None:
            b |= _QUALITY_FLAG
            body.append(self.quality)
        for s in self.substreams:
            body += write_varint(len(s))
        out = bytearray([b]) + body
        for s in self.substreams:
            out += s
        out += struct.pack("<I", crc32c(out))
        return bytes(out)


# -- index and footer ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexEntry:
    frame: int  # frame number (0-based, in stream order)
    pts: int
    offset: int  # byte offset of the keyframe's packet from the start of the file


@dataclass
class Index:
    """The keyframe index chunk (SPEC.md §5): every keyframe's frame number, pts and offset."""

    entries: list[IndexEntry] = field(default_factory=list)

    def pack_body(self) -> bytes:
        out = bytearray(write_varint(len(self.entries)))
        pf, pp, po = 0, 0, 0
        for e in self.entries:
            out += write_varint(e.frame - pf) + write_varint(_zigzag(e.pts - pp)) + write_varint(e.offset - po)
            pf, pp, po = e.frame, e.pts, e.offset
        return bytes(out)

    @classmethod
    def unpack_body(cls, body: bytes) -> "Index":
        n, pos = read_varint(body, 0)
        if n > len(body):  # each entry takes at least 3 bytes: refuse absurd counts before looping
            raise BitstreamError(f"index claims {n} entries in {len(body)} bytes")
        entries, f, p, o = [], 0, 0, 0
        for i in range(n):
            df, pos = read_varint(body, pos)
            dp, pos = read_varint(body, pos)
            do, pos = read_varint(body, pos)
            if i and (df == 0 or do == 0):
                raise BitstreamError("index entries out of order")
            f, p, o = f + df, p + _unzigzag(dp), o + do
            entries.append(IndexEntry(f, p, o))
        if pos != len(body):
            raise BitstreamError("index chunk has trailing bytes")
        return cls(entries)

    def at_or_before(self, frame: int) -> IndexEntry | None:
        best = None
        for e in self.entries:
            if e.frame <= frame:
                best = e
        return best


@dataclass(frozen=True)
class Footer:
    index_offset: int  # 0: no index
    frame_count: int

    _FMT = "<QI"
    SIZE = 1 + struct.calcsize(_FMT) + 4  # END byte, fields, crc

    def pack(self) -> bytes:
        b = bytes([END]) + struct.pack(self._FMT, self.index_offset, self.frame_count)
        return b + struct.pack("<I", crc32c(b))

    @classmethod
    def unpack(cls, buf: bytes) -> "Footer":
        if len(buf) != cls.SIZE or buf[0] != END:
            raise BitstreamError("truncated stream (no end marker)")
        (crc,) = struct.unpack_from("<I", buf, cls.SIZE - 4)
        if crc != crc32c(buf[:-4]):
            raise BitstreamError("CRC mismatch in the footer")
        return cls(*struct.unpack_from(cls._FMT, buf, 1))


def chunk(ctype: int, body: bytes) -> bytes:
    """An extension/index chunk: type u8 | size varint | body | crc32c."""
    if ctype not in CRITICAL_CHUNKS and ctype not in ANCILLARY_CHUNKS:
        raise ValueError(f"invalid chunk type 0x{ctype:02x}")
    out = bytes([ctype]) + write_varint(len(body)) + body
    return out + struct.pack("<I", crc32c(out))


# -- writer ----------------------------------------------------------------------------------------------


class Writer:
    """Streams a ``.lvc`` file to a binary file object (a pipe will do); ``bytes_written`` is exact.

    Only the keyframe index (a few bytes per keyframe) is held until :meth:`close`."""

    def __init__(self, fp: BinaryIO, header: SequenceHeader):
        header.validate()
        self.fp = fp
        self.header = header
        self.bytes_written = 0
        self.payload_bytes = 0
        self.frames = 0
        self.index = Index()
        self._prev_pts: int | None = None
        self._write(MAGIC + bytes(VERSION) + header.pack())

    def _write(self, b: bytes) -> int:
        self.fp.write(b)
        self.bytes_written += len(b)
        return len(b)

    def write(self, packet: Packet) -> int:
        """Append one packet (in decoding order); returns the bytes written."""
        if self.frames == 0 and not packet.is_keyframe:
            raise ValueError("the first packet of a stream must be a keyframe")
        if packet.is_keyframe:
            self.index.entries.append(IndexEntry(self.frames, packet.pts, self.bytes_written))
        n = self._write(packet.pack(self._prev_pts))
        self._prev_pts = packet.pts
        self.payload_bytes += packet.size
        self.frames += 1
        return n

    def write_chunk(self, ctype: int, body: bytes) -> int:
        return self._write(chunk(ctype, body))

    def close(self) -> None:
        """Write the index chunk, the end marker and the footer."""
        offset = self.bytes_written
        self._write(chunk(CHUNK_INDEX, self.index.pack_body()))
        self._write(Footer(offset, self.frames).pack())
        self.fp.flush()


# -- reader ----------------------------------------------------------------------------------------------


class _Source:
    """A byte source over a file object that counts its position and can give bytes back (resync)."""

    def __init__(self, fp: BinaryIO):
        self.fp = fp
        self.pos = 0
        self._back = bytearray()
        self._rec: bytearray | None = None

    def read(self, n: int) -> bytes:
        out = bytes(self._back[:n])
        del self._back[:n]
        if len(out) < n:
            out += self.fp.read(n - len(out))
        self.pos += len(out)
        if self._rec is not None:
            self._rec += out
        return out

    def record(self) -> None:
        """Start keeping what is read, for :meth:`give_back`."""
        self._rec = bytearray()

    def give_back(self, skip: int) -> None:
        """Un-read what was read since :meth:`record`, except its first ``skip`` bytes."""
        rec, self._rec = self._rec, None
        self._back[:0] = rec[skip:]
        self.pos -= len(rec) - skip

    def stop(self) -> None:
        self._rec = None

    def seek(self, pos: int) -> None:
        self.fp.seek(pos)
        self._back.clear()
        self._rec = None
        self.pos = pos


def _seekable(fp) -> bool:
    try:
        return fp.seekable()
    except (AttributeError, ValueError, OSError):
        return False


class Reader:
    """Reads a ``.lvc`` stream: the header at once, then packets in order (works on pipes).

    On a seekable file :meth:`read_index` reads the keyframe index through the footer and
    :meth:`seek_frame` positions the reader at the keyframe at or before a frame number."""

    #: resync scans accept keyframes at most this far ahead (in pts) and this large
    RESYNC_PTS_WINDOW = 1 << 16
    RESYNC_MAX_BYTES = 1 << 24

    def __init__(self, fp: BinaryIO):
        self.src = _Source(fp)
        head = self._read(len(MAGIC) + 2, "file header")
        if head[:4] != MAGIC:
            raise BitstreamError("not an .lvc stream (bad magic)")
        major, minor = head[4], head[5]
        if major != VERSION[0]:
            raise BitstreamError(f"unsupported .lvc version {major}.{minor} (this reader: {VERSION[0]}.x)")
        self.version = (major, minor)
        size_b = self._read(2, "sequence header")
        (size,) = struct.unpack("<H", size_b)
        self.header = SequenceHeader.unpack(size_b + self._read(size + 4, "sequence header"))
        self.data_offset = self.src.pos
        self.footer: Footer | None = None
        self.chunks: list[tuple[int, bytes]] = []  # ancillary chunks met (type, body), index excluded
        self._frame = 0
        self._prev_pts: int | None = None
        self._recover = False

    def _read(self, n: int, what: str) -> bytes:
        b = self.src.read(n)
        if len(b) != n:
            raise BitstreamError(f"truncated stream (inside the {what})")
        return b

    def _varint(self, raw: bytearray, what: str) -> int:
        start = len(raw)
        while True:
            b = self._read(1, what)
            raw += b
            if not b[0] & 0x80:
                return read_varint(bytes(raw), start)[0]
            if len(raw) - start >= 10:
                raise BitstreamError("malformed varint (more than 10 bytes)")

    # -- packets -----------------------------------------------------------------------------------

    def packets(self, recover: bool = False) -> Iterator[Packet]:
        """Packets in stream order until the end marker (whose footer is then checked).

        Any damage raises :class:`BitstreamError`. With ``recover``, a packet whose CRC fails is yielded
        with ``damaged=True`` (its pts taken as the previous one + 1), and after damage that breaks the
        packet structure the reader resyncs at the next intact keyframe: the frames in between are
        missing, which the keyframe's pts shows."""
        self._recover = recover
        while True:
            start = self.src.pos
            try:
                unit = self._unit()
            except BitstreamError:
                if not recover:
                    raise
                unit = self._resync(start)
            if unit is None:
                return
            if isinstance(unit, Packet):
                yield unit

    def _unit(self) -> Packet | bool | None:
        """The next unit: a Packet, True for a chunk, None at the end (footer checked)."""
        start = self.src.pos
        t = self.src.read(1)
        if not t:
            raise BitstreamError("truncated stream (no end marker)")
        b = t[0]
        if b == END:
            self.footer = Footer.unpack(t + self._read(Footer.SIZE - 1, "footer"))
            if self.footer.index_offset >= start:
                raise BitstreamError("footer index offset out of range")
            return None
        if b >= 0x80:
            raw = bytearray(t)
            size = self._varint(raw, "chunk header")
            if size > MAX_CHUNK_BYTES:
                raise BitstreamError(f"chunk size {size} out of range")
            raw += self._read(size, "chunk")
            (crc,) = struct.unpack("<I", self._read(4, "chunk CRC"))
            if crc != crc32c(raw):
                raise BitstreamError(f"CRC mismatch in chunk 0x{b:02x} at byte {start}")
            if b in CRITICAL_CHUNKS:
                raise BitstreamError(f"stream needs an unsupported feature (critical chunk 0x{b:02x})")
            if b != CHUNK_INDEX:
                self.chunks.append((b, bytes(raw[len(raw) - size:])))
            return True
        return self._packet(t, start)

    def _packet(self, t: bytes, start: int, resync: bool = False) -> Packet:
        b = t[0]
        ftype = b & _FT_MASK
        if ftype not in (FRAME_I, FRAME_P):
            raise BitstreamError(f"invalid frame type {ftype} at byte {start}")
        raw = bytearray(t)
        if b & _PTS_FLAG:
            pts = self._varint(raw, "packet header")
            if pts > MAX_PTS:
                raise BitstreamError(f"pts {pts} out of range")
            if resync and self._prev_pts is not None and not 0 < pts - self._prev_pts <= self.RESYNC_PTS_WINDOW:
                raise BitstreamError("implausible pts")
        elif ftype == FRAME_I or self._prev_pts is None:
            raise BitstreamError(f"packet at byte {start} lacks its pts")
        else:
            pts = self._prev_pts + 1
        quality = None
        if b & _QUALITY_FLAG:
            raw += self._read(1, "packet header")
            quality = raw[-1]
            if quality == 0:
                raise BitstreamError(f"invalid quality 0 in packet pts={pts}")
        n = (b >> _N_SHIFT) + 1
        sizes = [self._varint(raw, "packet header") for _ in range(n)]
        if sum(sizes) > (self.RESYNC_MAX_BYTES if resync else MAX_PACKET_BYTES):
            raise BitstreamError(f"packet size {sum(sizes)} out of range (pts={pts})")
        subs = [self._read(s, "packet payload") for s in sizes]
        for s in subs:
            raw += s
        (crc,) = struct.unpack("<I", self._read(4, "packet CRC"))
        damaged = crc != crc32c(raw)
        if damaged and (resync or not self._recover):
            raise BitstreamError(f"CRC mismatch in packet pts={pts}")
        if damaged:  # the structure held but the bytes are wrong: its pts cannot be trusted either
            pts = self._prev_pts + 1 if self._prev_pts is not None else 0
        p = Packet(ftype, pts, subs, quality, offset=start, frame=self._frame, damaged=damaged)
        self._frame += 1
        self._prev_pts = pts
        return p

    def _resync(self, start: int) -> Packet | None:
        """After damage at ``start``: the next intact keyframe packet, or None at the end of the stream.

        A seekable file rescans from ``start + 1``; a pipe goes on from where parsing stopped."""
        if _seekable(self.src.fp):
            self.src.seek(start + 1)
        while True:
            pos = self.src.pos
            self.src.record()
            t = self.src.read(1)
            if not t:
                self.src.stop()
                return None
            if t[0] < 0x80 and t[0] & _FT_MASK == FRAME_I and t[0] & _PTS_FLAG:
                frame = self._frame
                try:
                    p = self._packet(t, pos, resync=True)
                    self.src.stop()
                    return p
                except BitstreamError:
                    self._frame = frame
            elif t[0] == END:
                try:
                    self.footer = Footer.unpack(t + self.src.read(Footer.SIZE - 1))
                    self.src.stop()
                    return None
                except BitstreamError:
                    pass
            self.src.give_back(1)  # try again one byte further on

    # -- index and seeking ------------------------------------------------------------------------------

    def read_index(self) -> Index | None:
        """The keyframe index through the footer, or None when the file cannot seek or has none.

        Raises :class:`BitstreamError` when the footer or the index is damaged."""
        fp = self.src.fp
        if not _seekable(fp):
            return None
        here = fp.tell()
        try:
            end = fp.seek(0, io.SEEK_END)
            if end < self.data_offset + Footer.SIZE:
                raise BitstreamError("truncated stream (no end marker)")
            fp.seek(end - Footer.SIZE)
            footer = Footer.unpack(fp.read(Footer.SIZE))
            if footer.index_offset == 0:
                return None
            if not self.data_offset <= footer.index_offset < end - Footer.SIZE:
                raise BitstreamError("footer index offset out of range")
            if end - Footer.SIZE - footer.index_offset > MAX_CHUNK_BYTES + 16:
                raise BitstreamError("index chunk size out of range")
            fp.seek(footer.index_offset)
            body = fp.read(end - Footer.SIZE - footer.index_offset)
            if not body or body[0] != CHUNK_INDEX:
                raise BitstreamError("footer does not point at the index")
            size, pos = read_varint(body, 1)
            if pos + size + 4 != len(body):
                raise BitstreamError("index chunk size does not match the file")
            (crc,) = struct.unpack_from("<I", body, pos + size)
            if crc != crc32c(body[: pos + size]):
                raise BitstreamError("CRC mismatch in the index")
            index = Index.unpack_body(body[pos : pos + size])
            for e in index.entries:
                if not self.data_offset <= e.offset < footer.index_offset or e.frame >= footer.frame_count:
                    raise BitstreamError("index entry out of range")
            return index
        finally:
            fp.seek(here)

    def seek_frame(self, frame: int, index: Index | None = None) -> IndexEntry | None:
        """Position the reader at the keyframe at or before ``frame`` (through the index).

        Returns that index entry, or None when there is no usable index (reading goes on in order)."""
        index = index or self.read_index()
        e = index.at_or_before(frame) if index else None
        if e is None:
            return None
        self.src.seek(e.offset)
        self._frame, self._prev_pts = e.frame, None
        return e
