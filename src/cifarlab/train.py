"""Training: one function for all four models, resumable, with atomic artifacts.

Per model ``<name>`` under the output root:

- ``saved_models/<name>.keras``  the model (raw pixels in, probabilities out)
- ``saved_models/<name>.json``   config, dataset, class names, seed, backend, versions,
                                 hardware, wall time, epochs: the evidence
- ``histories/<name>.npy``       structured array, one record per epoch
- ``runs/<name>/``               work folder while training (backup, best weights,
                                 lock); removed when the run completes
- ``logs/<name>/``               TensorBoard logs

A killed run started again with the same options resumes from its last completed
epoch; the final history holds every epoch exactly once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import keras  # noqa: E402
import numpy as np

from cifarlab import config as cfgmod
from cifarlab.config import TrainConfig
from cifarlab.data import (
    Dataset,
    Split,
    atomic_path,
    channel_stats,
    load_dataset,
    split_train_val,
    stratified_subset,
)
from cifarlab.errors import CifarlabError
from cifarlab.hardware import cpu_name

SERIES = ("baseline", "overfit", "tuned", "vgg16")


# --------------------------------------------------------------------------- paths


def paths(out: str | Path, name: str) -> dict[str, Path]:
    out = Path(out)
    return {
        "model": out / "saved_models" / f"{name}.keras",
        "meta": out / "saved_models" / f"{name}.json",
        "history": out / "histories" / f"{name}.npy",
        "work": out / "runs" / name,
        "logs": out / "logs" / name,
    }


@contextlib.contextmanager
def run_lock(work: Path):
    """An exclusive lock on a model's work folder: two runs cannot write the same model."""
    work.mkdir(parents=True, exist_ok=True)
    fh = open(work / ".lock", "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise CifarlabError(
            f"another cifarlab run is training into {work}; wait for it or use another --out"
        ) from None
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


# --------------------------------------------------------------------------- callbacks


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore made crash-consistent, carrying the history and callback state.

    Keras' own callback writes its weights and its epoch counter as two files in
    place, so a kill between them can pair epoch k's weights with epoch k-1's counter,
    and EarlyStopping / ModelCheckpoint forget their best values on restart. Here each
    epoch's weights go to a new file, then one JSON (history so far, the epoch, the
    callbacks' state, the weights file's name) replaces the old one atomically: a kill
    at any instant leaves a consistent pair. It must be the last callback.
    """

    def __init__(self, backup_dir, phase: int = 0, stateful=(), lr_fn=None):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self.state_path = Path(backup_dir) / f"state{phase}.json"
        self.phase = phase
        self.stateful = [c for c in stateful if c is not None]
        self.lr_fn = lr_fn
        self.records: list[dict] = []

    def load_state(self) -> dict | None:
        if self.state_path.is_file():
            return json.loads(self.state_path.read_text())
        return None

    def on_train_begin(self, logs=None):
        state = self.load_state()
        if not state:
            return
        self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(str(Path(self.backup_dir) / state["weights"]))
        self.model._initial_epoch = state["epoch"]
        self._current_epoch = state["epoch"]
        self.records = state["history"]
        for cb, saved in zip(self.stateful, state["callbacks"]):
            for k, v in saved.items():
                setattr(cb, k, v)
        print(f"resuming {self.model.name} after epoch {state['epoch']}", flush=True)

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        rec = {"epoch": epoch + 1, "phase": self.phase}
        rec.update({k: float(v) for k, v in (logs or {}).items()})
        rec["learning_rate"] = float(self.lr_fn()) if self.lr_fn else float("nan")
        self.records = [r for r in self.records if r["epoch"] != epoch + 1] + [rec]
        self._save_model()

    def _save_model(self):
        backup = Path(self.backup_dir)
        backup.mkdir(parents=True, exist_ok=True)
        name = f"phase{self.phase}-epoch{self._current_epoch}.weights.h5"
        with atomic_path(backup / name) as tmp:
            self.model.save_weights(str(tmp))
        state = {
            "epoch": self._current_epoch,
            "weights": name,
            "history": self.records,
            "callbacks": [
                {
                    k: _jsonable(getattr(cb, k))
                    for k in ("best", "wait", "stopped_epoch")
                    if hasattr(cb, k)
                }
                for cb in self.stateful
            ],
        }
        with atomic_path(self.state_path) as tmp:
            tmp.write_text(json.dumps(state))
        for old in backup.glob(f"phase{self.phase}-epoch*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def on_train_end(self, logs=None):
        pass  # the work folder is removed by train_model once the artifacts are saved


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint whose file appears atomically: Keras writes it in place, so a full
    disk or a kill mid-write would leave a damaged best checkpoint under its name."""

    def _save_model(self, epoch, batch, logs):
        final = Path(self._get_file_path(epoch, batch, logs))
        tmp = final.with_name(f".{final.name}.part" + "".join(final.suffixes[-2:]))
        original = self.filepath
        self.filepath = str(tmp)
        try:
            super()._save_model(epoch, batch, logs)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            self.filepath = original
        if tmp.exists():  # only when the monitored value improved
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)


def _jsonable(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else (1e308 if v > 0 else -1e308)


def _lr_getter(model):
    def get():
        lr = model.optimizer.learning_rate
        return keras.ops.convert_to_numpy(lr)

    return get


def _tensorboard(logdir: Path):
    try:
        import tensorboard  # noqa: F401
        import tensorflow  # noqa: F401
    except ImportError:  # the JAX/torch-only machines: no TensorBoard logs
        return None
    return keras.callbacks.TensorBoard(log_dir=str(logdir), histogram_freq=0, write_graph=False)


# --------------------------------------------------------------------------- compile / fit


def make_optimizer(cfg: TrainConfig, steps: int) -> keras.optimizers.Optimizer:
    """Optimizer with a per-step schedule: linear warm-up to the peak, then cosine to 0."""
    if cfg.schedule == "cosine":
        warmup = int(cfg.warmup_fraction * steps)
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=cfg.learning_rate / 10 if warmup else cfg.learning_rate,
            decay_steps=max(1, steps - warmup),
            alpha=0.0,
            warmup_target=cfg.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    elif cfg.schedule == "constant":
        lr = cfg.learning_rate
    else:
        raise CifarlabError(f"unknown schedule '{cfg.schedule}'; use cosine or constant")
    wd = cfg.weight_decay or None
    if cfg.optimizer == "sgd":
        opt = keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, weight_decay=wd)
    elif cfg.optimizer == "adamw":
        opt = keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay or 1e-4)
    elif cfg.optimizer == "adam":
        opt = keras.optimizers.Adam(lr, weight_decay=wd)
    else:
        raise CifarlabError(f"unknown optimizer '{cfg.optimizer}'; use adam, adamw or sgd")
    if wd or cfg.optimizer == "adamw":
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return opt


def compile_model(model, cfg: TrainConfig, steps: int) -> None:
    model.compile(
        optimizer=make_optimizer(cfg, steps),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=["accuracy", keras.metrics.TopKCategoricalAccuracy(5, name="top5")],
    )


def one_hot(y: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype="float32")[y]


def fit(
    model,
    cfg: TrainConfig,
    x,
    y,
    x_val,
    y_val,
    work: Path,
    logs: Path,
    *,
    phase: int = 0,
    epochs: int | None = None,
    early_stopping: bool = True,
    progress: bool = True,
    x_mirror: np.ndarray | None = None,
    seed: int = 0,
) -> list[dict]:
    """Fit with early stopping, best-weights checkpoint, resumable backup and TensorBoard.

    ``x_mirror``: the inputs of the mirrored images (cached VGG16 features); each epoch
    then shows every image once, as itself or mirrored (see :class:`MirrorChoice`).
    Returns the history records of this phase (one per epoch, resumed runs included).
    """
    epochs = epochs or cfg.epochs
    yv = one_hot(y_val, cfg.num_classes)
    stop = None
    if early_stopping and cfg.early_stopping:
        stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=cfg.early_stopping)
    best = AtomicModelCheckpoint(
        str(work / f"best{phase}.weights.h5"),
        monitor="val_accuracy",
        save_best_only=True,
        save_weights_only=True,
    )
    backup = ResumableBackup(
        work / "backup", phase=phase, stateful=(stop, best), lr_fn=_lr_getter(model)
    )
    callbacks = [c for c in (stop, best, _tensorboard(logs / f"phase{phase}"), backup) if c]
    state = backup.load_state()
    if state and state["epoch"] >= epochs:  # this phase finished before a kill
        model.load_weights(str(work / "backup" / state["weights"]))
        return state["history"]
    if x_mirror is not None:
        data = dict(
            x=MirrorChoice(
                x,
                x_mirror,
                one_hot(y, cfg.num_classes),
                cfg.batch_size,
                seed,
                first_epoch=state["epoch"] if state else 0,
            )
        )
    else:
        data = dict(x=x, y=one_hot(y, cfg.num_classes), batch_size=cfg.batch_size, shuffle=True)
    model.fit(
        **data,
        epochs=epochs,
        validation_data=(x_val, yv),
        callbacks=callbacks,
        verbose=1 if progress else 0,
    )
    return backup.records


class MirrorChoice(keras.utils.PyDataset):
    """Augmentation for inputs cached once: every epoch shows each image once, as itself
    or as its mirror image (a fair coin per image), in a new order. The draws depend only
    on the seed and the epoch, so a resumed run sees the epochs it would have seen."""

    def __init__(self, x, x_mirror, y, batch_size: int, seed: int, first_epoch: int = 0):
        super().__init__()
        if x.shape != x_mirror.shape or len(x) != len(y):
            raise ValueError("images, mirror images and labels must match")
        self.x, self.x_mirror, self.y = x, x_mirror, y
        self.batch_size, self.seed = batch_size, seed
        self.epoch = first_epoch
        self._draw()

    def _draw(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.order = rng.permutation(len(self.y))
        self.mirrored = rng.random(len(self.y)) < 0.5

    def __len__(self):
        return int(np.ceil(len(self.y) / self.batch_size))

    def __getitem__(self, i):
        idx = np.sort(self.order[i * self.batch_size : (i + 1) * self.batch_size])
        batch = self.x[idx]  # one gather, then the mirrored rows replaced in place
        pick = self.mirrored[idx]
        batch[pick] = self.x_mirror[idx[pick]]
        return batch, self.y[idx]

    def on_epoch_end(self):
        self.epoch += 1
        self._draw()


def restore_best(model, work: Path, phase: int = 0) -> bool:
    """Load the best-validation weights of a phase; False when there are none or they
    cannot be read (a kill during the checkpoint's write): the last weights stay."""
    p = work / f"best{phase}.weights.h5"
    if not p.is_file():
        return False
    try:
        model.load_weights(str(p))
        return True
    except Exception:
        print(
            f"warning: best checkpoint {p} unreadable; keeping the last epoch's weights",
            file=sys.stderr,
        )
        return False


# --------------------------------------------------------------------------- artifacts


def history_array(records: list[dict]) -> np.ndarray:
    """Records -> a structured array (epoch, phase, every metric, learning_rate)."""
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in keys]
    dtype = [(k, "i4" if k in ("epoch", "phase") else "f8") for k in keys]
    arr = np.zeros(len(records), dtype=dtype)
    for i, r in enumerate(records):
        for k in keys:
            arr[i][k] = r.get(k, -1 if k in ("epoch", "phase") else np.nan)
    return arr


def environment() -> dict:
    """Backend, versions and hardware: part of every result's evidence."""
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for pkg in ("keras", "tensorflow", "jax", "torch", "numpy", "keras-tuner"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return {
        "backend": keras.backend.backend(),
        "versions": versions,
        "hardware": {
            "machine": platform.machine(),
            "processor": cpu_name(),
            "cpu_count": os.cpu_count(),
            "gpu": cfgmod.has_gpu(),
            "platform": platform.platform(),
        },
    }


def save_artifacts(
    model,
    name: str,
    out: Path,
    cfg: TrainConfig,
    ds: Dataset,
    records: list[dict],
    seed: int,
    wall: float,
    extra: dict | None = None,
) -> dict:
    p = paths(out, name)
    hist = history_array(records)
    acc_key = "val_accuracy"
    best_val = (
        float(np.nanmax(hist[acc_key])) if acc_key in hist.dtype.names and len(hist) else None
    )
    last = records[-1] if records else {}
    meta = {
        "name": name,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "config": cfg.to_dict(),
        "dataset": {
            "spec": ds.spec,
            "name": ds.name,
            "sha256": ds.checksum,
            "resolved": str(Path(ds.spec).resolve()) if Path(ds.spec).exists() else ds.spec,
            "num_classes": ds.num_classes,
            "has_coarse": ds.has_coarse,
        },
        "class_names": ds.class_names,
        "coarse_names": ds.coarse_names,
        "fine_to_coarse": ds.fine_to_coarse.tolist() if ds.has_coarse else None,
        "seed": seed,
        **environment(),
        "wall_time_s": round(wall, 1),
        "epochs_run": len(records),
        "epochs_planned": cfg.epochs,
        "best_val_accuracy": best_val,
        "final_train_accuracy": last.get("accuracy"),
        "final_val_accuracy": last.get("val_accuracy"),
        "params": int(model.count_params()),
        **(extra or {}),
    }
    # Write the data first and the model last, each atomically under its final name.
    with atomic_path(p["history"]) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, hist, allow_pickle=False)
    with atomic_path(p["model"]) as tmp:
        model.save(str(tmp))
    with atomic_path(p["meta"]) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, default=_json_default))
    return meta


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


# --------------------------------------------------------------------------- entry points


def prepare(
    dataset: str | Dataset, cfg: TrainConfig, seed: int, progress: bool = True
) -> tuple[Dataset, Split, TrainConfig]:
    """Load, split (stratified, seeded) and fill the config's data statistics."""
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, progress=progress)
    split = split_train_val(ds, cfg.val_fraction, seed, limit=cfg.train_limit)
    if cfg.train_subset and cfg.train_subset < len(split.y_train):
        x_sub, y_sub = stratified_subset(split.x_train, split.y_train, cfg.train_subset, seed)
        split = dataclasses.replace(split, x_train=x_sub, y_train=y_sub)
    mean, std = channel_stats(split.x_train)  # training split only
    cfg = cfg.replace(
        mean=mean.round(4).tolist(), std=std.round(4).tolist(), num_classes=ds.num_classes
    )
    return ds, split, cfg


def train_model(
    name: str,
    dataset: str | Dataset = "cifar100",
    profile: str | None = None,
    out: str | Path = ".",
    seed: int = 0,
    overrides: dict | None = None,
    vgg16_weights: str = "imagenet",
    progress: bool = True,
    config: TrainConfig | None = None,
    distribute: str | None = None,
) -> dict:
    """Train one of the four models and save its model, history and metadata.

    ``distribute``: none, mirrored, multiworker or dataparallel (see cifarlab.distribute).
    Returns the metadata written to ``saved_models/<name>.json``.
    """
    from cifarlab import distribute as dist_mod

    dist = dist_mod.setup(distribute)
    if dist.kind != "none":
        print(
            f"distribute: {dist.kind} over {dist.replicas} replica(s) "
            f"{dist.devices or ''} as {dist.task}".rstrip(),
            flush=True,
        )
    root = Path(out)
    if not dist.is_chief:  # workers other than the chief write their copies aside
        out = root / "workers" / dist.task
        progress = False  # one progress bar per cluster: the chief's
    if name not in SERIES:
        raise CifarlabError(f"unknown model '{name}'; choose one of {', '.join(SERIES)}")
    profile = cfgmod.resolve_profile(profile)
    out = Path(out)
    if config is None:
        if name == "tuned":
            from cifarlab import tune

            config = tune.best_config(
                root,
                dataset,
                profile,
                seed,
                progress=progress,
                vgg16_weights=vgg16_weights,
                # every worker must train the same configuration: search first
                search=dist.kind != "multiworker",
            )
        else:
            config = cfgmod.model_config(name, profile)
    cfg = dist_mod.scale(config.replace(**(overrides or {})).validate(), dist)
    precision = set_precision(cfg.precision)
    keras.utils.set_random_seed(seed)
    ds, split, cfg = prepare(dataset, cfg, seed, progress)
    if dist.kind == "dataparallel" and dist.replicas > 1:
        # every batch must split evenly over the devices: drop at most replicas-1 images
        n_train = len(split.y_train) // dist.replicas * dist.replicas
        n_val = len(split.y_val) // dist.replicas * dist.replicas
        split = dataclasses.replace(
            split,
            x_train=split.x_train[:n_train],
            y_train=split.y_train[:n_train],
            x_val=split.x_val[:n_val],
            y_val=split.y_val[:n_val],
        )
    p = paths(out, name)
    with run_lock(p["work"]):
        _check_resume(p["work"], cfg, ds, seed)
        t0 = time.time()
        print(
            f"training {name} on {ds.name}: {len(split.y_train):,} train / "
            f"{len(split.y_val):,} val images, {cfg.epochs} epochs, profile {profile}, "
            f"backend {keras.backend.backend()}",
            flush=True,
        )
        with dist.scope:
            if name == "vgg16":
                model, records, extra = _train_vgg16(cfg, split, p, vgg16_weights, progress, seed)
            else:
                from cifarlab.models import build

                model = build(cfg)
                steps = cfg.epochs * int(np.ceil(len(split.y_train) / cfg.batch_size))
                compile_model(model, cfg, steps)
                records = fit(
                    model,
                    cfg,
                    split.x_train,
                    split.y_train,
                    split.x_val,
                    split.y_val,
                    p["work"],
                    p["logs"],
                    early_stopping=name != "overfit",
                    progress=progress,
                )
                extra = {
                    "restored_best_weights": name != "overfit" and restore_best(model, p["work"])
                }
        extra["distribute"] = dist.describe()
        wall = time.time() - t0  # this process's time; a resumed run counts its own part
        meta = save_artifacts(
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
    shutil.rmtree(p["work"], ignore_errors=True)
    with contextlib.suppress(OSError):
        p["work"].parent.rmdir()  # runs/ goes when no other run is in progress
    print(
        f"saved {p['model']} (best val accuracy {meta['best_val_accuracy']:.4f}, "
        f"{meta['epochs_run']} epochs, {wall:.0f} s)",
        flush=True,
    )
    return meta


def set_precision(precision: str) -> str:
    """Set Keras' global dtype policy. 'auto': mixed_bfloat16 on a GPU, and on a CPU with
    bfloat16 instructions under TensorFlow (oneDNN); float32 otherwise."""
    if precision == "auto":
        from cifarlab.hardware import cpu_has_bf16

        fast_bf16 = cfgmod.has_gpu() or (cpu_has_bf16() and keras.backend.backend() == "tensorflow")
        precision = "mixed_bfloat16" if fast_bf16 else "float32"
    if precision not in ("float32", "mixed_bfloat16", "mixed_float16"):
        raise CifarlabError(
            f"unknown precision '{precision}'; use auto, float32, mixed_bfloat16 or mixed_float16"
        )
    keras.mixed_precision.set_global_policy(precision)
    return precision


def _check_resume(work: Path, cfg: TrainConfig, ds: Dataset, seed: int) -> None:
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


def _train_vgg16(
    cfg: TrainConfig, split: Split, p: dict, weights: str, progress: bool, seed: int = 0
):
    """Phase 1: head on cached frozen features. Phase 2: fine-tune the top block(s)."""
    from cifarlab.models import build_vgg16, vgg16_parts

    hp = cfg.hp
    model = build_vgg16(cfg, weights=weights)
    features, top = vgg16_parts(model, hp["finetune_blocks"])
    mirror = bool(hp.get("mirror_features", False))
    feats = _cached_features(features, split, p["work"], cfg.batch_size, progress, mirror)
    aug = dict(x_mirror=feats.get("train_mirror"), seed=seed)
    head_epochs = min(hp["head_epochs"], cfg.epochs)
    ft_epochs = cfg.epochs - head_epochs
    cut = int(top.layers[1].name.split("_")[0].removeprefix("block"))  # first trainable block
    vgg_top = [layer for layer in top.layers if layer.name.startswith("block")]
    for layer in vgg_top:
        layer.trainable = False
    steps = int(np.ceil(len(split.y_train) / cfg.batch_size))
    compile_model(top, cfg, head_epochs * steps)
    records = fit(
        top,
        cfg,
        feats["train"],
        split.y_train,
        feats["val"],
        split.y_val,
        p["work"],
        p["logs"],
        phase=1,
        epochs=head_epochs,
        progress=progress,
        **aug,
    )
    restore_best(top, p["work"], phase=1)
    if ft_epochs > 0:
        for layer in vgg_top:
            layer.trainable = True
        ft = cfg.replace(learning_rate=hp["finetune_lr"], warmup_fraction=0.0, optimizer="adam")
        compile_model(top, ft, ft_epochs * steps)
        rec2 = fit(
            top,
            ft,
            feats["train"],
            split.y_train,
            feats["val"],
            split.y_val,
            p["work"],
            p["logs"],
            phase=2,
            epochs=ft_epochs,
            progress=progress,
            **aug,
        )
        records = records + [{**r, "epoch": r["epoch"] + head_epochs} for r in rec2]
        restore_best(top, p["work"], phase=2)
    extra = {
        "weights_source": model.weights_source,
        "vgg16": {
            "image_size": hp.get("image_size", 32),
            "finetuned_from_block": cut,
            "head_epochs": head_epochs,
            "finetune_epochs": ft_epochs,
            "frozen_features_cached": True,
            "mirror_features": mirror,
            "note": "features computed once"
            + (", also of the mirror images: each epoch picks one per image" if mirror else ""),
        },
    }
    compile_model(model, cfg, 1)  # so the saved full model evaluates with the same metrics
    return model, records, extra


def _cached_features(
    features, split: Split, work: Path, batch_size: int, progress: bool, mirror: bool = False
) -> dict:
    """Frozen-base features for train and val (and, with ``mirror``, of the horizontally
    mirrored training images), computed once per run and kept on disk so a resumed run
    does not recompute them."""
    f = work / "features.npz"
    wanted = ["train", "val"] + (["train_mirror"] if mirror else [])
    if f.is_file():
        with np.load(f) as z:
            if set(wanted) <= set(z.files):
                return {k: z[k] for k in wanted}
    print(f"computing frozen VGG16 features once ({' + '.join(wanted)})", flush=True)
    inputs = {"train": split.x_train, "val": split.x_val}
    if mirror:
        inputs["train_mirror"] = split.x_train[:, :, ::-1]  # NHWC: flip the width
    out = {
        k: features.predict(x, batch_size=batch_size, verbose=1 if progress else 0)
        for k, x in inputs.items()
    }
    with atomic_path(f) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **out)
    return out


def summary_table(out, names=SERIES):
    """What each saved model's metadata says: size, epochs, time, validation accuracy."""
    import pandas as pd

    rows = []
    for n in names:
        m = json.loads(paths(out, n)["meta"].read_text())
        rows.append(
            {
                "model": n,
                "params": m["params"],
                "epochs": m["epochs_run"],
                "train_time_s": m["wall_time_s"],
                "best_val_accuracy": m["best_val_accuracy"],
                "final_train_accuracy": m["final_train_accuracy"],
                "weights": m.get("weights_source", "trained from scratch"),
                "backend": m["backend"],
            }
        )
    return pd.DataFrame(rows)


def run_series(
    dataset="cifar100",
    profile=None,
    out=".",
    seed=0,
    overrides=None,
    vgg16_weights="imagenet",
    progress=True,
) -> list[dict]:
    """The whole series in order, then evaluation and pictures."""
    profile = cfgmod.resolve_profile(profile)
    from cifarlab.models import resolve_vgg16_weights

    resolve_vgg16_weights(vgg16_weights)  # fail before an hour of training, not after
    ds = load_dataset(dataset, progress=progress)
    metas = []
    for name in SERIES:
        metas.append(train_model(name, ds, profile, out, seed, overrides, vgg16_weights, progress))
    from cifarlab import evaluate, visualize

    table = evaluate.evaluate_all(out, dataset=ds)
    print(table.to_string(index=False))
    visualize.visualize_all(out, dataset=ds)
    return metas
