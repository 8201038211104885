//! The Python SDK (`sdk/python`) against a real service: runs its pytest
//! suite (sync and async) with the venv that `scripts/setup.sh` made
//! (`/opt/airlock-sdk-venv`: httpx, websockets, pytest, pytest-asyncio and
//! the SDK installed from `sdk/python`). The suite starts `airlock-serve`
//! itself, on a socket and a loopback TCP port with a token, under a
//! temporary directory of its own.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const VENV_PYTHON: &str = "/opt/airlock-sdk-venv/bin/python";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn python_sdk_pytest_suite() {
    if !is_root() {
        skip("the SDK tests run the service as root");
        return;
    }
    if !Path::new(VENV_PYTHON).exists() {
        skip("no /opt/airlock-sdk-venv (run scripts/setup.sh)");
        return;
    }
    let sdk = repo().join("sdk/python");
    // The service binary built with this test, from beside the copied CLI.
    let serve = bin().with_file_name("airlock-serve");
    let mut c = Command::new(VENV_PYTHON);
    c.args([
        "-m",
        "pytest",
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
        "tests",
    ])
    .current_dir(&sdk)
    .env("AIRLOCK_SERVE_BIN", &serve)
    // This source tree, not a stale install (one test checks the
    // installed package on its own).
    .env("PYTHONPATH", sdk.join("src"))
    .env("PYTHONDONTWRITEBYTECODE", "1")
    .env_remove("AIRLOCK_SOCKET")
    .env_remove("AIRLOCK_URL")
    .env_remove("AIRLOCK_TOKEN");
    let out = c.output().expect("run pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "the SDK's pytest suite failed");
    // Every test ran: nothing skipped, something passed.
    let last = text
        .lines()
        .rev()
        .find(|l| l.contains(" in "))
        .unwrap_or("");
    assert!(last.contains("passed"), "{last}");
    assert!(
        !last.contains("skipped") && !last.contains("error"),
        "{last}"
    );
}
