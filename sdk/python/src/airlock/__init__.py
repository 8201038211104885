"""Airlock's Python SDK: sandboxes of the airlock service (``airlock
serve``), in the shapes E2B's SDK users know.

>>> from airlock import Sandbox
>>> with Sandbox.create(memory="1G") as sb:
...     print(sb.commands.run("echo hello").stdout)
hello

The SDK finds the service through ``AIRLOCK_SOCKET``, else
``AIRLOCK_URL`` with ``AIRLOCK_TOKEN``, else the default socket
(``/run/airlock/airlock.sock`` for root, ``$XDG_RUNTIME_DIR/airlock.sock``
for others). :class:`AsyncSandbox` is the same API for asyncio.
"""

from ._common import ConnectionConfig, default_socket
from .exceptions import (
    AirlockError,
    AuthenticationError,
    CommandExitError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    TimeoutError,
)
from .models import (
    AuditEntry,
    CommandResult,
    EntryInfo,
    FilesystemEvent,
    FilesystemEventType,
    FileType,
    PortInfo,
    ProcessInfo,
    SandboxInfo,
    SandboxState,
    Usage,
    WriteInfo,
)
from .sandbox_async import (
    AsyncCommandHandle,
    AsyncCommands,
    AsyncFilesystem,
    AsyncFileStream,
    AsyncPty,
    AsyncPtyHandle,
    AsyncSandbox,
    AsyncWatchHandle,
)
from .sandbox_sync import (
    CommandHandle,
    Commands,
    Filesystem,
    FileStream,
    Pty,
    PtyHandle,
    Sandbox,
    WatchHandle,
)

__version__ = "0.1.0"

__all__ = [
    "AirlockError",
    "AsyncCommandHandle",
    "AsyncCommands",
    "AsyncFileStream",
    "AsyncFilesystem",
    "AsyncPty",
    "AsyncPtyHandle",
    "AsyncSandbox",
    "AsyncWatchHandle",
    "AuditEntry",
    "AuthenticationError",
    "CommandExitError",
    "CommandHandle",
    "CommandResult",
    "Commands",
    "ConflictError",
    "ConnectionConfig",
    "EntryInfo",
    "FileStream",
    "FileType",
    "Filesystem",
    "FilesystemEvent",
    "FilesystemEventType",
    "InvalidArgumentError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PortInfo",
    "ProcessInfo",
    "Pty",
    "PtyHandle",
    "Sandbox",
    "SandboxInfo",
    "SandboxState",
    "ServiceUnavailableError",
    "TimeoutError",
    "Usage",
    "WatchHandle",
    "WriteInfo",
    "default_socket",
]
