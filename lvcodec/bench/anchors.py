"""Anchor codecs through PyAV (no external binaries): libx264, libx265 and libsvtav1, low-delay and
all-intra, with a check of each encode that the asked-for settings took effect.

Settings (see :func:`encoder_options`):

* **x264**: ``preset=medium, tune=psnr``, CRF, ``x264-params keyint=K:min-keyint=K:scenecut=0:bframes=0``.
  Checked in the option string x264 writes into its SEI (``bframes=0 keyint=K scenecut=0``, ``psy=0``).
* **x265**: ``preset=medium, tune=psnr``, CRF, ``x265-params
  keyint=K:min-keyint=K:scenecut=0:bframes=0:open-gop=0:log-level=error``. Checked in x265's SEI
  (``bframes=0 keyint=K scenecut=0 no-open-gop psy-rd=0.00``).
* **SVT-AV1**: preset 6 (SVT-AV1's "good balance" of speed and efficiency), CRF, ``svtav1-params
  tune=1:pred-struct=1:keyint=K:scd=0`` — tune 1 is PSNR, ``pred-struct=1`` is SVT's low-delay prediction
  structure (no hierarchical B / alt-ref frames, no reordering), scene-change detection off. AV1 has no
  option SEI, so the check parses the OBUs: every packet holds exactly one frame, shown at once
  (``show_frame=1``, no hidden alt-refs), KEY_FRAMEs exactly every K frames and INTER frames between.

All-intra mode is the same with K = 1. Every encode is also checked for one packet per frame, decode order
= presentation order, and key frames exactly every K frames. The frame rate given to the encoders is the
clip's.

Rate: the sum of the packet sizes (the elementary stream: Annex-B for H.264/H.265, the low-overhead OBU
stream for AV1, without a container) *less the encoder's informational SEI*: x264 and x265 write their
version and full option string as a user-data-unregistered SEI NAL unit (x264 about 0.6 kB once, x265 about
2.5 kB at every key frame, so in all-intra on every frame). That text carries no picture, any deployment
strips it (x265 ``info=0``), and at 0.02 bpp on a 640x360 clip it would be several percent of the rate; it
is kept in the stream here because the setting checks read it. :func:`info_sei_bytes` finds it; the
results keep both numbers.
"""

from __future__ import annotations

import os
import re
import time
from fractions import Fraction

#: name -> (PyAV encoder, PyAV decoder, human name)
ANCHORS = {
    "x264": ("libx264", "h264", "H.264 (x264)"),
    "x265": ("libx265", "hevc", "H.265 (x265)"),
    "svtav1": ("libsvtav1", "libdav1d", "AV1 (SVT-AV1)"),
}
X26X_PRESET = "medium"
X26X_TUNE = "psnr"
SVTAV1_PRESET = "6"
ENCODER_THREAD_TYPE = "FRAME"  # frame threads, as the x264/x265 command-line tools use
DECODER_THREAD_TYPE = "AUTO"  # frame and slice threads, as the ffmpeg command-line tool uses


def encoder_options(anchor: str, crf: int, keyint: int) -> dict[str, str]:
    """The PyAV ``CodecContext.options`` for ``anchor`` at ``crf`` with an I-frame every ``keyint``."""
    if anchor == "x264":
        return {"preset": X26X_PRESET, "tune": X26X_TUNE, "crf": str(crf),
                "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=0"}
    if anchor == "x265":
        return {"preset": X26X_PRESET, "tune": X26X_TUNE, "crf": str(crf),
                "x265-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=0:open-gop=0:"
                               "log-level=error"}
    if anchor == "svtav1":
        return {"preset": SVTAV1_PRESET, "crf": str(crf),
                "svtav1-params": f"tune=1:pred-struct=1:keyint={keyint}:scd=0"}
    raise ValueError(f'unknown anchor "{anchor}", should be one of {", ".join(ANCHORS)}')


def describe(anchor: str, keyint: int) -> dict:
    """Every setting of an anchor run but the CRF, for the results' provenance."""
    enc, dec, _ = ANCHORS[anchor]
    return {"encoder": f"{enc} via PyAV", "decoder": f"{dec} via PyAV", "pix_fmt": "yuv420p",
            "gop_size": keyint, "max_b_frames": 0, "encoder_thread_type": ENCODER_THREAD_TYPE,
            "encoder_thread_count": "0 (auto)", "decoder_thread_type": DECODER_THREAD_TYPE,
            "options": encoder_options(anchor, "<crf>", keyint)}  # type: ignore[arg-type]


def encode(anchor: str, pics, rate: Fraction, crf: int, keyint: int):
    """Encode ``pics`` with ``anchor``; return (packets as (bytes, pts, is_keyframe), seconds).

    The encoder is opened and the frames are converted to ``av.VideoFrame`` s before the clock starts."""
    import av

    w, h = pics[0].width, pics[0].height
    if w % 2 or h % 2:
        raise ValueError(f"{anchor} in yuv420p needs an even frame size, got {w}x{h}")
    if anchor == "svtav1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole config to stderr otherwise
    cc = av.CodecContext.create(ANCHORS[anchor][0], "w")
    cc.width, cc.height, cc.pix_fmt = w, h, "yuv420p"
    rate = Fraction(rate).limit_denominator(1 << 16)
    cc.time_base = 1 / rate
    cc.framerate = rate
    cc.gop_size = keyint
    cc.max_b_frames = 0
    cc.thread_type = ENCODER_THREAD_TYPE
    cc.options = encoder_options(anchor, crf, keyint)
    cc.open()
    frames = []
    for i, p in enumerate(pics):
        f = p.to_av()
        f.pts = i
        f.time_base = cc.time_base
        frames.append(f)
    out = []
    t0 = time.perf_counter()
    for f in frames:
        out.extend(cc.encode(f))
    out.extend(cc.encode(None))
    secs = time.perf_counter() - t0
    return [(bytes(p), p.pts, bool(p.is_keyframe)) for p in out], secs


def decode(anchor: str, packets):
    """Decode ``packets`` with PyAV; return (4:2:0 Pictures, seconds)."""
    import av

    from ..frames import from_av

    t0 = time.perf_counter()
    dc = av.CodecContext.create(ANCHORS[anchor][1], "r")
    dc.thread_type = DECODER_THREAD_TYPE
    pics = []
    for data, _, _ in packets:
        for fr in dc.decode(av.Packet(data)):
            pics.append(from_av(fr))
    for fr in dc.decode(None):
        pics.append(from_av(fr))
    return pics, time.perf_counter() - t0


# -- checks -------------------------------------------------------------------------------------------


def _annexb_nals(data: bytes):
    """(start of the start code, end) of each NAL unit in an Annex-B byte string."""
    starts = [m.start() for m in re.finditer(b"\x00\x00\x01", data)]
    for i, pos in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(data)
        while end > pos + 3 and data[end - 1] == 0:  # a NAL never ends in 0x00: zeros belong to the next start code
            end -= 1
        yield (pos - 1 if pos > 0 and data[pos - 1] == 0 else pos), pos + 3, end


def info_sei_bytes(anchor: str, data: bytes) -> int:
    """Bytes (start codes included) of the SEI NAL units in ``data`` holding x264's / x265's version and
    option string (H.264 NAL type 6, HEVC prefix SEI type 39, containing ``options:``)."""
    if anchor not in ("x264", "x265"):
        return 0
    total = 0
    for begin, nal, end in _annexb_nals(data):
        if nal >= end:
            continue
        t = data[nal] & 0x1F if anchor == "x264" else (data[nal] >> 1) & 0x3F
        if t == (6 if anchor == "x264" else 39) and b"options: " in data[nal:end]:
            total += end - begin
    return total


def sei_options(packets) -> str | None:
    """The option string x264 / x265 write into their user-data SEI (first packet), if present."""
    m = re.search(rb"options: ([ -~]+)", packets[0][0]) if packets else None
    return m.group(1).decode() if m else None


def _sei_dict(sei: str) -> dict[str, str]:
    out = {}
    for tok in sei.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            out[k] = v
        elif tok.startswith("no-"):
            out[tok[3:]] = "0"
        else:
            out[tok] = "1"
    return out


def check(anchor: str, packets, n: int, keyint: int) -> tuple[list[str], dict]:
    """(problems, details) of how the settings were applied; no problems when all is as asked."""
    problems, details = [], {}
    if len(packets) != n:
        problems.append(f"{len(packets)} packets for {n} frames")
    pts = [p[1] for p in packets]
    if pts != sorted(pts):
        problems.append("decode order != presentation order (B-frames or reordering)")
    keys = [i for i, p in enumerate(packets) if p[2]]
    if keys != list(range(0, n, keyint)):
        problems.append(f"key frames at {keys}, expected every {keyint}")
    if anchor in ("x264", "x265"):
        sei = sei_options(packets)
        details["sei_options"] = sei
        if sei is None:
            problems.append(f"no {anchor} SEI option string found")
        else:
            opts = _sei_dict(sei)
            want = {"bframes": "0", "keyint": str(keyint), "scenecut": "0"}
            if anchor == "x264":
                want["psy"] = "0"
            else:
                want.update({"open-gop": "0", "psy-rd": "0.00"})
            for k, v in want.items():
                if opts.get(k) != v:
                    problems.append(f"SEI {k}={opts.get(k)}, expected {v}")
    elif anchor == "svtav1":
        try:
            frames = [av1_frames(p[0]) for p in packets]
        except ValueError as e:
            problems.append(f"AV1 parse error: {e}")
        else:
            types = []
            for i, fr in enumerate(frames):
                if len(fr) != 1:
                    problems.append(f"packet {i} holds {len(fr)} frames {fr} (hidden frames or reordering)")
                    continue
                ftype, shown = fr[0]
                if not shown:
                    problems.append(f"packet {i}: frame not shown (show_frame=0)")
                want = "KEY" if i % keyint == 0 else "INTER"
                if ftype != want:
                    problems.append(f"packet {i}: {ftype} frame, expected {want}")
                types.append(ftype[0])
            details["av1_frame_types"] = "".join(types)
    return problems, details


# AV1 (AV1 Bitstream & Decoding Process Specification, sections 5.3 and 5.9): enough of the OBU syntax to
# read each frame's frame_type and show_frame.
_OBU_SEQUENCE_HEADER, _OBU_FRAME_HEADER, _OBU_FRAME = 1, 3, 6
_AV1_FRAME_TYPES = ("KEY", "INTER", "INTRA_ONLY", "SWITCH")


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos >= len(data):
            raise ValueError("truncated leb128")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return value, pos
    raise ValueError("leb128 longer than 8 bytes")


def av1_frames(data: bytes) -> list[tuple[str, bool]]:
    """(frame_type, show_frame) of each frame header in one AV1 temporal unit (low-overhead OBU format);
    a ``show_existing_frame`` appears as ("EXISTING", True)."""
    frames, pos, reduced = [], 0, False
    while pos < len(data):
        hdr = data[pos]
        if hdr & 0x80:
            raise ValueError("forbidden bit set in OBU header")
        obu_type, has_ext, has_size = (hdr >> 3) & 0xF, (hdr >> 2) & 1, (hdr >> 1) & 1
        pos += 1 + has_ext
        if has_size:
            size, pos = _leb128(data, pos)
        else:
            size = len(data) - pos
        payload = data[pos : pos + size]
        if len(payload) != size:
            raise ValueError("truncated OBU")
        pos += size
        if obu_type == _OBU_SEQUENCE_HEADER and payload:
            reduced = bool((payload[0] >> 3) & 1)  # seq_profile(3) still_picture(1) reduced_still_picture_header(1)
        elif obu_type in (_OBU_FRAME_HEADER, _OBU_FRAME) and payload:
            b = payload[0]
            if reduced:
                frames.append(("KEY", True))
            elif b & 0x80:  # show_existing_frame
                frames.append(("EXISTING", True))
            else:
                frames.append((_AV1_FRAME_TYPES[(b >> 5) & 3], bool((b >> 4) & 1)))
    return frames
