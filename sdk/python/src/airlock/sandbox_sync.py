"""The synchronous client: :class:`Sandbox` and its parts."""

from __future__ import annotations

import json
import socket as _socket
import sys
import threading
import time
from typing import (
    Any,
    BinaryIO,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Literal,
    Mapping,
    NoReturn,
    Optional,
    Tuple,
    Union,
    overload,
)

import httpx

from . import _common as c
from ._common import Cmd, ConnectionConfig, Duration, ProcessState, Size
from .exceptions import (
    AirlockError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    TimeoutError,
)
from .models import (
    AuditEntry,
    CommandResult,
    EntryInfo,
    FilesystemEvent,
    PortInfo,
    ProcessInfo,
    SandboxInfo,
    Usage,
    WriteInfo,
)

__all__ = [
    "CommandHandle",
    "Commands",
    "FileStream",
    "Filesystem",
    "Pty",
    "PtyHandle",
    "Sandbox",
    "WatchHandle",
]

_UNSET: Any = object()
Data = Union[str, bytes, bytearray, memoryview, BinaryIO, Iterable[bytes]]


class _Http:
    """httpx over the unix socket or TCP, with the service's errors mapped
    to the SDK's exceptions."""

    def __init__(self, cfg: ConnectionConfig) -> None:
        self.cfg = cfg
        transport = httpx.HTTPTransport(uds=cfg.socket) if cfg.socket else None
        self.client = httpx.Client(
            base_url=cfg.base_url,
            transport=transport,
            headers=cfg.headers,
            timeout=cfg.timeout(),
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[Mapping[str, str]] = None,
        content: Any = None,
        timeout: Optional[float] = None,
        idempotent: bool = False,
    ) -> httpx.Response:
        retry = c.may_retry(method, content, idempotent)
        while True:
            try:
                r = self.client.request(
                    method,
                    path,
                    json=json,
                    params=params,
                    content=content,
                    timeout=(
                        self.cfg.timeout(timeout)
                        if timeout is not None
                        else httpx.USE_CLIENT_DEFAULT
                    ),
                )
                break
            except c.STALE_CONNECTION:
                if not retry:
                    raise_transport(sys.exc_info()[1], self.cfg)
                retry = False
            except (httpx.HTTPError, OSError) as e:
                raise c.transport_error(e, self.cfg) from e
        if r.status_code >= 400:
            raise c.error_from(r.status_code, r.content)
        return r

    def stream(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[Mapping[str, str]] = None,
    ) -> httpx.Response:
        """Sends a request and returns its response unread (close it)."""
        retry = c.may_retry(method, None, False)
        while True:
            try:
                req = self.client.build_request(
                    method, path, json=json, params=params, timeout=c.STREAM_TIMEOUT
                )
                r = self.client.send(req, stream=True)
                break
            except c.STALE_CONNECTION:
                if not retry:
                    raise_transport(sys.exc_info()[1], self.cfg)
                retry = False
            except (httpx.HTTPError, OSError) as e:
                raise c.transport_error(e, self.cfg) from e
        if r.status_code >= 400:
            try:
                body = r.read()
            finally:
                r.close()
            raise c.error_from(r.status_code, body)
        return r

    def close(self) -> None:
        self.client.close()


def raise_transport(e: Optional[BaseException], cfg: ConnectionConfig) -> NoReturn:
    """Raises the SDK's error for a transport failure."""
    assert isinstance(e, Exception)
    raise c.transport_error(e, cfg) from e


def _interrupt(r: Optional[httpx.Response]) -> None:
    """Wakes a thread blocked reading ``r``: shuts its socket down."""
    if r is None:
        return
    ns = r.extensions.get("network_stream")
    sock = ns.get_extra_info("socket") if ns is not None else None
    if sock is not None:
        try:
            sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass


def _chunks(data: Data) -> Union[bytes, Iterator[bytes]]:
    """What to send: bytes as they are, a file object read in chunks, an
    iterable of bytes as it comes."""
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if hasattr(data, "read"):
        f: Any = data

        def gen() -> Iterator[bytes]:
            while True:
                b = f.read(c.CHUNK)
                if not b:
                    return
                yield b.encode("utf-8") if isinstance(b, str) else bytes(b)

        return gen()

    def it() -> Iterator[bytes]:
        for b in data:
            yield b.encode("utf-8") if isinstance(b, str) else bytes(b)

    return it()


def _call(cb: Optional[Callable[[Any], Any]], v: Any) -> None:
    if cb is not None:
        cb(v)


# ---------------------------------------------------------------- commands


class CommandHandle:
    """A command running in the background (``commands.run(...,
    background=True)``).

    Its output is read as it comes (a thread of the SDK's, which calls
    ``on_stdout``/``on_stderr``), so the command is never held back by
    output nobody reads. :meth:`wait` returns its :class:`CommandResult`;
    iterating over the handle yields ``(stdout, stderr, None)`` chunks as
    they come, E2B-style.
    """

    def __init__(
        self,
        sandbox: "Sandbox",
        pid: int,
        *,
        on_stdout: Optional[Callable[[str], Any]] = None,
        on_stderr: Optional[Callable[[str], Any]] = None,
        timeout: Optional[float] = None,
        primary: bool = True,
    ) -> None:
        self._sb = sandbox
        self.pid = pid
        self._state = ProcessState()
        self._state.id = pid
        self._cond = threading.Condition()
        self._chunks: List[Tuple[str, str]] = []
        self._finished = False
        self._stopped = False
        self._timed_out = False
        self._exc: Optional[BaseException] = None
        self._resp: Optional[httpx.Response] = None
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._primary = primary
        self._timer: Optional[threading.Timer] = None
        if timeout:
            self._timer = threading.Timer(timeout, self._on_timeout)
            self._timer.daemon = True
            self._timer.start()
        self._thread = threading.Thread(
            target=self._read, name=f"airlock-process-{pid}", daemon=True
        )
        self._thread.start()

    def _on_timeout(self) -> None:
        self._timed_out = True
        self.kill()

    def _read(self) -> None:
        http = self._sb._http
        path = f"{self._sb._base}/processes/{self.pid}/events"
        try:
            try:
                r = http.stream(
                    "GET", path, params={"primary": "true"} if self._primary else None
                )
            except ConflictError:
                if not self._primary:
                    raise
                # Nobody held its output for us: follow it as it comes.
                r = http.stream("GET", path)
            try:
                self._resp = r
                if self._stopped:
                    return
                for line in r.iter_lines():
                    ev = c.parse_line(line)
                    if ev is None:
                        continue
                    out = self._state.feed(ev)
                    if out is not None:
                        stream, _, text = out
                        if text:
                            with self._cond:
                                self._chunks.append((stream, text))
                                self._cond.notify_all()
                            _call(self._on_stdout if stream == "stdout" else self._on_stderr, text)
                    if self._state.done:
                        break
            finally:
                r.close()
        except BaseException as e:  # noqa: BLE001 - reported by wait()
            if not self._stopped:
                self._exc = e
        finally:
            if self._timer is not None:
                self._timer.cancel()
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def _iter(self, deadline: Optional[float]) -> Iterator[Tuple[str, str]]:
        i = 0
        while True:
            with self._cond:
                while i >= len(self._chunks) and not self._finished:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"process {self.pid} is still running")
                    self._cond.wait(left)
                if i < len(self._chunks):
                    chunk = self._chunks[i]
                    i += 1
                else:
                    return
            yield chunk

    def __iter__(self) -> Iterator[Tuple[Optional[str], Optional[str], None]]:
        """Yields ``(stdout, stderr, None)`` chunks (one of the first two
        set) from the start of its output until it ends."""
        for stream, text in self._iter(None):
            yield (text, None, None) if stream == "stdout" else (None, text, None)

    @property
    def exit_code(self) -> Optional[int]:
        """Its exit code, once it has ended."""
        return self._state.exit_code

    @property
    def stdout(self) -> str:
        """Its standard output so far."""
        return self._state.stdout.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        """Its standard error so far."""
        return self._state.stderr.decode("utf-8", "replace")

    def wait(
        self,
        on_stdout: Optional[Callable[[str], Any]] = None,
        on_stderr: Optional[Callable[[str], Any]] = None,
        *,
        timeout: Optional[float] = None,
        check: bool = True,
    ) -> CommandResult:
        """Waits for it to end and returns its result.

        Args:
            on_stdout: Called (in this thread) with each stdout chunk, from
                the start of its output.
            on_stderr: Likewise for stderr.
            timeout: Seconds to wait at most (the command keeps running
                when this runs out: :class:`TimeoutError`).
            check: Raise :class:`CommandExitError` for a non-zero exit.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for stream, text in self._iter(deadline):
            _call(on_stdout if stream == "stdout" else on_stderr, text)
        self._thread.join()
        if self._timed_out:
            raise TimeoutError(f"process {self.pid} ran out of time and was killed")
        if self._exc is not None:
            if isinstance(self._exc, AirlockError):
                raise self._exc
            raise AirlockError(f"reading process {self.pid}'s events failed: {self._exc}") from self._exc
        if not self._state.done:
            raise AirlockError(f"stopped following process {self.pid} before it ended")
        return c.checked(self._state.result(), check)

    def kill(self) -> bool:
        """Kills it (SIGKILL). False if it had already ended."""
        return self._sb.commands.kill(self.pid)

    def signal(self, signal: Union[int, str]) -> None:
        """Sends it a signal (a number, or a name: ``TERM``, ``SIGINT``)."""
        self._sb.commands.signal(self.pid, signal)

    def send_stdin(self, data: Data) -> int:
        """Sends data to its stdin (str, bytes, a file object or an
        iterable of bytes, streamed); returns the bytes sent."""
        return self._sb.commands.send_stdin(self.pid, data)

    def close_stdin(self) -> None:
        """Closes its stdin: it reads end-of-file after what was sent."""
        self._sb.commands.close_stdin(self.pid)

    def disconnect(self) -> None:
        """Stops following it; the command keeps running (follow it again
        with :meth:`Commands.connect`)."""
        self._stopped = True
        _interrupt(self._resp)
        self._thread.join(5)

    def __repr__(self) -> str:
        return f"<CommandHandle pid={self.pid} exit_code={self.exit_code}>"


class Commands:
    """Runs and manages processes in a sandbox (``sandbox.commands``)."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sb = sandbox

    @overload
    def run(
        self,
        cmd: Cmd,
        background: Literal[False] = False,
        *,
        on_stdout: Optional[Callable[[str], Any]] = None,
        on_stderr: Optional[Callable[[str], Any]] = None,
        timeout: Optional[float] = ...,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        envs: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        stdin: Optional[bool] = None,
        check: bool = True,
    ) -> CommandResult: ...

    @overload
    def run(
        self,
        cmd: Cmd,
        background: Literal[True],
        *,
        on_stdout: Optional[Callable[[str], Any]] = None,
        on_stderr: Optional[Callable[[str], Any]] = None,
        timeout: Optional[float] = ...,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        envs: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        stdin: Optional[bool] = None,
        check: bool = True,
    ) -> CommandHandle: ...

    def run(
        self,
        cmd: Cmd,
        background: bool = False,
        *,
        on_stdout: Optional[Callable[[str], Any]] = None,
        on_stderr: Optional[Callable[[str], Any]] = None,
        timeout: Optional[float] = _UNSET,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        envs: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        stdin: Optional[bool] = None,
        check: bool = True,
    ) -> Union[CommandResult, CommandHandle]:
        """Runs a command.

        Args:
            cmd: A shell command line (run with ``/bin/sh -c``) or an argv
                list (run as it is).
            background: Return a :class:`CommandHandle` at once instead of
                waiting for the command to end.
            on_stdout: Called with each chunk of stdout (text) as it comes.
            on_stderr: Called with each chunk of stderr as it comes.
            timeout: Seconds the command may run before it is killed and
                :class:`TimeoutError` raised (default 60 in the foreground,
                none in the background; ``None`` or ``0``: no limit).
            cwd: Its working directory (absolute).
            env: Environment variables to add (``envs=`` works too).
            user: ``sandbox`` (the sandbox's default), ``root`` or
                ``UID[:GID]``.
            stdin: Keep its stdin open for :meth:`CommandHandle.send_stdin`
                (default: True in the background, else stdin is
                ``/dev/null``).
            check: Raise :class:`CommandExitError` when it exits non-zero.

        Returns:
            A :class:`CommandResult` (``stdout``, ``stderr``,
            ``exit_code``), or with ``background=True`` a
            :class:`CommandHandle`.
        """
        env2 = c.merge_env(env, envs)
        base = f"{self._sb._base}/processes"
        if background:
            t = None if timeout is _UNSET else timeout
            body = c.exec_request(
                cmd,
                env=env2,
                cwd=cwd,
                user=user,
                background=True,
                hold_output=True,
                stdin=True if stdin is None else stdin,
            )
            pid = int(self._sb._http.request("POST", base, json=body).json()["id"])
            return CommandHandle(
                self._sb, pid, on_stdout=on_stdout, on_stderr=on_stderr, timeout=t or None
            )
        if stdin:
            raise InvalidArgumentError("stdin=True needs background=True (send it with send_stdin)")
        t = c.DEFAULT_COMMAND_TIMEOUT if timeout is _UNSET else timeout
        body = c.exec_request(cmd, env=env2, cwd=cwd, user=user)
        state = ProcessState()
        timed_out = threading.Event()
        resp: List[httpx.Response] = []

        def on_timeout() -> None:
            timed_out.set()
            if state.id is not None:
                self._kill_quietly(state.id)
            elif resp:
                _interrupt(resp[0])

        timer = threading.Timer(t, on_timeout) if t else None
        r = self._sb._http.stream("POST", base, json=body)
        resp.append(r)
        try:
            if timer is not None:
                timer.daemon = True
                timer.start()
            for line in r.iter_lines():
                ev = c.parse_line(line)
                if ev is None:
                    continue
                out = state.feed(ev)
                if ev.get("type") == "started" and timed_out.is_set() and state.id is not None:
                    self._kill_quietly(state.id)
                if out is not None and out[2]:
                    _call(on_stdout if out[0] == "stdout" else on_stderr, out[2])
                if state.done:
                    break
        except httpx.HTTPError as e:
            if not timed_out.is_set():
                raise c.transport_error(e, self._sb._http.cfg) from e
        finally:
            if timer is not None:
                timer.cancel()
            r.close()
            # Left early (a callback raised, Ctrl-C, a broken stream): the
            # command does not outlive the call that ran it.
            if not state.done and state.id is not None and not timed_out.is_set():
                self._kill_quietly(state.id)
        if timed_out.is_set():
            raise TimeoutError(f"the command ran longer than {t} s and was killed")
        if not state.done:
            raise AirlockError("the command's event stream ended before the command did")
        return c.checked(state.result(), check)

    def _kill_quietly(self, pid: int) -> None:
        try:
            self.kill(pid)
        except AirlockError:
            pass

    def list(self) -> List[ProcessInfo]:
        """The sandbox's processes (running ones and recently ended)."""
        v = self._sb._http.request("GET", f"{self._sb._base}/processes").json()
        return [ProcessInfo._from_json(p) for p in v]

    def kill(self, pid: int) -> bool:
        """Kills process ``pid`` (SIGKILL). False if it had already ended
        or is unknown."""
        try:
            self.signal(pid, "KILL")
            return True
        except (NotFoundError, ConflictError):
            return False

    def signal(self, pid: int, signal: Union[int, str]) -> None:
        """Sends process ``pid`` a signal (a number or a name)."""
        self._sb._http.request(
            "POST", f"{self._sb._base}/processes/{pid}/signal", json={"signal": signal}
        )

    def send_stdin(self, pid: int, data: Data) -> int:
        """Sends data to process ``pid``'s stdin (it must have been started
        in the background with stdin); returns the bytes sent."""
        r = self._sb._http.request(
            "POST",
            f"{self._sb._base}/processes/{pid}/stdin",
            content=_chunks(data),
        )
        return int(r.json().get("count", 0))

    def close_stdin(self, pid: int) -> None:
        """Closes process ``pid``'s stdin."""
        self._sb._http.request("POST", f"{self._sb._base}/processes/{pid}/stdin/close")

    def connect(
        self,
        pid: int,
        *,
        on_stdout: Optional[Callable[[str], Any]] = None,
        on_stderr: Optional[Callable[[str], Any]] = None,
        timeout: Optional[float] = None,
    ) -> CommandHandle:
        """Follows a process that is already running (one started in the
        background elsewhere, or after :meth:`CommandHandle.disconnect`):
        a handle that sees its output from now on."""
        return CommandHandle(
            self._sb, pid, on_stdout=on_stdout, on_stderr=on_stderr, timeout=timeout, primary=False
        )


# ---------------------------------------------------------------------- pty


class PtyHandle:
    """A process on a terminal (``sandbox.pty.create()``), over a
    WebSocket. Its output (bytes) goes to ``on_data`` as it comes."""

    def __init__(
        self,
        sandbox: "Sandbox",
        pid: int,
        ws: Any,
        on_data: Optional[Callable[[bytes], Any]],
        timeout: Optional[float],
    ) -> None:
        self._sb = sandbox
        self.pid = pid
        self._ws = ws
        self._on_data = on_data
        self._out = bytearray()
        self._exit: Optional[int] = None
        self._exc: Optional[BaseException] = None
        self._timed_out = False
        self._done = threading.Event()
        self._send_lock = threading.Lock()
        self._timer: Optional[threading.Timer] = None
        if timeout:
            self._timer = threading.Timer(timeout, self._on_timeout)
            self._timer.daemon = True
            self._timer.start()
        self._thread = threading.Thread(target=self._read, name=f"airlock-pty-{pid}", daemon=True)
        self._thread.start()

    def _on_timeout(self) -> None:
        self._timed_out = True
        self.kill()

    def _read(self) -> None:
        try:
            for msg in self._ws:
                if isinstance(msg, (bytes, bytearray)):
                    self._out.extend(msg)
                    _call(self._on_data, bytes(msg))
                else:
                    try:
                        v = json.loads(msg)
                    except ValueError:
                        continue
                    if isinstance(v, dict) and "exit" in v:
                        self._exit = int(v["exit"])
                        break
        except BaseException as e:  # noqa: BLE001 - reported by wait()
            self._exc = e
        finally:
            if self._timer is not None:
                self._timer.cancel()
            try:
                self._ws.close()
            except Exception:  # noqa: BLE001
                pass
            self._done.set()

    @property
    def output(self) -> bytes:
        """Everything the terminal showed so far."""
        return bytes(self._out)

    @property
    def exit_code(self) -> Optional[int]:
        """Its exit code, once it has ended."""
        return self._exit

    def send(self, data: Union[str, bytes]) -> None:
        """Types ``data`` into the terminal."""
        b = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        with self._send_lock:
            self._ws.send(b)

    send_stdin = send

    def resize(self, rows: int, cols: int) -> None:
        """Changes the terminal's size."""
        self._sb.pty.resize(self.pid, rows, cols)

    def close_stdin(self) -> None:
        """Ends the terminal's input as a terminal does: types the
        end-of-file character (Ctrl-D), which a program reading the
        terminal line by line sees as end-of-file."""
        with self._send_lock:
            self._ws.send(b"\x04")

    def kill(self) -> bool:
        """Kills its process (SIGKILL). False if it had already ended."""
        return self._sb.commands.kill(self.pid)

    def wait(self, *, timeout: Optional[float] = None, check: bool = True) -> CommandResult:
        """Waits for it to end; the result's ``stdout`` is the terminal's
        output. Raises :class:`CommandExitError` for a non-zero exit
        (unless ``check=False``)."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"terminal process {self.pid} is still running")
        if self._timed_out:
            raise TimeoutError(f"terminal process {self.pid} ran out of time and was killed")
        if self._exit is None:
            why = f": {self._exc}" if self._exc else ""
            raise AirlockError(f"the terminal's connection ended before its process did{why}")
        out = bytes(self._out)
        r = CommandResult(
            stdout=out.decode("utf-8", "replace"),
            stderr="",
            exit_code=self._exit,
            stdout_bytes=out,
        )
        return c.checked(r, check)

    def disconnect(self) -> None:
        """Closes the WebSocket: the service hangs the terminal up (SIGHUP
        to its process, which ends a shell)."""
        try:
            self._ws.close()
        finally:
            self._thread.join(5)


class Pty:
    """Terminals in a sandbox (``sandbox.pty``)."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sb = sandbox

    def create(
        self,
        rows: int = 24,
        cols: int = 80,
        *,
        cmd: Optional[Cmd] = None,
        on_data: Optional[Callable[[bytes], Any]] = None,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        envs: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> PtyHandle:
        """Starts a process on a new terminal of ``rows`` × ``cols``.

        Args:
            rows: The terminal's height.
            cols: The terminal's width.
            cmd: What to run (default: a login shell, bash if there is one).
            on_data: Called with the terminal's output (bytes) as it comes.
            cwd: Its working directory.
            env: Environment variables to add (``TERM`` is
                ``xterm-256color`` unless set).
            user: Who runs it.
            timeout: Seconds before it is killed (default: no limit).
        """
        if cmd is None:
            cmd = ["/bin/sh", "-c", "if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi"]
        e = {"TERM": "xterm-256color"}
        e.update(c.merge_env(env, envs) or {})
        body = c.exec_request(
            cmd, env=e, cwd=cwd, user=user, background=True, stdin=True, tty=(rows, cols)
        )
        pid = int(self._sb._http.request("POST", f"{self._sb._base}/processes", json=body).json()["id"])
        cfg = self._sb._http.cfg
        path = f"{self._sb._base}/processes/{pid}/pty"
        from websockets.sync import client as wsc

        try:
            if cfg.socket:
                ws = wsc.unix_connect(cfg.socket, cfg.ws_url(path), max_size=None)
            else:
                ws = wsc.connect(cfg.ws_url(path), additional_headers=cfg.headers, max_size=None)
            # As `with connect(...) as ws` would (websockets 17 warns
            # about a connection used without it); closed by the handle.
            ws = ws.__enter__()
        except Exception as ex:  # noqa: BLE001
            self._sb.commands.kill(pid)
            raise AirlockError(f"cannot open the terminal's WebSocket: {ex}") from ex
        return PtyHandle(self._sb, pid, ws, on_data, timeout)

    def resize(self, pid: int, rows: int, cols: int) -> None:
        """Changes terminal process ``pid``'s size."""
        self._sb._http.request(
            "POST",
            f"{self._sb._base}/processes/{pid}/resize",
            json={"rows": int(rows), "cols": int(cols)},
        )

    def kill(self, pid: int) -> bool:
        """Kills terminal process ``pid``."""
        return self._sb.commands.kill(pid)


# -------------------------------------------------------------------- files


class FileStream:
    """A file being downloaded: iterate over its chunks, or ``read()`` it
    like a file object (``shutil.copyfileobj`` works). Close it (or use
    ``with``) when done early."""

    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp
        self._it = resp.iter_bytes()
        self._buf = b""

    def __iter__(self) -> Iterator[bytes]:
        """Yields the file's bytes in chunks as they come."""
        if self._buf:
            b, self._buf = self._buf, b""
            yield b
        for b in self._it:
            yield b
        self.close()

    def read(self, n: int = -1) -> bytes:
        """Reads up to ``n`` bytes (all that is left when ``n < 0``)."""
        if n is None or n < 0:
            rest = self._buf + b"".join(self._it)
            self._buf = b""
            self.close()
            return rest
        while len(self._buf) < n:
            try:
                self._buf += next(self._it)
            except StopIteration:
                break
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def close(self) -> None:
        """Stops the download."""
        self._resp.close()

    def __enter__(self) -> "FileStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class WatchHandle:
    """A directory being watched (``sandbox.files.watch_dir()``).

    Events come as the service polls the directory (every 250 ms);
    :meth:`get_new_events` returns those not returned yet, ``on_event`` is
    called with each as it comes. :meth:`stop` ends the watch.
    """

    def __init__(
        self, resp: httpx.Response, on_event: Optional[Callable[[FilesystemEvent], Any]]
    ) -> None:
        self._resp = resp
        self._on_event = on_event
        self._events: List[FilesystemEvent] = []
        self._seen = 0
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._read, name="airlock-watch", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self._resp.iter_lines():
                ev = c.parse_line(line)
                if ev is None:
                    continue
                e = FilesystemEvent._from_json(ev)
                with self._cond:
                    self._events.append(e)
                    self._cond.notify_all()
                _call(self._on_event, e)
        except Exception:  # noqa: BLE001 - stopped, or the sandbox ended
            pass
        finally:
            self._resp.close()
            with self._cond:
                self._stopped = True
                self._cond.notify_all()

    def get_new_events(self) -> List[FilesystemEvent]:
        """The events since the last call."""
        with self._cond:
            out = self._events[self._seen :]
            self._seen = len(self._events)
        return out

    def wait_for(
        self, predicate: Callable[[FilesystemEvent], bool], timeout: float = 10.0
    ) -> FilesystemEvent:
        """Waits for an event that ``predicate`` accepts (looking at every
        event since the watch started) and returns it."""
        deadline = time.monotonic() + timeout
        i = 0
        with self._cond:
            while True:
                while i < len(self._events):
                    if predicate(self._events[i]):
                        return self._events[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or self._stopped:
                    raise TimeoutError("no such event in time")
                self._cond.wait(left)

    def stop(self) -> None:
        """Ends the watch."""
        _interrupt(self._resp)
        self._thread.join(5)

    def __enter__(self) -> "WatchHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class Filesystem:
    """Files in a sandbox (``sandbox.files``). Paths are absolute inside
    the sandbox (a relative one is taken from ``/``)."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sb = sandbox

    def _url(self, what: str = "") -> str:
        return f"{self._sb._base}/files{what}"

    @overload
    def read(self, path: str, format: Literal["text"] = "text") -> str: ...

    @overload
    def read(self, path: str, format: Literal["bytes"]) -> bytes: ...

    @overload
    def read(self, path: str, format: Literal["stream"]) -> FileStream: ...

    def read(
        self, path: str, format: Literal["text", "bytes", "stream"] = "text"
    ) -> Union[str, bytes, FileStream]:
        """Reads a file: as text (UTF-8), ``bytes``, or a
        :class:`FileStream` (``format="stream"``) for large files."""
        params = {"path": c.abspath(path)}
        r = self._sb._http.stream("GET", self._url(), params=params)
        if format == "stream":
            return FileStream(r)
        try:
            data = r.read()
        finally:
            r.close()
        if format == "bytes":
            return data
        if format == "text":
            return data.decode("utf-8", "replace")
        raise InvalidArgumentError(f"format {format!r}: text, bytes or stream")

    def write(self, path: str, data: Data, *, mode: Optional[int] = None) -> WriteInfo:
        """Writes a file (made, or replaced), creating its parent
        directories. ``data``: str, bytes, a file object (read in chunks)
        or an iterable of bytes (streamed as it comes)."""
        p = c.abspath(path)
        params = {"path": p}
        m = c.mode_text(mode)
        if m is not None:
            params["mode"] = m
        body = _chunks(data)
        # Parents first: a PUT refused before its body was read would
        # leave a connection the service then drops.
        self._parents(p)
        r = self._sb._http.request("PUT", self._url(), params=params, content=body)
        n = int(r.json().get("count", 0))
        return WriteInfo(name=p.rsplit("/", 1)[-1], path=p, size=n)

    def _parents(self, p: str) -> None:
        parent = p.rsplit("/", 1)[0] or "/"
        if parent != "/":
            self._sb._http.request(
                "POST", self._url("/mkdir"), json={"path": parent, "parents": True}, idempotent=True
            )

    def list(self, path: str, depth: int = 1) -> List[EntryInfo]:
        """The entries of a directory (sorted by name), and of its
        subdirectories down to ``depth`` levels."""
        p = c.abspath(path)
        v = self._sb._http.request("GET", self._url("/list"), params={"path": p}).json()
        out: List[EntryInfo] = []
        for e in v:
            child = p.rstrip("/") + "/" + e["name"]
            info = EntryInfo._from_json(child, e)
            out.append(info)
            if depth > 1 and info.type.value == "dir":
                out.extend(self.list(child, depth - 1))
        return out

    def get_info(self, path: str, *, follow: bool = False) -> EntryInfo:
        """A file's status (``follow``: of a final symlink's target)."""
        p = c.abspath(path)
        v = self._sb._http.request(
            "GET", self._url("/stat"), params={"path": p, "follow": c.bool_param(follow)}
        ).json()
        return EntryInfo._from_json(p, v)

    def exists(self, path: str) -> bool:
        """Whether a path exists (a dangling symlink does)."""
        try:
            self.get_info(path)
            return True
        except NotFoundError:
            return False

    def remove(self, path: str, *, recursive: bool = True) -> None:
        """Removes a file, or a directory with everything in it."""
        self._sb._http.request(
            "DELETE",
            self._url(),
            params={"path": c.abspath(path), "recursive": c.bool_param(recursive)},
        )

    def rename(self, old_path: str, new_path: str) -> EntryInfo:
        """Renames (moves) a file or directory; returns its new status."""
        new = c.abspath(new_path)
        self._sb._http.request(
            "POST", self._url("/rename"), json={"from": c.abspath(old_path), "to": new}
        )
        return self.get_info(new)

    def make_dir(self, path: str, *, mode: Optional[int] = None) -> bool:
        """Makes a directory and its parents; False if it was there."""
        p = c.abspath(path)
        try:
            if self.get_info(p, follow=True).type.value == "dir":
                return False
        except NotFoundError:
            pass
        body: Dict[str, Any] = {"path": p, "parents": True}
        if mode is not None:
            body["mode"] = c.mode_text(mode)
        self._sb._http.request("POST", self._url("/mkdir"), json=body)
        return True

    def chmod(self, path: str, mode: int) -> None:
        """Changes a file's permission bits (``0o755``)."""
        self._sb._http.request(
            "POST", self._url("/chmod"), json={"path": c.abspath(path), "mode": c.mode_text(mode)}
        )

    def watch_dir(
        self, path: str, on_event: Optional[Callable[[FilesystemEvent], Any]] = None
    ) -> WatchHandle:
        """Watches a directory's entries (created, written, removed)."""
        r = self._sb._http.stream("GET", self._url("/watch"), params={"path": c.abspath(path)})
        return WatchHandle(r, on_event)

    watch = watch_dir

    def write_tar(self, path: str, data: Data) -> int:
        """Unpacks a tar archive into directory ``path``."""
        r = self._sb._http.request(
            "PUT", self._url("/tar"), params={"path": c.abspath(path)}, content=_chunks(data)
        )
        return int(r.json().get("count", 0))

    def read_tar(self, path: str) -> FileStream:
        """A tar archive of ``path`` (a file or a directory tree), streamed."""
        return FileStream(self._sb._http.stream("GET", self._url("/tar"), params={"path": c.abspath(path)}))


# ------------------------------------------------------------------ sandbox


class Sandbox:
    """A sandbox of the airlock service.

    Make one with :meth:`create`, or reach an existing one with
    :meth:`connect`. ``with Sandbox.create() as sb:`` kills it at the end.

    Attributes:
        commands: :class:`Commands`: run processes.
        pty: :class:`Pty`: terminals.
        files: :class:`Filesystem`: files.
    """

    def __init__(
        self,
        sandbox_id: str,
        *,
        socket: Optional[str] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        request_timeout: Optional[float] = None,
        _http: Optional[_Http] = None,
    ) -> None:
        """A handle on sandbox ``sandbox_id`` (not checked: use
        :meth:`connect` for that)."""
        self._id = sandbox_id
        self._http = _http or _Http(ConnectionConfig.resolve(socket, url, token, request_timeout))
        self._base = f"/v1/sandboxes/{sandbox_id}"
        self.commands = Commands(self)
        self.pty = Pty(self)
        self.files = Filesystem(self)

    @property
    def sandbox_id(self) -> str:
        """Its id."""
        return self._id

    id = sandbox_id

    @classmethod
    def create(
        cls,
        image: Optional[str] = None,
        *,
        isolation: Optional[str] = None,
        trust: Optional[str] = None,
        memory: Optional[Size] = None,
        cpus: Optional[float] = None,
        pids: Optional[int] = None,
        disk: Optional[Size] = None,
        timeout: Optional[Duration] = None,
        idle_timeout: Optional[Duration] = None,
        env: Optional[Mapping[str, str]] = None,
        envs: Optional[Mapping[str, str]] = None,
        network: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        mounts: Optional[Iterable[Any]] = None,
        user: Optional[str] = None,
        workdir: Optional[str] = None,
        hostname: Optional[str] = None,
        socket: Optional[str] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> "Sandbox":
        """Creates a sandbox.

        Args:
            image: Its root filesystem (``host``, the default).
            isolation: ``container`` (default), ``none`` or ``microvm``.
            trust: Or pick the tier by how far you trust the code:
                ``own`` (none), ``experimental`` (container),
                ``untrusted`` (microvm).
            memory: Memory limit: bytes or text (``512M``, ``1G``).
            cpus: CPU limit (``1.5`` CPUs).
            pids: Limit on its tasks.
            disk: Limit on its writable layer (bytes or text).
            timeout: Its lifetime: seconds or text (``30m``); default 1 h,
                extend with :meth:`set_timeout`.
            idle_timeout: Stop after this long with no activity.
            env: Variables every process starts with (``envs=`` too).
            network: ``none`` (loopback only; the only policy so far).
            metadata: Labels to find it by (:meth:`list`).
            mounts: Host paths to mount: dicts ``{"source", "target",
                "mode"}``, ``(source, target, mode)`` tuples or
                ``"SRC:DST:MODE"`` (mode ``ro``, ``rw`` or ``overlay``).
            user: Who runs its processes: ``sandbox``, ``root``, ``UID[:GID]``.
            workdir: Its processes' working directory.
            hostname: Its host name.
            socket: The service's unix socket (default: ``AIRLOCK_SOCKET``,
                else the default socket).
            url: The service over TCP (``http://HOST:PORT``; default
                ``AIRLOCK_URL``).
            token: The bearer token for ``url`` (default ``AIRLOCK_TOKEN``).
            request_timeout: Seconds a request may take (default 120).
        """
        body = c.create_request(
            image=image,
            isolation=isolation,
            trust=trust,
            memory=memory,
            cpus=cpus,
            pids=pids,
            disk=disk,
            timeout=timeout,
            idle_timeout=idle_timeout,
            env=c.merge_env(env, envs),
            network=network,
            metadata=metadata,
            mounts=mounts,
            user=user,
            workdir=workdir,
            hostname=hostname,
        )
        http = _Http(ConnectionConfig.resolve(socket, url, token, request_timeout))
        try:
            v = http.request("POST", "/v1/sandboxes", json=body).json()
        except BaseException:
            http.close()
            raise
        return cls(v["id"], _http=http)

    @classmethod
    def connect(
        cls,
        sandbox_id: str,
        *,
        socket: Optional[str] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> "Sandbox":
        """Reaches an existing sandbox (:class:`NotFoundError` if there is
        none by that id; :class:`ConflictError` if it has stopped)."""
        sb = cls(sandbox_id, socket=socket, url=url, token=token, request_timeout=request_timeout)
        try:
            info = sb.get_info()
        except BaseException:
            sb.close()
            raise
        if info.state not in ("running", "paused", "creating"):
            sb.close()
            raise ConflictError(f"sandbox {sandbox_id} is {info.state}", status=409, code="conflict")
        return sb

    @classmethod
    def list(
        cls,
        metadata: Optional[Mapping[str, str]] = None,
        *,
        all: bool = False,
        socket: Optional[str] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> List[SandboxInfo]:
        """The service's sandboxes: running and paused ones (``all``: also
        stopped and failed), only those with every label in ``metadata``."""
        http = _Http(ConnectionConfig.resolve(socket, url, token, request_timeout))
        try:
            params: Dict[str, str] = {}
            if all:
                params["all"] = "true"
            items = list((metadata or {}).items())
            if items:
                params["label"] = f"{items[0][0]}={items[0][1]}"
            v = http.request("GET", "/v1/sandboxes", params=params).json()
        finally:
            http.close()
        out = [SandboxInfo._from_json(s) for s in v]
        return [s for s in out if c.has_labels(s.metadata, metadata)]

    def get_info(self) -> SandboxInfo:
        """Its description (state, labels, lifetime, ...)."""
        return SandboxInfo._from_json(self._http.request("GET", self._base).json())

    def is_running(self) -> bool:
        """Whether it is running (not paused, stopped or failed)."""
        try:
            return self.get_info().state == "running"
        except NotFoundError:
            return False

    def set_timeout(self, timeout: Duration) -> SandboxInfo:
        """Sets its remaining lifetime, from now (seconds or ``"30m"``)."""
        v = self._http.request(
            "POST", f"{self._base}/timeout", json={"timeout": c.duration(timeout, "timeout")}
        ).json()
        return SandboxInfo._from_json(v)

    def pause(self) -> None:
        """Freezes every process in it (the cgroup freezer). File and
        process calls answer :class:`ConflictError` until :meth:`resume`."""
        self._http.request("POST", f"{self._base}/pause")

    def resume(self) -> None:
        """Thaws it."""
        self._http.request("POST", f"{self._base}/resume")

    def usage(self) -> Usage:
        """What it uses now: CPU time, memory, tasks, disk."""
        return Usage._from_json(self._http.request("GET", f"{self._base}/usage").json())

    def audit(self, *, after: int = 0, limit: Optional[int] = None) -> List[AuditEntry]:
        """Its audit log: creation, every exec, file write, port, pause."""
        params = {"after": str(after)}
        if limit is not None:
            params["limit"] = str(limit)
        v = self._http.request("GET", f"{self._base}/audit", params=params).json()
        return [AuditEntry._from_json(a) for a in v]

    def logs(self, pid: Optional[int] = None) -> List[Tuple[int, str, bytes]]:
        """The output kept of its processes (the last 1 MiB of each):
        ``(pid, "stdout"|"stderr", bytes)`` chunks."""
        params = {"process": str(pid)} if pid is not None else None
        r = self._http.request("GET", f"{self._base}/logs", params=params)
        out: List[Tuple[int, str, bytes]] = []
        for line in r.text.splitlines():
            ev = c.parse_line(line)
            if ev is not None:
                out.append((int(ev.get("process", 0)), str(ev.get("type")), c.event_bytes(ev)))
        return out

    def open_port(self, port: int, *, token: bool = False) -> PortInfo:
        """Forwards a loopback port of the host to ``port`` inside (the
        same forward again if there is one). ``token``: clients must send
        ``AIRLOCK-TOKEN <token>\\n`` first."""
        v = self._http.request(
            "POST", f"{self._base}/ports", json={"port": int(port), "token": bool(token)}
        ).json()
        return PortInfo._from_json(v)

    def get_host(self, port: int) -> str:
        """``"127.0.0.1:PORT"``: where on the host to reach ``port`` inside
        the sandbox (opens the forward)."""
        return self.open_port(port).address

    def list_ports(self) -> List[PortInfo]:
        """Its port forwards."""
        return [PortInfo._from_json(p) for p in self._http.request("GET", f"{self._base}/ports").json()]

    def close_port(self, port: int) -> None:
        """Closes the forward to ``port``."""
        self._http.request("DELETE", f"{self._base}/ports/{int(port)}")

    def kill(self) -> bool:
        """Stops it and everything in it. False if there was no such
        sandbox."""
        try:
            self._http.request("DELETE", self._base)
            return True
        except NotFoundError:
            return False

    def close(self) -> None:
        """Closes the connection to the service (the sandbox lives on)."""
        self._http.close()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.kill()
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"<Sandbox {self._id}>"

