// Dequantization of ggml block formats. Each dequantize_block_* reads one block and writes its
// block_size floats; the formulas and their evaluation order are ggml's dequantize_row_* (ggml-quants.c).
// This file is compiled with -ffp-contract=off (CMakeLists.txt): a fused multiply-add would round
// differently from ggml's reference and gguf-py.
#include "framework/io/gguf_quants.h"

#include <algorithm>
#include <cstring>

namespace reglage::io {

namespace {

constexpr int64_t kQK = 32;    // block size of the simple quants (QK4_0 = QK4_1 = QK5_0 = QK5_1 = QK8_0)
constexpr int64_t kQK_K = 256; // super-block size of the K-quants

uint16_t read_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
float read_fp16(const uint8_t* p) { return fp16_to_fp32(read_u16(p)); }

// block_q8_0: fp16 d; int8 qs[32]
void dequantize_block_q8_0(const uint8_t* b, float* y) {
  const float d = read_fp16(b);
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < kQK; ++j) y[j] = float(qs[j]) * d;
}

// block_q4_0: fp16 d; uint8 qs[16] (low nibbles are elements 0..15, high nibbles 16..31)
void dequantize_block_q4_0(const uint8_t* b, float* y) {
  const float d = read_fp16(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = float((qs[j] & 0x0F) - 8) * d;
    y[j + kQK / 2] = float((qs[j] >> 4) - 8) * d;
  }
}

// block_q4_1: fp16 d, fp16 m; uint8 qs[16]
void dequantize_block_q4_1(const uint8_t* b, float* y) {
  const float d = read_fp16(b), m = read_fp16(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = float(qs[j] & 0x0F) * d + m;
    y[j + kQK / 2] = float(qs[j] >> 4) * d + m;
  }
}

// block_q5_0: fp16 d; uint32 qh (fifth bits); uint8 qs[16]
void dequantize_block_q5_0(const uint8_t* b, float* y) {
  const float d = read_fp16(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < kQK / 2; ++j) {
    const uint8_t xh_0 = ((qh >> (j + 0)) << 4) & 0x10;
    const uint8_t xh_1 = ((qh >> (j + 12))) & 0x10;
    y[j] = float(int32_t((qs[j] & 0x0F) | xh_0) - 16) * d;
    y[j + kQK / 2] = float(int32_t((qs[j] >> 4) | xh_1) - 16) * d;
  }
}

// block_q5_1: fp16 d, fp16 m; uint32 qh; uint8 qs[16]
void dequantize_block_q5_1(const uint8_t* b, float* y) {
  const float d = read_fp16(b), m = read_fp16(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < kQK / 2; ++j) {
    const uint8_t xh_0 = ((qh >> (j + 0)) << 4) & 0x10;
    const uint8_t xh_1 = ((qh >> (j + 12))) & 0x10;
    y[j] = float((qs[j] & 0x0F) | xh_0) * d + m;
    y[j + kQK / 2] = float((qs[j] >> 4) | xh_1) * d + m;
  }
}

// block_q2_K: uint8 scales[16] (low nibble scale, high nibble min); uint8 qs[64] (2 bits); fp16 d, dmin
void dequantize_block_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* q = b + 16;
  const float d = read_fp16(b + 80), min = read_fp16(b + 82);
  int is = 0;
  for (int n = 0; n < kQK_K; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      uint8_t sc = scales[is++];
      float dl = d * float(sc & 0xF), ml = min * float(sc >> 4);
      for (int l = 0; l < 16; ++l) *y++ = dl * float(int8_t((q[l] >> shift) & 3)) - ml;
      sc = scales[is++];
      dl = d * float(sc & 0xF);
      ml = min * float(sc >> 4);
      for (int l = 0; l < 16; ++l) *y++ = dl * float(int8_t((q[l + 16] >> shift) & 3)) - ml;
      shift += 2;
    }
    q += 32;
  }
}

// block_q3_K: uint8 hmask[32] (third bits); uint8 qs[64] (low 2 bits); uint8 scales[12] (16 x 6 bits); fp16 d
void dequantize_block_q3_k(const uint8_t* b, float* y) {
  constexpr uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
  const uint8_t* hm = b;
  const uint8_t* q = b + 32;
  const float d_all = read_fp16(b + 108);
  uint32_t aux[4];
  std::memcpy(aux, b + 96, 12);
  // Unpack 16 6-bit scales: low 4 bits from bytes 0..7, high 2 bits from bytes 8..11.
  const uint32_t tmp = aux[2];
  aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
  aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
  aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
  aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
  int8_t scales[16];
  std::memcpy(scales, aux, 16);
  int is = 0;
  uint8_t m = 1;
  for (int n = 0; n < kQK_K; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      float dl = d_all * float(scales[is++] - 32);
      for (int l = 0; l < 16; ++l)
        *y++ = dl * float(int8_t((q[l + 0] >> shift) & 3) - ((hm[l + 0] & m) ? 0 : 4));
      dl = d_all * float(scales[is++] - 32);
      for (int l = 0; l < 16; ++l)
        *y++ = dl * float(int8_t((q[l + 16] >> shift) & 3) - ((hm[l + 16] & m) ? 0 : 4));
      shift += 2;
      m <<= 1;
    }
    q += 32;
  }
}

// The 6-bit scale and min of sub-block j from Q4_K/Q5_K's 12 packed bytes.
void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
  }
}

// block_q4_K: fp16 d, dmin; uint8 scales[12]; uint8 qs[128] (4 bits)
void dequantize_block_q4_k(const uint8_t* b, float* y) {
  const float d = read_fp16(b), min = read_fp16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  int is = 0;
  uint8_t sc, m;
  for (int j = 0; j < kQK_K; j += 64) {
    get_scale_min_k4(is + 0, scales, &sc, &m);
    const float d1 = d * float(sc), m1 = min * float(m);
    get_scale_min_k4(is + 1, scales, &sc, &m);
    const float d2 = d * float(sc), m2 = min * float(m);
    for (int l = 0; l < 32; ++l) *y++ = d1 * float(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * float(q[l] >> 4) - m2;
    q += 32;
    is += 2;
  }
}

// block_q5_K: fp16 d, dmin; uint8 scales[12]; uint8 qh[32] (fifth bits); uint8 qs[128] (low 4 bits)
void dequantize_block_q5_k(const uint8_t* b, float* y) {
  const float d = read_fp16(b), min = read_fp16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  int is = 0;
  uint8_t sc, m, u1 = 1, u2 = 2;
  for (int j = 0; j < kQK_K; j += 64) {
    get_scale_min_k4(is + 0, scales, &sc, &m);
    const float d1 = d * float(sc), m1 = min * float(m);
    get_scale_min_k4(is + 1, scales, &sc, &m);
    const float d2 = d * float(sc), m2 = min * float(m);
    for (int l = 0; l < 32; ++l) *y++ = d1 * float((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * float((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    ql += 32;
    is += 2;
    u1 <<= 2;
    u2 <<= 2;
  }
}

// block_q6_K: uint8 ql[128] (low 4 bits); uint8 qh[64] (high 2 bits); int8 scales[16]; fp16 d
void dequantize_block_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = read_fp16(b + 208);
  for (int n = 0; n < kQK_K; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int8_t q1 = int8_t((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int8_t q2 = int8_t((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int8_t q3 = int8_t((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int8_t q4 = int8_t((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l + 0] = d * float(sc[is + 0]) * float(q1);
      y[l + 32] = d * float(sc[is + 2]) * float(q2);
      y[l + 64] = d * float(sc[is + 4]) * float(q3);
      y[l + 96] = d * float(sc[is + 6]) * float(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

using BlockFn = void (*)(const uint8_t*, float*);

struct TypeEntry {
  GgmlTypeInfo info;
  BlockFn block;  // nullptr for the plain float types, handled element-wise
};

const TypeEntry kTypes[] = {
    {{GgmlType::kF32, "F32", 1, 4}, nullptr},
    {{GgmlType::kF16, "F16", 1, 2}, nullptr},
    {{GgmlType::kBF16, "BF16", 1, 2}, nullptr},
    {{GgmlType::kQ8_0, "Q8_0", kQK, 34}, dequantize_block_q8_0},
    {{GgmlType::kQ4_0, "Q4_0", kQK, 18}, dequantize_block_q4_0},
    {{GgmlType::kQ4_1, "Q4_1", kQK, 20}, dequantize_block_q4_1},
    {{GgmlType::kQ5_0, "Q5_0", kQK, 22}, dequantize_block_q5_0},
    {{GgmlType::kQ5_1, "Q5_1", kQK, 24}, dequantize_block_q5_1},
    {{GgmlType::kQ2_K, "Q2_K", kQK_K, 84}, dequantize_block_q2_k},
    {{GgmlType::kQ3_K, "Q3_K", kQK_K, 110}, dequantize_block_q3_k},
    {{GgmlType::kQ4_K, "Q4_K", kQK_K, 144}, dequantize_block_q4_k},
    {{GgmlType::kQ5_K, "Q5_K", kQK_K, 176}, dequantize_block_q5_k},
    {{GgmlType::kQ6_K, "Q6_K", kQK_K, 210}, dequantize_block_q6_k},
};

const TypeEntry& entry_of(GgmlType type) {
  for (const auto& e : kTypes)
    if (e.info.type == type) return e;
  return kTypes[0];  // unreachable: GgmlType only names listed types
}

float bf16_to_fp32(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {
      // Subnormal: mant * 2^-24, exact in float32.
      float f = float(mant) * 5.9604644775390625e-8f;
      std::memcpy(&bits, &f, 4);
      bits |= sign;
    }
  } else if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);  // infinity, or NaN with its payload
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

const GgmlTypeInfo* ggml_type_info(uint32_t type) {
  for (const auto& e : kTypes)
    if (uint32_t(e.info.type) == type) return &e.info;
  return nullptr;
}

std::string ggml_type_name(uint32_t type) {
  // ggml.h's enum ggml_type, including the types this reader does not dequantize.
  static const char* const kNames[] = {
      "F32",     "F16",   "Q4_0",  "Q4_1",   "Q4_2 (removed)", "Q4_3 (removed)", "Q5_0",  "Q5_1",
      "Q8_0",    "Q8_1",  "Q2_K",  "Q3_K",   "Q4_K",           "Q5_K",           "Q6_K",  "Q8_K",
      "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL",        "IQ3_S",          "IQ2_S", "IQ4_XS",
      "I8",      "I16",   "I32",   "I64",    "F64",            "IQ1_M",          "BF16",  "Q4_0_4_4 (removed)",
      "Q4_0_4_8 (removed)", "Q4_0_8_8 (removed)", "TQ1_0", "TQ2_0", "IQ4_NL_4_4 (removed)",
      "IQ4_NL_4_8 (removed)", "IQ4_NL_8_8 (removed)", "MXFP4", "NVFP4", "Q1_0"};
  if (type < sizeof(kNames) / sizeof(kNames[0])) return kNames[type];
  return "unknown type " + std::to_string(type);
}

void dequantize(GgmlType type, const uint8_t* src, float* dst, int64_t n) {
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(dst, src, size_t(n) * 4);
      return;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(read_u16(src + 2 * i));
      return;
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(read_u16(src + 2 * i));
      return;
    default:
      break;
  }
  const TypeEntry& e = entry_of(type);
  const int64_t blocks = n / e.info.block_size;
  for (int64_t i = 0; i < blocks; ++i) e.block(src + i * e.info.type_size, dst + i * e.info.block_size);
}

void dequantize(GgmlType type, const uint8_t* src, c10::BFloat16* dst, int64_t n) {
  if (type == GgmlType::kBF16) {
    std::memcpy(static_cast<void*>(dst), src, size_t(n) * 2);  // same bits: no rounding
    return;
  }
  // One block (or a run of plain floats) at a time through a small float buffer: no tensor-sized temporary.
  const GgmlTypeInfo& info = entry_of(type).info;
  const int64_t chunk = info.block_size == 1 ? kQK_K : info.block_size;
  float buf[kQK_K];
  for (int64_t at = 0; at < n; at += chunk) {
    const int64_t len = std::min(chunk, n - at);
    dequantize(type, src + at / info.block_size * info.type_size, buf, len);
    for (int64_t i = 0; i < len; ++i) dst[at + i] = c10::BFloat16(buf[i]);
  }
}

}  // namespace reglage::io
