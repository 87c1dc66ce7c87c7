"""Evaluation of saved models on the untouched test split: metrics and tables.

Writes, where cifarlab.layout says: ``results.csv`` and ``results.md`` (all models side
by side), per-class precision / recall / F1 and the most confused class pairs of each
model. Every number comes from scikit-learn on the probabilities that
cifarlab.evaluation.inference predicted; nothing here trains or selects. The confusion-matrix
figures are cifarlab.evaluation.visualize's.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from cifarlab.data.datasets import Dataset
from cifarlab.errors import CifarlabError
from cifarlab.evaluation.inference import dataset_for, predict_test, trained_models
from cifarlab.layout import Layout, layout, write_csv, write_text

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
        {"class": class_names, "precision": p, "recall": r, "f1": f, "support": s,
         "predicted": np.bincount(pred, minlength=n)}  # how often each class is guessed
    )  # fmt: skip
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


def confused_pairs(
    y, pred, class_names, top: int = 10, fine_to_coarse=None, coarse_names=None
) -> pd.DataFrame:
    """The ``top`` most frequent (true, predicted) mistakes; with superclasses, each
    pair's superclasses and whether both classes share one."""
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(y, pred, labels=np.arange(len(class_names)))
    np.fill_diagonal(cm, 0)
    order = np.dstack(np.unravel_index(np.argsort(-cm, axis=None, kind="stable"), cm.shape))[0]
    cols = ["true", "predicted", "count"]
    rows = []
    for i, j in order[:top]:
        if cm[i, j] == 0:
            break
        row = {"true": class_names[i], "predicted": class_names[j], "count": int(cm[i, j])}
        if fine_to_coarse is not None:
            ci, cj = int(fine_to_coarse[i]), int(fine_to_coarse[j])
            row |= {
                "true_superclass": coarse_names[ci],
                "predicted_superclass": coarse_names[cj],
                "same_superclass": ci == cj,
            }
        rows.append(row)
    if fine_to_coarse is not None:
        cols += ["true_superclass", "predicted_superclass", "same_superclass"]
    return pd.DataFrame(rows, columns=cols)


def superclass_table(y, pred, fine_to_coarse, coarse_names) -> pd.DataFrame:
    """Precision, recall and F1 of each superclass, the fine predictions mapped to their
    superclass (a wrong class inside the right superclass counts as right here)."""
    from sklearn.metrics import precision_recall_fscore_support

    labels = np.arange(len(coarse_names))
    p, r, f, s = precision_recall_fscore_support(
        fine_to_coarse[y], fine_to_coarse[pred], labels=labels, zero_division=0
    )
    classes = np.bincount(fine_to_coarse, minlength=len(coarse_names))
    return pd.DataFrame(
        {"superclass": coarse_names, "classes": classes, "precision": p, "recall": r,
         "f1": f, "support": s}
    )  # fmt: skip


def within_superclass_share(pairs: pd.DataFrame) -> float | None:
    """The share of the confused pairs (weighted by count) whose classes share a
    superclass; None without superclasses."""
    if "same_superclass" not in pairs or pairs.empty:
        return None
    return float(pairs.loc[pairs["same_superclass"], "count"].sum() / pairs["count"].sum())


# --------------------------------------------------------------------------- the whole report


def evaluate_all(
    out: str | Path = ".", dataset: str | Dataset | None = None, models: list[str] | None = None
) -> pd.DataFrame:
    """Evaluate every saved model on the untouched test split; write results.csv /
    results.md and the per-class and confused-pairs tables.

    Args:
        out: the output root the models were saved under (cifarlab.layout).
        dataset: a spec or a loaded Dataset; None: the one the models were trained on.
        models: which saved models (None: every one of the series found in ``out``).

    Returns:
        The comparison table, one row per model.
    """
    out = layout(out)
    names = trained_models(out, models)
    ds = dataset_for(out, dataset, names)
    rows = []
    for name in names:
        pred = predict_test(out, name, ds)
        meta, y = pred.meta, pred.y
        m = metrics(y, pred.probs, ds.class_names, ds.fine_to_coarse)
        write_csv(m["per_class"], out.per_class(name))
        pairs = confused_pairs(y, m["pred"], ds.class_names, 10, ds.fine_to_coarse, ds.coarse_names)
        write_csv(pairs, out.confused_pairs(name))
        if ds.has_coarse:
            table = superclass_table(y, m["pred"], ds.fine_to_coarse, ds.coarse_names)
            write_csv(table, out.per_superclass(name))
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
                **(
                    {"top10_confusions_within_superclass": within_superclass_share(pairs)}
                    if ds.has_coarse
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
                "tta_views": (2 if cfg.get("tta_flip") else 1) * (3 if cfg.get("tta_shift") else 1),
                "weights": meta.get("weights_source", "trained from scratch"),
                "backend": meta["backend"],
                "seed": meta["seed"],
            }
        )
    table = pd.DataFrame(rows)
    write_csv(table, out.results_csv)
    write_text(out.results_md, results_markdown(table, ds, names, out))
    return table


def _gap(meta: dict) -> float | None:
    tr, va = meta.get("final_train_accuracy"), meta.get("final_val_accuracy")
    return None if tr is None or va is None else float(tr) - float(va)


def results_markdown(table: pd.DataFrame, ds: Dataset, names: list[str], out: Layout) -> str:
    """The comparison as Markdown that reads on its own: what, on what, how measured."""
    meta = out.read_meta(names[0])
    hw = meta["hardware"]
    shown = table.copy()
    for col in (
        "test_accuracy",
        "top5_accuracy",
        "superclass_accuracy",
        "top10_confusions_within_superclass",
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
        markdown_table(shown),
        "",
        "Accuracy is the measure (the classes are balanced). top-5: the true class among the five "
        "most probable. train_val_gap: final-epoch training accuracy minus validation accuracy. "
        "tta_flip: predictions averaged over each image and its mirror image (tta_views: 6 "
        "with the 1-pixel shifts of both, the unshifted pair counting half), inside the saved "
        "model's forward pass (plain Keras `load_model(...).predict(raw pixels)` gives these "
        "figures). Saved models compute in float32 whatever precision they trained in.",
    ]
    if ds.has_coarse:
        lines += [
            "",
            "superclass_accuracy: fine predictions mapped to their superclass (a wrong class "
            f"inside the right superclass counts), {len(ds.coarse_names)} superclasses. "
            "top10_confusions_within_superclass: of the ten most frequent mistakes (true class, "
            "predicted class), weighted by count, the share whose two classes share a "
            "superclass (by chance: 4 of 99 other classes, 4%).",
        ]
    if "vgg16" in names:
        vmeta = out.read_meta("vgg16")
        lines += ["", f"VGG16 weights: {vmeta.get('weights_source')}."]
    return "\n".join(lines) + "\n"


def markdown_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    rows = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        rows.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(rows)


def confused_pairs_table(out, top: int = 5) -> pd.DataFrame:
    """The most-confused class pairs of every evaluated model, side by side."""
    out = layout(out)
    frames = []
    for name in trained_models(out):
        f = out.confused_pairs(name)
        if f.is_file():
            frames.append(pd.read_csv(f).head(top).assign(model=name))
    if not frames:
        raise CifarlabError(f"no confused-pairs tables in {out.reports_dir}; run evaluate first")
    table = pd.concat(frames, ignore_index=True)
    cols = ["model", "true", "predicted", "count"]
    return table[cols + (["same_superclass"] if "same_superclass" in table else [])]


def per_class_table(out, name: str) -> pd.DataFrame:
    """Precision, recall and F1 per class of one evaluated model."""
    return _read_report(layout(out).per_class(name))


def per_superclass_table(out, name: str) -> pd.DataFrame:
    """Precision, recall and F1 per superclass of one evaluated model (CIFAR-100)."""
    return _read_report(layout(out).per_superclass(name))


def _read_report(f: Path) -> pd.DataFrame:
    if not f.is_file():
        raise CifarlabError(f"{f} not found; run evaluate first")
    return pd.read_csv(f)
