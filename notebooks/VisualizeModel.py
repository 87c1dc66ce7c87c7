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
# # What the models learned: curves, filters, feature maps, patterns, Grad-CAM
#
# Pictures of every saved model, written to `reports/figures/` and shown here. This
# notebook reads only what the earlier ones saved.

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

# %% [markdown]
# ## Drawing every figure
# One call draws, for each saved model, the figures below and saves them as PNG under
# `reports/figures/` (a file each, named `<kind>_<model>.png`); the cells after it show
# them by kind. The models are loaded as saved, so what you see is what a reader who
# reloads the `.keras` files with plain Keras would get.

# %%
from cifarlab import course
from cifarlab.evaluation import visualize

files = visualize.visualize_all(out, dataset=dataset)
print(f"{len(files)} figures written under {files[0].parent}")

# %% [markdown]
# ## Learning curves
# Training against validation, loss and accuracy, per epoch. The overfit model's
# validation loss turns upwards while its training accuracy keeps climbing.

# %%
visualize.show(visualize.figures(out, "curves"), visualize.figures(out, "overfit_vs_baseline"))

# %% [markdown]
# ## The models side by side
# Validation accuracy of every model on one axis; test accuracy with its 95% margin (the
# binomial uncertainty of an accuracy measured on this many test images: bars whose
# margins overlap are not told apart); each class's recall by each model, hardest classes
# first; and the confusion matrices on one colour scale.

# %%
visualize.show(
    visualize.figures(out, "validation_curves"),
    visualize.figures(out, "test_accuracy"),
    visualize.figures(out, "recall_per_class"),
    visualize.figures(out, "confusion_side_by_side"),
)

# %% [markdown]
# ## First-layer filters
# The 3x3 RGB kernels of the first convolution. Trained long enough on enough images,
# first layers become colour blobs and oriented edges: VGG16's filters, learnt on
# ImageNet, show it. A few epochs move a random start only a little, so the small CNNs'
# filters can still look like noise: the figures after these put each one's first
# filters at initialisation (rebuilt from its saved config and seed) above the same
# filters trained, and the numbers say how far training moved them.

# %%
visualize.show(visualize.figures(out, "filters"), visualize.figures(out, "initial_filters"))
course.filter_changes(out)

# %% [markdown]
# ## Feature maps
# One test image through each convolution block: resolution shrinks, the channels
# respond to larger and more abstract patterns. VGG16 was made for 224x224 images: five
# poolings bring a 32x32 input down to 1x1 after its last block, a map that shows nothing,
# so its maps (and its Grad-CAM below) stop at the deepest layer that still has at least
# 2x2 positions; each figure's title names the layer.

# %%
visualize.show(visualize.figures(out, "feature_maps"))

# %% [markdown]
# ## Activation patterns
# Inputs synthesised by gradient ascent to excite single filters of a deep layer
# (TensorFlow, JAX and PyTorch backends). A few ascent steps on a briefly trained network
# give patterns that look like noise; clear textures need a well-trained network (VGG16's
# ImageNet filters come nearest) and many steps.

# %%
visualize.show(visualize.figures(out, "patterns"))

# %% [markdown]
# ## Predictions and the most confident mistakes

# %%
visualize.show(visualize.figures(out, "predictions"), visualize.figures(out, "mistakes"))

# %% [markdown]
# ## Grad-CAM
# Where the evidence for the predicted class lies in the image (Selvaraju et al., 2017).

# %%
visualize.show(visualize.figures(out, "gradcam"))

# %% [markdown]
# ## Using a saved model: plain Keras, one image
# Everything above came from files on disk. A saved model needs nothing of this library
# to run: Keras loads the `.keras` file (safe mode, no custom code) and predicts on raw
# pixels, the normalisation and any test-time augmentation being layers of the model.
# Here the best model of this series classifies one test image.

# %%
import keras
import pandas as pd
from IPython.display import Markdown

from cifarlab import data
from cifarlab.layout import layout

best = pd.read_csv(layout(out).results_csv).sort_values("test_accuracy").iloc[-1]["model"]
model = keras.saving.load_model(layout(out).model(best), compile=False, safe_mode=True)
ds = data.load_dataset(dataset)
image = ds.x_test[:1]  # a batch of one raw 32x32x3 image, uint8 as on disk
probabilities = keras.ops.convert_to_numpy(model.predict(image, verbose=0))[0]
visualize.show(visualize.one_prediction(ds, 0, probabilities, layout(out).figure("one_image", best)))
Markdown(course.one_image_words(out, best, ds, 0, probabilities))

# %% [markdown]
# ## What to try next
# Every setting of every model lives in one place, `cifarlab.config.RECIPES` (printed
# per model and profile by `cifarlab config MODEL --profile PROFILE`); a command-line flag
# or a notebook parameter overrides one field for a run.

# %%
Markdown(course.next_steps())
