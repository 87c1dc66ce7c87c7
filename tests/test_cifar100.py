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

from cifarlab import data
from cifarlab.evaluation import evaluate, figures
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


def _same_superclass_neighbour(ds, c):
    f2c = ds.fine_to_coarse
    return np.flatnonzero((f2c == f2c[c]) & (np.arange(100) != c))[0]


def test_confused_pairs_say_whether_both_classes_share_a_superclass(cifar100):
    f2c, names = cifar100.fine_to_coarse, cifar100.class_names
    y = np.repeat(np.arange(100), 10)
    pred = y.copy()
    # class 0 mistaken 6 times for a class of its superclass, 3 times for one outside it
    inside = _same_superclass_neighbour(cifar100, 0)
    outside = np.flatnonzero(f2c != f2c[0])[0]
    pred[:6], pred[6:9] = inside, outside
    pairs = evaluate.confused_pairs(y, pred, names, 10, f2c, cifar100.coarse_names)
    assert list(pairs["count"]) == [6, 3]
    assert list(pairs["predicted"]) == [names[inside], names[outside]]
    assert list(pairs["same_superclass"]) == [True, False]
    assert pairs["true_superclass"].iloc[0] == cifar100.coarse_names[f2c[0]]
    assert evaluate.within_superclass_share(pairs) == 6 / 9
    # without superclasses: no superclass columns, no share
    plain = evaluate.confused_pairs(y, pred, names, 10)
    assert list(plain.columns) == ["true", "predicted", "count"]
    assert evaluate.within_superclass_share(plain) is None


def test_superclass_table_maps_fine_predictions_to_their_superclass(cifar100):
    y = cifar100.y_test[:2000]
    f2c = cifar100.fine_to_coarse
    pred = np.array([_same_superclass_neighbour(cifar100, c) for c in y])  # all fine labels wrong
    # and 100 images put into another superclass
    pred[:100] = [np.flatnonzero(f2c != f2c[c])[0] for c in y[:100]]
    table = evaluate.superclass_table(y, pred, f2c, cifar100.coarse_names)
    assert list(table["superclass"]) == cifar100.coarse_names
    assert (table["classes"] == 5).all() and table["support"].sum() == len(y)
    recall = dict(zip(table["superclass"], table["recall"]))
    wrong = set(f2c[y[:100]])
    for c, name in enumerate(cifar100.coarse_names):
        if c not in wrong:
            assert recall[name] == 1.0
    assert sum(table["recall"] * table["support"]) == len(y) - 100
