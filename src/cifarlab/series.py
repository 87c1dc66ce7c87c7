"""The whole series from the command line: four models in order, then the test split.

``cifarlab run`` (``make series``) is this; ``make run`` executes the same steps as
four notebooks (cifarlab.notebooks).
"""

from __future__ import annotations

import time
from pathlib import Path

from cifarlab import config, course
from cifarlab.data.datasets import load_dataset
from cifarlab.evaluation import evaluate, visualize
from cifarlab.models.vgg16 import resolve_vgg16_weights
from cifarlab.training import plan, timing
from cifarlab.training.train import train_model


def run_series(
    dataset: str = "cifar100",
    profile: str | None = None,
    out: str | Path = ".",
    seed: int = 0,
    overrides: dict | None = None,
    vgg16_weights: str = "imagenet",
    progress: bool = True,
    budget: float | str | None = "auto",
) -> list[dict]:
    """Train baseline, overfit, tuned (searching first) and vgg16, then evaluate them on
    the test split and draw every figure.

    Args:
        dataset, profile, out, seed, overrides, vgg16_weights, progress: as
            :func:`cifarlab.training.train.train_model`.
        budget: minutes for the whole series (``auto``: the profile's default; None: the
            recipes as they are); the plan is printed before any training
            (cifarlab.training.plan).

    Returns:
        The four models' metadata.
    """
    started = time.time()
    profile = config.resolve_profile(profile)
    resolve_vgg16_weights(vgg16_weights)  # fail before an hour of training, not after
    ds = load_dataset(dataset, progress=progress)
    budget_min = timing.resolve_budget(budget, profile, overrides)
    the_plan = timing.make_plan(ds, profile, budget_min, out, seed, started=started)
    print(course.describe_plan(the_plan), flush=True)
    metas = [
        train_model(
            name, ds, profile, out, seed, overrides, vgg16_weights, progress, skip_trained=True
        )
        for name in config.MODELS
    ]
    table = evaluate.evaluate_all(out, dataset=ds)
    print(table.to_string(index=False))
    visualize.visualize_all(out, dataset=ds)
    print(plan.against_actual(plan.finish(out)), flush=True)
    return metas
