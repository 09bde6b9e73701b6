#!/usr/bin/env python3
# Regenerates tok512_vectors.jsonl: feeds each input below (as bytes) to llama2c_ref.c, a transcription of
# llama2.c run.c's tokenizer (encode with BOS, decode with the leading-space rule), and keeps its output.
#   gcc -O2 -o /tmp/llama2c_ref tests/data/tokenizer/llama2c_ref.c
#   python3 tests/data/tokenizer/gen_tok512_vectors.py /tmp/llama2c_ref > tests/data/tokenizer/tok512_vectors.jsonl
import os, subprocess, sys

here = os.path.dirname(os.path.abspath(__file__))
tok = os.path.join(here, "..", "..", "..", "models", "stories260K", "tok512.bin")

inputs = [
    b"", b"Once upon a time", b"Once upon a time, there was a little girl named Lily.",
    b" ", b"  ", b"   leading spaces", b"trailing spaces   ", b" a", b"a ", b"a  b   c",
    b"\n", b"\n\n", b"line one\nline two\n", b"\t", b"tab\tseparated\tvalues", b"\r\n", b"mixed \t\n whitespace",
    b"Hello, World!", b"HELLO WORLD", b"hello world", b"The quick brown fox jumps over the lazy dog.",
    b"She said, \"Let's go!\"", b"It's John's dog's bone.", b"1234567890", b"3.14159 + 2.71828 = 5.85987",
    b"!@#$%^&*()_+-=[]{}|;':\",./<>?`~", b"a", b"Z", b"x", b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    b"the the the the", b"Tom and Sue went to the park. They played with a ball.",
    "café".encode(), "naïve résumé".encode(), "é".encode(), "e\u0301".encode(),  # precomposed and combining
    "中文".encode(), "你好，世界".encode(), "日本語のテキスト".encode(), "한국어".encode(),
    "Привет мир".encode(), "Ελληνικά".encode(), "עברית".encode(), "العربية".encode(),
    "😀".encode(), "I love 🍕 and 🎉!".encode(), "👨‍👩‍👧".encode(), "∑∫√∞≠".encode(),
    "\u200a".encode(), "a\u200ab".encode(), "\u00a0nbsp".encode(), "\ufeffbom".encode(),
    b"\xff\xfe", b"\xff", b"abc\xffdef", b"\x80", b"\x80\x80\x80", b"x\x80y", b"\xc3", b"\xc3(",
    b"\xe4\xb8", b"\xf0\x9f\x98", b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80",
    b"\xc3\xa9\x80\x80\x80", b"\xf0\x9f\x98\x80\x80", b"\x01\x02\x03", b"\x7f", b"<0x41>", b"<s>", b"</s>", b"<unk>",
    b"\n<s>\n", b"Lily\nwas happy.", b"  \n  ", b"end.", b". ", b"a.b.c", b"don't", b"can't won't",
    b"A" * 200, b"ab" * 100,
]
proc = subprocess.run([sys.argv[1], tok], input=b"".join(x.hex().encode() + b"\n" for x in inputs),
                      capture_output=True, check=True)
sys.stdout.write(proc.stdout.decode())
