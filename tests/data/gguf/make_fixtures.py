#!/usr/bin/env python3
"""Generate the GGUF fixtures under tests/data/gguf/ with PyPI's `gguf` package (llama.cpp's own gguf-py).

This script documents how the committed fixtures were produced; reglage's tests never run Python.
Set up once, outside the repository:

    python3 -m venv /work/venv && /work/venv/bin/pip install gguf numpy
    /work/venv/bin/python tests/data/gguf/make_fixtures.py      # writes next to itself

Files written (all little endian):

  quants.gguf          GGUF v3, one tensor per type: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K Q4_K Q5_K Q6_K
                       (a few blocks each; random data, seed 0), plus metadata of every value type.
  quants_v2.gguf       the same bytes with the version field set to 2 (v2 and v3 share one layout in little
                       endian; v3 only added big-endian files).
  quants_expected.safetensors
                       for each tensor of quants.gguf, the values gguf.quants.dequantize gives, float32, same
                       name and shape (numpy order: outermost dimension first).
  llama_f32.gguf       tests/data/hf/llama_f32 converted as convert_hf_to_gguf.py does for architecture llama:
                       attn_q / attn_k rows permuted, F32, untied (output.weight present).
  llama_bf16_tied.gguf tests/data/hf/llama_bf16_sharded converted the same way, BF16, tied (no output.weight).
  llama_q8_0.gguf      tests/data/hf/llama_f32 converted with Q8_0 matrices (those whose row length is a
                       multiple of 32; the rest F32, as llama.cpp falls back), norms F32.
  qwen2_f32.gguf       tests/data/hf/qwen2_f32 converted for architecture qwen2 (no permutation, q/k/v biases),
                       with a 96-entry tokenizer.ggml.tokens list.

Quantized data: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 come from gguf.quants.quantize on normal(0, 1) floats; gguf-py
has no quantizer for the K-quants, so Q2_K..Q6_K blocks are random bytes with the fp16 scale fields set to
finite normal(0, 0.05) values (every bit pattern of the packed scales and quants is then exercised).
"""

import json
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T, GGUFValueType as V

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else HERE)
HF = os.path.join(HERE, "..", "hf")


# ---- small safetensors reader / writer (numpy only) ------------------------------------------------------
ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}  # BF16 kept as raw uint16 bits


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        buf = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        out[name] = (e["dtype"], np.frombuffer(buf[b:end], dtype=ST_DTYPES[e["dtype"]]).reshape(e["shape"]))
    return out


def read_hf_dir(d):
    files = [f for f in sorted(os.listdir(d)) if f.endswith(".safetensors")]
    tensors = {}
    for f in files:
        tensors.update(read_safetensors(os.path.join(d, f)))
    with open(os.path.join(d, "config.json")) as f:
        return json.load(f), tensors


def write_safetensors(path, tensors):
    header, chunks, at = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [at, at + a.nbytes]}
        chunks.append(a.tobytes())
        at += a.nbytes
    h = json.dumps(header, sort_keys=True).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(chunks))


# ---- quants.gguf ------------------------------------------------------------------------------------------
def k_quant_blocks(rng, qtype, n_blocks):
    """Random bytes with the fp16 fields (d, dmin) finite."""
    bs, ts = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, ts), dtype=np.uint8)
    half = lambda: rng.normal(0, 0.05, size=(n_blocks, 1)).astype(np.float16).view(np.uint8)
    if qtype in (T.Q2_K,):                       # scales[16] qs[64] d dmin
        raw[:, ts - 4:ts - 2] = half(); raw[:, ts - 2:] = half()
    elif qtype in (T.Q3_K, T.Q6_K):              # ... d at the end
        raw[:, ts - 2:] = half()
    elif qtype in (T.Q4_K, T.Q5_K):              # d dmin first
        raw[:, 0:2] = half(); raw[:, 2:4] = half()
    return raw


def write_quants(path_gguf, path_expected):
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(path_gguf, arch="reglage-test")
    # Metadata of every value type, checked by test_gguf.cpp.
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.1)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "h\u00e9llo \u2581world")
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62))
    w.add_float64("test.f64", -1.25e-300)
    w.add_key_value("test.arr_i32", [1, -2, 3], V.ARRAY, sub_type=V.INT32)
    w.add_key_value("test.arr_f32", [0.5, -1.5], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("test.arr_bool", [True, False, True], V.ARRAY, sub_type=V.BOOL)
    w.add_key_value("test.arr_u8", [0, 255], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("test.arr_str", ["a", "", "\u00fc"], V.ARRAY, sub_type=V.STRING)
    w.add_key_value("test.arr_nested", [["x", "yz"], ["w"]], V.ARRAY, sub_type=V.ARRAY)

    expected = {}

    def add(name, qtype, floats=None, raw=None, shape=None):
        if raw is None:
            raw = gguf.quants.quantize(floats, qtype)
        w.add_tensor(name, raw, raw_dtype=qtype)
        deq = gguf.quants.dequantize(raw, qtype)
        expected[name] = deq.astype(np.float32)
        if floats is not None and qtype not in (T.F32, T.F16, T.BF16):
            err = np.abs(deq - floats).max()
            print(f"{name}: {qtype.name} {list(deq.shape)} max |deq - x| = {err:.4g} (max |x| {np.abs(floats).max():.3g})")
        else:
            print(f"{name}: {qtype.name} {list(deq.shape)}")

    # F32, 3-D, to check the dimension order.
    f32 = rng.normal(0, 1, size=(2, 3, 8)).astype(np.float32)
    w.add_tensor("t_f32", f32)
    expected["t_f32"] = f32
    # F16 / BF16 with special values: signed zero, subnormals, infinities, NaN, extremes.
    specials16 = np.array([0x0000, 0x8000, 0x0001, 0x03ff, 0x8001, 0x7bff, 0xfbff, 0x7c00, 0xfc00, 0x7e00,
                           0x3c00, 0xbc00, 0x0400, 0x3555, 0x7d01, 0x8400], dtype=np.uint16)
    f16 = np.concatenate([specials16, rng.normal(0, 1, size=48).astype(np.float16).view(np.uint16)])
    add("t_f16", T.F16, raw=f16.reshape(4, 16).view(np.uint8))
    bf16 = np.concatenate([np.array([0x0000, 0x8000, 0x0001, 0x807f, 0x7f7f, 0xff7f, 0x7f80, 0xff80, 0x7fc0,
                                     0x3f80, 0xbf80, 0x0080, 0x3eaa, 0x7f81, 0x4049, 0xc2f7], dtype=np.uint16),
                           rng.integers(0, 65536, size=48).astype(np.uint16)])
    add("t_bf16", T.BF16, raw=bf16.reshape(4, 16).view(np.uint8))

    for qtype in (T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1):
        x = rng.normal(0, 1, size=(4, 64)).astype(np.float32)  # 8 blocks of 32
        x[0, :32] = 0.0                                           # an all-zero block (d = 0)
        add("t_" + qtype.name.lower(), qtype, floats=x)
    for qtype in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K):
        raw = k_quant_blocks(rng, qtype, 4).reshape(2, -1)       # 2 rows of 512 = 4 blocks of 256
        add("t_" + qtype.name.lower(), qtype, raw=raw)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    write_safetensors(path_expected, expected)


# ---- model conversions (convert_hf_to_gguf.py's rules for the tensors we use) --------------------------------
def permute(weights, n_head, n_head_kv):
    """convert_hf_to_gguf.py LlamaModel.permute: rotate-half rows -> interleaved pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf):
    if hf in HF_TO_GGUF:
        return HF_TO_GGUF[hf]
    parts = hf.split(".")
    assert parts[0] == "model" and parts[1] == "layers", hf
    return f"blk.{parts[2]}.{LAYER['.'.join(parts[3:])]}"


def convert(hf_dir, out_path, arch, quant=None, tokens=False):
    cfg, tensors = read_hf_dir(hf_dir)
    w = gguf.GGUFWriter(out_path, arch=arch)
    w.add_name(os.path.basename(hf_dir))
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(cfg.get("rope_theta") or cfg["rope_parameters"]["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    if tokens:
        w.add_tokenizer_model("gpt2")
        w.add_token_list([f"<t{i}>" for i in range(cfg["vocab_size"])])
    H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    for name in sorted(tensors, key=lambda n: gguf_name(n)):
        dtype, a = tensors[name]
        if arch == "llama" and name.endswith("q_proj.weight"):
            a = permute(a, H, H)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            a = permute(a, H, Hkv)
        a = np.ascontiguousarray(a)
        if quant is not None and a.ndim == 2 and a.shape[1] % 32 == 0 and dtype == "F32":
            w.add_tensor(gguf_name(name), gguf.quants.quantize(a, quant), raw_dtype=quant)
        elif dtype == "BF16":
            w.add_tensor(gguf_name(name), a.view(np.uint8), raw_dtype=T.BF16)
        else:
            w.add_tensor(gguf_name(name), a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{os.path.basename(out_path)}: {len(tensors)} tensors from {hf_dir}")


def main():
    from importlib.metadata import version
    print("gguf", version("gguf"), "numpy", np.__version__)
    q = os.path.join(OUT, "quants.gguf")
    write_quants(q, os.path.join(OUT, "quants_expected.safetensors"))
    with open(q, "rb") as f:
        b = bytearray(f.read())
    assert b[:4] == b"GGUF" and struct.unpack_from("<I", b, 4)[0] == 3
    struct.pack_into("<I", b, 4, 2)
    with open(os.path.join(OUT, "quants_v2.gguf"), "wb") as f:
        f.write(b)
    convert(os.path.join(HF, "llama_f32"), os.path.join(OUT, "llama_f32.gguf"), "llama")
    convert(os.path.join(HF, "llama_bf16_sharded"), os.path.join(OUT, "llama_bf16_tied.gguf"), "llama")
    convert(os.path.join(HF, "llama_f32"), os.path.join(OUT, "llama_q8_0.gguf"), "llama", quant=T.Q8_0)
    convert(os.path.join(HF, "qwen2_f32"), os.path.join(OUT, "qwen2_f32.gguf"), "qwen2", tokens=True)


if __name__ == "__main__":
    main()
