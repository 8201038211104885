#!/usr/bin/env bash
# Transparent egress and start-up: does the feature cost `airlock run --
# /bin/true` (network `none`, the default) anything, and what does a sandbox
# with a network (proxy ports, DNS stub, the pool's route) cost to start?
#
# One hyperfine run, four commands, ratios to bwrap (the reference of every
# bench here) measured in the same run:
#   bwrap            the minimal bubblewrap sandbox of common.sh
#   base   none      BASE_AIRLOCK run -- /bin/true  (a build without the feature)
#   airlock none     AIRLOCK run -- /bin/true
#   airlock allow    AIRLOCK run --allow-host example.test -- /bin/true
# The last starts the DNS stub and makes the pool local, but opens no
# connection (example.test is never resolved or reached).
#
# Usage: BASE_AIRLOCK=/path/to/airlock-before bash bench/transparent.sh
#        (without BASE_AIRLOCK the "base" row is left out)
# Env:   WARMUP (default 20), RUNS (default 300), AIRLOCK (see common.sh)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WARMUP=${WARMUP:-20}
RUNS=${RUNS:-300}
command -v hyperfine >/dev/null || { log "hyperfine not found: run bench/install-peers.sh"; exit 1; }
has_airlock || { log "no airlock binary at $AIRLOCK (run scripts/build-release.sh)"; exit 1; }

WORK=$(mktemp -d /tmp/airlock-bench-transparent.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

names=(bwrap)
cmds=("${BWRAP_RUN[*]} /bin/true")
if [ -n "${BASE_AIRLOCK:-}" ]; then
    names+=("base none")
    cmds+=("$BASE_AIRLOCK run -- /bin/true")
fi
names+=("airlock none" "airlock allow")
cmds+=("$AIRLOCK run -- /bin/true" "$AIRLOCK run --allow-host example.test -- /bin/true")

# Each must work before it is timed.
for c in "${cmds[@]}"; do
    $c >/dev/null 2>&1 || { log "failed: $c"; exit 1; }
done

args=()
for i in "${!cmds[@]}"; do
    args+=(--command-name "${names[$i]}" "${cmds[$i]}")
done
hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$WORK/r.json" "${args[@]}" >&2

"$PYTHON" - "$WORK/r.json" <<'EOF'
import json, statistics, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
ref = res["bwrap"]
print(f"{'command':<16} {'mean ms':>8} {'median ms':>10} {'/bwrap mean':>12} {'/bwrap median':>14}")
for name, r in res.items():
    print(f"{name:<16} {r['mean']*1e3:8.2f} {r['median']*1e3:10.2f} "
          f"{r['mean']/ref['mean']:12.2f} {r['median']/ref['median']:14.2f}")
if "base none" in res:
    b, n = res["base none"], res["airlock none"]
    print(f"airlock none / base none: mean {n['mean']/b['mean']:.3f}, median {n['median']/b['median']:.3f}")
EOF

# On a busy host the hyperfine rows drift (each command's runs come one
# after the other): an interleaved A/B as well, base and new alternating
# run by run, medians of each.
if [ -n "${BASE_AIRLOCK:-}" ]; then
    "$PYTHON" - "$BASE_AIRLOCK" "$AIRLOCK" "$RUNS" <<'EOF'
import statistics, subprocess, sys, time
base, new, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = {"base": [], "new": []}
for i in range(runs):
    order = [("base", base), ("new", new)] if i % 2 == 0 else [("new", new), ("base", base)]
    for name, exe in order:
        s = time.perf_counter()
        subprocess.run([exe, "run", "--", "/bin/true"], check=True)
        t[name].append(time.perf_counter() - s)
b, n = statistics.median(t["base"]), statistics.median(t["new"])
print(f"interleaved ({runs} pairs): base none median {b*1e3:.2f} ms, airlock none median {n*1e3:.2f} ms, ratio {n/b:.3f}")
EOF
fi
