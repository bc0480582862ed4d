"""lvc: a learned video codec. See the README for the CLI; the Python API in short::

    import lvcodec
    stats = lvcodec.encode("in.mp4", "out.lvc", quality=4, keyint=32)
    for picture in lvcodec.decode("out.lvc", start_frame=0):
        picture.y, picture.u, picture.v   # uint8 numpy planes, 4:2:0

    with lvcodec.open("out.lvc") as f:       # PyAV-shaped access: header, packets, frames
        f.header, f.frames, list(f.demux())

    lvcodec.list_models()                    # registered models (plugins: entry points "lvcodec.models")
"""

from .codec import (DEFAULT_KEYINT, DEFAULT_QUALITY, DecodeStats, Decoder, EncodeStats, Encoder, decode, encode,
                    encode_pictures, psnr_yuv, read_header)
from .container import InputContainer, OutputContainer, open
from .errors import BitstreamError, InputError, LvcError, OutputExistsError
from .frames import Picture
from .registry import CodecModel, ModelError, list_models, load_model, register_model

__version__ = "0.2.0"

__all__ = [
    "BitstreamError", "CodecModel", "DEFAULT_KEYINT", "DEFAULT_QUALITY", "DecodeStats", "Decoder", "EncodeStats",
    "Encoder", "InputContainer", "InputError", "LvcError", "ModelError", "OutputContainer", "OutputExistsError",
    "Picture", "decode", "encode", "encode_pictures", "list_models", "load_model", "open", "psnr_yuv",
    "read_header", "register_model",
]
