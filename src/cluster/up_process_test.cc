// `crescent up` as a user runs it: it comes up (making its default model
// into an empty cache), answers a completion at the endpoint it printed,
// and on SIGINT stops every process it started and frees their ports; a
// kill -9 of it leaves no orphans; a child failing at start-up makes it
// exit non-zero naming the child, with its log, and nothing left running.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/http.h"
#include "common/testutil.h"

namespace crescent::cluster {
namespace {

using namespace std::chrono_literals;
using crescent::testing::CrescentBin;
using crescent::testing::FreePort;
using crescent::testing::SourceDir;
using crescent::testing::Subprocess;
using crescent::testing::TempDir;
namespace fs = std::filesystem;

std::string TokenizerDir() { return SourceDir() + "/.cache/tokenizer-qwen3"; }

struct PrintedMember {
  std::string name;
  uint16_t port = 0;
  int pid = 0;
};

// The member lines of the "ready" block: "  proxy  http://127.0.0.1:8000  pid 42  log ...".
std::vector<PrintedMember> ParseMembers(const std::string& out) {
  std::vector<PrintedMember> members;
  std::regex line(R"(\n  ([a-z]+(?:-\d+)?) +(?:http://)?127\.0\.0\.1:(\d+)[^\n]*?pid (\d+))");
  for (std::sregex_iterator it(out.begin(), out.end(), line), end; it != end; ++it) {
    members.push_back({(*it)[1], static_cast<uint16_t>(std::stoi((*it)[2])), std::stoi((*it)[3])});
  }
  return members;
}

// Alive and not a zombie (an orphan's zombie may wait for a reaper).
bool ProcessAlive(int pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string s;
  if (!std::getline(stat, s)) return false;
  size_t paren = s.rfind(')');
  return paren != std::string::npos && paren + 2 < s.size() && s[paren + 2] != 'Z';
}

// Processes (not zombies) whose command line mentions `needle`.
std::vector<int> ProcessesMentioning(const std::string& needle) {
  std::vector<int> pids;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    int pid = std::stoi(name);
    if (cmdline.find(needle) != std::string::npos && pid != getpid() && ProcessAlive(pid)) {
      pids.push_back(pid);
    }
  }
  return pids;
}

bool PortFree(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

// Waits for the ready banner; empty when `up` exited or timed out.
std::string WaitReady(Subprocess& up, std::chrono::seconds timeout = 90s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    std::string log = up.Log();
    if (log.find("Ctrl-C stops everything") != std::string::npos) return log;
    if (!up.Running()) break;
    std::this_thread::sleep_for(50ms);
  }
  up.DumpLog();
  return "";
}

class UpProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(TokenizerDir() + "/tokenizer.json")) {
      GTEST_SKIP() << ".cache/tokenizer-qwen3 missing (run scripts/setup)";
    }
  }
  std::vector<std::string> UpArgs(const std::string& cache_dir, uint16_t port) {
    return {CrescentBin(), "up", "--cache-dir", cache_dir, "--port", std::to_string(port),
            "--kv-cache-memory-bytes", "64MiB", "--max-model-len", "1024",
            "--global-segment-size", "64MB", "--local-buffer-size", "16MB"};
  }
};

TEST_F(UpProcessTest, AnswersAtItsEndpointAndStopsEverythingOnSigint) {
  TempDir cache;
  uint16_t port = FreePort();
  Subprocess up(UpArgs(cache.path(), port), {{"CRESCENT_TOKENIZER_DIR", TokenizerDir()}});
  std::string out = WaitReady(up);
  ASSERT_FALSE(out.empty());
  EXPECT_TRUE(fs::exists(cache.path() + "/models/qwen3-tiny/tokenizer.json"));

  std::vector<PrintedMember> members = ParseMembers(out);
  std::map<std::string, PrintedMember> by_name;
  for (const auto& m : members) by_name[m.name] = m;
  ASSERT_TRUE(by_name.count("proxy") && by_name.count("prefill-0") && by_name.count("decode-0") &&
              by_name.count("master"))
      << out;
  EXPECT_EQ(by_name["proxy"].port, port);
  EXPECT_NE(out.find("curl -s http://127.0.0.1:" + std::to_string(port) + "/v1/completions"),
            std::string::npos);

  // The printed endpoint answers the printed model name.
  http::ClientOptions co;
  co.timeout = 60s;
  http::Client client("127.0.0.1", port, co);
  auto r = client.Post("/v1/completions",
                       R"({"model": "qwen3-tiny", "prompt": "San Francisco is a",
                           "max_tokens": 8, "ignore_eos": true, "temperature": 0})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->status, 200) << r->body;
  auto j = nlohmann::json::parse(r->body);
  EXPECT_EQ(j["usage"]["completion_tokens"], 8);
  EXPECT_FALSE(j["choices"][0]["text"].get<std::string>().empty());

  up.Signal(SIGINT);
  EXPECT_EQ(up.Wait(30s), 0) << up.Log();
  for (const auto& m : members) {
    EXPECT_FALSE(ProcessAlive(m.pid)) << m.name << " (pid " << m.pid << ") still runs";
    EXPECT_TRUE(PortFree(m.port)) << m.name << "'s port " << m.port << " still taken";
  }
  EXPECT_TRUE(ProcessesMentioning(cache.path()).empty());
}

TEST_F(UpProcessTest, KillNineLeavesNoOrphans) {
  TempDir cache;
  std::vector<std::string> args = UpArgs(cache.path(), FreePort());
  // A killed `crescent up` cannot remove its work dir: keep it in ours.
  args.insert(args.end(), {"--work-dir", cache.path() + "/work"});
  Subprocess up(args, {{"CRESCENT_TOKENIZER_DIR", TokenizerDir()}});
  std::string out = WaitReady(up);
  ASSERT_FALSE(out.empty());
  std::vector<PrintedMember> members = ParseMembers(out);
  ASSERT_EQ(members.size(), 4u) << out;
  up.Signal(SIGKILL);
  up.Wait(10s);
  // The kernel kills them (PDEATHSIG); their exit takes a moment.
  auto any_alive = [&] {
    for (const auto& m : members) {
      if (ProcessAlive(m.pid)) return true;
    }
    return false;
  };
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (any_alive() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  for (const auto& m : members) {
    EXPECT_FALSE(ProcessAlive(m.pid)) << m.name << " (pid " << m.pid << ") outlived crescent up";
  }
}

TEST_F(UpProcessTest, OutlivesADeadInstanceUntilNoDecodeInstanceIsLeft) {
  TempDir cache;
  uint16_t port = FreePort();
  std::vector<std::string> args = UpArgs(cache.path(), port);
  args.insert(args.end(), {"--decode", "2"});
  Subprocess up(args, {{"CRESCENT_TOKENIZER_DIR", TokenizerDir()}});
  std::string out = WaitReady(up);
  ASSERT_FALSE(out.empty());
  std::map<std::string, PrintedMember> by_name;
  for (const auto& m : ParseMembers(out)) by_name[m.name] = m;
  ASSERT_TRUE(by_name.count("decode-0") && by_name.count("decode-1")) << out;

  kill(by_name["decode-0"].pid, SIGKILL);
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (up.Log().find("decode-0 (pid") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_NE(up.Log().find("stopped: killed by signal 9"), std::string::npos) << up.Log();
  EXPECT_TRUE(up.Running());
  // The proxy routes around the dead instance.
  http::ClientOptions co;
  co.timeout = 60s;
  http::Client client("127.0.0.1", port, co);
  for (int i = 0; i < 3; ++i) {
    auto r = client.Post("/v1/completions",
                         R"({"model": "qwen3-tiny", "prompt": "Hi", "max_tokens": 2})");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 200) << r->body;
  }

  kill(by_name["decode-1"].pid, SIGKILL);
  EXPECT_EQ(up.Wait(30s), 1) << up.Log();
  EXPECT_NE(up.Log().find("the cluster cannot serve any more"), std::string::npos) << up.Log();
  EXPECT_TRUE(ProcessesMentioning(cache.path()).empty());
}

TEST_F(UpProcessTest, ChildFailingAtStartUpIsNamedWithItsLogAndNothingIsLeft) {
  TempDir dir;
  std::string model = dir.path() + "/broken-model";
  fs::create_directories(model);
  std::ofstream(model + "/config.json") << "{\"architectures\": [\"NoSuchModel\"]}";
  Subprocess up({CrescentBin(), "up", "--model", model, "--port", std::to_string(FreePort()),
                 "--no-kv-connector", "--kv-cache-memory-bytes", "64MiB", "--work-dir",
                 dir.path() + "/work"});
  int code = up.Wait(60s);
  std::string log = up.Log();
  EXPECT_NE(code, 0) << log;
  EXPECT_NE(code, -1) << "still running: " << log;
  EXPECT_NE(log.find("failed during start-up"), std::string::npos) << log;
  EXPECT_TRUE(log.find("prefill-0") != std::string::npos ||
              log.find("decode-0") != std::string::npos)
      << log;
  EXPECT_NE(log.find("  | "), std::string::npos) << "no log tail: " << log;
  EXPECT_TRUE(ProcessesMentioning(model).empty());
  EXPECT_TRUE(fs::exists(dir.path() + "/work/prefill-0.log"));  // kept for the user
}

}  // namespace
}  // namespace crescent::cluster
