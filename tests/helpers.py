"""Test inputs made on the spot (tests never read ../shared)."""

import io
from fractions import Fraction

import numpy as np
from lvcodec.frames import Picture
from lvcodec.writers import Y4MWriter


def write_y4m(path, pics, rate=Fraction(25)):
    with open(path, "wb") as f:
        w = Y4MWriter(f, pics[0].width, pics[0].height, rate)
        for p in pics:
            w.write(p)
        w.close()
    return str(path)


def noise_pictures(n, width, height, seed=0):
    """Smooth random content (so motion and coding behave like video), odd sizes allowed."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height + 8, width + 8)).astype(np.float32)
    k = np.ones(5) / 5
    base = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 1, base)
    base = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 0, base)
    pics = []
    for t in range(n):
        y = base[t % 4 : t % 4 + height, :width].clip(0, 255).astype(np.uint8)
        ch, cw = (height + 1) // 2, (width + 1) // 2
        u = np.full((ch, cw), 110 + t, np.uint8)
        v = np.full((ch, cw), 140, np.uint8)
        pics.append(Picture(y, u, v, t))
    return pics




def encode_stream(pics, quality=4, keyint=32, preset=None):
    """(bytes of a .lvc stream, the encoder's reconstructions) for ``pics``, coded frame by frame."""
    import lvcodec
    from lvcodec import bitstream as bs

    buf = io.BytesIO()
    enc = lvcodec.Encoder(pics[0].width, pics[0].height, quality, keyint, preset=preset)
    w = bs.Writer(buf, enc.header(Fraction(25)))
    recon = []
    for p in pics:
        (packet,) = enc.encode(p)  # one packet per picture, no delay
        w.write(packet)
        recon.append(enc.reconstruction)
    assert enc.flush() == []
    w.close()
    return buf.getvalue(), recon


def decode_stream(data, tmp_path):
    """The pictures ``lvcodec.decode`` gives for the stream ``data`` (written to a file in ``tmp_path``)."""
    import lvcodec

    path = tmp_path / "s.lvc"
    path.write_bytes(data)
    return list(lvcodec.decode(str(path)))
