"""The authors' airbench against cifarlab's tuned network: the same widths, batch and
data, the same steps, training images per second of each, side by side in one run.

    pip install --no-deps airbench==0.1.8      # the authors' code (imports torch)
    python benchmarks/peer_airbench.py --dataset ../shared/data/cifar10-jpg.tar.gz \
        --widths 64,128,128 64,256,256 --batch-size 1024 --steps 6

The peer runs its own trainer (``airbench.lib_airbench93.train``, via ``train93`` with
``make_net93``) unchanged. Without a GPU it needs device shims, written here and only
here: CUDA calls become CPU no-ops, float16 becomes float32 (the CPU has no fast
float16), CUDA events become a CPU clock, torchvision's ``Normalize`` (the only
torchvision piece its loader uses on data it is given) a two-line function, and the
CIFAR files it loads are written from the given dataset's 40,000-image training split.
On a GPU (``torch.cuda.is_available()``) nothing is shimmed. Each side runs in its own
process; the step times are taken after ``--warmup`` steps. Results: one JSON line per
side, then the ratio; BENCHMARKS.md keeps them with the matmul rate beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _split(dataset: str, seed: int = 0):
    from cifarlab import config
    from cifarlab.data import load_dataset, prepare

    ds = load_dataset(dataset, progress=False)
    _, split, _ = prepare(ds, config.model_config("tuned", "cpu"), seed, progress=False)
    return ds, split


# --------------------------------------------------------------------------- the peer


def _shim_cpu(torch) -> None:
    """CPU stand-ins for what airbench asks of CUDA; float32 for float16."""
    import types

    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.nn.Module.half = lambda self: self
    torch.Tensor.half = lambda self: self.float()
    torch.cuda.synchronize = lambda *a, **k: None

    class Event:  # a CPU clock with CUDA events' interface
        def __init__(self, enable_timing=True):
            self.t = None

        def record(self):
            self.t = time.perf_counter()

        def elapsed_time(self, other):
            return 1e3 * (other.t - self.t)

    torch.cuda.Event = Event
    load = torch.load
    torch.load = lambda f, map_location=None, **k: load(f, map_location="cpu", **k)

    class Normalize:
        def __init__(self, mean, std):
            self.mean = torch.tensor(mean).view(1, -1, 1, 1)
            self.std = torch.tensor(std).view(1, -1, 1, 1)

        def __call__(self, x):
            return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    tv = types.ModuleType("torchvision")
    tv.transforms = types.SimpleNamespace(Normalize=Normalize)
    tv.datasets = types.SimpleNamespace()
    sys.modules.setdefault("torchvision", tv)
    sys.modules.setdefault("torchvision.transforms", tv.transforms)


def run_peer(
    dataset: str, widths: list[int], batch_size: int, steps: int, warmup: int, sgd=None
) -> dict:  # fmt: skip
    import torch

    gpu = torch.cuda.is_available()
    if not gpu:
        _shim_cpu(torch)
    import airbench.lib_airbench93 as lib
    from airbench.utils import CifarLoader

    if not gpu:  # its test loader asks for device 0 by default: the CPU instead
        CifarLoader.__init__.__defaults__ = (*CifarLoader.__init__.__defaults__[:-1], "cpu")

    ds, split = _split(dataset)
    work = Path(tempfile.mkdtemp())
    (work / "cifar10").mkdir()
    for name, x, y in (("train", split.x_train, split.y_train), ("test", ds.x_test, ds.y_test)):
        torch.save(
            {"images": torch.tensor(x), "labels": torch.tensor(y), "classes": ds.class_names},
            work / "cifar10" / f"{name}.pt",
        )
    os.chdir(work)
    loader = CifarLoader(
        "cifar10", train=True, batch_size=batch_size, aug=lib.hyp["aug"], altflip=True,
        gpu=0 if gpu else "cpu",
    )  # fmt: skip
    stamps: list[float] = []
    base = sgd or torch.optim.SGD

    class TimedSGD(base):  # the step times, read off the optimizer's step (the clock)
        def step(self, *a, **k):
            out = super().step(*a, **k)
            if gpu:
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
            return out

    torch.optim.SGD = TimedSGD
    names = ("block1", "block2", "block3")
    make = lambda: lib.make_net93(widths=dict(zip(names, widths)))  # noqa: E731
    epochs = (warmup + steps) / len(loader)
    t0 = time.perf_counter()
    lib.train93(train_loader=loader, epochs=epochs, make_net=make, verbose=False)
    per_step = (stamps[-1] - stamps[warmup - 1]) / (len(stamps) - warmup)
    return {
        "side": "airbench 0.1.8 (authors)",
        "device": "cuda" if gpu else "cpu (shimmed)",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "widths": widths,
        "batch_size": batch_size,
        "steps_timed": len(stamps) - warmup,
        "train_images_per_s": batch_size / per_step,
        "wall_s": time.perf_counter() - t0,
    }


# --------------------------------------------------------------------------- cifarlab


#: cifarlab's step with one part taken out (``--profile``): where its time goes
VARIANTS = {
    "whole": {},
    "relu instead of gelu": {"network": {"activation": "relu"}},
    "no lookahead (no moving average)": {"lookahead": 0},
    "plain SGD (no bias scaling, no ramp)": {"lookahead": 0, "bias_lr_scale": 1.0},
    "no coupled L2": {"l2": 0.0},
    "one batch from memory (no input pipeline)": {"_fixed_batch": True},
}


def run_cifarlab(
    dataset: str, widths: list[int], batch_size: int, steps: int, warmup: int,
    precision: str = "float32", variant: str = "whole",
) -> dict:  # fmt: skip
    import keras

    from cifarlab import config, models
    from cifarlab.data import load_dataset, prepare
    from cifarlab.data.batches import Batches, fit_data, one_hot, training_batches
    from cifarlab.models import airbench
    from cifarlab.training.recipe import compile_model, set_precision

    cfg = config.model_config("tuned", "cpu").at_batch(batch_size)
    change = dict(VARIANTS[variant])
    fixed = change.pop("_fixed_batch", False)
    net = {**cfg.network, "widths": widths, **change.pop("network", {})}
    cfg = cfg.replace(network=net, precision=precision, **change)
    _, split, cfg = prepare(load_dataset(dataset, progress=False), cfg, 0, progress=False)
    precision = set_precision(cfg.precision)
    keras.utils.set_random_seed(0)
    model = models.build(cfg)
    airbench.init_from_data(model, cfg, split.x_train)
    compile_model(model, cfg, 1000)
    stamps: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append(time.perf_counter())

    train = training_batches(split.x_train, split.y_train, cfg, 0)
    val = Batches(split.x_val[:batch_size], one_hot(split.y_val[:batch_size], 10), batch_size)
    t0 = time.perf_counter()
    data = {**fit_data(train, val, 1), "steps_per_epoch": warmup + steps}
    if fixed:  # the same batch again and again: the step without the input pipeline
        xb, yb = train[0]
        data = {"x": _Same(xb, yb, warmup + steps), "validation_data": None, "shuffle": False}
    model.fit(**data, epochs=1, callbacks=[Clock()], verbose=0)
    per_step = (stamps[-1] - stamps[warmup - 1]) / steps
    return {
        "side": "cifarlab tuned",
        "variant": variant,
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "precision": precision,
        "widths": widths,
        "batch_size": batch_size,
        "steps_timed": steps,
        "train_images_per_s": batch_size / per_step,
        "wall_s": time.perf_counter() - t0,
    }


def _Same(xb, yb, n):
    import keras

    class Same(keras.utils.PyDataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return xb, yb

    return Same()


def profile_peer(dataset: str, widths: list[int], batch_size: int, steps: int) -> str:
    """torch.profiler's table of the authors' training steps (CPU time by operator)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU])
    base = torch.optim.SGD
    count = [0]

    class Profiled(base):  # profile the steps after the first two
        def step(self, *a, **k):
            out = super().step(*a, **k)
            count[0] += 1
            if count[0] == 2:
                prof.__enter__()
            if count[0] == 2 + steps:
                prof.__exit__(None, None, None)
            return out

    torch.optim.SGD = Profiled
    run_peer(dataset, widths, batch_size, steps + 1, 2, sgd=Profiled)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--widths", nargs="+", default=["64,128,128", "64,256,256"])
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument(
        "--precision", nargs="+", default=["float32", "auto"],
        help="cifarlab's precisions to time (float32 is the peer's on a CPU; auto: "
        "bfloat16 where the CPU has AVX512-BF16 / AMX)",
    )  # fmt: skip
    ap.add_argument(
        "--profile", action="store_true",
        help="where the time goes: torch.profiler's table of the authors' steps, and "
        "cifarlab's steps with each part taken out (VARIANTS), at the first --widths",
    )  # fmt: skip
    ap.add_argument("--side", choices=["peer", "cifarlab", "peer-profile"], help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="whole", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:  # a child: one side, one width
        widths = [int(w) for w in args.widths[0].split(",")]
        run = (args.dataset, widths, args.batch_size, args.steps, args.warmup)
        if args.side == "peer-profile":
            print(profile_peer(args.dataset, widths, args.batch_size, args.steps))
            return
        res = (
            run_peer(*run)
            if args.side == "peer"
            else run_cifarlab(*run, args.precision[0], args.variant)
        )
        print("PEER-JSON " + json.dumps(res))
        return
    if args.profile:
        _profile(args)
        return
    from cifarlab.hardware import cpu_name, matmul_gflops

    print(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
                      "processor": cpu_name(), "cores": os.cpu_count(),
                      "matmul_gflops": round(matmul_gflops(), 1)}))  # fmt: skip
    for w in args.widths:
        rates = {}
        for side, precision in [("peer", "float32")] + [("cifarlab", p) for p in args.precision]:
            cmd = [sys.executable, __file__, "--side", side, "--widths", w, "--dataset",
                   args.dataset, "--batch-size", str(args.batch_size), "--steps",
                   str(args.steps), "--warmup", str(args.warmup), "--precision", precision]  # fmt: skip
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = next((ln for ln in r.stdout.splitlines() if ln.startswith("PEER-JSON ")), None)
            if line is None:
                sys.exit(f"{side} at {w} failed:\n{r.stderr[-3000:]}")
            rates[side, precision] = res = json.loads(line[len("PEER-JSON ") :])
            print(json.dumps(res), flush=True)
            if side == "cifarlab":
                ratio = res["train_images_per_s"] / rates["peer", "float32"]["train_images_per_s"]
                print(json.dumps({"widths": w, "cifarlab_precision": res["precision"],
                                  "ratio_cifarlab_to_authors": round(ratio, 3)}), flush=True)  # fmt: skip


def _child(args, side: str, widths: str, precision: str, variant: str = "whole"):
    cmd = [sys.executable, __file__, "--side", side, "--widths", widths, "--dataset",
           args.dataset, "--batch-size", str(args.batch_size), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--precision", precision, "--variant", variant]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def _profile(args) -> None:
    from cifarlab.hardware import matmul_gflops

    w = args.widths[0]
    print(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), "widths": w,
                      "matmul_gflops": round(matmul_gflops(), 1)}), flush=True)  # fmt: skip
    r = _child(args, "peer-profile", w, "float32")
    print(r.stdout if r.returncode == 0 else r.stderr[-3000:], flush=True)
    for precision in args.precision:
        for variant in VARIANTS:
            r = _child(args, "cifarlab", w, precision, variant)
            line = next((ln for ln in r.stdout.splitlines() if ln.startswith("PEER-JSON ")), None)
            if line is None:
                print(json.dumps({"variant": variant, "failed": r.stderr[-500:]}), flush=True)
                continue
            res = json.loads(line[len("PEER-JSON ") :])
            keep = ("variant", "precision", "train_images_per_s")
            print(json.dumps({k: res[k] for k in keep}), flush=True)


if __name__ == "__main__":
    main()
