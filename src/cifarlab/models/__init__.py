"""Models: one builder per model, ``build_<name>(config) -> keras.Model``.

Every model takes raw 32x32 RGB pixel values (0-255) and carries its own preprocessing
(augmentation layers that act only in training, per-channel normalisation with the
training split's statistics, VGG16's own caffe preprocessing), so a model reloaded with
plain ``keras.saving.load_model`` predicts correctly without this project's code. Only
built-in Keras layers are used, so the same models run on TensorFlow, JAX and PyTorch.

Each builder takes a :class:`~cifarlab.config.TrainConfig` whose ``mean``, ``std`` and
``num_classes`` are set (cifarlab.data.prepare does it) and whose ``network`` holds the
architecture (the recipes in cifarlab.config list every key).

Layer-name contract (cifarlab.evaluation.visualize and cifarlab.training.transfer rely on it):

- ``pixels``: the input, raw uint8 RGB values as float, shape (32, 32, 3);
- ``augment``: the training-only augmentation (present when flip/translate/rotation);
- ``normalize``: per-channel normalisation, float32 even under mixed precision;
- ``predictions``: the softmax output, float32;
- convolution blocks are named ``<block><n>_...`` (``block1_conv1``, ``stage2_block1_a``,
  ``stem``): the last layer whose name starts with a block's prefix is that block's
  output (feature maps, Grad-CAM); the first 3x3 ``Conv2D`` is the filters' figure;
- VGG16 keeps keras.applications' names ``block1_conv1`` ... ``block5_pool``, preceded
  by ``rgb_to_bgr`` (a fixed 1x1 convolution) and followed by ``head_*`` layers;
  :func:`vgg16_parts` cuts at ``block<k>_pool``.

A model saved with test-time augmentation (``tta_flip``) is that network wrapped by
:func:`cifarlab.models.tta.wrap`; :func:`cifarlab.models.tta.network` unwraps it.

Modules: :mod:`~cifarlab.models.cnn` (baseline, overfit, tuned), :mod:`~cifarlab.models.airbench`
(the airbench network), :mod:`~cifarlab.models.vgg16` (VGG16 and its weights),
:mod:`~cifarlab.models.tta` (test-time augmentation). Their public builders are named here.
"""

from __future__ import annotations

import keras

from cifarlab.config import TrainConfig, check_model
from cifarlab.models.cnn import (
    INPUT_SHAPE,
    augmentation,
    build_baseline,
    build_overfit,
    build_tuned,
    model_augmentation,
)
from cifarlab.models.vgg16 import (
    VGG16_CONVS,
    VGG16_MEAN_RGB,
    build_vgg16,
    load_vgg16_weights,
    offline_vgg16_weights,
    resolve_vgg16_weights,
    vgg16_parts,
)

__all__ = [
    "INPUT_SHAPE", "VGG16_CONVS", "VGG16_MEAN_RGB", "at_full_size", "augmentation", "build",
    "build_baseline",
    "build_overfit", "build_tuned", "build_vgg16", "load_vgg16_weights", "model_augmentation",
    "offline_vgg16_weights", "resolve_vgg16_weights", "vgg16_parts",
]  # fmt: skip

BUILDERS = {
    "baseline": build_baseline,
    "overfit": build_overfit,
    "tuned": build_tuned,
    "vgg16": build_vgg16,
}


def build(config: TrainConfig, **kw) -> keras.Model:
    """Build the model named by ``config.model``.

    Args:
        config: the run's config, with ``mean``, ``std`` and ``num_classes`` set.
        **kw: passed to the builder (``weights=`` for VGG16).
    """
    return BUILDERS[check_model(config.model)](config, **kw)


def at_full_size(model: keras.Model, config: TrainConfig) -> keras.Model:
    """A model trained with shrunk early epochs (``config.low_res``) as every other
    model is saved: the same weights on an input of the full (32, 32, 3) pixels."""
    if not config.low_res_epochs:
        return model
    fixed = build(config.full_size())
    fixed.set_weights(model.get_weights())
    return fixed
