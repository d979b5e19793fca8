#include "common/size.h"

#include <gtest/gtest.h>

namespace crescent {
namespace {

TEST(SizeTest, ParsesMooncakeForms) {
  EXPECT_EQ(*ParseSize("3355443200"), 3355443200ull);
  EXPECT_EQ(*ParseSize("3.125GB"), 3355443200ull);
  EXPECT_EQ(*ParseSize("512MiB"), 512ull << 20);
  EXPECT_EQ(*ParseSize("512 mb"), 512ull << 20);
  EXPECT_EQ(*ParseSize("64K"), 64ull << 10);
  EXPECT_EQ(*ParseSize("1tb"), 1ull << 40);
  EXPECT_EQ(*ParseSize("0"), 0ull);
}

TEST(SizeTest, RejectsGarbageWithHelpfulMessage) {
  for (const char* bad : {"", "GB", "12XB", "1.2.3GB", "-5", "99999999999999999999999"}) {
    auto r = ParseSize(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("3.125GB"), std::string::npos) << r.status().message();
  }
}

TEST(SizeTest, Formats) {
  EXPECT_EQ(FormatSize(512), "512 B");
  EXPECT_EQ(FormatSize(3355443200ull), "3.12 GiB");
}

}  // namespace
}  // namespace crescent
