// ChatFormat: a stage's chat_template resolved against the model's tokenizer; conversations and prompts
// rendered and tokenized with the loss on the assistant turns (see chat_format.h for the rules).
#include "framework/data/chat_format.h"

#include <algorithm>

#include "framework/chat/chat_template_render.h"
#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/data/sft_data.h"

namespace reglage::data {
namespace {

size_t common_prefix(const std::string& a, const std::string& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

size_t common_prefix(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

// End of a turn's text: trailing whitespace (the newline after "<|im_end|>") is not part of the turn.
size_t trim_end(const std::string& text, size_t begin, size_t end) {
  while (end > begin && (text[end - 1] == ' ' || text[end - 1] == '\n' || text[end - 1] == '\t' || text[end - 1] == '\r'))
    --end;
  return end;
}

Json first_messages(const Json& messages, size_t n) {
  Json out = Json::array();
  for (size_t i = 0; i < n; ++i) out.push_back(messages[i]);
  return out;
}

std::vector<int64_t> encode_limited(const tokenizer::Tokenizer& tok, const std::string& text, size_t max_tokens) {
  if (max_tokens == kNoTokenLimit) return tok.encode(text, /*add_bos=*/false, /*add_eos=*/false);
  return tok.encode_prefix(text, max_tokens);
}

}  // namespace

ChatFormat::ChatFormat(const std::string& setting, const tokenizer::Tokenizer& tok) : tok_(&tok) {
  if (tok.bos_id() >= 0) bos_text_ = tok.token_text(tok.bos_id());
  if (tok.eos_id() >= 0) eos_text_ = tok.token_text(tok.eos_id());
  if (chat::is_builtin_chat_format(setting)) {
    builtin_ = setting;
    description_ = setting;
    return;
  }
  if (setting == "auto") {
    if (tok.chat_template().empty())
      fail("chat_template: auto, but the model's tokenizer carries no chat template (no \"chat_template\" in "
           "tokenizer_config.json, no tokenizer.chat_template in the GGUF file); set chat_template to plain, chatml, "
           "llama2 or a path to a .jinja file");
    description_ = "the model's chat template";
    jinja_ = std::make_unique<chat::ChatTemplate>(tok.chat_template(), description_);
    return;
  }
  if (!is_chat_template_setting(setting))
    fail("chat_template = \"", setting, "\" (expected ", chat_template_choices(), ")");
  if (!core::file_exists(setting) || core::is_directory(setting))
    fail("chat_template = ", setting, ": no such file (expected a Jinja chat template)");
  description_ = setting;
  jinja_ = std::make_unique<chat::ChatTemplate>(core::read_file(setting), setting);
}

ChatFormat::~ChatFormat() = default;
ChatFormat::ChatFormat(ChatFormat&&) noexcept = default;

void ChatFormat::check_messages(const Json& messages) const {
  if (!messages.is_array()) fail("\"messages\" must be an array, got ", messages.type_name());
  for (size_t i = 0; i < messages.size(); ++i) {
    const Json& m = messages[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) fail(where, " must be an object, got ", m.type_name());
    auto role = m.find("role");
    if (role == m.end()) fail(where, ": missing \"role\"");
    if (!role->is_string()) fail(where, ": \"role\" must be a string, got ", role->type_name());
    if (jinja_) continue;  // the template decides which roles and fields it takes
    const std::string r = role->get<std::string>();
    auto content = m.find("content");
    if (content == m.end()) fail(where, ": missing \"content\"");
    if (!content->is_string()) fail(where, ": \"content\" must be a string, got ", content->type_name());
    if (r != "system" && r != "user" && r != "assistant")
      fail(where, ": unknown role \"", r, "\" (expected system, user or assistant)");
  }
}

void ChatFormat::check_tools(const Json& tools) const {
  if (tools.is_null()) return;
  if (!tools.is_array()) fail("\"tools\" must be a list of tool schemas, got ", tools.type_name());
  if (!jinja_) fail("\"tools\" needs a Jinja chat template (chat_template: auto or a .jinja file), not ", builtin_);
}

std::string ChatFormat::render_jinja(const Json& messages, const Json& tools, bool add_generation_prompt) const {
  chat::ChatRenderOptions options;
  options.tools = tools;
  options.add_generation_prompt = add_generation_prompt;
  options.bos_token = bos_text_;
  options.eos_token = eos_text_;
  return jinja_->render(messages, options);
}

std::vector<std::pair<std::string, bool>> ChatFormat::builtin_segments(const Json& messages) const {
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const auto& m : messages) pairs.emplace_back(m["role"].get<std::string>(), m["content"].get<std::string>());
  return render_chat(builtin_, pairs);
}

RenderedChat ChatFormat::render_conversation(const Json& messages, const Json& tools) const {
  check_messages(messages);
  check_tools(tools);
  RenderedChat out;
  if (!jinja_) {
    for (const auto& [text, is_assistant] : builtin_segments(messages)) {
      if (is_assistant) out.turns.push_back({out.text.size(), out.text.size() + text.size()});
      out.text += text;
    }
    return out;
  }
  out.text = render_jinja(messages, tools, false);
  size_t searched_from = 0;  // turns are found in order
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i]["role"] != "assistant") continue;
    const std::string where = "messages[" + std::to_string(i) + "]";
    std::string upto, marked, continued;
    Json with_marker = first_messages(messages, i + 1);
    with_marker[i]["content"] = "\x01";  // a content no real text starts with
    try {
      upto = render_jinja(first_messages(messages, i + 1), tools, false);
      marked = render_jinja(with_marker, tools, false);
    } catch (const Error& e) {
      fail(where, ": rendering the conversation up to this assistant turn, to find its tokens: ", e.what());
    }
    // The turn starts where its content does: where the rendering with another content parts from this one.
    const size_t start = common_prefix(upto, marked);
    // What a template writes only at the very end (Phi-3.5's closing eos_token) is not the turn's: the turn ends
    // where the rendering stops agreeing with the same conversation continued by a user message.
    size_t end = upto.size();
    try {
      Json more = first_messages(messages, i + 1);
      more.push_back(Json{{"role", "user"}, {"content", "x"}});
      continued = render_jinja(more, tools, false);
      size_t agree = common_prefix(upto, continued);
      // "</s>" and "<|user|>" agree on "<": a special token's opening bracket shared by what follows the turn
      // in both renderings is not the turn's.
      while (agree < upto.size() && agree > start && std::string("<[{").find(upto[agree - 1]) != std::string::npos)
        --agree;
      if (agree > start) end = agree;
    } catch (const Error&) {
      // a template that refuses the continuation: the turn runs to the end of its rendering
    }
    end = trim_end(upto, start, end);
    ByteSpan span;
    if (out.text.compare(0, end, upto, 0, end) == 0 && start >= searched_from) {
      span = {start, end};
    } else {  // earlier turns render differently once later ones follow: find this turn after the one before
      const std::string turn = upto.substr(start, end - start);
      const size_t at = out.text.find(turn, searched_from);
      if (at == std::string::npos)
        fail(where, ": ", description_, " renders this assistant turn differently within the whole conversation (",
             "its text \"", turn.substr(0, 80), "\" is not found there), so its tokens cannot be told apart");
      span = {at, at + turn.size()};
    }
    out.turns.push_back(span);
    searched_from = span.end;
  }
  return out;
}

std::string ChatFormat::render_prompt(const Json& messages, const Json& tools) const {
  check_messages(messages);
  check_tools(tools);
  if (messages.empty()) fail("\"messages\" is empty (a prompt needs at least one message)");
  if (messages.back()["role"] == "assistant")
    fail("\"messages\" ends with an assistant turn (a prompt ends where the assistant is to answer)");
  if (jinja_) return render_jinja(messages, tools, true);
  std::string text;
  for (const auto& segment : builtin_prompt_segments(messages)) text += segment.first;
  return text;
}

// The segments before an empty assistant turn appended to the conversation: the prompt and the assistant header.
std::vector<std::pair<std::string, bool>> ChatFormat::builtin_prompt_segments(const Json& messages) const {
  Json with_answer = messages;
  with_answer.push_back({{"role", "assistant"}, {"content", ""}});
  auto segments = builtin_segments(with_answer);
  size_t last_assistant = segments.size();
  for (size_t i = 0; i < segments.size(); ++i)
    if (segments[i].second) last_assistant = i;
  segments.resize(last_assistant);
  return segments;
}

// Built-in formats: BOS when the tokenizer adds one, then each segment encoded alone; EOS closes each assistant
// turn. Encoding stops once more than max_tokens tokens are known.
ChatTokens ChatFormat::encode_segments(const std::vector<std::pair<std::string, bool>>& segments,
                                       size_t max_tokens) const {
  ChatTokens out;
  const auto over = [&] { return max_tokens != kNoTokenLimit && out.ids.size() > max_tokens; };
  if (tok_->add_bos()) {
    out.ids.push_back(tok_->bos_id());
    out.loss.push_back(0);
  }
  for (const auto& [text, is_assistant] : segments) {
    if (out.cut) break;
    const size_t begin = out.ids.size();
    const size_t room = max_tokens == kNoTokenLimit ? kNoTokenLimit : max_tokens - std::min(max_tokens, begin);
    if (!text.empty()) {
      const auto ids = encode_limited(*tok_, text, room);
      out.ids.insert(out.ids.end(), ids.begin(), ids.end());
      out.loss.insert(out.loss.end(), ids.size(), is_assistant ? 1 : 0);
      out.cut = over();
    }
    if (is_assistant && !out.cut && tok_->eos_id() >= 0) {
      out.ids.push_back(tok_->eos_id());
      out.loss.push_back(1);
      out.cut = over();
    }
    if (is_assistant) out.turns.push_back({begin, out.ids.size()});
  }
  return out;
}

ChatTokens ChatFormat::encode_conversation(const Json& messages, size_t max_tokens, const Json& tools) const {
  if (!jinja_) {
    check_messages(messages);
    check_tools(tools);
    return encode_segments(builtin_segments(messages), max_tokens);
  }
  ChatTokens out;
  const RenderedChat chat = render_conversation(messages, tools);
  out.ids = encode_limited(*tok_, chat.text, max_tokens);
  out.cut = max_tokens != kNoTokenLimit && out.ids.size() > max_tokens;
  out.loss.assign(out.ids.size(), 0);
  // Token index of a byte boundary: the tokens of the text before it, where they agree with the whole text's.
  const auto token_at = [&](size_t byte, bool is_end) -> size_t {
    if (byte == 0) return 0;
    if (byte >= chat.text.size() && !out.cut) return out.ids.size();
    const auto before = tok_->encode_prefix(chat.text.substr(0, byte), out.ids.size());
    const size_t k = common_prefix(before, out.ids);
    if (k == before.size() || !is_end) return std::min(k, out.ids.size());
    return std::min(k + 1, out.ids.size());  // the token at k straddles the end: it belongs to the turn
  };
  for (const ByteSpan& span : chat.turns) {
    const size_t begin = token_at(span.begin, false), end = std::max(begin, token_at(span.end, true));
    for (size_t t = begin; t < end; ++t) out.loss[t] = 1;
    out.turns.push_back({begin, end});
  }
  return out;
}

ChatPrompt ChatFormat::encode_prompt(const Json& messages, size_t max_tokens, const Json& tools) const {
  ChatPrompt out;
  out.text = render_prompt(messages, tools);
  if (jinja_) {
    out.ids = encode_limited(*tok_, out.text, max_tokens);
    out.cut = max_tokens != kNoTokenLimit && out.ids.size() > max_tokens;
    return out;
  }
  const ChatTokens tokens = encode_segments(builtin_prompt_segments(messages), max_tokens);
  out.ids = tokens.ids;
  out.cut = tokens.cut;
  return out;
}

const ChatFormat& LazyChatFormat::get() {
  if (!format_) {
    try {
      format_.emplace(setting_, *tok_);
    } catch (const Error& e) {
      if (line_ > 0) fail(data_path_, ":", line_, ": a \"messages\" row needs a chat template: ", e.what());
      fail(data_path_, ": a conversation needs a chat template: ", e.what());
    }
  }
  return *format_;
}

}  // namespace reglage::data
