#include "reward/model_source.h"

#include "framework/checkpoint/manifest.h"
#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/io/lineage.h"
#include "framework/io/model_io.h"
#include "framework/io/safetensors.h"
#include "framework/lora/adapter.h"
#include "framework/model/heads.h"

namespace reglage::reward {

namespace {

class ModelSource : public RewardSource {
 public:
  // shared: a model to add the reward adapter to, named `adapter` (when non-null and on the same lineage).
  ModelSource(const std::string& dir, int64_t batch_size, const std::string& base_model, model::CausalLM shared,
              const io::Lineage* shared_lineage, const std::string& adapter = kRewardAdapter)
      : dir_(dir), batch_size_(batch_size) {
    if (!core::is_directory(dir)) fail("reward model ", dir, ": directory not found");
    checkpoint::verify_output(dir);  // its files as the reward_model stage wrote them
    if (!core::file_exists(dir + "/reward_head.safetensors"))
      fail("reward model ", dir, ": no reward_head.safetensors (expected the final/ of a reward_model stage)");
    io::Lineage lineage = io::read_lineage(dir);
    if (lineage.base_model.empty()) lineage.base_model = base_model;
    const bool full = core::file_exists(dir + "/config.json");
    if (!full && shared && shared_lineage != nullptr && !lineage.base_model.empty() &&
        lineage.base_model == shared_lineage->base_model && lineage.adapters == shared_lineage->adapters) {
      model_ = shared;
      lora::load_peft(model_, adapter, dir);
      for (auto& [key, t] : lora::adapter_tensors(model_, adapter)) t.set_requires_grad(false);  // frozen
      active_ = {adapter};
      shared_ = true;
    } else if (full) {
      model_ = io::load_model(dir);  // fully trained reward model
    } else {
      if (lineage.base_model.empty()) fail("reward model ", dir, ": no reglage_lineage.json naming its base model");
      model_ = io::load_lineage(lineage, torch::kFloat32);  // its own copy: the name cannot collide
      lora::load_peft(model_, kRewardAdapter, dir);
      active_ = {kRewardAdapter};
    }
    const std::string tok_source = lineage.base_model.empty() ? dir : lineage.base_model;
    tok_ = io::load_model_tokenizer(tok_source, "", model_->config().vocab_size);
    auto head = io::read_safetensors(dir + "/reward_head.safetensors");
    head_ = model::ScalarHead(model_->config().dim, 0);
    torch::NoGradGuard no_grad;
    head_->weight.copy_(head.at("weight"));
    head_->bias.copy_(head.at("bias"));
    if (!shared_) model_->eval();  // a shared model's train/eval mode belongs to its owner
  }

  std::vector<double> score(const std::vector<RewardInput>& batch) override {
    std::vector<double> out;
    torch::NoGradGuard no_grad;
    const int64_t pad = std::max<int64_t>(tok_->eos_id(), 0);
    for (size_t start = 0; start < batch.size(); start += size_t(batch_size_)) {
      const size_t end = std::min(batch.size(), start + size_t(batch_size_));
      // BOS + prompt + response + EOS, each piece encoded on its own as in the preference data
      std::vector<std::vector<int64_t>> rows;
      int64_t T = 1;
      for (size_t i = start; i < end; ++i) {
        std::vector<int64_t> ids;
        if (tok_->add_bos()) ids.push_back(tok_->bos_id());
        for (const auto* text : {&batch[i].prompt, &batch[i].response}) {
          auto piece = tok_->encode(*text, false, false);
          ids.insert(ids.end(), piece.begin(), piece.end());
        }
        if (tok_->eos_id() >= 0) ids.push_back(tok_->eos_id());
        if (int64_t(ids.size()) > model_->config().max_seq_len)
          ids.resize(size_t(model_->config().max_seq_len));  // scored on what fits, as the stage's truncate does
        T = std::max<int64_t>(T, int64_t(ids.size()));
        rows.push_back(std::move(ids));
      }
      const int64_t n = int64_t(rows.size());
      auto ids = torch::full({n, T}, pad, torch::kLong);
      auto valid = torch::zeros({n, T}, torch::kBool);
      for (int64_t b = 0; b < n; ++b) {
        ids[b].narrow(0, 0, int64_t(rows[b].size())).copy_(torch::tensor(rows[b], torch::kLong));
        valid[b].narrow(0, 0, int64_t(rows[b].size())).fill_(true);
      }
      auto hidden = model_->hidden({ids, {}, valid, nullptr, active_});         // (n, T, D)
      auto r = model::gather_last_valid(head_(hidden), valid).to(torch::kFloat64);  // (n)
      for (int64_t b = 0; b < n; ++b) out.push_back(r[b].item<double>());
    }
    return out;
  }

  std::string describe() const override { return "model " + dir_ + (shared_ ? " (on the shared base)" : ""); }
  bool shared() const { return shared_; }

 private:
  std::string dir_;
  int64_t batch_size_;
  model::CausalLM model_{nullptr};
  model::ScalarHead head_{nullptr};
  std::unique_ptr<tokenizer::Tokenizer> tok_;
  model::AdapterSet active_;
  bool shared_ = false;
};

}  // namespace

std::unique_ptr<RewardSource> make_model_source(const std::string& final_dir, int64_t batch_size,
                                                const std::string& base_model) {
  if (batch_size <= 0) fail("reward model ", final_dir, ": batch_size = ", batch_size, " (must be > 0)");
  return std::make_unique<ModelSource>(final_dir, batch_size, base_model, nullptr, nullptr);
}

std::unique_ptr<RewardSource> make_model_source_on(const std::string& final_dir, int64_t batch_size,
                                                   model::CausalLM shared, const io::Lineage& shared_lineage,
                                                   bool* shared_used, const std::string& adapter) {
  if (batch_size <= 0) fail("reward model ", final_dir, ": batch_size = ", batch_size, " (must be > 0)");
  auto source =
      std::make_unique<ModelSource>(final_dir, batch_size, shared_lineage.base_model, shared, &shared_lineage, adapter);
  if (shared_used) *shared_used = source->shared();
  return source;
}

}  // namespace reglage::reward
