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
# # Training the models: baseline, overfit and VGG16 transfer
#
# **The problem.** Classify small (32x32) colour images into one of many classes: the 100
# classes of CIFAR-100 by default, the 10 of CIFAR-10, or the classes of any image folder.
#
# **The measure of success.** Accuracy on the test split: the classes are balanced (we
# check this below), so accuracy is not misled by a majority class. Top-5 accuracy and
# per-class scores come in *TestModels*.
#
# **The protocol.** The training images are split once, stratified and seeded, into a
# training part and a validation part; every choice (early stopping, the best epoch, the
# hyperparameter search in *ThirdModel*) looks at validation only. The test split is
# touched once, at the end, in *TestModels*. The numbers of this run are printed with the
# split below.
#
# This notebook trains three of the four models; *ThirdModel* searches for and trains the
# fourth. Everything is saved (`saved_models/*.keras`, `histories/*.npy`, metadata JSON),
# so the later notebooks can run on their own after a kernel restart.

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
from IPython.display import Markdown, display

from cifarlab import config, course, data
from cifarlab.evaluation import visualize
from cifarlab.models import cnn
from cifarlab.training import evidence, recipe, timing, train, transfer

profile = config.resolve_profile(profile)
overrides = {"epochs": epochs, "batch_size": batch_size}
figures = Path(out) / "reports" / "figures"

# %% [markdown]
# ## The data
# One spec string selects the dataset. Official archives are checked against their
# published md5 before anything is read; decoded images are cached, so this is fast
# the second time.

# %%
ds = data.load_dataset(dataset)
info = ds.describe()
{k: info[k] for k in ("name", "num_classes", "train", "test", "image_shape", "sha256")}

# %% [markdown]
# ## The plan: the series sized to this machine and its time budget
# Before anything trains, the series times a few training and validation steps of each
# model here (cached: a second run plans at once), then gives each model the epochs
# (the search: the trials) its share of the `budget` buys. Every learning-rate schedule
# is sized to the steps it will really take; each model re-plans from the time actually
# left when it starts. `budget = None` trains the profile's recipes as they are.

# %%
the_plan = timing.ensure_plan(ds, profile, budget, out, seed, notebooks=True)
print(course.describe_plan(the_plan))
course.plan_table(the_plan)

# %% [markdown]
# ## The images
# A few training images of each class (on CIFAR-100, one row per superclass: the 20
# groups of five classes that the evaluation also scores). 32x32 pixels is small: many
# are hard to name even for a person.

# %%
split, cfg = course.model_inputs("baseline", ds, profile, seed, out, overrides)
visualize.show(course.samples(ds, split, out, seed))

# %% [markdown]
# ## The split, and the class balance that makes accuracy a fair measure
# The split drawn here is the one the models train on (the same seed, the profile's
# image count), not one recomputed for the picture.

# %%
display(Markdown(course.protocol(ds, split, cfg)))
visualize.show(visualize.class_balance(ds, split, figures / "class_balance.png"))

# %% [markdown]
# ## 1. The baseline
# A small CNN in the classic style: three 3x3 convolutions, max-pooling, four more,
# max-pooling, one dense hidden layer, with dropout after each block and after the hidden
# layer. The model contains its own normalisation, so it takes raw pixels. How it trains
# in this run, from its configuration:

# %%
Markdown(course.training_words("baseline", cfg, split, ds))

# %% [markdown]
# The Keras code that builds it (the library's own definition, shown as it runs), and how
# every model here is compiled: the optimizer, its learning-rate schedule over the steps
# it will take, the loss and the metrics.

# %%
course.code(cnn._classic_cnn, cnn.build_baseline, recipe.compile_model)

# %% [markdown]
# The network, its size and its cost: parameters, and forward FLOPs per image (two per
# multiply-add of the convolution and dense layers), then the same layers drawn by
# `keras.utils.plot_model`, each with the shape of what it outputs (it needs graphviz).

# %%
card = course.architecture("baseline", cfg, out=out)

# %% [markdown]
# What training shows the network: a few training images as the augmentation above
# changes them, drawn by the same code that makes the training batches. A new variant of
# each image every epoch makes memorising its pixels harder.

# %%
visualize.show(course.augmentation("baseline", cfg, split, out))

# %% [markdown]
# The learning rate the optimizer uses at each step (cosine decay: large steps first,
# small ones to settle), and what to expect from a measured run.

# %%
visualize.show(course.lr_schedule("baseline", cfg, len(split.y_train), out))
print(course.expected("baseline", ds.name, profile, cfg.epochs, ds.num_classes))

# %%
baseline = train.train_model(
    "baseline", ds, profile, out, seed, overrides, vgg16_weights, skip_trained=True
)
visualize.show(visualize.curves(out, "baseline"))
Markdown(course.after_training(baseline))

# %% [markdown]
# ## 2. A model that overfits on purpose
# The same layout with a wider hidden layer and *no* regularisation: no dropout, no
# augmentation, no early stopping, part of the training images (validated on the same
# hold-out images as the other models) and a constant learning rate.
# Training accuracy climbs towards 100% while validation accuracy stalls and validation
# loss rises: the model memorises instead of generalising.

# %%
overfit_split, overfit_cfg = course.model_inputs("overfit", ds, profile, seed, out, overrides)
card = course.architecture("overfit", overfit_cfg, show_summary=False)
display(Markdown(course.training_words("overfit", overfit_cfg, overfit_split, ds)))
visualize.show(course.lr_schedule("overfit", overfit_cfg, len(overfit_split.y_train), out))
print(course.expected("overfit", ds.name, profile, overfit_cfg.epochs, ds.num_classes))

# %%
overfit = train.train_model(
    "overfit", ds, profile, out, seed, overrides, vgg16_weights, skip_trained=True
)
visualize.show(visualize.curves(out, "overfit"), visualize.overfit_gap(out))
Markdown(course.after_training(overfit))

# %% [markdown]
# ## 4. Transfer learning from VGG16
# (The third model, the tuned CNN found by a hyperparameter search, has its own
# notebook: ThirdModel. It is trained after this one.)
#
# `keras.applications.VGG16` without its classifier, with pretrained weights, and a new
# dense head (batch norm first: VGG features are large and unnormalised). Phase 1 trains
# only the head on features computed once by the frozen base; phase 2 unfreezes the top
# block and fine-tunes it with a low learning rate. The features are computed for every
# training image and for its mirror image, and each epoch picks one of the two per image:
# augmentation without recomputing the features. VGG16's own preprocessing (BGR, mean
# subtraction) is part of the model. The weights' source is recorded and reported.
#
# Pretrained weights help as far as they hold what the new task needs. The `offline`
# weights are an edge detector's VGG16: on CIFAR-100 a linear probe finds no more class
# information in their top block than in random weights (15.9% against 15.2%), so vgg16
# with them ends under the baseline (RESULTS.md; `benchmarks/vgg16_probe.py` measures any
# weights).

# %% [markdown]
# The two phases as Keras code: the base split into a frozen part (its features computed
# once) and the part to fine-tune; every VGG layer `trainable = False` while the head
# trains; then the top block unfrozen and the model compiled again at the low fine-tuning
# rate before the second `fit`.

# %%
course.code(transfer.train_vgg16)

# %%
vgg_split, vgg_cfg = course.model_inputs("vgg16", ds, profile, seed, out, overrides)
card = course.architecture("vgg16", vgg_cfg, out=out)
display(Markdown(course.training_words("vgg16", vgg_cfg, vgg_split, ds)))
print(course.expected("vgg16", ds.name, profile, vgg_cfg.epochs, ds.num_classes))

# %%
vgg = train.train_model(
    "vgg16", ds, profile, out, seed, overrides, vgg16_weights, skip_trained=True
)
print("VGG16 weights:", vgg["weights_source"])
visualize.show(visualize.curves(out, "vgg16"))
Markdown(course.after_training(vgg))

# %% [markdown]
# ## What was saved
# Each model is a `.keras` file that plain Keras can load, with a JSON file holding the
# evidence (config, data checksum, class names, seed, backend, versions, hardware, time).

# %%
evidence.summary_table(out, ["baseline", "overfit", "vgg16"])
