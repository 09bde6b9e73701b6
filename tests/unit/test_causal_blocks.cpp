// Attention's causal query blocks (AttentionImpl::forward's query_block, CausalLM::causal_blocks): block
// [a, e) of the queries attends over keys [0, e) only. Outputs and gradients equal one block's, with padding,
// packed segments and checkpointed layers, in float64 and float32; and where the blocks apply.
#include <gtest/gtest.h>

#include "framework/lora/adapter.h"
#include "framework/model/llama.h"
#include "test_util.h"

namespace reglage::model {
namespace {

// Grouped queries (2 per kv head), 16-wide heads, a context long enough for the blocks.
CausalLM random_model(torch::Dtype dtype) {
  ModelConfig cfg;
  cfg.vocab_size = 300;
  cfg.dim = 64;
  cfg.hidden_dim = 96;
  cfg.n_layers = 2;
  cfg.n_heads = 4;
  cfg.n_kv_heads = 2;
  cfg.max_seq_len = 1024;
  CausalLM m(cfg);
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  for (auto& p : m->parameters()) p.normal_(0.0, 0.3);
  m->to(dtype);
  lora::LoraConfig lc;
  lc.rank = 4;
  lc.targets = {"all-linear"};
  lora::add_adapter(m, "a", lc, 5);
  lora::set_trainable(m, lora::TrainMode::kLora, "a");
  for (auto& [name, t] : lora::adapter_tensors(m, "a"))
    if (name.find("lora_B") != std::string::npos) t.normal_(0, 0.1);  // B = 0 would hide A's gradient
  return m;
}

TEST(CausalBlocks, RowsPerBlock) {
  EXPECT_EQ(causal_block_rows(1), 1);
  EXPECT_EQ(causal_block_rows(256), 256);  // below 512 positions: one block
  EXPECT_EQ(causal_block_rows(511), 511);
  EXPECT_EQ(causal_block_rows(512), 128);  // a quarter
  EXPECT_EQ(causal_block_rows(600), 160);  // a quarter rounded up to 16 rows
  EXPECT_EQ(causal_block_rows(1024), 256);
  EXPECT_EQ(causal_block_rows(8192), 256);  // at most 256 rows
}

// One attention layer called directly: blocks of 16 rows (the last one short) against one block, values
// and the gradients of the input and the adapter, with a padded row. A padding query sees no key at all and
// gets finite values that nothing reads (masked_softmax): they are left out, and take no gradient.
TEST(CausalBlocks, AttentionInBlocksEqualsOneBlock) {
  for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
    const double tol = dtype == torch::kFloat64 ? 1e-12 : 2e-5;
    auto m = random_model(dtype);
    auto& attn = m->model->layers[0]->self_attn;
    const int64_t B = 3, T = 45;
    torch::manual_seed(9);
    auto x0 = torch::randn({B, T, 64}, torch::TensorOptions().dtype(dtype));
    auto positions = torch::arange(T).unsqueeze(0).expand({B, T});
    auto [cos, sin] = rotary_tables(positions, 16, 10000.0);
    cos = cos.to(dtype), sin = sin.to(dtype);
    auto allowed = torch::ones({T, T}, torch::kBool).tril().unsqueeze(0).repeat({B, 1, 1});  // (B, T, S)
    allowed[1].narrow(1, 0, 10).fill_(false);                                               // row 1: left padding
    auto blocked = allowed.logical_not().view({B, 1, 1, T, T});
    auto query_valid = torch::ones({B, T, 1}, x0.options());
    query_valid[1].narrow(0, 0, 10).fill_(0);
    auto up = torch::randn({B, T, 64}, x0.options()) * query_valid;
    std::vector<torch::Tensor> outs, grads_x, grads_a;
    for (int64_t block : {int64_t(0), int64_t(16)}) {
      auto x = x0.clone().requires_grad_(true);
      auto out = attn->forward(x, cos, sin, blocked, nullptr, 0, {"a"}, {}, block);
      (out * up).sum().backward();
      outs.push_back(out.detach() * query_valid);
      grads_x.push_back(x.grad().clone());
      auto& a = attn->q_proj->adapter("a").A;
      grads_a.push_back(a.grad().clone());
      a.mutable_grad() = torch::Tensor();
      for (auto& p : m->parameters()) p.mutable_grad() = torch::Tensor();
    }
    const double scale = outs[0].abs().max().item<double>();
    EXPECT_LT(test::max_abs_diff(outs[0], outs[1]), tol * scale);
    EXPECT_LT(test::max_abs_diff(grads_x[0], grads_x[1]), tol * grads_x[0].abs().max().item<double>());
    EXPECT_LT(test::max_abs_diff(grads_a[0], grads_a[1]), tol * grads_a[0].abs().max().item<double>());
  }
}

struct Pass {
  torch::Tensor logprobs;            // (B, T)
  std::vector<torch::Tensor> grads;  // the adapter's tensors
};

// The whole model over 600 positions (blocks of 160, the last one 120), padded or packed rows, with or
// without checkpointed layers.
Pass run(torch::Dtype dtype, bool blocks, bool packed, bool checkpoint) {
  auto m = random_model(dtype);
  m->causal_blocks = blocks;
  m->checkpoint_layers = checkpoint;
  const int64_t B = 2, T = 600;
  torch::manual_seed(11);
  auto ids = torch::randint(3, 300, {B, T + 1}, torch::kLong);
  ForwardInput in{ids.narrow(1, 0, T), {}, torch::ones({B, T}, torch::kBool), nullptr, {"a"}};
  if (packed) {  // row 0 holds three segments, row 1 one; positions restart per segment
    auto segments = torch::zeros({B, T}, torch::kLong);
    segments[0].narrow(0, 200, 250).fill_(1);
    segments[0].narrow(0, 450, 150).fill_(2);
    auto positions = torch::arange(T).unsqueeze(0).repeat({B, 1});
    positions[0].narrow(0, 200, 250).copy_(torch::arange(250));
    positions[0].narrow(0, 450, 150).copy_(torch::arange(150));
    in.segments = segments;
    in.positions = positions;
  } else {
    in.valid[1].narrow(0, 500, 100).fill_(false);  // row 1 ends in padding
  }
  Pass p;
  auto lp = m->token_logprobs(in, ids.narrow(1, 1, T).contiguous());  // (B, T)
  (lp * in.valid.to(lp.scalar_type())).sum().backward();
  p.logprobs = lp.detach().masked_fill(in.valid.logical_not(), 0);
  for (auto& [name, t] : lora::adapter_tensors(m, "a")) p.grads.push_back(t.grad().clone());
  return p;
}

TEST(CausalBlocks, ModelInBlocksEqualsOneBlock) {
  EXPECT_LT(causal_block_rows(600), 600);  // the calls below do take blocks
  for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
    const double tol = dtype == torch::kFloat64 ? 1e-12 : 2e-5;
    for (bool packed : {false, true})
      for (bool checkpoint : {false, true}) {
        const std::string what = std::string(dtype == torch::kFloat64 ? "float64" : "float32") +
                                 (packed ? ", packed" : ", padded") + (checkpoint ? ", checkpointed" : "");
        const Pass one = run(dtype, false, packed, checkpoint), blocks = run(dtype, true, packed, checkpoint);
        EXPECT_LT(test::max_abs_diff(one.logprobs, blocks.logprobs), tol * one.logprobs.abs().max().item<double>())
            << what;
        ASSERT_EQ(one.grads.size(), blocks.grads.size());
        for (size_t i = 0; i < one.grads.size(); ++i)
          EXPECT_LT(test::max_abs_diff(one.grads[i], blocks.grads[i]),
                    tol * std::max(one.grads[i].abs().max().item<double>(), 1e-3))
              << what << " grad " << i;
      }
  }
}

}  // namespace
}  // namespace reglage::model
