// Errors as values: Status and StatusOr<T>.
//
// Every fallible call in Crescent returns Status or StatusOr<T>. A Status
// carries the most specific code that applies and a message a user can act
// on: what was wrong and how to fix it ("metadata_server: cannot reach
// http://127.0.0.1:8080/metadata (connection refused); start `crescent
// master --enable-http-metadata-server` or fix the address").
//
// Propagate with RETURN_IF_ERROR / ASSIGN_OR_RETURN rather than nested ifs.
// Translation of foreign errors (errno, gRPC, hiredis, CUDA) lives in one
// place each (see ErrnoToStatus below for errno).
//
// Thread safety: Status and StatusOr are values; const access is safe from
// many threads.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace crescent {

// Codes follow absl/gRPC so that they map one to one onto the wire.
enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
};

// "INVALID_ARGUMENT", ... as gRPC spells them.
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message)
      : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "NOT_FOUND: key 'x' is not in the store". "OK" when ok().
  std::string ToString() const;

  // Returns a copy whose message is "<prefix>: <message>"; OK stays OK.
  Status WithContext(std::string_view prefix) const;

  // Marks a deliberately ignored Status (e.g. best-effort cleanup).
  void IgnoreError() const {}

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status OkStatus() { return Status(); }
Status CancelledError(std::string msg);
Status UnknownError(std::string msg);
Status InvalidArgumentError(std::string msg);
Status DeadlineExceededError(std::string msg);
Status NotFoundError(std::string msg);
Status AlreadyExistsError(std::string msg);
Status PermissionDeniedError(std::string msg);
Status ResourceExhaustedError(std::string msg);
Status FailedPreconditionError(std::string msg);
Status AbortedError(std::string msg);
Status OutOfRangeError(std::string msg);
Status UnimplementedError(std::string msg);
Status InternalError(std::string msg);
Status UnavailableError(std::string msg);
Status DataLossError(std::string msg);

// The one place errno becomes a Status: "<what>: <strerror> (errno N)" with
// a code chosen from the errno (ENOENT -> NOT_FOUND, ECONNREFUSED ->
// UNAVAILABLE, ETIMEDOUT -> DEADLINE_EXCEEDED, ENOMEM -> RESOURCE_EXHAUSTED).
Status ErrnoToStatus(int err, std::string_view what);

// StatusOr<T>: either a value or a non-OK Status. Accessing value() of an
// error is a broken invariant and asserts.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(const Status& status) : status_(status) {  // NOLINT implicit
    assert(!status.ok() && "StatusOr constructed from OK Status");
    if (status_.ok()) status_ = InternalError("StatusOr from OK status");
  }
  StatusOr(Status&& status) : status_(std::move(status)) {  // NOLINT
    assert(!status_.ok() && "StatusOr constructed from OK Status");
    if (status_.ok()) status_ = InternalError("StatusOr from OK status");
  }
  StatusOr(const T& value) : value_(value) {}        // NOLINT implicit
  StatusOr(T&& value) : value_(std::move(value)) {}  // NOLINT implicit
  template <typename U,
            typename = std::enable_if_t<std::is_convertible_v<U&&, T> &&
                                        !std::is_same_v<std::decay_t<U>, T> &&
                                        !std::is_same_v<std::decay_t<U>, Status>>>
  StatusOr(U&& value) : value_(T(std::forward<U>(value))) {}  // NOLINT

  bool ok() const { return status_.ok(); }
  const Status& status() const& { return status_; }
  Status status() && { return std::move(status_); }

  const T& value() const& { assert(ok()); return *value_; }
  T& value() & { assert(ok()); return *value_; }
  T&& value() && { assert(ok()); return std::move(*value_); }
  const T& operator*() const& { return value(); }
  T& operator*() & { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  const T* operator->() const { return &value(); }
  T* operator->() { return &value(); }

  T value_or(T fallback) const& { return ok() ? *value_ : std::move(fallback); }

 private:
  Status status_;
  std::optional<T> value_;
};

namespace status_internal {
inline const Status& AsStatus(const Status& s) { return s; }
inline Status AsStatus(Status&& s) { return std::move(s); }
template <typename T>
const Status& AsStatus(const StatusOr<T>& s) { return s.status(); }
template <typename T>
Status AsStatus(StatusOr<T>&& s) { return std::move(s).status(); }
}  // namespace status_internal

}  // namespace crescent

#define CRESCENT_CONCAT_INNER(a, b) a##b
#define CRESCENT_CONCAT(a, b) CRESCENT_CONCAT_INNER(a, b)

// RETURN_IF_ERROR(expr): expr is a Status or StatusOr; returns its Status
// from the enclosing function when not OK.
#define RETURN_IF_ERROR(expr)                                              \
  do {                                                                     \
    auto&& crescent_status_tmp_ = (expr);                                  \
    if (!crescent_status_tmp_.ok())                                        \
      return ::crescent::status_internal::AsStatus(                        \
          std::move(crescent_status_tmp_));                                \
  } while (0)

// ASSIGN_OR_RETURN(lhs, expr): evaluates the StatusOr expr; on error returns
// its Status, else moves the value into lhs ("auto x" or an existing lvalue).
#define ASSIGN_OR_RETURN(lhs, expr) \
  CRESCENT_ASSIGN_OR_RETURN_IMPL(CRESCENT_CONCAT(crescent_sor_, __LINE__), lhs, expr)
#define CRESCENT_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return std::move(tmp).status();       \
  lhs = std::move(tmp).value()
