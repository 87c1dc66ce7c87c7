"""Test-time augmentation inside the saved model: the forward pass averages the
predictions over views of each image (its mirror image, shifted copies), so that plain
Keras ``load_model(...).predict(images)`` gives the reported figure on every backend.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

#: The averaging layer of a wrapped model (its name since the first wrapped models).
VIEW_AVERAGE = "flip_average"


def _remap(x, axis: int, matrix: np.ndarray, name: str):
    """``x`` (N, H, W, C) with its rows (axis 1) or columns (axis 2) mixed by a frozen 0/1
    matrix: out[..., j, ...] = sum_i x[..., i, ...] * matrix[i, j] (exact)."""
    perm = (3, 2, 1) if axis == 1 else (1, 3, 2)  # the axis to the last place and back
    x = layers.Permute(perm, name=f"{name}_in")(x)
    x = layers.Dense(
        len(matrix),
        use_bias=False,
        trainable=False,
        kernel_initializer=keras.initializers.Constant(matrix),
        name=name,
        dtype="float32",
    )(x)
    return layers.Permute(perm, name=f"{name}_out")(x)


def _shift_matrix(size: int, s: int) -> np.ndarray:
    """out[j] = in[j + s], reflected at the border (as a pad-and-crop with reflection)."""
    src = np.arange(size) + s
    src = np.where(src < 0, -src, src)
    src = np.where(src >= size, 2 * (size - 1) - src, src)
    return np.eye(size)[src].T


def wrap(model: keras.Model, flip: bool = True, shift: int = 0) -> keras.Model:
    """``model`` wrapped so that its forward pass averages the predictions for each image
    and its mirror image (``flip``) and, with ``shift``, for both shifted by ``shift``
    pixels down-right and up-left (reflected): 6 views, the unshifted pair weighted half,
    airbench's multi-view test-time augmentation. It is inside the saved model, so plain Keras ``predict`` gives the
    reported figure. Built-in layers only: mirror and shifts are frozen 0/1 Dense layers
    along the height or width axis (exact), so it loads in safe mode on every backend.
    :func:`network` returns the model inside."""
    height, width = model.input_shape[1:3]
    pixels = keras.Input(model.input_shape[1:], name="pixels")
    views = [pixels]
    if flip:
        views.append(_remap(pixels, 2, np.eye(width)[::-1], "mirror"))
    for s in (shift, -shift) if shift else ():
        for v, view in enumerate(list(views[: 2 if flip else 1])):
            name = f"shift_{'down' if s > 0 else 'up'}{abs(s)}_view{v}"
            x = _remap(view, 1, _shift_matrix(height, s), f"{name}_rows")
            views.append(_remap(x, 2, _shift_matrix(width, s), f"{name}_cols"))
    probs = [model(v) for v in views]
    if shift:  # the unshifted views count half, the shifted ones the other half (airbench)
        unshifted = len(views) // 3
        first = probs[0] if unshifted == 1 else layers.Average(name="unshifted")(probs[:unshifted])
        probs = [first, layers.Average(name="shifted_views")(probs[unshifted:])]
    out = layers.Average(name=VIEW_AVERAGE, dtype="float32")(probs)
    return keras.Model(pixels, out, name=f"{model.name}_flip_averaged")


def network(model: keras.Model) -> keras.Model:
    """The network itself: the model inside a :func:`wrap` wrapper, else
    ``model`` (the layer-name contract above holds for what this returns)."""
    if any(layer.name == VIEW_AVERAGE for layer in model.layers):
        return next(layer for layer in model.layers if isinstance(layer, keras.Model))
    return model


def is_wrapped(model: keras.Model) -> bool:
    return network(model) is not model
