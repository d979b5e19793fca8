// The MooncakeStoreConnector: prompt KV through the distributed KV store,
// for disaggregated prefill/decode (`crescent serve --kv-transfer-config`).
//
//   kv_producer  saves each finished prompt's KV into the store (in chunks,
//                chunk_keys.h) and holds the response until it is there
//   kv_consumer  for a new request, looks up the longest run of leading
//                chunks in the store (one batched lookup) and loads them
//                straight into the request's paged KV blocks; the engine
//                computes only the rest
//   kv_both      both: instances reuse each other's prompts (a prefix
//                cache across instances)
//
// The instance is a full store client: it mounts global_segment_size of its
// memory into the pool and registers a local_buffer_size staging buffer
// through which KV moves without further copies (zero-copy PutFrom/GetInto
// between the staging buffer and the segments that hold the chunks).
//
// Saving stays off the compute path: OnPrefillDone copies the prompt's
// blocks into the staging buffer (memory bandwidth, on the engine thread)
// and a saver thread puts them; HoldFinish holds the request's last output
// until its chunks are stored (or failed, bounded by save_timeout), so that
// a proxy that saw the prefill response complete finds them.
//
// Failures never reach the client: a lookup, load or save that fails
// (missing or evicted chunk, checksum, timeout, master down, store full)
// is counted and logged, and the engine computes the tokens itself.
//
// Metrics (in the registry given): crescent:kv_connector_lookups_total,
// _loaded_tokens_total, _computed_tokens_total, _saved_tokens_total,
// _bytes_total{direction=load|save}, _failures_total{op=lookup|load|save},
// _load_seconds and _save_seconds (histograms).
//
// Loads run on a loader thread (async_load, the default): the chunks are
// read straight into the request's blocks of a host-memory pool (which no
// forward pass touches until the engine learns of the load's end), or into
// the staging buffer, from which PollFinishedLoads writes them into the
// model's KV cache on the engine thread.
//
// Thread safety: the engine hooks are called from the engine thread; the
// saver and loader threads are internal; stats() is safe from any thread.
// The connector must outlive the engine that uses it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "common/config.h"
#include "common/status.h"
#include "engine/kv_connector.h"

namespace crescent::model {
class Backend;
}  // namespace crescent::model
namespace crescent::metrics {
class Registry;
}  // namespace crescent::metrics

namespace crescent::kvconnector {

enum class Role { kProducer, kConsumer, kBoth };

struct StoreConnectorOptions {
  Role role = Role::kBoth;
  MooncakeConfig store;     // master, metadata service, segment and buffer sizes
  int chunk_tokens = 256;   // a multiple of the KV block size
  int tp_rank = 0;
  int tp_size = 1;
  bool tcp_only = false;    // no shared memory between processes of one host
  // Read chunks straight into the KV pool when the backend keeps it in host
  // memory (Backend::HostKvPool); otherwise through the staging buffer.
  bool read_into_pool = true;
  // Load on a loader thread while the engine keeps running other requests
  // (KvConnector::StartLoadKv); false: on the engine thread, in the step
  // that admits the request.
  bool async_load = true;
  // A lookup or load that takes longer fails (the tokens are computed).
  std::chrono::milliseconds load_timeout{5000};
  // The longest a response waits for its prompt's chunks to be stored.
  std::chrono::milliseconds save_timeout{10000};
  metrics::Registry* registry = nullptr;  // where the metrics go; null: none
};

// Applies kv_connector_extra_config fields (vLLM's free-form object):
//   chunk_tokens, tcp_only, load_timeout_ms, save_timeout_ms, async_load
// Unknown fields are an error naming the known ones.
Status ApplyExtraConfig(const nlohmann::json& extra, StoreConnectorOptions* options);

class StoreConnector : public engine::KvConnector {
 public:
  // Connects the store (master, metadata service), mounts the segment and
  // registers the staging buffer; `backend` must outlive the connector.
  static StatusOr<std::unique_ptr<StoreConnector>> Create(const StoreConnectorOptions& options,
                                                          model::Backend* backend);

  struct Stats {
    uint64_t lookups = 0;
    uint64_t loaded_tokens = 0;
    uint64_t computed_tokens = 0;  // prompt tokens computed here
    uint64_t saved_tokens = 0;
    uint64_t load_bytes = 0;
    uint64_t save_bytes = 0;
    uint64_t lookup_failures = 0;
    uint64_t load_failures = 0;
    uint64_t save_failures = 0;
  };
  virtual Stats stats() const = 0;
  // The prefix of every key this connector reads and writes.
  virtual const std::string& key_prefix() const = 0;
};

}  // namespace crescent::kvconnector
