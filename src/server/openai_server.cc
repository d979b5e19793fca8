#include "server/openai_server.h"

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <random>

#include "common/logging.h"
#include "common/metrics.h"
#include "model/tokenizer/chat_template.h"
#include "model/tokenizer/tokenizer.h"
#include "server/generation_call.h"
#include "server/openai_protocol.h"
#include "server/server_metrics.h"

namespace crescent::server {

using OJson = nlohmann::ordered_json;

struct OpenAiServer::Impl {
  Impl(OpenAiServerOptions o, engine::Engine* e, const Tokenizer* t, const ChatTemplate* c)
      : options(std::move(o)), engine(e), tokenizer(t), chat_template(c),
        metrics(e, options.served_model_names.front()),
        created(std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count()) {}

  // ---- constant after construction ----
  const OpenAiServerOptions options;
  engine::Engine* const engine;
  const Tokenizer* const tokenizer;
  const ChatTemplate* const chat_template;
  ServerMetrics metrics;
  const int64_t created;
  std::atomic<uint64_t> next_engine_id{0};

  // The client's X-Request-Id, or a fresh random one.
  static std::string RequestId(const http::Request& req) {
    if (auto id = req.Header("x-request-id"); id && !id->empty()) return *id;
    thread_local std::mt19937_64 rng(std::random_device{}());
    return fmt::format("{:016x}{:016x}", rng(), rng());
  }

  static http::Response Error(int status, std::string_view message, const std::string& request_id) {
    http::Response r = http::Response::Json(status, ErrorJson(status, message));
    r.headers.push_back({"X-Request-Id", request_id});
    return r;
  }
  static http::Response Error(const Status& s, const std::string& request_id) {
    return Error(HttpStatusOf(s), s.message(), request_id);
  }
  static http::Response JsonResponse(const OJson& body, const std::string& request_id) {
    http::Response r = http::Response::Json(200, DumpJson(body));
    r.headers.push_back({"X-Request-Id", request_id});
    return r;
  }

  Status CheckModel(const std::string& model) const {
    if (model.empty()) return OkStatus();
    for (const auto& name : options.served_model_names)
      if (name == model) return OkStatus();
    return NotFoundError(fmt::format("The model `{}` does not exist.", model));
  }

  Status NeedTokenizer(std::string_view what) const {
    if (tokenizer != nullptr) return OkStatus();
    return InvalidArgumentError(fmt::format(
        "{} needs a tokenizer, but the model directory {} has no tokenizer.json: send token ids "
        "as the prompt, or start the server with --tokenizer DIR",
        what, options.model_path));
  }

  StatusOr<std::string> RenderChat(const OJson& messages, const OJson& tools, const OJson& kwargs,
                                   bool add_generation_prompt) const {
    RETURN_IF_ERROR(NeedTokenizer("a chat request"));
    if (chat_template == nullptr)
      return InvalidArgumentError(fmt::format(
          "the model {} has no chat template (tokenizer_config.json chat_template); use "
          "/v1/completions", options.model_path));
    auto rendered = chat_template->Render(messages, tools, add_generation_prompt, kwargs);
    if (!rendered.ok())
      return InvalidArgumentError("the chat template failed on these messages: " +
                                  rendered.status().message());
    return rendered;
  }

  // Prompt and output lengths against --max-model-len, with vLLM's
  // messages; fills in the default max_tokens.
  Status FitContext(const std::vector<int32_t>& prompt, GenerationRequest* r, bool chat) const {
    const int max_len = engine->options().max_model_len;
    const int n = static_cast<int>(prompt.size());
    if (n >= max_len)
      return InvalidArgumentError(fmt::format(
          "This model's maximum context length is {} tokens. However, your request has {} input "
          "tokens (at least one output token must fit). Please reduce the length of the input.",
          max_len, n));
    if (r->max_tokens_given) {
      if (n + r->params.max_tokens > max_len)
        return InvalidArgumentError(fmt::format(
            "This model's maximum context length is {} tokens. However, you requested {} tokens "
            "({} in the input, {} in the completion). Please reduce the length of the input or "
            "completion.",
            max_len, n + r->params.max_tokens, n, r->params.max_tokens));
    } else {
      // vLLM: completions default to 16 tokens, chat to the rest of the
      // context; both capped by what fits.
      r->params.max_tokens = chat ? max_len - n : std::min(16, max_len - n);
    }
    return OkStatus();
  }

  CallOptions MakeCallOptions(const GenerationRequest& r, bool chat,
                              const std::string& request_id) const {
    CallOptions o;
    o.chat = chat;
    o.stream = r.stream;
    o.include_usage = r.include_usage;
    o.return_token_ids = r.return_token_ids;
    o.tokens_as_token_ids = r.tokens_as_token_ids;
    o.n = r.params.n;
    o.want_logprobs = r.params.logprobs.has_value();
    o.response_id = (chat ? "chatcmpl-" : "cmpl-") + request_id;
    o.created = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
    o.model = options.served_model_names.front();
    o.headers = {{"X-Request-Id", request_id}};
    return o;
  }

  engine::EngineRequest MakeEngineRequest(const std::string& response_id, std::vector<int32_t> prompt,
                                          const GenerationRequest& r) {
    engine::EngineRequest e;
    e.request_id = fmt::format("{}-{}", response_id, next_engine_id.fetch_add(1));
    e.prompt = std::move(prompt);
    e.params = r.params;
    e.skip_special_tokens = r.skip_special_tokens;
    return e;
  }

  // Validates every engine request, then hands them to a GenerationCall.
  void Launch(const GenerationRequest& r, bool chat, const std::string& request_id,
              std::vector<std::vector<int32_t>> prompts, std::shared_ptr<http::ResponseWriter> writer) {
    CallOptions call_options = MakeCallOptions(r, chat, request_id);
    std::vector<engine::EngineRequest> requests;
    for (auto& prompt : prompts) {
      GenerationRequest fitted = r;
      if (Status s = FitContext(prompt, &fitted, chat); !s.ok())
        return writer->Send(Error(s, request_id));
      requests.push_back(MakeEngineRequest(call_options.response_id, std::move(prompt), fitted));
      if (Status s = engine->Validate(requests.back()); !s.ok())
        return writer->Send(Error(s, request_id));
    }
    auto call = GenerationCall::Create(std::move(call_options), std::move(writer), engine,
                                       tokenizer, &metrics);
    call->Start(std::move(requests));
  }

  void Completions(http::Request req, std::shared_ptr<http::ResponseWriter> writer) {
    const std::string request_id = RequestId(req);
    auto body = ParseJsonBody(req.body);
    if (!body.ok()) return writer->Send(Error(body.status(), request_id));
    auto r = ParseCompletionRequest(*body);
    if (!r.ok()) return writer->Send(Error(r.status(), request_id));
    if (Status s = CheckModel(r->model); !s.ok()) return writer->Send(Error(s, request_id));
    std::vector<std::vector<int32_t>> prompts;
    for (auto& p : r->prompts) {
      if (p.text) {
        if (Status s = NeedTokenizer("a text prompt"); !s.ok()) return writer->Send(Error(s, request_id));
        prompts.push_back(tokenizer->Encode(*p.text, r->add_special_tokens));
        if (prompts.back().empty())
          return writer->Send(Error(400, "the prompt is empty after tokenization", request_id));
      } else {
        prompts.push_back(std::move(p.ids));
      }
    }
    Launch(*r, /*chat=*/false, request_id, std::move(prompts), std::move(writer));
  }

  void ChatCompletions(http::Request req, std::shared_ptr<http::ResponseWriter> writer) {
    const std::string request_id = RequestId(req);
    auto body = ParseJsonBody(req.body);
    if (!body.ok()) return writer->Send(Error(body.status(), request_id));
    auto r = ParseChatRequest(*body);
    if (!r.ok()) return writer->Send(Error(r.status(), request_id));
    if (Status s = CheckModel(r->model); !s.ok()) return writer->Send(Error(s, request_id));
    auto text = RenderChat(r->messages, r->tools, r->template_kwargs, r->add_generation_prompt);
    if (!text.ok()) return writer->Send(Error(text.status(), request_id));
    std::vector<std::vector<int32_t>> prompts = {tokenizer->Encode(*text, r->add_special_tokens)};
    Launch(*r, /*chat=*/true, request_id, std::move(prompts), std::move(writer));
  }

  http::Response Models(const http::Request& req) const {
    const std::string request_id = RequestId(req);
    OJson data = OJson::array();
    for (const auto& name : options.served_model_names) {
      data.push_back({{"id", name},
                      {"object", "model"},
                      {"created", created},
                      {"owned_by", "vllm"},
                      {"root", options.model_path},
                      {"parent", nullptr},
                      {"max_model_len", engine->options().max_model_len}});
    }
    return JsonResponse({{"object", "list"}, {"data", std::move(data)}}, request_id);
  }

  http::Response Tokenize(const http::Request& req) const {
    const std::string request_id = RequestId(req);
    auto body = ParseJsonBody(req.body);
    if (!body.ok()) return Error(body.status(), request_id);
    auto r = ParseTokenizeRequest(*body);
    if (!r.ok()) return Error(r.status(), request_id);
    if (Status s = CheckModel(r->model); !s.ok()) return Error(s, request_id);
    if (Status s = NeedTokenizer("/tokenize"); !s.ok()) return Error(s, request_id);
    std::string text;
    if (r->prompt) {
      text = *r->prompt;
    } else {
      auto rendered = RenderChat(r->messages, r->tools, r->template_kwargs, r->add_generation_prompt);
      if (!rendered.ok()) return Error(rendered.status(), request_id);
      text = *rendered;
    }
    std::vector<int32_t> ids = tokenizer->Encode(text, r->add_special_tokens);
    return JsonResponse({{"count", ids.size()},
                 {"max_model_len", engine->options().max_model_len},
                 {"tokens", ids},
                 {"token_strs", nullptr}},
                request_id);
  }

  http::Response Detokenize(const http::Request& req) const {
    const std::string request_id = RequestId(req);
    auto body = ParseJsonBody(req.body);
    if (!body.ok()) return Error(body.status(), request_id);
    std::string model;
    auto ids = ParseDetokenizeRequest(*body, &model);
    if (!ids.ok()) return Error(ids.status(), request_id);
    if (Status s = CheckModel(model); !s.ok()) return Error(s, request_id);
    if (Status s = NeedTokenizer("/detokenize"); !s.ok()) return Error(s, request_id);
    const int32_t vocab = tokenizer->VocabSize();
    for (int32_t id : *ids)
      if (id >= vocab)
        return Error(400, fmt::format("tokens: id {} is outside the vocabulary [0, {})", id, vocab),
                     request_id);
    return JsonResponse({{"prompt", tokenizer->Decode(*ids)}}, request_id);
  }
};

OpenAiServer::OpenAiServer(OpenAiServerOptions options, engine::Engine* engine,
                           const Tokenizer* tokenizer, const ChatTemplate* chat_template) {
  if (options.served_model_names.empty()) options.served_model_names.push_back(options.model_path);
  impl_ = std::make_shared<Impl>(std::move(options), engine, tokenizer, chat_template);
}

OpenAiServer::~OpenAiServer() = default;

ServerMetrics& OpenAiServer::metrics() { return impl_->metrics; }

void OpenAiServer::RegisterRoutes(http::Server* server) {
  Impl* impl = impl_.get();
  using http::Method;
  server->HandleAsync(Method::kPost, "/v1/completions",
                      [impl](http::Request req, std::shared_ptr<http::ResponseWriter> w) {
                        impl->Completions(std::move(req), std::move(w));
                      });
  server->HandleAsync(Method::kPost, "/v1/chat/completions",
                      [impl](http::Request req, std::shared_ptr<http::ResponseWriter> w) {
                        impl->ChatCompletions(std::move(req), std::move(w));
                      });
  server->Handle(Method::kGet, "/v1/models", [impl](const http::Request& r) { return impl->Models(r); });
  server->Handle(Method::kPost, "/tokenize", [impl](const http::Request& r) { return impl->Tokenize(r); });
  server->Handle(Method::kPost, "/detokenize",
                 [impl](const http::Request& r) { return impl->Detokenize(r); });
  server->Handle(Method::kGet, "/health", [](const http::Request& r) {
    http::Response resp = http::Response::Text(200, "");
    resp.headers.push_back({"X-Request-Id", Impl::RequestId(r)});
    return resp;
  });
  server->Handle(Method::kGet, "/version", [](const http::Request& r) {
    return Impl::JsonResponse({{"version", "crescent"}}, Impl::RequestId(r));
  });
  server->Handle(Method::kGet, "/metrics", [impl](const http::Request&) {
    http::Response r = http::Response::Text(200, impl->metrics.Render());
    r.content_type = metrics::kContentType;
    return r;
  });
}

}  // namespace crescent::server
