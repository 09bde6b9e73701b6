#include "trainers/policy_setup.h"

#include <cstdlib>
#include <thread>

#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/io/model_io.h"
#include "framework/lora/adapter.h"
#include "framework/model/config.h"

namespace reglage::trainers {

Policy load_policy(const StageContext& ctx) {
  const auto& cfg = ctx.pipeline;
  const auto dtype = model::parse_dtype(cfg.model.dtype);
  Policy p;
  p.base_path = cfg.model.path;
  if (!ctx.stage.init_from.empty()) {
    const std::string from = cfg.run_dir + "/" + ctx.stage.init_from + "/final";
    if (core::file_exists(from + "/config.json")) {
      // A fully trained earlier stage: its Hugging Face directory is the new base.
      p.model = io::load_model(from, dtype);
      p.base_path = from;
    } else if (core::file_exists(from + "/adapter_config.json")) {
      // A LoRA stage: its adapter merged into the base (w = 1) is the starting point.
      p.model = io::load_model(cfg.model.path, dtype);
      lora::load_peft(p.model, "init_from", from);
      lora::bake_adapter(p.model, "init_from", 1.0);
    } else {
      fail("stage '", ctx.stage.name, "': init_from '", ctx.stage.init_from, "' has no output in ", from);
    }
  } else {
    p.model = io::load_model(cfg.model.path, dtype);
  }
  p.tok = io::load_model_tokenizer(cfg.model.path, cfg.model.tokenizer, p.model->config().vocab_size);
  return p;
}

int threads_per_rank(int64_t configured) {
  if (configured > 0) return int(configured);
  const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  // Open MPI tells each rank how many ranks share its host.
  int local = 1;
  if (const char* s = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE")) local = std::max(1, std::atoi(s));
  return std::max(1, cores / local);
}

}  // namespace reglage::trainers
