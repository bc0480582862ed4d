"""lvc bench: BD-rate on curves with a known answer, the metrics against references, the anchors' checks,
and a tiny end-to-end run of the command on a generated clip (JSON, PNG, report, cache)."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import lvcodec
from lvcodec.bench import BenchConfig, anchors, bd_rate, metrics
from lvcodec.bench.bdrate import OverlapWarning
from lvcodec.bench.clips import crop_even, downscale2x, load_clip
from lvcodec.bench.run import cache_key
from lvcodec.cli import main
from lvcodec.frames import Picture

ANCHOR = [(0.02, 31.0), (0.05, 34.5), (0.1, 37.2), (0.2, 40.1), (0.4, 43.0)]


# -- BD-rate ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["akima", "pchip"])
@pytest.mark.parametrize("ratio", [0.8, 1.25, 0.5])
def test_bd_rate_of_a_curve_against_itself_scaled_in_rate(method, ratio):
    test = [(r * ratio, m) for r, m in ANCHOR]
    res = bd_rate(ANCHOR, test, method)
    assert res.value == pytest.approx((ratio - 1) * 100, abs=1e-9)
    assert res.overlap == 1.0 and res.note == "" and res.interval == (31.0, 43.0)


def test_bd_rate_is_antisymmetric_in_log_rate():
    test = [(r * 1.1, m + 0.7) for r, m in ANCHOR]
    ab, ba = bd_rate(ANCHOR, test).value, bd_rate(test, ANCHOR).value
    assert (1 + ab / 100) * (1 + ba / 100) == pytest.approx(1.0, rel=1e-6)


def test_bd_rate_ignores_point_order_and_drops_dominated_points():
    shuffled = [ANCHOR[i] for i in (3, 0, 4, 1, 2)] + [(0.3, 39.0)]  # dearer than 0.2 bpp and worse
    res = bd_rate(ANCHOR, shuffled)
    assert res.value == pytest.approx(0.0, abs=1e-9)
    assert res.dropped == {"test": [5]}


def test_bd_rate_without_overlap_has_no_value():
    res = bd_rate(ANCHOR, [(r, m - 20) for r, m in ANCHOR])
    assert res.value is None and res.overlap == 0.0 and "overlap" in res.note


def test_bd_rate_warns_on_small_overlap():
    test = [(r, m + 9) for r, m in ANCHOR]  # quality ranges 31..43 and 40..52: 3 / 21 dB in common
    with pytest.warns(OverlapWarning):
        res = bd_rate(ANCHOR, test)
    assert res.value is not None and res.overlap == pytest.approx(3 / 21)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bd_rate(ANCHOR, test, warn=False).note.startswith("curves overlap over 14%")


def test_bd_rate_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="cubic"):
        bd_rate(ANCHOR, ANCHOR, "cubic")


# -- metrics -------------------------------------------------------------------------------------------


def test_ms_ssim_matches_pytorch_msssim():
    pm = pytest.importorskip("pytorch_msssim")
    import torch

    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (3, 181, 203))
    y = np.clip(x + rng.normal(0, 12, x.shape), 0, 255)
    ref = pm.ms_ssim(torch.from_numpy(x)[None], torch.from_numpy(y)[None], data_range=255, size_average=False)
    assert metrics.ms_ssim(x, y).mean() == pytest.approx(float(ref[0]), abs=1e-6)


def test_ms_ssim_identity_and_small_pictures():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 255, (64, 96))
    assert metrics.ms_ssim(x, x) == pytest.approx(1.0)
    y = np.clip(x + rng.normal(0, 5, x.shape), 0, 255)
    assert 0.5 < metrics.ms_ssim(x, y) < 1.0  # below the standard's 161-pixel minimum: window truncated
    assert metrics.msssim_db(0.99) == pytest.approx(20.0)


def test_bt601_limited_range_conversion():
    y = np.array([[16, 235], [126, 81]], np.uint8)
    grey = metrics.yuv420_to_rgb(Picture(y, np.full((1, 1), 128, np.uint8), np.full((1, 1), 128, np.uint8)))
    assert grey[..., 0].tolist() == grey[..., 2].tolist() == [[0, 255], [128, 76]]
    red = metrics.yuv420_to_rgb(Picture(np.full((2, 2), 81, np.uint8), np.full((1, 1), 90, np.uint8),
                                        np.full((1, 1), 240, np.uint8)))
    assert np.abs(red[0, 0].astype(int) - [255, 0, 0]).max() <= 1


def test_frame_metrics_agree_with_lvcodec_psnr(clip_pics):
    a, b = clip_pics[0], clip_pics[1]
    m = metrics.frame_metrics(a, b)
    assert m["psnr_yuv"] == pytest.approx(lvcodec.psnr_yuv(a, b))
    assert set(m) == set(metrics.FRAME_METRICS)
    same = metrics.frame_metrics(a, a)
    assert same["psnr_rgb"] == 100.0 and same["msssim_y"] == pytest.approx(1.0)


# -- clips and anchors -----------------------------------------------------------------------------------


def test_downscale_and_even_crop():
    y = np.arange(7 * 10, dtype=np.uint8).reshape(7, 10)
    p = Picture(y, np.zeros((4, 5), np.uint8), np.zeros((4, 5), np.uint8))
    d = downscale2x(p)
    assert (d.width, d.height) == (4, 2) and d.u.shape == (1, 2)
    assert d.y[0, 0] == round((0 + 1 + 10 + 11) / 4)
    e = crop_even(Picture(y[:, :9], np.zeros((4, 5), np.uint8), np.zeros((4, 5), np.uint8)))
    assert (e.width, e.height) == (8, 6) and e.u.shape == (3, 4)


def test_load_clip_reads_files_and_crops_odd_sizes(clip_path):
    clip = load_clip(clip_path, 3)
    assert (clip.width, clip.height, clip.frames) == (96, 64, 3) and clip.preprocessing == []
    assert clip.digest() == load_clip(clip_path, 3).digest() != load_clip(clip_path, 2).digest()


def test_svtav1_low_delay_and_all_intra_are_checked_in_the_frame_headers(clip_pics):
    for keyint in (4, 1):
        packets, _ = anchors.encode("svtav1", clip_pics[:5], 25, 45, keyint)
        problems, details = anchors.check("svtav1", packets, 5, keyint)
        assert problems == []
        assert details["av1_frame_types"] == ("KIIIK" if keyint == 4 else "KKKKK")
    problems, _ = anchors.check("svtav1", packets, 5, 4)  # all-intra stream judged as keyint 4
    assert any("expected INTER" in p for p in problems)


def test_cache_key_covers_the_options():
    cfg = BenchConfig(codecs=("lvc", "x264"), intra=False)
    k = cache_key("abc", "x264", 30, cfg)
    assert k == cache_key("abc", "x264", 30, cfg)
    assert len({k, cache_key("abd", "x264", 30, cfg), cache_key("abc", "x264", 31, cfg),
                cache_key("abc", "x264-intra", 30, cfg), cache_key("abc", "lvc", 30, cfg),
                cache_key("abc", "x264", 30, BenchConfig(codecs=("lvc", "x264"), keyint=8))}) == 6


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="av2"):
        BenchConfig(codecs=("lvc", "av2"))
    with pytest.raises(ValueError, match="anchor"):
        BenchConfig(codecs=("lvc",), anchor="x264")
    with pytest.raises(ValueError, match="quality"):
        BenchConfig(qualities=(0, 4))


# -- the command ---------------------------------------------------------------------------------------------


def test_lvc_help_and_bench_help_import_no_torch():
    code = ("import sys; from click.testing import CliRunner; from lvcodec.cli import main; "
            "r = CliRunner().invoke(main, ['bench', '--help']); assert r.exit_code == 0, r.output; "
            "assert 'torch' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.stdout.strip() == "ok", out.stderr


def test_bench_rejects_a_missing_clip(tmp_path):
    r = CliRunner().invoke(main, ["bench", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "no such file" in r.stderr


def test_bench_on_a_generated_clip(tmp_path):
    out = tmp_path / "bench"
    args = ["bench", "demo:96x64", "--frames", "3", "--keyint", "2", "--qualities", "1,6", "--crfs", "28,40",
            "--svtav1-crfs", "35,55", "--out", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, (r.stderr, r.exception)
    assert "BD-rate of lvc" in r.stdout and "| SVT-AV1 |" in r.stdout

    res = json.loads((out / "results.json").read_text())
    prov = res["provenance"]
    for key in ("lvcodec", "torch", "compressai", "av", "ffmpeg_libraries", "model", "weights_hash", "machine"):
        assert prov[key], key
    assert prov["weights_hash"] == lvcodec.codec.weights_hash().hex()
    assert res["failed_runs"] == [] and res["check_problems"] == []
    names = ["lvc", "x264", "x265", "svtav1", "lvc-intra", "x264-intra", "x265-intra", "svtav1-intra"]
    assert res["config"]["run_codecs"] == names
    assert res["codecs"]["x265"]["options"]["options"]["x265-params"].startswith("keyint=2:min-keyint=2:")
    assert res["codecs"]["svtav1-intra"]["options"]["keyint"] == 1
    (clip,) = res["clips"]
    assert (clip["name"], clip["width"], clip["height"], clip["frames"]) == ("demo-96x64", 96, 64, 3)
    runs = {(r["codec"], r["setting"]): r for r in clip["runs"]}
    assert len(runs) == 16
    for (codec, setting), run in runs.items():
        assert run["checks"]["ok"], (codec, setting, run["checks"])
        assert run["bytes"] > 0 and run["bpp"] == pytest.approx(run["bytes"] * 8 / (3 * 96 * 64))
        assert len(run["per_frame"]["psnr_yuv"]) == 3 and run["enc_fps"] > 0 and run["dec_fps"] > 0
        assert run["psnr_yuv"] == pytest.approx(np.mean(run["per_frame"]["psnr_yuv"]), abs=1e-4)
        assert 0 < run["msssim_y"] <= 1 and run["memory"]["enc_peak_mb"] > 0
        if codec != "lvc" and not codec.startswith("lvc"):
            assert sum(run["per_frame"]["bytes"]) == run["bytes"]
    assert runs["lvc", "q6"]["bytes"] > runs["lvc", "q1"]["bytes"]
    assert runs["x264", "crf28"]["bytes"] > runs["x264", "crf40"]["bytes"]
    assert runs["x265-intra", "crf28"]["checks"]["info_sei_bytes"] > 3 * 1000  # x265's option SEI per frame
    assert runs["lvc", "q1"]["options"]["weights_hash"] == prov["weights_hash"]
    bd = [b for b in res["bd"] if b["clip"] == "mean" and b["test"] == "x265" and b["anchor"] == "x264"]
    assert {(b["kind"], b["metric"], b["method"]) for b in bd} >= {
        ("rate", "psnr_yuv", "akima"), ("rate", "msssim_y_db", "pchip"), ("metric", "psnr_yuv", "akima")}
    x265 = [b for b in bd if b["kind"] == "rate" and b["metric"] == "psnr_yuv" and b["method"] == "akima"]
    assert x265[0]["value"] is not None  # two anchors at the same CRFs overlap

    import matplotlib.image

    for png in ("rd_demo-96x64.png", "rd_summary.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        img = matplotlib.image.imread(str(out / png))
        assert img.shape[0] > 200 and img.shape[1] > 400
    report = (out / "report.md").read_text()
    assert "## Summary" in report and "rd_summary.png" in report and "sum of their packet sizes" in report

    # a second run reads every result back from the cache
    r = CliRunner().invoke(main, args + ["--quiet"])
    assert r.exit_code == 0, r.stderr
    again = json.loads((out / "results.json").read_text())
    assert all(r["from_cache"] for r in again["clips"][0]["runs"])
    assert [r["bytes"] for r in again["clips"][0]["runs"]] == [r["bytes"] for r in clip["runs"]]


@pytest.mark.slow
def test_bench_runs_clips_in_parallel(tmp_path, clip_path):
    from lvcodec.bench import run_bench

    cfg = BenchConfig(codecs=("lvc", "x264"), intra=False, frames=3, keyint=2, qualities=(2, 5), crfs=(30, 40),
                      jobs=2)
    res = run_bench(["demo:96x64", clip_path], cfg, tmp_path, progress=False)
    assert [c["name"] for c in res["clips"]] == ["demo-96x64", "clip.y4m"]
    assert res["failed_runs"] == [] and all(len(c["runs"]) == 4 for c in res["clips"])
    assert res["provenance"]["torch_threads"] >= 1
