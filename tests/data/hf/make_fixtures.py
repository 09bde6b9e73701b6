#!/usr/bin/env python3
"""Generate the tiny Hugging Face / PEFT reference fixtures under tests/data/hf/.

This script documents how the committed fixtures were produced; reglage's
tests never run Python.  Re-running it with the package versions listed in
README.md reproduces the files byte for byte (modulo library version changes).

Usage (from anywhere):
    python make_fixtures.py [OUT_DIR]       # default: the directory of this file

Every <model>/ref_logits.bin has the layout (little endian):
    int32 T, int32 V, float32[T][V] logits, int32[T] ids
The logits are computed in float32 (the saved checkpoint is reloaded with
dtype=torch.float32, so bf16/f16 weights are upcast exactly), with
model(input_ids).logits and no attention mask (plain causal attention).
"""

import json
import os
import struct
import sys

import numpy as np
import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
import peft
from peft import LoraConfig, PeftModel, get_peft_model

OUT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))

VOCAB = 96
T = 12
ROPE_THETA = 500000.0

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    rope_theta=ROPE_THETA,
    rms_norm_eps=1e-6,
    max_position_embeddings=64,
    bos_token_id=1,
    eos_token_id=2,
)

# Same 12 ids for every model, all in [3, VOCAB).
IDS = torch.randint(3, VOCAB, (T,), generator=torch.Generator().manual_seed(1234)).tolist()


def reinit_(model, seed):
    """Larger random weights so the logits are far from uniform."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied params are listed once
            if "norm" in name:
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
            elif name.endswith(".bias"):
                v = 0.1 * torch.randn(p.shape, generator=g)
            else:
                v = 0.2 * torch.randn(p.shape, generator=g)
            p.copy_(v.to(p.dtype))


def patch_config(d):
    """transformers 5 writes rope_theta only inside "rope_parameters"; also
    write the classic top-level key (as transformers 4.x did) so loaders that
    know either spelling read the same value.  transformers 5 accepts both."""
    path = os.path.join(d, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.get("rope_parameters") or {}
    theta = rp.get("rope_theta", cfg.get("rope_theta"))
    assert theta == ROPE_THETA, theta
    cfg["rope_theta"] = theta
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def write_ref(path, logits, ids):
    logits = logits.detach().to(torch.float32).contiguous().numpy()
    t, v = logits.shape
    assert t == len(ids)
    with open(path, "wb") as f:
        f.write(struct.pack("<ii", t, v))
        f.write(logits.astype("<f4").tobytes())
        f.write(np.asarray(ids, dtype="<i4").tobytes())


@torch.no_grad()
def logits_of(model, ids):
    model.eval()
    return model(torch.tensor([ids], dtype=torch.long)).logits[0].float()


def build(name, cls, cfg, seed, dtype, **save_kw):
    torch.manual_seed(seed)
    model = cls(cfg).to(torch.float32)
    reinit_(model, seed)
    model = model.to(dtype)
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, **save_kw)
    patch_config(d)
    # Reference: reload from disk in float32 (exact upcast of bf16/f16).
    ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    lg = logits_of(ref, IDS)
    # Sanity: the in-memory model (upcast) agrees with the reloaded one.
    lg2 = logits_of(model.to(torch.float32), IDS)
    assert torch.allclose(lg, lg2, atol=1e-3), (lg - lg2).abs().max()
    write_ref(os.path.join(d, "ref_logits.bin"), lg, IDS)
    print(f"{name}: logits std {lg.std():.3f}, max|.| {lg.abs().max():.3f}")
    return d


def main():
    torch.manual_seed(0)
    print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)
    print("ids", IDS)

    # a) Llama, float32, untied lm_head.
    a = build("llama_f32", LlamaForCausalLM,
              LlamaConfig(**COMMON, tie_word_embeddings=False),
              seed=0, dtype=torch.float32)

    # b) Llama, bfloat16, tied embeddings, sharded (model.safetensors.index.json).
    b = build("llama_bf16_sharded", LlamaForCausalLM,
              LlamaConfig(**COMMON, tie_word_embeddings=True),
              seed=1, dtype=torch.bfloat16, max_shard_size="20KB")
    with open(os.path.join(b, "model.safetensors.index.json")) as f:
        shards = set(json.load(f)["weight_map"].values())
    assert len(shards) >= 2, shards

    # c) Mistral, float16, no sliding window.
    build("mistral_f16", MistralForCausalLM,
          MistralConfig(**COMMON, tie_word_embeddings=False, sliding_window=None),
          seed=2, dtype=torch.float16)

    # d) Qwen2, float32, q/k/v biases (non-zero after reinit_), untied.
    build("qwen2_f32", Qwen2ForCausalLM,
          Qwen2Config(**COMMON, tie_word_embeddings=False, use_sliding_window=False),
          seed=3, dtype=torch.float32)

    # e) PEFT LoRA adapter on (a), with random A and B (PEFT inits B to zero).
    base = AutoModelForCausalLM.from_pretrained(a, dtype=torch.float32, attn_implementation="eager")
    lcfg = LoraConfig(r=4, lora_alpha=8,
                      target_modules=["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"],
                      lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    pm = get_peft_model(base, lcfg)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_A" in n:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif "lora_B" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    e = os.path.join(OUT, "peft_llama")
    # Do not record this machine's absolute path in adapter_config.json.
    pm.peft_config["default"].base_model_name_or_path = "llama_f32"
    pm.save_pretrained(e)
    card = os.path.join(e, "README.md")  # PEFT's boilerplate model card
    if os.path.exists(card):
        os.remove(card)
    # PEFT stores target_modules from a Python set (arbitrary order): sort it
    # so re-running the script gives identical files.
    acfg_path = os.path.join(e, "adapter_config.json")
    with open(acfg_path) as f:
        acfg = json.load(f)
    acfg["target_modules"] = sorted(acfg["target_modules"])
    with open(acfg_path, "w") as f:
        json.dump(acfg, f, indent=2, sort_keys=True)
        f.write("\n")
    # Reference: fresh base (f32) + adapter from disk, unmerged, eval mode.
    base2 = AutoModelForCausalLM.from_pretrained(a, dtype=torch.float32, attn_implementation="eager")
    pm2 = PeftModel.from_pretrained(base2, e)
    pm2.eval()
    lg = logits_of(pm2, IDS)
    lg_mem = logits_of(pm, IDS)
    assert torch.allclose(lg, lg_mem, atol=1e-3), (lg - lg_mem).abs().max()
    with open(os.path.join(a, "ref_logits.bin"), "rb") as f:
        t, v = struct.unpack("<ii", f.read(8))
        base_lg = torch.from_numpy(np.frombuffer(f.read(4 * t * v), dtype="<f4").reshape(t, v).copy())
    delta = (lg - base_lg).abs().max().item()
    assert delta > 0.1, delta
    write_ref(os.path.join(e, "ref_logits.bin"), lg, IDS)
    print(f"peft_llama: max|adapter - base| = {delta:.3f}")


if __name__ == "__main__":
    main()
