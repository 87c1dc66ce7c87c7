"""The data layer: official archive formats, image folders, safety, cache and split."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_cifar10_archive, make_cifar100_archive, make_image_folder

from cifarlab import data
from cifarlab.data import archives, images
from cifarlab.errors import DataError, UnsafeInputError

# ----------------------------------------------------------------- official archives


def test_cifar100_archive_keeps_fine_coarse_labels_names_and_pixel_layout(tmp_path, official_md5):
    arc = tmp_path / "cifar-100-python.tar.gz"
    ref = make_cifar100_archive(arc)
    official_md5("cifar100", ref["md5"])
    ds = data.load_dataset(str(arc), progress=False)
    x, fine, coarse = ref["train"]
    np.testing.assert_array_equal(ds.x_train, x)  # R, G, B planes -> HWC exactly
    np.testing.assert_array_equal(ds.y_train, fine)
    np.testing.assert_array_equal(ds.coarse_train, coarse)
    np.testing.assert_array_equal(ds.x_test, ref["test"][0])
    assert ds.class_names[:2] == ["fine00", "fine01"] and len(ds.class_names) == 100
    assert len(ds.coarse_names) == 20 and ds.has_coarse
    np.testing.assert_array_equal(ds.fine_to_coarse, np.arange(100) // 5)
    assert ds.info["md5_verified"] is True


def test_cifar10_archive_concatenates_five_batches_and_has_no_coarse_labels(tmp_path, official_md5):
    arc = tmp_path / "cifar-10-python.tar.gz"
    ref = make_cifar10_archive(arc)
    official_md5("cifar10", ref["md5"])
    ds = data.load_dataset(str(arc), progress=False)
    assert ds.x_train.shape == (150, 32, 32, 3)
    np.testing.assert_array_equal(ds.x_train[30:60], ref["train"][1][0])
    np.testing.assert_array_equal(ds.y_test, ref["test"][1])
    assert ds.class_names == [f"c{i}" for i in range(10)]
    assert not ds.has_coarse and ds.fine_to_coarse is None


def test_named_spec_is_found_in_the_data_dir_without_downloading(
    tmp_path, official_md5, monkeypatch
):
    monkeypatch.setenv("CIFARLAB_DATA_DIR", str(tmp_path))
    ref = make_cifar100_archive(tmp_path / "cifar-100-python.tar.gz")
    official_md5("cifar100", ref["md5"])
    ds = data.load_dataset("cifar100", progress=False)
    assert ds.name == "cifar100" and len(ds.y_train) == 200


def test_wrong_md5_is_refused_before_anything_is_unpickled(tmp_path, official_md5):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    arc = tmp_path / "cifar-100-python.tar.gz"
    make_cifar100_archive(arc, extra={"meta": pickle.dumps(Evil(), protocol=2)})
    official_md5("cifar100", "0" * 32)
    with pytest.raises(UnsafeInputError, match="md5"):
        data.load_dataset(str(arc), progress=False)
    assert not marker.exists()


def test_pickle_with_code_is_refused_even_when_the_md5_matches(tmp_path, official_md5):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    arc = tmp_path / "cifar-100-python.tar.gz"
    ref = make_cifar100_archive(arc, extra={"meta": pickle.dumps(Evil(), protocol=2)})
    official_md5("cifar100", ref["md5"])
    with pytest.raises(
        UnsafeInputError, match="refused to unpickle posix.system|refused to unpickle"
    ):
        data.load_dataset(str(arc), progress=False)
    assert not marker.exists()


def test_truncated_official_archive_is_a_clear_error(tmp_path, official_md5):
    arc = tmp_path / "cifar-100-python.tar.gz"
    make_cifar100_archive(arc, n_train=2000)
    blob = arc.read_bytes()
    arc.write_bytes(blob[: len(blob) // 2])
    official_md5("cifar100", archives.file_md5(arc))  # even a "matching" md5 cannot save it
    with pytest.raises(DataError, match="truncated or damaged"):
        data.load_dataset(str(arc), progress=False)


def test_no_network_and_no_local_copy_says_where_to_put_the_archive(tmp_path):
    with pytest.raises(DataError) as err:
        data.load_dataset("cifar100", progress=False)
    msg = str(err.value)
    assert "cifar-100-python.tar.gz" in msg and "CIFARLAB_DATA_DIR" in msg and "\n" not in msg


def test_failed_download_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    monkeypatch.delenv("CIFARLAB_NO_DOWNLOAD")
    monkeypatch.setenv("CIFARLAB_DATA_DIR", str(tmp_path))

    def offline(*a, **k):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="cannot download .*Name or service not known"):
        data.load_dataset("cifar10", progress=False)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------- archive safety


def _tar_with(path: Path, members: list[tarfile.TarInfo], payload=b"x") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for m in members:
            if m.isfile():
                m.size = len(payload)
                tar.addfile(m, io.BytesIO(payload))
            else:
                tar.addfile(m)
    return path


@pytest.mark.parametrize("name", ["../escape.png", "/abs/train/a/1.png", "train/../../x.png"])
def test_tar_member_escaping_its_folder_is_refused(tmp_path, name):
    arc = _tar_with(tmp_path / "d.tar.gz", [tarfile.TarInfo(name)])
    with pytest.raises(UnsafeInputError, match="outside"):
        data.load_dataset(str(arc), progress=False)


def test_symlink_and_device_members_are_refused(tmp_path):
    link = tarfile.TarInfo("train/a/link.png")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(UnsafeInputError, match="link"):
        data.load_dataset(str(_tar_with(tmp_path / "l.tar.gz", [link])), progress=False)
    dev = tarfile.TarInfo("train/a/dev")
    dev.type = tarfile.CHRTYPE
    with pytest.raises(UnsafeInputError, match="device"):
        data.load_dataset(str(_tar_with(tmp_path / "d.tar.gz", [dev])), progress=False)


def test_zip_member_escaping_its_folder_is_refused(tmp_path):
    arc = tmp_path / "d.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("../../evil.png", b"x")
    with pytest.raises(UnsafeInputError, match="outside"):
        data.load_dataset(str(arc), progress=False)


# ----------------------------------------------------------------- image folders


def test_image_folder_as_folder_tar_and_zip_give_the_same_arrays(tmp_path):
    root = make_image_folder(tmp_path / "pets" / "top")
    tgz = tmp_path / "pets.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(root, arcname="top")
    zp = tmp_path / "pets.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        for p in sorted(root.rglob("*.png")):
            zf.write(p, p.relative_to(root).as_posix())
    a, b, c = (data.load_dataset(str(p), progress=False) for p in (root, tgz, zp))
    assert a.class_names == b.class_names == c.class_names == ["cat", "dog", "eel"]
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.x_train, c.x_train)
    assert a.x_train.shape == (18, 32, 32, 3) and a.x_test.shape == (9, 32, 32, 3)
    assert "no coarse" in a.info["coarse"] and "LANCZOS" in a.info["conversion"]


@pytest.mark.parametrize(
    "mode,size,fmt",
    [
        ("L", (50, 40), "PNG"),
        ("RGBA", (64, 64), "PNG"),
        ("P", (20, 33), "GIF"),
        ("RGB", (300, 200), "JPEG"),
    ],
)
def test_any_format_mode_and_size_is_converted_to_32x32_rgb(tmp_path, mode, size, fmt):
    root = make_image_folder(tmp_path / "d", mode=mode, size=size, fmt=fmt)
    ds = data.load_dataset(str(root), progress=False)
    assert ds.x_train.shape[1:] == (32, 32, 3) and ds.x_train.dtype == np.uint8


def test_32x32_rgb_png_is_kept_pixel_for_pixel(tmp_path):
    from PIL import Image

    arr = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    np.testing.assert_array_equal(images.image_to_array(buf.getvalue()), arr)


def test_transparent_pixels_become_white(tmp_path):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGBA", (32, 32), (10, 20, 30, 0)).save(buf, "PNG")
    assert (images.image_to_array(buf.getvalue()) == 255).all()


def test_empty_class_folder_is_a_clear_error(tmp_path):
    root = make_image_folder(tmp_path / "d")
    (root / "train" / "fox").mkdir()
    (root / "test" / "fox").mkdir()
    with pytest.raises(DataError, match=r"no images in train/: \['fox'\]"):
        data.load_dataset(str(root), progress=False)


def test_non_image_and_corrupt_files_are_skipped_counted_and_reported(tmp_path):
    root = make_image_folder(tmp_path / "d")
    (root / "train" / "cat" / "notes.txt").write_text("hello")
    (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "README.md").write_text("about")
    with pytest.warns(UserWarning, match="skipped 2 non-image file.* and 1 unreadable"):
        ds = data.load_dataset(str(root), progress=False)
    assert ds.info["skipped"] == {"not_images": 2, "unreadable": 1}
    assert len(ds.y_train) == 18


def test_test_classes_that_differ_from_train_classes_are_an_error(tmp_path):
    root = make_image_folder(tmp_path / "d")
    (root / "test" / "eel").rename(root / "test" / "emu")
    with pytest.raises(DataError, match=r"only in train: \['eel'\].*only in test: \['emu'\]"):
        data.load_dataset(str(root), progress=False)


def test_folder_without_train_and_test_is_an_error(tmp_path):
    (tmp_path / "d" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="train/<class>"):
        data.load_dataset(str(tmp_path / "d"), progress=False)


def test_decompression_bomb_is_refused_from_its_header(tmp_path):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buf, "PNG")  # 400 M pixels, a few kB on disk
    assert len(buf.getvalue()) < 200_000
    with pytest.raises(UnsafeInputError, match="decompression bomb"):
        images.image_to_array(buf.getvalue())


# ----------------------------------------------------------------- cache and split


def test_second_load_comes_from_the_cache_keyed_by_checksum(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE_DIR", str(tmp_path / "cache"))
    root = make_image_folder(tmp_path / "d")
    first = data.load_dataset(str(root), progress=False)
    assert "cache" not in first.info
    second = data.load_dataset(str(root), progress=False)
    assert "cache" in second.info and second.checksum == first.checksum
    np.testing.assert_array_equal(first.x_train, second.x_train)
    # a changed source is a new key: the stale arrays are not reused
    make_image_folder(root, classes=("cat",), n_train=7, seed=5)
    third = data.load_dataset(str(root), progress=False)
    assert third.checksum != first.checksum and len(third.y_train) == 19


def test_split_is_stratified_seeded_and_disjoint():
    rng = np.random.default_rng(0)
    x = np.arange(1000).reshape(1000, 1, 1, 1).astype(np.uint8).repeat(3, -1)
    y = np.repeat(np.arange(10), 100)
    ds = data.Dataset(
        "t", "t", "", np.arange(1000)[:, None], y, x[:5], y[:5], [str(i) for i in range(10)]
    )
    a = data.split_train_val(ds, seed=3)
    b = data.split_train_val(ds, seed=3)
    c = data.split_train_val(ds, seed=4)
    assert len(a.y_train) == 800 and len(a.y_val) == 200
    assert (np.bincount(a.y_val) == 20).all()
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert not np.array_equal(a.x_val, c.x_val)
    assert not set(a.x_train.ravel()) & set(a.x_val.ravel())
    del rng


def test_channel_stats_match_numpy():
    x = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    mean, std = data.channel_stats(x)
    np.testing.assert_allclose(mean, x.reshape(-1, 3).mean(0))
    np.testing.assert_allclose(std, x.reshape(-1, 3).std(0))


# ----------------------------------------------------------------- the real data


def test_real_cifar10_jpeg_archive_counts_and_shapes(real_data):
    t = time.time()
    ds = data.load_dataset(str(real_data), progress=False)
    first = time.time() - t
    assert (len(ds.y_train), len(ds.y_test)) == (50_000, 10_000)
    assert (np.bincount(ds.y_train) == 5000).all() and (np.bincount(ds.y_test) == 1000).all()
    assert ds.x_train.shape == (50_000, 32, 32, 3) and ds.x_train.dtype == np.uint8
    assert ds.class_names[:3] == ["airplane", "automobile", "bird"]
    t = time.time()
    again = data.load_dataset(str(real_data), progress=False)
    assert time.time() - t < 5 and first < 60
    split = data.split_train_val(again, seed=0)
    assert (len(split.y_train), len(split.y_val)) == (40_000, 10_000)
    assert (np.bincount(split.y_val) == 1000).all()


def test_cli_data_info_without_network_is_one_line_without_traceback(tmp_path):
    env = {**os.environ, "CIFARLAB_DATA_DIR": str(tmp_path), "CIFARLAB_NO_DOWNLOAD": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "cifarlab", "data", "info", "--dataset", "cifar100"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cifar-100-python.tar.gz" in lines[0]
