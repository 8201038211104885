#!/usr/bin/env bash
# The core as a library, with one running container sandbox: the round trip
# of /bin/true through the API (start, Started, Exited), and stdout
# throughput of 1 GiB through the agent's channel against a plain pipe in
# the same run. Beside them, `airlock run -- /bin/true` end to end.
#
# Goals: round-trip p50 <= 1 ms; channel/pipe throughput >= 0.5.
#
# Usage: bash bench/exec.sh      (as root)
# Env:   N (round trips, default 500), MIB (default 1024), AIRLOCK
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_DIR"
[ "$(id -u)" = 0 ] || { log "run as root (root-run container sandboxes)"; exit 1; }
if ! has_airlock; then AIRLOCK=$(bash scripts/build-release.sh); fi
target="$(uname -m)-unknown-linux-gnu"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release -q -p airlock-cli --example exec_bench --target "$target" >&2
"target/$target/release/examples/exec_bench" "$AIRLOCK" "${N:-500}" "${MIB:-1024}"
if command -v hyperfine >/dev/null; then
    hyperfine -N --warmup 20 --runs 200 --style basic "$AIRLOCK run -- /bin/true" 2>/dev/null |
        sed -n 's/^ *Time (mean ± σ): */airlock run -- \/bin\/true end to end: /p'
fi
