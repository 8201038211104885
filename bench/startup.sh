#!/usr/bin/env bash
# Startup latency: how long it takes to run a trivial command in a fresh
# sandbox, for Airlock and its peers, timed by hyperfine.
#
# Two workloads, one hyperfine run (one table) each:
#   true    /bin/true
#   python  /usr/bin/python3 -c 'print(1)'
#
# Every peer is first run once; one that fails is listed as
# "failed: <reason>" and left out of the hyperfine run rather than dropped
# silently. Ratios are to bwrap's mean (and, less sensitive to stray slow
# runs on a busy host, to its median); airlock/bwrap is the headline
# (goal: <= 1.0).
#
# Usage: bash bench/startup.sh
# Env:   WARMUP (default 20), RUNS (default 200), RESULTS_DIR (default
#        bench/results), AIRLOCK, AIRLOCK_FLAGS (see common.sh)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WARMUP=${WARMUP:-20}
RUNS=${RUNS:-200}
RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results}
mkdir -p "$RESULTS_DIR"

command -v hyperfine >/dev/null || { log "hyperfine not found: run bench/install-peers.sh"; exit 1; }

WORK=$(mktemp -d /tmp/airlock-bench-startup.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# --- per-peer setup -------------------------------------------------------------

# Codex: `codex` on PATH is a Node launcher that execs a native binary. The
# "codex" row times the native binary, so Node's own startup is not charged
# to Codex's sandbox; "codex-npm" times the launcher as a user would run it.
# Codex's Linux sandbox (bwrap + seccomp) re-executes the binary as
# `codex-linux-sandbox`, looked up on PATH; Codex refuses to create that alias
# itself when CODEX_HOME is under /tmp, so we provide it as a symlink in a
# private bin dir.
CODEX_BIN=""
if command -v codex >/dev/null; then
    CODEX_BIN=$(find "$(npm root -g 2>/dev/null)/@openai/codex" -path '*/vendor/*/bin/codex' \
        -type f -perm -u+x 2>/dev/null | head -n1 || true)
    [ -n "$CODEX_BIN" ] || CODEX_BIN=$(command -v codex)   # fall back to the launcher
    export CODEX_HOME=$WORK/codex-home
    mkdir -p "$CODEX_HOME" "$WORK/bin"
    ln -sf "$CODEX_BIN" "$WORK/bin/codex-linux-sandbox"
    export PATH=$WORK/bin:$PATH
fi

# sandbox-runtime: refuses an incomplete settings file and otherwise reads
# ~/.srt-settings.json, so give it an explicit, fully restrictive one: no
# network domains, no writable paths.
SRT_SETTINGS=$WORK/srt-settings.json
cat >"$SRT_SETTINGS" <<'EOF'
{
  "network":    { "allowedDomains": [], "deniedDomains": [] },
  "filesystem": { "denyRead": [], "allowWrite": [], "denyWrite": [] }
}
EOF

# --- the peers ------------------------------------------------------------------
# Each peer is a name and a command prefix; the workload is appended to it.
PEER_NAMES=()
declare -A PEER_PREFIX=()   # name -> shell-quoted prefix ("" for plain)
declare -A PEER_BIN=()      # name -> binary that must exist

add_peer() {   # add_peer NAME BINARY [PREFIX WORDS...]
    local name=$1 bin=$2; shift 2
    PEER_NAMES+=("$name")
    PEER_BIN[$name]=$bin
    PEER_PREFIX[$name]=""
    if [ $# -gt 0 ]; then PEER_PREFIX[$name]=$(printf '%q ' "$@"); fi
}

add_peer plain    /bin/true
add_peer airlock  "$AIRLOCK" "${AIRLOCK_RUN[@]}"
add_peer bwrap    bwrap      "${BWRAP_RUN[@]}"
add_peer unshare  unshare    unshare -Urpmn --fork
add_peer codex    "${CODEX_BIN:-codex}" "${CODEX_BIN:-codex}" sandbox --
add_peer codex-npm codex     codex sandbox --     # the npm launcher as installed: + Node startup
add_peer srt      srt        srt --settings "$SRT_SETTINGS" --
add_peer firejail firejail   firejail --noprofile --net=none --quiet
add_peer runsc    runsc      runsc --rootless --network=none --platform=ptrace 'do'

# Print the exact command lines once, so results can be reproduced by hand.
echo "## Command lines (WORKLOAD = the timed command)"
for name in "${PEER_NAMES[@]}"; do
    printf '  %-9s %sWORKLOAD\n' "$name" "${PEER_PREFIX[$name]}"
done
if [ -n "$CODEX_BIN" ]; then
    echo "  (codex: CODEX_HOME=<tmp>/codex-home, PATH has <tmp>/bin/codex-linux-sandbox -> $CODEX_BIN)"
fi
echo "  (srt settings file: $(tr -s ' \n' ' ' <"$SRT_SETTINGS"))"
echo

# preflight NAME CMDLINE EXPECTED_STDOUT: run once; on failure print a reason.
preflight() {
    local name=$1 cmd=$2 expect=$3 out rc=0
    if ! command -v "${PEER_BIN[$name]}" >/dev/null 2>&1; then
        echo "not installed (${PEER_BIN[$name]})"; return 1
    fi
    out=$(cd "$WORK" && timeout 60 bash -c "$cmd" 2>"$WORK/err" </dev/null) || rc=$?
    if [ "$rc" -ne 0 ]; then
        local why
        why=$(grep -v '^\s*$' "$WORK/err" | grep -v '^WARNING' | tail -n1 | cut -c1-160 || true)
        [ "$rc" -eq 124 ] && why="timed out after 60s"
        echo "exit $rc${why:+: $why}"; return 1
    fi
    if [ -n "$expect" ] && [ "$out" != "$expect" ]; then
        echo "unexpected output: '$(head -c 80 <<<"$out")'"; return 1
    fi
}

# bench WORKLOAD_NAME EXPECTED_STDOUT WORKLOAD...: one hyperfine run + table.
bench() {
    local wname=$1 expect=$2 label=$3; shift 3
    local workload json failed args=() name cmd why
    workload=$(printf '%q ' "$@"); workload=${workload% }
    json=$RESULTS_DIR/startup-$wname.json
    failed=$WORK/failed-$wname.txt; : >"$failed"

    for name in "${PEER_NAMES[@]}"; do
        if [ "$name" = plain ]; then cmd=$workload; else cmd="${PEER_PREFIX[$name]}$workload"; fi
        if why=$(preflight "$name" "$cmd" "$expect"); then
            args+=(--command-name "$name" "$cmd")
        else
            printf '%s\t%s\n' "$name" "$why" >>"$failed"
        fi
    done

    echo "## Startup: $label   (hyperfine -N --warmup $WARMUP --runs $RUNS)"
    # hyperfine's own report goes to stderr; the summary table to stdout.
    # --ignore-failure keeps one flaky run from aborting the whole table; the
    # exit codes are in the JSON and failed runs are counted in the table.
    hyperfine -N --ignore-failure --style basic --warmup "$WARMUP" --runs "$RUNS" \
        --export-json "$json" "${args[@]}" >&2
    "$PYTHON" - "$json" "$failed" "${PEER_NAMES[@]}" <<'PY'
import json, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
failed = dict(l.rstrip("\n").split("\t", 1) for l in open(sys.argv[2]) if l.strip())
ref = res.get("bwrap")
# The ratio asked for is of means. On a busy host a few stalled runs can drag
# a mean far off, so the median and its ratio are shown too.
print(f"{'peer':<10} {'mean ± stddev (ms)':>20} {'med (ms)':>9} {'min (ms)':>9} {'mean/bwrap':>11} {'median/bwrap':>13}")
for name in sys.argv[3:]:           # keep the peers in their declared order
    if name in failed:
        print(f"{name:<10} failed: {failed[name]}")
        continue
    r = res[name]
    q_mean = f"{r['mean'] / ref['mean']:.2f}x" if ref else "n/a"
    q_med = f"{r['median'] / ref['median']:.2f}x" if ref else "n/a"
    ms = f"{r['mean']*1e3:.2f} ± {r['stddev']*1e3:.2f}"
    bad = sum(1 for c in r.get("exit_codes", []) if c != 0)
    note = f"  ({bad}/{len(r['exit_codes'])} runs exited non-zero)" if bad else ""
    print(f"{name:<10} {ms:>20} {r['median']*1e3:>9.2f} {r['min']*1e3:>9.2f} {q_mean:>11} {q_med:>13}{note}")
if "airlock" in res and ref:
    a = res["airlock"]
    q = a["mean"] / ref["mean"]
    qm = a["median"] / ref["median"]
    verdict = "MEETS" if q <= 1.0 else "DOES NOT MEET"
    print(f"\nheadline: airlock/bwrap = {q:.2f} (mean), {qm:.2f} (median) -> {verdict} the goal (<= 1.0)")
    noisy = [n for n, r in (("airlock", a), ("bwrap", ref)) if r["stddev"] > 0.5 * r["mean"]]
    if noisy or (q <= 1.0) != (qm <= 1.0):
        print(f"warning: noisy run ({', '.join(noisy) or 'mean and median disagree'}); rerun on a quieter host")
else:
    print("\nheadline: airlock/bwrap = n/a (airlock or bwrap did not run)")
PY
    echo
}

bench true   ""  "/bin/true"                          /bin/true
bench python "1" "/usr/bin/python3 -c 'print(1)'"    "$PYTHON" -c 'print(1)'
echo "JSON: $RESULTS_DIR/startup-true.json, $RESULTS_DIR/startup-python.json"
