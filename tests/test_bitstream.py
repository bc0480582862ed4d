"""The container parser (no torch): round trips, the index, version rules, and a clean BitstreamError for
every kind of damage."""

import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvcodec import bitstream as bs
from lvcodec.errors import BitstreamError, LvcError

HDR = bs.SequenceHeader(96, 64, 25, 1, 1, 4, 3, b"\x01" * 32, colour_primaries=1, matrix_coefficients=1)
HEADER_END = 6 + 2 + bs.SequenceHeader.BODY_SIZE + 4


def _packets():
    return [bs.Packet(bs.FRAME_I, 0, [b"abc", b"de"]), bs.Packet(bs.FRAME_P, 1, [b"m", b"", b"z"]),
            bs.Packet(bs.FRAME_P, 2, [b"n", b"yy", b"z"], quality=7), bs.Packet(bs.FRAME_I, 3, [b"I2", b"z"]),
            bs.Packet(bs.FRAME_P, 5, [b"x", b"y", b"z"])]


def _stream(packets=None, header=HDR, chunks=()):
    buf = io.BytesIO()
    w = bs.Writer(buf, header)
    for i, p in enumerate(packets or _packets()):
        w.write(p)
        if i == 0:
            for c in chunks:
                w.write_chunk(*c)
    w.close()
    assert w.bytes_written == len(buf.getvalue())
    return buf.getvalue()


def _read(data, recover=False):
    r = bs.Reader(io.BytesIO(data))
    return r.header, list(r.packets(recover=recover))


def test_round_trip():
    h, ps = _read(_stream())
    assert h == HDR and h.coded_width == 128 and h.coded_height == 64 and (h.tb_num, h.tb_den) == (1, 25)
    assert ps == _packets()
    assert [p.frame for p in ps] == [0, 1, 2, 3, 4]
    assert ps[0].is_keyframe and not ps[1].is_keyframe and ps[0].size == 5 and ps[2].quality == 7


def test_pts_is_implicit_when_consecutive():
    """A P packet with pts = previous + 1 stores no pts; keyframes always do (resync needs it)."""
    one = bs.Packet(bs.FRAME_P, 8, [b"x"])
    assert len(one.pack(prev_pts=7)) == len(one.pack(prev_pts=3)) - 1
    assert bs.Packet(bs.FRAME_I, 8, [b"x"]).pack(7)[0] & 0x04


def test_index_and_seek():
    data = _stream()
    r = bs.Reader(io.BytesIO(data))
    idx = r.read_index()
    assert [(e.frame, e.pts) for e in idx.entries] == [(0, 0), (3, 3)]
    e = r.seek_frame(4, idx)
    assert e.frame == 3
    ps = list(r.packets())
    assert [(p.frame, p.pts) for p in ps] == [(3, 3), (4, 5)]
    assert r.footer.frame_count == 5


def test_index_not_needed_on_a_pipe():
    class Pipe(io.RawIOBase):
        def __init__(self, b):
            self.b = io.BytesIO(b)

        def readable(self):
            return True

        def readinto(self, buf):
            data = self.b.read(min(len(buf), 7))  # short reads, like a pipe
            buf[: len(data)] = data
            return len(data)

    r = bs.Reader(io.BufferedReader(Pipe(_stream())))
    assert r.read_index() is None
    assert list(r.packets()) == _packets()


def test_overhead_is_small():
    """Per packet: one type byte, a varint size per substream and the CRC; pts only on keyframes and jumps."""
    payload = [bytes(300), bytes(20), bytes(30)]
    ps = [bs.Packet(bs.FRAME_I, 0, payload[:2])] + [bs.Packet(bs.FRAME_P, t, payload) for t in range(1, 32)]
    data = _stream(ps)
    overhead = len(data) - sum(p.size for p in ps)
    index = 1 + 1 + 1 + 3 + 4  # type, size, count, one entry, crc
    assert overhead == HEADER_END + (1 + 1 + 2 + 1 + 4) + 31 * (1 + 2 + 1 + 1 + 4) + index + bs.Footer.SIZE


def test_error_is_a_value_error():
    assert issubclass(BitstreamError, ValueError) and issubclass(BitstreamError, LvcError)


def _set_u16(d, pos, v):
    return d[:pos] + struct.pack("<H", v) + d[pos + 2:]


def _fix_header_crc(d):
    end = 8 + bs.SequenceHeader.BODY_SIZE
    return d[:end] + struct.pack("<I", bs.crc32c(d[6:end])) + d[end + 4:]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: b"XXXX" + d[4:], "bad magic"),
    (lambda d: d[:4] + bytes([9]) + d[5:], "unsupported .lvc version 9.0"),
    (lambda d: d[:10], "truncated"),
    (lambda d: d[:HEADER_END + 3], "truncated"),
    (lambda d: d[:-1], "truncated stream"),
    (lambda d: d[:-bs.Footer.SIZE], r"truncated stream \(no end marker\)"),
    (lambda d: d[:12] + bytes([d[12] ^ 1]) + d[13:], "CRC mismatch in the sequence header"),
    (lambda d: d[:HEADER_END + 8] + bytes([d[HEADER_END + 8] ^ 0x10]) + d[HEADER_END + 9:], "CRC mismatch in packet"),
    (lambda d: d[:-3] + bytes([d[-3] ^ 1]) + d[-2:], "CRC mismatch in the footer"),
    (lambda d: _fix_header_crc(_set_u16(d, 8, 10**6 % 65536)), "out of range"),
    (lambda d: _fix_header_crc(_set_u16(d, 8, 0)), "out of range"),
    (lambda d: _fix_header_crc(_set_u16(d, 12, 9000)), "coded size"),
    (lambda d: _fix_header_crc(d[:8 + 24] + bytes([3]) + d[8 + 25:]), "unsupported format"),
    (lambda d: _fix_header_crc(_set_u16(d, 8 + 30, 77)), "unknown model id"),
    (lambda d: _fix_header_crc(d[:8 + 67] + bytes([9]) + d[8 + 68:]), "unknown entropy coder"),
])
def test_damage_gives_a_named_error(mutate, message):
    with pytest.raises(BitstreamError, match=message):
        _read(mutate(_stream()))


def test_huge_width_refused_before_allocating():
    h = bs.SequenceHeader(65535, 65535, 25, 1, 1, 4, 32, b"\0" * 32, coded_width=65535, coded_height=65535)
    with pytest.raises(BitstreamError, match="out of range"):
        bs.SequenceHeader.unpack(h.pack())
    with pytest.raises(BitstreamError, match="out of range"):
        h.validate()


def test_newer_minor_version_and_longer_header_are_read():
    """A newer minor version may append header fields and add ancillary chunks: this reader skips them."""
    d = _stream(chunks=[(0xD0, b"future stuff")])
    body = d[8:8 + bs.SequenceHeader.BODY_SIZE] + b"\x01\x02\x03"
    head = struct.pack("<H", len(body)) + body
    newer = d[:5] + bytes([7]) + head + struct.pack("<I", bs.crc32c(head)) + d[HEADER_END:]
    # packet offsets moved by 3 bytes, so the index no longer matches: read in order only
    r = bs.Reader(io.BytesIO(newer))
    assert r.version == (1, 7) and r.header == HDR
    assert list(r.packets()) == _packets()
    assert r.chunks == [(0xD0, b"future stuff")]


def test_unknown_critical_chunk_is_refused():
    with pytest.raises(BitstreamError, match="critical chunk 0x90"):
        _read(_stream(chunks=[(0x90, b"needs a newer decoder")]))


def test_recover_marks_a_damaged_packet_and_goes_on():
    d = bytearray(_stream())
    p1 = bs.Reader(io.BytesIO(bytes(d)))
    offsets = [p.offset for p in p1.packets()]
    d[offsets[1] + 5] ^= 0xFF  # payload byte of the first P packet
    _, ps = _read(bytes(d), recover=True)
    assert [p.damaged for p in ps] == [False, True, False, False, False]
    assert [p.pts for p in ps] == [0, 1, 2, 3, 5]


def test_recover_resyncs_at_the_next_keyframe():
    d = bytearray(_stream())
    offsets = [p.offset for p in bs.Reader(io.BytesIO(bytes(d))).packets()]
    d[offsets[1]] = 0x7F  # destroy the structure: an invalid type byte
    _, ps = _read(bytes(d), recover=True)
    assert [(p.pts, p.is_keyframe) for p in ps] == [(0, True), (3, True), (5, False)]
    with pytest.raises(BitstreamError, match="invalid frame type"):
        _read(bytes(d))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_streams_parse_or_fail_cleanly(data):
    raw = bytearray(_stream())
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, len(raw) - 1))
        if kind == "flip":
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "cut":
            raw = raw[:pos]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        if not raw:
            raw = bytearray(b"\0")
    recover = data.draw(st.booleans())
    try:
        r = bs.Reader(io.BytesIO(bytes(raw)))
        r.read_index()
    except BitstreamError:
        pass
    try:
        _read(bytes(raw), recover=recover)
    except BitstreamError:
        pass
