"""The evidence and the artifacts of a trained model.

Every saved model comes with what produced it: the config, the dataset's checksum and
class names, the seed, the backend, the package versions, the hardware and the wall
time (``<model>.json``), and its history, one record per epoch (``<model>.npy``, a
structured array that loads without pickle). :func:`write_artifacts` writes the
history first and the metadata last, each atomically, so a complete JSON means a
complete set.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

import keras
import numpy as np

from cifarlab.config import TrainConfig
from cifarlab.data.datasets import Dataset
from cifarlab.hardware import accelerator, cpu_name, has_gpu
from cifarlab.layout import Layout, atomic_path, layout, write_json

PACKAGES = ("keras", "tensorflow", "jax", "torch", "numpy", "keras-tuner")


def environment() -> dict:
    """Backend, versions and hardware: part of every result's evidence."""
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return {
        "backend": keras.backend.backend(),
        "versions": versions,
        "hardware": {
            "machine": platform.machine(),
            "processor": cpu_name(),
            "cpu_count": os.cpu_count(),
            "gpu": has_gpu(),
            # what decided the `auto` precision (cifarlab.hardware.auto_precision)
            "accelerator": accelerator(keras.backend.backend()),
            "platform": platform.platform(),
        },
    }


def history_array(records: list[dict]) -> np.ndarray:
    """Records -> a structured array (epoch, phase, every metric, learning_rate)."""
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in keys]
    dtype = [(k, "i4" if k in ("epoch", "phase") else "f8") for k in keys]
    arr = np.zeros(len(records), dtype=dtype)
    for i, r in enumerate(records):
        for k in keys:
            arr[i][k] = r.get(k, -1 if k in ("epoch", "phase") else np.nan)
    return arr


def write_artifacts(
    model: keras.Model,
    name: str,
    out: Layout,
    cfg: TrainConfig,
    ds: Dataset,
    records: list[dict],
    seed: int,
    wall: float,
    extra: dict | None = None,
) -> dict:
    """Save the history, the model and its metadata; returns the metadata."""
    hist = history_array(records)
    best_val = (
        float(np.nanmax(hist["val_accuracy"]))
        if "val_accuracy" in (hist.dtype.names or ()) and len(hist)
        else None
    )
    last = records[-1] if records else {}
    meta = {
        "name": name,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "config": cfg.to_dict(),
        "dataset": {
            "spec": ds.spec,
            "name": ds.name,
            "sha256": ds.checksum,
            "resolved": str(Path(ds.spec).resolve()) if Path(ds.spec).exists() else ds.spec,
            "num_classes": ds.num_classes,
            "has_coarse": ds.has_coarse,
        },
        "class_names": ds.class_names,
        "coarse_names": ds.coarse_names,
        "fine_to_coarse": ds.fine_to_coarse.tolist() if ds.has_coarse else None,
        "seed": seed,
        **environment(),
        "wall_time_s": round(wall, 1),
        "epochs_run": len(records),
        "epochs_planned": cfg.epochs,
        "best_val_accuracy": best_val,
        "final_train_accuracy": last.get("accuracy"),
        "final_val_accuracy": last.get("val_accuracy"),
        "params": int(model.count_params()),
        **(extra or {}),
    }
    meta["kept_val_accuracy"] = kept_val_accuracy(records, meta.get("restored_best_weights"))
    with atomic_path(out.history(name)) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, hist, allow_pickle=False)
    with atomic_path(out.model(name)) as tmp:
        model_for_saving(model, cfg).save(str(tmp))
    write_json(out.meta(name), meta, indent=2, default=_json_default)
    return meta


def kept_val_accuracy(records: list[dict], restored: bool | None) -> float | None:
    """The validation accuracy of the weights saved: the best epoch of the last phase
    where its best weights were restored (VGG16 restores each phase's), else the last
    epoch's."""
    if not records:
        return None
    phase = [r for r in records if r.get("phase") == records[-1].get("phase")]
    scores = [r["val_accuracy"] for r in (phase if restored else phase[-1:]) if "val_accuracy" in r]
    return float(max(scores)) if scores else None


def inference_in_float32(model: keras.Model) -> keras.Model:
    """Set every layer's dtype policy to float32 (nested models included), so that the
    saved model predicts in float32 on every backend whatever precision it trained in:
    mixed precision is a training choice. The variables are float32 under a mixed policy
    already; only the computation changes."""
    stack = [model]
    while stack:
        layer = stack.pop()
        if layer.dtype_policy.name != "float32":
            layer.dtype_policy = "float32"
        stack.extend(getattr(layer, "layers", []))
    return model


def model_for_saving(model: keras.Model, cfg: TrainConfig) -> keras.Model:
    """What is saved: the model computing in float32, without its optimizer (which may
    be cifarlab's own: plain Keras must load the file), wrapped with test-time views
    when ``cfg.tta_flip`` or ``cfg.tta_shift`` (so plain Keras predicts the reported
    figure, cifarlab.models.tta)."""
    from cifarlab.models import tta

    model = inference_in_float32(model)
    model = keras.Model(model.input, model.output, name=model.name)  # the same, uncompiled
    if cfg.tta_flip or cfg.tta_shift:
        return tta.wrap(model, flip=cfg.tta_flip, shift=cfg.tta_shift)
    return model


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def summary_table(out, names=None):
    """What each saved model's metadata says: size, epochs, time, validation accuracy."""
    import pandas as pd

    from cifarlab.config import MODELS

    out = layout(out)
    rows = []
    for n in names or MODELS:
        m = json.loads(out.meta(n).read_text())
        rows.append(
            {
                "model": n,
                "params": m["params"],
                "epochs": m["epochs_run"],
                "train_time_s": m["wall_time_s"],
                "best_val_accuracy": m["best_val_accuracy"],
                "final_train_accuracy": m["final_train_accuracy"],
                "weights": m.get("weights_source", "trained from scratch"),
                "backend": m["backend"],
            }
        )
    return pd.DataFrame(rows)
