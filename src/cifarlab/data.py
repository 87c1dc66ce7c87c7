"""Data: from a dataset spec string to uint8 arrays, a stratified split and preprocessing.

One spec string selects a dataset:

- ``cifar100`` (default) or ``cifar10``: the official python-version archives, looked
  up in ``CIFARLAB_DATA_DIR`` (default ``~/.keras/datasets``, the Keras cache, so an
  existing Keras download is reused) and downloaded from the official URL only when
  absent (never when ``CIFARLAB_NO_DOWNLOAD`` is set).
- a path to an official archive (``.../cifar-100-python.tar.gz``).
- a path to an image-folder dataset: a folder, ``.tar.gz`` or ``.zip`` holding
  ``train/<class>/*`` and ``test/<class>/*`` (optionally inside one top folder).

Safety: the published md5 of an official archive is checked before anything in it is
unpickled, and unpickling only admits the numpy types the archives use. Archives are
never extracted to disk; every member is read in memory after it passes the checks
in :func:`_check_member` (no absolute paths, no ``..``, no links, no devices), so
nothing can be written outside a folder. Images larger than :data:`MAX_IMAGE_PIXELS`
are refused from their header, before they are decoded.

Decoded arrays are cached as uint8 ``.npz`` keyed by the source's sha256, so a second
load does not decode 60,000 JPEG files again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from cifarlab.errors import DataError, UnsafeInputError

# --------------------------------------------------------------------------- constants

IMAGE_SIZE = 32
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

#: The official python-version archives and their published md5 sums
#: (https://www.cs.toronto.edu/~kriz/cifar.html). Tests swap this table for their own.
OFFICIAL_ARCHIVES: dict[str, dict[str, str]] = {
    "cifar100": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "filename": "cifar-100-python.tar.gz",
        "folder": "cifar-100-python",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
    },
    "cifar10": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "filename": "cifar-10-python.tar.gz",
        "folder": "cifar-10-batches-py",
        "md5": "c58f30108f718f92721af3b95e74349a",
    },
}


def data_dir() -> Path:
    """Where official archives are looked up and downloaded to."""
    return Path(os.environ.get("CIFARLAB_DATA_DIR", Path.home() / ".keras" / "datasets"))


def cache_dir() -> Path:
    """Where decoded uint8 arrays are cached."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cifarlab"
    return Path(os.environ.get("CIFARLAB_CACHE_DIR", default))


# --------------------------------------------------------------------------- the dataset


@dataclass
class Dataset:
    """A whole dataset in memory: uint8 NHWC images and int labels, train and test."""

    name: str
    spec: str
    checksum: str  # sha256 of the source (archive file, or folder contents)
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    coarse_train: np.ndarray | None = None
    coarse_test: np.ndarray | None = None
    coarse_names: list[str] | None = None
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_coarse(self) -> bool:
        return self.coarse_names is not None

    @property
    def fine_to_coarse(self) -> np.ndarray | None:
        """Coarse label of each fine class (CIFAR-100), derived from the training labels."""
        if not self.has_coarse:
            return None
        mapping = np.full(self.num_classes, -1, dtype=np.int64)
        mapping[self.y_train] = self.coarse_train
        return mapping

    def describe(self) -> dict:
        """Counts per split and class, for `cifarlab data info` and the notebooks."""
        return {
            "name": self.name,
            "spec": self.spec,
            "sha256": self.checksum,
            "num_classes": self.num_classes,
            "image_shape": list(self.x_train.shape[1:]),
            "train": int(len(self.y_train)),
            "test": int(len(self.y_test)),
            "train_per_class": np.bincount(self.y_train, minlength=self.num_classes).tolist(),
            "test_per_class": np.bincount(self.y_test, minlength=self.num_classes).tolist(),
            "class_names": self.class_names,
            "coarse_names": self.coarse_names,
            **{k: v for k, v in self.info.items() if k not in {"name"}},
        }


@dataclass
class Split:
    """The stratified hold-out split used for training and model selection."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    seed: int
    val_fraction: float


def split_train_val(
    ds: Dataset, val_fraction: float = 0.2, seed: int = 0, limit: int | None = None
) -> Split:
    """Stratified, seeded hold-out split of the *training* images (test is untouched).

    20% gives the 40,000 / 10,000 split for CIFAR. ``limit`` first draws a stratified
    subset of that many training images (smoke runs).
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    x, y = ds.x_train, ds.y_train
    if limit is not None and limit < len(y):
        x, y = stratified_subset(x, y, limit, seed)
    try:
        x_tr, x_val, y_tr, y_val = train_test_split(
            x, y, test_size=val_fraction, random_state=seed, stratify=y
        )
    except ValueError as exc:  # too few images per class to stratify
        raise DataError(f"cannot split {len(y)} training images stratified: {exc}") from None
    return Split(x_tr, y_tr, x_val, y_val, seed, val_fraction)


def stratified_subset(
    x: np.ndarray, y: np.ndarray, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A class-balanced random subset of ``n`` examples (order shuffled, seeded)."""
    from sklearn.model_selection import train_test_split

    if n >= len(y):
        return x, y
    classes = len(np.unique(y))
    if n < classes:
        raise DataError(f"a subset of {n} images cannot hold all {classes} classes")
    x_sub, _, y_sub, _ = train_test_split(x, y, train_size=n, random_state=seed, stratify=y)
    return x_sub, y_sub


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (0-255 scale) of uint8 NHWC images, in float64."""
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
    return flat.mean(axis=0), flat.std(axis=0)


# --------------------------------------------------------------------------- loading


def load_dataset(
    spec: str = "cifar100", *, use_cache: bool = True, progress: bool = True
) -> Dataset:
    """Load the dataset named by ``spec`` (see the module docstring)."""
    spec = str(spec).strip()
    if not spec:
        raise DataError("empty dataset spec: use cifar100, cifar10, or a path")
    key = spec.lower()
    if key in OFFICIAL_ARCHIVES:
        archive = _find_or_download(key, progress=progress)
        if archive.is_dir():
            return _cached(
                archive, spec, lambda: _read_official_folder(archive, key, spec), use_cache
            )
        return _cached(archive, spec, lambda: _read_official_archive(archive, spec), use_cache)

    try:
        path = Path(spec).expanduser()
        exists = path.exists()
    except (RuntimeError, ValueError, OSError) as exc:  # "~nobody", NUL bytes, names too long
        raise DataError(f"dataset '{spec[:80]}' is not a usable path ({exc})") from None
    if not exists:
        raise DataError(
            f"dataset '{spec}' not found: use cifar100, cifar10, or the path of an official "
            "CIFAR archive or of an image folder (train/<class>/*, test/<class>/*)"
        )
    if path.is_dir():
        if _official_kind_of_folder(path):
            kind = _official_kind_of_folder(path)
            return _cached(path, spec, lambda: _read_official_folder(path, kind, spec), use_cache)
        return _cached(path, spec, lambda: _read_image_folder(path, spec, progress), use_cache)
    if _official_kind_of_archive(path):
        return _cached(path, spec, lambda: _read_official_archive(path, spec), use_cache)
    return _cached(path, spec, lambda: _read_image_folder(path, spec, progress), use_cache)


def _cached(source: Path, spec: str, read, use_cache: bool) -> Dataset:
    checksum = source_checksum(source)
    cache = cache_dir() / f"{checksum[:32]}-v{CONVERSION_VERSION}.npz"
    if use_cache and cache.exists():
        try:
            return _load_cache(cache, spec, checksum)
        except Exception:  # a damaged cache is rebuilt, never trusted
            warnings.warn(f"ignoring unreadable cache {cache}", stacklevel=2)
    ds = read()
    ds.checksum = checksum
    if use_cache:
        _save_cache(cache, ds)
    return ds


def _save_cache(path: Path, ds: Dataset) -> None:
    arrays = {
        "x_train": ds.x_train,
        "y_train": ds.y_train,
        "x_test": ds.x_test,
        "y_test": ds.y_test,
    }
    if ds.has_coarse:
        arrays["coarse_train"] = ds.coarse_train
        arrays["coarse_test"] = ds.coarse_test
    meta = {
        "name": ds.name,
        "class_names": ds.class_names,
        "coarse_names": ds.coarse_names,
        "info": ds.info,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _load_cache(path: Path, spec: str, checksum: str) -> Dataset:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        has_coarse = "coarse_train" in z.files
        return Dataset(
            name=meta["name"] if meta["name"] in OFFICIAL_ARCHIVES else _folder_name(Path(spec)),
            spec=spec,
            checksum=checksum,
            x_train=z["x_train"],
            y_train=z["y_train"],
            x_test=z["x_test"],
            y_test=z["y_test"],
            class_names=meta["class_names"],
            coarse_train=z["coarse_train"] if has_coarse else None,
            coarse_test=z["coarse_test"] if has_coarse else None,
            coarse_names=meta["coarse_names"],
            info={**meta["info"], "source": spec, "cache": str(path)},
        )


def source_checksum(path: Path) -> str:
    """sha256 of a file, or of a folder's sorted relative paths and file contents."""
    if path.is_file():
        return file_digest(path, "sha256")
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):  # folders too: an empty class folder is part of the source
        h.update(p.relative_to(path).as_posix().encode() + (b"/\0" if p.is_dir() else b"\0"))
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def file_digest(path: str | Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def file_md5(path: Path) -> str:
    return file_digest(path, "md5")


# --------------------------------------------------------------------------- official CIFAR


def _find_or_download(key: str, progress: bool) -> Path:
    entry = OFFICIAL_ARCHIVES[key]
    root = data_dir()
    archive = root / entry["filename"]
    if archive.is_file():
        return archive
    # Keras' own download (keras.datasets.cifar100) may have left the extracted folder.
    for folder in (root / entry["folder"], root / f"{entry['folder']}_extracted" / entry["folder"]):
        if folder.is_dir() and _official_kind_of_folder(folder) == key:
            return folder
    return _download(entry, archive, progress)


def _download(entry: dict, target: Path, progress: bool) -> Path:
    hint = (
        f"put {entry['filename']} in {target.parent} (or set CIFARLAB_DATA_DIR to its "
        f"folder), or pass --dataset /path/to/{entry['filename']}"
    )
    if os.environ.get("CIFARLAB_NO_DOWNLOAD"):
        raise DataError(
            f"{entry['filename']} not found and downloads are off (CIFARLAB_NO_DOWNLOAD); {hint}"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(entry["url"], timeout=30) as resp, open(tmp, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                bar = _progress(
                    total=total,
                    desc=f"download {entry['filename']}",
                    unit="B",
                    enabled=progress,
                    unit_scale=True,
                )
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
                bar.close()
            got = file_md5(tmp)
            if got != entry["md5"]:
                raise UnsafeInputError(
                    f"downloaded {entry['filename']} has md5 {got}, expected {entry['md5']}; "
                    "deleted it"
                )
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"cannot download {entry['url']} ({reason}); {hint}") from None
    return target


def _official_kind_of_archive(path: Path) -> str | None:
    """'cifar100' / 'cifar10' when ``path`` is a tar archive laid out like the official one."""
    if not tarfile.is_tarfile(path):
        return None
    try:
        with tarfile.open(path, "r:*") as tar:
            first = tar.next()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable archive ({exc})") from None
    if first is None:
        return None
    top = PurePosixPath(first.name).parts[0] if first.name else ""
    for key, entry in OFFICIAL_ARCHIVES.items():
        if top == entry["folder"]:
            return key
    return None


def _official_kind_of_folder(path: Path) -> str | None:
    if (path / "meta").is_file() and (path / "train").is_file():
        return "cifar100"
    if (path / "batches.meta").is_file() and (path / "data_batch_1").is_file():
        return "cifar10"
    return None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays; refuses every other global.

    A second line of defence after the md5 check: even a tampered archive cannot run
    code through pickle.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise UnsafeInputError(f"refused to unpickle {module}.{name}")
        return super().find_class(module.replace("numpy.core", "numpy._core"), name)


def _unpickle(data: bytes, what: str) -> dict:
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except UnsafeInputError:
        raise
    except Exception as exc:
        raise DataError(f"{what}: not a CIFAR batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{what}: not a CIFAR batch (a {type(obj).__name__}, not a dict)")
    return obj


def _batch_images(batch: dict, what: str) -> np.ndarray:
    data = np.asarray(batch.get(b"data"))
    if data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE:
        raise DataError(f"{what}: b'data' has shape {data.shape}, expected (N, 3072)")
    # The published layout: each row is 1024 red, 1024 green, 1024 blue values, row-major.
    return data.astype(np.uint8).reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1)


def _labels(batch: dict, key: bytes, what: str, n: int) -> np.ndarray:
    if key not in batch:
        raise DataError(f"{what}: missing {key!r}")
    y = np.asarray(batch[key], dtype=np.int64)
    if y.shape != (n,):
        raise DataError(f"{what}: {key!r} has {y.shape[0]} labels for {n} images")
    return y


def _names(meta: dict, key: bytes, what: str) -> list[str]:
    if key not in meta:
        raise DataError(f"{what}: missing {key!r}")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in meta[key]]


def _read_official_archive(path: Path, spec: str) -> Dataset:
    kind = _official_kind_of_archive(path)
    entry = OFFICIAL_ARCHIVES[kind]
    md5 = file_md5(path)  # BEFORE anything is unpickled
    if md5 != entry["md5"]:
        raise UnsafeInputError(
            f"{path}: md5 {md5} does not match the published {entry['md5']} for "
            f"{entry['filename']}; refusing to read it (re-download the archive)"
        )
    members = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                _check_member(m.name, _tar_kind(m), path)
                if m.isfile():
                    members[PurePosixPath(m.name).as_posix()] = tar.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: truncated or damaged archive ({exc})") from None
    folder = entry["folder"]

    def get(name: str) -> bytes:
        key = f"{folder}/{name}"
        if key not in members:
            raise DataError(f"{path}: missing {key}")
        return members[key]

    ds = _parse_official(kind, get, spec, str(path))
    ds.info["md5"] = md5
    ds.info["md5_verified"] = True
    return ds


def _read_official_folder(path: Path, kind: str, spec: str) -> Dataset:
    def get(name: str) -> bytes:
        f = path / name
        if not f.is_file():
            raise DataError(f"{path}: missing {name}")
        return f.read_bytes()

    ds = _parse_official(kind, get, spec, str(path))
    ds.info["md5_verified"] = False
    ds.info["note"] = (
        "read from an extracted folder: archive md5 not verifiable; numpy-only unpickler"
    )
    return ds


def _parse_official(kind: str, get, spec: str, where: str) -> Dataset:
    if kind == "cifar100":
        meta = _unpickle(get("meta"), f"{where}: meta")
        train = _unpickle(get("train"), f"{where}: train")
        test = _unpickle(get("test"), f"{where}: test")
        x_tr, x_te = _batch_images(train, "train"), _batch_images(test, "test")
        return Dataset(
            name="cifar100",
            spec=spec,
            checksum="",
            x_train=x_tr,
            y_train=_labels(train, b"fine_labels", "train", len(x_tr)),
            x_test=x_te,
            y_test=_labels(test, b"fine_labels", "test", len(x_te)),
            class_names=_names(meta, b"fine_label_names", "meta"),
            coarse_train=_labels(train, b"coarse_labels", "train", len(x_tr)),
            coarse_test=_labels(test, b"coarse_labels", "test", len(x_te)),
            coarse_names=_names(meta, b"coarse_label_names", "meta"),
            info={"source": where, "format": "official CIFAR-100 python version"},
        )
    meta = _unpickle(get("batches.meta"), f"{where}: batches.meta")
    xs, ys = [], []
    for i in range(1, 6):
        b = _unpickle(get(f"data_batch_{i}"), f"{where}: data_batch_{i}")
        x = _batch_images(b, f"data_batch_{i}")
        xs.append(x)
        ys.append(_labels(b, b"labels", f"data_batch_{i}", len(x)))
    test = _unpickle(get("test_batch"), f"{where}: test_batch")
    x_te = _batch_images(test, "test_batch")
    return Dataset(
        name="cifar10",
        spec=spec,
        checksum="",
        x_train=np.concatenate(xs),
        y_train=np.concatenate(ys),
        x_test=x_te,
        y_test=_labels(test, b"labels", "test_batch", len(x_te)),
        class_names=_names(meta, b"label_names", "batches.meta"),
        info={"source": where, "format": "official CIFAR-10 python version"},
    )


# --------------------------------------------------------------------------- archive safety


def _tar_kind(m: tarfile.TarInfo) -> str:
    if m.isfile():
        return "file"
    if m.isdir():
        return "dir"
    if m.issym() or m.islnk():
        return "link"
    return "device"


def _check_member(name: str, kind: str, archive: Path) -> None:
    """Refuse members that could escape their folder or are not plain files/folders."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise UnsafeInputError(f"{archive}: member '{name}' points outside the archive's folder")
    if kind == "link":
        raise UnsafeInputError(f"{archive}: member '{name}' is a link; links are refused")
    if kind == "device":
        raise UnsafeInputError(f"{archive}: member '{name}' is a device or special file")


def _iter_archive_files(path: Path) -> Iterator[tuple[str, bytes]]:
    """(posix path, bytes) of every regular file in a folder, .tar(.gz) or .zip, checked."""
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            rel = p.relative_to(path).as_posix()
            if p.is_symlink():
                raise UnsafeInputError(f"{path}: '{rel}' is a symbolic link; links are refused")
            if p.is_file():
                yield rel, p.read_bytes()
        return
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    mode = (info.external_attr >> 16) & 0o170000
                    kind = "dir" if info.is_dir() else "link" if mode == 0o120000 else "file"
                    if mode not in (0, 0o100000, 0o040000, 0o120000):
                        kind = "device"
                    _check_member(info.filename, kind, path)
                    if kind == "file":
                        yield info.filename, zf.read(info)
            return
        if tarfile.is_tarfile(path):
            with tarfile.open(path, "r:*") as tar:
                for m in tar:
                    _check_member(m.name, _tar_kind(m), path)
                    if m.isfile():
                        yield m.name, tar.extractfile(m).read()
            return
    except UnsafeInputError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: truncated or damaged archive ({exc})") from None
    raise DataError(
        f"{path}: not a folder, .tar.gz or .zip (or a damaged one); expected an image folder "
        "(train/<class>/*, test/<class>/*) or an official CIFAR archive"
    )


# --------------------------------------------------------------------------- images


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
    except UnidentifiedImageError as exc:
        raise DataError(f"{what}: not a readable image ({exc})") from None
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


def _read_image_folder(path: Path, spec: str, progress: bool) -> Dataset:
    splits: dict[str, dict[str, list[tuple[str, bytes]]]] = {"train": {}, "test": {}}
    class_dirs: dict[str, set[str]] = {"train": set(), "test": set()}
    prefix: tuple[str, ...] | None = None
    not_images: list[str] = []
    for name, data in _iter_archive_files(path):
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
    return Dataset(
        name=_folder_name(path),
        spec=spec,
        checksum="",
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


# --------------------------------------------------------------------------- helpers


def _folder_name(path: Path) -> str:
    return (
        path.name.removesuffix(".gz").removesuffix(".tgz").removesuffix(".tar").removesuffix(".zip")
    )


class atomic_path:
    """Context manager yielding a temporary path that replaces ``target`` only on success.

    A crash or error leaves ``target`` untouched (old version or absent), never half-written.
    """

    def __init__(self, target: str | Path):
        self.target = Path(target)

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            # keep the full suffix: Keras insists on names ending in .keras / .weights.h5
            prefix=f".{self.target.name}.",
            suffix=".part" + "".join(self.target.suffixes[-2:]),
            dir=self.target.parent,
        )
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            with open(self.tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(self.tmp, self.target)
        else:
            self.tmp.unlink(missing_ok=True)


def _progress(total, desc, unit, enabled=True, **kw):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False, **kw)
