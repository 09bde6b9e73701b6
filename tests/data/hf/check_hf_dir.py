#!/usr/bin/env python3
"""Manual interop check (not used by the tests): does a model directory load in
Hugging Face transformers and reproduce a reference logits file?

    python check_hf_dir.py MODEL_DIR "IDS" REF_LOGITS_BIN [--adapter ADAPTER_DIR] [--tol TOL]

MODEL_DIR      a directory written by reglage (or by make_fixtures.py):
               config.json + model.safetensors (or a sharded index) [+ tokenizer files]
IDS            space-separated token ids, e.g. "30 42 30 14"
REF_LOGITS_BIN reference logits, layout (little endian):
               int32 T, int32 V, float32[T][V] logits, int32[T] ids
--adapter DIR  apply a PEFT adapter (PeftModel.from_pretrained) on top of MODEL_DIR

The model is loaded in float32 and run as model(input_ids).logits with no
attention mask.  Prints the max abs difference to the reference; the exit
status is 0 when it is <= --tol (default 1e-3), 1 otherwise, 2 on bad input.
"""

import argparse
import struct
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM


def read_ref(path):
    with open(path, "rb") as f:
        data = f.read()
    t, v = struct.unpack_from("<ii", data, 0)
    n = 8 + 4 * t * v + 4 * t
    if t <= 0 or v <= 0 or len(data) != n:
        raise ValueError(f"{path}: bad size {len(data)} for T={t} V={v} (expected {n})")
    logits = np.frombuffer(data, dtype="<f4", count=t * v, offset=8).reshape(t, v)
    ids = np.frombuffer(data, dtype="<i4", count=t, offset=8 + 4 * t * v)
    return torch.from_numpy(logits.copy()), ids.tolist()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("ids", help='space-separated token ids, e.g. "30 42 30"')
    ap.add_argument("ref", help="reference logits .bin")
    ap.add_argument("--adapter", help="PEFT adapter directory to apply first")
    ap.add_argument("--tol", type=float, default=1e-3)
    a = ap.parse_args()

    ids = [int(x) for x in a.ids.split()]
    ref, ref_ids = read_ref(a.ref)
    if ref_ids != ids:
        print(f"note: ids in {a.ref} are {ref_ids}, given {ids}", file=sys.stderr)
    if ref.shape[0] != len(ids):
        print(f"error: reference has T={ref.shape[0]} rows, {len(ids)} ids given", file=sys.stderr)
        return 2

    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32)
    if a.adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, a.adapter)
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids], dtype=torch.long)).logits[0].float()
    if logits.shape != ref.shape:
        print(f"error: logits shape {tuple(logits.shape)} != reference {tuple(ref.shape)}", file=sys.stderr)
        return 2

    diff = (logits - ref).abs()
    am = (logits.argmax(-1) == ref.argmax(-1)).float().mean().item()
    print(f"max_abs_diff {diff.max().item():.6g}  mean_abs_diff {diff.mean().item():.6g}  "
          f"argmax_agree {am:.3f}  (T={ref.shape[0]} V={ref.shape[1]})")
    return 0 if diff.max().item() <= a.tol else 1


if __name__ == "__main__":
    sys.exit(main())
