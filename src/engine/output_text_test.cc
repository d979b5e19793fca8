#include "engine/output_text.h"

#include <gtest/gtest.h>

namespace crescent::engine {
namespace {

TEST(OutputTextTest, NoStopStringsStreamsEverything) {
  OutputText t({}, false);
  EXPECT_FALSE(t.Append("Hello"));
  EXPECT_EQ(t.TakeDelta(false), "Hello");
  EXPECT_FALSE(t.Append(" world"));
  EXPECT_EQ(t.TakeDelta(false), " world");
  EXPECT_EQ(t.TakeDelta(true), "");
}

TEST(OutputTextTest, StopStringAcrossDeltasIsCutAndNeverStreamed) {
  OutputText t({"STOP"}, false);
  EXPECT_FALSE(t.Append("abc S"));
  // "S" (and up to 3 chars) is held back: it may begin "STOP".
  EXPECT_EQ(t.TakeDelta(false), "ab");
  EXPECT_FALSE(t.Append("TO"));
  EXPECT_EQ(t.TakeDelta(false), "c ");  // "STO" held back
  auto stop = t.Append("Pxyz");
  ASSERT_TRUE(stop);
  EXPECT_EQ(*stop, "STOP");
  EXPECT_EQ(t.TakeDelta(true), "");
  EXPECT_EQ(t.text(), "abc ");
}

TEST(OutputTextTest, IncludeStopStringKeepsIt) {
  OutputText t({"\n\n", "END"}, true);
  auto stop = t.Append("one END two");
  ASSERT_TRUE(stop);
  EXPECT_EQ(*stop, "END");
  EXPECT_EQ(t.TakeDelta(true), "one END");
}

TEST(OutputTextTest, EarliestStopWins) {
  OutputText t({"bb", "a"}, false);
  auto stop = t.Append("xbbya");
  ASSERT_TRUE(stop);
  EXPECT_EQ(*stop, "bb");
  EXPECT_EQ(t.TakeDelta(true), "x");
}

TEST(OutputTextTest, FinalFlushesHeldBackText) {
  OutputText t({"zzz"}, false);
  t.Append("hello z");
  EXPECT_EQ(t.TakeDelta(false), "hello");
  EXPECT_EQ(t.TakeDelta(true), " z");
}

TEST(OutputTextTest, HoldBackNeverSplitsAUtf8Character) {
  OutputText t({"xy"}, false);
  t.Append("a\xc3\xa9");  // "aé"; holding 1 byte back would split é
  EXPECT_EQ(t.TakeDelta(false), "a");
  t.Append("b");
  EXPECT_EQ(t.TakeDelta(false), "\xc3\xa9");
}

}  // namespace
}  // namespace crescent::engine
