#!/usr/bin/env python3
"""The peer figure for reglage's LoRA sft step on SmolLM2-135M-Instruct (converted with `reglage convert`):
transformers + PEFT, SDPA attention, LoRA rank 16 / alpha 32 / dropout 0 on q, k, v, o, gate, up and down
projections. One step = forward with labels (the model's shifted token cross-entropy) on random tokens,
backward, clip_grad_norm 1.0, AdamW (lr 1e-4) step.

    python bench/peer/hf_peft_sft.py --model /tmp/smollm2-hf --batch 8 --seq 256 --steps 10 --threads 2

tokens/s = batch x seq over the median step time, after 2 warm-up steps. Prints one JSON line.
Not part of the build or the tests."""
import argparse, statistics, time

import torch
from peft import get_peft_model

from peer_common import common_args, emit, load_model, lora_config


def main():
    ap = argparse.ArgumentParser()
    common_args(ap)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--targets", default="all-linear", help="all-linear or a comma list of module names")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = get_peft_model(load_model(a.model, a.dtype), lora_config(a.rank, a.alpha, a.targets))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size, (a.batch, a.seq))
    times = []
    for step in range(a.steps + 2):  # 2 warm-up steps
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= 2:
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    emit(name="hf_peft_sft", shape=f"smollm2-135m batch={a.batch} seq={a.seq} lora r={a.rank}", dtype=a.dtype,
         threads=a.threads, tokens_per_s=a.batch * a.seq / step_s, step_s=step_s, steps=len(times),
         trainable_params=sum(p.numel() for p in params), loss=loss.item(),
         peft=__import__("peft").__version__, torch=torch.__version__)


if __name__ == "__main__":
    main()
