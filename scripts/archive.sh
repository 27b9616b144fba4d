#!/usr/bin/env bash
# Package a trained model as model_store/MMF_model.mar (torch-model-archiver with model-config.yaml).
# Usage: scripts/archive.sh [SAVE_DIR] [LABELS_CSV]
#   SAVE_DIR   what mmf_run wrote (default ./save): config.yaml, vocab.txt, charades_action_labels.csv
#              and mmf_transformer_final.pth (WEIGHTS=path/to/other.pth overrides the weights file)
#   LABELS_CSV the class list (default SAVE_DIR/charades_action_labels.csv, else ./charades_action_labels.csv)
# MODEL_STORE=dir writes the archive there instead of ./model_store; MODEL_CONFIG=file packs another
# model-config.yaml. It also builds MODEL_STORE/MMF_model_live.mar, the live model, from the same weights
# with model-config-live.yaml (LIVE_MODEL_CONFIG=file packs another).
# A wrapper over `python -m minimmf.serving.torchserve archive`, the code the tests run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
args=(archive --save-dir "${1:-save}" --model-name "${MODEL_NAME:-MMF_model}" --model-store "${MODEL_STORE:-model_store}")
[ -n "${2:-}" ] && args+=(--labels "$2")
[ -n "${WEIGHTS:-}" ] && args+=(--weights "$WEIGHTS")
[ -n "${MODEL_CONFIG:-}" ] && args+=(--model-config "$MODEL_CONFIG")
[ -n "${LIVE_MODEL_CONFIG:-}" ] && args+=(--live-model-config "$LIVE_MODEL_CONFIG")
exec "$BIN/python" -m minimmf.serving.torchserve "${args[@]}"
