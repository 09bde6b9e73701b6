// Hugging Face directories written by reglage load back bit-identically; config.json problems are named.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <map>

#include "framework/core/error.h"
#include "framework/io/model_io.h"
#include "framework/io/safetensors.h"
#include "framework/tokenizer/tokenizer.h"
#include "test_util.h"

namespace reglage {
namespace {

torch::Tensor logits_of(model::CausalLM& m, const std::vector<int64_t>& ids) {
  torch::NoGradGuard no_grad;
  return m->forward({torch::tensor(ids, torch::kLong).unsqueeze(0), {}, {}, nullptr, {}})[0];
}

void expect_same_weights(model::CausalLM& a, model::CausalLM& b) {
  auto pa = a->named_parameters(), pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& item : pa) {
    auto* other = pb.find(item.key());
    ASSERT_NE(other, nullptr) << item.key();
    EXPECT_TRUE(torch::equal(item.value(), *other)) << item.key();
  }
}

class HfRoundTrip : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(HfRoundTrip, SavedDirectoryLoadsBackIdentically) {
  test::TempDir tmp;
  const auto [model_rel, dtype_name] = GetParam();
  const auto dtype = model::parse_dtype(dtype_name);
  auto m = io::load_model(test::source_path(model_rel), dtype);
  io::save_hf(m, tmp.path("hf"));
  auto back = io::load_model(tmp.path("hf"), dtype);
  expect_same_weights(m, back);
  const std::vector<int64_t> ids = {1, 20, 30, 40, 50, 60};
  EXPECT_TRUE(torch::equal(logits_of(m, ids), logits_of(back, ids)));
  EXPECT_EQ(back->config().architecture, m->config().architecture);
  EXPECT_EQ(back->config().tie_embeddings, m->config().tie_embeddings);
  EXPECT_DOUBLE_EQ(back->config().rope_theta, m->config().rope_theta);
}

INSTANTIATE_TEST_SUITE_P(
    Models, HfRoundTrip,
    ::testing::Values(std::make_pair("models/stories260K/stories260K.bin", "float32"),
                      std::make_pair("models/stories260K/stories260K.bin", "bfloat16"),
                      std::make_pair("tests/data/hf/qwen2_f32", "float32"),
                      std::make_pair("tests/data/hf/llama_bf16_sharded", "bfloat16"),
                      std::make_pair("tests/data/hf/mistral_f16", "float32")));

TEST(HfIo, TiedModelStoresNoLmHead) {
  test::TempDir tmp;
  auto m = io::load_model(test::model_260k());
  io::save_hf(m, tmp.path("hf"));
  auto entries = io::read_safetensors_header(tmp.path("hf/model.safetensors"));
  for (const auto& e : entries) EXPECT_NE(e.name, "lm_head.weight");
  EXPECT_EQ(entries.size(), m->named_parameters().size());
}

// Writes a copy of the llama_f32 fixture with config.json edited by `edit`.
std::string edited_fixture(const test::TempDir& tmp, const std::function<void(nlohmann::json&)>& edit) {
  const std::string src = test::source_path("tests/data/hf/llama_f32");
  const std::string dst = tmp.path("edited");
  std::filesystem::create_directories(dst);
  std::filesystem::copy_file(src + "/model.safetensors", dst + "/model.safetensors");
  auto j = nlohmann::json::parse(core::read_file(src + "/config.json"));
  edit(j);
  core::write_file_atomic(dst + "/config.json", j.dump());
  return dst;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(HfIo, UnknownArchitectureIsNamed) {
  test::TempDir tmp;
  auto dir = edited_fixture(tmp, [](nlohmann::json& j) { j["architectures"] = {"GPTNeoXForCausalLM"}; });
  const std::string msg = error_of([&] { io::load_model(dir); });
  EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("GPTNeoXForCausalLM"), std::string::npos) << msg;
}

TEST(HfIo, MissingKeyIsNamed) {
  test::TempDir tmp;
  auto dir = edited_fixture(tmp, [](nlohmann::json& j) { j.erase("hidden_size"); });
  const std::string msg = error_of([&] { io::load_model(dir); });
  EXPECT_NE(msg.find("hidden_size"), std::string::npos) << msg;
}

TEST(HfIo, WrongTypeIsNamed) {
  test::TempDir tmp;
  auto dir = edited_fixture(tmp, [](nlohmann::json& j) { j["num_hidden_layers"] = "three"; });
  const std::string msg = error_of([&] { io::load_model(dir); });
  EXPECT_NE(msg.find("num_hidden_layers"), std::string::npos) << msg;
}

TEST(HfIo, ShapeMismatchNamesTheTensor) {
  test::TempDir tmp;
  auto dir = edited_fixture(tmp, [](nlohmann::json& j) { j["intermediate_size"] = 64; });
  const std::string msg = error_of([&] { io::load_model(dir); });
  EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("mlp."), std::string::npos) << msg;
  EXPECT_NE(msg.find("has shape [32, 48]"), std::string::npos) << msg;
}

TEST(HfIo, MissingTensorIsNamed) {
  test::TempDir tmp;
  auto dir = edited_fixture(tmp, [](nlohmann::json& j) { j["num_hidden_layers"] = 4; });
  const std::string msg = error_of([&] { io::load_model(dir); });
  EXPECT_NE(msg.find("model.layers.3."), std::string::npos) << msg;
}

// ModelConfig::parameter_shapes is what the loader checks weight files against before it allocates: it
// must list exactly the parameters the model has, for every architecture of the fixtures (tied or not,
// with Qwen2's biases).
TEST(HfIo, ParameterShapesListTheModelsParameters) {
  model::ModelConfig tied = io::read_model_config(test::model_260k());
  for (const std::string fixture : {"llama_f32", "mistral_f16", "qwen2_f32"}) {
    const auto cfg = io::read_model_config(test::source_path("tests/data/hf/" + fixture));
    for (const auto& c : {cfg, tied}) {
      model::CausalLM m(c);
      std::map<std::string, std::vector<int64_t>> actual, listed;
      for (const auto& item : m->named_parameters()) actual[item.key()] = item.value().sizes().vec();
      for (const auto& [name, shape] : c.parameter_shapes()) listed[name] = shape;
      EXPECT_EQ(actual, listed) << fixture;
      EXPECT_EQ(c.parameter_count(), int64_t(torch::nn::utils::parameters_to_vector(m->parameters()).numel()));
    }
  }
}

// Issue 14, item 15: a config.json describing a model far larger than its weights (hidden_size 2^20) was
// allocated first and died in the allocator; now its size is checked before any allocation.
TEST(HfIo, AbsurdDimensionsFailBeforeAllocating) {
  test::TempDir tmp;
  auto dir = edited_fixture(tmp, [](nlohmann::json& j) {
    j["hidden_size"] = 1 << 20;
    j["intermediate_size"] = 1 << 20;
    j.erase("head_dim");
  });
  const std::string msg = error_of([&] { io::load_model(dir); });
  EXPECT_NE(msg.find(dir + "/config.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("more than this machine's"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  // Dimensions that fit in memory but disagree with the weights: named by the header check.
  test::TempDir tmp2;
  dir = edited_fixture(tmp2, [](nlohmann::json& j) { j["hidden_size"] = 4096; j.erase("head_dim"); });
  const std::string shape = error_of([&] { io::load_model(dir); });
  EXPECT_NE(shape.find("config.json implies"), std::string::npos) << shape;
}

// Token ids from config.json index the embedding: 2^31-1 is refused when the config is read.
TEST(HfIo, TokenIdsOutsideTheVocabularyAreNamed) {
  test::TempDir tmp;
  auto dir = edited_fixture(tmp, [](nlohmann::json& j) { j["bos_token_id"] = 2147483647; });
  std::string msg = error_of([&] { io::load_model(dir); });
  EXPECT_NE(msg.find("bos_token_id = 2147483647 (must be in [0, 96)"), std::string::npos) << msg;
  test::TempDir tmp2;
  dir = edited_fixture(tmp2, [](nlohmann::json& j) { j["eos_token_id"] = {2, 96}; });
  msg = error_of([&] { io::load_model(dir); });
  EXPECT_NE(msg.find("eos_token_id = 96"), std::string::npos) << msg;
}

// A tokenizer file's token id of 2^31-1 once resized the id table to 2^31 strings (std::bad_alloc).
TEST(HfIo, TokenizerIdPastAnyVocabularyIsNamed) {
  test::TempDir tmp;
  auto j = nlohmann::json::parse(core::read_file(test::source_path("tests/data/tokenizer/bpe_small_qwen/tokenizer.json")));
  j["added_tokens"][0]["id"] = 2147483647;
  core::write_file_atomic(tmp.path("tokenizer.json"), j.dump());
  std::string msg = error_of([&] { tokenizer::load_tokenizer(tmp.path("tokenizer.json"), 0); });
  EXPECT_NE(msg.find("has id 2147483647 outside [0, 16777216)"), std::string::npos) << msg;
  j = nlohmann::json::parse(core::read_file(test::source_path("tests/data/tokenizer/bpe_small_qwen/tokenizer.json")));
  j["model"]["vocab"]["a"] = 2147483647;
  core::write_file_atomic(tmp.path("tokenizer.json"), j.dump());
  msg = error_of([&] { tokenizer::load_tokenizer(tmp.path("tokenizer.json"), 0); });
  EXPECT_NE(msg.find("2147483647"), std::string::npos) << msg;
}

TEST(HfIo, MissingWeightsAndDirectory) {
  test::TempDir tmp;
  std::filesystem::create_directories(tmp.path("empty"));
  EXPECT_NE(error_of([&] { io::load_model(tmp.path("empty")); }).find("config.json"), std::string::npos);
  EXPECT_NE(error_of([&] { io::load_model(tmp.path("nope")); }).find("no such file"), std::string::npos);
}

}  // namespace
}  // namespace reglage
