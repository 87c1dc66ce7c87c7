"""TensorFlow-only: :class:`cifarlab.data.batches.Batches` as a tf.data pipeline without autotuning.

Why not let Keras feed the arrays: for NumPy arrays Keras builds a tf.data pipeline of
its own whose parallel gather and prefetch are autotuned, and a new epoch cannot start
until the previous epoch's pipeline has stopped tf.data's autotuning thread, which
sleeps for up to a minute between rounds (py-spy: the main thread waits in
``RootDataset::Iterator::~Iterator``). Why not the PyDataset itself: every batch then
crosses Python (``Dataset.from_generator``), and a training step took 35% longer. Both
measured: BENCHMARKS.md, "epoch starts: tf.data's autotuning held new epochs".

So this pipeline gathers each batch the way Keras does (one ``tf.gather`` per batch from
arrays held by TensorFlow), in exactly the order :class:`~cifarlab.data.batches.Batches` draws
(the same seeded permutation, mirror choices and shifts), with autotuning off and fixed
parallelism. The training pipeline holds every remaining epoch, so ``fit`` runs it with
``steps_per_epoch`` and one iterator for the whole training.
"""

from __future__ import annotations

import tensorflow as tf

#: Batches gathered ahead of the training step, and threads gathering them.
PREFETCH = 2


def dataset(batches, epochs: int = 1) -> tf.data.Dataset:
    """``epochs`` epochs of ``batches`` (from its current epoch on), batch after batch."""
    arrays = (batches.x, batches.y, batches.x_mirror)
    held = tuple(a for a in arrays if a is not None)
    plan = tf.data.Dataset.from_tensor_slices(batches.plan(epochs))
    data = tf.data.Dataset.zip((plan, tf.data.Dataset.from_tensors(held).repeat()))

    s = batches.shift
    weights = batches.shrink_weights() if batches.low_res_epochs else None

    def gather(step, held):
        rows, size, flips, offsets, shrunk = step
        idx = rows[:size]
        x = tf.gather(held[0], idx)
        if batches.x_mirror is not None:
            flip = tf.reshape(flips[:size], [-1] + [1] * (len(batches.x.shape) - 1))
            x = tf.where(flip, tf.gather(held[-1], idx), x)
        if s:  # as batches.Batches.crops: reflect-pad, then each image's rows and columns
            x = tf.pad(x, [[0, 0], [s, s], [s, s], [0, 0]], mode="REFLECT")
            down, right = offsets[:size, :1], offsets[:size, 1:]
            h, w = batches.x.shape[1:3]
            x = tf.gather(x, s - down + tf.range(h, dtype=down.dtype), axis=1, batch_dims=1)
            x = tf.gather(x, s - right + tf.range(w, dtype=right.dtype), axis=2, batch_dims=1)
        if batches.low_res_epochs:  # as batches.downsample, in the epochs it shrinks
            x = tf.cast(x, tf.float32)
            x = tf.cond(shrunk, lambda: downsample(x, *weights), lambda: x)
        if batches.y is None:
            return x
        return x, tf.gather(held[1], idx)

    data = data.map(gather, num_parallel_calls=PREFETCH).prefetch(PREFETCH)
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options)


def downsample(x, rows, cols):
    """``x`` (B, H, W, C) float32 shrunk by the area weights ``rows`` and ``cols``
    (cifarlab.data.batches.downsample)."""
    return tf.einsum("pw,bowc->bopc", cols, tf.einsum("oh,bhwc->bowc", rows, x))
