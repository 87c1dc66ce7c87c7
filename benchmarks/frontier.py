"""Test accuracy against training minutes, one curve and point per saved run: which
recipe buys the most accuracy per minute on the same data (issue 14's frontier figure).

    python benchmarks/frontier.py --figure frontier.png --title "real CIFAR-100, cpu" \
        "airbench 64/256/256=runs/w256/ablation/whole" "series=OUT:tuned" "baseline=OUT:baseline"

Each RUN is ``LABEL=FOLDER[:MODEL]`` (MODEL ``tuned`` unless given): an output folder as
``cifarlab train``, ``run`` or ``ablate`` (its ``ablation/<part>`` folders) leave it.
The test accuracy is recomputed from the saved ``.keras`` file with plain Keras on the
test split of the dataset its metadata names (cifarlab.evaluation.inference.predict_test: safe-mode
``load_model`` and ``predict``, cached by the model file's hash); the minutes are the
history's own epoch seconds, validation included. Prints a markdown table with each
run's evidence (dataset checksum, network, forward MFLOP per image and view, epochs,
training PFLOP, batch, seed, backend, machine, date). Minutes compare only runs on one
kind of machine; FLOPs compare across machines.

    python benchmarks/frontier.py --from-table BENCHMARKS.md --figure compute.png

draws instead the runs of BENCHMARKS.md's table "accuracy against training compute"
(recipes measured on different machines, some of whose saved models are not at hand):
test accuracy against training PFLOP, one panel per dataset, the old recipe's and the
new one's runs told apart. The table is the figure's only source.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def network(net: dict) -> str:
    """The saved config's network in a few words."""
    if net.get("arch") == "airbench":
        return "airbench " + "/".join(str(w) for w in net["widths"])
    if "widths" in net and "convs" in net:  # the classic CNN of baseline / overfit
        return "classic CNN " + "/".join(str(w) for w in net["widths"])
    if "width" in net:
        return f"residual CNN width {net['width']} depth {net.get('depth', 1)}"
    return "VGG16" if "finetune_blocks" in net else "?"


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

    from cifarlab.errors import CifarlabError
    from cifarlab.evaluation.figures import accuracy_vs_minutes, minutes_curve
    from cifarlab.evaluation.inference import dataset_for, predict_test
    from cifarlab.models.flops import count_flops, count_flops_at

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
        fwd, epochs = count_flops(pred.model), meta["epochs_run"]
        n_train, n_val = split_sizes(len(ds.y_train), cfg)
        shrunk = min(cfg.get("low_res_epochs") or 0, epochs)  # epochs on shrunk batches
        small = count_flops_at(pred.model, cfg["low_res"]) if shrunk else 0
        rows.append(
            {
                "run": label,
                "dataset": f"{ds.name} `{ds.checksum[:16]}`",
                "network": network(cfg.get("network", cfg.get("hp", {}))),  # "hp" before 2026-12-07
                "fwd MFLOP": round(fwd / 1e6),
                "epochs": epochs,
                # 3x forward per training image (forward + two backward products), at the
                # shrunk size in the shrunk epochs; 1x per validation image, every epoch
                "train PFLOP": round(
                    (
                        3 * n_train * ((epochs - shrunk) * fwd + shrunk * small)
                        + epochs * fwd * n_val
                    )
                    / 1e15,
                    3,
                ),
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


COMPUTE_HEADING = "accuracy against training compute"


def _number(cell: str) -> list[float]:
    """The numbers of a table cell: '**70.56%**' -> [70.56], '0.418 or 0.771' -> both."""
    words = cell.replace("*", "").replace("%", "").replace(",", "").split()
    return [float(w) for w in words if w.replace(".", "", 1).isdigit()]


def compute_table(markdown: Path):
    """The rows of ``markdown``'s table under the heading that contains
    COMPUTE_HEADING, as a DataFrame: data, recipe, network, epochs, PFLOP (low, high:
    a range where the table gives two counts) and test accuracy (%)."""
    import pandas as pd

    from cifarlab.errors import CifarlabError

    lines = Path(markdown).read_text().splitlines()
    start = next(
        (i for i, t in enumerate(lines) if t.startswith("#") and COMPUTE_HEADING in t), None
    )
    if start is None:
        raise CifarlabError(f"{markdown}: no heading with '{COMPUTE_HEADING}'")
    table = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif table:
            break
    if len(table) < 3:
        raise CifarlabError(f"{markdown}: no table under '{COMPUTE_HEADING}'")
    head = [h.lower() for h in table[0]]
    col = {k: next(i for i, h in enumerate(head) if k in h) for k in
           ("data", "recipe", "network", "epochs", "pflop", "test accuracy")}  # fmt: skip
    rows = []
    for r in table[2:]:
        pflop = _number(r[col["pflop"]])
        rows.append(
            {
                "data": r[col["data"]],
                "recipe": r[col["recipe"]].replace("*", ""),
                "network": r[col["network"]],
                "epochs": r[col["epochs"]],
                "pflop_low": min(pflop),
                "pflop_high": max(pflop),
                "accuracy": _number(r[col["test accuracy"]])[0],
            }
        )
    return pd.DataFrame(rows)


def accuracy_vs_compute(table, title: str, path: Path) -> Path:
    """One panel per dataset: each run's test accuracy against its training PFLOP, the
    old recipe's runs (their recipe starts with 'old') as squares, the new as circles; a
    run with two FLOP counts is drawn as a bar between them."""
    import matplotlib.pyplot as plt

    from cifarlab.evaluation.figures import save_figure

    sets = list(dict.fromkeys(table["data"]))
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.6), squeeze=False)
    for ax, name in zip(axes[0], sets):
        runs = table[table["data"] == name].sort_values("accuracy", ascending=False)
        gap = 0.045 * ((runs["accuracy"].max() - runs["accuracy"].min()) or 1.0)
        label_y = math.inf  # labels from the top down, each at least `gap` under the last
        for _, r in runs.iterrows():
            old = r["recipe"].startswith("old")
            x = (r["pflop_low"] + r["pflop_high"]) / 2
            ax.errorbar(
                x, r["accuracy"], xerr=[[x - r["pflop_low"]], [r["pflop_high"] - x]],
                marker="s" if old else "o", color="tab:gray" if old else "tab:blue",
                markersize=7, capsize=4, linestyle="",
            )  # fmt: skip
            label_y = min(r["accuracy"], label_y - gap)
            ax.annotate(
                f"{r['network']}, {r['epochs']} ep: {r['accuracy']:.2f}%",
                (x, r["accuracy"]), xytext=(r["pflop_high"] + 0.03, label_y), fontsize=7, va="center",
                arrowprops=dict(arrowstyle="-", color="0.6", lw=0.6),
            )  # fmt: skip
        ax.set_title(name)
        ax.set_xlabel("training PFLOP (3x forward per training image + validation)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_xlim(0, table["pflop_high"].max() * 1.45)
        ax.grid(alpha=0.3)
    handles = [
        plt.Line2D([], [], marker="s", color="tab:gray", linestyle="", label="old tuned recipe"),
        plt.Line2D([], [], marker="o", color="tab:blue", linestyle="", label="airbench recipe"),
    ]
    axes[0][-1].legend(handles=handles, loc="lower right", fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    from cifarlab.errors import CifarlabError
    from cifarlab.evaluation.evaluate import markdown_table

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", metavar="RUN", help="LABEL=FOLDER[:MODEL]")
    ap.add_argument("--figure", type=Path, required=True, help="the PNG to write")
    ap.add_argument("--title", help="the figure's title")
    ap.add_argument(
        "--from-table", type=Path, metavar="MARKDOWN",
        help=f"draw the table under the heading '{COMPUTE_HEADING}' of this file instead",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if bool(args.runs) == bool(args.from_table):
        print(
            "error: give runs (LABEL=FOLDER[:MODEL]) or --from-table, one of them", file=sys.stderr
        )
        return 2
    try:
        if args.from_table:
            table = compute_table(args.from_table)
            title = args.title or "Test accuracy against training compute"
            accuracy_vs_compute(table, title, args.figure)
        else:
            title = args.title or "Test accuracy against training minutes"
            table = frontier(args.runs, args.figure, title)
    except CifarlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown_table(table))
    print(f"\nfigure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
