"""Benchmark candidate weights against a base set with ``lvc bench``: the way to decide whether a
training run or a prior fit is worth shipping.

Each weights folder (``intra*.safetensors`` + ``inter*.safetensors``, as ``tools/train.py`` and
``tools/fit_priors.py`` write them) is registered as its own model, ``w0`` (the base) and ``w1``,
``w2``, ... (the candidates): the shipped lvc-hyperprior-v1 with those weights, the same encoder
settings, and a stream id of its own so that its streams decode with its own weights. Everything after
``--`` goes to ``lvc bench``; the BD-rates it reports are taken against the base (``--anchor w0``).

    python tools/compare_weights.py --base lvcodec/weights .out/fit1 -- \\
        --no-intra --qualities 1,3,5,8 --downscale --quiet --out .out/cmp1 \\
        ../shared/data/bench/bikes.mp4

The bench cache in ``--out`` is keyed by the weights' hashes, so a later comparison that names the
same base reuses its runs.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import sys

import torch

from lvcodec.models import InterModel, IntraModel, upgrade_state
from lvcodec.registry import register_model
from lvcodec.weights import load_state, sha256_file
from lvcodec.zoo import HyperpriorV1

FIRST_ID = 0xFE00  # private stream ids of the compared models (never written to a shipped stream)


def weight_files(folder: str) -> tuple[str, str]:
    files = []
    for kind in ("intra", "inter"):
        found = sorted(glob.glob(os.path.join(folder, f"{kind}*.safetensors")))
        if len(found) != 1:
            raise SystemExit(f"error: {folder} should hold exactly one {kind}*.safetensors, found {len(found)}")
        files.append(found[0])
    return files[0], files[1]


def register(name: str, model_id: int, folder: str) -> None:
    intra_path, inter_path = weight_files(folder)
    digest = hashlib.sha256((sha256_file(intra_path) + sha256_file(inter_path)).encode()).digest()

    class Weights(HyperpriorV1):
        __doc__ = f"lvc-hyperprior-v1 with the weights of {folder}"

        def __init__(self):
            intra, inter = IntraModel(), InterModel()
            for model, path in ((intra, intra_path), (inter, inter_path)):
                model.load_state_dict(upgrade_state(model, load_state(path, None)))
            self.intra, self.inter = intra.eval(), inter.eval()
            self._configure(self.default_preset)

        def weights_sha256(self) -> bytes:
            return digest

    Weights.__qualname__ = f"Weights_{name}"
    register_model(name, model_id)(Weights)
    print(f"{name}: {folder} (weights {digest.hex()[:16]})", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ours, bench_args = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="lvcodec/weights", help="folder of the weights the others are measured against")
    ap.add_argument("--anchors", default="", help="also run these anchors, e.g. x264 (comma-separated)")
    ap.add_argument("candidates", nargs="+", help="folders of candidate weights")
    args = ap.parse_args(ours)
    torch.set_num_threads(int(os.environ.get("LVC_THREADS", torch.get_num_threads())))

    names = []
    for i, folder in enumerate([args.base, *args.candidates]):
        register(f"w{i}", FIRST_ID + i, folder)
        names.append(f"w{i}")
    codecs = ",".join(names + [a for a in args.anchors.split(",") if a])

    from lvcodec.bench.cli import bench

    bench.main(["--codecs", codecs, "--anchor", "w0", *bench_args], prog_name="compare_weights",
               standalone_mode=False)
    summarize(bench_args)


def summarize(bench_args: list[str]) -> None:
    """Print each candidate's BD-rate (PSNR-YUV, Akima) against the base, per clip and mean."""
    import json

    out = bench_args[bench_args.index("--out") + 1] if "--out" in bench_args else "bench-out"
    with open(os.path.join(out, "results.json")) as f:
        bd = json.load(f)["bd"]
    rows = {}
    for r in bd:
        if (r["anchor"], r["kind"], r["metric"], r["method"]) == ("w0", "rate", "psnr_yuv", "akima"):
            rows.setdefault(r["test"], []).append(f"{r['clip']} {r['value']:+.1f} %" if r["value"] is not None
                                                  else f"{r['clip']} n/a")
    for test, vals in sorted(rows.items()):
        print(f"BD-rate PSNR-YUV of {test} against w0: " + ", ".join(vals))


if __name__ == "__main__":
    main()
