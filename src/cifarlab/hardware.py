"""What machine this is: processor, its bfloat16 support, a GPU (no Keras import here: the
backend is chosen before Keras loads)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: oneDNN then runs bfloat16 convolutions faster than float32
    (measured here: the tuned CNN trains at 900 vs 682 images/s)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def has_gpu() -> bool:
    """True when the active Keras backend sees a GPU (decides the default profile)."""
    import os

    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    try:
        if backend == "jax":
            import jax

            return any(d.platform == "gpu" for d in jax.devices())
        if backend == "torch":
            import torch

            return torch.cuda.is_available()
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    except Exception:
        return False
