"""Official CIFAR archives: find or download, verify, and read without trusting them.

The python-version archives are looked up in ``CIFARLAB_DATA_DIR`` (default
``~/.keras/datasets``, the Keras cache, so an existing Keras download is reused), as the
archive or as its extracted folder, and downloaded from the official URL only when
absent (never when ``CIFARLAB_NO_DOWNLOAD`` is set).

Safety: the published md5 of an archive is checked before anything in it is
unpickled, and unpickling only admits the numpy types the archives use. Archives are
never extracted to disk; every member is read in memory after it passes
:func:`check_member` (no absolute paths, no ``..``, no links, no devices), so nothing
can be written outside a folder. :func:`iter_archive_files` gives the same guarantees
to image-folder archives (cifarlab.data.images).

Readers return the dataset's fields as a dict; cifarlab.data wraps them in a Dataset.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from cifarlab.errors import DataError, UnsafeInputError
from cifarlab.layout import atomic_path

IMAGE_SIZE = 32

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


def file_digest(path: str | Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def file_md5(path: Path) -> str:
    return file_digest(path, "md5")


# --------------------------------------------------------------------------- official CIFAR


def find_or_download(key: str, progress: bool) -> Path:
    entry = OFFICIAL_ARCHIVES[key]
    root = data_dir()
    archive = root / entry["filename"]
    if archive.is_file():
        return archive
    # Keras' own download (keras.datasets.cifar100) may have left the extracted folder.
    for folder in (root / entry["folder"], root / f"{entry['folder']}_extracted" / entry["folder"]):
        if folder.is_dir() and official_kind_of_folder(folder) == key:
            return folder
    return _download(entry, archive, progress)


def _download(entry: dict, target: Path, progress: bool) -> Path:
    hint = (
        f"put {entry['filename']} or its extracted {entry['folder']}/ folder in "
        f"{target.parent} (or set CIFARLAB_DATA_DIR to their folder), or pass "
        f"--dataset /path/to/{entry['filename']}"
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


def official_kind_of_archive(path: Path) -> str | None:
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


def official_kind_of_folder(path: Path) -> str | None:
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


def read_official_archive(path: Path) -> dict:
    kind = official_kind_of_archive(path)
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
                check_member(m.name, _tar_kind(m), path)
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

    ds = _parse_official(kind, get, str(path))
    ds["info"]["md5"] = md5
    ds["info"]["md5_verified"] = True
    return ds


def read_official_folder(path: Path, kind: str) -> dict:
    def get(name: str) -> bytes:
        f = path / name
        if not f.is_file():
            raise DataError(f"{path}: missing {name}")
        return f.read_bytes()

    ds = _parse_official(kind, get, str(path))
    ds["info"]["md5_verified"] = False
    ds["info"]["note"] = (
        "read from an extracted folder: archive md5 not verifiable; numpy-only unpickler"
    )
    return ds


def _parse_official(kind: str, get, where: str) -> dict:
    if kind == "cifar100":
        meta = _unpickle(get("meta"), f"{where}: meta")
        train = _unpickle(get("train"), f"{where}: train")
        test = _unpickle(get("test"), f"{where}: test")
        x_tr, x_te = _batch_images(train, "train"), _batch_images(test, "test")
        return dict(
            name="cifar100",
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
    return dict(
        name="cifar10",
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


def check_member(name: str, kind: str, archive: Path) -> None:
    """Refuse members that could escape their folder or are not plain files/folders."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise UnsafeInputError(f"{archive}: member '{name}' points outside the archive's folder")
    if kind == "link":
        raise UnsafeInputError(f"{archive}: member '{name}' is a link; links are refused")
    if kind == "device":
        raise UnsafeInputError(f"{archive}: member '{name}' is a device or special file")


def iter_archive_files(path: Path) -> Iterator[tuple[str, bytes]]:
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
                    check_member(info.filename, kind, path)
                    if kind == "file":
                        yield info.filename, zf.read(info)
            return
        if tarfile.is_tarfile(path):
            with tarfile.open(path, "r:*") as tar:
                for m in tar:
                    check_member(m.name, _tar_kind(m), path)
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


def _progress(total, desc, unit, enabled=True, **kw):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False, **kw)
