// SmolLM2-135M-Instruct's own tokenizer (the GGUF's tokenizer.ggml.* metadata), greedy generation and
// `reglage convert`, against Hugging Face transformers' outputs for the same file (tests/data/smollm2/):
//   tokenizer: the rendered chat prompts encode to transformers' ids (special tokens such as <|im_start|> read as
//              tokens; no BOS: the file's add_bos_token is false);
//   generate:  greedy `reglage generate` of the 6 prompts (one batch, 32 new tokens, stopping at <|im_end|>)
//              gives transformers' ids and text;
//   convert:   `reglage convert` writes a Hugging Face directory with the GGUF's settings in config.json and
//              generation_config.json, the tokenizer files, and logits equal to the GGUF's bit for bit.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "framework/io/safetensors.h"
#include "smollm2_util.h"
#include "test_util.h"

namespace reglage {
namespace {

using nlohmann::json;
using test::run_reglage;
using test::source_path;

std::string gguf_path() { return test::smollm2_gguf(); }
using test::quoted;
json prompts() { return test::smollm2_prompts(); }

std::vector<int64_t> parse_ids(const std::string& line) {
  std::vector<int64_t> ids;
  std::istringstream in(line);
  for (int64_t id; in >> id;) ids.push_back(id);
  return ids;
}

// `reglage tokenize` of `text` with the tokenizer of `model`.
std::vector<int64_t> reglage_tokenize(const std::string& model, const std::string& text, const test::TempDir& tmp) {
  core::write_file_atomic(tmp.path("prompt.txt"), text);
  auto r = run_reglage("tokenize --model " + quoted(model) + " --text-file " + tmp.path("prompt.txt") +
                       " --parse-special yes");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return parse_ids(r.out);
}

TEST(Smollm2, TokenizerEqualsTransformers) {
  test::TempDir tmp;
  for (const auto& p : prompts())
    EXPECT_EQ(reglage_tokenize(gguf_path(), p["text"], tmp), p["ids"].get<std::vector<int64_t>>()) << p["name"];
}

TEST(Smollm2, GreedyGenerateEqualsTransformers) {
  auto r = run_reglage("generate --model " + quoted(gguf_path()) + " --prompts " +
                       quoted(source_path("tests/data/smollm2/prompts.jsonl")) +
                       " --max-new-tokens 32 --temperature 0 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string line;
  for (const auto& p : prompts()) {
    ASSERT_TRUE(std::getline(lines, line)) << "no output line for " << p["name"];
    const json g = json::parse(line);
    EXPECT_EQ(g["prompt"], p["text"]);
    EXPECT_EQ(g["ids"].get<std::vector<int64_t>>(), p["greedy_ids"].get<std::vector<int64_t>>()) << p["name"];
    EXPECT_EQ(g["text"], p["greedy_text"]) << p["name"];
    EXPECT_EQ(g["stopped"].get<bool>(), p["greedy_stopped"].get<bool>()) << p["name"];
  }
  EXPECT_FALSE(std::getline(lines, line)) << "extra output: " << line;
}

TEST(Smollm2, ConvertedDirectoryEqualsGguf) {
  test::TempDir tmp;
  const std::string dir = tmp.path("hf");
  auto r = run_reglage("convert --model " + quoted(gguf_path()) + " --out " + dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;

  // The GGUF's settings: tied output (no output.weight), rope.freq_base, the float32 rms epsilon, BOS/EOS ids
  // from tokenizer.ggml.*, the context length.
  const json c = json::parse(core::read_file(dir + "/config.json"));
  EXPECT_EQ(c["architectures"], json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(c["model_type"], "llama");
  EXPECT_EQ(c["tie_word_embeddings"], true);
  EXPECT_EQ(c["rope_theta"].get<double>(), 100000.0);
  EXPECT_EQ(float(c["rms_norm_eps"].get<double>()), 1e-5f);
  EXPECT_EQ(c["bos_token_id"], 1);
  EXPECT_EQ(c["eos_token_id"], 2);
  EXPECT_EQ(c["max_position_embeddings"], 8192);
  EXPECT_EQ(c["vocab_size"], 49152);
  EXPECT_EQ(c["num_hidden_layers"], 30);
  EXPECT_EQ(c["num_key_value_heads"], 3);
  const json g = json::parse(core::read_file(dir + "/generation_config.json"));
  EXPECT_EQ(g["bos_token_id"], 1);
  EXPECT_EQ(g["eos_token_id"], 2);
  // float32 weights, no lm_head (tied).
  for (const auto& e : io::read_safetensors_header(dir + "/model.safetensors")) {
    EXPECT_EQ(e.dtype, torch::kFloat32) << e.name;
    EXPECT_NE(e.name, "lm_head.weight");
  }

  // The written tokenizer encodes as the GGUF's, and the logits are the GGUF's bit for bit.
  const json p = prompts()[0];
  const auto ids = p["ids"].get<std::vector<int64_t>>();
  EXPECT_EQ(reglage_tokenize(dir, p["text"], tmp), ids);
  std::string ids_text;
  for (auto id : ids) ids_text += std::to_string(id) + " ";
  for (const auto& [model, out] : {std::pair{gguf_path(), tmp.path("gguf.bin")}, std::pair{dir, tmp.path("dir.bin")}}) {
    auto l = run_reglage("logits --model " + quoted(model) + " --ids '" + ids_text + "' --out " + out);
    ASSERT_EQ(l.exit_code, 0) << l.err;
  }
  EXPECT_TRUE(core::read_file(tmp.path("gguf.bin")) == core::read_file(tmp.path("dir.bin")))
      << "logits of the converted directory differ from the GGUF's";
}

}  // namespace
}  // namespace reglage
