#include "cluster/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <fstream>
#include <thread>

extern char** environ;

namespace crescent::cluster {
namespace {

// What the child runs between fork and exec: only async-signal-safe calls
// (the parent has threads). Never returns.
[[noreturn]] void ExecChild(pid_t parent, int log_fd, char* const* argv, char* const* envp) {
  setpgid(0, 0);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  // The parent may have died between fork and prctl: then nobody would
  // ever send the death signal.
  if (getppid() != parent) _exit(1);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig : {SIGINT, SIGTERM, SIGPIPE, SIGCHLD, SIGHUP}) signal(sig, SIG_DFL);
  int devnull = open("/dev/null", O_RDONLY);
  if (devnull >= 0) dup2(devnull, 0);
  dup2(log_fd, 1);
  dup2(log_fd, 2);
  execve(argv[0], argv, envp);
  const char msg[] = "crescent up: cannot execute the program (execve failed)\n";
  ssize_t ignored = write(2, msg, sizeof(msg) - 1);
  (void)ignored;
  _exit(127);
}

}  // namespace

StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Spawn(ChildSpec spec) {
  if (spec.argv.empty()) return InvalidArgumentError("ChildProcess: empty argv for " + spec.name);
  int log_fd = open(spec.log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) return ErrnoToStatus(errno, "cannot create log file " + spec.log_path);

  // Everything the child needs is built before fork (no malloc after it).
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string entry = *e;
    std::string key = entry.substr(0, entry.find('='));
    if (spec.env.count(key) == 0) env_strings.push_back(std::move(entry));
  }
  for (const auto& [k, v] : spec.env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_strings = spec.argv;
  std::vector<char*> argv;
  for (auto& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  // The log fd must survive exec as fds 1 and 2 only: dup2 clears CLOEXEC
  // on the duplicates, the original stays close-on-exec.
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(log_fd);
    return ErrnoToStatus(err, "cannot fork to start " + spec.name);
  }
  if (pid == 0) ExecChild(parent, log_fd, argv.data(), envp.data());
  close(log_fd);
  // Also from the parent, so that a Stop() right after Spawn() finds the group.
  setpgid(pid, pid);
  auto child = std::unique_ptr<ChildProcess>(new ChildProcess(std::move(spec)));
  child->pid_ = pid;
  return child;
}

ChildProcess::~ChildProcess() { Stop(); }

bool ChildProcess::Running() {
  if (reaped_) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == 0) return true;
  reaped_ = true;
  if (r == pid_) {
    raw_status_ = status;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  return false;
}

int ChildProcess::Wait() {
  while (!reaped_) {
    int status = 0;
    pid_t r = waitpid(pid_, &status, 0);
    if (r < 0 && errno == EINTR) continue;
    reaped_ = true;
    if (r == pid_) {
      raw_status_ = status;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
  }
  return exit_code_;
}

std::string ChildProcess::DescribeExit() const {
  if (!reaped_) return "running";
  if (WIFSIGNALED(raw_status_)) {
    int sig = WTERMSIG(raw_status_);
    return "killed by signal " + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  return "exited with status " + std::to_string(exit_code_);
}

void ChildProcess::Terminate() {
  if (pid_ > 0 && Running()) kill(-pid_, SIGTERM);
}

void ChildProcess::Stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return;
  if (Running()) {
    kill(-pid_, SIGTERM);
    auto deadline = std::chrono::steady_clock::now() + grace;
    while (Running() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  // Whatever is left in the group (the child itself after the grace, or
  // anything it started) goes now.
  kill(-pid_, SIGKILL);
  if (!reaped_) {
    int status = 0;
    if (waitpid(pid_, &status, 0) == pid_) {
      raw_status_ = status;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    reaped_ = true;
  }
}

std::string ChildProcess::LogTail(size_t lines) const {
  std::ifstream in(spec_.log_path);
  std::deque<std::string> tail;
  std::string line;
  while (std::getline(in, line)) {
    tail.push_back(std::move(line));
    if (tail.size() > lines) tail.pop_front();
  }
  std::string out;
  for (const auto& l : tail) out += "  | " + l + "\n";
  return out;
}

}  // namespace crescent::cluster
