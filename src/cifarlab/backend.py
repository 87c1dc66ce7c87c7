"""The Keras backend of a command: the one `cifarlab bench` measured fastest on this
hardware, unless the user set KERAS_BACKEND. An explicit step of the command line
(:func:`choose_backend`, printed when it changes anything): importing cifarlab changes
nothing in the environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cifarlab.data.datasets import cache_dir
from cifarlab.hardware import cpu_name


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
    print(
        f"cifarlab: Keras backend {rec['backend']}, the fastest `cifarlab bench` measured on "
        f"this machine ({rec.get('date', '?')}); set KERAS_BACKEND to choose another"
    )
    return rec["backend"]
