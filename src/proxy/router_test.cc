// The routing core without I/O: membership, drain, health, in-flight
// accounting and the three policies.
#include "proxy/router.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "proxy/prefix_hash.h"

namespace crescent::proxy {
namespace {

RequestInfo Tokens(int64_t n) {
  RequestInfo i;
  i.tokens = n;
  return i;
}

std::string PickAddr(Router& r, Role role, const RequestInfo& info = {},
                     const std::vector<uint64_t>& exclude = {}) {
  auto lease = r.Pick(role, info, exclude);
  EXPECT_TRUE(lease.ok()) << lease.status().ToString();
  return lease.ok() ? lease->address() : "";
}

TEST(RouterTest, RoundRobinVisitsEveryInstanceInTurn) {
  Router r(PolicyKind::kRoundRobin);
  ASSERT_TRUE(r.Add(Role::kDecode, "127.0.0.1:1").ok());
  ASSERT_TRUE(r.Add(Role::kDecode, "127.0.0.1:2").ok());
  ASSERT_TRUE(r.Add(Role::kDecode, "127.0.0.1:3").ok());
  std::map<std::string, int> seen;
  for (int i = 0; i < 9; ++i) seen[PickAddr(r, Role::kDecode)]++;
  EXPECT_EQ(seen.size(), 3u);
  for (auto& [a, n] : seen) EXPECT_EQ(n, 3) << a;
}

TEST(RouterTest, RolesAreSeparate) {
  Router r(PolicyKind::kRoundRobin);
  ASSERT_TRUE(r.Add(Role::kPrefill, "127.0.0.1:1").ok());
  auto none = r.Pick(Role::kDecode, {});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(none.status().message().find("no decode instance"), std::string::npos);
  EXPECT_EQ(PickAddr(r, Role::kPrefill), "127.0.0.1:1");
}

TEST(RouterTest, AddRejectsBadAddressesAndDuplicates) {
  Router r(PolicyKind::kRoundRobin);
  EXPECT_EQ(r.Add(Role::kDecode, "no-port").code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(r.Add(Role::kDecode, "localhost:8200").ok());
  EXPECT_EQ(r.Add(Role::kDecode, "localhost:8200").code(), StatusCode::kAlreadyExists);
  // The same address may serve both roles (kv_both).
  EXPECT_TRUE(r.Add(Role::kPrefill, "localhost:8200").ok());
  EXPECT_EQ(r.Remove(Role::kDecode, "localhost:9999").code(), StatusCode::kNotFound);
}

TEST(RouterTest, LeaseCountsInFlightUntilReleased) {
  Router r(PolicyKind::kLeastLoaded);
  ASSERT_TRUE(r.Add(Role::kDecode, "h:1").ok());
  {
    auto a = r.Pick(Role::kDecode, Tokens(100));
    auto b = r.Pick(Role::kDecode, Tokens(50));
    ASSERT_TRUE(a.ok() && b.ok());
    auto st = r.Instances();
    ASSERT_EQ(st.size(), 1u);
    EXPECT_EQ(st[0].in_flight_requests, 2);
    EXPECT_EQ(st[0].in_flight_tokens, 150);
    a->Release();
    EXPECT_EQ(r.Instances()[0].in_flight_tokens, 50);
    Lease moved = std::move(*b);  // moving does not count twice
    EXPECT_EQ(r.Instances()[0].in_flight_requests, 1);
  }
  EXPECT_EQ(r.Instances()[0].in_flight_requests, 0);
  EXPECT_EQ(r.Instances()[0].in_flight_tokens, 0);
  EXPECT_EQ(r.Instances()[0].requests_total, 2u);
}

TEST(RouterTest, RemoveDrainsThenLeavesWhenInFlightEnds) {
  Router r(PolicyKind::kRoundRobin);
  ASSERT_TRUE(r.Add(Role::kDecode, "h:1").ok());
  ASSERT_TRUE(r.Add(Role::kDecode, "h:2").ok());
  auto busy = r.Pick(Role::kDecode, Tokens(1));  // on h:1
  ASSERT_TRUE(busy.ok());
  std::string busy_addr = busy->address();
  ASSERT_TRUE(r.Remove(Role::kDecode, busy_addr).ok());
  // Still listed (draining), but gets nothing new.
  auto st = r.Instances();
  ASSERT_EQ(st.size(), 2u);
  for (int i = 0; i < 5; ++i) EXPECT_NE(PickAddr(r, Role::kDecode), busy_addr);
  EXPECT_EQ(r.Available(Role::kDecode), 1u);
  busy->Release();
  st = r.Instances();
  ASSERT_EQ(st.size(), 1u);
  EXPECT_NE(st[0].address, busy_addr);
  // An idle instance leaves at once.
  ASSERT_TRUE(r.Remove(Role::kDecode, st[0].address).ok());
  EXPECT_TRUE(r.Instances().empty());
}

TEST(RouterTest, ReAddCancelsDrain) {
  Router r(PolicyKind::kRoundRobin);
  ASSERT_TRUE(r.Add(Role::kPrefill, "h:1").ok());
  auto busy = r.Pick(Role::kPrefill, {});
  ASSERT_TRUE(busy.ok());
  ASSERT_TRUE(r.Remove(Role::kPrefill, "h:1").ok());
  EXPECT_FALSE(r.Pick(Role::kPrefill, {}).ok());
  ASSERT_TRUE(r.Add(Role::kPrefill, "h:1").ok());
  busy->Release();
  EXPECT_EQ(PickAddr(r, Role::kPrefill), "h:1");
}

TEST(RouterTest, ProbesTakeInstancesOutAndBringThemBack) {
  RouterOptions o;
  o.unhealthy_after = 2;
  o.healthy_after = 1;
  Router r(PolicyKind::kRoundRobin, o);
  ASSERT_TRUE(r.Add(Role::kDecode, "h:1").ok());
  ASSERT_TRUE(r.Add(Role::kDecode, "h:2").ok());
  Status down = UnavailableError("cannot reach h:1: connection refused");
  EXPECT_FALSE(r.ReportProbe(Role::kDecode, "h:1", down));
  EXPECT_EQ(r.Available(Role::kDecode), 2u);  // one failure is not enough
  EXPECT_TRUE(r.ReportProbe(Role::kDecode, "h:1", down));  // this one took it out
  EXPECT_FALSE(r.ReportProbe(Role::kDecode, "h:1", down));
  EXPECT_EQ(r.Available(Role::kDecode), 1u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(PickAddr(r, Role::kDecode), "h:2");
  auto st = r.Instances();
  EXPECT_FALSE(st[0].healthy);
  EXPECT_NE(st[0].last_error.find("connection refused"), std::string::npos);
  ASSERT_FALSE(r.RecentErrors().empty());
  r.ReportProbe(Role::kDecode, "h:1", OkStatus());
  EXPECT_EQ(r.Available(Role::kDecode), 2u);
}

TEST(RouterTest, UnreachableFailureTakesInstanceOutAtOnce) {
  Router r(PolicyKind::kRoundRobin);
  ASSERT_TRUE(r.Add(Role::kDecode, "h:1").ok());
  ASSERT_TRUE(r.Add(Role::kDecode, "h:2").ok());
  auto l = r.Pick(Role::kDecode, {});
  ASSERT_TRUE(l.ok());
  std::string dead = l->address();
  r.ReportFailure(*l, "req-1", UnavailableError("connection refused"), /*unreachable=*/true);
  EXPECT_EQ(r.Available(Role::kDecode), 1u);
  auto errs = r.RecentErrors();
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0].request_id, "req-1");
  EXPECT_EQ(errs[0].address, dead);
  // A request-level failure that is not a connection failure keeps it.
  auto other = r.Pick(Role::kDecode, {});
  ASSERT_TRUE(other.ok());
  r.ReportFailure(*other, "req-2", InternalError("HTTP 500"), false);
  EXPECT_EQ(r.Available(Role::kDecode), 1u);
}

TEST(RouterTest, ExcludeSkipsTriedInstances) {
  Router r(PolicyKind::kRoundRobin);
  ASSERT_TRUE(r.Add(Role::kDecode, "h:1").ok());
  ASSERT_TRUE(r.Add(Role::kDecode, "h:2").ok());
  auto first = r.Pick(Role::kDecode, {});
  ASSERT_TRUE(first.ok());
  std::vector<uint64_t> tried{first->instance_id()};
  for (int i = 0; i < 4; ++i) EXPECT_NE(PickAddr(r, Role::kDecode, {}, tried), first->address());
  auto st = r.Pick(Role::kDecode, {}, {1, 2});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.status().message().find("2 already tried"), std::string::npos);
}

TEST(RouterTest, LeastLoadedFollowsInFlightTokens) {
  Router r(PolicyKind::kLeastLoaded);
  ASSERT_TRUE(r.Add(Role::kDecode, "h:1").ok());
  ASSERT_TRUE(r.Add(Role::kDecode, "h:2").ok());
  ASSERT_TRUE(r.Add(Role::kDecode, "h:3").ok());
  auto big = r.Pick(Role::kDecode, Tokens(10000));
  ASSERT_TRUE(big.ok());
  std::vector<Lease> held;
  // Small requests avoid the instance holding the big one until the
  // others carry as many tokens.
  for (int i = 0; i < 20; ++i) {
    auto l = r.Pick(Role::kDecode, Tokens(100));
    ASSERT_TRUE(l.ok());
    EXPECT_NE(l->address(), big->address());
    held.push_back(std::move(*l));
  }
  std::string big_addr = big->address();
  big->Release();
  // Now the idle one is the least loaded.
  auto l = r.Pick(Role::kDecode, Tokens(100));
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->address(), big_addr);
}

TEST(RouterTest, LeastLoadedSpreadsAnIdleCluster) {
  Router r(PolicyKind::kLeastLoaded);
  ASSERT_TRUE(r.Add(Role::kPrefill, "h:1").ok());
  ASSERT_TRUE(r.Add(Role::kPrefill, "h:2").ok());
  std::map<std::string, int> seen;
  for (int i = 0; i < 10; ++i) seen[PickAddr(r, Role::kPrefill, Tokens(5))]++;  // released at once
  EXPECT_EQ(seen.size(), 2u);
}

RequestInfo Prompt(std::string_view text, int64_t tokens = 100) {
  RequestInfo i;
  i.tokens = tokens;
  i.prefix_hashes = ChainedByteBlockHashes(text, 16);
  return i;
}

TEST(RouterTest, CacheAwareSendsSharedPrefixesToTheirHolder) {
  Router r(PolicyKind::kCacheAware);
  for (int p = 1; p <= 4; ++p) ASSERT_TRUE(r.Add(Role::kPrefill, fmt::format("h:{}", p)).ok());
  std::mt19937_64 rng(42);
  // Eight "documents"; requests are a document plus a distinct question.
  std::vector<std::string> docs;
  for (int d = 0; d < 8; ++d) {
    std::string s;
    for (int k = 0; k < 256; ++k) s.push_back(static_cast<char>('a' + rng() % 26));
    docs.push_back(s);
  }
  std::map<int, std::string> home;
  for (int i = 0; i < 200; ++i) {
    int d = static_cast<int>(rng() % docs.size());
    std::string prompt = docs[d] + fmt::format(" question {} ?", rng());
    std::string addr = PickAddr(r, Role::kPrefill, Prompt(prompt));
    if (!home.count(d)) home[d] = addr;
    EXPECT_EQ(addr, home[d]) << "document " << d << " moved";
  }
  // The documents were spread, not piled on one instance.
  std::map<std::string, int> per_instance;
  for (auto& [d, a] : home) per_instance[a]++;
  EXPECT_GE(per_instance.size(), 3u);
}

TEST(RouterTest, CacheAwareLeavesAnOverloadedHolder) {
  CacheAwareOptions c;
  c.overload_factor = 2.0;
  c.overload_slack_tokens = 1000;
  Router r(PolicyKind::kCacheAware, {}, c);
  ASSERT_TRUE(r.Add(Role::kDecode, "h:1").ok());
  ASSERT_TRUE(r.Add(Role::kDecode, "h:2").ok());
  std::string doc(512, 'x');
  auto first = r.Pick(Role::kDecode, Prompt(doc, 600));
  ASSERT_TRUE(first.ok());
  std::string holder = first->address();
  // Under the limit (600 <= 0*2+1000): stays with the holder.
  auto second = r.Pick(Role::kDecode, Prompt(doc + "b", 600));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->address(), holder);
  // Now 1200 in flight > 1000: the next goes to the idle instance.
  auto third = r.Pick(Role::kDecode, Prompt(doc + "c", 600));
  ASSERT_TRUE(third.ok());
  EXPECT_NE(third->address(), holder);
}

TEST(RouterTest, CacheAwareSkipsUnhealthyHolderAndForgetsRemoved) {
  Router r(PolicyKind::kCacheAware);
  ASSERT_TRUE(r.Add(Role::kDecode, "h:1").ok());
  ASSERT_TRUE(r.Add(Role::kDecode, "h:2").ok());
  std::string doc(256, 'q');
  std::string holder = PickAddr(r, Role::kDecode, Prompt(doc));
  std::string other = holder == "h:1" ? "h:2" : "h:1";
  r.ReportProbe(Role::kDecode, holder, UnavailableError("down"));
  r.ReportProbe(Role::kDecode, holder, UnavailableError("down"));
  EXPECT_EQ(PickAddr(r, Role::kDecode, Prompt(doc)), other);
  // The prefix now lives on `other`, also after the holder returns.
  r.ReportProbe(Role::kDecode, holder, OkStatus());
  EXPECT_EQ(PickAddr(r, Role::kDecode, Prompt(doc)), other);
}

TEST(PrefixHashTest, ChainsShareExactlyTheCommonBlocks) {
  std::vector<int32_t> a(100), b(100);
  for (int i = 0; i < 100; ++i) a[i] = b[i] = i;
  b[40] = -1;  // differs in block 2 (tokens 32..47) for blocks of 16
  auto ha = ChainedBlockHashes(a, 16), hb = ChainedBlockHashes(b, 16);
  ASSERT_EQ(ha.size(), 6u);  // 96 tokens in whole blocks
  EXPECT_EQ(ha[0], hb[0]);
  EXPECT_EQ(ha[1], hb[1]);
  for (size_t i = 2; i < ha.size(); ++i) EXPECT_NE(ha[i], hb[i]) << i;
  EXPECT_TRUE(ChainedByteBlockHashes("short", 16).empty());
}

TEST(PolicyTest, ParseNamesTheChoices) {
  EXPECT_TRUE(ParsePolicyKind("cache_aware").ok());
  auto bad = ParsePolicyKind("random");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("round_robin, least_loaded or cache_aware"),
            std::string::npos);
}

}  // namespace
}  // namespace crescent::proxy
