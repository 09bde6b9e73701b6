// reglage serve-reward --adapter RUN_DIR/<reward stage>/final [--model BASE] [--host 127.0.0.1] [--port 8471]
//                      [--token T] [--max-batch N] [--max-body-bytes N]
// Serves a trained reward model over HTTP with OpenRLHF's remote reward protocol:
//   POST /score {"query": [prompt + response, ...], "prompts": [prompt, ...]} -> {"rewards": [...]}
//   GET /health
// Concurrent requests are batched into one forward pass. Loopback unless --host says otherwise.
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
  opt.max_body_bytes = args.integer("max-body-bytes", 8 << 20);
  const long long threads = args.integer("threads", 0);
  args.finish();
  if (opt.port < 0 || opt.port > 65535) fail("--port = ", opt.port, " (expected 0..65535)");
  set_threads(threads);

  auto source = reward::make_model_source(adapter, 32, base);
  // The scorer runs on the server's single scorer thread; queries are prompt + response.
  net::BatchScorer scorer = [&](const std::vector<std::string>& queries, const std::vector<std::string>& prompts) {
    std::vector<reward::RewardInput> batch;
    for (size_t i = 0; i < queries.size(); ++i) {
      const std::string& p = prompts[i];
      const bool prefixed = !p.empty() && queries[i].compare(0, p.size(), p) == 0;
      batch.push_back({prefixed ? p : "", prefixed ? queries[i].substr(p.size()) : queries[i], ""});
    }
    return source->score(batch);
  };
  net::RewardServer server(scorer, opt);
  server.start();
  std::cout << "serving " << source->describe() << " on http://" << opt.host << ":" << server.port()
            << " (POST /score, GET /health)" << std::endl;
  server.run_until_signal();
  return 0;
}

}  // namespace reglage::launch
