#!/usr/bin/env bash
# Train the demo model: MMF's command line, with the demo's data and save paths.
# Usage: scripts/train.sh [extra key=value overrides...]
#   CONFIG=projects/mmf_transformer/configs/charades/direct.yaml scripts/train.sh training.max_updates=5000
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
CONFIG="${CONFIG:-projects/mmf_transformer/configs/charades/tiny.yaml}"
DATA_DIR="${DATA_DIR:-./data}"
SAVE_DIR="${SAVE_DIR:-./save}"

exec "$BIN/mmf_run" config="$CONFIG" run_type=train_val dataset=charades model=mmf_transformer \
    env.data_dir="$DATA_DIR" env.save_dir="$SAVE_DIR" \
    training.num_workers=1 training.find_unused_parameters=True "$@"
