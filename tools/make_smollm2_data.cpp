// Builds the SmolLM2 demo's data from the model's own samples (data/smollm2/README.md says how it was run):
//   build/reglage_make_smollm2_data [--model models/smollm2/SmolLM2-135M-Instruct-Q4_1.gguf]
//                                   [--success configs/smollm2_success.yaml] [--out data/smollm2]
// The task: "<request about a subject> Answer with exactly three bullet points of at most 8 words each, each
// starting with "- ", and nothing else." Success is the rules file --success (configs/smollm2_success.yaml).
// 1. Subjects are split into disjoint pools: train, eval and held-out. Each subject gives three requests.
// 2. The model answers every train and eval request kSamplesPerPrompt times (temperature 0.8, its own chat
//    template), with the base stored in bfloat16 for speed.
// 3. SFT rows: the first sample that is a list of at least three items (numbered, "*" or "-"), rewritten as
//    its first three items after "- ". Only the format is fixed: items keep the model's own words, so many
//    are longer than 8 words. The length limit is left to the reward model and RL.
// 4. Preference pairs: the samples and their rewritten lists, labelled by the success rules: a passing
//    answer (chosen) against a failing one (rejected) for the same request.
// 5. GRPO prompts are the train requests; the held-out prompts come from subjects in no other file.
// 6. Prints the base model's held-out success (greedy, as `reglage eval` runs it).
// Deterministic on one machine: fixed seeds, our own shuffle and two threads whatever the machine has.
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "framework/config/reward_config.h"
#include "framework/core/blas_setup.h"
#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/data/chat_format.h"
#include "framework/generate/generate.h"
#include "framework/io/model_io.h"
#include "framework/kernels/weight_only.h"
#include "reward/rules.h"

using namespace reglage;

namespace {

constexpr uint64_t kSeed = 20261204;
constexpr int64_t kSamplesPerPrompt = 3;
constexpr int64_t kEvalSubjects = 10;
constexpr int64_t kHeldoutSubjects = 40;
constexpr int64_t kMaxPairsPerPrompt = 2;
constexpr int64_t kBatch = 48;
constexpr int64_t kMaxNewTokens = 96;

const char* const kSuffix =
    " Answer with exactly three bullet points of at most 8 words each, each starting with \"- \", and nothing else.";

// Each subject fits every template below.
const std::vector<std::string> kTemplates = {"Give three tips for {}.", "List three benefits of {}.",
                                             "Name three common mistakes when {}."};

const std::vector<std::string> kSubjects = {
    "staying healthy", "saving money", "learning a new language", "reading books", "riding a bike",
    "planting a garden", "cooking at home", "walking every day", "traveling alone", "keeping a journal",
    "learning to swim", "drinking more water", "studying for exams", "running a marathon",
    "painting with watercolors", "playing the guitar", "writing a novel", "baking bread", "camping in the woods",
    "hiking in the mountains", "taking photographs", "learning to code", "doing yoga", "meditating daily",
    "cleaning the house", "raising a puppy", "caring for a cat", "volunteering in the community",
    "starting a small business", "working from home", "making new friends", "speaking in public",
    "learning to drive", "building a birdhouse", "knitting a scarf", "growing tomatoes", "composting food waste",
    "recycling at home", "shopping for groceries", "planning a wedding", "moving to a new city",
    "renting an apartment", "buying a used car", "budgeting for a family", "teaching children to read",
    "learning chess", "playing tennis", "swimming in the ocean", "skiing for the first time", "ice skating",
    "climbing a rock wall", "fishing at a lake", "watching birds", "visiting a museum", "going to the library",
    "writing poetry", "singing in a choir", "learning the piano", "playing basketball", "coaching a soccer team",
    "organizing a closet", "decorating a bedroom", "painting a fence", "fixing a bicycle", "changing a tire",
    "learning to sew", "making pottery", "brewing tea", "making coffee", "eating breakfast", "packing a lunch",
    "cooking pasta", "grilling vegetables", "making soup", "baking cookies", "hosting a dinner party",
    "planning a picnic", "throwing a birthday party", "writing a letter", "sending thank-you notes",
    "keeping a budget", "paying off debt", "investing for retirement", "applying for a job",
    "preparing for an interview", "writing a resume", "asking for a raise", "managing a team", "leading a meeting",
    "working in a group", "taking notes in class", "learning history", "studying math", "doing science experiments",
    "building a robot", "learning to draw", "sketching outdoors", "making a video", "starting a podcast",
    "writing a blog", "using social media", "reducing screen time", "sleeping well", "waking up early",
    "stretching in the morning", "lifting weights", "jogging in the park", "learning to dance",
    "learning to juggle", "practicing a magic trick", "solving puzzles", "playing board games",
    "reading to children", "adopting a pet", "walking a dog", "feeding birds in winter", "saving energy at home",
    "conserving water", "riding public transport", "carpooling to work", "traveling by train",
    "flying with a baby", "packing a suitcase", "visiting a new country", "learning about other cultures",
    "cooking for a crowd", "eating more vegetables", "cutting back on sugar", "preparing for a storm",
    "building a snowman", "keeping warm in winter", "staying cool in summer", "growing herbs indoors",
    "caring for houseplants", "mowing the lawn", "building a treehouse", "painting a portrait", "writing a speech",
    "learning sign language", "teaching a class", "tutoring a friend", "making a scrapbook", "collecting stamps",
    "riding a horse", "sailing a boat", "kayaking on a river", "learning to surf", "snorkeling",
    "going on a road trip", "taking a nap", "writing a short story", "memorizing a poem", "doing homework",
    "cleaning a kitchen", "washing a car", "planning a vacation", "learning to knit", "repairing a leaky faucet",
    "painting a room", "learning to meditate", "writing a cover letter", "training for a race"};

// Fisher-Yates on mt19937_64's raw output (std::shuffle differs between standard libraries).
template <typename T>
void shuffle(std::vector<T>& v, std::mt19937_64& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(rng() % i)]);
}

std::string request(const std::string& tmpl, const std::string& subject) {
  std::string r = tmpl;
  return r.replace(r.find("{}"), 2, subject) + kSuffix;
}

data::Json user_messages(const std::string& text) {
  return data::Json::array({{{"role", "user"}, {"content", text}}});
}

struct Sample {
  std::string text;  // the decoded answer, stop token excluded
  bool stopped = false;
};

// The model's answers to `requests`, `per_prompt` each, in order (request 0's samples first).
std::vector<Sample> sample(model::CausalLM& m, const tokenizer::Tokenizer& tok, const data::ChatFormat& chat,
                           const std::vector<std::string>& requests, int64_t per_prompt, double temperature) {
  std::vector<std::vector<int64_t>> prompts;
  for (const auto& r : requests)
    for (int64_t k = 0; k < per_prompt; ++k) prompts.push_back(chat.encode_prompt(user_messages(r)).ids);
  generate::SamplingParams params;
  params.max_new_tokens = kMaxNewTokens;
  params.temperature = temperature;
  params.stop_ids = tok.stop_ids();
  std::vector<Sample> out;
  for (size_t start = 0; start < prompts.size(); start += kBatch) {
    const size_t end = std::min(prompts.size(), start + size_t(kBatch));
    std::vector<std::vector<int64_t>> chunk(prompts.begin() + long(start), prompts.begin() + long(end));
    params.seed = kSeed + start;  // each batch its own streams; the same on every run
    const auto gens = generate::generate(m, chunk, params);
    for (const auto& g : gens) {
      std::vector<int64_t> ids = g.tokens;
      if (g.stopped && !ids.empty()) ids.pop_back();  // the stop token
      out.push_back({tok.decode(ids), g.stopped});
    }
    std::cout << "  sampled " << end << "/" << prompts.size() << "\n" << std::flush;
  }
  return out;
}

// The first three items of a list answer ("1. x", "2) x", "* x", "- x", one per line), rewritten as
// "- x\n- y\n- z"; "" when the answer has fewer than three items or was cut off by the token limit.
std::string as_three_bullets(const Sample& s) {
  if (!s.stopped) return "";
  static const std::regex item(R"(^\s*(?:\d+[.)]|[*\-])\s+(.*\S)\s*$)");
  std::vector<std::string> items;
  std::istringstream in(s.text);
  for (std::string line; std::getline(in, line) && items.size() < 3;) {
    std::smatch m;
    if (std::regex_match(line, m, item)) items.push_back(m[1].str());
  }
  if (items.size() < 3) return "";
  return "- " + items[0] + "\n- " + items[1] + "\n- " + items[2];
}

struct Rows {
  std::vector<nlohmann::json> sft, pairs;
  int64_t requests_with_sft = 0, passing_candidates = 0, candidates = 0;
};

// SFT rows and preference pairs for `requests` from their samples (kSamplesPerPrompt each, in order).
Rows make_rows(const std::vector<std::string>& requests, const std::vector<Sample>& samples,
               const config::RewardSpec& success) {
  Rows rows;
  for (size_t r = 0; r < requests.size(); ++r) {
    std::vector<std::string> passing, failing, failing_raw;
    std::string sft_answer;
    for (int64_t k = 0; k < kSamplesPerPrompt; ++k) {
      const Sample& s = samples[r * size_t(kSamplesPerPrompt) + size_t(k)];
      const std::string bullets = as_three_bullets(s);
      if (sft_answer.empty()) sft_answer = bullets;
      const std::string raw = s.stopped ? s.text : std::string();
      for (const std::string* candidate : {&bullets, &raw}) {
        if (candidate->empty()) continue;
        ++rows.candidates;
        const bool pass = reward::rules_pass(success.rules, {"", *candidate, ""});
        rows.passing_candidates += pass;
        auto& to = pass ? passing : (candidate == &bullets ? failing : failing_raw);
        if (std::find(to.begin(), to.end(), *candidate) == to.end()) to.push_back(*candidate);
      }
    }
    const nlohmann::json messages = user_messages(requests[r]);
    if (!sft_answer.empty()) {
      ++rows.requests_with_sft;
      nlohmann::json m = messages;
      m.push_back({{"role", "assistant"}, {"content", sft_answer}});
      rows.sft.push_back({{"messages", m}});
    }
    // Rejected answers: rewritten lists that break the length rule first, then the model's raw answers.
    failing.insert(failing.end(), failing_raw.begin(), failing_raw.end());
    for (size_t i = 0; i < failing.size() && !passing.empty() && int64_t(i) < kMaxPairsPerPrompt; ++i)
      rows.pairs.push_back({{"messages", messages}, {"chosen", passing[i % passing.size()]}, {"rejected", failing[i]}});
  }
  return rows;
}

void write_jsonl(const std::string& path, const std::vector<nlohmann::json>& rows) {
  std::string out;
  for (const auto& r : rows) out += r.dump() + "\n";
  core::write_file_atomic(path, out);
}

std::vector<nlohmann::json> prompt_rows(const std::vector<std::string>& requests) {
  std::vector<nlohmann::json> rows;
  for (const auto& r : requests) rows.push_back({{"messages", user_messages(r)}});
  return rows;
}

}  // namespace

int main(int argc, char** argv) {
  core::ensure_blas_kernels(argv);
  try {
    std::string model_path = "models/smollm2/SmolLM2-135M-Instruct-Q4_1.gguf", out_dir = "data/smollm2",
                success_path = "configs/smollm2_success.yaml";
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--model" && i + 1 < argc) model_path = argv[++i];
      else if (a == "--out" && i + 1 < argc) out_dir = argv[++i];
      else if (a == "--success" && i + 1 < argc) success_path = argv[++i];
      else
        fail("unknown argument ", a,
             " (usage: reglage_make_smollm2_data [--model PATH] [--success RULES.yaml] [--out DIR])");
    }
    const config::RewardSpec success = config::load_reward_file(success_path);
    if (success.type != config::RewardType::kRules) fail(success_path, ": expected a rules reward (type: rules)");
    torch::set_num_threads(2);  // results must not depend on the machine's core count
    auto m = io::load_model(model_path);
    m->set_storage(kernels::Storage::kBFloat16);
    auto tok = io::load_model_tokenizer(model_path, "", m->config().vocab_size);
    data::LazyChatFormat chat("auto", *tok, model_path);

    // ---- 1. subject pools and requests ----
    std::mt19937_64 rng(kSeed);
    std::vector<std::string> subjects = kSubjects;
    shuffle(subjects, rng);
    const auto train_end = subjects.end() - kEvalSubjects - kHeldoutSubjects;
    const std::vector<std::string> train_subjects(subjects.begin(), train_end);
    const std::vector<std::string> eval_subjects(train_end, train_end + kEvalSubjects);
    const std::vector<std::string> heldout_subjects(train_end + kEvalSubjects, subjects.end());
    std::vector<std::string> train_requests, eval_requests, heldout_requests;
    for (const auto& s : train_subjects)
      for (const auto& t : kTemplates) train_requests.push_back(request(t, s));
    for (const auto& s : eval_subjects)
      for (const auto& t : kTemplates) eval_requests.push_back(request(t, s));
    for (const auto& s : heldout_subjects) heldout_requests.push_back(request(kTemplates[rng() % kTemplates.size()], s));

    // ---- 2-4. samples, SFT rows and preference pairs ----
    std::cout << "sampling " << train_requests.size() + eval_requests.size() << " requests x " << kSamplesPerPrompt
              << "\n";
    const Rows train = make_rows(train_requests, sample(m, *tok, chat.get(), train_requests, kSamplesPerPrompt, 0.8),
                                 success);
    const Rows eval = make_rows(eval_requests, sample(m, *tok, chat.get(), eval_requests, kSamplesPerPrompt, 0.8),
                                success);
    std::vector<nlohmann::json> sft_train = train.sft, pref_train = train.pairs;
    shuffle(sft_train, rng);
    shuffle(pref_train, rng);

    // ---- 5. write ----
    std::vector<nlohmann::json> grpo = prompt_rows(train_requests);
    shuffle(grpo, rng);
    std::filesystem::create_directories(out_dir);
    write_jsonl(core::path_join(out_dir, "sft_train.jsonl"), sft_train);
    write_jsonl(core::path_join(out_dir, "sft_eval.jsonl"), eval.sft);
    write_jsonl(core::path_join(out_dir, "pref_train.jsonl"), pref_train);
    write_jsonl(core::path_join(out_dir, "pref_eval.jsonl"), eval.pairs);
    write_jsonl(core::path_join(out_dir, "grpo_prompts.jsonl"), grpo);
    write_jsonl(core::path_join(out_dir, "heldout_prompts.jsonl"), prompt_rows(heldout_requests));
    std::cout << "subjects: " << train_subjects.size() << " train, " << eval_subjects.size() << " eval, "
              << heldout_subjects.size() << " held-out\n"
              << "sft_train: " << sft_train.size() << " of " << train_requests.size() << " requests; sft_eval: "
              << eval.sft.size() << "\n"
              << "pref_train: " << pref_train.size() << " pairs; pref_eval: " << eval.pairs.size() << "\n"
              << "samples passing the success rules (answers and rewritten lists): " << train.passing_candidates
              << " of " << train.candidates << "\n";

    // ---- 6. the base model on the held-out prompts, greedy ----
    const auto base = sample(m, *tok, chat.get(), heldout_requests, 1, 0.0);
    int64_t passed = 0;
    for (const auto& s : base) passed += reward::rules_pass(success.rules, {"", s.text, ""});
    std::cout << "base model held-out success (greedy, bfloat16 storage): " << passed << "/" << base.size() << "\n"
              << "first held-out answer: " << heldout_requests[0] << " ->\n" << base[0].text << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "reglage_make_smollm2_data: error: " << e.what() << "\n";
    return 1;
  }
}
