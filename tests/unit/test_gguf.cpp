// GGUF reader: metadata of every value type, dequantization of every supported tensor type against gguf-py
// (tests/data/gguf/make_fixtures.py), llama/qwen2 models equal to their Hugging Face originals, bad input
// named in one line, and a bounded mutation test (byte flips and truncations never crash or over-allocate).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <set>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/io/gguf.h"
#include "framework/io/model_io.h"
#include "framework/io/safetensors.h"
#include "test_util.h"

namespace reglage {
namespace {

using io::GgufFile;
using io::GgufValueType;

std::string gguf_fixture(const std::string& name) { return test::source_path("tests/data/gguf/" + name); }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Same bits, or both NaN (the float -> bfloat16 cast quiets NaN payloads).
int64_t count_bit_mismatches(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.scalar_type(), b.scalar_type());
  const int64_t n = a.numel(), es = a.element_size();
  const auto* pa = static_cast<const uint8_t*>(a.data_ptr());
  const auto* pb = static_cast<const uint8_t*>(b.data_ptr());
  auto af = a.to(torch::kFloat32), bf = b.to(torch::kFloat32);
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::memcmp(pa + i * es, pb + i * es, size_t(es)) == 0) continue;
    if (std::isnan(af.data_ptr<float>()[i]) && std::isnan(bf.data_ptr<float>()[i])) continue;
    ++bad;
  }
  return bad;
}

// ---- metadata ----------------------------------------------------------------------------------------------

void expect_test_metadata(const GgufFile& f) {
  EXPECT_EQ(f.get_string("general.architecture", ""), "reglage-test");
  auto v = [&](const char* key) -> const io::GgufValue& {
    const io::GgufValue* p = f.find(key);
    EXPECT_NE(p, nullptr) << key;
    static const io::GgufValue none;
    return p ? *p : none;
  };
  EXPECT_EQ(v("test.u8").type, GgufValueType::kUint8);
  EXPECT_EQ(v("test.u8").u, 200u);
  EXPECT_EQ(v("test.i8").i, -100);
  EXPECT_EQ(v("test.u16").u, 60000u);
  EXPECT_EQ(v("test.i16").i, -30000);
  EXPECT_EQ(v("test.u32").u, 4000000000u);
  EXPECT_EQ(v("test.i32").i, -2000000000);
  EXPECT_EQ(v("test.f32").type, GgufValueType::kFloat32);
  EXPECT_EQ(v("test.f32").f, double(0.1f));
  EXPECT_DOUBLE_EQ(f.get_double("test.f32", 0), 0.1);  // shortest decimal of the float
  EXPECT_EQ(v("test.bool").type, GgufValueType::kBool);
  EXPECT_EQ(v("test.bool").u, 1u);
  EXPECT_EQ(v("test.string").s, "h\xc3\xa9llo \xe2\x96\x81world");
  EXPECT_EQ(v("test.u64").u, (uint64_t(1) << 63) + 5);
  EXPECT_EQ(v("test.i64").i, -(int64_t(1) << 62));
  EXPECT_EQ(v("test.f64").f, -1.25e-300);
  EXPECT_EQ(f.get_int("test.i32", 0), -2000000000);
  EXPECT_NE(error_of([&] { f.get_int("test.u64", 0); }).find("too large"), std::string::npos);
  EXPECT_NE(error_of([&] { f.get_int("test.string", 0); }).find("'test.string' has type string"), std::string::npos);

  const auto& ai = v("test.arr_i32");
  ASSERT_EQ(ai.count, 3u);
  EXPECT_EQ(ai.elem_type, GgufValueType::kInt32);
  EXPECT_EQ(ai.integer_at(0), 1);
  EXPECT_EQ(ai.integer_at(1), -2);
  EXPECT_EQ(ai.integer_at(2), 3);
  const auto& af = v("test.arr_f32");
  ASSERT_EQ(af.count, 2u);
  EXPECT_EQ(af.number_at(0), 0.5);
  EXPECT_EQ(af.number_at(1), -1.5);
  const auto& ab = v("test.arr_bool");
  ASSERT_EQ(ab.count, 3u);
  EXPECT_EQ(ab.integer_at(0), 1);
  EXPECT_EQ(ab.integer_at(1), 0);
  const auto& au = v("test.arr_u8");
  EXPECT_EQ(au.integer_at(1), 255);
  const auto& as = v("test.arr_str");
  ASSERT_EQ(as.count, 3u);
  EXPECT_EQ(as.string_at(0), "a");
  EXPECT_EQ(as.string_at(1), "");
  EXPECT_EQ(as.string_at(2), "\xc3\xbc");
  const auto& an = v("test.arr_nested");
  ASSERT_EQ(an.count, 2u);
  ASSERT_EQ(an.arrays.size(), 2u);
  EXPECT_EQ(an.arrays[0].count, 2u);
  EXPECT_EQ(an.arrays[0].string_at(1), "yz");
  EXPECT_EQ(an.arrays[1].string_at(0), "w");
  EXPECT_NE(error_of([&] { as.number_at(0); }).find("not a number"), std::string::npos);
}

TEST(Gguf, MetadataOfEveryValueTypeV3) {
  GgufFile f(gguf_fixture("quants.gguf"));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset() % 32, 0u);
  expect_test_metadata(f);
  ASSERT_EQ(f.tensors().size(), 13u);
  const auto* t = f.find_tensor("t_f32");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{2, 3, 8}));  // ggml ne [8, 3, 2] reversed
  EXPECT_EQ(f.find_tensor("t_q4_k")->shape, (std::vector<int64_t>{2, 512}));
  EXPECT_EQ(f.find_tensor("t_q4_k")->n_bytes, 4u * 144u);
}

TEST(Gguf, VersionTwoReadsTheSame) {
  GgufFile v2(gguf_fixture("quants_v2.gguf")), v3(gguf_fixture("quants.gguf"));
  EXPECT_EQ(v2.version(), 2u);
  expect_test_metadata(v2);
  ASSERT_EQ(v2.tensors().size(), v3.tensors().size());
  for (const auto& t : v3.tensors())
    EXPECT_EQ(count_bit_mismatches(v2.load(*v2.find_tensor(t.name)), v3.load(t)), 0) << t.name;
}

// ---- dequantization against gguf-py ------------------------------------------------------------------------

TEST(Gguf, DequantizationEqualsGgufPyBitForBit) {
  GgufFile f(gguf_fixture("quants.gguf"));
  const auto expected = io::read_safetensors(gguf_fixture("quants_expected.safetensors"));
  std::set<std::string> types_seen;
  for (const auto& t : f.tensors()) {
    SCOPED_TRACE(t.name);
    auto it = expected.find(t.name);
    ASSERT_NE(it, expected.end());
    const torch::Tensor& want = it->second;  // float32, gguf.quants.dequantize
    auto got = f.load(t, torch::kFloat32);
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_EQ(count_bit_mismatches(got, want), 0) << "max |diff| "
                                                  << (got - want).abs().nan_to_num(0).max().item<float>();
    // bfloat16 destination: the float32 values rounded as torch rounds them.
    auto got_bf16 = f.load(t, torch::kBFloat16);
    EXPECT_EQ(count_bit_mismatches(got_bf16, want.to(torch::kBFloat16)), 0);
    types_seen.insert(io::ggml_type_info(uint32_t(t.type))->name);
  }
  EXPECT_EQ(types_seen, (std::set<std::string>{"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                                               "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}));
}

TEST(Gguf, RowsReadInAnyOrder) {
  GgufFile f(gguf_fixture("quants.gguf"));
  for (const char* name : {"t_q5_1", "t_q6_k", "t_f16"}) {
    const auto& t = *f.find_tensor(name);
    auto all = f.load(t);
    const int64_t rows = all.size(0);
    std::vector<int64_t> order;
    for (int64_t r = rows - 1; r >= 0; --r) order.push_back(r);
    auto dst = torch::empty({rows, t.row_length()});
    f.read_rows_into(t, order, dst);
    EXPECT_EQ(count_bit_mismatches(dst, all.flip(0).contiguous()), 0) << name;
  }
}

// ---- models ------------------------------------------------------------------------------------------------

torch::Tensor logits_of(model::CausalLM& m, const std::vector<int64_t>& ids) {
  torch::NoGradGuard no_grad;
  return m->forward({torch::tensor(ids, torch::kLong).unsqueeze(0), {}, {}, nullptr, {}})[0];
}

void expect_same_config(const model::ModelConfig& a, const model::ModelConfig& b) {
  EXPECT_EQ(a.architecture, b.architecture);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.dim, b.dim);
  EXPECT_EQ(a.hidden_dim, b.hidden_dim);
  EXPECT_EQ(a.n_layers, b.n_layers);
  EXPECT_EQ(a.n_heads, b.n_heads);
  EXPECT_EQ(a.n_kv_heads, b.n_kv_heads);
  EXPECT_EQ(a.head_size(), b.head_size());
  EXPECT_EQ(a.max_seq_len, b.max_seq_len);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.norm_eps, b.norm_eps);
  EXPECT_EQ(a.tie_embeddings, b.tie_embeddings);
  EXPECT_EQ(a.attention_bias, b.attention_bias);
  EXPECT_EQ(a.bos_id, b.bos_id);
  EXPECT_EQ(a.eos_ids, b.eos_ids);
}

struct ModelCase {
  const char* gguf;
  const char* hf;
  const char* dtype;
};

class GgufModel : public ::testing::TestWithParam<ModelCase> {};

// The GGUF written from a Hugging Face directory (q/k rows permuted for llama) loads to the same weights
// and the same logits, bit for bit, and agrees with transformers' reference logits.
TEST_P(GgufModel, EqualsItsHuggingFaceOriginal) {
  const ModelCase c = GetParam();
  const auto dtype = model::parse_dtype(c.dtype);
  auto from_gguf = io::load_model(gguf_fixture(c.gguf), dtype);
  auto from_hf = io::load_model(test::source_path(c.hf), dtype);
  expect_same_config(from_gguf->config(), from_hf->config());
  expect_same_config(io::read_model_config(gguf_fixture(c.gguf)), from_hf->config());
  auto pa = from_gguf->named_parameters(), pb = from_hf->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& item : pa) {
    auto* other = pb.find(item.key());
    ASSERT_NE(other, nullptr) << item.key();
    EXPECT_TRUE(torch::equal(item.value(), *other)) << item.key();
  }
  auto ref = test::read_ref_logits(test::source_path(std::string(c.hf) + "/ref_logits.bin"));
  auto a = logits_of(from_gguf, ref.ids), b = logits_of(from_hf, ref.ids);
  EXPECT_TRUE(torch::equal(a, b));
  if (dtype == torch::kFloat32) {
    EXPECT_LT(test::max_abs_diff(a, ref.logits), 1e-4);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GgufModel,
                         ::testing::Values(ModelCase{"llama_f32.gguf", "tests/data/hf/llama_f32", "float32"},
                                           ModelCase{"llama_f32.gguf", "tests/data/hf/llama_f32", "bfloat16"},
                                           ModelCase{"llama_bf16_tied.gguf", "tests/data/hf/llama_bf16_sharded", "bfloat16"},
                                           ModelCase{"llama_bf16_tied.gguf", "tests/data/hf/llama_bf16_sharded", "float32"},
                                           ModelCase{"qwen2_f32.gguf", "tests/data/hf/qwen2_f32", "float32"}));

TEST(Gguf, TiedModelHasNoLmHead) {
  auto m = io::load_model(gguf_fixture("llama_bf16_tied.gguf"), torch::kBFloat16);
  EXPECT_TRUE(m->config().tie_embeddings);
  EXPECT_FALSE(m->lm_head);
  EXPECT_FALSE(io::read_model_config(gguf_fixture("llama_f32.gguf")).tie_embeddings);
}

// Q8_0 rows are unpermuted like float rows: every weight within its block's quantization step of the
// original, and the logits close to transformers'.
TEST(Gguf, QuantizedLlamaIsCloseToTheOriginal) {
  auto q = io::load_model(gguf_fixture("llama_q8_0.gguf"));
  auto hf = io::load_model(test::source_path("tests/data/hf/llama_f32"));
  auto pb = hf->named_parameters();
  double worst = 0;
  for (const auto& item : q->named_parameters()) {
    const auto& orig = *pb.find(item.key());
    // Q8_0 step d: max |x| / 127 over a block of 32, stored as fp16. Rounding to a step costs d / 2, the fp16
    // scale up to 127 * d * 2^-11 more: 0.6 d bounds both (with the tensor's max |x| for the block's).
    const double bound = orig.abs().max().item<double>() / 127 * 0.6 + 1e-7;
    const double diff = test::max_abs_diff(item.value(), orig);
    EXPECT_LE(diff, bound) << item.key();
    worst = std::max(worst, diff);
  }
  EXPECT_GT(worst, 0);  // the matrices really were quantized
  auto ref = test::read_ref_logits(test::source_path("tests/data/hf/llama_f32/ref_logits.bin"));
  // Quantization error through three layers of large random weights: 0.28 measured; rows in the wrong
  // order would give errors of the logits' own size (std about 1, max about 4).
  EXPECT_LT(test::max_abs_diff(logits_of(q, ref.ids), ref.logits), 0.5);
}

TEST(Gguf, DetectedByMagicWithoutTheExtension) {
  test::TempDir tmp;
  std::filesystem::copy_file(gguf_fixture("qwen2_f32.gguf"), tmp.path("model.bin"));
  EXPECT_TRUE(io::is_gguf_path(tmp.path("model.bin")));
  EXPECT_FALSE(io::is_gguf_path(test::model_260k()));
  auto m = io::load_model(tmp.path("model.bin"));
  EXPECT_EQ(m->config().architecture, "Qwen2ForCausalLM");
}

TEST(Gguf, TokenizerMustComeFromElsewhere) {
  const std::string msg = error_of([] { io::load_model_tokenizer(gguf_fixture("llama_f32.gguf"), "", 96); });
  EXPECT_NE(msg.find("llama_f32.gguf"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--tokenizer"), std::string::npos) << msg;
}

TEST(Gguf, LogitsCommandTakesAGgufModel) {
  test::TempDir tmp;
  auto ref = test::read_ref_logits(test::source_path("tests/data/hf/llama_f32/ref_logits.bin"));
  std::string ids;
  for (auto id : ref.ids) ids += std::to_string(id) + " ";
  auto r = test::run_reglage("logits --model " + gguf_fixture("llama_f32.gguf") + " --ids '" + ids + "' --out " +
                             tmp.path("l.bin"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_LT(test::max_abs_diff(test::read_ref_logits(tmp.path("l.bin")).logits, ref.logits), 1e-4);
}

// ---- hand-made files for bad input -------------------------------------------------------------------------

// Little-endian GGUF pieces.
struct Bytes {
  std::string b;
  Bytes& u8(uint8_t v) { b.push_back(char(v)); return *this; }
  Bytes& u32(uint32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); return *this; }
  Bytes& u64(uint64_t v) { b.append(reinterpret_cast<const char*>(&v), 8); return *this; }
  Bytes& f32(float v) { b.append(reinterpret_cast<const char*>(&v), 4); return *this; }
  Bytes& str(const std::string& s) { u64(s.size()); b += s; return *this; }
  Bytes& raw(const std::string& s) { b += s; return *this; }
};

std::string kv_str(const std::string& key, const std::string& value) {
  return Bytes().str(key).u32(8).str(value).b;
}
std::string kv_u32(const std::string& key, uint32_t value) { return Bytes().str(key).u32(4).u32(value).b; }
std::string kv_f32(const std::string& key, float value) { return Bytes().str(key).u32(6).f32(value).b; }

struct TensorSpec {
  std::string name;
  std::vector<uint64_t> ne;  // ggml order: ne[0] innermost
  uint32_t type = 0;         // F32
  uint64_t offset = 0;
};

// header + kvs + tensor infos, padded to 32, + `data_bytes` zero bytes.
std::string make_gguf(const std::vector<std::string>& kvs, const std::vector<TensorSpec>& tensors,
                      uint64_t data_bytes, uint32_t version = 3, uint64_t alignment = 32) {
  Bytes out;
  out.raw("GGUF").u32(version).u64(tensors.size()).u64(kvs.size());
  for (const auto& kv : kvs) out.raw(kv);
  for (const auto& t : tensors) {
    out.str(t.name).u32(uint32_t(t.ne.size()));
    for (auto n : t.ne) out.u64(n);
    out.u32(t.type).u64(t.offset);
  }
  out.b.resize((out.b.size() + alignment - 1) / alignment * alignment, '\0');
  out.b.resize(out.b.size() + data_bytes, '\0');
  return out.b;
}

// The error parsing `bytes` in memory ("bad.gguf" names the file), or "(no error)".
std::string parse_error(const std::string& bytes) {
  return error_of([&] { GgufFile f(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "bad.gguf"); });
}

void expect_parse_error(const std::string& bytes, const std::vector<std::string>& parts) {
  const std::string msg = parse_error(bytes);
  EXPECT_NE(msg.find("bad.gguf: "), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "expected '" << p << "' in: " << msg;
}

TEST(GgufBadInput, ValidHandMadeFileParses) {
  const std::string ok = make_gguf({kv_str("general.architecture", "x")}, {{"a", {8, 2}, 0, 0}, {"b", {32}, 8, 64}},
                                   128);
  EXPECT_EQ(parse_error(ok), "(no error)");
}

TEST(GgufBadInput, TruncatedFiles) {
  const std::string full = core::read_file(gguf_fixture("quants.gguf"));
  GgufFile whole(reinterpret_cast<const uint8_t*>(full.data()), full.size(), "bad.gguf");
  uint64_t data_end = 0;  // the end of the last tensor (the writer pads the file after it)
  for (const auto& t : whole.tensors()) data_end = std::max(data_end, whole.data_offset() + t.offset + t.n_bytes);
  for (size_t len : {size_t(0), size_t(3), size_t(4), size_t(10), size_t(23), size_t(100), size_t(700),
                     size_t(whole.data_offset() - 5), size_t(whole.data_offset() + 10), size_t(data_end - 1)}) {
    SCOPED_TRACE(len);
    const std::string msg = parse_error(full.substr(0, len));
    EXPECT_NE(msg.find("bad.gguf: "), std::string::npos) << msg;
    EXPECT_TRUE(msg.find("truncated") != std::string::npos || msg.find("past the end") != std::string::npos ||
                msg.find("too short") != std::string::npos || msg.find("cannot fit") != std::string::npos ||
                msg.find("can hold") != std::string::npos)
        << msg;
  }
  // And through a file: the path is named.
  test::TempDir tmp;
  core::write_file_atomic(tmp.path("cut.gguf"), full.substr(0, 1000));
  const std::string msg = error_of([&] { io::load_model(tmp.path("cut.gguf")); });
  EXPECT_NE(msg.find(tmp.path("cut.gguf") + ": "), std::string::npos) << msg;
}

TEST(GgufBadInput, WrongMagicOrVersion) {
  std::string bytes = make_gguf({}, {}, 0);
  std::string magic = bytes;
  magic[3] = 'X';
  expect_parse_error(magic, {"not a GGUF file"});
  expect_parse_error(make_gguf({}, {}, 0, 1), {"version 1 is not supported", "expected version 2 or 3"});
  expect_parse_error(make_gguf({}, {}, 0, 4), {"version 4 is not supported"});
  expect_parse_error(make_gguf({}, {}, 0, 0x03000000), {"big-endian"});
  EXPECT_EQ(parse_error(make_gguf({}, {}, 0, 2)), "(no error)");
}

TEST(GgufBadInput, UnknownOrUnsupportedTensorType) {
  expect_parse_error(make_gguf({}, {{"w", {32}, 99, 0}}, 64), {"tensor 'w'", "unknown type 99", "supported: F32"});
  expect_parse_error(make_gguf({}, {{"w", {256}, 16, 0}}, 256), {"tensor 'w'", "IQ2_XXS (16)"});
  expect_parse_error(make_gguf({}, {{"w", {40}, 8, 0}}, 64), {"tensor 'w'", "not a multiple of Q8_0's block of 32"});
}

TEST(GgufBadInput, CountsBeyondTheFile) {
  Bytes n_tensors;
  n_tensors.raw("GGUF").u32(3).u64(uint64_t(1) << 60).u64(0);
  expect_parse_error(n_tensors.b, {"1152921504606846976 tensors"});
  Bytes n_kv;
  n_kv.raw("GGUF").u32(3).u64(0).u64(uint64_t(1) << 60);
  expect_parse_error(n_kv.b + std::string(64, '\0'), {"1152921504606846976 metadata entries"});
  // A string length past the end of the file, for a key and for a value.
  Bytes key;
  key.raw("GGUF").u32(3).u64(0).u64(1).u64(uint64_t(1) << 40).raw("abcdefghijklmnopq");
  expect_parse_error(key.b, {"string length 1099511627776", "runs past the end"});
  expect_parse_error(make_gguf({Bytes().str("k").u32(8).u64(~uint64_t(0)).raw("xy").b}, {}, 0),
                     {"metadata key 'k'", "string length 18446744073709551615"});
  // An array whose count cannot fit.
  expect_parse_error(make_gguf({Bytes().str("arr").u32(9).u32(10).u64(uint64_t(1) << 61).b}, {}, 0),
                     {"metadata key 'arr'", "array of 2305843009213693952 uint64", "cannot fit"});
  expect_parse_error(make_gguf({Bytes().str("arr").u32(9).u32(8).u64(1000).u64(1).raw("a").b}, {}, 0),
                     {"array of 1000 string", "cannot fit"});
}

TEST(GgufBadInput, DimensionsThatOverflow) {
  expect_parse_error(make_gguf({}, {{"w", {uint64_t(1) << 32, uint64_t(1) << 32, 4}, 0, 0}}, 64),
                     {"tensor 'w'", "overflows 64 bits"});
  expect_parse_error(make_gguf({}, {{"w", {uint64_t(1) << 40, uint64_t(1) << 20}, 0, 0}}, 64),
                     {"tensor 'w'", "runs past the end"});
  expect_parse_error(make_gguf({}, {{"w", {~uint64_t(0)}, 0, 0}}, 64), {"tensor 'w' dimension 0"});
  expect_parse_error(make_gguf({}, {{"w", {0, 4}, 0, 0}}, 64), {"tensor 'w' dimension 0 = 0"});
  expect_parse_error(make_gguf({}, {{"w", {1, 1, 1, 1, 1}, 0, 0}}, 64), {"tensor 'w' has 5 dimensions"});
}

TEST(GgufBadInput, MisalignedOverlappingOrOutsideData) {
  expect_parse_error(make_gguf({}, {{"w", {8}, 0, 16}}, 64), {"tensor 'w' data offset 16", "alignment 32"});
  expect_parse_error(make_gguf({}, {{"a", {16}, 0, 0}, {"b", {16}, 0, 32}}, 128),
                     {"tensors 'a'", "'b'", "overlap"});
  expect_parse_error(make_gguf({}, {{"a", {8}, 0, 0}, {"b", {8}, 0, 64}}, 64), {"tensor 'b'", "runs past the end"});
  // A custom alignment moves the data section; offsets must follow it.
  expect_parse_error(make_gguf({kv_u32("general.alignment", 64)}, {{"w", {8}, 0, 32}}, 128),
                     {"not a multiple of the alignment 64"});
  const std::string aligned64 = make_gguf({kv_u32("general.alignment", 64)}, {{"a", {8}, 0, 0}, {"b", {8}, 1, 64}},
                                          128, 3, 64);
  ASSERT_EQ(parse_error(aligned64), "(no error)");
  GgufFile f64(reinterpret_cast<const uint8_t*>(aligned64.data()), aligned64.size(), "a64.gguf");
  EXPECT_EQ(f64.alignment(), 64u);
  EXPECT_EQ(f64.data_offset() % 64, 0u);
  expect_parse_error(make_gguf({kv_u32("general.alignment", 0)}, {}, 0), {"general.alignment = 0"});
  expect_parse_error(make_gguf({kv_u32("general.alignment", 48)}, {}, 0), {"general.alignment = 48"});
  expect_parse_error(make_gguf({kv_str("general.alignment", "32")}, {}, 0), {"has type string (expected uint32)"});
}

TEST(GgufBadInput, MalformedMetadata) {
  expect_parse_error(make_gguf({Bytes().str("k").u32(13).u32(0).b}, {}, 0), {"metadata key 'k'", "unknown value type 13"});
  expect_parse_error(make_gguf({kv_u32("k", 1), kv_u32("k", 2)}, {}, 0), {"metadata key 'k' appears twice"});
  expect_parse_error(make_gguf({Bytes().str("b").u32(7).u8(2).b}, {}, 0), {"metadata key 'b'", "bool value 2"});
  expect_parse_error(make_gguf({Bytes().str("a").u32(9).u32(77).u64(0).b}, {}, 0), {"unknown array element type 77"});
  // Arrays nested 100 deep: refused at a bounded depth, not by exhausting the stack.
  Bytes nested;
  nested.str("deep").u32(9);
  for (int d = 0; d < 100; ++d) nested.u32(9).u64(1);
  nested.u32(4).u64(0);
  expect_parse_error(make_gguf({nested.b}, {}, 0), {"metadata key 'deep'", "nested deeper than"});
  expect_parse_error(make_gguf({}, {{"w", {8}, 0, 0}, {"w", {8}, 0, 32}}, 64), {"tensor 'w' appears twice"});
  expect_parse_error(make_gguf({}, {{"", {8}, 0, 0}}, 64), {"tensor info 0 has an empty name"});
  // An empty array is valid.
  EXPECT_EQ(parse_error(make_gguf({Bytes().str("e").u32(9).u32(8).u64(0).b}, {}, 0)), "(no error)");
}

// A tiny llama-architecture file (V 16, D 8, F 16, 1 layer, 2 heads), every tensor F32 zeros; `edit` may
// change the metadata or the tensors first.
std::string tiny_llama(const std::function<void(std::vector<std::string>&, std::vector<TensorSpec>&)>& edit = {}) {
  std::vector<std::string> kvs = {kv_str("general.architecture", "llama"), kv_u32("llama.embedding_length", 8),
                                  kv_u32("llama.block_count", 1), kv_u32("llama.feed_forward_length", 16),
                                  kv_u32("llama.attention.head_count", 2), kv_u32("llama.context_length", 32),
                                  kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f)};
  std::vector<TensorSpec> ts = {{"token_embd.weight", {8, 16}},    {"output_norm.weight", {8}},
                                {"blk.0.attn_norm.weight", {8}},   {"blk.0.attn_q.weight", {8, 8}},
                                {"blk.0.attn_k.weight", {8, 8}},   {"blk.0.attn_v.weight", {8, 8}},
                                {"blk.0.attn_output.weight", {8, 8}}, {"blk.0.ffn_norm.weight", {8}},
                                {"blk.0.ffn_gate.weight", {8, 16}}, {"blk.0.ffn_up.weight", {8, 16}},
                                {"blk.0.ffn_down.weight", {16, 8}}};
  if (edit) edit(kvs, ts);
  uint64_t at = 0;
  for (auto& t : ts) {
    uint64_t n = 4;
    for (auto d : t.ne) n *= d;
    t.offset = at;
    at += (n + 31) / 32 * 32;
  }
  return make_gguf(kvs, ts, at);
}

std::string load_error(const test::TempDir& tmp, const std::string& bytes) {
  core::write_file_atomic(tmp.path("m.gguf"), bytes);
  return error_of([&] { io::load_model(tmp.path("m.gguf")); });
}

TEST(GgufBadInput, ModelLevelProblemsAreNamed) {
  test::TempDir tmp;
  auto m = io::load_model([&] { core::write_file_atomic(tmp.path("ok.gguf"), tiny_llama()); return tmp.path("ok.gguf"); }());
  EXPECT_TRUE(m->config().tie_embeddings);
  EXPECT_EQ(m->config().vocab_size, 16);

  auto has = [&](const std::string& msg, const std::string& part) {
    EXPECT_NE(msg.find(tmp.path("m.gguf") + ": "), std::string::npos) << msg;
    EXPECT_NE(msg.find(part), std::string::npos) << "expected '" << part << "' in: " << msg;
  };
  has(load_error(tmp, tiny_llama([](auto& kvs, auto&) { kvs[0] = kv_str("general.architecture", "gpt2"); })),
      "architecture 'gpt2' is not supported (expected llama or qwen2)");
  has(load_error(tmp, tiny_llama([](auto& kvs, auto&) { kvs.erase(kvs.begin() + 2); })),
      "missing metadata key 'llama.block_count'");
  has(load_error(tmp, tiny_llama([](auto& kvs, auto&) { kvs[1] = kv_str("llama.embedding_length", "8"); })),
      "'llama.embedding_length' has type string (expected an integer)");
  has(load_error(tmp, tiny_llama([](auto&, auto& ts) { ts.pop_back(); })), "no tensor 'blk.0.ffn_down.weight'");
  has(load_error(tmp, tiny_llama([](auto&, auto& ts) { ts[3].ne = {8, 4}; })),
      "tensor 'blk.0.attn_q.weight' has shape [4, 8], the metadata implies [8, 8]");
  has(load_error(tmp, tiny_llama([](auto&, auto& ts) { ts.push_back({"rope_freqs.weight", {4}}); })),
      "rope_freqs.weight");
  has(load_error(tmp, tiny_llama([](auto&, auto& ts) { ts.push_back({"blk.0.extra.weight", {4}}); })),
      "unexpected tensor 'blk.0.extra.weight'");
  has(load_error(tmp, tiny_llama([](auto& kvs, auto&) { kvs.push_back(kv_u32("llama.embedding_length", 9)); })),
      "appears twice");
  has(load_error(tmp, tiny_llama([](auto& kvs, auto&) {
        kvs.push_back(Bytes().str("tokenizer.ggml.tokens").u32(9).u32(8).u64(2).str("a").str("b").b);
      })),
      "tokenizer.ggml.tokens has 2 tokens but token_embd.weight has 16 rows");
  has(load_error(tmp, tiny_llama([](auto& kvs, auto&) { kvs.push_back(kv_u32("llama.rope.dimension_count", 2)); })),
      "partial rotary embeddings are not supported");
  has(load_error(tmp, tiny_llama([](auto& kvs, auto&) { kvs.push_back(kv_str("llama.rope.scaling.type", "yarn")); })),
      "rope.scaling.type = \"yarn\" is not supported");
  has(load_error(tmp, tiny_llama([](auto& kvs, auto&) {
        kvs.push_back(kv_f32("llama.rope.freq_base", std::numeric_limits<float>::infinity()));
      })),
      "must be finite");
  has(load_error(tmp, tiny_llama([](auto& kvs, auto&) { kvs[4] = kv_u32("llama.attention.head_count", 3); })),
      "dim = 8 is not a multiple of n_heads = 3");
  // read_model_config says the same without loading.
  const std::string msg = error_of([&] { io::read_model_config(tmp.path("m.gguf")); });
  EXPECT_NE(msg.find("n_heads = 3"), std::string::npos) << msg;
}

// ---- mutation test -----------------------------------------------------------------------------------------

// What one mutated image did: parsed (and every tensor dequantized), or refused with a reglage error. Any
// other exception (bad_alloc, length_error, a torch error) is a failure; a crash or hang fails the suite.
enum class Outcome { kParsed, kRefused };

Outcome parse_and_dequantize(const std::string& bytes) {
  try {
    GgufFile f(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "mutant.gguf");
    for (const auto& t : f.tensors()) {
      f.load(t, torch::kFloat32);
      f.load(t, torch::kBFloat16);
    }
    return Outcome::kParsed;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind("mutant.gguf: ", 0), 0u) << msg;
    return Outcome::kRefused;
  }
}

// One deterministic mutation of `bytes`: byte flips (mostly in the header/metadata/tensor-info region,
// where they matter), an interesting 64-bit value written over a field, or a truncation.
std::string mutate(const std::string& bytes, uint64_t header_end, std::mt19937_64& rng, std::string& how) {
  std::string m = bytes;
  auto pos_in = [&](uint64_t end) { return size_t(rng() % end); };
  switch (rng() % 4) {
    case 0:
    case 1: {
      const int flips = 1 + int(rng() % 4);
      how = "flips";
      for (int k = 0; k < flips; ++k) {
        const size_t at = (rng() % 10 < 8) ? pos_in(header_end) : pos_in(m.size());
        m[at] = char(uint8_t(m[at]) ^ uint8_t(1 + rng() % 255));
        how += " " + std::to_string(at);
      }
      break;
    }
    case 2: {
      static const uint64_t kValues[] = {0, 1, 2, 3, 31, 32, 33, 255, 0xFFFF, 0xFFFFFFFFull, 1ull << 32, 1ull << 60,
                                         1ull << 63, ~0ull, ~0ull - 7};
      const uint64_t v = kValues[rng() % (sizeof(kValues) / sizeof(kValues[0]))];
      const size_t at = pos_in(header_end - 8);
      const int width = (rng() % 2) ? 8 : 4;
      std::memcpy(&m[at], &v, size_t(width));
      how = "value " + std::to_string(v) + " (" + std::to_string(width) + " bytes) at " + std::to_string(at);
      break;
    }
    default: {
      const size_t len = pos_in(m.size());
      m.resize(len);
      how = "truncated to " + std::to_string(len);
    }
  }
  return m;
}

TEST(GgufMutation, FlipsAndTruncationsNeverCrash) {
  const std::string original = core::read_file(gguf_fixture("quants.gguf"));
  const uint64_t header_end =
      GgufFile(reinterpret_cast<const uint8_t*>(original.data()), original.size(), "x").data_offset();
  std::mt19937_64 rng(20261201);
  int parsed = 0, refused = 0;
  constexpr int kMutations = 3000;
  for (int i = 0; i < kMutations; ++i) {
    std::string how;
    const std::string m = mutate(original, header_end, rng, how);
    SCOPED_TRACE("mutation " + std::to_string(i) + ": " + how);
    try {
      (parse_and_dequantize(m) == Outcome::kParsed ? parsed : refused) += 1;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a reglage error: " << e.what();
    }
  }
  std::printf("GGUF mutations: %d parsed, %d refused with a reglage error\n", parsed, refused);
  // Both outcomes occur: the mutations reach the checks, and harmless ones still parse.
  EXPECT_GT(parsed, 100);
  EXPECT_GT(refused, 100);
}

// Mutated model files through load_model: metadata and tensor infos feed the config and the shape checks.
TEST(GgufMutation, MutatedModelFilesLoadOrFailCleanly) {
  const std::string original = core::read_file(gguf_fixture("llama_q8_0.gguf"));
  const uint64_t header_end =
      GgufFile(reinterpret_cast<const uint8_t*>(original.data()), original.size(), "x").data_offset();
  test::TempDir tmp;
  const std::string path = tmp.path("mutant.gguf");
  std::mt19937_64 rng(77);
  int loaded = 0, refused = 0;
  for (int i = 0; i < 600; ++i) {
    std::string how;
    core::write_file_atomic(path, mutate(original, header_end, rng, how));
    SCOPED_TRACE("mutation " + std::to_string(i) + ": " + how);
    model::CausalLM m{nullptr};
    try {
      m = io::load_model(path);
      ++loaded;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      ++refused;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a reglage error: " << e.what();
    }
    // A model that loaded runs (weights may be NaN where a scale's bits flipped; a shrunken context refuses).
    if (m && m->config().vocab_size > 5) {
      try {
        logits_of(m, {3, 4, 5});
      } catch (const Error&) {
      }
    }
  }
  std::printf("GGUF model mutations: %d loaded, %d refused with a reglage error\n", loaded, refused);
  EXPECT_GT(loaded, 20);
  EXPECT_GT(refused, 20);
}

}  // namespace
}  // namespace reglage
