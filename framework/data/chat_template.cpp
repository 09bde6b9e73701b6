// Chat templates: messages -> (text, is_assistant) segments. The loader tokenizes each segment on its own,
// puts the loss on assistant segments and appends EOS (loss 1) after each of them.
//   plain : "System: {content}\n" / "User: {content}\n", then "Assistant:" closes the prompt part;
//           the assistant segment is " {content}".
//   chatml: "<|im_start|>{role}\n{content}<|im_end|>\n"; the "<|im_start|>assistant\n" header is prompt,
//           the assistant segment is "{content}<|im_end|>" and its trailing "\n" starts the next prompt part.
//   llama2: "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]" (the <<SYS>> block only when a system
//           message precedes that user turn), then the assistant segment " {assistant} ".
// Consecutive non-assistant pieces are merged into one segment, so each prompt part is encoded once.
#include <string>
#include <utility>
#include <vector>

#include "framework/core/error.h"
#include "framework/data/sft_data.h"

namespace reglage::data {
namespace {

using Segments = std::vector<std::pair<std::string, bool>>;

// Appends prompt text, merging with a preceding prompt segment.
void add_prompt(Segments& out, const std::string& text) {
  if (text.empty()) return;
  if (!out.empty() && !out.back().second) out.back().first += text;
  else out.emplace_back(text, false);
}

void check_role(const std::string& role) {
  if (role != "system" && role != "user" && role != "assistant")
    fail("unknown role \"", role, "\" (expected system, user or assistant)");
}

Segments render_plain(const std::vector<std::pair<std::string, std::string>>& messages) {
  Segments out;
  for (const auto& [role, content] : messages) {
    if (role == "assistant") {
      add_prompt(out, "Assistant:");
      out.emplace_back(" " + content, true);
    } else {
      add_prompt(out, (role == "system" ? "System: " : "User: ") + content + "\n");
    }
  }
  return out;
}

Segments render_chatml(const std::vector<std::pair<std::string, std::string>>& messages) {
  Segments out;
  for (const auto& [role, content] : messages) {
    add_prompt(out, "<|im_start|>" + role + "\n");
    if (role == "assistant") {
      out.emplace_back(content + "<|im_end|>", true);
      add_prompt(out, "\n");
    } else {
      add_prompt(out, content + "<|im_end|>\n");
    }
  }
  return out;
}

Segments render_llama2(const std::vector<std::pair<std::string, std::string>>& messages) {
  Segments out;
  std::string system, user;  // pending parts of the next [INST] block
  bool pending = false;
  auto flush = [&]() {
    if (!pending) return;
    std::string inst = "[INST] ";
    if (!system.empty()) inst += "<<SYS>>\n" + system + "\n<</SYS>>\n\n";
    inst += user + " [/INST]";
    add_prompt(out, inst);
    system.clear();
    user.clear();
    pending = false;
  };
  for (const auto& [role, content] : messages) {
    if (role == "assistant") {
      pending = true;  // an assistant turn without a user turn still gets its [INST] block
      flush();
      out.emplace_back(" " + content + " ", true);
    } else {
      std::string& part = role == "system" ? system : user;
      if (!part.empty()) part += "\n";  // several messages of one kind before an answer: one per line
      part += content;
      pending = true;
    }
  }
  flush();  // trailing non-assistant messages: prompt text without an answer
  return out;
}

}  // namespace

std::vector<std::pair<std::string, bool>> render_chat(const std::string& chat_template,
                                                      const std::vector<std::pair<std::string, std::string>>& messages) {
  for (const auto& m : messages) check_role(m.first);
  if (chat_template == "plain") return render_plain(messages);
  if (chat_template == "chatml") return render_chatml(messages);
  if (chat_template == "llama2") return render_llama2(messages);
  fail("unknown chat template \"", chat_template, "\" (expected plain, chatml or llama2)");
}

}  // namespace reglage::data
