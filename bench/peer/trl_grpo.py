#!/usr/bin/env python3
"""The peer figure for reglage's grpo iteration on SmolLM2-135M-Instruct (converted with `reglage convert`):
TRL's GRPOTrainer with a PEFT LoRA adapter (rank 16 / alpha 32 / dropout 0 on q, k, v, o, gate, up, down; the
reference is the base with the adapter off), on the CPU, float32, SDPA, no gradient checkpointing, no vLLM.
One iteration = --prompts chat-rendered prompts x --generations sampled completions (temperature 1, top-k/top-p
off) of exactly --new-tokens tokens (EOS suppressed until then; --stop-at-eos: up to --new-tokens, ending at the
end-of-turn token as reglage's do), a rules reward -|words - 20| / 20 (--reward length: reglage's), group
advantages, beta 0.04 (the k3 KL to the reference, as reglage's default; TRL's own default is 0), one pass
(num_iterations = 1) over the rollouts in --minibatch responses per optimizer step (default: all of them, one
optimizer step per iteration), --micro-batch responses per forward/backward (gradient accumulation between).

    python bench/peer/trl_grpo.py --model /tmp/smollm2-hf --prompts 16 --generations 8 --new-tokens 64 \
        --iterations 4 --threads 2

The settings of bench/smollm2_grpo.yaml (its prompts, its reward, completions ending at the end-of-turn token):
add --data bench/data/smollm2_grpo_prompts.jsonl --reward length --stop-at-eos.

Data parallel over processes, as reglage's ranks (torch.distributed with gloo on the CPU; the Trainer reads
torchrun's environment):

    torchrun --standalone --nproc_per_node 2 bench/peer/trl_grpo.py --model /tmp/smollm2-hf ... --threads 1

The settings stay global: --micro-batch responses per forward/backward are split over the processes, and
the rollout and optimizer steps are the same as with one process. Only the first process prints.

iteration_s = wall time between iteration boundaries (optimizer steps, from a trainer callback), median of the
iterations after the first; tokens_per_s counts prompt + completion tokens of one iteration over it, and
generate_s is the median time of the iteration's generate() call. Prints one JSON line.
Not part of the build or the tests."""
import argparse, contextlib, json, os, statistics, sys, tempfile, time

import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from peer_common import common_args, emit, load_model, load_tokenizer, lora_config

NAMES = ["Mia", "Leo", "Ava", "Sam", "Zoe", "Max", "Lily", "Tom", "Ella", "Ben", "Ruby", "Finn", "Nora", "Jack"]
TOPICS = ["a lost kite", "the first snow", "a broken clock", "a friendly dog", "the night sky", "a red boat"]


def word_count_reward(completions, **kwargs):
    """Rules reward: 0 for a 20-word answer, less the further the word count is from 20."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [-abs(len(t.split()) - 20) / 20 for t in texts]


def length_reward(completions, **kwargs):
    """reglage's `length` rule as bench/smollm2_grpo.yaml sets it: 1 - 0.02 x the characters (code points) short of
    60 or past 120."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [1.0 - 0.02 * (max(0, 60 - len(t)) + max(0, len(t) - 120)) for t in texts]


class IterationClock(TrainerCallback):
    """Wall-clock time at every optimizer step's end; iteration boundaries are every `steps_per_iter` steps."""

    def __init__(self, steps_per_iter):
        self.steps_per_iter, self.marks, self.logs = steps_per_iter, [], []

    def on_train_begin(self, args, state, control, **kw):
        self.marks.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kw):
        if state.global_step % self.steps_per_iter == 0:
            self.marks.append(time.perf_counter())

    def on_log(self, args, state, control, logs=None, **kw):
        self.logs.append(dict(logs or {}))


class TimedGRPOTrainer(GRPOTrainer):
    """Records the wall time of each rollout's generate() call (the whole generation batch at once)."""

    def __init__(self, *args, **kwargs):
        self.generate_times = []
        super().__init__(*args, **kwargs)

    def _generate_single_turn(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = super()._generate_single_turn(*args, **kwargs)
        self.generate_times.append(time.perf_counter() - t0)
        return out


def main():
    ap = argparse.ArgumentParser()
    common_args(ap)
    ap.add_argument("--prompts", type=int, default=16, help="prompts per iteration")
    ap.add_argument("--generations", type=int, default=8, help="completions per prompt (one group)")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--minibatch", type=int, default=0, help="responses per optimizer step (0: all)")
    ap.add_argument("--micro-batch", type=int, default=16, help="responses per forward/backward")
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--targets", default="all-linear")
    ap.add_argument("--data", help="prompts JSONL ({\"messages\": [...]} per line, used in order) instead of the "
                                   "built-in story prompts, e.g. bench/data/smollm2_grpo_prompts.jsonl")
    ap.add_argument("--reward", choices=["words", "length"], default="words",
                    help="words: -|words - 20| / 20; length: bench/smollm2_grpo.yaml's length rule")
    ap.add_argument("--stop-at-eos", action="store_true",
                    help="completions end at the end-of-turn token, as reglage's do (default: exactly --new-tokens)")
    a = ap.parse_args()
    responses = a.prompts * a.generations
    minibatch = a.minibatch or responses
    micro = min(a.micro_batch, minibatch)
    if responses % minibatch or minibatch % micro:
        sys.exit(f"trl_grpo: --minibatch {minibatch} must divide {responses} responses and --micro-batch {micro} "
                 f"must divide --minibatch")
    steps_per_iter = responses // minibatch
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    if micro % world:
        sys.exit(f"trl_grpo: --micro-batch {micro} must be divisible by the {world} processes")
    torch.set_num_threads(a.threads)

    tok, model = load_tokenizer(a.model), load_model(a.model, a.dtype)
    if a.data:
        with open(a.data) as f:
            messages = [json.loads(line)["messages"] for line in f if line.strip()]
        if len(messages) < a.prompts * a.iterations:
            sys.exit(f"trl_grpo: {a.data} holds {len(messages)} prompts; {a.prompts} x {a.iterations} iterations needed")
        rows = [{"prompt": m} for m in messages[:a.prompts * a.iterations]]
    else:
        rows = [{"prompt": [{"role": "user", "content": f"Tell a short story about {TOPICS[i % len(TOPICS)]} and a "
                                                        f"child named {NAMES[i % len(NAMES)]} (number {i})."}]}
                for i in range(a.prompts * a.iterations)]
    cfg = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl_grpo_", dir="/tmp"), use_cpu=True, bf16=False, fp16=False,
        gradient_checkpointing=False, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
        seed=0, shuffle_dataset=False, dataloader_num_workers=0,
        per_device_train_batch_size=micro // world, gradient_accumulation_steps=minibatch // micro,
        steps_per_generation=responses // micro,  # one rollout of prompts x generations per iteration
        num_generations=a.generations, max_completion_length=a.new_tokens,
        generation_kwargs={} if a.stop_at_eos else {"min_new_tokens": a.new_tokens}, temperature=1.0, top_p=1.0, top_k=0,
        beta=a.beta, num_iterations=1, learning_rate=1e-4, lr_scheduler_type="constant", max_grad_norm=1.0,
        max_steps=a.iterations * steps_per_iter)
    clock = IterationClock(steps_per_iter)
    trainer = TimedGRPOTrainer(model=model, reward_funcs=length_reward if a.reward == "length" else word_count_reward, args=cfg, processing_class=tok,
                               train_dataset=Dataset.from_list(rows), callbacks=[clock],
                               peft_config=lora_config(a.rank, a.alpha, a.targets))
    with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs; stdout keeps the JSON line
        trainer.train()

    if int(os.environ.get("RANK", "0")) != 0:
        return
    rollouts = len(trainer.generate_times)
    assert rollouts == a.iterations, f"{rollouts} rollouts, expected one per iteration ({a.iterations})"
    iters = [b - e for e, b in zip(clock.marks, clock.marks[1:])]
    timed = iters[1:] or iters
    # The trainer's own logs, one per optimizer step; the rollout's metrics are in the first step of an iteration.
    rollout_logs = [l for l in clock.logs if "num_tokens" in l]
    step_logs = [l for l in clock.logs if "step_time" in l]
    # Tokens of one iteration as TRL counts them (`num_tokens`, cumulative: prompts + completions, no padding).
    seen = [l["num_tokens"] for l in rollout_logs]
    iter_tokens = seen[-1] - seen[-2] if len(seen) > 1 else seen[-1]
    # TRL's `step_time`: its training_step()s of one optimizer step (rollout included, clip and AdamW not).
    trainer_s = [sum(l["step_time"] for l in step_logs[i:i + steps_per_iter])
                 for i in range(0, len(step_logs), steps_per_iter)]
    iteration_s = statistics.median(timed)
    generate_s = statistics.median(trainer.generate_times[1:] or trainer.generate_times)
    emit(name="trl_grpo", shape=f"smollm2-135m prompts={a.prompts} x generations={a.generations} "
                                f"new={a.new_tokens} lora r={a.rank}", dtype=a.dtype, threads=a.threads,
         torch_threads=torch.get_num_threads(), processes=world,
         tokens_per_s=iter_tokens / iteration_s, step_s=iteration_s,
         iteration_s=iteration_s, iterations_s=iters, trainer_iteration_s=trainer_s,
         tokens_per_iteration=iter_tokens, optimizer_steps_per_iteration=steps_per_iter,
         generate_s=generate_s, generated_tokens_per_s=responses * rollout_logs[-1]["completions/mean_length"] / generate_s,
         completion_mean_length=rollout_logs[-1]["completions/mean_length"],
         reward=rollout_logs[-1]["reward"], kl=step_logs[-1].get("kl"), beta=a.beta, loss_type=cfg.loss_type,
         trl=__import__("trl").__version__, torch=torch.__version__)


if __name__ == "__main__":
    main()
