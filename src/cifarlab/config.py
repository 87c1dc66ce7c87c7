"""Configuration: one typed object per training run, and the named profiles.

Every knob lives here, with the reason for its value. A profile gives each model's
defaults; CLI flags override single fields. The config is saved with every model.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from cifarlab.errors import CifarlabError

PROFILES = ("smoke", "cpu", "full")


@dataclass
class TrainConfig:
    """Everything that determines one training run (saved as JSON beside the model)."""

    model: str
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"  # adam | adamw | sgd (SGD uses Nesterov momentum 0.9)
    learning_rate: float = 1e-3  # peak learning rate
    schedule: str = "cosine"  # cosine (linear warm-up, then cosine to 0) | constant
    warmup_fraction: float = 0.0  # of all steps; 0.2-0.3 gives a one-cycle shape
    weight_decay: float = 0.0  # decoupled (Keras optimizers' weight_decay)
    label_smoothing: float = 0.0
    augment: float = 0.0  # 0 none; >0: flip + translate by this fraction (+ small rotation)
    early_stopping: int | None = None  # patience in epochs on val_accuracy; None = off
    train_limit: int | None = None  # draw this many training images before the split
    # after the split: train on this many of the training images; validation stays the
    # protocol's whole hold-out set (the overfitting model's small training set)
    train_subset: int | None = None
    test_limit: int | None = None  # evaluate on a stratified subset of the test split
    val_fraction: float = 0.2  # 40,000 / 10,000 for CIFAR
    tta_flip: bool = False  # average predictions over the image and its mirror
    # auto: mixed_bfloat16 on a GPU (tensor cores, no loss scaling needed) and on CPUs
    # with AVX-512 BF16 / AMX under TensorFlow (1.3x measured here); float32 otherwise.
    # Or float32 / mixed_bfloat16 / mixed_float16.
    precision: str = "auto"
    hp: dict = field(default_factory=dict)  # architecture hyperparameters for the builder
    # filled in by the training code from the training split (never from val/test):
    mean: list[float] | None = None
    std: list[float] | None = None
    num_classes: int | None = None

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def validate(self) -> TrainConfig:
        if self.epochs < 1:
            raise CifarlabError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise CifarlabError(f"--batch-size must be at least 1, got {self.batch_size}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def has_gpu() -> bool:
    """True when the active Keras backend sees a GPU (decides the default profile)."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    try:
        if backend == "jax":
            import jax

            return any(d.platform == "gpu" for d in jax.devices())
        if backend == "torch":
            import torch

            return torch.cuda.is_available()
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    except Exception:
        return False


def resolve_profile(name: str | None) -> str:
    if name is None or name == "":
        return "full" if has_gpu() else "cpu"
    if name not in PROFILES:
        raise CifarlabError(f"unknown profile '{name}'; choose one of {', '.join(PROFILES)}")
    return name


# --------------------------------------------------------------------------- profiles
# smoke: tests and a first look. A few hundred images, one or two epochs; it proves the
#        plumbing, not the models.
# cpu:   the whole series in about an hour on 2 cores (see BENCHMARKS.md for the
#        measured time and accuracy); all 40k/10k images for the main models.
# full:  a GPU. All the data and the epochs the models need.

_PROFILE_DEFAULTS: dict[str, dict] = {
    "smoke": dict(train_limit=1000, test_limit=500, batch_size=64),
    "cpu": dict(batch_size=128),
    "full": dict(batch_size=256),
}

_TUNED_RECIPE = dict(
    optimizer="sgd",
    learning_rate=0.2,
    warmup_fraction=0.2,
    weight_decay=5e-4,
    label_smoothing=0.2,
    augment=0.125,
    tta_flip=True,
)

_MODEL_DEFAULTS: dict[str, dict[str, dict]] = {
    "baseline": {
        # The classic Keras-tutorial CNN with Adam: the reference point, not tuned.
        "smoke": dict(epochs=3, early_stopping=3),
        "cpu": dict(epochs=6, early_stopping=3, augment=0.1),
        "full": dict(epochs=40, early_stopping=8, augment=0.1),
    },
    "overfit": {
        # No dropout, no augmentation, no early stopping, and a quarter of the training
        # images, validated on the same 10,000 hold-out images as the others: the gap
        # between train and validation is the lesson.
        # A constant learning rate: a decaying one would damp the memorisation.
        "smoke": dict(epochs=12, schedule="constant"),
        "cpu": dict(epochs=15, train_subset=10_000, schedule="constant"),
        "full": dict(epochs=40, train_subset=10_000, schedule="constant"),
    },
    "tuned": {
        # Modern small-budget recipe (BN residual net, SGD+Nesterov, warm-up + cosine,
        # label smoothing, flip + crop, test-time flip). The search may change all of it.
        "smoke": dict(
            _TUNED_RECIPE, epochs=3, learning_rate=0.05, label_smoothing=0.1, augment=0.1
        ),
        "cpu": dict(_TUNED_RECIPE, epochs=24, batch_size=256),
        "full": dict(_TUNED_RECIPE, epochs=30, batch_size=512, learning_rate=0.4),
    },
    "vgg16": {
        # epochs = head epochs (base frozen, cached features) + fine-tune epochs.
        "smoke": dict(epochs=3, early_stopping=None, hp=dict(head_epochs=2, finetune_lr=1e-4)),
        # measured (cpu run 1): val 46% after the head, 68% after 5 fine-tuning epochs and
        # still rising; the budget allows 11.
        "cpu": dict(epochs=14, hp=dict(head_epochs=3, finetune_lr=1e-4, image_size=48)),
        "full": dict(
            epochs=20,
            batch_size=128,
            augment=0.0,
            hp=dict(head_epochs=5, finetune_lr=5e-5, image_size=64),
        ),
    },
}

#: The search budget per profile: trials, epochs per trial, training images per trial,
#: batch size of a trial. A trial must take enough optimiser steps to rank recipes the
#: way full training would: at 94 steps per trial (3 epochs x 8,000 images, batch 256)
#: every trial scored 10-29% and the fastest starter (no batch norm) won, measured here.
SEARCH_BUDGET = {
    "smoke": dict(max_trials=2, epochs=1, train_limit=600, batch_size=64),
    "cpu": dict(max_trials=6, epochs=4, train_limit=10_000, batch_size=128),
    "full": dict(max_trials=20, epochs=10, train_limit=None, batch_size=256),
}


def model_config(model: str, profile: str, **overrides) -> TrainConfig:
    """The config for ``model`` under ``profile``, with ``overrides`` (None = keep)."""
    if model not in _MODEL_DEFAULTS:
        raise CifarlabError(f"unknown model '{model}'; choose one of {', '.join(_MODEL_DEFAULTS)}")
    profile = resolve_profile(profile)
    values = {**_PROFILE_DEFAULTS[profile], **_MODEL_DEFAULTS[model][profile]}
    values["hp"] = {**default_hp(model), **values.get("hp", {})}
    return TrainConfig(model=model, **values).replace(**overrides).validate()


def default_hp(model: str) -> dict:
    """Architecture defaults of each builder."""
    return {
        "baseline": dict(widths=[32, 64], convs=[3, 4], dense=512, dropout=0.25, dense_dropout=0.5),
        "overfit": dict(widths=[32, 64], convs=[3, 4], dense=1024),
        "tuned": dict(width=32, depth=1, batch_norm=True, residual=True, dropout=0.0),
        "vgg16": dict(
            dense=256,
            dropout=0.3,
            head_epochs=3,
            finetune_blocks=1,
            finetune_lr=1e-4,
            image_size=32,
            mirror_features=True,
        ),
    }[model]
