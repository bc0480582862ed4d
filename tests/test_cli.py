"""The lvc command line: round trips, one-line errors, exit codes, no partial or overwritten output."""

import numpy as np
import pytest
from click.testing import CliRunner

import lvcodec
from lvcodec.cli import NUM_QUALITIES, main
from lvcodec.models import NUM_QUALITIES as MODEL_QUALITIES


@pytest.fixture
def run():
    def _run(*args):
        r = CliRunner().invoke(main, [str(a) for a in args])
        return r

    return _run


def _one_line_error(r, code, text):
    assert r.exit_code == code, (r.exit_code, r.stderr, r.exception)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lvc: error:") and text in lines[0], r.stderr
    assert "Traceback" not in r.output


def test_quality_range_matches_the_model():
    assert NUM_QUALITIES == MODEL_QUALITIES


def test_encode_decode_info(run, clip_path, clip_pics, tmp_path):
    lvc, y4m, mkv = tmp_path / "a.lvc", tmp_path / "a.y4m", tmp_path / "a.mkv"
    r = run("encode", clip_path, lvc, "-q", 3, "--keyint", 4)
    assert r.exit_code == 0, r.stderr
    assert "bpp" in r.stderr and "PSNR-YUV" in r.stderr
    r = run("decode", lvc, y4m)
    assert r.exit_code == 0, r.stderr
    assert run("decode", lvc, mkv).exit_code == 0
    decoded = list(lvcodec.decode(str(lvc)))
    # the y4m holds exactly the decoded planes
    frame = 96 * 64 * 3 // 2
    raw = y4m.read_bytes()
    body = raw[raw.index(b"\n") + 1 :]
    assert len(body) == len(clip_pics) * (6 + frame)
    y0 = np.frombuffer(body[6 : 6 + 96 * 64], np.uint8).reshape(64, 96)
    assert np.array_equal(y0, decoded[0].y)
    # the lossless mkv decodes back to the same planes
    import av

    with av.open(str(mkv)) as c:
        f = next(c.decode(video=0))
    assert np.array_equal(lvcodec.frames.from_av(f).y, decoded[0].y)
    r = run("info", lvc)
    assert r.exit_code == 0 and "96x64" in r.stdout and "quality 3" in r.stdout
    assert r.stdout.count(" I ") == 2 and r.stdout.count(" P ") == 6


def test_refuses_to_overwrite_without_y(run, clip_path, tmp_path):
    out = tmp_path / "a.lvc"
    out.write_bytes(b"precious")
    r = run("encode", clip_path, out)
    _one_line_error(r, 4, "already exists")
    assert out.read_bytes() == b"precious"
    assert run("encode", clip_path, out, "-y", "--quiet").exit_code == 0
    assert out.read_bytes()[:4] == b"LVC\x1a"


@pytest.mark.parametrize("make, code, text", [
    (lambda p: None, 2, "no such file"),
    (lambda p: p.write_text("hello, this is not a video\n" * 20), 2, "not a readable video"),
    (lambda p: p.write_bytes(b""), 2, "not a readable video"),
])
def test_bad_encoder_input(run, tmp_path, make, code, text):
    src = tmp_path / "in.mp4"
    make(src)
    out = tmp_path / "out.lvc"
    _one_line_error(run("encode", src, out), code, text)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".lvc-")] == []


def test_audio_only_input_is_refused(run, tmp_path):
    import av

    src = tmp_path / "tone.wav"
    with av.open(str(src), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    _one_line_error(run("encode", src, tmp_path / "o.lvc"), 2, "no video stream")


def test_bad_quality_is_a_usage_error(run, clip_path, tmp_path):
    r = run("encode", clip_path, tmp_path / "o.lvc", "-q", 9)
    assert r.exit_code == 2 and "quality" in r.stderr.lower()
    assert not (tmp_path / "o.lvc").exists()


def test_preset(run, clip_path, tmp_path):
    out = tmp_path / "o.lvc"
    r = run("encode", clip_path, out, "--preset", "placebo")
    assert r.exit_code == 2 and "placebo" in r.stderr and "faster, fast, medium" in r.stderr
    assert "Traceback" not in r.output and not out.exists()
    r = run("encode", clip_path, out, "--preset", "fast", "--frames", 3, "--quiet")
    assert r.exit_code == 0, r.stderr
    assert len(list(lvcodec.decode(str(out)))) == 3


@pytest.mark.parametrize("damage, code, text", [
    (lambda d: b"JUNK" + d[4:], 3, "bad magic"),
    (lambda d: d[: len(d) // 2], 3, "truncated"),
    (lambda d: d[:40] + bytes([d[40] ^ 0x55]) + d[41:], 3, ""),
])
def test_bad_stream_gives_no_output(run, clip_path, tmp_path, damage, code, text):
    good = tmp_path / "good.lvc"
    assert run("encode", clip_path, good, "--quiet").exit_code == 0
    bad = tmp_path / "bad.lvc"
    bad.write_bytes(damage(good.read_bytes()))
    out = tmp_path / "out.y4m"
    _one_line_error(run("decode", bad, out), code, text)
    assert not out.exists()


def test_decode_unknown_output_type(run, clip_path, tmp_path):
    good = tmp_path / "good.lvc"
    run("encode", clip_path, good, "--quiet")
    _one_line_error(run("decode", good, tmp_path / "out.gif"), 2, "unsupported output type")


def test_demo_runs(run):
    r = run("demo", "--frames", 3, "--size", "64x48")
    assert r.exit_code == 0, r.stderr
    assert "bpp" in r.stdout and "PSNR-YUV" in r.stdout and "fps" in r.stdout


def test_pipes(clip_path, tmp_path):
    """`-` reads stdin and writes stdout: lvc encode in - | lvc decode - - gives the decoded y4m."""
    runner = CliRunner()
    enc = runner.invoke(main, ["encode", clip_path, "-", "--quiet", "--keyint", "4"])
    assert enc.exit_code == 0, enc.stderr
    assert enc.stdout_bytes[:4] == b"LVC\x1a"
    dec = runner.invoke(main, ["decode", "-", "-", "--quiet"], input=enc.stdout_bytes)
    assert dec.exit_code == 0, dec.stderr
    assert dec.stdout_bytes.startswith(b"YUV4MPEG2 W96 H64 F25:1")
    lvc = tmp_path / "a.lvc"
    lvc.write_bytes(enc.stdout_bytes)
    first = next(iter(lvcodec.decode(str(lvc))))
    body = dec.stdout_bytes[dec.stdout_bytes.index(b"\n") + 1 :]
    assert body[:6] == b"FRAME\n" and body[6 : 6 + 96 * 64] == first.y.tobytes()
