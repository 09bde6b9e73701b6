// Shared helpers for the unit tests: paths to shipped files, reference logits, temporary directories,
// running the reglage binary.
#pragma once
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "framework/core/error.h"
#include "framework/core/file_util.h"

namespace reglage::test {

inline std::string source_path(const std::string& rel) { return std::string(REGLAGE_SOURCE_DIR) + "/" + rel; }
inline std::string model_260k() { return source_path("models/stories260K/stories260K.bin"); }
inline std::string model_260k_v1() { return source_path("models/stories260K/stories260K_v1.bin"); }
inline std::string tok_512() { return source_path("models/stories260K/tok512.bin"); }

struct RefLogits {
  torch::Tensor logits;          // (T, V) float32
  std::vector<int64_t> ids;      // (T)
};

// int32 T, int32 V, float32[T][V], int32[T]
inline RefLogits read_ref_logits(const std::string& path) {
  const std::string b = core::read_file(path);
  int32_t T = 0, V = 0;
  std::memcpy(&T, b.data(), 4);
  std::memcpy(&V, b.data() + 4, 4);
  EXPECT_EQ(b.size(), size_t(8 + T * V * 4 + T * 4)) << path;
  RefLogits r;
  r.logits = torch::empty({T, V}, torch::kFloat32);
  std::memcpy(r.logits.data_ptr<float>(), b.data() + 8, size_t(T * V) * 4);
  for (int32_t t = 0; t < T; ++t) {
    int32_t id = 0;
    std::memcpy(&id, b.data() + 8 + size_t(T * V) * 4 + size_t(t) * 4, 4);
    r.ids.push_back(id);
  }
  return r;
}

inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

// A fresh directory under the system temp dir, removed when the object goes.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = (std::filesystem::temp_directory_path() /
             ("reglage_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++)))
                .string();
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string path(const std::string& name = "") const { return name.empty() ? path_ : path_ + "/" + name; }

 private:
  std::string path_;
};

// A fresh, empty directory under the system temp dir, named for one test (left for inspection).
inline std::filesystem::path temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("reglage_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Expects `load` to throw reglage::Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F load, const std::vector<std::string>& parts) {
  try {
    load();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    for (const std::string& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs the built reglage binary with `args` (a shell-quoted string); stdout and stderr captured apart.
inline CommandResult run_reglage(const std::string& args) {
  TempDir tmp;
  const std::string cmd = std::string(REGLAGE_BINARY) + " " + args + " > " + tmp.path("out") + " 2> " +
                          tmp.path("err");
  const int status = std::system(cmd.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = core::read_file(tmp.path("out"));
  r.err = core::read_file(tmp.path("err"));
  return r;
}

// The vector kernels' paths this CPU can run (framework/kernels: gemm_avx512.cpp, gemm_avx2.cpp, the scalar
// one everywhere).
inline std::vector<std::string> kernel_paths_of_this_cpu() {
  std::vector<std::string> out = {"scalar"};
#if defined(__x86_64__)  // elsewhere only the scalar path is built (CMakeLists.txt)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) out.push_back("avx2");
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) out.push_back("avx512");
#endif
  return out;
}

}  // namespace reglage::test
