"""How a model is compiled: optimizer and learning-rate schedule, loss, metrics, precision.

Used by training (cifarlab.training.train, cifarlab.training.transfer), the search (cifarlab.training.tune) and
the benchmark, so that all of them train with the same recipe. Every value comes from
the :class:`~cifarlab.config.TrainConfig`.
"""

from __future__ import annotations

import keras

from cifarlab.config import TrainConfig
from cifarlab.errors import CifarlabError
from cifarlab.hardware import accelerator, auto_precision, cpu_has_bf16

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@keras.saving.register_keras_serializable("cifarlab")
class WarmupLinear(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ``start`` to ``peak`` over ``warmup_steps``, then a linear
    decay to ``end`` at ``total_steps`` (airbench: 0.2x, 1x at 23%, 0.07x)."""

    def __init__(
        self, peak: float, start: float, warmup_steps: int, total_steps: int, end: float = 0.0
    ):
        self.peak, self.start, self.end = peak, start, end
        self.warmup_steps, self.total_steps = warmup_steps, total_steps

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        up = self.start + (self.peak - self.start) * step / max(1, self.warmup_steps)
        left = (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps)
        down = self.end + (self.peak - self.end) * left
        return ops.maximum(ops.where(step < self.warmup_steps, up, down), self.end)

    def get_config(self):
        return dict(
            peak=self.peak,
            start=self.start,
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
            end=self.end,
        )


def learning_rate(cfg: TrainConfig, steps: int):
    """The per-step schedule: linear warm-up from ``warmup_start`` x peak to the peak over
    ``warmup_fraction`` of the steps, then a cosine or linear decay to 0 (or a constant
    rate)."""
    if cfg.schedule == "constant":
        return cfg.learning_rate
    if cfg.schedule not in SCHEDULES:
        raise CifarlabError(f"unknown schedule '{cfg.schedule}'; use {', '.join(SCHEDULES)}")
    warmup = int(cfg.warmup_fraction * steps)
    if cfg.schedule == "linear":
        start = cfg.learning_rate * cfg.warmup_start
        end = cfg.learning_rate * cfg.decay_to
        return WarmupLinear(cfg.learning_rate, start, warmup, steps, end)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.learning_rate * cfg.warmup_start if warmup else cfg.learning_rate,
        decay_steps=max(1, steps - warmup),
        alpha=0.0,
        warmup_target=cfg.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def describe_schedule(cfg: TrainConfig) -> str:
    """The schedule of :func:`learning_rate` in words, e.g. "a 23% linear warm-up from
    0.2x the peak, then linear decay to 0.07x it"."""
    if cfg.schedule == "constant":
        return "a constant learning rate"
    warm = int(cfg.warmup_fraction * 100) > 0
    end = "cosine decay to 0"
    if cfg.schedule == "linear":
        peak = "it" if warm else "the peak"
        end = f"linear decay to {cfg.decay_to:g}x {peak}" if cfg.decay_to else "linear decay to 0"
    if not warm:
        return end
    return (
        f"a {cfg.warmup_fraction:.0%} linear warm-up from {cfg.warmup_start:g}x the peak, "
        f"then {end}"
    )


class _CopiedAverage:
    """Keras writes the weights' moving average (``use_ema``: the lookahead) into the
    weights by assigning the average's own array. Under JAX the two variables then hold
    one buffer, and the next ``fit`` donates it twice and fails ("Attempt to donate the
    same buffer twice", then a variable without its value; Keras 3.15.1, any optimizer
    with ``use_ema``, measured: a second ``fit``, as a notebook or the bench's timed run
    after its warm-up makes). Written as a copy, each variable keeps its own buffer."""

    def _overwrite_model_variables_with_average_value(self, trainable_variables):
        for var, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                var.assign(keras.ops.copy(average))


@keras.saving.register_keras_serializable("cifarlab")
class AveragedAdam(_CopiedAverage, keras.optimizers.Adam):
    """Adam with the lookahead written as a copy (:class:`_CopiedAverage`)."""


@keras.saving.register_keras_serializable("cifarlab")
class AveragedAdamW(_CopiedAverage, keras.optimizers.AdamW):
    """AdamW with the lookahead written as a copy (:class:`_CopiedAverage`)."""


@keras.saving.register_keras_serializable("cifarlab")
class AirbenchSGD(_CopiedAverage, keras.optimizers.SGD):
    """Keras' SGD with airbench's optimizer parts, inside the optimizer so that they
    hold under ``fit`` on every backend (Keras' generic update path):

    - ``bias_lr_scale``: the step for biases (batch norm's ``beta``, layers' ``bias``) is
      this many times larger (airbench: 64);
    - ``stop_after``: {variable path: steps}: such a variable trains at the base rate for
      its first ``steps`` steps, then stays as it is, its momentum cleared (airbench's
      whitening bias, trained for 3 epochs);
    - ``muon_lr``: the convolution filters (trainable 4-D kernels) take Muon steps
      instead (airbench94_muon): the Nesterov momentum (``muon_momentum``) of their
      gradient, orthogonalised by Keras' own Newton-Schulz iteration
      (``keras.optimizers.Muon``) with each kernel read as a (k*k*in, out) matrix, at
      ``muon_lr`` times the schedule's fraction of its peak ``peak_lr``; each filter bank
      is first scaled to norm sqrt(out), so a step's size relative to it stays fixed;
    - ``ramp_steps``: with ``use_ema``, airbench's lookahead: every
      ``ema_overwrite_frequency`` (k) steps the average takes one step towards the
      weights, ``avg = d * avg + (1 - d) * w`` with ``d = ema_momentum ** k * (t /
      ramp_steps) ** 3`` (0 at the start, 0.95 ** 5 = 0.77 at the end), and Keras writes
      it into the weights (and at the end of ``fit``); between writes it holds the last
      written weights (RESULTS.md, "airbench's lookahead and full batches"). Unlike airbench's, it averages
      the trainable weights only (not batch norm's running statistics).
    """

    def __init__(
        self,
        *args,
        bias_lr_scale: float = 1.0,
        ramp_steps: int = 0,
        stop_after: dict | None = None,
        muon_lr: float = 0.0,
        muon_momentum: float = 0.6,
        peak_lr: float = 1.0,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.bias_lr_scale, self.ramp_steps = bias_lr_scale, ramp_steps
        self.stop_after = dict(stop_after or {})
        self.muon_lr, self.muon_momentum, self.peak_lr = muon_lr, muon_momentum, peak_lr
        # only its Newton-Schulz iteration is used (Keras' Muon steps 2-D variables only)
        self._muon = keras.optimizers.Muon() if muon_lr else None

    def build(self, variables):
        super().build(variables)
        # by variable index: the larger step, and the step a variable stops at (or None)
        self._stops = [self.stop_after.get(v.path) for v in variables]
        self._scaled = [
            v.name in ("beta", "bias") and stop is None for v, stop in zip(variables, self._stops)
        ]
        self._filters = [
            bool(self.muon_lr) and len(v.shape) == 4 and stop is None
            for v, stop in zip(variables, self._stops)
        ]
        if any(self._filters) and not self.momentums:
            raise CifarlabError("Muon steps need momentum (SGD with momentum > 0)")

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        if self._filters[index]:
            return self._muon_step(gradient, variable, learning_rate, self.momentums[index])
        if self.bias_lr_scale != 1 and self._scaled[index]:
            learning_rate = keras.ops.multiply(learning_rate, self.bias_lr_scale)
        if self._stops[index] is not None:
            ops = keras.ops
            on = ops.cast(ops.less(self.iterations, self._stops[index]), variable.dtype)
            learning_rate = ops.multiply(ops.cast(learning_rate, variable.dtype), on)
            if self.momentums:  # no step from the momentum once stopped
                self.assign(self.momentums[index], ops.multiply(self.momentums[index], on))
        return super().update_step(gradient, variable, learning_rate)

    def _muon_step(self, gradient, variable, learning_rate, m):
        ops = keras.ops
        g = ops.cast(gradient, variable.dtype)
        self.assign(m, ops.add(ops.multiply(m, self.muon_momentum), g))
        g = ops.add(g, ops.multiply(m, self.muon_momentum))  # Nesterov
        shape = variable.shape
        flat = ops.reshape(g, (-1, shape[-1]))
        step = ops.reshape(self._muon.zeropower_via_newtonschulz5(flat, self._muon.ns_steps), shape)
        norm = ops.sqrt(ops.sum(ops.square(variable)))
        fixed = ops.multiply(variable, ops.divide(float(shape[-1]) ** 0.5, norm + 1e-12))
        rate = ops.cast(learning_rate, variable.dtype) * (self.muon_lr / self.peak_lr)
        self.assign(
            variable, ops.subtract(fixed, ops.multiply(rate, ops.cast(step, variable.dtype)))
        )

    def _update_model_variables_moving_average(self, trainable_variables):
        if not self.ramp_steps:
            return super()._update_model_variables_moving_average(trainable_variables)
        ops = keras.ops
        k = self.ema_overwrite_frequency or 1
        step = ops.cast(self.iterations + 1, "float32")  # this step, counted from 1
        ramp = ops.power(ops.minimum(step / self.ramp_steps, 1.0), 3.0)
        write = ops.cast(ops.equal(ops.mod(self.iterations + 1, k), 0), "float32")
        first = ops.cast(ops.equal(self.iterations, 0), "float32")
        # the first step starts the average at the weights; a write step moves it by
        # the lookahead's decay; other steps keep it (the weights last written)
        decay = (1.0 - first) * (write * self.ema_momentum**k * ramp + (1.0 - write))
        for var, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                m = ops.cast(decay, var.dtype)
                average.assign(ops.add(ops.multiply(m, average), ops.multiply(1 - m, var)))

    def get_config(self):
        return {
            **super().get_config(),
            "bias_lr_scale": self.bias_lr_scale,
            "ramp_steps": self.ramp_steps,
            "stop_after": self.stop_after,
            "muon_lr": self.muon_lr,
            "muon_momentum": self.muon_momentum,
            "peak_lr": self.peak_lr,
        }


def make_optimizer(cfg: TrainConfig, steps: int) -> keras.optimizers.Optimizer:
    """The config's optimizer over ``steps`` optimisation steps in all. ``lookahead``:
    Keras' own moving average of the weights (``use_ema``), written into the weights
    every ``lookahead`` steps and at the end of training; under SGD its momentum ramps
    up over the training (:class:`AirbenchSGD`), under Adam(W) it is constant. An airbench
    network's whitening bias stops after ``whiten_bias_epochs`` under SGD (under Adam(W)
    it trains throughout)."""
    lr = learning_rate(cfg, steps)
    stops = _stop_after(cfg, steps)
    wd = cfg.weight_decay or None
    ema = {}
    if cfg.lookahead:
        ema = dict(
            use_ema=True,
            ema_momentum=cfg.lookahead_momentum,
            ema_overwrite_frequency=cfg.lookahead,
        )
    if cfg.optimizer == "sgd":
        kw = dict(momentum=cfg.momentum, nesterov=True, weight_decay=wd, **ema)
        if cfg.bias_lr_scale != 1 or cfg.lookahead or stops or cfg.muon_lr:
            ramp = steps if cfg.lookahead else 0
            muon = dict(muon_lr=cfg.muon_lr, muon_momentum=cfg.muon_momentum)
            opt = AirbenchSGD(
                lr, bias_lr_scale=cfg.bias_lr_scale, ramp_steps=ramp, stop_after=stops,
                peak_lr=cfg.learning_rate, **muon, **kw,
            )  # fmt: skip
        else:
            opt = keras.optimizers.SGD(lr, **kw)
    elif cfg.optimizer == "adamw":
        opt = (AveragedAdamW if ema else keras.optimizers.AdamW)(
            lr, weight_decay=cfg.weight_decay or cfg.adamw_decay_when_unset, **ema
        )
    elif cfg.optimizer == "adam":
        opt = (AveragedAdam if ema else keras.optimizers.Adam)(lr, weight_decay=wd, **ema)
    else:
        raise CifarlabError(f"unknown optimizer '{cfg.optimizer}'; use {', '.join(OPTIMIZERS)}")
    if wd or cfg.optimizer == "adamw":
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return opt


def _stop_after(cfg: TrainConfig, steps: int) -> dict:
    """{variable path: steps it trains for}: an airbench network's whitening bias, for
    ``whiten_bias_epochs`` of the ``cfg.epochs`` epochs that ``steps`` make."""
    from cifarlab.models.airbench import DEFAULTS, WHITEN  # the family's own names

    net = {**DEFAULTS, **cfg.network}
    if cfg.network.get("arch") != "airbench" or not net["whiten"] or not net["whiten_bias_epochs"]:
        return {}
    per_epoch = steps / max(1, cfg.epochs)
    return {f"{WHITEN}/bias": round(net["whiten_bias_epochs"] * per_epoch)}


def compile_model(model: keras.Model, cfg: TrainConfig, steps: int) -> None:
    """Compile with the config's optimizer, label-smoothed cross-entropy, accuracy, top-5."""
    model.compile(
        optimizer=make_optimizer(cfg, steps),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=["accuracy", keras.metrics.TopKCategoricalAccuracy(5, name="top5")],
    )


def set_precision(precision: str) -> str:
    """Set Keras' global dtype policy; returns the one set. ``auto``: from what the device
    computes fast in (cifarlab.hardware.auto_precision). Under ``mixed_float16`` Keras'
    ``compile`` wraps the optimizer in a LossScaleOptimizer itself."""
    if precision == "auto":
        backend = keras.backend.backend()
        precision = auto_precision(accelerator(backend), backend, cpu_has_bf16())
    if precision not in PRECISIONS:
        raise CifarlabError(f"unknown precision '{precision}'; use auto, {', '.join(PRECISIONS)}")
    keras.mixed_precision.set_global_policy(precision)
    return precision
