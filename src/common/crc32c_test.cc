#include "common/crc32c.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "common/testutil.h"

namespace crescent {
namespace {

uint32_t Bitwise(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFF;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
  }
  return ~c;
}

TEST(Crc32cTest, KnownVectors) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(Crc32c("", 0), 0u);
  std::string zeros(32, '\0');
  EXPECT_EQ(Crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720 B.4
}

const char* Name(Crc32cPath path) {
  switch (path) {
    case Crc32cPath::kTable: return "table";
    case Crc32cPath::kSse42: return "sse4.2";
    case Crc32cPath::kFold: return "vpclmulqdq";
  }
  return "?";
}

// Every implementation this CPU can run, not only the one Crc32c picks.
TEST(Crc32cTest, EveryPathMatchesBitwiseReferenceAtEveryLengthAndAlignment) {
  auto data = testing::RandomBytes(70000, 7);
  for (Crc32cPath path : Crc32cPathsOnThisCpu()) {
    for (size_t n : {0, 1, 7, 8, 9, 23, 24, 255, 256, 511, 512, 513, 768, 1000, 1023, 3071, 3072,
                     3073, 4096, 9000, 65537}) {
      for (size_t shift : {0, 1, 5}) {
        const uint32_t want = Bitwise(data.data() + shift, n);
        EXPECT_EQ(Crc32cExtendWith(path, 0, data.data() + shift, n), want)
            << Name(path) << " n=" << n << " shift=" << shift;
        if (path == Crc32cPathsOnThisCpu().back()) {
          EXPECT_EQ(Crc32c(data.data() + shift, n), want) << "n=" << n << " shift=" << shift;
        }
      }
    }
  }
}

TEST(Crc32cTest, ExtendEqualsWhole) {
  auto data = testing::RandomBytes(10000, 8);
  uint32_t whole = Crc32c(data.data(), data.size());
  for (size_t cut : {0, 1, 4000, 9999, 10000}) {
    uint32_t part = Crc32c(data.data(), cut);
    EXPECT_EQ(Crc32cExtend(part, data.data() + cut, data.size() - cut), whole);
  }
}

TEST(Crc32cTest, CopyMovesTheBytesAndReturnsTheirCrcAtEveryLengthAndAlignment) {
  auto data = testing::RandomBytes(300000, 10);
  std::vector<uint8_t> out(data.size() + 128, 0xAB);
  for (Crc32cPath path : Crc32cPathsOnThisCpu()) {
    for (size_t n : {0, 1, 63, 511, 512, 767, 3071, 3072, 3073, 4096, 65536 + 17, 262144, 299000}) {
      for (size_t from : {0, 1, 7}) {
        for (size_t to : {0, 3, 64}) {
          std::fill(out.begin(), out.end(), 0xAB);
          ASSERT_EQ(Crc32cCopyWith(path, out.data() + to, data.data() + from, n),
                    Bitwise(data.data() + from, n))
              << Name(path) << ": " << n << " bytes from +" << from << " to +" << to;
          ASSERT_EQ(std::memcmp(out.data() + to, data.data() + from, n), 0) << n;
          // Nothing outside [to, to + n) is touched.
          for (size_t i = 0; i < to; ++i) ASSERT_EQ(out[i], 0xAB);
          for (size_t i = to + n; i < out.size(); ++i) ASSERT_EQ(out[i], 0xAB) << n << " at " << i;
        }
      }
    }
  }
  // What Crc32cCopy picks agrees too.
  ASSERT_EQ(Crc32cCopy(out.data(), data.data(), 262144), Bitwise(data.data(), 262144));
}

TEST(Crc32cTest, DetectsASingleFlippedBit) {
  auto data = testing::RandomBytes(1 << 20, 9);
  uint32_t before = Crc32c(data.data(), data.size());
  data[123457] ^= 0x10;
  EXPECT_NE(Crc32c(data.data(), data.size()), before);
}

}  // namespace
}  // namespace crescent
