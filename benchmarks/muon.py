"""Muon steps for the conv filters against the airbench recipe's SGD, at equal epochs
(issue 30, accuracy per minute: airbench94_muon reaches airbench94's accuracy in 8
epochs instead of 9.9 on CIFAR-10).

    CIFARLAB_DATA_DIR=../shared/data python benchmarks/muon.py --dataset cifar100 \
        --profile cpu --epochs 4 --out OUT

trains ``tuned`` with the profile's airbench recipe (cifarlab.config.airbench_config) at
``--epochs``, once as it is (SGD) and once with ``muon_lr`` (the filters take Muon steps,
cifarlab.training.recipe.AirbenchSGD), the same data, split, seed and batch, each run in
its own folder under ``--out`` (a finished run is read back, not trained again), then
prints frontier.py's table: test accuracy recomputed with plain Keras from each saved
model, minutes from its history, and the evidence.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="cifar100")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--muon-lr", type=float, default=0.24, help="airbench94_muon: 0.24")
    p.add_argument("--muon-momentum", type=float, default=0.6, help="airbench94_muon: 0.6")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--figure", default=None, help="accuracy against minutes (default: none)")
    a = p.parse_args(argv)

    from cifarlab.config import TrainConfig, airbench_config
    from cifarlab.data import load_dataset
    from cifarlab.evaluation.evaluate import markdown_table
    from cifarlab.layout import layout
    from cifarlab.training.train import train_model

    sys.path.insert(0, str(Path(__file__).parent))
    from frontier import frontier

    ds = load_dataset(a.dataset)
    sgd = airbench_config(a.profile, epochs=a.epochs)
    muon = sgd.replace(muon_lr=a.muon_lr, muon_momentum=a.muon_momentum).validate()
    runs = []
    for label, cfg in (("sgd", sgd), ("muon", muon)):
        root = Path(a.out) / f"{label}-{a.epochs}"
        meta = layout(root).meta("tuned")
        saved = json.loads(meta.read_text())["config"] if meta.is_file() else None
        if saved is None or TrainConfig.from_dict(saved).settings() != cfg.settings():
            print(f"muon: training {label}, {a.epochs} epochs", flush=True)
            train_model("tuned", ds, a.profile, root, a.seed, train_config=cfg)
        runs.append(f"{label} {a.epochs} epochs={root}")
    figure = Path(a.figure) if a.figure else Path(a.out) / f"muon-{a.epochs}.png"
    table = frontier(runs, figure, f"{ds.name}, {a.profile}: Muon filters against SGD")
    print(markdown_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
