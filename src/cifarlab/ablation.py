"""Taking the airbench recipe apart: what each part buys, measured.

``cifarlab ablate`` trains the ``tuned`` model with the airbench recipe of the profile
(:data:`cifarlab.config.AIRBENCH`) once whole, then once without each part in turn
(:data:`PARTS`), with the same data, seed, epochs and batch, each run in its own output
root (``ablation/<part>/``, cifarlab.layout). Every saved model is scored the way anyone
can score it: Keras' safe-mode ``load_model`` and ``predict`` on the raw uint8 test
images (cifarlab.evaluation.inference); test-time views count only where they are part of the saved
model. ``reports/ablation.csv`` and ``ablation.md`` hold test accuracy, top-5, the
difference to the whole recipe and the training time, as airbench's own ablation table
does; ``reports/figures/ablation_minutes.png`` each run's accuracy against its minutes.
A run already finished with the same config is read back, not trained again, so an
interrupted ablation resumes where it stopped.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from cifarlab.config import TrainConfig, airbench_config, resolve_profile
from cifarlab.data.datasets import Dataset, load_dataset
from cifarlab.errors import CifarlabError
from cifarlab.layout import atomic_path, layout

if TYPE_CHECKING:
    import pandas as pd

#: Each part of the recipe: what it is, and the config change that removes it.
PARTS: dict[str, tuple[str, dict]] = {
    "whitening": ("frozen 2x2 whitening layer (a trained 3x3 stem instead)", {"whiten": False}),
    "whitening-bias": ("the whitening layer's bias, trained for 3 epochs (no bias instead)", {"whiten_bias_epochs": 0}),
    "scale-free-bn": ("batch norm without scale", {"bn_scale": True}),
    "fast-bn-statistics": ("running statistics at momentum 0.6 (0.9 instead)", {"bn_momentum": 0.9}),
    "gelu": ("GELU (ReLU instead)", {"activation": "relu"}),
    "identity-init": ("identity-initialised convolutions", {"identity_init": False}),
    "scaled-head": ("logits scaled by 1/9", {"head_scale": 1.0}),
    "label-smoothing": ("label smoothing 0.2", dict(label_smoothing=0.0)),
    "coupled-l2": ("coupled L2", dict(l2=0.0)),
    "bias-step": ("64x step for batch-norm biases", dict(bias_lr_scale=1.0)),
    "lookahead": ("lookahead averaging every 5 steps", dict(lookahead=0)),
    "warm-up": ("linear warm-up over 23% of the steps", dict(warmup_fraction=0.0)),
    "pixel-shifts": ("whole-pixel pad-and-crop (interpolated shifts instead)", dict(pixel_shifts=False)),
    "alternating-flips": ("alternating flips (a coin per step instead)", dict(flip_mode="random")),
    "drop-last": ("only full batches (each epoch's last, partial one kept instead)", dict(drop_last=False)),
    "test-time-views": ("6-view test-time augmentation", dict(tta_flip=False, tta_shift=0)),
}  # fmt: skip
#: The first row: nothing removed.
WHOLE = "whole"


def without(cfg: TrainConfig, part: str) -> TrainConfig:
    """``cfg`` with ``part`` removed (``whole``: unchanged)."""
    if part == WHOLE:
        return cfg
    if part not in PARTS:
        raise CifarlabError(f"unknown part '{part}'; choose from {', '.join(PARTS)}")
    change = PARTS[part][1]
    if set(change) <= set(cfg.network) - {"arch"}:  # a network part
        return cfg.replace(network={**cfg.network, **change})
    return cfg.replace(**change)


def run_ablation(
    dataset: str | Dataset = "cifar100",
    profile: str | None = None,
    out=".",
    seed: int = 0,
    parts: list[str] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    widths: list[int] | None = None,
) -> pd.DataFrame:
    """Train and score the whole recipe and the recipe without each of ``parts``
    (default: all of :data:`PARTS`); returns the table it writes. ``epochs`` and
    ``batch_size`` override the profile's (the learning rate scales with the batch),
    ``widths`` the three conv groups' channels."""
    from cifarlab.evaluation.inference import predict_test
    from cifarlab.training.train import train_model

    profile = resolve_profile(profile)
    parts = list(PARTS) if parts is None else parts
    for part in parts:
        without(airbench_config("smoke"), part)  # unknown names fail before any training
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, progress=progress)
    base = airbench_config(profile, epochs=epochs)
    if widths:
        if len(widths) != 3 or min(widths) < 1:
            raise CifarlabError(f"widths: three positive channel counts, got {widths}")
        base = base.replace(network={**base.network, "widths": [int(w) for w in widths]})
    if batch_size:
        base = base.at_batch(batch_size)
    root = layout(out)
    rows = []
    for part in [WHOLE, *parts]:
        cfg, run = without(base, part), root.ablation_run(part)
        if not _finished(run, cfg, ds, seed):
            print(f"ablation: training the recipe {_label(part)}", flush=True)
            train_model("tuned", ds, profile, run.root, seed, train_config=cfg, progress=progress)
        pred = predict_test(run.root, "tuned", ds)
        top5 = np.argsort(pred.probs, axis=1)[:, -5:]
        meta, guess = pred.meta, pred.probs.argmax(1)
        coarse = ds.fine_to_coarse
        rows.append(
            {
                "part removed": part,
                "what it is": PARTS[part][0] if part in PARTS else "nothing removed",
                "test_accuracy": float((guess == pred.y).mean()),
                "test_top5": float((top5 == pred.y[:, None]).any(axis=1).mean()),
                **(
                    {"superclass_accuracy": float((coarse[guess] == coarse[pred.y]).mean())}
                    if ds.has_coarse
                    else {}
                ),
                "test_images": len(pred.y),
                "epochs": meta["epochs_run"],
                "train_time_s": meta["wall_time_s"],
                "backend": meta["backend"],
            }
        )
    table = _write(root, rows, ds, profile, seed, base)
    _figure(root, table, ds, profile)
    return table


def _figure(root, table, ds: Dataset, profile: str) -> None:
    """reports/figures/ablation_minutes.png: each run's validation accuracy against its
    training minutes, its test accuracy at the end (cifarlab.evaluation.figures.minutes_curve)."""
    from cifarlab.evaluation.figures import accuracy_vs_minutes, minutes_curve

    runs = [
        minutes_curve(root.ablation_run(row[0]).root, "tuned", _label(row[0]), row.test_accuracy)
        for row in table.itertuples(index=False)
    ]
    title = f"The airbench recipe taken apart: {ds.name}, profile {profile}"
    accuracy_vs_minutes(runs, title, root.figure("ablation_minutes"))


def _label(part: str) -> str:
    return "whole" if part == WHOLE else f"without {part}"


def _finished(run, cfg: TrainConfig, ds: Dataset, seed: int) -> bool:
    """A saved model of this config, data and seed is there (not a half-finished run)."""
    if not run.meta("tuned").is_file() or not run.model("tuned").is_file():
        return False
    meta = json.loads(run.meta("tuned").read_text())
    saved = TrainConfig.from_dict(meta["config"]).settings()
    want = cfg.settings()
    same_data = meta["dataset"]["sha256"] == ds.checksum and meta["seed"] == seed
    return same_data and json.loads(json.dumps(saved)) == json.loads(json.dumps(want))


def _write(root, rows, ds, profile, seed, base) -> pd.DataFrame:
    import pandas as pd

    from cifarlab.evaluation.evaluate import markdown_table

    table = pd.DataFrame(rows)
    whole = table.loc[table["part removed"] == WHOLE, "test_accuracy"].iloc[0]
    table.insert(3, "vs_whole", table["test_accuracy"] - whole)
    with atomic_path(root.ablation_csv) as tmp:
        table.to_csv(tmp, index=False)
    shown = table.copy()
    for col in ("test_accuracy", "test_top5", "superclass_accuracy")[: 3 if ds.has_coarse else 2]:
        shown[col] = shown[col].map(lambda v: f"{100 * v:.2f}%")
    shown["vs_whole"] = shown["vs_whole"].map(lambda v: f"{100 * v:+.2f}")
    shown["train_time_s"] = shown["train_time_s"].map(lambda v: f"{v:.0f}")
    head = (
        f"# Ablation of the airbench recipe\n\n{ds.name} (`{ds.spec}`, sha256 "
        f"`{ds.checksum[:16]}`), profile `{profile}`, seed {seed}, {base.epochs} epochs, batch "
        f"{base.batch_size}, widths {base.network['widths']}. Test accuracy of each saved model "
        "with plain Keras (safe-mode `load_model`, `predict` on the raw test images); "
        "vs_whole in points.\n\n"
    )
    with atomic_path(root.ablation_md) as tmp:
        tmp.write_text(head + markdown_table(shown) + "\n")
    return table
