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
    thread_ = std::thread([this] { Loop(); });
  }

  ~EngineImpl() override {
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

  void Deliver(std::vector<RequestOutput>& outputs) {
    for (RequestOutput& out : outputs) {
      auto it = callbacks_.find(out.request_id);
      if (it == callbacks_.end()) continue;
      const bool last = out.request_finished;
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
  void Drain(std::deque<Pending>& inbox, std::vector<std::string>& aborts) {
    std::vector<RequestOutput> outputs;
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
      bool stopping;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] {
          return stop_ || !inbox_.empty() || !aborts_.empty() || core_->HasUnfinishedRequests();
        });
        inbox.swap(inbox_);
        aborts.swap(aborts_);
        stopping = stop_;
      }
      Drain(inbox, aborts);
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
      Deliver(outs);
    }
  }

  // Constant after construction.
  const std::unique_ptr<ModelRunner> model_;
  // Touched only by the engine thread (ValidateRequest is const and reads
  // only constant options).
  const std::unique_ptr<EngineCore> core_;
  std::map<std::string, OutputCallback> callbacks_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_.
  bool stop_ = false;
  std::deque<Pending> inbox_;
  std::vector<std::string> aborts_;
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
