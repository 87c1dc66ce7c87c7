"""The benchmark's arithmetic: FLOP counting and the choice of the fastest backend."""

from __future__ import annotations

import numpy as np

from cifarlab import backend, config, models
from cifarlab.bench import pipeline
from cifarlab.bench import throughput as bench
from cifarlab.models.flops import count_flops


def test_forward_flops_of_the_baseline_match_a_hand_count():
    cfg = config.model_config("baseline", "smoke").with_stats([0.0] * 3, [1.0] * 3, 10)
    # 2 FLOPs per multiply-add: H*W*k*k*Cin*Cout per conv, in*out per dense layer
    block1 = 32 * 32 * 9 * (3 * 32 + 2 * 32 * 32)
    block2 = 16 * 16 * 9 * (32 * 64 + 3 * 64 * 64)
    dense = 8 * 8 * 64 * 512 + 512 * 10
    assert count_flops(models.build(cfg)) == 2 * (block1 + block2 + dense) == 109_783_040


def test_the_airbench_network_costs_what_airbench94_costs():
    """At its default widths the family is airbench94's network: about 236 MFLOP per
    image and about 1.97 M parameters (../shared/FAST_RECIPES.md)."""
    from cifarlab.models import airbench

    cfg = config.model_config("tuned", "smoke").with_stats([0.0] * 3, [1.0] * 3, 10)
    cfg = cfg.replace(network={"arch": "airbench", **airbench.DEFAULTS})
    m = models.build(cfg)
    whiten = 31 * 31 * 4 * 3 * 24
    group1 = 31 * 31 * 9 * 24 * 64 + 15 * 15 * 9 * 64 * 64
    group2 = 15 * 15 * 9 * 64 * 256 + 7 * 7 * 9 * 256 * 256
    group3 = 7 * 7 * 9 * 256 * 256 + 3 * 3 * 9 * 256 * 256
    assert count_flops(m) == 2 * (whiten + group1 + group2 + group3 + 256 * 10)
    assert round(count_flops(m) / 1e6) == 236
    assert round(m.count_params() / 1e4) == 197


def _row(name, model, ips, precision="float32"):
    return {"backend": name, "model": model, "train_images_per_s": ips, "precision": precision}


def test_fastest_backend_compares_each_backends_own_precision_only():
    rows = [
        _row("tensorflow", "baseline", 1500, "mixed_bfloat16"),
        _row("tensorflow", "tuned", 500, "mixed_bfloat16"),
        _row("tensorflow", "baseline", 100),  # float32 extra rows must not count against it
        _row("tensorflow", "tuned", 100),
        _row("torch", "baseline", 900),
        _row("torch", "tuned", 450),
    ]
    assert backend.fastest_backend(rows, config.MODELS) == "tensorflow"
    rows[1]["train_images_per_s"] = 200  # now torch takes less total time
    assert backend.fastest_backend(rows, config.MODELS) == "torch"
    # a bench of one backend compares nothing: it must not become the default
    assert backend.fastest_backend(rows[4:], config.MODELS) is None


def test_markdown_table_has_a_row_per_measurement(tmp_path):
    result = {
        "command": "cifarlab bench",
        "date": "2026-11-21T00:00:00+00:00",
        "profile": "cpu",
        "steps": 20,
        "matmul_gflops": 200.0,
        "pipeline": {"decode_images_per_s": 1000.0},
        "hardware": {"processor": "x", "cpu_count": 2, "gpu": False},
        "versions": {"python": "3.11", "keras": "3"},
        "rows": [
            {
                **_row("tensorflow", "baseline", 100.0),
                "batch_size": 128,
                "infer_images_per_s": 400.0,
                "forward_mflops_per_image": 110.0,
                "train_gflops": 33.0,
                "fraction_of_roofline": 0.165,
                "speedup_vs_naive": 2.0,
            },
        ],
    }
    md = bench.markdown(result)
    assert "| baseline | tensorflow | float32 | 128 | 100 | 400 | 110 | 33 | 16% | 2.00x |" in md
    assert "decode images per s 1,000" in md


def test_epoch_starts_times_each_epoch_of_both_input_paths_and_the_table_says_so():
    e = pipeline.epoch_starts(epochs=2, steps=3, step_s=0.0)
    assert e["epochs"] == 2 and e["steps_per_epoch"] == 3
    assert set(e["waits_s"]) == {"arrays", "batches"}
    for waits in e["waits_s"].values():
        assert len(waits) == 2 and all(0 < w < 60 for w in waits)
    md = bench.markdown(
        {
            "command": "cifarlab bench --epoch-starts",
            "date": "2026-11-22T00:00:00+00:00",
            "profile": "cpu",
            "steps": 20,
            "matmul_gflops": 200.0,
            "pipeline": {},
            "hardware": {"processor": "x", "cpu_count": 2, "gpu": False},
            "versions": {"python": "3.11", "keras": "3"},
            "rows": [],
            "epoch_starts": {**e, "waits_s": {"arrays": [0.5, 31.0], "batches": [0.4, 0.1]}},
        }
    )
    assert "to `fit`: 0.5, 31.0 s; `Batches`: 0.4, 0.1 s." in md


def test_the_input_pipeline_rows_time_the_augmented_batches_of_both_recipes():
    """The per-batch work alone, in images per second: the classic augmentation layers and
    the airbench batches (alternating flips, 2-pixel crops); each must outrun training
    (on these 2 cores: 110-230 images/s, BENCHMARKS.md), with room for a busy machine."""
    rates = bench._pipeline(None, batch_size=16)
    assert set(rates) == {"batch_augment_images_per_s", "airbench_batches_images_per_s"}
    assert all(rate > 250 for rate in rates.values()), rates


def test_the_airbench_row_is_left_out_where_tuned_already_is_that_network():
    # cpu and full: the tuned recipe is the airbench network, measured once (as tuned)
    assert "airbench" not in bench._networks(bench.NETWORKS, "cpu")
    assert "tuned" in bench._networks(bench.NETWORKS, "full")
    assert bench._networks(bench.NETWORKS, "smoke") == list(bench.NETWORKS)  # a residual net
    assert bench._networks(["airbench"], "cpu") == ["airbench"]  # asked for alone: measured


def test_training_rates_leave_out_the_set_up_of_the_fit_call():
    """A `fit` that spends a second setting up, then takes 20 steps of 20 ms: the bench's
    training rate is the steps' own (about 50 batches/s), the whole call's far lower."""
    import time

    class SlowStart:
        def fit(self, x, y, batch_size, callbacks, **kw):
            time.sleep(1.0)  # the call's set-up: input pipeline, first-step caches
            for step in range(len(x) // batch_size):
                time.sleep(0.02)
                for cb in callbacks:
                    cb.on_train_batch_end(step, {})

    x = np.zeros((20 * 8, 1), "float32")
    steady, whole = bench._timed_fit(SlowStart(), x, x, 8)
    assert 8 / 0.04 < steady <= 8 / 0.02, steady  # images/s of the steps alone
    assert whole < 8 * 20 / 1.4 < steady, whole


def test_the_host_pipeline_script_reports_both_rates_beside_the_matmul_rate():
    """benchmarks/host_pipeline.py (BENCHMARKS.md, the pipeline against GPU rates)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "host_pipeline.py"
    spec = importlib.util.spec_from_file_location("host_pipeline", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rates = script.main(images=4096, batch_size=512)
    assert rates["batches_images_per_s_one_thread"] > rates["fit_images_per_s"] > 0
    assert rates["matmul_gflops"] > 0
