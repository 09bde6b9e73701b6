#!/usr/bin/env python3
# Checks that a llama2.c tokenizer exported by Llama2cTokenizer::save_hf encodes in Hugging Face as run.c does.
#   pip install tokenizers transformers
#   gcc -O2 -o /tmp/llama2c_ref tests/data/tokenizer/llama2c_ref.c
#   python3 tests/data/tokenizer/check_hf_interop.py /tmp/llama2c_ref models/stories260K/tok512.bin EXPORTED_DIR
# Inputs: the valid UTF-8 inputs of tok512_vectors.jsonl plus a few more. Prints each difference and a count.
import json, os, subprocess, sys
from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

ref_bin, tok_bin, hf_dir = sys.argv[1:4]
here = os.path.dirname(os.path.abspath(__file__))
texts = []
for line in open(os.path.join(here, "tok512_vectors.jsonl")):
    try:
        texts.append(bytes.fromhex(json.loads(line)["hex"]).decode("utf-8"))
    except UnicodeDecodeError:
        pass  # Python strings cannot hold invalid UTF-8
texts += ["Hello\tthere\n\nfriend", "  double  spaces  ", "Tom's cat's toy.", "ÆØÅ æøå", "\u2028", "🙂🙃", "a😀b",
          "ß", "İstanbul", "\x00", "mixed 中 and é and 😀 ", "The end.\n"]
out = subprocess.run([ref_bin, tok_bin], input="".join(t.encode().hex() + "\n" for t in texts).encode(),
                     capture_output=True, check=True).stdout.decode().splitlines()
libs = {
    "tokenizers": lambda t, tk=Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json")): tk.encode(t).ids,
    "PreTrainedTokenizerFast": lambda t, tk=PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(hf_dir, "tokenizer.json")): tk(t)["input_ids"],
    "AutoTokenizer": lambda t, tk=AutoTokenizer.from_pretrained(hf_dir): tk(t)["input_ids"],
}
for name, encode in libs.items():
    same = 0
    for t, line in zip(texts, out):
        ref, got = json.loads(line)["ids"], encode(t)
        if got == ref:
            same += 1
        else:
            print(f"{name}: {t!r}: run.c {ref} hf {got}")
    print(f"{name}: {same}/{len(texts)} identical")
