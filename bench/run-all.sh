#!/usr/bin/env bash
# Run every benchmark and write the results to docs/benchmarks.md.
#
#   1. bench/install-peers.sh   (peers to compare against; idempotent)
#   2. scripts/build-release.sh (the static release binary, as shipped)
#   3. bench/startup.sh, bench/memory.sh, bench/concurrent.sh
#
# A step that fails is recorded in the page and the run goes on, so one
# broken peer or benchmark does not lose the others' numbers.
#
# Usage: bash bench/run-all.sh
# Env:   CONCURRENT_N (default 500), WARMUP/RUNS (see startup.sh),
#        AIRLOCK, AIRLOCK_FLAGS (see common.sh)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_DIR"

OUT=$REPO_DIR/docs/benchmarks.md
N=${CONCURRENT_N:-500}
WORK=$(mktemp -d /tmp/airlock-bench-all.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# step NAME CMD...: run CMD, stdout to $WORK/NAME.out and the terminal,
# stderr to the terminal only; never fails, notes a non-zero exit status.
step() {
    local name=$1 rc=0; shift
    log "running: $*"
    "$@" | tee "$WORK/$name.out" || rc=$?
    [ "$rc" -eq 0 ] || echo "(exited with status $rc)" | tee -a "$WORK/$name.out"
}

step peers bash "$BENCH_DIR/install-peers.sh"

log "building airlock (release, static)"
build_note="built \`$AIRLOCK\` with \`scripts/build-release.sh\` (static, crt-static)"
if ! bash "$REPO_DIR/scripts/build-release.sh" >"$WORK/build.log" 2>&1; then
    build_note="**the release build failed**; airlock rows below show why it did not run. Last lines of the build log:"$'\n\n```\n'"$(tail -n 15 "$WORK/build.log")"$'\n```'
    log "cargo build failed (see docs/benchmarks.md)"
fi
airlock_version=$("$AIRLOCK" --version 2>/dev/null || echo "not available")

step startup    bash "$BENCH_DIR/startup.sh"
step memory     bash "$BENCH_DIR/memory.sh"
step concurrent bash "$BENCH_DIR/concurrent.sh" "$N"
step oci        bash "$BENCH_DIR/oci.sh"

# --- the page ----------------------------------------------------------------
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
os=$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-unknown}")
commit=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=""
if [ -n "$(git -C "$REPO_DIR" status --porcelain 2>/dev/null)" ]; then dirty=" (with uncommitted changes)"; fi

fence() { echo '```'; cat "$WORK/$1.out"; echo '```'; }

{
cat <<EOF
# Benchmarks

Airlock compared with other ways to sandbox a command on Linux. Every number
on this page comes from the scripts in \`bench/\`; rerun them all with

    bash bench/run-all.sh            # CONCURRENT_N=100 for a quicker density run

which installs the peers (\`bench/install-peers.sh\`), builds Airlock in
release mode and rewrites this page. Each benchmark also runs on its own
(\`bash bench/startup.sh\`, \`bash bench/memory.sh\`, \`bash bench/concurrent.sh [N]\`).
hyperfine's raw JSON is kept in \`bench/results/\` (not committed).

What each one measures:

- **Startup** (\`bench/startup.sh\`): wall time to run \`/bin/true\`, then
  \`python3 -c 'print(1)'\`, in a fresh sandbox, with hyperfine
  (\`-N\`: no shell in between; 20 warm-up runs, 200 timed runs). Peers: no
  sandbox, Airlock, bubblewrap, \`unshare\`, Codex's Linux sandbox (its
  native binary, and \`codex-npm\`: the npm launcher, which adds Node's
  startup), Anthropic's sandbox-runtime (\`srt\`), firejail and gVisor
  (\`runsc\`). Ratios are to bubblewrap's mean (and median, which stray
  slow runs on a busy host move less); the goal is airlock/bwrap <= 1.0. A
  peer that cannot run here is listed as failed with the reason.
- **Memory** (\`bench/memory.sh\`): RSS and PSS of the runtime's own processes
  (the host-side process and the sandbox's init/agent, not the workload)
  while \`sleep 30\` runs inside. Goal for Airlock: <= 4 MiB RSS in total.
  PSS counts shared pages (libc, the binary) divided among their users, so it
  is the better measure of what one more sandbox costs.
- **Density** (\`bench/concurrent.sh\`): $N sandboxes started at once, each
  running \`sleep 30\`: the wall time until all are running, and the drop in
  the host's MemAvailable per sandbox (which includes the kernel's cost of
  the namespaces and the workload itself; the plain-\`sleep\` row is that
  workload alone).
- **OCI runtimes** (\`bench/oci.sh\`): \`podman run --rm IMAGE true\` with
  \`--runtime\` runc, crun, runsc (\`--platform=ptrace\`) and airlock-runc,
  and \`ctr run --rm\` with \`--runc-binary\` runc and airlock-runc, in one
  run (hyperfine -N); ratios to crun, else runc, else runsc. The goal:
  airlock within 1.1x of crun, far ahead of runsc.

## Machine and build

- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- kernel: $(uname -r) ($(uname -m))
- CPU: $cpu, $(nproc) cores; memory: $mem
- OS: $os
- airlock: $airlock_version, commit $commit$dirty; $build_note

Numbers from a shared 2-core VM are noisy, the density run's memory figures
most of all; compare ratios from the same run rather than absolute values
across runs.

## Peers

EOF
fence peers
echo
echo "## Startup"
echo
fence startup
echo
echo "## Memory"
echo
fence memory
echo
echo "## Density ($N concurrent sandboxes)"
echo
fence concurrent
echo
echo "## OCI runtimes"
echo
fence oci
} >"$WORK/benchmarks.md"

mkdir -p "$(dirname "$OUT")"
mv "$WORK/benchmarks.md" "$OUT"
log "wrote $OUT"
