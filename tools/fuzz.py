"""Fuzz the .lvc reader and decoder with mutated streams: every case must end in a clean
``BitstreamError`` or a correct-shaped decode — no other exception, no hang.

    python tools/fuzz.py --cases 10000 --out .out/fuzz.json

Base streams are small synthetic clips (64x64 and 40x24, I and P frames, two qualities) encoded in memory.
Mutations: bit flips, truncation, inserted and deleted bytes, spliced packets (from another stream,
duplicated, dropped or swapped), and corruption of payload or header bytes *with the CRCs recomputed*,
so the model decoders themselves see garbage. Each case is decoded strictly and, unless that succeeded, with concealment.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import time
import traceback
from fractions import Fraction

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from lvcodec import bitstream as bs  # noqa: E402
from lvcodec.codec import DecodeStats, Decoder, encode_pictures  # noqa: E402
from lvcodec.demo import demo_clip  # noqa: E402
from lvcodec.errors import BitstreamError  # noqa: E402


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def base_streams() -> list[bytes]:
    out = []
    for (w, h, n, q, k) in ((64, 64, 4, 2, 2), (40, 24, 3, 6, 4)):
        pics = demo_clip(n, w, h)
        buf = io.BytesIO()
        encode_pictures(pics, buf, w, h, Fraction(25), quality=q, keyint=k)
        out.append(buf.getvalue())
    return out


def _units(data: bytes):
    """(start, end) of every packet, the header end and the packets."""
    r = bs.Reader(io.BytesIO(data))
    ps = list(r.packets())
    ends = [p.offset for p in ps[1:]] + [r.footer.index_offset]
    return r.data_offset, [(p.offset, e) for p, e in zip(ps, ends)], ps


def _refresh_crc(raw: bytearray, start: int, end: int) -> None:
    raw[end - 4:end] = bs.crc32c(bytes(raw[start:end - 4])).to_bytes(4, "little")


def mutate(rng: np.random.Generator, streams: list[bytes]) -> tuple[str, bytes]:
    i = int(rng.integers(len(streams)))
    data = streams[i]
    raw = bytearray(data)
    kind = str(rng.choice(["flip", "truncate", "insert", "delete", "splice", "payload+crc", "header+crc"]))
    hdr_end, spans, _ = _units(data)
    if kind == "flip":
        for _ in range(int(rng.integers(1, 9))):
            raw[int(rng.integers(len(raw)))] ^= 1 << int(rng.integers(8))
    elif kind == "truncate":
        raw = raw[: int(rng.integers(len(raw)))]
    elif kind == "insert":
        pos = int(rng.integers(len(raw) + 1))
        raw[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    elif kind == "delete":
        pos = int(rng.integers(len(raw)))
        del raw[pos: pos + int(rng.integers(1, 64))]
    elif kind == "splice":
        other = streams[(i + 1) % len(streams)]
        _, ospans, _ = _units(other)
        a, b = spans[int(rng.integers(len(spans)))]
        how = str(rng.choice(["foreign", "duplicate", "drop", "swap"]))
        if how == "foreign":
            oa, ob = ospans[int(rng.integers(len(ospans)))]
            raw[a:b] = other[oa:ob]
        elif how == "duplicate":
            raw[b:b] = data[a:b]
        elif how == "drop":
            del raw[a:b]
        else:
            c, d = spans[int(rng.integers(len(spans)))]
            if (c, d) != (a, b):
                (a, b), (c, d) = sorted([(a, b), (c, d)])
                raw = raw[:a] + data[c:d] + data[b:c] + data[a:b] + data[d:]
        kind += "-" + how
    elif kind == "payload+crc":
        a, b = spans[int(rng.integers(len(spans)))]
        for _ in range(int(rng.integers(1, 17))):
            raw[int(rng.integers(a + 1, b - 4))] = int(rng.integers(256))
        _refresh_crc(raw, a, b)
    else:  # header fields with a valid CRC: sizes, rate, quality, ids...
        for _ in range(int(rng.integers(1, 4))):
            raw[int(rng.integers(8, hdr_end - 4))] = int(rng.integers(256))
        _refresh_crc(raw, 6, hdr_end)
    return kind, bytes(raw)


def decode_all(data: bytes, conceal: bool) -> int:
    """Decode every packet (lvcodec.decode's loop, on bytes); returns the number of pictures."""
    from lvcodec.codec import decode

    path = _TMP
    with open(path, "wb") as f:
        f.write(data)
    st = DecodeStats()
    n = 0
    for pic in decode(path, conceal=conceal, stats=st):
        h = st.header
        assert pic.y.shape == (h.height, h.width) and pic.u.shape == ((h.height + 1) // 2, (h.width + 1) // 2)
        n += 1
    return n


_TMP = ".fuzz-case.lvc"


def main() -> None:
    global _TMP
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per decode before it counts as a hang")
    ap.add_argument("--out", default=None, help="write the counts (and any crash) as JSON here")
    args = ap.parse_args()
    import tempfile

    import torch

    torch.set_num_threads(1)
    _TMP = os.path.join(tempfile.mkdtemp(), "case.lvc")
    signal.signal(signal.SIGALRM, _alarm)
    rng = np.random.default_rng(args.seed)
    streams = base_streams()
    counts = {"cases": 0, "clean_errors": 0, "decodes": 0, "crashes": 0, "hangs": 0}
    by_kind: dict[str, dict[str, int]] = {}
    crashes = []
    t0 = time.time()
    for case in range(args.cases):
        kind, data = mutate(rng, streams)
        counts["cases"] += 1
        outcome = None
        k = by_kind.setdefault(kind.split("-")[0], {"cases": 0, "errors": 0, "decodes": 0, "concealed_decodes": 0})
        k["cases"] += 1
        for conceal in (False, True):
            if conceal and outcome == "decodes":  # a stream that decodes strictly decodes the same concealing
                counts["conceal_decodes"] = counts.get("conceal_decodes", 0) + 1
                k["concealed_decodes"] += 1
                continue
            signal.setitimer(signal.ITIMER_REAL, args.timeout)
            try:
                decode_all(data, conceal)
                outcome = "decodes"
            except BitstreamError:
                outcome = "clean_errors"
            except Hang:
                outcome = "hangs"
                crashes.append({"case": case, "kind": kind, "conceal": conceal, "error": "hang"})
            except Exception as e:  # anything else is a bug
                outcome = "crashes"
                crashes.append({"case": case, "kind": kind, "conceal": conceal, "error": repr(e),
                                "trace": traceback.format_exc(limit=4)})
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if not conceal:
                counts[outcome] += 1
                k["errors" if outcome == "clean_errors" else outcome] = k.get(
                    "errors" if outcome == "clean_errors" else outcome, 0) + 1
            else:
                counts.setdefault("conceal_" + outcome, 0)
                counts["conceal_" + outcome] += 1
                if outcome == "decodes":
                    k["concealed_decodes"] += 1
        if (case + 1) % 500 == 0:
            print(f"{case + 1} cases {time.time() - t0:.0f}s {counts}", file=sys.stderr, flush=True)
    result = {"seed": args.seed, "seconds": round(time.time() - t0, 1), "counts": counts, "by_kind": by_kind,
              "crashes": crashes[:50]}
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    sys.exit(1 if counts["crashes"] or counts["hangs"] or counts.get("conceal_crashes") or counts.get("conceal_hangs") else 0)


if __name__ == "__main__":
    main()
