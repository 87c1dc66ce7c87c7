"""Muon steps for the conv filters against the airbench recipe's SGD, at equal epochs
(issue 30, accuracy per minute: airbench94_muon reaches airbench94's accuracy in 8
epochs instead of 9.9 on CIFAR-10): benchmarks/variants.py with these two variants.

    CIFARLAB_DATA_DIR=../shared/data python benchmarks/muon.py --dataset cifar100 \
        --profile cpu --epochs 4 --out OUT
"""

from __future__ import annotations

import argparse
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
    a = p.parse_args(argv)
    from variants import main as variants

    e = a.epochs
    return variants([
        "--dataset", a.dataset, "--profile", a.profile, "--seed", str(a.seed), "--out", a.out,
        "--title", "Muon filters against SGD", "--variant", f"sgd-{e}=epochs={e}",
        "--variant", f"muon-{e}=epochs={e},muon_lr={a.muon_lr},muon_momentum={a.muon_momentum}",
    ])  # fmt: skip


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
