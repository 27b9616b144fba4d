#!/usr/bin/env bash
# The end-to-end demo (make demo): synthetic Charades data -> mmf_run training
# of the tiny config -> torch-model-archiver -> TorchServe (token auth on) ->
# registration -> request.py on held-out videos, printed beside their true
# labels, a timeline of one, and the same one as a live stream -> TorchServe stopped. Exits non-zero on any failure.
# It stops only the TorchServe it started (scripts/serve.sh), and writes only
# ignored paths (data/, save/, model_store/, logs/, .torchserve/, demo.mp4, key_file.json)
# and demo.info.json, which for the default data is the committed file.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
DATA_DIR="${DATA_DIR:-./data}"
SAVE_DIR="${SAVE_DIR:-./save}"
REQUESTS="${REQUESTS:-5}"
export BIN DATA_DIR SAVE_DIR
step() { printf '\n==> %s\n' "$*"; }

step "1/6 synthetic Charades dataset in $DATA_DIR"
"$BIN/python" scripts/make_synthetic_charades.py --out "$DATA_DIR" --skip-existing

step "2/6 training the tiny config with mmf_run (a few minutes on a CPU)"
scripts/train.sh "$@"

step "3/6 archiving model_store/MMF_model.mar and MMF_model_live.mar"
scripts/archive.sh "$SAVE_DIR"

step "4/6 starting TorchServe (addresses from config.properties)"
scripts/serve.sh start
# set once the server is ours: a refused start stops nothing
trap 'step "6/6 stopping TorchServe"; scripts/serve.sh stop' EXIT

step "5/6 registering MMF_model and sending held-out videos with request.py"
scripts/serve.sh register
"$BIN/python" scripts/demo_requests.py --data-dir "$DATA_DIR" --count "$REQUESTS" --out "$SAVE_DIR/demo_requests" \
    --copy-first demo > "$SAVE_DIR/demo_requests.txt"
while read -r video info; do
    echo "--- $(basename "$video")"
    "$BIN/python" request.py --video "$video" --info "$info" --output "$SAVE_DIR/demo_requests/$(basename "$video" .mp4).response.json" \
        | sed -e 's/^labels:/  predicted:/' -e 's/^expected:/  truth:    /'
done < "$SAVE_DIR/demo_requests.txt"

echo "--- when, not only what: a timeline of 0.5 s windows for a held-out video whose actions take turns"
"$BIN/python" scripts/demo_requests.py --data-dir "$DATA_DIR" --count 1 --out "$SAVE_DIR/demo_requests" \
    --taking-turns > "$SAVE_DIR/demo_timeline.txt"
read -r video info < "$SAVE_DIR/demo_timeline.txt"
"$BIN/python" request.py --video "$video" --info "$info" --segment-seconds 0.5 --plot "$SAVE_DIR/timeline.png" \
    --output "$SAVE_DIR/demo_requests/timeline.response.json"

echo "--- what is happening now: the same video sent as a live stream to MMF_model_live, chunk by chunk"
MODEL_NAME=MMF_model_live scripts/serve.sh register
"$BIN/python" request.py --live "$video" --info "$info" --chunk-seconds 0.5 --max-chunk-seconds 1 \
    --plot "$SAVE_DIR/live.png" --output "$SAVE_DIR/demo_requests/live.jsonl"
