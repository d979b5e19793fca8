#include "transfer/memory_metadata.h"

#include <map>
#include <mutex>

namespace crescent::transfer {
namespace {

class InProcessMetadataStore final : public MetadataStore {
 public:
  Status Put(std::string_view key, std::string_view value) override {
    std::lock_guard lock(mu_);
    map_[std::string(key)] = std::string(value);
    return OkStatus();
  }
  StatusOr<std::string> Get(std::string_view key) override {
    std::lock_guard lock(mu_);
    auto it = map_.find(std::string(key));
    if (it == map_.end()) return NotFoundError(std::string(key) + " not found");
    return it->second;
  }
  Status Delete(std::string_view key) override {
    std::lock_guard lock(mu_);
    map_.erase(std::string(key));
    return OkStatus();
  }
  StatusOr<std::vector<std::pair<std::string, std::string>>> List(std::string_view prefix) override {
    std::lock_guard lock(mu_);
    std::vector<std::pair<std::string, std::string>> out;
    for (auto it = map_.lower_bound(std::string(prefix));
         it != map_.end() && it->first.starts_with(prefix); ++it)
      out.push_back(*it);
    return out;
  }
  std::string Describe() const override { return "in-process metadata"; }

 private:
  std::mutex mu_;
  std::map<std::string, std::string> map_;
};

}  // namespace

std::shared_ptr<MetadataStore> NewInProcessMetadataStore() {
  return std::make_shared<InProcessMetadataStore>();
}

}  // namespace crescent::transfer
