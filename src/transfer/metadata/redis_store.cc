// MetadataStore over a real redis-server (hiredis). An entry is a plain
// redis key with a PX expiry; the refresher extends the expiry of this
// client's keys every ttl/3. A marker key per client, "__crescent_lease/<id>"
// with the same expiry, tells a live client that redis lost its data
// (restart, FLUSHALL): then every entry it owns is written again. List is
// SCAN MATCH "<prefix>*" + MGET.
#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <mutex>
#include <random>

#include "transfer/metadata/backends.h"
#include "transfer/metadata/leased_store.h"

namespace crescent::transfer {
namespace {

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;
struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using Context = std::unique_ptr<redisContext, ContextDeleter>;

// The one place a hiredis failure becomes a Status.
Status RedisError(const redisContext* c, const std::string& addr, std::string_view what) {
  std::string msg = c && c->errstr[0] ? c->errstr : "unknown error";
  for (auto& ch : msg) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  // hiredis 0.14 (Debian 12) reports a timeout as an I/O error with EAGAIN.
  if (c && c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == ETIMEDOUT))
    return DeadlineExceededError(fmt::format("redis {}: {} timed out", addr, what));
  return UnavailableError(fmt::format("cannot reach redis {}: {} ({})", addr, msg, what));
}

// Escapes SCAN MATCH's glob characters.
std::string GlobEscape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

class RedisStore final : public LeasedStore {
 public:
  RedisStore(const MetadataServerSpec& spec, const MetadataOptions& options)
      : LeasedStore(options),
        host_(spec.endpoints[0].first),
        port_(spec.endpoints[0].second),
        addr_(fmt::format("{}:{}", host_, port_)) {
    std::random_device rd;
    marker_ = fmt::format("__crescent_lease/{:016x}", (uint64_t(rd()) << 32) ^ rd());
  }

  ~RedisStore() override {
    StopRefresher();
    if (!options().leased) return;
    // Entries of a closed client are stale at once: remove them now.
    auto owned = SnapshotOwned();
    owned.emplace(marker_, "");
    for (const auto& [k, v] : owned) BackendDelete(k).IgnoreError();
  }

  Status Init() {
    if (options().leased) {
      RETURN_IF_ERROR(SetMarker());
    } else {
      RETURN_IF_ERROR(Command({"PING"}).status());
    }
    StartRefresher();
    return OkStatus();
  }

  std::string Describe() const override { return "redis://" + addr_; }

 protected:
  Status BackendPut(std::string_view key, std::string_view value) override {
    std::vector<std::string_view> args{"SET", key, value};
    std::string ttl = std::to_string(options().ttl.count());
    if (options().leased) {
      args.push_back("PX");
      args.push_back(ttl);
    }
    return Command(args).status();
  }

  StatusOr<std::string> BackendGet(std::string_view key) override {
    ASSIGN_OR_RETURN(Reply r, Command({"GET", key}));
    if (r->type == REDIS_REPLY_NIL)
      return NotFoundError(fmt::format("metadata key '{}' not found at {}", key, Describe()));
    return std::string(r->str, r->len);
  }

  Status BackendDelete(std::string_view key) override { return Command({"DEL", key}).status(); }

  StatusOr<std::vector<std::pair<std::string, std::string>>> BackendList(std::string_view prefix) override {
    std::vector<std::string> keys;
    std::string cursor = "0";
    std::string pattern = GlobEscape(prefix) + "*";
    do {
      ASSIGN_OR_RETURN(Reply r, Command({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"}));
      if (r->type != REDIS_REPLY_ARRAY || r->elements != 2)
        return InternalError(fmt::format("redis {}: unexpected SCAN reply", addr_));
      cursor.assign(r->element[0]->str, r->element[0]->len);
      for (size_t i = 0; i < r->element[1]->elements; ++i)
        keys.emplace_back(r->element[1]->element[i]->str, r->element[1]->element[i]->len);
    } while (cursor != "0");
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());  // SCAN may repeat
    std::vector<std::pair<std::string, std::string>> out;
    constexpr size_t kBatch = 256;
    for (size_t i = 0; i < keys.size(); i += kBatch) {
      std::vector<std::string_view> args{"MGET"};
      for (size_t k = i; k < std::min(keys.size(), i + kBatch); ++k) args.push_back(keys[k]);
      ASSIGN_OR_RETURN(Reply r, Command(args));
      for (size_t k = 0; k < r->elements; ++k)
        if (r->element[k]->type == REDIS_REPLY_STRING)  // nil: expired meanwhile
          out.emplace_back(keys[i + k], std::string(r->element[k]->str, r->element[k]->len));
    }
    return out;
  }

  Status Refresh(const Owned& owned) override {
    const std::string ttl = std::to_string(options().ttl.count());
    ASSIGN_OR_RETURN(Reply m, Command({"PEXPIRE", marker_, ttl}));
    if (m->integer == 0) {
      spdlog::warn("metadata {}: redis lost this client's entries (restarted?); publishing {} again",
                   Describe(), owned.size());
      RETURN_IF_ERROR(SetMarker());
      for (const auto& [k, v] : owned) RETURN_IF_ERROR(BackendPut(k, v));
      return OkStatus();
    }
    // Extend each key; one pipelined round trip per connection.
    if (owned.empty()) return OkStatus();
    ASSIGN_OR_RETURN(Context c, Take());
    for (const auto& [k, v] : owned)
      redisAppendCommand(c.get(), "PEXPIRE %b %s", k.data(), k.size(), ttl.c_str());
    for (size_t i = 0; i < owned.size(); ++i) {
      void* raw = nullptr;
      if (redisGetReply(c.get(), &raw) != REDIS_OK) return RedisError(c.get(), addr_, "PEXPIRE");
      Reply r(static_cast<redisReply*>(raw));
    }
    Give(std::move(c));
    return OkStatus();
  }

 private:
  Status SetMarker() {
    return Command({"SET", marker_, "1", "PX", std::to_string(options().ttl.count())}).status();
  }

  StatusOr<Context> Take() {
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        Context c = std::move(idle_.back());
        idle_.pop_back();
        return c;
      }
    }
    auto ms = options().op_timeout.count();
    timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
    Context c(redisConnectWithTimeout(host_.c_str(), port_, tv));
    if (!c) return ResourceExhaustedError("redis: cannot allocate a context");
    if (c->err) return RedisError(c.get(), addr_, "connect");
    redisSetTimeout(c.get(), tv);
    return c;
  }

  void Give(Context c) {
    std::lock_guard lock(mu_);
    if (idle_.size() < 8) idle_.push_back(std::move(c));
  }

  // Runs one command; binary-safe arguments. Redis error replies become
  // Status; a broken connection is dropped and tried once more, fresh.
  StatusOr<Reply> Command(const std::vector<std::string_view>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (auto a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    for (int attempt = 0;; ++attempt) {
      ASSIGN_OR_RETURN(Context c, Take());
      Reply r(static_cast<redisReply*>(
          redisCommandArgv(c.get(), static_cast<int>(argv.size()), argv.data(), lens.data())));
      if (!r) {
        Status st = RedisError(c.get(), addr_, std::string(args[0]));
        if (attempt == 0 && st.code() == StatusCode::kUnavailable) continue;  // stale pooled connection
        return st;
      }
      Give(std::move(c));
      if (r->type == REDIS_REPLY_ERROR)
        return UnavailableError(fmt::format("redis {}: {} failed: {}", addr_, args[0], std::string(r->str, r->len)));
      return r;
    }
  }

  const std::string host_;
  const int port_;
  const std::string addr_;
  std::string marker_;  // constant after construction
  std::mutex mu_;
  std::vector<Context> idle_;  // guarded by mu_
};

}  // namespace

StatusOr<std::unique_ptr<MetadataStore>> OpenRedisMetadataStore(const MetadataServerSpec& spec,
                                                                const MetadataOptions& options) {
  auto store = std::make_unique<RedisStore>(spec, options);
  Status st = store->Init();
  if (!st.ok())
    return Status(st.code(), fmt::format("metadata server {}: {}; start redis-server there or fix "
                                         "metadata_server",
                                         store->Describe(), st.message()));
  return std::unique_ptr<MetadataStore>(std::move(store));
}

}  // namespace crescent::transfer
