"""What the notebooks teach around the training (cifarlab.course): each piece computed
from what the training uses, checked against an independent reading."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from cifarlab import config, course
from cifarlab.data import batches
from cifarlab.data.datasets import Dataset
from cifarlab.evaluation import figures
from cifarlab.layout import Layout


def _dataset(coarse: bool) -> tuple[Dataset, SimpleNamespace]:
    rng = np.random.default_rng(0)
    n_classes = 100 if coarse else 10
    y = np.repeat(np.arange(n_classes), 12)
    # each image carries its class in its first pixel, so a test can see where it came from
    x = rng.integers(0, 256, (len(y), 32, 32, 3), dtype=np.uint8)
    x[:, 0, 0, 0] = y
    perm = rng.permutation(n_classes)  # a fine-to-coarse table that is not simply c // 5
    fine_to_coarse = np.empty(n_classes, dtype=np.int64)
    fine_to_coarse[perm] = np.arange(n_classes) // 5
    ds = Dataset(
        name="toy", spec="toy", checksum="0", x_train=x, y_train=y, x_test=x[:10],
        y_test=y[:10], class_names=[f"c{i}" for i in range(n_classes)],
        coarse_train=fine_to_coarse[y] if coarse else None,
        coarse_test=fine_to_coarse[y[:10]] if coarse else None,
        coarse_names=[f"s{i}" for i in range(20)] if coarse else None,
    )  # fmt: skip
    return ds, SimpleNamespace(x_train=x, y_train=y)


def test_samples_show_each_superclass_with_one_training_image_of_each_of_its_classes():
    ds, split = _dataset(coarse=True)
    rows = figures.sample_rows(ds, split)
    assert [title for title, _ in rows] == ds.coarse_names
    for s, (_, cells) in enumerate(rows):
        names = [caption for caption, _ in cells]
        assert sorted(names) == sorted(
            ds.class_names[c] for c in range(100) if ds.fine_to_coarse[c] == s
        )
        for caption, image in cells:  # the image is one of that class's training images
            assert image[0, 0, 0] == ds.class_names.index(caption)


def test_samples_without_superclasses_show_eight_images_of_each_class():
    ds, split = _dataset(coarse=False)
    rows = figures.sample_rows(ds, split)
    assert [t for t, _ in rows] == ds.class_names
    assert all(len(cells) == 8 and all(im[0, 0, 0] == ds.class_names.index(t) for _, im in cells)
               for t, cells in rows)  # fmt: skip


def _cfg(name: str, **kw) -> config.TrainConfig:
    return config.model_config(name, "cpu").with_stats([125.0] * 3, [63.0] * 3, 10).replace(**kw)


def test_augmentation_views_follow_the_models_own_augmentation():
    x = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    plain = course.augmented_views(_cfg("overfit"), x, views=4)  # overfit: no augmentation
    assert plain.shape == (3, 4, 32, 32, 3)
    assert all(np.array_equal(plain[:, v], x.astype("float32")) for v in range(4))
    flipped = course.augmented_views(_cfg("overfit", flip=True), x, views=6)
    for i in range(3):  # a flip: every view is the image or its mirror, both appear
        kinds = {
            "same" if np.array_equal(v, x[i]) else "mirror" if np.array_equal(v, x[i, :, ::-1])
            else "other" for v in flipped[i, 1:]
        }  # fmt: skip
        assert kinds <= {"same", "mirror"}
    assert any(not np.array_equal(flipped[i, v], x[i]) for i in range(3) for v in range(1, 6))


def test_the_drawn_schedule_is_the_optimizers_warm_up_then_cosine_to_zero():
    cfg = _cfg(
        "tuned",
        epochs=10,
        batch_size=100,
        learning_rate=0.4,
        warmup_fraction=0.2,
        schedule="cosine",
    )
    steps, rates, per_epoch = course.schedule_values(cfg, train_images=1000)
    assert per_epoch == 10 and steps[0] == 0 and steps[-1] == 99
    peak = int(steps[np.argmax(rates)])
    assert peak == 20 and rates.max() == pytest.approx(0.4, rel=1e-4)  # 20% of 100 steps
    assert rates[0] == pytest.approx(0.4 * cfg.warmup_start, rel=1e-4)
    assert rates[-1] < 0.4 * 1e-3 and np.all(np.diff(rates[steps >= 20]) <= 1e-9)
    _, flat, _ = course.schedule_values(_cfg("overfit", epochs=3), train_images=256)
    assert np.all(flat == _cfg("overfit").learning_rate)  # overfit: a constant rate


def test_the_schedule_in_words_is_the_one_the_optimizer_follows():
    from cifarlab.training.recipe import describe_schedule

    airbench = config.airbench_config("cpu")  # warm-up from 0.2x over 23%, down to 0.07x
    assert describe_schedule(airbench) == (
        "a 23% linear warm-up from 0.2x the peak, then linear decay to 0.07x it"
    )
    assert describe_schedule(_cfg("baseline")) == "cosine decay to 0"
    assert describe_schedule(_cfg("overfit")) == "a constant learning rate"
    steps, rates, _ = course.schedule_values(airbench.replace(epochs=4), train_images=5120)
    assert rates[0] == pytest.approx(0.2 * airbench.learning_rate, rel=1e-3)
    # the last step is one short of the end, where the decay reaches 0.07x
    assert 0.07 * airbench.learning_rate <= rates.min() == rates[-1] < 0.11 * airbench.learning_rate


def test_architecture_card_counts_what_the_built_model_holds():
    from cifarlab import models
    from cifarlab.models.flops import count_flops

    cfg = _cfg("baseline")
    card = course.architecture("baseline", cfg, show_summary=False)
    built = models.build(cfg)
    assert card["params"] == built.count_params() == card["trainable_params"]
    assert card["forward_mflops_per_image"] == round(count_flops(built) / 1e6, 1) == 109.8


def test_the_architecture_is_drawn_by_plot_model_where_graphviz_is_installed(
    tmp_path, monkeypatch, capsys
):
    import keras

    from cifarlab.layout import layout

    cfg = _cfg("baseline")
    drawn, shown = [], []

    def plot_model(model, to_file, **kw):  # graphviz's part: the tests' machine has no `dot`
        drawn.append((model.name, kw))
        Path(to_file).write_bytes(b"\x89PNG")

    monkeypatch.setattr(keras.utils, "plot_model", plot_model)
    monkeypatch.setattr(course.figures, "show", shown.append)
    monkeypatch.setattr(course, "has_graphviz", lambda: False)
    card = course.architecture("baseline", cfg, show_summary=False, out=tmp_path)
    assert card["graph"] is None and drawn == shown == []
    assert "lacks" in capsys.readouterr().out  # one line that says why, no error
    monkeypatch.setattr(course, "has_graphviz", lambda: True)
    card = course.architecture("baseline", cfg, show_summary=False, out=tmp_path)
    assert card["graph"] == layout(tmp_path).figure("graph", "baseline") and card["graph"].is_file()
    assert drawn == [("baseline", {"show_shapes": True, "dpi": 60})] and shown == [card["graph"]]


RESULTS_MD = Path(__file__).resolve().parents[1] / "RESULTS.md"
EXPECTED_HEADING = "## Expected figures"


def test_expected_figures_in_results_md_are_each_backed_by_its_sections():
    table = course.expected_table()
    assert len(table) >= 4
    text = RESULTS_MD.read_text()
    start = text.index(EXPECTED_HEADING)
    section = text[start : text.index("\n## ", start + 5)]
    body = text[:start] + text[start + len(section) :]
    # RESULTS.md shows the table made from the package's expected.csv (python -m
    # cifarlab.course RESULTS.md writes it; the notebooks quote the package's)
    assert course.expected_markdown() in section
    for _, row in table.iterrows():
        figure = row["test accuracy"]
        assert row["profile"] in config.PROFILES and row["model"] in config.MODELS
        assert re.fullmatch(r"\d+\.\d\d%", figure), row
        assert figure in body, f"{row['model']} {figure} is not in any measured section"
        assert row["commit"] in body  # the commit the section names


def test_expected_quotes_the_measured_figure_or_says_not_measured():
    row = course.expected_table().iloc[0]
    epochs = sum(int(p) for p in row["epochs"].split("+"))
    said = course.expected(row["model"], row["dataset"], row["profile"], epochs)
    assert row["test accuracy"] in said and row["commit"] in said and "seed" in said
    assert f"section '{row['section']}'" in said  # where its evidence is
    assert "expect a different figure" not in course.expected(
        row["model"], row["dataset"], row["profile"], epochs
    )
    assert "expect a different figure" in course.expected(
        row["model"], row["dataset"], row["profile"], epochs + 1
    )
    assert course.expected("tuned", "no-such-data", "cpu").endswith("not measured yet.")


def test_reading_is_written_from_the_results_files(tmp_path):
    lay = Layout(tmp_path)
    lay.results_csv.parent.mkdir(parents=True)
    pd.DataFrame(
        {
            "model": ["baseline", "overfit", "tuned", "vgg16"],
            "test_accuracy": [0.4149, 0.1779, 0.6310, 0.3950],
            "train_val_gap": [-0.035, 0.778, 0.05, 0.10],
        }
    ).to_csv(lay.results_csv, index=False)
    pd.DataFrame(
        {"true": ["castle", "bus", "willow"], "predicted": ["house", "streetcar", "oak"],
         "count": [26, 24, 25], "same_superclass": [True, False, True]}
    ).to_csv(lay.confused_pairs("tuned"), index=False)  # fmt: skip
    pd.DataFrame(
        {"superclass": ["trees", "reptiles", "people"], "recall": [0.81, 0.32, 0.40]}
    ).to_csv(lay.per_superclass("tuned"), index=False)
    text = course.reading(tmp_path)
    assert "**tuned** wins with 63.10% test accuracy, 21.6 points ahead of baseline" in text
    assert "Last: overfit (17.79%)" in text
    assert "+77.8 points" in text and "at most +10.0 for the others" in text
    assert "castle -> house (26)" in text and "2 of its 3 most confused pairs" in text
    assert text.index("reptiles (32%)") < text.index("people (40%)") < text.index("trees (81%)")


def test_the_cpu_tuned_recipe_is_drawn_as_it_trains():
    """The cpu profile's tuned model is the airbench recipe: ThirdModel draws its linear
    schedule, its alternating flips with whole-pixel shifts, and its network."""
    from cifarlab import models
    from cifarlab.models.flops import count_flops

    cfg = _cfg("tuned")
    assert cfg.network["arch"] == "airbench" and cfg.schedule == "linear"
    steps, rates, per_epoch = course.schedule_values(cfg, train_images=40_000)
    assert per_epoch == 78  # 40,000 images in full batches of 512 (the last 64 left out)
    peak = int(steps[np.argmax(rates)]) / (cfg.epochs * per_epoch)
    assert peak == pytest.approx(cfg.warmup_fraction, abs=0.01)
    assert rates[0] == pytest.approx(cfg.warmup_start * cfg.learning_rate, rel=1e-4)
    assert rates[-1] == pytest.approx(cfg.decay_to * cfg.learning_rate, rel=0.05)
    x = np.random.default_rng(2).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    views = course.augmented_views(cfg, x, views=6)
    # with 3 epochs on 24x24 batches: the same flips and shifts, shrunk, drawn enlarged
    low = cfg.replace(low_res=24, low_res_epochs=3).validate()
    shrunk = course.augmented_views(low, x, views=6)
    block = np.arange(32) * 24 // 32
    for epoch in range(1, 6):
        small = batches.downsample(views[:, epoch], 24)[:, block][:, :, block]
        want = small if epoch <= 3 else views[:, epoch]
        np.testing.assert_allclose(shrunk[:, epoch], want, atol=1e-3)
    assert "first 3 epochs shrunk to 24x24" in course._augmentation_words(low)
    assert course.architecture("tuned", low, show_summary=False)["forward_mflops_per_image"] > 230
    s = round(cfg.translate * 32)  # 2 pixels
    for i in range(3):
        padded = {m: np.pad(img, ((s, s), (s, s), (0, 0)), mode="reflect")
                  for m, img in (("plain", x[i]), ("mirror", x[i, :, ::-1]))}  # fmt: skip
        seen = []
        for v in views[i, 1:]:  # each view: a 32x32 crop of the padded image or its mirror
            found = {m for m, p in padded.items() for dy in range(2 * s + 1)
                     for dx in range(2 * s + 1) if np.array_equal(p[dy:dy + 32, dx:dx + 32], v)}  # fmt: skip
            assert len(found) == 1
            seen.append(found.pop())
        assert all(a != b for a, b in zip(seen, seen[1:]))  # mirrored every other epoch
    card = course.architecture("tuned", cfg, show_summary=False)
    assert card["forward_mflops_per_image"] == round(count_flops(models.build(cfg)) / 1e6, 1)
    assert card["forward_mflops_per_image"] > 230  # airbench94's widths: 236 MFLOP


def test_the_results_table_is_written_from_expected_csv(tmp_path):
    stale = RESULTS_MD.read_text().replace("| cifar100 | cpu | tuned |", "| cifar100 | cpu | old |")
    (tmp_path / "RESULTS.md").write_text(stale)
    course.write_expected_section(tmp_path / "RESULTS.md")
    assert (tmp_path / "RESULTS.md").read_text() == RESULTS_MD.read_text()


def test_the_plan_table_says_what_to_expect_nearest_to_the_planned_epochs():
    row = course.expected_table().iloc[0]
    epochs = sum(int(p) for p in row["epochs"].split("+"))
    plan = {
        "dataset": row["dataset"], "profile": row["profile"],
        "planned": {row["model"]: epochs + 1, "search": 2},
        "rates": {row["model"]: {"recipe": epochs}, "search": {"recipe": 4}},
        "predicted_s": {row["model"]: 600.0, "search": 60.0}, "parts": {},
    }  # fmt: skip
    table = course.plan_table(plan).set_index("part")
    assert table.loc[row["model"], "expect"] == f"{row['test accuracy']} at {row['epochs']} epochs"
    assert course.nearest_measured(row["model"], "no-such-data", "cpu", 3) == "not measured"


def test_the_code_a_notebook_shows_is_the_librarys_own_definition():
    from cifarlab.models import cnn
    from cifarlab.training import transfer

    shown = course.code(cnn.build_baseline, transfer.train_vgg16)
    text = getattr(shown, "data", shown)
    assert text.startswith("```python\n") and text.endswith("```")
    assert "def build_baseline(" in text and "layer.trainable = False" in text
    assert "compile_model(top, ft," in text  # phase 2 compiled again at its own rate


def test_next_steps_name_settings_that_exist():
    fields = {f.name for f in dataclasses.fields(config.TrainConfig)}
    assert {field for _, field, _ in course.NEXT_STEPS} <= fields
    assert course.next_steps().count("\n- ") == len(course.NEXT_STEPS) - 1


def test_a_difference_within_the_binomial_margin_is_a_tie():
    # 500 test images (smoke): 1 point apart is well within the margin (about 6 points)
    assert course.is_tie(0.45, 0.44, 500)
    assert 5 < 100 * course.difference_margin(0.45, 0.44, 500) < 7
    # 10,000 images: the margin is about 1.4 points, so 3 points is a win, 1 a tie
    assert not course.is_tie(0.70, 0.67, 10_000)
    assert course.is_tie(0.70, 0.69, 10_000)
    # no images scored: nothing can be told apart
    assert course.is_tie(0.9, 0.1, 0)


def test_the_reading_calls_a_difference_within_the_margin_a_tie(tmp_path):
    lay = Layout(tmp_path)
    lay.results_csv.parent.mkdir(parents=True)
    for n, said in ((500, "tie"), (10_000, "wins")):
        pd.DataFrame(
            {"model": ["baseline", "vgg16"], "test_accuracy": [0.440, 0.470],
             "train_val_gap": [0.0, 0.0], "test_images": [n, n]}
        ).to_csv(lay.results_csv, index=False)  # fmt: skip
        pd.DataFrame({"true": [], "predicted": [], "count": []}).to_csv(
            lay.confused_pairs("vgg16"), index=False
        )
        first = course.reading(tmp_path).splitlines()[0]
        assert said in first, first
        assert f"on {n:,} test images" in first


@pytest.mark.parametrize("profile", config.PROFILES)
def test_the_prose_states_the_numbers_of_the_config_it_runs(profile, real_data, tmp_path):
    """Every sentence that states a number or a setting is written from the split and the
    config the model trains with, on every profile."""
    from cifarlab.data import load_dataset

    ds = load_dataset(str(real_data), progress=False)
    for name in ("baseline", "overfit", "vgg16"):
        split, cfg = course.model_inputs(name, ds, profile, 0, tmp_path)
        words = course.training_words(name, cfg, split, ds)
        assert f"{len(split.y_train):,}" in words and f"{len(split.y_val):,}" in words
        if name == "vgg16":  # its two phases, as cifarlab.training.transfer trains them
            head = cfg.network["head_epochs"]
            assert (
                f"trains {cfg.epochs} epochs in two phases: {head} of the head alone, "
                f"then {cfg.epochs - head} fine-tuning"
                in words
                and f"batch {cfg.batch_size}" in words
            )
            continue
        assert f"trains {cfg.epochs} epochs at batch {cfg.batch_size}" in words
        assert course._augmentation_words(cfg) in words
        assert ("no early stopping" in words) == (not cfg.patience)
        assert ("best validation epoch is kept" in words) == cfg.restore_best
        # the overfit model trains on a subset of the training split, the others on all
        assert ("a stratified subset" in words) == (name == "overfit"), words
    shrunk = config.airbench_config(profile, epochs=5, low_res=24, low_res_epochs=2)
    words = course.training_words("tuned", shrunk.with_stats([0] * 3, [1] * 3, 10), split, ds)
    assert "trains 5 epochs (the first 2 on images shrunk to 24x24 pixels" in words
    split, cfg = course.model_inputs("baseline", ds, profile, 0, tmp_path)
    text = course.protocol(ds, split, cfg)
    assert f"**{len(split.y_train):,} for training**" in text
    assert f"**{len(split.y_val):,} for validation**" in text
    scored = min(cfg.test_limit or len(ds.y_test), len(ds.y_test))
    assert f"{scored:,}" in text
    assert ("`dataset_limit`" in text) == bool(cfg.dataset_limit)


def test_the_notebooks_prose_states_no_count_of_its_own():
    """Counts that depend on the profile (split sizes, subsets) are generated, never
    written into a Markdown cell where they could disagree with the run."""
    import re

    import nbformat

    for nb_path in sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                stated = re.findall(r"\b\d{1,3},\d{3}\b|\ba quarter\b|\bhalf of the\b", cell.source)
                assert not stated, (nb_path.name, stated, cell.source[:200])


def test_the_reading_names_a_model_that_collapsed_onto_one_class(tmp_path):
    lay = Layout(tmp_path)
    lay.results_csv.parent.mkdir(parents=True)
    pd.DataFrame(
        {"model": ["baseline", "tuned"], "test_accuracy": [0.2, 0.8], "train_val_gap": [0, 0],
         "test_images": [500, 500]}
    ).to_csv(lay.results_csv, index=False)  # fmt: skip
    classes = [f"c{i}" for i in range(10)]
    support = [50] * 10
    pd.DataFrame({"class": classes, "support": support, "predicted": [230] + [30] * 9}).to_csv(
        lay.per_class("baseline"), index=False
    )
    pd.DataFrame(
        {"class": classes, "support": support, "predicted": [60] + [49] * 8 + [48]}
    ).to_csv(lay.per_class("tuned"), index=False)
    pd.DataFrame({"true": [], "predicted": [], "count": []}).to_csv(
        lay.confused_pairs("tuned"), index=False
    )
    text = course.reading(tmp_path)
    assert "baseline guesses *c0* for 46% of the test images, a class that is 10%" in text
    assert "tuned guesses" not in text


def test_the_reading_explains_an_overfit_model_ahead_of_the_baseline(tmp_path):
    lay = Layout(tmp_path)
    lay.results_csv.parent.mkdir(parents=True)
    pd.DataFrame({"true": [], "predicted": [], "count": []}).to_csv(
        lay.confused_pairs("overfit"), index=False
    )
    for epochs, said in ((12, True), (3, False)):
        pd.DataFrame(
            {"model": ["baseline", "overfit"], "test_accuracy": [0.20, 0.26],
             "train_val_gap": [0.0, 0.5], "test_images": [500, 500], "epochs": [3, epochs]}
        ).to_csv(lay.results_csv, index=False)  # fmt: skip
        text = course.reading(tmp_path)
        assert ("it trained 12 epochs to the baseline's 3" in text) == said, text


def test_the_vgg16_card_counts_what_each_phase_trains():
    """Not the built model's 'all trainable': the head alone, then the head and the
    fine-tuned block(s), as cifarlab.training.transfer trains them."""
    cfg = _cfg("vgg16")
    card = course.architecture("vgg16", cfg, show_summary=False)
    blocks = cfg.network["finetune_blocks"]
    assert blocks == 1  # block5: three 3x3 convolutions of 512 -> 512 channels
    block5 = 3 * (3 * 3 * 512 * 512 + 512)
    assert card["phase2_trainable"] - card["phase1_trainable"] == block5
    assert 0 < card["phase1_trainable"] < card["phase2_trainable"] < card["params"]


def test_before_an_unmeasured_profile_trains_the_other_profiles_figure_and_chance_are_said():
    table = course.expected_table()
    row = table[(table["profile"] == "cpu") & (table["dataset"] == "cifar10-jpg")].iloc[-1]
    said = course.expected(row["model"], "cifar10-jpg", "smoke", 3, 10)
    assert "profile smoke: not measured yet." in said
    assert "Measured on profile cpu: " in said and "Chance is 10.0% (one of 10 classes)." in said
    assert "Chance" not in course.expected(row["model"], "cifar10-jpg", "smoke", 3)


def test_the_reading_after_a_training_is_written_from_its_saved_metadata():
    meta = {
        "name": "overfit",
        "dataset": {"num_classes": 10},
        "epochs_run": 13,
        "wall_time_s": 200.1,
        "best_val_accuracy": 0.6047,
        "final_train_accuracy": 0.9844,
        "final_val_accuracy": 0.6006,
        "restored_best_weights": False,
    }  # fmt: skip  (the 60-minute CIFAR-10 run's overfit.json)
    text = course.after_training(meta)
    assert text.startswith("**overfit** trained 13 epochs in 3.3 min: last epoch 98.4% training")
    assert "(+38.4 points apart)" in text and "the last epoch's (60.1% validation)" in text
    assert "memorises" in text and "Chance is 10.0%" in text and "6x chance" in text
    barely = course.after_training({**meta, "best_val_accuracy": 0.15, "final_train_accuracy": 0.2,
                                    "final_val_accuracy": 0.15, "restored_best_weights": True})  # fmt: skip
    assert "learned little yet" in barely and "best validation epoch's (15.0%)" in barely
    # vgg16 keeps its fine-tuning phase's best epoch, not the best of both phases (the
    # smoke series' vgg16: phase 1 reached 32.0%, the one fine-tuning epoch 31.0%)
    from cifarlab.training.evidence import kept_val_accuracy

    records = [{"phase": 1, "val_accuracy": 0.29}, {"phase": 1, "val_accuracy": 0.32},
               {"phase": 2, "val_accuracy": 0.31}]  # fmt: skip
    assert kept_val_accuracy(records, True) == 0.31 == kept_val_accuracy(records, False)
    assert kept_val_accuracy(records + [{"phase": 2, "val_accuracy": 0.30}], True) == 0.31
    assert kept_val_accuracy(records + [{"phase": 2, "val_accuracy": 0.30}], False) == 0.30
    vgg = {**meta, "name": "vgg16", "best_val_accuracy": 0.32, "kept_val_accuracy": 0.31,
           "restored_best_weights": True, "vgg16": {"finetune_epochs": 1}}  # fmt: skip
    assert "best validation epoch's of the fine-tuning phase (31.0%)" in course.after_training(vgg)


def test_the_search_reading_names_the_winner_and_its_rate_at_the_final_batch():
    search = {
        "winner": {"trial_id": "0", "val_accuracy": 0.214, "why": "the best validation accuracy"},
        "config": {"batch_size": 512, "optimizer": "sgd", "learning_rate": 0.75},
        "budget": {"batch_size": 128, "epochs": 3},
    }
    text = course.search_reading(search)
    assert text.startswith("**The winner: trial 1** (validation accuracy 21.4% after 3 epochs")
    assert "0.1875 in the trials, 0.75 here" in text and "linearly under sgd" in text
    search["config"].update(optimizer="adamw", learning_rate=0.006)  # 4x the batch: 2x rate
    assert "0.003 in the trials, 0.006 here" in course.search_reading(search)
    search["budget"]["batch_size"] = 512  # the same batch: nothing to scale
    assert "trials ran at batch" not in course.search_reading(search)


def test_one_image_is_read_right_or_wrong_with_how_often_the_model_errs(tmp_path):
    from cifarlab.layout import layout

    root = layout(tmp_path)
    root.results_csv.parent.mkdir(parents=True)
    root.results_csv.write_text("model,test_accuracy\ntuned,0.7074\n")
    root.models_dir.mkdir()
    root.meta("tuned").write_text(json.dumps({"config": {"label_smoothing": 0.2}}))
    ds = SimpleNamespace(class_names=["bowl", "tulip", "rose"], y_test=np.array([0, 2]))
    wrong = course.one_image_words(tmp_path, "tuned", ds, 0, np.array([0.05, 0.11, 0.04]))
    assert wrong.startswith("The true class is **bowl**; tuned's first guess is **tulip** (11%)")
    assert "misses about 3 test images in 10" in wrong and "label smoothing 0.2" in wrong
    right = course.one_image_words(tmp_path, "tuned", ds, 1, np.array([0.1, 0.1, 0.8]))
    assert "**rose** (80%): right, as it is on 71% of the test images" in right
