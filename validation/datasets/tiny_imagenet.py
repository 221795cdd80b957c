"""The Tiny ImageNet loader: the standard ``tiny-imagenet-200/`` folder into a uint8 ImageSet.

Layout read (the folder is only ever read, never written)::

    wnids.txt                               one class id (wnid) per line; label = line index
    train/<wnid>/images/*.JPEG              training images of class <wnid>
    val/images/*.JPEG, val/val_annotations.txt   "<file>\\t<wnid>\\t..." per line

Images are decoded once with Pillow (grayscale and other modes converted to RGB; each must be
image_size x image_size) into uint8 [N, H, W, 3] and cached as ``.npy`` files in a cache folder
outside the data folder (default ``$NMECH_CACHE``, else ``$XDG_CACHE_HOME/nmech``, else
``~/.cache/nmech``). The cache key hashes every file's relative path, size and mtime, so a
changed folder is decoded again. A missing folder, a wrong layout (a parent folder given
instead points to the one inside), a wnids.txt that is not short UTF-8 text, an empty class, an
image that is a dangling or looping symbolic link, an image of the wrong size (checked from
its header, before decoding: a 9000x9000 file is never decoded) or one Pillow cannot fully
decode raises NmechError naming the path.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from nmech.errors import NmechError
from nmech.validation.cache import cache_dir as default_cache_dir
from nmech.validation.data import ImageSet

SPLITS = ("train", "val")
#: Largest wnids.txt read (Tiny ImageNet's is 2 KiB) and longest class id.
WNIDS_BYTES = 1 << 20
WNID_CHARS = 256
#: Largest val_annotations.txt read (Tiny ImageNet's is 0.4 MiB).
ANNOTATION_BYTES = 64 << 20


def _wnids(root: Path) -> list[str]:
    if not root.is_dir():
        raise NmechError(f"Tiny ImageNet folder not found: {root}")
    path = root / "wnids.txt"
    if not path.is_file():
        inner = [p.parent for p in sorted(root.glob("*/wnids.txt"))]
        hint = f"; did you mean {inner[0]}?" if inner else ""
        raise NmechError(f"not a Tiny ImageNet folder (no wnids.txt): {path}{hint}")
    wnids = [w.strip() for w in _read_text(path, WNIDS_BYTES).splitlines() if w.strip()]
    long = next((w for w in wnids if len(w) > WNID_CHARS), None)
    if long is not None:
        raise NmechError(f"{path} has a line of {len(long)} characters; a class id has at "
                         f"most {WNID_CHARS}")  # fmt: skip
    if not wnids or len(set(wnids)) != len(wnids):
        raise NmechError(f"wnids.txt lists no classes or repeats one: {path}")
    return wnids


def _read_text(path: Path, limit: int) -> str:
    """The UTF-8 text of ``path`` (at most ``limit`` bytes), or one line saying what is wrong."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(limit + 1)
            if len(raw) > limit:
                raise NmechError(f"{path} is larger than {limit // 1024} KiB: not a list")
            return raw.decode("utf-8")
    except OSError as exc:
        raise NmechError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise NmechError(f"{path} is not UTF-8 text (byte {exc.start})") from None


def _images(folder: Path) -> list[Path]:
    """The JPEG files of ``folder``; a dangling or looping symbolic link (or anything that is
    not a regular file) named like an image is an error naming it."""
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
    for p in found:
        try:
            regular = p.is_file()
        except OSError:  # a symbolic link loop
            regular = False
        if not regular:
            raise NmechError(f"image {p} is not a readable file (a dangling or looping "
                             "symbolic link, or a folder)")  # fmt: skip
    return found


def list_split(root: Path, split: str) -> tuple[list[Path], list[int], list[str]]:
    """Image files, labels and class ids of ``split`` (train or val), checking the layout."""
    if split not in SPLITS:
        raise NmechError(f"unknown split {split!r}; use train or val")
    wnids = _wnids(root)
    label = {w: i for i, w in enumerate(wnids)}
    files: list[Path] = []
    labels: list[int] = []
    if split == "train":
        for w in wnids:
            folder = root / "train" / w / "images"
            if not folder.is_dir():
                raise NmechError(f"missing class folder: {folder}")
            imgs = _images(folder)
            if not imgs:
                raise NmechError(f"empty class {w}: no JPEG images in {folder}")
            files += imgs
            labels += [label[w]] * len(imgs)
        return files, labels, wnids
    ann = root / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise NmechError(f"missing validation annotations: {ann}")
    for number, line in enumerate(_read_text(ann, ANNOTATION_BYTES).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label:
            raise NmechError(f"{ann}:{number}: expected '<file>\\t<wnid>' with a known wnid")
        path = root / "val" / "images" / fields[0]
        if not path.is_file():
            raise NmechError(f"{ann}:{number}: image not found: {path}")
        files.append(path)
        labels.append(label[fields[1]])
    if not files:
        raise NmechError(f"no validation images listed in {ann}")
    return files, labels, wnids


def decode(path: Path, image_size: int) -> np.ndarray:
    """One image as uint8 [H, W, 3] (RGB); any decoding problem names the file."""
    from PIL import Image

    try:
        with warnings.catch_warnings():  # a decompression bomb is an error, not a warning
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                if im.size != (image_size, image_size):
                    raise NmechError(f"image {path} is {im.size[0]}x{im.size[1]}, expected "
                                     f"{image_size}x{image_size}")  # fmt: skip
                im.load()
                rgb = im.convert("RGB")
    except NmechError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, warnings, ...
        detail = " ".join(str(exc).split())[:200]
        raise NmechError(f"cannot decode image {path}: {detail}") from None
    return np.asarray(rgb, dtype=np.uint8)


def _cache_key(root: Path, files: list[Path], labels: list[int], image_size: int) -> str:
    h = hashlib.sha256(f"v1 {image_size}".encode())
    for f, y in zip(files, labels, strict=True):
        st = f.stat()
        h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\0{y}\n".encode())
    return h.hexdigest()[:20]


def load_tiny_imagenet(
    root: str | Path, split: str = "train", cache_dir: str | Path | None = None,
    image_size: int = 64,
) -> ImageSet:  # fmt: skip
    """Images and labels of one split, decoded once and then served from the cache."""
    root = Path(root).resolve()
    files, labels, wnids = list_split(root, split)
    cache = Path(cache_dir).resolve() if cache_dir is not None else default_cache_dir().resolve()
    if cache == root or root in cache.parents:
        raise NmechError(f"cache folder {cache} must lie outside the data folder {root}")
    stem = cache / f"tiny-imagenet-{split}-{_cache_key(root, files, labels, image_size)}"
    xs, ys = stem.with_suffix(".x.npy"), stem.with_suffix(".y.npy")
    if xs.is_file() and ys.is_file():
        return ImageSet(np.load(xs), np.load(ys), len(wnids))
    x = np.empty((len(files), image_size, image_size, 3), dtype=np.uint8)
    for i, f in enumerate(files):
        x[i] = decode(f, image_size)
    y = np.asarray(labels, dtype=np.int64)
    cache.mkdir(parents=True, exist_ok=True)
    for path, arr in ((ys, y), (xs, x)):  # write then rename: a reader never sees half a file
        tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, arr)
        tmp.replace(path)
    return ImageSet(x, y, len(wnids))
