#!/usr/bin/env python3
"""The peer figure for reglage's batched generation: transformers' `model.generate` on SmolLM2-135M-Instruct
(converted with `reglage convert`), SDPA attention, KV cache, greedy decoding that never stops early
(min_new_tokens = max_new_tokens). Each row gets its own short prompt; rows are left-padded.

    python bench/peer/hf_generate.py --model /tmp/smollm2-hf --batch 16 --new-tokens 64 --threads 2

tokens/s = batch x new tokens over the wall time of one whole generate() call (prefill included), best of
--repeats after a warm-up call, as `reglage_bench generate` counts. step_s is the median call.
Prints one JSON line. Not part of the build or the tests."""
import argparse, statistics, time

import torch

from peer_common import common_args, emit, load_model, load_tokenizer

SUBJECTS = ["a cat", "the sea", "a robot", "winter", "a small town", "music", "the moon", "bread"]


def main():
    ap = argparse.ArgumentParser()
    common_args(ap)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tok, model = load_tokenizer(a.model), load_model(a.model, a.dtype).eval()
    # Distinct short prompts (plain text, no chat template); their lengths differ, so left padding is used.
    prompts = [f"Write {b + 1} sentences about {SUBJECTS[b % len(SUBJECTS)]}." for b in range(a.batch)]
    enc = tok(prompts, return_tensors="pt", padding=True)
    kw = dict(max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, do_sample=False, use_cache=True,
              pad_token_id=tok.pad_token_id)
    times = []
    with torch.inference_mode():
        for r in range(a.repeats + 1):  # the first call is the warm-up
            t0 = time.perf_counter()
            out = model.generate(**enc, **kw)
            if r > 0:
                times.append(time.perf_counter() - t0)
    generated = out.shape[1] - enc["input_ids"].shape[1]
    assert generated == a.new_tokens, f"generated {generated} tokens, expected {a.new_tokens}"
    best = min(times)
    emit(name="hf_generate", shape=f"smollm2-135m batch={a.batch} new={a.new_tokens} greedy", dtype=a.dtype,
         threads=a.threads, tokens_per_s=a.batch * a.new_tokens / best, step_s=statistics.median(times),
         best_s=best, ms_per_decode_step=1000 * best / a.new_tokens, prompt_tokens=enc["input_ids"].shape[1],
         transformers=__import__("transformers").__version__, torch=torch.__version__)


if __name__ == "__main__":
    main()
