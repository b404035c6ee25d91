#!/usr/bin/env bash
# `make up`: the local stack without Docker. Trains the quick default model when models/<name> holds
# no version, then runs digits-serve (gRPC 8500, REST 8501) and the gateway (8080) in the foreground.
# Ctrl-C stops both cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.venv/bin
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}  # hide TF start-up chatter
MODELS_DIR=${MODELS_DIR:-models}
MODEL_NAME=${MODEL_NAME:-mnist}
PRESET=${PRESET:-fast}
GRPC_PORT=${GRPC_PORT:-8500}
REST_PORT=${REST_PORT:-8501}
GATEWAY_PORT=${GATEWAY_PORT:-8080}
SERVE_WAIT_S=${SERVE_WAIT_S:-120}  # how long the model (and then the gateway) may take to answer
# shellcheck source=scripts/http.sh
source scripts/http.sh
base="$MODELS_DIR/$MODEL_NAME"

# A version is a child folder named by ASCII digits within int64, as digits-serve and TF Serving read it
# (client/contract.py's parse_version): `1abc`, `v2`, `²` or a file named `1` are not models to serve.
versions=$("$BIN/python" - "$base" <<'PY'
import os, sys
from client.contract import parse_version
try:
    entries = list(os.scandir(sys.argv[1]))
except OSError:  # no base folder yet: training makes it
    entries = []
print(sum(parse_version(entry.name) is not None and entry.is_dir() for entry in entries))
PY
)
if [ "$versions" = 0 ]; then
  echo "up: no model under $base yet: training preset '$PRESET' first (make train PRESET=... to choose another)"
  "$BIN/digits-train" train --preset "$PRESET" --models-dir "$MODELS_DIR" --model-name "$MODEL_NAME"
fi

pids=()
config=$(mktemp "${TMPDIR:-/tmp}/digits-models.XXXXXX")
stop() {
  trap - INT TERM EXIT
  echo "up: stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
  rm -f "$config"
}
trap stop INT TERM EXIT

# serving/config/models.config, as docker-compose.yml and k8s/ serve it (the version policy too: the
# newest two versions stay loaded), with this machine's folder for the containers' /models/<name>.
"$BIN/python" - serving/config/models.config "$MODEL_NAME" "$base" >"$config" <<'PY'
import os, sys
from google.protobuf import text_format
from serving.config_files import read_model_server_config
config = read_model_server_config(sys.argv[1])
(model,) = config.model_config_list.config
model.name, model.base_path = sys.argv[2], os.path.abspath(sys.argv[3])
print(text_format.MessageToString(config), end="")
PY

"$BIN/digits-serve" --port="$GRPC_PORT" --rest_api_port="$REST_PORT" --model_config_file="$config" \
  --enable_batching --batching_parameters_file=serving/config/batching.config \
  --monitoring_config_file=serving/config/monitoring.config &
pids+=($!)

# The REST port opens only once the model is loaded (as in TF Serving): wait for AVAILABLE.
wait_for up "http://localhost:$REST_PORT/v1/models/$MODEL_NAME" AVAILABLE "${pids[0]}" digits-serve

DIGITS_MODEL_SERVER="localhost:$GRPC_PORT" DIGITS_MODEL_NAME="$MODEL_NAME" \
  "$BIN/digits-gateway" --host 0.0.0.0 --port "$GATEWAY_PORT" &
pids+=($!)
# It listens only after importing TensorFlow (the gRPC stubs need it): some seconds.
wait_for up "http://localhost:$GATEWAY_PORT/healthz" ok "${pids[1]}" digits-gateway

cat <<MSG
up: serving $base
  gRPC     localhost:$GRPC_PORT   (tensorflow.serving.PredictionService)
  REST     http://localhost:$REST_PORT/v1/models/$MODEL_NAME
  gateway  http://localhost:$GATEWAY_PORT/   (draw a digit)
Ctrl-C to stop.
MSG
wait -n "${pids[@]}"
