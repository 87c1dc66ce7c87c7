"""The airbench family of networks: the parts of the fastest small-budget CIFAR recipes
(Keller Jordan's airbench, KellerJordan/cifar10-airbench; arXiv 2404.00498) as switches of the ``tuned`` model.

The network: a frozen 2x2 whitening convolution computed from training images, then
three conv groups (conv, max-pool, batch norm, activation, conv, batch norm, activation)
of widths such as 64/256/256, a global max-pool and a linear head whose logits are
scaled down (airbench: by 1/9). Every part is a key of ``config.network`` the search can
switch (cifarlab.training.tune):

- ``widths`` three group widths; ``convs`` convolutions per group (2: airbench94);
- ``whiten`` the whitening layer (False: a trainable 3x3 stem conv of width 24);
  ``whiten_bias_epochs`` its bias trains for this many epochs, then stays (airbench: 3;
  0: no bias); its kernel never trains;
- ``bn_scale`` batch norm with its scale (airbench: without); ``bn_momentum`` Keras'
  momentum of the running statistics (airbench: 0.6, fast; Keras' default 0.99);
- ``activation`` ``gelu`` or ``relu``;
- ``identity_init`` each conv's first filters start as the identity (PyTorch's dirac),
  the others from PyTorch's default initialisation (Keras' Glorot is about 1.7x larger,
  which changes the effective learning rate under batch norm);
- ``head_scale`` the logits' factor (1: none).

The optimiser's parts (Nesterov SGD with coupled L2, a larger step for the batch-norm
biases, lookahead, the linear decay) live in cifarlab.training.recipe; the alternating flips and
whole-pixel shifts (reflect-padded crops) in cifarlab.data.batches; the multi-view test-time
augmentation in :func:`cifarlab.models.tta.wrap`.

Built-in Keras layers only, so that a saved model loads with plain Keras on every
backend: the data-dependent and identity initialisations are written into the weights
after the model is built (:func:`init_from_data`), not as custom initialisers.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from cifarlab.config import AIRBENCH, TrainConfig

#: The whitening layer's name; its kernel comes from the training images.
WHITEN = "whiten"
#: Defaults of the family's ``network`` keys: airbench94's choices (config.AIRBENCH owns them).
DEFAULTS = {k: v for k, v in AIRBENCH["all"]["network"].items() if k != "arch"}


def build_airbench(config: TrainConfig, inputs, x) -> keras.Model:
    """The network on the normalised input ``x`` of ``inputs`` (cifarlab.models.cnn.model_inputs)."""
    net = {**DEFAULTS, **config.network}
    # coupled L2: l2 * w added to the gradient (Keras' L2(c) adds 2 c w); the biases'
    # is smaller by their larger step, so that their decay per step matches (airbench)
    reg = keras.regularizers.L2(config.l2 / 2) if config.l2 else None
    bias_reg = keras.regularizers.L2(config.l2 / 2 / config.bias_lr_scale) if config.l2 else None
    init = keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform")  # PyTorch's

    def bn(x, name):
        return layers.BatchNormalization(
            momentum=net["bn_momentum"],
            scale=net["bn_scale"],
            epsilon=1e-12,
            beta_regularizer=bias_reg,
            name=name,
        )(x)

    def conv(x, width, name):
        return layers.Conv2D(
            width,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer=init,
            kernel_regularizer=reg,
            name=name,
        )(x)

    if net["whiten"]:  # 2x2 patches, 2 x 12 filters (each eigenvector and its negative)
        whiten = layers.Conv2D(
            24, 2, padding="valid", use_bias=net["whiten_bias_epochs"] > 0,
            bias_initializer=init, bias_regularizer=reg, name=WHITEN,
        )  # fmt: skip
        x = layers.Activation(net["activation"], name=f"{WHITEN}_act")(whiten(x))
        # the kernel comes from the data (init_from_data) and never trains; the bias
        # trains at the base rate until the optimizer stops it (recipe.AirbenchSGD)
        whiten.kernel.trainable = False
    else:
        x = conv(x, 24, "stem")
        x = layers.Activation(net["activation"], name="stem_act")(bn(x, "stem_bn"))
    for g, width in enumerate(net["widths"], start=1):
        for c in range(1, net["convs"] + 1):
            x = conv(x, width, f"group{g}_conv{c}")
            if c == 1:
                x = layers.MaxPooling2D(name=f"group{g}_pool")(x)
            x = bn(x, f"group{g}_conv{c}_bn")
            x = layers.Activation(net["activation"], name=f"group{g}_conv{c}_act")(x)
    x = layers.GlobalMaxPooling2D(name="gmp")(x)
    x = layers.Dense(
        config.stats.num_classes, use_bias=False, kernel_initializer=init, kernel_regularizer=reg,
        name="logits",
    )(x)  # fmt: skip
    if net["head_scale"] != 1:
        x = layers.Rescaling(net["head_scale"], name="head_scale")(x)
    outputs = layers.Activation("softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="tuned")


def whitening_kernel(x: np.ndarray, mean, std, eps: float = 5e-4, limit: int = 5000):
    """The 2x2 whitening kernel (2, 2, C, 4C) of normalised images ``x`` (N, H, W, C):
    the eigenvectors of the 2x2 patches' covariance scaled by 1/sqrt(eigenvalue + eps),
    and their negatives. Computed from at most ``limit`` images (the first ones: pass
    the training split, never validation or test)."""
    x = (x[:limit].astype(np.float32) - np.float32(mean)) / np.float32(std)
    n, h, w, c = x.shape
    patches = np.stack(
        [x[:, i : h - 1 + i, j : w - 1 + j, :] for i in range(2) for j in range(2)], axis=3
    ).reshape(-1, 2, 2, c)  # (patches, i, j, channel): the kernel's own layout
    flat = patches.reshape(len(patches), -1).astype(np.float64)
    flat -= flat.mean(axis=0)
    cov = flat.T @ flat / len(flat)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    filters = eigenvectors / np.sqrt(eigenvalues + eps)  # columns: one filter each
    filters = np.concatenate([filters, -filters], axis=1)
    return filters.reshape(2, 2, c, 2 * 4 * c).astype("float32")


def identity_kernel(kernel: np.ndarray) -> np.ndarray:
    """``kernel`` (3, 3, in, out) with its first min(in, out) filters replaced by the
    identity: filter i passes input channel i through (PyTorch's ``dirac_``)."""
    kernel = kernel.copy()
    k = min(kernel.shape[2], kernel.shape[3])
    kernel[:, :, :, :k] = 0
    centre = kernel.shape[0] // 2, kernel.shape[1] // 2
    kernel[centre[0], centre[1], np.arange(k), np.arange(k)] = 1
    return kernel


def init_from_data(model: keras.Model, config: TrainConfig, x_train: np.ndarray) -> None:
    """Write the data-dependent and identity initialisations into a freshly built
    airbench network (nothing for other networks): the whitening kernel from the
    training images ``x_train``, identity filters in every group conv."""
    if config.network.get("arch") != "airbench":
        return
    net = {**DEFAULTS, **config.network}
    names = {layer.name: layer for layer in model.layers}
    if net["whiten"]:
        names[WHITEN].kernel.assign(whitening_kernel(x_train, config.stats.mean, config.stats.std))
    if net["identity_init"]:
        for name, layer in names.items():
            if name.startswith("group") and isinstance(layer, layers.Conv2D):
                layer.kernel.assign(identity_kernel(keras.ops.convert_to_numpy(layer.kernel)))
