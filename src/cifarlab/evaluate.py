"""Evaluation of saved models on the untouched test split.

Writes under ``<out>/reports/``: ``results.csv`` and ``results.md`` (all models side by
side), ``per_class_<model>.csv`` (precision / recall / F1), ``confused_pairs_<model>.csv``,
and under ``reports/figures/`` the confusion matrices. Every number comes from
scikit-learn on the model's predicted probabilities; nothing here trains or selects.
"""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from pathlib import Path

import keras  # noqa: E402
import numpy as np
import pandas as pd

from cifarlab.data import Dataset, atomic_path, load_dataset, stratified_subset
from cifarlab.errors import CifarlabError

SERIES = ("baseline", "overfit", "tuned", "vgg16")


# --------------------------------------------------------------------------- loading


def load_model(path: str | Path) -> tuple[keras.Model, dict]:
    """Load a saved model in Keras safe mode, with the metadata JSON beside it.

    Safe mode refuses Lambda layers (arbitrary code); unknown classes are refused too.
    Both become one clear error, never a traceback.
    """
    path = Path(path)
    if not path.is_file():
        raise CifarlabError(f"model file '{path}' not found (train it with `cifarlab train`)")
    if path.suffix != ".keras":
        raise CifarlabError(f"'{path}' is not a .keras model file")
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


def saved_models(out: str | Path, models: list[str] | None = None) -> list[str]:
    folder = Path(out) / "saved_models"
    found = [m for m in SERIES if (folder / f"{m}.keras").is_file()]
    found += sorted(p.stem for p in folder.glob("*.keras") if p.stem not in SERIES)
    if models:
        missing = [m for m in models if m not in found]
        if missing:
            raise CifarlabError(f"no saved model(s) {missing} in {folder}; found {found or 'none'}")
        return list(models)
    if not found:
        raise CifarlabError(
            f"no saved models in {folder}; run `cifarlab train` or `make run` first"
        )
    return found


def dataset_for(out, dataset, names) -> Dataset:
    """The dataset the models were trained on (from their metadata) unless one is given."""
    if isinstance(dataset, Dataset):
        return dataset
    if dataset in (None, ""):
        specs = set()
        for n in names:
            d = json.loads((Path(out) / "saved_models" / f"{n}.json").read_text())["dataset"]
            specs.add(d["spec"] if Path(d["spec"]).exists() else d.get("resolved", d["spec"]))
        if len(specs) != 1:
            raise CifarlabError(
                f"models were trained on different datasets {sorted(specs)}; pass --dataset"
            )
        dataset = specs.pop()
    return load_dataset(dataset)


def test_split(ds: Dataset, meta: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The test images the model is judged on (a stratified subset on smoke runs)."""
    if meta["class_names"] != ds.class_names:
        raise CifarlabError(
            f"model '{meta['name']}' was trained on other classes ({meta['dataset']['name']}: "
            f"{meta['class_names'][:4]}...) than this dataset ({ds.name}: {ds.class_names[:4]}...)"
        )
    x, y = ds.x_test, ds.y_test
    limit = meta["config"].get("test_limit")
    if limit and limit < len(y):
        idx = np.arange(len(y))
        idx, _ = stratified_subset(idx, y, limit, meta["seed"])
        x, y = x[idx], y[idx]
    coarse = None if ds.fine_to_coarse is None else ds.fine_to_coarse[y]
    return x, y, coarse


def predict_proba(
    model, x: np.ndarray, tta_flip: bool = False, batch_size: int = 256
) -> np.ndarray:
    """Class probabilities; with ``tta_flip`` averaged over each image and its mirror."""
    p = model.predict(x, batch_size=batch_size, verbose=0)
    if tta_flip:
        p = (p + model.predict(x[:, :, ::-1], batch_size=batch_size, verbose=0)) / 2
    p = np.asarray(p, dtype=np.float64)
    return p / p.sum(axis=1, keepdims=True)  # float32 softmax sums drift from 1 by ~1e-7


# --------------------------------------------------------------------------- metrics


def metrics(
    y: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    fine_to_coarse: np.ndarray | None = None,
) -> dict:
    """Loss, top-1, top-5, per-class table and (CIFAR-100) superclass accuracy."""
    from sklearn.metrics import (
        accuracy_score,
        log_loss,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    n = len(class_names)
    labels = np.arange(n)
    pred = probs.argmax(1)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    per_class = pd.DataFrame(
        {"class": class_names, "precision": p, "recall": r, "f1": f, "support": s}
    )
    out = {
        "test_accuracy": float(accuracy_score(y, pred)),
        "top5_accuracy": float(top_k_accuracy_score(y, probs, k=min(5, n - 1), labels=labels))
        if n > 2
        else None,
        # probabilities sum to 1 (predict_proba); log_loss clips 0 and 1 itself
        "test_loss": float(log_loss(y, probs, labels=labels)),
        "per_class": per_class,
        "pred": pred,
    }
    if fine_to_coarse is not None:
        out["superclass_accuracy"] = float(accuracy_score(fine_to_coarse[y], fine_to_coarse[pred]))
    return out


def confused_pairs(y, pred, class_names, top: int = 10) -> pd.DataFrame:
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(y, pred, labels=np.arange(len(class_names)))
    np.fill_diagonal(cm, 0)
    order = np.dstack(np.unravel_index(np.argsort(-cm, axis=None), cm.shape))[0][:top]
    rows = [
        {"true": class_names[i], "predicted": class_names[j], "count": int(cm[i, j])}
        for i, j in order
        if cm[i, j] > 0
    ]
    return pd.DataFrame(rows, columns=["true", "predicted", "count"])


# --------------------------------------------------------------------------- the whole report


def evaluate_all(
    out: str | Path = ".", dataset: str | Dataset | None = None, models: list[str] | None = None
) -> pd.DataFrame:
    """Evaluate every saved model; write results.csv / results.md, per-class tables and
    confusion matrices. Returns the comparison table."""
    from cifarlab import visualize

    out = Path(out)
    names = saved_models(out, models)
    ds = dataset_for(out, dataset, names)
    reports = out / "reports"
    rows = []
    for name in names:
        model, meta = load_model(out / "saved_models" / f"{name}.keras")
        x, y, _ = test_split(ds, meta)
        probs = predict_proba(model, x, tta_flip=meta["config"].get("tta_flip", False))
        m = metrics(y, probs, ds.class_names, ds.fine_to_coarse)
        _write_csv(m["per_class"], reports / f"per_class_{name}.csv")
        _write_csv(
            confused_pairs(y, m["pred"], ds.class_names), reports / f"confused_pairs_{name}.csv"
        )
        visualize.confusion_matrices(name, y, m["pred"], ds, reports / "figures")
        cfg = meta["config"]
        rows.append(
            {
                "model": name,
                "test_accuracy": m["test_accuracy"],
                "top5_accuracy": m["top5_accuracy"],
                **(
                    {"superclass_accuracy": m["superclass_accuracy"]}
                    if "superclass_accuracy" in m
                    else {}
                ),
                "test_loss": m["test_loss"],
                "params": meta["params"],
                "epochs": meta["epochs_run"],
                "train_time_s": meta["wall_time_s"],
                "best_val_accuracy": meta["best_val_accuracy"],
                "train_val_gap": _gap(meta),
                "test_images": len(y),
                "tta_flip": bool(cfg.get("tta_flip", False)),
                "weights": meta.get("weights_source", "trained from scratch"),
                "backend": meta["backend"],
                "seed": meta["seed"],
            }
        )
    table = pd.DataFrame(rows)
    _write_csv(table, reports / "results.csv")
    with atomic_path(reports / "results.md") as tmp:
        tmp.write_text(results_markdown(table, ds, names, out))
    return table


def _gap(meta: dict) -> float | None:
    tr, va = meta.get("final_train_accuracy"), meta.get("final_val_accuracy")
    return None if tr is None or va is None else float(tr) - float(va)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def results_markdown(table: pd.DataFrame, ds: Dataset, names: list[str], out: Path) -> str:
    """The comparison as Markdown that reads on its own: what, on what, how measured."""
    meta = json.loads((out / "saved_models" / f"{names[0]}.json").read_text())
    hw = meta["hardware"]
    shown = table.copy()
    for col in (
        "test_accuracy",
        "top5_accuracy",
        "superclass_accuracy",
        "best_val_accuracy",
        "train_val_gap",
    ):
        if col in shown:
            shown[col] = shown[col].map(
                lambda v: "" if v is None or pd.isna(v) else f"{100 * v:.2f}%"
            )
    shown["test_loss"] = shown["test_loss"].map(lambda v: f"{v:.3f}")
    shown["params"] = shown["params"].map(lambda v: f"{v:,}")
    shown["train_time_s"] = shown["train_time_s"].map(lambda v: f"{v:.0f}")
    lines = [
        "# Results on the untouched test split",
        "",
        f"Dataset: **{ds.name}** (`{ds.spec}`, sha256 `{ds.checksum[:16]}`), {ds.num_classes} classes, "
        f"{len(ds.y_test):,} test images"
        + (
            f" (evaluated on a stratified subset of {int(table['test_images'].iloc[0]):,} in this profile)"
            if int(table["test_images"].iloc[0]) < len(ds.y_test)
            else ""
        )
        + ". Models selected on a stratified "
        f"{100 * (1 - meta['config']['val_fraction']):.0f}/{100 * meta['config']['val_fraction']:.0f} "
        "train/validation split of the training images; the test split was used only here.",
        "",
        f"Profile `{meta.get('profile', '?')}`, seed {meta['seed']}, backend `{meta['backend']}`, "
        f"Keras {meta['versions'].get('keras')}, on {hw['processor']} ({hw['cpu_count']} cores, "
        f"GPU: {'yes' if hw['gpu'] else 'no'}). Evaluated {dt.date.today().isoformat()}.",
        "",
        _markdown_table(shown),
        "",
        "Accuracy is the measure (the classes are balanced). top-5: the true class among the five "
        "most probable. train_val_gap: final-epoch training accuracy minus validation accuracy. "
        "tta_flip: predictions averaged over each image and its mirror image.",
    ]
    if "vgg16" in names:
        vmeta = json.loads((out / "saved_models" / "vgg16.json").read_text())
        lines += ["", f"VGG16 weights: {vmeta.get('weights_source')}."]
    return "\n".join(lines) + "\n"


def _markdown_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    rows = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        rows.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(rows)


def confused_pairs_table(out, top: int = 5) -> pd.DataFrame:
    """The most-confused class pairs of every evaluated model, side by side."""
    frames = []
    for name in saved_models(out):
        f = Path(out) / "reports" / f"confused_pairs_{name}.csv"
        if f.is_file():
            frames.append(pd.read_csv(f).head(top).assign(model=name))
    if not frames:
        raise CifarlabError(
            f"no confused-pairs tables in {Path(out) / 'reports'}; run evaluate first"
        )
    return pd.concat(frames, ignore_index=True)[["model", "true", "predicted", "count"]]


def per_class_table(out, name: str) -> pd.DataFrame:
    """Precision, recall and F1 per class of one evaluated model."""
    f = Path(out) / "reports" / f"per_class_{name}.csv"
    if not f.is_file():
        raise CifarlabError(f"{f} not found; run evaluate first")
    return pd.read_csv(f)
