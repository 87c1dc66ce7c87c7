"""The whole series from the command line: four models in order, then the test split.

``cifarlab run`` (``make series``) is this; ``make run`` executes the same steps as
four notebooks (cifarlab.notebooks).
"""

from __future__ import annotations

from pathlib import Path

from cifarlab import config, evaluate, visualize
from cifarlab.data import load_dataset
from cifarlab.models import resolve_vgg16_weights
from cifarlab.train import train_model


def run_series(
    dataset: str = "cifar100",
    profile: str | None = None,
    out: str | Path = ".",
    seed: int = 0,
    overrides: dict | None = None,
    vgg16_weights: str = "imagenet",
    progress: bool = True,
) -> list[dict]:
    """Train baseline, overfit, tuned (searching first) and vgg16, then evaluate them on
    the test split and draw every figure. Returns the four models' metadata."""
    profile = config.resolve_profile(profile)
    resolve_vgg16_weights(vgg16_weights)  # fail before an hour of training, not after
    ds = load_dataset(dataset, progress=progress)
    metas = [
        train_model(name, ds, profile, out, seed, overrides, vgg16_weights, progress)
        for name in config.MODELS
    ]
    table = evaluate.evaluate_all(out, dataset=ds)
    print(table.to_string(index=False))
    visualize.visualize_all(out, dataset=ds)
    return metas
