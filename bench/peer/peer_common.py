"""Shared by the transformers/PEFT/TRL peer scripts: loading the converted model, the LoRA config, the JSON line."""
import json, resource

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# reglage's `all-linear` LoRA targets, by their Hugging Face Llama names (lm_head excluded).
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def common_args(ap):
    ap.add_argument("--model", required=True, help="a Hugging Face directory (`reglage convert --out DIR`)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=DTYPES, default="float32")


def load_model(path, dtype):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], attn_implementation="sdpa")


def load_tokenizer(path):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    if tok.pad_token is None:  # SmolLM2's tokenizer has none; reglage pads with EOS too
        tok.pad_token = tok.eos_token
    return tok


def lora_config(rank, alpha, targets):
    from peft import LoraConfig
    modules = ALL_LINEAR if targets == "all-linear" else targets.split(",")
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=modules, bias="none",
                      task_type="CAUSAL_LM")


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def emit(**fields):
    fields["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(fields), flush=True)
