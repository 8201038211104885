#!/usr/bin/env bash
# The egress proxy, on loopback:
#   - throughput: a 1 GiB HTTP download by curl inside `airlock run
#     --allow-host` (through the proxy variables: the agent's listener, the
#     agent channel, the host's proxy, its dial) against the same download
#     by curl on the host, direct, in the same run (goal: ratio >= 0.5);
#     curl's own transfer time is compared, not the sandbox's start;
#   - added connect latency: N small requests, each on a new connection,
#     through the proxy from inside a sandbox against the same requests
#     direct from the host (goal: p50 difference <= 1 ms).
# The server is a small Python program on 127.0.0.1 (allowed by a CIDR
# rule, as loopback must be).
#
# Usage: bash bench/egress.sh        (as root or not)
# Env:   N (requests for the latency, default 300), SIZE_MB (default 1024),
#        AIRLOCK
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_DIR"
if ! has_airlock; then AIRLOCK=$(bash scripts/build-release.sh); fi
N=${N:-300}
SIZE_MB=${SIZE_MB:-1024}
WORK=$(mktemp -d /tmp/airlock-bench-egress.XXXXXX)
chmod 755 "$WORK"
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# The server: GET /big sends SIZE_MB MiB, anything else 2 bytes.
cat >"$WORK/server.py" <<'PY'
import socket, sys, threading
size = int(sys.argv[1]) << 20
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('127.0.0.1', 0))
l.listen(512)
open(sys.argv[2], 'w').write(str(l.getsockname()[1]))
chunk = b'\0' * (1 << 20)
def serve(c):
    with c:
        req = b''
        while b'\r\n\r\n' not in req:
            d = c.recv(4096)
            if not d:
                return
            req += d
        if req.split(b' ')[1].endswith(b'/big'):
            c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n' % size)
            left = size
            while left:
                n = min(left, len(chunk))
                c.sendall(chunk[:n])
                left -= n
        else:
            c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok')
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
"$PYTHON" "$WORK/server.py" "$SIZE_MB" "$WORK/port" &
PID=$!
for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.05; done
PORT=$(cat "$WORK/port")
NET=(--allow-host bench.test --allow-host "127.0.0.1/32:$PORT" --dns-override bench.test=127.0.0.1)

# The latency client: N requests on new connections; prints one ms value
# per line. ARGS: host port path [proxy_port]
cat >"$WORK/lat.py" <<'PY'
import socket, sys, time
host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
proxy = int(sys.argv[5]) if len(sys.argv) > 5 else 0
out = []
for i in range(n + 10):
    t = time.perf_counter()
    if proxy:
        s = socket.create_connection(('127.0.0.1', proxy))
        s.sendall(f'GET http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n'.encode())
    else:
        s = socket.create_connection((host, port))
        s.sendall(f'GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n'.encode())
    d = b''
    while True:
        x = s.recv(4096)
        if not x:
            break
        d += x
    s.close()
    assert d.endswith(b'ok'), d
    if i >= 10:
        out.append((time.perf_counter() - t) * 1000)
print('\n'.join(f'{x:.4f}' for x in out))
PY

log "throughput: ${SIZE_MB} MiB direct"
direct=$(curl -sS -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PORT/big")
log "throughput: ${SIZE_MB} MiB through the proxy"
proxied=$("$AIRLOCK" run -q "${NET[@]}" -- curl -sS -o /dev/null -w '%{time_total}' "http://bench.test:$PORT/big")
log "latency: $N requests direct, then through the proxy"
"$PYTHON" "$WORK/lat.py" 127.0.0.1 "$PORT" /small "$N" >"$WORK/lat-direct"
"$AIRLOCK" run -q "${NET[@]}" --mount "$WORK:/bench:ro" -- "$PYTHON" /bench/lat.py bench.test "$PORT" /small "$N" 3128 >"$WORK/lat-proxy"

"$PYTHON" - "$SIZE_MB" "$direct" "$proxied" "$WORK/lat-direct" "$WORK/lat-proxy" <<'PY'
import statistics, sys
mb, d, p = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
ld = sorted(float(x) for x in open(sys.argv[4]))
lp = sorted(float(x) for x in open(sys.argv[5]))
def pct(v, q):
    return v[min(len(v) - 1, int(q * len(v)))]
print(f"## Egress ({mb} MiB download, {len(ld)} requests on new connections; loopback)")
print()
print("| path | download time | throughput | request p50 | request p90 |")
print("|---|---|---|---|---|")
print(f"| direct (curl / Python on the host) | {d:.2f} s | {mb / d:.0f} MiB/s | {pct(ld, .5):.3f} ms | {pct(ld, .9):.3f} ms |")
print(f"| through the proxy (inside airlock run) | {p:.2f} s | {mb / p:.0f} MiB/s | {pct(lp, .5):.3f} ms | {pct(lp, .9):.3f} ms |")
print()
print(f"throughput ratio proxy/direct: {d / p:.2f} (goal >= 0.5)")
print(f"added request latency p50: {pct(lp, .5) - pct(ld, .5):.3f} ms (goal <= 1 ms)")
PY
