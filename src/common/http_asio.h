// Asio-level hooks between http_server.cc and http_client.cc; not a public
// API (Asio stays out of http.h).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <memory>
#include <optional>

#include "common/http.h"

namespace crescent::http::internal {

// The io thread that serves one client connection of an http::Server.
struct IoAffinity {
  boost::asio::any_io_executor executor;
  // Keeps that io_context alive (the Server's state) while a connection
  // made on it lives, e.g. in a StreamClient's idle pool.
  std::shared_ptr<void> owner;
};

// For a ResponseWriter made by http::Server: its connection's io thread.
// nullopt for other implementations.
std::optional<IoAffinity> WriterIo(const ResponseWriter& writer);

}  // namespace crescent::http::internal
