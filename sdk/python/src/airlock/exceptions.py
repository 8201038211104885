"""The SDK's exceptions.

Every error the SDK raises is an :class:`AirlockError`. Errors the service
answers with (``{"error": {"code", "message"}}``) map by HTTP status:

========  ===========================
status    exception
========  ===========================
400, 422  :class:`InvalidArgumentError`
401       :class:`AuthenticationError`
404       :class:`NotFoundError`
409       :class:`ConflictError` (e.g. the sandbox is paused or stopped)
413       :class:`PayloadTooLargeError`
503       :class:`ServiceUnavailableError`
========  ===========================

A command that ends with a non-zero exit code raises
:class:`CommandExitError` (unless ``check=False``); a command or request
that runs out of time raises :class:`TimeoutError` (which is also the
built-in :class:`TimeoutError`).
"""

from __future__ import annotations

import builtins
from typing import Optional

__all__ = [
    "AirlockError",
    "AuthenticationError",
    "CommandExitError",
    "ConflictError",
    "InvalidArgumentError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ServiceUnavailableError",
    "TimeoutError",
]


class AirlockError(Exception):
    """The base of every error the SDK raises.

    Attributes:
        message: What went wrong, in words.
        status: The HTTP status of the service's answer, if there was one.
        code: The service's machine-readable code (``not_found``,
            ``invalid``, ``conflict``, ``failed``, ...), if there was one.
    """

    def __init__(
        self, message: str, *, status: Optional[int] = None, code: Optional[str] = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class AuthenticationError(AirlockError):
    """The service refused the request's credentials (HTTP 401): a missing
    or wrong bearer token (``AIRLOCK_TOKEN``) over TCP."""


class NotFoundError(AirlockError):
    """No such sandbox, process, file or port forward (HTTP 404)."""


class ConflictError(AirlockError):
    """The request does not fit the current state (HTTP 409): the sandbox
    is paused (resume it first) or stopped, a process has no stdin, ..."""


class InvalidArgumentError(AirlockError):
    """The service rejected an argument (HTTP 400 or 422): a bad size,
    duration, path, user, isolation tier, ..."""


class PayloadTooLargeError(AirlockError):
    """The request body was too large (HTTP 413)."""


class ServiceUnavailableError(AirlockError):
    """The service cannot be reached (no daemon on the socket, connection
    refused) or is shutting down (HTTP 503)."""


class TimeoutError(AirlockError, builtins.TimeoutError):
    """A command or a request ran out of time. A command that times out is
    killed first. Also catchable as the built-in :class:`TimeoutError`."""


class CommandExitError(AirlockError):
    """A command ended with a non-zero exit code (or could not start).

    It carries the command's result: :attr:`stdout`, :attr:`stderr`,
    :attr:`exit_code` and :attr:`error`.
    """

    def __init__(
        self,
        *,
        stdout: str,
        stderr: str,
        exit_code: int,
        error: Optional[str] = None,
        stdout_bytes: bytes = b"",
        stderr_bytes: bytes = b"",
    ) -> None:
        what = error or f"exit code {exit_code}"
        tail = stderr.strip().splitlines()[-1:] if stderr.strip() else []
        msg = f"command failed: {what}" + (f": {tail[0]}" if tail else "")
        super().__init__(msg, code="command_exit")
        self.stdout = stdout
        self.stderr = stderr
        self.exit_code = exit_code
        self.error = error
        self.stdout_bytes = stdout_bytes
        self.stderr_bytes = stderr_bytes
