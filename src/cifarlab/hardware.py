"""What machine this is: processor, its bfloat16 support, a GPU; and the Keras backend
that `cifarlab bench` measured fastest on it (no Keras import here: the backend is chosen
before Keras loads)."""

from __future__ import annotations

import json
import os
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


# --------------------------------------------------------------------------- the backend


def fastest_backend(rows: list[dict], models) -> str | None:
    """The backend with the best total training time over ``models`` (the series' CNNs),
    from the rows of `cifarlab bench`; None unless two backends or more were compared (a
    bench of JAX alone once made it the default here, at a fifth of TensorFlow's speed)."""
    by_backend: dict[str, float] = {}
    default = {}  # each backend's first (= training's own) precision
    for r in rows:
        default.setdefault(r["backend"], r["precision"])
    for r in rows:
        if (
            r["model"] in models
            and r["model"] != "vgg16"  # its frozen base trains on cached features
            and r["precision"] == default[r["backend"]]
        ):
            by_backend[r["backend"]] = (
                by_backend.get(r["backend"], 0.0) + 1.0 / r["train_images_per_s"]
            )
    return min(by_backend, key=by_backend.get) if len(by_backend) > 1 else None


def backend_choice_path() -> Path:
    from cifarlab.data import cache_dir

    return cache_dir() / "fastest_backend.json"


def record_fastest_backend(backend: str, result: dict) -> None:
    p = backend_choice_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(
        json.dumps(
            {
                "backend": backend,
                "date": result["date"],
                "processor": result["hardware"]["processor"],
                "cpu_count": result["hardware"]["cpu_count"],
            }
        )
    )


def choose_backend() -> str | None:
    """Set KERAS_BACKEND to the fastest measured on this hardware, unless the user set it.

    Reads what `cifarlab bench` recorded; returns the choice (None: Keras' default)."""
    import importlib.util

    if "KERAS_BACKEND" in os.environ:
        return None
    try:
        rec = json.loads(backend_choice_path().read_text())
    except (OSError, ValueError):
        return None
    if rec.get("processor") != cpu_name() or rec.get("cpu_count") != os.cpu_count():
        return None  # measured on other hardware
    if importlib.util.find_spec(rec["backend"]) is None:
        return None
    os.environ["KERAS_BACKEND"] = rec["backend"]
    return rec["backend"]
