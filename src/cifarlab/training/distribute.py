"""Scaling past one device on existing engines (no home-made distribution).

``--distribute``:

- ``mirrored``: ``tf.distribute.MirroredStrategy`` over the local GPUs (without GPUs:
  over the logical CPU devices, one unless ``CIFARLAB_LOGICAL_CPUS=N`` splits the CPU);
  TensorFlow backend.
- ``multiworker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the machines named
  in ``TF_CONFIG`` (TensorFlow backend). Keras 3's ``fit`` fails under it as released
  (keras-team/keras#20585); ``cifarlab.training._tf_multiworker`` corrects the two defects while
  the installed Keras has them. The chief (``chief``, or ``worker`` 0 without one)
  writes to ``--out``; every other worker writes its copy to ``--out/workers/<task>``.
- ``dataparallel``: ``keras.distribution.DataParallel`` over all JAX devices (for host
  devices: ``XLA_FLAGS=--xla_force_host_platform_device_count=N``); JAX backend.

The scaling rule: ``--batch-size`` is per replica, so the global batch is
``batch_size x replicas``, and the peak learning rate is multiplied by the number of
replicas under SGD (the linear scaling rule, Goyal et al. 2017) and by its square root
under Adam(W) (``TrainConfig.at_batch``); the warm-up fraction is kept.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field

from cifarlab.errors import CifarlabError

KINDS = ("none", "mirrored", "multiworker", "dataparallel")
RULE = (
    "global batch = batch_size x replicas; peak learning rate x replicas under SGD "
    "(linear scaling), x sqrt(replicas) under Adam(W)"
)


@dataclass
class Distribution:
    kind: str = "none"
    replicas: int = 1
    is_chief: bool = True
    task: str = "chief"
    devices: list[str] = field(default_factory=list)
    scope: object = field(default_factory=contextlib.nullcontext)
    workers: int = 1
    keras_fixes: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "replicas": self.replicas,
            "task": self.task,
            "devices": self.devices,
            "workers": self.workers,
            "keras_fixes": self.keras_fixes,
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

    # multiworker: TF_CONFIG names the cluster and this process's task
    cluster, task_type, task_index = _tf_config()
    from cifarlab.training import _tf_multiworker

    fixed = _tf_multiworker.apply()  # keras-team/keras#20585, see that module
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    is_chief = task_type == "chief" or (
        task_type == "worker" and task_index == 0 and "chief" not in cluster
    )
    workers = sum(len(v) for k, v in cluster.items() if k in ("chief", "worker")) or 1
    return Distribution(
        kind,
        strategy.num_replicas_in_sync,
        is_chief=is_chief,
        task=f"{task_type}{task_index}" if cluster else "chief",
        devices=list(strategy.extended.worker_devices),
        scope=strategy.scope(),
        workers=workers,
        keras_fixes=fixed,
    )


def _tf_config() -> tuple[dict, str, int]:
    """Read and check TF_CONFIG: (cluster, task type, task index); ({}, 'chief', 0) if unset."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        os.environ.pop("TF_CONFIG", None)  # TensorFlow itself fails on a blank one
        print(
            "distribute: TF_CONFIG is not set: one worker on this machine (set TF_CONFIG on "
            "each machine for a cluster; see README)",
            flush=True,
        )
        return {}, "chief", 0
    return parse_tf_config(raw)


def check_tf_config() -> None:
    """A set TF_CONFIG checked without TensorFlow: the command line calls this before the
    backend takes its seconds to start, so a malformed one is refused at once."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if raw:
        parse_tf_config(raw)


def parse_tf_config(raw: str) -> tuple[dict, str, int]:
    """A non-blank TF_CONFIG: (cluster, task type, task index), or one clear error."""
    try:
        conf = json.loads(raw)
        cluster = conf["cluster"]
        task_type = conf["task"]["type"]
        task_index = int(conf["task"]["index"])
        members = cluster[task_type]
    except (ValueError, KeyError, TypeError) as exc:
        raise CifarlabError(
            'TF_CONFIG must be JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, '
            f'"task": {{"type": "worker", "index": 0}}}} ({type(exc).__name__}: {exc})'
        ) from None
    if not 0 <= task_index < len(members):
        raise CifarlabError(
            f"TF_CONFIG: task index {task_index} is outside the {len(members)} "
            f"'{task_type}' address(es) of the cluster"
        )
    return cluster, task_type, task_index


def scale(cfg, dist: Distribution):
    """Apply the scaling rule to a config."""
    if dist.replicas == 1:
        return cfg
    return cfg.at_batch(cfg.batch_size * dist.replicas)
