"""What machine this is: processor, its bfloat16 support, a GPU (no Keras import here)."""

from __future__ import annotations

import os
import platform
import time
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
    (BENCHMARKS.md, the bfloat16 rows)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def has_gpu() -> bool:
    """True when the active Keras backend sees a GPU (decides the default profile)."""
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


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """This processor's float32 matmul rate in GFLOP/s (NumPy, best of ``repeats``): the
    figure every timing of this project is put beside."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


# --------------------------------------------------------------------------- accelerators


def accelerator(backend: str | None = None) -> dict:
    """The first accelerator the Keras backend sees: ``{"kind": "gpu", "capability": (8,
    0), "name": ...}``, ``{"kind": "tpu"}``, or ``{"kind": "cpu"}``. ``backend`` defaults
    to KERAS_BACKEND (tensorflow when unset). Asks the backend's own device API."""
    backend = backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    try:
        if backend == "jax":
            import jax

            dev = jax.devices()[0]
            if dev.platform == "gpu":
                cc = getattr(dev, "compute_capability", None) or "0.0"
                return {"kind": "gpu", "capability": _capability(cc), "name": dev.device_kind}
            return {"kind": dev.platform if dev.platform == "tpu" else "cpu"}
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return {
                    "kind": "gpu",
                    "capability": tuple(torch.cuda.get_device_capability(0)),
                    "name": torch.cuda.get_device_name(0),
                }
            return {"kind": "cpu"}
        import tensorflow as tf

        if tf.config.list_logical_devices("TPU"):
            return {"kind": "tpu"}
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            cc = details.get("compute_capability") or (0, 0)
            return {"kind": "gpu", "capability": tuple(cc), "name": details.get("device_name")}
    except Exception:  # a backend that cannot see its devices trains on the CPU
        pass
    return {"kind": "cpu"}


def _capability(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major or 0), int(minor or 0)


def auto_precision(device: dict, backend: str, cpu_bf16: bool) -> str:
    """The training precision ``auto`` means on ``device`` (:func:`accelerator`).

    bfloat16 where the hardware computes in it: TPUs and GPUs of compute capability 8.0
    and newer (A100, L4, H100); float16 with loss scaling on 7.x (V100, T4: tensor
    cores without bfloat16, Keras' mixed-precision guide); float32 on older GPUs and on
    CPUs, except CPUs with AVX512-BF16 / AMX under TensorFlow (oneDNN; BENCHMARKS.md)."""
    if device.get("kind") == "tpu":
        return "mixed_bfloat16"
    if device.get("kind") == "gpu":
        cc = tuple(device.get("capability") or (0, 0))
        if cc >= (8, 0):
            return "mixed_bfloat16"
        return "mixed_float16" if cc >= (7, 0) else "float32"
    return "mixed_bfloat16" if cpu_bf16 and backend == "tensorflow" else "float32"
