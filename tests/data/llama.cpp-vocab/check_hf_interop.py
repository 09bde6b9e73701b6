#!/usr/bin/env python3
"""Checks the Hugging Face files reglage writes for GGUF tokenizers (`reglage tokenize --save-hf`).

For each vocabulary here: writes its tokenizer.json / tokenizer_config.json with the built reglage binary, loads
them with `tokenizers` and with transformers' AutoTokenizer, and compares the ids of llama.cpp's test inputs
(no special tokens added) with the expected ids in X.gguf.out; then checks that add_special_tokens=True adds BOS
exactly when the GGUF says so, and that decoding gives the input back. Not run by ctest (it needs Python):

    /work/venv/bin/python tests/data/llama.cpp-vocab/check_hf_interop.py build/reglage
"""
import os
import subprocess
import sys
import tempfile

from tokenizers import Tokenizer
from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
FAMILIES = ["llama-spm", "phi-3", "gpt-2", "starcoder", "falcon", "deepseek-llm", "deepseek-coder", "mpt"]
SEP = "\n__ggml_vocab_test__\n"


def vectors(family):
    with open(os.path.join(HERE, f"ggml-vocab-{family}.gguf.inp"), encoding="utf-8", newline="") as f:
        texts = f.read().split(SEP)[:-1]
    with open(os.path.join(HERE, f"ggml-vocab-{family}.gguf.out"), encoding="utf-8") as f:
        ids = [[int(x) for x in line.split()] for line in f.read().split("\n")]
    return list(zip(texts, ids))


def main():
    reglage = sys.argv[1] if len(sys.argv) > 1 else "build/reglage"
    failures = 0
    for family in FAMILIES:
        gguf = os.path.join(HERE, f"ggml-vocab-{family}.gguf")
        with tempfile.TemporaryDirectory() as out:
            subprocess.run([reglage, "tokenize", "--model", gguf, "--save-hf", out], check=True)
            add_bos = subprocess.run([reglage, "tokenize", "--model", gguf, "--text", "a"], check=True,
                                     capture_output=True, text=True).stdout.split()
            raw = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
            auto = AutoTokenizer.from_pretrained(out)
            ok = {"tokenizers": 0, "transformers": 0, "decode": 0}
            vs = vectors(family)
            for text, want in vs:
                got = raw.encode(text, add_special_tokens=False).ids
                ok["tokenizers"] += got == want
                got2 = auto(text, add_special_tokens=False)["input_ids"]
                ok["transformers"] += got2 == want
                ok["decode"] += auto.decode(want, clean_up_tokenization_spaces=False) == text
                if got != want and failures < 20:
                    print(f"  {family}: {text!r}: tokenizers {got} != {want}")
                    failures += 1
            # BOS added by transformers exactly when reglage (the GGUF) adds it.
            with_special = auto("a")["input_ids"]
            bos_ok = with_special == [int(x) for x in add_bos]
            print(f"{family}: tokenizers {ok['tokenizers']}/{len(vs)}, transformers {ok['transformers']}/{len(vs)}, "
                  f"decode {ok['decode']}/{len(vs)}, special tokens as reglage: {bos_ok} ({with_special} vs {add_bos})")


if __name__ == "__main__":
    main()
