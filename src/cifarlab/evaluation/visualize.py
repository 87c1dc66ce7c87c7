"""What the networks see, and every figure of a series, saved as PNG.

Per model (names from cifarlab.layout: ``<kind>_<model>.png``):

- ``filters``       first convolution layer's kernels
- ``feature_maps``  one test image through each convolution block
- ``patterns``      inputs that maximally activate filters of a deep layer (gradient ascent)
- ``predictions``   test images, true / predicted / confidence; ``mistakes``: the most
                    confident mistakes
- ``gradcam``       Grad-CAM heatmaps over test images

:func:`visualize_all` also draws cifarlab.evaluation.figures' learning curves, the overfitting gap
and the confusion matrices. These functions read layers by the names cifarlab.models
promises (see its layer-name contract). Gradients (patterns, Grad-CAM) need the
backend's autodiff: TensorFlow, JAX and PyTorch through :func:`gradient_function`
(compiled once per picture where the backend compiles).
"""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np

from cifarlab.evaluation import figures as fig_mod
from cifarlab.evaluation.figures import plt, save_figure
from cifarlab.evaluation.inference import Predictions, dataset_for, predict_test, trained_models
from cifarlab.layout import Layout, layout, write_json
from cifarlab.models.tta import network

# re-exported for the notebooks: one import gives every figure
show = fig_mod.show
curves = fig_mod.curves
overfit_gap = fig_mod.overfit_gap
class_balance = fig_mod.class_balance
figures = fig_mod.saved_figures
one_prediction = fig_mod.one_prediction


def pixels_input(model):
    """The model's one input tensor. Keras 3.10 loads a saved model's input as a list of
    one (``model.input`` is ``[pixels]``), and a probe built on that list warns at every
    call with one array ("The structure of `inputs` doesn't match")."""
    return model.inputs[0]


def _np32(t) -> np.ndarray:
    """A backend tensor as float32 NumPy: under mixed precision activations are bfloat16,
    which NumPy reductions and matplotlib cannot handle."""
    return np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float32)


# --------------------------------------------------------------------------- what the net sees


def conv_layers(model) -> list:
    """The model's 3x3 convolutions in order (the fixed 1x1 RGB->BGR swap is skipped)."""
    return [
        lay
        for lay in model.layers
        if isinstance(lay, keras.layers.Conv2D) and lay.kernel_size != (1, 1)
    ]


def block_outputs(model) -> list[str]:
    """The last layer of each convolution block (block1, stage2, ...) that still has a
    spatial extent of at least 2x2, in order: a 32x32 input reaches VGG16's block5_pool
    as 1x1, a map that shows nothing (its feature maps and Grad-CAM use block5_conv3)."""
    last: dict[str, str] = {}
    prefixes = {re.match(r"[a-z]+\d*", lay.name).group(0) for lay in conv_layers(model)}
    for lay in model.layers:
        pre = re.match(r"[a-z]+\d*", lay.name)
        shape = lay.output.shape
        if pre and pre.group(0) in prefixes and len(shape) == 4 and min(shape[1:3]) >= 2:
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
    return save_figure(fig, path)


def initial_first_kernel(meta: dict) -> np.ndarray | None:
    """The first convolution's kernel as ``meta``'s model started, rebuilt from its saved
    config and seed as training built it (:func:`cifarlab.training.train.train_model`);
    None for VGG16 (its start is ImageNet's, its first block frozen) and for airbench
    networks (their first convolution is the whitening computed from the data)."""
    from cifarlab.config import TrainConfig
    from cifarlab.models import airbench, build

    cfg = TrainConfig.from_dict(meta["config"])
    if cfg.model == "vgg16":
        return None
    keras.utils.set_random_seed(meta["seed"])
    first = conv_layers(build(cfg))[0]
    return None if first.name == airbench.WHITEN else _np32(first.kernel)


def filters_from_start(name: str, model, start: np.ndarray, path: Path, n: int = 8) -> Path:
    """The first ``n`` first-layer filters at initialisation above the same filters
    trained, with how far training moved them (the kernel's relative change)."""
    trained = _np32(conv_layers(model)[0].kernel)
    change = _moved(trained, start)
    n = min(n, trained.shape[-1])
    fig, axes = plt.subplots(2, n, figsize=(1.1 * n, 2.6), squeeze=False)
    for row, (k, label) in enumerate(((start, "initial"), (trained, "trained"))):
        for i in range(n):
            w = k[..., i]
            w = (w - w.min()) / (np.ptp(w) + 1e-8) if w.shape[-1] == 3 else w.mean(-1)
            ax = axes[row, i]
            ax.imshow(w, cmap=None if w.ndim == 3 else "gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(f"{name}: first-layer filters before and after training (moved {change:.0%})")
    return save_figure(fig, path)


def filter_change(out, name: str) -> float | None:
    """How far training moved ``name``'s first-layer kernel from its initialisation:
    ``|trained - initial| / |initial|`` (None for VGG16)."""
    from cifarlab.evaluation.inference import load_model

    lay = layout(out)
    model, meta = load_model(lay.model(name))
    start = initial_first_kernel(meta)
    if start is None:
        return None
    trained = _np32(conv_layers(network(model))[0].kernel)
    return _moved(trained, start)


def _moved(trained: np.ndarray, start: np.ndarray) -> float:
    """``|trained - start| / |start|``: how far training moved a kernel."""
    return float(np.linalg.norm(trained - start) / (np.linalg.norm(start) + 1e-12))


def feature_maps(
    name: str, model, image: np.ndarray, label: str, path: Path, per_block: int = 8
) -> Path:
    layers = block_outputs(model)
    probe = keras.Model(pixels_input(model), [model.get_layer(n).output for n in layers])
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
    return save_figure(fig, path)


def gradient_function(fn):
    """``x -> (value, d value / d x)`` for a scalar function ``fn`` of a backend tensor,
    compiled once where the backend compiles (a ``tf.function``, ``jax.jit``), so a loop
    that calls it (gradient ascent) traces the model once instead of running it op by op.

    Backend-specific by necessity: TensorFlow (GradientTape), JAX (jax.value_and_grad)
    and PyTorch (autograd, eager).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(reduce_retracing=True)
        def value_and_grad(t):
            with tf.GradientTape() as tape:
                tape.watch(t)
                v = fn(t)
            return v, tape.gradient(v, t)

        to_tensor = tf.convert_to_tensor
    elif backend == "jax":
        import jax

        value_and_grad, to_tensor = jax.jit(jax.value_and_grad(fn)), jax.numpy.asarray
    elif backend == "torch":
        import torch

        def value_and_grad(t):
            v = fn(t.requires_grad_())
            v.backward()
            return v.detach(), t.grad

        to_tensor = torch.tensor
    else:
        raise NotImplementedError(f"gradients are not supported on the {backend} backend")

    def call(x):
        v, g = value_and_grad(to_tensor(x))
        return float(_np32(v)), _np32(g)

    return call


def input_gradient(fn, x: np.ndarray) -> tuple[float, np.ndarray]:
    """(value, d value / d x) of a scalar function of a backend tensor, once
    (:func:`gradient_function` for a loop)."""
    return gradient_function(fn)(x)


def activation_patterns(
    name: str, model, path: Path, n_filters: int = 8, steps: int = 30, seed: int = 0
) -> Path:
    """Gradient ascent in pixel space on the mean activation of filters of a deep conv.

    All filters at once: image i of one batch ascends filter i's mean activation (the
    images do not interact at inference, so each gets its own gradient), each step
    normalised per image: one gradient call a step instead of one per filter."""
    conv = conv_layers(model)[-2 if len(conv_layers(model)) > 2 else -1]
    probe = keras.Model(pixels_input(model), conv.output)
    rng = np.random.default_rng(seed)
    chosen = np.linspace(0, conv.filters - 1, n_filters).astype(int)
    pick = keras.ops.convert_to_tensor(  # image i: filter i
        np.eye(conv.filters, dtype="float32")[chosen][:, None, None, :]
    )
    x = (128 + 20 * rng.standard_normal((n_filters, 32, 32, 3))).astype("float32")

    def objective(t):
        act = keras.ops.cast(probe(t, training=False), "float32")
        return keras.ops.sum(keras.ops.mean(act * pick, axis=(1, 2)))

    step = gradient_function(objective)
    for _ in range(steps):
        _, g = step(x)
        rms = np.sqrt((g**2).mean(axis=(1, 2, 3), keepdims=True)) + 1e-8
        x = np.clip(x + 8.0 * g / rms, 0, 255).astype("float32")
    images = list(x)
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
    return save_figure(fig, path)


def _image_grid(title: str, images, captions, wrong, path: Path, cols: int = 8) -> Path:
    rows = int(np.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.9))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i])
            ax.set_title(captions[i], fontsize=6.5, color="red" if wrong[i] else "green")
    fig.suptitle(title + "  (green: correct, red: mistake)")
    return save_figure(fig, path)


def predictions(name: str, x, y, probs, class_names, out: Layout, n: int = 24) -> list[Path]:
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
            out.figure("predictions", name),
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
            out.figure("mistakes", name),
        )
    )
    return files


def gradcam_maps(model, x: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, str]:
    """Grad-CAM (Selvaraju et al. 2017) at the last convolution block's output: one map
    in [0, 1] per image for the class given, and that block's name. All images in one
    gradient call, each through its own score (the images do not interact at inference,
    so each gets its own gradient)."""
    last = model.get_layer(block_outputs(model)[-1])
    head = keras.Model(pixels_input(model), last.output)
    tail = keras.Model(last.output, model.output)
    fmaps = _np32(head(x.astype("float32"), training=False))
    pick = keras.ops.convert_to_tensor(np.eye(model.output.shape[-1], dtype="float32")[classes])
    _, grads = input_gradient(
        lambda t: keras.ops.sum(keras.ops.cast(tail(t, training=False), "float32") * pick), fmaps
    )
    cams = np.maximum((fmaps * grads.mean(axis=(1, 2), keepdims=True)).sum(-1), 0)
    top = cams.max(axis=(1, 2), keepdims=True)
    return cams / np.where(top > 0, top, 1.0), last.name


def gradcam(name: str, model, x, y, probs, class_names, path: Path, n: int = 8) -> Path:
    """Grad-CAM heatmaps over the first ``n`` images, for the class each was predicted."""
    pred = probs.argmax(1)
    n = min(n, len(x))
    cams, layer = gradcam_maps(model, x[:n], pred[:n])
    fig, axes = plt.subplots(2, n, figsize=(n * 1.6, 3.6), squeeze=False)
    for i, cam in enumerate(cams):
        c = int(pred[i])
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
        f"{name}: Grad-CAM at '{layer}' ({cams.shape[1]}x{cams.shape[2]}): "
        "where the predicted class's evidence lies"
    )
    return save_figure(fig, path)


# --------------------------------------------------------------------------- everything


def confusion_all(out, dataset=None, models: list[str] | None = None) -> list[Path]:
    """The confusion matrices of every saved model on its test images."""
    out = layout(out)
    names = trained_models(out, models)
    ds = dataset_for(out, dataset, names)
    files: list[Path] = []
    for name in names:
        pred = predict_test(out, name, ds)
        files += fig_mod.confusion_matrices(name, pred.y, pred.probs.argmax(1), ds, out)
    return files


def model_figures(pred: Predictions, class_names: list[str], out: Layout) -> list[Path]:
    """Filters, feature maps, activation patterns, predictions, mistakes and Grad-CAM."""
    name, x, y, probs = pred.name, pred.x, pred.y, pred.probs
    model = network(pred.model)  # the layers inside a test-time-flip wrapper
    start = initial_first_kernel(pred.meta)
    drift = [] if start is None else [
        filters_from_start(name, model, start, out.figure("initial_filters", name))
    ]  # fmt: skip
    return [
        *drift,
        filters(name, model, out.figure("filters", name)),
        feature_maps(name, model, x[0], class_names[y[0]], out.figure("feature_maps", name)),
        activation_patterns(name, model, out.figure("patterns", name)),
        *predictions(name, x, y, probs, class_names, out),
        gradcam(name, model, x, y, probs, class_names, out.figure("gradcam", name)),
    ]


def visualize_all(
    out: str | Path = ".", dataset=None, models: list[str] | None = None
) -> list[Path]:
    """Every picture for every saved model (regenerated each time), with an index.

    Args:
        out: the output root the models were saved under (cifarlab.layout).
        dataset: a spec or a loaded Dataset; None: the one the models were trained on.
        models: which saved models (None: every one of the series found in ``out``).

    Returns:
        The pictures written, under ``reports/figures/``.
    """
    out = layout(out)
    names = trained_models(out, models)
    ds = dataset_for(out, dataset, names)
    files: list[Path] = []
    for name in names:
        if out.history(name).is_file():
            files.append(fig_mod.curves(out, name))
    if out.history("baseline").is_file() and out.history("overfit").is_file():
        files.append(fig_mod.overfit_gap(out))
    guesses = {}
    for name in names:
        pred = predict_test(out, name, ds)
        guesses[name] = (pred.y, pred.probs.argmax(1))
        files += fig_mod.confusion_matrices(name, pred.y, pred.probs.argmax(1), ds, out)
        files += model_figures(pred, ds.class_names, out)
    if models is None:  # the series compared: not overwritten by a run over a few models
        files += comparisons(out, guesses, ds)
    write_json(out.figure_index, sorted(p.name for p in files), indent=1)
    return files


def comparisons(out: Layout, guesses: dict, ds) -> list[Path]:
    """The models side by side: validation curves on one axis, test accuracy with its
    margin, every class's recall, the confusion matrices in one row. ``guesses``: each
    model's test labels and predicted classes."""
    import pandas as pd
    from sklearn.metrics import confusion_matrix

    n = ds.num_classes
    order = np.lexsort((np.arange(n), ds.fine_to_coarse)) if ds.has_coarse else np.arange(n)
    normalised = {
        name: confusion_matrix(y, p, labels=np.arange(n), normalize="true")
        for name, (y, p) in guesses.items()
    }
    matrices = {name: cm[np.ix_(order, order)] for name, cm in normalised.items()}
    recalls = {name: cm.diagonal() for name, cm in normalised.items()}
    table = pd.DataFrame(
        {
            "model": list(guesses),
            "test_accuracy": [float((y == p).mean()) for y, p in guesses.values()],
            "test_images": [len(y) for y, _ in guesses.values()],
        }
    )
    hists = {m: fig_mod.load_history(out, m) for m in guesses if out.history(m).is_file()}
    files = [
        fig_mod.accuracy_bars(table, n, out.figure("test_accuracy")),
        fig_mod.recall_per_class(recalls, ds.class_names, out.figure("recall_per_class")),
        fig_mod.confusion_side_by_side(matrices, out.figure("confusion_side_by_side")),
    ]
    if hists:
        files.insert(0, fig_mod.validation_curves(hists, out.figure("validation_curves")))
    return files
