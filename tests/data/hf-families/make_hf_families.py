#!/usr/bin/env python3
# Makes the Hugging Face tokenizer families in tests/data/hf-families/ and their expected ids, with
# transformers (5.x), tokenizers and sentencepiece:
#   llama-spm/   llama.cpp's ggml-vocab-llama-spm.gguf converted by transformers (Llama 2 / Mistral / TinyLlama
#                vocab): BPE + byte_fallback, Metaspace(prepend_scheme=first) pre-tokenizer, [<s>, $A] template
#   phi-3/       ggml-vocab-phi-3.gguf converted (Phi-3): Prepend("▁") + Replace(" ", "▁") normalizers, no
#                pre-tokenizer, plus three added tokens of ours: <tool> (lstrip, rstrip), wordy (single_word),
#                <custom> (normalized)
#   smollm2/     ggml-vocab-starcoder.gguf converted (SmolLM's 49152-token byte-level vocab) with SmolLM2's
#                pre-tokenizer Sequence[Digits(individual_digits=true), ByteLevel]
#   spm-small/   a tokenizer.model trained here by sentencepiece (bpe, byte_fallback, 800 pieces, Llama's
#                identity normalizer), and a tokenizer_config.json naming LlamaTokenizer with add_bos_token
#   variants/*.json  variants of llama-spm made by replacing keys of its tokenizer.json / tokenizer_config.json
#                (the tests rebuild them the same way): Metaspace(always, split), Prepend+Replace, add_bos+add_eos
#   vectors.jsonl  {"family", "text", "ids" (add_special_tokens=True), "ids_plain" (False), "decoded"
#                (decode(ids_plain, skip_special_tokens=True))} from AutoTokenizer.from_pretrained(family dir);
#                for spm-small also "sp_ids": sentencepiece's own encode of the text (no BOS)
# Run from the repo root with the project's Python (transformers, gguf, tokenizers, sentencepiece):
#   python tests/data/hf-families/make_hf_families.py /path/to/llama.cpp-vocab
import glob, json, os, shutil, sys, tempfile

import sentencepiece as spm
from tokenizers import Tokenizer
from transformers import AddedToken, AutoTokenizer, PreTrainedTokenizerFast

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.abspath(os.path.join(here, "..", "..", ".."))
vocab_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "..", "shared", "tokenizers", "llama.cpp-vocab")


def compact(path):  # tokenizer.json without indentation: a third of the size, read the same
    with open(path, encoding="utf-8") as f:
        j = json.load(f)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, separators=(",", ":"))


def save(tok, name):
    out = os.path.join(here, name)
    shutil.rmtree(out, ignore_errors=True)
    tok.save_pretrained(out)
    compact(os.path.join(out, "tokenizer.json"))
    return out


def from_gguf(file):
    return AutoTokenizer.from_pretrained(vocab_dir, gguf_file=file)


# --- families from llama.cpp's vocab-only GGUF files --------------------------------------------------------
save(from_gguf("ggml-vocab-llama-spm.gguf"), "llama-spm")
phi3 = from_gguf("ggml-vocab-phi-3.gguf")
phi3.add_tokens([AddedToken("<tool>", lstrip=True, rstrip=True, normalized=False, special=False),
                 AddedToken("wordy", single_word=True, normalized=False, special=False),
                 AddedToken("<custom>", normalized=True, special=False)])
save(phi3, "phi-3")
if os.path.exists(os.path.join(here, "phi-3", "chat_template.jinja")):
    os.remove(os.path.join(here, "phi-3", "chat_template.jinja"))  # not needed by the tests
star = from_gguf("ggml-vocab-starcoder.gguf")
j = json.loads(star.backend_tokenizer.to_str())
j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
smol = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(j)),
                               bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
save(smol, "smollm2")
shutil.copy(os.path.join(vocab_dir, "LICENSE-llama.cpp"), os.path.join(here, "LICENSE-llama.cpp"))

# --- a small SentencePiece model ------------------------------------------------------------------------------
corpus = []
for p in sorted(glob.glob(os.path.join(root, "*.md")) + glob.glob(os.path.join(root, "docs", "*.md"))):
    corpus += open(p, encoding="utf-8").read().splitlines()
corpus += ["Once upon a time there was a little girl named Lily. She liked to play in the park."] * 20
corpus += ["Café, naïve, Führer, 中文, 日本語 12345 2024-11-24"] * 5
spm_dir = os.path.join(here, "spm-small")
shutil.rmtree(spm_dir, ignore_errors=True)
os.makedirs(spm_dir)
with tempfile.TemporaryDirectory() as tmp:
    with open(os.path.join(tmp, "corpus.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(l for l in corpus if l.strip()))
    spm.SentencePieceTrainer.train(
        input=os.path.join(tmp, "corpus.txt"), model_prefix=os.path.join(spm_dir, "tokenizer"), model_type="bpe",
        vocab_size=800, byte_fallback=True, character_coverage=1.0, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        minloglevel=2)
os.remove(os.path.join(spm_dir, "tokenizer.vocab"))
with open(os.path.join(spm_dir, "tokenizer_config.json"), "w") as f:
    json.dump({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
               "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "legacy": False}, f, indent=2)

# --- variants of llama-spm --------------------------------------------------------------------------------------
variants = {
    "llama-spm-always": {"tokenizer_json": {"pre_tokenizer": {
        "type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}}},
    "llama-spm-legacy": {"tokenizer_json": {
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None}},
    "llama-spm-bos-eos": {"tokenizer_config": {"add_bos_token": True, "add_eos_token": True}},
}
os.makedirs(os.path.join(here, "variants"), exist_ok=True)
var_tmp = tempfile.mkdtemp()
for name, v in variants.items():
    with open(os.path.join(here, "variants", name + ".json"), "w", encoding="utf-8") as f:
        json.dump(dict(base="llama-spm", **v), f, ensure_ascii=False, indent=2)
    d = os.path.join(var_tmp, name)
    shutil.copytree(os.path.join(here, "llama-spm"), d)
    for file, key in [("tokenizer.json", "tokenizer_json"), ("tokenizer_config.json", "tokenizer_config")]:
        with open(os.path.join(d, file), encoding="utf-8") as f:
            j = json.load(f)
        j.update(v.get(key, {}))
        with open(os.path.join(d, file), "w", encoding="utf-8") as f:
            json.dump(j, f, ensure_ascii=False)

# --- expected ids ----------------------------------------------------------------------------------------------------
inp = open(os.path.join(vocab_dir, "ggml-vocab-llama-spm.gguf.inp"), encoding="utf-8").read()
texts = inp.split("\n__ggml_vocab_test__\n")
if texts[-1] == "":
    texts.pop()
texts += [
    "<s>Hello</s>", "<s> Hello </s> world", "Hi <unk> there", "a<s>b", "  <s>  ", "</s>",
    "<|endoftext|>Hello<|endoftext|>", "<|user|>\nHi<|end|>\n<|assistant|>", "<fim_prefix>x<fim_suffix>",
    "use <tool>  now", "x<tool>y", "  <tool>", "<tool>\n\n", "a wordy word", "awordy wordyb wordy", "wordy",
    "say <custom> here", "<custom>", "x<custom>y", " <custom> ",
    "12345 678", "digits: 3.14159, 2024-11-24, 1e10", "version 1.2.3a",
    "trailing spaces   ", "   leading", "two  spaces", "tab\tand\nnewline\r\n", "\n\n\n", " ",
    "Café naïve Führer", "中文 日本語のテキスト 한국어", "emoji 😀🎉 👨‍👩‍👧", "▁ already metaspace ▁x", "<0x41> is A",
    "Once upon a time, there was a little girl named Lily.",
]
families = ["llama-spm", "phi-3", "smollm2", "spm-small"] + list(variants)
sp = spm.SentencePieceProcessor(model_file=os.path.join(spm_dir, "tokenizer.model"))
with open(os.path.join(here, "vectors.jsonl"), "w", encoding="utf-8") as out:
    for fam in families:
        d = os.path.join(var_tmp, fam) if fam in variants else os.path.join(here, fam)
        tok = AutoTokenizer.from_pretrained(d)
        for t in texts:
            ids = tok.encode(t, add_special_tokens=True)
            plain = tok.encode(t, add_special_tokens=False)
            row = {"family": fam, "text": t, "ids": ids, "ids_plain": plain,
                   "decoded": tok.decode(plain, skip_special_tokens=True)}
            if fam == "spm-small":
                row["sp_ids"] = sp.encode(t)
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(fam, type(tok).__name__, len(texts), "texts")
shutil.rmtree(var_tmp)
