// cuBLAS is opened on first use, not at start (cublas_loader.h).
#include "model/cuda/cublas_loader.h"

#include <cublas_v2.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/testutil.h"

namespace crescent::model::cuda {
namespace {

std::string Maps(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/maps");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A `crescent master` (built with the CUDA backend) maps neither cuBLAS nor
// the shared CUDA runtime: the 1.3 s and ~210 MB they cost at start are
// paid only by processes that run a model on a GPU.
TEST(CublasLoaderTest, ProcessesThatNeverUseAGpuDoNotLoadCublas) {
  const uint16_t port = testing::FreePort();
  testing::Subprocess master({testing::CrescentBin(), "master", "--port", std::to_string(port),
                              "--metrics-port", std::to_string(testing::FreePort())});
  ASSERT_TRUE(testing::WaitForPort(port, std::chrono::seconds(20))) << master.Log();
  const std::string maps = Maps(master.pid());
  ASSERT_FALSE(maps.empty());
  EXPECT_EQ(maps.find("libcublas"), std::string::npos);
  EXPECT_EQ(maps.find("libcudart"), std::string::npos);
}

// Where the toolkit is installed (as on CI and build machines), both
// libraries open on the first call, and this process has them mapped after.
TEST(CublasLoaderTest, OpensTheLibrariesOnFirstUse) {
  EXPECT_EQ(Maps(getpid()).find("libcublasLt"), std::string::npos);
  const std::string error = CublasLoadError();
  if (!error.empty()) GTEST_SKIP() << "cuBLAS is not installed here: " << error;
  EXPECT_NE(Maps(getpid()).find("libcublasLt"), std::string::npos);
  // Every entry point the backend calls resolves in them.
  EXPECT_EQ(MissingCublasSymbols(), std::vector<std::string>{});
  // A call that needs no GPU reaches the library (which words it its way).
  EXPECT_STRNE(cublasGetStatusString(CUBLAS_STATUS_SUCCESS), "cuBLAS is not loaded");
}

}  // namespace
}  // namespace crescent::model::cuda
