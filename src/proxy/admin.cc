// The proxy's control surface: admin API (add/remove instances), /status,
// /health, /v1/models, /metrics.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "common/config.h"
#include "common/logging.h"
#include "proxy/proxy_internal.h"

namespace crescent::proxy {

using nlohmann::json;

http::Response JsonError(int status, std::string_view message) {
  return http::Response::Json(status, ErrorJson(status, message));
}

namespace {

// Compares in time that depends only on the lengths, so that the key cannot
// be guessed byte by byte from response times.
bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  volatile unsigned char diff = a.size() == b.size() ? 0 : 1;
  size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff = diff | (x ^ y);
  }
  return diff == 0;
}

// nullopt when the request may use the admin API.
std::optional<http::Response> CheckAdmin(const Proxy::Core& core, const http::Request& req) {
  if (core.options.admin_api_key.empty())
    return JsonError(403,
                     "the admin API is off: start the proxy with ADMIN_API_KEY set in its "
                     "environment to add or remove instances");
  auto key = req.Header("x-api-key");
  if (!key) return JsonError(401, "missing X-API-Key header (the admin API key)");
  if (!ConstantTimeEquals(*key, core.options.admin_api_key))
    return JsonError(403, "invalid X-API-Key");
  return std::nullopt;
}

struct InstanceArg {
  Role role;
  std::string address;
};

StatusOr<InstanceArg> ParseInstanceArg(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return InvalidArgumentError(
        R"(the body must be a JSON object like {"type": "prefill", "instance": "host:port"})");
  auto type = j.find("type");
  auto inst = j.find("instance");
  if (type == j.end() || !type->is_string() || inst == j.end() || !inst->is_string())
    return InvalidArgumentError(
        R"(the body needs "type" ("prefill" or "decode") and "instance" ("host:port"))");
  ASSIGN_OR_RETURN(Role role, ParseRole(type->get<std::string>()));
  std::string address = inst->get<std::string>();
  RETURN_IF_ERROR(ParseHostPort(address, "instance").status());
  return InstanceArg{role, address};
}

void AddInstance(const std::shared_ptr<Proxy::Core>& core, http::Request req,
                 std::shared_ptr<http::ResponseWriter> writer) {
  if (auto denied = CheckAdmin(*core, req)) return writer->Send(std::move(*denied));
  auto arg = ParseInstanceArg(req.body);
  if (!arg.ok()) return writer->Send(JsonError(400, arg.status().message()));
  // Probing blocks: do it on the prober thread, reply from there.
  core->prober->Post([core, arg = *arg, writer] {
    auto hp = ParseHostPort(arg.address, "instance");
    http::ClientOptions co;
    co.connect_timeout = core->options.probe_timeout;
    co.timeout = core->options.probe_timeout;
    http::Client client(hp->first, hp->second, co);
    auto models = ProbeModels(client, nullptr);
    if (!models.ok()) {
      return writer->Send(JsonError(
          400, fmt::format("{} instance {} did not answer GET /v1/models: {}",
                           RoleName(arg.role), arg.address, models.status().message())));
    }
    std::vector<std::string> known;
    {
      std::lock_guard lock(core->models_mu);
      known = core->model_ids;
    }
    if (!known.empty()) {
      bool match = false;
      for (const auto& m : *models)
        match |= std::find(known.begin(), known.end(), m) != known.end();
      if (!match)
        return writer->Send(JsonError(
            400, fmt::format("instance {} serves {} but this cluster serves {}", arg.address,
                             json(*models).dump(), json(known).dump())));
    }
    Status s = core->router.Add(arg.role, arg.address);
    if (!s.ok()) return writer->Send(JsonError(HttpStatusOf(s), s.message()));
    spdlog::info("admin: added {} instance {}", RoleName(arg.role), arg.address);
    json out = {{"message", fmt::format("Added {} to {} instances.", arg.address, RoleName(arg.role))},
                {"type", RoleName(arg.role)},
                {"instance", arg.address}};
    writer->Send(http::Response::Json(200, out.dump()));
  });
}

http::Response RemoveInstance(Proxy::Core& core, const http::Request& req) {
  if (auto denied = CheckAdmin(core, req)) return std::move(*denied);
  auto arg = ParseInstanceArg(req.body);
  if (!arg.ok()) return JsonError(400, arg.status().message());
  Status s = core.router.Remove(arg->role, arg->address);
  if (!s.ok()) return JsonError(HttpStatusOf(s), s.message());
  int64_t in_flight = 0;
  for (const auto& i : core.router.Instances())
    if (i.role == arg->role && i.address == arg->address) in_flight = i.in_flight_requests;
  spdlog::info("admin: draining {} instance {} ({} requests in flight)", RoleName(arg->role),
               arg->address, in_flight);
  json out = {{"message", fmt::format("Removing {} from {} instances: no new requests, {} in "
                                      "flight finish first.",
                                      arg->address, RoleName(arg->role), in_flight)},
              {"type", RoleName(arg->role)},
              {"instance", arg->address},
              {"in_flight_requests", in_flight}};
  return http::Response::Json(200, out.dump());
}

http::Response StatusPage(Proxy::Core& core) {
  json prefill = json::array(), decode = json::array(), instances = json::array();
  int64_t in_flight = 0;
  for (const auto& i : core.router.Instances()) {
    (i.role == Role::kPrefill ? prefill : decode).push_back(i.address);
    instances.push_back({{"type", RoleName(i.role)},
                         {"instance", i.address},
                         {"healthy", i.healthy},
                         {"draining", i.draining},
                         {"in_flight_requests", i.in_flight_requests},
                         {"in_flight_tokens", i.in_flight_tokens},
                         {"requests_total", i.requests_total},
                         {"failures_total", i.failures_total},
                         {"last_error", i.last_error}});
  }
  in_flight = static_cast<int64_t>(core.metrics.in_flight->value());
  json errors = json::array();
  for (const auto& e : core.router.RecentErrors())
    errors.push_back({{"unix_ms", e.unix_ms},
                      {"request_id", e.request_id},
                      {"type", RoleName(e.role)},
                      {"instance", e.address},
                      {"message", e.message}});
  json out = {{"scheduling", core.router.policy_name()},
              {"prefill_node_count", prefill.size()},
              {"decode_node_count", decode.size()},
              {"prefill_nodes", prefill},
              {"decode_nodes", decode},
              {"in_flight_requests", in_flight},
              {"instances", instances},
              {"recent_errors", errors}};
  return http::Response::Json(200, out.dump(2));
}

http::Response Models(Proxy::Core& core) {
  {
    std::lock_guard lock(core.models_mu);
    if (!core.models_body.empty()) return http::Response::Json(200, core.models_body);
  }
  if (core.options.model_name.empty())
    return JsonError(503, "no instance has answered GET /v1/models yet; check GET /status");
  json out = {{"object", "list"},
              {"data", json::array({{{"id", core.options.model_name},
                                     {"object", "model"},
                                     {"owned_by", "crescent"}}})}};
  return http::Response::Json(200, out.dump());
}

}  // namespace

StatusOr<std::vector<std::string>> ProbeModels(http::Client& client, std::string* body) {
  ASSIGN_OR_RETURN(auto resp, client.Get("/v1/models"));
  if (resp.status != 200)
    return UnavailableError(fmt::format("HTTP {} from {}", resp.status, client.address()));
  json j = json::parse(resp.body, nullptr, false);
  if (j.is_discarded() || !j.contains("data") || !j["data"].is_array())
    return UnavailableError(
        fmt::format("{} answered /v1/models without a model list", client.address()));
  std::vector<std::string> ids;
  for (const auto& m : j["data"])
    if (m.is_object() && m.contains("id") && m["id"].is_string()) ids.push_back(m["id"]);
  if (body) *body = std::move(resp.body);
  return ids;
}

void RegisterControlRoutes(const std::shared_ptr<Proxy::Core>& core, http::Server& server) {
  Proxy::Core* c = core.get();  // the server stops before the core goes away
  server.HandleAsync(http::Method::kPost, "/instances/add",
                     [core](http::Request req, std::shared_ptr<http::ResponseWriter> w) {
                       AddInstance(core, std::move(req), std::move(w));
                     });
  server.Handle(http::Method::kPost, "/instances/remove",
                [c](const http::Request& req) { return RemoveInstance(*c, req); });
  server.Handle(http::Method::kGet, "/status", [c](const http::Request&) { return StatusPage(*c); });
  server.Handle(http::Method::kGet, "/v1/models", [c](const http::Request&) { return Models(*c); });
  server.Handle(http::Method::kGet, "/health", [c](const http::Request&) {
    if (c->router.Available(Role::kDecode) > 0) return http::Response::Text(200, "");
    return JsonError(503, "no decode instance is in rotation; check GET /status");
  });
  server.Handle(http::Method::kGet, "/metrics", [c](const http::Request&) {
    http::Response r = http::Response::Text(200, c->metrics.Render(c->router));
    r.content_type = metrics::kContentType;
    return r;
  });
}

}  // namespace crescent::proxy
