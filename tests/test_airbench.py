"""The airbench family's parts: whitening, identity init, the optimiser's parts on every
backend, the schedule, alternating flips, whole-pixel shifts, multi-view test-time
augmentation, and the search space that switches them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import BACKENDS, ROOT, python_with

from cifarlab import config, models
from cifarlab.data import batches
from cifarlab.models import airbench, tta
from cifarlab.training import evidence, recipe, tune


def _cfg(**kw) -> config.TrainConfig:
    return (
        config.model_config("tuned", "smoke")
        .with_stats([125.0, 123.0, 114.0], [63.0, 62.0, 66.0], 10)
        .replace(**kw)
    )


def _images(n=64, seed=0):
    """Smooth random images (neighbouring pixels correlated, like real ones)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 8, 8, 3)).astype("float32")
    return np.kron(coarse, np.ones((1, 4, 4, 1), "float32")).astype("uint8")


def test_the_whitening_kernel_decorrelates_the_training_patches():
    x = _images(200)
    mean, std = [127.0] * 3, [70.0] * 3
    k = airbench.whitening_kernel(x, mean, std)
    assert k.shape == (2, 2, 3, 24)
    np.testing.assert_allclose(k[..., 12:], -k[..., :12])  # each filter and its negative
    z = (x.astype("float64") - 127.0) / 70.0
    patches = np.stack(
        [z[:, i : 31 + i, j : 31 + j] for i in range(2) for j in range(2)], axis=3
    ).reshape(-1, 12)
    out = (patches - patches.mean(0)) @ k[..., :12].reshape(12, 12)
    cov = out.T @ out / len(out)
    # unit variance where the data varies, nothing shared between filters
    off = cov - np.diag(np.diag(cov))
    assert np.abs(off).max() < 1e-6
    assert np.diag(cov).max() < 1.0 and np.diag(cov)[-1] > 0.9


def test_identity_init_passes_each_input_channel_through():
    rng = np.random.default_rng(0)
    k = airbench.identity_kernel(rng.normal(size=(3, 3, 4, 6)))
    x = rng.normal(size=(5, 5, 4))
    out = np.einsum("ijc,ijco->o", x[1:4, 1:4], k)  # the centre pixel's output
    np.testing.assert_allclose(out[:4], x[2, 2])
    assert np.abs(k[..., 4:]).sum() > 0  # the other filters keep their random start
    narrow = airbench.identity_kernel(np.ones((3, 3, 6, 4)))
    assert narrow[1, 1, :4, :4].tolist() == np.eye(4).tolist()


def test_the_airbench_network_has_its_parts_and_takes_its_initialisation_from_data():
    cfg = _cfg(network=dict(arch="airbench", widths=[16, 32, 32]))
    m = models.build(cfg)
    whiten = m.get_layer(airbench.WHITEN)
    assert whiten.kernel.shape == (2, 2, 3, 24) and whiten.bias.shape == (24,)
    trainable = {v.path for v in m.trainable_variables}
    assert "whiten/bias" in trainable and "whiten/kernel" not in trainable
    no_bias = _cfg(network=dict(arch="airbench", widths=[16, 32, 32], whiten_bias_epochs=0))
    assert models.build(no_bias).get_layer(airbench.WHITEN).bias is None
    assert m.get_layer("head_scale").scale == pytest.approx(1 / 9)
    bn = m.get_layer("group1_conv1_bn")
    assert not bn.scale and bn.momentum == pytest.approx(0.6)
    assert m.get_layer("group1_conv1_act").activation.__name__ == "gelu"
    assert m.output_shape == (None, 10)
    x = _images(32)
    airbench.init_from_data(m, cfg, x)
    np.testing.assert_allclose(
        np.asarray(whiten.kernel),
        airbench.whitening_kernel(x, cfg.stats.mean, cfg.stats.std),
        rtol=1e-6,
    )
    k = np.asarray(m.get_layer("group2_conv1").kernel)  # 16 -> 32: 16 identity filters
    assert k[1, 1, :, :16].tolist() == np.eye(16).tolist()
    plain = _cfg(network=dict(arch="airbench", widths=[16, 32, 32], whiten=False, head_scale=1.0))
    names = {layer.name for layer in models.build(plain).layers}
    assert "stem" in names and airbench.WHITEN not in names and "head_scale" not in names


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_whitening_bias_trains_for_its_epochs_then_stays_and_its_kernel_never_trains(
    backend,
):
    """airbench's whitening layer under ``fit``: its bias trains at the base rate for
    ``whiten_bias_epochs`` epochs, then stays exactly (its momentum cleared too); its
    kernel, computed from the images, never moves."""
    code = """
        import numpy as np, keras
        from cifarlab.models import airbench
        from cifarlab import config, models
        from cifarlab.data import batches
        from cifarlab.training import recipe
        x = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3)).astype("uint8")
        y = batches.one_hot(np.arange(32) % 10, 10)

        def run(epochs, bias_lr_scale):
            cfg = config.model_config("tuned", "smoke").with_stats([125.0] * 3, [63.0] * 3, 10)
            cfg = cfg.replace(
                epochs=4, batch_size=32,
                optimizer="sgd", lookahead=0, bias_lr_scale=bias_lr_scale,
                network=dict(arch="airbench", widths=[8, 16, 16], whiten_bias_epochs=2),
            )
            keras.utils.set_random_seed(0)
            m = models.build(cfg)
            airbench.init_from_data(m, cfg, x)
            recipe.compile_model(m, cfg, 4)  # 4 epochs of one step: the bias trains 2 steps
            assert m.optimizer.stop_after == {"whiten/bias": 2}, m.optimizer.stop_after
            w = m.get_layer("whiten")
            kernel, seen = np.array(w.kernel), [np.array(w.bias)]
            grab = keras.callbacks.LambdaCallback(
                on_epoch_end=lambda e, logs: seen.append(np.array(w.bias))
            )
            m.fit(x, y, batch_size=32, epochs=epochs, verbose=0, shuffle=False, callbacks=[grab])
            np.testing.assert_array_equal(np.array(w.kernel), kernel)
            return [b - a for a, b in zip(seen, seen[1:])]

        moved = run(4, 64)
        size = [float(np.abs(d).max()) for d in moved]
        assert size[0] > 1e-5 and size[1] > 1e-5 and size[2] == size[3] == 0.0, size
        # the batch-norm biases' 64x step is not the whitening bias's: its first step
        # moves it as far as without the larger step
        np.testing.assert_allclose(run(1, 1)[0], moved[0], rtol=1e-4, atol=1e-7)
        print("ok")
    """
    r = python_with(code, backend)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


def test_the_linear_schedule_warms_up_then_decays_to_its_end():
    cfg = _cfg(schedule="linear", learning_rate=1.0, warmup_fraction=0.25, warmup_start=0.2,
               decay_to=0.07)  # fmt: skip
    lr = recipe.learning_rate(cfg, 100)
    at = [float(lr(s)) for s in (0, 25, 100, 200)]
    assert at == pytest.approx([0.2, 1.0, 0.07, 0.07], abs=1e-6)
    assert float(lr(12)) == pytest.approx(0.2 + 0.8 * 12 / 25, abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bias_step_and_lookahead_act_under_fit_on_every_backend(backend):
    """The biases' larger step and the lookahead live in the optimizer, so they hold
    under ``fit`` on TensorFlow, JAX and torch: measured on the weights fit leaves."""
    code = """
        import numpy as np, keras
        from cifarlab import config
        from cifarlab.data import batches
        from cifarlab.training import recipe
        x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
        y = batches.one_hot(np.arange(16) % 8, 8)  # more classes than top-5

        def run(epochs=3, steps=1, **kw):
            keras.utils.set_random_seed(0)
            inp = keras.Input((4,))
            h = keras.layers.Dense(8, use_bias=False, name="d")(inp)
            h = keras.layers.BatchNormalization(scale=False, name="bn")(h)
            m = keras.Model(inp, keras.layers.Dense(8, activation="softmax", name="o")(h))
            cfg = config.TrainConfig("tuned", optimizer="sgd", learning_rate=0.1, momentum=0.0,
                                     schedule="constant", **kw)
            recipe.compile_model(m, cfg, steps)  # the lookahead's ramp: full after steps
            before = [np.array(v) for v in (m.get_layer("d").kernel, m.get_layer("bn").beta)]
            m.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=False)
            after = [np.array(v) for v in (m.get_layer("d").kernel, m.get_layer("bn").beta)]
            return before, after, type(m.optimizer).__name__

        b1, a1, _ = run(epochs=1)  # one step from the same start: the steps compare
        b64, a64, name = run(epochs=1, bias_lr_scale=64)
        assert name == "AirbenchSGD", name
        assert np.abs(a1[1] - b1[1]).max() > 1e-6
        np.testing.assert_allclose(a64[1] - b64[1], 64 * (a1[1] - b1[1]), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(a64[0] - b64[0], a1[0] - b1[0], rtol=1e-4, atol=1e-7)
        # the average starts at the weights after the first step (its ramp starts at 0);
        # with momentum 1 it stays there, and written back every step it holds them there
        _, held, _ = run(lookahead=1, lookahead_momentum=1.0)
        np.testing.assert_allclose(held[0], a1[0], atol=1e-6)
        _, plain, _ = run()
        assert np.abs(plain[0] - a1[0]).max() > 1e-4  # without it they move on
        _, same, _ = run(lookahead=1, lookahead_momentum=0.0)  # the average is the weights
        np.testing.assert_allclose(same[0], plain[0], atol=1e-6)
        # airbench's lookahead: the average moves only when it is written (every 2 steps
        # here), by momentum ** 2 times the ramp (step / steps) ** 3: after 2 of 4 steps
        # the weights are d * w1 + (1 - d) * w2, d = 0.5 ** 2 * (2 / 4) ** 3
        _, w2, _ = run(epochs=2)
        _, la, _ = run(epochs=2, steps=4, lookahead=2, lookahead_momentum=0.5)
        d = 0.25 * 0.125
        assert np.abs(w2[0] - a1[0]).max() > 1e-3
        np.testing.assert_allclose(la[0], d * a1[0] + (1 - d) * w2[0], atol=1e-6)
        # fit again after the lookahead wrote its average into the weights (under JAX the
        # two once shared a buffer and the second fit failed), for SGD and Adam alike
        for optimizer in ("sgd", "adam"):
            m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="softmax")])
            cfg = config.TrainConfig("tuned", optimizer=optimizer, learning_rate=0.1,
                                     schedule="constant", lookahead=2)
            recipe.compile_model(m, cfg, 4)
            m.fit(x, y, batch_size=8, epochs=1, verbose=0)
            w = np.array(m.weights[0])
            m.fit(x, y, batch_size=8, epochs=1, verbose=0)
            assert np.abs(np.array(m.weights[0]) - w).max() > 1e-6, optimizer
        print("ok")
    """
    r = python_with(code, backend)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


@pytest.mark.parametrize("backend", BACKENDS)
def test_muon_steps_the_filters_by_an_orthogonalised_momentum_under_fit(backend):
    """With ``muon_lr`` the conv filters move by an (almost) orthogonal matrix after
    being scaled to norm sqrt(out), the rest by SGD as before: one step of ``fit``."""
    code = """
        import numpy as np, keras
        from cifarlab import config
        from cifarlab.data import batches
        from cifarlab.training import recipe
        x = np.random.default_rng(0).normal(size=(16, 6, 6, 3)).astype("float32")
        y = batches.one_hot(np.arange(16) % 9, 9)  # 9 classes: a full-rank gradient

        def run(**kw):
            keras.utils.set_random_seed(0)
            inp = keras.Input((6, 6, 3))
            h = keras.layers.Conv2D(8, 3, use_bias=False, name="c")(inp)
            h = keras.layers.GlobalAveragePooling2D()(h)
            m = keras.Model(inp, keras.layers.Dense(9, activation="softmax", name="o")(h))
            cfg = config.TrainConfig("tuned", optimizer="sgd", learning_rate=0.1,
                                     momentum=0.85, schedule="constant", **kw)
            recipe.compile_model(m, cfg, 1)
            before = [np.array(v) for v in (m.get_layer("c").kernel, m.get_layer("o").kernel)]
            m.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
            after = [np.array(v) for v in (m.get_layer("c").kernel, m.get_layer("o").kernel)]
            return before, after, type(m.optimizer).__name__

        b, a, _ = run()
        bm, am, name = run(muon_lr=0.24)
        assert name == "AirbenchSGD", name
        np.testing.assert_allclose(am[1] - bm[1], a[1] - b[1], rtol=1e-4, atol=1e-7)
        fixed = bm[0] * np.sqrt(8) / np.linalg.norm(bm[0])
        step = (fixed - am[0]) / 0.24  # the schedule at its peak: the full muon_lr
        s = np.linalg.svd(step.reshape(-1, 8), compute_uv=False)
        assert 0.5 < s.min() and s.max() < 1.3, s  # Newton-Schulz: all near 1
        g = np.linalg.svd((b[0] - a[0]).reshape(-1, 8), compute_uv=False)
        assert g.max() / g.min() > 2, g  # while SGD's step keeps the gradient's spread
        assert float(np.sum(step * (b[0] - a[0]))) > 0  # and it still goes downhill
        print("ok")
    """
    r = python_with(code, backend)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


def test_alternating_flips_show_each_image_both_ways_every_two_epochs():
    n = 41
    x = np.arange(n, dtype="float32").reshape(n, 1, 1, 1).repeat(2, 2)
    x[:, :, 1] += 1000
    y = np.arange(n) % 10
    cfg = _cfg(flip=True, flip_mode="alternate", batch_size=8)
    seq = batches.training_batches(x, y, cfg, seed=3)
    assert seq.alternate and seq.x_mirror is not None

    def mirrored(s):  # per image (in id order): shown mirrored this epoch?
        xs = np.concatenate([s[i][0] for i in range(len(s))])
        ids = xs.min(axis=(1, 2, 3)).astype(int)
        flags = np.zeros(n, bool)
        flags[ids] = xs[:, 0, 0, 0] >= 1000
        return flags

    e0 = mirrored(seq)
    assert 5 < e0.sum() < n - 5
    seq.on_epoch_end()
    e1 = mirrored(seq)
    seq.on_epoch_end()
    e2 = mirrored(seq)
    np.testing.assert_array_equal(e1, ~e0)
    np.testing.assert_array_equal(e2, e0)
    resumed = batches.training_batches(x, y, cfg, seed=3, first_epoch=1)
    np.testing.assert_array_equal(mirrored(resumed), e1)
    # the model then has no random flip layer of its own
    names = [layer.name for layer in models.build(cfg).get_layer("augment").layers]
    assert not any("flip" in name for name in names)


def test_whole_pixel_shifts_are_reflect_padded_crops_at_uniform_offsets():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    cfg = _cfg(flip=False, translate=2 / 32, pixel_shifts=True, batch_size=16)
    seq = batches.training_batches(x, np.arange(40) % 10, cfg, seed=0)
    assert seq.shift == 2  # the batches shift; the model has no translation layer
    assert "augment" not in [layer.name for layer in models.build(cfg).layers]
    counts = np.zeros((5, 5), int)
    for _ in range(30):
        for i in range(len(seq)):
            for row, image in zip(seq.indices(i), seq[i][0]):
                down, right = seq.shifts[row]
                padded = np.pad(x[row], ((2, 2), (2, 2), (0, 0)), mode="reflect")
                want = padded[2 - down : 34 - down, 2 - right : 34 - right]
                np.testing.assert_array_equal(image, want)  # every pixel an input pixel
                counts[down + 2, right + 2] += 1
        seq.on_epoch_end()
    assert counts.sum() == 1200 and counts.min() > 20  # all 25 offsets, about 48 each
    interpolated = _cfg(flip=False, translate=2 / 32, pixel_shifts=False)
    assert batches.training_batches(x, np.arange(40) % 10, interpolated, seed=0).shift == 0
    layers = [layer.name for layer in models.build(interpolated).get_layer("augment").layers]
    assert any("translation" in name for name in layers)


def test_shrunk_batches_are_area_averages_of_the_same_crops():
    x = _images(40)
    half = batches.downsample(x, 16)  # 32 -> 16: each pixel the mean of its 2x2 block
    want = x.astype("float32").reshape(40, 16, 2, 16, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(half, want, rtol=1e-6)
    small = batches.downsample(x, 24)  # a flat image stays flat, every image keeps its mean
    np.testing.assert_allclose(small.mean(axis=(1, 2)), x.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(batches.downsample(np.full((1, 32, 32, 3), 7, "uint8"), 24), 7)
    cfg = _cfg(
        network=dict(arch="airbench", widths=[16, 32, 32]), epochs=3, batch_size=16,
        translate=2 / 32, pixel_shifts=True, low_res=24, low_res_epochs=2,
    )  # fmt: skip
    seq = batches.training_batches(x, np.arange(40) % 10, cfg, seed=0)
    full = batches.training_batches(x, np.arange(40) % 10, cfg.full_size(), 0)
    for epoch in range(3):  # the first two epochs shrunk, then full size: the same crops
        for i in range(len(seq)):
            got, want = seq[i][0], full[i][0]
            if epoch < 2:
                assert got.shape[1:] == (24, 24, 3)
                np.testing.assert_allclose(got, batches.downsample(want, 24), rtol=1e-6)
            else:
                np.testing.assert_array_equal(got, want)
        seq.on_epoch_end()
        full.on_epoch_end()
    for bad in (
        dict(low_res_epochs=0),
        dict(low_res=24, low_res_epochs=3),
        dict(low_res=8, low_res_epochs=1),
    ):
        with pytest.raises(config.CifarlabError, match="low_res"):
            cfg.replace(**bad).validate()
    with pytest.raises(config.CifarlabError, match="airbench"):
        _cfg(low_res=24, low_res_epochs=1).validate()  # the smoke ResNet: not this network


def test_a_network_trained_on_shrunk_early_epochs_is_saved_at_full_size(tmp_path, tiny_data):
    import keras

    from cifarlab.models.flops import count_flops, count_flops_at
    from cifarlab.training.train import train_model

    cfg = config.airbench_config(
        "smoke", epochs=2, batch_size=50, low_res=16, low_res_epochs=1,
        network=dict(arch="airbench", widths=[8, 16, 16]), tta_flip=False, tta_shift=0,
    )  # fmt: skip
    meta = train_model("tuned", str(tiny_data), "smoke", tmp_path, train_config=cfg, progress=False)
    assert meta["epochs_run"] == 2 and meta["config"]["low_res"] == 16
    model = keras.saving.load_model(tmp_path / "saved_models" / "tuned.keras", safe_mode=True)
    assert model.input_shape == (None, 32, 32, 3)  # as every other saved model
    assert model.predict(_images(4), verbose=0).shape == (4, 10)
    # its FLOPs in a shrunk epoch (benchmarks/frontier.py counts them): about (15 / 31)^2
    full, small = count_flops(model), count_flops_at(model, 16)
    assert count_flops_at(model, 32) == full and 0.2 < small / full < 0.3


def _shift(x, s):
    """x shifted by s pixels down-right (reflected at the border), in NumPy."""
    p = np.pad(x, ((0, 0), (abs(s), abs(s)), (abs(s), abs(s)), (0, 0)), mode="reflect")
    o = abs(s) + s
    return p[:, o : o + x.shape[1], o : o + x.shape[2]]


def test_six_view_test_time_augmentation_is_inside_the_saved_model(tmp_path):
    import keras

    cfg = _cfg(tta_flip=True, tta_shift=1)  # the small ResNet: outputs far from uniform
    net = models.build(cfg)
    x = _images(6, seed=2)
    evidence.model_for_saving(net, cfg).save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)

    def p(v):
        return net.predict(v.astype("float32"), verbose=0)

    m = x[:, :, ::-1]
    unshifted = (p(x) + p(m)) / 2
    shifted = (p(_shift(x, 1)) + p(_shift(m, 1)) + p(_shift(x, -1)) + p(_shift(m, -1))) / 4
    want = (unshifted + shifted) / 2
    np.testing.assert_allclose(loaded.predict(x, verbose=0), want, atol=1e-5)
    assert np.abs(want - unshifted).max() > 1e-5  # the shifted views count
    assert tta.is_wrapped(loaded) and tta.network(loaded).name == "tuned"
    assert len(tta.network(loaded).layers) == len(net.layers)


def test_the_search_space_holds_the_airbench_family_and_builds_its_winner():
    import keras_tuner as kt

    hp = kt.HyperParameters()
    tune.config_from_hp(hp, config.model_config("tuned", "smoke"))
    space = {p.name for p in hp.space}
    assert {
        "arch", "widths", "whiten", "whiten_bias", "bn_scale", "activation", "identity_init", "head_scale",
        "l2", "bias_lr_scale", "lookahead", "schedule", "pixel_shifts", "flip_mode",
        "tta_shift", "label_smoothing", "warmup_fraction",
    } <= space  # fmt: skip
    hp = kt.HyperParameters()
    hp.Fixed("arch", "airbench")
    cfg = tune.config_from_hp(hp, _cfg())
    assert cfg.network["arch"] == "airbench" and cfg.network["widths"] == [64, 256, 256]
    assert cfg.weight_decay == 0.0  # the airbench family decays by coupled L2
    built = models.build(cfg.replace(network={**cfg.network, "widths": [8, 16, 16]}))
    assert built.get_layer(airbench.WHITEN) is not None


PARTS = ["whitening", "test-time-views"]


@pytest.fixture(scope="module")
def ablated(tmp_path_factory, tiny_data):
    """One ablation run (the whole recipe, and without two parts), for the tests below."""
    from cifarlab import ablation

    out = tmp_path_factory.mktemp("ablation")
    table = ablation.run_ablation(tiny_data, "smoke", out, parts=PARTS, epochs=1, progress=False)
    return out, table


def test_the_ablation_refuses_a_part_it_does_not_know(tmp_path, tiny_data):
    from cifarlab import ablation
    from cifarlab.errors import CifarlabError

    with pytest.raises(CifarlabError, match="unknown part"):
        ablation.run_ablation(tiny_data, "smoke", tmp_path, parts=["wings"], progress=False)


def test_the_ablation_trains_the_whole_recipe_and_each_part_removed(ablated):
    from cifarlab import layout

    tmp_path, table = ablated
    assert table["part removed"].tolist() == ["whole", *PARTS]
    assert table["vs_whole"].iloc[0] == 0 and table["test_images"].eq(100).all()
    out = layout.Layout(tmp_path)
    saved = {
        p: json.loads(out.ablation_run(p).meta("tuned").read_text())["config"]
        for p in table["part removed"]
    }
    assert saved["whole"]["network"]["whiten"] and not saved["whitening"]["network"]["whiten"]
    assert saved["whole"]["tta_shift"] == 1 and saved["test-time-views"]["tta_shift"] == 0
    assert saved["whole"]["epochs"] == 1
    assert "| whole |" in out.ablation_md.read_text()
    assert out.figure("ablation_minutes").read_bytes()[:4] == b"\x89PNG"  # accuracy vs minutes


def test_the_ablation_scores_what_plain_keras_predicts_from_the_saved_file(ablated, tiny_data):
    import keras

    from cifarlab import data, layout

    tmp_path, table = ablated
    ds = data.load_dataset(str(tiny_data), progress=False)
    path = layout.Layout(tmp_path).ablation_run("whole").model("tuned")
    m = keras.saving.load_model(path, safe_mode=True)
    acc = (m.predict(ds.x_test, verbose=0).argmax(1) == ds.y_test).mean()
    assert table["test_accuracy"].iloc[0] == pytest.approx(acc)


def test_the_ablation_reads_finished_runs_back_instead_of_training_again(
    ablated, tiny_data, monkeypatch
):
    from cifarlab import ablation
    from cifarlab.training import train

    tmp_path, table = ablated
    monkeypatch.setattr(train, "train_model", lambda *a, **k: pytest.fail("retrained"))
    again = ablation.run_ablation(
        tiny_data, "smoke", tmp_path, parts=PARTS, epochs=1, progress=False
    )
    assert again["test_accuracy"].tolist() == table["test_accuracy"].tolist()


def test_the_frontier_script_reads_accuracy_and_minutes_from_the_saved_runs(ablated, tiny_data):
    """benchmarks/frontier.py: the same runs' accuracy against minutes, from the saved files."""
    from cifarlab import layout

    tmp_path, table = ablated
    out = layout.Layout(tmp_path)
    frontier = _frontier_script()
    runs = [f"{p}={out.ablation_run(p).root}" for p in ("whole", "whitening")]
    front = frontier.frontier(runs, tmp_path / "front.png", "t")
    assert front["test accuracy"].tolist() == [
        f"{100 * a:.2f}%" for a in table["test_accuracy"].iloc[:2]
    ]
    assert front["network"].iloc[0].startswith("airbench") and front["epochs"].eq(1).all()
    assert (tmp_path / "front.png").read_bytes()[:4] == b"\x89PNG"


def test_the_frontier_counts_the_images_of_the_librarys_own_split(ablated, tiny_data):
    from cifarlab import data, layout

    tmp_path, _ = ablated
    frontier = _frontier_script()
    cfg = json.loads(layout.Layout(tmp_path).ablation_run("whole").meta("tuned").read_text())[
        "config"
    ]
    ds = data.load_dataset(str(tiny_data), progress=False)
    split = data.split_train_val(ds, cfg["val_fraction"], 0, limit=cfg["dataset_limit"])
    assert frontier.split_sizes(len(ds.y_train), cfg) == (len(split.y_train), len(split.y_val))
    assert frontier.split_sizes(50_000, {**cfg, "dataset_limit": None}) == (40_000, 10_000)


def test_the_frontier_script_refuses_a_run_without_a_folder(tmp_path):
    frontier = _frontier_script()
    assert frontier.main(["whole", "--figure", str(tmp_path / "x.png")]) == 2  # no FOLDER
    assert frontier.main([f"a={tmp_path}/nowhere", "--figure", str(tmp_path / "x.png")]) == 2


def _frontier_script(name="frontier"):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_variants_script_trains_each_variant_once_and_tables_them(tmp_path, tiny_data):
    """benchmarks/variants.py: LABEL=KEY=VALUE,... on the profile's airbench recipe."""
    variants = _frontier_script("variants")
    assert variants.parse_variant("24px=epochs=2,low_res=24,flip_mode=alternate") == (
        "24px",
        {"epochs": 2, "low_res": 24, "flip_mode": "alternate"},
    )
    for bad in ("no label", "x=epochs"):
        with pytest.raises(SystemExit, match="variants"):
            variants.parse_variant(bad)
    runs = [
        ("full 2", {"epochs": 2}),
        ("16px 1 of 2", dict(epochs=2, low_res=16, low_res_epochs=1)),
    ]
    table = variants.run_variants(str(tiny_data), "smoke", tmp_path, 0, runs, "t")
    assert table["run"].tolist() == ["full 2", "16px 1 of 2"] and table["epochs"].eq(2).all()
    saved = [
        tmp_path / folder / "saved_models" / "tuned.keras" for folder in ("full-2", "16px-1-of-2")
    ]
    stamps = [path.stat().st_mtime_ns for path in saved]
    again = variants.run_variants(str(tiny_data), "smoke", tmp_path, 0, runs, "t")  # read back
    assert [path.stat().st_mtime_ns for path in saved] == stamps
    assert again["test accuracy"].tolist() == table["test accuracy"].tolist()


def test_the_compute_figure_is_drawn_from_the_benchmarks_table(tmp_path):
    frontier = _frontier_script()
    md = tmp_path / "B.md"
    md.write_text(
        "# B\n\n## 2026, accuracy against training compute\n\ntext\n\n"
        "| data | recipe | network | fwd MFLOP | epochs | training PFLOP | test accuracy |\n"
        "|---|---|---|---|---|---|---|\n"
        "| C10 | old tuned | plain CNN | 75.6 | 24 | 0.236 | 85.30% |\n"
        "| C10 | **airbench, new** | 64/256/256 | 236 | 13 | 0.399 | **90.12%** |\n"
        "| C100 | old tuned | plain CNN | 134 or 247 | 24 | 0.418 or 0.771 | 63.1% |\n"
        "\n| other | table |\n|---|---|\n| 1 | 2 |\n## next\n"
    )
    table = frontier.compute_table(md)
    assert table["accuracy"].tolist() == [85.30, 90.12, 63.1]  # bold and % gone
    assert table["recipe"].tolist() == ["old tuned", "airbench, new", "old tuned"]
    assert table[["pflop_low", "pflop_high"]].iloc[2].tolist() == [0.418, 0.771]  # a range
    assert frontier.main(["--from-table", str(md), "--figure", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    # the real table parses: every row has its compute and accuracy, both recipes appear
    real = frontier.compute_table(ROOT / "BENCHMARKS.md")
    assert real["recipe"].str.startswith("old").any() and (real["accuracy"] > 50).all()
    assert (real["pflop_low"] > 0).all() and set(real["data"]) >= {"CIFAR-100"}
    # neither runs nor a table, both, or a file without the table: an error, not a traceback
    assert frontier.main(["--figure", str(tmp_path / "x.png")]) == 2
    assert frontier.main(["a=b", "--from-table", str(md), "--figure", "x.png"]) == 2
    (tmp_path / "none.md").write_text("# nothing here\n")
    assert frontier.main(["--from-table", str(tmp_path / "none.md"), "--figure", "x.png"]) == 2


def test_a_recipe_with_shrunk_epochs_searches_at_full_size_and_trains_shrunk(monkeypatch):
    import keras_tuner as kt

    shrunk = {**config.RECIPES["tuned"]["cpu"], "low_res": 24, "low_res_epochs": 5}
    monkeypatch.setitem(config.RECIPES["tuned"], "cpu", shrunk)
    cpu = config.model_config("tuned", "cpu")
    assert (cpu.low_res, cpu.low_res_epochs, cpu.epochs) == (24, 5, 13)
    # the trials compare at full size; the final training shrinks as the recipe has it
    trial = tune.trial_config("cpu", config.SEARCH_BUDGET["cpu"]["batch_size"])
    assert trial.low_res_epochs == 0 and trial.full_size() == trial
    final = tune.final_config(kt.HyperParameters(), trial, cpu)
    assert (final.low_res, final.low_res_epochs, final.epochs) == (24, 5, 13)
    # another --epochs keeps the share of shrunk ones (one epoch: at full size)
    assert config.model_config("tuned", "cpu", epochs=3).low_res_epochs == 1
    assert config.model_config("tuned", "cpu", epochs=1).low_res == 0


def test_on_a_gpu_and_a_cpu_the_search_starts_from_airbench():
    import keras_tuner as kt

    full = config.model_config("tuned", "full")
    assert full.network["arch"] == "airbench" and full.network["widths"] == [64, 256, 256]
    assert (full.batch_size, full.epochs, full.learning_rate) == (1024, 10, 1.5)
    assert config.SEARCH_BUDGET["full"]["batch_size"] == full.batch_size  # no rate rescaling
    first = tune.config_from_hp(kt.HyperParameters(), full)  # the defaults: the recipe itself
    assert first.to_dict() == full.to_dict()
    # cpu: the airbench recipe at airbench94's widths, batch 512 (the ablation's base too)
    cpu = config.model_config("tuned", "cpu")
    assert cpu.network["arch"] == "airbench" and cpu.network["widths"] == [64, 256, 256]
    assert (cpu.batch_size, cpu.epochs, cpu.learning_rate) == (512, 13, 0.75)
    assert cpu.network["whiten"] and cpu.lookahead == 5 and cpu.tta_shift == 1
    assert config.airbench_config("cpu").to_dict() == cpu.to_dict()
    assert "width" not in cpu.network  # no residual-net keys in an airbench config
    # its trials may not take widths past the cpu budget's (128/384/384 is 2.5x the FLOPs)
    budget = config.SEARCH_BUDGET["cpu"]
    hp = kt.HyperParameters()
    tune.config_from_hp(hp, cpu, budget["widths"])
    assert hp.get("widths") == "64-256-256"
    cpu_widths = {p.name: p for p in hp.space}["widths"].values
    assert "128-384-384" not in cpu_widths and len(cpu_widths) == len(budget["widths"])
    full_hp = kt.HyperParameters()
    tune.config_from_hp(full_hp, full, config.SEARCH_BUDGET["full"]["widths"])
    assert "128-384-384" in {p.name: p for p in full_hp.space}["widths"].values
    # the notebook's table of the space shows each profile's own first trial and widths
    shown = tune.describe_space("cpu").set_index("hyperparameter")
    assert shown.loc["arch", "default"] == "airbench"
    assert shown.loc["widths", "values"] == [tune._widths(w) for w in budget["widths"]]
    assert tune.describe_space("smoke").set_index("hyperparameter").loc["arch", "default"] == (
        "resnet"
    )
    # cpu searches the airbench family only: every trial a candidate (residual nets
    # without batch norm scored near chance at this budget); smoke and full keep both
    assert budget["families"] == ["airbench"] and shown.loc["arch", "values"] == ["airbench"]
    assert not {"width", "depth", "batch_norm", "weight_decay"} & set(shown.index)
    hp = kt.HyperParameters()
    assert tune.config_from_hp(hp, cpu, budget["widths"], budget["families"]) == cpu
    smoke = tune.describe_space("smoke").set_index("hyperparameter")
    assert set(smoke.loc["arch", "values"]) == {"resnet", "airbench"} and "width" in smoke.index
    # a budget's families never leave out the recipe's own
    smoke_cfg = config.model_config("tuned", "smoke")
    hp = kt.HyperParameters()
    tune.config_from_hp(hp, smoke_cfg, None, ["airbench"])
    assert set({q.name: q for q in hp.space}["arch"].values) == {"resnet", "airbench"}


def test_the_ablation_reports_superclass_accuracy_on_cifar100(tmp_path, official_md5):
    from conftest import make_cifar100_archive

    from cifarlab import ablation, data
    from cifarlab.errors import CifarlabError

    archive = tmp_path / "cifar-100-python.tar.gz"
    official_md5("cifar100", make_cifar100_archive(archive, n_train=1000, n_test=200)["md5"])
    out = tmp_path / "out"
    with pytest.raises(CifarlabError, match="widths"):
        ablation.run_ablation(str(archive), "smoke", out, parts=[], widths=[8, 16], progress=False)
    table = ablation.run_ablation(
        str(archive), "smoke", out, parts=[], epochs=1, widths=[8, 20, 12], progress=False
    )
    assert table["part removed"].tolist() == ["whole"]
    ds = data.load_dataset(str(archive), progress=False)
    import keras

    from cifarlab.layout import Layout

    run = Layout(out).ablation_run("whole")
    assert json.loads(run.meta("tuned").read_text())["config"]["network"]["widths"] == [8, 20, 12]
    m = keras.saving.load_model(run.model("tuned"), safe_mode=True)
    convs = {w.shape[-1] for w in m.weights if len(w.shape) == 4}  # conv kernels' outputs
    assert {8, 20, 12} <= convs and 32 not in convs  # the groups as asked, not smoke's
    x, y = ds.x_test, ds.y_test
    guess = m.predict(x, verbose=0).argmax(1)
    f2c = ds.fine_to_coarse
    assert table["test_images"].iloc[0] == len(y)
    assert table["superclass_accuracy"].iloc[0] == pytest.approx((f2c[guess] == f2c[y]).mean())
    assert "superclass_accuracy" in Layout(out).ablation_md.read_text()
