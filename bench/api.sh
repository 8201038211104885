#!/usr/bin/env bash
# The sandbox service, measured through its REST API on a unix socket:
#   - exec round trip of /bin/true into a running container sandbox (goal
#     p50 <= 2 ms), with `airlock run -- /bin/true` end to end beside it;
#   - create to first exec, from the warm pool (goal p50 <= 5 ms) and cold;
#   - create + destroy per second;
#   - host memory per idle sandbox with HOLD of them at once (goal <= 2 MiB
#     each, the daemon included): proportional set size (Pss) of the daemon
#     and every agent;
#   - beside them, in the same run: bwrap running /bin/true, and docker /
#     podman run of /bin/true where installed.
#
# Usage: bash bench/api.sh        (as root)
# Env:   N (round trips, default 300), HOLD (default 1000), AIRLOCK
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_DIR"
[ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }
if ! has_airlock; then AIRLOCK=$(bash scripts/build-release.sh); fi
SERVE=$(dirname "$AIRLOCK")/airlock-serve
[ -x "$SERVE" ] || { log "no $SERVE: build with scripts/build-release.sh"; exit 1; }
WORK=$(mktemp -d /tmp/airlock-bench-api.XXXXXX)
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
"$SERVE" --socket "$WORK/airlock.sock" --state-dir "$WORK/state" --warm 4 2>"$WORK/serve.log" &
PID=$!
for _ in $(seq 100); do [ -S "$WORK/airlock.sock" ] && break; sleep 0.1; done
/usr/bin/python3 - "$WORK/airlock.sock" "$AIRLOCK" "$PID" "${N:-300}" "${HOLD:-1000}" <<'PY'
import http.client, json, os, socket, statistics, subprocess, sys, time
sock, airlock, daemon, n, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

class Conn(http.client.HTTPConnection):
    def __init__(self):
        super().__init__("airlock")
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sock)

conn = Conn()
def req(method, path, body=None):
    global conn
    h = {"content-type": "application/json"} if body is not None else {}
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None, h)
        r = conn.getresponse()
        data = r.read()
    except (http.client.HTTPException, OSError):
        conn = Conn()
        conn.request(method, path, json.dumps(body) if body is not None else None, h)
        r = conn.getresponse()
        data = r.read()
    return r.status, data

def create(body=None):
    s, d = req("POST", "/v1/sandboxes", body if body is not None else {})
    assert s == 201, d
    return json.loads(d)["id"]

def exec_true(sid):
    s, d = req("POST", f"/v1/sandboxes/{sid}/processes", {"argv": ["/bin/true"]})
    assert s == 200 and b'"exit"' in d, d

def pct(v, q):
    v = sorted(v)
    return v[int((len(v) - 1) * q)] * 1e3

# Wait for the pool.
for _ in range(300):
    s, m = req("GET", "/metrics")
    if b"airlock_pool_ready 4" in m:
        break
    time.sleep(0.1)

sid = create({"labels": {"bench": "rt"}})
for _ in range(20):
    exec_true(sid)
rt = []
for _ in range(n):
    t = time.perf_counter(); exec_true(sid); rt.append(time.perf_counter() - t)
print(f"exec round trip of /bin/true via the REST API: p50 {pct(rt,.5):.2f} ms  p90 {pct(rt,.9):.2f} ms  (n={n}; goal p50 <= 2 ms)")

runs = []
for _ in range(100):
    t = time.perf_counter(); subprocess.run([airlock, "run", "--", "/bin/true"], check=True); runs.append(time.perf_counter() - t)
print(f"airlock run -- /bin/true end to end: p50 {pct(runs,.5):.2f} ms")
bw = []
for _ in range(100):
    t = time.perf_counter()
    subprocess.run(["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
                    "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                    "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "/bin/true"], check=True)
    bw.append(time.perf_counter() - t)
print(f"bwrap /bin/true (same run): p50 {pct(bw,.5):.2f} ms")
for eng in ["docker", "podman"]:
    if subprocess.run(["sh", "-c", f"command -v {eng}"], capture_output=True).returncode == 0:
        e = []
        for _ in range(10):
            t = time.perf_counter()
            r = subprocess.run([eng, "run", "--rm", "--network=none", "debian:bookworm", "/bin/true"], capture_output=True)
            e.append(time.perf_counter() - t)
        print(f"{eng} run /bin/true: p50 {pct(e,.5):.0f} ms" + ("" if r.returncode == 0 else " (failed)"))
    else:
        print(f"{eng}: not installed")

# Create to first exec: warm pool (default spec) and cold (a label).
warm, cold = [], []
for i in range(20):
    t = time.perf_counter(); s = create(); exec_true(s); warm.append(time.perf_counter() - t)
    req("DELETE", f"/v1/sandboxes/{s}")
    time.sleep(0.15)  # let the pool refill
    t = time.perf_counter(); s = create({"labels": {"cold": str(i)}}); exec_true(s); cold.append(time.perf_counter() - t)
    req("DELETE", f"/v1/sandboxes/{s}")
print(f"create to first exec, warm pool: p50 {pct(warm,.5):.2f} ms (goal <= 5 ms); cold: p50 {pct(cold,.5):.2f} ms")

t = time.perf_counter(); k = 0
while time.perf_counter() - t < 5:
    s = create({"labels": {"churn": "1"}}); req("DELETE", f"/v1/sandboxes/{s}"); k += 1
print(f"create + destroy: {k / (time.perf_counter() - t):.1f} per second")

def pss(pid):
    try:
        for l in open(f"/proc/{pid}/smaps_rollup"):
            if l.startswith("Pss:"):
                return int(l.split()[1])
    except OSError:
        pass
    return 0

def agents():
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            st = open(f"/proc/{p}/stat").read()
        except OSError:
            continue
        if "(airlock-agent)" in st:
            out.append(int(p))
    return out

base = pss(daemon) + sum(pss(p) for p in agents())
ids = []
t = time.perf_counter()
for i in range(hold):
    ids.append(create({"labels": {"hold": "1"}}))
took = time.perf_counter() - t
time.sleep(1)
total = pss(daemon) + sum(pss(p) for p in agents())
per = (total - base) / hold / 1024
print(f"{hold} idle sandboxes held (created in {took:.1f} s): {per:.2f} MiB each (Pss of the daemon and agents; goal <= 2 MiB)")
for s in ids:
    req("DELETE", f"/v1/sandboxes/{s}")
PY
