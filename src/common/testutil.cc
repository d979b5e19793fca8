#include "common/testutil.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <thread>

namespace crescent::testing {

std::mt19937_64& Rng() {
  static std::mt19937_64 rng(20261125);
  return rng;
}

std::vector<uint8_t> RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> out(n);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    std::memcpy(out.data() + i, &v, 8);
  }
  for (; i < n; ++i) out[i] = static_cast<uint8_t>(rng());
  return out;
}

namespace {

bool Bindable(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

// The first port of the kernel's ephemeral range (ports it hands out for
// bind(0) and outgoing connections).
uint16_t EphemeralLow() {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  int low = 32768;
  in >> low;
  return static_cast<uint16_t>(std::clamp(low, 2048, 65535));
}

}  // namespace

uint16_t FreePort() {
  // Below the ephemeral range: a port from bind(0) could be handed to any
  // process binding port 0 or connecting out (the servers under test do
  // both) before the test's server binds it. A random pick below the range
  // collides only with another test's pick, and that one is checked.
  static const uint16_t high = EphemeralLow();
  const uint16_t low = high > 12000 ? 10000 : 1024;
  // Not Rng(): its fixed seed would give every test process the same ports.
  thread_local std::mt19937 rng{std::random_device{}()};
  std::uniform_int_distribution<int> pick(low, high - 1);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const uint16_t port = static_cast<uint16_t>(pick(rng));
    if (Bindable(port)) return port;
  }
  // A thousand random picks all taken: the host is out of ports, and any
  // port handed out now would fail the test later with a vaguer error.
  std::fprintf(stderr, "FreePort: no free loopback port below %u after 1000 tries\n", high);
  std::abort();
}

bool WaitForPort(uint16_t port, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    int rc = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    close(fd);
    if (rc == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/crescent-test-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  char* p = mkdtemp(buf.data());
  path_ = p ? p : "/tmp";
}

TempDir::~TempDir() {
  std::error_code ec;
  if (path_ != "/tmp") std::filesystem::remove_all(path_, ec);
}

Subprocess::Subprocess(std::vector<std::string> argv, std::map<std::string, std::string> env) {
  static int counter = 0;
  log_path_ = (std::filesystem::temp_directory_path() /
               ("crescent-sub-" + std::to_string(getpid()) + "-" + std::to_string(counter++) + ".log"))
                  .string();
  for (const auto& a : argv) cmdline_ += a + " ";
  pid_ = fork();
  if (pid_ == 0) {
    setpgid(0, 0);
    int fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    std::fprintf(stderr, "exec %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
}

Subprocess::~Subprocess() {
  Kill();
  std::error_code ec;
  std::filesystem::remove(log_path_, ec);
}

bool Subprocess::Running() {
  if (reaped_ || pid_ <= 0) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }
  return true;
}

void Subprocess::Signal(int sig) {
  if (!reaped_ && pid_ > 0) kill(pid_, sig);
}

void Subprocess::Kill() {
  if (reaped_ || pid_ <= 0) return;
  kill(-pid_, SIGKILL);  // its process group: children too
  kill(pid_, SIGKILL);
  Wait(std::chrono::seconds(10));
}

int Subprocess::Wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (Running()) {
    if (std::chrono::steady_clock::now() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return exit_code_;
}

std::string Subprocess::Log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void Subprocess::DumpLog() const {
  std::cerr << "---- " << cmdline_ << "----\n" << Log() << "---- end ----\n";
}

std::string CrescentBin() {
  const char* b = std::getenv("CRESCENT_BIN");
  return b && *b ? b : "build/apps/crescent";
}

std::string SourceDir() {
  const char* s = std::getenv("CRESCENT_SOURCE_DIR");
  return s && *s ? s : std::filesystem::current_path().string();
}

EtcdServer::EtcdServer() {
  client_port_ = FreePort();
  uint16_t peer_port = FreePort();
  std::string curl = "http://127.0.0.1:" + std::to_string(client_port_);
  std::string purl = "http://127.0.0.1:" + std::to_string(peer_port);
  proc_ = std::make_unique<Subprocess>(std::vector<std::string>{
      "etcd", "--data-dir", dir_.path() + "/etcd", "--listen-client-urls", curl,
      "--advertise-client-urls", curl, "--listen-peer-urls", purl,
      "--initial-advertise-peer-urls", purl, "--initial-cluster", "default=" + purl,
      "--name", "default", "--log-level", "warn"});
  ok_ = WaitForPort(client_port_, std::chrono::seconds(20));
  if (!ok_) proc_->DumpLog();
}

std::string EtcdServer::endpoint() const { return "127.0.0.1:" + std::to_string(client_port_); }

RedisServer::RedisServer() {
  port_ = FreePort();
  proc_ = std::make_unique<Subprocess>(std::vector<std::string>{
      "redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1", "--save", "",
      "--appendonly", "no"});
  ok_ = WaitForPort(port_, std::chrono::seconds(10));
  if (!ok_) proc_->DumpLog();
}

}  // namespace crescent::testing
