#include "server/generation_call.h"

#include <fmt/format.h>

#include <cmath>

#include "common/logging.h"
#include "model/tokenizer/tokenizer.h"
#include "server/openai_protocol.h"

namespace crescent::server {
namespace {

using OJson = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// JSON has no -inf: vLLM reports impossible tokens as -9999.0.
double FiniteLogprob(float lp) { return std::isfinite(lp) ? lp : -9999.0; }

OJson StopReasonJson(const engine::StopReason& r) {
  if (const auto* id = std::get_if<int32_t>(&r)) return *id;
  if (const auto* s = std::get_if<std::string>(&r)) return *s;
  return nullptr;
}

OJson Bytes(const std::string& s) {
  OJson b = OJson::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

}  // namespace

std::string DumpJson(const OJson& j) {
  return j.dump(-1, ' ', false, OJson::error_handler_t::replace);
}

std::shared_ptr<GenerationCall> GenerationCall::Create(CallOptions options,
                                                       std::shared_ptr<http::ResponseWriter> writer,
                                                       engine::Engine* engine,
                                                       const Tokenizer* tokenizer,
                                                       ServerMetrics* metrics) {
  return std::shared_ptr<GenerationCall>(
      new GenerationCall(std::move(options), std::move(writer), engine, tokenizer, metrics));
}

GenerationCall::GenerationCall(CallOptions options, std::shared_ptr<http::ResponseWriter> writer,
                               engine::Engine* engine, const Tokenizer* tokenizer,
                               ServerMetrics* metrics)
    : options_(std::move(options)), writer_(std::move(writer)), engine_(engine),
      tokenizer_(tokenizer), metrics_(metrics), arrival_(Clock::now()) {}

void GenerationCall::Start(std::vector<engine::EngineRequest> requests) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    prompts_.resize(requests.size());
    choices_.resize(requests.size() * options_.n);
    for (size_t i = 0; i < requests.size(); ++i) {
      prompts_[i].engine_id = requests[i].request_id;
      prompts_[i].num_prompt_tokens = static_cast<int>(requests[i].prompt.size());
      if (options_.return_token_ids) prompts_[i].prompt = requests[i].prompt;
    }
    unfinished_ = static_cast<int>(requests.size());
  }
  if (options_.stream) {
    writer_->BeginStream(200, "text/event-stream; charset=utf-8", options_.headers);
    if (options_.chat) {
      // vLLM opens every choice with the assistant role.
      for (size_t c = 0; c < choices_.size(); ++c) {
        OJson chunk = ChunkHead();
        chunk["choices"] = OJson::array({OJson{{"index", c},
                                               {"delta", {{"role", "assistant"}, {"content", ""}}},
                                               {"logprobs", nullptr},
                                               {"finish_reason", nullptr}}});
        WriteChunk(chunk);
      }
    }
  }
  // The client going away aborts whatever is still running (frees blocks).
  std::weak_ptr<GenerationCall> weak = weak_from_this();
  writer_->OnDisconnect([weak] {
    if (auto self = weak.lock()) self->AbortAll();
  });
  for (size_t i = 0; i < requests.size(); ++i) {
    auto self = shared_from_this();
    Status s = engine_->Submit(std::move(requests[i]), [self, i](engine::RequestOutput out) {
      self->OnOutput(i, std::move(out));
    });
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      if (error_.ok()) error_ = s;
      // The rest never started; the started ones are aborted and finish.
      for (size_t j = i; j < prompts_.size(); ++j) {
        prompts_[j].finished = true;
        --unfinished_;
      }
      for (size_t j = 0; j < i; ++j) engine_->Abort(prompts_[j].engine_id);
      if (unfinished_ == 0) FinishLocked();
      return;
    }
  }
  // A client that left before the hook was set is noticed here.
  if (writer_->client_gone()) AbortAll();
}

void GenerationCall::AbortAll() {
  std::vector<std::string> ids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const PromptState& p : prompts_)
      if (!p.finished) ids.push_back(p.engine_id);
  }
  for (const std::string& id : ids) engine_->Abort(id);
}

std::string GenerationCall::TokenString(int32_t id) const {
  if (tokenizer_ == nullptr || options_.tokens_as_token_ids) return fmt::format("token_id:{}", id);
  return tokenizer_->Decode({id}, /*skip_special_tokens=*/false);
}

OJson GenerationCall::LogprobsJson(const std::vector<engine::TokenLogprobs>& lps, Choice* c) const {
  if (options_.chat) {
    OJson content = OJson::array();
    for (const auto& lp : lps) {
      const std::string tok = TokenString(lp.token);
      OJson top = OJson::array();
      for (const auto& [id, l] : lp.top) {
        const std::string t = TokenString(id);
        top.push_back({{"token", t}, {"logprob", FiniteLogprob(l)}, {"bytes", Bytes(t)}});
      }
      content.push_back({{"token", tok},
                         {"logprob", FiniteLogprob(lp.logprob)},
                         {"bytes", Bytes(tok)},
                         {"top_logprobs", std::move(top)}});
    }
    return {{"content", std::move(content)}};
  }
  OJson tokens = OJson::array(), token_logprobs = OJson::array(), top = OJson::array(),
        offsets = OJson::array();
  for (const auto& lp : lps) {
    const std::string tok = TokenString(lp.token);
    tokens.push_back(tok);
    token_logprobs.push_back(FiniteLogprob(lp.logprob));
    OJson t = OJson::object();
    for (const auto& [id, l] : lp.top) t[TokenString(id)] = FiniteLogprob(l);
    top.push_back(std::move(t));
    offsets.push_back(c->text_offset);
    c->text_offset += tok.size();
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(token_logprobs)},
          {"top_logprobs", std::move(top)},
          {"text_offset", std::move(offsets)}};
}

void GenerationCall::AppendLogprobs(const OJson& delta, Choice* c) const {
  if (c->logprobs.is_null()) {
    c->logprobs = delta;
    return;
  }
  for (auto& [key, value] : delta.items())
    for (const auto& v : value) c->logprobs[key].push_back(v);
}

OJson GenerationCall::ChunkHead() const {
  return {{"id", options_.response_id},
          {"object", options_.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", options_.created},
          {"model", options_.model}};
}

void GenerationCall::WriteChunk(const OJson& chunk) { writer_->WriteEvent(DumpJson(chunk)); }

OJson GenerationCall::UsageJson() const {
  int prompt_tokens = 0, completion_tokens = 0, cached = 0;
  for (const PromptState& p : prompts_) {
    prompt_tokens += p.num_prompt_tokens;
    cached += p.num_cached_tokens;
  }
  for (const Choice& c : choices_) completion_tokens += c.num_output_tokens;
  return {{"prompt_tokens", prompt_tokens},
          {"total_tokens", prompt_tokens + completion_tokens},
          {"completion_tokens", completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

void GenerationCall::OnOutput(size_t prompt_index, engine::RequestOutput out) {
  std::lock_guard<std::mutex> lock(mu_);
  PromptState& p = prompts_[prompt_index];
  Choice& c = choices_[prompt_index * options_.n + out.index];
  const auto now = Clock::now();
  if (!out.new_tokens.empty()) {
    if (!p.first_token_seen) {
      p.first_token_seen = true;
      metrics_->ObserveTimeToFirstToken(Seconds(now - arrival_));
    } else if (out.index == 0) {
      const double per_token = Seconds(now - p.last_token_time) / out.new_tokens.size();
      for (size_t i = 0; i < out.new_tokens.size(); ++i) metrics_->ObserveInterTokenLatency(per_token);
    }
    if (out.index == 0) p.last_token_time = now;
  }
  p.num_prompt_tokens = out.num_prompt_tokens;
  p.num_cached_tokens = out.num_cached_tokens;
  c.num_output_tokens = out.num_output_tokens;
  if (out.finish) {
    c.finish_reason = engine::FinishReasonName(*out.finish);
    c.stop_reason = StopReasonJson(out.stop_reason);
    if (*out.finish == engine::FinishReason::kError && error_.ok())
      error_ = out.error.ok() ? InternalError("the engine failed this request") : out.error;
  }
  OJson lp_delta = nullptr;
  if (options_.want_logprobs && !out.logprobs.empty()) lp_delta = LogprobsJson(out.logprobs, &c);

  if (options_.stream) {
    if (!out.text.empty() || !out.new_tokens.empty() || out.finish) {
      const size_t index = prompt_index * options_.n + out.index;
      OJson choice = {{"index", index}};
      if (options_.chat) {
        choice["delta"] = {{"content", out.text}};
      } else {
        choice["text"] = out.text;
      }
      choice["logprobs"] = options_.want_logprobs ? lp_delta : OJson(nullptr);
      choice["finish_reason"] = c.finish_reason.empty() ? OJson(nullptr) : OJson(c.finish_reason);
      choice["stop_reason"] = c.stop_reason;
      if (options_.return_token_ids) choice["token_ids"] = out.new_tokens;
      OJson chunk = ChunkHead();
      chunk["choices"] = OJson::array({std::move(choice)});
      if (options_.include_usage) chunk["usage"] = nullptr;
      WriteChunk(chunk);
    }
  } else {
    c.text += out.text;
    c.token_ids.insert(c.token_ids.end(), out.new_tokens.begin(), out.new_tokens.end());
    if (!lp_delta.is_null()) AppendLogprobs(lp_delta, &c);
  }

  if (out.request_finished) {
    p.finished = true;
    metrics_->ObserveEndToEnd(Seconds(now - arrival_));
    metrics_->CountFinished(c.finish_reason.empty() ? "abort" : c.finish_reason.c_str());
    if (--unfinished_ == 0) FinishLocked();
  }
}

void GenerationCall::FinishLocked() {
  if (done_) return;
  done_ = true;
  if (options_.stream) {
    if (!error_.ok()) {
      writer_->WriteEvent(ErrorJson(HttpStatusOf(error_), error_.message()));
    } else if (options_.include_usage) {
      OJson chunk = ChunkHead();
      chunk["choices"] = OJson::array();
      chunk["usage"] = UsageJson();
      WriteChunk(chunk);
    }
    writer_->WriteEvent("[DONE]");
    writer_->End();
    return;
  }
  if (!error_.ok()) {
    http::Response r = http::Response::Json(HttpStatusOf(error_), ErrorJson(HttpStatusOf(error_), error_.message()));
    r.headers = options_.headers;
    writer_->Send(std::move(r));
    return;
  }
  OJson choices = OJson::array();
  for (size_t i = 0; i < choices_.size(); ++i) {
    const Choice& c = choices_[i];
    OJson choice = {{"index", i}};
    if (options_.chat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}, {"tool_calls", OJson::array()}};
    } else {
      choice["text"] = c.text;
    }
    choice["logprobs"] = options_.want_logprobs ? c.logprobs : OJson(nullptr);
    if (options_.want_logprobs && c.logprobs.is_null())
      choice["logprobs"] = options_.chat ? OJson{{"content", OJson::array()}} : OJson(nullptr);
    choice["finish_reason"] = c.finish_reason;
    choice["stop_reason"] = c.stop_reason;
    if (options_.return_token_ids) {
      choice["token_ids"] = c.token_ids;
      choice["prompt_token_ids"] = prompts_[i / options_.n].prompt;
    }
    choices.push_back(std::move(choice));
  }
  OJson body = {{"id", options_.response_id},
                {"object", options_.chat ? "chat.completion" : "text_completion"},
                {"created", options_.created},
                {"model", options_.model},
                {"choices", std::move(choices)},
                {"usage", UsageJson()}};
  http::Response r = http::Response::Json(200, DumpJson(body));
  r.headers = options_.headers;
  writer_->Send(std::move(r));
}

}  // namespace crescent::server
