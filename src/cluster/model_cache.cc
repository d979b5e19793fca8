#include "cluster/model_cache.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>

#include "cluster/child_process.h"

namespace crescent::cluster {

namespace fs = std::filesystem;

std::string DefaultCacheDir() {
  if (const char* d = std::getenv("CRESCENT_CACHE_DIR"); d != nullptr && *d != '\0') return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d != nullptr && *d != '\0') {
    return std::string(d) + "/crescent";
  }
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : "/tmp") + "/.cache/crescent";
}

StatusOr<std::string> EnsureModel(const std::string& shape, const std::string& crescent_bin,
                                  const std::string& cache_dir) {
  std::string name = shape.rfind("qwen", 0) == 0 || shape.rfind("llama", 0) == 0
                         ? shape
                         : "qwen3-" + shape;
  fs::path dir = fs::path(cache_dir) / "models" / name;
  if (fs::exists(dir / "config.json") && fs::exists(dir / "tokenizer.json")) return dir.string();

  std::error_code ec;
  fs::create_directories(dir.parent_path(), ec);
  if (ec) return InternalError("cannot create " + dir.parent_path().string() + ": " + ec.message());
  fs::path tmp = dir.parent_path() / fmt::format(".{}.tmp-{}", name, getpid());
  fs::remove_all(tmp, ec);
  fs::path log = dir.parent_path() / fmt::format(".{}.log-{}", name, getpid());
  std::fprintf(stderr, "crescent up: making the %s model once into %s ...\n", name.c_str(),
               dir.c_str());
  ChildSpec spec{"make-model", {crescent_bin, "make-model", "--shape", shape, "--out", tmp.string()},
                 {}, log.string()};
  ASSIGN_OR_RETURN(auto child, ChildProcess::Spawn(std::move(spec)));
  int code = child->Wait();
  std::string tail = child->LogTail(10);
  fs::remove(log, ec);
  if (code != 0) {
    fs::remove_all(tmp, ec);
    return InternalError(fmt::format("crescent make-model --shape {} {}:\n{}", shape,
                                     child->DescribeExit(), tail));
  }
  if (!fs::exists(tmp / "tokenizer.json")) {
    fs::remove_all(tmp, ec);
    return FailedPreconditionError(
        "the Qwen3 tokenizer files were not found (make-model looks in .cache/tokenizer-qwen3 "
        "of the repository and $CRESCENT_TOKENIZER_DIR): run scripts/setup, or pass --model DIR");
  }
  fs::rename(tmp, dir, ec);
  if (ec && !fs::exists(dir / "config.json")) {  // another run may have won the race
    fs::remove_all(tmp, ec);
    return InternalError("cannot move the model into " + dir.string() + ": " + ec.message());
  }
  fs::remove_all(tmp, ec);
  return dir.string();
}

}  // namespace crescent::cluster
