// Mutation tests for the model-file readers: thousands of deterministic byte flips, insertions, deletions,
// truncations and field rewrites of small valid safetensors files (tests/data) and llama2.c checkpoints.
// Each mutant must load or fail with one reglage::Error line that names the file: never a crash, a hang,
// another exception type (std::bad_alloc, c10::Error, nlohmann's) or a multi-line message. The counts are
// fixed and the seeds constant, so a failure names a mutant that reproduces.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/io/model_io.h"
#include "framework/io/safetensors.h"
#include "test_util.h"

namespace reglage::io {
namespace {

using test::TempDir;

// Values that break length and count fields: zero, one, sign bits, powers of two around 2^24..2^63.
const std::vector<uint64_t> kEdgeValues = {0,          1,          2,          7,          8,
                                           255,        65535,      1ull << 24, (1ull << 24) + 1,
                                           1ull << 31, 0x7fffffff, 0x80000000, 0xffffffff,
                                           1ull << 40, 1ull << 62, 1ull << 63, ~0ull};

// One mutation of `in`; `header_end` is where the region most worth damaging ends (a safetensors JSON
// header, a llama2.c header), and most mutations land there.
class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}

  std::string mutate(std::string s, size_t header_end) {
    header_end = std::max<size_t>(1, std::min(header_end, s.size()));
    const int kind = int(pick(9));
    switch (kind) {
      case 0:  // flip one bit anywhere
        if (!s.empty()) s[pick(s.size())] ^= char(1 << pick(8));
        break;
      case 1:  // a random byte in the header
        s[pick(header_end)] = char(pick(256));
        break;
      case 2: {  // an edge value over 1, 2, 4 or 8 bytes of the header (length fields, ints)
        const size_t width = size_t(1) << pick(4);
        const size_t at = pick(header_end);
        const uint64_t v = kEdgeValues[pick(kEdgeValues.size())];
        for (size_t i = 0; i < width && at + i < s.size(); ++i) s[at + i] = char((v >> (8 * i)) & 0xff);
        break;
      }
      case 3: {  // insert 1..16 random bytes, in the header mostly
        const size_t at = pick(4) == 0 ? pick(s.size() + 1) : pick(header_end + 1);
        std::string bytes(1 + pick(16), '\0');
        for (char& c : bytes) c = char(pick(256));
        s.insert(at, bytes);
        break;
      }
      case 4: {  // delete 1..16 bytes
        const size_t at = pick(s.size());
        s.erase(at, 1 + pick(16));
        break;
      }
      case 5:  // truncate
        s.resize(pick(s.size()));
        break;
      case 6:  // a digit of the header changed (shapes, offsets) or widened to a huge number
        mutate_digit(s, header_end);
        break;
      case 7:  // a quoted word of the header (dtype, name) replaced
        mutate_word(s, header_end);
        break;
      default: {  // several mutations at once
        const int n = 2 + int(pick(3));
        for (int i = 0; i < n && !s.empty(); ++i) s = mutate(std::move(s), header_end);
        break;
      }
    }
    return s;
  }

 private:
  uint64_t pick(uint64_t n) { return n == 0 ? 0 : rng_() % n; }

  void mutate_digit(std::string& s, size_t header_end) {
    std::vector<size_t> digits;
    for (size_t i = 0; i < header_end && i < s.size(); ++i)
      if (s[i] >= '0' && s[i] <= '9') digits.push_back(i);
    if (digits.empty()) return;
    const size_t at = digits[pick(digits.size())];
    static const char* replacements[] = {"0", "9", "-1", "99999999999", "18446744073709551615",
                                         "9223372036854775807", "1e30", "0.5", "null", "\"7\""};
    s.replace(at, 1, replacements[pick(sizeof(replacements) / sizeof(replacements[0]))]);
  }

  void mutate_word(std::string& s, size_t header_end) {
    std::vector<size_t> quotes;
    for (size_t i = 0; i < header_end && i < s.size(); ++i)
      if (s[i] == '"') quotes.push_back(i);
    if (quotes.size() < 2) return;
    const size_t q = pick(quotes.size() - 1);
    const size_t begin = quotes[q] + 1, end = quotes[q + 1];
    static const char* words[] = {"F32", "F16", "BF16", "I64", "BOOL", "U8", "F8_E4M3", "", "shape",
                                  "dtype", "data_offsets", "__metadata__", "model.norm.weight", "\\u0000",
                                  "line\\nbreak"};  // a JSON-escaped newline in a name must not split the message
    s.replace(begin, end - begin, words[pick(sizeof(words) / sizeof(words[0]))]);
  }

  std::mt19937_64 rng_;
};

// Where a safetensors file's JSON header ends (8 + its length), or the whole file when that is unreadable.
size_t safetensors_header_end(const std::string& bytes) {
  if (bytes.size() < 8) return bytes.size();
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(bytes[size_t(i)]);
  return n > bytes.size() - 8 ? bytes.size() : size_t(8 + n);
}

// Runs `load` on every mutant of `original` written to `path`; counts outcomes, fails on anything but
// success or one reglage::Error line naming `path`.
struct Outcomes {
  int loaded = 0;
  int refused = 0;
};

template <typename Load>
Outcomes run_mutants(const std::string& original, size_t header_end, const std::string& path, int count,
                     uint64_t seed, Load load) {
  Mutator mutator(seed);
  Outcomes out;
  int failures = 0;
  for (int i = 0; i < count && failures < 5; ++i) {
    const std::string mutant = mutator.mutate(original, header_end);
    core::write_file_atomic(path, mutant);
    const std::string where = "mutant " + std::to_string(i) + " of seed " + std::to_string(seed);
    try {
      load(path);
      ++out.loaded;
    } catch (const Error& e) {
      const std::string what = e.what();
      if (what.find('\n') != std::string::npos || what.find(path) == std::string::npos) {
        ADD_FAILURE() << where << ": the error is not one line naming " << path << ":\n" << what;
        ++failures;
      }
      ++out.refused;
    } catch (const std::exception& e) {
      ADD_FAILURE() << where << ": " << typeid(e).name() << " instead of a reglage error: " << e.what();
      ++failures;
    }
  }
  return out;
}

TEST(ModelFileMutations, SafetensorsFilesLoadOrFailInOneLine) {
  TempDir tmp;
  const std::vector<std::string> sources = {
      "tests/data/safetensors/python_fixture.safetensors", "tests/data/hf/peft_llama/adapter_model.safetensors",
      "tests/data/hf/llama_bf16_sharded/model-00003-of-00003.safetensors", "tests/data/hf/mistral_f16/model.safetensors"};
  int refused = 0, loaded = 0;
  for (size_t k = 0; k < sources.size(); ++k) {
    const std::string original = core::read_file(test::source_path(sources[k]));
    const auto out = run_mutants(original, safetensors_header_end(original), tmp.path("m.safetensors"), 750,
                                 1000 + k, [](const std::string& p) { read_safetensors(p); });
    refused += out.refused;
    loaded += out.loaded;
  }
  // Both outcomes occur: the mutations reach the data (loads) and the header (refusals).
  EXPECT_GT(refused, 1000);
  EXPECT_GT(loaded, 10);
}

// A Hugging Face directory whose model.safetensors is mutated: config.json is checked against the headers
// before the model is allocated.
TEST(ModelFileMutations, HfDirectoryLoadsOrFailsInOneLine) {
  TempDir tmp;
  const std::string src = test::source_path("tests/data/hf/llama_f32");
  core::write_file_atomic(tmp.path("config.json"), core::read_file(src + "/config.json"));
  const std::string original = core::read_file(src + "/model.safetensors");
  const auto out = run_mutants(original, safetensors_header_end(original), tmp.path("model.safetensors"), 400, 7,
                               [](const std::string& p) { load_model(core::parent_dir(p), torch::kFloat32); });
  EXPECT_GT(out.refused, 100);
}

// A small llama2.c checkpoint made here: dim 8, hidden 16, 2 layers, 2 heads, vocab 16, seq_len 8.
std::string small_llama2c(bool v1) {
  const int32_t h[7] = {8, 16, 2, 2, 2, v1 ? 16 : -16, 8};  // legacy: negative vocab = untied classifier
  std::string bytes;
  if (v1) {
    bytes.assign(256, '\0');
    const uint32_t magic = 0x616b3432;
    const int32_t version = 1;
    std::memcpy(&bytes[0], &magic, 4);
    std::memcpy(&bytes[4], &version, 4);
    std::memcpy(&bytes[8], h, sizeof(h));
    bytes[8 + 28] = 1;  // shared classifier
  } else {
    bytes.assign(reinterpret_cast<const char*>(h), sizeof(h));
  }
  const int64_t D = 8, F = 16, L = 2, V = 16, T = 8, Dh = 4;
  int64_t floats = V * D + 2 * L * D + D + L * (4 * D * D + 3 * F * D);
  floats += v1 ? 0 : T * Dh + V * D;  // legacy: freq_cis tables and the untied classifier
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-0.5f, 0.5f);
  for (int64_t i = 0; i < floats; ++i) {
    const float f = u(rng);
    bytes.append(reinterpret_cast<const char*>(&f), 4);
  }
  return bytes;
}

TEST(ModelFileMutations, Llama2cCheckpointsLoadOrFailInOneLine) {
  TempDir tmp;
  for (bool v1 : {false, true}) {
    const std::string original = small_llama2c(v1);
    ASSERT_NO_THROW(core::write_file_atomic(tmp.path("ok.bin"), original));
    ASSERT_NO_THROW(load_model(tmp.path("ok.bin"), torch::kFloat32));  // the unmutated file is valid
    const auto out = run_mutants(original, v1 ? 40 : 28, tmp.path("m.bin"), 1000, v1 ? 21 : 20,
                                 [](const std::string& p) { load_model(p, torch::kFloat32); });
    EXPECT_GT(out.refused, 300);
  }
  // The shipped model: header mutations only (each mutant is a 1 MB file).
  const std::string shipped = core::read_file(test::model_260k());
  const auto out = run_mutants(shipped, 28, tmp.path("s.bin"), 100, 22,
                               [](const std::string& p) { load_model(p, torch::kFloat32); });
  EXPECT_GT(out.refused, 30);
}

}  // namespace
}  // namespace reglage::io
