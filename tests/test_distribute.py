"""Scaling on existing engines, checked for correctness on this CPU machine (not speed).

- MirroredStrategy over 2 logical CPU devices and JAX DataParallel over 2 host devices
  follow the single-device loss trajectory (same global batch and learning rate) within
  2% per epoch;
- two MultiWorkerMirroredStrategy workers on 127.0.0.1 ports (TF_CONFIG) complete a smoke
  run, follow the same single-device trajectory and end with identical weights (Keras 3
  needs ``cifarlab.training._tf_multiworker`` for that, keras-team/keras#20585); a bad TF_CONFIG
  and an unsearched ``tuned`` are refused in one line;
- a KerasTuner chief with two workers on 127.0.0.1 runs one search whose trials are
  split between the workers.
All in subprocesses with time limits; nothing outlives a test.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest


def _free_ports(n: int) -> list[int]:
    """n distinct free ports (all held open while choosing, so no two are the same)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


TRAJECTORY = """
    import json, sys
    from cifarlab import config
    from cifarlab.training import train
    # overfit: no dropout, no augmentation, no batch norm -> replicas see the same math
    cfg = config.model_config("overfit", "smoke").replace(epochs=3, batch_size={bs}, dataset_limit=640,
                                                          learning_rate={lr})
    meta = train.train_model("overfit", r"{data}", "smoke", r"{out}", 0, progress=False,
                             train_config=cfg, distribute="{kind}")
    print("META " + json.dumps(meta["distribute"]))
"""


#: The overfit model's Adam rate for 2 replicas of 32 that scales (x sqrt 2) to the
#: single device's 1e-3 at batch 64.
PER_REPLICA_LR = 1e-3 / 2**0.5


def _python(argv: list[str], env: dict, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )


def _run(code: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return _python(["-c", textwrap.dedent(code)], env, timeout)


def _cli(args: list[str], env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return _python(["-m", "cifarlab", *args], {"KERAS_BACKEND": "tensorflow", **env}, timeout)


def _trajectory(tmp_path, real_data, kind, bs, lr, env, name):
    out = tmp_path / name
    r = _run(TRAJECTORY.format(bs=bs, lr=lr, data=real_data, out=out, kind=kind), env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    dist = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("META "))[5:])
    return np.load(out / "histories" / "overfit.npy", allow_pickle=False)["loss"], dist


@pytest.fixture(scope="module")
def single_device(tmp_path_factory, real_data):
    """The reference: one device, global batch 64, learning rate 1e-3, per backend."""
    cache = {}

    def get(backend):
        if backend not in cache:
            tmp = tmp_path_factory.mktemp(f"single-{backend}")
            cache[backend] = _trajectory(
                tmp, real_data, "none", 64, 1e-3, {"KERAS_BACKEND": backend}, "single"
            )[0]
        return cache[backend]

    return get


@pytest.mark.parametrize(
    "kind,backend,env",
    [
        ("mirrored", "tensorflow", {"CIFARLAB_LOGICAL_CPUS": "2"}),
        ("dataparallel", "jax", {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}),
    ],
)
def test_two_replicas_follow_the_single_device_loss_trajectory(
    tmp_path, real_data, single_device, kind, backend, env
):
    pytest.importorskip(backend)
    env = {**env, "KERAS_BACKEND": backend}
    single = single_device(backend)
    # 2 replicas x 32 = the same global batch of 64; the scaling rule multiplies Adam's
    # learning rate by sqrt(2), so start from 1e-3 / sqrt(2) to compare like with like
    multi, dist = _trajectory(tmp_path, real_data, kind, 32, PER_REPLICA_LR, env, "multi")
    assert dist["replicas"] == 2 and dist["kind"] == kind
    np.testing.assert_allclose(multi, single, rtol=0.02)


def _tf_config(ports: list[int], index: int) -> str:
    return json.dumps(
        {
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
            "task": {"type": "worker", "index": index},
        }
    )


def test_two_multiworker_workers_follow_single_device_and_end_with_the_same_weights(
    tmp_path, real_data, single_device
):
    import keras

    single = single_device("tensorflow")
    ports = _free_ports(2)
    out = tmp_path / "multi"
    code = textwrap.dedent(
        TRAJECTORY.format(bs=32, lr=PER_REPLICA_LR, data=real_data, out=out, kind="multiworker")
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CONFIG": _tf_config(ports, i)},
        )
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, o[-2000:] + e[-3000:]
    dists = [
        json.loads(next(ln for ln in o.splitlines() if ln.startswith("META "))[5:]) for o, _ in outs
    ]
    assert [d["task"] for d in dists] == ["worker0", "worker1"]
    assert all(d["replicas"] == 2 and d["workers"] == 2 for d in dists)
    # the chief writes to --out, the other worker beside it
    chief, other = out, out / "workers" / "worker1"
    multi = np.load(chief / "histories" / "overfit.npy", allow_pickle=False)["loss"]
    np.testing.assert_allclose(multi, single, rtol=0.02)
    a = keras.saving.load_model(chief / "saved_models" / "overfit.keras")
    b = keras.saving.load_model(other / "saved_models" / "overfit.keras")
    assert len(a.weights) == len(b.weights) > 0
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(np.asarray(va), np.asarray(vb), err_msg=va.path)


@pytest.mark.parametrize(
    "tf_config,expected",
    [
        ("{not json", "TF_CONFIG must be JSON like"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "TF_CONFIG must be JSON like"),
        (
            '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
            "task index 3 is outside the 1 'worker' address(es)",
        ),
    ],
)
def test_a_bad_tf_config_is_refused_in_one_line(tmp_path, tf_config, expected):
    """... before the backend starts: no Keras loaded, so the answer comes at once."""
    argv = ["train", "baseline", "--distribute", "multiworker", "--profile", "smoke",
            "--dataset", "cifar10", "--out", str(tmp_path)]  # fmt: skip
    code = (
        "import sys; from cifarlab import cli; status = cli.main(sys.argv[1:]); "
        "print('keras loaded:', 'keras' in sys.modules); sys.exit(status)"
    )
    r = _python(["-c", code, *argv], {"TF_CONFIG": tf_config, "KERAS_BACKEND": "tensorflow"}, 300)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and expected in lines[0], r.stderr[-2000:]
    assert "keras loaded: False" in r.stdout, r.stdout


def test_multiworker_tuned_needs_the_search_first(tmp_path, real_data):
    # every worker must train the same configuration: a search per worker would differ
    r = _cli(
        [
            "train",
            "tuned",
            "--distribute",
            "multiworker",
            "--profile",
            "smoke",
            "--dataset",
            str(real_data),
            "--out",
            str(tmp_path),
            "--quiet",
        ],
        {"TF_CONFIG": ""},
    )
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert "no search result" in lines[0] and "cifarlab tune" in lines[0]
    assert "one worker on this machine" in r.stdout
    assert not (tmp_path / "saved_models" / "tuned.keras").exists()


def test_mirrored_on_a_machine_without_gpus_uses_one_replica_and_says_so(tmp_path, real_data):
    r = _cli(
        [
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
        {},
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "distribute: mirrored over 1 replica(s)" in r.stdout
    meta = json.loads((tmp_path / "saved_models" / "baseline.json").read_text())
    assert meta["distribute"]["replicas"] == 1


def test_keras_tuner_chief_and_two_workers_share_one_search(tmp_path, real_data):
    (port,) = _free_ports(1)
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
