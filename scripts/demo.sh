#!/usr/bin/env bash
# The demo: installs what is missing, builds, and runs the demo pipeline on the shipped stories260K model with
# 2 MPI ranks: supervised fine-tuning on "Write a story about a {animal} named {name}.", a reward model on
# preference pairs labelled by the task's rule, then PPO; then the held-out figures.
#   scripts/demo.sh dpo | grpo   runs the DPO or GRPO variant instead (configs/demo_dpo.yaml, demo_grpo.yaml).
# Running it again resumes the pipeline (finished stages are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
variant="${1:-}"
case "$variant" in
  "" | dpo | grpo) ;;
  *) echo "scripts/demo.sh: unknown variant '$variant' (expected dpo or grpo, or nothing for sft -> rm -> ppo)" >&2
     exit 2 ;;
esac
scripts/bootstrap.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # Open MPI refuses root without these

if [ -n "$variant" ]; then
  config="configs/demo_$variant.yaml"
  echo "== the pipeline: mpirun -np 2 build/reglage run $config =="
  mpirun -np 2 --oversubscribe build/reglage run "$config"
  echo "== held-out success (data/demo/heldout_prompts.jsonl: names never in training), greedy, 120 tokens =="
  for stage in sft "$variant"; do
    build/reglage eval --config "$config" --stage "$stage" --prompts data/demo/heldout_prompts.jsonl \
      --reward configs/demo_success.yaml --max-new-tokens 120 | tail -n 1
  done
  exit 0
fi

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

echo "== ppo: the last iteration (reward, KL to the SFT policy per response, ...) =="
grep '"split":"train"' runs/demo/ppo/metrics.jsonl | tail -n 1

echo "== held-out success (data/demo/heldout_prompts.jsonl: names never in training), greedy, 120 tokens =="
for stage in base sft ppo; do
  build/reglage eval --config configs/demo.yaml --stage "$stage" --prompts data/demo/heldout_prompts.jsonl \
    --reward configs/demo_success.yaml --max-new-tokens 120 | tail -n 1
done
echo "== ppo: mean reward (the stage's own reward) and KL to the SFT policy, 4 samples per prompt at T = 1 =="
build/reglage eval --config configs/demo.yaml --stage ppo --prompts data/demo/heldout_prompts.jsonl \
  --samples 4 --max-new-tokens 64 | tail -n 1
