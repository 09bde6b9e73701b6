// Weight-only storage of frozen linear weights: the weights stay in bfloat16 or int8 (one float32 scale per
// output row) while activations and results are float32. Decoding reads every weight once per step, so the
// step time is set by memory bandwidth: half (bfloat16) or a quarter (int8) of the bytes of float32.
//
// Small products (decode steps, M <= kSmallRows rows) run in our own kernel that widens each weight row to
// float32 inside the dot products, vectorised with AVX-512 or AVX2 (chosen at run time from the CPU's flags,
// scalar otherwise). Larger products (prefill, training) widen the weight in row chunks of at most
// kWidenChunk elements and hand each chunk to LibTorch's float32 matrix product, so no float32 copy of a
// whole frozen weight is ever kept. LibTorch's own bfloat16 operators are not used: on CPUs without
// avx512_bf16 they run at a fraction of the float32 speed.
#pragma once
#include <torch/torch.h>

#include <string>
#include <utility>

namespace reglage::kernels {

// How the frozen base's linear weights (and the embedding) are stored.
enum class Storage { kNative, kBFloat16, kInt8 };  // kNative: the model's dtype, no weight-only path

// "auto" | "float32" -> kNative, "bfloat16" | "bf16" -> kBFloat16, "int8" -> kInt8; throws naming the value.
Storage parse_storage(const std::string& name);
std::string storage_name(Storage s);
// A pipeline's model.storage for a model of `dtype`: kNative when the storage is the dtype itself (bfloat16
// storage of a bfloat16 model), else parse_storage.
Storage effective_storage(const std::string& name, torch::Dtype dtype);

// Rows of x up to which the vectorised kernel runs; above it, chunks of widened weights go to the BLAS.
constexpr int64_t kSmallRows = 16;
// Elements of float32 weight widened at once on the large-product path (16 MB).
constexpr int64_t kWidenChunk = int64_t(4) << 20;

// The vector path this CPU takes: "avx512", "avx2" or "scalar". REGLAGE_KERNELS=avx2|scalar forces a lower
// one (for comparing paths on one machine); a path the CPU lacks is never taken.
std::string cpu_path();

// Symmetric per-row int8: scale[n] = max |w[n, :]| / 127, q = round(w / scale). w: (N, K) float ->
// {q (N, K) int8, scale (N) float32}. A row of zeros gets scale 1.
std::pair<torch::Tensor, torch::Tensor> quantize_int8_rows(const torch::Tensor& w);

// Converts a frozen weight in place (set_data) to storage s: bfloat16, or int8 by quantize_int8_rows, and
// stops it training. Returns the int8 scale (N), undefined otherwise; kNative changes nothing.
torch::Tensor store_weight(torch::Tensor& w, Storage s);

// The stored weight widened to float32: (N, K) bfloat16, or int8 with scale (N) -> (N, K) float32.
torch::Tensor widen(const torch::Tensor& w, const torch::Tensor& scale);

// y = x W^T for a stored weight. x: (..., K) float32; w: (N, K) bfloat16 or int8 (then scale (N) float32).
// Differentiable in x (the weight is frozen): backward computes grad_x = grad_y W chunk by chunk.
// -> (..., N) float32.
torch::Tensor weight_only_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& scale);

// x W^T + b for a weight in any storage: F::linear when w has x's dtype, weight_only_linear otherwise.
torch::Tensor stored_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& scale,
                            const torch::Tensor& bias = {});

// y (M, N) += x2 (M, K) W^T for a weight in any storage, accumulated in place where the BLAS can (a float32
// weight, or chunks of widened rows above kSmallRows rows), through a fresh product otherwise. No bias.
void stored_linear_add_(torch::Tensor& y, const torch::Tensor& x2, const torch::Tensor& w, const torch::Tensor& scale);

// The input gradient of stored_linear: g2 (M, N) -> g2 W (M, K), the stored weight widened in row chunks (a
// float32 weight of g2's dtype multiplies directly).
torch::Tensor stored_linear_grad_input(const torch::Tensor& g2, const torch::Tensor& w, const torch::Tensor& scale);
// gx (M, K) += g2 (M, N) W, the same product accumulated in place.
void stored_linear_grad_input_add_(torch::Tensor& gx, const torch::Tensor& g2, const torch::Tensor& w,
                                   const torch::Tensor& scale);

// A stored weight as a matrix of `dtype` for code that multiplies by it directly: w itself when it already has
// that dtype, else widened (a temporary copy for this call).
torch::Tensor stored_linear_weight(const torch::Tensor& w, const torch::Tensor& scale, torch::Dtype dtype);

// Embedding rows of a stored table: ids (...) int64 -> (..., D) in `dtype`.
torch::Tensor stored_embedding(const torch::Tensor& ids, const torch::Tensor& w, const torch::Tensor& scale,
                               torch::Dtype dtype);

// A contiguous CPU weight as the vector kernel reads it: raw pointers into tensors that must outlive it.
// For code that runs many products inside one parallel region (framework/model/fused_decode.cpp).
struct KernelMatrix {
  const void* data = nullptr;
  // Element formats, the values of gemm_simd.h's kGemmF32, kGemmBF16 and kGemmI8.
  static constexpr int kFloat32 = 0, kBFloat16 = 1, kInt8 = 2;
  int format = kFloat32;
  const float* scale = nullptr;  // (rows) for int8, else null
  int64_t rows = 0, cols = 0;    // N, K
  // A row-major float32 matrix (rows, cols) in memory the caller owns (format kGemmF32 = 0).
  static KernelMatrix float32(const float* p, int64_t rows, int64_t cols) { return {p, 0, nullptr, rows, cols}; }
};
// w: (N, K) float32, bfloat16 or int8 (then scale (N) float32), contiguous, on the CPU; throws otherwise.
KernelMatrix kernel_matrix(const torch::Tensor& w, const torch::Tensor& scale = {});
// Rows [n0, n1) of y (M, w.rows) = x (M, w.cols) W^T, in the calling thread, on this CPU's path (cpu_path()).
void kernel_rows(const KernelMatrix& w, const float* x, int64_t M, float* y, int64_t n0, int64_t n1);

namespace detail {
// The small-product kernel on one path, exposed for tests: y (M, N) = x (M, K) W^T, one thread.
void small_gemm(const std::string& path, const float* x, int64_t M, int64_t K, const torch::Tensor& w,
                const float* scale, float* y, int64_t N);
}  // namespace detail

}  // namespace reglage::kernels
