"""Figures of results: learning curves, the overfitting gap, confusion matrices, the
class balance; saved as PNG where cifarlab.layout says, and shown inline in notebooks.

Figures are files first, pictures second: every function writes its PNG atomically and
returns its path; :func:`show` displays saved PNGs in a notebook.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, not windows; notebooks show the saved PNGs inline
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cifarlab.config import MODELS  # noqa: E402
from cifarlab.data.datasets import Dataset  # noqa: E402
from cifarlab.layout import Layout, atomic_path, layout  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure as PNG, atomically, and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- learning curves


def learning_curves(name: str, hist: np.ndarray, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ep = hist["epoch"]
    for ax, metric, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(ep, hist[metric], "o-", label=f"train {label}")
        ax.plot(ep, hist[f"val_{metric}"], "s-", label=f"validation {label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if "phase" in hist.dtype.names and len(set(hist["phase"])) > 1:
        start = ep[hist["phase"] == hist["phase"].max()].min()
        for ax in axes:
            ax.axvline(start - 0.5, color="gray", ls="--")
            ax.text(start - 0.4, ax.get_ylim()[1], " fine-tuning", va="top", color="gray")
    fig.suptitle(f"{name}: learning curves")
    return save_figure(fig, path)


def overfit_vs_baseline(hists: dict[str, np.ndarray], path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for name, style in (("baseline", "C0"), ("overfit", "C3")):
            h = hists[name]
            ax.plot(h["epoch"], h[metric], "-", color=style, label=f"{name} train")
            ax.plot(h["epoch"], h[f"val_{metric}"], "--", color=style, label=f"{name} validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    gap = {
        n: float(hists[n]["accuracy"][-1] - hists[n]["val_accuracy"][-1])
        for n in ("baseline", "overfit")
    }
    fig.suptitle(
        f"Overfitting: training minus validation accuracy at the end, "
        f"{100 * gap['overfit']:+.1f} points (overfit) vs {100 * gap['baseline']:+.1f} (baseline)"
    )
    return save_figure(fig, path)


# --------------------------------------------------------------------------- confusion


def confusion_matrices(name: str, y, pred, ds: Dataset, out: Layout) -> list[Path]:
    """Row-normalised confusion matrix (CIFAR-100: ordered by superclass) and, with
    superclasses, the superclass confusion matrix."""
    import seaborn as sns
    from sklearn.metrics import confusion_matrix

    n = ds.num_classes
    files = []
    order = np.arange(n)
    if ds.has_coarse:  # group the fine classes by superclass so the picture has structure
        order = np.lexsort((np.arange(n), ds.fine_to_coarse))
    cm = confusion_matrix(y, pred, labels=np.arange(n), normalize="true")[np.ix_(order, order)]
    names = [ds.class_names[i] for i in order]
    big = n > 20
    fig, ax = plt.subplots(figsize=(18, 16) if big else (8, 7))
    sns.heatmap(
        cm,
        ax=ax,
        cmap="Blues",
        vmin=0,
        vmax=1,
        square=True,
        annot=not big,
        fmt=".2f",
        xticklabels=names,
        yticklabels=names,
        cbar_kws={"label": "fraction of the true class"},
    )
    if big:
        ax.tick_params(labelsize=5)
    if ds.has_coarse:
        _mark_superclasses(ax, ds.fine_to_coarse[order], ds.coarse_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(
        f"{name}: confusion matrix, row-normalised"
        + (" (ordered by superclass)" if ds.has_coarse else "")
    )
    files.append(save_figure(fig, out.figure("confusion", name)))
    if ds.has_coarse:
        f2c = ds.fine_to_coarse
        cm2 = confusion_matrix(
            f2c[y], f2c[pred], labels=np.arange(len(ds.coarse_names)), normalize="true"
        )
        fig, ax = plt.subplots(figsize=(13, 11))
        sns.heatmap(
            cm2,
            ax=ax,
            cmap="Blues",
            vmin=0,
            vmax=1,
            annot=True,
            fmt=".2f",
            square=True,
            xticklabels=ds.coarse_names,
            yticklabels=ds.coarse_names,
            cbar_kws={"label": "fraction of the true superclass"},
        )
        ax.set_xlabel("predicted superclass")
        ax.set_ylabel("true superclass")
        ax.set_title(f"{name}: superclass confusion matrix, row-normalised")
        files.append(save_figure(fig, out.figure("confusion_coarse", name)))
    return files


def _mark_superclasses(ax, coarse_of_row: np.ndarray, coarse_names: list[str]) -> None:
    """Outline each superclass's diagonal block and name it above the matrix."""
    bounds = np.flatnonzero(np.diff(coarse_of_row)) + 1
    edges = np.concatenate([[0], bounds, [len(coarse_of_row)]])
    for lo, hi in zip(edges[:-1], edges[1:]):
        ax.add_patch(
            plt.Rectangle((lo, lo), hi - lo, hi - lo, fill=False, edgecolor="tab:red", lw=0.8)
        )
    for b in bounds:
        ax.axhline(b, color="0.6", lw=0.4)
        ax.axvline(b, color="0.6", lw=0.4)
    top = ax.secondary_xaxis("top")
    top.set_xticks((edges[:-1] + edges[1:]) / 2)
    top.set_xticklabels(
        [coarse_names[c] for c in coarse_of_row[edges[:-1]]], rotation=60, ha="left", fontsize=7
    )
    top.tick_params(length=0)


def class_balance(ds: Dataset, split, path: Path) -> Path:
    """Images per class in the train / validation / test splits (the protocol, drawn)."""
    import pandas as pd

    n = ds.num_classes
    counts = pd.DataFrame(
        {
            "train": np.bincount(split.y_train, minlength=n),
            "validation": np.bincount(split.y_val, minlength=n),
            "test": np.bincount(ds.y_test, minlength=n),
        },
        index=ds.class_names,
    )
    fig, ax = plt.subplots(figsize=(max(8, n * 0.18), 4))
    counts.plot.bar(ax=ax, width=0.85)
    ax.set_xlabel("class")
    ax.set_ylabel("images")
    ax.set_title(
        f"{ds.name}: images per class — {len(split.y_train):,} train / "
        f"{len(split.y_val):,} validation (stratified) / {len(ds.y_test):,} test"
    )
    if n > 20:
        ax.tick_params(axis="x", labelsize=5)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- teaching figures


def sample_rows(ds: Dataset, split, seed: int = 0) -> list[tuple[str, list]]:
    """``[(row title, [(caption, image), ...]), ...]`` from the training split: with
    superclasses (CIFAR-100) one row per superclass holding one image of each of its
    classes; else one row per class (at most 20) of eight images."""
    rng = np.random.default_rng(seed)

    def pick(c: int, k: int) -> np.ndarray:
        idx = np.flatnonzero(split.y_train == c)
        return split.x_train[rng.choice(idx, size=min(k, len(idx)), replace=False)]

    if ds.has_coarse:
        return [
            (
                name,
                [
                    (ds.class_names[c], pick(c, 1)[0])
                    for c in np.flatnonzero(ds.fine_to_coarse == s)
                ],
            )
            for s, name in enumerate(ds.coarse_names)
        ]
    return [
        (ds.class_names[c], [("", im) for im in pick(c, 8)]) for c in range(min(ds.num_classes, 20))
    ]


def sample_grid(ds: Dataset, split, path: Path, seed: int = 0) -> Path:
    """Training images of each class (:func:`sample_rows`) as one figure."""
    rows = sample_rows(ds, split, seed)
    cols = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(
        len(rows),
        cols,
        figsize=(1.25 * cols + 1.6, 1.25 * len(rows)),
        squeeze=False,
        layout="constrained",
    )
    for r, (title, cells) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(cells):
                ax.imshow(cells[c][1])
                if cells[c][0]:
                    ax.set_title(cells[c][0], fontsize=7, pad=2)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    shown = (
        f"{len(rows)} superclasses" if ds.has_coarse else f"{len(rows)} of {ds.num_classes} classes"
    )
    fig.suptitle(f"{ds.name}: training images ({shown})")
    return save_figure(fig, path)


def augmentation_grid(name: str, views: np.ndarray, what: str, path: Path) -> Path:
    """``views[i, 0]`` an image as stored, ``views[i, 1:]`` what training shows of it."""
    n, k = views.shape[:2]
    fig, axes = plt.subplots(n, k, figsize=(1.5 * k, 1.5 * n), squeeze=False, layout="constrained")
    for i in range(n):
        for j in range(k):
            ax = axes[i, j]
            ax.imshow(np.clip(views[i, j], 0, 255).astype("uint8"))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("original" if j == 0 else f"view {j}", fontsize=8)
    fig.suptitle(f"{name}: training augmentation — {what}", fontsize=9)
    return save_figure(fig, path)


def one_prediction(
    ds: Dataset, index: int, probabilities: np.ndarray, path: Path, k: int = 5
) -> Path:
    """Test image ``index`` beside the ``k`` classes a model gives the most probability."""
    top = np.argsort(probabilities)[::-1][:k]
    fig, (ax_img, ax_bar) = plt.subplots(
        1, 2, figsize=(7, 2.6), gridspec_kw={"width_ratios": [1, 2]}, layout="constrained"
    )
    ax_img.imshow(ds.x_test[index].astype("uint8"))
    ax_img.set_xticks([])
    ax_img.set_yticks([])
    true = ds.class_names[int(ds.y_test[index])]
    ax_img.set_title(f"test image {index}: {true}", fontsize=9)
    names = [ds.class_names[i] for i in top][::-1]
    colours = ["tab:green" if n == true else "tab:gray" for n in names]
    ax_bar.barh(names, probabilities[top][::-1], color=colours)
    ax_bar.set_xlim(0, 1)
    ax_bar.set_xlabel("probability")
    ax_bar.set_title(f"the model's top {k} (green: the true class)", fontsize=9)
    return save_figure(fig, path)


def schedule_curve(
    name: str, steps: np.ndarray, lr: np.ndarray, steps_per_epoch: int, cfg, path: Path
) -> Path:
    """The learning rate against the training's progress in epochs."""
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(steps / steps_per_epoch, lr)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    from cifarlab.training.recipe import describe_schedule

    ax.set_title(
        f"{name}: {cfg.optimizer} at peak {cfg.learning_rate:g}, {describe_schedule(cfg)}\n"
        f"({cfg.epochs * steps_per_epoch:,} steps of {cfg.batch_size} images)",
        fontsize=9,
    )
    return save_figure(fig, path)


def minutes_curve(out, name: str, label: str, test_accuracy: float) -> dict:
    """One run for :func:`accuracy_vs_minutes` from a saved history: the minutes after
    each epoch (each epoch's own seconds; runs saved before epochs were timed: the
    metadata's wall time spread evenly), the validation accuracy then, the test accuracy."""
    hist = load_history(out, name)
    if "seconds" in hist.dtype.names:
        seconds = hist["seconds"]
    else:
        wall = json.loads(layout(out).meta(name).read_text())["wall_time_s"]
        seconds = np.full(len(hist), wall / len(hist))
    return {
        "label": label,
        "minutes": np.cumsum(seconds) / 60,
        "val_accuracy": hist["val_accuracy"],
        "test_accuracy": test_accuracy,
    }


def accuracy_vs_minutes(runs: list[dict], title: str, path: Path) -> Path:
    """Validation accuracy after each epoch against the training minutes so far, one line
    per run (``label``, ``minutes``, ``val_accuracy``), each run's test accuracy
    (``test_accuracy``) marked where its training ended."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for run in runs:
        (line,) = ax.plot(run["minutes"], 100 * np.asarray(run["val_accuracy"]), marker=".")
        end, test = run["minutes"][-1], 100 * run["test_accuracy"]
        ax.plot(end, test, marker="*", markersize=12, color=line.get_color(), linestyle="")
        line.set_label(f"{run['label']}: {test:.2f}% test, {end:.0f} min")
    ax.set_xlabel("training minutes (validation included)")
    ax.set_ylabel("accuracy (%): validation per epoch, test as a star")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


# --------------------------------------------------------------------------- the models compared


def validation_curves(hists: dict[str, np.ndarray], path: Path) -> Path:
    """Every model's validation accuracy per epoch, on one axis."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, h in hists.items():
        ax.plot(h["epoch"], h["val_accuracy"], "o-", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Validation accuracy of every model, epoch by epoch")
    return save_figure(fig, path)


def accuracy_bars(table, num_classes: int, path: Path) -> Path:
    """Test accuracy per model with its 95% binomial margin on the images scored, and the
    chance level."""
    acc = table["test_accuracy"].to_numpy(dtype=float)
    n = table["test_images"].to_numpy(dtype=float)
    margin = 1.96 * np.sqrt(acc * (1 - acc) / n)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.bar(table["model"], acc, yerr=margin, capsize=6, color="tab:blue", alpha=0.8)
    ax.axhline(1 / num_classes, color="gray", ls="--", label=f"chance ({1 / num_classes:.1%})")
    for i, (a, m) in enumerate(zip(acc, margin)):
        ax.text(i, a + m + 0.01, f"{a:.1%}", ha="center", fontsize=8)
    ax.set_ylim(0, min(1.0, float((acc + margin).max()) + 0.1))
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    ax.set_title(f"Test accuracy, ±95% margin on {int(n[0]):,} test images", fontsize=10)
    return save_figure(fig, path)


def recall_per_class(recalls: dict[str, np.ndarray], class_names: list[str], path: Path) -> Path:
    """Each model's recall of each class, the classes sorted by their mean recall."""
    names = list(recalls)
    grid = np.stack([recalls[n] for n in names])
    order = np.argsort(grid.mean(0))
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(min(22, 2 + 0.18 * k), 1.2 + 0.45 * len(names)))
    im = ax.imshow(grid[:, order], aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_yticks(range(len(names)), names)
    ax.set_xticks(
        range(k), [class_names[i] for i in order], rotation=90, fontsize=6 if k > 20 else 8
    )
    fig.colorbar(im, ax=ax, fraction=0.02, label="recall")
    ax.set_title("Recall of every class by every model (classes from hardest to easiest)")
    return save_figure(fig, path)


def confusion_side_by_side(matrices: dict[str, np.ndarray], path: Path) -> Path:
    """The models' row-normalised confusion matrices in one row, on one colour scale."""
    fig, axes = plt.subplots(
        1, len(matrices), figsize=(3.2 * len(matrices), 3.4), squeeze=False, layout="constrained"
    )
    for ax, (name, cm) in zip(axes[0], matrices.items()):
        im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"{name}: {np.trace(cm) / len(cm):.1%} mean recall", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    fig.colorbar(im, ax=axes[0].tolist(), fraction=0.02)
    fig.suptitle("Confusion matrices side by side (rows: true class, normalised)")
    return save_figure(fig, path)


def load_history(out, name: str) -> np.ndarray:
    return np.load(layout(out).history(name), allow_pickle=False)


def curves(out: str | Path | Layout, name: str) -> Path:
    """Learning curves of a saved model's history, written to the figures folder."""
    return learning_curves(name, load_history(out, name), layout(out).figure("curves", name))


def overfit_gap(out: str | Path | Layout) -> Path:
    """The overfit model's train-validation gap beside the baseline's."""
    hists = {n: load_history(out, n) for n in ("baseline", "overfit")}
    return overfit_vs_baseline(hists, layout(out).figure("overfit_vs_baseline"))


def show(*paths) -> None:
    """Display saved PNGs inline in a notebook (figures are files first, pictures second)."""
    from IPython.display import Image, display

    for p in paths:
        for q in [p] if isinstance(p, (str, Path)) else p:
            display(Image(filename=str(q)))


def saved_figures(out: str | Path | Layout, kind: str) -> list[Path]:
    """The saved figures of one kind (curves, confusion, filters, ...), in model order."""
    order = {m: i for i, m in enumerate(MODELS)}
    found = layout(out).figures_of(kind)
    return sorted(found, key=lambda p: (order.get(p.stem.split("_")[-1], 9), p.name))
