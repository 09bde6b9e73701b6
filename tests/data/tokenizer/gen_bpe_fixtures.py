#!/usr/bin/env python3
# Regenerates the small byte-level BPE fixtures with the Hugging Face `tokenizers` library (pip install tokenizers):
#   bpe_small_qwen/tokenizer.json    Qwen2-style: NFC, Split(Qwen2 regex) + ByteLevel(use_regex=false), added specials
#   bpe_small_prefix/tokenizer.json  ByteLevel(add_prefix_space=true, use_regex=true), ignore_merges=true
#   bpe_small_vectors.jsonl          {"fixture", "text", "ids"}: what `tokenizers` encodes (no special-token template)
# Run from the repo root: python3 tests/data/tokenizer/gen_bpe_fixtures.py
import glob, json, os
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.join(here, "..", "..", "..")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
         r"|\s+(?!\S)|\s+")

corpus = []
for path in sorted(glob.glob(os.path.join(root, "**", "*.md"), recursive=True)):
    corpus += open(path, encoding="utf-8").read().splitlines()
corpus += ["Once upon a time there was a little girl named Lily. She liked to play in the park."] * 20
corpus += ["Qwen2 splits digits: 12345 and 2024-11-24.", "Café, naïve, Führer, 中文, 日本語, 😀 🎉"] * 10

def train(pre_tokenizer, normalizer, ignore_merges):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return tok

qwen = train(pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2), behavior="isolated", invert=False),
                                      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
             normalizers.NFC(), False)
qwen.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
prefix = train(pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True), None, True)
prefix.add_special_tokens(["<|endoftext|>"])

texts = [
    "", "Hello world", "Hello  world  ", " leading", "Once upon a time, there was a little girl named Lily.",
    "It's HER'S, they'RE, we've, I'M, you'll, he'd", "digits 1234567890 and 3.14", "tabs\tand\nnewlines\r\n\n",
    "   \n\n   x", "Café naïve Führer", "中文 日本語のテキスト 한국어", "emoji 😀🎉 👨‍👩‍👧", "symbols !@#$%^&*()_+{}|:<>?",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n", "a<|endoftext|>b", "<|endoftext|><|endoftext|>",
    "<|im_start", "unseenwordzzqx", "Lily Lily Lily", "  ", "\n", "x" * 40,
]
with open(os.path.join(here, "bpe_small_vectors.jsonl"), "w") as out:
    for name, tok in [("bpe_small_qwen", qwen), ("bpe_small_prefix", prefix)]:
        os.makedirs(os.path.join(here, name), exist_ok=True)
        tok.save(os.path.join(here, name, "tokenizer.json"))
        for t in texts:
            ids = tok.encode(t, add_special_tokens=False).ids
            out.write(json.dumps({"fixture": name, "text": t, "ids": ids}, ensure_ascii=False) + "\n")
