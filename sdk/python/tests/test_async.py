"""The asyncio SDK (:class:`airlock.AsyncSandbox`) against a real service."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import time
from typing import AsyncIterator, List, Tuple

import httpx
import pytest

import airlock
from airlock import (
    AsyncSandbox,
    AuthenticationError,
    CommandExitError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
)

from conftest import Daemon, host_memory_limit, host_pids_with

MIB = 1 << 20


async def until(pred, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if asyncio.iscoroutine(v):
            v = await v
        if v:
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.fixture
async def sb() -> AsyncIterator[AsyncSandbox]:
    async with await AsyncSandbox.create(metadata={"suite": "async"}) as s:
        yield s


async def test_create_connect_list_kill(daemon: Daemon) -> None:
    tag = f"a{os.getpid()}-{time.monotonic_ns()}"
    sb = await AsyncSandbox.create(
        image="host",
        isolation="container",
        memory="128M",
        timeout="5m",
        env={"X": "from-create"},
        network="none",
        metadata={"tag": tag},
    )
    try:
        info = await sb.get_info()
        assert info.state == "running" and info.metadata == {"tag": tag}
        assert info.end_at is not None and info.started_at is not None
        assert 290 <= (info.end_at - info.started_at).total_seconds() <= 310
        marker = "2718.2818"
        h = await sb.commands.run(f"sleep {marker}", background=True)
        assert await until(lambda: bool(host_pids_with(marker)))
        assert host_memory_limit(host_pids_with(marker)[0]) == 128 * MIB
        await h.kill()
        assert (await sb.commands.run("echo $X")).stdout == "from-create\n"
        other = await AsyncSandbox.connect(sb.sandbox_id)
        assert (await other.commands.run("echo $X")).stdout == "from-create\n"
        await other.close()
        assert [s.sandbox_id for s in await AsyncSandbox.list(metadata={"tag": tag})] == [
            sb.sandbox_id
        ]
    finally:
        assert await sb.kill() is True
        await sb.close()
    assert sb.sandbox_id not in [s.sandbox_id for s in await AsyncSandbox.list()]
    with pytest.raises(ConflictError):
        await AsyncSandbox.connect(sb.sandbox_id)
    with pytest.raises(NotFoundError):
        await AsyncSandbox.connect("sb-0000000000000000")
    with pytest.raises(InvalidArgumentError):
        await AsyncSandbox.create(memory="lots")
    async with await AsyncSandbox.create(trust="own") as s2:
        assert (await s2.get_info()).spec["isolation"] == "none"


async def test_tcp_token(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRLOCK_SOCKET")
    monkeypatch.setenv("AIRLOCK_URL", daemon.url)
    monkeypatch.setenv("AIRLOCK_TOKEN", "wrong-token")
    with pytest.raises(AuthenticationError):
        await AsyncSandbox.create()
    with pytest.raises(AuthenticationError):
        await AsyncSandbox.list()
    monkeypatch.setenv("AIRLOCK_TOKEN", daemon.token)
    async with await AsyncSandbox.create() as sb:
        assert (await sb.commands.run("echo tcp")).stdout == "tcp\n"
        # The terminal's WebSocket over TCP carries the token too.
        t = await sb.pty.create(cmd=["/bin/sh"])
        await t.send("echo $((5*5)); exit 0\n")
        r = await t.wait(timeout=20)
        assert b"25" in t.output and r.exit_code == 0


async def test_run(sb: AsyncSandbox) -> None:
    r = await sb.commands.run("echo out; echo err >&2")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 0)
    with pytest.raises(CommandExitError) as e:
        await sb.commands.run("echo so-far; exit 9")
    assert e.value.exit_code == 9 and e.value.stdout == "so-far\n"
    assert (await sb.commands.run("exit 2", check=False)).exit_code == 2
    await sb.files.make_dir("/tmp/wd")
    assert (await sb.commands.run("pwd", cwd="/tmp/wd")).stdout == "/tmp/wd\n"
    assert (await sb.commands.run("echo $V", env={"V": "v1"})).stdout == "v1\n"
    assert (await sb.commands.run("id -u", user="root")).stdout == "0\n"


async def test_on_stdout_is_live(sb: AsyncSandbox) -> None:
    seen: List[Tuple[float, str]] = []

    async def on_stdout(text: str) -> None:
        seen.append((time.monotonic(), text))
        if "ready" in text:
            await sb.files.write("/tmp/go", "1")

    r = await sb.commands.run(
        "echo ready; while [ ! -e /tmp/go ]; do sleep 0.05; done; sleep 1; echo done",
        on_stdout=on_stdout,
        timeout=30,
    )
    end = time.monotonic()
    assert r.stdout == "ready\ndone\n"
    first = next(ts for ts, t in seen if "ready" in t)
    assert end - first >= 0.9


async def test_timeout(sb: AsyncSandbox) -> None:
    marker = "5432.10101"
    t0 = time.monotonic()
    with pytest.raises(airlock.TimeoutError):
        await sb.commands.run(f"sleep {marker}", timeout=1)
    assert time.monotonic() - t0 < 10
    assert await until(lambda: not host_pids_with(marker))


async def test_background(daemon: Daemon) -> None:
    marker = "8765.43210"
    sb = await AsyncSandbox.create()
    try:
        out: List[str] = []
        h = await sb.commands.run(
            f"echo up; exec sleep {marker}", background=True, on_stdout=out.append
        )
        assert isinstance(h, airlock.AsyncCommandHandle)
        await asyncio.sleep(1.0)
        assert any(p.pid == h.pid and p.running for p in await sb.commands.list())
        assert host_pids_with(marker)
        assert "".join(out) == "up\n"
        assert await sb.kill() is True
        assert await until(lambda: not host_pids_with(marker)), "sb.kill() left it running"
    finally:
        await sb.kill()
        await sb.close()


async def test_handle(sb: AsyncSandbox) -> None:
    h = await sb.commands.run("read a; echo got:$a; cat | wc -c; exit 6", background=True)
    assert await h.send_stdin("hi\n") == 3

    async def parts() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"z" * 1000

    await h.send_stdin(parts())
    await h.close_stdin()
    with pytest.raises(CommandExitError) as e:
        await h.wait(timeout=30)
    assert e.value.stdout == "got:hi\n10000\n" and e.value.exit_code == 6
    chunks = [o async for o, _, _ in h if o]
    assert "".join(chunks) == "got:hi\n10000\n"

    marker = "6543.2121"
    h = await sb.commands.run(f"sleep {marker}", background=True)
    assert await until(lambda: bool(host_pids_with(marker)))
    with pytest.raises(airlock.TimeoutError):
        await h.wait(timeout=0.3)
    assert await h.kill() is True
    assert (await h.wait(check=False, timeout=10)).exit_code == 137
    assert await until(lambda: not host_pids_with(marker))


async def test_pty(sb: AsyncSandbox) -> None:
    got: List[bytes] = []

    async def on_data(b: bytes) -> None:
        got.append(b)

    t = await sb.pty.create(rows=20, cols=70, cmd=["/bin/sh"], on_data=on_data)
    await t.send("stty size; echo $((3*11))\n")
    assert await until(lambda: b"33" in t.output and b"20 70" in t.output, 20), t.output
    await t.resize(25, 90)
    await t.send("stty size\n")
    assert await until(lambda: b"25 90" in t.output, 20), t.output
    await t.send("exit 4\n")
    r = await t.wait(timeout=20, check=False)
    assert r.exit_code == 4 and b"".join(got) == t.output


async def test_files_and_a_20_mib_file(sb: AsyncSandbox) -> None:
    await sb.files.write("/tmp/a/b.txt", "text ü")
    assert await sb.files.read("/tmp/a/b.txt") == "text ü"
    await sb.files.write("/tmp/a/c.bin", b"\x00\xff")
    assert await sb.files.read("/tmp/a/c.bin", format="bytes") == b"\x00\xff"
    assert [e.name for e in await sb.files.list("/tmp/a")] == ["b.txt", "c.bin"]
    assert await sb.files.exists("/tmp/a/b.txt")
    assert not await sb.files.exists("/tmp/a/zz")
    assert await sb.files.make_dir("/tmp/a/d") is True
    assert await sb.files.make_dir("/tmp/a/d") is False
    await sb.files.remove("/tmp/a/b.txt")
    assert not await sb.files.exists("/tmp/a/b.txt")
    with pytest.raises(NotFoundError):
        await sb.files.read("/tmp/a/b.txt")

    blob = os.urandom(20 * MIB)
    want = hashlib.sha256(blob).hexdigest()
    info = await sb.files.write("/tmp/big.bin", io.BytesIO(blob))
    assert info.size == len(blob)
    assert (await sb.commands.run("sha256sum /tmp/big.bin")).stdout.split()[0] == want

    async def agen() -> AsyncIterator[bytes]:
        for i in range(0, len(blob), MIB):
            yield blob[i : i + MIB]

    await sb.files.write("/tmp/big2.bin", agen())
    h = hashlib.sha256()
    n = 0
    async with await sb.files.read("/tmp/big2.bin", format="stream") as s:
        async for b in s:
            h.update(b)
            n += len(b)
    assert n == len(blob) and h.hexdigest() == want
    assert await sb.files.read("/tmp/big.bin", format="bytes") == blob


async def test_watch(sb: AsyncSandbox) -> None:
    await sb.files.make_dir("/tmp/w")
    w = await sb.files.watch("/tmp/w")
    await sb.files.write("/tmp/w/f", "1")
    e = await w.wait_for(lambda e: e.name == "f")
    assert e.type == airlock.FilesystemEventType.CREATE
    await sb.files.remove("/tmp/w/f")
    await w.wait_for(lambda e: e.name == "f" and e.type.value == "remove")
    await w.stop()


async def test_get_host_pause_resume(sb: AsyncSandbox) -> None:
    await sb.files.write("/tmp/site/i.txt", "async served")
    h = await sb.commands.run(
        "exec python3 -m http.server 8124 --bind 127.0.0.1", background=True, cwd="/tmp/site"
    )
    host = await sb.get_host(8124)

    async def fetch() -> bool:
        try:
            async with httpx.AsyncClient() as c:
                return (await c.get(f"http://{host}/i.txt", timeout=5)).text == "async served"
        except httpx.HTTPError:
            return False

    assert await until(fetch, 30)
    await sb.pause()
    assert (await sb.get_info()).state == "paused"
    with pytest.raises(ConflictError):
        await sb.files.read("/tmp/site/i.txt")
    await sb.resume()
    assert (await sb.get_info()).state == "running"
    assert await until(fetch, 30)
    await h.kill()


async def test_the_rest_of_the_api(sb: AsyncSandbox) -> None:
    import datetime
    import tarfile

    from test_sync import ECHO_SERVER, _talk, _tar_of

    info = await sb.set_timeout("2m")
    assert info.end_at is not None
    left = (info.end_at - datetime.datetime.now(info.end_at.tzinfo)).total_seconds()
    assert 100 <= left <= 125
    await sb.commands.run("echo logged-async")
    u = await sb.usage()
    assert u.cpu_usec is not None and u.cpu_usec > 0
    assert u.pids is not None and u.pids >= 1
    assert "exec" in [a.kind for a in await sb.audit()]
    assert any(b"logged-async" in d for _, _, d in await sb.logs())
    assert await sb.is_running()
    procs = await sb.commands.list()
    assert any(p.argv[-1] == "echo logged-async" and not p.running for p in procs)

    await sb.files.write("/tmp/m/f.sh", "#!/bin/sh\necho ran\n")
    await sb.files.chmod("/tmp/m/f.sh", 0o700)
    assert (await sb.files.get_info("/tmp/m/f.sh")).mode == 0o700
    await sb.files.rename("/tmp/m/f.sh", "/tmp/m/g.sh")
    assert (await sb.commands.run("/tmp/m/g.sh")).stdout == "ran\n"
    await sb.files.make_dir("/tmp/t")
    await sb.files.write_tar("/tmp/t", _tar_of({"x.txt": b"X"}))
    assert (await sb.commands.run("cat /tmp/t/x.txt")).stdout == "X"
    s = await sb.files.read_tar("/tmp/t")
    names = tarfile.open(fileobj=io.BytesIO(await s.read())).getnames()
    assert any(n.endswith("x.txt") for n in names), names
    await sb.files.write("/tmp/m/digits", "0123456789")
    async with await sb.files.read("/tmp/m/digits", format="stream") as st:
        assert await st.read(4) == b"0123" and await st.read() == b"456789"

    h = await sb.commands.run("trap 'echo t; exit 8' TERM; while :; do sleep 0.05; done",
                              background=True)
    await asyncio.sleep(0.5)
    await h.signal("SIGTERM")
    r = await h.wait(check=False, timeout=20)
    assert (r.exit_code, r.stdout) == (8, "t\n")
    h = await sb.commands.run("sleep 0.5; echo first; sleep 1; echo second", background=True)
    await h.disconnect()
    h2 = await sb.commands.connect(h.pid)
    assert "second" in (await h2.wait(timeout=30)).stdout
    h = await sb.commands.run("sleep 60", background=True)
    await sb.commands.signal(h.pid, 15)
    assert (await h.wait(check=False, timeout=20)).exit_code == 143
    assert await sb.commands.kill(h.pid) is False

    await sb.commands.run(["python3", "-c", ECHO_SERVER.format(port=8126)], background=True)
    p = await sb.open_port(8126, token=True)
    assert [x.port for x in await sb.list_ports()] == [8126]
    ok = await until(
        lambda: _talk(p.address, f"AIRLOCK-TOKEN {p.token}\nhi".encode()) == b"pong:hi", 30
    )
    assert ok
    assert b"pong" not in _talk(p.address, b"hi")
    await sb.close_port(8126)
    assert await sb.list_ports() == []

    w = await sb.files.watch_dir("/tmp/m")
    await sb.files.write("/tmp/m/new", "n")
    await w.wait_for(lambda e: e.name == "new")
    assert "new" in [e.name for e in w.get_new_events()]
    await w.stop()

    t = await sb.pty.create(cmd=["cat"])
    await t.send_stdin("typed\n")
    assert await until(lambda: t.output.count(b"typed") >= 2, 20), t.output
    await t.close_stdin()
    assert (await t.wait(timeout=20)).exit_code == 0
    t = await sb.pty.create(cmd=["sleep", "60"])
    assert await t.kill() is True
    assert (await t.wait(timeout=20, check=False)).exit_code == 137
    t = await sb.pty.create(cmd=["sleep", "60"])
    assert await sb.pty.kill(t.pid) is True
    await t.disconnect()

    other = AsyncSandbox(sb.sandbox_id)
    assert (await other.get_info()).state == "running"
    await other.close()


async def test_a_raising_callback_stops_the_command(sb: AsyncSandbox) -> None:
    marker = "5656.7878"

    async def boom(text: str) -> None:
        raise ValueError("stop here")

    with pytest.raises(ValueError):
        await sb.commands.run(f"echo go; exec sleep {marker}", on_stdout=boom)
    assert await until(lambda: not host_pids_with(marker)), "the command outlived run()"


async def test_timeouts_of_background_commands_and_terminals(sb: AsyncSandbox) -> None:
    marker = "3434.5656"
    h = await sb.commands.run(f"echo err >&2; exec sleep {marker}", background=True, timeout=1)
    assert await until(lambda: h.stderr == "err\n")
    assert h.exit_code is None
    with pytest.raises(airlock.TimeoutError):
        await h.wait(timeout=30)
    assert h.exit_code == 137
    assert await until(lambda: not host_pids_with(marker))

    marker = "7878.9090"
    t = await sb.pty.create(cmd=["sleep", marker], timeout=1)
    with pytest.raises(airlock.TimeoutError):
        await t.wait(timeout=30)
    assert await until(lambda: not host_pids_with(marker))
    marker = "8642.7531"
    t = await sb.pty.create(cmd=["sleep", marker])
    with pytest.raises(airlock.TimeoutError):
        await t.wait(timeout=0.5)
    assert host_pids_with(marker)
    t0 = time.monotonic()
    await t.disconnect()
    assert time.monotonic() - t0 < 5
    assert t.exit_code is None
    assert await until(lambda: not host_pids_with(marker)), "hung up, but still running"
