// The reglage executable end to end: greedy text equal to llama2.c's, logits files equal to the reference,
// and bad input answered with exactly one line on stderr and a non-zero exit.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "framework/core/error_line.h"
#include "framework/io/model_io.h"
#include "framework/lora/adapter.h"
#include "test_util.h"

namespace reglage {
namespace {

using test::run_reglage;
using test::source_path;

std::string quoted(const std::string& s) { return "'" + s + "'"; }

std::string reference_ids() {
  std::string ids = core::read_file(source_path("tests/data/reference/ref_logits_once_upon_a_time_64.tokens.txt"));
  ids = ids.substr(ids.find(':') + 1);
  while (!ids.empty() && (ids.back() == '\n' || ids.back() == ' ')) ids.pop_back();
  return ids;
}

// A failed command: exit code 1 and a single line on stderr that contains every `needles` entry.
void expect_one_line_error(const test::CommandResult& r, const std::vector<std::string>& needles) {
  EXPECT_EQ(r.exit_code, 1) << r.err;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "more than one line: " << r.err;
  for (const auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << "missing '" << n << "' in " << r.err;
}

TEST(Cli, GreedyTextEqualsLlama2c) {
  for (const auto& model : {test::model_260k(), test::model_260k_v1()}) {
    auto r = run_reglage("generate --model " + quoted(model) + " --tokenizer " + quoted(test::tok_512()) +
                         " --prompt 'Once upon a time' --max-new-tokens 60 --temperature 0");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, core::read_file(source_path("tests/data/reference/ref_once_upon_a_time_n64.txt")));
  }
}

TEST(Cli, TokenizerIsFoundBesideTheModel) {
  auto r = run_reglage("generate --model " + quoted(test::model_260k()) +
                       " --prompt 'Once upon a time' --max-new-tokens 60 --temperature 0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, core::read_file(source_path("tests/data/reference/ref_once_upon_a_time_n64.txt")));
}

TEST(Cli, LogitsFileMatchesReference) {
  test::TempDir tmp;
  auto ref = test::read_ref_logits(source_path("tests/data/reference/ref_logits_once_upon_a_time_64.bin"));
  for (const std::string mode : {"", " --incremental"}) {
    auto r = run_reglage("logits --model " + quoted(test::model_260k_v1()) + " --ids '" + reference_ids() +
                         "' --out " + tmp.path("l.bin") + mode);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto got = test::read_ref_logits(tmp.path("l.bin"));
    EXPECT_EQ(got.ids, ref.ids);
    EXPECT_LT(test::max_abs_diff(got.logits, ref.logits), 1e-4) << mode;
  }
}

TEST(Cli, BatchPromptsFileAndJson) {
  test::TempDir tmp;
  core::write_file_atomic(tmp.path("p.jsonl"), "{\"prompt\": \"Once upon a time\"}\n\n{\"prompt\": \"The dog\"}\n");
  auto r = run_reglage("generate --model " + quoted(test::model_260k()) + " --prompts " + tmp.path("p.jsonl") +
                       " --max-new-tokens 60 --temperature 0 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto first_line = r.out.substr(0, r.out.find('\n'));
  // The batched first prompt still yields llama2.c's greedy text.
  std::string ref = core::read_file(source_path("tests/data/reference/ref_once_upon_a_time_n64.txt"));
  ref = ref.substr(std::string("Once upon a time").size());
  ref.pop_back();  // run.c's final newline
  auto j = nlohmann::json::parse(first_line);
  EXPECT_EQ(j["text"].get<std::string>(), ref);
  EXPECT_EQ(j["ids"].size(), j["logprobs"].size());
}

TEST(Cli, ConvertWritesAHuggingFaceDirectory) {
  test::TempDir tmp;
  auto r = run_reglage("convert --model " + quoted(test::model_260k()) + " --out " + tmp.path("hf"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                        "tokenizer_config.json", "tokenizer.bin"})
    EXPECT_TRUE(core::file_exists(tmp.path("hf/") + f)) << f;
  // The directory generates exactly what the llama2.c file does.
  auto g = run_reglage("generate --model " + tmp.path("hf") + " --prompt 'Once upon a time' --max-new-tokens 60 "
                       "--temperature 0");
  ASSERT_EQ(g.exit_code, 0) << g.err;
  EXPECT_EQ(g.out, core::read_file(source_path("tests/data/reference/ref_once_upon_a_time_n64.txt")));
}

TEST(Cli, UnknownFlag) {
  auto r = run_reglage("generate --model " + quoted(test::model_260k()) + " --prompt hi --temprature 0");
  expect_one_line_error(r, {"--temprature", "did you mean --temperature"});
  expect_one_line_error(run_reglage("frobnicate"), {"unknown command 'frobnicate'"});
}

TEST(Cli, MissingAndCorruptModel) {
  test::TempDir tmp;
  expect_one_line_error(run_reglage("generate --model /nonexistent/m.bin --prompt hi"), {"/nonexistent/m.bin"});
  const std::string bytes = core::read_file(test::model_260k());
  core::write_file_atomic(tmp.path("cut.bin"), bytes.substr(0, bytes.size() / 3));
  expect_one_line_error(run_reglage("generate --model " + tmp.path("cut.bin") + " --prompt hi"),
                        {tmp.path("cut.bin"), "truncated"});
  core::write_file_atomic(tmp.path("junk.bin"), std::string(1000, '\xff'));
  expect_one_line_error(run_reglage("logits --model " + tmp.path("junk.bin") + " --ids 1 --out " + tmp.path("o")),
                        {tmp.path("junk.bin")});
}

TEST(Cli, HostileSafetensors) {
  test::TempDir tmp;
  std::filesystem::create_directories(tmp.path("m"));
  std::filesystem::copy_file(source_path("tests/data/hf/llama_f32/config.json"), tmp.path("m/config.json"));
  // header length 2^62: must be refused before any allocation
  std::string bytes(8, '\0');
  const uint64_t huge = uint64_t(1) << 62;
  std::memcpy(&bytes[0], &huge, 8);
  core::write_file_atomic(tmp.path("m/model.safetensors"), bytes + "{}");
  expect_one_line_error(run_reglage("logits --model " + tmp.path("m") + " --ids 1 --out " + tmp.path("o")),
                        {"model.safetensors", "header"});
  // offsets beyond the data
  const std::string header = R"({"model.embed_tokens.weight":{"dtype":"F32","shape":[96,32],"data_offsets":[0,12288]}})";
  std::string file(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(&file[0], &n, 8);
  core::write_file_atomic(tmp.path("m/model.safetensors"), file + header + std::string(100, '\0'));
  expect_one_line_error(run_reglage("logits --model " + tmp.path("m") + " --ids 1 --out " + tmp.path("o")),
                        {"model.safetensors", "model.embed_tokens.weight"});
}

// ---- one line for every escaping error (issue 14, items 15 and 16) --------------------------------

// c10::Error::what() carries "Exception raised from ..." and a 20-odd line backtrace; main prints the
// first line of what_without_backtrace(). bad_alloc becomes a sentence.
TEST(ErrorLine, TorchErrorsLoseTheirBacktraceAndBadAllocIsASentence) {
  try {
    torch::ones({2, 3}).matmul(torch::ones({2, 3}));
    ADD_FAILURE() << "no error";
  } catch (const c10::Error& e) {
    const std::string line = core::error_line(e);
    EXPECT_EQ(line.find('\n'), std::string::npos) << line;
    EXPECT_NE(line.find("cannot be multiplied"), std::string::npos) << line;
    EXPECT_EQ(line.find("Exception raised from"), std::string::npos) << line;
  }
  const std::string oom = core::error_line(std::bad_alloc());
  EXPECT_NE(oom.find("out of memory"), std::string::npos) << oom;
  EXPECT_EQ(core::error_line(std::runtime_error("first\nsecond")), "first");
  EXPECT_EQ(core::error_line(Error("a reglage error")), "a reglage error");
}

// `reglage run DIR` said "basic_filebuf::underflow error reading the file: Is a directory", without the path.
TEST(Cli, RunOnADirectoryNamesIt) {
  test::TempDir tmp;
  expect_one_line_error(run_reglage("run " + tmp.path()), {tmp.path(), "is a directory"});
  core::write_file_atomic(tmp.path("locked.yaml"), "run_dir: x\n");
  std::filesystem::permissions(tmp.path("locked.yaml"), std::filesystem::perms::none);
  if (::geteuid() != 0)  // root reads any file
    expect_one_line_error(run_reglage("run " + tmp.path("locked.yaml")), {tmp.path("locked.yaml"), "Permission denied"});
}

// batch_size 1000000 ended in std::bad_alloc (or the OOM killer) at the first forward; now the micro-step's
// activations are estimated against the machine's memory before training, and the stage is named.
TEST(Cli, BatchThatCannotFitInMemoryIsRefusedBeforeTraining) {
  test::TempDir tmp;
  core::write_file_atomic(tmp.path("train.jsonl"), "{\"prompt\": \"Once upon\", \"completion\": \" a time\"}\n");
  core::write_file_atomic(tmp.path("p.yaml"), "run_dir: " + tmp.path("run") + "\n"
                                              "model: {path: " + test::model_260k() + "}\n"
                                              "stages:\n"
                                              "  - {name: sft, type: sft, data: " + tmp.path("train.jsonl") +
                                              ", max_steps: 1, batch_size: 1000000}\n");
  const auto r = run_reglage("run " + tmp.path("p.yaml"));
  expect_one_line_error(r, {"stage 'sft'", "1000000 sequences", "more than this machine's", "lower batch_size"});
}

// --threads 100000 hung creating the pool; bounded like the pipeline's threads key.
TEST(Cli, AbsurdThreadCountIsRefused) {
  expect_one_line_error(run_reglage("generate --model " + quoted(test::model_260k()) + " --prompt hi --threads 100000"),
                        {"--threads = 100000", "[0, 1024]"});
}

TEST(Cli, UnknownArchitecture) {
  test::TempDir tmp;
  std::filesystem::create_directories(tmp.path("m"));
  auto cfg = nlohmann::json::parse(core::read_file(source_path("tests/data/hf/llama_f32/config.json")));
  cfg["architectures"] = {"FalconForCausalLM"};
  core::write_file_atomic(tmp.path("m/config.json"), cfg.dump());
  expect_one_line_error(run_reglage("logits --model " + tmp.path("m") + " --ids 1 --out " + tmp.path("o")),
                        {"config.json", "FalconForCausalLM", "not supported"});
}

TEST(Cli, AdapterThatDoesNotFit) {
  test::TempDir tmp;
  auto small = io::load_model(source_path("tests/data/hf/llama_f32"));
  lora::LoraConfig c;
  lora::add_adapter(small, "x", c, 1);
  lora::save_peft(small, "x", tmp.path("adapter"));
  expect_one_line_error(run_reglage("generate --model " + quoted(test::model_260k()) + " --adapter " +
                                    tmp.path("adapter") + " --prompt hi"),
                        {"adapter_model.safetensors", "has shape"});
  expect_one_line_error(run_reglage("generate --model " + quoted(test::model_260k()) + " --adapter " +
                                    tmp.path("missing") + " --prompt hi"),
                        {tmp.path("missing")});
}

TEST(Cli, AdapterChangesGeneration) {
  test::TempDir tmp;
  auto m = io::load_model(test::model_260k());
  lora::LoraConfig c;
  c.targets = {"all-linear"};
  lora::add_adapter(m, "x", c, 1);
  {
    torch::NoGradGuard no_grad;
    torch::manual_seed(0);
    for (auto& [path, layer] : m->linear_layers()) layer->adapter("x").B.normal_(0.0, 0.2);
  }
  lora::save_peft(m, "x", tmp.path("adapter"));
  const std::string base_cmd = "generate --model " + quoted(test::model_260k()) +
                               " --prompt 'Once upon a time' --max-new-tokens 30 --temperature 0";
  auto base = run_reglage(base_cmd);
  auto adapted = run_reglage(base_cmd + " --adapter " + tmp.path("adapter"));
  ASSERT_EQ(adapted.exit_code, 0) << adapted.err;
  EXPECT_NE(base.out, adapted.out);
}

}  // namespace
}  // namespace reglage
