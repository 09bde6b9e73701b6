#!/usr/bin/env python3
# Makes tests/data/hf-families/spm_model/: a SentencePiece BPE tokenizer.model trained here, and the ids
# transformers and sentencepiece give for test texts (sentencepiece 0.2, transformers 5.x):
#   tokenizer.model        sentencepiece BPE, 600 pieces, byte_fallback, identity normalizer, trained on generated
#                          English (a seeded word list) plus a few non-ASCII lines: the same file on every run
#   tokenizer_config.json  {"tokenizer_class": "LlamaTokenizer", "add_bos_token": true} (as Llama 2 writes it;
#                          transformers 5 would not add BOS without it), legacy=False (its default)
#   transformers_merges.jsonl  the merges transformers generated from the vocabulary, in rank order
#   vectors.jsonl          {"text", "ids" (add_special_tokens=True), "ids_plain" (False), "decoded"
#                          (decode(ids_plain, skip_special_tokens=True)), "ids_legacy" (legacy=True, no specials),
#                          "sp_ids" (sentencepiece's own encode)} from LlamaTokenizer.from_pretrained on a directory
#                          holding tokenizer.model and that config
# Texts: llama.cpp's llama-spm test inputs (ggml-vocab-llama-spm.gguf.inp, MIT, see ../LICENSE-llama.cpp) and
# special-token strings, non-ASCII and byte-fallback cases.
# Run from the repo root with the project's Python:
#   python tests/data/hf-families/spm_model/make_spm_model.py /path/to/llama.cpp-vocab
import json, os, random, shutil, sys, tempfile

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2
from transformers import AutoTokenizer

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.abspath(os.path.join(here, "..", "..", "..", ".."))
vocab_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "..", "shared", "tokenizers", "llama.cpp-vocab")

# --- corpus: seeded sentences over a fixed word list ---------------------------------------------------------------
rng = random.Random(1234)
nouns = "cat dog girl boy park tree house river garden teacher model token number apple window story friend".split()
verbs = "runs jumps sees likes finds plays reads writes opens builds watches helps".split()
adjs = "little big happy quiet bright green old new small kind".split()
words = "the a and to of in on with there was once upon time she he they it this that".split()
lines = []
for _ in range(3000):
    n = rng.randint(4, 12)
    sent = [rng.choice([rng.choice(words), rng.choice(adjs), rng.choice(nouns), rng.choice(verbs)]) for _ in range(n)]
    sent[0] = sent[0].capitalize()
    lines.append(" ".join(sent) + rng.choice([".", "!", "?", ",", ""]) + (" " + str(rng.randint(0, 9999)) if rng.random() < 0.2 else ""))
lines += ["Café, naïve, Führer, déjà vu, façade"] * 20 + ["中文 日本語 한국어 привет мир"] * 5

with tempfile.TemporaryDirectory() as tmp:
    corpus = os.path.join(tmp, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=os.path.join(tmp, "tokenizer"), model_type="bpe", vocab_size=600,
        byte_fallback=True, character_coverage=0.9995, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, minloglevel=2)
    # The trainer records its temporary paths: cleared so that every run writes the same bytes.
    m = model_pb2.ModelProto()
    m.ParseFromString(open(os.path.join(tmp, "tokenizer.model"), "rb").read())
    del m.trainer_spec.input[:]
    m.trainer_spec.model_prefix = ""
    with open(os.path.join(here, "tokenizer.model"), "wb") as f:
        f.write(m.SerializeToString())
with open(os.path.join(here, "tokenizer_config.json"), "w") as f:
    json.dump({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True}, f, indent=2)
    f.write("\n")

# --- expected ids --------------------------------------------------------------------------------------------------
texts = open(os.path.join(vocab_dir, "ggml-vocab-llama-spm.gguf.inp"), encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
if texts[-1] == "":
    texts.pop()
texts += [
    "<s>Hello</s>", "<s> Hello </s> world", "Hi <unk> there", "a<s>b", "  <s>  ", "</s>",
    "trailing spaces   ", "   leading", "two  spaces", "tab\tand\nnewline\r\n", " ",
    "Café naïve Führer", "中文 日本語のテキスト 한국어", "emoji 😀🎉 👨‍👩‍👧", "▁ already metaspace ▁x", "<0x41> is A",
    "Once upon a time, there was a little girl named Lily.", "Ω≈ç√∫ ¡™£¢∞§¶•ªº", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u00a0nbsp\u200bzw",
]
tok = AutoTokenizer.from_pretrained(here)
with tempfile.TemporaryDirectory() as tmp:
    shutil.copy(os.path.join(here, "tokenizer.model"), tmp)
    with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "legacy": True}, f)
    legacy = AutoTokenizer.from_pretrained(tmp)
# transformers' merges (generated from the vocabulary), one [left, right] pair a line, in rank order
with open(os.path.join(here, "transformers_merges.jsonl"), "w", encoding="utf-8") as out:
    for m in json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]:
        out.write(json.dumps(m, ensure_ascii=False) + "\n")
sp = spm.SentencePieceProcessor(model_file=os.path.join(here, "tokenizer.model"))
with open(os.path.join(here, "vectors.jsonl"), "w", encoding="utf-8") as out:
    for t in texts:
        plain = tok.encode(t, add_special_tokens=False)
        row = {"text": t, "ids": tok.encode(t, add_special_tokens=True), "ids_plain": plain,
               "decoded": tok.decode(plain, skip_special_tokens=True),
               "ids_legacy": legacy.encode(t, add_special_tokens=False), "sp_ids": sp.encode(t)}
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
print(type(tok).__name__, sp.get_piece_size(), "pieces,", len(texts), "texts,",
      sum(json.loads(l)["ids_plain"] != json.loads(l)["sp_ids"] for l in open(os.path.join(here, "vectors.jsonl"))),
      "differ from sentencepiece")
