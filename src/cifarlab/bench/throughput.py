"""`cifarlab bench`: throughput against this machine's own roofline, side by side.

Measured in one run, because absolute times on shared machines are noisy:

- the float32 matrix-multiply rate (numpy, 2048^3): the practical roofline;
- per model and installed Keras backend: training images/s at the profile's batch size
  over the steps after the first quarter of one ``fit`` call (the whole call's rate
  beside it in the JSON), inference images/s, forward FLOPs per image counted from the
  layers, achieved GFLOP/s (training counted as 3x forward) and its fraction of the
  roofline;
- the input pipeline alone: JPEG decode, and batch gather + one-hot + augmentation;
- the naive reference: the baseline architecture fed float arrays with ``fit``'s
  defaults (batch 32) on the TensorFlow backend;
- with ``--epoch-starts``: the wait before each epoch's first step, NumPy arrays handed
  to ``fit`` against :class:`cifarlab.data.batches.Batches` (see there why it matters).

Each backend runs in its own process (Keras picks its backend at import).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cifarlab.backend import fastest_backend, record_fastest_backend
from cifarlab.config import MODELS, DataStats, model_config
from cifarlab.hardware import matmul_gflops
from cifarlab.models.flops import count_flops

BACKENDS = ("tensorflow", "jax", "torch")
#: The networks measured: the four models, and ``airbench`` (the tuned model as the
#: airbench family at its default widths, cifarlab.models.airbench) beside them.
NETWORKS = (*MODELS, "airbench")
#: The data statistics of the random uint8 images (100 classes) the measurements train on.
RANDOM_IMAGE_STATS = DataStats([125.3, 123.0, 113.9], [63.0, 62.1, 66.7], 100)


def installed_backends() -> list[str]:
    import importlib.util

    return [b for b in BACKENDS if importlib.util.find_spec(b)]


# --------------------------------------------------------------------------- one backend


def _networks(models, profile: str) -> list[str]:
    """The networks to measure: ``airbench`` not twice, where ``tuned`` already is it."""
    same = model_config("tuned", profile).network.get("arch") == "airbench" and "tuned" in models
    return [m for m in models if not (same and m == "airbench")]


def _measure_backend(profile: str, models: list[str], steps: int) -> list[dict]:
    """Runs inside a process whose KERAS_BACKEND is already set."""
    import keras

    from cifarlab import config
    from cifarlab import models as mdl
    from cifarlab.data import batches
    from cifarlab.models import airbench
    from cifarlab.training import recipe

    rows = []
    # what training uses ("auto": bf16 where the hardware gains), and float32 beside it
    # for the CNNs when that differs, so the gain is measured, not assumed
    auto = recipe.set_precision("auto")
    networks = _networks(models, profile)
    plan = [(name, auto) for name in networks]
    if auto != "float32":
        plan += [(n, "float32") for n in networks if n in ("baseline", "tuned", "airbench")]
    for name, precision in plan:
        recipe.set_precision(precision)
        cfg = config.model_config("tuned" if name == "airbench" else name, profile)
        cfg = cfg.full_size().replace(stats=RANDOM_IMAGE_STATS)  # the 32x32 step
        if name == "airbench":
            cfg = cfg.replace(network={"arch": "airbench", **airbench.DEFAULTS})
        if name == "vgg16":
            cfg = cfg.replace(network={**cfg.network, "image_size": 32})
        model = mdl.build_vgg16(cfg, weights="none") if name == "vgg16" else mdl.build(cfg)
        recipe.compile_model(model, cfg, 1000)
        bs = cfg.batch_size
        n = bs * steps
        x = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        y = batches.one_hot(np.arange(n) % 100, 100)
        model.fit(x[: bs * 2], y[: bs * 2], batch_size=bs, epochs=1, verbose=0)  # compile/warm up
        train_ips, whole = _timed_fit(model, x, y, bs)
        model.predict(x[:bs], batch_size=bs, verbose=0)
        t = time.perf_counter()
        model.predict(x, batch_size=bs, verbose=0)
        infer_ips = n / (time.perf_counter() - t)
        rows.append(
            {
                "model": name,
                "backend": keras.backend.backend(),
                "precision": precision,
                "batch_size": bs,
                "train_images_per_s": train_ips,
                "train_images_per_s_whole_call": whole,
                "infer_images_per_s": infer_ips,
                "forward_mflops_per_image": count_flops(model) / 1e6,
                "params": int(model.count_params()),
                "note": _note(name, cfg),
            }
        )
    return rows


def _timed_fit(model, x, y, batch_size: int) -> tuple[float, float]:
    """Training images/s of one ``fit`` over ``x``: over the steps after the first quarter
    (those pay the call's set-up: its input pipeline, the first steps' caches; a real
    training pays it once), and over the whole call."""
    import keras

    ends: list[float] = []  # each step's end
    timer = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter())
    )
    t = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=True, callbacks=[timer])
    whole = len(x) / (time.perf_counter() - t)
    skip = len(ends) // 4
    return batch_size * (len(ends) - 1 - skip) / (ends[-1] - ends[skip]), whole


def _note(name: str, cfg) -> str:
    if cfg.network.get("arch") == "airbench":
        return "the airbench network " + "/".join(str(w) for w in cfg.network["widths"])
    return "vgg16 at 32x32 input, all layers trainable" if name == "vgg16" else ""


def _naive_reference(steps: int) -> dict:
    """The baseline architecture the naive way: float32 arrays scaled outside the model,
    sparse labels, `fit` defaults (batch 32), TensorFlow backend."""
    import keras
    from keras import layers

    keras.mixed_precision.set_global_policy("float32")
    inp = keras.Input((32, 32, 3))
    x = inp
    for width, convs in ((32, 3), (64, 4)):
        for _ in range(convs):
            x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(512, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    model = keras.Model(inp, layers.Dense(100, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    n = 128 * steps
    xs = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3)).astype("float32") / 255.0
    ys = np.arange(n) % 100
    model.fit(xs[:64], ys[:64], epochs=1, verbose=0)
    steady, whole = _timed_fit(model, xs, ys, 32)  # fit's default batch
    return {
        "model": "baseline (naive reference)",
        "backend": keras.backend.backend(),
        "precision": "float32",
        "batch_size": 32,
        "train_images_per_s": steady,
        "train_images_per_s_whole_call": whole,
        "infer_images_per_s": None,
        "forward_mflops_per_image": count_flops(model) / 1e6,
        "params": int(model.count_params()),
        "note": "float32 arrays, fit defaults",
    }


def _pipeline(dataset: str | None, batch_size: int) -> dict:
    """Input pipeline alone: JPEG decode (done once, then cached) and per-batch work."""
    import keras

    from cifarlab import models as mdl
    from cifarlab.data import images

    out = {}
    if dataset and Path(dataset).is_file():
        import tarfile

        blobs = []
        with tarfile.open(dataset) as tar:
            for m in tar:
                if m.isfile() and m.name.endswith((".jpg", ".png")):
                    blobs.append(tar.extractfile(m).read())
                    if len(blobs) == 5000:
                        break
        t = time.perf_counter()
        for b in blobs:
            images.image_to_array(b)
        out["decode_images_per_s"] = len(blobs) / (time.perf_counter() - t)
    n = batch_size * 50
    x = np.random.default_rng(0).integers(0, 256, (n * 4, 32, 32, 3), dtype=np.uint8)
    y = np.arange(n * 4) % 100
    aug = mdl.augmentation(flip=True, translate=0.125)
    aug(x[:batch_size].astype("float32"), training=True)
    t = time.perf_counter()
    perm = np.random.default_rng(1).permutation(len(y))[:n]
    for i in range(0, n, batch_size):
        idx = perm[i : i + batch_size]
        xb = x[idx].astype("float32")
        np.eye(100, dtype="float32")[y[idx]]
        keras.ops.convert_to_numpy(aug(xb, training=True))
    out["batch_augment_images_per_s"] = n / (time.perf_counter() - t)
    # the airbench recipe's batches: gather, alternating flips, 2-pixel reflect-padded crops
    from cifarlab.data.batches import Batches

    seq = Batches(x, y, batch_size, 0, x_mirror=x[:, :, ::-1].copy(), alternate=True, shift=2)
    t = time.perf_counter()
    for i in range(len(seq)):
        seq[i]
    out["airbench_batches_images_per_s"] = len(x) / (time.perf_counter() - t)
    return out


def _child(args: dict) -> None:
    rows = _measure_backend(args["profile"], args["models"], args["steps"])
    extra = {}
    if args.get("naive"):
        rows.append(_naive_reference(args["steps"]))
    if args.get("pipeline"):
        extra = _pipeline(args.get("dataset"), args["batch_size"])
    from cifarlab.bench.pipeline import epoch_starts

    starts = epoch_starts() if args.get("epoch_starts") else None
    print(
        "BENCH-JSON " + json.dumps({"rows": rows, "pipeline": extra, "epoch_starts": starts}),
        flush=True,
    )


# --------------------------------------------------------------------------- the whole bench


def run_bench(
    profile: str = "cpu",
    models=NETWORKS,
    backends=None,
    steps: int = 20,
    dataset: str | None = None,
    out: str | Path = ".",
    kernel: bool = False,
    epoch_start: bool = False,
) -> dict:
    from cifarlab.errors import CifarlabError
    from cifarlab.layout import Layout, write_json
    from cifarlab.training.evidence import environment

    bad = [m for m in models if m not in NETWORKS]
    if bad:
        raise CifarlabError(f"unknown network(s) {bad}; choose from {', '.join(NETWORKS)}")
    backends = backends or installed_backends()
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise CifarlabError(f"unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
    roof = matmul_gflops()
    rows, pipeline, starts = [], {}, None
    for b in backends:
        print(f"benchmarking backend {b} ...", flush=True)
        args = {
            "profile": profile,
            "models": list(models),
            "steps": steps,
            "dataset": dataset,
            "naive": b == "tensorflow",
            "pipeline": b == backends[0],
            "batch_size": 128,
            "epoch_starts": epoch_start and b == "tensorflow",
        }
        env = {**os.environ, "KERAS_BACKEND": b, "TF_CPP_MIN_LOG_LEVEL": "3"}
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from cifarlab.bench.throughput import _child; _child({args!r})",
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("BENCH-JSON ")), None)
        if r.returncode != 0 or line is None:
            print(f"  backend {b} failed: {r.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        res = json.loads(line.removeprefix("BENCH-JSON "))
        rows += res["rows"]
        pipeline.update(res["pipeline"])
        starts = res.get("epoch_starts") or starts
    kvp = None
    if kernel:  # the notebook kernel's tax on training, if any (cifarlab.notebooks)
        from cifarlab.bench.kernels import kernel_vs_process

        print("timing the same training in a process and in a notebook kernel ...", flush=True)
        kvp = kernel_vs_process("tuned", profile, steps=steps, epochs=2)
    for row in rows:
        gf = 3 * row["forward_mflops_per_image"] * row["train_images_per_s"] / 1e3
        row["train_gflops"] = gf
        row["fraction_of_roofline"] = gf / roof
    naive = next((r for r in rows if "naive" in r["model"]), None)
    for row in rows:
        if naive and row["model"] == "baseline":
            row["speedup_vs_naive"] = row["train_images_per_s"] / naive["train_images_per_s"]
    result = {
        "command": "cifarlab bench " + " ".join(sys.argv[2:])
        if sys.argv[1:2] == ["bench"]
        else "run_bench",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "profile": profile,
        "steps": steps,
        "matmul_gflops": roof,
        "pipeline": pipeline,
        "rows": rows,
        "kernel_vs_process": kvp,
        "epoch_starts": starts,
        **environment(),
    }
    write_json(Layout(out).bench, result, indent=2)
    fastest = fastest_backend(rows, MODELS)
    if fastest:
        record_fastest_backend(fastest, result)
        result["fastest_backend"] = fastest
    return result


def markdown(result: dict) -> str:
    hw = result["hardware"]
    lines = [
        f"### `{result['command']}` — {result['date'][:10]}",
        "",
        f"{hw['processor']}, {hw['cpu_count']} cores, GPU: {'yes' if hw['gpu'] else 'no'}; "
        f"Python {result['versions']['python']}, Keras {result['versions'].get('keras')}, "
        f"TensorFlow {result['versions'].get('tensorflow', '-')}, torch {result['versions'].get('torch', '-')}, "
        f"JAX {result['versions'].get('jax', '-')}. Profile `{result['profile']}` batch sizes, "
        f"{result['steps']} steps per measurement (training rates over the steps after the "
        "first quarter of each `fit` call), random uint8 images, 100 classes.",
        "",
        f"Roofline: float32 matmul (numpy, 2048^3) **{result['matmul_gflops']:.0f} GFLOP/s**.",
        "",
        "| model | backend | precision | batch | train img/s | infer img/s | fwd MFLOP/img "
        "| train GFLOP/s | of fp32 roofline | vs naive |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        infer = "" if r["infer_images_per_s"] is None else f"{r['infer_images_per_s']:.0f}"
        vs = f"{r['speedup_vs_naive']:.2f}x" if "speedup_vs_naive" in r else ""
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['precision']} | {r['batch_size']} "
            f"| {r['train_images_per_s']:.0f} | "
            f"{infer} | {r['forward_mflops_per_image']:.0f} | {r['train_gflops']:.0f} | "
            f"{r['fraction_of_roofline']:.0%} | {vs} |"
        )
    p = result["pipeline"]
    if p:
        lines += [
            "",
            "Input pipeline alone: "
            + ", ".join(f"{k.replace('_', ' ')} {v:,.0f}" for k, v in p.items())
            + ".",
        ]
    k = result.get("kernel_vs_process")
    if k:
        lines += [
            "",
            f"The same training ({k['model']}, {k['epochs']} epochs x {k['steps_per_epoch']} "
            f"steps with validation, the library's `fit`): {k['process_s']:.1f} s in a process, "
            f"{k['kernel_s']:.1f} s in a notebook kernel (papermill): ratio "
            f"**{k['ratio']:.3f}**.",
        ]
    e = result.get("epoch_starts")
    if e:
        w = e["waits_s"]
        lines += [
            "",
            f"Epoch starts ({e['backend']}, {e['epochs']} epochs of {e['steps_per_epoch']} steps, "
            f"{e['step_pause_s']} s a step): the wait for each epoch's first step, NumPy arrays "
            f"to `fit`: {', '.join(f'{v:.1f}' for v in w['arrays'])} s; `Batches`: "
            f"{', '.join(f'{v:.1f}' for v in w['batches'])} s.",
        ]
    return "\n".join(lines) + "\n"
