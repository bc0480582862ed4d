"""The research probes in tools/: what they print is what the notes quote, so it must mean what it says."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool(name, *args) -> str:
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *map(str, args)], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    return out.stdout


def test_ceiling_is_where_the_levels_level_off(clip_path):
    """tools/ceiling.py: the levels climb towards the unquantized reconstruction's luma PSNR and the top one
    ends near it (the encoder's latent refinement can take it past: 1.6 dB with the weights of MODEL_CARD
    (12), 2.1 dB with those of (14)), far above q1."""
    line = _tool("ceiling.py", "--levels", clip_path).strip().splitlines()[-1]
    ceiling = float(line.split(":")[1].split()[0])
    levels = [(float(b), float(p)) for b, p in re.findall(r"q\d ([\d.]+) ([\d.]+)", line)]
    assert len(levels) == 8
    assert all(b1 < b2 and p1 < p2 for (b1, p1), (b2, p2) in zip(levels, levels[1:])), levels
    assert ceiling - 2.0 < levels[-1][1] < ceiling + 3.0 and levels[0][1] < ceiling - 1.5, (ceiling, levels)


def test_residual_probe_layer_trades_rate_for_quality(clip_path):
    """tools/residual_probe.py: a finer layer costs more bits and gives a better picture; lvc's own bytes
    are the same whatever the layer on the I-frame (they are coded before it)."""
    def run(step):
        last = _tool("residual_probe.py", clip_path, "--no-downscale", "--frames", 2, "--step", step).splitlines()
        total, lvc, psnr = map(float, re.search(r": ([\d.]+) bpp \(lvc ([\d.]+)\) at PSNR-YUV ([\d.]+)", last[-1]).groups())
        first_lvc = float(re.search(r"lvc ([\d.]+) bpp", last[0]).group(1))
        return total, psnr, first_lvc

    coarse, fine = run(32), run(4)
    assert fine[0] > coarse[0] and fine[1] > coarse[1] + 3, (coarse, fine)
    assert fine[2] == coarse[2]


def test_fit_context_writes_weights_whose_context_is_fitted(clip_path, tmp_path):
    """tools/fit_context.py on a folder of videos: both models' contexts move from the weights' own (the
    rest of the weights is left as it was), and the held-out line names the non-anchor bits."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from lvcodec.weights import WEIGHTS_DIR

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(4):  # the 4th is held out
        shutil.copy(clip_path, videos / f"clip{i}.y4m")
    out = _tool("fit_context.py", "--videos", videos, "--out-dir", tmp_path / "ctx", "--frames", 2, "--steps", 20,
                "--qualities", 4, "--inter-qualities", 4, "--threads", 1)
    assert re.search(r"intra: held-out bits of the non-anchor half \d+ -> \d+", out), out
    for name in ("intra", "inter"):
        (shipped,) = [p for p in WEIGHTS_DIR.glob(f"{name}-*.safetensors")]
        a, b = load_file(shipped), load_file(tmp_path / "ctx" / f"{name}.safetensors")
        assert not torch.equal(a["context.net.0.weight"], b["context.net.0.weight"])
        assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("context."))
