"""Variants of the airbench recipe side by side: ``tuned`` trained once per variant on the
same data, split, seed and batch, then frontier.py's table (issue 30, accuracy per minute).

    CIFARLAB_DATA_DIR=../shared/data python benchmarks/variants.py --dataset cifar100 \
        --profile cpu --out OUT --variant "full 4=epochs=4" \
        --variant "24px 2 of 5=epochs=5,low_res=24,low_res_epochs=2"

Each ``--variant`` is ``LABEL=KEY=VALUE,KEY=VALUE...``: TrainConfig fields set on the
profile's airbench recipe (cifarlab.config.airbench_config), values read as JSON where they
parse (numbers, true/false, lists), else as text. Each variant trains in its own folder
under ``--out`` (a finished run with the same settings is read back, not trained again),
one after the other; the table has test accuracy recomputed with plain Keras from each
saved model, minutes from its history, and the evidence.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


def parse_variant(text: str) -> tuple[str, dict]:
    """``LABEL=KEY=VALUE,...`` as (label, {key: value})."""
    label, sep, settings = text.partition("=")
    if not sep or not label:
        raise SystemExit(f"variants: '{text}' is not LABEL=KEY=VALUE,...")
    changes = {}
    for item in filter(None, settings.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"variants: '{item}' in '{text}' is not KEY=VALUE")
        try:
            changes[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            changes[key.strip()] = value
    return label, changes


def run_variants(dataset: str, profile: str, out: Path, seed: int, variants, title: str):
    """Train each ``(label, changes)`` of ``variants`` (unless trained there with the
    same settings: ``train_model``'s ``skip_trained``) and return
    frontier.py's table of them; its figure goes to ``out/variants.png``."""
    from cifarlab.config import airbench_config
    from cifarlab.data import load_dataset
    from cifarlab.training.train import train_model

    sys.path.insert(0, str(Path(__file__).parent))
    from frontier import frontier

    ds = load_dataset(dataset)
    runs = []
    for label, changes in variants:
        cfg = airbench_config(profile).replace(**changes).validate()
        root = out / re.sub(r"[^A-Za-z0-9._-]+", "-", label)
        print(f"variants: '{label}' ({changes})", flush=True)
        train_model("tuned", ds, profile, root, seed, train_config=cfg, skip_trained=True)
        runs.append(f"{label}={root}")
    return frontier(runs, out / "variants.png", f"{ds.name}, {profile}: {title}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="cifar100")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--variant", action="append", required=True, help="LABEL=KEY=VALUE,...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="recipe variants")
    a = p.parse_args(argv)
    from cifarlab.evaluation.evaluate import markdown_table

    variants = [parse_variant(v) for v in a.variant]
    print(
        markdown_table(run_variants(a.dataset, a.profile, Path(a.out), a.seed, variants, a.title))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
