// A child process that a supervisor (`crescent up`) owns: its own process
// group, dead with its parent, output in a log file, stopped gently.
//
// Why each property:
//   - Own process group: Ctrl-C in a terminal signals the foreground group;
//     children outside it are stopped by the supervisor in order (proxy,
//     instances, master) rather than all at once, and Stop() can signal the
//     whole group so that nothing a child started survives it.
//   - PR_SET_PDEATHSIG(SIGKILL): if the supervisor dies without cleaning up
//     (kill -9, crash), the kernel kills the child; no orphans. The kernel
//     ties this to the *thread* that forked: spawn from a thread that lives
//     as long as the supervisor (its main thread).
//   - Signal mask and dispositions reset in the child: the supervisor blocks
//     SIGINT/SIGTERM to sigwait() on them, and a blocked mask survives exec.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace crescent::cluster {

struct ChildSpec {
  std::string name;               // for messages: "prefill-0"
  std::vector<std::string> argv;  // argv[0] is a path (no PATH lookup)
  std::map<std::string, std::string> env;  // added to (or replacing) ours
  std::string log_path;           // stdout and stderr go here (truncated)
};

// Not thread-safe: one owner calls its methods.
class ChildProcess {
 public:
  // Forks and execs. An exec failure shows as an exit with status 127 and a
  // line in the log naming the program.
  static StatusOr<std::unique_ptr<ChildProcess>> Spawn(ChildSpec spec);
  ~ChildProcess();  // Stop(kDefaultGrace) when still running
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  static constexpr std::chrono::milliseconds kDefaultGrace{5000};

  const std::string& name() const { return spec_.name; }
  const std::string& log_path() const { return spec_.log_path; }
  pid_t pid() const { return pid_; }

  // Reaps without blocking; false once the process has exited.
  bool Running();
  // "exited with status 1", "killed by signal 9 (Killed)", or "running".
  std::string DescribeExit() const;
  int exit_code() const { return exit_code_; }  // 128+signal when signalled; -1 running

  // Blocks until the process exits; returns exit_code().
  int Wait();

  // SIGTERM to the process group without waiting (Stop() then waits):
  // lets several children shut down at the same time.
  void Terminate();

  // SIGTERM to the process group, up to `grace` for it to exit, then
  // SIGKILL to the group; reaps. Safe to call again or after an exit.
  void Stop(std::chrono::milliseconds grace = kDefaultGrace);

  // The last `lines` lines of the log file (for error messages).
  std::string LogTail(size_t lines = 20) const;

 private:
  explicit ChildProcess(ChildSpec spec) : spec_(std::move(spec)) {}

  ChildSpec spec_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int exit_code_ = -1;
  int raw_status_ = 0;  // from waitpid
};

}  // namespace crescent::cluster
