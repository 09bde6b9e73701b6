// AdamW (decoupled weight decay) with float32 master weights and state.
// Parameters stored in bfloat16 (full training of a bf16 model) are updated through a float32 master copy
// that is rounded back into the parameter after each step; float32 parameters are updated in place.
#pragma once
#include <torch/torch.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "framework/config/choices.h"

namespace reglage::train {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // applied to matrices only (dim >= 2), not to norms, biases or vectors
};

class AdamW {
 public:
  // params[i] is saved and restored under names[i].
  AdamW(std::vector<torch::Tensor> params, std::vector<std::string> names, AdamWConfig cfg);

  // One update with learning rate `lr` from each parameter's .grad() (undefined grad = zero).
  void step(double lr);
  void zero_grad();
  int64_t steps() const { return steps_; }

  // State as named float32 tensors ("exp_avg.<name>", "exp_avg_sq.<name>", "master.<name>") for a
  // checkpoint, and back. load_state checks that every name and shape matches.
  std::vector<std::pair<std::string, torch::Tensor>> state_tensors() const;
  void load_state(const std::map<std::string, torch::Tensor>& tensors, int64_t steps);

  const std::vector<torch::Tensor>& params() const { return params_; }
  const std::vector<std::string>& names() const { return names_; }

 private:
  std::vector<torch::Tensor> params_;
  std::vector<std::string> names_;
  std::vector<torch::Tensor> master_;   // float32 copy for non-float32 params, else undefined
  std::vector<torch::Tensor> exp_avg_;
  std::vector<torch::Tensor> exp_avg_sq_;
  AdamWConfig cfg_;
  int64_t steps_ = 0;
};

// Global L2 norm of the gradients (already summed across ranks); scales them to max_norm when above it
// (max_norm 0 = no clipping). Returns the norm before clipping.
double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm);

// Learning rate at optimizer step `step` (0-based) of `total`: linear warm-up from lr/warmup to lr over
// `warmup` steps, then cosine | linear | constant decay to lr * min_ratio at the last step.
double scheduled_lr(int64_t step, int64_t total, double lr, int64_t warmup, config::Schedule schedule,
                    double min_ratio);

}  // namespace reglage::train
