#!/usr/bin/env bash
# Package a trained model as model_store/MMF_model.mar.
# Usage: scripts/archive.sh [SAVE_DIR] [LABELS_CSV]
#   SAVE_DIR   what mmf_run wrote (default ./save): config.yaml, vocab.txt, mmf_transformer_final.pth
#              (WEIGHTS=path/to/other.pth overrides the weights file)
#   LABELS_CSV the dataset's labels file (default ./charades_action_labels.csv)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
SAVE_DIR="${1:-save}"
LABELS="${2:-charades_action_labels.csv}"
WEIGHTS="${WEIGHTS:-$SAVE_DIR/mmf_transformer_final.pth}"
MODEL_NAME="${MODEL_NAME:-MMF_model}"

for file in "$WEIGHTS" "$SAVE_DIR/config.yaml" "$LABELS"; do
    [ -f "$file" ] || { echo "missing $file: train first (scripts/train.sh) or pass the right SAVE_DIR" >&2; exit 2; }
done
EXTRA="$LABELS,$SAVE_DIR/config.yaml"
# the tokenizer vocabulary mmf_run saved; without it the handler resolves
# bert-base-uncased offline (see README)
[ -f "$SAVE_DIR/vocab.txt" ] && EXTRA="$EXTRA,$SAVE_DIR/vocab.txt"

mkdir -p model_store
"$BIN/torch-model-archiver" --model-name "$MODEL_NAME" --version 1.0 \
    --serialized-file "$WEIGHTS" \
    --handler handler.py \
    --extra-files "$EXTRA" \
    --config-file model-config.yaml \
    --force
mv -f "$MODEL_NAME.mar" model_store/
echo "wrote model_store/$MODEL_NAME.mar"
