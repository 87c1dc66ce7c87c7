# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Testing the models on the untouched test split
#
# Every saved model is loaded from disk (Keras safe mode) and judged once on the test
# split, which no training or selection step has seen. Reported: loss, accuracy, top-5
# accuracy, superclass accuracy for CIFAR-100 (a fine prediction counts when it falls in
# the right one of the 20 superclasses), per-class precision / recall / F1 and confusion
# matrices. This notebook reads only what the earlier ones saved.

# %% [markdown]
# ### Setup
# Installs `cifarlab` when it is missing (Colab, a fresh kernel): from this checkout when
# the notebook sits in one, else from `CIFARLAB_PIP_SPEC` (on Colab, the README's one
# line sets it). Outside a checkout the series' files go to `./cifarlab-run/`.

# %%
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

in_checkout = (Path.cwd().parent / "pyproject.toml").is_file()
if importlib.util.find_spec("cifarlab") is None:
    spec = str(Path.cwd().parent) if in_checkout else os.environ.get("CIFARLAB_PIP_SPEC")
    if not spec:
        raise SystemExit("set CIFARLAB_PIP_SPEC to where cifarlab can be pip-installed from")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", spec])
if not in_checkout and Path.cwd().name != "notebooks":  # `out = ".."` below: ./cifarlab-run
    Path("cifarlab-run/notebooks").mkdir(parents=True, exist_ok=True)
    os.chdir("cifarlab-run/notebooks")

# %% tags=["parameters"]
# Parameters (papermill overrides these; `make run` passes its DATASET, PROFILE, OUT, SEED).
dataset = "cifar100"  # cifar100, cifar10, an official archive, or an image folder / .tar.gz / .zip
profile = None  # smoke, cpu or full; None: full with a GPU, cpu without
out = ".."  # the project root: saved_models/, histories/, reports/ go under it
seed = 0
vgg16_weights = "imagenet"  # imagenet, offline, none, or a .h5 file
epochs = None  # None: the profile's epochs
batch_size = None  # None: the profile's batch size
budget = "auto"  # minutes for the whole series; auto: 60 on the cpu profile; None: the recipes

# %%
import pandas as pd

from cifarlab import course
from cifarlab.evaluation import evaluate, visualize

pd.set_option("display.precision", 4)

# %% [markdown]
# ## All models side by side
# Also saved as `reports/results.csv` and `reports/results.md`.

# %%
table = evaluate.evaluate_all(out, dataset=dataset)
table.set_index("model").T  # a column per model, a row per measure: it fits the page

# %% [markdown]
# ## Where each model fails: confusion matrices
# Rows are the true classes, normalised to sum to 1: the diagonal is each class's recall.
# For CIFAR-100 the classes are ordered by superclass, so confusions inside a superclass
# (say, among the five trees) show as blocks along the diagonal.

# %%
visualize.show(visualize.confusion_all(out, dataset=dataset))

# %% [markdown]
# ## The classes each model confuses most

# %%
evaluate.confused_pairs_table(out)

# %% [markdown]
# ## Per-class scores of the best model

# %%
evaluate.per_class_table(out, table.sort_values("test_accuracy").iloc[-1]["model"])

# %% [markdown] tags=["only-with-output"]
# ## Superclasses (CIFAR-100 only)
# CIFAR-100's 100 classes come in 20 superclasses of five (the five trees, the five
# people, ...). Scored on superclasses, a wrong class inside the right superclass counts
# as right: the gap between superclass and class accuracy is how much of a model's error
# is "close". In the confused pairs above, `same_superclass` marks such mistakes; the
# results table's `top10_confusions_within_superclass` is their share among each model's
# ten most frequent mistakes (4% if mistakes fell on the other classes at random).

# %% tags=["only-with-output"]
best = table.sort_values("test_accuracy").iloc[-1]["model"]
shown = None  # nothing to show where the dataset has no superclasses
if "superclass_accuracy" in table:
    shown = evaluate.per_superclass_table(out, best).sort_values("recall")
shown

# %% [markdown]
# ## Reading the results
# Written from the numbers above (reports/results.csv and the confused pairs), not
# by hand: which model wins and by how much, how far the overfitting model's training
# accuracy runs ahead of its validation accuracy, where the best model errs.

# %%
from IPython.display import Markdown  # noqa: E402

Markdown(course.reading(out))
