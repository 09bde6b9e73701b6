#!/usr/bin/python3
"""The peer figure for `reglage_bench train`: a PyTorch eager training loop of a Llama (llama2.c's
model.py shape: RMSNorm, rotary, grouped-query attention, SwiGLU, tied embeddings), full fine-tuning with
AdamW, next-token cross-entropy on random tokens. Run with Debian's python3-torch (the same LibTorch 1.13.1
that reglage links), so the comparison isolates the training loop:

    /usr/bin/python3 bench/peer/pytorch_sft.py --shape stories15M --batch 8 --seq 256 --threads 2
    /usr/bin/python3 bench/peer/pytorch_sft.py --shape stories260K --batch 16 --seq 256 --threads 2

Prints one JSON object (tokens/s = batch x seq / step time, median of the timed steps after warm-up).
Not part of the build or the tests."""
import argparse, json, math, statistics, time

import torch
import torch.nn as nn
import torch.nn.functional as F

SHAPES = {  # dim, layers, heads, kv_heads, hidden, vocab
    "stories260K": (64, 5, 8, 4, 172, 512),
    "stories15M": (288, 6, 6, 6, 768, 32000),
}


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotary(x, cos, sin):  # x: (B, T, H, Dh)
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rot * sin


class Block(nn.Module):
    def __init__(self, dim, heads, kv_heads, hidden):
        super().__init__()
        self.h, self.kv, self.dh = heads, kv_heads, dim // heads
        self.wq = nn.Linear(dim, heads * self.dh, bias=False)
        self.wk = nn.Linear(dim, kv_heads * self.dh, bias=False)
        self.wv = nn.Linear(dim, kv_heads * self.dh, bias=False)
        self.wo = nn.Linear(heads * self.dh, dim, bias=False)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.n1, self.n2 = RMSNorm(dim), RMSNorm(dim)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        y = self.n1(x)
        q = rotary(self.wq(y).view(B, T, self.h, self.dh), cos, sin).transpose(1, 2)
        k = rotary(self.wk(y).view(B, T, self.kv, self.dh), cos, sin).transpose(1, 2)
        v = self.wv(y).view(B, T, self.kv, self.dh).transpose(1, 2)
        if self.kv != self.h:
            k = k.repeat_interleave(self.h // self.kv, 1)
            v = v.repeat_interleave(self.h // self.kv, 1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.dh) + mask
        out = (F.softmax(att.float(), -1).type_as(q) @ v).transpose(1, 2).reshape(B, T, -1)
        x = x + self.wo(out)
        y = self.n2(x)
        return x + self.w2(F.silu(self.w1(y)) * self.w3(y))


class Llama(nn.Module):
    def __init__(self, dim, layers, heads, kv_heads, hidden, vocab, seq):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, kv_heads, hidden) for _ in range(layers))
        self.norm = RMSNorm(dim)
        dh = dim // heads
        inv = 1.0 / (10000.0 ** (torch.arange(0, dh, 2).float() / dh))
        f = torch.outer(torch.arange(seq).float(), inv)
        emb = torch.cat([f, f], -1)[None, :, None, :]
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)
        self.register_buffer("mask", torch.full((seq, seq), float("-inf")).triu(1), persistent=False)

    def forward(self, ids, targets):
        T = ids.shape[1]
        x = self.emb(ids)
        cos, sin, mask = self.cos[:, :T], self.sin[:, :T], self.mask[:T, :T]
        for b in self.blocks:
            x = b(x, cos, sin, mask)
        logits = F.linear(self.norm(x), self.emb.weight)  # tied
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=SHAPES, default="stories15M")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dim, layers, heads, kv, hidden, vocab = SHAPES[a.shape]
    m = Llama(dim, layers, heads, kv, hidden, vocab, a.seq)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    ids = torch.randint(0, vocab, (a.batch, a.seq + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    times = []
    for step in range(a.steps + 2):  # 2 warm-up steps
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.dtype == "bfloat16"):
            loss = m(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= 2:
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    params = sum(p.numel() for p in m.parameters())
    print(json.dumps({"name": "pytorch_eager_train", "shape": f"{a.shape} batch={a.batch} seq={a.seq} full",
                      "dtype": a.dtype, "threads": a.threads, "params": params, "step_ms": 1000 * step_s,
                      "tokens_per_s": a.batch * a.seq / step_s, "loss": loss.item()}))


if __name__ == "__main__":
    main()
