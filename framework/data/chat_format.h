// How "messages" rows become text and tokens: a stage's `chat_template` setting, resolved against the model's
// tokenizer.
//   auto                     the model's own Jinja template (tokenizer_config.json's "chat_template", GGUF's
//                            tokenizer.chat_template), rendered as transformers' apply_chat_template renders it
//   path/to/file.jinja       a Jinja template of one's own, rendered the same way
//   plain | chatml | llama2  reglage's built-in formats (render_chat in sft_data.h)
//
// Jinja templates, as transformers and TRL use them:
//   - the rendered text is tokenized whole, special-token text read as those tokens, nothing added around it
//     (apply_chat_template(tokenize=True) passes add_special_tokens=False): BOS and end-of-turn tokens are
//     whatever the template writes;
//   - the assistant turns to train are found by rendering prefixes of the conversation: turn i is in
//     render(messages[:i+1]); it starts where its content starts (where the same prefix with another content
//     parts from it) and ends where that rendering stops agreeing with the prefix continued by a user message,
//     trailing whitespace dropped: the content and the template's end-of-turn token ("Hi<|im_end|>",
//     "Hi<|eot_id|>", "Hi</s>"), not what a template writes only at the very end (Phi-3.5's eos_token);
//   - when that prefix is not how the whole conversation begins (Mistral's places the system message in the
//     last user turn), the turn's text is looked up in the whole rendering after the turn before;
//   - a token that straddles a turn's boundary counts as part of the turn.
// Built-in formats: each segment is tokenized alone, BOS first when the tokenizer adds one, EOS after each
// assistant turn (part of the turn).
#pragma once
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/chat/chat_setting.h"
#include "framework/tokenizer/tokenizer.h"

namespace reglage::chat {
class ChatTemplate;
}

namespace reglage::data {

using Json = nlohmann::ordered_json;  // rows keep their key order, as Python's json does (templates' tojson)

constexpr size_t kNoTokenLimit = std::numeric_limits<size_t>::max();

using chat::chat_template_choices;
using chat::is_chat_template_setting;

struct ByteSpan {
  size_t begin = 0, end = 0;  // [begin, end)
};

struct RenderedChat {
  std::string text;
  std::vector<ByteSpan> turns;  // bytes of each assistant turn, in order
};

struct ChatTokens {
  std::vector<int64_t> ids;
  std::vector<uint8_t> loss;    // same length; 1 on the assistant turns' tokens
  std::vector<ByteSpan> turns;  // token range of each assistant turn, in order (clipped to ids when cut)
  bool cut = false;             // more than max_tokens: ids is an exact prefix of max_tokens + 1 or more tokens
};

struct ChatPrompt {
  std::string text;           // the prompt as the policy sees it
  std::vector<int64_t> ids;
  bool cut = false;           // more than max_tokens: ids holds an exact prefix of max_tokens + 1 or more
};

class ChatFormat {
 public:
  // Resolves `setting` (a stage's chat_template) against the model's tokenizer. Throws reglage::Error for auto
  // when the tokenizer carries no template (naming the choices), for an unreadable file, for a template that
  // does not parse (file:line:column), and for an unknown setting.
  ChatFormat(const std::string& setting, const tokenizer::Tokenizer& tok);
  ~ChatFormat();
  ChatFormat(ChatFormat&&) noexcept;

  bool is_jinja() const { return jinja_ != nullptr; }
  const std::string& describe() const { return description_; }  // "chatml", "the model's chat template", a path

  // The checks every format needs: a list of objects with a string "role" (system, user or assistant for the
  // built-in formats) and, for the built-in formats, a string "content". Throws Error "messages[i]: ...".
  void check_messages(const Json& messages) const;

  // `tools`: a row's "tools" (a list of JSON tool schemas, as TRL's datasets carry them) handed to a Jinja
  // template as `tools`; null when the row has none. The built-in formats take none.
  // The whole conversation as text, and where its assistant turns are. Throws Error on a template error.
  RenderedChat render_conversation(const Json& messages, const Json& tools = Json()) const;
  // The prompt a policy completes: the conversation (which must not end with an assistant turn) and the
  // assistant header (add_generation_prompt).
  std::string render_prompt(const Json& messages, const Json& tools = Json()) const;

  // Tokens and loss mask of a conversation; encoding stops once more than max_tokens tokens are known.
  ChatTokens encode_conversation(const Json& messages, size_t max_tokens = kNoTokenLimit, const Json& tools = Json()) const;
  ChatPrompt encode_prompt(const Json& messages, size_t max_tokens = kNoTokenLimit, const Json& tools = Json()) const;

 private:
  std::string render_jinja(const Json& messages, const Json& tools, bool add_generation_prompt) const;
  void check_tools(const Json& tools) const;
  std::vector<std::pair<std::string, bool>> builtin_segments(const Json& messages) const;
  std::vector<std::pair<std::string, bool>> builtin_prompt_segments(const Json& messages) const;
  ChatTokens encode_segments(const std::vector<std::pair<std::string, bool>>& segments, size_t max_tokens) const;

  const tokenizer::Tokenizer* tok_;
  std::string builtin_;                        // plain | chatml | llama2; empty for a Jinja template
  std::unique_ptr<chat::ChatTemplate> jinja_;  // parsed once
  std::string bos_text_, eos_text_;            // bos_token / eos_token as the template sees them
  std::string description_;
};

// A ChatFormat made on first use: data readers make it when the first "messages" row needs it, so a stage of
// prompt/completion rows never needs the model to have a chat template.
class LazyChatFormat {
 public:
  LazyChatFormat(std::string setting, const tokenizer::Tokenizer& tok, std::string data_path)
      : setting_(std::move(setting)), tok_(&tok), data_path_(std::move(data_path)) {}
  void at_line(int64_t line) { line_ = line; }  // the row being read, for the message when making the format fails
  const ChatFormat& get();

 private:
  std::string setting_;
  const tokenizer::Tokenizer* tok_;
  std::string data_path_;
  int64_t line_ = 0;
  std::optional<ChatFormat> format_;
};

}  // namespace reglage::data
