"""Backend-specific gradients (activation patterns, Grad-CAM) on every installed backend."""

from __future__ import annotations

import pytest
from conftest import BACKENDS, python_with

_TUNED = """
    import numpy as np, keras
    from pathlib import Path
    from cifarlab import config, models
    from cifarlab.evaluation import visualize
    cfg = config.model_config("tuned", "smoke").with_stats([120.0] * 3, [60.0] * 3, 10)
    keras.utils.set_random_seed(0)  # an unseeded net may show no positive evidence at all
    m = models.build_tuned(cfg)
    imgs = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_input_gradient_is_the_backends_own_autodiff(backend):
    code = """
        import numpy as np, keras
        from cifarlab.evaluation import visualize
        # d/dx sum(x^2) = 2x, through the backend's own autodiff
        x = np.arange(6, dtype="float32").reshape(2, 3)
        v, g = visualize.input_gradient(lambda t: keras.ops.sum(t * t), x)
        assert abs(v - float((x * x).sum())) < 1e-4 and np.allclose(g, 2 * x), g
        print("ok")
    """
    r = python_with(code, backend)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcam_explains_the_class_given_each_image_as_on_its_own(backend, tmp_path):
    code = (
        _TUNED
        + f"""
    probs = m.predict(imgs, verbose=0)
    out = Path(r"{tmp_path}")
    p1 = visualize.activation_patterns("tuned", m, out / "p.png", n_filters=2, steps=2)
    p2 = visualize.gradcam("tuned", m, imgs, np.arange(4), probs, [str(i) for i in range(10)],
                           out / "g.png", n=2)
    assert p1.stat().st_size > 5000 and p2.stat().st_size > 5000
    # Grad-CAM of a batch in one gradient call = each image's map on its own
    classes = np.array([3, 0, 7, 3])
    cams, layer = visualize.gradcam_maps(m, imgs, classes)
    alone = np.concatenate([visualize.gradcam_maps(m, imgs[i:i + 1], classes[i:i + 1])[0]
                            for i in range(4)])
    assert cams.shape == (4, 8, 8) and layer == visualize.block_outputs(m)[-1], cams.shape
    np.testing.assert_allclose(cams, alone, atol=1e-5)
    top = cams.max(axis=(1, 2))  # each map scaled to 1, or all 0 (no positive evidence)
    assert cams.min() >= 0 and (np.isclose(top, 1, atol=1e-6) | (top == 0)).all(), top
    assert np.isclose(top, 1, atol=1e-6).any(), top
    other = visualize.gradcam_maps(m, imgs, np.array([5, 5, 5, 5]))[0]
    assert np.abs(other - cams).max() > 1e-3  # the class given is the one explained
    print("ok")
"""
    )
    r = python_with(code, backend)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


def test_the_initial_filters_are_rebuilt_exactly_as_training_started(tmp_path, tiny_data):
    """A model trained at a learning rate of 0 keeps its start: the filters rebuilt from
    its saved config and seed are those it holds, so the figure's 'initial' row is true."""
    from cifarlab import config
    from cifarlab.evaluation import visualize
    from cifarlab.training.train import train_model

    cfg = config.model_config("baseline", "smoke").replace(epochs=1, learning_rate=0.0)
    train_model("baseline", str(tiny_data), "smoke", tmp_path, seed=3, train_config=cfg,
                progress=False)  # fmt: skip
    assert visualize.filter_change(tmp_path, "baseline") == pytest.approx(0.0, abs=1e-6)
    cfg = cfg.replace(learning_rate=0.01)
    train_model("baseline", str(tiny_data), "smoke", tmp_path, seed=3, train_config=cfg,
                progress=False)  # fmt: skip
    assert visualize.filter_change(tmp_path, "baseline") > 1e-3  # training moved them
