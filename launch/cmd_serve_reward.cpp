// reglage serve-reward --adapter RUN_DIR/<reward stage>/final [--model BASE] [--host 127.0.0.1] [--port 8471]
//                      [--token T] [--max-batch N] [--max-queries N] [--max-body-bytes N]
// Serves a trained reward model over HTTP with OpenRLHF's remote reward protocol:
//   POST /score {"query": [prompt + response, ...], "prompts": [prompt, ...]} -> {"rewards": [...]}
//   GET /health
// Concurrent requests are batched; a big request is scored in slices of --max-batch queries, round-robin with
// the others, and one of more than --max-queries queries (default 1024) gets 413. SIGINT/SIGTERM stop the
// server after the forward pass in progress (at most kForwardBatch sequences). Loopback unless --host says
// otherwise.
#include <algorithm>
#include <iostream>

#include "framework/core/error.h"
#include "framework/net/reward_server.h"
#include "launch/commands.h"
#include "reward/model_source.h"

namespace reglage::launch {

void set_threads(long long threads);

int cmd_serve_reward(Args& args) {
  const std::string adapter = args.required("adapter");
  const std::string base = args.str("model");
  net::RewardServerOptions opt;
  opt.host = args.str("host", "127.0.0.1");
  opt.port = int(args.integer("port", 8471));
  opt.token = args.str("token");
  opt.max_batch = args.integer("max-batch", 256);
  opt.max_queries = args.integer("max-queries", 1024);
  opt.max_body_bytes = args.integer("max-body-bytes", 8 << 20);
  const long long threads = args.integer("threads", 0);
  args.finish();
  if (opt.port < 0 || opt.port > 65535) fail("--port = ", opt.port, " (expected 0..65535)");
  set_threads(threads);

  // Sequences per forward pass: small, so that a stop waits for little (on CPU, 8 score as fast as 32).
  constexpr size_t kForwardBatch = 8;
  auto source = reward::make_model_source(adapter, int64_t(kForwardBatch), base);
  // The scorer runs on the server's single scorer thread; queries are prompt + response. It feeds the source one
  // forward pass at a time (the same passes source->score would make) so that a stopping server need not wait
  // for a whole slice.
  const net::RewardServer* running = nullptr;
  net::BatchScorer scorer = [&](const std::vector<std::string>& queries, const std::vector<std::string>& prompts) {
    std::vector<double> rewards;  // (N)
    for (size_t begin = 0; begin < queries.size(); begin += kForwardBatch) {
      if (running != nullptr && running->stop_requested()) fail("serve-reward: stopping");  // answers are dropped
      std::vector<reward::RewardInput> batch;
      for (size_t i = begin; i < std::min(queries.size(), begin + kForwardBatch); ++i) {
        const std::string& p = prompts[i];
        const bool prefixed = !p.empty() && queries[i].compare(0, p.size(), p) == 0;
        batch.push_back({prefixed ? p : "", prefixed ? queries[i].substr(p.size()) : queries[i], ""});
      }
      const std::vector<double> r = source->score(batch);
      rewards.insert(rewards.end(), r.begin(), r.end());
    }
    return rewards;
  };
  net::RewardServer server(scorer, opt);
  running = &server;
  server.start();
  std::cout << "serving " << source->describe() << " on http://" << opt.host << ":" << server.port()
            << " (POST /score, GET /health)" << std::endl;
  server.run_until_signal();
  return 0;
}

}  // namespace reglage::launch
