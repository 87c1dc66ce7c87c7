"""Images: any image file to a 32x32 RGB uint8 array, and image-folder datasets.

An image-folder dataset is a folder, ``.tar.gz`` or ``.zip`` holding ``train/<class>/*``
and ``test/<class>/*`` (optionally inside one top folder); its members are read through
:func:`cifarlab.data.archives.iter_archive_files`, with the same safety checks as the
official archives. Images larger than :data:`MAX_IMAGE_PIXELS` are refused from their
header, before they are decoded.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path, PurePosixPath

import numpy as np

from cifarlab.data.archives import IMAGE_SIZE, _progress, iter_archive_files
from cifarlab.errors import DataError, UnsafeInputError

#: Bump when the image conversion changes: it is part of the cache key.
CONVERSION_VERSION = 1
CONVERSION = (
    "decoded with Pillow; palette/grayscale converted to RGB; alpha composited onto "
    "white; central square crop; resized to 32x32 with Pillow LANCZOS (images already "
    "32x32 are kept pixel for pixel); stored as uint8 RGB"
)
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
#: Refuse images larger than this many pixels before decoding (decompression bombs).
MAX_IMAGE_PIXELS = 40_000_000


def image_to_array(data: bytes, size: int = IMAGE_SIZE, what: str = "image") -> np.ndarray:
    """Decode image bytes to a ``(size, size, 3)`` uint8 RGB array (see :data:`CONVERSION`).

    Raises :class:`DataError` (or its subclass :class:`UnsafeInputError` for images too
    large to decode safely) and nothing else.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size  # from the header: nothing decoded yet
            if w * h > MAX_IMAGE_PIXELS:
                raise UnsafeInputError(
                    f"{what}: {w}x{h} pixels is over the {MAX_IMAGE_PIXELS:,}-pixel limit "
                    "(possible decompression bomb); refused"
                )
            if w < 1 or h < 1:
                raise DataError(f"{what}: empty image")
            if im.format == "JPEG" and max(w, h) > 4 * size:
                im.draft("RGB", (size * 2, size * 2))  # decode huge JPEGs at reduced scale
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                im = Image.new("RGB", rgba.size, (255, 255, 255))
                im.paste(rgba, mask=rgba.getchannel("A"))
            elif im.mode != "RGB":
                im = im.convert("RGB")
            if im.size != (size, size):
                im = ImageOps.fit(im, (size, size), method=Image.Resampling.LANCZOS)
            arr = np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnsafeInputError(
            f"{what}: refused as a possible decompression bomb ({exc})"
        ) from None
    except UnidentifiedImageError:  # PIL's message names only its in-memory buffer
        raise DataError(f"{what}: not a readable image (no image format recognised)") from None
    except (
        OSError,
        SyntaxError,
        ValueError,
        TypeError,
        EOFError,
        MemoryError,
        IndexError,
        KeyError,
        ZeroDivisionError,
        struct.error,
    ) as exc:
        raise DataError(f"{what}: damaged image ({type(exc).__name__}: {exc})") from None
    if arr.shape != (size, size, 3):
        raise DataError(f"{what}: decoded to shape {arr.shape}, expected {(size, size, 3)}")
    return arr


def load_image_file(path: str | Path) -> np.ndarray:
    """Read an image file from disk and convert it like the training data."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"image '{path}' not found")
    return image_to_array(p.read_bytes(), what=str(path))


def read_image_folder(path: Path, progress: bool) -> dict:
    splits: dict[str, dict[str, list[tuple[str, bytes]]]] = {"train": {}, "test": {}}
    class_dirs: dict[str, set[str]] = {"train": set(), "test": set()}
    prefix: tuple[str, ...] | None = None
    not_images: list[str] = []
    for name, data in iter_archive_files(path):
        parts = PurePosixPath(name).parts
        # <optional top folder>/<train|test>/<class>/<file>
        idx = next(
            (i for i, p in enumerate(parts) if p in ("train", "test") and len(parts) - i == 3), None
        )
        if idx is None or idx > 1:  # outside train/<class>/ and test/<class>/ (README, ...)
            not_images.append(name)
            continue
        if prefix is None:
            prefix = parts[:idx]
        elif parts[:idx] != prefix:
            not_images.append(name)
            continue
        split, cls, fname = parts[idx], parts[idx + 1], parts[idx + 2]
        class_dirs[split].add(cls)
        if fname.startswith(".") or PurePosixPath(fname).suffix.lower() not in IMAGE_EXTENSIONS:
            not_images.append(name)
            continue
        splits[split].setdefault(cls, []).append((name, data))

    if path.is_dir():  # an empty class folder has no files, so look at folders directly
        root = path.joinpath(*prefix) if prefix else path
        for split in ("train", "test"):
            if (root / split).is_dir():
                class_dirs[split] |= {d.name for d in (root / split).iterdir() if d.is_dir()}

    for split in ("train", "test"):
        if not class_dirs[split]:
            raise DataError(
                f"{path}: no '{split}/<class>/' folders found; an image-folder dataset holds "
                "train/<class>/* and test/<class>/*"
            )
    if class_dirs["train"] != class_dirs["test"]:
        only_tr = sorted(class_dirs["train"] - class_dirs["test"])
        only_te = sorted(class_dirs["test"] - class_dirs["train"])
        raise DataError(
            f"{path}: train and test classes differ (only in train: {only_tr or 'none'}; "
            f"only in test: {only_te or 'none'})"
        )
    class_names = sorted(class_dirs["train"])
    for split in ("train", "test"):
        empty = [c for c in class_names if not splits[split].get(c)]
        if empty:
            raise DataError(f"{path}: class folder(s) with no images in {split}/: {empty}")

    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    unreadable: list[str] = []
    total = sum(len(v) for s in splits.values() for v in s.values())
    bar = _progress(total=total, desc="decode images", unit="img", enabled=progress)
    for split in ("train", "test"):
        xs, ys = [], []
        for label, cls in enumerate(class_names):
            for name, data in sorted(splits[split][cls]):
                try:
                    xs.append(image_to_array(data, what=name))
                    ys.append(label)
                except UnsafeInputError:
                    raise
                except DataError:
                    unreadable.append(name)
                bar.update(1)
        if not xs:
            raise DataError(f"{path}: no readable images in {split}/")
        arrays[split] = (np.stack(xs), np.asarray(ys, dtype=np.int64))
    bar.close()
    for split in ("train", "test"):
        missing = sorted(set(class_names) - {class_names[i] for i in np.unique(arrays[split][1])})
        if missing:
            raise DataError(f"{path}: no readable images for class(es) {missing} in {split}/")
    skipped = {"not_images": len(not_images), "unreadable": len(unreadable)}
    if not_images or unreadable:
        examples = (unreadable + not_images)[:3]
        warnings.warn(
            f"{path}: skipped {len(not_images)} non-image file(s) and {len(unreadable)} "
            f"unreadable image(s), e.g. {examples}",
            stacklevel=2,
        )
    return dict(
        name=folder_name(path),
        x_train=arrays["train"][0],
        y_train=arrays["train"][1],
        x_test=arrays["test"][0],
        y_test=arrays["test"][1],
        class_names=class_names,
        info={
            "source": str(path),
            "format": "image folder",
            "conversion": CONVERSION,
            "skipped": skipped,
            "skipped_examples": (unreadable + not_images)[:10],
            "coarse": "this dataset has no coarse (superclass) labels",
        },
    )


def folder_name(path: Path) -> str:
    return (
        path.name.removesuffix(".gz").removesuffix(".tgz").removesuffix(".tar").removesuffix(".zip")
    )
