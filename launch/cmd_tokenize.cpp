// reglage tokenize --model PATH (--text T | --text-file F) [--add-special auto|yes|no] [--parse-special yes|no]
// reglage tokenize --model PATH --text-file F --separator S   [the same options]
// reglage tokenize --model PATH --decode "IDS"
// reglage tokenize --model PATH --save-hf DIR   the tokenizer as Hugging Face files (tokenizer.json, ...)
// Text to token ids (one line, space-separated) or ids to text, with the tokenizer of PATH: a GGUF file (its
// tokenizer.ggml.* metadata), a Hugging Face model directory or tokenizer.json, or a llama2.c tokenizer.bin.
// --decode writes the text's exact bytes with no newline added, so a round trip through files is byte-exact.
// --separator S encodes each part of the text between separators (C escapes \n \t \\ allowed; one at the very
// end ends the last part) and prints one line per part: llama.cpp's vocab tests are such files.
#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/tokenizer/tokenizer.h"
#include "launch/commands.h"

namespace reglage::launch {

namespace {

const char* kUsage =
    "usage: reglage tokenize --model PATH (--text T | --text-file F) [--add-special auto|yes|no]\n"
    "                        [--parse-special yes|no]\n"
    "       reglage tokenize --model PATH --decode \"IDS\"\n"
    "       reglage tokenize --model PATH --save-hf DIR\n"
    "  --model PATH       a .gguf file, a Hugging Face model directory, a tokenizer.json or a llama2.c tokenizer\n"
    "  --text T           the text to encode; --text-file F reads it from a file (bytes as they are)\n"
    "  --add-special      auto (default): BOS/EOS as the model's tokenizer adds them; yes: BOS and EOS; no: none\n"
    "  --parse-special    no (default, as llama.cpp's tokenizer tests): special-token text such as <s> is read as\n"
    "                     plain characters; yes: it becomes that token\n"
    "  --separator S      encode each part between separators S (\\n, \\t, \\\\ understood); one line per part\n"
    "  --decode \"IDS\"     space-separated token ids; prints their text, exact bytes, no newline added\n"
    "  --save-hf DIR      write the tokenizer as Hugging Face files (tokenizer.json, tokenizer_config.json, ...)\n"
    "prints the ids on one line, space-separated\n";

bool yes_no(const std::string& flag, const std::string& value) {
  if (value == "yes") return true;
  if (value == "no") return false;
  fail("--", flag, " = '", value, "' (expected yes or no)");
}

// The separator with \n, \t and \\ turned into the characters.
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    const char c = s[++i];
    if (c == 'n') out += '\n';
    else if (c == 't') out += '\t';
    else if (c == '\\') out += '\\';
    else fail("--separator: unknown escape '\\", c, "' (expected \\n, \\t or \\\\)");
  }
  return out;
}

// The parts of text between separators; a separator at the very end ends the last part.
std::vector<std::string> split_parts(const std::string& text, const std::string& sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t at; (at = text.find(sep, start)) != std::string::npos; start = at + sep.size())
    parts.push_back(text.substr(start, at - start));
  if (start < text.size() || parts.empty()) parts.push_back(text.substr(start));
  return parts;
}

std::vector<int64_t> parse_ids(const std::string& text, int64_t vocab_size) {
  std::vector<int64_t> ids;
  std::istringstream in(text);
  std::string word;
  while (in >> word) {
    char* end = nullptr;
    errno = 0;
    const long long id = std::strtoll(word.c_str(), &end, 10);
    if (*end != '\0' || errno) fail("--decode: '", word, "' is not an integer token id");
    if (id < 0 || id >= vocab_size)
      fail("--decode: token id ", id, " is outside the vocabulary [0, ", vocab_size, ")");
    ids.push_back(id);
  }
  return ids;
}

}  // namespace

int cmd_tokenize(Args& args) {
  if (args.flag("help")) {
    std::cout << kUsage;
    return 0;
  }
  const std::string model_path = args.required("model");
  const bool has_text = args.has("text"), has_file = args.has("text-file"), has_decode = args.has("decode"),
             has_save = args.has("save-hf");
  const std::string save_dir = args.str("save-hf");
  const std::string text_arg = args.str("text");
  const std::string text_file = args.str("text-file");
  const std::string decode_arg = args.str("decode");
  const std::string separator = unescape(args.str("separator"));
  const bool has_separator = args.has("separator");
  const std::string add_special = args.str("add-special", "auto");
  const bool parse_special = yes_no("parse-special", args.str("parse-special", "no"));
  args.finish();
  if (int(has_text) + int(has_file) + int(has_decode) + int(has_save) != 1)
    fail("give exactly one of --text, --text-file, --decode and --save-hf (see reglage tokenize --help)");
  if (has_separator && (has_decode || separator.empty())) fail("--separator needs a non-empty value and --text or --text-file");
  if (add_special != "auto" && add_special != "yes" && add_special != "no")
    fail("--add-special = '", add_special, "' (expected auto, yes or no)");

  auto tok = tokenizer::load_tokenizer(model_path);
  if (has_save) {
    if (core::file_exists(save_dir) && !core::is_directory(save_dir))
      fail("--save-hf ", save_dir, " exists and is not a directory");
    tok->save_hf(save_dir);
    return 0;
  }
  if (has_decode) {
    const std::string text = tok->decode(parse_ids(decode_arg, tok->vocab_size()));
    std::cout.write(text.data(), std::streamsize(text.size()));
    std::cout.flush();
    return 0;
  }
  const std::string text = has_file ? core::read_file(text_file) : text_arg;
  const bool add_bos = add_special == "auto" ? tok->add_bos() : add_special == "yes";
  const bool add_eos = add_special == "auto" ? tok->add_eos() : add_special == "yes";
  std::string out;
  for (const std::string& part : has_separator ? split_parts(text, separator) : std::vector<std::string>{text}) {
    const std::vector<int64_t> ids = tok->encode_special(part, add_bos, add_eos, parse_special);
    for (size_t i = 0; i < ids.size(); ++i) out += (i ? " " : "") + std::to_string(ids[i]);
    out += "\n";
  }
  std::cout << out;
  return 0;
}

}  // namespace reglage::launch
