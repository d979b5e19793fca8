#include "transfer/segment_descriptor.h"

#include <gtest/gtest.h>

namespace crescent::transfer {
namespace {

SegmentDescriptor Sample() {
  SegmentDescriptor d;
  d.name = "prefill-0";
  d.instance = 0x0123456789abcdefull;
  d.host_id = HostId();
  d.host = "127.0.0.1";
  d.tcp_port = 4242;
  d.shm_socket = "crescent-shm-1-0123456789abcdef";
  d.pid = 77;
  d.buffers = {{0, 0, 4096, true}, {1, 8192, 100, false}};
  return d;
}

TEST(SegmentDescriptorTest, RoundTripsThroughJson) {
  auto d = DecodeSegmentDescriptor(EncodeSegmentDescriptor(Sample()));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->name, "prefill-0");
  EXPECT_EQ(d->instance, 0x0123456789abcdefull);
  EXPECT_EQ(d->tcp_port, 4242);
  EXPECT_EQ(d->shm_socket, "crescent-shm-1-0123456789abcdef");
  ASSERT_EQ(d->buffers.size(), 2u);
  EXPECT_EQ(d->buffers[1].offset, 8192u);
  EXPECT_FALSE(d->buffers[1].shm);
}

TEST(SegmentDescriptorTest, FindsOnlyRangesInsideOneBuffer) {
  SegmentDescriptor d = Sample();
  ASSERT_NE(d.Find(0, 4096), nullptr);
  EXPECT_EQ(d.Find(4095, 1)->id, 0u);
  EXPECT_EQ(d.Find(4095, 2), nullptr);      // runs past the buffer
  EXPECT_EQ(d.Find(4096, 1), nullptr);      // the gap
  EXPECT_EQ(d.Find(8192 + 50, 50)->id, 1u);
  EXPECT_EQ(d.Find(8192 + 50, 51), nullptr);
  EXPECT_EQ(d.Find(UINT64_MAX, 2), nullptr);  // no overflow
}

TEST(SegmentDescriptorTest, RejectsMalformedInputNamingTheField) {
  EXPECT_FALSE(DecodeSegmentDescriptor("not json").ok());
  EXPECT_FALSE(DecodeSegmentDescriptor("[1,2]").ok());
  auto no_port = DecodeSegmentDescriptor(
      R"({"version":1,"name":"a","instance":"0000000000000001","host_id":"h","host":"x",)"
      R"("shm_socket":"","pid":1,"buffers":[]})");
  ASSERT_FALSE(no_port.ok());
  EXPECT_NE(no_port.status().message().find("tcp_port"), std::string::npos);
  auto future = DecodeSegmentDescriptor(R"({"version":99})");
  ASSERT_FALSE(future.ok());
  EXPECT_NE(future.status().message().find("version 99"), std::string::npos);
  SegmentDescriptor overlap = Sample();
  overlap.buffers[1].offset = 100;
  EXPECT_FALSE(DecodeSegmentDescriptor(EncodeSegmentDescriptor(overlap)).ok());
}

}  // namespace
}  // namespace crescent::transfer
