"""The examples of docs/sdk.md run, and print what the document says.

Each ```python block that a ```text block follows is run (a fresh
interpreter, the service found through AIRLOCK_SOCKET) and its output is
compared with that text."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import List, Tuple

import pytest

from conftest import REPO, Daemon

DOC = REPO / "docs" / "sdk.md"


def examples() -> List[Tuple[int, str, str]]:
    text = DOC.read_text()
    out = []
    for m in re.finditer(r"```python\n(.*?)```\n\s*```text\n(.*?)```", text, re.S):
        line = text.count("\n", 0, m.start()) + 1
        out.append((line, m.group(1), m.group(2)))
    return out


def test_there_are_examples() -> None:
    assert len(examples()) >= 8


@pytest.mark.parametrize("line,code,want", examples(), ids=[f"line{e[0]}" for e in examples()])
def test_example(daemon: Daemon, line: int, code: str, want: str) -> None:
    env = dict(os.environ)
    env["AIRLOCK_SOCKET"] = daemon.socket
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, f"docs/sdk.md line {line}:\n{r.stderr}"
    assert r.stdout == want, f"docs/sdk.md line {line}"
