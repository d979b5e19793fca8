// ChildProcess: exit reporting, log tails, stopping a whole process group
// (including a child that ignores SIGTERM), and the death signal when the
// supervising process dies without cleaning up.
#include "cluster/child_process.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "common/testutil.h"

namespace crescent::cluster {
namespace {

using namespace std::chrono_literals;
using crescent::testing::TempDir;

bool Alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string s;
  if (!std::getline(stat, s)) return false;
  size_t paren = s.rfind(')');
  return paren != std::string::npos && s[paren + 2] != 'Z';
}

std::unique_ptr<ChildProcess> SpawnShell(const TempDir& dir, const std::string& script,
                                         const std::string& name = "sh") {
  auto c = ChildProcess::Spawn({name, {"/bin/sh", "-c", script}, {{"GREETING", "hello"}},
                                dir.path() + "/" + name + ".log"});
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(*c) : nullptr;
}

TEST(ChildProcessTest, ReportsExitAndKeepsTheLogTail) {
  TempDir dir;
  auto c = SpawnShell(dir, "for i in 1 2 3 4 5; do echo line $i; done; echo $GREETING >&2; exit 3");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->Wait(), 3);
  EXPECT_FALSE(c->Running());
  EXPECT_EQ(c->DescribeExit(), "exited with status 3");
  EXPECT_EQ(c->LogTail(2), "  | line 5\n  | hello\n");
}

TEST(ChildProcessTest, ExecFailureIsStatus127) {
  TempDir dir;
  auto c = ChildProcess::Spawn({"ghost", {"/no/such/program"}, {}, dir.path() + "/ghost.log"});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->Wait(), 127);
  EXPECT_NE((*c)->LogTail().find("cannot execute"), std::string::npos);
}

TEST(ChildProcessTest, StopEndsTheGroupEvenWhenSigtermIsIgnored) {
  TempDir dir;
  // The shell ignores TERM and starts a grandchild that does too.
  auto c = SpawnShell(dir, "trap '' TERM; sh -c \"trap '' TERM; echo $$ > " + dir.path() +
                               "/grandchild; while :; do sleep 0.05; done\" & "
                               "while :; do sleep 0.05; done");
  ASSERT_NE(c, nullptr);
  pid_t grandchild = 0;
  for (int i = 0; i < 200 && grandchild == 0; ++i) {
    std::ifstream(dir.path() + "/grandchild") >> grandchild;
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_GT(grandchild, 0);
  auto t0 = std::chrono::steady_clock::now();
  c->Stop(200ms);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  EXPECT_EQ(c->DescribeExit(), "killed by signal 9 (Killed)");
  for (int i = 0; i < 100 && Alive(grandchild); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_FALSE(Alive(grandchild));
  c->Stop();  // again: a no-op
}

TEST(ChildProcessTest, StopIsGentleFirst) {
  TempDir dir;
  auto c = SpawnShell(dir, "trap 'echo bye; exit 0' TERM; while :; do sleep 0.05; done");
  ASSERT_NE(c, nullptr);
  std::this_thread::sleep_for(100ms);  // let the shell install its trap
  c->Stop(5s);
  EXPECT_EQ(c->DescribeExit(), "exited with status 0");
  EXPECT_NE(c->LogTail().find("bye"), std::string::npos);
}

TEST(ChildProcessTest, DiesWithItsSupervisor) {
  TempDir dir;
  std::string pid_file = dir.path() + "/child.pid";
  // A supervisor process spawns a child, writes its pid, and is killed -9.
  pid_t supervisor = fork();
  if (supervisor == 0) {
    auto c = ChildProcess::Spawn({"sleeper", {"/bin/sleep", "60"}, {}, dir.path() + "/s.log"});
    if (!c.ok()) _exit(1);
    std::ofstream(pid_file) << (*c)->pid();
    pause();
    _exit(0);
  }
  pid_t child = 0;
  for (int i = 0; i < 300 && child == 0; ++i) {
    std::ifstream(pid_file) >> child;
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_GT(child, 0);
  EXPECT_TRUE(Alive(child));
  kill(supervisor, SIGKILL);
  waitpid(supervisor, nullptr, 0);
  for (int i = 0; i < 300 && Alive(child); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_FALSE(Alive(child)) << "the child outlived its supervisor";
}

}  // namespace
}  // namespace crescent::cluster
