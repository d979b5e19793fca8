// Client data paths: puts and gets, single and batched, over the transfer
// engine (memcpy for copies in our own segment).
#include <chrono>
#include <cstring>

#include "common/logging.h"
#include "store/client_internal.h"
#include "common/crc32c.h"

namespace crescent::store {
namespace {

// Batches are cut so that their staged bytes stay within this share of the
// local buffer: concurrent batches then cannot starve each other.
constexpr uint64_t kBatchShareOfLocalBuffer = 4;

}  // namespace

PutStartArgs ClientImpl::MakeArgs(std::string_view key, uint64_t size,
                                  const PutOptions& options) const {
  PutStartArgs a;
  a.key = std::string(key);
  a.size = size;
  a.replica_num = options.replica_num ? options.replica_num : options_.replica_num;
  a.soft_pin = options.soft_pin;
  if (options_.prefer_local_segment && segment_.length > 0) a.preferred_segment = segment_name_;
  return a;
}

StatusOr<transfer::SegmentHandle> ClientImpl::OpenSegment(const std::string& name) {
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(name);
    if (it != handles_.end()) return it->second;
  }
  auto handle = engine_->OpenSegment(name);
  if (!handle.ok()) {
    return AbortedError("cannot open segment '" + name +
                        "' (its owner may have died): " + handle.status().ToString());
  }
  std::lock_guard lock(mu_);
  handles_.emplace(name, *handle);
  return *handle;
}

void ClientImpl::ForgetSegment(const std::string& name) {
  transfer::SegmentHandle handle;
  {
    std::lock_guard lock(mu_);
    auto it = handles_.find(name);
    if (it == handles_.end()) return;
    handle = it->second;
    handles_.erase(it);
  }
  engine_->CloseSegment(handle).IgnoreError();
}

std::vector<Status> ClientImpl::RunOps(const std::vector<Op>& ops) {
  std::vector<Status> results(ops.size());
  std::vector<transfer::TransferRequest> requests;
  std::vector<size_t> request_op;
  for (size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    if (*op.segment == segment_name_) {
      uint8_t* own = OwnSegmentPointer(op.address, op.length);
      if (own == nullptr) {
        results[i] = InternalError("replica address outside our own segment");
      } else if (op.opcode == transfer::OpCode::kWrite) {
        if (op.crc32c) *op.crc32c = Crc32cCopy(own, op.local, op.length);
        else std::memcpy(own, op.local, op.length);
      } else {
        std::memcpy(op.local, own, op.length);
        if (op.crc32c) *op.crc32c = Crc32c(op.local, op.length);
      }
      continue;
    }
    auto handle = OpenSegment(*op.segment);
    if (!handle.ok()) {
      results[i] = handle.status();
      continue;
    }
    requests.push_back({op.opcode, op.local, *handle, op.address, op.length, op.crc32c});
    request_op.push_back(i);
  }
  if (requests.empty()) return results;
  auto fail_all = [&](const Status& s) {
    for (size_t r = 0; r < requests.size(); ++r) {
      results[request_op[r]] = AbortedError("transfer failed: " + s.ToString());
    }
  };
  auto batch = engine_->AllocateBatch(requests.size());
  if (!batch.ok()) {
    fail_all(batch.status());
    return results;
  }
  if (Status s = engine_->SubmitTransfer(*batch, requests); !s.ok()) {
    fail_all(s);
  } else {
    // The engine ends every request within transfer_timeout; wait a little
    // longer so that none is left pending when we free the batch.
    engine_->WaitBatch(*batch, options_.transfer_timeout * 2 + std::chrono::seconds(1))
        .IgnoreError();
    for (size_t r = 0; r < requests.size(); ++r) {
      auto st = engine_->GetTransferStatus(*batch, r);
      const Op& op = ops[request_op[r]];
      if (st.ok() && st->state == transfer::TransferState::kCompleted) continue;
      Status why = st.ok() ? st->error : st.status();
      results[request_op[r]] =
          AbortedError(std::string(op.opcode == transfer::OpCode::kRead ? "read from" : "write to") +
                       " segment '" + *op.segment + "' failed: " + why.ToString());
      ForgetSegment(*op.segment);
    }
  }
  engine_->FreeBatch(*batch).IgnoreError();
  return results;
}

void ClientImpl::WriteObjects(std::vector<WriteItem>& items) {
  std::vector<Op> ops;
  std::vector<size_t> op_item;
  std::vector<Staging> stagings;
  for (size_t i = 0; i < items.size(); ++i) {
    auto& item = items[i];
    const void* src = item.src;
    for (const auto& rep : *item.replicas) {
      if (rep.segment != segment_name_ && !item.src_registered && src == item.src) {
        auto st = Stage(item.size);
        if (!st.ok()) {
          item.result = st.status();
          break;
        }
        std::memcpy(st->data(), item.src, item.size);
        src = st->data();
        stagings.push_back(std::move(*st));
      }
      const void* local = rep.segment == segment_name_ ? item.src : src;
      // The value's checksum comes from the first replica's copy (the same
      // pass over the bytes; the commit needs it).
      uint32_t* crc = &rep == &item.replicas->front() ? &item.crc : nullptr;
      ops.push_back({transfer::OpCode::kWrite, const_cast<void*>(local), &rep.segment, rep.address,
                     item.size, crc});
      op_item.push_back(i);
    }
  }
  auto results = RunOps(ops);
  for (size_t k = 0; k < ops.size(); ++k) {
    if (!results[k].ok() && items[op_item[k]].result.ok()) items[op_item[k]].result = results[k];
  }
}

void ClientImpl::ReadObjects(std::vector<ReadItem>& items) {
  // Replica order per item: our own segment first (a memcpy), then as given.
  std::vector<std::vector<const Replica*>> order(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    for (const auto& rep : items[i].info->replicas) {
      if (rep.segment == segment_name_) order[i].insert(order[i].begin(), &rep);
      else order[i].push_back(&rep);
    }
    items[i].result = NotFoundError("no replica left to read");
  }
  std::vector<bool> done(items.size(), false);
  for (size_t attempt = 0;; ++attempt) {
    std::vector<Op> ops;
    std::vector<size_t> op_item;
    std::vector<Staging> stagings(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      if (done[i] || attempt >= order[i].size()) continue;
      const auto& item = items[i];
      if (item.pieces != nullptr) {
        // Scatter: one op per piece, at its offset inside the replica.
        uint64_t at = 0;
        for (const MutableBuffer& piece : *item.pieces) {
          ops.push_back({transfer::OpCode::kRead, piece.data, &order[i][attempt]->segment,
                         order[i][attempt]->address + at, piece.capacity});
          op_item.push_back(i);
          at += piece.capacity;
        }
        continue;
      }
      void* dst = item.dst;
      if (order[i][attempt]->segment != segment_name_ && !item.dst_registered) {
        auto st = Stage(item.info->size);
        if (!st.ok()) {
          items[i].result = st.status();
          done[i] = true;
          continue;
        }
        dst = st->data();
        stagings[i] = std::move(*st);
      }
      ops.push_back({transfer::OpCode::kRead, dst, &order[i][attempt]->segment,
                     order[i][attempt]->address, item.info->size});
      op_item.push_back(i);
    }
    if (ops.empty()) break;
    auto results = RunOps(ops);
    for (size_t k = 0; k < ops.size(); ++k) {
      const size_t i = op_item[k];
      auto& item = items[i];
      uint32_t crc = 0;
      if (item.pieces != nullptr) {
        // All of the item's ops are consecutive: judge them at the last.
        if (k + 1 < ops.size() && op_item[k + 1] == i) continue;
        Status failed = OkStatus();
        for (size_t j = k + 1 - item.pieces->size(); j <= k; ++j) {
          if (!results[j].ok() && failed.ok()) failed = results[j];
          crc = Crc32cExtend(crc, ops[j].local, ops[j].length);
        }
        if (!failed.ok()) {
          item.result = failed;
          continue;
        }
      } else {
        if (!results[k].ok()) {
          item.result = results[k];
          continue;
        }
        if (ops[k].local != item.dst) std::memcpy(item.dst, ops[k].local, item.info->size);
        crc = Crc32c(item.dst, item.info->size);
      }
      if (crc != item.info->crc32c) {
        item.result = DataLossError("checksum mismatch reading segment '" + *ops[k].segment +
                                    "': the copy is corrupt or was overwritten");
        continue;
      }
      if (NowUs() - item.granted_us > item.info->lease_ms * 1000) {
        item.result = DeadlineExceededError(
            "the read lease (" + std::to_string(item.info->lease_ms) +
            " ms) expired before the read finished; the bytes may have been reused");
        done[i] = true;
        continue;
      }
      item.result = OkStatus();
      done[i] = true;
    }
  }
}

std::vector<Status> ClientImpl::PutValues(const std::vector<std::string>& keys,
                                          const std::vector<ConstBuffer>& values,
                                          const std::vector<bool>& registered,
                                          const PutOptions& options, bool allow_reservations) {
  const size_t n = keys.size();
  std::vector<Status> out(n);
  if (values.size() != n) {
    for (auto& s : out) s = InvalidArgumentError("keys and values differ in number");
    return out;
  }
  const uint64_t budget = std::max<uint64_t>(1, local_buffer_size_ / kBatchShareOfLocalBuffer);
  std::vector<size_t> retry;  // committed into a reservation the master forgot
  for (size_t begin = 0; begin < n;) {
    // One chunk: as many items as fit the staging budget (at least one).
    size_t end = begin;
    uint64_t bytes = 0;
    while (end < n && (end == begin || bytes + values[end].size <= budget)) bytes += values[end++].size;

    std::vector<size_t> idx;
    std::vector<PutStartArgs> args;
    for (size_t i = begin; i < end; ++i) {
      if (Status s = ValidateKey(keys[i]); !s.ok()) {
        out[i] = s;
        continue;
      }
      if (values[i].size == 0 || values[i].data == nullptr) {
        out[i] = InvalidArgumentError("value of key '" + keys[i] + "' is empty; values hold >= 1 byte");
        continue;
      }
      idx.push_back(i);
      args.push_back(MakeArgs(keys[i], values[i].size, options));
    }
    begin = end;
    if (idx.empty()) continue;

    // Where each value goes: a piece of our reservation (one round trip:
    // write, Commit) or ranges from PutStart (write, PutEnd).
    std::vector<std::optional<Piece>> pieces(idx.size());
    std::vector<StatusOr<std::vector<Replica>>> places(idx.size(), std::vector<Replica>{});
    std::vector<PutStartArgs> start_args;
    std::vector<size_t> start_k;
    for (size_t k = 0; k < idx.size(); ++k) {
      if (allow_reservations && args[k].replica_num == 1) pieces[k] = Carve(args[k].size);
      if (pieces[k]) {
        places[k] = std::vector<Replica>{Replica{pieces[k]->slab->r.segment, pieces[k]->address}};
      } else {
        start_args.push_back(args[k]);
        start_k.push_back(k);
      }
    }
    if (!start_args.empty()) {
      auto starts = put_start_rpc_->Submit(start_args);
      for (size_t j = 0; j < start_k.size(); ++j) places[start_k[j]] = std::move(starts[j]);
    }
    std::vector<WriteItem> items;
    std::vector<size_t> item_idx;
    for (size_t k = 0; k < idx.size(); ++k) {
      auto& r = places[k];
      if (!r.ok()) {
        out[idx[k]] = r.status();
        continue;
      }
      items.push_back({&*r, values[idx[k]].data, values[idx[k]].size, registered[idx[k]], OkStatus()});
      item_idx.push_back(k);
    }
    WriteObjects(items);
    std::vector<uint32_t> crcs(idx.size());
    for (size_t j = 0; j < items.size(); ++j) crcs[item_idx[j]] = items[j].crc;
    std::vector<std::string> end_keys, revoke_keys;
    std::vector<uint32_t> end_crcs;
    std::vector<size_t> end_idx;
    std::vector<CommitArgs> commits;
    std::vector<size_t> commit_k;
    for (size_t j = 0; j < items.size(); ++j) {
      const size_t k = item_idx[j];
      if (!items[j].result.ok() && pieces[k]) {
        // The reservation's segment may be gone: stop using it, and put
        // this value the two-phase way (which places it elsewhere).
        Finish(pieces[k]->slab, /*committed=*/false, /*dead=*/false, /*retire=*/true);
        retry.push_back(idx[k]);
      } else if (!items[j].result.ok()) {
        out[idx[k]] = items[j].result;
        revoke_keys.push_back(args[k].key);
      } else if (pieces[k]) {
        commits.push_back({pieces[k]->slab->r.id, args[k].key, pieces[k]->address, args[k].size,
                           crcs[k], args[k].soft_pin});
        commit_k.push_back(k);
      } else {
        end_keys.push_back(args[k].key);
        end_crcs.push_back(crcs[k]);
        end_idx.push_back(idx[k]);
      }
    }
    if (!revoke_keys.empty()) master_->BatchPutRevoke(revoke_keys).status().IgnoreError();
    if (!commits.empty()) {
      auto done = commit_rpc_->Submit(commits);
      for (size_t j = 0; j < commit_k.size(); ++j) {
        const size_t k = commit_k[j];
        // FAILED_PRECONDITION: the master forgot the reservation (it
        // restarted, or took it back): put this value the two-phase way.
        const bool dead = done[j].code() == StatusCode::kFailedPrecondition;
        Finish(pieces[k]->slab, done[j].ok(), dead);
        if (dead) retry.push_back(idx[k]); else out[idx[k]] = done[j];
      }
    }
    if (!end_keys.empty()) {
      std::vector<PutEndItem> end_items;
      for (size_t j = 0; j < end_keys.size(); ++j) end_items.push_back({end_keys[j], end_crcs[j]});
      auto ends = put_end_rpc_->Submit(std::move(end_items));
      for (size_t j = 0; j < end_idx.size(); ++j) out[end_idx[j]] = ends[j];
    }
  }
  if (!retry.empty()) {
    std::vector<std::string> rk;
    std::vector<ConstBuffer> rv;
    std::vector<bool> rr;
    for (size_t i : retry) {
      rk.push_back(keys[i]);
      rv.push_back(values[i]);
      rr.push_back(registered[i]);
    }
    auto again = PutValues(rk, rv, rr, options, /*allow_reservations=*/false);
    for (size_t j = 0; j < retry.size(); ++j) out[retry[j]] = again[j];
  }
  return out;
}

Status ClientImpl::PutFrom(std::string_view key, ConstBuffer value, const PutOptions& options) {
  return PutValues({std::string(key)}, {value}, {IsRegistered(value.data, value.size)}, options)[0];
}

Status ClientImpl::Put(std::string_view key, std::span<const uint8_t> value,
                       const PutOptions& options) {
  return PutValues({std::string(key)}, {ConstBuffer{value.data(), value.size()}}, {false},
                   options)[0];
}

std::vector<Status> ClientImpl::BatchPutFrom(const std::vector<std::string>& keys,
                                             const std::vector<ConstBuffer>& values,
                                             const PutOptions& options) {
  std::vector<bool> registered;
  for (const auto& v : values) registered.push_back(IsRegistered(v.data, v.size));
  return PutValues(keys, values, registered, options);
}

std::vector<Status> ClientImpl::BatchPut(const std::vector<std::string>& keys,
                                         const std::vector<std::span<const uint8_t>>& values,
                                         const PutOptions& options) {
  std::vector<ConstBuffer> buffers;
  for (const auto& v : values) buffers.push_back({v.data(), v.size()});
  return PutValues(keys, buffers, std::vector<bool>(values.size(), false), options);
}

std::vector<StatusOr<size_t>> ClientImpl::BatchGetInto(const std::vector<std::string>& keys,
                                                       const std::vector<MutableBuffer>& outs) {
  const size_t n = keys.size();
  std::vector<StatusOr<size_t>> out(n, Status(StatusCode::kUnknown, "not read"));
  if (outs.size() != n) {
    for (auto& s : out) s = InvalidArgumentError("keys and buffers differ in number");
    return out;
  }
  for (const auto& k : keys) {
    if (Status s = ValidateKey(k); !s.ok()) {
      for (size_t i = 0; i < n; ++i) out[i] = keys[i] == k ? s : Status(StatusCode::kAborted, "batch had a bad key");
      return out;
    }
  }
  const int64_t granted = NowUs();
  auto infos = get_rpc_->Submit(keys);
  std::vector<ReadItem> items;
  std::vector<size_t> item_idx;
  for (size_t i = 0; i < n; ++i) {
    auto& info = infos[i];
    if (!info.ok()) {
      out[i] = info.status();
      continue;
    }
    if (info->size > outs[i].capacity) {
      out[i] = OutOfRangeError("value of key '" + keys[i] + "' has " + std::to_string(info->size) +
                               " bytes; the buffer holds " + std::to_string(outs[i].capacity));
      continue;
    }
    items.push_back({&*info, outs[i].data, IsRegistered(outs[i].data, info->size), granted,
                     OkStatus()});
    item_idx.push_back(i);
  }
  ReadObjects(items);
  for (size_t j = 0; j < items.size(); ++j) {
    out[item_idx[j]] = items[j].result.ok() ? StatusOr<size_t>(items[j].info->size)
                                            : StatusOr<size_t>(items[j].result);
  }
  return out;
}

std::vector<StatusOr<size_t>> ClientImpl::BatchGetIntoScatter(
    const std::vector<std::string>& keys, const std::vector<std::vector<MutableBuffer>>& pieces) {
  const size_t n = keys.size();
  std::vector<StatusOr<size_t>> out(n, Status(StatusCode::kUnknown, "not read"));
  if (pieces.size() != n) {
    for (auto& s : out) s = InvalidArgumentError("keys and piece lists differ in number");
    return out;
  }
  std::vector<std::string> valid;
  std::vector<size_t> valid_idx;
  for (size_t i = 0; i < n; ++i) {
    Status s = ValidateKey(keys[i]);
    for (const MutableBuffer& p : pieces[i]) {
      if (!s.ok()) break;
      if (p.capacity == 0 || !IsRegistered(p.data, p.capacity))
        s = OutOfRangeError("a piece for key '" + keys[i] +
                            "' is empty or not inside registered memory; RegisterBuffer it");
    }
    if (pieces[i].empty()) s = InvalidArgumentError("no pieces for key '" + keys[i] + "'");
    if (!s.ok()) {
      out[i] = s;
      continue;
    }
    valid.push_back(keys[i]);
    valid_idx.push_back(i);
  }
  if (valid.empty()) return out;
  const int64_t granted = NowUs();
  auto infos = get_rpc_->Submit(valid);
  std::vector<ReadItem> items;
  std::vector<size_t> item_idx;
  for (size_t j = 0; j < valid.size(); ++j) {
    const size_t i = valid_idx[j];
    if (!infos[j].ok()) {
      out[i] = infos[j].status();
      continue;
    }
    uint64_t total = 0;
    for (const MutableBuffer& p : pieces[i]) total += p.capacity;
    if (total != infos[j]->size) {
      out[i] = InvalidArgumentError("value of key '" + keys[i] + "' has " +
                                    std::to_string(infos[j]->size) + " bytes; the pieces hold " +
                                    std::to_string(total));
      continue;
    }
    items.push_back({&*infos[j], nullptr, true, granted, OkStatus(), &pieces[i]});
    item_idx.push_back(i);
  }
  ReadObjects(items);
  for (size_t j = 0; j < items.size(); ++j) {
    out[item_idx[j]] = items[j].result.ok() ? StatusOr<size_t>(items[j].info->size)
                                            : StatusOr<size_t>(items[j].result);
  }
  return out;
}

StatusOr<size_t> ClientImpl::GetInto(std::string_view key, MutableBuffer out) {
  return std::move(BatchGetInto({std::string(key)}, {out})[0]);
}

std::vector<StatusOr<std::vector<uint8_t>>> ClientImpl::BatchGet(
    const std::vector<std::string>& keys) {
  const size_t n = keys.size();
  std::vector<StatusOr<std::vector<uint8_t>>> out(n, Status(StatusCode::kUnknown, "not read"));
  for (size_t i = 0; i < n; ++i) {
    if (Status s = ValidateKey(keys[i]); !s.ok()) out[i] = s;
  }
  std::vector<std::string> valid;
  std::vector<size_t> valid_idx;
  for (size_t i = 0; i < n; ++i) {
    if (out[i].status().code() == StatusCode::kUnknown) {
      valid.push_back(keys[i]);
      valid_idx.push_back(i);
    }
  }
  if (valid.empty()) return out;
  const int64_t granted = NowUs();
  auto infos = get_rpc_->Submit(valid);
  std::vector<std::vector<uint8_t>> values(valid.size());
  std::vector<ReadItem> items;
  std::vector<size_t> item_idx;
  for (size_t j = 0; j < valid.size(); ++j) {
    auto& info = infos[j];
    if (!info.ok()) {
      out[valid_idx[j]] = info.status();
      continue;
    }
    values[j].resize(info->size);
    items.push_back({&*info, values[j].data(), false, granted, OkStatus()});
    item_idx.push_back(j);
  }
  // Cut into chunks that fit the staging budget.
  const uint64_t budget = std::max<uint64_t>(1, local_buffer_size_ / kBatchShareOfLocalBuffer);
  for (size_t begin = 0; begin < items.size();) {
    size_t end = begin;
    uint64_t bytes = 0;
    while (end < items.size() && (end == begin || bytes + items[end].info->size <= budget)) {
      bytes += items[end++].info->size;
    }
    std::vector<ReadItem> chunk(items.begin() + begin, items.begin() + end);
    ReadObjects(chunk);
    for (size_t c = 0; c < chunk.size(); ++c) {
      const size_t j = item_idx[begin + c];
      if (chunk[c].result.ok()) out[valid_idx[j]] = std::move(values[j]);
      else out[valid_idx[j]] = chunk[c].result;
    }
    begin = end;
  }
  return out;
}

StatusOr<std::vector<uint8_t>> ClientImpl::Get(std::string_view key) {
  return std::move(BatchGet({std::string(key)})[0]);
}

}  // namespace crescent::store
