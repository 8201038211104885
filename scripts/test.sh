#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit tests and the
# integration tests (which run the real binary as root and as the
# unprivileged user airlock-test). Sets the machine up first (idempotent).
# In CI (CI=true), privileged tests may not skip: AIRLOCK_TEST_MUST_RUN=1.
set -euo pipefail
cd "$(dirname "$0")/.."
AIRLOCK_SETUP_NO_INSTALL=1 bash scripts/setup.sh
if [ "${CI:-}" = true ]; then
    export AIRLOCK_TEST_MUST_RUN=1
fi
for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
    [ -d "$d" ] && export PATH="$d:$PATH"
done
cargo fmt --all -- --check
cargo clippy --all-targets -q -- -D warnings
cargo test --workspace 2>&1
