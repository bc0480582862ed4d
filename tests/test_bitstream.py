"""The container parser: round trips, and a clean BitstreamError for every kind of damage."""

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvcodec import bitstream as bs
from lvcodec.errors import BitstreamError, LvcError

HDR = bs.SequenceHeader(96, 64, 25, 1, 1, 4, 32, b"\x01" * 8)


def _stream(packets=None):
    buf = io.BytesIO()
    w = bs.Writer(buf, HDR)
    for p in packets or [bs.Packet(bs.FRAME_I, 0, [b"abc", b"de"]), bs.Packet(bs.FRAME_P, 1, [b"m", b"", b"z"])]:
        w.write(p)
    w.close()
    assert w.bytes_written == len(buf.getvalue())
    return buf.getvalue()


def _read(data):
    r = bs.Reader(io.BytesIO(data))
    return r.header, list(r.packets())


def test_round_trip():
    h, ps = _read(_stream())
    assert h == HDR
    assert [(p.frame_type, p.pts, p.substreams) for p in ps] == [(0, 0, [b"abc", b"de"]), (1, 1, [b"m", b"", b"z"])]
    assert ps[0].is_keyframe and not ps[1].is_keyframe and ps[0].size == 5


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 2**35])
def test_varint(n):
    b = bs.write_varint(n)
    assert bs.read_varint(b, 0) == (n, len(b))


def test_error_is_a_value_error():
    assert issubclass(BitstreamError, ValueError) and issubclass(BitstreamError, LvcError)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: b"XXXX" + d[4:], "bad magic"),
    (lambda d: d[:4] + bytes([9]) + d[5:], "unsupported .lvc version"),
    (lambda d: d[:10], "truncated"),
    (lambda d: d[:-1], "no end marker"),
    (lambda d: d[:-3], "truncated"),
    (lambda d: d[:-6] + bytes([d[-6] ^ 0xFF]) + d[-5:], "CRC mismatch"),  # a payload byte
    (lambda d: d[:6] + (10**6 % 65536).to_bytes(2, "little") + d[8:], "out of range"),
    (lambda d: d[:6] + (0).to_bytes(2, "little") + d[8:], "out of range"),
    (lambda d: d[:18] + bytes([77]) + d[19:], "unknown model id"),
])
def test_damage_gives_a_named_error(mutate, message):
    with pytest.raises(BitstreamError, match=message):
        _read(mutate(_stream()))


def test_huge_width_refused_before_allocating():
    h = bs.SequenceHeader(65535, 65535, 25, 1, 1, 4, 32, b"\0" * 8)
    with pytest.raises(BitstreamError, match="out of range"):
        bs.SequenceHeader.unpack(h.pack())


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
    try:
        _read(bytes(raw))
    except BitstreamError:
        pass
