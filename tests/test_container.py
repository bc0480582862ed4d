"""The container through the codec and the CLI: seeking by index, concealment, per-frame MD5s, lvc info."""

import hashlib
import io
import json
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner

import lvcodec
from lvcodec import bitstream as bs
from lvcodec.cli import main
from lvcodec.codec import DecodeStats, encode_pictures


@pytest.fixture(scope="module")
def stream(clip_pics, tmp_path_factory):
    """8 frames, keyint 3: keyframes at 0, 3, 6."""
    path = tmp_path_factory.mktemp("s") / "s.lvc"
    with open(path, "wb") as f:
        encode_pictures(clip_pics, f, 96, 64, Fraction(25), quality=3, keyint=3)
    return path


@pytest.fixture(scope="module")
def full(stream):
    return list(lvcodec.decode(str(stream)))


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in ((a.y, b.y), (a.u, b.u), (a.v, b.v)))


def _md5(p):
    return hashlib.md5(p.y.tobytes() + p.u.tobytes() + p.v.tobytes()).hexdigest()


@pytest.mark.parametrize("start, frames", [(0, 2), (3, 1), (4, 3), (5, None), (7, 5)])
def test_seek_equals_full_decode(stream, full, start, frames):
    st = DecodeStats()
    got = list(lvcodec.decode(str(stream), start_frame=start, frames=frames, stats=st))
    want = full[start : None if frames is None else start + frames]
    assert len(got) == len(want) and all(_same(a, b) for a, b in zip(got, want))
    assert [p.pts for p in got] == [p.pts for p in want]
    assert st.start == start // 3 * 3  # decoding began at the keyframe before, never at the start
    assert st.decoded == start % 3 + len(want)


def test_seek_on_a_pipe_reads_from_the_start(stream, full, monkeypatch):
    import sys

    class Pipe(io.RawIOBase):  # not seekable
        def __init__(self, b):
            self.b = io.BytesIO(b)

        def readable(self):
            return True

        def readinto(self, buf):
            data = self.b.read(len(buf))
            buf[: len(data)] = data
            return len(data)

    monkeypatch.setattr(sys, "stdin", type("S", (), {"buffer": io.BufferedReader(Pipe(stream.read_bytes()))})())
    st = DecodeStats()
    got = list(lvcodec.decode("-", start_frame=5, frames=2, stats=st))
    assert all(_same(a, b) for a, b in zip(got, full[5:7])) and st.start == 0


def _damage(stream, tmp_path, packet, how):
    data = bytearray(stream.read_bytes())
    p = list(bs.Reader(io.BytesIO(bytes(data))).packets())[packet]
    if how == "payload":
        data[p.offset + 6] ^= 0x55
    else:  # break the packet structure
        data[p.offset] = 0x7F
    out = tmp_path / f"bad-{packet}-{how}.lvc"
    out.write_bytes(bytes(data))
    return out


def test_damage_is_an_error_without_conceal(stream, tmp_path):
    bad = _damage(stream, tmp_path, 4, "payload")
    with pytest.raises(lvcodec.BitstreamError, match="CRC mismatch in packet pts=4"):
        list(lvcodec.decode(str(bad)))


def test_conceal_a_damaged_p_frame(stream, full, tmp_path):
    bad = _damage(stream, tmp_path, 4, "payload")
    st = DecodeStats()
    got = list(lvcodec.decode(str(bad), conceal=True, stats=st))
    assert len(got) == 8 and st.concealed == 1
    assert [p.pts for p in got] == list(range(8))
    assert all(_same(a, b) for a, b in zip(got[:4], full[:4]))
    assert _same(got[4], full[3])  # the last good picture repeated
    assert all(_same(a, b) for a, b in zip(got[6:], full[6:]))  # resynced at the keyframe


def test_conceal_resyncs_after_broken_structure(stream, full, tmp_path):
    bad = _damage(stream, tmp_path, 1, "structure")
    st = DecodeStats()
    got = list(lvcodec.decode(str(bad), conceal=True, stats=st))
    assert [p.pts for p in got] == list(range(8)) and st.concealed == 2
    assert _same(got[1], full[0]) and _same(got[2], full[0])
    assert all(_same(a, b) for a, b in zip(got[3:], full[3:]))


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_md5_and_seek(stream, full):
    r = _run("decode", stream, "--md5", "--quiet")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.split("\n")[:-1]
    assert [ln.split()[2] for ln in lines] == [_md5(p) for p in full]
    r = _run("decode", stream, "--md5", "--quiet", "--start-frame", 5, "--frames", 2)
    assert [ln.split()[:3] for ln in r.stdout.split("\n")[:-1]] == [["5", "5", _md5(full[5])], ["6", "6", _md5(full[6])]]


def test_cli_seek_writes_only_the_asked_frames(stream, full, tmp_path):
    out = tmp_path / "part.y4m"
    r = _run("decode", stream, out, "--start-frame", 4, "--frames", 2, "--quiet")
    assert r.exit_code == 0, r.stderr
    raw = out.read_bytes()
    assert raw.count(b"FRAME\n") == 2
    assert raw[raw.index(b"FRAME\n") + 6 :][: 96 * 64] == full[4].y.tobytes()


def test_cli_conceal_reports_and_error_without(stream, tmp_path):
    bad = _damage(stream, tmp_path, 4, "payload")
    out = tmp_path / "x.y4m"
    r = _run("decode", bad, out)
    assert r.exit_code == 3 and "CRC mismatch" in r.stderr and not out.exists()
    assert not list(tmp_path.glob(".lvc-*"))
    r = _run("decode", bad, out, "--conceal", "--quiet")
    assert r.exit_code == 0 and "1 damaged or missing frames concealed" in r.stderr
    assert out.read_bytes().count(b"FRAME\n") == 8


def test_cli_info_json(stream):
    r = _run("info", stream, "--json")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    h, s = info["header"], info["summary"]
    assert info["version"] == "1.0" and h["width"] == 96 and h["height"] == 64 and h["quality"] == 3
    assert h["model"] == "lvc-hyperprior-v1" and h["weights_sha256"] == lvcodec.codec.weights_hash().hex()
    assert [f["type"] for f in info["frames"]] == list("IPPIPPIP")
    assert s["frames"] == 8 and s["keyframes"] == 3 and s["file_bytes"] == stream.stat().st_size
    assert s["payload_bytes"] == sum(f["bytes"] for f in info["frames"])
    assert s["duration"] == pytest.approx(8 / 25)
    text = _run("info", stream)
    assert text.exit_code == 0 and "8 frames (3 keyframes)" in text.stdout and "overhead" in text.stdout
