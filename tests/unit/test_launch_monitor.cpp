// The launcher's watchdog, piece by piece: the heartbeat line's checks (every field's type and range, the
// secret), the process tree it trusts, the monitor fed over TCP with hostile and malformed lines, and the
// verdicts it draws (silent, dropped, stalled, never started).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "framework/core/process_tree.h"
#include "framework/net/heartbeat.h"
#include "framework/net/heartbeat_line.h"
#include "framework/net/launch_monitor.h"
#include "framework/net/watchdog.h"
#include "test_util.h"

namespace reglage::net {
namespace {

const std::string kKey = std::string(64, 'a');

std::string this_host() {
  char name[256] = {0};
  ::gethostname(name, sizeof(name) - 1);
  return name;
}

BeatLine beat_of(int rank, int64_t pid, uint64_t progress = 1) {
  BeatLine b;
  b.rank = rank;
  b.host = this_host();
  b.pid = pid;
  b.stage = "sft";
  b.step = 3;
  b.total = 12;
  b.op = "compute";
  b.progress = progress;
  return b;
}

// Waits (bounded: 60 s, for a loaded machine) until `done` holds.
bool wait_until(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

// A connection to the monitor's heartbeat port on loopback.
struct Connection {
  int fd = -1;
  explicit Connection(int port) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(uint16_t(port));
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  }
  ~Connection() { ::close(fd); }
  void send(const std::string& bytes) {
    size_t at = 0;
    while (at < bytes.size()) {
      const ssize_t n = ::send(fd, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
      if (n <= 0) return;  // the monitor closed it: fine for a bad line
      at += size_t(n);
    }
  }
};

// One line on a connection of its own, closed afterwards.
void send_line(int port, const std::string& line) { Connection(port).send(line); }

// A child process running argv; killed and reaped when the Spawned goes.
struct Spawned {
  pid_t pid = -1;
  explicit Spawned(const std::vector<std::string>& argv) {
    pid = ::fork();
    if (pid == 0) {
      ::setpgid(0, 0);  // its own group: the destructor ends the grandchildren too (they hold ctest's stdout)
      std::vector<char*> a;
      for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
      a.push_back(nullptr);
      ::execvp(a[0], a.data());
      std::_Exit(127);
    }
    ::setpgid(pid, pid);  // also here: whichever runs first
  }
  ~Spawned() {
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  bool alive() const { return ::waitpid(pid, nullptr, WNOHANG) == 0; }
};

// A child of `parent` (scanning /proc); -1 when none appears.
int64_t child_of(int64_t parent) {
  int64_t found = -1;
  wait_until([&] {
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
      const std::string name = e.path().filename().string();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      if (core::parent_pid(std::stoll(name)) == parent) found = std::stoll(name);
    }
    return found > 0;
  });
  return found;
}

LaunchMonitorOptions options() {
  LaunchMonitorOptions o;
  o.key = kKey;
  return o;
}

HttpRenderer no_pages() {
  return [](const std::string&) { return HttpAnswer{}; };
}

TEST(HeartbeatLine, AWellFormedBeatRoundTrips) {
  const BeatLine b = beat_of(1, 4242, 77);
  const std::string line = format_beat(kKey, b);
  ASSERT_EQ(line.back(), '\n');
  std::string why;
  const auto p = parse_beat(line, kKey, 2, &why);
  ASSERT_TRUE(p) << why;
  EXPECT_EQ(p->rank, 1);
  EXPECT_EQ(p->host, b.host);
  EXPECT_EQ(p->pid, 4242);
  EXPECT_EQ(p->stage, "sft");
  EXPECT_EQ(p->step, 3);
  EXPECT_EQ(p->total, 12);
  EXPECT_EQ(p->op, "compute");
  EXPECT_EQ(p->progress, 77u);
  // A long stage name is cut (on a UTF-8 boundary) by the sender, so the beat stays acceptable.
  BeatLine longer = b;
  longer.stage = std::string(255, 'x') + "\xc3\xa9" + std::string(300, 'y');
  const auto q = parse_beat(format_beat(kKey, longer), kKey, 2, &why);
  ASSERT_TRUE(q) << why;
  EXPECT_EQ(q->stage, std::string(255, 'x'));
}

// Every field with other types and out-of-range values, the key wrong or missing, extra or missing
// fields, bad UTF-8, nesting, and a line over the limit: none is a beat, and none throws.
TEST(HeartbeatLine, EveryWrongTypeRangeOrKeyIsRejected) {
  const nlohmann::json good = nlohmann::json::parse(format_beat(kKey, beat_of(1, 4242)));
  ASSERT_TRUE(parse_beat(good.dump(), kKey, 2));
  const std::vector<nlohmann::json> others = {
      "x", "", 1.5, -1, 0, nullptr, true, nlohmann::json::array(), nlohmann::json::array({1}),
      nlohmann::json::object(), nlohmann::json{{"a", 1}}, 1e300, int64_t(1) << 62, uint64_t(-1),
      std::string(300, 'h')};
  int rejected = 0;
  for (const auto& [name, value] : good.items()) {
    for (const auto& other : others) {
      nlohmann::json j = good;
      j[name] = other;
      if (j == good) continue;
      // A value of the right type and range is fine (e.g. step 0); everything else must be refused.
      const bool non_negative = (other.is_number_unsigned() && other.get<uint64_t>() <= uint64_t(INT64_MAX)) ||
                                (other.is_number_integer() && other.get<int64_t>() >= 0);
      const bool short_string = other.is_string() && other.get<std::string>().size() <= 256;
      bool acceptable = false;
      if (name == "step" || name == "total") acceptable = non_negative;
      if (name == "progress") acceptable = non_negative || other.is_number_unsigned();
      if (name == "stage" || name == "op") acceptable = short_string;
      if (name == "host") acceptable = short_string && !other.get<std::string>().empty();
      if (name == "rank") acceptable = other == 0;
      std::string why;
      const auto p = parse_beat(j.dump(), kKey, 2, &why);
      if (acceptable) {
        EXPECT_TRUE(p) << j.dump() << ": " << why;
      } else {
        EXPECT_FALSE(p) << j.dump();
        ++rejected;
      }
    }
    nlohmann::json missing = good;
    missing.erase(name);
    EXPECT_FALSE(parse_beat(missing.dump(), kKey, 2)) << missing.dump();
  }
  EXPECT_GT(rejected, 100);
  // Ranks outside [0, np), pids outside [2, 2^22].
  for (int64_t rank : {-1, 2, 7, 1 << 30}) {
    nlohmann::json j = good;
    j["rank"] = rank;
    EXPECT_FALSE(parse_beat(j.dump(), kKey, 2)) << j.dump();
  }
  for (int64_t pid : {int64_t(-5), int64_t(0), int64_t(1), kHeartbeatMaxPid + 1, int64_t(1) << 40}) {
    nlohmann::json j = good;
    j["pid"] = pid;
    EXPECT_FALSE(parse_beat(j.dump(), kKey, 2)) << j.dump();
  }
  // The key: wrong, one digit off, longer, empty, absent; and an empty expected key accepts nothing.
  for (const std::string& key : {std::string(64, 'b'), std::string(63, 'a') + "b", kKey + "a", std::string()}) {
    nlohmann::json j = good;
    j["key"] = key;
    EXPECT_FALSE(parse_beat(j.dump(), kKey, 2)) << key;
  }
  EXPECT_FALSE(parse_beat(good.dump(), "", 2));
  nlohmann::json extra = good;
  extra["extra"] = 1;
  EXPECT_FALSE(parse_beat(extra.dump(), kKey, 2));
  // Not JSON objects at all.
  std::string bad_utf8 = good.dump();
  bad_utf8.replace(bad_utf8.find("sft"), 3, "s\xff\xfe");
  std::string deep(3000, '[');
  const std::vector<std::string> lines = {"",       "{",          "[]",   "null", "42", "\"beat\"", "{\"rank\":0,\"host\":5}",
                                          bad_utf8, deep,         std::string(5000, ' ') + good.dump(),
                                          std::string("{\"key\":\"") + kKey + "\0\"}"};
  for (const auto& line : lines) EXPECT_FALSE(parse_beat(line, kKey, 2)) << line.substr(0, 80);
}

TEST(HeartbeatLine, SecretsComeFromUrandomAndCompareWhole) {
  const std::string a = new_heartbeat_key(), b = new_heartbeat_key();
  EXPECT_EQ(a.size(), 64u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos) << a;
  EXPECT_NE(a, b);
  EXPECT_TRUE(same_secret(a, a));
  EXPECT_FALSE(same_secret(a, b));
  EXPECT_FALSE(same_secret(a, a.substr(0, 63)));
  EXPECT_FALSE(same_secret("", a));
}

TEST(ProcessTree, DescendantsStartTimesAndLiveness) {
  Spawned job({"sh", "-c", "sleep 120 & wait"});
  const int64_t grandchild = child_of(job.pid);
  ASSERT_GT(grandchild, 0);
  EXPECT_TRUE(core::descends_from(grandchild, job.pid));
  EXPECT_TRUE(core::descends_from(job.pid, job.pid));
  EXPECT_TRUE(core::descends_from(job.pid, ::getpid()));
  EXPECT_FALSE(core::descends_from(::getpid(), job.pid));
  EXPECT_FALSE(core::descends_from(1, job.pid));
  EXPECT_FALSE(core::descends_from(grandchild, 1));  // pid 1 is never an ancestor we trust
  EXPECT_EQ(core::parent_pid(grandchild), job.pid);
  EXPECT_GT(core::start_time(grandchild), 0);
  EXPECT_TRUE(core::process_alive(grandchild));
  ::kill(pid_t(grandchild), SIGKILL);
  // A killed child is a zombie (not alive, still parented) until the shell's `wait` reaps it; only then is it
  // gone from /proc.
  EXPECT_TRUE(wait_until([&] { return !core::process_alive(grandchild); }));
  EXPECT_TRUE(wait_until([&] { return core::start_time(grandchild) == -1; }));
  EXPECT_FALSE(core::descends_from(grandchild, job.pid));
  EXPECT_EQ(core::start_time(grandchild), -1);
  EXPECT_EQ(core::parent_pid(int64_t(1) << 40), -1);
}

// Item 3 of issue 14: a wrong JSON type used to throw inside the Asio handler and abort the launcher.
// Every line here is dropped and counted; afterwards a valid, authenticated beat still counts.
TEST(LaunchMonitor, MalformedLinesNeverStopItAndValidBeatsStillCount) {
  Spawned job({"sh", "-c", "sleep 120 & wait"});
  const int64_t rank_pid = child_of(job.pid);
  LaunchMonitor m(options(), no_pages());
  m.reset(2, job.pid, false);
  const std::string key = "\"key\":\"" + kKey + "\",";
  std::vector<std::string> lines = {
      "{\"rank\":0,\"host\":5}\n",
      "{" + key + "\"rank\":0,\"host\":5}\n",
      "{" + key + "\"rank\":\"0\",\"host\":\"h\",\"pid\":5,\"stage\":\"s\",\"step\":1,\"total\":1,\"op\":\"o\",\"progress\":1}\n",
      "{" + key + "\"rank\":0.5,\"host\":\"h\",\"pid\":5,\"stage\":\"s\",\"step\":1,\"total\":1,\"op\":\"o\",\"progress\":1}\n",
      "{" + key + "\"rank\":null,\"host\":\"h\",\"pid\":5,\"stage\":\"s\",\"step\":1,\"total\":1,\"op\":\"o\",\"progress\":1}\n",
      "{" + key + "\"rank\":[0],\"host\":\"h\",\"pid\":5,\"stage\":\"s\",\"step\":1,\"total\":1,\"op\":\"o\",\"progress\":1}\n",
      "{" + key + "\"rank\":0,\"host\":{\"a\":[1,{}]},\"pid\":5,\"stage\":\"s\",\"step\":1,\"total\":1,\"op\":\"o\",\"progress\":1}\n",
      "{" + key + "\"rank\":0,\"host\":\"h\",\"pid\":1e999,\"stage\":\"s\",\"step\":1,\"total\":1,\"op\":\"o\",\"progress\":1}\n",
      "{" + key + "\"rank\":0,\"host\":\"h\",\"pid\":99999999999999999999999,\"stage\":\"s\",\"step\":1,\"total\":1,\"op\":\"o\",\"progress\":1}\n",
      "{" + key + "\"rank\":0,\"host\":\"h\",\"pid\":5,\"stage\":7,\"step\":1,\"total\":1,\"op\":\"o\",\"progress\":1}\n",
      "{" + key + "\"rank\":0,\"host\":\"h\",\"pid\":5,\"stage\":\"s\",\"step\":\"1\",\"total\":1,\"op\":\"o\",\"progress\":1}\n",
      "{" + key + "\"rank\":0,\"host\":\"h\",\"pid\":5,\"stage\":\"s\",\"step\":-1,\"total\":1,\"op\":\"o\",\"progress\":1}\n",
      "{" + key + "\"rank\":0,\"host\":\"h\",\"pid\":5,\"stage\":\"s\",\"step\":1,\"total\":true,\"op\":\"o\",\"progress\":1}\n",
      "{" + key + "\"rank\":0,\"host\":\"h\",\"pid\":5,\"stage\":\"s\",\"step\":1,\"total\":1,\"op\":null,\"progress\":1}\n",
      "{" + key + "\"rank\":0,\"host\":\"h\",\"pid\":5,\"stage\":\"s\",\"step\":1,\"total\":1,\"op\":\"o\",\"progress\":-3}\n",
      "{" + key + "\"rank\":0,\"host\":\"h\\u0000\",\"pid\":5,\"stage\":\"s\xff\",\"step\":1,\"total\":1,\"op\":\"o\",\"progress\":1}\n",
      "[1,2,3]\n",
      "not json at all\n",
      "\xff\xfe\xfd\n",
      std::string(3000, '[') + "\n",
      std::string(100000, 'x') + "\n",  // over the line limit
      std::string(100000, 'x'),         // no newline at all
  };
  for (size_t i = 0; i < lines.size(); ++i) {
    send_line(m.heartbeat_port(), lines[i]);
    ASSERT_TRUE(wait_until([&] { return m.rejected_beats() == i + 1; }))
        << "line " << i << " not counted as rejected: " << m.rejected_beats();
  }
  EXPECT_TRUE(m.ranks().empty());
  // Still listening, still accepting a good beat (the job's own pid, rank 1 of 2).
  Connection c(m.heartbeat_port());
  c.send(format_beat(kKey, beat_of(1, rank_pid)));
  ASSERT_TRUE(wait_until([&] { return m.ranks().size() == 1; }));
  EXPECT_EQ(m.ranks()[0].rank, 1);
  EXPECT_TRUE(m.ranks()[0].local);
  EXPECT_EQ(m.rejected_beats(), lines.size());
}

// Item 2 of issue 14: the launcher SIGKILLed whatever pid a line named. Now a line must carry the secret,
// name a rank in [0, np) and a pid below the attempt's mpirun; the first such beat pins the rank's pid.
TEST(LaunchMonitor, OnlyTheJobsOwnPidsAreTrustedAndEachRankIsPinned) {
  Spawned job({"sh", "-c", "sleep 120 & sleep 120 & wait"});
  Spawned sibling({"sleep", "120"});  // a process of the same user that is not part of the job
  const int64_t rank_pid = child_of(job.pid);
  ASSERT_GT(rank_pid, 0);
  LaunchMonitor m(options(), no_pages());
  m.reset(2, job.pid, false);
  const int port = m.heartbeat_port();
  uint64_t expected = 0;
  auto refused = [&](const std::string& line, const std::string& what) {
    send_line(port, line);
    ++expected;
    EXPECT_TRUE(wait_until([&] { return m.rejected_beats() == expected; })) << what;
    EXPECT_TRUE(m.ranks().empty()) << what;
  };
  // Without the secret, or with a wrong one: whatever the rest says.
  refused("{\"rank\":7,\"host\":\"" + this_host() + "\",\"pid\":" + std::to_string(sibling.pid) + "}\n", "the issue's line");
  for (const std::string& key : {std::string(64, 'b'), std::string(), kKey.substr(1)}) {
    std::string line = format_beat(key, beat_of(0, rank_pid));
    refused(line, "key '" + key + "'");
  }
  // With the secret: ranks out of range; pids that are not the job's.
  for (int rank : {2, 7, -1, 1 << 30}) {
    nlohmann::json j = nlohmann::json::parse(format_beat(kKey, beat_of(0, rank_pid)));
    j["rank"] = rank;
    refused(j.dump() + "\n", "rank " + std::to_string(rank));
  }
  for (int64_t pid : {int64_t(::getpid()), int64_t(1), int64_t(sibling.pid), int64_t(::getppid()), int64_t(job.pid),
                      kHeartbeatMaxPid}) {
    refused(format_beat(kKey, beat_of(0, pid)), "pid " + std::to_string(pid));
    BeatLine other_host = beat_of(1, pid);
    other_host.host = "elsewhere";
    refused(format_beat(kKey, other_host), "pid " + std::to_string(pid) + " on another host");
  }
  // The job's own process is trusted and pinned: later lines for rank 0 with another pid or host are not.
  Connection c(port);
  c.send(format_beat(kKey, beat_of(0, rank_pid)));
  ASSERT_TRUE(wait_until([&] { return m.ranks().size() == 1; }));
  EXPECT_TRUE(m.ranks()[0].local);
  EXPECT_EQ(m.ranks()[0].pid, rank_pid);
  for (int64_t pid : {int64_t(sibling.pid), int64_t(job.pid)}) {  // job.pid: mpirun itself is never a rank
    send_line(port, format_beat(kKey, beat_of(0, pid)));
    ++expected;
    EXPECT_TRUE(wait_until([&] { return m.rejected_beats() == expected; }));
  }
  BeatLine moved = beat_of(0, rank_pid);
  moved.host = "elsewhere";
  send_line(port, format_beat(kKey, moved));
  ++expected;
  EXPECT_TRUE(wait_until([&] { return m.rejected_beats() == expected; }));
  ASSERT_EQ(m.ranks().size(), 1u);
  EXPECT_EQ(m.ranks()[0].pid, rank_pid);
  EXPECT_EQ(m.ranks()[0].host, this_host());
  EXPECT_TRUE(sibling.alive());
  // A new attempt under another mpirun: the old job's pid is no longer trusted.
  Spawned job2({"sleep", "120"});
  m.reset(2, job2.pid, false);
  EXPECT_TRUE(m.ranks().empty());
  send_line(port, format_beat(kKey, beat_of(0, rank_pid)));
  ++expected;
  EXPECT_TRUE(wait_until([&] { return m.rejected_beats() == expected; }));
  EXPECT_TRUE(m.ranks().empty());
}

// With hosts elsewhere a pid cannot be checked here: the first authenticated beat pins it, and the rank
// is never `local` (the launcher signals only local ranks).
TEST(LaunchMonitor, RemoteRanksArePinnedAndNeverLocal) {
  Spawned job({"sleep", "120"});
  Spawned sibling({"sleep", "120"});
  LaunchMonitor m(options(), no_pages());
  m.reset(2, job.pid, true);
  BeatLine remote = beat_of(1, 31337);
  remote.host = "node7";
  Connection c(m.heartbeat_port());
  c.send(format_beat(kKey, remote));
  ASSERT_TRUE(wait_until([&] { return m.ranks().size() == 1; }));
  EXPECT_FALSE(m.ranks()[0].local);
  send_line(m.heartbeat_port(), format_beat(kKey, beat_of(1, sibling.pid)));
  EXPECT_TRUE(wait_until([&] { return m.rejected_beats() == 1; }));
  EXPECT_EQ(m.ranks()[0].pid, 31337);
  EXPECT_EQ(m.ranks()[0].host, "node7");
  // Rank 0 claiming a local process that is not the job's: accepted as pinned, but not local.
  Connection c0(m.heartbeat_port());
  c0.send(format_beat(kKey, beat_of(0, sibling.pid)));
  ASSERT_TRUE(wait_until([&] { return m.ranks().size() == 2; }));
  EXPECT_FALSE(m.ranks()[0].local);
}

// Item 4 of issue 14: a rank whose connection dropped was skipped for good. The monitor marks it lost
// (and keeps its last beat's time), a reconnection of the same process heals it, and the verdict calls a
// rank lost past heartbeat_timeout_s dead.
TEST(LaunchMonitor, ADroppedConnectionIsMarkedLostUntilTheSameRankReconnects) {
  Spawned job({"sh", "-c", "sleep 120 & wait"});
  const int64_t rank_pid = child_of(job.pid);
  LaunchMonitor m(options(), no_pages());
  m.reset(1, job.pid, false);
  {
    Connection c(m.heartbeat_port());
    c.send(format_beat(kKey, beat_of(0, rank_pid, 5)));
    ASSERT_TRUE(wait_until([&] { return m.ranks().size() == 1 && m.ranks()[0].connected; }));
  }
  ASSERT_TRUE(wait_until([&] { return !m.ranks()[0].connected; }));
  EXPECT_GE(m.ranks()[0].lost_at_s, 0);
  WatchLimits limits;
  limits.np = 1;
  limits.heartbeat_timeout_s = 5;
  std::vector<RankHealth> r = m.ranks();
  r[0].since_beat_s = 6;  // as it will be once the timeout has passed
  const auto v = watch_verdict(r, 100, limits);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->rank, 0);
  EXPECT_NE(v->message.find("rank 0 on " + this_host() + " (pid " + std::to_string(rank_pid) +
                            ") died in stage 'sft' at step 3, operation 'compute'"),
            std::string::npos)
      << v->message;
  EXPECT_EQ(v->at, "sft@3");
  Connection again(m.heartbeat_port());
  again.send(format_beat(kKey, beat_of(0, rank_pid, 6)));
  ASSERT_TRUE(wait_until([&] { return m.ranks()[0].connected; }));
  EXPECT_EQ(m.ranks()[0].lost_at_s, -1);
}

// Item 6: the counter in the beats. Beats with the same counter leave since_progress_s growing past
// since_beat_s; a new counter resets both together.
TEST(LaunchMonitor, ProgressIsMeasuredFromTheLastCounterChange) {
  Spawned job({"sh", "-c", "sleep 120 & wait"});
  const int64_t rank_pid = child_of(job.pid);
  LaunchMonitor m(options(), no_pages());
  m.reset(1, job.pid, false);
  Connection c(m.heartbeat_port());
  c.send(format_beat(kKey, beat_of(0, rank_pid, 9)));
  ASSERT_TRUE(wait_until([&] { return m.ranks().size() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // time must pass between the two beats
  const double first = m.ranks()[0].since_beat_s;
  c.send(format_beat(kKey, beat_of(0, rank_pid, 9)));
  ASSERT_TRUE(wait_until([&] { return m.ranks()[0].since_beat_s < first; }));
  auto h = m.ranks()[0];
  EXPECT_GT(h.since_progress_s, h.since_beat_s);
  EXPECT_EQ(h.progress, 9u);
  c.send(format_beat(kKey, beat_of(0, rank_pid, 10)));
  ASSERT_TRUE(wait_until([&] { return m.ranks()[0].progress == 10u; }));
  h = m.ranks()[0];
  EXPECT_EQ(h.since_progress_s, h.since_beat_s);
}

RankHealth health(int rank, double since_beat, double since_progress, bool connected = true) {
  RankHealth h;
  h.rank = rank;
  h.host = "n" + std::to_string(rank);
  h.pid = 100 + rank;
  h.stage = "sft";
  h.step = 6 + rank;
  h.op = rank == 0 ? "allreduce grads" : "compute";
  h.since_beat_s = since_beat;
  h.since_progress_s = since_progress;
  h.connected = connected;
  return h;
}

WatchLimits limits_of(int np) {
  WatchLimits l;
  l.np = np;
  l.heartbeat_timeout_s = 10;
  l.startup_timeout_s = 600;
  l.hang_timeout_s = 100;
  return l;
}

TEST(Watchdog, AllWellAndSlowStartsAreNoVerdict) {
  EXPECT_FALSE(watch_verdict({health(0, 1, 50), health(1, 9, 99)}, 1000, limits_of(2)));
  // Start-up: no beat yet after 500 s is still fine (startup_timeout_s, not heartbeat_timeout_s, applies).
  EXPECT_FALSE(watch_verdict({}, 500, limits_of(2)));
  EXPECT_FALSE(watch_verdict({health(0, 1, 1)}, 500, limits_of(2)));
}

TEST(Watchdog, MissingRanksPastTheStartupTimeout) {
  const auto v = watch_verdict({health(0, 1, 1)}, 601, limits_of(2));
  ASSERT_TRUE(v);
  EXPECT_EQ(v->message, "1 rank(s) never reported within startup_timeout_s (600 s)");
  EXPECT_EQ(v->at, "start");
}

TEST(Watchdog, SilentAndDroppedRanksAreNamedTheLongestFirst) {
  auto v = watch_verdict({health(0, 11, 11), health(1, 30, 30)}, 100, limits_of(2));
  ASSERT_TRUE(v);
  EXPECT_EQ(v->rank, 1);
  EXPECT_EQ(v->message,
            "rank 1 on n1 (pid 101) has been silent for 30 s in stage 'sft' at step 7, operation 'compute': hung; "
            "rank 0 is in 'allreduce grads' at step 6");
  v = watch_verdict({health(0, 1, 1), health(1, 12, 12, /*connected=*/false)}, 100, limits_of(2));
  ASSERT_TRUE(v);
  EXPECT_EQ(v->rank, 1);
  EXPECT_NE(v->message.find("rank 1 on n1 (pid 101) died in stage 'sft' at step 7, operation 'compute' (its heartbeat "
                            "connection closed and did not come back within 10 s)"),
            std::string::npos)
      << v->message;
  // Dropped but within the timeout: it may come back.
  EXPECT_FALSE(watch_verdict({health(0, 1, 1), health(1, 9, 9, false)}, 100, limits_of(2)));
}

TEST(Watchdog, AStalledCounterWhileBeatsContinueIsAHang) {
  const auto v = watch_verdict({health(0, 0.1, 150), health(1, 0.1, 160)}, 1000, limits_of(2));
  ASSERT_TRUE(v);
  EXPECT_EQ(v->rank, 1);  // stalled longest: its peer stopped after it, waiting in a collective
  EXPECT_EQ(v->message,
            "rank 1 on n1 (pid 101) has made no progress for 160 s in stage 'sft' at step 7, operation 'compute' "
            "while its heartbeats continue: hung (compute thread stuck); rank 0 is in 'allreduce grads' at step 6");
  EXPECT_EQ(v->at, "sft@7");
}

}  // namespace
}  // namespace reglage::net
