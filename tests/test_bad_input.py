"""Every awkward input to `lvc encode`, table-driven through the CLI: a correct encode (with a notice when
the input was converted) or a one-line error with its exit code — and never a partial output file."""

from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner

import lvcodec
from lvcodec.cli import main

from .helpers import noise_pictures, write_y4m


def _av_video(path, w, h, n, pix, pts=None):
    """An FFV1/Matroska clip of ``n`` frames in pixel format ``pix`` (optionally with given ms pts)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = w, h, pix
        if pts is not None:
            s.time_base = Fraction(1, 1000)
        rng = np.random.default_rng(0)
        for i in range(n):
            f = av.VideoFrame.from_ndarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), format="rgb24")
            f = f.reformat(format=pix)
            if pts is not None:
                f.pts, f.time_base = pts[i], Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _y4m(path, w, h, n=3):
    return write_y4m(path, noise_pictures(n, w, h))


def _text(path):
    path.write_text("this is not a video\n" * 50)
    return path


def _wav(path):
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        f.sample_rate = 8000
        for p in list(s.encode(f)) + list(s.encode()):
            c.mux(p)
    return path


def _no_frames(path):
    path.write_bytes(b"YUV4MPEG2 W32 H16 F25:1 Ip A1:1 C420jpeg\n")
    return path


def _truncated_mp4(path):
    import av

    full = path.with_name("full.mp4")
    with av.open(str(full), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        for pic in noise_pictures(6, 64, 32):
            for p in s.encode(pic.to_av()):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    return path


def _truncated_mkv(path):
    full = _av_video(path.with_name("full.mkv"), 32, 16, 6, "yuv420p")
    data = full.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    full.unlink()
    return path


def _corrupt_mkv(path):
    full = _av_video(path.with_name("full.mkv"), 32, 16, 6, "yuv420p")
    data = bytearray(full.read_bytes())
    rng = np.random.default_rng(1)
    for i in rng.integers(len(data) // 3, len(data), 40):
        data[i] = int(rng.integers(256))
    path.write_bytes(bytes(data))
    full.unlink()
    return path


# name, maker, exit code, text in the one-line error or the notice, (width, height) expected on success
CASES = [
    ("not video", lambda d: _text(d / "a.mp4"), 2, "not a readable video", None),
    ("empty file", lambda d: (d / "e.mp4").write_bytes(b"") or d / "e.mp4", 2, "not a readable video", None),
    ("missing file", lambda d: d / "missing.mp4", 2, "no such file", None),
    ("audio only", lambda d: _wav(d / "a.wav"), 2, "has no video stream", None),
    ("zero frames", lambda d: _no_frames(d / "z.y4m"), 2, "contains no video frames", None),
    ("truncated mp4", lambda d: _truncated_mp4(d / "t.mp4"), 2, "not a readable video", None),
    ("truncated mkv", lambda d: _truncated_mkv(d / "t.mkv"), 0, "", (32, 16)),
    ("corrupt mkv", lambda d: _corrupt_mkv(d / "c.mkv"), 0, "", (32, 16)),
    ("1x1", lambda d: _y4m(d / "a.y4m", 1, 1), 0, "", (1, 1)),
    ("2x2", lambda d: _y4m(d / "a.y4m", 2, 2), 0, "", (2, 2)),
    ("33x17", lambda d: _y4m(d / "a.y4m", 33, 17), 0, "", (33, 17)),
    ("10-bit", lambda d: _av_video(d / "a.mkv", 32, 16, 2, "yuv420p10le"), 0, "input is yuv420p10le", (32, 16)),
    ("4:4:4", lambda d: _av_video(d / "a.mkv", 32, 16, 2, "yuv444p"), 0, "input is yuv444p", (32, 16)),
    ("RGB", lambda d: _av_video(d / "a.mkv", 32, 16, 2, "bgr0"), 0, "input is bgr0", (32, 16)),
    ("grayscale", lambda d: _av_video(d / "a.mkv", 32, 16, 2, "gray"), 0, "input is gray", (32, 16)),
    ("variable frame rate", lambda d: _av_video(d / "a.mkv", 32, 16, 4, "yuv420p", pts=[0, 40, 120, 130]), 0,
     "variable frame rate", (32, 16)),
    ("above the size limit", lambda d: _av_video(d / "a.mkv", 8200, 16, 1, "yuv420p"), 2,
     "larger than the supported 8192x8192", None),
]


@pytest.mark.parametrize("name, make, code, text, size", CASES, ids=[c[0] for c in CASES])
def test_encoder_input(tmp_path, name, make, code, text, size):
    src = make(tmp_path)
    out = tmp_path / "out.lvc"
    r = CliRunner().invoke(main, ["encode", str(src), str(out), "--quiet"])
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
    assert r.exit_code == code, (r.exit_code, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert not list(tmp_path.glob(".lvc-*"))  # no temporary file left behind
    if code:
        assert len(lines) == 1 and lines[0].startswith("lvc: error:") and text in lines[0], r.stderr
        assert not out.exists()
    else:
        assert all(ln.startswith("lvc: note:") for ln in lines) and text in r.stderr, r.stderr
        pics = list(lvcodec.decode(str(out)))
        assert pics and all((p.width, p.height) == size for p in pics)


def test_interrupt_leaves_no_output(tmp_path, monkeypatch):
    """Ctrl-C in the middle of an encode: exit 130, no .lvc and no temporary file."""
    src = _y4m(tmp_path / "a.y4m", 32, 16, n=4)
    import lvcodec.codec as codec

    real = codec.Encoder.encode
    calls = []

    def encode(self, pic):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, pic)

    monkeypatch.setattr(codec.Encoder, "encode", encode)
    out = tmp_path / "out.lvc"
    r = CliRunner().invoke(main, ["encode", src, str(out), "--quiet"])
    assert r.exit_code == 130 and "interrupted" in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".lvc-*"))


def test_full_disk_leaves_no_output(tmp_path, monkeypatch):
    """A write failing with ENOSPC: a one-line error, no .lvc and no temporary file."""
    import errno

    from lvcodec import bitstream as bs

    src = _y4m(tmp_path / "a.y4m", 32, 16, n=4)
    real = bs.Writer._write

    def write(self, b):
        if self.frames == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, b)

    monkeypatch.setattr(bs.Writer, "_write", write)
    out = tmp_path / "out.lvc"
    r = CliRunner().invoke(main, ["encode", src, str(out), "--quiet"])
    assert r.exit_code == 1 and r.stderr.strip() == "lvc: error: No space left on device", r.stderr
    assert not out.exists() and not list(tmp_path.glob(".lvc-*"))


def test_unwritable_directory(tmp_path):
    import os

    src = _y4m(tmp_path / "a.y4m", 32, 16, n=2)
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        r = CliRunner().invoke(main, ["encode", src, str(ro / "out.lvc"), "--quiet"])
        assert r.exit_code == 1 and "Permission denied" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    finally:
        os.chmod(ro, 0o755)
