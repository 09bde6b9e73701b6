#!/usr/bin/env python3
"""Interop check of `reglage convert` on SmolLM2-135M-Instruct (not run by the tests; its figures are in README.md).

    scripts/get_model.sh smollm2
    /work/venv/bin/python tests/data/smollm2/check_convert.py [--reglage build/reglage] [--tokenizer PATH]

1. `reglage convert --model models/smollm2/SmolLM2-135M-Instruct-Q4_1.gguf --out DIR` (a temporary directory);
2. transformers loads DIR (`AutoModelForCausalLM.from_pretrained(DIR)`, float32) and runs each prompt of
   prompts.json (their ids, one forward, no cache);
3. `reglage logits` of the same ids with --model the GGUF and with --model DIR.
Printed, per prompt and overall, the max abs logit differences (all positions, whole vocabulary):
   transformers(DIR) vs reglage(GGUF), transformers(DIR) vs reglage(DIR), reglage(DIR) vs reglage(GGUF) (expected
   0: bit-identical), and transformers(DIR) vs transformers(GGUF) (the committed reference: last position and
   top-5 at every position). Exit status 0 when the first two are <= --tol (default 2e-4; measured:
   1.05e-4 over all positions and the whole vocabulary, 8.1e-5 over the committed reference's logits) and the third
   is 0. When DIR holds tokenizer files, transformers' AutoTokenizer of DIR must also encode each rendered prompt
   to the reference ids and render the same chat template.
--tokenizer is passed on to `reglage convert` (needed while reglage cannot read a GGUF's own tokenizer).
With --dtype bfloat16 the directory is also written in bfloat16 and loaded by transformers (figures printed,
not checked).
"""

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
GGUF = os.path.join(ROOT, "models", "smollm2", "SmolLM2-135M-Instruct-Q4_1.gguf")


def read_logits(path):
    """int32 T, int32 V, float32[T][V], int32[T] (reglage logits' layout)."""
    data = open(path, "rb").read()
    t, v = struct.unpack_from("<ii", data, 0)
    return torch.from_numpy(np.frombuffer(data, dtype="<f4", count=t * v, offset=8).reshape(t, v).copy())


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        dt = {"F32": "<f4", "I32": "<i4"}[e["dtype"]]
        out[name] = torch.from_numpy(np.frombuffer(raw[8 + n + b:8 + n + end], dtype=dt).reshape(e["shape"]).copy())
    return out


def reglage_logits(binary, model, ids, out):
    subprocess.run([binary, "logits", "--model", model, "--ids", " ".join(map(str, ids)), "--out", out], check=True)
    return read_logits(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reglage", default=os.path.join(ROOT, "build", "reglage"))
    ap.add_argument("--tokenizer", default="")
    ap.add_argument("--tol", type=float, default=2e-4)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    a = ap.parse_args()
    prompts = json.load(open(os.path.join(HERE, "prompts.json"), encoding="utf-8"))
    ref = read_safetensors(os.path.join(HERE, "reference.safetensors"))
    tmp = tempfile.mkdtemp(prefix="smollm2_convert_")
    out_dir = os.path.join(tmp, "hf")
    cmd = [a.reglage, "convert", "--model", GGUF, "--out", out_dir]
    if a.tokenizer:
        cmd += ["--tokenizer", a.tokenizer]
    subprocess.run(cmd, check=True)
    print("written:", " ".join(sorted(os.listdir(out_dir))))
    print("config.json:", json.dumps(json.load(open(os.path.join(out_dir, "config.json")))))
    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32, attn_implementation="eager").eval()
    # The written tokenizer files: transformers' tokenizer of DIR encodes each prompt to the reference ids and
    # renders the same chat template.
    tok_ok = True
    if os.path.exists(os.path.join(out_dir, "tokenizer.json")):
        tok = AutoTokenizer.from_pretrained(out_dir)
        for p in prompts:
            same_ids = tok(p["text"], add_special_tokens=False).input_ids == p["ids"]
            same_text = (tok.chat_template is not None and
                         tok.apply_chat_template(p["messages"], add_generation_prompt=True, tokenize=False) == p["text"])
            print(f"tokenizer of DIR, {p['name']}: ids equal {same_ids}, chat template renders equal {same_text}")
            tok_ok = tok_ok and same_ids and same_text
    else:
        print("no tokenizer.json written: tokenizer not checked")

    worst = {"tf_dir-reglage_gguf": 0.0, "tf_dir-reglage_dir": 0.0, "reglage_dir-reglage_gguf": 0.0,
             "tf_dir-tf_gguf": 0.0}
    argmax_same = 0
    positions = 0
    for p in prompts:
        ids = p["ids"]
        with torch.no_grad():
            tf = model(torch.tensor([ids])).logits[0].float()  # (T, V)
        rg = reglage_logits(a.reglage, GGUF, ids, os.path.join(tmp, "gguf.bin"))
        rd = reglage_logits(a.reglage, out_dir, ids, os.path.join(tmp, "dir.bin"))
        name = p["name"]
        top_ids = ref[name + ".top5_ids"].long()
        d = {"tf_dir-reglage_gguf": (tf - rg).abs().max().item(),
             "tf_dir-reglage_dir": (tf - rd).abs().max().item(),
             "reglage_dir-reglage_gguf": (rd - rg).abs().max().item(),
             "tf_dir-tf_gguf": max((tf[-1] - ref[name + ".last_logits"]).abs().max().item(),
                                   (tf.gather(1, top_ids) - ref[name + ".top5_logits"]).abs().max().item())}
        argmax_same += int((tf.argmax(1) == rg.argmax(1)).sum())
        positions += len(ids)
        print(name, " ".join(f"{k}={v:.3g}" for k, v in d.items()))
        for k, v in d.items():
            worst[k] = max(worst[k], v)
    print("overall:", " ".join(f"{k}={v:.3g}" for k, v in worst.items()),
          f"argmax equal at {argmax_same}/{positions} positions")

    if a.dtype == "bfloat16":
        bf_dir = os.path.join(tmp, "hf_bf16")
        bf_cmd = [a.reglage, "convert", "--model", GGUF, "--out", bf_dir, "--dtype", "bfloat16"]
        subprocess.run(bf_cmd + (["--tokenizer", a.tokenizer] if a.tokenizer else []), check=True)
        bf = AutoModelForCausalLM.from_pretrained(bf_dir, dtype=torch.float32, attn_implementation="eager").eval()
        ids = prompts[0]["ids"]
        with torch.no_grad():
            tfb = bf(torch.tensor([ids])).logits[0].float()
        rg = reglage_logits(a.reglage, GGUF, ids, os.path.join(tmp, "gguf.bin"))
        print(f"bfloat16 directory, loaded by transformers in float32: max abs vs reglage(GGUF, float32) = "
              f"{(tfb - rg).abs().max().item():.3g}, argmax equal at "
              f"{int((tfb.argmax(1) == rg.argmax(1)).sum())}/{len(ids)} positions")

    ok = (worst["tf_dir-reglage_gguf"] <= a.tol and worst["tf_dir-reglage_dir"] <= a.tol and
          worst["reglage_dir-reglage_gguf"] == 0.0 and tok_ok)
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
