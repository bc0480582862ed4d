"""Make a folder of trained weights the shipped ones: copy ``intra*.safetensors`` and ``inter*.safetensors``
into ``lvcodec/weights`` under hash-stamped names, remove the files they replace, and pin the new SHA-256s in
``lvcodec/zoo.py`` (``WEIGHTS``).

    python tools/ship_weights.py .out/fit1          # after tools/compare_weights.py says it is better
    LVC_REGENERATE_VECTORS=1 python tools/make_vectors.py   # the conformance streams name the weights

Streams written with the old weights no longer decode (their header names the old hash), so regenerate the
conformance vectors and the benchmark afterwards.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from compare_weights import weight_files  # noqa: E402

from lvcodec.weights import WEIGHTS_DIR, load_state, sha256_file  # noqa: E402

ZOO = os.path.join(os.path.dirname(WEIGHTS_DIR), "zoo.py")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="folder with one intra*.safetensors and one inter*.safetensors")
    args = ap.parse_args(argv)
    src = dict(zip(("intra", "inter"), weight_files(args.folder)))
    with open(ZOO) as f:
        zoo = f.read()
    for kind, path in src.items():
        digest = sha256_file(path)
        load_state(path, digest)  # a readable safetensors file, before anything is replaced
        m = re.search(rf'"{kind}": \("([^"]+)", "([0-9a-f]{{64}})"\)', zoo)
        if m is None:
            raise SystemExit(f"error: no {kind} entry in {ZOO}'s WEIGHTS")
        name = f"{kind}-{digest[:8]}.safetensors"
        if m.group(2) == digest:
            print(f"{kind}: unchanged ({name})")
            continue
        shutil.copyfile(path, WEIGHTS_DIR / name)
        old = WEIGHTS_DIR / m.group(1)
        if old.name != name and old.exists():
            old.unlink()
        zoo = zoo.replace(m.group(0), f'"{kind}": ("{name}", "{digest}")')
        print(f"{kind}: {m.group(1)} -> {name}")
    with open(ZOO, "w") as f:
        f.write(zoo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
