"""The package's type annotations hold: ``mypy --strict`` finds nothing."""

from __future__ import annotations

import subprocess
import sys
import tempfile

from conftest import REPO


def test_mypy_strict() -> None:
    with tempfile.TemporaryDirectory() as cache:
        r = subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", "--cache-dir", cache, "src/airlock"],
            cwd=REPO / "sdk" / "python",
            capture_output=True,
            text=True,
        )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success" in r.stdout
