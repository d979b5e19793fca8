// `crescent store put|get|ls|rm|stat`: the KV store by hand.
//
// Settings come from mooncake.json (--config or $MOONCAKE_CONFIG_PATH);
// --master overrides master_server_address. The CLI contributes no memory
// (global_segment_size 0): what it puts lands in the segments of running
// instances, and stays when it exits.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>

#include "apps/command.h"
#include "common/config.h"
#include "common/size.h"
#include "store/client.h"
#include "store/master_client.h"

namespace crescent::apps {
namespace {

struct Flags {
  std::string config;
  std::string master;
  std::string key;
  std::string file;
  std::string value;
  std::string prefix;
  uint32_t limit = 1000;
  uint32_t replicas = 1;
  bool soft_pin = false;
  bool all = false;
};

StatusOr<MooncakeConfig> Config(const Flags& f, bool need_metadata) {
  MooncakeConfig config;
  auto loaded = LoadMooncakeConfig(f.config);
  if (loaded.ok()) {
    config = *loaded;
  } else if (need_metadata || f.master.empty()) {
    return loaded.status();
  }
  if (!f.master.empty()) config.master_server_address = f.master;
  return config;
}

StatusOr<std::unique_ptr<store::MasterClient>> Master(const Flags& f) {
  ASSIGN_OR_RETURN(auto config, Config(f, false));
  return store::MasterClient::Create(config.master_server_address);
}

StatusOr<std::unique_ptr<store::Client>> DataClient(const Flags& f, uint64_t buffer) {
  ASSIGN_OR_RETURN(auto config, Config(f, true));
  config.global_segment_size = 0;
  config.local_buffer_size = std::max<uint64_t>(buffer, 1 << 20);
  store::ClientOptions options;
  options.config = config;
  options.replica_num = f.replicas;
  return store::Client::Create(options);
}

Status Put(const Flags& f) {
  std::string data;
  if (!f.value.empty()) {
    data = f.value;
  } else if (!f.file.empty()) {
    ASSIGN_OR_RETURN(data, ReadFile(f.file));
  } else {
    data.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  ASSIGN_OR_RETURN(auto client, DataClient(f, data.size()));
  store::PutOptions po;
  po.soft_pin = f.soft_pin;
  RETURN_IF_ERROR(client->Put(
      f.key, {reinterpret_cast<const uint8_t*>(data.data()), data.size()}, po));
  std::fprintf(stderr, "stored '%s' (%zu bytes)\n", f.key.c_str(), data.size());
  return OkStatus();
}

Status Get(const Flags& f) {
  ASSIGN_OR_RETURN(auto master, Master(f));
  ASSIGN_OR_RETURN(auto info, master->QueryKey(f.key));
  ASSIGN_OR_RETURN(auto client, DataClient(f, info.size));
  ASSIGN_OR_RETURN(auto value, client->Get(f.key));
  if (f.file.empty()) {
    std::fwrite(value.data(), 1, value.size(), stdout);
    std::fflush(stdout);
  } else {
    std::ofstream out(f.file, std::ios::binary);
    out.write(reinterpret_cast<const char*>(value.data()), value.size());
    if (!out) return ErrnoToStatus(errno, "writing " + f.file);
  }
  return OkStatus();
}

Status Ls(const Flags& f) {
  ASSIGN_OR_RETURN(auto master, Master(f));
  ASSIGN_OR_RETURN(auto keys, master->ListKeys(f.prefix, f.limit));
  for (const auto& k : keys) std::printf("%s\n", k.c_str());
  return OkStatus();
}

Status Rm(const Flags& f) {
  ASSIGN_OR_RETURN(auto master, Master(f));
  if (f.all) {
    ASSIGN_OR_RETURN(uint64_t n, master->RemoveAll());
    std::printf("removed %llu objects (leased ones stay)\n", static_cast<unsigned long long>(n));
    return OkStatus();
  }
  if (f.key.empty()) return InvalidArgumentError("store rm: give a KEY or --all");
  return master->Remove(f.key);
}

Status Stat(const Flags& f) {
  ASSIGN_OR_RETURN(auto master, Master(f));
  if (!f.key.empty()) {
    ASSIGN_OR_RETURN(auto info, master->QueryKey(f.key));
    std::printf("key: %s\nsize: %llu\ncrc32c: %08x\nstate: %s\nsoft_pin: %s\nlease_ms_left: %lld\n",
                f.key.c_str(), static_cast<unsigned long long>(info.size), info.crc32c,
                info.complete ? "complete" : "being written", info.soft_pin ? "yes" : "no",
                static_cast<long long>(info.lease_ms));
    for (const auto& r : info.replicas) {
      std::printf("replica: %s @ 0x%llx\n", r.segment.c_str(),
                  static_cast<unsigned long long>(r.address));
    }
    return OkStatus();
  }
  ASSIGN_OR_RETURN(auto health, master->Health());
  const auto& s = health.stats;
  std::printf("master %s (cluster %s)\nkeys: %llu\nallocated: %s of %s\nsegments: %llu\nclients: %llu\n",
              health.master_id.c_str(), health.cluster_id.c_str(),
              static_cast<unsigned long long>(s.keys), FormatSize(s.allocated_bytes).c_str(),
              FormatSize(s.total_bytes).c_str(), static_cast<unsigned long long>(s.segments),
              static_cast<unsigned long long>(s.clients));
  ASSIGN_OR_RETURN(auto segments, master->ListSegments());
  for (const auto& seg : segments) {
    std::printf("segment %s base 0x%llx: %s of %s used, largest free %s, owner %s\n",
                seg.spec.name.c_str(), static_cast<unsigned long long>(seg.spec.base),
                FormatSize(seg.allocated).c_str(), FormatSize(seg.spec.size).c_str(),
                FormatSize(seg.largest_free).c_str(), seg.owner.c_str());
  }
  return OkStatus();
}

void Setup(CLI::App& root) {
  auto* cmd = root.add_subcommand("store", "Put, get, list, remove and inspect store objects");
  cmd->require_subcommand(1);
  auto flags = std::make_shared<Flags>();
  auto common = [&](CLI::App* sub) {
    sub->add_option("--config", flags->config, "mooncake.json (default $MOONCAKE_CONFIG_PATH)");
    sub->add_option("--master", flags->master, "Master host:port (overrides the config)");
  };
  auto* put = cmd->add_subcommand("put", "Store a value (from --value, --file or stdin)");
  common(put);
  put->add_option("key", flags->key, "Key")->required();
  put->add_option("--value", flags->value, "The value as text");
  put->add_option("--file", flags->file, "Read the value from this file");
  put->add_option("--replicas", flags->replicas, "Copies on distinct segments");
  put->add_flag("--soft-pin", flags->soft_pin, "Evict only after unpinned objects");
  put->callback([flags] { ExitWith(Put(*flags)); });
  auto* get = cmd->add_subcommand("get", "Print a value (or write it to --file)");
  common(get);
  get->add_option("key", flags->key, "Key")->required();
  get->add_option("--file", flags->file, "Write the value here instead of stdout");
  get->callback([flags] { ExitWith(Get(*flags)); });
  auto* ls = cmd->add_subcommand("ls", "List keys");
  common(ls);
  ls->add_option("--prefix", flags->prefix, "Only keys starting with this");
  ls->add_option("--limit", flags->limit, "At most this many")->capture_default_str();
  ls->callback([flags] { ExitWith(Ls(*flags)); });
  auto* rm = cmd->add_subcommand("rm", "Remove a key (or --all)");
  common(rm);
  rm->add_option("key", flags->key, "Key");
  rm->add_flag("--all", flags->all, "Remove every unleased object");
  rm->callback([flags] { ExitWith(Rm(*flags)); });
  auto* stat = cmd->add_subcommand("stat", "A key's replicas, or the store's usage");
  common(stat);
  stat->add_option("key", flags->key, "Key (omit for the whole store)");
  stat->callback([flags] { ExitWith(Stat(*flags)); });
}

}  // namespace
CRESCENT_REGISTER_COMMAND(store, Setup);
}  // namespace crescent::apps
