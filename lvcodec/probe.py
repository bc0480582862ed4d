"""``lvc info``: what ffprobe tells about a video, for a ``.lvc`` file (torch-free)."""

from __future__ import annotations

from dataclasses import asdict

from . import bitstream as bs
from .codec import _open_lvc as open_lvc


def probe(path: str) -> dict:
    """Header fields, the per-frame packet table and a summary (duration, bitrate, container overhead).

    ``overhead`` counts every byte that is not entropy-coded payload: magic, header, packet headers,
    CRCs, the index and the footer."""
    fp = open_lvc(path)
    try:
        r = bs.Reader(fp)
        h = r.header
        frames = []
        payload = 0
        for p in r.packets():
            payload += p.size
            frames.append({"frame": p.frame, "pts": p.pts, "type": "I" if p.is_keyframe else "P",
                           "quality": p.quality or h.quality, "bytes": p.size, "offset": p.offset})
        file_bytes = r.src.pos
    finally:
        if path != "-":
            fp.close()
    head = asdict(h)
    head["weights_sha256"] = h.weights_sha256.hex()
    head["model"] = h.model_name
    head["entropy_coder"] = bs.ENTROPY_CODERS[h.entropy_coder]
    duration = len(frames) * h.fps_den / h.fps_num
    return {
        "file": path,
        "version": f"{r.version[0]}.{r.version[1]}",
        "header": head,
        "frames": frames,
        "summary": {
            "frames": len(frames),
            "keyframes": sum(f["type"] == "I" for f in frames),
            "duration": duration,
            "file_bytes": file_bytes,
            "payload_bytes": payload,
            "overhead_bytes": file_bytes - payload,
            "overhead_share": (file_bytes - payload) / file_bytes,
            "bitrate_kbps": file_bytes * 8 / duration / 1000 if duration else 0.0,
            "extension_chunks": [f"0x{t:02x}" for t, _ in r.chunks],
        },
    }
