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


def test_weights_with_shared_priors_load_and_code_the_same_at_every_quality():
    """Weights from before the per-quality priors (one ẑ prior, one vector prior, no vector context tables)
    still load: the shared priors are repeated for every quality level, so each level codes as the shared
    prior did, and the vector tables are the generic ones."""
    import torch

    from lvcodec.models import NUM_QUALITIES, InterModel, IntraModel, upgrade_state

    for cls, prefix, per_q in ((IntraModel, "entropy_bottleneck.", 96), (InterModel, "mv_entropy.", 2)):
        torch.manual_seed(0)
        old = cls()
        old.update(force=True)
        state = {k: (v[:per_q] if k.startswith(prefix) and v.dim() and v.shape[0] == per_q * NUM_QUALITIES else v)
                 for k, v in old.state_dict().items() if k != "mv_cdf"}  # nor had they vector context tables
        assert state[prefix + "quantiles"].shape[0] == per_q
        new = cls()
        new.load_state_dict(upgrade_state(new, state))
        eb = new.entropy_bottleneck if prefix.startswith("entropy") else new.mv_entropy
        med = eb._get_medians().view(NUM_QUALITIES, -1)
        assert torch.equal(med, med[:1].expand_as(med))
        cdf = eb._quantized_cdf.view(NUM_QUALITIES, per_q, -1)
        assert torch.equal(cdf, cdf[:1].expand_as(cdf))
        if cls is InterModel:
            assert torch.equal(new.mv_cdf, cls().mv_cdf)
