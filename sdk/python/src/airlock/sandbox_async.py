"""The asyncio client: :class:`AsyncSandbox` and its parts. The same API
as :class:`~airlock.Sandbox`, with coroutines; callbacks may be plain
functions or coroutine functions."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from typing import (
    Any,
    AsyncIterable,
    AsyncIterator,
    BinaryIO,
    Callable,
    Dict,
    Iterable,
    List,
    Literal,
    Mapping,
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
    "AsyncCommandHandle",
    "AsyncCommands",
    "AsyncFileStream",
    "AsyncFilesystem",
    "AsyncPty",
    "AsyncPtyHandle",
    "AsyncSandbox",
    "AsyncWatchHandle",
]

_UNSET: Any = object()
AsyncData = Union[
    str, bytes, bytearray, memoryview, BinaryIO, Iterable[bytes], AsyncIterable[bytes]
]
#: A callback: a function or a coroutine function.
Callback = Optional[Callable[[Any], Any]]


class _AsyncHttp:
    """httpx (async) over the unix socket or TCP, with the service's errors
    mapped to the SDK's exceptions."""

    def __init__(self, cfg: ConnectionConfig) -> None:
        self.cfg = cfg
        transport = httpx.AsyncHTTPTransport(uds=cfg.socket) if cfg.socket else None
        self.client = httpx.AsyncClient(
            base_url=cfg.base_url,
            transport=transport,
            headers=cfg.headers,
            timeout=cfg.timeout(),
        )

    async def request(
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
                r = await self.client.request(
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
            except c.STALE_CONNECTION as e:
                if not retry:
                    raise c.transport_error(e, self.cfg) from e
                retry = False
            except (httpx.HTTPError, OSError) as e:
                raise c.transport_error(e, self.cfg) from e
        if r.status_code >= 400:
            raise c.error_from(r.status_code, r.content)
        return r

    async def stream(
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
                r = await self.client.send(req, stream=True)
                break
            except c.STALE_CONNECTION as e:
                if not retry:
                    raise c.transport_error(e, self.cfg) from e
                retry = False
            except (httpx.HTTPError, OSError) as e:
                raise c.transport_error(e, self.cfg) from e
        if r.status_code >= 400:
            try:
                body = await r.aread()
            finally:
                await r.aclose()
            raise c.error_from(r.status_code, body)
        return r

    async def close(self) -> None:
        await self.client.aclose()


async def _call(cb: Callback, v: Any) -> None:
    """Calls a callback, awaiting it if it is a coroutine function."""
    if cb is None:
        return
    r = cb(v)
    if inspect.isawaitable(r):
        await r


def _achunks(data: AsyncData) -> Union[bytes, AsyncIterator[bytes]]:
    """What to send: bytes as they are; a file object, an iterable or an
    async iterable of bytes streamed in chunks."""
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)

    def conv(b: Any) -> bytes:
        return b.encode("utf-8") if isinstance(b, str) else bytes(b)

    if hasattr(data, "read"):
        f: Any = data

        async def from_file() -> AsyncIterator[bytes]:
            while True:
                b = f.read(c.CHUNK)
                if inspect.isawaitable(b):
                    b = await b
                if not b:
                    return
                yield conv(b)

        return from_file()
    if hasattr(data, "__aiter__"):
        ait: Any = data

        async def from_aiter() -> AsyncIterator[bytes]:
            async for b in ait:
                yield conv(b)

        return from_aiter()
    sit: Any = data

    async def from_iter() -> AsyncIterator[bytes]:
        for b in sit:
            yield conv(b)

    return from_iter()


# ---------------------------------------------------------------- commands


class AsyncCommandHandle:
    """A command running in the background (``await
    sandbox.commands.run(..., background=True)``).

    Its output is read as it comes (an asyncio task, which calls
    ``on_stdout``/``on_stderr``), so the command is never held back by
    output nobody reads. :meth:`wait` returns its :class:`CommandResult`;
    ``async for`` over the handle yields ``(stdout, stderr, None)`` chunks
    as they come.
    """

    def __init__(
        self,
        sandbox: "AsyncSandbox",
        pid: int,
        *,
        on_stdout: Callback = None,
        on_stderr: Callback = None,
        timeout: Optional[float] = None,
        primary: bool = True,
    ) -> None:
        self._sb = sandbox
        self.pid = pid
        self._state = ProcessState()
        self._state.id = pid
        self._chunks: List[Tuple[str, str]] = []
        self._changed = asyncio.Event()
        self._finished = False
        self._stopped = False
        self._timed_out = False
        self._exc: Optional[BaseException] = None
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._primary = primary
        self._timer: Optional[asyncio.TimerHandle] = None
        loop = asyncio.get_running_loop()
        if timeout:
            self._timer = loop.call_later(timeout, self._on_timeout)
        self._task = loop.create_task(self._read())

    def _on_timeout(self) -> None:
        self._timed_out = True
        asyncio.ensure_future(self.kill())

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _read(self) -> None:
        http = self._sb._http
        path = f"{self._sb._base}/processes/{self.pid}/events"
        try:
            try:
                r = await http.stream(
                    "GET", path, params={"primary": "true"} if self._primary else None
                )
            except ConflictError:
                if not self._primary:
                    raise
                # Nobody held its output for us: follow it as it comes.
                r = await http.stream("GET", path)
            try:
                async for line in r.aiter_lines():
                    ev = c.parse_line(line)
                    if ev is None:
                        continue
                    out = self._state.feed(ev)
                    if out is not None:
                        stream, _, text = out
                        if text:
                            self._chunks.append((stream, text))
                            self._notify()
                            await _call(
                                self._on_stdout if stream == "stdout" else self._on_stderr, text
                            )
                    if self._state.done:
                        break
            finally:
                await r.aclose()
        except asyncio.CancelledError:
            pass
        except BaseException as e:  # noqa: BLE001 - reported by wait()
            if not self._stopped:
                self._exc = e
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._finished = True
            self._notify()

    async def _iter(self, deadline: Optional[float]) -> AsyncIterator[Tuple[str, str]]:
        i = 0
        while True:
            if i < len(self._chunks):
                chunk = self._chunks[i]
                i += 1
                yield chunk
                continue
            if self._finished:
                return
            ev = self._changed
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"process {self.pid} is still running")
            try:
                await asyncio.wait_for(ev.wait(), left)
            except asyncio.TimeoutError:
                raise TimeoutError(f"process {self.pid} is still running") from None

    async def __aiter__(self) -> AsyncIterator[Tuple[Optional[str], Optional[str], None]]:
        """Yields ``(stdout, stderr, None)`` chunks (one of the first two
        set) from the start of its output until it ends."""
        async for stream, text in self._iter(None):
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

    async def wait(
        self,
        on_stdout: Callback = None,
        on_stderr: Callback = None,
        *,
        timeout: Optional[float] = None,
        check: bool = True,
    ) -> CommandResult:
        """Waits for it to end and returns its result.

        Args:
            on_stdout: Called with each stdout chunk, from the start of its
                output.
            on_stderr: Likewise for stderr.
            timeout: Seconds to wait at most (the command keeps running
                when this runs out: :class:`TimeoutError`).
            check: Raise :class:`CommandExitError` for a non-zero exit.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        async for stream, text in self._iter(deadline):
            await _call(on_stdout if stream == "stdout" else on_stderr, text)
        await self._task
        if self._timed_out:
            raise TimeoutError(f"process {self.pid} ran out of time and was killed")
        if self._exc is not None:
            if isinstance(self._exc, AirlockError):
                raise self._exc
            raise AirlockError(
                f"reading process {self.pid}'s events failed: {self._exc}"
            ) from self._exc
        if not self._state.done:
            raise AirlockError(f"stopped following process {self.pid} before it ended")
        return c.checked(self._state.result(), check)

    async def kill(self) -> bool:
        """Kills it (SIGKILL). False if it had already ended."""
        return await self._sb.commands.kill(self.pid)

    async def signal(self, signal: Union[int, str]) -> None:
        """Sends it a signal (a number, or a name: ``TERM``, ``SIGINT``)."""
        await self._sb.commands.signal(self.pid, signal)

    async def send_stdin(self, data: AsyncData) -> int:
        """Sends data to its stdin; returns the bytes sent."""
        return await self._sb.commands.send_stdin(self.pid, data)

    async def close_stdin(self) -> None:
        """Closes its stdin: it reads end-of-file after what was sent."""
        await self._sb.commands.close_stdin(self.pid)

    async def disconnect(self) -> None:
        """Stops following it; the command keeps running (follow it again
        with :meth:`AsyncCommands.connect`)."""
        self._stopped = True
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    def __repr__(self) -> str:
        return f"<AsyncCommandHandle pid={self.pid} exit_code={self.exit_code}>"


class AsyncCommands:
    """Runs and manages processes in a sandbox (``sandbox.commands``)."""

    def __init__(self, sandbox: "AsyncSandbox") -> None:
        self._sb = sandbox

    @overload
    async def run(
        self,
        cmd: Cmd,
        background: Literal[False] = False,
        *,
        on_stdout: Callback = None,
        on_stderr: Callback = None,
        timeout: Optional[float] = ...,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        envs: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        stdin: Optional[bool] = None,
        check: bool = True,
    ) -> CommandResult: ...

    @overload
    async def run(
        self,
        cmd: Cmd,
        background: Literal[True],
        *,
        on_stdout: Callback = None,
        on_stderr: Callback = None,
        timeout: Optional[float] = ...,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        envs: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        stdin: Optional[bool] = None,
        check: bool = True,
    ) -> AsyncCommandHandle: ...

    async def run(
        self,
        cmd: Cmd,
        background: bool = False,
        *,
        on_stdout: Callback = None,
        on_stderr: Callback = None,
        timeout: Optional[float] = _UNSET,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        envs: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        stdin: Optional[bool] = None,
        check: bool = True,
    ) -> Union[CommandResult, AsyncCommandHandle]:
        """Runs a command; see :meth:`airlock.Commands.run` (the same
        arguments; callbacks may be coroutine functions)."""
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
            pid = int((await self._sb._http.request("POST", base, json=body)).json()["id"])
            return AsyncCommandHandle(
                self._sb, pid, on_stdout=on_stdout, on_stderr=on_stderr, timeout=t or None
            )
        if stdin:
            raise InvalidArgumentError("stdin=True needs background=True (send it with send_stdin)")
        t = c.DEFAULT_COMMAND_TIMEOUT if timeout is _UNSET else timeout
        body = c.exec_request(cmd, env=env2, cwd=cwd, user=user)
        state = ProcessState()
        r = await self._sb._http.stream("POST", base, json=body)

        async def consume() -> None:
            async for line in r.aiter_lines():
                ev = c.parse_line(line)
                if ev is None:
                    continue
                out = state.feed(ev)
                if out is not None and out[2]:
                    await _call(on_stdout if out[0] == "stdout" else on_stderr, out[2])
                if state.done:
                    break

        task = asyncio.ensure_future(consume())
        try:
            try:
                await asyncio.wait_for(asyncio.shield(task), t or None)
            except asyncio.TimeoutError:
                # Kill it, then let the stream bring its end.
                if state.id is not None:
                    await self._kill_quietly(state.id)
                    try:
                        await asyncio.wait_for(asyncio.shield(task), 10)
                    except (asyncio.TimeoutError, httpx.HTTPError):
                        pass
                raise TimeoutError(f"the command ran longer than {t} s and was killed") from None
            except httpx.HTTPError as e:
                raise c.transport_error(e, self._sb._http.cfg) from e
        finally:
            if not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001
                    pass
            await r.aclose()
            # Left early (a callback raised, cancelled, a broken stream):
            # the command does not outlive the call that ran it.
            if not state.done and state.id is not None:
                await self._kill_quietly(state.id)
        if not state.done:
            raise AirlockError("the command's event stream ended before the command did")
        return c.checked(state.result(), check)

    async def _kill_quietly(self, pid: int) -> None:
        try:
            await self.kill(pid)
        except AirlockError:
            pass

    async def list(self) -> List[ProcessInfo]:
        """The sandbox's processes (running ones and recently ended)."""
        v = (await self._sb._http.request("GET", f"{self._sb._base}/processes")).json()
        return [ProcessInfo._from_json(p) for p in v]

    async def kill(self, pid: int) -> bool:
        """Kills process ``pid`` (SIGKILL). False if it had already ended
        or is unknown."""
        try:
            await self.signal(pid, "KILL")
            return True
        except (NotFoundError, ConflictError):
            return False

    async def signal(self, pid: int, signal: Union[int, str]) -> None:
        """Sends process ``pid`` a signal (a number or a name)."""
        await self._sb._http.request(
            "POST", f"{self._sb._base}/processes/{pid}/signal", json={"signal": signal}
        )

    async def send_stdin(self, pid: int, data: AsyncData) -> int:
        """Sends data to process ``pid``'s stdin (it must have been started
        in the background with stdin); returns the bytes sent."""
        r = await self._sb._http.request(
            "POST", f"{self._sb._base}/processes/{pid}/stdin", content=_achunks(data)
        )
        return int(r.json().get("count", 0))

    async def close_stdin(self, pid: int) -> None:
        """Closes process ``pid``'s stdin."""
        await self._sb._http.request("POST", f"{self._sb._base}/processes/{pid}/stdin/close")

    async def connect(
        self,
        pid: int,
        *,
        on_stdout: Callback = None,
        on_stderr: Callback = None,
        timeout: Optional[float] = None,
    ) -> AsyncCommandHandle:
        """Follows a process that is already running: a handle that sees
        its output from now on."""
        return AsyncCommandHandle(
            self._sb, pid, on_stdout=on_stdout, on_stderr=on_stderr, timeout=timeout, primary=False
        )


# ---------------------------------------------------------------------- pty


class AsyncPtyHandle:
    """A process on a terminal (``await sandbox.pty.create()``), over a
    WebSocket. Its output (bytes) goes to ``on_data`` as it comes."""

    def __init__(
        self,
        sandbox: "AsyncSandbox",
        pid: int,
        ws: Any,
        on_data: Callback,
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
        loop = asyncio.get_running_loop()
        self._timer: Optional[asyncio.TimerHandle] = None
        if timeout:
            self._timer = loop.call_later(timeout, self._on_timeout)
        self._task = loop.create_task(self._read())

    def _on_timeout(self) -> None:
        self._timed_out = True
        asyncio.ensure_future(self.kill())

    async def _read(self) -> None:
        try:
            async for msg in self._ws:
                if isinstance(msg, (bytes, bytearray)):
                    self._out.extend(msg)
                    await _call(self._on_data, bytes(msg))
                else:
                    try:
                        v = json.loads(msg)
                    except ValueError:
                        continue
                    if isinstance(v, dict) and "exit" in v:
                        self._exit = int(v["exit"])
                        break
        except asyncio.CancelledError:
            pass
        except BaseException as e:  # noqa: BLE001 - reported by wait()
            self._exc = e
        finally:
            if self._timer is not None:
                self._timer.cancel()
            try:
                await self._ws.close()
            except Exception:  # noqa: BLE001
                pass

    @property
    def output(self) -> bytes:
        """Everything the terminal showed so far."""
        return bytes(self._out)

    @property
    def exit_code(self) -> Optional[int]:
        """Its exit code, once it has ended."""
        return self._exit

    async def send(self, data: Union[str, bytes]) -> None:
        """Types ``data`` into the terminal."""
        await self._ws.send(data.encode("utf-8") if isinstance(data, str) else bytes(data))

    send_stdin = send

    async def resize(self, rows: int, cols: int) -> None:
        """Changes the terminal's size."""
        await self._sb.pty.resize(self.pid, rows, cols)

    async def close_stdin(self) -> None:
        """Ends the terminal's input as a terminal does: types the
        end-of-file character (Ctrl-D), which a program reading the
        terminal line by line sees as end-of-file."""
        await self._ws.send(b"\x04")

    async def kill(self) -> bool:
        """Kills its process (SIGKILL). False if it had already ended."""
        return await self._sb.commands.kill(self.pid)

    async def wait(self, *, timeout: Optional[float] = None, check: bool = True) -> CommandResult:
        """Waits for it to end; the result's ``stdout`` is the terminal's
        output. Raises :class:`CommandExitError` for a non-zero exit
        (unless ``check=False``)."""
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"terminal process {self.pid} is still running") from None
        if self._timed_out:
            raise TimeoutError(f"terminal process {self.pid} ran out of time and was killed")
        if self._exit is None:
            why = f": {self._exc}" if self._exc else ""
            raise AirlockError(f"the terminal's connection ended before its process did{why}")
        out = bytes(self._out)
        r = CommandResult(
            stdout=out.decode("utf-8", "replace"), stderr="", exit_code=self._exit, stdout_bytes=out
        )
        return c.checked(r, check)

    async def disconnect(self) -> None:
        """Closes the WebSocket: the service hangs the terminal up (SIGHUP
        to its process, which ends a shell)."""
        try:
            await self._ws.close()
        finally:
            try:
                await asyncio.wait_for(self._task, 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass


class AsyncPty:
    """Terminals in a sandbox (``sandbox.pty``)."""

    def __init__(self, sandbox: "AsyncSandbox") -> None:
        self._sb = sandbox

    async def create(
        self,
        rows: int = 24,
        cols: int = 80,
        *,
        cmd: Optional[Cmd] = None,
        on_data: Callback = None,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        envs: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> AsyncPtyHandle:
        """Starts a process on a new terminal; see :meth:`airlock.Pty.create`."""
        if cmd is None:
            cmd = [
                "/bin/sh",
                "-c",
                "if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi",
            ]
        e = {"TERM": "xterm-256color"}
        e.update(c.merge_env(env, envs) or {})
        body = c.exec_request(
            cmd, env=e, cwd=cwd, user=user, background=True, stdin=True, tty=(rows, cols)
        )
        r = await self._sb._http.request("POST", f"{self._sb._base}/processes", json=body)
        pid = int(r.json()["id"])
        cfg = self._sb._http.cfg
        path = f"{self._sb._base}/processes/{pid}/pty"
        from websockets.asyncio import client as wsc

        try:
            if cfg.socket:
                ws = await wsc.unix_connect(cfg.socket, cfg.ws_url(path), max_size=None)
            else:
                ws = await wsc.connect(
                    cfg.ws_url(path), additional_headers=cfg.headers, max_size=None
                )
        except Exception as ex:  # noqa: BLE001
            await self._sb.commands.kill(pid)
            raise AirlockError(f"cannot open the terminal's WebSocket: {ex}") from ex
        return AsyncPtyHandle(self._sb, pid, ws, on_data, timeout)

    async def resize(self, pid: int, rows: int, cols: int) -> None:
        """Changes terminal process ``pid``'s size."""
        await self._sb._http.request(
            "POST",
            f"{self._sb._base}/processes/{pid}/resize",
            json={"rows": int(rows), "cols": int(cols)},
        )

    async def kill(self, pid: int) -> bool:
        """Kills terminal process ``pid``."""
        return await self._sb.commands.kill(pid)


# -------------------------------------------------------------------- files


class AsyncFileStream:
    """A file being downloaded: ``async for`` over its chunks, or ``await
    read(n)``. Close it (or use ``async with``) when done early."""

    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp
        self._it = resp.aiter_bytes()
        self._buf = b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Yields the file's bytes in chunks as they come."""
        if self._buf:
            b, self._buf = self._buf, b""
            yield b
        async for b in self._it:
            yield b
        await self.aclose()

    async def read(self, n: int = -1) -> bytes:
        """Reads up to ``n`` bytes (all that is left when ``n < 0``)."""
        if n is None or n < 0:
            parts = [self._buf]
            async for b in self._it:
                parts.append(b)
            self._buf = b""
            await self.aclose()
            return b"".join(parts)
        while len(self._buf) < n:
            try:
                self._buf += await self._it.__anext__()
            except StopAsyncIteration:
                break
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    async def aclose(self) -> None:
        """Stops the download."""
        await self._resp.aclose()

    close = aclose

    async def __aenter__(self) -> "AsyncFileStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class AsyncWatchHandle:
    """A directory being watched (``await sandbox.files.watch_dir()``);
    see :class:`airlock.WatchHandle`."""

    def __init__(self, resp: httpx.Response, on_event: Callback) -> None:
        self._resp = resp
        self._on_event = on_event
        self._events: List[FilesystemEvent] = []
        self._seen = 0
        self._changed = asyncio.Event()
        self._stopped = False
        self._task = asyncio.get_running_loop().create_task(self._read())

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _read(self) -> None:
        try:
            async for line in self._resp.aiter_lines():
                ev = c.parse_line(line)
                if ev is None:
                    continue
                e = FilesystemEvent._from_json(ev)
                self._events.append(e)
                self._notify()
                await _call(self._on_event, e)
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopped
            pass
        finally:
            await self._resp.aclose()
            self._stopped = True
            self._notify()

    def get_new_events(self) -> List[FilesystemEvent]:
        """The events since the last call."""
        out = self._events[self._seen :]
        self._seen = len(self._events)
        return out

    async def wait_for(
        self, predicate: Callable[[FilesystemEvent], bool], timeout: float = 10.0
    ) -> FilesystemEvent:
        """Waits for an event that ``predicate`` accepts (looking at every
        event since the watch started) and returns it."""
        deadline = time.monotonic() + timeout
        i = 0
        while True:
            while i < len(self._events):
                if predicate(self._events[i]):
                    return self._events[i]
                i += 1
            left = deadline - time.monotonic()
            if left <= 0 or self._stopped:
                raise TimeoutError("no such event in time")
            ev = self._changed
            try:
                await asyncio.wait_for(ev.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def stop(self) -> None:
        """Ends the watch."""
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    async def __aenter__(self) -> "AsyncWatchHandle":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


class AsyncFilesystem:
    """Files in a sandbox (``sandbox.files``); see
    :class:`airlock.Filesystem`."""

    def __init__(self, sandbox: "AsyncSandbox") -> None:
        self._sb = sandbox

    def _url(self, what: str = "") -> str:
        return f"{self._sb._base}/files{what}"

    @overload
    async def read(self, path: str, format: Literal["text"] = "text") -> str: ...

    @overload
    async def read(self, path: str, format: Literal["bytes"]) -> bytes: ...

    @overload
    async def read(self, path: str, format: Literal["stream"]) -> AsyncFileStream: ...

    async def read(
        self, path: str, format: Literal["text", "bytes", "stream"] = "text"
    ) -> Union[str, bytes, AsyncFileStream]:
        """Reads a file: as text (UTF-8), ``bytes``, or an
        :class:`AsyncFileStream` (``format="stream"``) for large files."""
        if format not in ("text", "bytes", "stream"):
            raise InvalidArgumentError(f"format {format!r}: text, bytes or stream")
        r = await self._sb._http.stream("GET", self._url(), params={"path": c.abspath(path)})
        if format == "stream":
            return AsyncFileStream(r)
        try:
            data = await r.aread()
        finally:
            await r.aclose()
        return data if format == "bytes" else data.decode("utf-8", "replace")

    async def write(self, path: str, data: AsyncData, *, mode: Optional[int] = None) -> WriteInfo:
        """Writes a file (made, or replaced), creating its parent
        directories. ``data``: str, bytes, a file object, or a (async)
        iterable of bytes, streamed as it comes."""
        p = c.abspath(path)
        params = {"path": p}
        m = c.mode_text(mode)
        if m is not None:
            params["mode"] = m
        body = _achunks(data)
        # Parents first: a PUT refused before its body was read would
        # leave a connection the service then drops.
        await self._parents(p)
        r = await self._sb._http.request("PUT", self._url(), params=params, content=body)
        n = int(r.json().get("count", 0))
        return WriteInfo(name=p.rsplit("/", 1)[-1], path=p, size=n)

    async def _parents(self, p: str) -> None:
        parent = p.rsplit("/", 1)[0] or "/"
        if parent != "/":
            await self._sb._http.request(
                "POST", self._url("/mkdir"), json={"path": parent, "parents": True}, idempotent=True
            )

    async def list(self, path: str, depth: int = 1) -> List[EntryInfo]:
        """The entries of a directory (sorted by name), and of its
        subdirectories down to ``depth`` levels."""
        p = c.abspath(path)
        v = (await self._sb._http.request("GET", self._url("/list"), params={"path": p})).json()
        out: List[EntryInfo] = []
        for e in v:
            child = p.rstrip("/") + "/" + e["name"]
            info = EntryInfo._from_json(child, e)
            out.append(info)
            if depth > 1 and info.type.value == "dir":
                out.extend(await self.list(child, depth - 1))
        return out

    async def get_info(self, path: str, *, follow: bool = False) -> EntryInfo:
        """A file's status (``follow``: of a final symlink's target)."""
        p = c.abspath(path)
        r = await self._sb._http.request(
            "GET", self._url("/stat"), params={"path": p, "follow": c.bool_param(follow)}
        )
        return EntryInfo._from_json(p, r.json())

    async def exists(self, path: str) -> bool:
        """Whether a path exists (a dangling symlink does)."""
        try:
            await self.get_info(path)
            return True
        except NotFoundError:
            return False

    async def remove(self, path: str, *, recursive: bool = True) -> None:
        """Removes a file, or a directory with everything in it."""
        await self._sb._http.request(
            "DELETE",
            self._url(),
            params={"path": c.abspath(path), "recursive": c.bool_param(recursive)},
        )

    async def rename(self, old_path: str, new_path: str) -> EntryInfo:
        """Renames (moves) a file or directory; returns its new status."""
        new = c.abspath(new_path)
        await self._sb._http.request(
            "POST", self._url("/rename"), json={"from": c.abspath(old_path), "to": new}
        )
        return await self.get_info(new)

    async def make_dir(self, path: str, *, mode: Optional[int] = None) -> bool:
        """Makes a directory and its parents; False if it was there."""
        p = c.abspath(path)
        try:
            if (await self.get_info(p, follow=True)).type.value == "dir":
                return False
        except NotFoundError:
            pass
        body: Dict[str, Any] = {"path": p, "parents": True}
        if mode is not None:
            body["mode"] = c.mode_text(mode)
        await self._sb._http.request("POST", self._url("/mkdir"), json=body)
        return True

    async def chmod(self, path: str, mode: int) -> None:
        """Changes a file's permission bits (``0o755``)."""
        await self._sb._http.request(
            "POST", self._url("/chmod"), json={"path": c.abspath(path), "mode": c.mode_text(mode)}
        )

    async def watch_dir(self, path: str, on_event: Callback = None) -> AsyncWatchHandle:
        """Watches a directory's entries (created, written, removed)."""
        r = await self._sb._http.stream(
            "GET", self._url("/watch"), params={"path": c.abspath(path)}
        )
        return AsyncWatchHandle(r, on_event)

    watch = watch_dir

    async def write_tar(self, path: str, data: AsyncData) -> int:
        """Unpacks a tar archive into directory ``path``."""
        r = await self._sb._http.request(
            "PUT", self._url("/tar"), params={"path": c.abspath(path)}, content=_achunks(data)
        )
        return int(r.json().get("count", 0))

    async def read_tar(self, path: str) -> AsyncFileStream:
        """A tar archive of ``path`` (a file or a directory tree), streamed."""
        r = await self._sb._http.stream("GET", self._url("/tar"), params={"path": c.abspath(path)})
        return AsyncFileStream(r)


# ------------------------------------------------------------------ sandbox


class AsyncSandbox:
    """A sandbox of the airlock service, for asyncio.

    Make one with ``await AsyncSandbox.create()``, or reach an existing one
    with :meth:`connect`. ``async with await AsyncSandbox.create() as sb:``
    kills it at the end.

    Attributes:
        commands: :class:`AsyncCommands`: run processes.
        pty: :class:`AsyncPty`: terminals.
        files: :class:`AsyncFilesystem`: files.
    """

    def __init__(
        self,
        sandbox_id: str,
        *,
        socket: Optional[str] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        request_timeout: Optional[float] = None,
        _http: Optional[_AsyncHttp] = None,
    ) -> None:
        """A handle on sandbox ``sandbox_id`` (not checked: use
        :meth:`connect` for that)."""
        self._id = sandbox_id
        self._http = _http or _AsyncHttp(
            ConnectionConfig.resolve(socket, url, token, request_timeout)
        )
        self._base = f"/v1/sandboxes/{sandbox_id}"
        self.commands = AsyncCommands(self)
        self.pty = AsyncPty(self)
        self.files = AsyncFilesystem(self)

    @property
    def sandbox_id(self) -> str:
        """Its id."""
        return self._id

    id = sandbox_id

    @classmethod
    async def create(
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
    ) -> "AsyncSandbox":
        """Creates a sandbox; see :meth:`airlock.Sandbox.create` (the same
        arguments)."""
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
        http = _AsyncHttp(ConnectionConfig.resolve(socket, url, token, request_timeout))
        try:
            v = (await http.request("POST", "/v1/sandboxes", json=body)).json()
        except BaseException:
            await http.close()
            raise
        return cls(v["id"], _http=http)

    @classmethod
    async def connect(
        cls,
        sandbox_id: str,
        *,
        socket: Optional[str] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> "AsyncSandbox":
        """Reaches an existing sandbox (:class:`NotFoundError` if there is
        none by that id; :class:`ConflictError` if it has stopped)."""
        sb = cls(sandbox_id, socket=socket, url=url, token=token, request_timeout=request_timeout)
        try:
            info = await sb.get_info()
        except BaseException:
            await sb.close()
            raise
        if info.state not in ("running", "paused", "creating"):
            await sb.close()
            raise ConflictError(
                f"sandbox {sandbox_id} is {info.state}", status=409, code="conflict"
            )
        return sb

    @classmethod
    async def list(
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
        http = _AsyncHttp(ConnectionConfig.resolve(socket, url, token, request_timeout))
        try:
            params: Dict[str, str] = {}
            if all:
                params["all"] = "true"
            items = [*(metadata or {}).items()]
            if items:
                params["label"] = f"{items[0][0]}={items[0][1]}"
            v = (await http.request("GET", "/v1/sandboxes", params=params)).json()
        finally:
            await http.close()
        out = [SandboxInfo._from_json(s) for s in v]
        return [s for s in out if c.has_labels(s.metadata, metadata)]

    async def get_info(self) -> SandboxInfo:
        """Its description (state, labels, lifetime, ...)."""
        return SandboxInfo._from_json((await self._http.request("GET", self._base)).json())

    async def is_running(self) -> bool:
        """Whether it is running (not paused, stopped or failed)."""
        try:
            return (await self.get_info()).state == "running"
        except NotFoundError:
            return False

    async def set_timeout(self, timeout: Duration) -> SandboxInfo:
        """Sets its remaining lifetime, from now (seconds or ``"30m"``)."""
        r = await self._http.request(
            "POST", f"{self._base}/timeout", json={"timeout": c.duration(timeout, "timeout")}
        )
        return SandboxInfo._from_json(r.json())

    async def pause(self) -> None:
        """Freezes every process in it; see :meth:`airlock.Sandbox.pause`."""
        await self._http.request("POST", f"{self._base}/pause")

    async def resume(self) -> None:
        """Thaws it."""
        await self._http.request("POST", f"{self._base}/resume")

    async def usage(self) -> Usage:
        """What it uses now: CPU time, memory, tasks, disk."""
        return Usage._from_json((await self._http.request("GET", f"{self._base}/usage")).json())

    async def audit(self, *, after: int = 0, limit: Optional[int] = None) -> List[AuditEntry]:
        """Its audit log: creation, every exec, file write, port, pause."""
        params = {"after": str(after)}
        if limit is not None:
            params["limit"] = str(limit)
        v = (await self._http.request("GET", f"{self._base}/audit", params=params)).json()
        return [AuditEntry._from_json(a) for a in v]

    async def logs(self, pid: Optional[int] = None) -> List[Tuple[int, str, bytes]]:
        """The output kept of its processes (the last 1 MiB of each):
        ``(pid, "stdout"|"stderr", bytes)`` chunks."""
        params = {"process": str(pid)} if pid is not None else None
        r = await self._http.request("GET", f"{self._base}/logs", params=params)
        out: List[Tuple[int, str, bytes]] = []
        for line in r.text.splitlines():
            ev = c.parse_line(line)
            if ev is not None:
                out.append((int(ev.get("process", 0)), str(ev.get("type")), c.event_bytes(ev)))
        return out

    async def open_port(self, port: int, *, token: bool = False) -> PortInfo:
        """Forwards a loopback port of the host to ``port`` inside; see
        :meth:`airlock.Sandbox.open_port`."""
        r = await self._http.request(
            "POST", f"{self._base}/ports", json={"port": int(port), "token": bool(token)}
        )
        return PortInfo._from_json(r.json())

    async def get_host(self, port: int) -> str:
        """``"127.0.0.1:PORT"``: where on the host to reach ``port`` inside
        the sandbox (opens the forward)."""
        return (await self.open_port(port)).address

    async def list_ports(self) -> List[PortInfo]:
        """Its port forwards."""
        r = await self._http.request("GET", f"{self._base}/ports")
        return [PortInfo._from_json(p) for p in r.json()]

    async def close_port(self, port: int) -> None:
        """Closes the forward to ``port``."""
        await self._http.request("DELETE", f"{self._base}/ports/{int(port)}")

    async def kill(self) -> bool:
        """Stops it and everything in it. False if there was no such
        sandbox."""
        try:
            await self._http.request("DELETE", self._base)
            return True
        except NotFoundError:
            return False

    async def close(self) -> None:
        """Closes the connection to the service (the sandbox lives on)."""
        await self._http.close()

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.kill()
        finally:
            await self.close()

    def __repr__(self) -> str:
        return f"<AsyncSandbox {self._id}>"
