#include "model/tokenizer/bpe.h"

#include <algorithm>
#include <array>
#include <functional>
#include <mutex>

#include "model/tokenizer/byte_level.h"

namespace crescent::tokenizer {
namespace {

// Open-addressing map (left id, right id) -> (rank, merged id). A flat table
// of 64-bit keys is several times faster than std::unordered_map here, and
// merge lookups are the inner loop of BPE.
class MergeTable {
 public:
  struct Entry {
    uint64_t key = kEmpty;
    uint32_t rank = 0;
    int32_t id = 0;
  };
  static constexpr uint64_t kEmpty = ~0ull;

  void Reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    table_.assign(cap, Entry{});
    mask_ = cap - 1;
  }
  // Keeps the first (lowest-rank) entry for a pair, as HF does.
  void Insert(int32_t left, int32_t right, uint32_t rank, int32_t id) {
    const uint64_t key = Key(left, right);
    for (size_t i = Hash(key) & mask_;; i = (i + 1) & mask_) {
      if (table_[i].key == key) return;
      if (table_[i].key == kEmpty) {
        table_[i] = {key, rank, id};
        return;
      }
    }
  }
  const Entry* Find(int32_t left, int32_t right) const {
    const uint64_t key = Key(left, right);
    for (size_t i = Hash(key) & mask_;; i = (i + 1) & mask_) {
      if (table_[i].key == key) return &table_[i];
      if (table_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static uint64_t Key(int32_t l, int32_t r) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
  }
  static size_t Hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return static_cast<size_t>(k);
  }
  std::vector<Entry> table_;
  size_t mask_ = 0;
};

// One shard of the word cache; shards keep lock contention low when many
// request threads encode at once.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
struct CacheShard {
  std::mutex mu;
  std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> words;  // guarded by mu
};
constexpr size_t kCacheShards = 16;

}  // namespace

struct BpeModel::Impl {
  // Constant after construction.
  BpeOptions options;
  std::array<int32_t, 256> byte_ids{};               // id of each single byte, -1 if none
  MergeTable merges;
  std::unordered_map<std::string, int32_t> words;    // raw bytes -> id (ignore_merges)
  // Word cache, each shard locked on its own.
  mutable std::array<CacheShard, kCacheShards> cache;

  void Merge(std::string_view word, std::vector<int32_t>* out) const;
};

void BpeModel::Impl::Merge(std::string_view word, std::vector<int32_t>* out) const {
  if (options.ignore_merges) {
    auto it = words.find(std::string(word));
    if (it != words.end()) {
      out->push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  struct Candidate {
    uint32_t rank;
    int32_t pos;
    int32_t id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  // Reused per thread: BPE runs once per pre-token word, so per-call
  // allocations would dominate for short words.
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  symbols.clear();
  heap.clear();
  for (unsigned char b : word) {
    int32_t id = byte_ids[b] >= 0 ? byte_ids[b] : options.unk_id;
    if (id < 0) continue;
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, n + 1, true});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;
  const auto n = static_cast<int32_t>(symbols.size());
  const auto push = [&](const Candidate& c) {
    heap.push_back(c);
    std::push_heap(heap.begin(), heap.end(), std::greater<>{});
  };
  for (int32_t i = 0; i + 1 < n; ++i) {
    if (const auto* m = merges.Find(symbols[i].id, symbols[i + 1].id)) push({m->rank, i, m->id});
  }
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>{});
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const auto* m = merges.Find(left.id, right.id);
    if (m == nullptr || m->id != top.id) continue;  // stale entry
    left.id = top.id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const auto* pm = merges.Find(symbols[left.prev].id, left.id)) push({pm->rank, left.prev, pm->id});
    }
    if (left.next >= 0) {
      if (const auto* nm = merges.Find(left.id, symbols[left.next].id)) push({nm->rank, top.pos, nm->id});
    }
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out->push_back(symbols[i].id);
}

std::unique_ptr<BpeModel> BpeModel::Create(
    const std::unordered_map<std::string, int32_t>& vocab,
    const std::vector<std::pair<std::string, std::string>>& merges,
    const BpeOptions& options, std::string* error) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  for (int b = 0; b < 256; ++b) {
    auto it = vocab.find(BytesToToken(std::string_view(reinterpret_cast<const char*>(&b), 1)));
    impl->byte_ids[b] = it == vocab.end() ? -1 : it->second;
  }
  impl->merges.Reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    auto ia = vocab.find(a), ib = vocab.find(b), iab = vocab.find(a + b);
    if (ia == vocab.end() || ib == vocab.end() || iab == vocab.end()) {
      *error = "merge #" + std::to_string(rank) + " (\"" + a + "\", \"" + b +
               "\") names a token that is not in model.vocab";
      return nullptr;
    }
    impl->merges.Insert(ia->second, ib->second, static_cast<uint32_t>(rank), iab->second);
  }
  if (options.ignore_merges) {
    for (const auto& [token, id] : vocab) {
      std::string bytes = TokenToBytes(token);
      if (BytesToToken(bytes) == token) impl->words.emplace(std::move(bytes), id);
    }
  }
  return std::unique_ptr<BpeModel>(new BpeModel(std::move(impl)));
}

BpeModel::BpeModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeModel::~BpeModel() = default;

void BpeModel::EncodeWordUncached(std::string_view word, std::vector<int32_t>* out) const {
  impl_->Merge(word, out);
}

void BpeModel::EncodeWord(std::string_view word, std::vector<int32_t>* out) const {
  if (word.size() == 1) {  // the common single-byte case needs no merge and no lock
    const int32_t id = impl_->byte_ids[static_cast<unsigned char>(word[0])];
    if (id >= 0 || impl_->options.unk_id >= 0) out->push_back(id >= 0 ? id : impl_->options.unk_id);
    return;
  }
  if (word.size() > impl_->options.cache_max_word_bytes || impl_->options.cache_words == 0) {
    impl_->Merge(word, out);
    return;
  }
  // Shard by a different mix of bits than the map inside the shard uses.
  const size_t h = StringHash{}(word);
  CacheShard& shard = impl_->cache[(h >> 48) % kCacheShards];
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.words.find(word);
    if (it != shard.words.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t start = out->size();
  impl_->Merge(word, out);
  std::lock_guard<std::mutex> lock(shard.mu);
  // Like HF's cache: once full it stops admitting words (no eviction churn).
  if (shard.words.size() < impl_->options.cache_words / kCacheShards) {
    shard.words.emplace(std::string(word), std::vector<int32_t>(out->begin() + start, out->end()));
  }
}

}  // namespace crescent::tokenizer
