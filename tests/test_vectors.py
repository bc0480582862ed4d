"""Conformance: every vector in bitstream/vectors decodes to its expected MD5s (through the CLI's --md5)."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lvcodec.cli import main

VECTORS = sorted((Path(__file__).resolve().parent.parent / "bitstream" / "vectors").glob("*/expected.json"))


def test_there_are_vectors():
    assert len(VECTORS) >= 5


@pytest.mark.parametrize("expected", VECTORS, ids=lambda p: p.parent.name)
def test_vector_decodes_to_expected_md5s(expected):
    want = json.loads(expected.read_text())
    r = CliRunner().invoke(main, ["decode", str(expected.parent / "stream.lvc"), "--md5", "--quiet"])
    assert r.exit_code == 0, r.stderr
    rows = [ln.split() for ln in r.stdout.splitlines()]
    assert len(rows) == want["frames"]
    assert [row[2] for row in rows] == want["md5"]
    assert [int(row[0]) for row in rows] == list(range(want["frames"]))
