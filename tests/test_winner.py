"""The search's winner: the recipe stays unless a trial beats it by more than chance."""

from __future__ import annotations

import keras_tuner as kt
import pytest

from cifarlab.errors import CifarlabError
from cifarlab.training.winner import noise_margin, pick_winner

RECIPE = {"optimizer": "sgd", "widths": "64-256-256"}


def _trial(trial_id: str, score: float | None, **values):
    trial = kt.engine.trial.Trial(kt.HyperParameters(), trial_id=trial_id)
    trial.hyperparameters.values = {**RECIPE, **values}
    trial.score = score
    return trial


def test_the_chance_margin_is_the_two_proportion_z_test_at_one_sided_5_percent():
    # sqrt(2 x 0.2 x 0.8 / 2500) = 0.0113; x 1.645 = 0.0186
    assert noise_margin(0.2, 2500) == pytest.approx(0.01861, abs=1e-5)
    assert noise_margin(0.2, 10_000) == pytest.approx(noise_margin(0.2, 2500) / 2)
    assert noise_margin(0.94, 10_000) < 0.006  # the full profile: half a point


def test_a_lead_within_chance_keeps_the_recipe_and_a_clear_one_wins():
    recipe = _trial("0", 0.2068)
    # the cpu search on real CIFAR-100 (RESULTS.md): AdamW 32/128/128 led by 1.16 points
    close = _trial("2", 0.2184, optimizer="adamw", widths="32-128-128")
    others = [_trial("1", 0.1084, bn_momentum=0.9), _trial("3", None, lookahead=0)]
    winner, why = pick_winner([recipe, close, *others], RECIPE, 2500)
    assert winner is recipe and "the recipe is kept" in why and "1.16" in why
    # trials named as KerasTuner prints them, from 1: trial_id "2" is its "Trial 3"
    assert why.startswith("trial 3 leads the recipe (trial 1) by 1.16 points")
    clear = _trial("2", 0.2400, optimizer="adamw", widths="32-128-128")
    winner, why = pick_winner([recipe, clear, *others], RECIPE, 2500)
    assert winner is clear and "it wins" in why
    # the same lead on four times the images is beyond chance
    assert pick_winner([recipe, close], RECIPE, 10_000)[0] is close


def test_the_best_trial_wins_when_it_is_the_recipe_or_there_is_none():
    recipe, worse = _trial("0", 0.30), _trial("1", 0.25, lookahead=0)
    assert pick_winner([worse, recipe], RECIPE, 2500)[0] is recipe
    other = {**RECIPE, "widths": "32-128-128"}  # a space whose defaults no trial took
    winner, why = pick_winner([worse, recipe], other, 2500)
    assert winner is recipe and "no recipe trial" in why
    with pytest.raises(CifarlabError, match="no trial"):
        pick_winner([_trial("0", None)], RECIPE, 2500)
