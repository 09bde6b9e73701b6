#include "trainers/train_state.h"

#include <ATen/CPUGeneratorImpl.h>

#include <mutex>
#include <nlohmann/json.hpp>

#include "framework/checkpoint/checkpoint.h"
#include "framework/core/error.h"
#include "framework/core/fault_points.h"
#include "framework/core/progress.h"
#include "framework/core/file_util.h"
#include "framework/io/safetensors.h"

namespace reglage::trainers {

using nlohmann::json;

namespace {

// Every rank's default-generator state stacked as (W, L) uint8; collective.
torch::Tensor gather_rng_states(dist::Communicator& comm) {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  torch::Tensor mine;  // (L) uint8
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    mine = gen.get_state();
  }
  auto all = torch::zeros({comm.size(), mine.numel()}, torch::kLong);
  all[comm.rank()].copy_(mine.to(torch::kLong));
  comm.all_reduce_sum(all, "allreduce rng states");
  return all.to(torch::kUInt8);
}

// The files load_latest_checkpoint reads back from a checkpoint of this state.
std::vector<std::string> required_files(const TrainState& state) {
  std::vector<std::string> names{"trainable.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"};
  if (state.second_optimizer) names.push_back("second_optimizer.safetensors");
  return names;
}

// state.json of a verified checkpoint: readable, written at the checkpoint's own step, holding every field
// the restore below reads. Returns the problem or "".
std::string check_state_json(const checkpoint::Checkpoint& ckpt, const TrainState& state) {
  json s;
  try {
    s = json::parse(checkpoint::read_checkpoint_file(ckpt, "state.json"));
  } catch (const std::exception& e) {
    return std::string("state.json unreadable (") + e.what() + ")";
  }
  if (!s.is_object() || !s.contains("step") || !s["step"].is_number_integer()) return "state.json records no step";
  if (s["step"].get<int64_t>() != ckpt.step)
    return "state.json says step " + std::to_string(s["step"].get<int64_t>()) + ", the directory is step-" +
           std::to_string(ckpt.step);
  std::vector<std::string> fields{"sampler_epoch", "sampler_offset", "optimizer_steps"};
  if (state.second_optimizer) fields.push_back("second_optimizer_steps");
  for (const auto& f : fields)
    if (!s.contains(f) || !s[f].is_number_integer()) return "state.json has no integer '" + f + "'";
  if (state.extra && !s.contains("extra")) return "state.json has no 'extra' state";
  return "";
}

}  // namespace

void save_checkpoint(StageContext& ctx, TrainState& state, int64_t step) {
  core::ProgressOp in_op("checkpoint");
  auto rng = gather_rng_states(ctx.comm);
  if (ctx.is_root()) {
    std::vector<std::pair<std::string, torch::Tensor>> trainable;
    for (size_t i = 0; i < state.params.size(); ++i) trainable.emplace_back(state.names[i], state.params[i]);
    json meta_state{{"step", step},
                    {"sampler_epoch", state.sampler.state().epoch},
                    {"sampler_offset", state.sampler.state().offset},
                    {"optimizer_steps", state.optimizer.steps()},
                    {"world_size", ctx.comm.size()},
                    {"config_hash", ctx.config_hash}};
    if (state.second_optimizer) meta_state["second_optimizer_steps"] = state.second_optimizer->steps();
    if (state.extra) meta_state["extra"] = *state.extra;
    std::map<std::string, std::string> files{
        {"trainable.safetensors", io::encode_safetensors(trainable)},
        {"optimizer.safetensors", io::encode_safetensors(state.optimizer.state_tensors())},
        {"rng.safetensors", io::encode_safetensors({{"rng", rng}})},
        {"state.json", meta_state.dump(2) + "\n"}};
    if (state.second_optimizer)
      files["second_optimizer.safetensors"] = io::encode_safetensors(state.second_optimizer->state_tensors());
    const auto path = checkpoint::write_checkpoint(ctx.checkpoint_dir(), step, files, {{"config_hash", ctx.config_hash}});
    checkpoint::prune(ctx.checkpoint_dir(), ctx.stage.keep_checkpoints);
    ctx.log("checkpoint " + path);
  }
  ctx.comm.barrier("checkpoint written");
  // A test build's fault point (core/fault_points.h): the resume tests crash a rank here.
  if (core::FaultPoints* faults = core::fault_points()) faults->checkpoint_written(ctx.comm.rank(), step);
}

std::optional<int64_t> load_latest_checkpoint(StageContext& ctx, TrainState& state) {
  checkpoint::Expectation expect;
  expect.required = required_files(state);
  expect.check = [&](const checkpoint::Checkpoint& c) { return check_state_json(c, state); };
  auto ckpt = checkpoint::latest_valid(ctx.checkpoint_dir(), [&](const std::string& w) { ctx.warn(w); }, expect);
  if (!ckpt) return std::nullopt;
  if (ckpt->meta["config_hash"] != ctx.config_hash)
    fail("checkpoint ", ckpt->path, " was written for a different configuration of stage '", ctx.stage.name,
         "'; use a new run_dir or --restart-from ", ctx.stage.name);
  const json s = json::parse(checkpoint::read_checkpoint_file(*ckpt, "state.json"));

  torch::NoGradGuard no_grad;
  auto trainable = io::read_safetensors(ckpt->path + "/trainable.safetensors");
  for (size_t i = 0; i < state.params.size(); ++i) {
    auto it = trainable.find(state.names[i]);
    if (it == trainable.end()) fail(ckpt->path, ": trainable.safetensors has no tensor '", state.names[i], "'");
    if (it->second.sizes() != state.params[i].sizes())
      fail(ckpt->path, ": tensor '", state.names[i], "' has shape ", it->second.sizes(), ", the model needs ",
           state.params[i].sizes());
    state.params[i].copy_(it->second);
  }
  state.optimizer.load_state(io::read_safetensors(ckpt->path + "/optimizer.safetensors"),
                             s.at("optimizer_steps").get<int64_t>());
  if (state.second_optimizer)
    state.second_optimizer->load_state(io::read_safetensors(ckpt->path + "/second_optimizer.safetensors"),
                                       s.at("second_optimizer_steps").get<int64_t>());
  if (state.extra) *state.extra = s.at("extra");
  state.sampler.restore({s.at("sampler_epoch").get<int64_t>(), s.at("sampler_offset").get<int64_t>()});

  auto rng = io::read_safetensors(ckpt->path + "/rng.safetensors").at("rng");  // (W, L) uint8
  if (rng.size(0) == ctx.comm.size()) {
    at::Generator gen = at::detail::getDefaultCPUGenerator();  // a handle to the shared default generator
    std::lock_guard<std::mutex> lock(gen.mutex());
    // clone(), not contiguous(): LibTorch 2.x's set_state adds the storage offset in units of its state struct,
    // so row r > 0 of the (W, L) tensor would be read far past its end; a fresh tensor has offset 0.
    gen.set_state(rng[ctx.comm.rank()].clone());
  } else {
    ctx.warn("checkpoint has RNG states of " + std::to_string(rng.size(0)) + " ranks, this run has " +
             std::to_string(ctx.comm.size()) + ": dropout streams restart from the seed");
  }
  return ckpt->step;
}

}  // namespace reglage::trainers
