"""The values the SDK returns: sandboxes, command results, processes,
files, watch events, usage figures and port forwards."""

from __future__ import annotations

import datetime as _dt
import enum
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

__all__ = [
    "AuditEntry",
    "CommandResult",
    "EntryInfo",
    "FileType",
    "FilesystemEvent",
    "FilesystemEventType",
    "PortInfo",
    "ProcessInfo",
    "SandboxInfo",
    "SandboxState",
    "Usage",
    "WriteInfo",
]


def _ts(v: Any) -> Optional[_dt.datetime]:
    if v is None:
        return None
    return _dt.datetime.fromtimestamp(float(v), tz=_dt.timezone.utc)


class SandboxState(str, enum.Enum):
    """A sandbox's state."""

    CREATING = "creating"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass
class SandboxInfo:
    """A sandbox as the service describes it.

    Attributes:
        sandbox_id: Its id (``sb-`` and 16 hex digits).
        state: ``running``, ``paused``, ``stopped``, ``failed`` or ``creating``.
        metadata: Its labels (``metadata=`` of :meth:`Sandbox.create`).
        started_at: When it was created.
        end_at: When it will be stopped unless extended (its lifetime).
        ended_at: When it stopped, if it has.
        reason: Why it stopped, if it has.
        idle_timeout: Seconds of inactivity after which it stops, if set.
        notes: Set-up notes (what this host could not provide, ...).
        spec: The create request it was made from.
    """

    sandbox_id: str
    state: str
    metadata: Dict[str, str]
    started_at: Optional[_dt.datetime]
    end_at: Optional[_dt.datetime]
    ended_at: Optional[_dt.datetime]
    reason: Optional[str]
    idle_timeout: Optional[int]
    notes: List[str]
    spec: Dict[str, Any]

    @property
    def id(self) -> str:
        """The sandbox's id (same as :attr:`sandbox_id`)."""
        return self.sandbox_id

    @classmethod
    def _from_json(cls, v: Dict[str, Any]) -> "SandboxInfo":
        return cls(
            sandbox_id=v["id"],
            state=v.get("state", ""),
            metadata=dict(v.get("labels") or {}),
            started_at=_ts(v.get("created")),
            end_at=_ts(v.get("expires")),
            ended_at=_ts(v.get("ended")),
            reason=v.get("reason"),
            idle_timeout=v.get("idle_timeout_secs"),
            notes=list(v.get("notes") or []),
            spec=dict(v.get("spec") or {}),
        )


@dataclass
class CommandResult:
    """What a finished command produced.

    Attributes:
        stdout: Its standard output, decoded as UTF-8 (invalid bytes
            replaced).
        stderr: Its standard error, likewise.
        exit_code: Its exit code; 128+N when killed by signal N; 127 when
            the command was not found, 126 when it could not start.
        error: Why it could not start, if it could not.
        stdout_bytes: Its standard output, exactly as written.
        stderr_bytes: Its standard error, exactly as written.
    """

    stdout: str
    stderr: str
    exit_code: int
    error: Optional[str] = None
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""

    @property
    def ok(self) -> bool:
        """Whether it exited with code 0."""
        return self.exit_code == 0 and self.error is None


@dataclass
class ProcessInfo:
    """A process in a sandbox (:meth:`Commands.list`).

    Attributes:
        pid: The process's id in the API: what :meth:`Commands.kill`,
            :meth:`Commands.send_stdin` and :meth:`Commands.connect` take.
        os_pid: Its process id inside the sandbox, once started.
        argv: Its command line.
        tty: Whether it runs on a terminal (a PTY).
        running: Whether it still runs.
        exit_code: Its exit code once it has ended (128+N for signal N).
        age: Seconds since it started.
    """

    pid: int
    os_pid: Optional[int]
    argv: List[str]
    tty: bool
    running: bool
    exit_code: Optional[int]
    age: int

    @property
    def cmd(self) -> str:
        """Its command line as one string."""
        return " ".join(self.argv)

    @classmethod
    def _from_json(cls, v: Dict[str, Any]) -> "ProcessInfo":
        return cls(
            pid=int(v["id"]),
            os_pid=v.get("pid"),
            argv=list(v.get("argv") or []),
            tty=bool(v.get("tty")),
            running=bool(v.get("running")),
            exit_code=v.get("exit_code"),
            age=int(v.get("age_secs") or 0),
        )


class FileType(str, enum.Enum):
    """What a directory entry is."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    OTHER = "other"


@dataclass
class EntryInfo:
    """A file or directory in a sandbox.

    Attributes:
        name: Its last path component.
        path: Its absolute path inside the sandbox.
        type: :class:`FileType`.
        size: Its size in bytes.
        mode: Its permission bits (and set-id/sticky bits).
        permissions: The permission bits as ``rwxr-xr-x``.
        uid: Its owner, as the sandbox sees it.
        gid: Its group, as the sandbox sees it.
        modified_time: Its modification time.
    """

    name: str
    path: str
    type: FileType
    size: int
    mode: int
    permissions: str
    uid: int
    gid: int
    modified_time: _dt.datetime

    @classmethod
    def _from_json(cls, path: str, v: Dict[str, Any]) -> "EntryInfo":
        mode = int(v.get("mode") or 0)
        perms = "".join(
            ch if mode & (1 << (8 - i)) else "-" for i, ch in enumerate("rwxrwxrwx")
        )
        kind = v.get("kind", "other")
        try:
            t = FileType(kind)
        except ValueError:
            t = FileType.OTHER
        name = v.get("name") or path.rstrip("/").rsplit("/", 1)[-1] or "/"
        return cls(
            name=name,
            path=path,
            type=t,
            size=int(v.get("size") or 0),
            mode=mode & 0o7777,
            permissions=perms,
            uid=int(v.get("uid") or 0),
            gid=int(v.get("gid") or 0),
            modified_time=_ts(v.get("mtime") or 0) or _dt.datetime.fromtimestamp(0),
        )


@dataclass
class WriteInfo:
    """A file written by :meth:`Filesystem.write`.

    Attributes:
        name: Its last path component.
        path: Its absolute path inside the sandbox.
        type: Always :attr:`FileType.FILE`.
        size: The bytes written.
    """

    name: str
    path: str
    type: FileType = FileType.FILE
    size: int = 0


class FilesystemEventType(str, enum.Enum):
    """What happened to an entry of a watched directory."""

    CREATE = "create"
    WRITE = "write"
    REMOVE = "remove"


@dataclass
class FilesystemEvent:
    """A change in a watched directory.

    Attributes:
        name: The entry's name within the watched directory.
        type: :class:`FilesystemEventType`.
    """

    name: str
    type: FilesystemEventType

    @classmethod
    def _from_json(cls, v: Dict[str, Any]) -> "FilesystemEvent":
        t = {
            "created": FilesystemEventType.CREATE,
            "modified": FilesystemEventType.WRITE,
            "removed": FilesystemEventType.REMOVE,
        }.get(v.get("type", ""), FilesystemEventType.WRITE)
        return cls(name=str(v.get("name", "")), type=t)


@dataclass
class Usage:
    """What a sandbox uses now (``None`` where the host cannot measure it).

    Attributes:
        cpu_usec: CPU time used so far, microseconds.
        memory_bytes: Memory in use.
        pids: Tasks (processes and threads) now.
        disk_bytes: Bytes used on its writable layer.
        disk_limit_bytes: The writable layer's limit.
    """

    cpu_usec: Optional[int]
    memory_bytes: Optional[int]
    pids: Optional[int]
    disk_bytes: Optional[int]
    disk_limit_bytes: Optional[int]

    @property
    def cpu_seconds(self) -> Optional[float]:
        """CPU time used so far, seconds."""
        return None if self.cpu_usec is None else self.cpu_usec / 1e6

    @classmethod
    def _from_json(cls, v: Dict[str, Any]) -> "Usage":
        return cls(
            cpu_usec=v.get("cpu_usec"),
            memory_bytes=v.get("memory_bytes"),
            pids=v.get("pids"),
            disk_bytes=v.get("disk_bytes"),
            disk_limit_bytes=v.get("disk_limit_bytes"),
        )


@dataclass
class PortInfo:
    """A port forward: ``host:host_port`` on the host reaches ``port``
    inside the sandbox.

    Attributes:
        port: The port inside the sandbox.
        host: The host address it listens on (loopback).
        host_port: The port on the host.
        token: With a guarded forward: the token a client sends first
            (``AIRLOCK-TOKEN <token>\\n``).
    """

    port: int
    host: str
    host_port: int
    token: Optional[str] = None

    @property
    def address(self) -> str:
        """``host:host_port``."""
        return f"{self.host}:{self.host_port}"

    @classmethod
    def _from_json(cls, v: Dict[str, Any]) -> "PortInfo":
        return cls(
            port=int(v["port"]),
            host=str(v.get("host", "127.0.0.1")),
            host_port=int(v["host_port"]),
            token=v.get("token"),
        )


@dataclass
class AuditEntry:
    """One entry of a sandbox's audit log.

    Attributes:
        seq: Its sequence number.
        time: When it happened.
        kind: ``create``, ``exec``, ``exec-end``, ``file-write``, ``port``,
            ``pause``, ``resume``, ``stop``, ``fail`` or ``recover``.
        detail: What the service recorded with it.
    """

    seq: int
    time: _dt.datetime
    kind: str
    detail: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _from_json(cls, v: Dict[str, Any]) -> "AuditEntry":
        return cls(
            seq=int(v["seq"]),
            time=_ts(v.get("ts") or 0) or _dt.datetime.fromtimestamp(0),
            kind=str(v.get("kind", "")),
            detail=dict(v.get("detail") or {}),
        )
