#!/usr/bin/env bash
# The GPU check as one call on a lent device machine (docs/results.md, "The GPU check").
#
# Here, once:   bash scripts/gpu_check_device.sh --prepare      (Keras' wheels into .whl/, git-ignored)
# There:        bash scripts/gpu_check_device.sh [PRESET:SEED ...] [--val-size N] [--deadline-s S]
#               through the device tool, carrying .whl and data/mnist.npz; results land in $OUT.
# Here, after:  .venv/bin/python scripts/gpu_check.py verify FILES_AT [--export models]
#
# The machine has JAX (and PyTorch) but no TensorFlow, and nothing to fetch it from, so Keras trains
# on JAX there (KERAS_BACKEND overrides). Runs stop starting at --deadline-s and the whole check at
# CHECK_SECONDS, so the call ends inside its time limit with every finished run written.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
    keras_version=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('keras'))")
    grep -qx "/.whl/" "$(git rev-parse --git-path info/exclude)" 2>/dev/null \
        || echo "/.whl/" >>"$(git rev-parse --git-path info/exclude)"
    .venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        "keras==${keras_version}" namex optree
    ls -l .whl
    exit 0
fi

out=${OUT:?set by the device tool: the folder whose files come back}
python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 KERAS_BACKEND=${KERAS_BACKEND:-jax}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
if [[ $# -eq 0 || "$1" == --* ]]; then
    # The check (three seeds of each preset), then `best` members for the ensemble while time lasts.
    set -- fast:42 fast:43 fast:44 best:{42..53} --deadline-s 400 "$@"
fi
# INT first, so the run in progress ends as Python would; KILL 15 s later if a thread holds it up.
timeout -s INT -k 15 "${CHECK_SECONDS:-470}" python3 scripts/gpu_check.py run "$@" --data-dir data \
    --out "$out" 2>&1 | grep --line-buffered -v "^WARNING: All log messages" | tee "$out/log.txt"
