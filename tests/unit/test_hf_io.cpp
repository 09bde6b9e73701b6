// Hugging Face directories written by reglage load back bit-identically; config.json problems are named.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/io/model_io.h"
#include "framework/io/safetensors.h"
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

TEST(HfIo, MissingWeightsAndDirectory) {
  test::TempDir tmp;
  std::filesystem::create_directories(tmp.path("empty"));
  EXPECT_NE(error_of([&] { io::load_model(tmp.path("empty")); }).find("config.json"), std::string::npos);
  EXPECT_NE(error_of([&] { io::load_model(tmp.path("nope")); }).find("no such file"), std::string::npos);
}

}  // namespace
}  // namespace reglage
