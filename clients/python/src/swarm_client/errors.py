"""Exceptions carrying what the coordinator said: the gRPC code, its message and its details
(``google.rpc.BadRequest`` field violations, ``RetryInfo``, the leader's address)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc

from ._proto.rpc import details_pb2

__all__ = [
    "SwarmError",
    "InvalidSpec",
    "NotFound",
    "AlreadyExists",
    "FailedPrecondition",
    "PermissionDenied",
    "Unauthenticated",
    "ResourceExhausted",
    "Unavailable",
    "DeadlineExceeded",
    "from_rpc_error",
]


class SwarmError(Exception):
    """A call the coordinator refused or could not serve."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class InvalidSpec(SwarmError):
    """INVALID_ARGUMENT: ``violations`` lists every problem as ``(field, description)``."""

    def __init__(self, code: grpc.StatusCode, message: str, violations: list[tuple[str, str]]) -> None:
        super().__init__(code, message)
        self.violations = violations


class NotFound(SwarmError):
    """NOT_FOUND: no such run (or subtask), or not one the caller may see."""


class AlreadyExists(SwarmError):
    """ALREADY_EXISTS."""


class FailedPrecondition(SwarmError):
    """FAILED_PRECONDITION: e.g. an idempotency key reused with a different spec."""


class PermissionDenied(SwarmError):
    """PERMISSION_DENIED: the caller's roles do not allow it."""


class Unauthenticated(SwarmError):
    """UNAUTHENTICATED: no token, or an unknown one."""


class ResourceExhausted(SwarmError):
    """RESOURCE_EXHAUSTED: an admission cap; ``retry_after`` says when to try again."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after: timedelta | None) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


class Unavailable(SwarmError):
    """UNAVAILABLE: the coordinator is not the leader (``leader`` is where it is, when known),
    is shutting down, or cannot reach its store. Clients follow the leader themselves."""

    def __init__(
        self, code: grpc.StatusCode, message: str, leader: str | None, retry_after: timedelta | None
    ) -> None:
        super().__init__(code, message)
        self.leader = leader
        self.retry_after = retry_after


class DeadlineExceeded(SwarmError):
    """DEADLINE_EXCEEDED."""


_BY_CODE: dict[grpc.StatusCode, type[SwarmError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def _details(trailers: Any) -> list[Any]:
    """The ``Any`` messages of a ``grpc-status-details-bin`` trailer."""
    for key, value in trailers or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = details_pb2.Status()
            try:
                status.ParseFromString(value)
            except Exception:  # a broken trailer is no details, not a second error
                return []
            return list(status.details)
    return []


def _unpack(any_msg: Any, cls: Any) -> Any:
    if not any_msg.type_url.endswith("/google.rpc." + cls.DESCRIPTOR.name):
        return None
    msg = cls()
    try:
        msg.ParseFromString(any_msg.value)
    except Exception:
        return None
    return msg


def from_status(code: grpc.StatusCode, message: str, trailers: Any) -> SwarmError:
    """The exception for a status with these trailing metadata."""
    violations: list[tuple[str, str]] = []
    retry_after: timedelta | None = None
    leader: str | None = None
    for d in _details(trailers):
        if (bad := _unpack(d, details_pb2.BadRequest)) is not None:
            violations.extend((v.field, v.description) for v in bad.field_violations)
        elif (retry := _unpack(d, details_pb2.RetryInfo)) is not None:
            retry_after = retry.retry_delay.ToTimedelta()
        elif (info := _unpack(d, details_pb2.ErrorInfo)) is not None:
            if info.reason == "NOT_LEADER" and info.metadata.get("leader"):
                leader = info.metadata["leader"]
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidSpec(code, message, violations)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(code, message, retry_after)
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(code, message, leader, retry_after)
    return _BY_CODE.get(code, SwarmError)(code, message)


def from_rpc_error(e: grpc.RpcError) -> SwarmError:
    """The exception for a failed call (sync or asyncio)."""
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = e.details() if hasattr(e, "details") else str(e)
    trailers = e.trailing_metadata() if hasattr(e, "trailing_metadata") else None
    return from_status(code, details or "", trailers)
