"""lvc: a learned video codec. See the README for the CLI; the Python API in short::

    import lvcodec
    stats = lvcodec.encode("in.mp4", "out.lvc", quality=4, keyint=32)
    for picture in lvcodec.decode("out.lvc"):
        picture.y, picture.u, picture.v   # uint8 numpy planes, 4:2:0
"""

from .codec import (DEFAULT_KEYINT, DEFAULT_QUALITY, Decoder, EncodeStats, Encoder, decode, encode,
                    encode_pictures, psnr_yuv, read_header)
from .errors import BitstreamError, InputError, LvcError, OutputExistsError
from .frames import Picture

__version__ = "0.1.0"

__all__ = [
    "BitstreamError", "DEFAULT_KEYINT", "DEFAULT_QUALITY", "Decoder", "EncodeStats", "Encoder", "InputError",
    "LvcError", "OutputExistsError", "Picture", "decode", "encode", "encode_pictures", "psnr_yuv", "read_header",
]
