"""The synchronous SDK (:class:`airlock.Sandbox`) against a real service."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
from typing import Iterator, List, Tuple

import httpx
import pytest

import airlock
from airlock import (
    AuthenticationError,
    CommandExitError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    Sandbox,
    ServiceUnavailableError,
)

from conftest import Daemon, host_memory_limit, host_pids_with, wait_until

MIB = 1 << 20


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox.create(metadata={"suite": "sync"}) as s:
        yield s


# ------------------------------------------------------------ sandboxes


def test_create_with_every_option_then_connect_and_list(daemon: Daemon) -> None:
    tag = f"t{os.getpid()}-{time.monotonic_ns()}"
    sb = Sandbox.create(
        image="host",
        isolation="container",
        memory="256M",
        timeout=600,
        env={"GREETING": "hi there"},
        network="none",
        metadata={"tag": tag, "owner": "tests"},
    )
    try:
        info = sb.get_info()
        assert info.sandbox_id == sb.sandbox_id and info.state == "running"
        assert info.metadata == {"tag": tag, "owner": "tests"}
        assert info.spec["isolation"] == "container"
        # The lifetime asked for: expires about 600 s after creation.
        assert info.end_at is not None and info.started_at is not None
        assert 590 <= (info.end_at - info.started_at).total_seconds() <= 610
        # The memory limit reached the sandbox's cgroup (read on the host).
        marker = "3141.5926"
        h = sb.commands.run(f"sleep {marker}", background=True)
        assert wait_until(lambda: bool(host_pids_with(marker)))
        assert host_memory_limit(host_pids_with(marker)[0]) == 256 * MIB
        h.kill()
        assert sb.commands.run("echo $GREETING").stdout == "hi there\n"
        # No network but loopback.
        ifaces = sb.commands.run("tail -n +3 /proc/net/dev | cut -d: -f1").stdout.split()
        assert ifaces == ["lo"]
        # The service's own TCP port on the host's loopback is out of reach.
        port = daemon.url.rsplit(":", 1)[1]
        r = sb.commands.run(
            ["python3", "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}), 3)"],
            check=False,
        )
        assert r.exit_code != 0 and "ConnectionRefused" in r.stderr, r.stderr

        again = Sandbox.connect(sb.sandbox_id)
        assert again.commands.run("echo $GREETING").stdout == "hi there\n"
        again.close()

        found = Sandbox.list(metadata={"tag": tag})
        assert [s.sandbox_id for s in found] == [sb.sandbox_id]
        assert Sandbox.list(metadata={"tag": tag, "owner": "someone-else"}) == []
        assert sb.sandbox_id in [s.sandbox_id for s in Sandbox.list()]
    finally:
        assert sb.kill() is True
        sb.close()
    # Stopped: not listed, cannot be connected to.
    assert sb.sandbox_id not in [s.sandbox_id for s in Sandbox.list()]
    assert sb.sandbox_id in [s.sandbox_id for s in Sandbox.list(all=True)]
    with pytest.raises(ConflictError):
        Sandbox.connect(sb.sandbox_id)


def test_trust_picks_the_tier(daemon: Daemon) -> None:
    with Sandbox.create(trust="experimental") as sb:
        assert sb.get_info().spec["isolation"] == "container"
        # A container: its own pid namespace, the command is pid 2 or so.
        assert int(sb.commands.run("echo $$").stdout) < 100
    with Sandbox.create(trust="own") as sb:
        assert sb.get_info().spec["isolation"] == "none"
    # untrusted → the microVM tier: a microVM, or (in a build without
    # it) the service's refusal that names it.
    try:
        with Sandbox.create(trust="untrusted", timeout=300) as sb:
            assert sb.get_info().spec["isolation"] == "microvm"
    except InvalidArgumentError as e:
        assert "microVM" in str(e) or "microvm" in str(e), e
    with pytest.raises(InvalidArgumentError):
        Sandbox.create(trust="somewhat")
    with pytest.raises(InvalidArgumentError):
        Sandbox.create(trust="own", isolation="container")


def test_errors_are_typed(daemon: Daemon) -> None:
    with pytest.raises(NotFoundError):
        Sandbox.connect("sb-0000000000000000")
    with pytest.raises(InvalidArgumentError):
        Sandbox.create(memory="lots")
    with pytest.raises(ServiceUnavailableError):
        Sandbox.list(socket=os.path.join(daemon.dir, "no-such.sock"))
    # Every error is an AirlockError.
    assert issubclass(CommandExitError, airlock.AirlockError)
    assert issubclass(airlock.TimeoutError, TimeoutError)


def test_context_manager_kills(daemon: Daemon) -> None:
    with Sandbox.create() as sb:
        sid = sb.sandbox_id
        assert sb.is_running()
    info = Sandbox(sid).get_info()
    assert info.state == "stopped"


# ----------------------------------------------------------- over TCP


def test_tcp_with_the_token_from_the_environment(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRLOCK_SOCKET")
    monkeypatch.setenv("AIRLOCK_URL", daemon.url)
    monkeypatch.setenv("AIRLOCK_TOKEN", daemon.token)
    with Sandbox.create() as sb:
        assert sb._http.cfg.url == daemon.url
        assert sb.commands.run("echo over tcp").stdout == "over tcp\n"
        sb.files.write("/tmp/x", "tcp file")
        assert sb.files.read("/tmp/x") == "tcp file"


def test_tcp_with_a_wrong_token_is_an_authentication_error(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {s.sandbox_id for s in Sandbox.list(all=True)}
    monkeypatch.delenv("AIRLOCK_SOCKET")
    monkeypatch.setenv("AIRLOCK_URL", daemon.url)
    monkeypatch.setenv("AIRLOCK_TOKEN", "not-the-token")
    with pytest.raises(AuthenticationError) as e:
        Sandbox.create()
    assert e.value.status == 401
    with pytest.raises(AuthenticationError):
        Sandbox.list()
    monkeypatch.delenv("AIRLOCK_TOKEN")
    with pytest.raises(AuthenticationError):
        Sandbox.create()
    # Explicit arguments: the same.
    with pytest.raises(AuthenticationError):
        Sandbox.list(url=daemon.url, token=daemon.token + "x")
    # Nothing was created by the refused calls.
    after = {s.sandbox_id for s in Sandbox.list(all=True, socket=daemon.socket)}
    assert after == before


# ------------------------------------------------------------- commands


def test_run_result_exit_codes_cwd_env_user(sb: Sandbox) -> None:
    r = sb.commands.run("echo out; echo err >&2")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 0)
    # An argv list runs as it is (no shell).
    assert sb.commands.run(["printf", "%s|", "a b", "$HOME"]).stdout == "a b|$HOME|"

    with pytest.raises(CommandExitError) as e:
        sb.commands.run("echo partial; echo bad >&2; exit 3")
    assert e.value.exit_code == 3
    assert e.value.stdout == "partial\n" and e.value.stderr == "bad\n"
    r = sb.commands.run("exit 4", check=False)
    assert r.exit_code == 4 and not r.ok

    # Not found: 127, and an error.
    r = sb.commands.run(["/no/such/program"], check=False)
    assert r.exit_code == 127 and r.error

    sb.files.make_dir("/tmp/wd")
    assert sb.commands.run("pwd", cwd="/tmp/wd").stdout == "/tmp/wd\n"
    assert sb.commands.run("echo $A-$B", env={"A": "1", "B": "two"}).stdout == "1-two\n"
    assert sb.commands.run("id -u", user="root").stdout == "0\n"
    assert sb.commands.run("id -u", user="1234").stdout == "1234\n"
    default_uid = sb.commands.run("id -u").stdout.strip()
    assert default_uid != "0"

    # Binary output survives exactly.
    r = sb.commands.run(["/bin/sh", "-c", r"printf '\377\000\001'"])
    assert r.stdout_bytes == b"\xff\x00\x01"


def test_on_stdout_sees_output_while_the_command_runs(sb: Sandbox) -> None:
    # The command prints, then waits for a file that only the callback
    # makes: if callbacks came at the end, it would never finish.
    seen: List[Tuple[float, str]] = []
    errs: List[str] = []

    def on_stdout(text: str) -> None:
        seen.append((time.monotonic(), text))
        if "ready" in text:
            sb.files.write("/tmp/go", "1")

    t0 = time.monotonic()
    r = sb.commands.run(
        "echo ready; while [ ! -e /tmp/go ]; do sleep 0.05; done; sleep 1; echo done; echo e >&2",
        on_stdout=on_stdout,
        on_stderr=errs.append,
        timeout=30,
    )
    t_end = time.monotonic()
    assert r.stdout == "ready\ndone\n"
    assert "".join(t for _, t in seen) == "ready\ndone\n"
    assert "".join(errs) == "e\n"
    # "ready" came at least the final second before the command ended.
    first = next(ts for ts, t in seen if "ready" in t)
    assert t_end - first >= 0.9, (t0, first, t_end)


def test_timeout_kills_the_command(sb: Sandbox) -> None:
    marker = "4321.123456"
    t0 = time.monotonic()
    with pytest.raises(airlock.TimeoutError):
        sb.commands.run(f"sleep {marker}", timeout=1)
    assert time.monotonic() - t0 < 10
    assert wait_until(lambda: not host_pids_with(marker))
    assert not [p for p in sb.commands.list() if p.running and marker in p.cmd]


def test_background_process_outlives_the_call_and_dies_with_the_sandbox(daemon: Daemon) -> None:
    marker = "9876.54321"
    sb = Sandbox.create()
    try:
        t0 = time.monotonic()
        h = sb.commands.run(f"echo started; exec sleep {marker}", background=True)
        assert time.monotonic() - t0 < 5
        assert isinstance(h, airlock.CommandHandle)
        # run() returned at once; the process lives on.
        time.sleep(1.0)
        procs = [p for p in sb.commands.list() if p.pid == h.pid]
        assert procs and procs[0].running
        assert host_pids_with(marker), "the background process should run on the host"
        assert wait_until(lambda: h.stdout == "started\n")
        # Another connection sees it too.
        other = Sandbox.connect(sb.sandbox_id)
        assert any(p.pid == h.pid and p.running for p in other.commands.list())
        other.close()
        assert sb.kill() is True
        assert wait_until(lambda: not host_pids_with(marker)), "sb.kill() left it running"
        with pytest.raises(airlock.AirlockError):
            h.wait(timeout=10)
    finally:
        sb.kill()
        sb.close()


def test_background_handle_wait_kill_stdin(sb: Sandbox) -> None:
    chunks: List[str] = []
    h = sb.commands.run("for i in 1 2 3; do echo $i; sleep 0.2; done; exit 5", background=True,
                        on_stdout=chunks.append)
    with pytest.raises(CommandExitError) as e:
        h.wait()
    assert e.value.exit_code == 5 and e.value.stdout == "1\n2\n3\n"
    assert "".join(chunks) == "1\n2\n3\n"
    # Iterating over a handle replays its output.
    assert "".join(o or "" for o, _, _ in h) == "1\n2\n3\n"

    marker = "7777.4444"
    h = sb.commands.run(f"sleep {marker}", background=True)
    assert wait_until(lambda: bool(host_pids_with(marker)))
    assert h.kill() is True
    r = h.wait(check=False, timeout=10)
    assert r.exit_code == 128 + 9
    assert wait_until(lambda: not host_pids_with(marker))
    assert h.kill() is False

    h = sb.commands.run("read line; echo got:$line; cat | wc -c", background=True)
    assert h.send_stdin("hello\n") == 6
    h.send_stdin(b"x" * 100000)
    h.send_stdin(io.BytesIO(b"y" * 1000))
    h.close_stdin()
    r = h.wait(timeout=30)
    assert r.stdout == "got:hello\n101000\n"

    # wait() with its own timeout leaves the command running.
    h = sb.commands.run("sleep 30", background=True)
    with pytest.raises(airlock.TimeoutError):
        h.wait(timeout=0.5)
    assert any(p.pid == h.pid and p.running for p in sb.commands.list())
    h.kill()
    # connect() follows a running process.
    h2 = sb.commands.run("sleep 1; echo later", background=True)
    h3 = sb.commands.connect(h2.pid)
    assert h3.wait(timeout=30).stdout == "later\n"
    assert h2.wait(timeout=30).stdout == "later\n"


# ------------------------------------------------------------------ pty


def test_pty(sb: Sandbox) -> None:
    data: List[bytes] = []
    t = sb.pty.create(rows=30, cols=100, cmd=["/bin/sh"], on_data=data.append)
    t.send("stty size; tty; echo $((6*7))\n")
    assert wait_until(lambda: b"42" in t.output and b"30 100" in t.output, timeout=20), t.output
    t.resize(40, 120)
    t.send("stty size\n")
    assert wait_until(lambda: b"40 120" in t.output, timeout=20), t.output
    t.send("exit 3\n")
    r = t.wait(timeout=20, check=False)
    assert r.exit_code == 3
    assert b"/dev/pts/" in t.output
    assert b"".join(data) == t.output
    # The default command is a shell too; kill() ends it.
    t = sb.pty.create()
    t.send("echo $TERM\n")
    assert wait_until(lambda: b"xterm-256color" in t.output, timeout=20)
    assert t.kill() is True
    assert t.wait(timeout=20, check=False).exit_code == 128 + 9


# ---------------------------------------------------------------- files


def test_files(sb: Sandbox) -> None:
    info = sb.files.write("/tmp/d/sub/hello.txt", "héllo\n")
    assert info.path == "/tmp/d/sub/hello.txt" and info.size == len("héllo\n".encode())
    assert sb.files.read("/tmp/d/sub/hello.txt") == "héllo\n"
    assert sb.commands.run("cat /tmp/d/sub/hello.txt").stdout == "héllo\n"
    raw = bytes(range(256))
    sb.files.write("/tmp/d/raw.bin", raw, mode=0o600)
    assert sb.files.read("/tmp/d/raw.bin", format="bytes") == raw
    st = sb.files.get_info("/tmp/d/raw.bin")
    assert st.size == 256 and st.mode == 0o600 and st.permissions == "rw-------"

    names = [(e.name, e.type.value) for e in sb.files.list("/tmp/d")]
    assert names == [("raw.bin", "file"), ("sub", "dir")]
    deep = [e.path for e in sb.files.list("/tmp/d", depth=2)]
    assert "/tmp/d/sub/hello.txt" in deep

    assert sb.files.exists("/tmp/d/raw.bin")
    assert not sb.files.exists("/tmp/d/nope")
    assert sb.files.make_dir("/tmp/e/f") is True
    assert sb.files.make_dir("/tmp/e/f") is False
    assert sb.commands.run("test -d /tmp/e/f").exit_code == 0

    sb.files.rename("/tmp/d/raw.bin", "/tmp/e/raw.bin")
    assert not sb.files.exists("/tmp/d/raw.bin") and sb.files.exists("/tmp/e/raw.bin")
    sb.files.remove("/tmp/e/raw.bin")
    assert not sb.files.exists("/tmp/e/raw.bin")
    sb.files.remove("/tmp/d")
    assert not sb.files.exists("/tmp/d")
    assert sb.commands.run("test -e /tmp/d", check=False).exit_code == 1

    with pytest.raises(NotFoundError):
        sb.files.read("/tmp/nothing-here")


def test_a_20_mib_file_both_ways_streamed(sb: Sandbox) -> None:
    blob = os.urandom(20 * MIB)
    want = hashlib.sha256(blob).hexdigest()
    # From a file object, sent in chunks.
    info = sb.files.write("/tmp/big/one.bin", io.BytesIO(blob))
    assert info.size == len(blob)
    assert sb.commands.run("sha256sum /tmp/big/one.bin").stdout.split()[0] == want

    # From a generator: nothing to hold in memory at once.
    def gen() -> Iterator[bytes]:
        for i in range(0, len(blob), 3 * MIB + 7):
            yield blob[i : i + 3 * MIB + 7]

    sb.files.write("/tmp/big/two.bin", gen())
    assert sb.commands.run("sha256sum /tmp/big/two.bin").stdout.split()[0] == want

    # Down as a stream, in chunks.
    h = hashlib.sha256()
    n = 0
    chunks = 0
    with sb.files.read("/tmp/big/two.bin", format="stream") as s:
        for b in s:
            h.update(b)
            n += len(b)
            chunks += 1
    assert n == len(blob) and h.hexdigest() == want and chunks > 1
    # And all at once, as bytes.
    assert sb.files.read("/tmp/big/one.bin", format="bytes") == blob


def test_watch(sb: Sandbox) -> None:
    sb.files.make_dir("/tmp/w")
    sb.files.write("/tmp/w/old", "x")
    got: List[airlock.FilesystemEvent] = []
    with sb.files.watch("/tmp/w", on_event=got.append) as w:
        sb.files.write("/tmp/w/new.txt", "1")
        e = w.wait_for(lambda e: e.name == "new.txt")
        assert e.type == airlock.FilesystemEventType.CREATE
        sb.commands.run("echo more >> /tmp/w/new.txt")
        w.wait_for(lambda e: e.name == "new.txt" and e.type.value == "write")
        sb.files.remove("/tmp/w/old")
        w.wait_for(lambda e: e.name == "old" and e.type.value == "remove")
    assert {(e.name, e.type.value) for e in got} >= {
        ("new.txt", "create"), ("new.txt", "write"), ("old", "remove")
    }


# --------------------------------------------------------- ports, pause


def test_get_host_reaches_a_server_inside(sb: Sandbox) -> None:
    sb.files.write("/tmp/site/index.html", "served from the sandbox")
    h = sb.commands.run(
        "exec python3 -m http.server 8123 --bind 127.0.0.1", background=True, cwd="/tmp/site"
    )
    host = sb.get_host(8123)
    assert host.startswith("127.0.0.1:")

    def fetch() -> bool:
        try:
            return httpx.get(f"http://{host}/index.html", timeout=5).text == "served from the sandbox"
        except httpx.HTTPError:
            return False

    assert wait_until(fetch, timeout=30)
    assert [p.port for p in sb.list_ports()] == [8123]
    sb.close_port(8123)
    assert sb.list_ports() == []
    h.kill()


def test_pause_and_resume(sb: Sandbox) -> None:
    h = sb.commands.run("i=0; while :; do i=$((i+1)); echo $i > /tmp/n; sleep 0.05; done",
                        background=True)
    assert wait_until(lambda: sb.files.exists("/tmp/n") and sb.files.read("/tmp/n").strip() != "")
    sb.pause()
    assert sb.get_info().state == "paused"
    with pytest.raises(ConflictError):
        sb.commands.run("true")
    sb.resume()
    assert sb.get_info().state == "running"
    a = int(sb.files.read("/tmp/n"))
    time.sleep(0.5)
    b = int(sb.files.read("/tmp/n"))
    assert b > a
    h.kill()


def test_pause_freezes_processes(sb: Sandbox) -> None:
    sb.commands.run("i=0; while :; do i=$((i+1)); echo $i > /tmp/n; sleep 0.05; done",
                    background=True)
    assert wait_until(lambda: sb.files.exists("/tmp/n"))
    time.sleep(0.3)
    sb.pause()
    time.sleep(0.3)
    sb.resume()
    a = int(sb.files.read("/tmp/n"))
    sb.pause()
    time.sleep(1.0)
    sb.resume()
    b = int(sb.files.read("/tmp/n"))
    # Frozen for a second: at most a step or two, not ~20.
    assert b - a <= 3, (a, b)


def test_kill(daemon: Daemon) -> None:
    sb = Sandbox.create()
    sb.commands.run("true")
    assert sb.kill() is True
    assert sb.get_info().state == "stopped"
    with pytest.raises(ConflictError):
        sb.commands.run("true")
    sb.close()


def test_the_installed_package(daemon: Daemon) -> None:
    """The package pip installed (not this source tree) imports, with its
    type marker."""
    code = (
        "import airlock, os; from airlock import Sandbox, AsyncSandbox; "
        "print(os.path.isfile(os.path.join(os.path.dirname(airlock.__file__), 'py.typed'))); "
        "print(airlock.__file__)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd="/", capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == "True"
    assert "site-packages" in out[1]


def _tar_of(files: dict) -> bytes:  # type: ignore[type-arg]
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


ECHO_SERVER = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', {port})); s.listen()\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'pong:' + c.recv(100)); c.close()\n"
)


def _talk(host: str, first: bytes) -> bytes:
    import socket as so

    h, p = host.rsplit(":", 1)
    with so.create_connection((h, int(p)), 5) as c:
        c.settimeout(5)
        c.sendall(first)
        out = b""
        try:
            while True:
                b = c.recv(100)
                if not b:
                    break
                out += b
        except OSError:
            pass
        return out


def test_the_rest_of_the_api(sb: Sandbox) -> None:
    # Lifetime, usage, audit, logs.
    info = sb.set_timeout(120)
    assert info.end_at is not None
    left = (info.end_at - __import__("datetime").datetime.now(info.end_at.tzinfo)).total_seconds()
    assert 100 <= left <= 125
    sb.commands.run("echo logged-line")
    u = sb.usage()
    # Every sandbox of the service has a cgroup: these are measured.
    assert u.cpu_usec is not None and u.cpu_usec > 0
    assert u.cpu_seconds == u.cpu_usec / 1e6
    assert u.memory_bytes is not None and u.memory_bytes > 0
    assert u.pids is not None and u.pids >= 1
    kinds = [a.kind for a in sb.audit()]
    assert "create" in kinds and "exec" in kinds
    assert any(b"logged-line" in data for _, stream, data in sb.logs() if stream == "stdout")
    assert sb.is_running()

    # chmod, stat through a symlink, tar both ways.
    sb.files.write("/tmp/m/f.sh", "#!/bin/sh\necho ran\n")
    sb.files.chmod("/tmp/m/f.sh", 0o755)
    assert sb.files.get_info("/tmp/m/f.sh").mode == 0o755
    assert sb.commands.run("/tmp/m/f.sh").stdout == "ran\n"
    sb.commands.run("ln -s /tmp/m/f.sh /tmp/m/link")
    assert sb.files.get_info("/tmp/m/link").type.value == "symlink"
    assert sb.files.get_info("/tmp/m/link", follow=True).type.value == "file"
    sb.files.make_dir("/tmp/t")
    sb.files.write_tar("/tmp/t", _tar_of({"a.txt": b"A", "d/b.txt": b"BB"}))
    assert sb.commands.run("cat /tmp/t/a.txt /tmp/t/d/b.txt").stdout == "ABB"
    import tarfile

    with sb.files.read_tar("/tmp/t") as s:
        data = s.read()
    names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
    assert any(n.endswith("d/b.txt") for n in names), names
    # FileStream.read(n) in pieces.
    sb.files.write("/tmp/m/digits", "0123456789")
    with sb.files.read("/tmp/m/digits", format="stream") as s:
        assert s.read(3) == b"012" and s.read(4) == b"3456" and s.read() == b"789"

    # Signals by name, by handle; disconnect and connect again.
    h = sb.commands.run("trap 'echo got-term; exit 7' TERM; while :; do sleep 0.05; done",
                        background=True)
    time.sleep(0.5)
    h.signal("TERM")
    r = h.wait(check=False, timeout=20)
    assert r.exit_code == 7 and r.stdout == "got-term\n"
    h = sb.commands.run("sleep 0.5; echo first; sleep 1; echo second", background=True)
    h.disconnect()
    h2 = sb.commands.connect(h.pid)
    assert "second" in h2.wait(timeout=30).stdout
    h = sb.commands.run("sleep 60", background=True)
    sb.commands.signal(h.pid, 15)
    assert h.wait(check=False, timeout=20).exit_code == 128 + 15

    # A guarded port forward: nothing without the token.
    sb.commands.run(["python3", "-c", ECHO_SERVER.format(port=8125)], background=True)
    p = sb.open_port(8125, token=True)
    assert p.token and p.port == 8125
    assert wait_until(lambda: _talk(p.address, f"AIRLOCK-TOKEN {p.token}\nping".encode()) == b"pong:ping", 30)
    assert b"pong" not in _talk(p.address, b"AIRLOCK-TOKEN wrong\nping")
    assert b"pong" not in _talk(p.address, b"ping")

    # The watch's own queue of new events.
    sb.files.make_dir("/tmp/q")
    w = sb.files.watch_dir("/tmp/q")
    sb.files.write("/tmp/q/one", "1")
    w.wait_for(lambda e: e.name == "one")
    assert [e.name for e in w.get_new_events()] == ["one"]
    assert w.get_new_events() == []
    w.stop()

    # A terminal whose input ends: cat sees end-of-file and exits 0.
    t = sb.pty.create(cmd=["cat"])
    t.send("typed\n")
    assert wait_until(lambda: t.output.count(b"typed") >= 2, 20), t.output
    t.close_stdin()
    assert t.wait(timeout=20).exit_code == 0
    t = sb.pty.create(cmd=["sleep", "60"])
    assert sb.pty.kill(t.pid) is True
    assert t.wait(timeout=20, check=False).exit_code == 137

    # A handle by id, not checked; close() leaves the sandbox running.
    other = Sandbox(sb.sandbox_id)
    other.close()
    assert sb.is_running()


def test_a_raising_callback_stops_the_command(sb: Sandbox) -> None:
    marker = "1212.3434"

    def boom(text: str) -> None:
        raise ValueError("stop here")

    with pytest.raises(ValueError):
        sb.commands.run(f"echo go; exec sleep {marker}", on_stdout=boom)
    assert wait_until(lambda: not host_pids_with(marker)), "the command outlived run()"


def test_timeouts_of_background_commands_and_terminals(sb: Sandbox) -> None:
    marker = "2323.4545"
    h = sb.commands.run(f"echo err >&2; exec sleep {marker}", background=True, timeout=1)
    assert wait_until(lambda: h.stderr == "err\n")
    assert h.exit_code is None
    with pytest.raises(airlock.TimeoutError):
        h.wait(timeout=30)
    assert h.exit_code == 137
    assert wait_until(lambda: not host_pids_with(marker))
    assert f"pid={h.pid}" in repr(h)

    marker = "6767.8989"
    t = sb.pty.create(cmd=["sleep", marker], timeout=1)
    with pytest.raises(airlock.TimeoutError):
        t.wait(timeout=30)
    assert wait_until(lambda: not host_pids_with(marker))
    # wait() with its own timeout leaves the terminal alone; disconnect()
    # hangs it up.
    marker = "1357.2468"
    t = sb.pty.create(cmd=["sleep", marker])
    with pytest.raises(airlock.TimeoutError):
        t.wait(timeout=0.5)
    assert host_pids_with(marker)
    t0 = time.monotonic()
    t.disconnect()
    assert time.monotonic() - t0 < 5
    assert t.exit_code is None
    assert wait_until(lambda: not host_pids_with(marker)), "hung up, but still running"
