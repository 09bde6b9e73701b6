// Batched generation: each prompt gets what it gets alone, sampling is reproducible per seed, stop tokens
// end a sequence, log-probabilities are the policy's own.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "framework/core/error.h"
#include "framework/generate/generate.h"
#include "framework/generate/prefill.h"
#include "framework/io/model_io.h"
#include "test_util.h"

namespace reglage {
namespace {

// Prompts of different lengths (token ids from tok512, BOS first).
const std::vector<std::vector<int64_t>> kPrompts = {
    {1, 403, 407, 261, 378},
    {1, 403},
    {1, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292},
    {1, 376, 298},
};

generate::SamplingParams params_with(double temperature, int64_t max_new, uint64_t seed = 0) {
  generate::SamplingParams p;
  p.temperature = temperature;
  p.max_new_tokens = max_new;
  p.seed = seed;
  return p;
}

TEST(Generate, BatchedGreedyEqualsAlone) {
  auto m = io::load_model(test::model_260k());
  auto p = params_with(0.0, 40);
  auto batched = generate::generate(m, kPrompts, p);
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    auto alone = generate::generate(m, {kPrompts[i]}, p);
    EXPECT_EQ(batched[i].tokens, alone[0].tokens) << "prompt " << i;
    for (size_t t = 0; t < alone[0].logprobs.size(); ++t)
      EXPECT_NEAR(batched[i].logprobs[t], alone[0].logprobs[t], 1e-4) << "prompt " << i << " token " << t;
  }
}

TEST(Generate, BatchedGreedyEqualsAloneInBfloat16) {
  auto m = io::load_model(test::model_260k(), torch::kBFloat16);
  auto p = params_with(0.0, 20);
  auto batched = generate::generate(m, kPrompts, p);
  int equal = 0;
  for (size_t i = 0; i < kPrompts.size(); ++i)
    equal += batched[i].tokens == generate::generate(m, {kPrompts[i]}, p)[0].tokens ? 1 : 0;
  // bf16 sums can round differently with the batch's shape; most sequences still agree token for token.
  EXPECT_GE(equal, 3);
}

TEST(Generate, GreedyMatchesReferenceContinuation) {
  // llama2.c's run.c greedy continuation of "Once upon a time" (the ids of the reference logits file).
  auto ref = test::read_ref_logits(test::source_path("tests/data/reference/ref_logits_once_upon_a_time_64.bin"));
  auto m = io::load_model(test::model_260k());
  std::vector<int64_t> prompt(ref.ids.begin(), ref.ids.begin() + 5);
  auto out = generate::generate(m, {prompt}, params_with(0.0, 59));
  std::vector<int64_t> expected(ref.ids.begin() + 5, ref.ids.end());
  EXPECT_EQ(out[0].tokens, expected);
}

TEST(Generate, SamplingIsReproducibleAndBatchIndependent) {
  auto m = io::load_model(test::model_260k());
  auto p = params_with(0.8, 30, 42);
  p.top_p = 0.9;
  auto a = generate::generate(m, kPrompts, p);
  auto b = generate::generate(m, kPrompts, p);
  for (size_t i = 0; i < kPrompts.size(); ++i) EXPECT_EQ(a[i].tokens, b[i].tokens);
  // Prompt 0 draws from stream (seed, 0) whether alone or first in a batch.
  EXPECT_EQ(generate::generate(m, {kPrompts[0]}, p)[0].tokens, a[0].tokens);
  auto c = generate::generate(m, kPrompts, params_with(0.8, 30, 43));
  int differ = 0;
  for (size_t i = 0; i < kPrompts.size(); ++i) differ += c[i].tokens != a[i].tokens ? 1 : 0;
  EXPECT_GT(differ, 0);
}

TEST(Generate, StopTokenEndsTheSequence) {
  auto m = io::load_model(test::model_260k());
  auto p = params_with(0.0, 40);
  auto free_run = generate::generate(m, {kPrompts[0]}, p)[0];
  ASSERT_GT(free_run.tokens.size(), 10u);
  p.stop_ids = {free_run.tokens[6]};
  auto stopped = generate::generate(m, {kPrompts[0]}, p)[0];
  EXPECT_TRUE(stopped.stopped);
  // ends at the first occurrence of the stop token, which is kept
  auto first = std::find(free_run.tokens.begin(), free_run.tokens.end(), free_run.tokens[6]);
  EXPECT_EQ(stopped.tokens, std::vector<int64_t>(free_run.tokens.begin(), first + 1));
}

TEST(Generate, SequencesLeavingTheBatchKeepTheirResults) {
  // 24 sampled sequences that stop at different steps: finished ones leave the running batch (the cache
  // keeps only the live rows), and every sequence still gets what it gets in a run where none leaves: the
  // free run (no stop token, all rows to the end) cut after its first stop token, tokens and log-probs.
  auto m = io::load_model(test::model_260k());
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t b = 0; b < 24; ++b) prompts.push_back({1, 300 + (b * 7) % 200, 261 + b % 50});
  auto p = params_with(1.0, 48, 7);
  const auto free_run = generate::generate(m, prompts, p);
  // The most frequent token of the free runs as the stop token, so most sequences end early, at varied steps.
  std::map<int64_t, int> count;
  for (const auto& g : free_run)
    for (int64_t t : g.tokens) ++count[t];
  const int64_t stop = std::max_element(count.begin(), count.end(), [](auto& a, auto& b) { return a.second < b.second; })->first;
  p.stop_ids = {stop};
  auto batched = generate::generate(m, prompts, p);
  std::set<size_t> lengths;
  int stopped = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto& f = free_run[i];
    const auto first_stop = std::find(f.tokens.begin(), f.tokens.end(), stop);
    const size_t n = first_stop == f.tokens.end() ? f.tokens.size() : size_t(first_stop - f.tokens.begin()) + 1;
    EXPECT_EQ(batched[i].tokens, std::vector<int64_t>(f.tokens.begin(), f.tokens.begin() + n)) << "prompt " << i;
    EXPECT_EQ(batched[i].stopped, first_stop != f.tokens.end()) << "prompt " << i;
    ASSERT_EQ(batched[i].logprobs.size(), n) << "prompt " << i;
    for (size_t t = 0; t < n; ++t)
      EXPECT_NEAR(batched[i].logprobs[t], f.logprobs[t], 1e-4) << "prompt " << i << " token " << t;
    lengths.insert(batched[i].tokens.size());
    stopped += batched[i].stopped ? 1 : 0;
  }
  EXPECT_GE(stopped, 12);          // most left early ...
  EXPECT_GE(lengths.size(), 6u);  // ... at many different steps
}

TEST(Generate, RepeatedPromptsArePrefilledOnceAndSampledApart) {
  // GRPO samples each prompt group_size times: equal prompts share one prefill, and sequence b still draws
  // what it draws with its own random stream when every other row of the batch holds a different prompt.
  auto m = io::load_model(test::model_260k());
  const std::vector<std::vector<int64_t>> distinct = {{1, 400, 261}, {1, 300}, {1, 350, 270, 280, 290}};
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t b = 0; b < 12; ++b) prompts.push_back(distinct[size_t(b % 3)]);  // interleaved: 4 copies each
  auto p = params_with(1.0, 20, 9);
  const auto batched = generate::generate(m, prompts, p);
  for (size_t b = 0; b < prompts.size(); ++b) {
    std::vector<std::vector<int64_t>> others;  // row b's prompt, every other row a prompt of its own
    for (size_t i = 0; i < prompts.size(); ++i)
      others.push_back(i == b ? prompts[b] : std::vector<int64_t>{1, int64_t(270 + i)});
    const auto alone = generate::generate(m, others, p)[b];
    EXPECT_EQ(batched[b].tokens, alone.tokens) << "sequence " << b;
    ASSERT_EQ(batched[b].logprobs.size(), alone.logprobs.size());
    for (size_t t = 0; t < alone.logprobs.size(); ++t)
      EXPECT_NEAR(batched[b].logprobs[t], alone.logprobs[t], 1e-4) << "sequence " << b << " token " << t;
  }
  EXPECT_NE(batched[0].tokens, batched[3].tokens);  // copies of one prompt are sampled apart
}

TEST(Generate, PromptGroupsKeepFirstAppearanceOrder) {
  const auto g = generate::group_prompts({{1, 5}, {1, 6, 7}, {1, 5}, {1}, {1, 6, 7}, {1, 5}});
  const std::vector<std::vector<int64_t>> distinct = {{1, 5}, {1, 6, 7}, {1}};
  EXPECT_EQ(g.distinct, distinct);
  EXPECT_EQ(g.source, (std::vector<int64_t>{0, 1, 0, 2, 1, 0}));
}

TEST(Generate, PrefillGivesEachSequenceItsPromptsAloneState) {
  // Left padding and the shared cache change nothing: each sequence's prefill state and cache rows are
  // those of its prompt run alone (float64, so any mix-up between rows shows far above rounding).
  auto m = io::load_model(test::model_260k(), torch::kFloat64);
  m->eval();
  torch::NoGradGuard no_grad;
  const std::vector<std::vector<int64_t>> prompts = {{1, 400, 261, 300}, {1, 300}, {1, 400, 261, 300}, {1, 350, 270}};
  const auto groups = generate::group_prompts(prompts);
  auto pre = generate::prefill_prompts(m, groups, 4, {}, 0);
  ASSERT_EQ(pre.last.size(0), 3);
  ASSERT_EQ(pre.cache.key_valid.size(0), 4);
  for (size_t b = 0; b < prompts.size(); ++b) {
    const int64_t len = int64_t(prompts[b].size());
    auto alone = m->hidden({torch::tensor(prompts[b], torch::kLong).unsqueeze(0), {}, {}, nullptr, {}});  // (1, len, D)
    EXPECT_TRUE(torch::allclose(pre.last[groups.source[b]], alone[0][len - 1], 1e-12, 1e-12)) << "sequence " << b;
  }
  // The next token for every sequence at once on the shared cache.
  auto next = torch::full({4, 1}, 280, torch::kLong);
  std::vector<int64_t> pos;
  for (const auto& p : prompts) pos.push_back(int64_t(p.size()));
  auto step = m->hidden({next, torch::tensor(pos, torch::kLong).view({4, 1}), {}, &pre.cache, {}});  // (4, 1, D)
  for (size_t b = 0; b < prompts.size(); ++b) {
    auto ids = torch::cat({torch::tensor(prompts[b], torch::kLong), torch::tensor({int64_t(280)})}).unsqueeze(0);
    auto want = m->hidden({ids, {}, {}, nullptr, {}})[0][int64_t(prompts[b].size())];  // (D)
    EXPECT_TRUE(torch::allclose(step[int64_t(b)][0], want, 1e-12, 1e-12)) << "sequence " << b;
  }
}

TEST(Generate, LogprobsAreTheModelsOwn) {
  auto m = io::load_model(test::model_260k());
  auto p = params_with(1.0, 8, 5);
  auto g = generate::generate(m, {kPrompts[0]}, p)[0];
  std::vector<int64_t> seq = kPrompts[0];
  seq.insert(seq.end(), g.tokens.begin(), g.tokens.end());
  torch::NoGradGuard no_grad;
  auto logp = torch::log_softmax(m->forward({torch::tensor(seq, torch::kLong).unsqueeze(0), {}, {}, nullptr, {}})[0], -1);
  for (size_t t = 0; t < g.tokens.size(); ++t) {
    const int64_t pos = int64_t(kPrompts[0].size() + t) - 1;
    EXPECT_NEAR(g.logprobs[t], logp[pos][g.tokens[t]].item<float>(), 1e-4);
  }
}

TEST(Generate, SamplerFilters) {
  std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f};
  auto rng = generate::sequence_rng(1, 0);
  generate::SamplingParams p;
  p.temperature = 0;
  EXPECT_EQ(generate::sample_token(logits.data(), 5, p, rng).token, 1);  // first maximum wins
  p.temperature = 1.0;
  p.top_k = 1;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(generate::sample_token(logits.data(), 5, p, rng).token, 1);
  p.top_k = 0;
  p.top_p = 0.35;  // the first token at 3.0 holds e^3 / sum = 0.397 >= 0.35 alone
  for (int i = 0; i < 20; ++i) EXPECT_EQ(generate::sample_token(logits.data(), 5, p, rng).token, 1);
  p.top_p = 0.7;  // now both 3.0 tokens are needed (0.79)
  std::set<int64_t> seen;
  for (int i = 0; i < 200; ++i) seen.insert(generate::sample_token(logits.data(), 5, p, rng).token);
  EXPECT_EQ(seen, (std::set<int64_t>{1, 3}));
  // log-probability under softmax(logits): hand-computed sum = e^1 + 2e^3 + e^2 + e^-1
  const double sum = std::exp(1.0) + 2 * std::exp(3.0) + std::exp(2.0) + std::exp(-1.0);
  p = generate::SamplingParams{};
  p.temperature = 0;
  EXPECT_NEAR(generate::sample_token(logits.data(), 5, p, rng).logprob, 3.0 - std::log(sum), 1e-6);
}

// Over a vocabulary of several blocks (the weights are summed per 4096 tokens) and with a temperature, each
// drawn token's log-probability is the float64 log-softmax of logits / T.
TEST(Generate, SampledLogprobsAreTheLogSoftmax) {
  torch::manual_seed(4);
  const int64_t V = 3 * 4096 + 77;
  auto logits = (torch::randn({V}) * 4).contiguous();
  generate::SamplingParams p;
  p.temperature = 0.8;
  auto want = torch::log_softmax(logits.to(torch::kFloat64) / p.temperature, 0);
  auto rng = generate::sequence_rng(2, 0);
  std::set<int64_t> seen;
  for (int i = 0; i < 50; ++i) {
    const auto c = generate::sample_token(logits.data_ptr<float>(), V, p, rng);
    ASSERT_GE(c.token, 0);
    ASSERT_LT(c.token, V);
    seen.insert(c.token);
    const double lp = want[c.token].item<double>();
    EXPECT_NEAR(c.logprob, lp, 2e-6 * (1 + std::abs(lp))) << "token " << c.token;
  }
  EXPECT_GT(seen.size(), 10u);  // a draw, not one token
}

TEST(Generate, BadRequestsAreRejected) {
  auto m = io::load_model(test::model_260k());
  EXPECT_THROW(generate::generate(m, {{}}, params_with(0.0, 5)), Error);
  EXPECT_THROW(generate::generate(m, {{1, 999}}, params_with(0.0, 5)), Error);
  EXPECT_THROW(generate::generate(m, {{1}}, params_with(0.0, 600)), Error);  // beyond 512 positions
  auto p = params_with(-1.0, 5);
  EXPECT_THROW(generate::generate(m, {{1}}, p), Error);
  p = params_with(1.0, 5);
  p.top_p = 0;
  EXPECT_THROW(generate::generate(m, {{1}}, p), Error);
}

}  // namespace
}  // namespace reglage
