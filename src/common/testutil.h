// Shared helpers for tests: real processes on loopback.
//
// Tests start real servers (etcd, redis-server, crescent subcommands) as
// child processes on free loopback ports, and kill them at the end of the
// test. Nothing here mocks a server.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/status.h"

namespace crescent::testing {

// A seeded generator for reproducible random test data.
std::mt19937_64& Rng();
std::vector<uint8_t> RandomBytes(size_t n, uint64_t seed);

// A port on 127.0.0.1 that was free a moment ago, picked at random below the
// kernel's ephemeral range, so that a server's own bind(0) or an outgoing
// connection cannot take it before the test's server binds it.
uint16_t FreePort();

// True once something accepts TCP connections on 127.0.0.1:port.
bool WaitForPort(uint16_t port, std::chrono::milliseconds timeout);

// A fresh directory under $TMPDIR, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A child process. Output (stdout+stderr) goes to a log file, printed by
// DumpLog() when a test fails. Killed with SIGKILL on destruction unless
// already reaped.
class Subprocess {
 public:
  // argv[0] is looked up in PATH. `env` entries are added to ours.
  Subprocess(std::vector<std::string> argv, std::map<std::string, std::string> env = {});
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  bool Running();
  void Signal(int sig);
  void Kill();  // SIGKILL + reap
  // Waits for exit; returns the exit code, 128+signal when signalled, or -1 on timeout.
  int Wait(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  std::string Log() const;  // what it printed so far
  void DumpLog() const;     // to stderr, with the command line

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;
  bool reaped_ = false;
  std::string log_path_;
  std::string cmdline_;
};

// Path of the crescent binary under test ($CRESCENT_BIN, set by ctest).
std::string CrescentBin();
// The repository root ($CRESCENT_SOURCE_DIR or the working directory).
std::string SourceDir();

// A real etcd (Debian etcd-server) on free loopback ports.
class EtcdServer {
 public:
  EtcdServer();
  bool ok() const { return ok_; }
  uint16_t port() const { return client_port_; }
  std::string endpoint() const;  // "127.0.0.1:PORT"
  Subprocess& process() { return *proc_; }

 private:
  TempDir dir_;
  uint16_t client_port_ = 0;
  std::unique_ptr<Subprocess> proc_;
  bool ok_ = false;
};

// A real redis-server on a free loopback port, no persistence.
class RedisServer {
 public:
  RedisServer();
  bool ok() const { return ok_; }
  uint16_t port() const { return port_; }
  Subprocess& process() { return *proc_; }

 private:
  uint16_t port_ = 0;
  std::unique_ptr<Subprocess> proc_;
  bool ok_ = false;
};

}  // namespace crescent::testing
