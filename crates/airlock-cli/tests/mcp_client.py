"""A real MCP client (the `mcp` package from PyPI) driving airlock's MCP
server, for crates/airlock-cli/tests/mcp.rs.

    mcp_client.py stdio AIRLOCK_BIN REPO
    mcp_client.py http URL TOKEN REPO
    mcp_client.py microvm AIRLOCK_BIN REPO

It lists the tools and calls each (and some with bad arguments), and prints
one JSON object with what every call returned; the Rust test asserts on it.
"""

import asyncio
import json
import sys
import time

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

GIB = 1 << 30


def summary(r, t0):
    text = "".join(getattr(c, "text", "") for c in r.content)
    return {
        "is_error": bool(r.is_error),
        "text": text,
        "text_len": len(text),
        "structured": r.structured_content,
        "seconds": time.monotonic() - t0,
    }


async def call(s, name, args):
    t0 = time.monotonic()
    try:
        r = await s.call_tool(name, args)
    except MCPError as e:
        return {"protocol_error": str(e), "seconds": time.monotonic() - t0}
    return summary(r, t0)


async def scenario(s, repo):
    out = {}
    await s.initialize()
    tools = await s.list_tools()
    out["tools"] = sorted(t.name for t in tools.tools)
    out["schemas"] = {t.name: t.input_schema for t in tools.tools}

    out["run"] = await call(
        s, "run", {"command": "echo hello from airlock; echo to-stderr >&2; exit 3"}
    )
    out["run_argv"] = await call(s, "run", {"argv": ["/bin/echo", "a b", "$HOME"]})
    out["run_repo"] = await call(
        s,
        "run",
        {
            "command": "pwd; cat hello.txt; echo scribble > hello.txt; rm -f gone.txt; ls",
            "repo": repo,
        },
    )
    out["run_timeout"] = await call(s, "run", {"command": "sleep 30", "timeout": 1})
    # A 1 GiB flood.
    out["flood"] = await call(
        s, "run", {"command": f"yes airlock-flood | head -c {GIB}", "timeout": "10m"}
    )
    out["flood_small_cap"] = await call(
        s,
        "run",
        {"command": "seq 1 100000", "max_output_bytes": 1000},
    )

    # Bad arguments: tool errors, not protocol errors.
    out["bad_timeout"] = await call(s, "run", {"command": "true", "timeout": "forever"})
    out["bad_missing_command"] = await call(s, "run", {})
    out["bad_type"] = await call(s, "run", {"argv": 5})
    out["bad_unknown_field"] = await call(s, "run", {"command": "true", "colour": "red"})
    out["bad_weaker_tier"] = await call(s, "run", {"command": "true", "isolation": "none"})
    out["bad_trust_conflict"] = await call(
        s, "run", {"command": "true", "isolation": "container", "trust": "untrusted"}
    )
    out["bad_repo"] = await call(s, "run", {"command": "true", "repo": "/nonexistent/airlock-repo"})
    out["bad_sandbox"] = await call(s, "sandbox_exec", {"sandbox_id": "sb-0000000000000000", "command": "true"})
    out["unknown_tool"] = await call(s, "no_such_tool", {})

    # A sandbox's life.
    out["create"] = await call(s, "sandbox_create", {"repo": repo, "timeout": "10m"})
    sid = (out["create"].get("structured") or {}).get("sandbox_id")
    out["sandbox_id"] = sid
    out["exec"] = await call(
        s, "sandbox_exec", {"sandbox_id": sid, "command": "pwd; cat /work/hello.txt; id -u"}
    )
    out["write"] = await call(
        s,
        "file_write",
        {"sandbox_id": sid, "path": "/tmp/note.txt", "content": "line one\nline 'two' \"quoted\" $x\n"},
    )
    out["write_b64"] = await call(
        s,
        "file_write",
        {"sandbox_id": sid, "path": "/tmp/bin.dat", "content": "AAEC/f7/", "encoding": "base64", "mode": "600"},
    )
    out["exec_after_write"] = await call(
        s, "sandbox_exec", {"sandbox_id": sid, "argv": ["sh", "-c", "cat /tmp/note.txt; stat -c %a /tmp/bin.dat; od -An -tx1 /tmp/bin.dat"]}
    )
    out["read"] = await call(s, "file_read", {"sandbox_id": sid, "path": "/tmp/note.txt"})
    out["read_b64"] = await call(s, "file_read", {"sandbox_id": sid, "path": "/tmp/bin.dat"})
    await call(s, "sandbox_exec", {"sandbox_id": sid, "command": "head -c 300000 /dev/zero | tr '\\0' z > /tmp/big.txt"})
    out["read_part"] = await call(
        s, "file_read", {"sandbox_id": sid, "path": "/tmp/big.txt", "offset": 1000, "max_bytes": 5000}
    )
    out["read_missing"] = await call(s, "file_read", {"sandbox_id": sid, "path": "/tmp/nope"})
    out["read_relative"] = await call(s, "file_read", {"sandbox_id": sid, "path": "tmp/note.txt"})
    out["list"] = await call(s, "file_list", {"sandbox_id": sid, "path": "/tmp"})
    out["list_default"] = await call(s, "file_list", {"sandbox_id": sid})
    out["list_sandboxes"] = await call(s, "sandbox_list", {})
    out["exec_flood"] = await call(
        s, "sandbox_exec", {"sandbox_id": sid, "command": f"yes exec-flood | head -c {256 << 20}"}
    )
    out["destroy"] = await call(s, "sandbox_destroy", {"sandbox_id": sid})
    out["exec_after_destroy"] = await call(s, "sandbox_exec", {"sandbox_id": sid, "command": "true"})
    out["destroy_again"] = await call(s, "sandbox_destroy", {"sandbox_id": sid})

    # Task mode.
    out["task"] = await call(
        s,
        "task",
        {
            "repo": repo,
            "command": "echo changed >> hello.txt && echo brand new > new.txt && rm gone.txt "
            "&& mv keep.txt moved.txt && chmod +x run.sh && printf '\\000\\001\\002' > blob.bin",
        },
    )
    out["task_small_patch"] = await call(
        s,
        "task",
        {"repo": repo, "command": "seq 1 5000 > numbers.txt", "max_patch_bytes": 2000},
    )
    return out


async def microvm(s, repo):
    """run with a repository and task mode, in the microVM tier."""
    await s.initialize()
    out = {}
    out["run_repo"] = await call(
        s,
        "run",
        {
            "command": "pwd; uname -r; cat hello.txt; echo scribble > hello.txt; cat hello.txt",
            "repo": repo,
            "isolation": "microvm",
        },
    )
    out["task"] = await call(
        s,
        "task",
        {
            "repo": repo,
            "trust": "untrusted",
            "command": "uname -r; echo changed >> hello.txt && echo brand new > new.txt && rm gone.txt",
        },
    )
    return out


async def leave(s, marker):
    """Starts a background process in a sandbox and leaves without
    destroying it: the server must stop it when the client goes."""
    await s.initialize()
    out = {}
    out["create"] = await call(s, "sandbox_create", {})
    sid = out["create"]["structured"]["sandbox_id"]
    out["start"] = await call(
        s, "sandbox_exec", {"sandbox_id": sid, "command": f"setsid sleep {marker} >/dev/null 2>&1 &"}
    )
    out["ps"] = await call(s, "sandbox_exec", {"sandbox_id": sid, "command": "ps -eo args"})
    return out


async def main():
    mode = sys.argv[1]
    if mode == "leave":
        params = StdioServerParameters(command=sys.argv[2], args=["mcp"])
        async with stdio_client(params) as (r, w):
            async with ClientSession(r, w) as s:
                out = await leave(s, sys.argv[3])
    elif mode == "microvm":
        params = StdioServerParameters(command=sys.argv[2], args=["mcp"])
        async with stdio_client(params) as (r, w):
            async with ClientSession(r, w) as s:
                out = await microvm(s, sys.argv[3])
    elif mode == "stdio":
        params = StdioServerParameters(command=sys.argv[2], args=["mcp"])
        repo = sys.argv[3]
        async with stdio_client(params) as (r, w):
            async with ClientSession(r, w) as s:
                out = await scenario(s, repo)
    else:
        import httpx2

        url, token, repo = sys.argv[2], sys.argv[3], sys.argv[4]
        client = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx2.Timeout(30.0, read=900.0),
        )
        async with streamable_http_client(url, http_client=client) as (r, w):
            async with ClientSession(r, w) as s:
                out = await scenario(s, repo)
        await client.aclose()
    json.dump(out, sys.stdout)


asyncio.run(main())
