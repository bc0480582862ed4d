"""Weights load only from safetensors whose SHA-256 matches the registry."""

import shutil

import pytest

from lvcodec.codec import WEIGHTS
from lvcodec.weights import WEIGHTS_DIR, WeightsError, load_state, sha256_file


def test_shipped_weights_match_their_pinned_hashes():
    for name, digest in WEIGHTS.values():
        assert sha256_file(WEIGHTS_DIR / name) == digest
        assert digest.startswith(name.split("-")[1].split(".")[0])  # file name carries the hash prefix


def test_tampered_weights_are_refused(tmp_path):
    name, digest = WEIGHTS["intra"]
    bad = tmp_path / name
    shutil.copy(WEIGHTS_DIR / name, bad)
    with open(bad, "r+b") as f:
        f.seek(-10, 2)
        f.write(b"\x00" * 10)
    with pytest.raises(WeightsError, match="SHA-256"):
        load_state(bad, digest)
    assert issubclass(WeightsError, ValueError)


def test_missing_weights_are_refused(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_state(tmp_path / "nope.safetensors", "0" * 64)


def test_stream_from_other_weights_is_refused(tmp_path):
    import io

    import lvcodec
    from lvcodec import bitstream as bs

    buf = io.BytesIO()
    w = bs.Writer(buf, bs.SequenceHeader(16, 16, 25, 1, 1, 4, 32, b"\xee" * 32))
    w.close()
    p = tmp_path / "x.lvc"
    p.write_bytes(buf.getvalue())
    with pytest.raises(lvcodec.BitstreamError, match="other weights"):
        list(lvcodec.decode(str(p)))
