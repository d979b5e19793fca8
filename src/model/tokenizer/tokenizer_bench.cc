// Encoding throughput of the real Qwen3 tokenizer on one core.
//
//   cmake --build build --target tokenizer_bench
//   build/src/model/tokenizer/tokenizer_bench [model_dir] [runs]
//
// Texts (present on every Debian machine, so runs are comparable):
//   english: /usr/share/common-licenses/GPL-3 (plain English prose)
//   100k:    the files of /usr/share/common-licenses, concatenated (and
//            repeated) until the document is 100,000 tokens
// For each text: median MB/s (bytes / thread CPU time) over `runs` runs with the word cache warm (the
// steady state of a server), and with the cache disabled (the reference:
// every pre-token word is BPE-merged, as for a never-seen document).
#include <algorithm>
#include <ctime>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "common/config.h"
#include "model/tokenizer/tokenizer.h"

namespace {

// CPU time of this thread: the machine is shared, and a one-core figure
// should not count time spent waiting for the core.
double ThreadSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double MedianMBps(const crescent::Tokenizer& tok, const std::string& text, int runs, size_t* tokens) {
  std::vector<double> rates;
  for (int i = 0; i < runs; ++i) {
    const double start = ThreadSeconds();
    const auto ids = tok.Encode(text);
    const double s = ThreadSeconds() - start;
    *tokens = ids.size();
    rates.push_back(static_cast<double>(text.size()) / s / 1e6);
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : ".cache/tokenizer-qwen3";
  const int runs = argc > 2 ? std::max(1, std::atoi(argv[2])) : 7;
  auto warm = crescent::Tokenizer::Load(dir);
  crescent::TokenizerOptions no_cache;
  no_cache.word_cache_capacity = 0;
  auto cold = crescent::Tokenizer::Load(dir, no_cache);
  if (!warm.ok() || !cold.ok()) {
    std::fprintf(stderr, "cannot load %s: %s\n", dir.c_str(), warm.status().ToString().c_str());
    return 1;
  }
  auto english = crescent::ReadFile("/usr/share/common-licenses/GPL-3");
  if (!english.ok()) {
    std::fprintf(stderr, "%s\n", english.status().ToString().c_str());
    return 1;
  }
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator("/usr/share/common-licenses")) {
    if (e.is_regular_file()) files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  std::string doc;
  while ((*warm)->Encode(doc).size() < 100000) {
    for (const auto& f : files) doc += crescent::ReadFile(f).value_or("");
  }
  // Trim to the longest prefix of at most 100k tokens (binary search on bytes).
  size_t lo = 0, hi = doc.size();
  while (lo < hi) {
    const size_t mid = (lo + hi + 1) / 2;
    if ((*warm)->Encode(std::string_view(doc).substr(0, mid)).size() <= 100000) lo = mid; else hi = mid - 1;
  }
  doc.resize(lo);

  std::printf("%-10s %10s %10s %14s %14s\n", "text", "bytes", "tokens", "warm MB/s", "no-cache MB/s");
  for (const auto& [name, text] : {std::pair<const char*, const std::string*>{"english", &*english}, {"100k", &doc}}) {
    size_t tokens = 0;
    const double w = MedianMBps(**warm, *text, runs, &tokens);
    const double c = MedianMBps(**cold, *text, runs, &tokens);
    std::printf("%-10s %10zu %10zu %14.2f %14.2f\n", name, text->size(), tokens, w, c);
  }
  return 0;
}
