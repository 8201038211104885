"""Starts a real airlock service for the tests: ``airlock-serve`` on a
socket and a loopback TCP port (with a token) under a temporary directory
of its own, with its own state directory. Nothing is mocked.

The binary is ``$AIRLOCK_SERVE_BIN``, else ``target/debug/airlock-serve``
of this repository. The service runs sandboxes as root: without root the
tests are skipped, unless ``AIRLOCK_TEST_MUST_RUN=1`` (CI), which makes
that a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
TOKEN = "sdk-test-token-0123456789abcdef0123456789"


@dataclass
class Daemon:
    socket: str
    url: str
    token: str
    dir: str


def _must_run() -> bool:
    return os.environ.get("AIRLOCK_TEST_MUST_RUN") == "1"


def _skip(why: str) -> None:
    if _must_run():
        pytest.fail(f"AIRLOCK_TEST_MUST_RUN=1 and {why}")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    """One real service for the whole session."""
    if os.geteuid() != 0:
        _skip("the SDK tests run the airlock service as root")
    binary = os.environ.get("AIRLOCK_SERVE_BIN") or str(REPO / "target/debug/airlock-serve")
    if not os.access(binary, os.X_OK):
        _skip(f"no airlock-serve at {binary} (cargo build first)")
    d = tempfile.mkdtemp(prefix="airlock-sdk-test-")
    sock = os.path.join(d, "run", "airlock.sock")
    token_file = os.path.join(d, "token")
    with open(token_file, "w") as f:
        f.write(TOKEN)
    os.chmod(token_file, 0o600)
    port = _free_port()
    log = open(os.path.join(d, "serve.log"), "wb")
    proc = subprocess.Popen(
        [
            binary,
            "--socket",
            sock,
            "--state-dir",
            os.path.join(d, "state"),
            "--listen",
            f"127.0.0.1:{port}",
            "--token-file",
            token_file,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        end = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                log.flush()
                raise RuntimeError(
                    "airlock-serve exited: " + open(os.path.join(d, "serve.log")).read()
                )
            try:
                with httpx.Client(transport=httpx.HTTPTransport(uds=sock)) as c:
                    if c.get("http://airlock/healthz").status_code == 200:
                        break
            except (httpx.HTTPError, OSError):
                pass
            if time.monotonic() > end:
                raise RuntimeError("airlock-serve did not come up in 30 s")
            time.sleep(0.05)
        yield Daemon(socket=sock, url=f"http://127.0.0.1:{port}", token=TOKEN, dir=d)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if os.environ.get("AIRLOCK_SDK_TEST_KEEP"):
            print(f"service directory kept: {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(autouse=True)
def _service_env(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test finds the service through AIRLOCK_SOCKET, as a user
    would; tests of the TCP route change that."""
    monkeypatch.setenv("AIRLOCK_SOCKET", daemon.socket)
    monkeypatch.delenv("AIRLOCK_URL", raising=False)
    monkeypatch.delenv("AIRLOCK_TOKEN", raising=False)


def host_pids_with(marker: str) -> List[int]:
    """Host processes whose command line holds ``marker`` (what a
    sandboxed process looks like from the host)."""
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{e}/stat", "rb") as f:
                st = f.read()
        except OSError:
            continue
        # Skip zombies: they have ended.
        if b") Z " in st:
            continue
        if marker.encode() in cmd:
            out.append(int(e))
    return out


def wait_until(pred, timeout: float = 10.0, step: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def host_memory_limit(pid: int) -> int:
    """The memory limit of host process ``pid``'s cgroup (v2
    ``memory.max``, else v1 ``memory.limit_in_bytes``), read on the host."""
    with open(f"/proc/{pid}/cgroup") as f:
        lines = f.read().splitlines()
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        if "memory" in ctrls.split(","):
            with open(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes") as f:
                return int(f.read())
    for line in lines:
        if line.startswith("0::"):
            path = line[3:]
            for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                p = f"{base}{path}/memory.max"
                if os.path.exists(p):
                    with open(p) as f:
                        v = f.read().strip()
                    return -1 if v == "max" else int(v)
    raise AssertionError(f"no memory cgroup for {pid}: {lines}")
