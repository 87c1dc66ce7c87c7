"""The output layout: where every artifact of a run lives, written atomically.

This module is the only place that names an output folder or file. Under an output
root (``--out``, default ``.``)::

    saved_models/<model>.keras        the model: raw uint8 pixels in, probabilities out
    saved_models/<model>.json         its evidence: config, data checksum, class names,
                                      seed, backend, versions, hardware, wall time
    saved_models/tuned_search.json    the search's winner and every trial
    histories/<model>.npy             one record per epoch (structured array, no pickle)
    tuning/<project>/                 KerasTuner's trials (a stopped search resumes)
    runs/<model>/                     work folder while a model trains (backup, best
                                      weights, lock); removed when the run completes
    logs/<model>/                     TensorBoard logs
    reports/results.csv, results.md   every model on the untouched test split
    reports/per_class_<model>.csv     precision / recall / F1 per class
    reports/confused_pairs_<model>.csv
    reports/figures/<kind>_<model>.png  (and index.json)
    reports/notebooks/<Notebook>.ipynb  the executed notebooks
    reports/bench.json                `cifarlab bench`
    reports/plan.json                 the series' plan to its time budget, planned and actual
    reports/ablation.csv, ablation.md `cifarlab ablate`: the airbench recipe taken apart
    ablation/<part>/                  the output root of each ablation run (this layout)

Every file is written through :class:`atomic_path`: a crash leaves the old version or
nothing under the final name, never half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path

from cifarlab.errors import CifarlabError


class Layout:
    """Every artifact path under one output root."""

    def __init__(self, root: str | Path = "."):
        self.root = Path(root)

    # ------------------------------------------------------------------ folders
    @property
    def models_dir(self) -> Path:
        return self.root / "saved_models"

    @property
    def histories_dir(self) -> Path:
        return self.root / "histories"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def figures_dir(self) -> Path:
        return self.reports_dir / "figures"

    @property
    def notebooks_dir(self) -> Path:
        return self.reports_dir / "notebooks"

    @property
    def tuning_dir(self) -> Path:
        return self.root / "tuning"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def ablation_run(self, part: str) -> Layout:
        """The output root of one ablation run: the recipe without ``part``."""
        return Layout(self.root / "ablation" / part)

    # ------------------------------------------------------------------ per model
    def model(self, name: str) -> Path:
        return self.models_dir / f"{name}.keras"

    def meta(self, name: str) -> Path:
        return self.models_dir / f"{name}.json"

    def history(self, name: str) -> Path:
        return self.histories_dir / f"{name}.npy"

    def work(self, name: str) -> Path:
        return self.runs_dir / name

    def logs(self, name: str) -> Path:
        return self.root / "logs" / name

    def per_class(self, name: str) -> Path:
        return self.reports_dir / f"per_class_{name}.csv"

    def confused_pairs(self, name: str) -> Path:
        return self.reports_dir / f"confused_pairs_{name}.csv"

    def per_superclass(self, name: str) -> Path:
        return self.reports_dir / f"per_superclass_{name}.csv"

    def figure(self, kind: str, name: str | None = None) -> Path:
        """``reports/figures/<kind>_<name>.png`` (or ``<kind>.png`` for series figures)."""
        return self.figures_dir / (f"{kind}_{name}.png" if name else f"{kind}.png")

    # ------------------------------------------------------------------ series files
    @property
    def search(self) -> Path:
        return self.models_dir / "tuned_search.json"

    @property
    def results_csv(self) -> Path:
        return self.reports_dir / "results.csv"

    @property
    def results_md(self) -> Path:
        return self.reports_dir / "results.md"

    @property
    def figure_index(self) -> Path:
        return self.figures_dir / "index.json"

    @property
    def bench(self) -> Path:
        return self.reports_dir / "bench.json"

    @property
    def plan(self) -> Path:
        return self.reports_dir / "plan.json"

    @property
    def ablation_csv(self) -> Path:
        return self.reports_dir / "ablation.csv"

    @property
    def ablation_md(self) -> Path:
        return self.reports_dir / "ablation.md"

    def executed_notebook(self, name: str) -> Path:
        return self.notebooks_dir / f"{name}.ipynb"

    # ------------------------------------------------------------------ queries
    def saved_model_names(self) -> list[str]:
        """Names of the saved models (``<name>.keras``), unordered."""
        return [p.stem for p in self.models_dir.glob("*.keras")]

    def figures_of(self, kind: str) -> list[Path]:
        """Saved figures of one kind: ``<kind>_*.png`` and ``<kind>.png``."""
        found = list(self.figures_dir.glob(f"{kind}_*.png"))
        single = self.figure(kind)
        return found + ([single] if single.is_file() else [])

    def read_meta(self, name: str) -> dict:
        return json.loads(self.meta(name).read_text())

    def remove_work(self, name: str) -> None:
        """Delete a completed run's work folder, and ``runs/`` once no run is left."""
        import shutil

        shutil.rmtree(self.work(name), ignore_errors=True)
        with contextlib.suppress(OSError):
            self.runs_dir.rmdir()

    def __repr__(self) -> str:
        return f"Layout({str(self.root)!r})"


def layout(out: str | Path | Layout) -> Layout:
    return out if isinstance(out, Layout) else Layout(out)


# --------------------------------------------------------------------------- atomic writes


class atomic_path:
    """Context manager yielding a temporary path that replaces ``target`` only on success.

    A crash or error leaves ``target`` untouched (old version or absent), never half-written.
    """

    def __init__(self, target: str | Path):
        self.target = Path(target)

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            # keep the full suffix: Keras insists on names ending in .keras / .weights.h5
            prefix=f".{self.target.name}.",
            suffix=".part" + "".join(self.target.suffixes[-2:]),
            dir=self.target.parent,
        )
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            with open(self.tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(self.tmp, self.target)
        else:
            self.tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def write_json(path: Path, obj, **kw) -> Path:
    return write_text(path, json.dumps(obj, **kw))


def write_csv(df, path: Path) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


# --------------------------------------------------------------------------- the run lock


def _busy(work: Path) -> CifarlabError:
    return CifarlabError(
        f"another cifarlab run is training into {work}; wait for it or use another --out"
    )


#: A lock file (where file locks do not work) whose holder has not refreshed it for this
#: many seconds belongs to a dead run: a killed kernel, a Colab runtime that was recycled.
LOCK_STALE_S = 120.0
LOCK_HEARTBEAT_S = 30.0


@contextlib.contextmanager
def run_lock(work: Path):
    """An exclusive lock on a model's work folder: two runs cannot write the same model.

    An OS file lock (flock) where the filesystem has them; where it has none (a FUSE
    mount such as Google Drive on Colab, a network share: flock fails with ENOLCK or
    EOPNOTSUPP) a lock file that its holder refreshes every ``LOCK_HEARTBEAT_S``, taken
    over once its holder is dead (same host, process gone) or silent for
    ``LOCK_STALE_S`` (another host: a recycled runtime)."""
    work.mkdir(parents=True, exist_ok=True)
    fh = open(work / ".lock", "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise _busy(work) from None
    except OSError:  # no file locks on this filesystem
        fh.close()
        with _file_lock(work / ".lock.owner"):
            yield
        return
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


@contextlib.contextmanager
def repeating(every_s: float, action):
    """Call ``action`` every ``every_s`` seconds from a background thread while the block
    runs (a lock's heartbeat, the terminal's epoch lines)."""
    import threading

    stop = threading.Event()

    def loop():
        while not stop.wait(every_s):
            action()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _owner_alive(owner: dict, path: Path) -> bool:
    import socket
    import time

    if owner.get("host") == socket.gethostname():
        try:
            os.kill(int(owner["pid"]), 0)
            return True
        except (ProcessLookupError, ValueError, KeyError):
            return False
        except PermissionError:
            return True
    try:
        return time.time() - path.stat().st_mtime < LOCK_STALE_S
    except OSError:
        return False


@contextlib.contextmanager
def _file_lock(path: Path):
    import socket

    me = json.dumps({"host": socket.gethostname(), "pid": os.getpid()})
    for _ in range(2):  # a stale lock is removed once, then taken
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = json.loads(path.read_text() or "{}")
            except (OSError, ValueError):
                owner = {}
            if _owner_alive(owner, path):
                raise _busy(path.parent) from None
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:
        raise _busy(path.parent)

    def heartbeat():
        with contextlib.suppress(OSError):
            os.utime(path)

    try:
        with repeating(LOCK_HEARTBEAT_S, heartbeat):
            yield
    finally:
        with contextlib.suppress(OSError):
            if path.read_text() == me:
                path.unlink()
