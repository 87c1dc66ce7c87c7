"""What each part of a series costs on this machine, measured before it trains: a few
timed training and validation steps of every model at its batch size, backend and
precision (after the compile and warm-up, not a whole epoch), VGG16's frozen feature
pass, the search's trial. Cached per hardware, backend, precision and config, so a second
run plans at once; :func:`make_plan` turns them into the plan (cifarlab.training.plan).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict

import numpy as np

from cifarlab import config
from cifarlab.config import TrainConfig
from cifarlab.hardware import cpu_name
from cifarlab.layout import atomic_path
from cifarlab.training.plan import BudgetTooSmall, Rate, allocate, predicted_s, write_plan
from cifarlab.training.tune import trial_config


def _timed_steps(model, x, y, batch_size: int, steps: int, warmup: int = 2) -> float:
    """Seconds per training step after ``warmup`` steps (the compile and the first calls)."""
    import keras

    ends: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())

    n = (warmup + steps) * batch_size
    model.fit(
        x[:n], y[:n], batch_size=batch_size, epochs=1, shuffle=False, verbose=0, callbacks=[Clock()]
    )
    return (ends[-1] - ends[warmup - 1]) / steps


def _timed_predict(model, x, batch_size: int, steps: int) -> float:
    """Seconds per inference batch (validation, the test split) after one warm-up batch."""
    from cifarlab.models import quiet

    quiet.predict(model, x[:batch_size], batch_size)
    t = time.perf_counter()
    quiet.predict(model, x[: steps * batch_size], batch_size)
    return (time.perf_counter() - t) / steps


def measure_model(cfg: TrainConfig, steps: int = 3) -> dict:
    """Seconds per training step and per validation batch of ``cfg``'s model (for VGG16:
    of its trained top on cached features, and per image of its frozen feature pass),
    and the start-up (build, compile, first steps) it costs once."""
    import keras

    from cifarlab.data.batches import downsample, one_hot
    from cifarlab.models import airbench, build, quiet
    from cifarlab.models.vgg16 import build_vgg16, vgg16_parts
    from cifarlab.training.recipe import compile_model, set_precision

    set_precision(cfg.precision)
    keras.utils.set_random_seed(0)
    t0 = time.perf_counter()
    bs = cfg.batch_size
    n = (steps + 2) * bs
    x = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = one_hot(np.arange(n) % cfg.stats.num_classes, cfg.stats.num_classes)
    out = {}
    if cfg.model == "vgg16":
        features, model = vgg16_parts(
            build_vgg16(cfg, weights="none"), cfg.network["finetune_blocks"]
        )
        out["feature_s_per_image"] = _timed_predict(features, x, bs, steps + 1) / bs
        x = quiet.predict(features, x, bs)
    else:
        model = build(cfg)
        airbench.init_from_data(model, cfg, x)
    compile_model(model, cfg, 1000)
    t1 = time.perf_counter()
    out["train_step_s"] = _timed_steps(model, x, y, bs, steps)
    steady = time.perf_counter() - t1
    out["val_batch_s"] = _timed_predict(model, x, bs, steps + 1)
    # build + compile + the first steps' tracing, once per training
    out["startup_s"] = (t1 - t0) + steady - (steps + 2) * out["train_step_s"]
    if cfg.low_res_epochs:  # the early epochs' steps on shrunk batches: a trace of their own
        t2 = time.perf_counter()
        out["low_res_step_s"] = _timed_steps(model, downsample(x, cfg.low_res), y, bs, steps)
        traced = time.perf_counter() - t2 - (steps + 2) * out["low_res_step_s"]
        out["startup_s"] += max(0.0, traced)
    # the saved model's test evaluation computes in float32 (evidence.inference_in_float32),
    # VGG16's on raw images through its whole base
    keras.backend.clear_session()
    set_precision("float32")
    keras.utils.set_random_seed(0)
    # a few batches each: one alone varied 2x between two timings (RESULTS.md, 2026-12-07)
    raw = np.random.default_rng(1).integers(0, 256, (steps * bs, 32, 32, 3), dtype=np.uint8)
    saved = build_vgg16(cfg, weights="none") if cfg.model == "vgg16" else build(cfg)
    out["test_batch_s"] = _timed_predict(saved, raw, bs, steps)
    keras.backend.clear_session()
    return out


def _key(cfg: TrainConfig) -> str:
    import keras

    d = cfg.to_dict()
    for k in ("epochs", "patience", "mean", "std"):
        d.pop(k, None)
    d.update(cpu=cpu_name(), cores=os.cpu_count(), backend=keras.backend.backend())
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_measure(cfg: TrainConfig) -> dict:
    """:func:`measure_model`, cached per hardware, backend, precision and config."""
    from cifarlab.data.datasets import cache_dir

    path = cache_dir() / "plan" / f"{cfg.model}-{_key(cfg)}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    m = measure_model(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(m))
    return m


def train_step_s(cfg: TrainConfig, m: dict) -> float:
    """A training step's mean time over ``cfg``'s epochs: its shrunk early epochs'
    (``low_res``) steps and its full-size ones in their share (:meth:`TrainConfig.at_epochs`
    keeps that share at any planned count)."""
    if not cfg.low_res_epochs:
        return m["train_step_s"]
    low = cfg.low_res_epochs / cfg.epochs
    return low * m["low_res_step_s"] + (1 - low) * m["train_step_s"]


def model_rate(cfg: TrainConfig, sizes: dict, progress: bool = True) -> Rate:
    """One model's :class:`~cifarlab.training.plan.Rate` here, for a split of ``sizes``
    (``train``, ``val``, ``test`` image counts)."""
    if progress:
        print(f"plan: timing {cfg.model}'s steps on this machine", flush=True)
    m = cached_measure(cfg)
    n_train, n_val, n_test = sizes["train"], sizes["val"], sizes["test"]
    images = min(cfg.train_subset or n_train, n_train)
    views = (2 if cfg.tta_flip else 1) * (3 if cfg.tta_shift else 1)
    # evaluated after the series trains: the saved model in float32 on the test images
    test_s = math.ceil(n_test / cfg.batch_size) * m.get("test_batch_s", m["val_batch_s"]) * views
    epoch_s = (
        cfg.steps_per_epoch(images) * train_step_s(cfg, m)
        + math.ceil(n_val / cfg.batch_size) * m["val_batch_s"]
    )
    fixed = m["startup_s"] + config.BUDGET_SAVE_S
    if cfg.model == "vgg16":  # the frozen base's features: train (and mirrors), val, test
        featured = n_train * (2 if cfg.network.get("mirror_features") else 1) + n_val + n_test
        fixed += featured * m["feature_s_per_image"]
    return Rate(epoch_s, fixed, config.BUDGET_LEAST[cfg.model], cfg.epochs, test_s)


def search_rate(profile: str, sizes: dict, num_classes: int, progress: bool = True) -> Rate:
    """A search trial's cost here (the search's unit)."""
    search = config.SEARCH_BUDGET[profile]
    trial = trial_config(profile, search["batch_size"]).with_stats(*_STATS, num_classes)
    if progress:
        print("plan: timing a search trial's steps on this machine", flush=True)
    m = cached_measure(trial)
    n_train = sizes["train"]
    images = min(search["train_subset"] or n_train, n_train)
    val_images = max(num_classes * 2, images // 4) if search["train_subset"] else sizes["val"]
    steps_s = m["startup_s"] + search["epochs"] * (
        trial.steps_per_epoch(images) * train_step_s(trial, m)
        + math.ceil(val_images / trial.batch_size) * m["val_batch_s"]
    )
    trial_s = config.BUDGET_TRIAL_FACTOR * steps_s
    return Rate(trial_s, 0.0, config.BUDGET_LEAST["search"], search["max_trials"])


#: typical image statistics: the timing's speed does not depend on them
_STATS = ([120.0] * 3, [64.0] * 3)


def part_rates(
    sizes: dict, num_classes: int, profile: str, budget_s: float | None = None,
    overhead_s: float = 0.0, progress: bool = True,
) -> tuple[dict, dict]:  # fmt: skip
    """Every part's rate here, and the ``network`` updates a budget of ``budget_s`` seconds
    needs: a part whose recipe cannot show its lesson (fixed cost and least epochs)
    within its share takes the first of its :data:`~cifarlab.config.BUDGET_ALTERNATIVES`
    that can."""
    configs = {
        name: config.model_config(name, profile).with_stats(*_STATS, num_classes)
        for name in config.MODELS
    }
    rates = {name: model_rate(cfg, sizes, progress) for name, cfg in configs.items()}
    rates["search"] = search_rate(profile, sizes, num_classes, progress)
    updates: dict[str, dict] = {}
    if budget_s is None:
        return rates, updates
    shares = config.BUDGET_SHARES
    for name, options in config.BUDGET_ALTERNATIVES.items():
        # a part's lesson: its fixed cost and least epochs (the test evaluations are the
        # series' cost, allocated for all parts alike)
        others = sum(r.fixed_s for p, r in rates.items() if p != name)
        share = shares[name] / sum(shares.values()) * (budget_s - overhead_s - others)
        for option in options:
            r = rates[name]
            if r.fixed_s + r.least * r.unit_s <= share:
                break
            cfg = configs[name].replace(network={**configs[name].network, **option})
            rates[name], updates[name] = model_rate(cfg, sizes, progress), option
    return rates, updates


def overhead_s(notebooks: bool) -> float:
    """What the series costs besides its parts: the figures, and each notebook kernel's
    start (BENCHMARKS.md)."""
    return config.BUDGET_FIGURES_S + (4 * config.BUDGET_KERNEL_S if notebooks else 0.0)


def make_plan(
    ds,
    profile: str,
    budget_min: float | None,
    out,
    seed: int = 0,
    notebooks: bool = False,
    started: float | None = None,
    progress: bool = True,
) -> dict:
    """Measure (or read the cached rates), allocate ``budget_min`` minutes counted from
    ``started`` (default: now), write ``reports/plan.json`` and return the plan.
    ``budget_min`` None: the recipes as they are, their time predicted.

    Raises:
        cifarlab.training.plan.BudgetTooSmall: the budget cannot give every part its
            least; the message names the least budget that works here.
    """
    from cifarlab.data.datasets import prepare

    started = time.time() if started is None else started
    probe = config.model_config("baseline", profile)
    _, split, _ = prepare(ds, probe, seed, progress=False)
    n_test = min(probe.test_limit or len(ds.y_test), len(ds.y_test))
    sizes = {"train": len(split.y_train), "val": len(split.y_val), "test": n_test}
    over = overhead_s(notebooks)
    left = None if budget_min is None else budget_min * 60 - (time.time() - started)
    rates, updates = part_rates(sizes, ds.num_classes, profile, left, over, progress)
    spent = time.time() - started  # the data load and the measurement count too
    if budget_min is None:
        counts = {p: r.recipe for p, r in rates.items()}
    else:
        try:
            counts = allocate(budget_min * 60 - spent, rates, config.BUDGET_SHARES, over)
        except BudgetTooSmall as small:  # name the whole budget, the set-up included
            raise BudgetTooSmall(budget_min, math.ceil(spent / 60 + small.need_min)) from None
    pred = predicted_s(counts, rates)
    plan = {
        "dataset": ds.name,
        "profile": profile,
        "seed": seed,
        "budget_min": budget_min,
        "started": started,
        "deadline": None if budget_min is None else started + budget_min * 60,
        "overhead_s": over,
        "kernel_s": config.BUDGET_KERNEL_S if notebooks else 0.0,
        "spent_before_training_s": spent,
        "rates": {p: asdict(r) for p, r in rates.items()},
        "planned": counts,
        "network": updates,
        "predicted_s": pred,
        "predicted_total_s": spent
        + sum(pred.values())
        + over
        + sum(r.later_s for r in rates.values()),
        "parts": {},
    }
    write_plan(out, plan)
    return plan


def resolve_budget(budget, profile: str, overrides: dict | None = None) -> float | None:
    """Minutes or None from ``--budget`` (``auto``: the profile's default); an explicit
    ``--epochs`` trains the recipes at those epochs, so it plans no budget."""
    if (overrides or {}).get("epochs") is not None:
        return None
    return config.DEFAULT_BUDGET[profile] if budget == "auto" else budget


def ensure_plan(ds, profile: str, budget, out, seed: int = 0, **kw) -> dict:
    """The series' plan: the unfinished one of this dataset, profile, seed and budget in
    ``out`` (made when the series started, by `make run` or the first notebook), else a
    new one made now."""
    from cifarlab.training.plan import read_plan

    budget_min = resolve_budget(budget, profile)
    found = read_plan(out)
    same = (
        found
        and "ended" not in found
        and (found["dataset"], found["profile"], found["seed"], found["budget_min"])
        == (ds.name, profile, seed, budget_min)
    )
    return found if same else make_plan(ds, profile, budget_min, out, seed, **kw)
