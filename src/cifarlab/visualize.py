"""Pictures, saved as PNG under ``<out>/reports/figures/`` with stable names.

- ``curves_<model>.png``            loss and accuracy, train vs validation
- ``overfit_vs_baseline.png``       the overfit model's gap beside the baseline's
- ``confusion_<model>.png``         row-normalised confusion matrix (CIFAR-100: ordered
                                    by superclass), ``confusion_coarse_<model>.png``
- ``filters_<model>.png``           first convolution layer's kernels
- ``feature_maps_<model>.png``      one test image through each convolution block
- ``patterns_<model>.png``          inputs that maximally activate filters of a deep layer
                                    (gradient ascent)
- ``predictions_<model>.png``       test images, true / predicted / confidence
- ``mistakes_<model>.png``          the most confident mistakes
- ``gradcam_<model>.png``           Grad-CAM heatmaps over test images

Gradients (patterns, Grad-CAM) need the backend's autodiff: TensorFlow, JAX and
PyTorch are supported through :func:`input_gradient`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, not windows; notebooks show the saved PNGs inline
import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cifarlab.data import Dataset, atomic_path  # noqa: E402


def _np32(t) -> np.ndarray:
    """A backend tensor as float32 NumPy: under mixed precision activations are bfloat16,
    which NumPy reductions and matplotlib cannot handle."""
    return np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float32)


def _save(fig, path: Path) -> Path:
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
    return _save(fig, path)


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
        f"Overfitting: final train-validation accuracy gap {gap['overfit']:+.1%} (overfit) "
        f"vs {gap['baseline']:+.1%} (baseline)"
    )
    return _save(fig, path)


# --------------------------------------------------------------------------- confusion


def confusion_matrices(name: str, y, pred, ds: Dataset, folder: Path) -> list[Path]:
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
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(
        f"{name}: confusion matrix, row-normalised"
        + (" (ordered by superclass)" if ds.has_coarse else "")
    )
    files.append(_save(fig, folder / f"confusion_{name}.png"))
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
        files.append(_save(fig, folder / f"confusion_coarse_{name}.png"))
    return files


# --------------------------------------------------------------------------- what the net sees


def conv_layers(model) -> list:
    """The model's 3x3 convolutions in order (the fixed 1x1 RGB->BGR swap is skipped)."""
    return [
        lay
        for lay in model.layers
        if isinstance(lay, keras.layers.Conv2D) and lay.kernel_size != (1, 1)
    ]


def block_outputs(model) -> list[str]:
    """The last layer of each convolution block (block1, stage2, ...), in order."""
    last: dict[str, str] = {}
    prefixes = {re.match(r"[a-z]+\d*", lay.name).group(0) for lay in conv_layers(model)}
    for lay in model.layers:
        pre = re.match(r"[a-z]+\d*", lay.name)
        if pre and pre.group(0) in prefixes and len(lay.output.shape) == 4:
            last[pre.group(0)] = lay.name
    return list(last.values())


def filters(name: str, model, path: Path) -> Path:
    conv = conv_layers(model)[0]
    k = _np32(conv.kernel)  # (3, 3, in, out)
    n = k.shape[-1]
    cols = 8
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.2))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i < n:
            w = k[..., i]
            if w.shape[-1] == 3:
                if model.name == "vgg16":
                    w = w[..., ::-1]  # VGG16 kernels read BGR: show them as RGB
                w = (w - w.min()) / (np.ptp(w) + 1e-8)
            else:
                w = w.mean(-1)
            ax.imshow(w, cmap=None if w.ndim == 3 else "gray", interpolation="nearest")
            ax.set_title(str(i), fontsize=6)
    fig.suptitle(f"{name}: the {n} filters of the first convolution layer '{conv.name}' (3x3, RGB)")
    return _save(fig, path)


def feature_maps(
    name: str, model, image: np.ndarray, label: str, path: Path, per_block: int = 8
) -> Path:
    layers = block_outputs(model)
    probe = keras.Model(model.input, [model.get_layer(n).output for n in layers])
    outs = probe(image[None].astype("float32"), training=False)
    outs = [_np32(o)[0] for o in (outs if isinstance(outs, (list, tuple)) else [outs])]
    fig, axes = plt.subplots(
        len(layers), per_block + 1, figsize=((per_block + 1) * 1.2, len(layers) * 1.35)
    )
    axes = np.atleast_2d(axes)
    for r, (lname, fmap) in enumerate(zip(layers, outs)):
        axes[r, 0].imshow(image.astype("uint8"))
        axes[r, 0].set_ylabel(f"{lname}\n{fmap.shape[0]}x{fmap.shape[1]}", fontsize=6)
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        strongest = np.argsort(-fmap.mean((0, 1)))[:per_block]
        for c in range(per_block):
            ax = axes[r, c + 1]
            ax.axis("off")
            if c < len(strongest):
                ax.imshow(fmap[..., strongest[c]], cmap="viridis")
                ax.set_title(f"ch {strongest[c]}", fontsize=6)
    fig.suptitle(
        f"{name}: feature maps of a test image ({label}) after each convolution block, "
        "most active channels"
    )
    return _save(fig, path)


def input_gradient(fn, x: np.ndarray) -> tuple[float, np.ndarray]:
    """(value, d value / d x) of a scalar function of a backend tensor.

    Backend-specific by necessity: TensorFlow (GradientTape), JAX (jax.value_and_grad)
    and PyTorch (autograd).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        t = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            v = fn(t)
        return float(v), _np32(tape.gradient(v, t))
    if backend == "jax":
        import jax

        v, g = jax.value_and_grad(fn)(jax.numpy.asarray(x))
        return float(v), _np32(g)
    if backend == "torch":
        import torch

        t = torch.tensor(x, requires_grad=True)
        v = fn(t)
        v.backward()
        return float(v.detach().float()), t.grad.detach().float().cpu().numpy()
    raise NotImplementedError(f"gradients are not supported on the {backend} backend")


def activation_patterns(
    name: str, model, path: Path, n_filters: int = 8, steps: int = 30, seed: int = 0
) -> Path:
    """Gradient ascent in pixel space on the mean activation of filters of a deep conv."""
    conv = conv_layers(model)[-2 if len(conv_layers(model)) > 2 else -1]
    probe = keras.Model(model.input, conv.output)
    rng = np.random.default_rng(seed)
    chosen = np.linspace(0, conv.filters - 1, n_filters).astype(int)
    images = []
    for f in chosen:
        x = (128 + 20 * rng.standard_normal((1, 32, 32, 3))).astype("float32")

        def objective(t, f=f):
            return keras.ops.mean(probe(t, training=False)[..., f])

        for _ in range(steps):
            _, g = input_gradient(objective, x)
            x = np.clip(x + 8.0 * g / (np.sqrt((g**2).mean()) + 1e-8), 0, 255).astype("float32")
        images.append(x[0])
    fig, axes = plt.subplots(1, n_filters, figsize=(n_filters * 1.4, 1.9))
    for ax, f, img in zip(np.atleast_1d(axes), chosen, images):
        lo, hi = np.percentile(img, (1, 99))
        ax.imshow(np.clip((img - lo) / (hi - lo + 1e-8), 0, 1))
        ax.set_title(f"filter {f}", fontsize=7)
        ax.axis("off")
    fig.suptitle(
        f"{name}: inputs that maximise filters of '{conv.name}' "
        f"(gradient ascent, {steps} steps, {keras.backend.backend()})",
        fontsize=9,
    )
    return _save(fig, path)


def _image_grid(title: str, images, captions, wrong, path: Path, cols: int = 8) -> Path:
    rows = int(np.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.9))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i])
            ax.set_title(captions[i], fontsize=6.5, color="red" if wrong[i] else "green")
    fig.suptitle(title + "  (green: correct, red: mistake)")
    return _save(fig, path)


def predictions(name: str, x, y, probs, class_names, folder: Path, n: int = 24) -> list[Path]:
    pred, conf = probs.argmax(1), probs.max(1)
    cap = [
        f"true: {class_names[t]}\npred: {class_names[p]} {c:.0%}" for t, p, c in zip(y, pred, conf)
    ]
    idx = np.arange(min(n, len(y)))
    files = [
        _image_grid(
            f"{name}: test images with true and predicted class and confidence",
            x[idx],
            [cap[i] for i in idx],
            pred[idx] != y[idx],
            folder / f"predictions_{name}.png",
        )
    ]
    wrong = np.flatnonzero(pred != y)
    worst = wrong[np.argsort(-conf[wrong])][:16]
    files.append(
        _image_grid(
            f"{name}: the {len(worst)} most confident mistakes",
            x[worst],
            [cap[i] for i in worst],
            np.ones(len(worst), bool),
            folder / f"mistakes_{name}.png",
        )
    )
    return files


def gradcam(name: str, model, x, y, probs, class_names, path: Path, n: int = 8) -> Path:
    """Grad-CAM (Selvaraju et al. 2017) at the last convolution block's output."""
    last = model.get_layer(block_outputs(model)[-1])
    head = keras.Model(model.input, last.output)
    tail = keras.Model(last.output, model.output)
    pred = probs.argmax(1)
    fig, axes = plt.subplots(2, n, figsize=(n * 1.6, 3.6))
    for i in range(min(n, len(x))):
        fmap = _np32(head(x[i : i + 1].astype("float32"), training=False))
        c = int(pred[i])
        _, g = input_gradient(lambda t, c=c: tail(t, training=False)[0, c], fmap)
        weights = g.mean(axis=(1, 2))[0]
        cam = np.maximum((fmap[0] * weights).sum(-1), 0)
        cam = cam / (cam.max() + 1e-8)
        big = (
            np.kron(cam, np.ones((32 // cam.shape[0], 32 // cam.shape[1])))
            if 32 % cam.shape[0] == 0
            else cam
        )
        axes[0, i].imshow(x[i])
        axes[0, i].set_title(f"true: {class_names[y[i]]}", fontsize=6.5)
        axes[1, i].imshow(x[i])
        axes[1, i].imshow(big, cmap="jet", alpha=0.45, extent=(-0.5, 31.5, 31.5, -0.5))
        axes[1, i].set_title(
            f"pred: {class_names[c]} {probs[i, c]:.0%}",
            fontsize=6.5,
            color="green" if c == y[i] else "red",
        )
        axes[0, i].axis("off")
        axes[1, i].axis("off")
    fig.suptitle(
        f"{name}: Grad-CAM at '{last.name}' ({cam.shape[0]}x{cam.shape[1]}): "
        "where the predicted class's evidence lies"
    )
    return _save(fig, path)


# --------------------------------------------------------------------------- everything


def visualize_all(
    out: str | Path = ".", dataset=None, models: list[str] | None = None
) -> list[Path]:
    """Every picture for every saved model (regenerated each time)."""
    from cifarlab.evaluate import dataset_for, load_model, predict_proba, saved_models, test_split

    out = Path(out)
    folder = out / "reports" / "figures"
    names = saved_models(out, models)
    ds = dataset_for(out, dataset, names)
    files: list[Path] = []
    hists = {}
    for name in names:
        hpath = out / "histories" / f"{name}.npy"
        if hpath.is_file():
            hists[name] = np.load(hpath, allow_pickle=False)
            files.append(learning_curves(name, hists[name], folder / f"curves_{name}.png"))
    if "baseline" in hists and "overfit" in hists:
        files.append(overfit_vs_baseline(hists, folder / "overfit_vs_baseline.png"))
    for name in names:
        model, meta = load_model(out / "saved_models" / f"{name}.keras")
        x, y, _ = test_split(ds, meta)
        probs = predict_proba(model, x, tta_flip=meta["config"].get("tta_flip", False))
        files.append(filters(name, model, folder / f"filters_{name}.png"))
        files.append(
            feature_maps(
                name, model, x[0], ds.class_names[y[0]], folder / f"feature_maps_{name}.png"
            )
        )
        files.append(activation_patterns(name, model, folder / f"patterns_{name}.png"))
        files += predictions(name, x, y, probs, ds.class_names, folder)
        files.append(
            gradcam(name, model, x, y, probs, ds.class_names, folder / f"gradcam_{name}.png")
        )
    with atomic_path(folder / "index.json") as tmp:
        tmp.write_text(json.dumps(sorted(p.name for p in files), indent=1))
    return files


# --------------------------------------------------------------------------- notebook helpers


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
    return _save(fig, path)


def curves(out: str | Path, name: str) -> Path:
    """Learning curves of a saved model's history, written to reports/figures/."""
    hist = np.load(Path(out) / "histories" / f"{name}.npy", allow_pickle=False)
    return learning_curves(name, hist, Path(out) / "reports" / "figures" / f"curves_{name}.png")


def overfit_gap(out: str | Path) -> Path:
    """The overfit model's train-validation gap beside the baseline's."""
    hists = {
        n: np.load(Path(out) / "histories" / f"{n}.npy", allow_pickle=False)
        for n in ("baseline", "overfit")
    }
    return overfit_vs_baseline(hists, Path(out) / "reports" / "figures" / "overfit_vs_baseline.png")


def show(*paths) -> None:
    """Display saved PNGs inline in a notebook (figures are files first, pictures second)."""
    from IPython.display import Image, display

    for p in paths:
        for q in [p] if isinstance(p, (str, Path)) else p:
            display(Image(filename=str(q)))


def figures(out: str | Path, kind: str) -> list[Path]:
    """The saved figures of one kind (curves, confusion, filters, ...), in model order."""
    folder = Path(out) / "reports" / "figures"
    order = {m: i for i, m in enumerate(("baseline", "overfit", "tuned", "vgg16"))}
    found = list(folder.glob(f"{kind}_*.png")) + [
        p for p in [folder / f"{kind}.png"] if p.is_file()
    ]
    return sorted(found, key=lambda p: (order.get(p.stem.split("_")[-1], 9), p.name))
