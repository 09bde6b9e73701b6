// tokenizer.model (SentencePiece ModelProto) -> the tokenizer.json transformers would build -> BpeTokenizer.
#include "framework/tokenizer/sentencepiece_model.h"

#include <cstring>
#include <unordered_map>

#include "framework/core/error.h"
#include "framework/core/file_util.h"

namespace reglage::tokenizer {

using json = nlohmann::json;

namespace {

const char* const kSpace = "\xe2\x96\x81";  // ▁

// Protobuf wire format, just what ModelProto needs: varints (0), fixed64 (1), length-delimited (2), fixed32 (5).
struct ProtoField {
  uint32_t number = 0;
  uint32_t wire = 0;
  uint64_t varint = 0;   // wire 0; wire 1/5: the raw little-endian bits
  std::string bytes;     // wire 2: the payload
};

class ProtoReader {
 public:
  ProtoReader(const std::string& data, const std::string& path, const char* what)
      : data_(data), path_(path), what_(what) {}
  bool done() const { return at_ >= data_.size(); }

  ProtoField next() {
    ProtoField f;
    const uint64_t tag = varint();
    f.number = static_cast<uint32_t>(tag >> 3);
    f.wire = static_cast<uint32_t>(tag & 7);
    if (f.number == 0 || (tag >> 3) > 0x1FFFFFFF) bad("field number ", tag >> 3);
    switch (f.wire) {
      case 0: f.varint = varint(); break;
      case 1: f.varint = fixed(8); break;
      case 5: f.varint = fixed(4); break;
      case 2: {
        const uint64_t n = varint();
        if (n > data_.size() - at_)
          bad("field ", f.number, " is ", n, " bytes long, only ", data_.size() - at_, " left");
        f.bytes = data_.substr(at_, n);
        at_ += n;
        break;
      }
      default: bad("field ", f.number, " has wire type ", f.wire, " (expected 0, 1, 2 or 5)");
    }
    return f;
  }

  // Checks that a field has the wire type the schema gives it.
  void expect(const ProtoField& f, uint32_t wire, const char* name) const {
    if (f.wire != wire) bad(name, " (field ", f.number, ") has wire type ", f.wire, ", expected ", wire);
  }

  template <typename... Parts>
  [[noreturn]] void bad(const Parts&... parts) const {
    fail(path_, ": not a valid SentencePiece model: ", what_, " at byte ", at_, ": ", parts...);
  }

 private:
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      if (at_ >= data_.size()) bad("truncated varint");
      const unsigned char c = static_cast<unsigned char>(data_[at_++]);
      if (shift == 63 && c > 1) bad("varint longer than 64 bits");
      v |= uint64_t(c & 0x7F) << shift;
      if (!(c & 0x80)) return v;
    }
    bad("varint longer than 10 bytes");
  }
  uint64_t fixed(size_t n) {
    if (n > data_.size() - at_) bad("truncated fixed", 8 * n, " value");
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t(static_cast<unsigned char>(data_[at_ + i])) << (8 * i);
    at_ += n;
    return v;
  }

  const std::string& data_;
  const std::string& path_;
  const char* what_;
  size_t at_ = 0;
};

SpmPiece parse_piece(const std::string& bytes, const std::string& path, size_t index) {
  const std::string what = "pieces[" + std::to_string(index) + "]";
  ProtoReader r(bytes, path, what.c_str());
  SpmPiece p;
  bool has_piece = false;
  while (!r.done()) {
    const ProtoField f = r.next();
    if (f.number == 1) {
      r.expect(f, 2, "piece");
      p.piece = f.bytes;
      has_piece = true;
    } else if (f.number == 2) {
      r.expect(f, 5, "score");
      const uint32_t bits = static_cast<uint32_t>(f.varint);
      std::memcpy(&p.score, &bits, sizeof(bits));
    } else if (f.number == 3) {
      r.expect(f, 0, "type");
      if (f.varint < kSpmNormal || f.varint > kSpmByte) r.bad("type ", f.varint, " (expected 1..6)");
      p.type = static_cast<int32_t>(f.varint);
    }
  }
  if (!has_piece || p.piece.empty()) r.bad("empty piece");
  return p;
}

void parse_trainer_spec(const std::string& bytes, const std::string& path, SpmModel* m) {
  ProtoReader r(bytes, path, "trainer_spec");
  while (!r.done()) {
    const ProtoField f = r.next();
    auto int32 = [&](const char* name) {
      r.expect(f, 0, name);
      return static_cast<int32_t>(static_cast<uint32_t>(f.varint));  // negative ids are sign-extended varints
    };
    switch (f.number) {
      case 3: m->model_type = int32("model_type"); break;
      case 35: r.expect(f, 0, "byte_fallback"); m->byte_fallback = f.varint != 0; break;
      case 40: m->unk_id = int32("unk_id"); break;
      case 41: m->bos_id = int32("bos_id"); break;
      case 42: m->eos_id = int32("eos_id"); break;
      default: break;  // training options: not needed to encode
    }
  }
}

void parse_normalizer_spec(const std::string& bytes, const std::string& path, SpmModel* m) {
  ProtoReader r(bytes, path, "normalizer_spec");
  while (!r.done()) {
    const ProtoField f = r.next();
    if (f.number == 3) {
      r.expect(f, 0, "add_dummy_prefix");
      m->add_dummy_prefix = f.varint != 0;
    }
  }
}

const char* model_type_name(int32_t t) {
  switch (t) {
    case 1: return "UNIGRAM";
    case 2: return "BPE";
    case 3: return "WORD";
    case 4: return "CHAR";
    default: return "unknown";
  }
}

json read_config(const std::string& path) {
  try {
    return json::parse(core::read_file(path));
  } catch (const json::exception& e) {
    fail(path, ": invalid JSON (", e.what(), ")");
  }
}

}  // namespace

SpmModel parse_spm_model(const std::string& bytes, const std::string& path) {
  SpmModel m;
  ProtoReader r(bytes, path, "ModelProto");
  while (!r.done()) {
    const ProtoField f = r.next();
    if (f.number == 1) {
      r.expect(f, 2, "pieces");
      m.pieces.push_back(parse_piece(f.bytes, path, m.pieces.size()));
    } else if (f.number == 2) {
      r.expect(f, 2, "trainer_spec");
      parse_trainer_spec(f.bytes, path, &m);
    } else if (f.number == 3) {
      r.expect(f, 2, "normalizer_spec");
      parse_normalizer_spec(f.bytes, path, &m);
    }
  }
  if (m.pieces.empty()) fail(path, ": not a valid SentencePiece model: no pieces");
  if (m.model_type != 2)
    fail(path, ": SentencePiece model_type ", model_type_name(m.model_type), " (", m.model_type,
         ") is not supported (only BPE, 2)");
  const int64_t n = static_cast<int64_t>(m.pieces.size());
  std::unordered_map<std::string, size_t> seen;
  for (size_t i = 0; i < m.pieces.size(); ++i) {
    auto [it, fresh] = seen.emplace(m.pieces[i].piece, i);
    if (!fresh) fail(path, ": piece \"", m.pieces[i].piece, "\" appears twice (ids ", it->second, " and ", i, ")");
  }
  if (m.unk_id < 0 || m.unk_id >= n)
    fail(path, ": trainer_spec.unk_id ", m.unk_id, " is outside the ", n, " pieces");
  if (m.pieces[m.unk_id].type != kSpmUnknown)
    fail(path, ": trainer_spec.unk_id ", m.unk_id, " names piece \"", m.pieces[m.unk_id].piece,
         "\", which is not of type UNKNOWN");
  for (const auto& [name, id] : {std::pair<const char*, int32_t>{"bos_id", m.bos_id}, {"eos_id", m.eos_id}})
    if (id < -1 || id >= n) fail(path, ": trainer_spec.", name, " ", id, " is outside the ", n, " pieces");
  return m;
}

SpmModel read_spm_model(const std::string& path) { return parse_spm_model(core::read_file(path), path); }

std::vector<std::pair<std::string, std::string>> spm_merges(const SpmModel& model) {
  std::unordered_map<std::string, int64_t> vocab;  // piece -> id (pieces are unique: parse_spm_model checks)
  for (size_t i = 0; i < model.pieces.size(); ++i) vocab[model.pieces[i].piece] = static_cast<int64_t>(i);
  struct Candidate {
    int64_t merged_id;
    size_t left_len;
    std::string left, right;
  };
  std::vector<Candidate> all;
  for (size_t i = 0; i < model.pieces.size(); ++i) {
    const std::string& p = model.pieces[i].piece;
    // Splits at character boundaries (UTF-8 continuation bytes are 10xxxxxx), shortest left part first.
    for (size_t cut = 1; cut < p.size(); ++cut) {
      if ((static_cast<unsigned char>(p[cut]) & 0xC0) == 0x80) continue;
      std::string left = p.substr(0, cut), right = p.substr(cut);
      if (vocab.count(left) && vocab.count(right)) all.push_back({static_cast<int64_t>(i), cut, left, right});
    }
  }
  // Candidates are already in (merged id, left length) order: pieces in id order, cuts left to right.
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(all.size());
  for (Candidate& c : all) merges.emplace_back(std::move(c.left), std::move(c.right));
  return merges;
}

json spm_to_tokenizer_json(const SpmModel& model, const SpmConvertOptions& options) {
  json vocab = json::object();
  for (size_t i = 0; i < model.pieces.size(); ++i) vocab[model.pieces[i].piece] = static_cast<int64_t>(i);
  json merges = json::array();
  for (const auto& [l, r] : spm_merges(model)) merges.push_back(json::array({l, r}));

  // Control pieces are special added tokens, user-defined ones plain added tokens, the unknown piece special.
  json added = json::array();
  for (size_t i = 0; i < model.pieces.size(); ++i) {
    const SpmPiece& p = model.pieces[i];
    if (p.type != kSpmControl && p.type != kSpmUserDefined && p.type != kSpmUnknown) continue;
    added.push_back({{"id", static_cast<int64_t>(i)}, {"content", p.piece}, {"single_word", false},
                     {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                     {"special", p.type != kSpmUserDefined}});
  }

  // _get_prepend_scheme: "first" unless legacy, "never" without a prefix space.
  const std::string scheme = !options.add_prefix_space ? "never" : options.legacy ? "always" : "first";
  json decoders = json::array({{{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}},
                               {{"type", "ByteFallback"}},
                               {{"type", "Fuse"}}});
  if (options.add_prefix_space) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});

  json single = json::array(), pair = json::array(), special_tokens = json::object();
  auto special_item = [&](int32_t id, int type_id) {
    const std::string& n = model.pieces[id].piece;
    special_tokens[n] = {{"id", n}, {"ids", {id}}, {"tokens", {n}}};
    return json{{"SpecialToken", {{"id", n}, {"type_id", type_id}}}};
  };
  for (int seq = 0; seq < 2; ++seq) {
    json& t = seq == 0 ? single : pair;
    for (int part = 0; part <= seq; ++part) {
      if (options.add_bos && model.bos_id >= 0) t.push_back(special_item(model.bos_id, part));
      t.push_back({{"Sequence", {{"id", part == 0 ? "A" : "B"}, {"type_id", part}}}});
      if (options.add_eos && model.eos_id >= 0) t.push_back(special_item(model.eos_id, part));
    }
  }

  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "Metaspace"}, {"replacement", kSpace}, {"prepend_scheme", scheme}, {"split", false}}},
          {"post_processor",
           {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", special_tokens}}},
          {"decoder", {{"type", "Sequence"}, {"decoders", decoders}}},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", model.pieces[model.unk_id].piece},
            {"fuse_unk", true},
            {"byte_fallback", model.byte_fallback},
            {"ignore_merges", false},
            {"vocab", vocab},
            {"merges", merges}}}};
}

std::unique_ptr<BpeTokenizer> load_sentencepiece_model(const std::string& model_path, const std::string& dir) {
  const SpmModel model = read_spm_model(model_path);
  SpmConvertOptions options;
  const std::string tc_path = core::path_join(dir, "tokenizer_config.json");
  if (core::file_exists(tc_path)) {
    const json tc = read_config(tc_path);
    if (!tc.is_object()) fail(tc_path, ": expected a JSON object");
    auto flag = [&](const char* key, bool* v) {
      if (!tc.contains(key) || tc[key].is_null()) return;
      if (!tc[key].is_boolean()) fail(tc_path, ": \"", key, "\" must be true, false or null, got ", tc[key].dump());
      *v = tc[key].get<bool>();
    };
    flag("legacy", &options.legacy);
    flag("add_prefix_space", &options.add_prefix_space);
    flag("add_bos_token", &options.add_bos);
    flag("add_eos_token", &options.add_eos);
  }
  auto tok = BpeTokenizer::from_tokenizer_json_value(spm_to_tokenizer_json(model, options), model_path);
  tok->set_special_ids(model.bos_id, model.eos_id);  // LlamaTokenizer's <s> and </s>, unless the configs say otherwise
  tok->load_special_ids(dir);
  return tok;
}

}  // namespace reglage::tokenizer
