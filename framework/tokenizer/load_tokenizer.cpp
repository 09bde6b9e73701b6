// load_tokenizer: picks the tokenizer from what the user's path holds, and checks the vocabulary size.
#include <string>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/io/gguf.h"
#include "framework/tokenizer/bpe_tokenizer.h"
#include "framework/tokenizer/gguf_tokenizer.h"
#include "framework/tokenizer/llama2c_tokenizer.h"
#include "framework/tokenizer/sentencepiece_model.h"
#include "framework/tokenizer/tokenizer.h"

namespace reglage::tokenizer {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::unique_ptr<Tokenizer> load_any(const std::string& path) {
  using core::file_exists;
  using core::path_join;
  if (core::is_directory(path)) {
    // A Hugging Face model dir; a llama2.c tokenizer.bin wins because save_hf writes it beside an
    // equivalent tokenizer.json and only the .bin is run.c-exact.
    const std::string bin = path_join(path, "tokenizer.bin");
    if (file_exists(bin)) return std::make_unique<Llama2cTokenizer>(bin);
    const std::string json = path_join(path, "tokenizer.json");
    const std::string vocab = path_join(path, "vocab.json");
    const std::string merges = path_join(path, "merges.txt");
    const std::string spm = path_join(path, "tokenizer.model");
    std::unique_ptr<BpeTokenizer> bpe;
    if (file_exists(json))
      bpe = BpeTokenizer::from_tokenizer_json(json);
    else if (file_exists(vocab) && file_exists(merges))
      bpe = BpeTokenizer::from_vocab_merges(vocab, merges);
    else if (file_exists(spm))  // SentencePiece alone: converted as transformers converts it
      return load_sentencepiece_model(spm, path);
    else
      fail("tokenizer dir ", path,
           ": no tokenizer files (looked for tokenizer.bin, tokenizer.json, vocab.json + merges.txt, tokenizer.model)");
    bpe->load_special_ids(path);
    return bpe;
  }
  if (!file_exists(path)) fail("tokenizer ", path, ": no such file or directory");
  // A GGUF file (a model or vocab-only): the tokenizer in its metadata.
  if (io::is_gguf_path(path)) return load_gguf_tokenizer(path);
  // A vocab.json names the GPT-2 file pair; its merges.txt must sit beside it.
  if (ends_with(path, "vocab.json")) {
    const std::string merges = core::path_join(core::parent_dir(path), "merges.txt");
    if (!file_exists(merges)) fail("tokenizer ", path, ": no merges.txt beside it (looked for ", merges, ")");
    auto bpe = BpeTokenizer::from_vocab_merges(path, merges);
    bpe->load_special_ids(core::parent_dir(path));
    return bpe;
  }
  if (ends_with(path, ".json")) {
    auto bpe = BpeTokenizer::from_tokenizer_json(path);
    bpe->load_special_ids(core::parent_dir(path));
    return bpe;
  }
  if (ends_with(path, ".model")) return load_sentencepiece_model(path, core::parent_dir(path));
  // Anything else is taken as a llama2.c tokenizer file (tokenizer.bin, tok512.bin, ...).
  return std::make_unique<Llama2cTokenizer>(path);
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path, int64_t expected_vocab) {
  std::unique_ptr<Tokenizer> tok = load_any(path);
  // llama2.c models index their embedding with the tokenizer's ids one to one, so the sizes must match;
  // Hugging Face models often pad the embedding (Qwen2: 151936 rows for 151665 tokens), so fewer tokens
  // than rows is fine there, but never more.
  const bool is_llama2c = dynamic_cast<Llama2cTokenizer*>(tok.get()) != nullptr;
  if (expected_vocab > 0 && (is_llama2c ? tok->vocab_size() != expected_vocab : tok->vocab_size() > expected_vocab))
    fail("tokenizer ", path, " has ", tok->vocab_size(), " tokens, model expects ", expected_vocab);
  return tok;
}

}  // namespace reglage::tokenizer
