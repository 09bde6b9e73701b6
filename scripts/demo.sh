#!/usr/bin/env bash
# The demo: installs what is missing, builds, and runs the demo pipeline on the shipped stories260K model:
# supervised fine-tuning on "Write a story about a {animal} named {name}." with 2 MPI ranks, then a reward
# model on preference pairs labelled by the task's rule, then the held-out figures.
# Running it again resumes the pipeline (finished stages are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # Open MPI refuses root without these

echo "== the base model, greedy =="
build/reglage generate --model models/stories260K/stories260K.bin \
  --prompt "Write a story about a fox named Rumi." --max-new-tokens 60 --temperature 0

echo "== the pipeline: mpirun -np 2 build/reglage run configs/demo.yaml =="
mpirun -np 2 --oversubscribe build/reglage run configs/demo.yaml
build/reglage status runs/demo

echo "== the fine-tuned model, greedy =="
build/reglage generate --model models/stories260K/stories260K.bin --adapter runs/demo/sft/final \
  --prompt "Write a story about a fox named Rumi." --max-new-tokens 60 --temperature 0

echo "== reward model: held-out pair accuracy (data/demo/pref_eval.jsonl, names never in training) =="
grep '"split":"eval"' runs/demo/rm/metrics.jsonl | tail -n 1

echo "== held-out success (data/demo/heldout_prompts.jsonl: names never in training) =="
echo -n "base: "
build/reglage eval --model models/stories260K/stories260K.bin --prompts data/demo/heldout_prompts.jsonl
echo -n "sft:  "
build/reglage eval --model models/stories260K/stories260K.bin --adapter runs/demo/sft/final \
  --prompts data/demo/heldout_prompts.jsonl
