"""Data: from a dataset spec string to uint8 arrays, the stratified split and its statistics.

One spec string selects a dataset:

- ``cifar100`` (default) or ``cifar10``: the official python-version archives, or their
  extracted folders, found or downloaded by cifarlab.data.archives;
- a path to an official archive (``.../cifar-100-python.tar.gz``) or extracted folder;
- a path to an image-folder dataset (cifarlab.data.images): a folder, ``.tar.gz`` or ``.zip``
  holding ``train/<class>/*`` and ``test/<class>/*``.

Decoded arrays are cached as uint8 ``.npz`` keyed by the source's sha256, so a second
load does not decode 60,000 JPEG files again. :func:`prepare` makes the protocol's
split (stratified, seeded, test untouched) and the training split's channel statistics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cifarlab.data import archives, images
from cifarlab.errors import DataError
from cifarlab.layout import atomic_path


def cache_dir() -> Path:
    """Where decoded uint8 arrays (and test-split predictions) are cached."""
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


def prepare(dataset, cfg, seed: int, progress: bool = True):
    """Load, split (stratified, seeded) and fill the config's data statistics.

    ``cfg.dataset_limit`` samples the dataset's training images before the split;
    ``cfg.train_subset`` trains on part of the training split, validation unchanged.
    Returns ``(dataset, split, cfg)`` with ``cfg.stats`` set: the mean and std of the
    training split (never validation's or test's) and the number of classes.
    """
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, progress=progress)
    split = split_train_val(ds, cfg.val_fraction, seed, limit=cfg.dataset_limit)
    if cfg.train_subset and cfg.train_subset < len(split.y_train):
        x_sub, y_sub = stratified_subset(split.x_train, split.y_train, cfg.train_subset, seed)
        split = dataclasses.replace(split, x_train=x_sub, y_train=y_sub)
    mean, std = channel_stats(split.x_train)
    cfg = cfg.with_stats(mean.round(4).tolist(), std.round(4).tolist(), ds.num_classes)
    return ds, split, cfg


# --------------------------------------------------------------------------- loading


def dataset_path(spec: str) -> Path | None:
    """The existing file or folder a dataset spec names; None for an official dataset's
    name (cifar100, cifar10); one clear error for a path that does not exist."""
    spec = str(spec).strip()
    if not spec:
        raise DataError("empty dataset spec: use cifar100, cifar10, or a path")
    if spec.lower() in archives.OFFICIAL_ARCHIVES:
        return None
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
    return path


def load_dataset(
    spec: str = "cifar100", *, use_cache: bool = True, progress: bool = True
) -> Dataset:
    """Load the dataset named by ``spec`` (see the module docstring).

    Args:
        spec: ``cifar100``, ``cifar10``, an official archive or folder, or an image
            folder / ``.tar.gz`` / ``.zip`` with ``train/<class>/*`` and ``test/<class>/*``.
        use_cache: read (and write) the decoded arrays under :func:`cache_dir`.
        progress: progress bars while downloading and decoding.

    Returns:
        The Dataset: uint8 images, labels, class names, checksum.
    """
    path = dataset_path(spec)
    spec = str(spec).strip()
    if path is None:
        key = spec.lower()
        source = archives.find_or_download(key, progress=progress)
        if source.is_dir():
            return _cached(
                source, spec, lambda: archives.read_official_folder(source, key), use_cache
            )
        return _cached(source, spec, lambda: archives.read_official_archive(source), use_cache)
    if path.is_dir():
        kind = archives.official_kind_of_folder(path)
        if kind:
            return _cached(path, spec, lambda: archives.read_official_folder(path, kind), use_cache)
        return _cached(path, spec, lambda: images.read_image_folder(path, progress), use_cache)
    if archives.official_kind_of_archive(path):
        return _cached(path, spec, lambda: archives.read_official_archive(path), use_cache)
    return _cached(path, spec, lambda: images.read_image_folder(path, progress), use_cache)


def _cached(source: Path, spec: str, read, use_cache: bool) -> Dataset:
    checksum = source_checksum(source)
    cache = cache_dir() / f"{checksum[:32]}-v{images.CONVERSION_VERSION}.npz"
    if use_cache and cache.exists():
        try:
            return _load_cache(cache, spec, checksum)
        except Exception:  # a damaged cache is rebuilt, never trusted
            warnings.warn(f"ignoring unreadable cache {cache}", stacklevel=2)
    ds = Dataset(spec=spec, checksum=checksum, **read())
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
            name=meta["name"]
            if meta["name"] in archives.OFFICIAL_ARCHIVES
            else images.folder_name(Path(spec)),
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
        return archives.file_digest(path, "sha256")
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):  # folders too: an empty class folder is part of the source
        h.update(p.relative_to(path).as_posix().encode() + (b"/\0" if p.is_dir() else b"\0"))
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()
