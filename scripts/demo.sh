#!/usr/bin/env bash
# `make demo`: a short end-to-end run, non-interactive. Trains a quick model into a scratch folder,
# serves it with digits-serve on free ports, asks it over REST, evaluates it over gRPC with
# digits-eval, prints the results, and stops. Nothing outside reports/demo and a temp folder is touched.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.venv/bin
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}  # hide TF start-up chatter
SERVE_WAIT_S=${SERVE_WAIT_S:-120}  # how long the model may take to load (as in up.sh)
# shellcheck source=scripts/http.sh
source scripts/http.sh
work=$(mktemp -d)
report=reports/demo
server=""
cleanup() {  # keeps the exit status: the server, stopped, exits 143, and set -e holds in traps too
  [ -n "$server" ] && kill -TERM "$server" 2>/dev/null && { wait "$server" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { "$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc_port=$(free_port); rest_port=$(free_port)

echo "== 1/4 train: preset fast on 20,000 of the 55,000 training images (a demo: the full run is make train)"
"$BIN/digits-train" train --preset fast --limit-train 20000 \
  --models-dir "$work/models" --model-name mnist --reports-dir "$report/train"

echo "== 2/4 serve: digits-serve on gRPC $grpc_port, REST $rest_port"
"$BIN/digits-serve" --port="$grpc_port" --rest_api_port="$rest_port" --host=127.0.0.1 \
  --model_name=mnist --model_base_path="$work/models/mnist" --enable_batching \
  --batching_parameters_file=serving/config/batching.config > "$work/serve.log" 2>&1 &
server=$!
# As up.sh waits (scripts/http.sh): until the status says AVAILABLE; with digits-serve's log if not.
wait_for demo "http://127.0.0.1:$rest_port/v1/models/mnist" AVAILABLE "$server" digits-serve "$work/serve.log"
http "http://127.0.0.1:$rest_port/v1/models/mnist"

echo "== 3/4 REST predict of the first test image (a 7)"
body=$("$BIN/python" - <<'PY'
import json, numpy as np
from client.contract import data_dir
x = np.load(data_dir() / "mnist.npz")["x_test"][:1]
print(json.dumps({"instances": x.tolist()}))
PY
)
http "http://127.0.0.1:$rest_port/v1/models/mnist:predict" "$body" \
  | "$BIN/python" -c 'import json,sys; p=json.load(sys.stdin)["predictions"][0]; print("classes:", p["classes"], " p=%.4f" % max(p["probabilities"]))'

echo "== 4/4 evaluate over gRPC on the 10,000 test images"
"$BIN/digits-eval" --target "127.0.0.1:$grpc_port" --protocol grpc --dataset mnist \
  --batch-size 256 --concurrency 2 --report "$report"
echo "demo: report in $report/ (report.md, confusion_matrix.png, misclassified.png), training's in $report/train/"
