"""A model's arithmetic: forward FLOPs per image (what minutes cannot compare across
machines, FLOPs can)."""

from __future__ import annotations


def count_flops(model) -> int:
    """Forward FLOPs per image of the convolution and dense layers (2 per multiply-add).

    Normalisation, pooling and activations add well under 1% on these models."""
    import keras

    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            flops += count_flops(layer)
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw, c_in, _ = layer.kernel.shape
            flops += 2 * h * w * kh * kw * c_in * c_out
        elif isinstance(layer, keras.layers.Dense):
            c_in, c_out = layer.kernel.shape
            flops += 2 * c_in * c_out
    return int(flops)


def count_flops_at(model, size: int) -> int:
    """:func:`count_flops` of ``model``'s network (inside any test-time wrapper) on
    ``size`` x ``size`` images: an epoch of shrunk batches (``TrainConfig.low_res``)."""
    import keras

    from cifarlab.models.tta import network

    net = network(model)
    small = keras.Input((size, size, net.input_shape[-1]))
    # the structure of the model's input: a list of one in Keras 3.10's loaded models
    small = [small] if isinstance(net.input, (list, tuple)) else small
    return count_flops(keras.models.clone_model(net, input_tensors=small))
