"""What the notebooks teach around each training: the images, the augmentation, each
model's architecture and cost, its learning-rate schedule, the figure to expect before it
trains and a reading of the numbers after. The notebooks call these; they define nothing.

Everything is computed from what the training itself uses: the stratified split and the
config (cifarlab.data.prepare, cifarlab.training.train.resolve_config), the model builders
(cifarlab.models), the schedule (cifarlab.training.recipe), the measured table in RESULTS.md and
the reports of cifarlab.evaluate.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cifarlab.config import TrainConfig
from cifarlab.data.datasets import Dataset, prepare
from cifarlab.evaluation import figures
from cifarlab.layout import Layout, layout

#: The measured figures the notebooks quote before each training (RESULTS.md's
#: "Expected figures" table, row for row; a test keeps the two equal).
EXPECTED_CSV = Path(__file__).with_name("expected.csv")


def model_inputs(
    name: str, ds: Dataset, profile: str, seed: int = 0, out=None, overrides: dict | None = None
):
    """``(split, cfg)`` exactly as ``name`` trains: its split and data statistics, the
    overrides (``epochs``, ``batch_size``; None = the profile's, or the budget plan's)
    applied; for ``tuned`` the search's winner from ``out`` (run the search first)."""
    from cifarlab.training.train import planned_config, resolve_config

    cfg = resolve_config(name, ds, profile, layout(out or "."), seed, False, search=False)
    cfg = planned_config(name, cfg, layout(out or "."), overrides)  # a budget's epochs
    cfg = cfg.override(**(overrides or {})).validate()
    _, split, cfg = prepare(ds, cfg, seed, progress=False)
    return split, cfg


def code(*objects):
    """The Keras code behind a step, as the notebook shows it: the library's own source of
    ``objects`` (functions, classes, methods), read from their one definition, so what a
    student reads is what runs and cannot drift from it. A Markdown display in a notebook,
    the text elsewhere."""
    import inspect

    return _markdown("```python\n" + "\n\n".join(inspect.getsource(o) for o in objects) + "```")


# --------------------------------------------------------------------------- the words


def chance(num_classes: int) -> str:
    """The accuracy of guessing, the floor every model is read against."""
    return f"Chance is {1 / num_classes:.1%} (one of {num_classes} classes)."


def protocol(ds: Dataset, split, cfg: TrainConfig) -> str:
    """The protocol's sentence with this run's numbers: the split's sizes, how the
    profile samples the training images, and how many test images are scored."""
    n_split = len(split.y_train) + len(split.y_val)
    sampled = (
        f" (a stratified sample of the dataset's {len(ds.y_train):,}: the profile's "
        f"`dataset_limit`)"
        if n_split < len(ds.y_train)
        else ""
    )
    scored = min(cfg.test_limit or len(ds.y_test), len(ds.y_test))
    test = (
        f"a stratified {scored:,} of its {len(ds.y_test):,} images are scored in this profile"
        if scored < len(ds.y_test)
        else f"all {len(ds.y_test):,} of its images are scored"
    )
    return (
        f"The {n_split:,} training images{sampled} are split once, stratified and seeded, "
        f"into **{len(split.y_train):,} for training** and **{len(split.y_val):,} for "
        f"validation** ({cfg.val_fraction:.0%}). Every choice (the best epoch, early "
        f"stopping, the hyperparameter search) looks at validation only. The test split is "
        f"touched once, at the end, in *TestModels*: {test}."
    )


def training_words(name: str, cfg: TrainConfig, split, ds: Dataset) -> str:
    """What ``name``'s training does, in this run's numbers: epochs, batch, the images it
    trains on, augmentation, the schedule, early stopping and which epoch is kept."""
    whole = min(cfg.dataset_limit or len(ds.y_train), len(ds.y_train)) - len(split.y_val)
    images = (
        f"{len(split.y_train):,} of the {whole:,} training images (a stratified subset)"
        if len(split.y_train) < whole
        else f"all {len(split.y_train):,} training images"
    )
    stop = (
        f"early stopping after {cfg.patience} epochs without a better validation accuracy"
        if cfg.patience
        else "no early stopping"
    )
    kept = "the best validation epoch is kept" if cfg.restore_best else "the last epoch is kept"
    from cifarlab.training.recipe import describe_schedule

    schedule = describe_schedule(cfg)
    if name == "vgg16":
        head = min(cfg.network["head_epochs"], cfg.epochs)
        phases = (
            f" in two phases: {head} of the head alone, then {cfg.epochs - head} fine-tuning "
            f"the top block at a learning rate of {cfg.network['finetune_lr']:g}"
            if cfg.epochs > head
            else " (the head alone)"
        )
        return (
            f"**{name}** trains {cfg.epochs} epochs{phases}, at batch {cfg.batch_size} on "
            f"{images}, validated on all {len(split.y_val):,} validation images; augmentation: "
            f"{'each epoch takes an image or its mirror' if cfg.network.get('mirror_features') else 'none'}; "
            f"{stop}; {kept}."
        )
    shrunk = (
        f" (the first {cfg.low_res_epochs} on images shrunk to {cfg.low_res}x{cfg.low_res} "
        "pixels: cheaper steps)"
        if cfg.low_res_epochs
        else ""
    )
    return (
        f"**{name}** trains {cfg.epochs} epochs{shrunk} at batch {cfg.batch_size} on {images}, "
        f"validated on all {len(split.y_val):,} validation images; augmentation: "
        f"{_augmentation_words(cfg)}; {cfg.optimizer} at a peak learning rate of "
        f"{cfg.learning_rate:g}, {schedule}; {stop}; {kept}."
    )


def after_training(meta: dict) -> str:
    """A reading of one training, from the metadata saved beside the model: the accuracy
    against chance, the gap between training and validation, the epoch kept."""
    k = int(meta["dataset"]["num_classes"])
    val, train_acc = meta["final_val_accuracy"], meta["final_train_accuracy"]
    restored = meta.get("restored_best_weights")
    # what the saved weights score (saved before 2026-12-07: the best epoch's or the last's)
    best = meta.get("kept_val_accuracy", meta["best_val_accuracy"] if restored else val)
    gap = 100 * (train_acc - val)
    phase = " of the fine-tuning phase" if meta.get("vgg16", {}).get("finetune_epochs") else ""
    kept = (
        f"the weights kept are the best validation epoch's{phase} ({best:.1%})"
        if restored
        else f"the weights kept are the last epoch's ({val:.1%} validation)"
    )
    lines = [
        f"**{meta['name']}** trained {meta['epochs_run']} epochs in "
        f"{meta['wall_time_s'] / 60:.1f} min: last epoch {train_acc:.1%} training and "
        f"{val:.1%} validation accuracy ({gap:+.1f} points apart); {kept}. {chance(k)}"
    ]
    times = best * k
    if times < 2:
        lines.append(
            f"At {times:.1f}x chance it has learned little yet: too few epochs or images "
            "(the smoke profile trains on a few hundred) for this model to show its lesson."
        )
    else:
        lines.append(f"That is {times:.0f}x chance.")
    if gap > 15:
        lines.append(
            "Training accuracy runs far ahead of validation: the model memorises its "
            "training images instead of learning what carries over to new ones."
        )
    elif gap < -2:
        cfg = meta.get("config", {})
        net = cfg.get("network", cfg.get("hp", {}))
        active = [
            *(["dropout"] if net.get("dropout") or net.get("dense_dropout") else []),
            *(["augmentation"] if cfg.get("flip") or cfg.get("translate") else []),
        ]
        why = f"with {' and '.join(active)} active" if active else "over the epoch, as it improved"
        lines.append(
            f"Validation is ahead of training: the training accuracy is measured {why}, "
            "validation on the images as they are, with the weights at the epoch's end."
        )
    return " ".join(lines)


def search_reading(search: dict) -> str:
    """What the search decided, from its saved JSON (``tune.load_search``): the winning
    trial and why, and how its learning rate goes from the trials' batch to the final
    one."""
    from cifarlab.training.winner import trial_number

    win, cfg = search["winner"], search["config"]
    epochs = search["budget"]["epochs"]
    text = (
        f"**The winner: trial {trial_number(win['trial_id'])}** (validation accuracy "
        f"{win['val_accuracy']:.1%} after {epochs} epoch{'s' if epochs != 1 else ''} of its "
        f"trial): {win['why']}."
    )
    trial_batch = search["budget"]["batch_size"]
    if trial_batch and trial_batch != cfg["batch_size"]:
        rule = "linearly" if cfg["optimizer"] == "sgd" else "by the square root"
        # the rule the search applied (TrainConfig.at_batch), taken back to the trials' batch
        trial_lr = (
            TrainConfig.from_dict({"model": "tuned", **cfg}).at_batch(trial_batch).learning_rate
        )
        text += (
            f" The trials ran at batch {trial_batch}; the tuned model trains at batch "
            f"{cfg['batch_size']}, so its peak learning rate grows with the batch ({rule} "
            f"under {cfg['optimizer']}): {trial_lr:g} in the trials, "
            f"{cfg['learning_rate']:g} here."
        )
    return text


def one_image_words(out, name: str, ds: Dataset, index: int, probabilities) -> str:
    """A reading of one test image's prediction by the saved model ``name``: right or
    wrong, how sure, and how often the model is wrong at all (its test accuracy)."""
    import pandas as pd

    true = ds.class_names[int(ds.y_test[index])]
    guess = int(np.argmax(probabilities))
    p = float(probabilities[guess])
    accuracy = float(
        pd.read_csv(layout(out).results_csv).set_index("model").at[name, "test_accuracy"]
    )
    text = f"The true class is **{true}**; {name}'s first guess is **{ds.class_names[guess]}** ({p:.0%})"
    if ds.class_names[guess] == true:
        text += f": right, as it is on {accuracy:.0%} of the test images."
    else:
        text += (
            f": wrong. With {accuracy:.1%} test accuracy it misses about "
            f"{round(10 * (1 - accuracy))} test images in 10, and this is one of them."
        )
    smoothing = layout(out).read_meta(name)["config"].get("label_smoothing", 0.0)
    if smoothing:
        text += (
            f" Trained with label smoothing {smoothing:g}, its probabilities stop short of "
            f"100% even where it is sure: compare them between images, not with 100%."
        )
    return text


def difference_margin(a: float, b: float, n: int, z: float = 1.96) -> float:
    """The 95% margin of the difference of two accuracies, each measured on ``n`` images
    (normal approximation of the binomial)."""
    return z * math.sqrt((a * (1 - a) + b * (1 - b)) / n) if n else float("inf")


def is_tie(a: float, b: float, n: int) -> bool:
    """Two accuracies on ``n`` images tie where their difference is within its margin."""
    return abs(a - b) <= difference_margin(a, b, n)


# --------------------------------------------------------------------------- pictures


def samples(ds: Dataset, split, out, seed: int = 0) -> Path:
    """Training images per class; on CIFAR-100 one row per superclass."""
    return figures.sample_grid(ds, split, layout(out).figure("samples"), seed)


def augmented_views(cfg: TrainConfig, x: np.ndarray, views: int = 6) -> np.ndarray:
    """``(len(x), views, 32, 32, 3)``: each image as stored, then ``views - 1`` epochs of
    what training does to it (seeded): the batches' alternating flips and whole-pixel
    shifts (cifarlab.data.batches), then the model's own augmentation layers in training
    mode. A shrunk early epoch's view (``low_res``) is enlarged back, pixel by pixel."""
    import keras

    from cifarlab.data.batches import training_batches
    from cifarlab.models.cnn import model_augmentation

    x = x.astype("float32")
    layer = model_augmentation(cfg)
    seen = training_batches(x, np.zeros(len(x), int), cfg.replace(batch_size=len(x)), seed=0)
    keras.utils.set_random_seed(0)
    out = [x]
    for _ in range(views - 1):
        batch = seen[0][0]  # one batch: every image, in order
        if batch.shape[1] != x.shape[1]:  # shrunk: each pixel drawn as a block
            rows = np.arange(x.shape[1]) * batch.shape[1] // x.shape[1]
            cols = np.arange(x.shape[2]) * batch.shape[2] // x.shape[2]
            batch = batch[:, rows][:, :, cols]
        if layer is not None:
            batch = np.asarray(keras.ops.convert_to_numpy(layer(batch, training=True)))
        out.append(batch)
        seen.on_epoch_end()
    return np.stack(out, axis=1)


def augmentation(name: str, cfg: TrainConfig, split, out, images: int = 4, views: int = 6):
    """A few training images and what ``name``'s augmentation makes of them."""
    grid = augmented_views(cfg, split.x_train[:images], views)
    path = layout(out).figure("augmentation", name)
    return figures.augmentation_grid(name, grid, _augmentation_words(cfg), path)


def _augmentation_words(cfg: TrainConfig) -> str:
    from cifarlab.data.batches import batch_shift

    flip = (
        "alternating horizontal flip" if cfg.flip_mode == "alternate" else "random horizontal flip"
    )
    shift = f"random shift up to {cfg.translate:.0%} (reflect-padded)"
    if cfg.pixel_shifts:
        shift = f"random shift by 0-{batch_shift(cfg)} whole pixels (reflect-padded crop)"
    parts = ([flip] if cfg.flip else []) + ([shift] if cfg.translate else [])
    parts += [f"random rotation up to {cfg.rotation * 360:.0f} deg"] if cfg.rotation else []
    if cfg.low_res_epochs:
        parts.append(
            f"the first {cfg.low_res_epochs} epochs shrunk to {cfg.low_res}x{cfg.low_res} "
            "(drawn enlarged)"
        )
    return ", ".join(parts) or "none: the model sees each training image as it is"


def architecture(name: str, cfg: TrainConfig, show_summary: bool = True, out=None) -> dict:
    """``name`` built from ``cfg`` (VGG16 without downloading weights): prints Keras'
    summary, with ``out`` draws it (:func:`graph`), and returns the parameter counts and
    forward FLOPs per image, at the full size it is saved at (shrunk early epochs, where
    ``cfg`` has them, cost less)."""
    from cifarlab.models import build
    from cifarlab.models.flops import count_flops
    from cifarlab.models.vgg16 import build_vgg16

    cfg = cfg.full_size()
    model = build_vgg16(cfg, weights="none") if name == "vgg16" else build(cfg)
    if show_summary:
        model.summary(line_length=100, expand_nested=False)
    trainable = _params(model.trainable_weights)
    card = {
        "model": name,
        "params": int(model.count_params()),
        "trainable_params": trainable,
        "forward_mflops_per_image": round(count_flops(model) / 1e6, 1),
        "layers": len(model.layers),
        "graph": None if out is None else graph(model, layout(out).figure("graph", name)),
    }
    if name == "vgg16":  # what trains depends on the phase, not on the built model
        card.update(_vgg16_phases(model, cfg))
        print(
            f"{name}: {card['params']:,} parameters (phase 1 trains the head's "
            f"{card['phase1_trainable']:,}, phase 2 the head and the fine-tuned block's "
            f"{card['phase2_trainable']:,}), "
            f"{card['forward_mflops_per_image']:,} MFLOP forward per 32x32 image"
        )
        return card
    print(
        f"{name}: {card['params']:,} parameters ({trainable:,} trainable), "
        f"{card['forward_mflops_per_image']:,} MFLOP forward per 32x32 image"
    )
    return card


def graph(model, path: Path) -> Path | None:
    """``model`` drawn by Keras' ``plot_model`` (each layer with its output shape) to
    ``path`` and shown; where graphviz is missing, one line that says so instead (its
    layers are in the summary). Returns the picture's path, or None."""
    import keras

    if not has_graphviz():
        print(
            "(plot_model draws this network with graphviz, which this machine lacks: "
            "`pip install pydot` and graphviz's `dot` program; Colab has both. "
            "The summary above lists the same layers.)"
        )
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    keras.utils.plot_model(model, to_file=str(path), show_shapes=True, dpi=60)
    figures.show(path)
    return path


def has_graphviz() -> bool:
    """Whether ``plot_model`` can draw here: pydot installed and graphviz's ``dot`` found."""
    import importlib.util
    import shutil

    return importlib.util.find_spec("pydot") is not None and shutil.which("dot") is not None


def _vgg16_phases(model, cfg: TrainConfig) -> dict:
    """The parameters each of VGG16's phases trains: the head alone, then the head and
    the fine-tuned block(s) (cifarlab.training.transfer)."""
    from cifarlab.models.vgg16 import vgg16_parts

    _, top = vgg16_parts(model, cfg.network["finetune_blocks"])
    head = [
        w for lay in top.layers if not lay.name.startswith("block") for w in lay.trainable_weights
    ]
    return {"phase1_trainable": _params(head), "phase2_trainable": _params(top.trainable_weights)}


def _params(weights) -> int:
    """Parameters in ``weights`` (a model's or layers' variables)."""
    return int(sum(np.prod(w.shape) for w in weights))


def schedule_values(cfg: TrainConfig, train_images: int, points: int = 600):
    """``(steps, rates, steps_per_epoch)``: the learning rate the optimizer computes
    (cifarlab.training.recipe.learning_rate) at up to ``points`` of the training's steps."""
    import keras

    from cifarlab.training.recipe import learning_rate

    per_epoch = cfg.steps_per_epoch(train_images)
    total = cfg.epochs * per_epoch
    steps = np.unique(np.linspace(0, total - 1, min(total, points)).round().astype(int))
    sched = learning_rate(cfg, total)
    if callable(sched):
        rates = np.array([float(keras.ops.convert_to_numpy(sched(int(s)))) for s in steps])
    else:
        rates = np.full(len(steps), float(sched))
    return steps, rates, per_epoch


def lr_schedule(name: str, cfg: TrainConfig, train_images: int, out) -> Path:
    """The learning-rate schedule of ``name``'s training as a figure."""
    steps, rates, per_epoch = schedule_values(cfg, train_images)
    path = layout(out).figure("lr_schedule", name)
    return figures.schedule_curve(name, steps, rates, per_epoch, cfg, path)


# --------------------------------------------------------------------------- expectations


def expected_table():
    """The Expected figures (``cifarlab/expected.csv``, shipped with the package so that a
    pip-installed copy such as Colab's quotes them too; RESULTS.md shows the same rows
    beside their evidence) as a DataFrame of strings."""
    import pandas as pd

    return pd.read_csv(EXPECTED_CSV, dtype=str, keep_default_na=False)


def expected_markdown() -> str:
    """The Expected figures as the Markdown table RESULTS.md shows (``python -m
    cifarlab.course`` writes it there from ``expected.csv``, the one source)."""
    table = expected_table()
    rows = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    rows += ["| " + " | ".join(row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(rows)


def write_expected_section(results_md: Path) -> None:
    """Replace the table of RESULTS.md's Expected figures section by :func:`expected_markdown`."""
    text = results_md.read_text()
    start = text.index("## Expected figures")
    end = text.index("\n## ", start + 5)
    section = text[start:end]
    lines = section.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("| "))
    last = max(i for i, ln in enumerate(lines) if ln.startswith("|"))
    new = "\n".join(lines[:first] + [expected_markdown()] + lines[last + 1 :])
    results_md.write_text(
        text[:start] + new + ("\n" if section.endswith("\n") else "") + text[end:]
    )


def expected(
    name: str, dataset_name: str, profile: str, epochs: int | None = None,
    num_classes: int | None = None,
) -> str:  # fmt: skip
    """What to expect before ``name`` trains: the measured figure for this dataset and
    profile (:func:`expected_table`) nearest to ``epochs``, with its evidence and the RESULTS.md section that
    holds it (which names, for vgg16, the weights it started from), or "not measured". A
    figure measured with another number of epochs than the profile now has is said to be
    so. Given ``num_classes``, the chance level too."""
    floor = f" {chance(num_classes)}" if num_classes else ""
    table = expected_table()
    if not table.empty:
        key = dataset_name.lower()
        table = table[(table["model"] == name) & (table["dataset"].str.lower() == key)]
    others = table[table["profile"] != profile] if not table.empty else table
    table = table[table["profile"] == profile] if not table.empty else table
    if table.empty:  # this profile not measured: the latest figure of each other profile
        elsewhere = "".join(
            f" Measured on profile {r['profile']}: {r['test accuracy']} after {r['epochs']} "
            f"epochs ({r['date']})."
            for _, r in others.groupby("profile").tail(1).iterrows()
        )
        return f"{name} on {dataset_name}, profile {profile}: not measured yet.{elsewhere}{floor}"
    counts = table["epochs"].map(lambda e: sum(int(p) for p in str(e).split("+")))
    # the figure measured nearest to the epochs this run trains (the latest without them)
    row = table.iloc[-1] if epochs is None else table.loc[_nearest(counts, epochs)]
    text = (
        f"{name} on {dataset_name}, profile {profile}: measured {row['test accuracy']} test "
        f"accuracy after {row['epochs']} epochs ({row['hardware']}, {row['backend']}, "
        f"seed {row['seed']}, commit {row['commit']}, {row['date']}; RESULTS.md, "
        f"section '{row['section']}')."
    )
    measured_epochs = sum(int(part) for part in str(row["epochs"]).split("+"))
    if epochs is not None and epochs != measured_epochs:
        text += f" The profile now trains {epochs} epochs: expect a different figure."
    return text + floor


def _nearest(counts, epochs: int):
    """The index of the row measured nearest to ``epochs`` (the latest among ties)."""
    gap = (counts - epochs).abs()
    return gap[gap == gap.min()].index[-1]


def nearest_measured(name: str, dataset_name: str, profile: str, epochs: int) -> str:
    """The measured test accuracy of ``name`` (Expected figures) nearest to ``epochs``
    epochs, with its epochs; "not measured" where none is."""
    table = expected_table()
    if table.empty:
        return "not measured"
    rows = table[
        (table["model"] == name)
        & (table["dataset"].str.lower() == dataset_name.lower())
        & (table["profile"] == profile)
    ]
    if rows.empty:
        return "not measured"
    count = rows["epochs"].map(lambda e: sum(int(p) for p in str(e).split("+")))
    row = rows.loc[_nearest(count, epochs)]
    return f"{row['test accuracy']} at {row['epochs']} epochs"


def plan_table(plan: dict):
    """The series' plan as the notebook shows it: each part, its epochs (trials), its
    predicted minutes, and what to expect of each model."""
    import pandas as pd

    from cifarlab.training.plan import table

    rows = table(plan)
    for r in rows:
        count = r.get("epochs", r.get("trials"))
        r["expect"] = (
            "" if r["part"] == "search"
            else nearest_measured(r["part"], plan["dataset"], plan["profile"], count)
        )  # fmt: skip
    return pd.DataFrame(rows)


def describe_plan(plan: dict) -> str:
    """:func:`cifarlab.training.plan.describe` with what to expect of each model."""
    from cifarlab.training.plan import describe

    expect = dict(zip(*plan_table(plan)[["part", "expect"]].T.values))
    return describe(plan, expect)


# --------------------------------------------------------------------------- the reading


#: what a student can try next: (what, the TrainConfig field it changes, where to set it)
NEXT_STEPS = (
    ("Train longer: more epochs buy accuracy until the curves flatten",
     "epochs", "`--epochs 30`, or `budget = 120` for the whole series"),
    ("Make the baseline overfit less: stronger augmentation",
     "translate", "`RECIPES['baseline']` `translate`, `rotation`"),
    ("Widen or narrow the tuned network: accuracy against minutes",
     "network", "`network={'widths': [64, 128, 128]}` (`cifarlab ablate --widths 64 128 128`)"),
    ("Switch the optimizer or its schedule",
     "optimizer", "`optimizer` (adam, adamw, sgd), `schedule` (cosine, linear, constant)"),
    ("Average predictions over flipped and shifted copies at test time",
     "tta_flip", "`tta_flip`, `tta_shift`"),
    ("Run on another dataset: CIFAR-10, or any folder of images with one folder per class",
     "val_fraction", "the `dataset` parameter (`cifar10`, a folder, a .tar.gz or .zip)"),
)  # fmt: skip


def next_steps() -> str:
    """:data:`NEXT_STEPS` as a Markdown list (the settings live in ``config.RECIPES``;
    ``cifarlab config MODEL`` prints them)."""
    return "\n".join(f"- {what}: {where}." for what, _, where in NEXT_STEPS)


def filter_changes(out):
    """How far training moved each saved model's first-layer filters from their start,
    read in a sentence each (a Markdown display in a notebook)."""
    from cifarlab.evaluation.inference import trained_models
    from cifarlab.evaluation.visualize import filter_change

    lines = []
    for name in trained_models(out):
        change = filter_change(out, name)
        if change is None:
            start = "pretrained and frozen" if name == "vgg16" else "the data's whitening"
            lines.append(f"- **{name}**: its first convolution is {start}, not learnt here.")
            continue
        said = (
            "barely moved from its random start: the filters still look like noise"
            if change < 0.3
            else "moved well away from its random start"
        )
        lines.append(f"- **{name}**: the first-layer kernel changed by {change:.0%}: {said}.")
    return _markdown("\n".join(lines))


def _markdown(text: str):
    try:
        from IPython.display import Markdown
    except ImportError:
        return text
    return Markdown(text)


# --------------------------------------------------------------------------- the reading


def collapsed(out, models) -> list[str]:
    """A line for each model that guesses one class far more often than the classes
    occur (three times its share or more): it has collapsed onto few classes."""
    import pandas as pd

    lay: Layout = layout(out)
    lines = []
    for name in models:
        path = lay.per_class(name)
        if not path.is_file():
            continue
        table = pd.read_csv(path)
        if "predicted" not in table or table["predicted"].sum() == 0:
            continue
        share = table["predicted"] / table["predicted"].sum()
        top = share.idxmax()
        fair = table["support"][top] / table["support"].sum()
        if share[top] >= 3 * fair:
            lines.append(
                f"- {name} guesses *{table['class'][top]}* for {share[top]:.0%} of the test "
                f"images, a class that is {fair:.0%} of them: it has collapsed onto few "
                "classes (too little training to tell the others apart)."
            )
    return lines


def reading(out) -> str:
    """A short reading of the evaluated series, written from reports/results.csv and the
    confused pairs: the winner and its margin, the overfitting gap, the most confused
    pairs and, on CIFAR-100, the superclasses confused most."""
    import pandas as pd

    lay: Layout = layout(out)
    table = pd.read_csv(lay.results_csv)
    ranked = table.sort_values("test_accuracy", ascending=False)
    best, lines = ranked.iloc[0], []
    n = int(table["test_images"].iloc[0]) if "test_images" in table else 0
    if len(ranked) > 1:
        second = ranked.iloc[1]
        a, b = best["test_accuracy"], second["test_accuracy"]
        ahead = 100 * (a - b)
        pm = 100 * difference_margin(a, b, n)
        on = f" on {n:,} test images" if n else ""
        if n and is_tie(a, b, n):
            lines.append(
                f"- **{best['model']}** and **{second['model']}** tie: {a:.2%} and {b:.2%}"
                f"{on}, {ahead:.1f} points apart, within the difference's 95% margin of "
                f"±{pm:.1f} points. More test images, or more epochs, would be needed to "
                "tell them apart."
            )
        else:
            lines.append(
                f"- **{best['model']}** wins with {a:.2%} test accuracy, {ahead:.1f} points "
                f"ahead of {second['model']} ({b:.2%})"
                + (f"{on}: beyond the difference's 95% margin of ±{pm:.1f} points." if n else ".")
            )
    else:
        lines.append(f"- {best['model']}: {best['test_accuracy']:.2%} test accuracy.")
    worst = ranked.iloc[-1]
    if len(ranked) > 2:
        lines.append(f"- Last: {worst['model']} ({worst['test_accuracy']:.2%}).")
    gaps = table.set_index("model")["train_val_gap"].dropna()
    if "overfit" in gaps.index:
        others = gaps.drop("overfit")
        lines.append(
            f"- The overfitting model ends {100 * gaps['overfit']:+.1f} points between training "
            f"and validation accuracy"
            + (
                f", against at most {100 * others.max():+.1f} for the others."
                if len(others)
                else "."
            )
        )
    models = table.set_index("model")
    if {"baseline", "overfit"} <= set(models.index) and "epochs" in models:
        b, o = models.loc["baseline"], models.loc["overfit"]
        if o["test_accuracy"] > b["test_accuracy"] and o["epochs"] > b["epochs"]:
            lines.append(
                f"- The overfitting model scores above the baseline ({o['test_accuracy']:.2%} "
                f"against {b['test_accuracy']:.2%}): it trained {int(o['epochs'])} epochs to "
                f"the baseline's {int(b['epochs'])}. Memorising still learns something; the "
                "baseline, regularised, needs more epochs to pull ahead."
            )
    lines += collapsed(out, table["model"])
    pairs = pd.read_csv(lay.confused_pairs(best["model"]))
    if len(pairs):
        top = pairs.head(3)
        said = ", ".join(f"{r.true} -> {r.predicted} ({r.count})" for r in top.itertuples())
        lines.append(f"- {best['model']}'s most confused pairs: {said}.")
        if "same_superclass" in pairs:
            inside = int(pairs["same_superclass"].sum())
            lines.append(
                f"- {inside} of its {len(pairs)} most confused pairs lie inside one superclass "
                f"(chance: about {len(pairs) * 4 / 99:.1f})."
            )
    per_super = lay.per_superclass(best["model"])
    if per_super.is_file():
        sup = pd.read_csv(per_super).sort_values("recall")
        hard = ", ".join(f"{r.superclass} ({r.recall:.0%})" for r in sup.head(3).itertuples())
        lines.append(
            f"- Its hardest superclasses (recall of the fine predictions mapped up): {hard}."
        )
    return "\n".join(lines)


if __name__ == "__main__":  # python -m cifarlab.course RESULTS.md: its Expected figures table
    import sys

    write_expected_section(Path(sys.argv[1] if len(sys.argv) > 1 else "RESULTS.md"))
