// ggml tensor types as stored in GGUF files, and their dequantization to float32 / bfloat16.
// Block layouts follow ggml (ggml-common.h, ggml-quants.c) exactly; the arithmetic follows the same order,
// so the results equal gguf-py's gguf.quants.dequantize bit for bit (tests/unit/test_gguf.cpp checks this).
//   F32, F16, BF16: one element per block.
//   Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: blocks of 32 with fp16 scale (and fp16 min for the _1 kinds).
//   Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: super-blocks of 256 (QK_K) with packed sub-block scales.
#pragma once
#include <c10/util/BFloat16.h>

#include <cstdint>
#include <string>

namespace reglage::io {

enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kBF16 = 30,
};

struct GgmlTypeInfo {
  GgmlType type;
  const char* name;     // ggml's name: "Q4_K"
  int64_t block_size;   // elements per block
  int64_t type_size;    // bytes per block
};

// The layout of a type this reader dequantizes; nullptr for any other id (known to ggml or not).
const GgmlTypeInfo* ggml_type_info(uint32_t type);

// ggml's name for any type id it defines ("IQ2_XXS", "Q8_K", ...), or "unknown type <id>".
std::string ggml_type_name(uint32_t type);

// Dequantizes `n` elements (a multiple of the type's block size) from `src` into `dst`. The caller has
// checked that `src` holds n / block_size * type_size bytes.
void dequantize(GgmlType type, const uint8_t* src, float* dst, int64_t n);
// Same, rounded to bfloat16 (round to nearest even, as torch's float32 -> bfloat16 cast); BF16 data is copied.
void dequantize(GgmlType type, const uint8_t* src, c10::BFloat16* dst, int64_t n);

// IEEE half -> float, exact (subnormals, infinities and NaN payloads kept).
float fp16_to_fp32(uint16_t h);

}  // namespace reglage::io
