"""The search's winner: the recipe stays unless a trial beats it by more than chance.

KerasTuner ranks trials by their score alone. With a few short trials on a validation
subset (the ``cpu`` budget: 4 trials of 3 epochs, 2,500 validation images) a lead of a
point is within chance, and the trials' proxy (a few epochs on part of the data)
favours what learns fast over what ends best. The search's first trial is the profile's
recipe (cifarlab.training.tune.RecipeFirstOracle); :func:`pick_winner` keeps it unless another
trial's lead passes a one-sided two-proportion z-test at 5%.
"""

from __future__ import annotations

from cifarlab.errors import CifarlabError

#: One-sided 5% z: a trial replaces the recipe only when it beats it on validation by
#: more than chance allows (:func:`pick_winner`).
Z_ONE_SIDED_5 = 1.645


def noise_margin(p: float, images: int) -> float:
    """The accuracy difference two models of accuracy about ``p`` show by chance on
    ``images`` validation images at the one-sided 5% level (the two-proportion z-test's
    standard error, sqrt(2 p (1 - p) / n), times 1.645)."""
    return Z_ONE_SIDED_5 * (2 * p * (1 - p) / images) ** 0.5


def trial_number(trial_id: str) -> int:
    """A trial's number as KerasTuner prints it ("Trial 1 Complete" is trial_id "0")."""
    return int(trial_id) + 1


def pick_winner(trials: list, recipe_values: dict, val_images: int) -> tuple:
    """``(trial, why)``: the search's winner among finished ``trials`` (KerasTuner
    trials). The recipe (the trial whose values are the space's defaults) stays the
    winner unless the best trial beats it by more than :func:`noise_margin`: with a few
    short trials on a validation subset, a difference within chance says nothing, and a
    trial's proxy ranking (a few epochs on part of the data) favours what learns fast
    over what ends best (RESULTS.md: on CIFAR-100 a trial that led the recipe by 1.2
    points on 2,500 images trained to 17.5% where the recipe had 40.3% after 3 epochs)."""
    done = [t for t in trials if t.score is not None]
    if not done:
        raise CifarlabError("the search finished no trial: nothing to pick")
    best = max(done, key=lambda t: t.score)
    recipe = next((t for t in done if t.hyperparameters.values == recipe_values), None)
    if recipe is None or recipe is best:
        return best, "the best validation accuracy" + ("" if recipe else " (no recipe trial)")
    lead = best.score - recipe.score
    margin = noise_margin((best.score + recipe.score) / 2, val_images)
    verdict = (
        f"trial {trial_number(best.trial_id)} leads the recipe (trial "
        f"{trial_number(recipe.trial_id)}) by {100 * lead:.2f} "
        f"points, the chance margin on {val_images:,} validation images is {100 * margin:.2f}"
    )
    if lead > margin:
        return best, verdict + ": it wins"
    return recipe, verdict + ": the recipe is kept"
