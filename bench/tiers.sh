#!/usr/bin/env bash
# Startup of each airlock tier against bubblewrap, in one hyperfine run:
# `/bin/true` in the container tier (the default), the Landlock tier
# (--isolation landlock) and the local tier (--isolation none), next to
# bwrap (common.sh's reference sandbox) and no sandbox at all. With
# AIRLOCK_BASE set to another airlock binary (e.g. main's release build),
# its container tier is timed in the same run too, so a change's cost on
# the default path shows as a ratio.
#
# Usage: bash bench/tiers.sh
# Env:   WARMUP (default 20), RUNS (default 200), AIRLOCK, AIRLOCK_BASE
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WARMUP=${WARMUP:-20}
RUNS=${RUNS:-200}
command -v hyperfine >/dev/null || { log "hyperfine not found: run bench/install-peers.sh"; exit 1; }
has_airlock || { log "no airlock binary at $AIRLOCK: run scripts/build-release.sh"; exit 1; }

WORK=$(mktemp -d /tmp/airlock-bench-tiers.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

names=(plain bwrap airlock-container airlock-landlock airlock-none)
cmds=(
    "/bin/true"
    "${BWRAP_RUN[*]} /bin/true"
    "$AIRLOCK run -q -- /bin/true"
    "$AIRLOCK run -q --isolation landlock -- /bin/true"
    "$AIRLOCK run -q --isolation none -- /bin/true"
)
if [ -n "${AIRLOCK_BASE:-}" ]; then
    names+=(base-container)
    cmds+=("$AIRLOCK_BASE run -q -- /bin/true")
fi
args=()
for i in "${!names[@]}"; do
    # Each must work before it is timed.
    # shellcheck disable=SC2086  # the command line is split on purpose
    ${cmds[$i]} 2>/dev/null || { log "${names[$i]} failed: ${cmds[$i]}"; exit 1; }
    args+=(-n "${names[$i]}" "${cmds[$i]}")
done
hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$WORK/tiers.json" "${args[@]}" >&2
/usr/bin/python3 - "$WORK/tiers.json" <<'EOF'
import json, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
ref = res["bwrap"]
print("| run | mean (ms) | median (ms) | mean / bwrap | median / bwrap |")
print("|---|---|---|---|---|")
for name, r in res.items():
    print("| %s | %.2f | %.2f | %.2fx | %.2fx |" % (
        name, r["mean"] * 1e3, r["median"] * 1e3,
        r["mean"] / ref["mean"], r["median"] / ref["median"]))
if "base-container" in res:
    a, b = res["airlock-container"], res["base-container"]
    print()
    print("container tier, this build / base: mean %.2fx, median %.2fx" % (
        a["mean"] / b["mean"], a["median"] / b["median"]))
EOF
