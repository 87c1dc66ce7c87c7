"""Shared fixtures: archives in the official CIFAR layout, image folders, the real data."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(
    os.environ.get("CIFARLAB_REAL_DATA", ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz")
)

# Property-based tests: 100 examples each in `make test`; HYPOTHESIS_PROFILE=thorough
# runs 2,000 (a few minutes more) before a release.
settings.register_profile("default", max_examples=100, deadline=None)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config, items):
    """`make test` runs on two workers (pytest-xdist, --dist loadgroup). The smoke series
    is a session fixture that takes minutes: every test that uses it joins one group, so
    one worker runs the series once while the other takes the rest of the suite."""
    for item in items:
        if "series" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("series"))


@pytest.hookimpl(trylast=True)  # after xdist has read the marks
def pytest_collection_finish(session):
    """Fail loudly, not slowly: were the group ignored (pytest-xdist's loadgroup with
    pytest >= 9.2, pytest-dev/pytest-xdist#1386), each worker would run the series."""
    if os.environ.get("PYTEST_XDIST_WORKER") and session.config.getoption("loadgroup", False):
        grouped = [i for i in session.items if "series" in i.fixturenames]
        if grouped and not all(i.nodeid.endswith("@series") for i in grouped):
            raise pytest.UsageError(
                "pytest-xdist's --dist loadgroup is not grouping the series' tests with this "
                "pytest (pytest-dev/pytest-xdist#1386): install pytest<9.2 (make setup does)"
            )


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    """Never touch the user's ~/.keras or ~/.cache, never download in tests."""
    monkeypatch.setenv("CIFARLAB_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("CIFARLAB_DATA_DIR", str(tmp_path_factory.getbasetemp() / "empty-data-dir"))
    monkeypatch.setenv("CIFARLAB_NO_DOWNLOAD", "1")


@pytest.fixture(autouse=True)
def _float32_policy_after_each_test():
    """A test that trains under a mixed precision leaves Keras' global dtype policy set;
    the next test on the same worker must not inherit it (which test follows which
    depends on how xdist shares the tests out)."""
    yield
    import sys

    if "keras" in sys.modules:
        sys.modules["keras"].config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not REAL_DATA.is_file():
        pytest.skip(f"real CIFAR-10 JPEG archive not present at {REAL_DATA}")
    return REAL_DATA


#: The Keras backends installed here (the tests of backend-agnostic code run on each).
BACKENDS = [
    b
    for b, mod in (("tensorflow", "tensorflow"), ("torch", "torch"), ("jax", "jax"))
    if __import__("importlib").util.find_spec(mod)
]


def python_with(code: str, backend: str | None = None, timeout: int = 300, **env: str):
    """Run ``code`` (dedented) in a fresh Python process, under KERAS_BACKEND=``backend``
    when given: a backend is chosen once per process."""
    import subprocess
    import sys
    import textwrap

    if backend:
        env["KERAS_BACKEND"] = backend
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )


def _rows(images: np.ndarray) -> np.ndarray:
    """NHWC uint8 -> the published row layout: 1024 R, 1024 G, 1024 B per row."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def random_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def make_cifar100_archive(path: Path, n_train=200, n_test=100, seed=0, extra=None) -> dict:
    """Write cifar-100-python.tar.gz exactly as published (pickled dicts, bytes keys)."""
    rng = np.random.default_rng(seed)
    fine_names = [f"fine{i:02d}".encode() for i in range(100)]
    coarse_names = [f"coarse{i:02d}".encode() for i in range(20)]
    out = {}
    payload = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = random_images(n, seed + len(split))
        fine = rng.integers(0, 100, n)
        fine[:100] = np.arange(100)  # every class present
        coarse = fine // 5
        payload[split] = pickle.dumps(
            {
                b"filenames": [f"img{i}.png".encode() for i in range(n)],
                b"batch_label": f"{split} batch".encode(),
                b"fine_labels": fine.tolist(),
                b"coarse_labels": coarse.tolist(),
                b"data": _rows(x),
            },
            protocol=2,
        )
        out[split] = (x, fine, coarse)
    payload["meta"] = pickle.dumps(
        {b"fine_label_names": fine_names, b"coarse_label_names": coarse_names}, protocol=2
    )
    if extra:
        payload.update(extra)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in payload.items():
            _add(tar, f"cifar-100-python/{name}", data)
    out["md5"] = hashlib.md5(path.read_bytes()).hexdigest()
    return out


def make_cifar10_archive(path: Path, per_batch=30, n_test=40, seed=0) -> dict:
    out = {"train": []}
    with tarfile.open(path, "w:gz") as tar:
        for i in range(1, 6):
            x = random_images(per_batch, seed + i)
            y = (np.arange(per_batch) + i) % 10
            _add(
                tar,
                f"cifar-10-batches-py/data_batch_{i}",
                pickle.dumps(
                    {
                        b"batch_label": b"b",
                        b"labels": y.tolist(),
                        b"data": _rows(x),
                        b"filenames": [b"f"] * per_batch,
                    },
                    protocol=2,
                ),
            )
            out["train"].append((x, y))
        x = random_images(n_test, seed + 99)
        y = np.arange(n_test) % 10
        _add(
            tar,
            "cifar-10-batches-py/test_batch",
            pickle.dumps(
                {
                    b"batch_label": b"t",
                    b"labels": y.tolist(),
                    b"data": _rows(x),
                    b"filenames": [b"f"] * n_test,
                },
                protocol=2,
            ),
        )
        out["test"] = (x, y)
        _add(
            tar,
            "cifar-10-batches-py/batches.meta",
            pickle.dumps(
                {
                    b"label_names": [f"c{i}".encode() for i in range(10)],
                    b"num_cases_per_batch": per_batch,
                    b"num_vis": 3072,
                },
                protocol=2,
            ),
        )
    out["md5"] = hashlib.md5(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def official_md5(monkeypatch):
    """Swap the published md5 table for the test's own archives."""
    from cifarlab.data import archives

    table = {k: dict(v) for k, v in archives.OFFICIAL_ARCHIVES.items()}
    monkeypatch.setattr(archives, "OFFICIAL_ARCHIVES", table)

    def set_md5(key: str, md5: str) -> None:
        table[key]["md5"] = md5

    return set_md5


def make_image_folder(
    root: Path,
    classes=("cat", "dog", "eel"),
    n_train=6,
    n_test=3,
    fmt="PNG",
    size=(32, 32),
    mode="RGB",
    seed=0,
) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(arr).convert(mode).save(d / f"{i}.{fmt.lower()}", fmt)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 10-class image-folder archive the tests build: 40 train + 10 test PNGs a class.
    Enough for the mechanics of training (resume, interrupt, search); says nothing of
    accuracy."""
    root = tmp_path_factory.mktemp("tiny") / "tiny"
    make_image_folder(root, classes=[f"c{i}" for i in range(10)], n_train=40, n_test=10)
    archive = root.parent / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="tiny")
    return archive


@pytest.fixture(scope="session")
def series(tmp_path_factory):
    """The smoke series on real CIFAR-10 images, run once per session the way `make run`
    runs it: the four notebooks executed in order (cifarlab notebooks)."""
    import subprocess
    import sys

    if not REAL_DATA.is_file():
        pytest.skip(f"real CIFAR-10 JPEG archive not present at {REAL_DATA}")
    out = tmp_path_factory.mktemp("series")
    env = {
        **os.environ,
        "CIFARLAB_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "cache"),
        "CIFARLAB_NO_DOWNLOAD": "1",
    }
    cmd = [sys.executable, "-m", "cifarlab", "notebooks", "--dataset", str(REAL_DATA),
           "--profile", "smoke", "--out", str(out), "--vgg16-weights", "offline", "--quiet"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return {"out": out, "data": REAL_DATA, "env": env, "log": r.stdout, "stderr": r.stderr}
