"""Scaling on existing engines, checked for correctness on this CPU machine (not speed).

- MirroredStrategy over 2 logical CPU devices and JAX DataParallel over 2 host devices
  follow the single-device loss trajectory (same global batch and learning rate) within
  2% per epoch;
- ``--distribute multiworker`` is refused in one line (Keras 3 cannot fit under
  MultiWorkerMirroredStrategy, keras-team/keras#20585);
- a KerasTuner chief with two workers on 127.0.0.1 runs one search whose trials are
  split between the workers.
All in subprocesses with time limits; nothing outlives a test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TRAJECTORY = """
    import json, sys
    from cifarlab import config, train
    # overfit: no dropout, no augmentation, no batch norm -> replicas see the same math
    cfg = config.model_config("overfit", "smoke").replace(epochs=3, batch_size={bs}, train_limit=640,
                                                          learning_rate={lr})
    meta = train.train_model("overfit", r"{data}", "smoke", r"{out}", 0, progress=False,
                             config=cfg, distribute="{kind}")
    print("META " + json.dumps(meta["distribute"]))
"""


def _run(code: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )


def _trajectory(tmp_path, real_data, kind, bs, lr, env, name):
    out = tmp_path / name
    r = _run(TRAJECTORY.format(bs=bs, lr=lr, data=real_data, out=out, kind=kind), env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    dist = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("META "))[5:])
    return np.load(out / "histories" / "overfit.npy", allow_pickle=False)["loss"], dist


@pytest.mark.parametrize(
    "kind,backend,env",
    [
        ("mirrored", "tensorflow", {"CIFARLAB_LOGICAL_CPUS": "2"}),
        ("dataparallel", "jax", {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}),
    ],
)
def test_two_replicas_follow_the_single_device_loss_trajectory(
    tmp_path, real_data, kind, backend, env
):
    pytest.importorskip(backend)
    env = {**env, "KERAS_BACKEND": backend}
    single, _ = _trajectory(
        tmp_path, real_data, "none", 64, 1e-3, {"KERAS_BACKEND": backend}, "single"
    )
    # 2 replicas x 32 = the same global batch of 64; the scaling rule doubles the
    # learning rate, so start from half of it to compare like with like
    multi, dist = _trajectory(tmp_path, real_data, kind, 32, 5e-4, env, "multi")
    assert dist["replicas"] == 2 and dist["kind"] == kind
    np.testing.assert_allclose(multi, single, rtol=0.02)


def test_mirrored_on_a_machine_without_gpus_uses_one_replica_and_says_so(tmp_path, real_data):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cifarlab",
            "train",
            "baseline",
            "--distribute",
            "mirrored",
            "--dataset",
            str(real_data),
            "--profile",
            "smoke",
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "distribute: mirrored over 1 replica(s)" in r.stdout
    meta = json.loads((tmp_path / "saved_models" / "baseline.json").read_text())
    assert meta["distribute"]["replicas"] == 1


def test_multiworker_is_refused_in_one_line_naming_the_upstream_issue(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cifarlab",
            "train",
            "baseline",
            "--distribute",
            "multiworker",
            "--profile",
            "smoke",
            "--dataset",
            "cifar10",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
    )
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "keras-team/keras#20585" in lines[0]


def test_keras_tuner_chief_and_two_workers_share_one_search(tmp_path, real_data):
    port = _free_port()
    base = {
        **os.environ,
        "KERAS_BACKEND": "tensorflow",
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": str(port),
    }
    cmd = [
        sys.executable,
        "-m",
        "cifarlab",
        "tune",
        "--dataset",
        str(real_data),
        "--profile",
        "smoke",
        "--out",
        str(tmp_path),
        "--max-trials",
        "4",
        "--quiet",
    ]
    procs = {
        tid: subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**base, "KERASTUNER_TUNER_ID": tid},
        )
        for tid in ("chief", "tuner0", "tuner1")
    }
    try:
        outs = {tid: p.communicate(timeout=900) for tid, p in procs.items()}
    finally:
        for p in procs.values():
            p.kill()
    for tid, p in procs.items():
        assert p.returncode == 0, tid + outs[tid][0][-1500:] + outs[tid][1][-3000:]
    ran = {
        tid: int(outs[tid][0].split(f"search worker {tid} ran ")[1].split()[0])
        for tid in ("tuner0", "tuner1")
    }
    assert all(n >= 1 for n in ran.values()) and sum(ran.values()) == 4, ran
    result = json.loads((tmp_path / "saved_models" / "tuned_search.json").read_text())
    assert result["distributed"] is True and len(result["trials"]) == 4
