#include "framework/model/heads.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

namespace reglage::model {

ScalarHeadImpl::ScalarHeadImpl(int64_t dim, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const double std_dev = 1.0 / std::sqrt(static_cast<double>(dim + 1));
  weight = register_parameter("weight", torch::empty({1, dim}).normal_(0.0, std_dev, gen));
  bias = register_parameter("bias", torch::zeros({1}));
}

torch::Tensor ScalarHeadImpl::forward(const torch::Tensor& hidden) {
  auto h = hidden.to(weight.scalar_type());
  return torch::nn::functional::linear(h, weight, bias).squeeze(-1);  // (B, T)
}

torch::Tensor gather_last_valid(const torch::Tensor& values, const torch::Tensor& valid) {
  const int64_t T = values.size(1);
  // index of the last true flag: argmax over positions weighted by (flag * position)
  auto pos = torch::arange(T, torch::TensorOptions().dtype(torch::kLong).device(values.device()));
  auto last = (valid.to(torch::kLong) * (pos + 1)).argmax(1);  // (B)
  return values.gather(1, last.unsqueeze(1)).squeeze(1);      // (B)
}

}  // namespace reglage::model
