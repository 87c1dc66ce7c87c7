"""Configuration: the four models' recipes per profile, and the typed config of one run.

Every setting of every model lives in :data:`RECIPES` (and the search budget in
:data:`SEARCH_BUDGET`): what a model uses on a profile is its ``"all"`` entry updated
by its profile's entry, nothing else. The searched ``tuned`` model starts from its
recipe and takes the search's winner (cifarlab.training.tune). CLI flags override single
fields. ``cifarlab config MODEL --profile P`` prints the resolved config; it is also
saved with every model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from cifarlab.errors import CifarlabError
from cifarlab.hardware import has_gpu

#: The series, in training order. Every module takes the model names from here.
MODELS = ("baseline", "overfit", "tuned", "vgg16")
PROFILES = ("smoke", "cpu", "full")


#: The fields of :class:`DataStats`, saved flat in a model's config JSON as they always were.
STAT_FIELDS = ("mean", "std", "num_classes")


@dataclass(frozen=True)
class DataStats:
    """What the data says, not the user: measured on the training split by
    :func:`cifarlab.data.prepare` (never on validation or test), read by the network's
    input normalisation and its head.

    Args:
        mean: per-channel mean of the training images, on the 0-255 scale.
        std: per-channel standard deviation, on the same scale.
        num_classes: the dataset's classes (the head's outputs).
    """

    mean: list[float]
    std: list[float]
    num_classes: int


@dataclass
class TrainConfig:
    """Everything that determines one training run (saved as JSON beside the model).

    The user's settings, and, apart from them, :attr:`stats`: the data's statistics,
    None until the training code measured them. The defaults are the neutral "off"
    values; :data:`RECIPES` sets what each model uses.
    """

    model: str
    epochs: int = 10
    batch_size: int = 128
    # ---- optimisation
    optimizer: str = "adam"  # adam | adamw (decoupled decay) | sgd (Nesterov momentum)
    learning_rate: float = 1e-3  # the peak learning rate
    momentum: float = 0.9  # SGD only
    schedule: str = "cosine"  # cosine | linear (linear warm-up, then to 0) | constant
    warmup_fraction: float = 0.0  # of all steps; 0.2-0.3 gives a one-cycle shape
    warmup_start: float = 0.1  # the warm-up starts at this fraction of the peak rate
    decay_to: float = 0.0  # linear schedule: ends at this fraction of the peak rate
    # decoupled weight decay (Keras optimizers' weight_decay), not on biases / BN;
    # AdamW with 0 here decays at adamw_decay_when_unset (its search dimension lists 0)
    weight_decay: float = 0.0
    adamw_decay_when_unset: float = 1e-4
    label_smoothing: float = 0.0
    l2: float = 0.0  # coupled L2: l2 * w added to the kernels' gradients (airbench networks)
    bias_lr_scale: float = 1.0  # SGD: the batch-norm biases' step is this times larger
    # SGD: > 0 gives the convolution filters Muon steps at this peak rate instead
    # (airbench94_muon: 0.24 at momentum 0.6; cifarlab.training.recipe.AirbenchSGD)
    muon_lr: float = 0.0
    muon_momentum: float = 0.6
    lookahead: int = 0  # every this many steps the weights become their moving average
    # per step: a write keeps lookahead_momentum ** lookahead of the average (SGD: that
    # ramped up from 0 as (step / steps) ** 3, as airbench's lookahead)
    lookahead_momentum: float = 0.95
    # ---- augmentation (random, training only; part of the saved model)
    flip: bool = False  # horizontal flips
    # random: a coin per image and step (a model layer); alternate: a coin per image in
    # the first epoch, then each image mirrored in every other epoch (in the batches)
    flip_mode: str = "random"
    translate: float = 0.0  # random shift by up to this fraction of the size (reflect)
    pixel_shifts: bool = False  # whole-pixel shifts, cropped in the batches (else interpolated)
    # training batches: each epoch's last, partial batch left out (airbench); the rows it
    # would have held change every epoch, so no image is left out for long
    drop_last: bool = False
    rotation: float = 0.0  # random rotation by up to this fraction of a full turn
    # the first low_res_epochs epochs train on batches shrunk to low_res x low_res pixels
    # (area averages: cheaper steps), the rest and every evaluation at full size (airbench
    # networks, which take any size; cifarlab.data.batches)
    low_res: int = 0
    low_res_epochs: int = 0
    # ---- model selection
    patience: int | None = None  # early stopping: epochs without a better val_accuracy
    restore_best: bool = True  # keep the best-validation epoch (False: the last epoch)
    # ---- data
    val_fraction: float = 0.2  # held out of the training images: 40,000 / 10,000 for CIFAR
    dataset_limit: int | None = (
        None  # a stratified sample of the dataset's training images, BEFORE the split
    )
    train_subset: int | None = None  # AFTER the split: train on this many; validation stays whole
    test_limit: int | None = None  # evaluate on a stratified subset of the test split
    tta_flip: bool = False  # predictions averaged over each image and its mirror
    tta_shift: int = 0  # and over those shifted by this many pixels both ways (6 views)
    # auto: mixed_bfloat16 on a GPU (tensor cores, no loss scaling needed) and on CPUs
    # with AVX-512 BF16 / AMX under TensorFlow (1.3x: BENCHMARKS.md); float32 otherwise.
    # Or float32 / mixed_bfloat16 / mixed_float16. A training choice only.
    precision: str = "auto"
    # the builder's options (cifarlab.models): the network's shape; VGG16's transfer phases
    network: dict = field(default_factory=dict)
    # measured from the training split by cifarlab.data.prepare; not a setting
    stats: DataStats | None = None

    def replace(self, **changes) -> TrainConfig:
        """A copy with ``changes`` (as :func:`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)

    def override(self, **flags) -> TrainConfig:
        """A copy with the command line's overrides; a flag given as None keeps the value.
        Other ``epochs`` keep the recipe's share of shrunk ones (:meth:`at_epochs`)."""
        flags = {k: v for k, v in flags.items() if v is not None}
        if "epochs" in flags and "low_res_epochs" not in flags:
            return self.at_epochs(flags.pop("epochs")).replace(**flags)
        return self.replace(**flags)

    def full_size(self) -> TrainConfig:
        """A copy without shrunk early epochs: the network at its images' full size, as it
        is saved, drawn and benchmarked."""
        return self.replace(low_res=0, low_res_epochs=0)

    def at_epochs(self, epochs: int) -> TrainConfig:
        """A copy at ``epochs``, its shrunk epochs (``low_res_epochs``) in the same share
        of them (at least one of each kind where there are two; one epoch: full size)."""
        if not self.low_res_epochs:
            return self.replace(epochs=epochs)
        low = first_part(epochs, self.low_res_epochs, self.epochs)
        return self.replace(epochs=epochs, low_res_epochs=low, low_res=self.low_res if low else 0)

    def at_batch(self, batch_size: int) -> TrainConfig:
        """A copy at ``batch_size``, the peak learning rate scaled with the batch: linearly
        under SGD (Goyal et al. 2017), by the square root under Adam and AdamW (the
        square-root rule for adaptive methods, Malladi et al. 2022: their step does not
        grow with the gradient's size, so a linear rule overshoots)."""
        ratio = batch_size / self.batch_size
        rate = self.learning_rate * (ratio if self.optimizer == "sgd" else ratio**0.5)
        return self.replace(batch_size=batch_size, learning_rate=rate).validate()

    def steps_per_epoch(self, images: int) -> int:
        """Training steps of an epoch over ``images`` at this batch size."""
        return steps_per_epoch(images, self.batch_size, self.drop_last)

    def validate(self) -> TrainConfig:
        if self.epochs < 1:
            raise CifarlabError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise CifarlabError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.muon_lr and self.optimizer != "sgd":
            raise CifarlabError(
                f"muon_lr: Muon steps for the filters go with sgd, not {self.optimizer}"
            )
        if bool(self.low_res) != bool(self.low_res_epochs):
            raise CifarlabError("low_res and low_res_epochs go together (both 0: off)")
        if self.low_res_epochs:
            if self.low_res_epochs >= self.epochs:
                raise CifarlabError(
                    f"low_res_epochs {self.low_res_epochs} leaves none of the {self.epochs} "
                    "epochs at full size"
                )
            if not 12 <= self.low_res < 32 or self.network.get("arch") != "airbench":
                raise CifarlabError(
                    "low_res: 12 to 31 pixels, for airbench networks (they take any size), "
                    f"got {self.low_res} for {self.network.get('arch', 'this network')}"
                )
        if self.flip_mode not in ("random", "alternate"):
            raise CifarlabError(f"flip_mode is random or alternate, got '{self.flip_mode}'")
        return self

    def with_stats(self, mean, std, num_classes: int) -> TrainConfig:
        """A copy with the data's statistics (:class:`DataStats`)."""
        return self.replace(stats=DataStats(list(mean), list(std), int(num_classes)))

    def need_stats(self) -> DataStats:
        """The data's statistics; a clear error where nothing measured them yet."""
        if self.stats is None:
            raise ValueError(
                "the config has no data statistics: cifarlab.data.prepare measures them "
                "(or TrainConfig.with_stats)"
            )
        return self.stats

    def settings(self) -> dict:
        """The user's settings alone, as in :meth:`to_dict`, without the statistics."""
        d = dataclasses.asdict(self)
        del d["stats"]
        return d

    def to_dict(self) -> dict:
        """As saved beside a model: the settings, then the statistics' fields (None
        before they are measured)."""
        stats = dataclasses.asdict(self.stats) if self.stats else dict.fromkeys(STAT_FIELDS)
        return {**self.settings(), **stats}

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """From saved JSON; configs saved before the fields were renamed are translated."""
        d = dict(d)
        if "augment" in d:  # one number used to mean flip + translate
            aug = d.pop("augment") or 0.0
            d.setdefault("flip", aug > 0)
            d.setdefault("translate", aug)
        renamed = {"early_stopping": "patience", "train_limit": "dataset_limit", "hp": "network"}
        for old, new in renamed.items():
            if old in d:
                d.setdefault(new, d.pop(old))
        stats = [d.pop(k, None) for k in STAT_FIELDS]
        names = {f.name for f in dataclasses.fields(cls)} - {"stats"}
        cfg = cls(**{k: v for k, v in d.items() if k in names})
        return cfg if None in stats else cfg.with_stats(*stats)


def first_part(epochs: int, part: int, whole: int) -> int:
    """The first of two phases of ``epochs`` in the ratio ``part / whole``, at least one
    epoch each (0 where ``epochs`` is 1)."""
    return min(max(1, round(epochs * part / whole)), epochs - 1)


def steps_per_epoch(images: int, batch_size: int, drop_last: bool = False) -> int:
    """Batches of an epoch over ``images``: the last one partial, or with ``drop_last``
    left out (unless it is the only one)."""
    if drop_last:
        return max(1, images // batch_size)
    return -(-images // batch_size)


def resolve_profile(name: str | None) -> str:
    """``None``/empty: ``full`` with a GPU, ``cpu`` without; else a checked name."""
    if name is None or name == "":
        return "full" if has_gpu() else "cpu"
    if name not in PROFILES:
        raise CifarlabError(f"unknown profile '{name}'; choose one of {', '.join(PROFILES)}")
    return name


def check_model(name: str) -> str:
    if name not in MODELS:
        raise CifarlabError(f"unknown model '{name}'; choose one of {', '.join(MODELS)}")
    return name


# --------------------------------------------------------------------------- the recipes
# Profiles:
#   smoke  tests and a first look: 1,000 training images, 500 test images, a few epochs.
#          It proves the plumbing, not the models.
#   cpu    all 40k/10k images; planned to a 60-minute budget by default (DEFAULT_BUDGET).
#   full   a GPU: all the data and the epochs the models need.

#: The protocol's data sizes per profile (every model): the same images for all four.
PROFILE_DATA: dict[str, dict] = {
    "smoke": dict(dataset_limit=1000, test_limit=500),
    "cpu": dict(),
    "full": dict(),
}

# Keras' default BN momentum (0.99) lags a short run's weights; 0.9, as fast CIFAR
# recipes use (RESULTS.md, "batch-norm momentum").
BN_MOMENTUM = 0.9

#: The airbench recipe (airbench94; KellerJordan/cifar10-airbench, arXiv 2404.00498) as a
#: ``tuned`` config per profile: the search's starting point on cpu and full, and what
#: ``cifarlab ablate`` takes apart. Mean-loss units: peak rate 1.5 at batch 1024, coupled
#: L2 1.3e-3. cpu: batch 512 at 64/256/256, chosen over 64/128/128 on CIFAR-100 (RESULTS.md,
#: "the airbench recipe on CIFAR-100").
AIRBENCH: dict[str, dict] = {
    "all": dict(
        optimizer="sgd",
        learning_rate=1.5,
        momentum=0.85,
        schedule="linear",
        warmup_fraction=0.23,
        warmup_start=0.2,
        decay_to=0.07,
        l2=1.3e-3,
        weight_decay=0.0,  # the L2 above is coupled; no decoupled decay besides
        bias_lr_scale=64.0,
        lookahead=5,
        lookahead_momentum=0.95,
        label_smoothing=0.2,
        flip=True,
        flip_mode="alternate",
        translate=2 / 32,
        pixel_shifts=True,
        drop_last=True,
        tta_flip=True,
        tta_shift=1,
        patience=None,
        restore_best=False,
        epochs=10,
        batch_size=1024,
        network=dict(
            arch="airbench",
            widths=[64, 256, 256],
            convs=2,
            whiten=True,
            whiten_bias_epochs=3,
            bn_scale=False,
            bn_momentum=0.6,
            activation="gelu",
            identity_init=True,
            head_scale=1 / 9,
        ),
    ),
    "smoke": dict(
        epochs=2, batch_size=64, learning_rate=1.5 * 64 / 1024, network=dict(widths=[16, 32, 32])
    ),
    # cpu: 13 epochs pay on CIFAR-100 (RESULTS.md, "the profile as it ships")
    "cpu": dict(batch_size=512, learning_rate=0.75, epochs=13),
    "full": dict(),
}


def _airbench(profile: str) -> dict:
    """The airbench recipe's values on ``profile`` (its ``network`` merged key by key)."""
    net = {**AIRBENCH["all"]["network"], **AIRBENCH[profile].get("network", {})}
    return {**AIRBENCH["all"], **AIRBENCH[profile], "network": net}


#: The residual family's architecture (cifarlab.models.build_tuned): the smoke profile's
#: tuned network, and the search's defaults for that family wherever it starts elsewhere.
RESNET_HP = dict(width=32, depth=1, batch_norm=True, residual=True, dropout=0.0)


RECIPES: dict[str, dict[str, dict]] = {
    "baseline": {
        # The classic Keras-tutorial CNN with Adam: the reference point, not tuned.
        "all": dict(
            optimizer="adam",
            learning_rate=1e-3,
            schedule="cosine",
            network=dict(widths=[32, 64], convs=[3, 4], dense=512, dropout=0.25, dense_dropout=0.5),
        ),
        "smoke": dict(epochs=3, batch_size=64, patience=3),
        # lighter dropout: the classic 0.25 / 0.5 underfits a 20-epoch run (RESULTS.md,
        # "CIFAR-100, the baseline at 20 epochs"); `full` keeps it for its 40
        "cpu": dict(
            epochs=20,
            batch_size=128,
            patience=5,
            flip=True,
            translate=0.1,
            network=dict(dropout=0.1, dense_dropout=0.3),
        ),
        "full": dict(epochs=40, batch_size=256, patience=8, flip=True, translate=0.1),
    },
    "overfit": {
        # No dropout, no augmentation, no early stopping, and a quarter of the training
        # images, validated on the same 10,000 hold-out images as the others: the gap
        # between train and validation is the lesson, so the last epoch is kept.
        # A constant learning rate: a decaying one would damp the memorisation.
        "all": dict(
            optimizer="adam",
            learning_rate=1e-3,
            schedule="constant",
            restore_best=False,
            network=dict(widths=[32, 64], convs=[3, 4], dense=1024),
        ),
        # smoke: a third of its 800 training images (the cpu profile: a quarter)
        "smoke": dict(epochs=12, batch_size=64, train_subset=256),
        "cpu": dict(epochs=15, batch_size=128, train_subset=10_000),
        "full": dict(epochs=40, batch_size=256, train_subset=10_000),
    },
    "tuned": {
        # The search's starting point and defaults (cifarlab.training.tune may change all
        # of it). smoke: a BN residual net; cpu and full: the airbench recipe (AIRBENCH
        # above), which beat the residual net on both datasets (RESULTS.md).
        "all": dict(
            optimizer="sgd",
            learning_rate=0.2,
            momentum=0.9,
            schedule="cosine",
            warmup_fraction=0.2,
            weight_decay=5e-4,
            label_smoothing=0.2,
            flip=True,
            translate=0.125,
            tta_flip=True,
            patience=None,
        ),
        "smoke": dict(
            epochs=3,
            batch_size=64,
            learning_rate=0.05,
            label_smoothing=0.1,
            translate=0.1,
            network=dict(RESNET_HP),
        ),
        # 64/256/256, batch 512, 13 epochs, all at 32x32: shrunk early epochs (low_res) pay
        # at 4-9 epochs, not at the 60-minute series' 14-19 (RESULTS.md, "shrunk early epochs")
        "cpu": _airbench("cpu"),
        "full": _airbench("full"),  # airbench94 itself: batch 1024, 10 epochs
    },
    "vgg16": {
        # keras.applications.VGG16 + a dense head. epochs = head epochs (base frozen,
        # features cached) + fine-tuning epochs (the top block(s) trainable).
        "all": dict(
            optimizer="adam",  # the head's phase
            learning_rate=1e-3,
            schedule="cosine",
            network=dict(
                dense=256,
                dropout=0.3,
                head_epochs=3,
                finetune_blocks=1,
                finetune_optimizer="adam",
                finetune_lr=1e-4,
                finetune_warmup_fraction=0.0,
                image_size=32,
                mirror_features=True,  # cache the mirror images' features too: flips for free
            ),
        ),
        "smoke": dict(epochs=3, batch_size=64, network=dict(head_epochs=2)),
        # fine-tuning still pays after 5 epochs (RESULTS.md, cpu run 1)
        "cpu": dict(epochs=14, batch_size=128, network=dict(head_epochs=3, image_size=48)),
        "full": dict(
            epochs=20, batch_size=128, network=dict(head_epochs=5, finetune_lr=5e-5, image_size=64)
        ),
    },
}


def airbench_config(profile: str | None, **overrides) -> TrainConfig:
    """The airbench recipe on ``profile`` (a ``tuned`` config), with ``overrides``."""
    profile = resolve_profile(profile)
    values = {**PROFILE_DATA[profile], **_airbench(profile)}
    return TrainConfig(model="tuned", **values).override(**overrides).validate()


#: The search budget per profile: trials, epochs per trial, training images per trial
#: (a stratified subset of the training split; None: all), batch size of a trial, the
#: airbench widths a trial may take (None: all of cifarlab.training.tune.WIDTHS) and the
#: families (None: both). A trial must take enough steps to rank recipes as full training
#: would; cpu: the airbench family up to 64/256/256 only (RESULTS.md, "the search budget").
#: Under a time budget the plan sizes the trials (cifarlab.training.plan).
SEARCH_BUDGET = {
    "smoke": dict(
        max_trials=2, epochs=1, train_subset=600, batch_size=64, widths=None, families=None
    ),
    "cpu": dict(
        max_trials=4,
        epochs=3,
        train_subset=10_000,
        batch_size=128,
        widths=[[32, 128, 128], [64, 128, 128], [64, 256, 256]],
        families=["airbench"],
    ),
    "full": dict(
        max_trials=20, epochs=10, train_subset=None, batch_size=1024, widths=None, families=None
    ),
}


# --------------------------------------------------------------------------- the budget
#: The default time budget of a whole series per profile, in minutes (None: the recipes as
#: they are). cpu: the hour it promises, on any CPU (cifarlab.training.plan).
DEFAULT_BUDGET: dict[str, float | None] = {"smoke": None, "cpu": 60, "full": None}

#: How a budget is divided: each part's share of the training time left once the fixed
#: costs are counted. tuned, the series' best model, gets the most (RESULTS.md, budget).
BUDGET_SHARES = {"baseline": 0.10, "overfit": 0.07, "search": 0.08, "tuned": 0.55, "vgg16": 0.20}

#: A part whose recipe cannot show its lesson within its share of a budget (its fixed
#: cost and least epochs) is planned at the first of these smaller sizes that can (an
#: ``network`` update): tuned narrower, VGG16 on smaller inputs (its frozen feature pass over
#: every image is most of its cost).
BUDGET_ALTERNATIVES: dict[str, list[dict]] = {
    "tuned": [dict(widths=[64, 128, 128])],
    "vgg16": [dict(image_size=32)],
}

#: The least each part needs to show what it is for (epochs; trials for the search): a
#: budget that cannot give every part its least is refused before any training. overfit:
#: 9 epochs put its training accuracy 36 points over its validation on CIFAR-10 (6: 14,
#: 8: 31), more on CIFAR-100 (RESULTS.md, "the overfit lesson's least epochs").
BUDGET_LEAST = {"baseline": 2, "overfit": 9, "search": 2, "tuned": 3, "vgg16": 2}

#: No part takes more than this many times its recipe's epochs, however large the budget.
BUDGET_MAX_FACTOR = 3

#: Fixed costs the plan does not time itself, in seconds: saving a model with its
#: evidence, every figure of a series, a notebook kernel's start (BENCHMARKS.md).
BUDGET_SAVE_S = 5.0
#: The figures: TestModels' metrics and confusion matrices and VisualizeModel took about
#: 70 s in the 60-minute CIFAR-10 run beside the test predictions the plan times itself.
BUDGET_FIGURES_S = 75.0
BUDGET_KERNEL_S = 15.0
#: a search trial against its timed steps (KerasTuner's trial set-up and checkpoints, the
#: trial's whitening): 1.23x and 1.27x in the two 60-minute runs of 2026-12-07 (RESULTS.md)
BUDGET_TRIAL_FACTOR = 1.25


def model_config(model: str, profile: str | None, **overrides) -> TrainConfig:
    """The recipe of ``model`` on ``profile``, with ``overrides`` (None = keep)."""
    recipe = RECIPES[check_model(model)]
    profile = resolve_profile(profile)
    values = {**PROFILE_DATA[profile], **recipe["all"], **recipe[profile]}
    values["network"] = {**recipe["all"].get("network", {}), **recipe[profile].get("network", {})}
    return TrainConfig(model=model, **values).override(**overrides).validate()
