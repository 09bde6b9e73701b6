// SFT data: JSONL rows -> token ids with a loss mask; the per-epoch shuffle; sharding and padding.
#include "framework/data/sft_data.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <random>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/data/chat_format.h"

namespace reglage::data {
namespace {

// A row that is wrong in itself (bad JSON, fields, roles, no loss tokens): skippable with skip_bad_rows.
struct BadRow {
  std::string problem;
};

std::string string_field(const Json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end()) throw BadRow{std::string("missing \"") + key + "\""};
  if (!it->is_string()) throw BadRow{std::string("\"") + key + "\" must be a string, got " + it->type_name()};
  return it->get<std::string>();
}

// Appends the tokens of one piece of text with the given loss flag (no BOS/EOS of its own). Tokens past
// max_seq_len + 1 in the row are cut or refused anyway, so the text is encoded only that far (*cut set).
void append_text(SftExample& ex, const tokenizer::Tokenizer& tok, const std::string& text, uint8_t loss,
                 int64_t max_seq_len, bool* cut) {
  if (text.empty() || *cut) return;
  const int64_t room = max_seq_len - int64_t(ex.ids.size());
  if (room < 0) {  // an EOS already went past max_seq_len
    *cut = true;
    return;
  }
  const auto ids = tok.encode_prefix(text, size_t(room));
  *cut = int64_t(ids.size()) > room;
  for (int64_t id : ids) {
    ex.ids.push_back(id);
    ex.loss.push_back(loss);
  }
}

void append_eos(SftExample& ex, const tokenizer::Tokenizer& tok) {
  if (tok.eos_id() < 0) return;  // a tokenizer without EOS: the completion just ends
  ex.ids.push_back(tok.eos_id());
  ex.loss.push_back(1);
}

// True when some token after position 0 has loss (position 0 is never a target).
bool has_loss_tokens(const SftExample& ex) {
  return ex.loss.size() > 1 && std::find(ex.loss.begin() + 1, ex.loss.end(), 1) != ex.loss.end();
}

// One parsed JSON row -> ids and loss mask; *cut: the row has more than max_seq_len tokens and ids holds
// only its first max_seq_len + 1 or more. Throws BadRow.
SftExample tokenize_row(const Json& row, const tokenizer::Tokenizer& tok, const SftDataOptions& opt,
                        LazyChatFormat& chat, bool* cut) {
  if (!row.is_object()) throw BadRow{std::string("row must be a JSON object, got ") + row.type_name()};
  const bool has_pc = row.contains("prompt") || row.contains("completion");
  const bool has_messages = row.contains("messages");
  if (has_pc && has_messages) throw BadRow{"row has both \"prompt\"/\"completion\" and \"messages\" (give one form)"};
  if (!has_pc && !has_messages) throw BadRow{"row has neither \"prompt\" + \"completion\" nor \"messages\""};

  SftExample ex;
  if (has_pc) {
    if (tok.add_bos()) {
      ex.ids.push_back(tok.bos_id());
      ex.loss.push_back(0);
    }
    const std::string prompt = string_field(row, "prompt");
    const std::string completion = string_field(row, "completion");
    append_text(ex, tok, prompt, 0, opt.max_seq_len, cut);
    append_text(ex, tok, completion, 1, opt.max_seq_len, cut);
    if (!*cut) append_eos(ex, tok);  // a cut row keeps only its exact first tokens
  } else {
    const Json& messages = row["messages"];
    const ChatFormat& format = chat.get();  // a config problem, not the row's: not skipped
    ChatTokens tokens;
    try {
      format.check_messages(messages);
      const bool any_assistant = std::any_of(messages.begin(), messages.end(),
                                             [](const Json& m) { return m["role"] == "assistant"; });
      if (!any_assistant) throw BadRow{"\"messages\" has no assistant turn"};
      tokens = format.encode_conversation(messages, size_t(opt.max_seq_len), row.value("tools", Json()));
    } catch (const Error& e) {
      throw BadRow{e.what()};
    }
    ex.ids = std::move(tokens.ids);
    ex.loss = std::move(tokens.loss);
    *cut = tokens.cut;
  }
  // A cut row is judged by the length check (too long, or what truncation keeps).
  if (!*cut && !has_loss_tokens(ex)) throw BadRow{"row has no completion tokens to learn"};
  return ex;
}

}  // namespace

SftDataset load_sft_jsonl(const std::string& path, const tokenizer::Tokenizer& tok, const SftDataOptions& opt) {
  // Options first: a wrong template or length should not wait for the whole file.
  if (opt.max_seq_len <= 0) fail("sft data ", path, ": max_seq_len = ", opt.max_seq_len, " (must be > 0)");
  if (!is_chat_template_setting(opt.chat_template))
    fail("sft data ", path, ": chat_template = \"", opt.chat_template, "\" (expected ", chat_template_choices(), ")");
  if (core::is_directory(path)) fail("sft data ", path, ": is a directory, expected a JSONL file");
  std::ifstream in(path);
  if (!in) fail("sft data ", path, ": cannot open the file");

  SftDataset data;
  data.path = path;
  LazyChatFormat chat(opt.chat_template, tok, path);
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    chat.at_line(line_no);
    if (line.find_first_not_of(" \t\r\n") == std::string::npos) continue;  // blank lines are not rows
    try {
      Json row;
      try {
        row = Json::parse(line);
      } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for 1e400
        throw BadRow{std::string("invalid JSON (") + e.what() + ")"};
      }
      bool cut = false;  // encoding stopped past max_seq_len: len is a lower bound
      SftExample ex = tokenize_row(row, tok, opt, chat, &cut);
      ex.line = line_no;
      const int64_t len = int64_t(ex.ids.size());
      const std::string len_text = (cut ? "at least " : "") + std::to_string(len);
      if (len > opt.max_seq_len) {
        if (!opt.truncate)
          fail(path, ":", line_no, ": row is ", len_text, " tokens, longer than max_seq_len = ", opt.max_seq_len,
               " (set truncate to cut it)");
        ex.ids.resize(size_t(opt.max_seq_len));
        ex.loss.resize(size_t(opt.max_seq_len));
        if (!has_loss_tokens(ex))
          throw BadRow{"row is " + len_text + " tokens; cut to max_seq_len = " +
                       std::to_string(opt.max_seq_len) + " it keeps no completion tokens"};
        ++data.truncated;
      }
      data.rows.push_back(std::move(ex));
    } catch (const BadRow& b) {
      if (!opt.skip_bad_rows) fail(path, ":", line_no, ": ", b.problem);
      ++data.skipped;
    }
  }
  if (data.rows.empty())
    fail("sft data ", path, ": no rows (", line_no, " lines read, ", data.skipped, " bad rows skipped)");
  return data;
}

// ---- sampling --------------------------------------------------------------------------------------

DataSampler::DataSampler(int64_t rows, uint64_t seed) : rows_(rows), seed_(seed) {
  if (rows <= 0) fail("data sampler: ", rows, " rows (need at least 1)");
  shuffle_epoch();
}

void DataSampler::shuffle_epoch() {
  // splitmix64 of (seed, epoch): neighbouring seeds and epochs give unrelated streams.
  uint64_t z = seed_ + 0x9E3779B97F4A7C15ULL * (uint64_t(state_.epoch) + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z = z ^ (z >> 31);
  std::mt19937_64 rng(z);
  order_.resize(size_t(rows_));
  for (int64_t i = 0; i < rows_; ++i) order_[size_t(i)] = i;
  // Fisher-Yates written out: std::shuffle and the std distributions differ between standard libraries,
  // mt19937_64's raw output does not, so every rank and every build sees the same order.
  for (int64_t i = rows_ - 1; i > 0; --i) {
    const int64_t j = int64_t(rng() % uint64_t(i + 1));
    std::swap(order_[size_t(i)], order_[size_t(j)]);
  }
}

std::vector<int64_t> DataSampler::next_global_batch(int64_t n) {
  if (n <= 0) fail("data sampler: batch of ", n, " rows (must be > 0)");
  std::vector<int64_t> batch;
  batch.reserve(size_t(n));
  while (int64_t(batch.size()) < n) {
    if (state_.offset == rows_) {  // epoch done: the next one has its own permutation
      ++state_.epoch;
      state_.offset = 0;
      shuffle_epoch();
    }
    batch.push_back(order_[size_t(state_.offset++)]);
  }
  return batch;
}

void DataSampler::restore(const State& s) {
  if (s.epoch < 0 || s.offset < 0 || s.offset > rows_)
    fail("data sampler: cannot restore epoch ", s.epoch, " offset ", s.offset, " (", rows_, " rows)");
  state_ = s;
  shuffle_epoch();
}

std::vector<int64_t> shard(const std::vector<int64_t>& global_batch, int rank, int world_size) {
  if (world_size <= 0 || rank < 0 || rank >= world_size)
    fail("shard: rank ", rank, " of world size ", world_size, " (need 0 <= rank < world size)");
  const int64_t n = int64_t(global_batch.size());
  const int64_t begin = int64_t(rank) * n / world_size, end = int64_t(rank + 1) * n / world_size;
  return std::vector<int64_t>(global_batch.begin() + begin, global_batch.begin() + end);
}

// ---- batches ---------------------------------------------------------------------------------------

SftBatch collate_packed(const SftDataset& data, const std::vector<int64_t>& indices, int64_t pad_id,
                        int64_t max_len) {
  if (indices.empty()) fail("collate: no rows");
  // First fit: each row goes into the first sequence with room for it.
  std::vector<std::vector<int64_t>> packs;  // row indices per packed sequence
  std::vector<int64_t> used;                // tokens per packed sequence
  for (int64_t i : indices) {
    if (i < 0 || i >= int64_t(data.rows.size()))
      fail("collate: row index ", i, " outside the ", data.rows.size(), " rows of ", data.path);
    const int64_t len = int64_t(data.rows[size_t(i)].ids.size());
    if (len > max_len) fail(data.path, ": a row of ", len, " tokens does not fit a packed sequence of ", max_len);
    size_t p = 0;
    while (p < packs.size() && used[p] + len > max_len) ++p;
    if (p == packs.size()) packs.emplace_back(), used.push_back(0);
    packs[p].push_back(i);
    used[p] += len;
  }
  const int64_t B = int64_t(packs.size()), T = *std::max_element(used.begin(), used.end());
  SftBatch batch;
  batch.ids = torch::full({B, T}, pad_id, torch::kInt64);       // (B, T)
  batch.targets = torch::full({B, T}, -100, torch::kInt64);     // (B, T)
  batch.valid = torch::zeros({B, T}, torch::kBool);             // (B, T)
  batch.positions = torch::zeros({B, T}, torch::kInt64);        // (B, T)
  batch.segments = torch::full({B, T}, -1, torch::kInt64);      // (B, T); -1 on padding
  auto ids = batch.ids.accessor<int64_t, 2>();
  auto targets = batch.targets.accessor<int64_t, 2>();
  auto valid = batch.valid.accessor<bool, 2>();
  auto positions = batch.positions.accessor<int64_t, 2>();
  auto segments = batch.segments.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    int64_t at = 0;
    for (size_t seg = 0; seg < packs[size_t(b)].size(); ++seg) {
      const SftExample& ex = data.rows[size_t(packs[size_t(b)][seg])];
      const int64_t len = int64_t(ex.ids.size());
      for (int64_t t = 0; t < len; ++t) {
        ids[b][at + t] = ex.ids[size_t(t)];
        valid[b][at + t] = true;
        positions[b][at + t] = t;
        segments[b][at + t] = int64_t(seg);
        if (t + 1 < len && ex.loss[size_t(t + 1)]) {  // never across the end of a row
          targets[b][at + t] = ex.ids[size_t(t + 1)];
          ++batch.target_tokens;
        }
      }
      at += len;
    }
  }
  return batch;
}

SftBatch collate(const SftDataset& data, const std::vector<int64_t>& indices, int64_t pad_id) {
  if (indices.empty()) fail("collate: no rows");
  int64_t T = 0;
  for (int64_t i : indices) {
    if (i < 0 || i >= int64_t(data.rows.size()))
      fail("collate: row index ", i, " outside the ", data.rows.size(), " rows of ", data.path);
    T = std::max<int64_t>(T, int64_t(data.rows[size_t(i)].ids.size()));
  }
  const int64_t B = int64_t(indices.size());
  SftBatch batch;
  batch.ids = torch::full({B, T}, pad_id, torch::kInt64);       // (B, T)
  batch.targets = torch::full({B, T}, -100, torch::kInt64);     // (B, T)
  batch.valid = torch::zeros({B, T}, torch::kBool);             // (B, T)
  auto ids = batch.ids.accessor<int64_t, 2>();
  auto targets = batch.targets.accessor<int64_t, 2>();
  auto valid = batch.valid.accessor<bool, 2>();
  for (int64_t b = 0; b < B; ++b) {
    const SftExample& ex = data.rows[size_t(indices[size_t(b)])];
    const int64_t len = int64_t(ex.ids.size());
    for (int64_t t = 0; t < len; ++t) {
      ids[b][t] = ex.ids[size_t(t)];
      valid[b][t] = true;
      // Position t predicts token t+1; only loss tokens are targets.
      if (t + 1 < len && ex.loss[size_t(t + 1)]) {
        targets[b][t] = ex.ids[size_t(t + 1)];
        ++batch.target_tokens;
      }
    }
  }
  return batch;
}

int64_t count_target_tokens(const SftDataset& data, const std::vector<int64_t>& indices) {
  int64_t n = 0;
  for (int64_t i : indices) {
    const auto& loss = data.rows.at(size_t(i)).loss;
    for (size_t t = 1; t < loss.size(); ++t) n += loss[t];  // position 0 is never a target
  }
  return n;
}

}  // namespace reglage::data
