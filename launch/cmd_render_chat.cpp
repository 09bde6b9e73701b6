// reglage render-chat (--model PATH [--tokenizer PATH] | --template FILE.jinja) --messages FILE.json [--add-generation-prompt]
//                     [--bos-token S] [--eos-token S] [--date YYYY-MM-DD]
// Prints a conversation rendered by a chat template exactly as transformers' apply_chat_template(tokenize=False)
// renders it: the bytes of the rendering, no newline added. The template is the model's own (its tokenizer
// files: tokenizer_config.json's "chat_template", GGUF's tokenizer.chat_template) or a file; with both, the file
// is rendered with the model's BOS/EOS token strings. --messages holds a JSON list of messages, or an object
// {"messages": [...], "tools": [...]} (tools optional).
#include <iostream>
#include <memory>
#include <optional>

#include "framework/chat/chat_template_render.h"
#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/io/model_io.h"
#include "framework/tokenizer/tokenizer.h"
#include "launch/commands.h"

namespace reglage::launch {
namespace {

const char* kUsage =
    "usage: reglage render-chat (--model PATH [--tokenizer PATH] | --template FILE.jinja) --messages FILE.json\n"
    "                           [--add-generation-prompt] [--bos-token S] [--eos-token S] [--date YYYY-MM-DD]\n"
    "  --model PATH             a .gguf file, a Hugging Face model directory or tokenizer files: its chat template\n"
    "                           and its BOS/EOS token strings\n"
    "  --template FILE.jinja    a chat template of one's own (with --model: rendered with that model's tokens)\n"
    "  --tokenizer PATH         the model's tokenizer when it is not beside / inside the model\n"
    "  --messages FILE.json     a JSON list of {\"role\", \"content\"} messages, or {\"messages\": [...], \"tools\": [...]}\n"
    "  --add-generation-prompt  end with the assistant header the model continues from\n"
    "  --bos-token S, --eos-token S   the token strings the template sees (default: the model's; none without one)\n"
    "  --date YYYY-MM-DD        the date strftime_now reads (default: today, UTC)\n"
    "prints the rendering exactly, with no newline added\n";

// The tokenizer of --model: a model (llama2.c file, Hugging Face directory, GGUF) brings its own, as generate
// finds it (--tokenizer names another); tokenizer files (tokenizer.json, a vocab-only GGUF, tok512.bin) are one.
std::unique_ptr<tokenizer::Tokenizer> model_tokenizer(const std::string& path, const std::string& tokenizer_path) {
  const bool llama2c_bin = !core::is_directory(path) && path.size() > 4 && path.compare(path.size() - 4, 4, ".bin") == 0;
  if (llama2c_bin || !tokenizer_path.empty()) {
    std::optional<model::ModelConfig> cfg;
    try {
      cfg = io::read_model_config(path);
    } catch (const Error&) {  // not a model: a llama2.c tokenizer file itself
      if (tokenizer_path.empty()) return tokenizer::load_tokenizer(path);
      throw;
    }
    return io::load_model_tokenizer(path, tokenizer_path, cfg->vocab_size);
  }
  return tokenizer::load_tokenizer(path);
}

chat::ChatDate parse_date(const std::string& text) {
  chat::ChatDate d;
  char rest = 0;
  if (std::sscanf(text.c_str(), "%d-%d-%d%c", &d.year, &d.month, &d.day, &rest) != 3 || d.month < 1 || d.month > 12 ||
      d.day < 1 || d.day > 31 || d.year < 1 || d.year > 9999)
    fail("--date = '", text, "' (expected YYYY-MM-DD)");
  return d;
}

}  // namespace

int cmd_render_chat(Args& args) {
  if (args.flag("help")) {
    std::cout << kUsage;
    return 0;
  }
  const std::string model_path = args.str("model");
  const std::string template_path = args.str("template");
  const std::string tokenizer_path = args.str("tokenizer");
  const std::string messages_path = args.required("messages");
  chat::ChatRenderOptions options;
  options.add_generation_prompt = args.flag("add-generation-prompt");
  const bool has_bos = args.has("bos-token"), has_eos = args.has("eos-token");
  const std::string bos = args.str("bos-token"), eos = args.str("eos-token");
  const std::string date = args.str("date");
  args.finish();
  if (model_path.empty() && template_path.empty()) fail("give --model PATH or --template FILE.jinja\n", kUsage);

  std::unique_ptr<tokenizer::Tokenizer> tok;
  if (!model_path.empty()) tok = model_tokenizer(model_path, tokenizer_path);
  else if (!tokenizer_path.empty()) fail("--tokenizer needs --model");
  std::string text, name;
  if (!template_path.empty()) {
    text = core::read_file(template_path);
    name = template_path;
  } else {
    text = tok->chat_template();
    name = model_path + " (its chat template)";
    if (text.empty()) fail(model_path, ": the model's tokenizer carries no chat template; pass --template FILE.jinja");
  }
  if (tok && tok->bos_id() >= 0) options.bos_token = tok->token_text(tok->bos_id());
  if (tok && tok->eos_id() >= 0) options.eos_token = tok->token_text(tok->eos_id());
  if (has_bos) options.bos_token = bos;
  if (has_eos) options.eos_token = eos;
  if (!date.empty()) options.date = parse_date(date);

  nlohmann::ordered_json input;
  try {
    input = nlohmann::ordered_json::parse(core::read_file(messages_path));
  } catch (const nlohmann::json::exception& e) {
    fail(messages_path, ": not valid JSON (", e.what(), ")");
  }
  nlohmann::ordered_json messages = input;
  if (input.is_object()) {
    if (!input.contains("messages")) fail(messages_path, ": expected a list of messages or an object with \"messages\"");
    messages = input["messages"];
    if (input.contains("tools")) options.tools = input["tools"];
  }
  if (!messages.is_array())
    fail(messages_path, ": \"messages\" must be a list of messages, got ", messages.type_name());

  const chat::ChatTemplate tmpl(text, name);
  std::cout << tmpl.render(messages, options);
  std::cout.flush();
  return 0;
}

}  // namespace reglage::launch
