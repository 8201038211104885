"""What the sync and async clients share: finding the service, building
requests, mapping errors, decoding process events."""

from __future__ import annotations

import base64
import codecs
import json
import os
import posixpath
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    Union,
)

import httpx

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
from .models import CommandResult

#: Seconds a plain request (not a stream) may take by default.
DEFAULT_REQUEST_TIMEOUT = 120.0
#: Seconds a foreground command may run by default (``timeout=None`` or
#: ``0`` for no limit), as in E2B.
DEFAULT_COMMAND_TIMEOUT = 60.0
#: Chunk size for streamed uploads from file objects.
CHUNK = 1 << 20

#: What ``trust=`` means: how far you trust the code → the isolation tier.
TRUST_TIERS: Dict[str, str] = {
    "own": "none",
    "experimental": "container",
    "untrusted": "microvm",
}

Cmd = Union[str, Sequence[str]]
Size = Union[int, str]
Duration = Union[int, float, str]


def default_socket() -> str:
    """The service's default socket: ``/run/airlock/airlock.sock`` for
    root, else ``$XDG_RUNTIME_DIR/airlock.sock`` (``/tmp/airlock-UID/``
    without one), as ``airlock serve`` uses."""
    if os.geteuid() == 0:
        return "/run/airlock/airlock.sock"
    d = os.environ.get("XDG_RUNTIME_DIR")
    if d:
        return os.path.join(d, "airlock.sock")
    return f"/tmp/airlock-{os.getuid()}/airlock.sock"


@dataclass(frozen=True)
class ConnectionConfig:
    """Where the service is and how to talk to it.

    Found, in order, from the arguments, ``AIRLOCK_SOCKET``,
    ``AIRLOCK_URL`` with ``AIRLOCK_TOKEN``, and the default socket.
    """

    socket: Optional[str]
    url: Optional[str]
    token: Optional[str]
    request_timeout: float

    @classmethod
    def resolve(
        cls,
        socket: Optional[str] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> "ConnectionConfig":
        """The configuration from the arguments, else the environment,
        else the default socket."""
        rt = DEFAULT_REQUEST_TIMEOUT if request_timeout is None else float(request_timeout)
        if socket is None and url is None:
            env_sock = os.environ.get("AIRLOCK_SOCKET")
            env_url = os.environ.get("AIRLOCK_URL")
            if env_sock:
                socket = env_sock
            elif env_url:
                url = env_url
            else:
                socket = default_socket()
        if url is not None:
            url = url.rstrip("/")
            if not (url.startswith("http://") or url.startswith("https://")):
                raise InvalidArgumentError(f"AIRLOCK_URL must be http://HOST:PORT, not {url!r}")
            if token is None:
                token = os.environ.get("AIRLOCK_TOKEN") or None
            return cls(socket=None, url=url, token=token, request_timeout=rt)
        return cls(socket=str(socket), url=None, token=token, request_timeout=rt)

    @property
    def base_url(self) -> str:
        """The URL requests go to (``http://airlock`` over the socket)."""
        return self.url if self.url is not None else "http://airlock"

    @property
    def headers(self) -> Dict[str, str]:
        """Headers every request carries (the bearer token, if any)."""
        h = {"user-agent": "airlock-python-sdk/0.1"}
        if self.token:
            h["authorization"] = f"Bearer {self.token}"
        return h

    def ws_url(self, path: str) -> str:
        """The WebSocket URL of ``path``."""
        base = self.base_url
        if base.startswith("https://"):
            return "wss://" + base[len("https://") :] + path
        return "ws://" + base[len("http://") :] + path

    def timeout(self, request_timeout: Optional[float] = None) -> httpx.Timeout:
        """httpx's timeout for a plain request."""
        t = self.request_timeout if request_timeout is None else request_timeout
        return httpx.Timeout(t or None, connect=min(t or 30.0, 30.0))

    @property
    def where(self) -> str:
        """Where the service is, in words (for error messages)."""
        return f"socket {self.socket}" if self.socket else str(self.url)


#: A stream's timeout: no limit between chunks (commands and watches may
#: be quiet for long), but a bounded connect.
STREAM_TIMEOUT = httpx.Timeout(None, connect=30.0)


# ------------------------------------------------------------------ errors

_STATUS: Dict[int, Type[AirlockError]] = {
    400: InvalidArgumentError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: InvalidArgumentError,
    422: InvalidArgumentError,
    503: ServiceUnavailableError,
}


def error_from(status: int, body: bytes) -> AirlockError:
    """The exception for an error answer (``{"error": {code, message}}``)."""
    code: Optional[str] = None
    message = body.decode("utf-8", "replace").strip() or f"HTTP {status}"
    try:
        v = json.loads(body)
        e = v.get("error") if isinstance(v, dict) else None
        if isinstance(e, dict):
            code = e.get("code")
            message = str(e.get("message") or message)
    except ValueError:
        pass
    cls = _STATUS.get(status, AirlockError)
    return cls(message, status=status, code=code)


def transport_error(e: Exception, cfg: ConnectionConfig) -> AirlockError:
    """The exception for a failure below HTTP."""
    if isinstance(e, httpx.TimeoutException):
        return TimeoutError(f"the request to the airlock service timed out ({e})")
    if isinstance(e, (httpx.ConnectError, FileNotFoundError, ConnectionRefusedError)):
        return ServiceUnavailableError(
            f"cannot reach the airlock service at {cfg.where} ({e}); start it with "
            "`airlock serve`, or set AIRLOCK_SOCKET (or AIRLOCK_URL and AIRLOCK_TOKEN)"
        )
    return AirlockError(f"talking to the airlock service at {cfg.where} failed: {e}")


#: Failures of a connection (typically a pooled one the service had
#: closed) before an answer came: idempotent requests are sent once more.
STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def may_retry(method: str, content: Any, idempotent: bool) -> bool:
    """Whether a request may be sent again after :data:`STALE_CONNECTION`:
    an idempotent one whose body can be sent again."""
    replayable = content is None or isinstance(content, (bytes, str))
    return replayable and (idempotent or method in ("GET", "HEAD", "PUT", "DELETE"))


# ---------------------------------------------------------------- requests


def duration(v: Duration, what: str) -> str:
    """Seconds (a number) or a duration text (``30s``, ``5m``) → text."""
    if isinstance(v, bool):
        raise InvalidArgumentError(f"{what}: a number of seconds or a duration like '5m'")
    if isinstance(v, int):
        if v <= 0:
            raise InvalidArgumentError(f"{what} must be greater than zero")
        return str(v)
    if isinstance(v, float):
        if v <= 0:
            raise InvalidArgumentError(f"{what} must be greater than zero")
        return f"{max(1, round(v * 1000))}ms"
    return str(v)


def size(v: Size) -> str:
    """Bytes (a number) or a size text (``512M``, ``1G``) → text."""
    if isinstance(v, bool):
        raise InvalidArgumentError("a size is bytes or text like '512M'")
    return str(v)


def mount_of(m: Any) -> Dict[str, Any]:
    """A mount from a dict, a ``(source, target[, mode])`` tuple or
    ``"SOURCE:TARGET[:MODE]"``."""
    if isinstance(m, Mapping):
        return {k: v for k, v in m.items() if v is not None}
    if isinstance(m, str):
        parts = m.split(":")
        if len(parts) not in (2, 3):
            raise InvalidArgumentError(f"mount {m!r}: SOURCE:TARGET[:MODE]")
        m = tuple(parts)
    if isinstance(m, (tuple, list)) and len(m) in (2, 3):
        d: Dict[str, Any] = {"source": str(m[0]), "target": str(m[1])}
        if len(m) == 3:
            d["mode"] = str(m[2])
        return d
    raise InvalidArgumentError(f"mount {m!r}: a dict, (source, target, mode) or 'SRC:DST:MODE'")


def create_request(
    *,
    image: Optional[str],
    isolation: Optional[str],
    trust: Optional[str],
    memory: Optional[Size],
    cpus: Optional[float],
    pids: Optional[int],
    disk: Optional[Size],
    timeout: Optional[Duration],
    idle_timeout: Optional[Duration],
    env: Optional[Mapping[str, str]],
    network: Optional[str],
    metadata: Optional[Mapping[str, str]],
    mounts: Optional[Iterable[Any]],
    user: Optional[str],
    workdir: Optional[str],
    hostname: Optional[str],
) -> Dict[str, Any]:
    """The body of ``POST /v1/sandboxes``."""
    if trust is not None:
        tier = TRUST_TIERS.get(trust)
        if tier is None:
            raise InvalidArgumentError(
                f"trust {trust!r}: one of {', '.join(TRUST_TIERS)} "
                "(own → none, experimental → container, untrusted → microvm)"
            )
        if isolation is not None and isolation != tier:
            raise InvalidArgumentError(
                f"trust={trust!r} means isolation {tier!r}, not {isolation!r}: give one of them"
            )
        isolation = tier
    body: Dict[str, Any] = {}
    for k, v in (
        ("image", image),
        ("isolation", isolation),
        ("network", network),
        ("user", user),
        ("workdir", workdir),
        ("hostname", hostname),
    ):
        if v is not None:
            body[k] = v
    if env:
        body["env"] = {str(k): str(v) for k, v in env.items()}
    if metadata:
        body["labels"] = {str(k): str(v) for k, v in metadata.items()}
    if mounts:
        body["mounts"] = [mount_of(m) for m in mounts]
    limits: Dict[str, Any] = {}
    if memory is not None:
        limits["memory"] = size(memory)
    if disk is not None:
        limits["disk"] = size(disk)
    if cpus is not None:
        limits["cpus"] = float(cpus)
    if pids is not None:
        limits["pids"] = int(pids)
    if timeout is not None:
        limits["timeout"] = duration(timeout, "timeout")
    if idle_timeout is not None:
        limits["idle_timeout"] = duration(idle_timeout, "idle_timeout")
    if limits:
        body["limits"] = limits
    return body


def argv_of(cmd: Cmd) -> List[str]:
    """A command: a string runs through ``sh -c``; a list is the argv."""
    if isinstance(cmd, str):
        if not cmd.strip():
            raise InvalidArgumentError("an empty command")
        return ["/bin/sh", "-c", cmd]
    argv = [str(a) for a in cmd]
    if not argv or not argv[0]:
        raise InvalidArgumentError("an empty command")
    return argv


def exec_request(
    cmd: Cmd,
    *,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
    user: Optional[str] = None,
    background: bool = False,
    stdin: bool = False,
    hold_output: bool = False,
    tty: Optional[Tuple[int, int]] = None,
) -> Dict[str, Any]:
    """The body of ``POST /v1/sandboxes/{id}/processes``."""
    body: Dict[str, Any] = {"argv": argv_of(cmd)}
    if env:
        body["env"] = {str(k): str(v) for k, v in env.items()}
    if cwd is not None:
        body["cwd"] = cwd
    if user is not None:
        body["user"] = user
    if background:
        body["background"] = True
    if stdin:
        body["stdin"] = True
    if hold_output:
        body["hold_output"] = True
    if tty is not None:
        body["tty"] = {"rows": int(tty[0]), "cols": int(tty[1])}
    return body


def merge_env(env: Optional[Mapping[str, str]], envs: Optional[Mapping[str, str]]) -> Optional[Dict[str, str]]:
    """``env=`` with E2B's spelling ``envs=`` accepted too."""
    if env is None and envs is None:
        return None
    out: Dict[str, str] = {}
    out.update(envs or {})
    out.update(env or {})
    return out


def abspath(path: str) -> str:
    """A path inside the sandbox; a relative one is taken from ``/``."""
    if not isinstance(path, str) or not path:
        raise InvalidArgumentError("a path inside the sandbox")
    if "\0" in path:
        raise InvalidArgumentError("a path holds a NUL byte")
    p = posixpath.normpath(posixpath.join("/", path))
    if p.startswith("//"):
        p = "/" + p.lstrip("/")
    return p


def mode_text(mode: Optional[int]) -> Optional[str]:
    """Permission bits (an int, e.g. ``0o755``) → octal text."""
    if mode is None:
        return None
    if isinstance(mode, str):
        return mode
    return format(int(mode), "o")


def bool_param(v: bool) -> str:
    return "true" if v else "false"


# ---------------------------------------------------------- process events


def event_bytes(ev: Mapping[str, Any]) -> bytes:
    """An output event's bytes (``text`` or ``b64``)."""
    t = ev.get("text")
    if t is not None:
        return str(t).encode("utf-8")
    b = ev.get("b64")
    if b is not None:
        return base64.b64decode(b)
    return b""


def parse_line(line: Union[str, bytes]) -> Optional[Dict[str, Any]]:
    """One NDJSON (or SSE ``data:``) line → an event, or None."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    line = line.strip()
    if not line or line.startswith(":"):
        return None
    if line.startswith("data:"):
        line = line[5:].strip()
    try:
        v = json.loads(line)
    except ValueError:
        return None
    return v if isinstance(v, dict) else None


class ProcessState:
    """A process's events folded into its result, with text decoded
    incrementally for callbacks (a character split across chunks is not
    garbled)."""

    def __init__(self) -> None:
        self.id: Optional[int] = None
        self.os_pid: Optional[int] = None
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.exit_code: Optional[int] = None
        self.signal: Optional[int] = None
        self.error: Optional[str] = None
        self.done = False
        self._dec = {
            "stdout": codecs.getincrementaldecoder("utf-8")("replace"),
            "stderr": codecs.getincrementaldecoder("utf-8")("replace"),
        }

    def feed(self, ev: Mapping[str, Any]) -> Optional[Tuple[str, bytes, str]]:
        """Takes one event; for output, returns (stream, bytes, text)."""
        t = ev.get("type")
        if t == "started":
            self.os_pid = ev.get("pid")
            if ev.get("id") is not None:
                self.id = int(ev["id"])
        elif t in ("stdout", "stderr"):
            data = event_bytes(ev)
            (self.stdout if t == "stdout" else self.stderr).extend(data)
            return t, data, self._dec[t].decode(data)
        elif t == "exit":
            self.exit_code = int(ev.get("code", -1))
            self.signal = ev.get("signal")
            self.done = True
        elif t == "error":
            self.exit_code = int(ev.get("code", 126))
            stage = ev.get("stage")
            msg = ev.get("message") or "the command could not start"
            self.error = f"{msg} (at {stage})" if stage else str(msg)
            self.done = True
        return None

    def result(self) -> CommandResult:
        return CommandResult(
            stdout=self.stdout.decode("utf-8", "replace"),
            stderr=self.stderr.decode("utf-8", "replace"),
            exit_code=-1 if self.exit_code is None else self.exit_code,
            error=self.error,
            stdout_bytes=bytes(self.stdout),
            stderr_bytes=bytes(self.stderr),
        )


OutputCallback = Callable[[str], Any]


def checked(r: CommandResult, check: bool) -> CommandResult:
    """The result, or CommandExitError when it failed and ``check``."""
    if check and (r.exit_code != 0 or r.error is not None):
        raise CommandExitError(
            stdout=r.stdout,
            stderr=r.stderr,
            exit_code=r.exit_code,
            error=r.error,
            stdout_bytes=r.stdout_bytes,
            stderr_bytes=r.stderr_bytes,
        )
    return r


def has_labels(labels: Mapping[str, str], wanted: Optional[Mapping[str, str]]) -> bool:
    """Whether ``labels`` hold every ``key: value`` of ``wanted``."""
    return all(labels.get(k) == str(v) for k, v in (wanted or {}).items())
