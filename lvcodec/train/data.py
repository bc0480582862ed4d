"""Training data: random crops of photos and random runs of consecutive video frames, decoded lazily.

Sources are folders searched recursively for videos and images (anything PyAV reads), and optionally a
packed ``.npz`` (``tools/pack_data.py``). Pictures are converted to 8-bit 4:2:0 (:func:`lvcodec.frames.from_av`),
optionally halved by a 2x2 area filter (the filter of ``lvc bench --downscale``), and cropped at even
offsets to square crops. Decoded pictures live in a least-recently-used cache bounded in bytes; a video is
decoded from its start up to the last frame a sample needs, so only the first ``max_frames`` frames of
each are used. Every random choice comes from the ``numpy.random.Generator`` passed in, so a run that
restores the generator draws the same samples.

A share of the files (``holdout``) is kept out of training for the final RD measurement, chosen by a
hash of each file's path inside its folder, so adding files does not move the others between the sets.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..frames import Picture, from_av
from .config import DataConfig

VIDEO_EXT = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".y4m", ".ivf",
             ".264", ".h264", ".265", ".h265", ".hevc")
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm")


def _avg2x2(a: np.ndarray) -> np.ndarray:
    b = a.astype(np.uint16)
    return ((b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2] + 2) // 4).astype(np.uint8)


def downscale2x(pic: Picture) -> Picture:
    """2x area downscale of each plane (rounded 2x2 mean), luma first cropped to a multiple of 4."""
    h4, w4 = pic.height // 4 * 4, pic.width // 4 * 4
    return Picture(_avg2x2(pic.y[:h4, :w4]), _avg2x2(pic.u[: h4 // 2, : w4 // 2]),
                   _avg2x2(pic.v[: h4 // 2, : w4 // 2]), pic.pts)


def usable_size(pic: Picture) -> tuple[int, int]:
    """Even (height, width) that luma and chroma both cover."""
    h = min(pic.y.shape[0], 2 * pic.u.shape[0]) // 2 * 2
    w = min(pic.y.shape[1], 2 * pic.u.shape[1]) // 2 * 2
    return h, w


def crop(pic: Picture, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Luma (h, w) and chroma (2, h/2, w/2) of the crop at even (y0, x0); edges repeated if it overhangs."""
    y = pic.y[y0 : y0 + h, x0 : x0 + w]
    uv = np.stack((pic.u[y0 // 2 : (y0 + h) // 2, x0 // 2 : (x0 + w) // 2],
                   pic.v[y0 // 2 : (y0 + h) // 2, x0 // 2 : (x0 + w) // 2]))
    if y.shape != (h, w):
        y = np.pad(y, ((0, h - y.shape[0]), (0, w - y.shape[1])), mode="edge")
    if uv.shape[1:] != (h // 2, w // 2):
        uv = np.pad(uv, ((0, 0), (0, h // 2 - uv.shape[1]), (0, w // 2 - uv.shape[2])), mode="edge")
    return y, uv


def centre_crop(pic: Picture, size: int) -> Picture:
    """The centred ``size`` x ``size`` crop (a side shorter than ``size`` is kept whole); 0: whole."""
    if not size:
        return pic
    h, w = usable_size(pic)
    ch, cw = min(size, h), min(size, w)
    y0, x0 = (h - ch) // 4 * 2, (w - cw) // 4 * 2
    y, uv = crop(pic, y0, x0, ch, cw)
    return Picture(y.copy(), uv[0].copy(), uv[1].copy(), pic.pts)


class PictureCache:
    """Decoded pictures by key, least recently used dropped first once over ``budget`` bytes."""

    def __init__(self, budget: int):
        self.budget = budget
        self.bytes = 0
        self._d: OrderedDict = OrderedDict()
        self.hits = self.misses = 0

    @staticmethod
    def size(pic: Picture) -> int:
        return pic.y.nbytes + pic.u.nbytes + pic.v.nbytes

    def get(self, key):
        pic = self._d.get(key)
        if pic is None:
            self.misses += 1
            return None
        self.hits += 1
        self._d.move_to_end(key)
        return pic

    def put(self, key, pic: Picture) -> None:
        n = self.size(pic)
        if n > self.budget or key in self._d:
            return
        self._d[key] = pic
        self.bytes += n
        while self.bytes > self.budget:
            _, old = self._d.popitem(last=False)
            self.bytes -= self.size(old)

    def __len__(self) -> int:
        return len(self._d)


@dataclass
class Source:
    """One file: a video (``frames`` > 1 possible) or an image, with its size after any downscale."""

    path: str
    rel: str  # path inside its folder (the hold-out hash uses it)
    kind: str  # "video" | "image"
    width: int
    height: int
    frames: int
    downscale: bool


def _files(folders: tuple[str, ...], exts: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for root in folders:
        if not os.path.isdir(root):
            raise InputError(f"{root}: no such folder")
        for d, subdirs, names in os.walk(root):
            subdirs.sort()
            for n in sorted(names):
                if n.lower().endswith(exts) and not n.startswith("."):
                    p = os.path.join(d, n)
                    out.append((p, os.path.relpath(p, root)))
    return out


def _probe(path: str, rel: str, kind: str, downscale_above: int, max_frames: int) -> Source:
    import av

    with av.open(path) as c:
        if not c.streams.video:
            raise ValueError("no video stream")
        s = c.streams.video[0]
        w, h = s.codec_context.width, s.codec_context.height
        if not w or not h:
            raise ValueError("no frame size")
        n = 1
        if kind == "video":
            n = s.frames or 0
            if not n:  # elementary streams and some containers carry no count: count packets
                n = sum(1 for p in c.demux(s) if p.size)
            n = min(n, max_frames)
    down = bool(downscale_above) and max(w, h) > downscale_above
    if down:
        w, h = w // 4 * 2, h // 4 * 2
    return Source(path, rel, kind, w // 2 * 2, h // 2 * 2, n, down)


def _held_out(rels: list[str], share: float) -> set[str]:
    """The files kept for the final measurement: the first ``share`` of them in hash order (at least one,
    never all, when there are two or more and ``share`` > 0)."""
    if share <= 0 or len(rels) < 2:
        return set()
    k = min(max(1, round(share * len(rels))), len(rels) - 1)
    return set(sorted(rels, key=lambda r: hashlib.sha1(r.encode()).hexdigest())[:k])


@dataclass
class Scan:
    """What a folder held: training sources, held-out sources, and files left out (with reasons)."""

    train: list[Source]
    held_out: list[Source]
    too_small: list[str]
    unreadable: list[str]

    def describe(self, kind: str) -> str:
        n = len(self.train) + len(self.held_out) + len(self.too_small)
        s = f"{n} {kind} files"
        if kind == "video":
            s += f" ({sum(x.frames for x in self.train)} training frames)"
        s += f", {len(self.held_out)} held out"
        if self.too_small:
            s += f", {len(self.too_small)} smaller than the crop"
        if self.unreadable:
            s += f", {len(self.unreadable)} unreadable"
        return s


def scan(folders: tuple[str, ...], kind: str, cfg: DataConfig) -> Scan:
    exts = VIDEO_EXT if kind == "video" else IMAGE_EXT
    sources, unreadable = [], []
    for path, rel in _files(folders, exts):
        try:
            src = _probe(path, rel, kind, cfg.downscale_above, cfg.max_frames)
        except Exception:  # a broken or foreign file is left out, and counted
            unreadable.append(path)
            continue
        if kind == "video" and src.frames < 1:
            unreadable.append(path)
            continue
        sources.append(src)
    held = _held_out([s.rel for s in sources], cfg.holdout)
    train, held_out, too_small = [], [], []
    for s in sources:
        if s.rel in held:
            held_out.append(s)
        elif min(s.width, s.height) < cfg.crop:
            too_small.append(s.path)
        else:
            train.append(s)
    return Scan(train, held_out, too_small, unreadable)


class Decoder:
    """Reads pictures of sources through a :class:`PictureCache`."""

    def __init__(self, cache_bytes: int):
        self.cache = PictureCache(cache_bytes)

    def _convert(self, frame, src: Source) -> Picture:
        pic = from_av(frame)
        return downscale2x(pic) if src.downscale else pic

    def image(self, src: Source) -> Picture:
        import av

        pic = self.cache.get((src.path, 0))
        if pic is None:
            with av.open(src.path) as c:
                pic = self._convert(next(c.decode(video=0)), src)
            self.cache.put((src.path, 0), pic)
        return pic

    def frames(self, src: Source, idxs: list[int]) -> list[Picture]:
        """Pictures ``idxs`` of a video; an index past the frames the file really has gives its last one."""
        import av

        got = {}
        for i in set(idxs):
            pic = self.cache.get((src.path, i))
            if pic is not None:
                got[i] = pic
        missing = set(idxs) - set(got)
        if missing:
            last_needed, last = max(missing), None
            warm = self.cache.budget > 0
            with av.open(src.path) as c:
                for i, fr in enumerate(c.decode(video=0)):
                    if i > last_needed:
                        break
                    if i in missing or warm:
                        pic = self._convert(fr, src)
                        self.cache.put((src.path, i), pic)
                        if i in missing:
                            got[i] = pic
                    last = i
            for i in missing - set(got):
                if last is None:
                    raise InputError(f"{src.path}: decodes to no frames")
                got[i] = self.frames(src, [last])[0] if last not in got else got[last]
        return [got[i] for i in idxs]


class TrainingSet:
    """Random training batches (uint8 numpy) from the configured sources; see the module docstring."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.crop = cfg.crop
        self.videos = scan(cfg.video, "video", cfg) if cfg.video else Scan([], [], [], [])
        self.images = scan(cfg.images, "image", cfg) if cfg.images else Scan([], [], [], [])
        self.decoder = Decoder(cfg.cache_mb << 20)
        self.packed = None
        if cfg.packed:
            self.packed = _load_packed(cfg.packed, cfg.crop, cfg.holdout)
        self._video_w = np.sqrt([s.frames for s in self.videos.train]) if self.videos.train else np.zeros(0)

    # -- what there is ---------------------------------------------------------------------------
    @property
    def n_sequence_sources(self) -> int:
        return len(self.videos.train) + (self.packed.n_train_seq if self.packed else 0)

    @property
    def n_image_sources(self) -> int:
        return len(self.images.train) + (self.packed.n_train_img if self.packed else 0)

    def describe(self) -> list[str]:
        lines = []
        if self.cfg.video:
            lines.append(f"video {', '.join(self.cfg.video)}: {self.videos.describe('video')}")
        if self.cfg.images:
            lines.append(f"images {', '.join(self.cfg.images)}: {self.images.describe('image')}")
        if self.packed:
            lines.append(f"packed {self.cfg.packed}: {self.packed.describe()}")
        return lines

    def check(self, stages) -> None:
        """Refuse a plan the data cannot feed (an :class:`InputError`)."""
        for s in stages:
            if s.images and not self.n_image_sources:
                raise InputError(f'stage "{s.name}" asks for image crops but no image of at least '
                                 f"{self.crop}x{self.crop} is left for training")
            if s.sequences and not self.n_sequence_sources:
                raise InputError(f'stage "{s.name}" asks for sequences but no video of at least '
                                 f"{self.crop}x{self.crop} is left for training")
            if s.sequences and self.packed and self.packed.n_train_seq and not self.videos.train \
                    and s.frames > self.packed.seq_len:
                raise InputError(f'stage "{s.name}" wants {s.frames} frames per sequence, the packed set has '
                                 f"{self.packed.seq_len}")

    # -- sampling ----------------------------------------------------------------------------------
    def _offsets(self, rng: np.random.Generator, h: int, w: int) -> tuple[int, int]:
        c = self.crop
        return int(rng.integers(0, (h - c) // 2 + 1)) * 2, int(rng.integers(0, (w - c) // 2 + 1)) * 2

    def images_batch(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random crops: luma (n, C, C), chroma (n, 2, C/2, C/2), uint8."""
        c = self.crop
        ys, uvs = np.empty((n, c, c), np.uint8), np.empty((n, 2, c // 2, c // 2), np.uint8)
        n_folder = len(self.images.train)
        for k in range(n):
            i = int(rng.integers(self.n_image_sources))
            if i < n_folder:
                pic = self.decoder.image(self.images.train[i])
                h, w = usable_size(pic)
                y0, x0 = self._offsets(rng, h, w)
                y, uv = crop(pic, y0, x0, c, c)
            else:
                y, uv = self.packed.image(i - n_folder, rng, c, self._offsets)
            if rng.random() < 0.5:
                y, uv = y[:, ::-1], uv[:, :, ::-1]
            ys[k], uvs[k] = y, uv
        return ys, uvs

    def sequences_batch(self, rng: np.random.Generator, n: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random runs of ``frames`` frames: luma (n, T, C, C), chroma (n, T, 2, C/2, C/2), uint8."""
        c = self.crop
        ys = np.empty((n, frames, c, c), np.uint8)
        uvs = np.empty((n, frames, 2, c // 2, c // 2), np.uint8)
        weights = self._sequence_weights(frames)
        n_folder = len(self.videos.train)
        for k in range(n):
            i = int(rng.choice(len(weights), p=weights))
            if i < n_folder:
                src = self.videos.train[i]
                stride = int(rng.integers(1, self.cfg.max_stride + 1))
                stride = max(1, min(stride, (src.frames - 1) // max(frames - 1, 1)))
                start = int(rng.integers(0, max(src.frames - stride * (frames - 1), 1)))
                y0, x0 = self._offsets(rng, src.height, src.width)
                pics = self.decoder.frames(src, [start + t * stride for t in range(frames)])
                seq = [crop(p, y0, x0, c, c) for p in pics]
            else:
                seq = self.packed.sequence(i - n_folder, rng, c, frames, self._offsets)
            if rng.random() < 0.5:
                seq = [(y[:, ::-1], uv[:, :, ::-1]) for y, uv in seq]
            if rng.random() < 0.5:  # played backwards
                seq = seq[::-1]
            for t, (y, uv) in enumerate(seq):
                ys[k, t], uvs[k, t] = y, uv
        return ys, uvs

    def _sequence_weights(self, frames: int) -> np.ndarray:
        w = list(self._video_w)
        if self.packed:
            w += [np.sqrt(self.packed.seq_len)] * self.packed.n_train_seq
        w = np.asarray(w, np.float64)
        return w / w.sum()

    def training_clips(self, frames: int, count: int) -> list[tuple[str, list[Picture]]]:
        """First ``frames`` frames (whole pictures) of up to ``count`` training videos spread over the list:
        what :mod:`lvcodec.train.priors` fits the fixed priors on."""
        srcs = self.videos.train
        if len(srcs) > count:
            srcs = [srcs[i] for i in np.linspace(0, len(srcs) - 1, count).round().astype(int)]
        return [(s.path, self.decoder.frames(s, list(range(min(frames, s.frames))))) for s in srcs]

    # -- the held-out part ---------------------------------------------------------------------------
    def held_out_clips(self, frames: int, size: int, count: int) -> list[tuple[str, list[Picture]]]:
        """First ``frames`` frames of up to ``count`` held-out videos, centre-cropped to ``size``."""
        out = []
        for src in self.videos.held_out[:count]:
            n = min(frames, src.frames)
            pics = self.decoder.frames(src, list(range(n)))
            out.append((src.path, [centre_crop(p, size) for p in pics]))
        if self.packed and len(out) < count:
            out += self.packed.held_out_clips(frames, count - len(out))
        return out

    def held_out_images(self, size: int, count: int) -> list[tuple[str, Picture]]:
        out = [(s.path, centre_crop(self.decoder.image(s), size)) for s in self.images.held_out[:count]]
        if self.packed and len(out) < count:
            out += self.packed.held_out_images(count - len(out))
        return out


class _Packed:
    """An ``.npz`` of uint8 crops (tools/pack_data.py): seq_y, seq_uv, img_y, img_uv; the last
    ``holdout`` share of each is held out."""

    def __init__(self, path: str, d: dict, crop_size: int, holdout: float):
        self.path = path
        self.seq_y, self.seq_uv = d.get("seq_y"), d.get("seq_uv")
        self.img_y, self.img_uv = d.get("img_y"), d.get("img_uv")
        self.seq_len = self.seq_y.shape[1] if self.seq_y is not None else 0

        def split(a, minside):
            if a is None or a.shape[-1] < minside or a.shape[-2] < minside:
                return 0, 0 if a is None else len(a)
            k = round(holdout * len(a)) if len(a) >= 2 else 0
            return len(a) - k, k

        self.n_train_seq, self.n_held_seq = split(self.seq_y, crop_size)
        self.n_train_img, self.n_held_img = split(self.img_y, crop_size)

    def describe(self) -> str:
        return (f"{self.n_train_seq} + {self.n_held_seq} held-out sequences of {self.seq_len} frames, "
                f"{self.n_train_img} + {self.n_held_img} held-out image crops")

    def image(self, i, rng, c, offsets):
        h, w = self.img_y.shape[1:]
        y0, x0 = offsets(rng, h, w)
        return (self.img_y[i, y0 : y0 + c, x0 : x0 + c],
                self.img_uv[i, :, y0 // 2 : (y0 + c) // 2, x0 // 2 : (x0 + c) // 2])

    def sequence(self, i, rng, c, frames, offsets):
        h, w = self.seq_y.shape[2:]
        y0, x0 = offsets(rng, h, w)
        start = int(rng.integers(0, self.seq_len - frames + 1)) if frames <= self.seq_len else 0
        idx = [min(start + t, self.seq_len - 1) for t in range(frames)]
        return [(self.seq_y[i, t, y0 : y0 + c, x0 : x0 + c],
                 self.seq_uv[i, t, :, y0 // 2 : (y0 + c) // 2, x0 // 2 : (x0 + c) // 2]) for t in idx]

    def _pic(self, y, uv, pts=0):
        return Picture(np.ascontiguousarray(y), np.ascontiguousarray(uv[0]), np.ascontiguousarray(uv[1]), pts)

    def held_out_clips(self, frames, count):
        first = self.n_train_seq
        return [(f"{self.path}#seq{i}", [self._pic(self.seq_y[i, t], self.seq_uv[i, t], t)
                                           for t in range(min(frames, self.seq_len))])
                for i in range(first, first + min(count, self.n_held_seq))]

    def held_out_images(self, count):
        first = self.n_train_img
        return [(f"{self.path}#img{i}", self._pic(self.img_y[i], self.img_uv[i]))
                for i in range(first, first + min(count, self.n_held_img))]


# JPEG's height cap: a mosaic stacks as many planes as fit (the planes are multiples of 8 high, so no DCT
# block straddles two planes)
_JPEG_MAX_HEIGHT = 65535


def jpeg_encode(a: np.ndarray, quality: int) -> dict:
    """uint8 array (..., H, W) -> {"jpg": concatenated JPEG mosaics, "off": offsets, "shape": shape}."""
    import io

    from PIL import Image

    planes = a.reshape(-1, *a.shape[-2:])
    per = _JPEG_MAX_HEIGHT // a.shape[-2]
    chunks = []
    for i in range(0, len(planes), per):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(planes[i:i + per]).reshape(-1, a.shape[-1])).save(
            buf, format="JPEG", quality=quality)
        chunks.append(np.frombuffer(buf.getvalue(), np.uint8))
    off = np.cumsum([0] + [len(c) for c in chunks])
    return {"jpg": np.concatenate(chunks), "off": off, "shape": np.array(a.shape)}


def jpeg_decode(jpg: np.ndarray, off: np.ndarray, shape: np.ndarray) -> np.ndarray:
    import io

    from PIL import Image

    mosaics = [np.asarray(Image.open(io.BytesIO(jpg[off[i]:off[i + 1]].tobytes())).convert("L"))
               for i in range(len(off) - 1)]
    return np.concatenate(mosaics).reshape(tuple(int(v) for v in shape))


def read_pack(path: str) -> dict[str, np.ndarray]:
    """The arrays of a pack written by ``tools/pack_data.py``, raw or ``--jpeg`` (decoded)."""
    out = {}
    with np.load(path) as z:
        for k in z.files:
            if k.endswith(".jpg"):
                name = k[: -len(".jpg")]
                out[name] = jpeg_decode(z[k], z[name + ".off"], z[name + ".shape"])
            elif not k.endswith((".off", ".shape")):
                out[k] = z[k]
    return out


def _load_packed(path: str, crop_size: int, holdout: float) -> _Packed:
    try:
        d = {k: v for k, v in read_pack(path).items() if k in ("seq_y", "seq_uv", "img_y", "img_uv")}
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{path}: not a packed training set ({e})") from None
    ok = (("seq_y" in d) == ("seq_uv" in d) and ("img_y" in d) == ("img_uv" in d) and d
          and all(a.dtype == np.uint8 for a in d.values())
          and ("seq_y" not in d or (d["seq_y"].ndim == 4 and d["seq_uv"].ndim == 5))
          and ("img_y" not in d or (d["img_y"].ndim == 3 and d["img_uv"].ndim == 4)))
    if not ok:
        raise InputError(f"{path}: not a packed training set (needs uint8 seq_y/seq_uv and/or img_y/img_uv)")
    return _Packed(path, d, crop_size, holdout)
