// Builds the demo task's data from the shipped base model (data/demo/README.md says how it was run):
//   build/reglage_make_demo_data [--model models/stories260K/stories260K.bin] [--out data/demo]
// 1. Samples stories from "Once upon a time, there was a" (temperature 0.8, one thread, fixed seed).
// 2. Keeps those that go on "<one to three words> named <Name>", swaps that phrase for the requested animal
//    and name and every later <Name> for the new name, and cuts the story after its last full sentence.
// 3. Writes SFT rows with train names, eval rows with other names, and held-out prompts with a third set.
// 4. Prints the base model's held-out success (greedy, 120 new tokens) as the reference figure.
// Deterministic on one machine (fixed seeds, our own shuffle, one thread). Across CPUs, float rounding in
// different BLAS kernels can change a rare sampled token (measured: 1 of 1,000 SFT rows on another CPU); the
// committed files are the reference.
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "framework/core/blas_setup.h"
#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/data/demo_task.h"
#include "framework/generate/generate.h"
#include "framework/io/model_io.h"

using namespace reglage;

namespace {

constexpr uint64_t kSeed = 20260101;
constexpr int64_t kSamples = 1300;      // stories sampled; about 90% have a "named X" phrase
constexpr int64_t kTrainRows = 1000;
constexpr int64_t kEvalRows = 100;
constexpr int64_t kHeldoutPrompts = 40;
constexpr int64_t kPpoPrompts = 500;     // ppo_prompts.jsonl rows (eval names x random animals)
constexpr int64_t kTrainNames = 300;    // disjoint name pools: train, eval, held-out
constexpr int64_t kEvalNames = 50;
constexpr int64_t kHeldoutNames = 40;
constexpr int64_t kBatch = 100;

const std::vector<std::string> kAnimals = {"cat", "dog",  "bird", "fox", "rabbit", "bear", "frog", "duck",
                                           "mouse", "lion", "fish", "owl", "pig",    "cow",  "horse"};
const std::vector<std::string> kFirst = {"Da", "Ko", "Mi", "Lo", "Pa", "Ru", "Te", "Bi", "No", "Fa",
                                         "Ze", "Gu", "Sa", "Vo", "Ti", "Ne", "Bo", "Ka", "Li", "Pe"};
const std::vector<std::string> kSecond = {"lu", "ti", "ra", "mo", "ke", "si", "na", "po", "vi", "de",
                                          "zu", "ba", "fo", "gi", "ro", "le", "mu", "ta", "ni", "so"};

// Fisher-Yates on mt19937_64's raw output (std::shuffle differs between standard libraries).
template <typename T>
void shuffle(std::vector<T>& v, std::mt19937_64& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(rng() % i)]);
}

std::string article(const std::string& animal) {
  return std::string("aeiou").find(animal[0]) != std::string::npos ? "an" : "a";
}

std::string prompt_for(const std::string& animal, const std::string& name) {
  return "Write a story about " + article(animal) + " " + animal + " named " + name + ".";
}

// Every whole-word `from` in `text` replaced by `to`.
std::string replace_word(const std::string& text, const std::string& from, const std::string& to) {
  return std::regex_replace(text, std::regex("\\b" + from + "\\b"), to);
}

// Decoded continuation (stop token excluded), each piece after the token before it.
std::string decode(const tokenizer::Tokenizer& tok, int64_t prev, const generate::Generation& g,
                   const std::vector<int64_t>& stop_ids) {
  std::string text;
  for (int64_t id : g.tokens) {
    if (std::find(stop_ids.begin(), stop_ids.end(), id) != stop_ids.end()) break;
    text += tok.decode_piece(prev, id);
    prev = id;
  }
  return text;
}

std::vector<std::string> run_prompts(model::CausalLM& m, const tokenizer::Tokenizer& tok,
                                     const std::vector<std::vector<int64_t>>& prompts,
                                     generate::SamplingParams params) {
  std::vector<std::string> texts;
  for (size_t start = 0; start < prompts.size(); start += kBatch) {
    const size_t end = std::min(prompts.size(), start + size_t(kBatch));
    std::vector<std::vector<int64_t>> chunk(prompts.begin() + start, prompts.begin() + end);
    params.seed = kSeed + start;  // each batch its own streams; the same on every run
    const auto gens = generate::generate(m, chunk, params);
    for (size_t i = 0; i < gens.size(); ++i) texts.push_back(decode(tok, chunk[i].back(), gens[i], params.stop_ids));
  }
  return texts;
}

struct Story {
  std::string rest;      // text after "there was a <phrase> named <Name>", its old name still in place
  std::string old_name;
};

void write_jsonl(const std::string& path, const std::vector<nlohmann::json>& rows) {
  std::string out;
  for (const auto& r : rows) out += r.dump() + "\n";
  core::write_file_atomic(path, out);
}

}  // namespace

int main(int argc, char** argv) {
  core::ensure_blas_kernels(argv);
  try {
    std::string model_path = "models/stories260K/stories260K.bin", out_dir = "data/demo";
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if ((a == "--model" || a == "--out") && i + 1 < argc) (a == "--model" ? model_path : out_dir) = argv[++i];
      else fail("unknown argument ", a, " (usage: reglage_make_demo_data [--model PATH] [--out DIR])");
    }
    torch::set_num_threads(1);  // results must not depend on the thread count
    auto m = io::load_model(model_path);
    auto tok = io::load_model_tokenizer(model_path, "", m->config().vocab_size);

    // ---- 1. sample base stories ----
    const std::string opening = "Once upon a time, there was a";
    generate::SamplingParams params;
    params.max_new_tokens = 100;
    params.temperature = 0.8;
    params.stop_ids = tok->stop_ids();
    const auto opening_ids = tok->encode(opening, tok->add_bos(), /*add_eos=*/false);
    const auto samples = run_prompts(m, *tok, std::vector<std::vector<int64_t>>(kSamples, opening_ids), params);

    // ---- 2. keep "<words> named <Name>" stories, cut after the last full sentence ----
    const std::regex named(R"(^((?: [a-z]+){1,3}) named ([A-Z][a-z]+))");
    std::vector<Story> stories;
    for (const auto& s : samples) {
      std::smatch match;
      if (!std::regex_search(s, match, named)) continue;
      std::string rest = match.suffix().str();
      const size_t last = rest.find_last_of(".!?");
      if (last == std::string::npos) continue;
      size_t cut = last + 1;
      if (cut < rest.size() && rest[cut] == '"') ++cut;  // a sentence that ends a quote
      stories.push_back({rest.substr(0, cut), match[2].str()});
    }
    std::cerr << "make_demo_data: " << stories.size() << " of " << samples.size() << " samples usable\n";
    if (stories.empty()) fail("no usable stories sampled");

    // ---- 3. names, animals, rows ----
    std::mt19937_64 rng(kSeed);
    std::vector<std::string> names;
    for (const auto& a : kFirst)
      for (const auto& b : kSecond) names.push_back(a + b);
    shuffle(names, rng);
    const std::vector<std::string> train_names(names.begin(), names.begin() + kTrainNames);
    const std::vector<std::string> eval_names(names.begin() + kTrainNames, names.begin() + kTrainNames + kEvalNames);
    const std::vector<std::string> heldout_names(names.begin() + kTrainNames + kEvalNames,
                                                 names.begin() + kTrainNames + kEvalNames + kHeldoutNames);
    // One SFT row: story k with a new animal and name. The completion starts without a space: the
    // llama2.c tokenizer's dummy prefix supplies it, as after the prompt's final ".".
    size_t next_story = 0;
    auto make_row = [&](const std::string& animal, const std::string& name) {
      const Story& s = stories[next_story++ % stories.size()];
      const std::string completion = "Once upon a time, there was " + article(animal) + " " + animal + " named " +
                                     name + replace_word(s.rest, s.old_name, name);
      return nlohmann::json{{"prompt", prompt_for(animal, name)}, {"completion", completion}};
    };
    std::vector<nlohmann::json> train, eval, heldout;
    for (int64_t i = 0; i < kTrainRows; ++i)
      train.push_back(make_row(kAnimals[rng() % kAnimals.size()], train_names[size_t(i) % train_names.size()]));
    for (int64_t i = 0; i < kEvalRows; ++i)
      eval.push_back(make_row(kAnimals[rng() % kAnimals.size()], eval_names[size_t(i) % eval_names.size()]));
    for (int64_t i = 0; i < kHeldoutPrompts; ++i) {
      const std::string animal = kAnimals[rng() % kAnimals.size()], name = heldout_names[size_t(i)];
      heldout.push_back(
          {{"prompt", prompt_for(animal, name)}, {"name", name}, {"animal", animal}, {"reference", name}});
    }
    shuffle(train, rng);
    // PPO prompts: eval names only (never trained on by SFT, disjoint from the held-out names), with the
    // name as "reference" for rule rewards. Drawn after everything above so the other files do not change.
    std::vector<nlohmann::json> ppo;
    for (int64_t i = 0; i < kPpoPrompts; ++i) {
      const std::string animal = kAnimals[rng() % kAnimals.size()], name = eval_names[size_t(i) % eval_names.size()];
      ppo.push_back({{"prompt", prompt_for(animal, name)}, {"reference", name}});
    }
    shuffle(ppo, rng);
    std::filesystem::create_directories(out_dir);
    write_jsonl(core::path_join(out_dir, "sft_train.jsonl"), train);
    write_jsonl(core::path_join(out_dir, "sft_eval.jsonl"), eval);
    write_jsonl(core::path_join(out_dir, "heldout_prompts.jsonl"), heldout);
    write_jsonl(core::path_join(out_dir, "ppo_prompts.jsonl"), ppo);

    // ---- 4. the base model on the held-out prompts: greedy, 120 new tokens ----
    generate::SamplingParams greedy;
    greedy.max_new_tokens = 120;
    greedy.temperature = 0.0;
    greedy.stop_ids = tok->stop_ids();
    std::vector<std::vector<int64_t>> prompt_ids;
    for (const auto& h : heldout) prompt_ids.push_back(tok->encode(h["prompt"].get<std::string>(), tok->add_bos(), false));
    const auto texts = run_prompts(m, *tok, prompt_ids, greedy);
    std::vector<std::pair<std::string, std::string>> pairs;
    for (size_t i = 0; i < texts.size(); ++i) pairs.emplace_back(texts[i], heldout[i]["name"].get<std::string>());
    const double rate = data::demo_success_rate(pairs);
    std::cout << "wrote " << train.size() << " train rows, " << eval.size() << " eval rows, " << heldout.size()
              << " held-out prompts to " << out_dir << "\n"
              << "base model held-out success (greedy, 120 new tokens): "
              << int64_t(rate * double(pairs.size()) + 0.5) << "/" << pairs.size() << " = " << rate << "\n"
              << "first held-out story: " << heldout[0]["prompt"].get<std::string>() << " ->" << texts[0] << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "reglage_make_demo_data: error: " << e.what() << "\n";
    return 1;
  }
}
