// BpeTokenizer's loaders: vocab.json + merges.txt, tokenizer.json (model, steps, added tokens, post-processor),
// and the special ids and flags of a Hugging Face model directory.
#include <algorithm>
#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/tokenizer/bpe_tokenizer.h"

namespace reglage::tokenizer {

using json = nlohmann::json;

namespace {

// A token name in a config: a plain string, {"content": ...}, or null (none).
bool token_name(const json& v, std::string* name) {
  if (v.is_string()) {
    *name = v.get<std::string>();
    return true;
  }
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    *name = v["content"].get<std::string>();
    return true;
  }
  return false;
}

json parse_json_file(const std::string& path) {
  try {
    return json::parse(core::read_file(path));
  } catch (const json::exception& e) {
    fail(path, ": invalid JSON (", e.what(), ")");
  }
}

// tokenizer_config.json classes whose constructor rebuilds the post-processor from add_bos_token /
// add_eos_token (defaults true / false), as transformers 4.x LlamaTokenizerFast does.
bool rebuilds_template(const std::string& tokenizer_class) {
  return tokenizer_class == "LlamaTokenizer" || tokenizer_class == "LlamaTokenizerFast" ||
         tokenizer_class == "CodeLlamaTokenizer" || tokenizer_class == "CodeLlamaTokenizerFast";
}

}  // namespace

// The loaders below are function-try-blocks: a JSON value of the wrong type (nlohmann's type_error,
// out_of_range) becomes a reglage::Error naming the file, like every other problem.
std::unique_ptr<BpeTokenizer> BpeTokenizer::from_vocab_merges(const std::string& vocab_path,
                                                              const std::string& merges_path) try {
  std::unique_ptr<BpeTokenizer> tok(new BpeTokenizer());
  const json vocab = parse_json_file(vocab_path);
  if (!vocab.is_object()) fail(vocab_path, ": expected a JSON object mapping token -> id");
  std::vector<std::pair<std::string, int64_t>> entries;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) fail(vocab_path, ": token \"", it.key(), "\" has a non-integer id");
    entries.emplace_back(it.key(), it.value().get<int64_t>());
  }
  tok->set_vocab(vocab_path, std::move(entries));

  const std::string text = core::read_file(merges_path);
  size_t line_no = 0;
  for (size_t at = 0; at < text.size();) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(at, end - at);
    at = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
      fail(merges_path, ":", line_no, ": expected \"left right\", got \"", line, "\"");
    tok->add_merge(merges_path, line.substr(0, space), line.substr(space + 1));
  }
  tok->pre_tokenizer_.set_gpt2_byte_level();
  tok->decoder_.set_byte_level();
  tok->finish(merges_path);
  return tok;
} catch (const json::exception& e) {
  fail(vocab_path, ": unexpected content (", e.what(), ")");
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_parts(const Parts& parts) {
  std::unique_ptr<BpeTokenizer> tok(new BpeTokenizer());
  tok->set_vocab(parts.source, parts.vocab);
  tok->added_.clear();  // set_vocab's <|endoftext|> default: the parts say which tokens are added
  tok->added_first_byte_ = {};
  for (const auto& [left, right] : parts.merges) tok->add_merge(parts.source, left, right);
  for (const Parts::Added& a : parts.added) tok->add_token(a.content, a.id, a.special);
  // The family's Split regexes, then ByteLevel without its own regex: written as tokenizer.json would say it.
  json steps = json::array();
  for (const std::string& r : parts.split_regexes)
    steps.push_back({{"type", "Split"}, {"pattern", {{"Regex", r}}}, {"behavior", "Isolated"}, {"invert", false}});
  steps.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}});
  tok->pre_tokenizer_.parse({{"type", "Sequence"}, {"pretokenizers", steps}}, parts.source + ": pre-tokenizer");
  tok->decoder_.set_byte_level();
  tok->ignore_merges_ = parts.ignore_merges;
  for (int64_t id : {parts.bos_id, parts.eos_id})
    if (id >= tok->vocab_size())
      fail(parts.source, ": special token id ", id, " is outside the vocabulary of ", tok->vocab_size());
  tok->bos_id_ = parts.bos_id;
  tok->eos_id_ = parts.eos_id;
  tok->add_bos_ = parts.add_bos;
  tok->add_eos_ = parts.add_eos;
  tok->has_post_processor_ = true;
  tok->stop_ids_ = parts.stop_ids;
  tok->chat_template_ = parts.chat_template;
  tok->finish(parts.source);
  return tok;
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_tokenizer_json(const std::string& path) {
  return from_tokenizer_json_value(parse_json_file(path), path);
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_tokenizer_json_value(const json& j, const std::string& path) try {
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) fail(path, ": no \"model\" object");
  const json& model = j["model"];
  const std::string type = model.value("type", std::string("BPE"));
  if (type != "BPE") fail(path, ": model.type \"", type, "\" is not supported (only BPE)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty())
      fail(path, ": model.", key, " is set; only BPE without subword affixes is supported");
  if (model.contains("dropout") && model["dropout"].is_number() && model["dropout"].get<double>() > 0)
    fail(path, ": model.dropout is set; inference tokenizers must be deterministic");

  std::unique_ptr<BpeTokenizer> tok(new BpeTokenizer());
  if (!model.contains("vocab") || !model["vocab"].is_object()) fail(path, ": model.vocab is missing or not an object");
  std::vector<std::pair<std::string, int64_t>> entries;
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    if (!it.value().is_number_integer()) fail(path, ": model.vocab[\"", it.key(), "\"] is not an integer");
    entries.emplace_back(it.key(), it.value().get<int64_t>());
  }
  tok->set_vocab(path, std::move(entries));
  tok->ignore_merges_ = model.value("ignore_merges", false);
  tok->byte_fallback_ = model.value("byte_fallback", false);
  tok->fuse_unk_ = model.value("fuse_unk", false);
  if (model.contains("unk_token") && !model["unk_token"].is_null()) {
    const std::string unk = model["unk_token"].get<std::string>();
    auto it = tok->token_to_id_.find(unk);
    if (it == tok->token_to_id_.end()) fail(path, ": model.unk_token \"", unk, "\" is not in model.vocab");
    tok->unk_id_ = it->second;
  }

  // Merges are "left right" strings (older files) or [left, right] pairs (tokenizers >= 0.20).
  if (model.contains("merges")) {
    if (!model["merges"].is_array()) fail(path, ": model.merges is not an array");
    for (const json& m : model["merges"]) {
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
          fail(path, ": merge ", tok->merge_list_.size(), " \"", s, "\" is not \"left right\"");
        tok->add_merge(path, s.substr(0, space), s.substr(space + 1));
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        tok->add_merge(path, m[0].get<std::string>(), m[1].get<std::string>());
      } else {
        fail(path, ": merge ", tok->merge_list_.size(), " is neither \"left right\" nor [left, right]");
      }
    }
  }

  const json null;
  tok->normalizer_.parse(j.contains("normalizer") ? j["normalizer"] : null, path + ": normalizer");
  tok->pre_tokenizer_.parse(j.contains("pre_tokenizer") ? j["pre_tokenizer"] : null, path + ": pre_tokenizer");
  tok->decoder_.parse(j.contains("decoder") ? j["decoder"] : null, path + ": decoder");

  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const json& t : j["added_tokens"]) {
      if (!t.contains("id") || !t.contains("content")) fail(path, ": an added_tokens entry lacks id or content");
      AddedToken a;
      a.content = t["content"].get<std::string>();
      a.id = t["id"].get<int64_t>();
      a.special = t.value("special", false);
      a.lstrip = t.value("lstrip", false);
      a.rstrip = t.value("rstrip", false);
      a.single_word = t.value("single_word", false);
      a.normalized = t.value("normalized", !a.special);
      tok->add_token(std::move(a));
    }
  }
  // Re-apply the <|endoftext|> default now that added tokens are known (Qwen2 lists it only there).
  tok->default_specials();
  if (j.contains("post_processor") && !j["post_processor"].is_null())
    tok->parse_post_processor(j["post_processor"], path + ": post_processor");
  tok->finish(path);
  return tok;
} catch (const json::exception& e) {
  fail(path, ": unexpected content (", e.what(), ")");
}

// The post-processor is what transformers' add_special_tokens=True adds: at most one token before the text
// (BOS) and one after (EOS).
void BpeTokenizer::parse_post_processor(const json& j, const std::string& where) {
  const std::string type = j.value("type", std::string());
  has_post_processor_ = true;
  if (type == "Sequence") {
    for (const json& p : j.at("processors")) parse_post_processor(p, where);
  } else if (type == "ByteLevel") {
    // offsets only
  } else if (type == "TemplateProcessing") {
    const json& single = j.at("single");
    std::vector<int64_t> before, after;
    bool seen_text = false;
    for (const json& item : single) {
      if (item.contains("Sequence")) {
        seen_text = true;
        continue;
      }
      const std::string name = item.at("SpecialToken").at("id").get<std::string>();
      const json& spec = j.at("special_tokens").at(name);
      for (const json& id : spec.at("ids")) (seen_text ? after : before).push_back(id.get<int64_t>());
    }
    if (!seen_text || before.size() > 1 || after.size() > 1)
      fail(where, ": TemplateProcessing single template adds ", before.size(), " token(s) before and ", after.size(),
           " after $A; supported: at most one BOS before and one EOS after");
    add_bos_ = !before.empty();
    add_eos_ = !after.empty();
    if (add_bos_) bos_id_ = before[0];
    if (add_eos_) eos_id_ = after[0];
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {  // [cls] $A [sep]
    add_bos_ = add_eos_ = true;
    bos_id_ = j.at("cls").at(1).get<int64_t>();
    eos_id_ = j.at("sep").at(1).get<int64_t>();
  } else {
    fail(where, " type \"", type, "\" is not supported (supported: TemplateProcessing, ByteLevel, RobertaProcessing, ",
         "BertProcessing, Sequence)");
  }
  for (int64_t id : {bos_id_, eos_id_})
    if (id >= vocab_size()) fail(where, ": special token id ", id, " is outside the vocabulary of ", vocab_size());
}

void BpeTokenizer::set_special_ids(int64_t bos_id, int64_t eos_id) {
  for (int64_t id : {bos_id, eos_id})
    if (id < -1 || id >= vocab_size())
      fail(source_, ": special token id ", id, " is outside the vocabulary of ", vocab_size());
  bos_id_ = bos_id;
  eos_id_ = eos_id;
  stop_ids_.clear();
  if (eos_id >= 0) stop_ids_.push_back(eos_id);
}

void BpeTokenizer::load_special_ids(const std::string& dir) try {
  const std::string tc_path = core::path_join(dir, "tokenizer_config.json");
  const std::string cfg_path = core::path_join(dir, "config.json");
  const std::string gen_path = core::path_join(dir, "generation_config.json");
  bool have_bos = false, have_eos = false;
  std::vector<int64_t> stops;
  auto resolve = [&](const std::string& file, const std::string& name) {
    const int64_t id = token_id(name);
    if (id < 0) fail(file, ": token \"", name, "\" is not in the vocabulary");
    return id;
  };
  // The ids the post-processor adds stay what it says, whatever the config names BOS/EOS.
  const int64_t template_bos = has_post_processor_ && add_bos_ ? bos_id_ : -1;
  const int64_t template_eos = has_post_processor_ && add_eos_ ? eos_id_ : -1;
  bool flags_from_config = false;

  if (core::file_exists(tc_path)) {
    const json tc = parse_json_file(tc_path);
    // Added tokens declared only here (vocab.json + merges.txt dirs such as Qwen2's).
    if (tc.contains("added_tokens_decoder") && tc["added_tokens_decoder"].is_object()) {
      for (auto it = tc["added_tokens_decoder"].begin(); it != tc["added_tokens_decoder"].end(); ++it) {
        AddedToken a;
        try {
          a.id = std::stoll(it.key());
        } catch (const std::exception&) {
          fail(tc_path, ": added_tokens_decoder key \"", it.key(), "\" is not an id");
        }
        if (!token_name(it.value(), &a.content)) fail(tc_path, ": added_tokens_decoder[", it.key(), "] has no content");
        if (token_to_id_.count(a.content) != 0) continue;
        a.special = it.value().value("special", false);
        a.lstrip = it.value().value("lstrip", false);
        a.rstrip = it.value().value("rstrip", false);
        a.single_word = it.value().value("single_word", false);
        a.normalized = it.value().value("normalized", !a.special);
        add_token(std::move(a));
      }
    }
    // Whether encoding adds BOS / EOS: the tokenizer.json post-processor decides (PreTrainedTokenizerFast);
    // without one (vocab.json + merges.txt), or for classes that rebuild it, add_bos_token / add_eos_token do.
    const std::string cls = tc.value("tokenizer_class", std::string());
    if (rebuilds_template(cls)) {
      flags_from_config = true;
      add_bos_ = tc.contains("add_bos_token") && tc["add_bos_token"].is_boolean() ? tc["add_bos_token"].get<bool>() : true;
      add_eos_ = tc.contains("add_eos_token") && tc["add_eos_token"].is_boolean() ? tc["add_eos_token"].get<bool>() : false;
    } else if (!has_post_processor_) {
      flags_from_config = true;
      if (tc.contains("add_bos_token") && tc["add_bos_token"].is_boolean()) add_bos_ = tc["add_bos_token"].get<bool>();
      if (tc.contains("add_eos_token") && tc["add_eos_token"].is_boolean()) add_eos_ = tc["add_eos_token"].get<bool>();
    }
    // The chat template: a string, or a list of {name, template} where "default" is the one transformers uses.
    if (tc.contains("chat_template")) {
      const json& ct = tc["chat_template"];
      if (ct.is_string()) {
        chat_template_ = ct.get<std::string>();
      } else if (ct.is_array()) {
        for (const json& t : ct)
          if (t.is_object() && t.value("name", "") == "default" && t.contains("template") && t["template"].is_string())
            chat_template_ = t["template"].get<std::string>();
      } else if (!ct.is_null()) {
        fail(tc_path, ": \"chat_template\" must be a string or a list of {name, template}, got ", ct.type_name());
      }
    }
    // Named special tokens are matched whole in the text, as transformers registers them.
    std::string name;
    if (tc.contains("bos_token")) {
      have_bos = true;
      bos_id_ = token_name(tc["bos_token"], &name) ? resolve(tc_path, name) : -1;
      if (bos_id_ >= 0) add_token(name, bos_id_, true);
    }
    if (tc.contains("eos_token")) {
      have_eos = true;
      eos_id_ = token_name(tc["eos_token"], &name) ? resolve(tc_path, name) : -1;
      if (eos_id_ >= 0) add_token(name, eos_id_, true);
      if (eos_id_ >= 0) stops.push_back(eos_id_);
    }
  }
  if (!flags_from_config) {
    if (template_bos >= 0) bos_id_ = template_bos;
    if (template_eos >= 0) eos_id_ = template_eos;
  }
  // config.json and generation_config.json: ids; an eos_token_id list means several stop tokens.
  for (const std::string& file : {cfg_path, gen_path}) {
    if (!core::file_exists(file)) continue;
    const json c = parse_json_file(file);
    if (!have_bos && template_bos < 0 && c.contains("bos_token_id") && c["bos_token_id"].is_number_integer()) {
      have_bos = true;
      bos_id_ = c["bos_token_id"].get<int64_t>();
    }
    if (c.contains("eos_token_id")) {
      std::vector<int64_t> ids;
      if (c["eos_token_id"].is_number_integer())
        ids.push_back(c["eos_token_id"].get<int64_t>());
      else if (c["eos_token_id"].is_array())
        for (const json& v : c["eos_token_id"])
          if (v.is_number_integer()) ids.push_back(v.get<int64_t>());
      if (!have_eos && template_eos < 0 && !ids.empty()) {
        have_eos = true;
        eos_id_ = ids[0];
      }
      stops.insert(stops.end(), ids.begin(), ids.end());
    }
  }
  for (int64_t id : {bos_id_, eos_id_})
    if (id >= vocab_size()) fail(dir, ": special token id ", id, " is outside the vocabulary of ", vocab_size());
  if (have_eos || !stops.empty() || eos_id_ >= 0) {
    stop_ids_.clear();
    if (eos_id_ >= 0) stop_ids_.push_back(eos_id_);
    for (int64_t id : stops) {
      if (id < 0 || id >= vocab_size())
        fail(dir, ": stop token id ", id, " is outside the vocabulary of ", vocab_size());
      if (std::find(stop_ids_.begin(), stop_ids_.end(), id) == stop_ids_.end()) stop_ids_.push_back(id);
    }
  }
} catch (const json::exception& e) {
  fail(dir, ": unexpected content in tokenizer_config.json / config.json / generation_config.json (", e.what(), ")");
}

}  // namespace reglage::tokenizer
