"""Transfer learning for the VGG16 model: two phases on features computed once.

Phase 1 trains only the head on the frozen base's features, computed once per run and
kept on disk (a resumed run does not recompute them). Phase 2 unfreezes the top
``finetune_blocks`` VGG block(s) and fine-tunes them with the head at a low learning
rate, still on cached features (the frozen blocks below never change). With
``mirror_features`` the features of every training image's mirror image are cached
too, and each epoch shows one of the two per image (cifarlab.data.batches.Batches):
augmentation without recomputing features.

The settings (head epochs, fine-tuning optimizer, rate and warm-up, image size) are
the ``network`` of the vgg16 recipe in cifarlab.config.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from cifarlab.config import TrainConfig
from cifarlab.data.datasets import Split
from cifarlab.layout import atomic_path
from cifarlab.models.vgg16 import build_vgg16, vgg16_parts
from cifarlab.training.callbacks import keras_verbose, restore_best
from cifarlab.training.recipe import compile_model


def cached_features(
    features: keras.Model,
    split: Split,
    work: Path,
    batch_size: int,
    progress: bool,
    mirror: bool = False,
) -> dict[str, np.ndarray]:
    """Frozen-base features for train and val (and, with ``mirror``, of the horizontally
    mirrored training images), computed once per run and kept in ``work``."""
    f = work / "features.npz"
    wanted = ["train", "val"] + (["train_mirror"] if mirror else [])
    if f.is_file():
        with np.load(f) as z:
            if set(wanted) <= set(z.files):
                return {k: z[k] for k in wanted}
    print(f"computing frozen VGG16 features once ({' + '.join(wanted)})", flush=True)
    inputs = {"train": split.x_train, "val": split.x_val}
    if mirror:
        inputs["train_mirror"] = split.x_train[:, :, ::-1]  # NHWC: flip the width
    out = {
        k: features.predict(x, batch_size=batch_size, verbose=keras_verbose(progress))
        for k, x in inputs.items()
    }
    with atomic_path(f) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **out)
    return out


def finetune_config(cfg: TrainConfig) -> TrainConfig:
    """Phase 2's optimisation settings, from the recipe's ``network``."""
    net = cfg.network
    return cfg.replace(
        optimizer=net["finetune_optimizer"],
        learning_rate=net["finetune_lr"],
        warmup_fraction=net["finetune_warmup_fraction"],
    )


def train_vgg16(
    cfg: TrainConfig,
    split: Split,
    work: Path,
    logs: Path,
    weights: str,
    fit: Callable[..., list[dict]],
    progress: bool = True,
    seed: int = 0,
) -> tuple[keras.Model, list[dict], dict]:
    """Build VGG16 with ``weights``, train the head, then fine-tune the top block(s).

    ``fit``: the fitting function (:func:`cifarlab.training.train.fit`), run once per phase.
    Returns the full model (raw pixels in), the history records of both phases, and
    what the evidence should say about the transfer.
    """
    net = cfg.network
    model = build_vgg16(cfg, weights=weights)
    features, top = vgg16_parts(model, net["finetune_blocks"])
    mirror = bool(net["mirror_features"])
    clock = [time.perf_counter()]  # phase boundaries: features, head, fine-tuning

    def lap() -> float:
        clock.append(time.perf_counter())
        return round(clock[-1] - clock[-2], 1)

    feats = cached_features(features, split, work, cfg.batch_size, progress, mirror)
    data = dict(
        x=feats["train"],
        y=split.y_train,
        x_val=feats["val"],
        y_val=split.y_val,
        work=work,
        logs=logs,
        progress=progress,
        x_mirror=feats.get("train_mirror"),
        seed=seed,
    )
    head_epochs = min(net["head_epochs"], cfg.epochs)
    ft_epochs = cfg.epochs - head_epochs
    cut = 5 - net["finetune_blocks"] + 1  # the first fine-tuned VGG block
    vgg_top = [layer for layer in top.layers if layer.name.startswith("block")]
    for layer in vgg_top:
        layer.trainable = False
    steps = cfg.steps_per_epoch(len(split.y_train))
    compile_model(top, cfg, head_epochs * steps)
    seconds = {"features": lap()}
    print(
        f"phase 1 of {2 if ft_epochs > 0 else 1}: the head alone, on the frozen features, "
        f"{head_epochs} epoch{'s' if head_epochs > 1 else ''}: {_count(top.trainable_weights):,} of the model's "
        f"{model.count_params():,} parameters train",
        flush=True,
    )
    records = fit(top, cfg, phase=1, epochs=head_epochs, **data)
    restored = restore_best(top, work / "best1.weights.h5")
    seconds["head"] = lap()
    if ft_epochs > 0:
        for layer in vgg_top:
            layer.trainable = True
        ft = finetune_config(cfg)
        compile_model(top, ft, ft_epochs * steps)
        print(
            f"phase 2 of 2: block{cut} onwards unfrozen and fine-tuned with the head at a "
            f"learning rate of {ft.learning_rate:g}, {ft_epochs} epoch{'s' if ft_epochs > 1 else ''}: "
            f"{_count(top.trainable_weights):,} of the model's {model.count_params():,} "
            "parameters train",
            flush=True,
        )
        rec2 = fit(top, ft, phase=2, epochs=ft_epochs, **data)
        records = records + [{**r, "epoch": r["epoch"] + head_epochs} for r in rec2]
        restored = restore_best(top, work / "best2.weights.h5")
        seconds["finetune"] = lap()
    extra = {
        "restored_best_weights": restored,  # the last phase's best epoch, as saved
        "weights_source": model.weights_source,
        "vgg16": {
            "image_size": net["image_size"],
            "finetuned_from_block": cut,
            "head_epochs": head_epochs,
            "finetune_epochs": ft_epochs,
            "frozen_features_cached": True,
            "mirror_features": mirror,
            "seconds": seconds,  # this process's: a resumed run counts its own part
            "note": "features computed once"
            + (", also of the mirror images: each epoch picks one per image" if mirror else ""),
        },
    }
    compile_model(model, cfg, 1)  # so the saved full model evaluates with the same metrics
    return model, records, extra


def _count(weights) -> int:
    """Parameters in ``weights`` (a model's trainable_weights or weights)."""
    return int(sum(int(np.prod(w.shape)) for w in weights))
