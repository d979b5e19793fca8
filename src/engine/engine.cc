#include "engine/engine.h"

#include <fmt/format.h>

#include <map>
#include <set>
#include <thread>

#include "common/logging.h"
#include "engine/engine_core.h"

namespace crescent::engine {
namespace {

class EngineImpl : public Engine {
 public:
  EngineImpl(std::unique_ptr<ModelRunner> model, std::unique_ptr<EngineCore> core)
      : model_(std::move(model)), core_(std::move(core)) {
    stats_ = core_->Stats();
    release_box_->engine = this;
    thread_ = std::thread([this] { Loop(); });
  }

  ~EngineImpl() override {
    {
      std::lock_guard<std::mutex> lock(release_box_->mu);
      release_box_->engine = nullptr;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  Status Submit(EngineRequest request, OutputCallback on_output) override {
    RETURN_IF_ERROR(core_->ValidateRequest(request));
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return UnavailableError("the engine is shutting down");
    if (!live_ids_.insert(request.request_id).second)
      return AlreadyExistsError(fmt::format(
          "request id '{}' is already running; use a unique id", request.request_id));
    inbox_.push_back({std::move(request), std::move(on_output)});
    cv_.notify_all();
    return OkStatus();
  }

  void Abort(const std::string& request_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    aborts_.push_back(request_id);
    cv_.notify_all();
  }

  EngineStats Stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  Status Validate(const EngineRequest& request) const override {
    return core_->ValidateRequest(request);
  }
  const EngineOptions& options() const override { return core_->options(); }
  const ModelRunner& model() const override { return *model_; }

 private:
  struct Pending {
    EngineRequest request;
    OutputCallback callback;
  };

  void Deliver(std::vector<RequestOutput>& outputs, bool may_hold = true) {
    KvConnector* connector = core_->options().kv_connector;
    for (RequestOutput& out : outputs) {
      auto it = callbacks_.find(out.request_id);
      if (it == callbacks_.end()) continue;
      const bool last = out.request_finished;
      // The connector may still be saving the request's KV: hold the last
      // output until it is in the store (released from another thread).
      if (last && may_hold && connector != nullptr &&
          out.finish != FinishReason::kAbort && !held_.count(out.request_id)) {
        std::string id = out.request_id;
        auto release = [box = release_box_, id] {
          std::lock_guard<std::mutex> box_lock(box->mu);
          if (box->engine == nullptr) return;  // the engine is gone
          std::lock_guard<std::mutex> lock(box->engine->mu_);
          box->engine->released_.push_back(id);
          box->engine->cv_.notify_all();
        };
        if (connector->HoldFinish(id, std::move(release))) {
          held_.emplace(id, std::move(out));
          continue;
        }
      }
      std::string id = out.request_id;
      it->second(std::move(out));
      if (last) {
        callbacks_.erase(it);
        std::lock_guard<std::mutex> lock(mu_);
        live_ids_.erase(id);
      }
    }
  }

  // Applies submissions and aborts. Engine thread.
  void Drain(std::deque<Pending>& inbox, std::vector<std::string>& aborts,
             std::vector<std::string>& released) {
    std::vector<RequestOutput> outputs;
    for (const std::string& id : released) {
      auto it = held_.find(id);
      if (it == held_.end()) continue;
      std::vector<RequestOutput> one;
      one.push_back(std::move(it->second));
      held_.erase(it);
      Deliver(one, /*may_hold=*/false);
    }
    for (Pending& p : inbox) {
      const std::string id = p.request.request_id;
      Status s = core_->AddRequest(std::move(p.request));
      if (!s.ok()) {
        // Validated at Submit; only a broken invariant lands here.
        RequestOutput out;
        out.request_id = id;
        out.finish = FinishReason::kError;
        out.error = s;
        out.request_finished = true;
        p.callback(std::move(out));
        std::lock_guard<std::mutex> lock(mu_);
        live_ids_.erase(id);
        continue;
      }
      callbacks_.emplace(id, std::move(p.callback));
    }
    for (const std::string& id : aborts) {
      auto outs = core_->Abort(id);
      outputs.insert(outputs.end(), std::make_move_iterator(outs.begin()),
                     std::make_move_iterator(outs.end()));
    }
    Deliver(outputs);
  }

  void Loop() {
    while (true) {
      std::deque<Pending> inbox;
      std::vector<std::string> aborts;
      std::vector<std::string> released;
      bool stopping;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] {
          return stop_ || !inbox_.empty() || !aborts_.empty() || !released_.empty() ||
                 core_->HasUnfinishedRequests();
        });
        inbox.swap(inbox_);
        aborts.swap(aborts_);
        released.swap(released_);
        stopping = stop_;
      }
      Drain(inbox, aborts, released);
      if (stopping) break;
      if (core_->HasUnfinishedRequests()) {
        std::vector<RequestOutput> outputs = core_->Step();
        Deliver(outputs);
        // Nothing could be scheduled (should not happen: the KV pool holds
        // max_model_len); do not spin a core while waiting for a change.
        if (core_->last_step().num_seqs == 0 && outputs.empty())
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      std::lock_guard<std::mutex> lock(mu_);
      stats_ = core_->Stats();
    }
    // Shutdown: finish everything still unfinished with kAbort.
    std::vector<std::string> ids;
    for (const auto& [id, cb] : callbacks_) ids.push_back(id);
    for (const std::string& id : ids) {
      auto outs = core_->Abort(id);
      Deliver(outs, /*may_hold=*/false);
    }
    // Held outputs go out as they are: the engine is going away.
    for (auto& [id, out] : held_) {
      std::vector<RequestOutput> one;
      one.push_back(std::move(out));
      Deliver(one, /*may_hold=*/false);
    }
    held_.clear();
  }

  // Constant after construction.
  const std::unique_ptr<ModelRunner> model_;
  // Touched only by the engine thread (ValidateRequest is const and reads
  // only constant options).
  const std::unique_ptr<EngineCore> core_;
  std::map<std::string, OutputCallback> callbacks_;
  std::map<std::string, RequestOutput> held_;  // last outputs the connector holds
  // What a connector's release callback reaches; outlives the engine, so a
  // late release (after the engine is destroyed) does nothing.
  struct ReleaseBox {
    std::mutex mu;
    EngineImpl* engine = nullptr;
  };
  const std::shared_ptr<ReleaseBox> release_box_ = std::make_shared<ReleaseBox>();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_.
  bool stop_ = false;
  std::deque<Pending> inbox_;
  std::vector<std::string> aborts_;
  std::vector<std::string> released_;  // held outputs the connector released
  std::set<std::string> live_ids_;  // submitted, not yet request_finished
  EngineStats stats_;

  std::thread thread_;  // last: starts after everything above exists
};

}  // namespace

StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options,
                                                 std::unique_ptr<ModelRunner> model) {
  if (model == nullptr) return InvalidArgumentError("Engine::Create: no model runner");
  ASSIGN_OR_RETURN(std::unique_ptr<EngineCore> core, EngineCore::Create(options, model.get()));
  return std::unique_ptr<Engine>(new EngineImpl(std::move(model), std::move(core)));
}

OutputCallback OutputQueue::Callback() {
  return [this](RequestOutput out) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      items_.push_back(std::move(out));
    }
    cv_.notify_all();
  };
}

std::optional<RequestOutput> OutputQueue::Pop(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return !items_.empty(); })) return std::nullopt;
  RequestOutput out = std::move(items_.front());
  items_.pop_front();
  return out;
}

}  // namespace crescent::engine
