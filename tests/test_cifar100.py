"""The real CIFAR-100 (../shared/data/cifar-100-python, the official layout, extracted):
the loader's counts and labels, and superclass metrics and figures on a real subset.

Skipped, with the reason, where the real data is absent (a user's clone); CI has it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from cifarlab import data, evaluate, figures
from cifarlab.layout import Layout

REAL_CIFAR100 = Path(
    os.environ.get("CIFARLAB_REAL_CIFAR100", ROOT.parent / "shared" / "data" / "cifar-100-python")
)

#: The 20 superclasses and their 5 classes each, as published with the dataset
#: (https://www.cs.toronto.edu/~kriz/cifar.html), in the archive's spelling.
OFFICIAL_SUPERCLASSES = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}


@pytest.fixture(scope="module")
def cifar100():
    if not (REAL_CIFAR100 / "train").is_file():
        pytest.skip(f"real CIFAR-100 folder not present at {REAL_CIFAR100}")
    return data.load_dataset(str(REAL_CIFAR100), progress=False, use_cache=False)


def test_real_cifar100_has_500_train_and_100_test_images_per_class(cifar100):
    assert cifar100.x_train.shape == (50_000, 32, 32, 3) and cifar100.x_test.shape[0] == 10_000
    assert (np.bincount(cifar100.y_train, minlength=100) == 500).all()
    assert (np.bincount(cifar100.y_test, minlength=100) == 100).all()
    assert cifar100.x_train.dtype == np.uint8 and cifar100.info["md5_verified"] is False


def test_real_cifar100_fine_to_coarse_mapping_is_the_official_table(cifar100):
    assert sorted(cifar100.coarse_names) == sorted(OFFICIAL_SUPERCLASSES)
    got = {
        coarse: sorted(
            cifar100.class_names[f]
            for f in range(100)
            if cifar100.fine_to_coarse[f] == cifar100.coarse_names.index(coarse)
        )
        for coarse in cifar100.coarse_names
    }
    assert got == OFFICIAL_SUPERCLASSES
    # the test split's coarse labels agree with the same mapping
    np.testing.assert_array_equal(cifar100.fine_to_coarse[cifar100.y_test], cifar100.coarse_test)


def test_superclass_accuracy_counts_a_wrong_class_in_the_right_superclass(cifar100):
    y = cifar100.y_test[:1000]
    f2c = cifar100.fine_to_coarse
    # predict, for each image, another class of the same superclass: 0% fine, 100% coarse
    same_super = np.array([np.flatnonzero((f2c == f2c[c]) & (np.arange(100) != c))[0] for c in y])
    probs = np.full((len(y), 100), 0.1 / 99)
    probs[np.arange(len(y)), same_super] = 0.9
    m = evaluate.metrics(y, probs, cifar100.class_names, f2c)
    assert m["test_accuracy"] == 0.0 and m["superclass_accuracy"] == 1.0


def test_confusion_figures_at_100_classes_are_large_and_grouped_by_superclass(cifar100, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    y = cifar100.y_test[:2000]
    pred = np.where(rng.random(len(y)) < 0.5, y, rng.integers(0, 100, len(y)))
    files = figures.confusion_matrices("real", y, pred, cifar100, Layout(tmp_path))
    assert [p.name for p in files] == ["confusion_real.png", "confusion_coarse_real.png"]
    for p in files:
        with Image.open(p) as im:
            assert im.width >= 1000 and im.height >= 1000, (p.name, im.size)
