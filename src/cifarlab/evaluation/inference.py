"""Saved models in, test-split probabilities out: the one place that loads and predicts.

:func:`load_model` opens a ``.keras`` file in Keras' safe mode with its metadata;
:func:`predict_test` predicts a model's test images once (test-time flip included
when its config says so) and caches the probabilities by the model file's and the
dataset's checksums, so evaluation and the figures of one run share one prediction,
in one process or across the notebooks' kernels. Evaluation (cifarlab.evaluation.evaluate),
figures (cifarlab.evaluation.visualize) and ``cifarlab predict`` all go through here.

Keras is imported where a model is loaded, not with this module: the command line
checks model files and output folders (:func:`check_model_file`,
:func:`trained_models`) before the backend takes its seconds to start.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cifarlab.config import MODELS
from cifarlab.data.archives import file_digest
from cifarlab.data.datasets import Dataset, cache_dir, load_dataset, stratified_subset
from cifarlab.errors import CifarlabError
from cifarlab.layout import Layout, atomic_path, layout

if TYPE_CHECKING:
    import keras


def check_model_file(path: str | Path) -> Path:
    """The path of an existing ``.keras`` file, or one clear error."""
    path = Path(path)
    if not path.is_file():
        raise CifarlabError(f"model file '{path}' not found (train it with `cifarlab train`)")
    if path.suffix != ".keras":
        raise CifarlabError(f"'{path}' is not a .keras model file")
    return path


def load_model(path: str | Path) -> tuple[keras.Model, dict]:
    """Load a saved model in Keras safe mode, with the metadata JSON beside it.

    Safe mode refuses Lambda layers (arbitrary code); unknown classes are refused too.
    Both become one clear error, never a traceback.
    """
    import keras

    path = check_model_file(path)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        first = msg.strip().splitlines()[0][:160] if msg.strip() else type(exc).__name__
        if "safe_mode" in msg or "Lambda" in msg or "lambda" in msg:
            raise CifarlabError(
                f"refused to load {path}: it contains a Lambda layer (code that would run on "
                "load); only models without custom code are accepted"
            ) from None
        if "Could not locate" in msg or "Unknown" in msg or "could not be deserialized" in msg:
            raise CifarlabError(
                f"refused to load {path}: it uses an unknown class ({first})"
            ) from None
        raise CifarlabError(f"cannot load {path}: {first}") from None
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise CifarlabError(
            f"cannot load {path}: not a valid .keras file ({type(exc).__name__})"
        ) from None
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        raise CifarlabError(f"{meta_path} is missing: the class names come from it")
    return model, json.loads(meta_path.read_text())


def trained_models(out: str | Path | Layout, models: list[str] | None = None) -> list[str]:
    """The saved models under ``out``: the series' in training order, then any others."""
    out = layout(out)
    names = set(out.saved_model_names())
    found = [m for m in MODELS if m in names] + sorted(names - set(MODELS))
    if models:
        missing = [m for m in models if m not in found]
        if missing:
            raise CifarlabError(
                f"no saved model(s) {missing} in {out.models_dir}; found {found or 'none'}"
            )
        return list(models)
    if not found:
        raise CifarlabError(
            f"no saved models in {out.models_dir}; run `cifarlab train` or `make run` first"
        )
    return found


def dataset_for(out, dataset, names: list[str]) -> Dataset:
    """The dataset the models were trained on (from their metadata) unless one is given."""
    if isinstance(dataset, Dataset):
        return dataset
    if dataset in (None, ""):
        specs = set()
        for n in names:
            d = layout(out).read_meta(n)["dataset"]
            specs.add(d["spec"] if Path(d["spec"]).exists() else d.get("resolved", d["spec"]))
        if len(specs) != 1:
            raise CifarlabError(
                f"models were trained on different datasets {sorted(specs)}; pass --dataset"
            )
        dataset = specs.pop()
    return load_dataset(dataset)


def evaluation_images(ds: Dataset, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """The test images and labels a model is judged on (a stratified subset on smoke runs)."""
    if meta["class_names"] != ds.class_names:
        raise CifarlabError(
            f"model '{meta['name']}' was trained on other classes ({meta['dataset']['name']}: "
            f"{meta['class_names'][:4]}...) than this dataset ({ds.name}: {ds.class_names[:4]}...)"
        )
    x, y = ds.x_test, ds.y_test
    limit = meta["config"].get("test_limit")
    if limit and limit < len(y):
        idx, _ = stratified_subset(np.arange(len(y)), y, limit, meta["seed"])
        x, y = x[idx], y[idx]
    return x, y


def predict_proba(
    model: keras.Model, x: np.ndarray, tta_flip: bool = False, batch_size: int = 256
) -> np.ndarray:
    """Class probabilities; with ``tta_flip`` averaged over each image and its mirror
    (unless the model does that itself: cifarlab.models.tta.wrap)."""
    from cifarlab.models.tta import is_wrapped

    tta_flip = tta_flip and not is_wrapped(model)
    from cifarlab.models import quiet  # keras: imported once the command chose its backend

    p = quiet.predict(model, x, batch_size)
    if tta_flip:
        p = (p + quiet.predict(model, x[:, :, ::-1], batch_size)) / 2
    p = np.asarray(p, dtype=np.float64)
    return p / p.sum(axis=1, keepdims=True)  # float32 softmax sums drift from 1 by ~1e-7


@dataclass
class Predictions:
    """One model on its test images: the loaded model, its metadata, images, labels and
    predicted probabilities."""

    name: str
    model: keras.Model
    meta: dict
    x: np.ndarray
    y: np.ndarray
    probs: np.ndarray


def predict_test(out, name: str, ds: Dataset) -> Predictions:
    """Load ``name`` from ``out`` and predict its test images, once per model file."""
    path = layout(out).model(name)
    model, meta = load_model(path)
    x, y = evaluation_images(ds, meta)
    tta = bool(meta["config"].get("tta_flip", False))
    key = hashlib.sha256(
        json.dumps(
            [file_digest(path, "sha256"), ds.checksum, y.tolist()[:64], len(y), tta]
        ).encode()
    ).hexdigest()[:32]
    cached = cache_dir() / "predictions" / f"{key}.npy"
    probs = None
    if cached.is_file():
        try:
            probs = np.load(cached, allow_pickle=False)
        except (OSError, ValueError):
            probs = None  # a damaged cache is recomputed
    if probs is None or probs.shape != (len(y), model.output_shape[-1]):
        probs = predict_proba(model, x, tta_flip=tta)
        with atomic_path(cached) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, probs, allow_pickle=False)
    return Predictions(name, model, meta, x, y, probs)
