"""The CNNs trained from scratch: the baseline, the overfitting CNN and the tuned network
(a residual family, or the airbench network of :mod:`cifarlab.models.airbench`), each
``build_<name>(config) -> keras.Model``, with the augmentation layers they share.

The layer-name contract every model keeps is in :mod:`cifarlab.models`.
"""

from __future__ import annotations

import keras  # noqa: E402  (after the config import so KERAS_BACKEND is respected)
from keras import layers  # noqa: E402

from cifarlab.config import BN_MOMENTUM, TrainConfig
from cifarlab.errors import CifarlabError
from cifarlab.models.airbench import build_airbench

INPUT_SHAPE = (32, 32, 3)


# --------------------------------------------------------------------------- shared parts


def augmentation(
    flip: bool = True,
    translate: float = 0.0,
    rotation: float = 0.0,
    name: str = "augment",
) -> keras.Sequential:
    """Random horizontal flip, translation by up to ``translate`` of the size
    (interpolated, reflect-padded), and an optional small rotation (a fraction of a full
    turn). Active only in training. Alternating flips and whole-pixel shifts happen in
    the batches instead (cifarlab.data.batches)."""
    parts = [layers.RandomFlip("horizontal")] if flip else []
    if translate > 0:
        parts.append(layers.RandomTranslation(translate, translate, fill_mode="reflect"))
    if rotation > 0:
        parts.append(layers.RandomRotation(rotation, fill_mode="reflect"))
    return keras.Sequential(parts, name=name)


def model_augmentation(config: TrainConfig) -> keras.Sequential | None:
    """The augmentation layers of ``config``'s model (None: none): what the batches do not
    do already (alternating flips and whole-pixel shifts happen there, cifarlab.data.batches)."""
    flip = config.flip and config.flip_mode == "random"
    translate = 0.0 if config.pixel_shifts else config.translate
    if flip or translate > 0 or config.rotation > 0:
        return augmentation(flip, translate, config.rotation)
    return None


def model_inputs(config: TrainConfig):
    """The ``pixels`` input, the augmentation and the ``normalize`` layer."""
    stats = config.need_stats()
    # raw 0-255 RGB; any size while the early epochs train on shrunk images (low_res)
    shape = (None, None, INPUT_SHAPE[2]) if config.low_res_epochs else INPUT_SHAPE
    inputs = keras.Input(shape, name="pixels")
    x = inputs
    augment = model_augmentation(config)
    if augment is not None:
        x = augment(x)
    x = layers.Normalization(  # float32 even under mixed precision: raw pixels reach 255
        mean=list(stats.mean),
        variance=[s * s for s in stats.std],
        name="normalize",
        dtype="float32",
    )(x)
    return inputs, x


def _conv(x, filters, name, bn=False, **kw):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=not bn, name=name, **kw)(x)
    if bn:
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _classic_cnn(
    config: TrainConfig, name: str, dropout: float, dense_dropout: float
) -> keras.Model:
    net = config.network
    inputs, x = model_inputs(config)
    for b, (width, convs) in enumerate(zip(net["widths"], net["convs"]), start=1):
        for c in range(1, convs + 1):
            x = _conv(x, width, name=f"block{b}_conv{c}")
        x = layers.MaxPooling2D(name=f"block{b}_pool")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"block{b}_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(net["dense"], activation="relu", name="hidden")(x)
    if dense_dropout:
        x = layers.Dropout(dense_dropout, name="hidden_dropout")(x)
    outputs = layers.Dense(
        config.stats.num_classes, activation="softmax", name="predictions", dtype="float32"
    )(x)
    return keras.Model(inputs, outputs, name=name)


# --------------------------------------------------------------------------- the four models


def build_baseline(config: TrainConfig) -> keras.Model:
    """A small CNN in the classic style: 3 same-padded 3x3 convs, pool, 4 convs, pool,
    one dense hidden layer; dropout after each block and after the hidden layer.

    ``config.network``: ``widths`` (filters per block), ``convs`` (convolutions per block),
    ``dense`` (hidden units), ``dropout`` (after each block), ``dense_dropout``.
    """
    net = config.network
    return _classic_cnn(config, "baseline", net["dropout"], net["dense_dropout"])


def build_overfit(config: TrainConfig) -> keras.Model:
    """The baseline's layout with a wider hidden layer and no dropout at all: it is
    trained without augmentation or early stopping to show memorisation.

    ``config.network``: ``widths``, ``convs``, ``dense`` as the baseline's.
    """
    if config.flip or config.translate or config.rotation:
        raise CifarlabError("the overfit model is trained without augmentation by design")
    return _classic_cnn(config, "overfit", 0.0, 0.0)


def build_tuned(config: TrainConfig) -> keras.Model:
    """A small ResNet-style network whose shape comes from the hyperparameter search.

    Three stages of widths (w, 2w, 4w), each ``depth`` blocks of two 3x3 convs, with
    or without batch norm and identity shortcuts; max-pooling between stages, global
    average pooling and a softmax head.

    ``config.network``: ``width`` (w), ``depth`` (blocks per stage), ``batch_norm``,
    ``residual`` (identity shortcuts), ``dropout`` (before the head). With
    ``arch="airbench"``, the airbench family instead (cifarlab.models.airbench; call
    :func:`cifarlab.models.airbench.init_from_data` on the built model before training).
    """
    net = config.network
    inputs, x = model_inputs(config)
    if net.get("arch", "resnet") == "airbench":
        return build_airbench(config, inputs, x)
    w, depth, bn, residual = net["width"], net["depth"], net["batch_norm"], net["residual"]
    x = _conv(x, w, "stem", bn=bn)
    for s, width in enumerate((w, 2 * w, 4 * w), start=1):
        if s > 1:  # pool first, then widen: 4x cheaper than widening at full resolution
            x = layers.MaxPooling2D(name=f"stage{s}_pool")(x)
            x = _conv(x, width, f"stage{s}_widen", bn=bn)
        for d in range(1, depth + 1):
            y = _conv(x, width, f"stage{s}_block{d}_a", bn=bn)
            y = layers.Conv2D(
                width, 3, padding="same", use_bias=not bn, name=f"stage{s}_block{d}_b"
            )(y)
            if bn:
                y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"stage{s}_block{d}_b_bn")(
                    y
                )
            if residual:
                y = layers.Add(name=f"stage{s}_block{d}_add")([x, y])
            x = layers.Activation("relu", name=f"stage{s}_block{d}_out")(y)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if net.get("dropout"):
        x = layers.Dropout(net["dropout"], name="head_dropout")(x)
    outputs = layers.Dense(
        config.stats.num_classes, activation="softmax", name="predictions", dtype="float32"
    )(x)
    return keras.Model(inputs, outputs, name="tuned")
