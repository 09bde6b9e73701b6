// Safetensors reader/writer: round trips, a file written by the Python library, and hostile files that
// must each fail with a reglage::Error naming the file (and the tensor where there is one).
#include "framework/io/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "framework/core/error.h"

namespace fs = std::filesystem;
using reglage::io::read_safetensors;
using reglage::io::read_safetensors_header;
using reglage::io::write_safetensors;

namespace {

// A fresh directory per test, removed afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    dir_ = fs::temp_directory_path() /
           ("reglage_st_" + std::to_string(::getpid()) + "_" + std::to_string(stamp));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Raw bytes, exactly as given.
  std::string write_bytes(const std::string& name, const std::string& bytes) const {
    const std::string p = path(name);
    std::ofstream out(p, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  }

  // A safetensors-shaped file: declared header length, header text, data buffer.
  std::string write_file(const std::string& name, uint64_t header_len, const std::string& header,
                         const std::string& data) const {
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header_len >> (8 * i)) & 0xff);
    return write_bytes(name, bytes + header + data);
  }
  std::string write_file(const std::string& name, const std::string& header, const std::string& data) const {
    return write_file(name, header.size(), header, data);
  }

  fs::path dir_;
};

// Runs fn, expects a reglage::Error whose message contains every piece.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& pieces) {
  try {
    fn();
  } catch (const reglage::Error& e) {
    const std::string message = e.what();
    for (const auto& piece : pieces)
      EXPECT_NE(message.find(piece), std::string::npos) << "message: " << message << "\nmissing: " << piece;
    return;
  } catch (const std::exception& e) {
    FAIL() << "expected reglage::Error, got another exception: " << e.what();
  }
  FAIL() << "expected reglage::Error, nothing was thrown";
}

void expect_read_error(const std::string& file, const std::vector<std::string>& pieces) {
  std::vector<std::string> all = pieces;
  all.push_back(file);
  expect_error([&] { read_safetensors(file); }, all);
  expect_error([&] { read_safetensors_header(file); }, all);
}

// Bit-exact equality: same dtype, shape and bytes (NaN payloads and -0.0 included).
void expect_same_bits(const torch::Tensor& a, const torch::Tensor& b) {
  ASSERT_EQ(a.scalar_type(), b.scalar_type());
  ASSERT_EQ(a.sizes(), b.sizes());
  auto ac = a.contiguous().cpu();
  auto bc = b.contiguous().cpu();
  const size_t n = ac.numel() * ac.element_size();
  EXPECT_EQ(std::memcmp(ac.data_ptr(), bc.data_ptr(), n), 0);
}

const std::string kOneF32 = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
const std::string kEightBytes(8, '\0');

}  // namespace

// ---- round trips --------------------------------------------------------------------------------

TEST_F(SafetensorsTest, RoundTripEveryDtypeBitExact) {
  torch::manual_seed(0);
  auto f32 = torch::randn({3, 4});
  f32[0][0] = -0.0f;
  f32[0][1] = std::numeric_limits<float>::quiet_NaN();
  f32[0][2] = std::numeric_limits<float>::infinity();
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"f64", torch::randn({2, 3}, torch::kFloat64)},
      {"f32", f32},
      {"f16", torch::randn({5}).to(torch::kFloat16)},
      {"bf16", torch::randn({2, 2, 2}).to(torch::kBFloat16)},
      {"i64", torch::tensor({-(int64_t(1) << 62), int64_t(0), int64_t(1) << 62}, torch::kInt64)},
      {"i32", torch::randint(-1000, 1000, {7}, torch::kInt32)},
      {"i16", torch::tensor({-32768, 0, 32767}, torch::kInt16)},
      {"i8", torch::tensor({-128, 0, 127}, torch::kInt8)},
      {"u8", torch::tensor({0, 128, 255}, torch::kUInt8)},
      {"bool", torch::tensor({true, false, true, true})},
      {"empty", torch::empty({0, 3})},
      {"scalar", torch::tensor(2.5)},
  };
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"step", "42"}};
  const std::string file = path("all.safetensors");
  write_safetensors(file, tensors, metadata);

  std::map<std::string, std::string> read_metadata;
  auto loaded = read_safetensors(file, &read_metadata);
  EXPECT_EQ(read_metadata, metadata);
  ASSERT_EQ(loaded.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(loaded.count(name));
    EXPECT_TRUE(loaded[name].device().is_cpu());
    expect_same_bits(loaded[name], t);
  }

  // The header alone reports the same names, dtypes and shapes, in the order written.
  auto entries = read_safetensors_header(file);
  ASSERT_EQ(entries.size(), tensors.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    EXPECT_EQ(entries[i].name, tensors[i].first);
    EXPECT_EQ(entries[i].dtype, tensors[i].second.scalar_type());
    EXPECT_EQ(entries[i].shape, tensors[i].second.sizes().vec());
  }
}

TEST_F(SafetensorsTest, WriterPadsHeaderAndHandlesNonContiguous) {
  auto base = torch::arange(12, torch::kFloat32).reshape({3, 4});
  auto transposed = base.t();  // not contiguous
  const std::string file = path("nc.safetensors");
  write_safetensors(file, {{"t", transposed}});

  std::ifstream in(file, std::ios::binary);
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  EXPECT_EQ(header_len % 8, 0u);  // data buffer starts 8-aligned, as the Python library writes it
  EXPECT_EQ(fs::file_size(file), 8 + header_len + 12 * 4);

  auto loaded = read_safetensors(file);
  EXPECT_TRUE(torch::equal(loaded.at("t"), transposed));

  // No metadata written when none is given.
  std::map<std::string, std::string> metadata = {{"x", "y"}};
  read_safetensors(file, &metadata);
  EXPECT_TRUE(metadata.empty());
}

TEST_F(SafetensorsTest, WriterRejectsUnsupportedDtypeAndBadNames) {
  const std::string file = path("bad.safetensors");
  expect_error([&] { write_safetensors(file, {{"cplx", torch::zeros({2}, torch::kComplexFloat)}}); },
               {file, "cplx", "unsupported dtype"});
  expect_error([&] { write_safetensors(file, {{"a", torch::zeros({1})}, {"a", torch::zeros({1})}}); },
               {file, "'a'"});
  expect_error([&] { write_safetensors(file, {{"__metadata__", torch::zeros({1})}}); }, {file, "__metadata__"});
  EXPECT_FALSE(fs::exists(file));
}

// ---- a file written by the Python safetensors library ---------------------------------------------

TEST(SafetensorsPython, ReadsFixtureExactly) {
  const std::string file = std::string(REGLAGE_SOURCE_DIR) + "/tests/data/safetensors/python_fixture.safetensors";
  std::map<std::string, std::string> metadata;
  auto t = read_safetensors(file, &metadata);
  EXPECT_EQ(metadata, (std::map<std::string, std::string>{{"format", "np"}, {"source", "python"}}));
  ASSERT_EQ(t.size(), 11u);

  auto f64 = t.at("f64");
  ASSERT_EQ(f64.scalar_type(), torch::kFloat64);
  EXPECT_EQ(f64[0].item<double>(), 1.5);
  EXPECT_EQ(f64[1].item<double>(), -2.25);
  EXPECT_EQ(f64[2].item<double>(), 1e300);

  auto f32 = t.at("f32");
  ASSERT_EQ(f32.scalar_type(), torch::kFloat32);
  EXPECT_EQ(f32.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(torch::equal(f32, torch::arange(6, torch::kFloat32).reshape({2, 3}) * 0.5 - 1.0));

  auto f16 = t.at("f16");
  ASSERT_EQ(f16.scalar_type(), torch::kFloat16);
  auto f16_as_f32 = f16.to(torch::kFloat32);
  EXPECT_EQ(f16_as_f32[0].item<float>(), 0.5f);
  EXPECT_EQ(f16_as_f32[1].item<float>(), -1.0f);
  EXPECT_EQ(f16_as_f32[2].item<float>(), 65504.0f);
  EXPECT_EQ(f16_as_f32[3].item<float>(), std::ldexp(1.0f, -14));  // smallest normal half

  EXPECT_TRUE(torch::equal(t.at("i64"), torch::tensor({-(int64_t(1) << 62), int64_t(0), int64_t(1) << 62})));
  EXPECT_TRUE(torch::equal(t.at("i32"), torch::tensor({{-7, 8}, {2147483647, -2147483647 - 1}}, torch::kInt32)));
  EXPECT_TRUE(torch::equal(t.at("i16"), torch::tensor({-32768, 32767}, torch::kInt16)));
  EXPECT_TRUE(torch::equal(t.at("i8"), torch::tensor({-128, 0, 127}, torch::kInt8)));
  EXPECT_TRUE(torch::equal(t.at("u8"), torch::tensor({0, 1, 255}, torch::kUInt8)));
  EXPECT_TRUE(torch::equal(t.at("bool"), torch::tensor({true, false, true})));
  EXPECT_EQ(t.at("empty").sizes(), (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(t.at("empty").scalar_type(), torch::kFloat32);
  EXPECT_EQ(t.at("scalar").dim(), 0);
  EXPECT_EQ(t.at("scalar").item<float>(), 3.25f);
}

// ---- hostile files ------------------------------------------------------------------------------

TEST_F(SafetensorsTest, HostileMissingFile) {
  expect_read_error(path("does_not_exist.safetensors"), {"cannot open"});
}

TEST_F(SafetensorsTest, HostileShorterThanEightBytes) {
  expect_read_error(write_bytes("short", "abc"), {"too short"});
  expect_read_error(write_bytes("empty", ""), {"too short"});
}

TEST_F(SafetensorsTest, HostileHeaderLongerThanFile) {
  expect_read_error(write_file("long", 1000, "{}", ""), {"larger than the rest of the file"});
}

TEST_F(SafetensorsTest, HostileHugeHeaderLength) {
  expect_read_error(write_file("huge", uint64_t(1) << 62, "{}", ""), {"exceeds the limit"});
  expect_read_error(write_file("max", ~uint64_t(0), "{}", ""), {"exceeds the limit"});
}

TEST_F(SafetensorsTest, HostileInvalidJson) {
  expect_read_error(write_file("json", R"({"t":{"dtype":)", ""), {"header is not valid JSON"});
  expect_read_error(write_file("zero", std::string(16, '\0'), ""), {"header is not valid JSON"});
}

TEST_F(SafetensorsTest, HostileHeaderNotObject) {
  expect_read_error(write_file("array", "[1,2,3]", ""), {"not a JSON object"});
  expect_read_error(write_file("entry", R"({"t":5})", ""), {"'t'", "not an object"});
}

TEST_F(SafetensorsTest, HostileBadMetadata) {
  expect_read_error(write_file("meta", R"({"__metadata__":{"k":1}})", ""), {"__metadata__", "'k'"});
  expect_read_error(write_file("meta2", R"({"__metadata__":[]})", ""), {"__metadata__"});
}

TEST_F(SafetensorsTest, HostileMissingDtype) {
  expect_read_error(write_file("nodtype", R"({"weight":{"shape":[2],"data_offsets":[0,8]}})", kEightBytes),
                    {"'weight'", "missing dtype"});
  expect_read_error(write_file("noshape", R"({"weight":{"dtype":"F32","data_offsets":[0,8]}})", kEightBytes),
                    {"'weight'", "missing shape"});
  expect_read_error(write_file("nooffs", R"({"weight":{"dtype":"F32","shape":[2]}})", kEightBytes),
                    {"'weight'", "missing data_offsets"});
}

TEST_F(SafetensorsTest, HostileUnknownDtype) {
  expect_read_error(write_file("dtype", R"({"weight":{"dtype":"F8_E9","shape":[2],"data_offsets":[0,2]}})", "ab"),
                    {"'weight'", "unknown dtype", "F8_E9"});
  expect_read_error(write_file("dtype2", R"({"weight":{"dtype":4,"shape":[2],"data_offsets":[0,2]}})", "ab"),
                    {"'weight'", "dtype"});
}

TEST_F(SafetensorsTest, HostileNegativeDim) {
  expect_read_error(write_file("neg", R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", kEightBytes),
                    {"'w'", "negative"});
  expect_read_error(write_file("frac", R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}})", kEightBytes),
                    {"'w'", "shape"});
}

TEST_F(SafetensorsTest, HostileShapeOverflow) {
  expect_read_error(
      write_file("ovf", R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}})",
                 kEightBytes),
      {"'w'", "overflows"});
  // 2^62 elements of 4 bytes: the element count fits, the byte count does not.
  expect_read_error(
      write_file("ovf2", R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]}})", kEightBytes),
      {"'w'", "overflows"});
  // Wraps to exactly 0 in 64-bit arithmetic: must not be accepted as an empty tensor.
  expect_read_error(
      write_file("wrap", R"({"w":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", ""),
      {"'w'", "overflows"});
}

TEST_F(SafetensorsTest, HostileOffsetsOutOfRange) {
  expect_read_error(write_file("range", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[100,108]}})", kEightBytes),
                    {"'w'", "past the end"});
  expect_read_error(write_file("range2", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", kEightBytes),
                    {"'w'", "data_offsets"});
  expect_read_error(
      write_file("range3", R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[18446744073709551615,18446744073709551615]}})",
                 ""),
      {"'w'", "data_offsets"});
}

TEST_F(SafetensorsTest, HostileEndBeforeBegin) {
  expect_read_error(write_file("order", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", kEightBytes),
                    {"'w'", "end before begin"});
}

TEST_F(SafetensorsTest, HostileSizeMismatch) {
  expect_read_error(write_file("size", R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", kEightBytes),
                    {"'w'", "needs 12"});
}

TEST_F(SafetensorsTest, HostileOverlappingTensors) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  expect_read_error(write_file("overlap", header, std::string(12, '\0')), {"'a'", "'b'", "overlap"});
}

TEST_F(SafetensorsTest, HostileDuplicateName) {
  const std::string header = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                             R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})";
  expect_read_error(write_file("dup", header, "xy"), {"'a'", "twice"});
}

TEST_F(SafetensorsTest, HostileTruncatedData) {
  // A valid file cut short: the last tensor's bytes are missing.
  const std::string full = path("full.safetensors");
  write_safetensors(full, {{"a", torch::ones({4})}, {"b", torch::ones({4})}});
  const uint64_t size = fs::file_size(full);
  fs::resize_file(full, size - 3);
  expect_read_error(full, {"'b'"});
}

TEST_F(SafetensorsTest, HostileBoolByte) {
  // The header is valid, so only the full read sees the byte.
  const std::string file =
      write_file("bool", R"({"flag":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", "\x01\x07");
  expect_error([&] { read_safetensors(file); }, {file, "'flag'", "BOOL"});
  EXPECT_EQ(read_safetensors_header(file).size(), 1u);
}

TEST_F(SafetensorsTest, ZeroSizedAndEmptyHeader) {
  auto t = read_safetensors(write_file("zero", R"({"z":{"dtype":"BF16","shape":[0,5],"data_offsets":[0,0]}})", ""));
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t.at("z").sizes(), (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(t.at("z").scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(read_safetensors(write_file("none", "{}", "")).empty());
  EXPECT_TRUE(read_safetensors(write_file("none_padded", "{}      ", "")).empty());
}

// Issue 14, acceptance 2 (hand-written cases beside the mutation test): a name holding a newline stays one
// line in the message; a shape of 17 zero dims is refused before torch sees it; a header of 20,000
// zero-sized tensors (an absurd tensor count) loads within the header's own size.
TEST_F(SafetensorsTest, HostileNamesRanksAndCounts) {
  const std::string bad_name = R"({"a\nb":{"dtype":"X","shape":[2],"data_offsets":[0,8]}})";
  const std::string file = write_file("name", bad_name, kEightBytes);
  try {
    read_safetensors(file);
    FAIL() << "no error";
  } catch (const reglage::Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    EXPECT_NE(what.find("a\\x0ab"), std::string::npos) << what;
  }
  std::string dims = "[0";
  for (int i = 0; i < 16; ++i) dims += ",0";
  expect_read_error(write_file("rank", R"({"w":{"dtype":"F32","shape":)" + dims + R"(],"data_offsets":[0,0]}})", ""),
                    {"'w'", "17 dimensions"});
  std::string many = "{";
  for (int i = 0; i < 20000; ++i)
    many += (i ? "," : "") + std::string("\"t") + std::to_string(i) + R"(":{"dtype":"U8","shape":[0],"data_offsets":[0,0]})";
  many += "}";
  EXPECT_EQ(read_safetensors(write_file("many", many, "")).size(), 20000u);
}
