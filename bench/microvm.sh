#!/usr/bin/env bash
# The microVM tier's start: cold boot to first exec vs restore from the
# template snapshot to first exec, beside peers measured in the same run
# (bwrap, a namespace sandbox; gVisor's runsc on its ptrace platform, a
# user-space kernel), timed by hyperfine; and the host memory of one idle
# microVM (QEMU's RSS, beside the guest's RAM size). The accelerator is
# named (KVM, or TCG: software emulation).
#
# Usage: bash bench/microvm.sh            (as root)
# Env:   AIRLOCK (default: the release build, see common.sh),
#        COLD_RUNS (default 3), RUNS (default 10)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

COLD_RUNS=${COLD_RUNS:-3}
RUNS=${RUNS:-10}
command -v hyperfine >/dev/null || { log "hyperfine not found: run bench/install-peers.sh"; exit 1; }
has_airlock || { log "no airlock at $AIRLOCK (build it, or set AIRLOCK)"; exit 1; }

WORK=$(mktemp -d /tmp/airlock-bench-microvm.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# One run first: builds the caches (initramfs, host image, template) and
# says the accelerator.
accel=$("$AIRLOCK" run --isolation microvm -- true 2>&1 >/dev/null | sed -n 's/.*microVM accelerator: \([A-Z]*\).*/\1/p' | head -1)
log "accelerator: ${accel:-unknown}"

hyperfine -N --runs "$COLD_RUNS" --export-json "$WORK/cold.json" \
    --command-name "airlock microvm cold boot ($accel)" "env AIRLOCK_VM_COLD=1 $AIRLOCK run --isolation microvm -- /bin/true" >&2

peers=(--command-name "airlock microvm restore ($accel)" "$AIRLOCK run --isolation microvm -- /bin/true")
# The same with a repository (this checkout's crates/, no build output)
# mounted as an overlay: the per-sandbox copy into the mounts disk.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../crates" && pwd)
repo_mib=$(du -sm "$REPO" | cut -f1)
peers+=(--command-name "airlock microvm restore + ${repo_mib}M overlay" "$AIRLOCK run --isolation microvm -v $REPO:/work:overlay -- /bin/true")
peers+=(--command-name "airlock container" "$AIRLOCK run -- /bin/true")
if command -v bwrap >/dev/null; then
    peers+=(--command-name "bwrap" "bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --symlink usr/lib /lib --symlink usr/lib64 /lib64 --symlink usr/bin /bin --proc /proc --dev /dev --tmpfs /tmp /bin/true")
fi
if command -v runsc >/dev/null; then
    peers+=(--command-name "runsc ptrace" "runsc --rootless --network=none --platform=ptrace --root=$WORK/runsc do /bin/true")
fi
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$WORK/warm.json" "${peers[@]}" >&2

# Host memory of one idle microVM.
"$AIRLOCK" run --isolation microvm -- sh -c 'echo up; sleep 30' > "$WORK/out" 2>/dev/null &
apid=$!
for _ in $(seq 1 600); do grep -q up "$WORK/out" 2>/dev/null && break; sleep 0.1; done
sleep 1
qpid=$(ps -eo pid=,ppid=,comm= | awk -v p="$apid" '$2 == p && $3 ~ /qemu/ { print $1 }' | head -1)
rss_kib=$(awk '/^VmRSS/ { print $2 }' "/proc/$qpid/status")
guest_mib=$(tr '\0' ' ' < "/proc/$qpid/cmdline" | sed -n 's/.* -m \([0-9]*\)M .*/\1/p')
kill "$apid" 2>/dev/null || true
wait "$apid" 2>/dev/null || true

python3 - "$WORK/cold.json" "$WORK/warm.json" "$rss_kib" "$guest_mib" "${accel:-unknown}" <<'PY'
import json, sys
cold = json.load(open(sys.argv[1]))["results"]
warm = json.load(open(sys.argv[2]))["results"]
rss_kib, guest_mib, accel = int(sys.argv[3]), sys.argv[4], sys.argv[5]
rows = cold + warm
base = {r["command"]: r for r in rows}
restore = next(r for r in warm if "restore" in r["command"])
print(f"accelerator: {accel}")
print(f"{'':42} {'mean':>10} {'median':>10} {'vs restore':>11}")
for r in rows:
    print(f"{r['command']:42} {r['mean']*1000:8.1f}ms {r['median']*1000:8.1f}ms {r['mean']/restore['mean']:10.2f}x")
c = cold[0]
print(f"cold boot / restore (goal >= 5x): {c['mean']/restore['mean']:.2f}x (median {c['median']/restore['median']:.2f}x)")
print(f"idle microVM: QEMU RSS {rss_kib/1024:.1f} MiB for a {guest_mib} MiB guest")
PY
