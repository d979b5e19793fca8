#include "common/status.h"

#include <cerrno>
#include <cstring>

namespace crescent {

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kCancelled: return "CANCELLED";
    case StatusCode::kUnknown: return "UNKNOWN";
    case StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case StatusCode::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case StatusCode::kNotFound: return "NOT_FOUND";
    case StatusCode::kAlreadyExists: return "ALREADY_EXISTS";
    case StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
    case StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case StatusCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case StatusCode::kAborted: return "ABORTED";
    case StatusCode::kOutOfRange: return "OUT_OF_RANGE";
    case StatusCode::kUnimplemented: return "UNIMPLEMENTED";
    case StatusCode::kInternal: return "INTERNAL";
    case StatusCode::kUnavailable: return "UNAVAILABLE";
    case StatusCode::kDataLoss: return "DATA_LOSS";
  }
  return "UNKNOWN";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string out(StatusCodeName(code_));
  out += ": ";
  out += message_;
  return out;
}

Status Status::WithContext(std::string_view prefix) const {
  if (ok()) return *this;
  std::string msg(prefix);
  msg += ": ";
  msg += message_;
  return Status(code_, std::move(msg));
}

#define CRESCENT_DEFINE_ERROR(Name, Code) \
  Status Name(std::string msg) { return Status(StatusCode::Code, std::move(msg)); }
CRESCENT_DEFINE_ERROR(CancelledError, kCancelled)
CRESCENT_DEFINE_ERROR(UnknownError, kUnknown)
CRESCENT_DEFINE_ERROR(InvalidArgumentError, kInvalidArgument)
CRESCENT_DEFINE_ERROR(DeadlineExceededError, kDeadlineExceeded)
CRESCENT_DEFINE_ERROR(NotFoundError, kNotFound)
CRESCENT_DEFINE_ERROR(AlreadyExistsError, kAlreadyExists)
CRESCENT_DEFINE_ERROR(PermissionDeniedError, kPermissionDenied)
CRESCENT_DEFINE_ERROR(ResourceExhaustedError, kResourceExhausted)
CRESCENT_DEFINE_ERROR(FailedPreconditionError, kFailedPrecondition)
CRESCENT_DEFINE_ERROR(AbortedError, kAborted)
CRESCENT_DEFINE_ERROR(OutOfRangeError, kOutOfRange)
CRESCENT_DEFINE_ERROR(UnimplementedError, kUnimplemented)
CRESCENT_DEFINE_ERROR(InternalError, kInternal)
CRESCENT_DEFINE_ERROR(UnavailableError, kUnavailable)
CRESCENT_DEFINE_ERROR(DataLossError, kDataLoss)
#undef CRESCENT_DEFINE_ERROR

Status ErrnoToStatus(int err, std::string_view what) {
  StatusCode code;
  switch (err) {
    case ENOENT: code = StatusCode::kNotFound; break;
    case EEXIST: code = StatusCode::kAlreadyExists; break;
    case EACCES:
    case EPERM: code = StatusCode::kPermissionDenied; break;
    case ENOMEM:
    case ENOSPC:
    case EMFILE:
    case ENFILE: code = StatusCode::kResourceExhausted; break;
    case ETIMEDOUT: code = StatusCode::kDeadlineExceeded; break;
    case ECONNREFUSED:
    case ECONNRESET:
    case ECONNABORTED:
    case EPIPE:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EAGAIN: code = StatusCode::kUnavailable; break;
    case EINVAL: code = StatusCode::kInvalidArgument; break;
    case ECANCELED: code = StatusCode::kCancelled; break;
    default: code = StatusCode::kUnknown; break;
  }
  std::string msg(what);
  msg += ": ";
  msg += std::strerror(err);
  msg += " (errno ";
  msg += std::to_string(err);
  msg += ")";
  return Status(code, std::move(msg));
}

}  // namespace crescent
