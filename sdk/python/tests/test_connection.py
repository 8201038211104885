"""How the SDK finds the service: arguments, AIRLOCK_SOCKET, AIRLOCK_URL
with AIRLOCK_TOKEN, the default socket."""

from __future__ import annotations

import os

import pytest

from airlock import (
    ConnectionConfig,
    InvalidArgumentError,
    Sandbox,
    ServiceUnavailableError,
    default_socket,
)

from conftest import Daemon


def test_precedence(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRLOCK_URL", daemon.url)
    monkeypatch.setenv("AIRLOCK_TOKEN", daemon.token)
    # AIRLOCK_SOCKET (set by the fixture) comes first.
    cfg = ConnectionConfig.resolve()
    assert (cfg.socket, cfg.url) == (daemon.socket, None)
    with Sandbox.create() as sb:
        assert sb._http.cfg.socket == daemon.socket
        assert sb.commands.run("echo via-socket").stdout == "via-socket\n"
    # Then AIRLOCK_URL with AIRLOCK_TOKEN.
    monkeypatch.delenv("AIRLOCK_SOCKET")
    cfg = ConnectionConfig.resolve()
    assert (cfg.socket, cfg.url, cfg.token) == (None, daemon.url, daemon.token)
    assert cfg.headers["authorization"] == f"Bearer {daemon.token}"
    with Sandbox.create() as sb:
        assert sb.commands.run("echo via-url").stdout == "via-url\n"
    # Arguments beat the environment.
    cfg = ConnectionConfig.resolve(socket=daemon.socket)
    assert (cfg.socket, cfg.url) == (daemon.socket, None)
    with pytest.raises(InvalidArgumentError):
        ConnectionConfig.resolve(url="ftp://nowhere")


def test_the_default_socket(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRLOCK_SOCKET")
    want = "/run/airlock/airlock.sock" if os.geteuid() == 0 else None
    if want is None:
        d = os.environ.get("XDG_RUNTIME_DIR")
        want = os.path.join(d, "airlock.sock") if d else f"/tmp/airlock-{os.getuid()}/airlock.sock"
    assert default_socket() == want
    assert ConnectionConfig.resolve().socket == want
    if os.path.exists(want):
        # A service of this machine's may be there: do not touch it.
        print(f"note: {want} exists; not probing it")
        return
    # Nothing there: the SDK says where it looked and what to do.
    with pytest.raises(ServiceUnavailableError) as e:
        Sandbox.list()
    assert want in str(e.value) and "airlock serve" in str(e.value)
