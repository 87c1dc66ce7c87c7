"""The kernel tax: the same training in a fresh Python process and in a Jupyter kernel run
by papermill, back to back (BENCHMARKS.md, "kernel vs process")."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cifarlab.errors import CifarlabError
from cifarlab.notebooks import KERNEL, _stderr_to

_TRIAL = """
import json, tempfile, time
from pathlib import Path
import numpy as np
from cifarlab import config, models
from cifarlab.bench import throughput as bench
from cifarlab.training import recipe, train
recipe.set_precision("auto")
cfg = config.model_config({model!r}, {profile!r}).replace(
    stats=bench.RANDOM_IMAGE_STATS, epochs={epochs})
n = cfg.batch_size * {steps}
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
xv = rng.integers(0, 256, (n // 4, 32, 32, 3), dtype=np.uint8)
y, yv = np.arange(n) % 100, np.arange(n // 4) % 100
model = models.build(cfg)
recipe.compile_model(model, cfg, {epochs} * {steps})
with tempfile.TemporaryDirectory() as tmp:
    t = time.perf_counter()
    train.fit(model, cfg, x, y, xv, yv, Path(tmp) / "work", Path(tmp) / "logs", progress=True)
    wall = time.perf_counter() - t
print("KVP-JSON " + json.dumps(dict(seconds=wall)))
"""


def kernel_vs_process(
    model: str = "tuned", profile: str = "cpu", steps: int = 40, epochs: int = 2,
    kernel: str = KERNEL,
) -> dict:  # fmt: skip
    """The same training (``model`` on random images, ``epochs`` x ``steps`` steps with
    validation, the library's own ``fit`` and callbacks, progress as each place shows
    it) in a fresh Python process and in a Jupyter kernel run by papermill, back to
    back. Returns both wall times and their ratio (kernel / process)."""
    import subprocess
    import tempfile

    import nbformat
    import papermill as pm

    code = _TRIAL.format(model=model, profile=profile, steps=steps, epochs=epochs)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise CifarlabError(f"kernel-vs-process: the process trial failed: {r.stderr[-300:]}")
    process = _kvp(r.stdout)
    with tempfile.TemporaryDirectory() as tmp:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        nbformat.write(nb, f"{tmp}/trial.ipynb")
        with _stderr_to(Path(tmp) / "kernel.log"):
            pm.execute_notebook(
                f"{tmp}/trial.ipynb", f"{tmp}/done.ipynb", kernel_name=kernel,
                progress_bar=False, log_output=False,
            )  # fmt: skip
        done = nbformat.read(f"{tmp}/done.ipynb", as_version=4)
    text = "".join(o.get("text", "") for o in done.cells[0].outputs if o.output_type == "stream")
    in_kernel = _kvp(text)
    return {
        "model": model,
        "profile": profile,
        "steps_per_epoch": steps,
        "epochs": epochs,
        "process_s": process["seconds"],
        "kernel_s": in_kernel["seconds"],
        "ratio": in_kernel["seconds"] / process["seconds"],
    }


def _kvp(text: str) -> dict:
    import json

    line = next((ln for ln in text.splitlines() if ln.startswith("KVP-JSON ")), None)
    if line is None:
        raise CifarlabError("kernel-vs-process: the trial printed no result")
    return json.loads(line.removeprefix("KVP-JSON "))
