"""TensorFlow-only: make Keras 3's ``fit`` work under ``tf.distribute.MultiWorkerMirroredStrategy``.

Keras 3 (checked up to 3.15) cannot ``fit`` under MultiWorkerMirroredStrategy in
multi-worker mode (keras-team/keras#20585). Two defects in
``keras/src/backend/tensorflow/trainer.py`` are the cause, reproduced here with two
workers on 127.0.0.1 (TensorFlow 2.21):

1. ``TensorFlowTrainer._maybe_symbolic_build`` reduces the first *data batch* across
   workers (``strategy.reduce("MEAN", batch)``) only to learn its shapes; the collective
   reduce of a ``PerReplica`` fails ("Attempt to convert a value (PerReplica...)").
   The batch of the first local replica carries the same shapes and dtypes.
2. ``reduce_per_replica`` reduces each worker's scalar metric results with
   ``strategy.reduce("MEAN", v, axis=0)``: ``axis=0`` on a scalar fails ("Invalid
   reduction dimension 0 for input with 0 dimensions"). The mean over replicas is
   ``axis=None``, which is what the single-machine branch computes.

``apply()`` replaces those two functions with corrected ones, and only when the
installed Keras still carries the defective code (its source is checked), so a Keras
release that fixes them is left alone. Training itself, the collectives and the data
sharding stay TensorFlow's and Keras' own.
"""

from __future__ import annotations

import inspect

_APPLIED: list[str] = []


def _defects(trainer) -> list[str]:
    found = []
    try:
        build_src = inspect.getsource(trainer.TensorFlowTrainer._maybe_symbolic_build)
        reduce_src = inspect.getsource(trainer.reduce_per_replica)
    except (OSError, TypeError, AttributeError):  # no source (frozen install) or moved
        return found
    if "distribute_strategy.reduce(" in build_src:
        found.append("symbolic_build")
    if 'strategy.reduce("MEAN", v, axis=0)' in reduce_src:
        found.append("reduce_per_replica")
    return found


def _local(fn, values):
    """Apply ``fn`` to every distributed value of a structure, leaving the others."""
    import tensorflow as tf

    return tf.nest.map_structure(
        lambda v: fn(v) if isinstance(v, tf.distribute.DistributedValues) else v, values
    )


def apply() -> list[str]:
    """Patch the defects present in the installed Keras; returns their names."""
    from keras.src.backend.tensorflow import trainer

    if _APPLIED:
        return list(_APPLIED)
    found = _defects(trainer)

    if "symbolic_build" in found:

        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            if self._distribute_strategy is None:
                return
            strategy = self.distribute_strategy
            if iterator is not None:
                for step in iterator:  # (begin, end, it) since Keras 3.11; (step, it) before
                    it = step[-1]
                    data_batch = _local(
                        lambda v: strategy.experimental_local_results(v)[0], next(it)
                    )
                    break
            with strategy.scope():
                self._symbolic_build(data_batch=data_batch)

        trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build

    if "reduce_per_replica" in found:
        original = trainer.reduce_per_replica

        def reduce_per_replica(values, strategy, reduction):
            if trainer._collective_all_reduce_multi_worker(strategy) and reduction in (
                "auto",
                "mean",
                "sum",
            ):
                op = "SUM" if reduction == "sum" else "MEAN"
                return _local(lambda v: strategy.reduce(op, v, axis=None), values)
            return original(values, strategy, reduction)

        trainer.reduce_per_replica = reduce_per_replica

    _APPLIED.extend(found)
    return list(_APPLIED)
