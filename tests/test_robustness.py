"""Robustness: killed runs, Ctrl-C, a failing disk, untrusted files, bad input everywhere.

The property-based tests feed generated inputs (100 each; HYPOTHESIS_PROFILE=thorough:
2,000) to the image conversion and the dataset-spec parser and accept only the
documented error type (DataError). The faults during training run on a small dataset
the tests build (conftest's ``tiny_data``), so they run on any clone.
"""

from __future__ import annotations

import io
import json
import os
import random
import resource
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_train import RUNNER, _epochs_done, _kill_after, _train_cmd

from cifarlab import data
from cifarlab.data import images
from cifarlab.errors import DataError

# ----------------------------------------------------------------- property-based


@given(st.binary(max_size=2048))
def test_any_bytes_decode_to_an_image_or_raise_data_error(blob):
    try:
        arr = images.image_to_array(blob)
    except DataError:
        return
    assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8


_FORMATS = {
    "L": ["PNG", "JPEG", "BMP", "GIF"],
    "RGB": ["PNG", "JPEG", "BMP", "WEBP"],
    "RGBA": ["PNG", "WEBP"],
    "LA": ["PNG"],
    "P": ["PNG", "GIF"],
    "1": ["PNG", "BMP"],
    "I;16": ["PNG"],
    "CMYK": ["JPEG"],
}


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(sorted(_FORMATS)),
    w=st.integers(1, 200),
    h=st.integers(1, 200),
    seed=st.integers(0, 2**16),
    data_=st.data(),
)
def test_every_valid_image_converts_to_32x32_rgb(mode, w, h, seed, data_):
    from PIL import Image

    fmt = data_.draw(st.sampled_from(_FORMATS[mode]))
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt)
    out = images.image_to_array(buf.getvalue())
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


@given(st.text(max_size=60))
def test_any_spec_string_loads_or_raises_data_error(spec):
    try:
        if Path(spec.strip()).expanduser().exists():
            return  # an existing path (".", "/") is a real dataset request, not a parse case
    except (RuntimeError, ValueError, OSError):
        pass
    with pytest.raises(DataError):
        data.load_dataset(spec, progress=False)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=4096), suffix=st.sampled_from([".tar.gz", ".zip", ".tar", ""]))
def test_any_file_given_as_dataset_raises_only_data_error(tmp_path, blob, suffix):
    f = tmp_path / f"d{suffix}"
    f.write_bytes(blob)
    with pytest.raises(DataError):
        data.load_dataset(str(f), progress=False, use_cache=False)


# ----------------------------------------------------------------- untrusted models


def _unknown_class_model(tmp_path: Path) -> Path:
    """A valid .keras file whose config names a class that does not exist."""
    import keras

    inp = keras.Input((32, 32, 3))
    model = keras.Model(
        inp, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inp))
    )
    good = tmp_path / "good.keras"
    model.save(good)
    bad = tmp_path / "unknown.keras"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            blob = zin.read(item)
            if item.filename == "config.json":
                cfg = json.loads(blob)
                layer = cfg["config"]["layers"][-1]
                layer["class_name"], layer["module"] = "Backdoor", "evil.layers"
                blob = json.dumps(cfg).encode()
            zout.writestr(item, blob)
    (tmp_path / "unknown.json").write_text(
        json.dumps({"class_names": list("abcdefghij"), "config": {}})
    )
    return bad


def test_model_with_an_unknown_class_is_refused(tmp_path):
    from cifarlab.errors import CifarlabError
    from cifarlab.evaluation.inference import load_model

    with pytest.raises(CifarlabError, match="refused to load .*unknown class"):
        load_model(_unknown_class_model(tmp_path))


def test_model_with_a_lambda_layer_is_refused_in_safe_mode(tmp_path):
    import keras

    from cifarlab.errors import CifarlabError
    from cifarlab.evaluation.inference import load_model

    inp = keras.Input((4,))
    keras.Model(inp, keras.layers.Lambda(lambda t: t + 1)(inp)).save(tmp_path / "l.keras")
    (tmp_path / "l.json").write_text("{}")
    with pytest.raises(CifarlabError, match="Lambda"):
        load_model(tmp_path / "l.keras")


# ----------------------------------------------------------------- bad input, one line each


def _cli(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "cifarlab", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "img.png").write_bytes(b"")
    from PIL import Image

    Image.new("RGB", (40, 30)).save(tmp_path / "ok.png")
    return tmp_path


BAD = {
    "unknown model": (["train", "resnet"], "unknown model"),
    "unknown profile": (["train", "baseline", "--profile", "turbo"], "unknown profile"),
    "missing dataset": (
        ["train", "baseline", "--dataset", "{t}/nope", "--profile", "smoke"],
        "not found",
    ),
    "empty folder": (["data", "info", "--dataset", "{t}/empty"], "train/<class>"),
    "no saved models": (["evaluate", "--out", "{t}/empty"], "no saved models"),
    "missing model": (["predict", "{t}/ok.png", "--model", "{t}/none.keras"], "not found"),
    "unreadable image": (
        ["predict", "{t}/corrupt.jpg", "--model", "{t}/none.keras"],
        "corrupt.jpg",
    ),
    "empty image file": (["predict", "{t}/img.png", "--model", "{t}/none.keras"], "img.png"),
    "bad epochs": (
        ["train", "baseline", "--epochs", "0", "--profile", "smoke", "--dataset", "{t}/nope"],
        "--epochs",
    ),
    "bad weights file": (
        [
            "train",
            "vgg16",
            "--vgg16-weights",
            "{t}/w.h5",
            "--profile",
            "smoke",
            "--dataset",
            "{t}/nope",
        ],
        "not found",
    ),
    "bad top-k": (["predict", "{t}/ok.png", "--model", "{t}/none.keras", "--top-k", "0"], "top-k"),
    "non-integer seed": (["train", "baseline", "--seed", "abc"], "invalid int"),
    "unknown command": (["fly"], "invalid choice"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_clear_line_without_traceback(bad_inputs, case):
    args, expected = BAD[case]
    r = _cli(*[a.format(t=bad_inputs) for a in args])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode != 0
    assert len(lines) == 1, r.stderr
    assert expected in lines[0] and "Traceback" not in r.stderr


@pytest.mark.parametrize("case", sorted(set(BAD) - {"non-integer seed", "unknown command"}))
def test_a_mistake_is_answered_before_the_backend_loads(bad_inputs, case, monkeypatch, capsys):
    """Keras takes seconds to start: none of these mistakes waits for it."""
    from cifarlab import cli

    def no_backend():
        raise AssertionError("the backend was loaded before the mistake was found")

    monkeypatch.setattr(cli, "_load_backend", no_backend)
    args, expected = BAD[case]
    assert cli.main([a.format(t=bad_inputs) for a in args]) == 2
    assert expected in capsys.readouterr().err


def test_predict_on_an_unknown_class_model_is_refused_on_the_command_line(tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    r = _cli("predict", tmp_path / "a.png", "--model", _unknown_class_model(tmp_path))
    assert r.returncode == 2 and "refused" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------- faults during training


def _train(out: Path, dataset: Path, epochs: int, model: str = "baseline", **popen):
    cmd = _train_cmd(out, dataset, epochs, model)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_repeated_sigkill_at_different_points_then_resume_gives_every_epoch_once(
    tmp_path, tiny_data
):
    out = tmp_path / "o"
    rng = random.Random(7)
    for done in (1, 3, 5):  # a later epoch each time, at a random instant within it
        _kill_after(out, tiny_data, 10, done=done + rng.choice([0, 0, 1]))
        assert not (out / "saved_models" / f"{RUNNER}.keras").exists()  # nothing final yet
    killed_at = _epochs_done(out)
    assert 5 <= killed_at < 10
    proc = _train(out, tiny_data, 10, RUNNER)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    assert f"resuming {RUNNER} after epoch {killed_at}" in stdout
    hist = np.load(out / "histories" / f"{RUNNER}.npy", allow_pickle=False)
    assert hist["epoch"].tolist() == list(range(1, 11))  # every epoch exactly once
    assert not (out / "runs" / RUNNER).exists()  # the resumable state is cleaned up
    import keras

    keras.saving.load_model(out / "saved_models" / f"{RUNNER}.keras")


def test_ctrl_c_exits_130_says_how_to_resume_and_the_run_resumes_with_every_epoch_once(
    tmp_path, tiny_data
):
    out = tmp_path / "o"
    code, _, stderr = _kill_after(out, tiny_data, 12, done=1, sig=signal.SIGINT)
    assert code == 130 and "run the same command again to resume" in stderr, (code, stderr)
    assert "Traceback" not in stderr
    done = _epochs_done(out)
    assert done >= 1
    proc = _train(out, tiny_data, 12, RUNNER)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0 and f"resuming {RUNNER} after epoch {done}" in stdout, stderr
    hist = np.load(out / "histories" / f"{RUNNER}.npy", allow_pickle=False)
    assert hist["epoch"].tolist() == list(range(1, 13))


def test_a_failing_disk_leaves_no_partial_file_under_a_final_name(tmp_path, tiny_data):
    """Writes beyond 3 MB fail (RLIMIT_FSIZE, as a full disk would): the error is one
    line, and no damaged file sits under a name that is read later."""
    out = tmp_path / "o"
    data.load_dataset(str(tiny_data), progress=False)

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3_000_000, 3_000_000))

    proc = _train(out, tiny_data, 2, preexec_fn=limit)
    _, stderr = proc.communicate(timeout=300)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, stderr[-2000:]
    assert "cannot read or write" in lines[0] and "Traceback" not in stderr
    assert not (out / "saved_models" / "baseline.keras").exists()
    leftovers = [p for p in out.rglob("*") if p.is_file() and p.suffix == ".h5"]
    assert leftovers == [], leftovers
    assert not list(out.rglob("*.part*"))


def test_two_trainings_with_the_same_seed_give_identical_histories(tmp_path, tiny_data):
    hists = []
    for run in ("a", "b"):
        proc = _train(tmp_path / run, tiny_data, 2)
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-2000:]
        hists.append(np.load(tmp_path / run / "histories" / "baseline.npy", allow_pickle=False))
    for field in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_array_equal(hists[0][field], hists[1][field])
