#!/usr/bin/env bash
# The `full` profile's tuned model (its search, then its training) on a lent GPU machine:
# Python 3.12 with JAX and PyTorch for CUDA there, no TensorFlow, no network, one command
# of at most 10 minutes a call, and only the checkout travels (64 MiB). So:
#
#   here, once:  bash benchmarks/device_full.sh prepare
#       Python 3.12 wheels of what the machine lacks (keras, keras-tuner and their
#       needs) into .whl/, and the offline CIFAR-10 JPEG copy into .carry/ (both
#       ignored by git; ../shared/data/README.md says what the copy is).
#   there:       bash benchmarks/device_full.sh run        (carry .whl and .carry)
#       prints the series' plan on this GPU (plan.txt, plan.json), times the authors'
#       airbench beside cifarlab's tuned network (peer.txt, benchmarks/peer_airbench.py),
#       then trains `tuned` with KERAS_BACKEND=jax within LIMIT seconds (default 300: the plan and the peer take up to 270 of the 600 a call has),
#       evaluates it on the test split when it is trained, and writes to $OUT: the GPU
#       and versions, the log, reports/results.csv and the saved model with its
#       history and metadata, and state.tgz: the run folder without trial checkpoints.
#   here, after: copy state.tgz from the reply's files into .carry/ and call `run`
#       again while the search is unfinished: it resumes from its finished trials
#       (KerasTuner's trials on disk); a training stopped at LIMIT starts again (the
#       full profile's 10 epochs take a few minutes at most on such a GPU).
#
# DATASET (default .carry/cifar10-jpg.tar.gz), PROFILE (full), LIMIT (300) and
# KERAS_BACKEND (jax) can be set. Where no .whl/ exists (a machine that already has
# Keras) the install step is skipped.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

prepare() {
    local py=(--only-binary=:all: --python-version 3.12 --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform any)
    mkdir -p .whl .carry
    # versions: the ones this checkout's tests ran with (pip show), or pinned here
    local keras_v tuner_v
    keras_v=$(python3 -m pip show keras 2>/dev/null | awk '/^Version/ {print $2}')
    tuner_v=$(python3 -m pip show keras-tuner 2>/dev/null | awk '/^Version/ {print $2}')
    python3 -m pip download -q --no-deps "${py[@]}" -d .whl \
        "keras==${keras_v:-3.15.1}" "keras-tuner==${tuner_v:-1.4.8}" kt-legacy namex optree \
        || exit 1
    # the authors' airbench (an sdist; benchmarks/peer_airbench.py runs it unshimmed there)
    python3 -m pip download -q --no-deps --no-binary=:all: -d .whl airbench==0.1.8 || exit 1
    cp ../shared/data/cifar10-jpg.tar.gz .carry/ || exit 1
    du -sh .whl .carry
}

run() {
    : "${OUT:?OUT must name the folder whose files come back}"
    if compgen -G ".whl/*.whl" >/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target /tmp/site .whl/*.whl || exit 1
        export PYTHONPATH=/tmp/site:$PWD/src
    else
        export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
    fi
    export KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1
    local dataset=${DATASET:-.carry/cifar10-jpg.tar.gz} profile=${PROFILE:-full}
    local limit=${LIMIT:-300} work=${WORK:-/tmp/cifarlab-device}
    mkdir -p "$work"
    if [ -f .carry/state.tgz ]; then tar xzf .carry/state.tgz -C "$work" || exit 1; fi
    { date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv \
        || echo "no nvidia-smi"; } >"$OUT/gpu.txt" 2>&1
    python3 -c 'import sys, keras, keras_tuner, numpy
import importlib.util as u
jax = u.find_spec("jax") and __import__("jax")
print("python", sys.version.split()[0], "keras", keras.__version__, "backend",
      keras.backend.backend(), "keras-tuner", keras_tuner.__version__, "numpy",
      numpy.__version__, "jax", jax.__version__ if jax else None,
      "devices", jax.devices() if jax else None)' >"$OUT/versions.txt" 2>&1
    # the plan: every model's step timed on this GPU (precision from its capability)
    timeout 120 python3 -m cifarlab plan --profile "$profile" --dataset "$dataset" \
        --out "$work/plan" --budget 10 --quiet 2>&1 | tail -12 | tee "$OUT/plan.txt"
    cp "$work/plan/reports/plan.json" "$OUT/" 2>/dev/null
    # the authors' airbench beside the tuned network, same widths, batch and data
    if compgen -G ".whl/airbench-*.tar.gz" >/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site \
            .whl/airbench-*.tar.gz >/dev/null 2>&1
        timeout 150 python3 benchmarks/peer_airbench.py --dataset "$dataset" --steps 20 \
            --warmup 5 2>&1 | tail -8 | tee "$OUT/peer.txt"
    fi
    local t0=$SECONDS
    timeout "$limit" python3 -m cifarlab train tuned --profile "$profile" --dataset "$dataset" \
        --out "$work" --quiet 2>&1 | tee "$OUT/log.txt"
    local rc=$?
    echo "train: exit $rc after $((SECONDS - t0)) s (124: stopped at LIMIT; call again)" \
        | tee -a "$OUT/log.txt"
    if [ "$rc" -eq 0 ]; then
        python3 -m cifarlab evaluate --out "$work" --models tuned --dataset "$dataset" \
            2>&1 | tail -20 | tee -a "$OUT/log.txt"
        cp "$work"/reports/results.csv "$work"/saved_models/tuned.* "$work"/histories/tuned.npy \
            "$OUT"/ 2>/dev/null
    fi
    # the search's trials without their weights (a resumed search needs only their JSON);
    # no training work folder (its epoch backups outgrow what comes back)
    tar czf "$OUT/state.tgz" -C "$work" --exclude='*checkpoint*' --exclude='./runs' \
        --exclude='./logs' --exclude='./saved_models/*.keras' . || exit 1
    return "$rc"
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) sed -n '2,22p' "$0"; exit 2 ;;
esac
