"""lvc train: config errors, data sampling, a run end to end with export and model card, exact resume,
and a two-process torchrun (gloo) run. Tiny models on a synthetic data folder made here (never ../shared)."""

from __future__ import annotations

import copy
import csv
import glob
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from lvcodec.cli import main


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """Three short videos (two containers, a subfolder), four images (one too small), one stray file."""
    import av
    from skimage import data as skd
    from skimage import io as skio

    root = tmp_path_factory.mktemp("train-data")
    (root / "video" / "sub").mkdir(parents=True)
    (root / "images").mkdir()
    photo = skd.astronaut()
    for k, (codec, name, w, h) in enumerate([("mpeg4", "v0.mp4", 128, 96), ("ffv1", "sub/v1.mkv", 112, 80),
                                             ("mpeg4", "v2.avi", 96, 64)]):
        with av.open(str(root / "video" / name), "w") as c:
            s = c.add_stream(codec, rate=25)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            for t in range(8):  # a pan over the photo
                y0, x0 = 100 + 2 * t + 9 * k, 150 + 3 * t
                fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(photo[y0 : y0 + h, x0 : x0 + w]), format="rgb24")
                for p in s.encode(fr):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    skio.imsave(str(root / "images" / "a.png"), skd.coffee()[:160, :200], check_contrast=False)
    skio.imsave(str(root / "images" / "b.jpg"), skd.chelsea()[:128, :160])
    skio.imsave(str(root / "images" / "c.png"), skd.camera()[:96, :128], check_contrast=False)  # grey
    skio.imsave(str(root / "images" / "tiny.png"), skd.coffee()[:40, :40], check_contrast=False)
    (root / "images" / "notes.txt").write_text("not an image")
    return root


def write_config(path, data_dir, out, stages: str, eval_: str = "qualities = []", extra_train: str = "",
                 priors: str = "steps = 20") -> str:
    path.write_text(textwrap.dedent(f"""\
        [model]
        name = "lvc-hyperprior-v1"
        args = {{ N = 8, M = 8, Nz = 8, F = 8 }}

        [data]
        video = ["{data_dir / 'video'}"]
        images = ["{data_dir / 'images'}"]
        crop = 64
        holdout = 0.3
        cache_mb = 8

        [train]
        out = "{out}"
        log_every = 1
        checkpoint_every = 100
        {extra_train}

        [eval]
        {eval_}

        [priors]
        {priors}
        context_steps = 30
        """) + textwrap.dedent(stages))
    return str(path)


STAGES = """
    [[stage]]
    name = "intra"
    steps = 2
    lr = 1e-3
    images = 2
    sequences = 1

    [[stage]]
    name = "inter"
    steps = 2
    lr = 1e-3
    lr_final = 5e-4
    images = 1
    sequences = 2
    frames = 3
    """


def lvc(*args):
    return CliRunner().invoke(main, list(args))


# -- the config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace("[model]", "[model]\nsize = 3"), "unknown key [model].size"),
    (lambda s: s.replace("crop = 64", "crop = 100"), "[data].crop = 100 should be a multiple of 64"),
    (lambda s: s.replace("steps = 2\n", 'steps = "many"\n', 1), '[[stage]] 1 ("intra").steps = "many" should be an integer'),
    (lambda s: s.replace("holdout = 0.3", "holdout = 2.0"), "[data].holdout = 2.0 should be >= 0.0 and <= 0.9"),
    (lambda s: s.replace("frames = 3", "frames = 3\ntrain = [\"intra\"]"), "codes P-frames but does not train inter"),
    (lambda s: s.replace("[eval]", "[evaluation]"), "unknown section [evaluation]"),
    (lambda s: s.replace("steps = 20", "frames = 1"), "[priors].frames = 1 should be between 2 and 4096"),
    (lambda s: s.replace('name = "lvc-hyperprior-v1"', 'name = "nope"'), 'unknown model "nope"'),
    (lambda s: s.replace("args = {", "args = {{"), "not valid TOML"),
    (lambda s: s.split("[[stage]]")[0], "no [[stage]]"),
    (lambda s: s.replace("[train]", "[train]\nlambdas = [1, 2]"), "[train].lambdas = [1, 2] should be a list of 8"),
    (lambda s: s.replace("[train]", "[train]\nmotion_blocks = [16, 48]"),
     "[train].motion_blocks = [16, 48] should be a list of motion block sizes among 8, 16, 32, 64"),
])
def test_bad_config_is_one_line_exit_2(tmp_path, data_dir, edit, message):
    cfg = tmp_path / "c.toml"
    write_config(cfg, data_dir, tmp_path / "run", STAGES)
    cfg.write_text(edit(cfg.read_text()))
    r = CliRunner().invoke(main, ["train", str(cfg)])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lvc: error: ") and message in lines[0], r.stderr
    assert not (tmp_path / "run").exists()


def test_missing_config_and_data(tmp_path, data_dir):
    r = lvc("train", str(tmp_path / "none.toml"))
    assert r.exit_code == 2 and "no such file" in r.stderr
    cfg = write_config(tmp_path / "c.toml", data_dir, tmp_path / "run", STAGES)
    text = open(cfg).read().replace(str(data_dir / "video"), str(tmp_path / "missing"))
    open(cfg, "w").write(text)
    r = lvc("train", cfg)
    assert r.exit_code == 2 and r.stderr.strip().endswith("missing: no such folder"), r.stderr


def test_help_imports_no_torch():
    code = ("import sys; from click.testing import CliRunner; from lvcodec.cli import main; "
            "r = CliRunner().invoke(main, ['train', '--help']); assert r.exit_code == 0 and 'torchrun' in r.output; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- data -----------------------------------------------------------------------------------------------


def test_training_set_batches_and_holdout(data_dir):
    from lvcodec.train.config import DataConfig
    from lvcodec.train.data import PictureCache, TrainingSet
    from lvcodec.frames import Picture

    cfg = DataConfig(video=(str(data_dir / "video"),), images=(str(data_dir / "images"),), crop=64, holdout=0.3,
                     cache_mb=1)
    ts = TrainingSet(cfg)
    assert len(ts.videos.train) == 2 and len(ts.videos.held_out) == 1
    assert len(ts.images.held_out) == 1 and ts.images.unreadable == [] and len(ts.images.too_small) <= 1
    assert sum(s.frames for s in ts.videos.train + ts.videos.held_out) == 24
    y, uv = ts.images_batch(np.random.default_rng(1), 3)
    assert y.shape == (3, 64, 64) and uv.shape == (3, 2, 32, 32) and y.dtype == np.uint8
    ys, uvs = ts.sequences_batch(np.random.default_rng(1), 2, 3)
    assert ys.shape == (2, 3, 64, 64) and uvs.shape == (2, 3, 2, 32, 32)
    assert not np.array_equal(ys[:, 0], ys[:, 1])  # consecutive frames of a pan differ
    # the same generator state draws the same batch, whatever the cache holds
    again = TrainingSet(cfg)
    again.decoder.cache = PictureCache(0)
    ys2, uvs2 = again.sequences_batch(np.random.default_rng(1), 2, 3)
    assert np.array_equal(ys, ys2) and np.array_equal(uvs, uvs2)
    assert ts.decoder.cache.bytes <= 1 << 20
    clips = ts.held_out_clips(frames=4, size=64, count=4)
    assert len(clips) == 1 and len(clips[0][1]) == 4 and isinstance(clips[0][1][0], Picture)
    assert clips[0][1][0].width == 64


def test_packed_training_set(tmp_path):
    from lvcodec.train.config import DataConfig
    from lvcodec.train.data import TrainingSet

    rng = np.random.default_rng(0)
    path = tmp_path / "train.npz"  # the layout tools/pack_data.py writes
    np.savez(path, seq_y=rng.integers(0, 256, (10, 3, 64, 64), np.uint8),
             seq_uv=rng.integers(0, 256, (10, 3, 2, 32, 32), np.uint8),
             img_y=rng.integers(0, 256, (10, 80, 80), np.uint8), img_uv=rng.integers(0, 256, (10, 2, 40, 40), np.uint8))
    ts = TrainingSet(DataConfig(packed=str(path), crop=64, holdout=0.2))
    assert ts.n_image_sources == ts.n_sequence_sources == 8
    y, uv = ts.images_batch(rng, 3)
    assert y.shape == (3, 64, 64) and uv.shape == (3, 2, 32, 32)
    ys, uvs = ts.sequences_batch(rng, 2, 2)
    assert ys.shape == (2, 2, 64, 64) and uvs.shape == (2, 2, 2, 32, 32)
    assert len(ts.held_out_clips(8, 64, 4)) == 2 and len(ts.held_out_images(64, 4)) == 2


def test_jpeg_packed_training_set(tmp_path):
    """A pack whose planes are JPEG mosaics (``tools/pack_data.py --jpeg``) loads as the same arrays, within
    the JPEG's error, and a damaged one is a one-line InputError."""
    from lvcodec.errors import InputError
    from lvcodec.train.config import DataConfig
    from lvcodec.train.data import TrainingSet, jpeg_encode, read_pack

    rng = np.random.default_rng(0)
    smooth = lambda *shape: np.clip(np.cumsum(rng.integers(-3, 4, shape), -1) + 128, 0, 255).astype(np.uint8)
    arrays = dict(seq_y=smooth(10, 3, 64, 64), seq_uv=smooth(10, 3, 2, 32, 32), img_y=smooth(10, 80, 80),
                  img_uv=smooth(10, 2, 40, 40))
    packed = {f"{k}.{part}": v for k, a in arrays.items() for part, v in jpeg_encode(a, 95).items()}
    path = tmp_path / "train.npz"
    np.savez(path, **packed)
    assert path.stat().st_size < sum(a.nbytes for a in arrays.values()) / 2
    back = read_pack(str(path))
    for k, a in arrays.items():
        assert back[k].shape == a.shape and back[k].dtype == np.uint8
        assert np.abs(back[k].astype(int) - a).mean() < 2, k
    ts = TrainingSet(DataConfig(packed=str(path), crop=64, holdout=0.2))
    assert ts.n_image_sources == ts.n_sequence_sources == 8

    packed["img_y.jpg"] = packed["img_y.jpg"][:100]  # truncated
    np.savez(path, **packed)
    with pytest.raises(InputError, match="not a packed training set"):
        TrainingSet(DataConfig(packed=str(path), crop=64, holdout=0.2))


def test_bf16_autocast_keeps_entropy_models_fp32():
    import torch

    from lvcodec.train import build_models
    from lvcodec.train.precision import autocast_transforms

    intra, _ = build_models("lvc-hyperprior-v1", N=8, M=8, Nz=8, F=8)
    autocast_transforms(intra, "cpu")
    seen = {}

    def record(name):
        def hook(module, args, out):
            seen.setdefault(name, out.dtype)
        return hook

    intra.g_a[0].register_forward_hook(record("conv"))
    intra.g_a[1].register_forward_hook(record("gdn"))
    out = intra(torch.rand(2, 6, 32, 32), torch.tensor([0, 7]))
    assert seen == {"conv": torch.bfloat16, "gdn": torch.float32}
    assert out["x_hat"].dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in out["likelihoods"].values())
    out["x_hat"].mean().backward()


def test_bf16_on_a_cpu_without_native_bf16_is_flagged(tmp_path, monkeypatch):
    """bf16 autocast is emulated (and much slower than fp32) on CPUs without AMX or AVX512-BF16: warn."""
    from lvcodec.train import precision

    amx, avx2 = tmp_path / "amx", tmp_path / "avx2"
    amx.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert precision.cpu_has_native_bf16(str(amx)) is True
    assert precision.cpu_has_native_bf16(str(avx2)) is False
    assert precision.cpu_has_native_bf16(str(tmp_path / "missing")) is None
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert "slower than fp32" in precision.slow_bf16_warning("cpu")
    assert precision.slow_bf16_warning("cuda") is None
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.slow_bf16_warning("cpu") is None


# -- runs -------------------------------------------------------------------------------------------------


def test_train_end_to_end_exports_weights_and_card(tmp_path, data_dir):
    import torch

    from lvcodec.train import build_models
    from lvcodec.weights import load_state, sha256_file

    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.toml", data_dir, out, STAGES, "qualities = [1, 8]\nframes = 3\ncrop = 64")
    r = lvc("train", cfg, "--threads", "1")
    assert r.exit_code == 0, r.output + r.stderr
    assert "| 8 |" in r.stdout  # the RD table
    assert "exported" in r.stderr and "step 4/4 inter" in r.stderr
    intra_f = glob.glob(str(out / "intra-*.safetensors"))
    inter_f = glob.glob(str(out / "inter-*.safetensors"))
    assert len(intra_f) == len(inter_f) == 1
    intra, inter = build_models("lvc-hyperprior-v1", N=8, M=8, Nz=8, F=8)
    for model, f in ((intra, intra_f[0]), (inter, inter_f[0])):
        sha = sha256_file(f)
        assert os.path.basename(f).split("-")[1].startswith(sha[:8])
        model.load_state_dict(load_state(f, sha))
        assert model.entropy_bottleneck._quantized_cdf.numel() > 0  # CDF tables were built
    # the weights code: compress/decompress round trip of a frame
    x = torch.rand(1, 6, 32, 32)
    enc = intra.eval().compress(x, 3)
    dec = intra.decompress(enc["strings"], enc["shape"], 3)
    assert torch.equal(dec["x_hat"], enc["x_hat"])
    # the priors were fitted to the training videos' symbols: the vector tables are no longer the generic ones
    generic = build_models("lvc-hyperprior-v1", N=8, M=8, Nz=8, F=8)[1]
    assert not torch.equal(inter.mv_cdf, generic.mv_cdf)
    assert "fitting the priors to the symbols of 2 training videos" in r.stderr
    assert "fitting the checkerboard contexts (30 steps each)" in r.stderr
    card = (out / "MODEL_CARD.md").read_text()
    for part in ("## Data", "## Schedule", "## λ per quality", "0.07151", "| intra | 2 |",
                 "fitted to the coded symbols of 2 training videos",
                 "| quality | held-out video bpp", "Decoded pictures equal to the encoder's reconstruction: all",
                 sha256_file(intra_f[0])):
        assert part in card, part
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4] and rows[-1]["p_bpp"] and not rows[0]["p_bpp"]
    assert rows[-1]["lr"] == "0.0005"
    # a second run into the same folder is refused; --resume of a finished run only exports again
    r = lvc("train", cfg)
    assert r.exit_code == 4 and "--resume" in r.stderr
    r = lvc("train", cfg, "--resume", "--quiet")
    assert r.exit_code == 0 and glob.glob(str(out / "intra-*.safetensors")) == intra_f


def test_resume_is_exact(tmp_path, data_dir):
    """4 steps in one go == 3 steps, stop (mid-stage), resume for the last: the same bits."""
    def weights(out):
        return {os.path.basename(f): open(f, "rb").read() for f in sorted(glob.glob(str(out / "*.safetensors")))}

    cfg = write_config(tmp_path / "c.toml", data_dir, tmp_path / "a", STAGES)
    assert lvc("train", cfg, "--quiet", "--threads", "1").exit_code == 0
    r = lvc("train", cfg, "-o", str(tmp_path / "b"), "--quiet", "--threads", "1", "--stop-after", "3")
    assert r.exit_code == 0 and not glob.glob(str(tmp_path / "b" / "*.safetensors"))
    r = lvc("train", cfg, "-o", str(tmp_path / "b"), "--threads", "1", "--resume")
    assert r.exit_code == 0, r.stderr
    assert "resumed at step 3 (stage 2, step 1 in it)" in r.stderr
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert len(a) == 2 and a == b
    log_a = (tmp_path / "a" / "log.csv").read_text().splitlines()
    log_b = (tmp_path / "b" / "log.csv").read_text().splitlines()
    def no_clock(lines):
        return [r.split(",")[:2] + r.split(",")[3:] for r in lines]

    assert len(log_a) == 5 and no_clock(log_a) == no_clock(log_b)


def test_torchrun_two_processes_identical_weights(tmp_path, data_dir):
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.toml", data_dir, out, STAGES)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "lvcodec.train", cfg, "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = json.loads((out / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and ranks["step"] == 4
    assert len(ranks["sha256"]) == 2 and ranks["sha256"][0] == ranks["sha256"][1]
    assert len(glob.glob(str(out / "*.safetensors"))) == 2 and (out / "MODEL_CARD.md").is_file()
    assert "2 processes on cpu" in (out / "MODEL_CARD.md").read_text()


def test_fit_priors_lowers_the_bits_and_keeps_the_z_medians():
    """lvcodec.train.priors: fitting a prior to each quality's symbols lowers their cost; for ẑ the medians
    (hence every decoded picture) stay as they were."""
    import torch
    from compressai.entropy_models import EntropyBottleneck

    from lvcodec.train import priors as fp

    from lvcodec.models import NUM_QUALITIES

    g = torch.Generator().manual_seed(0)
    # 3 channels per quality; higher qualities spread wider (as ẑ does with the gains)
    symbols = [[torch.round(torch.randn(3, 400, generator=g) * (0.3 + q)).to(torch.int32)] for q in range(NUM_QUALITIES)]
    for keep in (True, False):
        torch.manual_seed(0)
        eb = EntropyBottleneck(3 * NUM_QUALITIES)
        eb.update(force=True)
        med = eb._get_medians().detach().clone()
        _, lik = eb(torch.cat([s[0] for s in symbols]).float()[None, :, None] + med.view(1, -1, 1, 1), training=False)
        before = -torch.log2(lik).sum()
        fp.fit(eb, symbols, steps=150, keep_medians=keep)
        _, lik = eb(torch.cat([s[0] for s in symbols]).float()[None, :, None] + (med if keep else 0 * med).view(1, -1, 1, 1),
                    training=False)
        assert -torch.log2(lik).sum() < 0.8 * before
        assert torch.equal(eb._get_medians(), med) == keep


def test_fit_priors_vector_tables_lower_the_bits_of_the_fields_they_are_fitted_to():
    """The context tables fitted to vector residual fields code those fields in fewer bits than the generic
    tables, at every quality, and each quality keeps its own tables."""
    import numpy as np
    import torch

    from lvcodec import mvcoding
    from lvcodec.train import priors as fp
    from lvcodec.models import NUM_QUALITIES, InterModel

    rng = np.random.default_rng(0)
    fields = []
    for q in range(NUM_QUALITIES):  # still background with a moving patch; more motion at higher qualities
        fs = []
        for _ in range(4):
            f = np.zeros((2, 12, 20), np.int64)
            f[:, 3:7, 5:11] = rng.integers(-8, 9, (2, 4, 6)) * (1 + q)
            fs.append(torch.from_numpy(f))
        fields.append(fs)
    inter = InterModel()
    c = mvcoding.CONTEXTS
    before = [fp.table_bits(inter.mv_cdf[q * c:(q + 1) * c], fields[q]) for q in range(NUM_QUALITIES)]
    fp.fit_vector_tables(inter, fields)
    after = [fp.table_bits(inter.mv_cdf[q * c:(q + 1) * c], fields[q]) for q in range(NUM_QUALITIES)]
    assert all(a < 0.8 * b for a, b in zip(after, before)), (before, after)
    assert not torch.equal(inter.mv_cdf[:c], inter.mv_cdf[-c:])
    # what table_bits estimates is what the range coder writes (to within the flush)
    from lvcodec.models import RansWriter

    w = RansWriter()
    for f in fields[3]:
        mvcoding.encode(w, inter._vector_tables(3), f.numpy())
    est = after[3] * sum(f.numel() for f in fields[3])
    assert abs(len(w.flush()) * 8 - est) < 0.03 * est + 64


@pytest.mark.parametrize("mode,frozen,trained", [("--intra-only", "inter", "intra"), ("--inter-only", "intra", "inter")])
def test_tools_train_one_model_leaves_the_other_as_shipped(tmp_path, mode, frozen, trained):
    """tools/train.py --intra-only / --inter-only (the CPU sessions' trainers): one model learns, the other
    is written back exactly as loaded (its fitted tables included)."""
    import torch
    from safetensors.torch import load_file

    from lvcodec.weights import WEIGHTS_DIR

    rng = np.random.default_rng(0)
    pack = tmp_path / "train.npz"
    np.savez(pack, seq_y=rng.integers(0, 256, (4, 3, 64, 64), np.uint8),
             seq_uv=rng.integers(0, 256, (4, 3, 2, 32, 32), np.uint8),
             img_y=rng.integers(0, 256, (4, 80, 80), np.uint8), img_uv=rng.integers(0, 256, (4, 2, 40, 40), np.uint8))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "run"
    subprocess.run([sys.executable, os.path.join(root, "tools", "train.py"), "--data", str(pack), "--init",
                    str(WEIGHTS_DIR), "--out-dir", str(out), "--steps", "2", "--crop", "64", "--batch-img", "2",
                    "--batch-seq", "2", "--threads", "1", mode], check=True, capture_output=True, cwd=root)
    (shipped_frozen,) = glob.glob(str(WEIGHTS_DIR / f"{frozen}*.safetensors"))
    (shipped_trained,) = glob.glob(str(WEIGHTS_DIR / f"{trained}*.safetensors"))
    a, b = load_file(shipped_frozen), load_file(out / f"{frozen}.safetensors")
    if "scale_calib" not in a:  # weights from before the fitted scales load with factor 1
        a["scale_calib"] = torch.ones_like(b["scale_calib"])
    # weights from before the checkerboard context load with an unfitted one, written back with the rest
    assert set(a) <= set(b) and all(k.startswith("context.") for k in set(b) - set(a))
    assert all(a[k].equal(b[k]) for k in a)
    a, b = load_file(shipped_trained), load_file(out / f"{trained}.safetensors")
    assert not a["g_a.0.weight"].equal(b["g_a.0.weight"])


def test_fitted_scale_factors_code_the_latent_in_fewer_bits_and_decode_exactly():
    """lvcodec.train.priors.fit_scales: per quality and channel, the factor on the scales of ŷ that codes the
    collected latents in the fewest bits. With them the pictures code smaller, ŷ and the picture
    are unchanged (only the probabilities are), the decoder rebuilds them exactly, and the qualities with
    no latents keep their factors. Weights from before the factors load with factor 1."""
    import av
    import torch
    from skimage import data as skdata

    from lvcodec.frames import from_av, to_tensor
    from lvcodec.models import IntraModel, upgrade_state
    from lvcodec.train import priors as fp
    from lvcodec.zoo import load_models

    intra = copy.deepcopy(load_models()[0])  # the shared model stays as shipped for the other tests
    intra.scale_calib.fill_(1.0)
    # without the checkerboard context (zero refinements): the context reads the scale indexes, so with it
    # the factors would move the non-anchors' means too
    intra.context.load_state_dict(IntraModel().context.state_dict())
    photo = skdata.astronaut()
    pics = [to_tensor(from_av(av.VideoFrame.from_ndarray(np.ascontiguousarray(photo[a:a + 128, b:b + 192]),
                                                         format="rgb24")), 64) for a, b in ((0, 0), (256, 256))]
    q = 0
    costs = [[fp.y_costs(intra, intra.g_a(x), q) for x in pics]] + [[] for _ in range(intra.scale_calib.shape[0] - 1)]
    fp.fit_scales(intra, costs, say=lambda s: None)
    assert (intra.scale_calib[q] != 1).any() and (intra.scale_calib[1:] == 1).all()
    assert float(intra.scale_calib.min()) >= float(fp.SCALE_FACTORS.min())
    fitted = intra.scale_calib.clone()
    for x in pics:
        intra.scale_calib.fill_(1.0)
        before = intra.compress(x, q)
        intra.scale_calib.copy_(fitted)
        after = intra.compress(x, q)
        assert len(after["strings"][0]) < len(before["strings"][0])
        assert torch.equal(after["x_hat"], before["x_hat"])
        assert torch.equal(intra.decompress(after["strings"], after["shape"], q)["x_hat"], after["x_hat"])
    state = {k: v for k, v in IntraModel().state_dict().items() if k != "scale_calib"}
    old = IntraModel()
    old.load_state_dict(upgrade_state(old, state))
    assert (old.scale_calib == 1).all()


def test_a_fitted_context_codes_the_latent_in_fewer_bits_and_decodes_exactly():
    """lvcodec.train.context: fitted to a picture's latents, the checkerboard context codes them in fewer
    bits (as the coder counts them and in real bytes), the decoder rebuilds the picture exactly, and
    weights from before the context load with one that changes nothing (zero refinements)."""
    import av
    import torch
    from skimage import data as skdata

    from lvcodec.frames import from_av, to_tensor
    from lvcodec.models import IntraModel, anchor_mask, upgrade_state
    from lvcodec.train import context
    from lvcodec.zoo import load_models

    intra = copy.deepcopy(load_models()[0])  # the shared model stays as shipped for the other tests
    intra.context.load_state_dict(IntraModel().context.state_dict())  # unfitted: zero refinements
    photo = skdata.astronaut()
    x = to_tensor(from_av(av.VideoFrame.from_ndarray(np.ascontiguousarray(photo[64:256, 128:384]),
                                                     format="rgb24")), 64)
    y = intra.g_a(x)
    items = [context.residuals(intra, y, q) for q in (1, 4)]
    before = {q: intra.compress(x, q) for q in (1, 4)}
    context.fit(intra.context, intra.gaussian_conditional, items, 400)
    hyper, refined = context.coded_bits(intra, items)
    assert refined < 0.97 * hyper
    for q in (1, 4):
        after = intra.compress(x, q)
        assert len(after["strings"][0]) < len(before[q]["strings"][0])
        assert torch.equal(intra.decompress(after["strings"], after["shape"], q)["x_hat"], after["x_hat"])
        mse = lambda out: float(((out["x_hat"] - x) ** 2).mean())  # noqa: E731
        assert mse(after) < 1.05 * mse(before[q])  # the refined means move ŷ: no worse
    state = {k: v for k, v in IntraModel().state_dict().items() if not k.startswith("context.")}
    old = IntraModel()
    old.load_state_dict(upgrade_state(old, state))
    sym = torch.round(torch.randn(1, 128, 6, 6) * 4) * anchor_mask(6, 6)
    delta, offset = old.context.exact(old._int_context(sym.device), sym, torch.full(sym.shape, 20))
    assert (delta == 0).all() and (offset == 0).all()
