// Tokenizer throughput: one long row encoded whole, as a data reader or the reward server does.
//   reglage_bench tokenize [--sizes 100000,1000000] [--texts prose,word,repeat] [--repeats R]
// Texts: "prose" (English sentences with punctuation and newlines, deterministic), "word" (one word without
// spaces: lowercase words run together), "repeat" (one character repeated). The last two are single pieces
// for both tokenizers (no space to cut at), the worst case for the merge heap. Each row prints its own JSON
// line (name, tokenizer, text, bytes, tokens, seconds, mb_per_s, best of R) and joins the table (tokens/s,
// step ms = the whole row). Last, per tokenizer, encode_prefix of a 50 MB prose row to 512 tokens (what the
// data readers do with max_seq_len 512): its own JSON line "tokenize_prefix".
#include "bench/bench_tokenize.h"

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "framework/core/error.h"
#include "framework/tokenizer/bpe_tokenizer.h"
#include "framework/tokenizer/llama2c_tokenizer.h"

namespace reglage::bench {

namespace {

std::string make_text(const std::string& kind, size_t bytes) {
  static const std::vector<std::string> kSentences = {
      "Once upon a time, there was a little girl named Lily.",
      "She loved to play outside in the sunshine with her dog, Max.",
      "One day, Max found a big red ball under the old tree!",
      "\"Can I play too?\" asked Tom, who lived next door.",
      "They laughed and ran until the sun went down; it was 7 o'clock.",
      "The end.\n",
      "Mom said: \"Time for dinner - wash your hands first.\"",
      "Timmy was sad because his toy car was broken, but Dad fixed it in 5 minutes.",
  };
  std::string s;
  s.reserve(bytes);
  std::mt19937 rng(7);
  if (kind == "prose") {
    while (s.size() < bytes) s += kSentences[rng() % kSentences.size()] + (rng() % 4 ? " " : "\n");
  } else if (kind == "word") {
    while (s.size() < bytes) {
      const std::string& t = kSentences[rng() % kSentences.size()];
      for (char c : t)
        if (c >= 'a' && c <= 'z') s += c;
    }
  } else {
    s.assign(bytes, 'a');
  }
  s.resize(bytes);
  return s;
}

}  // namespace

std::vector<Measurement> bench_tokenize(const TokenizeOptions& opt) {
  if (opt.repeats < 1) fail("tokenize: --repeats ", opt.repeats, " (must be >= 1)");
  for (int64_t bytes : opt.sizes)
    if (bytes <= 0) fail("tokenize: --sizes holds ", bytes, " (bytes must be > 0)");
  for (const std::string& kind : opt.texts)
    if (kind != "prose" && kind != "word" && kind != "repeat")
      fail("tokenize: --texts holds \"", kind, "\" (expected prose, word or repeat)");
  std::vector<Measurement> out;
  const tokenizer::Llama2cTokenizer llama2c(opt.llama2c_path);
  const auto gpt2 = tokenizer::BpeTokenizer::from_vocab_merges(opt.gpt2_vocab, opt.gpt2_merges);
  const std::vector<std::pair<std::string, const tokenizer::Tokenizer*>> toks = {{"stories260K", &llama2c},
                                                                                 {"gpt2", gpt2.get()}};
  for (const auto& [tok_name, tok] : toks) {
    for (const std::string& kind : opt.texts) {
      for (int64_t bytes : opt.sizes) {
        const std::string text = make_text(kind, size_t(bytes));
        double best = 1e30;
        size_t tokens = 0;
        for (int r = 0; r < opt.repeats; ++r) {
          const auto t0 = std::chrono::steady_clock::now();
          tokens = tok->encode(text, false, false).size();
          best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
        nlohmann::json j{{"name", "tokenize"},   {"tokenizer", tok_name}, {"text", kind},
                         {"bytes", bytes},       {"tokens", tokens},      {"seconds", best},
                         {"mb_per_s", double(bytes) / 1e6 / best}, {"peak_rss_mb", peak_rss_mb()}};
        std::printf("%s\n", j.dump().c_str());
        std::fflush(stdout);
        Measurement m;
        m.name = "tokenize";
        m.shape = tok_name + " " + kind + " " + std::to_string(bytes) + " B";
        m.dtype = "-";
        m.tokens_per_s = double(tokens) / best;
        m.step_ms = 1000.0 * best;
        m.peak_rss_mb = peak_rss_mb();
        out.push_back(m);
      }
    }
    // What a data reader does with a 50 MB prose row and max_seq_len 512: encode_prefix stops at 513 tokens.
    const std::string huge = make_text("prose", 50000000);
    const auto t0 = std::chrono::steady_clock::now();
    const size_t kept = tok->encode_prefix(huge, 512).size();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    nlohmann::json j{{"name", "tokenize_prefix"}, {"tokenizer", tok_name}, {"text", "prose"},
                     {"bytes", huge.size()},      {"tokens", kept},        {"seconds", seconds}};
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
  }
  return out;
}

}  // namespace reglage::bench
