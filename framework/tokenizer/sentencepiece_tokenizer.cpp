#include "framework/tokenizer/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/core/file_util.h"

namespace reglage::tokenizer {

namespace {

const std::string kSpace = "\xe2\x96\x81";  // ▁

// Protobuf wire format, just enough to rewrite ModelProto.normalizer_spec (field 3).add_dummy_prefix (field 3).
uint64_t read_varint(const std::string& s, size_t* at, const std::string& path) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*at >= s.size()) fail(path, ": truncated protobuf (not a SentencePiece model)");
    const unsigned char c = static_cast<unsigned char>(s[(*at)++]);
    v |= uint64_t(c & 0x7F) << shift;
    if (!(c & 0x80)) return v;
  }
  fail(path, ": bad protobuf varint (not a SentencePiece model)");
}
void write_varint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}
// Calls visit(field, raw bytes of the whole field, payload of a length-delimited field) for each field of msg.
template <class F>
void for_each_field(const std::string& msg, const std::string& path, F visit) {
  for (size_t at = 0; at < msg.size();) {
    const size_t begin = at;
    const uint64_t tag = read_varint(msg, &at, path);
    std::string payload;
    switch (tag & 7) {
      case 0: read_varint(msg, &at, path); break;
      case 1: at += 8; break;
      case 5: at += 4; break;
      case 2: {
        const uint64_t n = read_varint(msg, &at, path);
        if (n > msg.size() - std::min(at, msg.size())) fail(path, ": truncated protobuf (not a SentencePiece model)");
        payload = msg.substr(at, n);
        at += n;
        break;
      }
      default: fail(path, ": protobuf wire type ", tag & 7, " (not a SentencePiece model)");
    }
    if (at > msg.size()) fail(path, ": truncated protobuf (not a SentencePiece model)");
    visit(tag >> 3, tag & 7, msg.substr(begin, at - begin), payload);
  }
}
std::string without_dummy_prefix(const std::string& proto, const std::string& path) {
  std::string out;
  bool seen = false;
  auto spec_without = [&](const std::string& spec) {
    std::string s;
    for_each_field(spec, path, [&](uint64_t f, uint64_t, const std::string& raw, const std::string&) {
      if (f != 3) s += raw;
    });
    s += std::string("\x18\x00", 2);  // add_dummy_prefix = false
    return s;
  };
  for_each_field(proto, path, [&](uint64_t f, uint64_t wt, const std::string& raw, const std::string& payload) {
    if (f != 3 || wt != 2) {
      out += raw;
      return;
    }
    seen = true;
    const std::string spec = spec_without(payload);
    out.push_back('\x1a');
    write_varint(spec.size(), &out);
    out += spec;
  });
  if (!seen) out += std::string("\x1a\x02\x18\x00", 4);
  return out;
}

std::unique_ptr<sentencepiece::SentencePieceProcessor> load_proto(const std::string& proto, const std::string& path) {
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = sp->LoadFromSerializedProto(proto);
  if (!status.ok()) fail(path, ": not a SentencePiece model (", status.ToString(), ")");
  return sp;
}

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path) : path_(model_path) {
  proto_ = core::read_file(model_path);
  sp_ = load_proto(proto_, model_path);
  sp_bare_ = load_proto(without_dummy_prefix(proto_, model_path), model_path);
  const int n = sp_->GetPieceSize();
  if (n <= 0) fail(model_path, ": SentencePiece model has no pieces");
  pieces_.resize(n);
  special_.resize(n);
  byte_.assign(n, -1);
  for (int i = 0; i < n; ++i) {
    pieces_[i] = sp_->IdToPiece(i);
    special_[i] = sp_->IsControl(i) || sp_->IsUnknown(i);
    if (sp_->IsByte(i)) byte_[i] = std::stoi(pieces_[i].substr(3, 2), nullptr, 16);  // <0xNN>
  }
  bos_id_ = sp_->bos_id();
  eos_id_ = sp_->eos_id();
  unk_id_ = sp_->unk_id();
  if (eos_id_ >= 0) stop_ids_ = {eos_id_};
  add_bos_ = true;  // LlamaTokenizer's default
  for (int64_t id : {bos_id_, eos_id_, unk_id_})
    if (id >= 0) specials_.emplace_back(pieces_[id], id);
  std::sort(specials_.begin(), specials_.end(),
            [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

void SentencePieceTokenizer::load_config(const std::string& dir) {
  const std::string tc_path = core::path_join(dir, "tokenizer_config.json");
  if (!core::file_exists(tc_path)) return;
  nlohmann::json tc;
  try {
    tc = nlohmann::json::parse(core::read_file(tc_path));
  } catch (const nlohmann::json::exception& e) {
    fail(tc_path, ": invalid JSON (", e.what(), ")");
  }
  auto flag = [&](const char* key, bool* v) {
    if (!tc.contains(key)) return;
    if (!tc[key].is_boolean()) fail(tc_path, ": \"", key, "\" must be true or false");
    *v = tc[key].get<bool>();
  };
  flag("add_bos_token", &add_bos_);
  flag("add_eos_token", &add_eos_);
  auto named = [&](const char* key, int64_t* id) {
    if (!tc.contains(key) || tc[key].is_null()) return;
    const nlohmann::json& v = tc[key];
    const std::string name = v.is_object() ? v.value("content", std::string()) : v.is_string() ? v.get<std::string>() : "";
    const int pid = sp_->PieceToId(name);
    if (name.empty() || (pid == unk_id_ && name != pieces_[unk_id_]))
      fail(tc_path, ": ", key, " \"", name, "\" is not a piece of ", path_);
    *id = pid;
  };
  named("bos_token", &bos_id_);
  named("eos_token", &eos_id_);
  if (eos_id_ >= 0) stop_ids_ = {eos_id_};
  if (tc.contains("chat_template") && tc["chat_template"].is_string()) chat_template_ = tc["chat_template"];
}

void SentencePieceTokenizer::encode_into(const std::string& text, size_t max_tokens, std::vector<int64_t>* out) const {
  auto encode_span = [&](size_t b, size_t e) {
    if (b >= e) return out->size() <= max_tokens;
    const std::string span = text.substr(b, e - b);
    // Metaspace "first": the dummy prefix only at the start of the input, and not before a space.
    const bool prefix = b == 0 && span[0] != ' ' && span.compare(0, kSpace.size(), kSpace) != 0;
    std::vector<int> ids;
    const auto status = (prefix ? sp_ : sp_bare_)->Encode(span, &ids);
    if (!status.ok()) fail(path_, ": SentencePiece encode failed (", status.ToString(), ")");
    out->insert(out->end(), ids.begin(), ids.end());
    return out->size() <= max_tokens;
  };
  size_t start = 0;
  for (size_t pos = 0; pos < text.size();) {
    const std::pair<std::string, int64_t>* hit = nullptr;
    if (text[pos] == '<')
      for (const auto& s : specials_)
        if (text.compare(pos, s.first.size(), s.first) == 0) {
          hit = &s;
          break;
        }
    if (!hit) {
      ++pos;
      continue;
    }
    if (!encode_span(start, pos)) return;
    out->push_back(hit->second);
    if (out->size() > max_tokens) return;
    pos = start = pos + hit->first.size();
  }
  encode_span(start, text.size());
}

std::vector<int64_t> SentencePieceTokenizer::encode(const std::string& text, bool add_bos, bool add_eos) const {
  std::vector<int64_t> ids;
  if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
  encode_into(text, SIZE_MAX, &ids);
  if (add_eos && eos_id_ >= 0) ids.push_back(eos_id_);
  return ids;
}

std::vector<int64_t> SentencePieceTokenizer::encode_prefix(const std::string& text, size_t max_tokens) const {
  std::vector<int64_t> ids;
  encode_into(text, max_tokens, &ids);
  if (ids.size() > max_tokens) ids.resize(max_tokens + 1);
  return ids;
}

// Pieces with ▁ as spaces, <0xNN> as raw bytes, control and unknown pieces as nothing (skip_special_tokens).
std::string SentencePieceTokenizer::join(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab_size()) fail(path_, ": token id ", id, " outside [0, ", vocab_size(), ")");
    if (special_[id]) continue;
    if (byte_[id] >= 0) {
      out += static_cast<char>(byte_[id]);
      continue;
    }
    const std::string& p = pieces_[id];
    for (size_t at = 0;;) {
      const size_t hit = p.find(kSpace, at);
      out.append(p, at, hit == std::string::npos ? std::string::npos : hit - at);
      if (hit == std::string::npos) break;
      out += ' ';
      at = hit + kSpace.size();
    }
  }
  return out;
}

std::string SentencePieceTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string s = join(ids);
  if (!s.empty() && s[0] == ' ') s.erase(0, 1);  // the dummy prefix (LlamaTokenizer's Strip decoder)
  return s;
}

std::string SentencePieceTokenizer::decode_piece(int64_t prev_token, int64_t token) const {
  if (prev_token < 0 || prev_token == bos_id_ || prev_token >= vocab_size()) return decode({token});
  return join({token});
}

void SentencePieceTokenizer::save_hf(const std::string& dir) const {
  std::filesystem::create_directories(dir);
  auto name = [&](int64_t id) { return id < 0 ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(pieces_[id]); };
  nlohmann::ordered_json config = {{"tokenizer_class", "LlamaTokenizer"},
                                   {"add_bos_token", add_bos_},
                                   {"add_eos_token", add_eos_},
                                   {"bos_token", name(bos_id_)},
                                   {"eos_token", name(eos_id_)},
                                   {"unk_token", name(unk_id_)},
                                   {"legacy", false},
                                   {"clean_up_tokenization_spaces", false}};
  if (!chat_template_.empty()) config["chat_template"] = chat_template_;
  nlohmann::ordered_json special = {{"bos_token", name(bos_id_)}, {"eos_token", name(eos_id_)}, {"unk_token", name(unk_id_)}};
  core::write_file_atomic(core::path_join(dir, "tokenizer.model"), proto_);
  core::write_file_atomic(core::path_join(dir, "tokenizer_config.json"), config.dump(2) + "\n");
  core::write_file_atomic(core::path_join(dir, "special_tokens_map.json"), special.dump(2) + "\n");
}

}  // namespace reglage::tokenizer
