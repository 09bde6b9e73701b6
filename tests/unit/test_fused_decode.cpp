// The fused decode step (framework/model/fused_decode.h) against the operator path (CausalLM::forward) it
// replaces: the same logits and cache contents to float32 rounding, step after step, on the shipped
// stories260K and on a random model with what stories260K lacks (q/k/v bias, an untied LM head, three query
// heads per kv head), with and without a LoRA adapter, for every weight storage; padding slots in the
// batch; each sequence's result independent of the rest of the batch; generate() on either path; the calls
// it refuses.
#include <gtest/gtest.h>

#include "framework/core/error.h"
#include "framework/generate/generate.h"
#include "framework/io/model_io.h"
#include "framework/lora/adapter.h"
#include "framework/model/fused_decode.h"
#include "test_util.h"

namespace reglage::model {
namespace {

const std::vector<std::vector<int64_t>> kPrompts = {{1, 403, 407, 261, 378}, {1, 403}, {1, 426, 338, 401, 396, 267}};

// A (B, T) tensor of `dtype` from row-major values.
template <typename T>
torch::Tensor tensor_of(const std::vector<T>& v, int64_t B, int64_t T_, torch::Dtype dtype) {
  return torch::tensor(v).view({B, T_}).to(dtype);
}

// Prompts left-padded into a fresh cache of room for `steps` more tokens, as generate() does.
KVCache prefill(CausalLM& m, const std::vector<std::vector<int64_t>>& prompts, int64_t steps, const AdapterSet& ad) {
  const int64_t B = int64_t(prompts.size());
  int64_t P = 0;
  for (const auto& p : prompts) P = std::max<int64_t>(P, p.size());
  std::vector<int64_t> ids(B * P, 0), pos(B * P, 0), valid(B * P, 0);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t pad = P - int64_t(prompts[b].size());
    for (size_t i = 0; i < prompts[b].size(); ++i) {
      ids[b * P + pad + i] = prompts[b][i] % m->config().vocab_size;  // the random model's vocabulary is 300
      pos[b * P + pad + i] = int64_t(i);
      valid[b * P + pad + i] = 1;
    }
  }
  auto cache = m->new_cache(B, P + steps);
  ForwardInput in{tensor_of(ids, B, P, torch::kLong), tensor_of(pos, B, P, torch::kLong),
                  tensor_of(valid, B, P, torch::kBool), &cache, ad};
  m->hidden(in);
  return cache;
}

struct StepInputs {
  torch::Tensor ids, positions, valid;  // (B, 1)
};

// Step s: random tokens; sequence 1 feeds a padding slot on odd steps (as a finished sequence does).
StepInputs step_inputs(const std::vector<std::vector<int64_t>>& prompts, int64_t s, int64_t vocab) {
  const int64_t B = int64_t(prompts.size());
  auto ids = torch::randint(vocab, {B, 1}, torch::kLong);
  std::vector<int64_t> pos(B), valid(B);
  for (int64_t b = 0; b < B; ++b) {
    pos[b] = int64_t(prompts[b].size()) + s;
    valid[b] = b == 1 && s % 2 == 1 ? 0 : 1;
  }
  return {ids, tensor_of(pos, B, 1, torch::kLong), tensor_of(valid, B, 1, torch::kBool)};
}

// Runs `steps` decode steps on both paths from the same prefill; returns the largest logit difference
// relative to the largest logit, and checks the caches stay equal.
double compare_paths(CausalLM& m, const AdapterSet& ad, int64_t steps, uint64_t seed) {
  torch::NoGradGuard no_grad;
  m->eval();
  torch::manual_seed(seed);
  auto ref_cache = prefill(m, kPrompts, steps, ad);
  auto fused_cache = prefill(m, kPrompts, steps, ad);
  double worst = 0;
  for (int64_t s = 0; s < steps; ++s) {
    auto in = step_inputs(kPrompts, s, m->config().vocab_size);
    ForwardInput ref_in{in.ids, in.positions, in.valid, &ref_cache, ad};
    ForwardInput fused_in{in.ids, in.positions, in.valid, &fused_cache, ad};
    EXPECT_EQ(fused_decode_unsupported(*m, fused_in), "");
    auto ref = m->forward(ref_in).select(1, 0);     // (B, V)
    auto fused = fused_decode_step(*m, fused_in);   // (B, V)
    EXPECT_EQ(fused.sizes(), ref.sizes());
    worst = std::max(worst, test::max_abs_diff(fused, ref) / ref.abs().max().item<double>());
  }
  EXPECT_EQ(fused_cache.length, ref_cache.length);
  EXPECT_TRUE(torch::equal(fused_cache.key_valid, ref_cache.key_valid));
  for (size_t l = 0; l < ref_cache.k.size(); ++l) {
    EXPECT_LT(test::max_abs_diff(fused_cache.k[l], ref_cache.k[l]), 1e-4) << "keys of layer " << l;
    EXPECT_LT(test::max_abs_diff(fused_cache.v[l], ref_cache.v[l]), 1e-4) << "values of layer " << l;
  }
  return worst;
}

void add_random_actor(CausalLM& m, uint64_t seed) {
  lora::LoraConfig lc;
  lc.rank = 4;
  lc.alpha = 8;
  lc.targets = {"all-linear"};
  lora::add_adapter(m, "actor", lc, seed);
  torch::NoGradGuard no_grad;
  torch::manual_seed(int64_t(seed));
  for (auto& [path, layer] : m->linear_layers()) layer->adapter("actor").B.normal_(0.0, 0.05);
}

// What stories260K lacks: q/k/v bias (Qwen2), an untied LM head, 3 query heads per kv head, head size 16.
CausalLM random_model() {
  ModelConfig cfg;
  cfg.architecture = "Qwen2ForCausalLM";
  cfg.vocab_size = 300;
  cfg.dim = 96;
  cfg.hidden_dim = 160;
  cfg.n_layers = 2;
  cfg.n_heads = 6;
  cfg.n_kv_heads = 2;
  cfg.max_seq_len = 64;
  cfg.tie_embeddings = false;
  cfg.attention_bias = true;
  cfg.rope_theta = 1e6;
  cfg.eos_ids = {2};
  CausalLM m(cfg);
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  for (auto& p : m->parameters()) p.normal_(0.0, 0.2);
  for (auto* norm : {&m->model->norm}) (*norm)->weight.fill_(1.0);
  return m;
}

TEST(FusedDecode, Stories260KEqualsTheOperatorPathForEveryStorage) {
  for (const auto storage : {kernels::Storage::kNative, kernels::Storage::kBFloat16, kernels::Storage::kInt8}) {
    auto m = io::load_model(test::model_260k());
    add_random_actor(m, 7);
    m->set_storage(storage);
    const auto name = kernels::storage_name(storage);
    EXPECT_LT(compare_paths(m, {}, 12, 1), 2e-6) << name << ", base";
    EXPECT_LT(compare_paths(m, {"actor"}, 12, 2), 2e-6) << name << ", adapter";
  }
}

TEST(FusedDecode, BiasUntiedHeadAndGroupedQueriesEqualTheOperatorPath) {
  for (const auto storage : {kernels::Storage::kNative, kernels::Storage::kBFloat16, kernels::Storage::kInt8}) {
    auto m = random_model();
    add_random_actor(m, 9);
    m->set_storage(storage);
    const auto name = kernels::storage_name(storage);
    EXPECT_LT(compare_paths(m, {}, 10, 4), 2e-6) << name << ", base";
    EXPECT_LT(compare_paths(m, {"actor"}, 10, 5), 2e-6) << name << ", adapter";
  }
}

TEST(FusedDecode, EachSequenceGetsWhatItGetsAlone) {
  auto m = io::load_model(test::model_260k());
  add_random_actor(m, 7);
  torch::NoGradGuard no_grad;
  m->eval();
  torch::manual_seed(8);
  auto cache = prefill(m, kPrompts, 1, {"actor"});
  auto in = step_inputs(kPrompts, 0, m->config().vocab_size);
  // One sequence alone, from the same cache contents: its row of the batched cache.
  std::vector<KVCache> alone(kPrompts.size());
  for (size_t b = 0; b < kPrompts.size(); ++b) {
    for (size_t l = 0; l < cache.k.size(); ++l) {
      alone[b].k.push_back(cache.k[l].narrow(0, int64_t(b), 1).clone());
      alone[b].v.push_back(cache.v[l].narrow(0, int64_t(b), 1).clone());
    }
    alone[b].key_valid = cache.key_valid.narrow(0, int64_t(b), 1).clone();
    alone[b].length = cache.length;
  }
  auto batched = fused_decode_step(*m, {in.ids, in.positions, in.valid, &cache, {"actor"}});  // (B, V)
  for (size_t b = 0; b < kPrompts.size(); ++b) {
    const int64_t i = int64_t(b);
    auto one = fused_decode_step(*m, {in.ids.narrow(0, i, 1), in.positions.narrow(0, i, 1),
                                      in.valid.narrow(0, i, 1), &alone[b], {"actor"}});
    EXPECT_TRUE(torch::equal(one[0], batched[i])) << "sequence " << b;
  }
}

TEST(FusedDecode, GenerateGivesTheSameTokensOnBothPaths) {
  auto m = io::load_model(test::model_260k());
  generate::SamplingParams p;
  p.temperature = 0.0;
  p.max_new_tokens = 40;
  m->fused_decode = false;
  auto ops = generate::generate(m, kPrompts, p);
  m->fused_decode = true;
  auto fused = generate::generate(m, kPrompts, p);
  for (size_t b = 0; b < kPrompts.size(); ++b) {
    EXPECT_EQ(fused[b].tokens, ops[b].tokens) << "prompt " << b;
    ASSERT_EQ(fused[b].logprobs.size(), ops[b].logprobs.size());
    for (size_t t = 0; t < ops[b].logprobs.size(); ++t) EXPECT_NEAR(fused[b].logprobs[t], ops[b].logprobs[t], 1e-4);
  }
}

TEST(FusedDecode, RefusesWhatItDoesNotRun) {
  auto m = io::load_model(test::model_260k());
  torch::NoGradGuard no_grad;
  m->eval();
  auto cache = m->new_cache(1, 8);
  auto one = torch::ones({1, 1}, torch::kLong);
  EXPECT_EQ(fused_decode_unsupported(*m, {one, {}, {}, &cache, {}}), "");
  EXPECT_NE(fused_decode_unsupported(*m, {one, {}, {}, nullptr, {}}), "");                      // no cache
  EXPECT_NE(fused_decode_unsupported(*m, {torch::ones({1, 2}, torch::kLong), {}, {}, &cache, {}}), "");  // 2 tokens
  auto big = m->new_cache(kFusedDecodeMaxBatch + 1, 8);
  EXPECT_NE(fused_decode_unsupported(*m, {torch::ones({kFusedDecodeMaxBatch + 1, 1}, torch::kLong), {}, {}, &big, {}}),
            "");
  m->train();
  EXPECT_NE(fused_decode_unsupported(*m, {one, {}, {}, &cache, {}}), "");
  EXPECT_THROW(fused_decode_step(*m, {one, {}, {}, &cache, {}}), Error);
  m->eval();
  // A full cache is an error, as on the operator path.
  auto full = m->new_cache(1, 1);
  full.length = 1;
  EXPECT_THROW(fused_decode_step(*m, {one, {}, {}, &full, {}}), Error);
  // A token outside the vocabulary and a position beyond the context are errors that name the value.
  const int64_t V = m->config().vocab_size;
  try {
    fused_decode_step(*m, {torch::full({1, 1}, V, torch::kLong), {}, {}, &cache, {}});
    ADD_FAILURE() << "no error for token id " << V;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token id " + std::to_string(V)), std::string::npos) << e.what();
  }
  const int64_t ctx = m->config().max_seq_len;
  try {
    fused_decode_step(*m, {one, torch::full({1, 1}, ctx, torch::kLong), {}, &cache, {}});
    ADD_FAILURE() << "no error for position " << ctx;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("position " + std::to_string(ctx)), std::string::npos) << e.what();
  }
}

// The step runs in one parallel region with each thread on its share of rows and attention heads; every
// output is computed by one thread in the same order whatever the share, so 1, 2 or 3 threads (more than this
// machine's cores) give the same bits, with grouped queries, padding slots and an adapter.
TEST(FusedDecode, ThreadCountDoesNotChangeTheResult) {
  auto m = random_model();
  add_random_actor(m, 9);
  m->set_storage(kernels::Storage::kInt8);
  torch::NoGradGuard no_grad;
  m->eval();
  torch::manual_seed(11);
  const auto start = prefill(m, kPrompts, 4, {"actor"});
  std::vector<StepInputs> steps;
  for (int64_t s = 0; s < 4; ++s) steps.push_back(step_inputs(kPrompts, s, m->config().vocab_size));
  const int before = at::get_num_threads();
  std::vector<torch::Tensor> logits, keys;
  for (int threads : {1, 2, 3}) {
    at::set_num_threads(threads);
    KVCache cache = start;  // its own copy of the prefilled cache
    for (size_t l = 0; l < cache.k.size(); ++l) cache.k[l] = cache.k[l].clone(), cache.v[l] = cache.v[l].clone();
    cache.key_valid = cache.key_valid.clone();
    torch::Tensor last;
    for (const auto& in : steps)
      last = fused_decode_step(*m, {in.ids, in.positions, in.valid, &cache, {"actor"}});  // (B, V)
    logits.push_back(last);
    keys.push_back(cache.k.back());
  }
  at::set_num_threads(before);
  for (size_t i = 1; i < logits.size(); ++i) {
    EXPECT_TRUE(torch::equal(logits[i], logits[0])) << i + 1 << " threads";
    EXPECT_TRUE(torch::equal(keys[i], keys[0])) << i + 1 << " threads";
  }
}

// The step reads rotary rows from tables the cache keeps (built in chunks on first use): the same bits as
// rotary_tables() of each position alone. A position beyond the tables (explicit positions may pass the
// cache's capacity) is computed for the step and still equals the operator path.
TEST(FusedDecode, RotaryRowsComeFromTablesOfTheCache) {
  auto m = random_model();
  torch::NoGradGuard no_grad;
  m->eval();
  torch::manual_seed(12);
  auto cache = prefill(m, kPrompts, 2, {});
  auto ref_cache = prefill(m, kPrompts, 2, {});
  auto in = step_inputs(kPrompts, 0, m->config().vocab_size);
  fused_decode_step(*m, {in.ids, in.positions, in.valid, &cache, {}});
  m->forward({in.ids, in.positions, in.valid, &ref_cache, {}});
  const int64_t Dh = m->config().head_size();
  ASSERT_EQ(cache.rotary_cos.sizes(), (std::vector<int64_t>{cache.capacity(), Dh}));
  for (int64_t p = 0; p < cache.capacity(); ++p) {
    auto [c, s] = rotary_tables(torch::full({1, 1}, p, torch::kLong), Dh, m->config().rope_theta);
    EXPECT_TRUE(torch::equal(c.reshape({Dh}), cache.rotary_cos[p])) << "position " << p;
    EXPECT_TRUE(torch::equal(s.reshape({Dh}), cache.rotary_sin[p])) << "position " << p;
  }
  auto beyond = in.positions + cache.capacity() + 5;  // (B, 1), still inside the model's context of 64
  auto fused = fused_decode_step(*m, {in.ids, beyond, in.valid, &cache, {}});
  auto ref = m->forward({in.ids, beyond, in.valid, &ref_cache, {}}).select(1, 0);
  EXPECT_LT(test::max_abs_diff(fused, ref) / ref.abs().max().item<double>(), 2e-6);
}

}  // namespace
}  // namespace reglage::model
