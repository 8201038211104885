#!/usr/bin/env bash
# Where an OCI runtime's time goes, without an engine: the runc command
# line driven directly on one bundle (`true` in a busybox root), phase by
# phase — `create` (until the pid file is written), `start`, the process
# running and exiting (the waited-for pid: crun's and runc's init,
# airlock's monitor, which also tears the sandbox down), `delete` — for
# crun, runc and airlock-runc in one run, on a plain rootfs directory and on
# an overlay mount (what podman and containerd hand over). Medians.
#
#   bash bench/oci-phases.sh            # N=20 containers per runtime
#   N=50 bash bench/oci-phases.sh
#
# Root only. Like bench/oci.sh it runs in a private mount namespace without
# the cgroup2 mount where crun 1.8 needs that (hybrid cgroups).
set -euo pipefail
# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh"

N=${N:-20}
if [ "$(id -u)" != 0 ]; then
    echo "bench/oci-phases.sh: run as root" >&2
    exit 1
fi
if [ -z "${AIRLOCK_BENCH_OCI_V1:-}" ] && grep -q . /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null; then
    exec env AIRLOCK_BENCH_OCI_V1=1 unshare -m --propagation private /bin/sh -c \
        'umount -l /sys/fs/cgroup/unified && exec bash "$0" "$@"' "$0" "$@"
fi
if ! has_airlock; then
    log "building airlock (release)"
    AIRLOCK=$(bash "$REPO_DIR/scripts/build-release.sh")
fi

work=$(mktemp -d /var/tmp/airlock-bench-phases.XXXXXX)
cleanup() {
    umount "$work/ov-bundle/rootfs" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ln -s "$AIRLOCK" "$work/airlock-runc"
mkdir -p "$work/bundle/rootfs/bin" "$work/bundle/rootfs/tmp" "$work/bundle/rootfs/etc" \
    "$work/bundle/rootfs/dev" "$work/bundle/rootfs/proc"
cp /bin/busybox "$work/bundle/rootfs/bin/"
ln -s busybox "$work/bundle/rootfs/bin/true"
cat >"$work/bundle/config.json" <<'EOF'
{"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "hostname": "bench",
 "process": {"args": ["/bin/true"], "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0},
             "noNewPrivileges": true},
 "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
 "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}}
EOF
mkdir -p "$work/ov-bundle/rootfs" "$work/ov/upper" "$work/ov/work"
cp "$work/bundle/config.json" "$work/ov-bundle/"
mount -t overlay overlay -o "lowerdir=$work/bundle/rootfs,upperdir=$work/ov/upper,workdir=$work/ov/work" \
    "$work/ov-bundle/rootfs"

cat >"$work/phases.py" <<'EOF'
import ctypes, os, statistics, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: we reap
rt, bundle, work, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
root = os.path.join(work, "state-" + os.path.basename(rt))
pf = os.path.join(work, "pid")
ph = {k: [] for k in ["create", "start", "run+exit", "delete"]}
dn = subprocess.DEVNULL
for i in range(n + 2):
    cid = f"c{os.getpid()}-{i}"
    t = [time.monotonic()]
    subprocess.run([rt, "--root", root, "create", "--bundle", bundle, "--pid-file", pf, cid],
                   check=True, stdin=dn, stdout=dn, stderr=dn)
    t.append(time.monotonic())
    pid = int(open(pf).read())
    subprocess.run([rt, "--root", root, "start", cid], check=True, stdin=dn)
    t.append(time.monotonic())
    os.waitpid(pid, 0)
    t.append(time.monotonic())
    subprocess.run([rt, "--root", root, "delete", cid], check=True, stdin=dn)
    t.append(time.monotonic())
    if i >= 2:  # two warm-ups
        for k, a, b in zip(ph, t, t[1:]):
            ph[k].append((b - a) * 1000)
med = {k: statistics.median(v) for k, v in ph.items()}
print("| " + " | ".join([os.path.basename(rt)] + [f"{med[k]:.1f}" for k in ph] + [f"{sum(med.values()):.1f}"]) + " |")
EOF

for b in bundle ov-bundle; do
    printf '\n%s (%s containers each, medians, ms)\n\n' \
        "$([ "$b" = bundle ] && echo 'plain rootfs directory' || echo 'overlay rootfs')" "$N"
    printf '| runtime | create | start | run+exit | delete | total |\n|---|---|---|---|---|---|\n'
    for r in /usr/bin/crun /usr/sbin/runc "$work/airlock-runc"; do
        if [ -x "$r" ]; then
            "$PYTHON" "$work/phases.py" "$r" "$work/$b" "$work" "$N" || echo "| $(basename "$r") | failed | | | | |"
        fi
    done
done
printf '\n(load average: %s)\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
