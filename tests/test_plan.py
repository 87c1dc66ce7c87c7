"""The series planned to a time budget: allocation from given rates (pure), the re-plan
from the time actually left, the refusal, and plan against actual in the evidence."""

from __future__ import annotations

import re
import time

import pytest

from cifarlab import config
from cifarlab.training import plan
from cifarlab.training.plan import BudgetTooSmall, Rate, allocate

SHARES = config.BUDGET_SHARES


def _rates(scale: float = 1.0) -> dict[str, Rate]:
    """Seconds per epoch (per trial) of a slow machine; ``scale`` < 1: a faster one."""
    return {
        "baseline": Rate(60 * scale, 30, 2, 20),
        "overfit": Rate(20 * scale, 20, 6, 15),
        "search": Rate(90 * scale, 0, 2, 4),
        "tuned": Rate(180 * scale, 60, 3, 13),
        "vgg16": Rate(40 * scale, 200, 2, 14),
    }


def test_the_allocation_fits_the_budget_and_follows_the_shares():
    rates = _rates()
    counts = allocate(3600, rates, SHARES, overhead_s=120)
    spent = 120 + sum(plan.predicted_s(counts, rates).values())
    assert spent <= 3600
    assert all(counts[p] >= rates[p].least for p in rates)
    # tuned, the largest share, gets the most training seconds
    seconds = {p: counts[p] * rates[p].unit_s for p in rates}
    assert max(seconds, key=seconds.get) == "tuned"


def test_a_faster_machine_buys_more_epochs_in_the_same_budget():
    slow = allocate(3600, _rates(1.0), SHARES, 120)
    fast = allocate(3600, _rates(0.5), SHARES, 120)
    assert all(fast[p] >= slow[p] for p in slow) and fast["tuned"] > slow["tuned"]


def test_a_part_held_at_its_least_leaves_the_rest_to_the_others():
    rates = _rates()
    rates["overfit"] = Rate(200, 0, 6, 15)  # its share cannot buy 6 epochs
    counts = allocate(3600, rates, SHARES, 120)
    assert counts["overfit"] == 6
    assert 120 + sum(plan.predicted_s(counts, rates).values()) <= 3600


def test_no_part_takes_more_than_its_cap_however_large_the_budget():
    counts = allocate(10**7, _rates(), SHARES, 0)
    assert counts == {p: config.BUDGET_MAX_FACTOR * r.recipe for p, r in _rates().items()}


def test_a_budget_too_small_is_refused_naming_the_least_budget_that_works():
    rates = _rates()
    least_s = 120 + sum(r.fixed_s + r.least * r.unit_s for r in rates.values())
    with pytest.raises(BudgetTooSmall) as err:
        allocate(least_s - 1, rates, SHARES, 120)
    least_min = err.value.least_min
    assert f"--budget {least_min}" in str(err.value)
    assert least_min * 60 >= least_s  # the named budget is enough: it is accepted
    allocate(least_min * 60, rates, SHARES, 120)


def _plan_file(tmp_path, budget_s: float, started: float) -> None:
    rates = _rates()
    counts = allocate(budget_s, rates, SHARES, 120)
    plan.write_plan(
        tmp_path,
        {
            "dataset": "d", "profile": "cpu", "seed": 0, "budget_min": budget_s / 60,
            "started": started, "deadline": started + budget_s, "overhead_s": 120,
            "spent_before_training_s": 0, "rates": {p: vars(r) for p, r in rates.items()},
            "planned": counts, "predicted_s": plan.predicted_s(counts, rates),
            "predicted_total_s": 0, "parts": {},
        },
    )  # fmt: skip


def test_after_an_overrun_the_rest_is_re_planned_from_the_time_left(tmp_path):
    t0 = time.time()
    _plan_file(tmp_path, 3600, t0)
    on_time = plan.planned_count(tmp_path, "tuned", now=t0)
    # baseline took twice its plan: tuned, still to come, gets fewer epochs
    b = plan.read_plan(tmp_path)["predicted_s"]["baseline"]
    plan.record(tmp_path, "baseline", 4, t0, t0 + 2 * b)
    late = plan.planned_count(tmp_path, "tuned", now=t0 + 2 * b)
    assert late < on_time
    # and what is left still fits in the time that is left
    left = {p: Rate(**r) for p, r in plan.read_plan(tmp_path)["rates"].items() if p != "baseline"}
    counts = {p: plan.planned_count(tmp_path, p, now=t0 + 2 * b) for p in left}
    assert 120 + sum(plan.predicted_s(counts, left).values()) <= 3600 - 2 * b


def test_a_kernel_started_is_spent_time_not_overhead_still_to_come(tmp_path):
    t0 = time.time()
    _plan_file(tmp_path, 3600, t0)
    p = plan.read_plan(tmp_path)
    p["kernel_s"] = 15.0
    p["rates"]["tuned"]["unit_s"] = 1.0  # one second an epoch: every second left shows
    p["rates"]["tuned"]["recipe"] = 10_000  # (no cap)
    plan.write_plan(tmp_path, p)
    before = plan.planned_count(tmp_path, "tuned", now=t0 + 600)
    plan.kernel_started(tmp_path)
    plan.kernel_started(tmp_path)
    assert plan.read_plan(tmp_path)["kernels_started"] == 2
    assert plan.overhead_left(plan.read_plan(tmp_path)) == 120 - 2 * 15
    after = plan.planned_count(tmp_path, "tuned", now=t0 + 600)
    assert after - before == pytest.approx(30 * SHARES["tuned"] / sum(SHARES.values()), abs=1)


def test_past_the_deadline_each_part_left_shows_its_lesson_at_least(tmp_path):
    t0 = time.time()
    _plan_file(tmp_path, 3600, t0 - 3600)
    assert plan.planned_count(tmp_path, "tuned") == _rates()["tuned"].least


def test_a_resumed_part_trains_the_count_it_started_with(tmp_path):
    t0 = time.time()
    _plan_file(tmp_path, 3600, t0)
    first = plan.start(tmp_path, "tuned")
    p = plan.read_plan(tmp_path)
    p["deadline"] -= 1800  # time passed while it was killed: a fresh re-plan would differ
    plan.write_plan(tmp_path, p)
    assert plan.start(tmp_path, "tuned") == first


def test_without_a_budget_plan_models_train_their_recipes(tmp_path):
    assert plan.planned_count(tmp_path, "tuned") is None
    assert plan.start(tmp_path, "tuned") is None


def test_vgg16_keeps_a_head_and_a_fine_tuning_phase_at_any_count():
    cfg = config.model_config("vgg16", "cpu")
    for n in (2, 3, 7, 30):
        c = plan.with_epochs(cfg, n)
        assert c.epochs == n and 1 <= c.network["head_epochs"] < n


def test_shrunk_early_epochs_keep_their_share_of_any_planned_count():
    cfg = config.airbench_config("cpu", epochs=10, low_res=24, low_res_epochs=4)
    for n, shrunk in ((1, 0), (2, 1), (5, 2), (10, 4), (20, 8)):
        c = plan.with_epochs(cfg, n).validate()  # never all shrunk, one at full size alone
        assert (c.epochs, c.low_res_epochs, bool(c.low_res)) == (n, shrunk, shrunk > 0)


def test_a_shrunk_step_is_timed_and_its_epochs_share_in_the_rate(tmp_path, monkeypatch):
    from cifarlab.training import timing

    monkeypatch.setenv("CIFARLAB_CACHE_DIR", str(tmp_path))
    cfg = config.airbench_config(
        "smoke", epochs=5, batch_size=32, low_res=16, low_res_epochs=2
    ).with_stats([120.0] * 3, [64.0] * 3, 10)
    m = timing.cached_measure(cfg)
    assert m["low_res_step_s"] > 0 and m["train_step_s"] > 0
    # the epoch: 2 of 5 epochs' steps shrunk, 3 at full size
    fake = {**m, "train_step_s": 1.0, "low_res_step_s": 0.5}
    assert timing.train_step_s(cfg, fake) == pytest.approx(0.8)
    assert timing.train_step_s(cfg.full_size(), fake) == 1.0
    monkeypatch.setattr(timing, "cached_measure", lambda c: fake)
    sizes = {"train": 320, "val": 64, "test": 64}
    full = timing.model_rate(cfg.full_size(), sizes, progress=False)
    shrunk = timing.model_rate(cfg, sizes, progress=False)
    assert full.unit_s - shrunk.unit_s == pytest.approx(10 * 0.2)  # 10 steps, 0.2 s each


@pytest.mark.slow
def test_a_model_trains_the_epochs_its_plan_gives_and_records_plan_and_actual(tmp_path, real_data):
    from cifarlab.training.train import train_model

    t0 = time.time()
    _plan_file(tmp_path, 3600, t0)
    p = plan.read_plan(tmp_path)
    p["rates"]["baseline"]["unit_s"] = 3600 * SHARES["baseline"] / 4  # 4 epochs' worth
    plan.write_plan(tmp_path, p)
    meta = train_model("baseline", str(real_data), "smoke", tmp_path, progress=False)
    entry = plan.read_plan(tmp_path)["parts"]["baseline"]
    assert meta["config"]["epochs"] == entry["count"] == 3  # 4 less the fixed costs' share
    assert meta["plan"] == entry and entry["actual_min"] > 0


@pytest.mark.slow
def test_a_rerun_keeps_what_was_trained_with_the_same_settings_and_retrains_on_a_change(
    tmp_path, real_data
):
    """A series re-run after its kernel or runtime died goes on where it stopped."""
    from cifarlab.training.train import train_model

    def run(epochs):
        return train_model(
            "baseline", str(real_data), "smoke", tmp_path, overrides={"epochs": epochs},
            progress=False, skip_trained=True,
        )  # fmt: skip

    model = tmp_path / "saved_models" / "baseline.keras"
    first = run(1)
    stamp = model.stat().st_mtime_ns
    _plan_file(tmp_path, 3600, time.time())  # a new series' plan: the kept model's part
    assert run(1)["created"] == first["created"] and model.stat().st_mtime_ns == stamp
    kept = plan.read_plan(tmp_path)["parts"]["baseline"]
    assert kept["kept"] and "ended" in kept  # is done: its time goes to the others
    changed = run(2)
    assert changed["config"]["epochs"] == 2 and model.stat().st_mtime_ns != stamp


@pytest.mark.slow
def test_a_budget_too_small_is_refused_in_one_line_before_any_training(tmp_path, real_data):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "cifarlab", "plan", "--dataset", str(real_data), "--profile",
           "smoke", "--out", str(tmp_path), "--budget", "0.2", "--quiet"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2
    last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    least = int(re.search(r"the least that works here is (\d+) minutes", last).group(1))
    assert last.startswith("cifarlab: error: a 0.2-minute budget") and least >= 1
    assert not (tmp_path / "saved_models").exists()  # nothing trained
    # the least budget it names is accepted: the plan is printed with its finish time
    cmd[cmd.index("0.2")] = str(least)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "predicted to finish at" in r.stdout, r.stderr[-2000:]
    # timing one model after another: no TensorFlow "retracing" warning in the terminal
    assert "retracing" not in r.stdout + r.stderr


def test_the_parts_trained_already_still_owe_their_test_evaluation(tmp_path):
    """Every model is evaluated after the last one trains: a re-plan keeps the time for
    the evaluation of the parts already trained (the 60-minute CIFAR-10 run ended 3.1
    minutes after its plan where it did not: RESULTS.md)."""
    t0 = time.time()
    counts = {}
    for later in (0.0, 600.0):
        _plan_file(tmp_path, 3600, t0)
        p = plan.read_plan(tmp_path)
        p["rates"]["baseline"]["later_s"] = later
        p["rates"]["tuned"]["unit_s"] = 1.0  # a second an epoch: every second shows
        p["rates"]["tuned"]["recipe"] = 10_000
        plan.write_plan(tmp_path, p)
        plan.record(tmp_path, "baseline", 4, t0, t0 + 300)
        counts[later] = plan.planned_count(tmp_path, "tuned", now=t0 + 300)
    share = SHARES["tuned"] / sum(s for k, s in SHARES.items() if k != "baseline")
    assert counts[0.0] - counts[600.0] == pytest.approx(600 * share, abs=1)


def test_the_evaluation_counts_once_in_the_first_plan():
    rates = _rates()
    with_eval = {p: Rate(r.unit_s, r.fixed_s, r.least, r.recipe, 100.0) for p, r in rates.items()}
    a, b = allocate(3600, rates, SHARES, 120), allocate(3600, with_eval, SHARES, 120)
    spent = lambda c, rs: sum(rs[p].fixed_s + rs[p].later_s + c[p] * rs[p].unit_s for p in c)  # noqa: E731
    assert spent(b, with_eval) <= 3600 - 120 and sum(b.values()) < sum(a.values())
