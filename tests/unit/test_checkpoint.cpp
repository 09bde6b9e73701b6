// Checkpoint and stage-output manifests, and the run_dir lock:
//   a checkpoint verifies only when its manifest records its own step and lists every file of the directory
//   and every file the trainer needs, with sizes and checksums; otherwise an older one is used;
//   a stage output (final/) carries reglage_manifest.json and a changed byte is refused naming the file;
//   one run_dir lock holder at a time, the refusal naming its pid and host.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "framework/checkpoint/checkpoint.h"
#include "framework/checkpoint/manifest.h"
#include "framework/checkpoint/run_lock.h"
#include "test_util.h"

namespace reglage {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Two checkpoints, step-4 and step-8, of the files a trainer would need (a.bin, b.bin).
std::string two_checkpoints(const test::TempDir& tmp) {
  const std::string dir = tmp.path("ckpt");
  checkpoint::write_checkpoint(dir, 4, {{"a.bin", "hello"}, {"b.bin", std::string(1000, 'x')}}, {{"config_hash", "h"}});
  checkpoint::write_checkpoint(dir, 8, {{"a.bin", "world"}, {"b.bin", std::string(1000, 'y')}}, {{"config_hash", "h"}});
  return dir;
}

json read_json(const std::string& path) { return json::parse(core::read_file(path)); }
void write_json(const std::string& path, const json& j) { core::write_file_atomic(path, j.dump(2) + "\n"); }

// Flips the bits of the byte at `at` in place.
void flip_byte(const std::string& path, size_t at) {
  std::string bytes = core::read_file(path);
  ASSERT_LT(at, bytes.size()) << path;
  bytes[at] = char(~bytes[at]);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// Newest valid checkpoint under dir with `required`; warnings collected.
std::optional<checkpoint::Checkpoint> latest(const std::string& dir, std::vector<std::string>& warnings,
                                             const std::vector<std::string>& required = {"a.bin", "b.bin"}) {
  checkpoint::Expectation expect;
  expect.required = required;
  return checkpoint::latest_valid(dir, [&](const std::string& w) { warnings.push_back(w); }, expect);
}

TEST(CheckpointManifest, RecordsStepAlgorithmAndEveryFile) {
  test::TempDir tmp;
  const std::string dir = two_checkpoints(tmp);
  const json m = read_json(dir + "/step-8/manifest.json");
  EXPECT_EQ(m.at("step"), 8);
  EXPECT_EQ(m.at("algorithm"), "fnv1a64");
  EXPECT_EQ(m.at("files").size(), 2u);
  EXPECT_EQ(m.at("files").at("b.bin").at("size"), 1000);
  EXPECT_EQ(m.at("files").at("a.bin").at("checksum"), checkpoint::checksum("world"));
  EXPECT_EQ(checkpoint::verify(dir + "/step-8", {"a.bin", "b.bin"}), "");
}

TEST(CheckpointManifest, AnEmptyFileListIsNotAWholeCheckpoint) {
  // The case: a damaged weights file and a manifest emptied to match resumed silently.
  test::TempDir tmp;
  const std::string dir = two_checkpoints(tmp);
  flip_byte(dir + "/step-8/b.bin", 10);
  json m = read_json(dir + "/step-8/manifest.json");
  m["files"] = json::object();
  write_json(dir + "/step-8/manifest.json", m);
  EXPECT_EQ(checkpoint::verify(dir + "/step-8"), "manifest.json lists no files");
  std::vector<std::string> warnings;
  auto c = latest(dir, warnings);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->step, 4);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("step-8 is incomplete or corrupt (manifest.json lists no files)"), std::string::npos)
      << warnings[0];
}

TEST(CheckpointManifest, AFileTheManifestDoesNotListIsRejected) {
  test::TempDir tmp;
  const std::string dir = two_checkpoints(tmp);
  json m = read_json(dir + "/step-8/manifest.json");
  m["files"].erase("b.bin");
  write_json(dir + "/step-8/manifest.json", m);
  EXPECT_EQ(checkpoint::verify(dir + "/step-8"), "b.bin is in the directory but not listed in manifest.json");
  // a stray file next to a whole manifest, too
  core::write_file_atomic(dir + "/step-4/extra.bin", "?");
  EXPECT_EQ(checkpoint::verify(dir + "/step-4"), "extra.bin is in the directory but not listed in manifest.json");
  std::vector<std::string> warnings;
  EXPECT_FALSE(latest(dir, warnings).has_value());
  EXPECT_EQ(warnings.size(), 2u);
}

TEST(CheckpointManifest, ARequiredFileGoneWithItsEntryFallsBack) {
  // The case: the entry and the file both gone; the manifest is consistent but the trainer needs it.
  test::TempDir tmp;
  const std::string dir = two_checkpoints(tmp);
  json m = read_json(dir + "/step-8/manifest.json");
  m["files"].erase("b.bin");
  write_json(dir + "/step-8/manifest.json", m);
  fs::remove(dir + "/step-8/b.bin");
  EXPECT_EQ(checkpoint::verify(dir + "/step-8"), "");  // nothing required: whole as far as it says
  EXPECT_EQ(checkpoint::verify(dir + "/step-8", {"a.bin", "b.bin"}),
            "b.bin is missing (the trainer needs it; manifest.json does not list it)");
  std::vector<std::string> warnings;
  auto c = latest(dir, warnings);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->step, 4);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("b.bin is missing"), std::string::npos) << warnings[0];
}

TEST(CheckpointManifest, AnOlderCheckpointUnderANewerNameIsRejected) {
  test::TempDir tmp;
  const std::string dir = two_checkpoints(tmp);
  fs::remove_all(dir + "/step-8");
  fs::copy(dir + "/step-4", dir + "/step-8");
  EXPECT_EQ(checkpoint::verify(dir + "/step-8"), "manifest.json says step 4, the directory is step-8");
  std::vector<std::string> warnings;
  auto c = latest(dir, warnings);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->step, 4);
  EXPECT_EQ(c->path, dir + "/step-4");
  // a manifest without a step is not trusted either
  json m = read_json(dir + "/step-8/manifest.json");
  m.erase("step");
  write_json(dir + "/step-8/manifest.json", m);
  EXPECT_EQ(checkpoint::verify(dir + "/step-8"), "manifest.json records no step");
}

TEST(CheckpointManifest, TheReadersOwnCheckFallsBackToo) {
  test::TempDir tmp;
  const std::string dir = two_checkpoints(tmp);
  checkpoint::Expectation expect;
  expect.check = [](const checkpoint::Checkpoint& c) { return c.step == 8 ? std::string("state.json says step 4") : ""; };
  std::vector<std::string> warnings;
  auto c = checkpoint::latest_valid(dir, [&](const std::string& w) { warnings.push_back(w); }, expect);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->step, 4);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("(state.json says step 4)"), std::string::npos) << warnings[0];
}

TEST(CheckpointManifest, MalformedManifestsAreProblemsNotCrashes) {
  test::TempDir tmp;
  const std::string dir = two_checkpoints(tmp);
  const std::string path = dir + "/step-8/manifest.json";
  const json good = read_json(path);
  struct Case {
    std::string what;
    std::function<void(json&)> edit;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"files not an object", [](json& m) { m["files"] = json::array(); }, "manifest.json has no \"files\" object"},
      {"size a string", [](json& m) { m["files"]["a.bin"]["size"] = "5"; }, "manifest.json entry for a.bin is malformed"},
      {"no checksum", [](json& m) { m["files"]["a.bin"].erase("checksum"); }, "entry for a.bin is malformed"},
      {"parent path", [](json& m) { m["files"]["../step-4/a.bin"] = m["files"]["a.bin"]; }, "lists '../step-4/a.bin'"},
      {"absolute path", [](json& m) { m["files"]["/etc/hostname"] = m["files"]["a.bin"]; }, "lists '/etc/hostname'"},
      {"a subdirectory", [](json& m) { m["files"]["d/a.bin"] = m["files"]["a.bin"]; }, "lists 'd/a.bin'"},
      {"step a string", [](json& m) { m["step"] = "8"; }, "manifest.json records no step"},
      {"unknown algorithm", [](json& m) { m["algorithm"] = "md5"; }, "checksum algorithm \"md5\""},
      {"an array", [](json& m) { m = json::array(); }, "manifest.json is not a JSON object"},
  };
  for (const auto& c : cases) {
    json m = good;
    c.edit(m);
    write_json(path, m);
    std::string problem;
    EXPECT_NO_THROW(problem = checkpoint::verify(dir + "/step-8")) << c.what;
    EXPECT_NE(problem.find(c.expect), std::string::npos) << c.what << ": " << problem;
  }
  core::write_file_atomic(path, "{\"step\": 8, \"files\": ");
  EXPECT_NE(checkpoint::verify(dir + "/step-8").find("manifest.json unreadable"), std::string::npos);
}

TEST(CheckpointManifest, StreamedChecksumEqualsTheWholeBuffer) {
  test::TempDir tmp;
  std::string bytes(3 * (size_t(1) << 20) + 17, '\0');  // crosses the 1 MiB read chunks
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = char((i * 131) ^ (i >> 7));
  core::write_file_atomic(tmp.path("f"), bytes);
  const auto r = checkpoint::record_file(tmp.path("f"));
  EXPECT_EQ(r.size, bytes.size());
  EXPECT_EQ(r.checksum, checkpoint::checksum(bytes));
}

// A stage output as publish_final leaves it: an adapter, a subdirectory, the lineage, then the manifest.
std::string stage_output(const test::TempDir& tmp, const std::string& stage = "sft") {
  const std::string dir = tmp.path("run/" + stage + "/final");
  fs::create_directories(dir + "/critic");
  core::write_file_atomic(dir + "/adapter_config.json", "{\"r\": 4}\n");
  core::write_file_atomic(dir + "/adapter_model.safetensors", std::string(4096, 'w'));
  core::write_file_atomic(dir + "/critic/value_head.safetensors", std::string(64, 'v'));
  core::write_file_atomic(dir + "/reglage_lineage.json", "{\"base_model\": \"m.bin\", \"adapters\": []}\n");
  checkpoint::write_output_manifest(dir);
  return dir;
}

TEST(OutputManifest, ListsEveryFileAndVerifies) {
  test::TempDir tmp;
  const std::string dir = stage_output(tmp);
  const json m = read_json(dir + "/reglage_manifest.json");
  EXPECT_EQ(m.at("algorithm"), "fnv1a64");
  std::vector<std::string> names;
  for (const auto& [name, info] : m.at("files").items()) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"adapter_config.json", "adapter_model.safetensors",
                                             "critic/value_head.safetensors", "reglage_lineage.json"}));
  EXPECT_EQ(m["files"]["adapter_model.safetensors"]["checksum"], checkpoint::checksum(std::string(4096, 'w')));
  EXPECT_NO_THROW(checkpoint::verify_output(dir));
  EXPECT_TRUE(checkpoint::is_stage_output(dir));
  EXPECT_FALSE(checkpoint::is_stage_output(test::model_260k()));
}

TEST(OutputManifest, AChangedFileIsRefusedNamingIt) {
  struct Case {
    std::string what;
    std::function<void(const std::string&)> damage;
    std::vector<std::string> expect;
  };
  const std::vector<Case> cases = {
      {"flipped byte", [](const std::string& d) { flip_byte(d + "/adapter_model.safetensors", 100); },
       {"adapter_model.safetensors fails its checksum (", "reglage_manifest.json says "}},
      {"flipped byte in a subdirectory", [](const std::string& d) { flip_byte(d + "/critic/value_head.safetensors", 0); },
       {"critic/value_head.safetensors fails its checksum"}},
      {"truncated", [](const std::string& d) { core::write_file_atomic(d + "/adapter_model.safetensors", "w"); },
       {"adapter_model.safetensors has 1 bytes, reglage_manifest.json says 4096"}},
      {"removed", [](const std::string& d) { fs::remove(d + "/adapter_config.json"); }, {"adapter_config.json is missing"}},
      {"added", [](const std::string& d) { core::write_file_atomic(d + "/model.safetensors", "x"); },
       {"model.safetensors is in the directory but not listed in reglage_manifest.json"}},
      {"emptied manifest", [](const std::string& d) { write_json(d + "/reglage_manifest.json", {{"algorithm", "fnv1a64"}, {"files", json::object()}}); },
       {"reglage_manifest.json lists no files"}},
      {"garbled manifest", [](const std::string& d) { core::write_file_atomic(d + "/reglage_manifest.json", "{"); },
       {"reglage_manifest.json: unreadable"}},
  };
  for (const auto& c : cases) {
    test::TempDir tmp;
    const std::string dir = stage_output(tmp);
    c.damage(dir);
    std::vector<std::string> expect = c.expect;
    expect.push_back(dir);
    expect.push_back("re-run stage 'sft' (reglage run PIPELINE.yaml --restart-from sft)");
    test::expect_error([&] { checkpoint::verify_output(dir); }, expect);
  }
}

TEST(OutputManifest, AChangeAfterAVerifiedReadIsStillCaught) {
  // A directory verified once is not read again while it is unchanged; a change is seen all the same.
  test::TempDir tmp;
  const std::string dir = stage_output(tmp);
  checkpoint::verify_output(dir);
  const std::string file = dir + "/adapter_model.safetensors";
  flip_byte(file, 7);
  fs::last_write_time(file, fs::last_write_time(file) + std::chrono::seconds(1));  // past the clock's tick
  test::expect_error([&] { checkpoint::verify_output(dir); }, {"adapter_model.safetensors fails its checksum"});
}

TEST(OutputManifest, AnOutputWithoutAManifestIsAcceptedWithOneWarning) {
  test::TempDir tmp;
  const std::string dir = stage_output(tmp, "old");
  fs::remove(dir + "/reglage_manifest.json");
  std::vector<std::string> warnings;
  auto warn = [&](const std::string& w) { warnings.push_back(w); };
  EXPECT_NO_THROW(checkpoint::verify_output(dir, warn));
  EXPECT_NO_THROW(checkpoint::verify_output(dir, warn));  // once per directory
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find(dir + ": no reglage_manifest.json"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("--restart-from old"), std::string::npos) << warnings[0];
  EXPECT_TRUE(checkpoint::is_stage_output(dir));  // by its lineage file
}

std::string this_host() {
  char buf[256] = {0};
  ::gethostname(buf, sizeof(buf) - 1);
  return buf;
}

TEST(RunLock, ASecondHolderIsRefusedNamingTheFirst) {
  test::TempDir tmp;
  const std::string dir = tmp.path();
  checkpoint::RunLock first;
  ASSERT_EQ(first.try_acquire(dir), "");
  EXPECT_TRUE(first.held());
  const json content = json::parse(core::read_file(dir + "/.reglage.lock"));
  EXPECT_EQ(content.at("pid"), ::getpid());
  EXPECT_EQ(content.at("host"), this_host());
  // flock conflicts between open file descriptions, in one process as between two
  checkpoint::RunLock second;
  const std::string refused = second.try_acquire(dir);
  EXPECT_FALSE(second.held());
  EXPECT_NE(refused.find("run_dir " + dir + " is in use by another reglage run (pid " + std::to_string(::getpid()) +
                         " on host " + this_host() + ", since "),
            std::string::npos)
      << refused;
  EXPECT_NE(refused.find("lock file " + dir + "/.reglage.lock): wait for it to end or stop it"), std::string::npos)
      << refused;
  EXPECT_EQ(checkpoint::run_dir_busy(dir), refused);
}

TEST(RunLock, ALeftoverFileDoesNotBlockAndIsRewritten) {
  test::TempDir tmp;
  const std::string dir = tmp.path();
  core::write_file_atomic(dir + "/.reglage.lock", "{\"pid\": 999999, \"host\": \"elsewhere\", \"since\": \"then\"}\n");
  EXPECT_EQ(checkpoint::run_dir_busy(dir), "");
  // the probe took nothing away: the file still names its last holder
  EXPECT_NE(core::read_file(dir + "/.reglage.lock").find("999999"), std::string::npos);
  {
    checkpoint::RunLock lock;
    ASSERT_EQ(lock.try_acquire(dir), "");
    EXPECT_EQ(json::parse(core::read_file(dir + "/.reglage.lock")).at("pid"), ::getpid());
  }
  checkpoint::RunLock again;  // the first one's scope ended: released
  EXPECT_EQ(again.try_acquire(dir), "");
}

TEST(RunLock, AHolderThatWroteNothingYetIsStillRefused) {
  test::TempDir tmp;
  const std::string dir = tmp.path();
  const int fd = ::open((dir + "/.reglage.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  checkpoint::RunLock lock;
  const std::string refused = lock.try_acquire(dir);
  EXPECT_NE(refused.find("in use by another reglage run (which has not written its pid and host yet"), std::string::npos)
      << refused;
  ::close(fd);
  EXPECT_EQ(lock.try_acquire(dir), "");
}

TEST(RunLock, WaitsOutAHolderWhenAskedTo) {
  test::TempDir tmp;
  const std::string dir = tmp.path();
  auto first = std::make_unique<checkpoint::RunLock>();
  ASSERT_EQ(first->try_acquire(dir), "");
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    first.reset();
  });
  checkpoint::RunLock second;
  EXPECT_EQ(second.try_acquire(dir, /*wait_s=*/120), "");  // no time asserted: only that it got it
  releaser.join();
}

}  // namespace
}  // namespace reglage
