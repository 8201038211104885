#!/usr/bin/env bash
# What TLS termination costs (credential brokering, --inspect-host), on
# loopback, in one run: the same HTTPS traffic from inside `airlock run`
# through the proxy to a name it only tunnels (CONNECT relay, unchanged by
# the broker) and to a name whose TLS it terminates (--inspect-host: TLS
# answered with the sandbox's CA, TLS of its own upstream, every request
# parsed):
#   - a SIZE_MB MiB HTTPS download by curl (ratio terminated/tunnelled);
#   - N requests on one kept-alive HTTPS connection (Python http.client
#     through CONNECT): p50 and p90 per request;
#   - M new HTTPS connections, one request each (two handshakes instead
#     of one when terminated).
# The server is a small Python HTTPS server on 127.0.0.1 with a
# certificate from a CA made here (given to the proxy with --upstream-ca,
# and to the tunnelled client with --cacert / cafile).
#
# Usage: bash bench/egress-broker.sh        (as root or not)
# Env:   N (default 300), M (default 100), SIZE_MB (default 256), AIRLOCK
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_DIR"
if ! has_airlock; then AIRLOCK=$(bash scripts/build-release.sh); fi
N=${N:-300}
M=${M:-100}
SIZE_MB=${SIZE_MB:-256}
WORK=$(mktemp -d /tmp/airlock-bench-broker.XXXXXX)
chmod 755 "$WORK"
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout srv.key -out srv.csr -subj /CN=bench.test 2>/dev/null
printf 'subjectAltName=DNS:tunnel.test,DNS:term.test\n' >san.cnf
openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out srv.pem -days 2 -extfile san.cnf 2>/dev/null
chmod 644 ca.pem srv.pem
cd "$REPO_DIR"

# The server: HTTP/1.1 keep-alive over TLS; /big sends SIZE_MB MiB.
cat >"$WORK/server.py" <<'PY'
import socket, ssl, sys, threading
size = int(sys.argv[1]) << 20
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[3] + '/srv.pem', sys.argv[3] + '/srv.key')
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('127.0.0.1', 0))
l.listen(512)
open(sys.argv[2], 'w').write(str(l.getsockname()[1]))
chunk = b'\0' * (1 << 20)
def serve(c):
    try:
        c = ctx.wrap_socket(c, server_side=True)
        buf = b''
        while True:
            while b'\r\n\r\n' not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            head, buf = buf.split(b'\r\n\r\n', 1)
            if head.split(b' ')[1] == b'/big':
                c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n' % size)
                left = size
                while left:
                    n = min(left, len(chunk))
                    c.sendall(chunk[:n])
                    left -= n
            else:
                c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
    except (OSError, ssl.SSLError):
        pass
    finally:
        c.close()
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
"$PYTHON" "$WORK/server.py" "$SIZE_MB" "$WORK/port" "$WORK" &
PID=$!
for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.05; done
PORT=$(cat "$WORK/port")
NET=(--allow-host tunnel.test --allow-host term.test --allow-host "127.0.0.1/32:$PORT"
    --dns-override tunnel.test=127.0.0.1 --dns-override term.test=127.0.0.1
    --inspect-host term.test --upstream-ca "$WORK/ca.pem" --mount "$WORK:/bench:ro")

# The request client, inside: HOST PORT N M CAFILE -> "ka ms" and "new ms" lines.
cat >"$WORK/req.py" <<'PY'
import http.client, ssl, sys, time
host, port, n, m, cafile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ctx = ssl.create_default_context(cafile=cafile or None)
def conn():
    c = http.client.HTTPSConnection('127.0.0.1', 3128, context=ctx)
    c.set_tunnel(host, port)
    return c
c = conn()
for i in range(n + 10):
    t = time.perf_counter()
    c.request('GET', '/small')
    r = c.getresponse()
    assert r.read() == b'ok'
    if i >= 10:
        print('ka %.4f' % ((time.perf_counter() - t) * 1000))
c.close()
for i in range(m + 5):
    t = time.perf_counter()
    c = conn()
    c.request('GET', '/small')
    assert c.getresponse().read() == b'ok'
    c.close()
    if i >= 5:
        print('new %.4f' % ((time.perf_counter() - t) * 1000))
PY

log "download: ${SIZE_MB} MiB tunnelled, then terminated"
tun=$("$AIRLOCK" run -q "${NET[@]}" -- curl -sS --cacert /bench/ca.pem -o /dev/null -w '%{time_total}' "https://tunnel.test:$PORT/big")
term=$("$AIRLOCK" run -q "${NET[@]}" -- curl -sS -o /dev/null -w '%{time_total}' "https://term.test:$PORT/big")
log "requests: $N kept-alive and $M new connections, tunnelled then terminated"
"$AIRLOCK" run -q "${NET[@]}" -- "$PYTHON" /bench/req.py tunnel.test "$PORT" "$N" "$M" /bench/ca.pem >"$WORK/req-tunnel"
"$AIRLOCK" run ${VERBOSE:+--verbose} -q "${NET[@]}" -- sh -c "$PYTHON /bench/req.py term.test $PORT $N $M \"\"" >"$WORK/req-term"

"$PYTHON" - "$SIZE_MB" "$tun" "$term" "$WORK/req-tunnel" "$WORK/req-term" <<'PY'
import sys
mb, tu, te = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
def load(p, kind):
    return sorted(float(l.split()[1]) for l in open(p) if l.startswith(kind + ' '))
def pct(v, q):
    return v[min(len(v) - 1, int(q * len(v)))]
kt, kT = load(sys.argv[4], 'ka'), load(sys.argv[5], 'ka')
nt, nT = load(sys.argv[4], 'new'), load(sys.argv[5], 'new')
print(f"## Egress TLS termination ({mb} MiB HTTPS download, {len(kt)} kept-alive requests, {len(nt)} new connections; loopback)")
print()
print("| path | download | throughput | kept-alive p50 | p90 | new connection p50 | p90 |")
print("|---|---|---|---|---|---|---|")
print(f"| tunnelled (CONNECT relay) | {tu:.2f} s | {mb / tu:.0f} MiB/s | {pct(kt, .5):.3f} ms | {pct(kt, .9):.3f} ms | {pct(nt, .5):.3f} ms | {pct(nt, .9):.3f} ms |")
print(f"| terminated (--inspect-host) | {te:.2f} s | {mb / te:.0f} MiB/s | {pct(kT, .5):.3f} ms | {pct(kT, .9):.3f} ms | {pct(nT, .5):.3f} ms | {pct(nT, .9):.3f} ms |")
print()
print(f"throughput ratio terminated/tunnelled: {tu / te:.2f}")
print(f"added per request, kept alive (p50): {pct(kT, .5) - pct(kt, .5):.3f} ms")
print(f"added per new connection (p50): {pct(nT, .5) - pct(nt, .5):.3f} ms")
PY
