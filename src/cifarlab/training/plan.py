"""The series planned to this machine and a time budget.

Before the first model trains, each part's cost is measured (cifarlab.training.timing).
:func:`allocate` then turns a budget in minutes into
epochs (trials for the search) by the shares of :data:`cifarlab.config.BUDGET_SHARES`;
every learning-rate schedule is sized to the steps a model really takes, as Li et al.
2020 ("Budgeted Training") advise. The plan lives in ``reports/plan.json``: each model's
training asks it for its epochs at its start, from the time actually left
(:func:`planned_count`), so one slow part does not overrun the whole.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from cifarlab import config
from cifarlab.config import TrainConfig, first_part
from cifarlab.errors import CifarlabError
from cifarlab.layout import atomic_path, layout

#: the parts of a series, each planned in its own unit
PARTS = ("baseline", "overfit", "search", "tuned", "vgg16")
UNITS = {"search": "trials"}


@dataclass
class Rate:
    """What one part costs here: ``unit_s`` per epoch (per trial for the search),
    ``fixed_s`` once while it trains (build and compile, VGG16's feature pass, saving);
    ``least`` units show what the part is for; ``recipe`` is the profile's count;
    ``later_s`` its test evaluation, which runs after every part has trained."""

    unit_s: float
    fixed_s: float
    least: int
    recipe: int
    later_s: float = 0.0


class BudgetTooSmall(CifarlabError):
    def __init__(self, budget_min: float, least_min: int, need_min: float | None = None):
        self.least_min = least_min
        self.need_min = least_min if need_min is None else need_min  # unrounded
        super().__init__(
            f"a {budget_min:g}-minute budget cannot hold the series' lessons on this machine: "
            f"the least that works here is {least_min} minutes (--budget {least_min})"
        )


# --------------------------------------------------------------------------- allocation


def allocate(
    budget_s: float, rates: dict[str, Rate], shares: dict[str, float], overhead_s: float = 0.0
) -> dict[str, int]:
    """Units (epochs, trials) per part within ``budget_s`` seconds: the time left after
    ``overhead_s`` and every part's fixed cost and evaluation divided by ``shares``; a
    part whose share buys less than its least gets its least, the others share the rest;
    none takes more than ``BUDGET_MAX_FACTOR`` x its recipe. Raises :class:`BudgetTooSmall`."""
    fixed = overhead_s + sum(r.fixed_s + r.later_s for r in rates.values())
    need = sum(r.least * r.unit_s for r in rates.values())
    pool = budget_s - fixed
    if pool < need:
        raise BudgetTooSmall(budget_s / 60, math.ceil((fixed + need) / 60), (fixed + need) / 60)
    counts: dict[str, int] = {}
    free = set(rates)
    while free:  # water-filling: fix the parts held at their least, share the rest again
        total = sum(shares[p] for p in free)
        held = {p for p in free if shares[p] / total * pool < rates[p].least * rates[p].unit_s}
        if not held:
            break
        for p in held:
            counts[p] = rates[p].least
            pool -= rates[p].least * rates[p].unit_s
        free -= held
    total = sum(shares[p] for p in free)
    for p in free:
        n = int(shares[p] / total * pool // rates[p].unit_s)
        counts[p] = max(rates[p].least, min(n, config.BUDGET_MAX_FACTOR * rates[p].recipe))
    return counts


def predicted_s(counts: dict[str, int], rates: dict[str, Rate]) -> dict[str, float]:
    return {p: rates[p].fixed_s + counts[p] * rates[p].unit_s for p in counts}


# --------------------------------------------------------------------------- the plan file


def plan_path(out) -> Path:
    return layout(out).plan


def read_plan(out) -> dict | None:
    try:
        return json.loads(plan_path(out).read_text())
    except (OSError, ValueError):
        return None


def write_plan(out, plan: dict) -> None:
    p = plan_path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(p) as tmp:
        tmp.write_text(json.dumps(plan, indent=1))


def planned_count(out, part: str, now: float | None = None) -> int | None:
    """The epochs (trials) ``part`` takes now: re-planned from the time actually left for
    the parts not yet done. None where no budget plan exists (the recipe's count)."""
    plan = read_plan(out)
    if not plan or plan.get("deadline") is None or part not in plan["rates"]:
        return None
    now = time.time() if now is None else now
    done = {p for p, v in plan["parts"].items() if "ended" in v}
    left = {p: Rate(**r) for p, r in plan["rates"].items() if p not in done}
    if part not in left:  # trained already: the count it trained with
        return plan["parts"][part]["count"]
    # the parts trained already are still to be evaluated, after the last one trains
    try:
        over = overhead_left(plan) + _evaluation_s(plan, done)
        counts = allocate(plan["deadline"] - now, left, config.BUDGET_SHARES, over)
    except BudgetTooSmall:  # over time already: each part left shows its lesson at least
        counts = {p: r.least for p, r in left.items()}
    return counts[part]


def overhead_left(plan: dict) -> float:
    """The plan's overhead still to come: the kernels started already (counted by
    :func:`kernel_started`) are in the time spent."""
    started = plan.get("kernels_started", 0) * plan.get("kernel_s", 0.0)
    return max(0.0, plan["overhead_s"] - started)


def kernel_started(out) -> None:
    """Count a notebook kernel's start into the plan (its cost is then in the time
    spent, not still to come)."""
    plan = read_plan(out)
    if plan and "ended" not in plan:
        plan["kernels_started"] = plan.get("kernels_started", 0) + 1
        write_plan(out, plan)


def start(out, part: str) -> int | None:
    """The count ``part`` trains with, kept in the plan as it starts: a killed and resumed
    part trains the count it started with (its schedule depends on it)."""
    plan = read_plan(out)
    if not plan or plan.get("deadline") is None or part not in plan["rates"]:
        return None
    entry = plan["parts"].get(part, {})
    if "count" in entry:  # started (killed, resumed) or trained already: its own count
        return entry["count"]
    count = planned_count(out, part)
    plan["parts"][part] = {"count": count}
    write_plan(out, plan)
    return count


def planned_config(out, cfg: TrainConfig, count: int) -> TrainConfig:
    """``cfg`` as the plan has it: its size (a ``network`` update where the budget chose a
    smaller one, cifarlab.config.BUDGET_ALTERNATIVES) at ``count`` epochs."""
    update = (read_plan(out) or {}).get("network", {}).get(cfg.model)
    if update:
        cfg = cfg.replace(network={**cfg.network, **update})
    return with_epochs(cfg, count)


def with_epochs(cfg: TrainConfig, epochs: int) -> TrainConfig:
    """``cfg`` at ``epochs``; VGG16's head and fine-tuning epochs, and shrunk and
    full-size epochs (``low_res_epochs``), in the recipe's ratio (at least one of each
    where there are two; a single epoch is at full size)."""
    if cfg.model != "vgg16":
        return cfg.at_epochs(epochs)
    head = first_part(epochs, cfg.network["head_epochs"], cfg.epochs) if epochs >= 2 else epochs
    return cfg.at_epochs(epochs).replace(network={**cfg.network, "head_epochs": head})


def record(
    out, part: str, count: int, started: float, ended: float, kept: bool = False
) -> dict | None:
    """Write ``part``'s planned and actual minutes into the plan; returns that entry (also
    kept in the model's evidence). ``kept``: a model trained before was kept, the part is
    done. None where no plan exists."""
    plan = read_plan(out)
    if not plan or part not in plan["rates"] or "ended" in plan:
        return None
    rate = Rate(**plan["rates"][part])
    entry = {
        "planned_count": plan["planned"][part],
        "count": count,
        "planned_min": round(plan["predicted_s"][part] / 60, 2),
        "replanned_min": round((rate.fixed_s + count * rate.unit_s) / 60, 2),
        "actual_min": round((ended - started) / 60, 2),
        "started": started,
        "ended": ended,
    }
    if kept:
        entry["kept"] = True
    plan["parts"][part] = entry
    write_plan(out, plan)
    return entry


def finish(out) -> dict | None:
    """Close the plan at the series' end: its actual total beside the predicted one, also
    as a section of ``reports/results.md``."""
    plan = read_plan(out)
    if not plan or "ended" in plan:
        return None
    plan["ended"] = time.time()
    plan["actual_total_s"] = plan["ended"] - plan["started"]
    write_plan(out, plan)
    md = layout(out).results_md
    if md.is_file():
        text = md.read_text().split("\n## Time: planned and actual", 1)[0].rstrip()
        with atomic_path(md) as tmp:
            tmp.write_text(text + "\n\n" + markdown(plan) + "\n")
    return plan


def markdown(plan: dict) -> str:
    """The plan against the actual minutes, as a Markdown section."""
    budget = "none" if plan["budget_min"] is None else f"{plan['budget_min']:g} min"
    lines = [
        "## Time: planned and actual",
        "",
        f"Budget {budget}; predicted {plan['predicted_total_s'] / 60:.1f} min, actual "
        + (f"{plan['actual_total_s'] / 60:.1f} min." if "actual_total_s" in plan else "running."),
        "",
        "| part | count | recipe | predicted min | actual min |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in table(plan):
        count = r.get("epochs", r.get("trials"))
        actual = "" if r["actual min"] is None else f"{r['actual min']:.1f}"
        lines.append(
            f"| {r['part']} | {count} | {r['recipe']} | {r['predicted min']:.1f} | {actual} |"
        )
    return "\n".join(lines)


def table(plan: dict) -> list[dict]:
    """The plan as rows: each part, its count, its predicted minutes, and (once run) its
    actual minutes."""
    rows = []
    for p in PARTS:
        if p not in plan["planned"]:
            continue
        done = plan["parts"].get(p, {})
        rows.append(
            {
                "part": p,
                UNITS.get(p, "epochs"): done.get("count", plan["planned"][p]),
                "recipe": plan["rates"][p]["recipe"],
                "predicted min": round(plan["predicted_s"][p] / 60, 1),
                "actual min": done.get("actual_min"),
            }
        )
    return rows


def describe(plan: dict, expect: dict[str, str] | None = None) -> str:
    """The plan as the terminal shows it, with the predicted finish time (and, given
    ``expect``, what to expect of each model)."""
    lines = [
        f"plan: {plan['dataset']}, profile {plan['profile']}, budget "
        + (
            "none (the recipes as they are)"
            if plan["budget_min"] is None
            else f"{plan['budget_min']:g} min"
        )  # fmt: skip
    ]
    for r in table(plan):
        unit = "trials" if "trials" in r else "epochs"
        update = plan.get("network", {}).get(r["part"])
        lines.append(
            f"  {r['part']:<9} {r[unit]:>3} {unit:<6} (recipe {r['recipe']:>2})  "
            f"{r['predicted min']:>6.1f} min"
            + (f"  at {', '.join(f'{k} {v}' for k, v in update.items())}" if update else "")
            + (f"  expect {expect[r['part']]}" if (expect or {}).get(r["part"]) else "")
        )
    finish_at = plan["started"] + plan["predicted_total_s"]
    lines.append(
        f"  set-up {plan['spent_before_training_s'] / 60:.1f} min, test evaluation "
        f"{_evaluation_s(plan) / 60:.1f} min, figures and kernels "
        f"{plan['overhead_s'] / 60:.1f} min; total {plan['predicted_total_s'] / 60:.1f} min, "
        f"predicted to finish at {time.strftime('%H:%M', time.localtime(finish_at))}"
    )
    return "\n".join(lines)


def _evaluation_s(plan: dict, parts=None) -> float:
    """The test evaluation of ``parts`` (default: every part), after the last trains."""
    return sum(Rate(**r).later_s for p, r in plan["rates"].items() if parts is None or p in parts)


def against_actual(plan: dict) -> str:
    """One line for the end of a series: predicted and actual minutes."""
    budget = "" if plan["budget_min"] is None else f" of a {plan['budget_min']:g}-minute budget"
    return (
        f"series done in {plan['actual_total_s'] / 60:.1f} min{budget} (the plan predicted "
        f"{plan['predicted_total_s'] / 60:.1f})"
    )
