// One decoding step of the whole model, one pass per layer over raw float32 buffers: RMSNorm, the q/k/v
// products, rotary embedding, the cache append, attention over the cache, the output product and the SwiGLU
// MLP, then the final norm and the LM head. Every product (base weight in float32, bfloat16 or int8, plus the
// active LoRA adapters) runs in the weight-only vector kernel (framework/kernels/weight_only.h), and no LibTorch
// operator runs inside a layer. The whole step is one parallel region: each thread takes the same share of
// every product's rows and of the attention heads on every step, with a barrier where the next part reads what
// all threads wrote. Every output is computed by one thread in one order, so the thread count does not change
// the result.
//
// Why: a decode step of a batch of a few sequences reads every weight once and does little arithmetic, so its
// time should be the bytes of the weights over the memory bandwidth. The operator-by-operator path spends as
// long again in per-operator dispatch (about 50 operators per layer) and in threads waiting at their
// parallel regions.
//
// The numbers are those of CausalLM::forward up to float32 rounding (sums in another order); each sequence's
// result does not depend on the others in the batch.
#pragma once
#include <torch/torch.h>

#include <string>

#include "framework/model/llama.h"

namespace reglage::model {

// Largest batch the fused step takes: above it the products are arithmetic-bound and LibTorch's matrix
// products (operator path) are faster.
constexpr int64_t kFusedDecodeMaxBatch = kernels::kSmallRows;

// Why fused_decode_step cannot run `in` on `m`, or "" when it can: it needs a CPU float32 model in eval mode,
// no gradient, one new token per sequence (ids (B, 1), B <= kFusedDecodeMaxBatch), a KV cache, no packed
// segments, and no unmerged adapter on the LM head.
std::string fused_decode_unsupported(CausalLMImpl& m, const ForwardInput& in);

// The logits of one step, (B, V) float32, appending the step's keys and values to in.cache as
// CausalLM::hidden does. Throws (reglage::Error) when fused_decode_unsupported is not empty, or when a position
// or the cache length is out of range.
torch::Tensor fused_decode_step(CausalLMImpl& m, const ForwardInput& in);

}  // namespace reglage::model
