#!/usr/bin/env bash
# Run TorchServe with this project's config.
#   scripts/serve.sh start      start TorchServe (token authorization on) and wait until it is healthy
#   scripts/serve.sh register   register model_store/MMF_model.mar with the reference's curl command
#   scripts/serve.sh stop       stop TorchServe and wait until it has exited
#   scripts/serve.sh status     list the registered models
# TorchServe writes key_file.json (the API tokens) and logs/ (console output in logs/torchserve.out)
# in the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
MODEL_NAME="${MODEL_NAME:-MMF_model}"
INFERENCE="${INFERENCE:-http://127.0.0.1:8080}"
MANAGEMENT="${MANAGEMENT:-http://127.0.0.1:8081}"
KEY_FILE="${KEY_FILE:-key_file.json}"
export PATH="$(cd "$BIN" && pwd):$PATH"

key() {  # key management|inference
    "$BIN/python" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]['key'])" "$KEY_FILE" "$1"
}

wait_healthy() {  # TorchServe 0.12 wants the inference token even on /ping
    for _ in $(seq 1 120); do
        if [ -f "$KEY_FILE" ] && curl -sf -H "Authorization: Bearer $(key inference)" "$INFERENCE/ping" >/dev/null 2>&1
        then return 0; fi
        sleep 1
    done
    echo "TorchServe did not become healthy in 120 s; see logs/ts_log.log" >&2
    return 1
}

case "${1:-}" in
start)
    command -v java >/dev/null || { echo "TorchServe needs Java 17: apt-get install openjdk-17-jre-headless (see README)" >&2; exit 2; }
    rm -f "$KEY_FILE"
    mkdir -p logs
    # TorchServe keeps writing its console to the launching terminal: send it to a file
    torchserve --start --ncs --model-store model_store --ts-config config.properties > logs/torchserve.out 2>&1
    wait_healthy
    echo "TorchServe is up: inference $INFERENCE, management $MANAGEMENT; API keys in $KEY_FILE"
    ;;
register)
    curl -sS --fail-with-body -X POST -H "Authorization: Bearer $(key management)" \
        "$MANAGEMENT/models?model_name=$MODEL_NAME&url=$MODEL_NAME.mar&batch_size=1&max_batch_delay=5000&initial_workers=1&synchronous=true"
    echo
    ;;
stop)
    PID_FILE="${TMPDIR:-/tmp}/.model_server.pid"
    PID="$(cat "$PID_FILE" 2>/dev/null || true)"
    torchserve --stop || true
    for _ in $(seq 1 60); do
        if [ -z "$PID" ] || ! kill -0 "$PID" 2>/dev/null; then echo "TorchServe stopped"; exit 0; fi
        sleep 1
    done
    echo "TorchServe still running after 60 s" >&2
    exit 1
    ;;
status)
    curl -sS --fail-with-body -H "Authorization: Bearer $(key management)" "$MANAGEMENT/models"
    echo
    ;;
*)
    sed -n '2,7p' "$0"
    exit 2
    ;;
esac
