#include "proxy/fake_instance.h"

#include <fmt/format.h>

#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/http.h"

namespace crescent::proxy::testing {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// One response being produced by the ticker thread.
struct Pending {
  std::shared_ptr<http::ResponseWriter> writer;
  Clock::time_point due;
  bool stream = false;
  bool chat = false;
  int next = 0;   // next token to send
  int total = 0;  // tokens in all
  int prompt_tokens = 0;
};

std::string Text(int from, int to) {
  std::string s;
  for (int i = from; i < to; ++i) s += fmt::format("t{} ", i);
  return s;
}

}  // namespace

struct FakeInstance::Impl {
  std::string name;
  std::string model;
  std::unique_ptr<http::Server> server;

  mutable std::mutex mu;
  std::condition_variable cv;
  FakeBehavior behavior;                                   // guarded by mu
  std::vector<SeenRequest> seen;                           // guarded by mu
  std::vector<Pending> pending;                            // guarded by mu
  std::vector<std::shared_ptr<http::ResponseWriter>> hung; // guarded by mu
  int events = 0;                                          // guarded by mu
  size_t requests = 0;                                     // guarded by mu
  static constexpr size_t kMaxSeen = 10000;  // benchmarks send millions
  bool stop = false;                                       // guarded by mu
  std::atomic<bool> dead{false};
  std::thread ticker;

  json Body(const Pending& p, int from, int to, bool last) const {
    json choice = {{"index", 0}, {"logprobs", nullptr},
                   {"finish_reason", last ? json("length") : json(nullptr)}};
    json out = {{"id", "cmpl-fake"}, {"created", 0}, {"model", model}, {"served_by", name}};
    if (p.chat) {
      if (p.stream) choice["delta"] = {{"content", Text(from, to)}};
      else choice["message"] = {{"role", "assistant"}, {"content", Text(from, to)}};
      out["object"] = p.stream ? "chat.completion.chunk" : "chat.completion";
    } else {
      choice["text"] = Text(from, to);
      out["object"] = "text_completion";
    }
    out["choices"] = json::array({choice});
    if (!p.stream)
      out["usage"] = {{"prompt_tokens", p.prompt_tokens},
                      {"completion_tokens", p.total},
                      {"total_tokens", p.prompt_tokens + p.total}};
    return out;
  }

  void Handle(bool chat, http::Request req, std::shared_ptr<http::ResponseWriter> w) {
    json j = json::parse(req.body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      w->Send(http::Response::Json(400, R"({"error":{"message":"bad json","code":400}})"));
      return;
    }
    Pending p;
    p.writer = w;
    p.chat = chat;
    p.stream = j.value("stream", false);
    p.total = 16;
    if (j.contains("max_tokens") && j["max_tokens"].is_number_integer()) p.total = j["max_tokens"];
    if (j.contains("max_completion_tokens") && j["max_completion_tokens"].is_number_integer())
      p.total = j["max_completion_tokens"];
    p.prompt_tokens = static_cast<int>(req.body.size() / 4);
    std::unique_lock lock(mu);
    ++requests;
    if (seen.size() < kMaxSeen) seen.push_back({req.path, req.body, req.Header("x-request-id").value_or("")});
    if (behavior.hang) {
      hung.push_back(std::move(w));
      return;
    }
    if (behavior.inference_status != 200) {
      int s = behavior.inference_status;
      lock.unlock();
      w->Send(http::Response::Json(
          s, fmt::format(R"({{"error":{{"message":"injected failure on {}","code":{}}}}})", name, s)));
      return;
    }
    bool ticked = behavior.token_interval.count() > 0 || behavior.die_after_events >= 0 ||
                  (!p.stream && behavior.answer_delay.count() > 0);
    if (!ticked) {
      lock.unlock();
      if (!p.stream) return SendWhole(p);
      p.writer->BeginStream(200, "text/event-stream");
      for (int i = 0; i < p.total; ++i) p.writer->WriteEvent(Body(p, i, i + 1, i + 1 == p.total).dump());
      p.writer->WriteEvent("[DONE]");
      p.writer->End();
      return;
    }
    p.due = Clock::now() + (p.stream ? behavior.token_interval : behavior.answer_delay);
    if (p.stream) p.writer->BeginStream(200, "text/event-stream");
    pending.push_back(std::move(p));
    cv.notify_all();
  }

  void SendWhole(const Pending& p) { p.writer->Send(http::Response::Json(200, Body(p, 0, p.total, true).dump())); }

  void Tick() {
    std::unique_lock lock(mu);
    while (!stop) {
      if (pending.empty()) {
        cv.wait(lock);
        continue;
      }
      auto earliest = pending.front().due;
      for (const auto& p : pending) earliest = std::min(earliest, p.due);
      if (Clock::now() < earliest) {
        cv.wait_until(lock, earliest);
        continue;
      }
      auto now = Clock::now();
      bool die = false;
      for (size_t i = 0; i < pending.size();) {
        Pending& p = pending[i];
        if (p.due > now) { ++i; continue; }
        bool done = true;
        if (!p.stream) {
          SendWhole(p);
        } else if (behavior.die_after_events >= 0 && events >= behavior.die_after_events) {
          die = true;
          break;
        } else {
          bool last = p.next + 1 >= p.total;
          bool ok = p.writer->WriteEvent(Body(p, p.next, p.next + 1, last).dump());
          ++events;
          ++p.next;
          if (ok && !last) {
            done = false;
            p.due = now + behavior.token_interval;
          } else if (ok) {
            p.writer->WriteEvent("[DONE]");
            p.writer->End();
          }
        }
        if (done) {
          pending[i] = std::move(pending.back());
          pending.pop_back();
        } else {
          ++i;
        }
      }
      if (die) {
        lock.unlock();
        DieNow();
        lock.lock();
      }
    }
  }

  void DieNow() {
    if (dead.exchange(true)) return;
    server->Stop();
    std::lock_guard lock(mu);
    pending.clear();
    hung.clear();
  }
};

StatusOr<std::unique_ptr<FakeInstance>> FakeInstance::Start(std::string name, uint16_t port,
                                                            std::string model, int io_threads) {
  std::unique_ptr<FakeInstance> f(new FakeInstance());
  auto im = std::make_shared<Impl>();
  im->name = std::move(name);
  im->model = std::move(model);
  http::ServerOptions so;
  so.port = port;
  so.io_threads = io_threads;
  im->server = std::make_unique<http::Server>(so);
  Impl* raw = im.get();
  im->server->Handle(http::Method::kGet, "/v1/models", [raw](const http::Request&) {
    json out = {{"object", "list"},
                {"data", json::array({{{"id", raw->model}, {"object", "model"}, {"owned_by", "fake"}}})}};
    return http::Response::Json(200, out.dump());
  });
  im->server->Handle(http::Method::kGet, "/health", [raw](const http::Request&) {
    std::lock_guard lock(raw->mu);
    return http::Response::Text(raw->behavior.health_status, "");
  });
  im->server->HandleAsync(http::Method::kPost, "/v1/completions",
                          [raw](http::Request r, std::shared_ptr<http::ResponseWriter> w) {
                            raw->Handle(false, std::move(r), std::move(w));
                          });
  im->server->HandleAsync(http::Method::kPost, "/v1/chat/completions",
                          [raw](http::Request r, std::shared_ptr<http::ResponseWriter> w) {
                            raw->Handle(true, std::move(r), std::move(w));
                          });
  RETURN_IF_ERROR(im->server->Start());
  im->ticker = std::thread([raw] { raw->Tick(); });
  f->impl_ = std::move(im);
  return f;
}

FakeInstance::~FakeInstance() {
  if (!impl_) return;  // Start() failed before handing its state over
  {
    std::lock_guard lock(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  impl_->ticker.join();
  impl_->server->Stop();
  std::lock_guard lock(impl_->mu);
  impl_->pending.clear();
  impl_->hung.clear();
}

uint16_t FakeInstance::port() const { return impl_->server->port(); }
std::string FakeInstance::address() const { return fmt::format("127.0.0.1:{}", port()); }
const std::string& FakeInstance::name() const { return impl_->name; }

void FakeInstance::SetBehavior(const FakeBehavior& b) {
  std::lock_guard lock(impl_->mu);
  impl_->behavior = b;
  impl_->events = 0;
  impl_->cv.notify_all();
}

FakeBehavior FakeInstance::behavior() const {
  std::lock_guard lock(impl_->mu);
  return impl_->behavior;
}

void FakeInstance::Die() { impl_->DieNow(); }
bool FakeInstance::dead() const { return impl_->dead; }

std::vector<SeenRequest> FakeInstance::Seen() const {
  std::lock_guard lock(impl_->mu);
  return impl_->seen;
}

size_t FakeInstance::inference_requests() const {
  std::lock_guard lock(impl_->mu);
  return impl_->requests;
}

int FakeInstance::active_streams() const {
  std::lock_guard lock(impl_->mu);
  return static_cast<int>(impl_->pending.size());
}

}  // namespace crescent::proxy::testing
