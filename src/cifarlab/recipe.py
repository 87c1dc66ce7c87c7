"""How a model is compiled: optimizer and learning-rate schedule, loss, metrics, precision.

Used by training (cifarlab.train, cifarlab.transfer), the search (cifarlab.tune) and
the benchmark, so that all of them train with the same recipe. Every value comes from
the :class:`~cifarlab.config.TrainConfig`.
"""

from __future__ import annotations

import keras
import numpy as np

from cifarlab.config import TrainConfig
from cifarlab.errors import CifarlabError
from cifarlab.hardware import cpu_has_bf16, has_gpu

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def learning_rate(cfg: TrainConfig, steps: int):
    """The per-step schedule: linear warm-up from ``warmup_start`` x peak to the peak over
    ``warmup_fraction`` of the steps, then a cosine decay to 0 (or a constant rate)."""
    if cfg.schedule == "constant":
        return cfg.learning_rate
    if cfg.schedule != "cosine":
        raise CifarlabError(f"unknown schedule '{cfg.schedule}'; use {' or '.join(SCHEDULES)}")
    warmup = int(cfg.warmup_fraction * steps)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.learning_rate * cfg.warmup_start if warmup else cfg.learning_rate,
        decay_steps=max(1, steps - warmup),
        alpha=0.0,
        warmup_target=cfg.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def make_optimizer(cfg: TrainConfig, steps: int) -> keras.optimizers.Optimizer:
    """The config's optimizer over ``steps`` optimisation steps in all."""
    lr = learning_rate(cfg, steps)
    wd = cfg.weight_decay or None
    if cfg.optimizer == "sgd":
        opt = keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=True, weight_decay=wd)
    elif cfg.optimizer == "adamw":
        opt = keras.optimizers.AdamW(
            lr, weight_decay=cfg.weight_decay or cfg.adamw_decay_when_unset
        )
    elif cfg.optimizer == "adam":
        opt = keras.optimizers.Adam(lr, weight_decay=wd)
    else:
        raise CifarlabError(f"unknown optimizer '{cfg.optimizer}'; use {', '.join(OPTIMIZERS)}")
    if wd or cfg.optimizer == "adamw":
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return opt


def compile_model(model: keras.Model, cfg: TrainConfig, steps: int) -> None:
    """Compile with the config's optimizer, label-smoothed cross-entropy, accuracy, top-5."""
    model.compile(
        optimizer=make_optimizer(cfg, steps),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=["accuracy", keras.metrics.TopKCategoricalAccuracy(5, name="top5")],
    )


def one_hot(y: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype="float32")[y]


def set_precision(precision: str) -> str:
    """Set Keras' global dtype policy; returns the one set. 'auto': mixed_bfloat16 on a
    GPU, and on a CPU with bfloat16 instructions under TensorFlow (oneDNN); float32
    otherwise."""
    if precision == "auto":
        fast_bf16 = has_gpu() or (cpu_has_bf16() and keras.backend.backend() == "tensorflow")
        precision = "mixed_bfloat16" if fast_bf16 else "float32"
    if precision not in PRECISIONS:
        raise CifarlabError(f"unknown precision '{precision}'; use auto, {', '.join(PRECISIONS)}")
    keras.mixed_precision.set_global_policy(precision)
    return precision
