#!/usr/bin/env python3
"""Float32 error of reglage and of transformers on SmolLM2 (not run by the tests; figures in the issue notes).

For each prompt of prompts.json: transformers float32 vs transformers float64 (the exact answer to ~1e-12),
reglage float32 vs transformers float64, and reglage float32 vs transformers float32, max abs over all positions
and the whole vocabulary. Needs scripts/get_model.sh smollm2 and build/reglage; run from the repository root
with the venv of make_reference.py.
"""
import json, torch, os
from transformers import AutoModelForCausalLM
d = "models/smollm2"; f = os.path.basename(os.path.realpath(d + "/SmolLM2-135M-Instruct-Q4_1.gguf"))
m = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.realpath(d + "/SmolLM2-135M-Instruct-Q4_1.gguf")), gguf_file=f, torch_dtype=torch.float32)
P = json.load(open("tests/data/smollm2/prompts.json"))
rows = P if isinstance(P, list) else P["prompts"]
res = []
for r in rows:
    ids = torch.tensor([r["ids"]])
    with torch.no_grad():
        torch.set_num_threads(1); a = m(ids).logits
        torch.set_num_threads(2); b = m(ids).logits
    res.append((ids, a, b))
m = m.to(torch.float64)
for ids, a, b in res:
    with torch.no_grad(): c = m(ids).logits.float()
    pass
import subprocess, numpy as np
for k, (ids, a, b) in enumerate(res):
    out = f"/tmp/rl{k}.bin"
    subprocess.run(["build/reglage", "logits", "--model", d + "/SmolLM2-135M-Instruct-Q4_1.gguf", "--ids", " ".join(map(str, ids[0].tolist())), "--out", out, "--threads", "2"], check=True, capture_output=True)
    raw = open(out, "rb").read(); T, V = np.frombuffer(raw[:8], dtype=np.int32)
    r = torch.from_numpy(np.frombuffer(raw[8:8 + 4 * T * V], dtype=np.float32).reshape(1, T, V).copy())
    with torch.no_grad(): c = m(ids).logits
    print(T, "reglage32-vs-tf64", (r.double() - c).abs().max().item(), "tf32-vs-tf64", (a.double() - c).abs().max().item(), "reglage32-vs-tf32", (r - a).abs().max().item())
