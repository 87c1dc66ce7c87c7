"""Execute the four notebooks in order with papermill (what `make run` does).

Executed copies, with their outputs and figures, go to the layout's notebooks folder
(cifarlab.layout), each with a ``.log`` of what its kernel wrote to standard error and
an ``.html`` export (figures embedded) that any browser opens without Jupyter.
A failing cell stops the series with one line naming the notebook and the cell; its
executed copy and HTML still show the traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from cifarlab.errors import CifarlabError

ORDER = ("TrainingModels", "ThirdModel", "TestModels", "VisualizeModel")
KERNEL = "cifarlab"  # registered into .venv by `make setup` (ipykernel install --sys-prefix)


def notebooks_dir() -> Path:
    """The notebooks/ folder of the checkout this package was installed from."""
    here = Path(__file__).resolve().parents[2] / "notebooks"
    if (here / f"{ORDER[0]}.ipynb").is_file():
        return here
    raise CifarlabError("notebooks/ not found: run from a checkout of the cifarlab repository")


def export_html(notebook: Path) -> Path:
    """``notebook`` as a standalone HTML page beside it: the figures the cells displayed
    are base64 images inside the page (and ``embed_images`` inlines any that markdown
    cells reference), so the one file is the whole report."""
    import nbformat
    from nbconvert import HTMLExporter

    from cifarlab.layout import atomic_path

    body, _ = HTMLExporter(embed_images=True).from_notebook_node(
        nbformat.read(notebook, as_version=4)
    )
    target = notebook.with_suffix(".html")
    with atomic_path(target) as tmp:
        Path(tmp).write_text(body, encoding="utf-8")
    return target


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1024:,.0f} KB"


@contextlib.contextmanager
def _stderr_to(path: Path):
    """Send this process's standard error (file descriptor 2, so the kernels it starts
    too) to ``path`` for the duration: TensorFlow's C++ start-up lines (a CUDA
    "failed call to cuInit" ERROR on any machine without a GPU) would read like a failure
    in the terminal. Nothing is lost: the log sits beside the executed notebook."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as f:
            os.dup2(f.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def run_notebooks(
    dataset: str,
    profile: str | None,
    out: str | Path,
    seed: int = 0,
    vgg16_weights: str = "imagenet",
    names=ORDER,
    kernel: str = KERNEL,
    progress: bool = True,
    epochs: int | None = None,
    batch_size: int | None = None,
) -> list[Path]:
    import papermill as pm
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient.exceptions import DeadKernelError

    from cifarlab import config
    from cifarlab.layout import Layout

    out = Path(out).resolve()
    src = notebooks_dir()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the kernels inherit it
    layout = Layout(out)
    layout.notebooks_dir.mkdir(parents=True, exist_ok=True)
    params = {
        "dataset": str(Path(dataset).resolve()) if Path(dataset).exists() else dataset,
        "profile": config.resolve_profile(profile),
        "out": str(out),
        "seed": seed,
        "vgg16_weights": str(Path(vgg16_weights).resolve())
        if Path(vgg16_weights).is_file()
        else vgg16_weights,
        "epochs": epochs,
        "batch_size": batch_size,
    }
    done = []
    for i, name in enumerate(names, 1):
        target = layout.executed_notebook(name)
        print(f"[{i}/{len(names)}] {name}.ipynb -> {target}", flush=True)
        t0 = time.time()
        log = target.with_suffix(".log")
        try:
            with _stderr_to(log):  # the kernel inherits it: TensorFlow's start-up lines
                pm.execute_notebook(
                    str(src / f"{name}.ipynb"),
                    str(target),
                    parameters=params,
                    kernel_name=kernel,
                    cwd=str(src),
                    # the bar stays in the terminal (standard error goes to the log)
                    progress_bar={"file": sys.stdout, "desc": name} if progress else False,
                    log_output=False,
                )
        except pm.PapermillExecutionError as exc:
            export_html(target)  # the traceback, readable in a browser too
            raise CifarlabError(
                f"notebook {name}.ipynb failed in cell {exc.exec_count} (index {exc.cell_index}): "
                f"{exc.ename}: {str(exc.evalue).splitlines()[0][:300] if exc.evalue else ''}; "
                f"the executed copy with the traceback is {target}"
            ) from None
        except NoSuchKernel:
            raise CifarlabError(
                f"Jupyter kernel '{kernel}' not found; run `make setup` to register it"
            ) from None
        except DeadKernelError as exc:
            raise CifarlabError(
                f"notebook {name}.ipynb stopped: {type(exc).__name__}: {str(exc)[:200]}; "
                f"the kernel's own messages are in {log}"
            ) from None
        html = export_html(target)
        print(
            f"      done in {time.time() - t0:.0f} s: {target.name} {_size(target)}, "
            f"{html.name} {_size(html)}",
            flush=True,
        )
        done.append(target)
    return done


# --------------------------------------------------------------------------- kernel tax

_TRIAL = """
import json, tempfile, time
from pathlib import Path
import numpy as np
from cifarlab import bench, config, models, recipe, train
recipe.set_precision("auto")
cfg = config.model_config({model!r}, {profile!r}).replace(
    **bench.RANDOM_IMAGE_STATS, num_classes=100, epochs={epochs})
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
