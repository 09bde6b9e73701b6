#!/usr/bin/env bash
# The demo: installs what is missing, builds, and runs the main job on the shipped stories260K model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "== greedy generation with the shipped model =="
build/reglage generate --model models/stories260K/stories260K.bin --prompt "Once upon a time" \
  --max-new-tokens 60 --temperature 0
echo "== a sampled batch of prompts (temperature 0.8, top-p 0.9, seed 7) =="
build/reglage generate --model models/stories260K/stories260K.bin --prompts configs/demo_prompts.jsonl \
  --max-new-tokens 60 --temperature 0.8 --top-p 0.9 --seed 7
