"""Test accuracy against training minutes, one curve and point per saved run: which
recipe buys the most accuracy per minute on the same data (issue 14's frontier figure).

    python benchmarks/frontier.py --figure frontier.png --title "real CIFAR-100, cpu" \
        "airbench 64/256/256=runs/w256/ablation/whole" "series=OUT:tuned" "baseline=OUT:baseline"

Each RUN is ``LABEL=FOLDER[:MODEL]`` (MODEL ``tuned`` unless given): an output folder as
``cifarlab train``, ``run`` or ``ablate`` (its ``ablation/<part>`` folders) leave it.
The test accuracy is recomputed from the saved ``.keras`` file with plain Keras on the
test split of the dataset its metadata names (cifarlab.inference.predict_test: safe-mode
``load_model`` and ``predict``, cached by the model file's hash); the minutes are the
history's own epoch seconds, validation included. Prints a markdown table with each
run's evidence (dataset checksum, network, forward MFLOP per image and view, epochs,
training PFLOP, batch, seed, backend, machine, date). Minutes compare only runs on one
kind of machine; FLOPs compare across machines.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def network(hp: dict) -> str:
    """The saved config's network in a few words."""
    if hp.get("arch") == "airbench":
        return "airbench " + "/".join(str(w) for w in hp["widths"])
    if "widths" in hp and "convs" in hp:  # the classic CNN of baseline / overfit
        return "classic CNN " + "/".join(str(w) for w in hp["widths"])
    if "width" in hp:
        return f"residual CNN width {hp['width']} depth {hp.get('depth', 1)}"
    return "VGG16" if "finetune_blocks" in hp else "?"


def split_sizes(n_images: int, cfg: dict) -> tuple[int, int]:
    """Training and validation images of a run's config (cifarlab.data's split: the
    dataset limit first, then the held-out fraction, then the training subset)."""
    n = min(cfg.get("dataset_limit") or n_images, n_images)
    n_val = math.ceil(n * cfg["val_fraction"])  # scikit-learn's train_test_split
    return min(cfg.get("train_subset") or n - n_val, n - n_val), n_val


def _machine(hw: dict) -> str:
    gpu = f", {hw['gpu']}" if isinstance(hw.get("gpu"), str) else (", GPU" if hw.get("gpu") else "")
    return f"{hw.get('processor', '?')}, {hw.get('cpu_count', '?')} cores{gpu}"


def frontier(runs: list[str], figure: Path, title: str):
    """The table (a DataFrame) of ``runs`` and the figure written to ``figure``."""
    import pandas as pd

    from cifarlab.bench import count_flops
    from cifarlab.errors import CifarlabError
    from cifarlab.figures import accuracy_vs_minutes, minutes_curve
    from cifarlab.inference import dataset_for, predict_test

    rows, curves, datasets = [], {}, {}
    for spec in runs:
        label, sep, where = spec.partition("=")
        if not sep or not label or not where:
            raise CifarlabError(f"a run is LABEL=FOLDER[:MODEL], got '{spec}'")
        folder, _, model = where.partition(":")
        model = model or "tuned"
        if not (Path(folder) / "saved_models" / f"{model}.keras").is_file():
            raise CifarlabError(f"no saved model '{model}' under {folder}/saved_models")
        ds = dataset_for(folder, None, [model])
        ds = datasets.setdefault(ds.checksum, ds)
        pred = predict_test(folder, model, ds)
        acc = float((pred.probs.argmax(1) == pred.y).mean())
        meta, cfg = pred.meta, pred.meta["config"]
        curves[label] = minutes_curve(folder, model, label, acc)
        fwd = count_flops(pred.model)
        n_train, n_val = split_sizes(len(ds.y_train), cfg)
        rows.append(
            {
                "run": label,
                "dataset": f"{ds.name} `{ds.checksum[:16]}`",
                "network": network(cfg["hp"]),
                "fwd MFLOP": round(fwd / 1e6),
                "epochs": meta["epochs_run"],
                # 3x forward per training image (forward + two backward products), 1x per
                # validation image, every epoch
                "train PFLOP": round(meta["epochs_run"] * fwd * (3 * n_train + n_val) / 1e15, 3),
                "batch": cfg["batch_size"],
                "training min": round(float(curves[label]["minutes"][-1]), 1),
                "test accuracy": f"{100 * acc:.2f}%",
                "test images": len(pred.y),
                "seed": meta["seed"],
                "backend": meta["backend"],
                "machine": _machine(meta.get("hardware", {})),
                "date": str(meta.get("created", "?"))[:10],
            }
        )
    if len(datasets) > 1:
        print("warning: the runs were trained on different datasets", file=sys.stderr)
    accuracy_vs_minutes(list(curves.values()), title, figure)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    from cifarlab.errors import CifarlabError
    from cifarlab.evaluate import markdown_table

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="RUN", help="LABEL=FOLDER[:MODEL]")
    ap.add_argument("--figure", type=Path, required=True, help="the PNG to write")
    ap.add_argument("--title", default="Test accuracy against training minutes")
    args = ap.parse_args(argv)
    try:
        table = frontier(args.runs, args.figure, args.title)
    except CifarlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown_table(table))
    print(f"\nfigure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
