"""The model registry and the PyAV-shaped API: a model of the test's own goes through lvc encode, decode,
info and the API; a plugin package is found through its entry point."""

import hashlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import lvcodec
from lvcodec.cli import main
from lvcodec.registry import _models

TOY_SOURCE = '''
import hashlib

import torch
from compressai.entropy_models import EntropyBottleneck

import lvcodec


class ToyCodec(lvcodec.CodecModel):
    """Pixels quantized with a per-quality step and coded by a CompressAI EntropyBottleneck (fixed seed):
    intra codes the picture, inter the difference from the decoded previous one."""

    num_qualities = 3
    downsampling = 16
    has_inter = True
    substreams_intra = ("pixels",)
    substreams_inter = ("residual",)
    STEPS = (24.0, 12.0, 4.0)

    def __init__(self):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.eb = EntropyBottleneck(6)
        self.eb.update(force=True)
        self.eb.eval()

    def weights_sha256(self):
        return hashlib.sha256(b"toy-codec-1").digest()

    def _code(self, d, q):
        sym = torch.round(d * 255 / self.STEPS[q - 1])
        s = self.eb.compress(sym)[0]
        return [s], self._back(s, d.shape[-2:], q)

    def _back(self, s, shape, q):
        return self.eb.decompress([s], shape) * self.STEPS[q - 1] / 255

    def encode_intra(self, x, quality):
        subs, d = self._code(x - 0.5, quality)
        return subs, d + 0.5

    def decode_intra(self, substreams, coded_size, quality):
        return self._back(substreams[0], (coded_size[0] // 2, coded_size[1] // 2), quality) + 0.5

    def encode_inter(self, x, ref, quality):
        subs, d = self._code(x - ref, quality)
        return subs, ref + d

    def decode_inter(self, substreams, coded_size, ref, quality):
        return ref + self._back(substreams[0], (coded_size[0] // 2, coded_size[1] // 2), quality)
'''


@pytest.fixture(scope="module")
def toy():
    ns = {}
    exec(compile(TOY_SOURCE, "toy_codec.py", "exec"), ns)
    cls = lvcodec.register_model("toy-test", model_id=0x8123)(ns["ToyCodec"])
    yield cls
    _models.pop("toy-test", None)


def test_builtin_model_is_listed():
    assert "lvc-hyperprior-v1" in lvcodec.list_models()
    m = lvcodec.load_model("lvc-hyperprior-v1", quality=8)
    assert m.model_id == 1 and m.num_qualities == len(lvcodec.models.LAMBDAS) and m.has_inter
    with pytest.raises(ValueError, match="between 1 and 8"):
        lvcodec.load_model("lvc-hyperprior-v1", quality=9)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(lvcodec.ModelError, match='unknown model "nope"') as e:
        lvcodec.load_model("nope")
    assert isinstance(e.value, KeyError)
    r = CliRunner().invoke(main, ["encode", "x.y4m", "y.lvc", "--model", "nope"])
    assert r.exit_code == 2 and r.stderr.startswith('lvc: error: unknown model "nope"')


def test_ids_cannot_clash(toy):
    class Other(lvcodec.CodecModel):
        pass

    with pytest.raises(lvcodec.ModelError, match="taken by"):
        lvcodec.register_model("other", model_id=0x8123)(Other)
    with pytest.raises(TypeError):
        lvcodec.register_model("x", model_id=0x8124)(object)


def test_own_model_through_the_cli(toy, clip_path, clip_pics, tmp_path):
    assert "toy-test" in lvcodec.list_models()
    run = CliRunner().invoke
    lvc, y4m = tmp_path / "t.lvc", tmp_path / "t.y4m"
    sizes = []
    for q in (1, 3):
        r = run(main, ["encode", clip_path, str(lvc), "--model", "toy-test", "-q", str(q), "--keyint", "4", "-y"])
        assert r.exit_code == 0, r.stderr
        sizes.append(lvc.stat().st_size)
    assert sizes[0] < sizes[1]
    r = run(main, ["encode", clip_path, str(lvc), "--model", "toy-test", "-q", "4", "-y"])
    assert r.exit_code == 2 and "range 1..3 of model toy-test" in r.stderr
    r = run(main, ["info", str(lvc), "--json"])
    assert '"model_id": 33059' in r.stdout and "third-party 0x8123" in r.stdout
    r = run(main, ["decode", str(lvc), str(y4m)])
    assert r.exit_code == 0, r.stderr
    decoded = list(lvcodec.decode(str(lvc)))
    assert len(decoded) == len(clip_pics)
    psnr = np.mean([lvcodec.psnr_yuv(a, b) for a, b in zip(clip_pics, decoded)])
    assert psnr > 30  # step 4 at q3: a near-lossless toy
    assert run(main, ["models"]).stdout.count("toy-test") == 1


def test_stream_of_a_missing_model(toy, clip_pics, tmp_path):
    path = tmp_path / "t.lvc"
    with lvcodec.open(str(path), "w", model="toy-test", quality=1) as f:
        f.encode(clip_pics[0])
    _models.pop("toy-test")
    try:
        with pytest.raises(lvcodec.BitstreamError, match="model id 0x8123, which is not installed"):
            list(lvcodec.decode(str(path)))
    finally:
        _models["toy-test"] = toy


def test_open_write_and_read(clip_pics, tmp_path):
    path = tmp_path / "a.lvc"
    with lvcodec.open(str(path), "w", rate=30, quality=2, keyint=3) as f:
        for p in clip_pics[:5]:
            packets = f.encode(p)
            assert len(packets) == 1 and packets[0].pts == p.pts
        recon_last = f.reconstruction
    assert f.bytes_written == path.stat().st_size
    with lvcodec.open(str(path)) as f:
        assert (f.header.width, f.header.height, f.frames, f.keyframes) == (96, 64, 5, [0, 3])
        assert f.rate == 30 and f.time_base == pytest.approx(1 / 30)
        packets = list(f.demux())
        assert [p.is_keyframe for p in packets] == [True, False, False, True, False]
        frames = list(f.decode())
        assert np.array_equal(frames[-1].y, recon_last.y)
        tail = list(f.decode(start_frame=4, format="torch"))
        assert len(tail) == 1 and isinstance(tail[0].y, torch.Tensor) and torch.equal(tail[0].y, torch.from_numpy(recon_last.y))


def test_open_write_rgb_arrays_and_abort(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    path = tmp_path / "rgb.lvc"
    with lvcodec.open(str(path), "w") as f:
        f.encode(rgb)
        f.encode(rgb)
    assert [p.width for p in lvcodec.decode(str(path))] == [48, 48]
    bad = tmp_path / "bad.lvc"
    with pytest.raises(RuntimeError):
        with lvcodec.open(str(bad), "w") as f:
            f.encode(rgb)
            raise RuntimeError("user code failed")
    assert not bad.exists() and not list(tmp_path.glob(".lvc-*"))
    with pytest.raises(lvcodec.OutputExistsError):
        lvcodec.open(str(path), "w")
    with pytest.raises(ValueError, match="mode"):
        lvcodec.open(str(path), "a")


def test_plugin_found_through_its_entry_point(tmp_path, clip_path):
    """A package that declares the entry point is used by `lvc encode --model` with no import by the user."""
    (tmp_path / "toy_plugin").mkdir()
    (tmp_path / "toy_plugin" / "__init__.py").write_text(
        TOY_SOURCE + '\nToyCodec = lvcodec.register_model("toy-plugin", model_id=0x8200)(ToyCodec)\n')
    dist = tmp_path / "toy_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[lvcodec.models]\ntoy-plugin = toy_plugin:ToyCodec\n")
    out = tmp_path / "p.lvc"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from lvcodec.cli import main
        sys.argv = ["lvc", "encode", {clip_path!r}, {str(out)!r}, "--model", "toy-plugin", "-q", "2", "--quiet"]
        main()
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import lvcodec
        print(len(list(lvcodec.decode({str(out)!r}))), "toy-plugin" in lvcodec.list_models())
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.split() == ["8", "True"], r.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest()  # a real file was written


def test_own_model_through_the_bench(toy, tmp_path):
    """`lvc bench --codecs NAME` runs a registered model like lvc itself, against an anchor."""
    import json

    out = tmp_path / "bench"
    r = CliRunner().invoke(main, ["bench", "demo:96x64", "--codecs", "toy-test,x264", "--no-intra", "--frames", "2",
                                  "--keyint", "2", "--qualities", "1,3,8", "--crfs", "30,45", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, (r.stderr, r.exception)
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["run_codecs"] == ["x264", "toy-test"]
    runs = {(x["codec"], x["setting"]): x for x in res["clips"][0]["runs"]}
    assert set(runs) == {("x264", "crf30"), ("x264", "crf45"), ("toy-test", "q1"), ("toy-test", "q3")}  # q8 > 3 levels
    toy_q3 = runs["toy-test", "q3"]
    assert toy_q3["checks"]["ok"] and toy_q3["options"]["model"] == "toy-test" and toy_q3["options"]["model_id"] == 0x8123
    assert toy_q3["bytes"] > runs["toy-test", "q1"]["bytes"] and toy_q3["psnr_yuv"] > runs["toy-test", "q1"]["psnr_yuv"]
    assert (out / "rd_demo-96x64.png").exists()
