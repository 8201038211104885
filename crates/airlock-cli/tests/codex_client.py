"""Drives the Codex CLI's app server (`codex app-server`, JSON-RPC over
stdio) the way its own front ends do, with no model call: it asks which
hooks and MCP servers Codex loaded from its configuration and calls one of
airlock's MCP tools through Codex. For crates/airlock-cli/tests/agents.rs,
which runs it in a network namespace of its own.

    codex_client.py COMMAND_FOR_THE_RUN_TOOL

Prints one JSON object: {"hooks": ..., "servers": ..., "call": ...}.
"""

import json
import os
import subprocess
import sys

p = subprocess.Popen(
    ["codex", "app-server"],
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    stderr=sys.stderr,
    text=True,
)


def send(o):
    p.stdin.write(json.dumps(o) + "\n")
    p.stdin.flush()


def wait(i):
    for line in p.stdout:
        m = json.loads(line)
        if m.get("id") == i:
            if "error" in m:
                raise SystemExit(f"codex app-server: {m['error']}")
            return m["result"]
    raise SystemExit("codex app-server ended")


out = {}
try:
    send({"method": "initialize", "id": 1, "params": {"clientInfo": {"name": "airlock-test", "version": "1"}}})
    wait(1)
    send({"method": "initialized"})
    send({"method": "hooks/list", "id": 2, "params": {}})
    out["hooks"] = wait(2)
    send({"method": "mcpServerStatus/list", "id": 3, "params": {}})
    out["servers"] = wait(3)
    send({"method": "thread/start", "id": 4, "params": {"cwd": os.getcwd()}})
    thread = wait(4)["thread"]["id"]
    send(
        {
            "method": "mcpServer/tool/call",
            "id": 5,
            "params": {"threadId": thread, "server": "airlock", "tool": "run", "arguments": {"command": sys.argv[1]}},
        }
    )
    out["call"] = wait(5)
finally:
    p.stdin.close()
    p.terminate()
    p.wait()
json.dump(out, sys.stdout)
