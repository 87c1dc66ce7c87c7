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


#: The tag of a section that applies to some data only (TestModels' superclasses): its
#: cells are left out of the executed notebook where its code cells showed nothing.
ONLY_WITH_OUTPUT = "only-with-output"


def drop_sections_without_output(notebook: Path) -> bool:
    """Leave the cells tagged :data:`ONLY_WITH_OUTPUT` out of the executed ``notebook``
    when none of its tagged code cells has an output; True when it did."""
    import nbformat

    from cifarlab.layout import atomic_path

    nb = nbformat.read(notebook, as_version=4)
    tagged = [c for c in nb.cells if ONLY_WITH_OUTPUT in c.get("metadata", {}).get("tags", [])]
    code = [c for c in tagged if c.cell_type == "code"]
    if not code or any(c.get("outputs") for c in code):
        return False
    dropped = {id(c) for c in tagged}
    nb.cells = [c for c in nb.cells if id(c) not in dropped]
    with atomic_path(notebook) as tmp:
        nbformat.write(nb, str(tmp))
    return True


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


def _status_lines(out, seen: dict) -> list[str]:
    """A line per epoch that finished since the last call, from the models' work folders
    (cifarlab.training.callbacks.EpochStatus), with the series' time against its plan."""
    import json

    from cifarlab.layout import layout
    from cifarlab.training import plan

    lines = []
    the_plan = plan.read_plan(out) or {}
    for f in sorted(layout(out).runs_dir.glob("*/status.json")):
        try:
            s = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        name = f.parent.name
        key = (s["phase"], s.get("label"), s["epoch"])
        if seen.get(name) == key:
            continue
        seen[name] = key
        acc = "" if s.get("val_accuracy") is None else f", val accuracy {s['val_accuracy']:.3f}"
        phase = (
            f" ({s['label']})" if s.get("label") else f" (phase {s['phase']})" if s["phase"] else ""
        )
        line = f"      {name}{phase}: epoch {s['epoch']}/{s['epochs']}{acc}"
        if the_plan.get("started"):
            spent = (s["time"] - the_plan["started"]) / 60
            line += f"; series {spent:.1f} of {the_plan['predicted_total_s'] / 60:.1f} min planned"
        lines.append(line)
    for part, entry in (the_plan.get("parts") or {}).items():  # each part as it ends
        if "ended" not in entry or ("done", part) in seen:
            continue
        seen["done", part] = True
        unit = "trials" if part == "search" else "epochs"
        line = (
            f"      {part}: done, {entry['count']} {unit} in {entry['actual_min']:.1f} min "
            f"(planned {entry['planned_min']:.1f})"
        )
        if the_plan.get("started"):
            spent = (entry["ended"] - the_plan["started"]) / 60
            line += f"; series {spent:.1f} of {the_plan['predicted_total_s'] / 60:.1f} min planned"
        lines.append(line)
    return lines


@contextlib.contextmanager
def _epochs_to_terminal(out, every_s: float = 2.0):
    """While a notebook runs, print each epoch its kernel finishes (the kernel's own
    output goes to the notebook): the terminal shows which model and epoch it is on."""
    from tqdm import tqdm

    from cifarlab.layout import repeating

    seen: dict = {}

    def show():
        for line in _status_lines(out, seen):
            tqdm.write(line)

    with repeating(every_s, show):
        yield


#: the environment variables that name folders: relative ones are made absolute for the
#: kernels, which start in the notebooks' folder
PATH_VARIABLES = ("CIFARLAB_DATA_DIR", "CIFARLAB_CACHE_DIR")


def _seen_from(folder: Path, path: str | Path) -> str:
    """``path`` relative to ``folder`` (where the kernels start), so the notebooks'
    parameters name no absolute path of this machine; absolute where no relative path
    exists (another drive)."""
    try:
        return os.path.relpath(Path(path).resolve(), folder)
    except ValueError:
        return str(Path(path).resolve())


def _absolute_paths_in_environment() -> None:
    for name in PATH_VARIABLES:
        if os.environ.get(name):
            os.environ[name] = str(Path(os.environ[name]).resolve())


def execute(
    notebook: Path, target: Path, params: dict, kernel: str = KERNEL, progress: bool = True,
    desc: str = "",
) -> None:  # fmt: skip
    """Execute ``notebook`` into ``target`` with papermill, its kernel started in the
    notebook's folder. What the kernel's C++ libraries write to its file descriptor 2
    (TensorFlow's start-up lines, a CUDA "failed call to cuInit" on a CPU) goes to
    ``target``'s ``.log``, not into red boxes in the notebook."""
    import papermill as pm

    with _stderr_to(target.with_suffix(".log")):
        pm.execute_notebook(
            str(notebook),
            str(target),
            parameters=params,
            kernel_name=kernel,
            cwd=str(notebook.parent),
            # the bar stays in the terminal (standard error goes to the log)
            progress_bar={"file": sys.stdout, "desc": desc} if progress else False,
            log_output=False,
            extra_arguments=["--IPKernelApp.capture_fd_output=False"],
        )


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
    budget: float | str | None = "auto",
) -> list[Path]:
    """Execute the notebooks ``names`` in order (executed copies and HTML under ``out``).

    Args:
        dataset, profile, out, seed, vgg16_weights: the series' settings, passed to every
            notebook as its parameters.
        names: which notebooks, in order.
        kernel: the Jupyter kernel to run them in.
        progress: a progress bar per notebook.
        epochs, batch_size: override every model's (None: the profile's, or the plan's).
        budget: minutes for the whole series (``auto``: the profile's default; None: the
            recipes): the plan is made and printed before the first notebook starts.

    Returns:
        The executed notebooks' paths.
    """
    import papermill as pm
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient.exceptions import DeadKernelError

    from cifarlab import config, course
    from cifarlab.data.datasets import load_dataset
    from cifarlab.layout import Layout
    from cifarlab.training import plan, timing

    out = Path(out).resolve()
    src = notebooks_dir()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the kernels inherit it
    _absolute_paths_in_environment()  # the kernels start in notebooks/, not here
    layout = Layout(out)
    layout.notebooks_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    profile = config.resolve_profile(profile)
    params = {  # paths as the kernels, started in notebooks/, see them
        "dataset": _seen_from(src, dataset) if Path(dataset).exists() else dataset,
        "profile": profile,
        "out": _seen_from(src, out),
        "seed": seed,
        "vgg16_weights": _seen_from(src, vgg16_weights)
        if Path(vgg16_weights).is_file()
        else vgg16_weights,
        "epochs": epochs,
        "batch_size": batch_size,
        "budget": timing.resolve_budget(budget, profile, {"epochs": epochs}),
    }
    if len(names) == len(ORDER):  # the whole series: its plan before the first notebook
        ds = load_dataset(dataset, progress=progress)
        the_plan = timing.make_plan(
            ds, profile, params["budget"], out, seed, notebooks=True, started=started
        )
        print(course.describe_plan(the_plan), flush=True)
    done = []
    for i, name in enumerate(names, 1):
        target = layout.executed_notebook(name)
        print(f"[{i}/{len(names)}] {name}.ipynb -> {target}", flush=True)
        t0 = time.time()
        plan.kernel_started(out)  # its start is spent time from now on, not time to come
        log = target.with_suffix(".log")
        try:
            with _epochs_to_terminal(out):
                execute(src / f"{name}.ipynb", target, params, kernel, progress, desc=name)
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
        drop_sections_without_output(target)
        html = export_html(target)
        print(
            f"      done in {time.time() - t0:.0f} s: {target.name} {_size(target)}, "
            f"{html.name} {_size(html)}",
            flush=True,
        )
        done.append(target)
    if len(names) == len(ORDER) and plan.read_plan(out):
        print(plan.against_actual(plan.finish(out)), flush=True)
    return done
