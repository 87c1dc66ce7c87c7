"""Training: one entry point for the four models, resumable, leaving atomic artifacts.

:func:`train_model` takes a model name, a dataset and a profile; it resolves the
config (cifarlab.config; for ``tuned`` the search's winner, cifarlab.training.tune), makes the
protocol's split (cifarlab.data.prepare), builds the model (cifarlab.models), fits it
(:func:`fit`; VGG16's two phases in cifarlab.training.transfer) and writes the model, its
history and its evidence (cifarlab.training.evidence) where cifarlab.layout says.

A killed run started again with the same options resumes from its last completed
epoch (cifarlab.training.callbacks); the final history holds every epoch exactly once. A run
with other options refuses to mix into an interrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import keras
import numpy as np

from cifarlab import config
from cifarlab.config import TrainConfig
from cifarlab.data.batches import Batches, fit_data, one_hot, training_batches
from cifarlab.data.datasets import Dataset, prepare
from cifarlab.errors import CifarlabError
from cifarlab.layout import Layout, atomic_path, layout, run_lock
from cifarlab.models import at_full_size, build
from cifarlab.models.airbench import init_from_data
from cifarlab.training import callbacks, plan
from cifarlab.training.evidence import write_artifacts
from cifarlab.training.recipe import compile_model, set_precision
from cifarlab.training.transfer import train_vgg16


def fit(
    model: keras.Model,
    cfg: TrainConfig,
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    work: Path,
    logs: Path,
    *,
    phase: int = 0,
    epochs: int | None = None,
    progress: bool = True,
    x_mirror: np.ndarray | None = None,
    seed: int = 0,
) -> list[dict]:
    """Fit a compiled model, resumably: early stopping (``cfg.patience``), the best
    validation weights kept in ``work/best<phase>.weights.h5``, a backup after every
    epoch in ``work/backup``, TensorBoard logs in ``logs/phase<phase>``.

    ``x_mirror``: inputs of the mirrored images (cached VGG16 features); each epoch then
    shows every image once, as itself or mirrored. Both splits are fed as
    :class:`cifarlab.data.batches.Batches` (an epoch's order depends on the seed and the epoch).
    Returns the history records of this phase (one per epoch, resumed runs included).
    """
    epochs = epochs or cfg.epochs
    backup_dir = work / "backup"
    state = callbacks.resume_state(backup_dir, phase)
    if state and state["epoch"] >= epochs:  # this phase finished before a kill
        model.load_weights(str(backup_dir / state["weights"]))
        return state["history"]
    if state:
        callbacks.load_backup_weights(model, backup_dir, state)
    first = state["epoch"] if state else 0
    stop = None
    if cfg.patience:
        stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=cfg.patience)
    best = callbacks.BestCheckpoint(work / f"best{phase}.weights.h5")
    backup = callbacks.EpochBackup(backup_dir, phase=phase, stateful=(stop, best), resumed=state)
    board = callbacks.tensorboard(logs / f"phase{phase}")
    status = callbacks.EpochStatus(work / "status.json", phase, epochs)
    train_batches = training_batches(x, y, cfg, seed, first_epoch=first, x_mirror=x_mirror)
    val_batches = Batches(x_val, one_hot(y_val, cfg.stats.num_classes), cfg.batch_size)
    model.fit(
        **fit_data(train_batches, val_batches, epochs),
        epochs=epochs,
        initial_epoch=first,
        callbacks=[c for c in (stop, best, board, status, backup) if c],  # the backup last
        verbose=callbacks.keras_verbose(progress),
    )
    return backup.records


def resolve_config(
    name: str, dataset, profile: str, out: Layout, seed: int, progress: bool, search: bool = True
) -> TrainConfig:
    """The config a model trains with: its recipe, or for ``tuned`` the search's winner
    (searching first when there is none, unless ``search`` is False)."""
    if name != "tuned":
        return config.model_config(name, profile)
    from cifarlab.training import tune

    return tune.best_config(out, dataset, profile, seed, progress=progress, search=search)


def planned_config(name: str, cfg: TrainConfig, out, overrides: dict | None = None) -> TrainConfig:
    """``cfg`` as the series' plan in ``out`` sizes it (cifarlab.training.plan), unless the
    epochs are given (``overrides``) or no budget plan runs there."""
    if (overrides or {}).get("epochs") is not None:
        return cfg
    count = plan.start(out, name)
    return cfg if count is None else plan.planned_config(out, cfg, count)


def train_model(
    name: str,
    dataset: str | Dataset = "cifar100",
    profile: str | None = None,
    out: str | Path = ".",
    seed: int = 0,
    overrides: dict | None = None,
    vgg16_weights: str = "imagenet",
    progress: bool = True,
    train_config: TrainConfig | None = None,
    distribute: str | None = None,
    skip_trained: bool = False,
) -> dict:
    """Train one of the four models and save its model, history and evidence.

    Args:
        name: ``baseline``, ``overfit``, ``tuned`` or ``vgg16``.
        dataset: a dataset spec (``cifar100``, ``cifar10``, a path) or a loaded Dataset.
        profile: ``smoke``, ``cpu`` or ``full``; None: ``full`` with a GPU, else ``cpu``.
        out: the output root (cifarlab.layout).
        seed: seeds the split, the initialisation and the shuffling.
        overrides: config fields to override (``epochs``, ``batch_size``); None = keep.
        vgg16_weights: ``imagenet``, ``offline``, ``none`` or a ``.h5`` file (vgg16 only).
        progress: progress bars.
        train_config: train with this config instead of the profile's (tests, experiments).
        distribute: ``none``, ``mirrored``, ``multiworker`` or ``dataparallel``
            (cifarlab.training.distribute).
        skip_trained: a model already saved in ``out`` from the same config, data, seed
            and backend is kept, not trained again (a series re-run after its kernel or
            runtime died goes on where it stopped).

    Returns:
        The metadata written beside the model.
    """
    from cifarlab.training import distribute as dist_mod

    config.check_model(name)
    dist = dist_mod.setup(distribute)
    if dist.kind != "none":
        print(
            f"distribute: {dist.kind} over {dist.replicas} replica(s) "
            f"{dist.devices or ''} as {dist.task}".rstrip(),
            flush=True,
        )
    root = out = layout(out)
    if not dist.is_chief:  # workers other than the chief write their copies aside
        out = Layout(root.root / "workers" / dist.task)
        progress = False  # one progress bar per cluster: the chief's
    profile = config.resolve_profile(profile)
    if train_config is None:
        # every multiworker worker must train the same configuration: search first
        search = dist.kind != "multiworker"
        train_config = resolve_config(name, dataset, profile, root, seed, progress, search)
    started = time.time()
    if dist.is_chief:  # a series with a time budget: the epochs the time left buys
        train_config = planned_config(name, train_config, root, overrides)
    cfg = dist_mod.scale(train_config.override(**(overrides or {})).validate(), dist)
    precision = set_precision(cfg.precision)
    keras.utils.set_random_seed(seed)
    ds, split, cfg = prepare(dataset, cfg, seed, progress)
    if dist.kind == "dataparallel" and dist.replicas > 1:
        split = _trim_to_replicas(split, dist.replicas)
    work, logs = out.work(name), out.logs(name)
    kept = skip_trained and _already_trained(out, name, cfg, ds, seed)
    if kept:
        print(
            f"{name} is already trained with these settings: kept {out.model(name)} "
            "(delete it to train again)",
            flush=True,
        )
        if dist.is_chief:  # its part of the plan is done
            plan.record(root, name, cfg.epochs, started, time.time(), kept=True)
        return kept
    with run_lock(work):
        check_resume(work, cfg, ds, seed)
        t0 = time.time()
        print(
            f"training {name} on {ds.name}: {len(split.y_train):,} train / "
            f"{len(split.y_val):,} val images, {cfg.epochs} epochs, profile {profile}, "
            f"backend {keras.backend.backend()}",
            flush=True,
        )
        with dist.scope:
            if name == "vgg16":
                model, records, extra = train_vgg16(
                    cfg, split, work, logs, vgg16_weights, fit=fit, progress=progress, seed=seed
                )
            else:
                model = build(cfg)
                init_from_data(model, cfg, split.x_train)  # airbench networks' whitening
                steps = cfg.epochs * cfg.steps_per_epoch(len(split.y_train))
                compile_model(model, cfg, steps)
                records = fit(
                    model, cfg, split.x_train, split.y_train, split.x_val, split.y_val,
                    work, logs, progress=progress,
                )  # fmt: skip
                restored = cfg.restore_best and callbacks.restore_best(
                    model, work / "best0.weights.h5"
                )
                model = at_full_size(model, cfg)
                extra = {"restored_best_weights": restored}
        extra["distribute"] = dist.describe()
        wall = time.time() - t0  # this process's time; a resumed run counts its own part
        # planned and actual minutes, in the series' plan (where one runs) and the evidence
        extra["plan"] = plan.record(root, name, cfg.epochs, started, time.time())
        meta = write_artifacts(
            model,
            name,
            out,
            cfg,
            ds,
            records,
            seed,
            wall,
            extra={"profile": profile, "precision": precision, **extra},
        )
    out.remove_work(name)
    scored = (  # what the saved weights score: the best epoch's, or the last one's
        f"{'best' if meta.get('restored_best_weights') else 'last'} epoch's val accuracy "
        f"{meta['kept_val_accuracy']:.4f} kept"
    )
    print(
        f"saved {out.model(name)} ({scored}, {meta['epochs_run']} epochs, {wall:.0f} s)", flush=True
    )
    return meta


def _trim_to_replicas(split, replicas: int):
    """Every batch must split evenly over the devices: drop at most replicas-1 images."""
    n_train = len(split.y_train) // replicas * replicas
    n_val = len(split.y_val) // replicas * replicas
    return dataclasses.replace(
        split,
        x_train=split.x_train[:n_train],
        y_train=split.y_train[:n_train],
        x_val=split.x_val[:n_val],
        y_val=split.y_val[:n_val],
    )


def _already_trained(out: Layout, name: str, cfg: TrainConfig, ds: Dataset, seed: int):
    """The saved model's metadata where it was trained from ``cfg``, ``ds`` and ``seed``
    on this backend and finished (no work folder left); else None."""
    try:
        meta = json.loads(out.meta(name).read_text())
    except (OSError, ValueError):
        return None
    same = (
        out.model(name).is_file()
        and not out.work(name).exists()
        and meta.get("config") == json.loads(json.dumps(cfg.to_dict()))
        and meta.get("dataset", {}).get("sha256") == ds.checksum
        and meta.get("seed") == seed
        and meta.get("backend") == keras.backend.backend()
    )
    return meta if same else None


def check_resume(work: Path, cfg: TrainConfig, ds: Dataset, seed: int) -> None:
    """A work folder from an interrupted run is resumed only with the same inputs."""
    ident = {
        "config": cfg.to_dict(),
        "dataset": ds.checksum,
        "seed": seed,
        "backend": keras.backend.backend(),
    }
    f = work / "run.json"
    if f.is_file():
        old = json.loads(f.read_text())
        if old.get("ident") != json.loads(json.dumps(ident)):
            raise CifarlabError(
                f"{work} holds an interrupted run with other options; run the same command "
                f"again to resume it, or delete {work} to start over"
            )
        old["resumed"] = old.get("resumed", 0) + 1
        f.write_text(json.dumps(old))
        return
    with atomic_path(f) as tmp:
        tmp.write_text(json.dumps({"ident": ident, "started": time.time()}))
