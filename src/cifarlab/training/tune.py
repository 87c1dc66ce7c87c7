"""The hyperparameter search behind the `tuned` model (KerasTuner, Bayesian optimisation).

The search runs on the train/validation split only (never the test split). Its
trials live in the layout's tuning folder (cifarlab.layout), so an interrupted search
resumes where it stopped; the winner and every trial are written to the layout's
search file and the `tuned` model is rebuilt from that file. The space's defaults are
the profile's tuned recipe of cifarlab.config (on ``full``: airbench94); its budget is
``config.SEARCH_BUDGET``.

The space admits the modern small-budget recipes: batch norm, residual blocks, the
airbench family (cifarlab.models.airbench) part by part, SGD with Nesterov momentum (a larger
step for biases, lookahead) or AdamW, a linear warm-up into a cosine or linear decay,
label smoothing, flip + translate augmentation of tunable strength (whole pixels,
alternating flips), and test-time views.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import keras_tuner as kt

from cifarlab import config
from cifarlab.config import TrainConfig
from cifarlab.data.batches import Batches, fit_data, one_hot, training_batches
from cifarlab.data.datasets import Dataset, load_dataset, prepare, stratified_subset
from cifarlab.errors import CifarlabError
from cifarlab.layout import layout, write_json
from cifarlab.models import airbench
from cifarlab.models.cnn import build_tuned
from cifarlab.training import plan
from cifarlab.training.callbacks import EpochStatus, keras_verbose
from cifarlab.training.evidence import environment
from cifarlab.training.recipe import compile_model
from cifarlab.training.winner import pick_winner, trial_number

if TYPE_CHECKING:
    import pandas as pd


def config_from_hp(
    hp: kt.HyperParameters,
    base: TrainConfig,
    widths: list | None = None,
    families: list | None = None,
) -> TrainConfig:
    """The search space: each ``hp`` call declares one dimension, its values and its
    default (the tuned recipe's value). Two network families: ``resnet`` (the small BN
    ResNet of cifarlab.models) and ``airbench`` (cifarlab.models.airbench), each part of
    which is a dimension; the recipe's parts (schedule, lookahead, the biases' step,
    alternating flips, whole-pixel shifts, test-time shifts) apply to both. The defaults
    are ``base``'s values (the profile's recipe), added to a dimension's values where
    they are not among them. ``widths``: the airbench group widths a trial may take
    (a budget's list of triples; None: :data:`WIDTHS`). ``families``: the network
    families it searches (a budget's list; None: both; the recipe's is always in)."""
    rec = base.to_dict()  # the recipe the space starts from
    arch = {**config.RESNET_HP, **airbench.DEFAULTS, **base.network}
    default = arch.get("arch", "resnet")
    families = list(families or FAMILIES)
    families += [] if default in families else [default]
    family = _choice(hp, "arch", families, default=default)
    optimizer = _choice(hp, "optimizer", ["sgd", "adamw"], default=rec["optimizer"])
    with hp.conditional_scope("optimizer", ["sgd"]):
        sgd_lr = _choice(hp, "sgd_lr", [0.05, 0.1, 0.2, 0.4], default=rec["learning_rate"])
        momentum = _choice(hp, "momentum", [0.85, 0.9], default=rec["momentum"])
        bias_lr_scale = _choice(hp, "bias_lr_scale", [1, 64], default=rec["bias_lr_scale"])
    with hp.conditional_scope("optimizer", ["adamw"]):
        adamw_lr = _choice(hp, "adamw_lr", [1e-3, 3e-3, 1e-2], default=3e-3)
    resnet, weight_decay = {k: arch[k] for k in config.RESNET_HP}, rec["weight_decay"]
    air = {**{k: arch[k] for k in airbench.DEFAULTS}, "widths": _widths(arch["widths"])}
    l2 = rec["l2"]
    if "resnet" in families:  # a family left out declares no dimension
        resnet, weight_decay = _resnet_space(hp, arch, rec)
    if "airbench" in families:
        air, l2 = _airbench_space(hp, arch, rec, widths)
    # declared in this order: KerasTuner draws the dimensions in declaration order
    schedule = _choice(hp, "schedule", ["cosine", "linear"], default=rec["schedule"])
    warmup_fraction = _choice(
        hp, "warmup_fraction", [0.0, 0.2, 0.23, 0.3], default=rec["warmup_fraction"]
    )
    lookahead = _choice(hp, "lookahead", [0, 5], default=rec["lookahead"])
    label_smoothing = _choice(
        hp, "label_smoothing", [0.0, 0.1, 0.2], default=rec["label_smoothing"]
    )
    translate = _choice(hp, "translate", [0.0, 0.0625, 0.125], default=rec["translate"])
    pixel_shifts = hp.Boolean("pixel_shifts", default=rec["pixel_shifts"])
    flip_mode = _choice(hp, "flip_mode", ["random", "alternate"], default=rec["flip_mode"])
    tta_shift = _choice(hp, "tta_shift", [0, 1], default=rec["tta_shift"])
    # the other family's keys are left out: a saved config holds the network it builds
    if family == "airbench":
        found = {"arch": "airbench", **air, "widths": [int(w) for w in air["widths"].split("-")]}
        other = config.RESNET_HP
    else:
        found = {"arch": "resnet", **resnet}
        other = airbench.DEFAULTS
    sgd = optimizer == "sgd"
    return base.replace(
        optimizer=optimizer,
        learning_rate=sgd_lr if sgd else adamw_lr,
        momentum=momentum if sgd else base.momentum,
        bias_lr_scale=bias_lr_scale if sgd else 1.0,
        schedule=schedule,
        warmup_fraction=warmup_fraction,
        weight_decay=weight_decay if family == "resnet" else 0.0,
        l2=l2 if family == "airbench" else 0.0,
        lookahead=lookahead,
        label_smoothing=label_smoothing,
        translate=translate,
        pixel_shifts=pixel_shifts,
        flip=translate > 0,  # one augmentation-strength dimension: none, or flip + shift
        flip_mode=flip_mode,
        tta_shift=tta_shift,
        network={**{k: v for k, v in base.network.items() if k not in other}, **found},
    )


#: The network families a search may take (a budget may keep fewer).
FAMILIES = ("resnet", "airbench")


def _resnet_space(hp: kt.HyperParameters, arch: dict, rec: dict) -> tuple[dict, float]:
    """The residual family's dimensions (active when ``arch`` is ``resnet``)."""
    with hp.conditional_scope("arch", ["resnet"]):
        resnet = dict(
            width=_choice(hp, "width", [16, 24, 32], default=arch["width"]),
            depth=hp.Int("depth", 1, 2, default=arch["depth"]),
            batch_norm=hp.Boolean("batch_norm", default=arch["batch_norm"]),
            residual=hp.Boolean("residual", default=arch["residual"]),
            dropout=hp.Float("dropout", 0.0, 0.3, step=0.1, default=arch["dropout"]),
        )
        weight_decay = _choice(hp, "weight_decay", [0.0, 1e-4, 5e-4], default=rec["weight_decay"])
    return resnet, weight_decay


def _airbench_space(
    hp: kt.HyperParameters, arch: dict, rec: dict, widths: list | None
) -> tuple[dict, float]:
    """The airbench family's dimensions (active when ``arch`` is ``airbench``)."""
    with hp.conditional_scope("arch", ["airbench"]):
        air = dict(
            widths=_choice(
                hp,
                "widths",
                [_widths(w) for w in widths] if widths else WIDTHS,
                default=_widths(arch["widths"]),
            ),
            whiten=hp.Boolean("whiten", default=arch["whiten"]),
            whiten_bias_epochs=_choice(hp, "whiten_bias", [0, 3], arch["whiten_bias_epochs"]),
            bn_scale=hp.Boolean("bn_scale", default=arch["bn_scale"]),
            bn_momentum=_choice(hp, "bn_momentum", [0.6, 0.9], default=arch["bn_momentum"]),
            activation=_choice(hp, "activation", ["gelu", "relu"], default=arch["activation"]),
            identity_init=hp.Boolean("identity_init", default=arch["identity_init"]),
            head_scale=_choice(hp, "head_scale", [1.0, 1 / 9], default=arch["head_scale"]),
        )
        l2 = _choice(hp, "l2", [0.0, 5e-4, 1.3e-3], default=rec["l2"])
    return air, l2


def _choice(hp: kt.HyperParameters, name: str, values: list, default):
    """``hp.Choice`` whose values hold its default (a profile's recipe may start off-grid)."""
    if default not in values:
        values = [*values, default]
        if all(isinstance(v, (int, float)) for v in values):
            values = sorted(values)
    return hp.Choice(name, values, default=default)


#: The airbench family's group widths the search can pick (airbench94: 64-256-256;
#: wider pays more on 100 classes, narrower fits a CPU).
WIDTHS = ["32-128-128", "64-128-128", "64-256-256", "128-384-384"]


def _widths(widths) -> str:
    return "-".join(str(w) for w in widths)


def trial_config(profile: str, batch_size: int) -> TrainConfig:
    """The profile's tuned recipe at the trials' batch size, its learning rate scaled to
    it (``TrainConfig.at_batch``): the space's defaults (the first trial) are then the
    recipe itself, at full size: the trials compare what the search may change, the final
    training shrinks its early epochs as the recipe has it (``low_res``)."""
    return config.model_config("tuned", profile).full_size().at_batch(batch_size)


def final_config(hp: kt.HyperParameters, trial: TrainConfig, final: TrainConfig) -> TrainConfig:
    """The configuration ``hp`` found at the trials' batch size, for the full training at
    ``final``'s: its learning rate scaled to the final batch (``TrainConfig.at_batch``:
    linearly under SGD, by the square root under AdamW)."""
    found = config_from_hp(hp, final.replace(batch_size=trial.batch_size))
    return found.at_batch(final.batch_size)


class TunedHyperModel(kt.HyperModel):
    """Builds, compiles and fits one trial with the project's own training code."""

    def __init__(
        self,
        base: TrainConfig,
        steps_per_epoch: int,
        epochs: int,
        seed: int = 0,
        widths=None,
        families=None,
        status: Path | None = None,
        max_trials: int = 0,
    ):
        super().__init__(name="tuned")
        self.base, self.steps, self.epochs, self.seed = base, steps_per_epoch, epochs, seed
        self.widths = widths  # the budget's airbench widths (None: all)
        self.families = families  # the budget's network families (None: all)
        self.trials_run = 0  # by this process (a worker's share in a distributed search)
        self.status = status  # where each epoch's status goes (the terminal's); None: nowhere
        self.max_trials = max_trials

    def config(self, hp) -> TrainConfig:
        """The trial's configuration: ``hp`` in the budget's space."""
        return config_from_hp(hp, self.base, self.widths, self.families)

    def build(self, hp):
        cfg = self.config(hp).replace(epochs=self.epochs)
        model = build_tuned(cfg)
        compile_model(model, cfg, self.steps * self.epochs)
        return model

    def fit(self, hp, model, x, y, validation_data, **kwargs):
        cfg = self.config(hp)
        self.trials_run += 1
        xv, yv = validation_data
        # Every trial sees the same seeded order of the same images (cifarlab.data.batches).
        airbench.init_from_data(model, cfg, x)
        train = training_batches(x, y, cfg, self.seed)
        val = Batches(xv, one_hot(yv, cfg.stats.num_classes), cfg.batch_size)
        if self.status is not None:
            label = f"trial {self.trials_run} of {self.max_trials}"
            status = EpochStatus(self.status, 0, self.epochs, label)
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), status]
        return model.fit(**fit_data(train, val, self.epochs), epochs=self.epochs, **kwargs)


class RecipeFirstOracle(kt.oracles.BayesianOptimizationOracle):
    """KerasTuner's Bayesian optimisation whose first trial is the space's defaults (the
    profile's recipe), then random points, then the Gaussian process: the winner is at
    least the recipe on the validation split, however few trials the budget allows."""

    def populate_space(self, trial_id):
        if not self.trials:  # a resumed search has its trials back: the usual path
            return {"status": kt.engine.trial.TrialStatus.RUNNING,
                    "values": self.hyperparameters.copy().values}  # fmt: skip
        return super().populate_space(trial_id)


def _role() -> str:
    """'single', 'chief' or 'worker:<id>' from KerasTuner's KERASTUNER_* variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    tid = os.environ.get("KERASTUNER_TUNER_ID", "")
    if not tid or "KERASTUNER_ORACLE_PORT" not in os.environ:
        raise CifarlabError(
            "distributed search needs KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP "
            "and KERASTUNER_ORACLE_PORT"
        )
    return "chief" if "chief" in tid else f"worker:{tid}"


def search_path(out) -> Path:
    return layout(out).search


def run_search(
    dataset: str | Dataset = "cifar100",
    profile: str | None = None,
    out=".",
    seed=0,
    overrides: dict | None = None,
    vgg16_weights: str = "imagenet",
    progress: bool = True,
    max_trials: int | None = None,
) -> TrainConfig:
    """Run (or resume) the search and save the winning configuration as JSON.

    Args:
        dataset, profile, out, seed, progress: as :func:`cifarlab.training.train.train_model`.
        overrides: ``batch_size`` applies to the trials; every override to the winner.
        vgg16_weights: accepted so that every CLI command takes the same options; unused.
        max_trials: override the profile's trial budget.

    Returns:
        The winner's config for the full training (learning rate scaled to its batch).
    """
    del vgg16_weights
    profile = config.resolve_profile(profile)
    budget = dict(config.SEARCH_BUDGET[profile])
    started = time.time()
    if max_trials is None:  # a series with a time budget: the trials the time left buys
        max_trials = plan.start(out, "search")
    if max_trials is not None:
        if max_trials < 1:
            raise CifarlabError(f"--max-trials must be at least 1, got {max_trials}")
        budget["max_trials"] = max_trials
    batch = (overrides or {}).get("batch_size")
    base = trial_config(profile, budget["batch_size"] if batch is None else batch)
    keras.utils.set_random_seed(seed)
    ds, split, base = prepare(dataset, base, seed, progress)
    x, y = split.x_train, split.y_train
    if budget["train_subset"]:
        x, y = stratified_subset(x, y, budget["train_subset"], seed)
    xv, yv = split.x_val, split.y_val
    if budget["train_subset"]:  # a proportionate validation subset keeps trials cheap
        xv, yv = stratified_subset(
            xv, yv, max(ds.num_classes * 2, budget["train_subset"] // 4), seed
        )
    steps = base.steps_per_epoch(len(y))
    project = f"{ds.name}-{ds.checksum[:8]}-{profile}-seed{seed}"
    status = layout(out).work("search") / "status.json"
    status.parent.mkdir(parents=True, exist_ok=True)
    hypermodel = TunedHyperModel(
        base, steps, budget["epochs"], seed, budget.get("widths"), budget.get("families"),
        status, budget["max_trials"],
    )  # fmt: skip
    role = _role()
    oracle = RecipeFirstOracle(
        objective="val_accuracy",
        max_trials=budget["max_trials"],
        num_initial_points=min(2, budget["max_trials"]),
        seed=seed,
    )
    tuner = kt.Tuner(
        oracle=oracle,
        hypermodel=hypermodel,
        directory=str(layout(out).tuning_dir),
        project_name=project,
        overwrite=False,  # trials on disk are reused: an interrupted search resumes
    )
    print(
        f"search: {budget['max_trials']} trials x {budget['epochs']} epochs on {len(y):,} "
        f"train / {len(yv):,} val images (project {project})",
        flush=True,
    )
    t0 = time.time()
    tuner.search(x, y, validation_data=(xv, yv), verbose=keras_verbose(progress))
    layout(out).remove_work("search")  # only the terminal's status was there
    if role.startswith("worker"):
        # KerasTuner's chief/worker mode: the chief's oracle hands out trials and keeps
        # the results; a worker only reports its share.
        print(
            f"search worker {os.environ['KERASTUNER_TUNER_ID']} ran {hypermodel.trials_run} "
            "trial(s)",
            flush=True,
        )
        return base
    defaults = kt.HyperParameters()
    hypermodel.config(defaults)  # the space's defaults: the recipe
    winner, why = pick_winner(list(tuner.oracle.trials.values()), defaults.values, len(yv))
    best_hp = winner.hyperparameters
    trials = []
    for t in tuner.oracle.trials.values():
        score = t.score
        trials.append(
            {
                "trial_id": t.trial_id,
                "status": str(t.status),
                "val_accuracy": None if score is None else float(score),
                "hyperparameters": t.hyperparameters.values,
            }
        )
    final = config.model_config("tuned", profile).override(**(overrides or {}))
    cfg = final_config(best_hp, base, final)
    result = {
        "config": cfg.settings(),
        "best_hyperparameters": best_hp.values,
        "winner": {"trial_id": winner.trial_id, "val_accuracy": winner.score, "why": why},
        "trials": sorted(trials, key=lambda t: t["trial_id"]),
        "dataset": {"spec": ds.spec, "sha256": ds.checksum},
        "profile": profile,
        "seed": seed,
        "budget": budget,
        "search_wall_time_s": round(time.time() - t0, 1),
        "tuner": "keras_tuner.Tuner + BayesianOptimizationOracle, first trial the recipe",
        "distributed": role == "chief",
        **environment(),
    }
    result["plan"] = plan.record(out, "search", budget["max_trials"], started, time.time())
    write_json(search_path(out), result, indent=2)
    print(
        f"search done: trial {trial_number(winner.trial_id)} (val accuracy {winner.score:.4f}), {why}; "
        f"{best_hp.values}",
        flush=True,
    )
    return cfg


def load_search(out) -> dict | None:
    p = search_path(out)
    return json.loads(p.read_text()) if p.is_file() else None


def best_config(out, dataset, profile, seed, progress=True, search=True) -> TrainConfig:
    """The searched configuration for this dataset/profile/seed; runs the search if needed
    (with ``search=False`` a missing search is an error)."""
    found = load_search(out)
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, progress=progress)
    if (
        found
        and found["dataset"]["sha256"] == ds.checksum
        and found["profile"] == profile
        and found["seed"] == seed
    ):
        return TrainConfig.from_dict(found["config"])
    if not search:
        raise CifarlabError(
            f"no search result for this dataset/profile/seed in {out}: run `cifarlab tune` "
            "with the same options first (KerasTuner's chief/worker mode spreads it over "
            "machines, see README)"
        )
    print(
        "no search result for this dataset/profile/seed yet: running the search first", flush=True
    )
    return run_search(ds, profile, out, seed, progress=progress)


#: each search dimension in a sentence a student can follow (ThirdModel's table)
MEANING = {
    "arch": "the family of network: the airbench CNN, or a plain / residual CNN",
    "widths": "channels of the airbench network's three groups: wider sees more, costs more",
    "width": "channels of the plain CNN's first block (doubled in each later block)",
    "depth": "how many convolution blocks the plain CNN stacks",
    "residual": "whether each block adds its input to its output (a ResNet shortcut)",
    "batch_norm": "whether each convolution's output is normalised over the batch",
    "dropout": "the share of activations zeroed at random in training (regularisation)",
    "activation": "the non-linearity after each convolution (GELU is a smooth ReLU)",
    "whiten": "a fixed first layer that decorrelates the pixels, computed from the data",
    "whiten_bias": "for how many epochs that first layer's bias still trains",
    "bn_scale": "whether batch norm learns a scale per channel (airbench leaves it out)",
    "bn_momentum": "how fast batch norm's running statistics follow new batches",
    "identity_init": "whether each convolution starts close to passing its input through",
    "head_scale": "a fixed factor on the classifier's output (airbench's 1/9)",
    "optimizer": "how the weights follow the gradient: SGD with momentum or AdamW",
    "sgd_lr": "SGD's peak learning rate (its step size)",
    "adamw_lr": "AdamW's peak learning rate (its step size)",
    "momentum": "how much of the last steps each SGD step keeps",
    "weight_decay": "how strongly weights are pulled towards zero at each step",
    "l2": "a penalty on large kernels added to the gradient (airbench's weight decay)",
    "bias_lr_scale": "how many times larger the batch-norm biases' steps are",
    "lookahead": "every this many steps the weights become their running average (0: off)",
    "schedule": "how the learning rate changes over training: cosine or linear decay",
    "warmup_fraction": "the share of training over which the rate first rises to its peak",
    "label_smoothing": "targets slightly short of 100% sure, so the net is less over-confident",
    "translate": "random shifts of the training images, as a fraction of their size",
    "pixel_shifts": "shifts by whole pixels cropped from a padded image (else interpolated)",
    "flip_mode": "random mirror images each step, or each image mirrored every other epoch",
    "tta_shift": "at test time, also average predictions over images shifted by this many pixels",
}


def describe_space(profile: str | None = "smoke") -> pd.DataFrame:
    """The search space of ``profile`` as a table: dimension, values, default (the
    profile's recipe: the first trial), and the condition under which it applies."""
    import pandas as pd

    profile = config.resolve_profile(profile)
    hp = kt.HyperParameters()
    budget = config.SEARCH_BUDGET[profile]
    base = trial_config(profile, budget["batch_size"])
    config_from_hp(hp, base, budget.get("widths"), budget.get("families"))
    rows = []
    for p in hp.space:
        values = getattr(p, "values", None)
        if values is not None and not isinstance(values, (list, tuple)):
            values = [round(v, 4) for v in values]  # Int / Float ranges enumerate their steps
        if values is None:
            values = f"{p.min_value} .. {p.max_value}" + (
                f" step {p.step}" if getattr(p, "step", None) else ""
            )
        elif isinstance(p, kt.engine.hyperparameters.Boolean):
            values = [True, False]
        cond = ", ".join(f"{c.name} in {c.values}" for c in p.conditions)
        rows.append(
            {"hyperparameter": p.name, "what it is": MEANING.get(p.name, ""), "values": values,
             "default": p.default, "only when": cond}
        )  # fmt: skip
    return pd.DataFrame(rows)


def trials_table(out) -> pd.DataFrame:
    """The finished search's trials as columns, best first, named as KerasTuner's log
    names them ("Trial 1" is trial_id 0); a row per hyperparameter that differs between
    them (those all trials share are left out: the recipe's), so it fits a page."""
    import pandas as pd

    found = load_search(out)
    if not found:
        raise CifarlabError(f"no search result in {search_path(out)}; run `cifarlab tune` first")
    rows = {
        f"trial {trial_number(t['trial_id'])}": {
            "val_accuracy": t["val_accuracy"],
            **t["hyperparameters"],
        }
        for t in found["trials"]
    }
    table = pd.DataFrame(rows).T.sort_values("val_accuracy", ascending=False)
    varies = [c for c in table if c == "val_accuracy" or table[c].astype(str).nunique() > 1]
    return table[varies if len(table) > 1 else list(table)].T
