// The transfer engine's metadata service: where segment descriptors and
// endpoints are published so that peers can find each other by name.
//
// One interface, three backends chosen by mooncake.json's metadata_server
// (see common/config.h MetadataServerSpec):
//   http://h:p/metadata  the embedded service (crescent metadata-server, or
//                        crescent master --enable-http-metadata-server)
//   etcd://h:p[,h:p]     a real etcd through its v3 API
//   redis://h:p          a real redis-server
//
// Keys are plain strings; the key schema (cluster prefix, what lives where)
// is documented in docs/metadata.md. Entries written with Put are bound to
// this client's liveness: the client keeps them alive in the background and
// when its process dies they expire within `ttl` instead of going stale.
//
// Thread safety: all methods may be called concurrently.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/config.h"
#include "common/status.h"

namespace crescent::transfer {

struct MetadataOptions {
  // Entries of a client that stopped refreshing disappear after this long.
  std::chrono::milliseconds ttl{10000};
  // Per-operation timeout towards the metadata server.
  std::chrono::milliseconds op_timeout{3000};
  // Added (metadata branch): false writes entries with no lease/TTL; they
  // outlive this client (debugging tools such as `crescent metadata put`).
  bool leased = true;
};

class MetadataStore {
 public:
  virtual ~MetadataStore() = default;

  // Creates or replaces `key`, tied to this client's lease (see above).
  virtual Status Put(std::string_view key, std::string_view value) = 0;

  // NOT_FOUND when absent or expired; UNAVAILABLE (naming the address
  // tried) when the server cannot be reached.
  virtual StatusOr<std::string> Get(std::string_view key) = 0;

  // Removing an absent key is OK.
  virtual Status Delete(std::string_view key) = 0;

  // All live entries whose key starts with `prefix`, sorted by key.
  virtual StatusOr<std::vector<std::pair<std::string, std::string>>> List(
      std::string_view prefix) = 0;

  // "http://127.0.0.1:8080/metadata", for messages.
  virtual std::string Describe() const = 0;
};

// Connects to the backend `spec` names and checks that it answers; an
// unreachable server fails here with the address that was tried.
StatusOr<std::unique_ptr<MetadataStore>> OpenMetadataStore(const MetadataServerSpec& spec,
                                                            const MetadataOptions& options = {});

}  // namespace crescent::transfer
