#!/usr/bin/env bash
# Peak resident memory per rank of the SFT stage and of the PPO stage on the same model (the demo's),
# 2 ranks, each stage in a process of its own: PPO keeps ONE base per rank (actor, critic and reward are
# LoRA adapters on it, the reference is the base with the actor's adapter off), so its peak should stay
# close to SFT's. Needs a finished demo run (runs/demo: sft and rm done). Prints one line per rank.
#   bench/stage_memory.sh [SFT_STEPS=60] [PPO_ITERATIONS=10]
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
sft_steps=${1:-60}
ppo_iterations=${2:-10}
[ -d runs/demo/rm/final ] || { echo "run the demo first (scripts/demo.sh): runs/demo/rm/final is missing" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s#runs/demo#$work/run#" configs/demo.yaml > "$work/demo.yaml"
awk '/^  - name: rm/{exit} {print}' "$work/demo.yaml" | sed "s#$work/run#$work/sft_only#" > "$work/sft_only.yaml"
mpirun -np 2 --oversubscribe /usr/bin/time -a -o "$work/rss" -f "sft  peak RSS per rank: %M KB" \
  build/reglage run "$work/sft_only.yaml" --set stages.sft.max_steps="$sft_steps" > /dev/null
mkdir -p "$work/run" && cp -r runs/demo/sft runs/demo/rm runs/demo/pipeline.json "$work/run/"
mpirun -np 2 --oversubscribe /usr/bin/time -a -o "$work/rss" -f "ppo  peak RSS per rank: %M KB" \
  build/reglage run "$work/demo.yaml" --restart-from ppo --set stages.ppo.max_iterations="$ppo_iterations" > /dev/null
cat "$work/rss"
