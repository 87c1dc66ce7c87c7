"""Scaling past one device on existing engines (no home-made distribution).

``--distribute``:

- ``mirrored``: ``tf.distribute.MirroredStrategy`` over the local GPUs (without GPUs:
  over the logical CPU devices, one unless ``CIFARLAB_LOGICAL_CPUS=N`` splits the CPU);
  TensorFlow backend.
- ``multiworker``: refused with one line: TensorFlow's MultiWorkerMirroredStrategy does
  not work with Keras 3 ``fit`` (keras-team/keras#20585, reproduced here).
- ``dataparallel``: ``keras.distribution.DataParallel`` over all JAX devices (for host
  devices: ``XLA_FLAGS=--xla_force_host_platform_device_count=N``); JAX backend.

The scaling rule: ``--batch-size`` is per replica, so the global batch is
``batch_size x replicas``, and the peak learning rate is multiplied by the number of
replicas (the linear scaling rule, Goyal et al. 2017); the warm-up fraction is kept.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

from cifarlab.errors import CifarlabError

KINDS = ("none", "mirrored", "multiworker", "dataparallel")
RULE = "global batch = batch_size x replicas; peak learning rate x replicas (linear scaling)"


@dataclass
class Distribution:
    kind: str = "none"
    replicas: int = 1
    is_chief: bool = True
    task: str = "chief"
    devices: list[str] = field(default_factory=list)
    scope: object = field(default_factory=contextlib.nullcontext)

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "replicas": self.replicas,
            "task": self.task,
            "devices": self.devices,
            "rule": RULE if self.kind != "none" else None,
        }


def setup(kind: str | None) -> Distribution:
    """Create the strategy/distribution; call before any model is built."""
    import keras

    kind = kind or "none"
    if kind not in KINDS:
        raise CifarlabError(f"unknown --distribute '{kind}'; choose one of {', '.join(KINDS)}")
    backend = keras.backend.backend()
    if kind == "none":
        return Distribution()
    if kind in ("mirrored", "multiworker") and backend != "tensorflow":
        raise CifarlabError(f"--distribute {kind} needs KERAS_BACKEND=tensorflow (now {backend})")
    if kind == "dataparallel" and backend != "jax":
        raise CifarlabError(f"--distribute dataparallel needs KERAS_BACKEND=jax (now {backend})")

    if kind == "dataparallel":
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return Distribution(kind, len(devices), devices=[str(d) for d in devices])

    import tensorflow as tf

    if kind == "mirrored":
        n = int(os.environ.get("CIFARLAB_LOGICAL_CPUS", "0") or 0)
        if n > 1 and not tf.config.list_physical_devices("GPU"):
            try:
                cpu = tf.config.list_physical_devices("CPU")[0]
                tf.config.set_logical_device_configuration(
                    cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
                )
            except RuntimeError as exc:
                raise CifarlabError(f"cannot split the CPU into {n} devices: {exc}") from None
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        return Distribution(
            kind, strategy.num_replicas_in_sync, devices=devices, scope=strategy.scope()
        )

    # multiworker: tf.distribute.MultiWorkerMirroredStrategy does not work with Keras 3's
    # fit (keras-team/keras#20585, tensorflow/tensorflow#72388; measured here with Keras
    # 3.15 / TF 2.21: fit fails first in Trainer._maybe_symbolic_build, which reduces a
    # distributed batch across workers, and after a workaround for that in the per-replica
    # metric reduction). Refuse clearly instead of failing mid-run.
    raise CifarlabError(
        "--distribute multiworker: TensorFlow's MultiWorkerMirroredStrategy does not work with "
        "Keras 3 model.fit (keras-team/keras#20585); on one machine use --distribute mirrored, "
        "for a bigger search use KerasTuner's chief/worker mode (see README)"
    )


def scale(cfg, dist: Distribution):
    """Apply the scaling rule to a config."""
    if dist.replicas == 1:
        return cfg
    return cfg.replace(
        batch_size=cfg.batch_size * dist.replicas, learning_rate=cfg.learning_rate * dist.replicas
    )
