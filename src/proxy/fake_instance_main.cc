// crescent_fake_instance: a FakeInstance as its own process, for tests that
// kill -9 an instance and for benchmarks.
//   crescent_fake_instance --port P [--name N] [--token-interval-ms T] [--io-threads K]
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "proxy/fake_instance.h"

int main(int argc, char** argv) {
  std::string name = "fake";
  uint16_t port = 0;
  int io_threads = 1;
  crescent::proxy::testing::FakeBehavior b;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--port") port = static_cast<uint16_t>(std::atoi(v));
    else if (k == "--name") name = v;
    else if (k == "--io-threads") io_threads = std::atoi(v);
    else if (k == "--token-interval-ms") b.token_interval = std::chrono::milliseconds(std::atoi(v));
    else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  auto f = crescent::proxy::testing::FakeInstance::Start(name, port, "fake-model", io_threads);
  if (!f.ok()) {
    std::fprintf(stderr, "%s\n", f.status().ToString().c_str());
    return 1;
  }
  (*f)->SetBehavior(b);
  std::printf("fake instance %s on %s\n", name.c_str(), (*f)->address().c_str());
  std::fflush(stdout);
  int sig;
  sigwait(&set, &sig);
  return 0;
}
