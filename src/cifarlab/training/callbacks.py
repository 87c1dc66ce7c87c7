"""Training callbacks: a crash-consistent epoch backup, an atomic best checkpoint, logs.

A killed run started again with the same options resumes from its last completed
epoch: :class:`EpochBackup` saves, after every epoch, the weights (optimizer state
included) to a new file and then one JSON state (history so far, epoch, the other
callbacks' state, the weights file's name) atomically, so a kill at any instant leaves
a consistent pair. :func:`resume_state` reads it back before ``fit``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import keras
import numpy as np

from cifarlab.layout import atomic_path

#: Attributes of EarlyStopping / BestCheckpoint that a resumed run must carry over.
STATEFUL_ATTRS = ("best", "wait", "stopped_epoch")


def resume_state(backup_dir: Path, phase: int) -> dict | None:
    """The saved state of a phase (``epoch``, ``weights``, ``history``, ``callbacks``)."""
    f = Path(backup_dir) / f"state{phase}.json"
    return json.loads(f.read_text()) if f.is_file() else None


def load_backup_weights(model: keras.Model, backup_dir: Path, state: dict) -> None:
    """Model and optimizer variables as saved after ``state['epoch']``."""
    model.optimizer.build(model.trainable_variables)  # so its saved variables have a home
    model.load_weights(str(Path(backup_dir) / state["weights"]))


class EpochBackup(keras.callbacks.Callback):
    """Saves a resumable state after every epoch and restores the other callbacks' state.

    ``stateful``: callbacks whose :data:`STATEFUL_ATTRS` are saved and restored (their
    own ``on_train_begin`` resets them, so this callback must come after them).
    ``records`` holds this phase's history, one dict per epoch, resumed epochs included;
    ``seconds`` is each epoch's wall time, its validation included.
    """

    def __init__(self, backup_dir: Path, phase: int = 0, stateful=(), resumed: dict | None = None):
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.phase = phase
        self.stateful = [c for c in stateful if c is not None]
        self.resumed = resumed
        self.records: list[dict] = list(resumed["history"]) if resumed else []

    def on_train_begin(self, logs=None):
        if not self.resumed:
            return
        for cb, saved in zip(self.stateful, self.resumed["callbacks"]):
            for k, v in saved.items():
                setattr(cb, k, v)
        print(f"resuming {self.model.name} after epoch {self.resumed['epoch']}", flush=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        rec = {"epoch": epoch + 1, "phase": self.phase}
        rec.update({k: float(v) for k, v in (logs or {}).items()})
        rec["seconds"] = time.perf_counter() - self._t0
        lr = self.model.optimizer.learning_rate
        rec["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        self.records = [r for r in self.records if r["epoch"] != epoch + 1] + [rec]
        self._save(epoch + 1)

    def _save(self, epoch: int) -> None:
        name = f"phase{self.phase}-epoch{epoch}.weights.h5"
        with atomic_path(self.backup_dir / name) as tmp:
            self.model.save_weights(str(tmp))
        state = {
            "epoch": epoch,
            "weights": name,
            "history": self.records,
            "callbacks": [
                {k: _jsonable(getattr(cb, k)) for k in STATEFUL_ATTRS if hasattr(cb, k)}
                for cb in self.stateful
            ],
        }
        with atomic_path(self.backup_dir / f"state{self.phase}.json") as tmp:
            tmp.write_text(json.dumps(state))
        for old in self.backup_dir.glob(f"phase{self.phase}-epoch*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)


class EpochStatus(keras.callbacks.Callback):
    """The epoch just finished, as JSON in ``path`` (the model's work folder): what
    `cifarlab notebooks` shows in the terminal while a notebook's kernel trains.
    ``phase``: VGG16's phase (0: one phase); ``label`` names the part of the work
    instead (the search: "trial 1 of 2")."""

    def __init__(self, path: Path, phase: int, epochs: int, label: str = ""):
        super().__init__()
        self.path, self.phase, self.epochs, self.label = path, phase, epochs, label

    def on_epoch_end(self, epoch, logs=None):
        status = {"phase": self.phase, "label": self.label, "epoch": epoch + 1,
                  "epochs": self.epochs, "val_accuracy": _jsonable((logs or {}).get("val_accuracy")),
                  "time": time.time()}  # fmt: skip
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(status))


class BestCheckpoint(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the best validation accuracy at ``path``,
    written atomically (Keras' ModelCheckpoint writes in place, so a full disk or a
    kill mid-write would leave a damaged file under the final name). ``best`` is part
    of the resumable state."""

    def __init__(self, path: Path, monitor: str = "val_accuracy"):
        super().__init__()
        self.path, self.monitor = Path(path), monitor
        self.best = -np.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not float(value) > self.best:
            return
        self.best = float(value)
        with atomic_path(self.path) as tmp:
            self.model.save_weights(str(tmp))


def restore_best(model: keras.Model, path: Path) -> bool:
    """Load the best-validation weights; False when there are none or they cannot be read
    (a kill during the checkpoint's write): the last weights stay."""
    if not path.is_file():
        return False
    try:
        model.load_weights(str(path))
        return True
    except Exception:
        print(
            f"warning: best checkpoint {path} unreadable; keeping the last epoch's weights",
            file=sys.stderr,
        )
        return False


def in_notebook() -> bool:
    """True inside a Jupyter kernel (papermill's included)."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def keras_verbose(progress: bool) -> int:
    """Keras' ``verbose`` for ``fit``/``predict``: a progress bar in a terminal, one line
    per epoch in a notebook (a bar redrawn every step would be stored in the executed
    notebook frame by frame), nothing when ``progress`` is off."""
    if not progress:
        return 0
    return 2 if in_notebook() else 1


def tensorboard(logdir: Path) -> keras.callbacks.Callback | None:
    """TensorBoard logs where TensorFlow is installed (not on JAX/torch-only machines)."""
    try:
        import tensorboard as _tb  # noqa: F401
        import tensorflow as _tf  # noqa: F401
    except ImportError:
        return None
    return keras.callbacks.TensorBoard(log_dir=str(logdir), histogram_freq=0, write_graph=False)


def _jsonable(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else (1e308 if v > 0 else -1e308)
