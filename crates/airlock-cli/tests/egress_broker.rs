//! Credential brokering and HTTP rules on hosts whose TLS the egress proxy
//! terminates, against a local "internet" in a network namespace the test
//! makes (as tests/egress.rs does; `airlock` runs inside that namespace, so
//! no packet leaves it): HTTPS echo servers with certificates from a test
//! CA (given to the proxy with --upstream-ca), one with a self-signed
//! certificate nobody trusts, a git smart-HTTP server (`git http-backend`
//! behind a small Python server) and a package index with a wheel the
//! server builds.
//!
//! The secret's value is generated per test and given only to airlock (its
//! environment) and to the echo server (a file outside every sandbox); the
//! checks for it are made on the host, over dumps the sandbox wrote to a
//! mounted directory (environments, process memory, files), the outputs,
//! the service's answers, its state database and its stderr.

mod common;

use common::{tempdir, Out, Who};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BOUND: &str = "93.184.216.40";
const UNBOUND: &str = "93.184.216.41";
const UNTRUSTED: &str = "93.184.216.42";
const INSPECTED: &str = "93.184.216.43";
const GIT: &str = "93.184.216.44";
const PYPI: &str = "93.184.216.45";
const DNS: &str = "93.184.216.53";

const SERVER: &str = r#"
import sys, os, ssl, socket, threading, http.server, socketserver, subprocess, base64, hashlib, zipfile, io
log_path, d, secret_dir, ready = sys.argv[1:5]
expected = open(secret_dir + '/expected').read()
lock = threading.Lock()
def log(line):
    with lock:
        with open(log_path, 'a') as f:
            f.write(line + '\n')

# The wheel of the package index, built by hand.
def wheel():
    files = {
        'airtestpkg/__init__.py': b"VALUE = 'pip-install-ok'\n",
        'airtestpkg-0.1.dist-info/METADATA': b'Metadata-Version: 2.1\nName: airtestpkg\nVersion: 0.1\n',
        'airtestpkg-0.1.dist-info/WHEEL': b'Wheel-Version: 1.0\nGenerator: airlock-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n',
    }
    rec = ''
    for n, c in files.items():
        h = base64.urlsafe_b64encode(hashlib.sha256(c).digest()).rstrip(b'=').decode()
        rec += f'{n},sha256={h},{len(c)}\n'
    rec += 'airtestpkg-0.1.dist-info/RECORD,,\n'
    files['airtestpkg-0.1.dist-info/RECORD'] = rec.encode()
    b = io.BytesIO()
    with zipfile.ZipFile(b, 'w') as z:
        for n, c in files.items():
            z.writestr(n, c)
    return b.getvalue()
WHEEL = wheel()
WHEEL_NAME = 'airtestpkg-0.1-py3-none-any.whl'

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def body(self):
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            data = b''
            while True:
                n = int(self.rfile.readline().split(b';')[0], 16)
                if n == 0:
                    while self.rfile.readline() not in (b'\r\n', b'\n', b''):
                        pass
                    return data
                data += self.rfile.read(n)
                self.rfile.readline()
        n = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(n) if n else b''
    def send(self, code, body, ctype='text/plain', extra=()):
        self.send_response(code)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)
    def any(self):
        data = self.body()
        hdrs = ''.join(f'{k}: {v}\n' for k, v in self.headers.items())
        log(f"{self.server.label} {self.command} {self.path} auth={self.headers.get('Authorization')!r} cookie={self.headers.get('Cookie')!r} body-len={len(data)}")
        p = self.path
        if p.startswith('/git/'):
            return self.git(data)
        if p.startswith('/simple/'):
            h = hashlib.sha256(WHEEL).hexdigest()
            return self.send(200, f'<html><body><a href="/files/{WHEEL_NAME}#sha256={h}">{WHEEL_NAME}</a></body></html>\n'.encode(), 'text/html')
        if p == '/files/' + WHEEL_NAME:
            return self.send(200, WHEEL, 'application/octet-stream')
        if p == '/chunked-resp':
            self.send_response(200)
            self.send_header('Transfer-Encoding', 'chunked')
            self.end_headers()
            for part in (b'first-part ', b'x' * 70000, b' last-part\n'):
                self.wfile.write(b'%x\r\n%s\r\n' % (len(part), part))
            self.wfile.write(b'0\r\n\r\n')
            return
        if p == '/close-after':
            # Answer, then close without saying so (as an idle timeout).
            self.close_connection = True
            return self.send(200, b'closing\n')
        if p.startswith('/check'):
            ok = self.headers.get('Authorization') == 'Bearer ' + expected
            return self.send(200, b'auth=match\n' if ok else b'auth=mismatch\n')
        body = f"echo {self.server.label} {self.command} {self.path} body-len={len(data)}\n{hdrs}".encode()
        self.send(200, body)
    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = any
    def git(self, data):
        pinfo, _, q = self.path[len('/git'):].partition('?')
        if pinfo.startswith('/private/'):
            a = self.headers.get('Authorization', '')
            ok = False
            if a.startswith('Basic '):
                ok = base64.b64decode(a[6:]).decode(errors='replace').split(':', 1)[-1] == expected
            if not ok:
                return self.send(401, b'auth needed\n', extra=[('WWW-Authenticate', 'Basic realm="git"')])
        env = {'GIT_PROJECT_ROOT': d + '/git', 'GIT_HTTP_EXPORT_ALL': '1', 'PATH_INFO': pinfo,
               'QUERY_STRING': q, 'REQUEST_METHOD': self.command, 'PATH': '/usr/bin:/bin',
               'CONTENT_TYPE': self.headers.get('Content-Type', ''), 'CONTENT_LENGTH': str(len(data)),
               'HOME': d, 'GIT_CONFIG_NOSYSTEM': '1', 'REMOTE_ADDR': '127.0.0.1'}
        for k in ('Git-Protocol', 'Content-Encoding'):
            if self.headers.get(k):
                env['HTTP_' + k.upper().replace('-', '_')] = self.headers[k]
        r = subprocess.run(['git', 'http-backend'], input=data, env=env, capture_output=True)
        head, _, body = r.stdout.partition(b'\r\n\r\n')
        code, ctype, extra = 200, 'application/octet-stream', []
        for line in head.split(b'\r\n'):
            k, _, v = line.decode().partition(':')
            v = v.strip()
            if k.lower() == 'status':
                code = int(v.split()[0])
            elif k.lower() == 'content-type':
                ctype = v
            elif k and k.lower() != 'content-length':
                extra.append((k, v))
        self.send(code, body, ctype, extra)
    def log_message(self, *a):
        pass

class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    def handle_error(self, *a):
        pass
    def server_bind(self):
        # No reverse lookup of the address (HTTPServer's getfqdn).
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = 'test', self.server_address[1]
def serve(addr, port, label, cert=None):
    s = S((addr, port), H)
    s.label = label
    if cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(d + '/' + cert + '.pem', d + '/' + cert + '.key')
        s.socket = ctx.wrap_socket(s.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=s.serve_forever, daemon=True).start()
serve('93.184.216.40', 443, 'bound-tls', 'srv')
serve('93.184.216.40', 80, 'bound-plain')
serve('93.184.216.41', 443, 'unbound-tls', 'srv')
serve('93.184.216.42', 443, 'untrusted-tls', 'self')
serve('93.184.216.43', 443, 'inspected-tls', 'srv')
serve('93.184.216.44', 443, 'git-tls', 'srv')
serve('93.184.216.45', 443, 'pypi-tls', 'srv')
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(('93.184.216.53', 53))
open(ready, 'w').write('ok')
while True:
    data, a = u.recvfrom(4096)
    log(f"dns packet from {a[0]} {data!r}")
"#;

const NAMES: &[(&str, &str)] = &[
    ("api.bound.test", BOUND),
    ("echo.unbound.test", UNBOUND),
    ("evil.bound.test", UNTRUSTED),
    ("insp.test", INSPECTED),
    ("git.test", GIT),
    ("git2.test", GIT),
    ("pypi.test", PYPI),
];

/// The local internet: a namespace, its servers, the test CA, and the
/// secret (its value in a directory no sandbox sees).
struct Inet {
    ns: String,
    dir: tempdir::Dir,
    secret_dir: tempdir::Dir,
    secret: String,
    server: Child,
}

fn ossl(d: &Path, args: &[&str]) {
    let o = Command::new("/usr/bin/openssl")
        .args(args)
        .current_dir(d)
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl {args:?}: {o:?}");
}

fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("/usr/bin/git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {o:?}");
}

impl Inet {
    fn new() -> Option<Inet> {
        if !common::is_root() {
            common::skip("egress tests make network namespaces: need root");
            return None;
        }
        for tool in ["/usr/bin/openssl", "/usr/bin/curl", "/usr/bin/git"] {
            if !Path::new(tool).exists() {
                common::skip(&format!("{tool} is missing (run scripts/setup.sh)"));
                return None;
            }
        }
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let ns = format!(
            "aeb-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().unwrap();
            assert!(st.success(), "ip {args:?}");
        };
        // Airlock runs in `ns` (the host); the servers live in `ns-i` (the
        // internet), behind a veth pair: the host's own addresses are
        // refused like its loopback, so the servers cannot be on them.
        let inet = format!("{ns}-i");
        ip(&["netns", "add", &ns]);
        ip(&["netns", "add", &inet]);
        let etc = PathBuf::from("/etc/netns").join(&ns);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("resolv.conf"),
            format!("nameserver {DNS}\noptions timeout:1 attempts:1\n"),
        )
        .unwrap();
        common::link_namespaces(&ns, &inet, &[]);
        for a in [BOUND, UNBOUND, UNTRUSTED, INSPECTED, GIT, PYPI, DNS] {
            ip(&["-n", &inet, "addr", "add", &format!("{a}/32"), "dev", "lo"]);
        }
        let dir = tempdir::Dir::new();
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut a = vec!["req", "-x509"];
        a.extend_from_slice(&ec);
        a.extend_from_slice(&[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=airlock broker test CA",
        ]);
        ossl(d, &a);
        let sans: Vec<String> = NAMES
            .iter()
            .filter(|(n, _)| *n != "evil.bound.test")
            .map(|(n, _)| format!("DNS:{n}"))
            .collect();
        std::fs::write(
            d.join("san.cnf"),
            format!("subjectAltName={}\n", sans.join(",")),
        )
        .unwrap();
        let mut a = vec!["req"];
        a.extend_from_slice(&ec);
        a.extend_from_slice(&[
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=api.bound.test",
        ]);
        ossl(d, &a);
        ossl(
            d,
            &[
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
            ],
        );
        // A server whose certificate no one trusts (self-signed, right name).
        std::fs::write(d.join("self.cnf"), "subjectAltName=DNS:evil.bound.test\n").unwrap();
        let mut a = vec!["req", "-x509"];
        a.extend_from_slice(&ec);
        a.extend_from_slice(&[
            "-keyout",
            "self.key",
            "-out",
            "self.pem",
            "-days",
            "2",
            "-subj",
            "/CN=evil.bound.test",
            "-addext",
            "subjectAltName=DNS:evil.bound.test",
        ]);
        ossl(d, &a);
        // Git repositories: public and private, one commit each.
        let work = d.join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q"]);
        git(
            &work,
            &[
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                "the commit through the proxy",
            ],
        );
        std::fs::create_dir_all(d.join("git/public")).unwrap();
        std::fs::create_dir_all(d.join("git/private")).unwrap();
        git(d, &["clone", "-q", "--bare", "work", "git/public/repo.git"]);
        git(
            d,
            &["clone", "-q", "--bare", "work", "git/private/repo.git"],
        );
        for f in ["ca.pem", "srv.pem", "self.pem"] {
            std::fs::set_permissions(
                d.join(f),
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )
            .unwrap();
        }
        // The secret: random, known to the echo server (outside every
        // sandbox) and given to airlock through its environment.
        let mut r = [0u8; 16];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut r)
            .unwrap();
        let secret: String = format!(
            "sekrit-{}",
            r.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let secret_dir = tempdir::Dir::new();
        std::fs::write(secret_dir.path().join("expected"), &secret).unwrap();
        std::fs::write(d.join("server.py"), SERVER).unwrap();
        let ready = d.join("ready");
        let server = Command::new("ip")
            .args(["netns", "exec", &inet, "/usr/bin/python3"])
            .arg(d.join("server.py"))
            .arg(secret_dir.path().join("log"))
            .arg(d)
            .arg(secret_dir.path())
            .arg(&ready)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut me = Inet {
            ns,
            dir,
            secret_dir,
            secret,
            server,
        };
        let t = Instant::now();
        while !ready.exists() {
            if t.elapsed() > Duration::from_secs(20) || me.server.try_wait().unwrap().is_some() {
                panic!("the test servers did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(me)
    }

    fn ca(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    /// The servers' log: outside every mount (it holds the value).
    fn log(&self) -> String {
        std::fs::read_to_string(self.secret_dir.path().join("log")).unwrap_or_default()
    }

    /// `--dns-override` for every test name.
    fn overrides() -> Vec<String> {
        NAMES
            .iter()
            .flat_map(|(n, a)| ["--dns-override".to_string(), format!("{n}={a}")])
            .collect()
    }

    /// `airlock <args>` as `who` inside the namespace, with `API_TOKEN`
    /// (the secret) in airlock's environment; killed after 120 s.
    fn airlock(&self, who: Who, args: &[&str]) -> Option<Out> {
        let inner = common::airlock_env(who, &[("API_TOKEN", &self.secret)])?;
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
        Some(bounded(c, Duration::from_secs(120)))
    }
}

impl Drop for Inet {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["netns", "del", &format!("{}-i", self.ns)])
            .status();
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.ns));
    }
}

fn bounded(mut c: Command, limit: Duration) -> Out {
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
    Out {
        code,
        stdout: String::from_utf8_lossy(&so.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&se.join().unwrap_or_default()).into_owned(),
    }
}

/// What follows `marker` in `s`, up to the next echo (panics without it).
fn section<'a>(s: &'a str, marker: &str) -> &'a str {
    let rest = s
        .split_once(marker)
        .unwrap_or_else(|| panic!("{marker:?} missing: {s}"))
        .1;
    rest.split("echo ").next().unwrap()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    let n = needle.as_bytes();
    hay.windows(n.len()).any(|w| w == n)
}

/// The usual flags: the bound and unbound echo hosts allowed, the secret
/// bound to api.bound.test, the test CA trusted upstream.
fn broker_flags(net: &Inet) -> Vec<String> {
    let mut v: Vec<String> = [
        "--allow-host",
        "api.bound.test",
        "--allow-host",
        "echo.unbound.test",
        "--secret",
        "API_TOKEN@api.bound.test",
        "--upstream-ca",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(net.ca());
    v.extend(Inet::overrides());
    v
}

/// Inside, API_TOKEN holds a placeholder; requests to the bound host over
/// HTTPS carry the value (the echo shows it), the same header to an
/// unbound host carries the placeholder, plain HTTP to the bound host is
/// refused, several requests on one kept-alive connection are each
/// rewritten, chunked and sized bodies pass through, and a client's own
/// Authorization header without the placeholder is dropped there.
#[test]
fn secret_goes_only_to_its_host_over_tls() {
    let Some(net) = Inet::new() else { return };
    let script = r#"
set -u
echo "token=$API_TOKEN"
echo "bundle=$SSL_CERT_FILE $CURL_CA_BUNDLE $REQUESTS_CA_BUNDLE $NODE_EXTRA_CA_CERTS $GIT_SSL_CAINFO $CARGO_HTTP_CAINFO $PIP_CERT"
grep -c 'BEGIN CERTIFICATE' "$SSL_CERT_FILE" | sed 's/^/certs=/'
curl -sS -m 20 -H "Authorization: Bearer $API_TOKEN" https://api.bound.test/echo-bound
curl --noproxy '*' -sS -m 20 -H "Authorization: Bearer $API_TOKEN" https://api.bound.test/echo-transparent
curl -sS -m 20 -H "Authorization: Bearer $API_TOKEN" https://echo.unbound.test/echo-unbound --cacert /certs/ca.pem
echo "plain=$(curl -sS -m 20 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $API_TOKEN" http://api.bound.test/echo-plain)"
curl -sS -m 20 -H "Authorization: Bearer $API_TOKEN" -w 'conns=%{num_connects}\n' https://api.bound.test/ka-1 https://api.bound.test/ka-2 https://api.bound.test/ka-3
head -c 100000 /dev/zero > /tmp/body
curl -sS -m 20 -H "Authorization: Bearer $API_TOKEN" -H 'Transfer-Encoding: chunked' --data-binary @/tmp/body https://api.bound.test/post-chunked
curl -sS -m 20 -H "Authorization: Bearer $API_TOKEN" --data-binary @/tmp/body https://api.bound.test/post-sized
curl -sS -m 20 -H "Authorization: Bearer my-own-token" -H "Cookie: c=1" https://api.bound.test/own-credentials
curl -sS -m 20 -H "X-Api-Key: $API_TOKEN" https://api.bound.test/other-header
curl -sS -m 20 -o /dev/null -o /dev/null -w 'chunked-size=%{size_download} c=%{num_connects}\n' https://api.bound.test/chunked-resp https://api.bound.test/after-chunked
curl -sS -m 20 -x socks5h://127.0.0.1:1080 -H "Authorization: Bearer $API_TOKEN" https://api.bound.test/via-socks
curl -sS -m 20 -H "Authorization: Bearer $API_TOKEN" -H 'Expect: 100-continue' --data-binary @/tmp/body https://api.bound.test/post-expect
curl -sS -m 20 --rate 3/s -w 'reconns=%{num_connects}\n' https://api.bound.test/close-after https://api.bound.test/after-close
echo "fronted=$(curl -sS -m 20 -o /dev/null -w '%{http_code}' -H 'Host: echo.unbound.test' -H "Authorization: Bearer $API_TOKEN" https://api.bound.test/fronted)"
"#;
    let mut args: Vec<String> = vec!["run".into(), "--verbose".into()];
    args.extend(broker_flags(&net));
    args.extend([
        "--mount".into(),
        format!("{}:/certs:ro", net.dir.path().display()),
        "--".into(),
        "sh".into(),
        "-c".into(),
        script.into(),
    ]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    for who in [Who::Root, Who::User] {
        let Some(o) = net.airlock(who, &a) else {
            continue;
        };
        assert_eq!(o.code, 0, "{who:?}: {o:?}");
        let s = &o.stdout;
        let token = s
            .lines()
            .find_map(|l| l.strip_prefix("token="))
            .unwrap()
            .to_string();
        assert!(token.starts_with("airlock-secret-"), "{o:?}");
        assert_ne!(token, net.secret);
        let b = airlock_spec::net::CA_BUNDLE_PATH;
        assert!(
            s.contains(&format!("bundle={b} {b} {b} {b} {b} {b} {b}\n")),
            "{o:?}"
        );
        let certs: usize = s
            .lines()
            .find_map(|l| l.strip_prefix("certs="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(certs > 1, "the bundle holds the system roots too: {o:?}");
        // The bound host saw the value; the echo shows it.
        assert!(
            s.contains("echo bound-tls GET /echo-bound body-len=0\n"),
            "{o:?}"
        );
        assert!(
            s.contains(&format!("Authorization: Bearer {}\n", net.secret)),
            "{who:?}: the value did not reach the bound host: {o:?}"
        );
        // Transparently too (no proxy variable: the sandbox's DNS stub and
        // the agent's tunnel, with secrets given — red team: a --secret
        // turned transparent mode off).
        let transparent = s
            .split("echo bound-tls GET /echo-transparent")
            .nth(1)
            .unwrap_or_else(|| panic!("{who:?}: no transparent request: {o:?}"));
        assert!(
            transparent.contains(&format!("Authorization: Bearer {}\n", net.secret)),
            "{who:?}: {o:?}"
        );
        // The unbound host saw the placeholder only.
        let unbound = s
            .split("echo unbound-tls GET /echo-unbound")
            .nth(1)
            .expect("unbound echo")
            .split("plain=")
            .next()
            .unwrap();
        assert!(
            unbound.contains(&format!("Authorization: Bearer {token}\n")),
            "{o:?}"
        );
        assert!(!unbound.contains(&net.secret), "{o:?}");
        // Plain HTTP to the bound host: refused by the proxy.
        assert!(s.contains("plain=403\n"), "{o:?}");
        // Keep-alive: three requests, one connection, each rewritten.
        for p in ["/ka-1", "/ka-2", "/ka-3"] {
            let sec = section(s, &format!("echo bound-tls GET {p} body-len=0\n"));
            assert!(
                sec.contains(&format!("Authorization: Bearer {}\n", net.secret)),
                "{p}: {o:?}"
            );
        }
        let conns: Vec<&str> = s.lines().filter(|l| l.starts_with("conns=")).collect();
        assert_eq!(conns, ["conns=1", "conns=0", "conns=0"], "{o:?}");
        assert!(
            s.contains("echo bound-tls POST /post-chunked body-len=100000\n"),
            "{o:?}"
        );
        assert!(
            s.contains("echo bound-tls POST /post-sized body-len=100000\n"),
            "{o:?}"
        );
        // The client's own credentials were dropped on the bound host.
        let own = section(s, "echo bound-tls GET /own-credentials");
        assert!(!own.contains("my-own-token"), "{o:?}");
        assert!(!own.to_ascii_lowercase().contains("cookie:"), "{o:?}");
        // Any header carries the value where the placeholder was.
        assert!(s.contains(&format!("X-Api-Key: {}\n", net.secret)), "{o:?}");
        // A chunked response, then another request on the connection.
        assert!(
            s.contains("chunked-size=70022 c=1\nchunked-size=102 c=0\n"),
            "{o:?}"
        );
        // Through SOCKS5 too.
        let socks = section(s, "echo bound-tls GET /via-socks body-len=0\n");
        assert!(
            socks.contains(&format!("Authorization: Bearer {}\n", net.secret)),
            "{o:?}"
        );
        // Expect: 100-continue: the server's 100 reaches the client, then
        // the body goes up.
        let exp = section(s, "echo bound-tls POST /post-expect body-len=100000\n");
        assert!(exp.contains("Expect: 100-continue"), "{o:?}");
        // A server that closes an idle kept-alive connection: the proxy
        // closes the client's too, and the client's next request goes on a
        // new one.
        assert!(s.contains("closing\nreconns=1\n"), "{o:?}");
        assert!(
            s.contains("echo bound-tls GET /after-close body-len=0\n"),
            "{o:?}"
        );
        let reconns: Vec<&str> = s.lines().filter(|l| l.starts_with("reconns=")).collect();
        assert_eq!(reconns, ["reconns=1", "reconns=1"], "{o:?}");
        // Another Host than the name on the bound host: refused, so the
        // value cannot be fronted to another site on the same server.
        assert!(s.contains("fronted=403\n"), "{o:?}");
        // The audit (--verbose): the refusal of plain HTTP, with its reason;
        // the value in none of airlock's own output.
        assert!(
            o.stderr.contains("plain HTTP to it is refused, use https"),
            "{o:?}"
        );
        assert!(!o.stderr.contains(&net.secret), "{o:?}");
    }
    let log = net.log();
    assert!(
        !log.contains("bound-plain"),
        "plain HTTP reached the bound host: {log}"
    );
    for l in log.lines() {
        if l.starts_with("unbound-tls") {
            assert!(!l.contains(&net.secret), "{l}");
        }
    }
    assert!(
        !log.contains("dns packet"),
        "the proxy asked a resolver: {log}"
    );
}

/// Where the value is not: a process that used the secret (a bound
/// request, through Python) keeps running while the sandbox dumps the
/// environment of every process, the readable memory of every process it
/// may read, and every file outside the host's read-only /usr, to a
/// mounted directory; the host looks for the value in all of it (and
/// finds the placeholder, so the dump is real). The outputs and the
/// `--json` result do not hold it either.
#[test]
fn secret_value_is_nowhere_inside() {
    let Some(net) = Inet::new() else { return };
    let scan = r#"
import os, subprocess, sys
out = '/out'
CHILD = '''
import os, urllib.request, time, sys
tok = os.environ["API_TOKEN"]
r = urllib.request.Request("https://api.bound.test/check", headers={"Authorization": "Bearer " + tok})
body = urllib.request.urlopen(r, timeout=20).read()
r2 = urllib.request.Request("https://echo.unbound.test/echo-unbound-py", headers={"Authorization": "Bearer " + tok})
import ssl
ctx = ssl.create_default_context(cafile="/certs/ca.pem")
body2 = urllib.request.urlopen(r2, timeout=20, context=ctx).read()
open("/tmp/unbound-answer", "wb").write(body2)
print(body.decode().strip(), flush=True)
time.sleep(60)
'''
child = subprocess.Popen(['/usr/bin/python3', '-c', CHILD], stdout=subprocess.PIPE)
print('child', child.stdout.readline().decode().strip(), flush=True)
with open(out + '/environ.bin', 'wb') as f:
    for p in os.listdir('/proc'):
        if p.isdigit():
            try:
                f.write(open(f'/proc/{p}/environ', 'rb').read() + b'\n')
            except OSError:
                pass
total = 0
procs = []
with open(out + '/mem.bin', 'wb') as f:
    for p in os.listdir('/proc'):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            maps = open(f'/proc/{p}/maps').read().splitlines()
            mem = open(f'/proc/{p}/mem', 'rb', 0)
        except OSError:
            continue
        got = 0
        for l in maps:
            a, perms = l.split()[:2]
            if perms[0] != 'r':
                continue
            lo, hi = (int(x, 16) for x in a.split('-'))
            if hi - lo > (256 << 20):
                continue
            try:
                mem.seek(lo)
                f.write(mem.read(hi - lo))
                got += hi - lo
            except (OSError, ValueError, OverflowError):
                pass
        if got:
            procs.append(p)
            total += got
print('mem-procs', len(procs), 'child-read', str(child.pid) in procs, 'bytes', total, flush=True)
nfiles = 0
skip = ('/proc', '/sys', '/dev', '/out', '/usr')
with open(out + '/files.bin', 'wb') as f:
    for root, dirs, files in os.walk('/'):
        if root.startswith(skip):
            dirs[:] = []
            continue
        dirs[:] = [x for x in dirs if not os.path.join(root, x).startswith(skip)]
        for n in files:
            p = os.path.join(root, n)
            try:
                if os.path.islink(p) or not os.path.isfile(p) or os.path.getsize(p) > (64 << 20):
                    continue
                f.write(open(p, 'rb').read())
                nfiles += 1
            except OSError:
                pass
print('files', nfiles, flush=True)
child.kill()
child.wait()
"#;
    for who in [Who::Root, Who::User] {
        let out = tempdir::Dir::new();
        std::fs::set_permissions(
            out.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let json = out.path().join("result.json");
        let mut args: Vec<String> = vec!["run".into(), "--verbose".into()];
        args.extend(broker_flags(&net));
        args.extend([
            "--mount".into(),
            format!("{}:/certs:ro", net.dir.path().display()),
            "--mount".into(),
            format!("{}:/out:rw", out.path().display()),
            "--json".into(),
            json.display().to_string(),
            "--".into(),
            "/usr/bin/python3".into(),
            "-c".into(),
            scan.into(),
        ]);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let Some(o) = net.airlock(who, &a) else {
            continue;
        };
        assert_eq!(o.code, 0, "{o:?}");
        assert!(o.stdout.contains("child auth=match\n"), "{o:?}");
        assert!(o.stdout.contains("child-read True"), "{o:?}");
        let files: usize = o
            .stdout
            .split("files ")
            .nth(1)
            .and_then(|r| r.trim().parse().ok())
            .unwrap();
        assert!(files > 5, "{o:?}");
        let environ = std::fs::read(out.path().join("environ.bin")).unwrap();
        let mem = std::fs::read(out.path().join("mem.bin")).unwrap();
        let filebytes = std::fs::read(out.path().join("files.bin")).unwrap();
        assert!(mem.len() > 1 << 20, "{} bytes of memory", mem.len());
        // The dump is real: the placeholder is in it (env and memory), and so
        // is the unbound server's answer (in a file).
        assert!(contains(&environ, "API_TOKEN=airlock-secret-"));
        let ph_start = environ
            .windows(10)
            .position(|w| w == b"API_TOKEN=")
            .unwrap()
            + 10;
        let placeholder = String::from_utf8_lossy(&environ[ph_start..ph_start + 47]).to_string();
        assert!(placeholder.starts_with("airlock-secret-"), "{placeholder}");
        assert!(
            contains(&mem, &placeholder),
            "the memory dump lacks the placeholder"
        );
        assert!(contains(
            &filebytes,
            "echo unbound-tls GET /echo-unbound-py"
        ));
        assert!(contains(
            &filebytes,
            &format!("Authorization: Bearer {placeholder}")
        ));
        for (what, bytes) in [
            ("an environment", &environ),
            ("process memory", &mem),
            ("a file", &filebytes),
        ] {
            assert!(
                !contains(bytes, &net.secret),
                "{who:?}: the secret's value is in {what} inside the sandbox"
            );
        }
        assert!(!o.stdout.contains(&net.secret) && !o.stderr.contains(&net.secret));
        let j = std::fs::read_to_string(&json).unwrap();
        assert!(!j.contains(&net.secret), "{j}");
        // It did reach the bound server.
        assert!(net.log().contains(&format!(
            "bound-tls GET /check auth='Bearer {}'",
            net.secret
        )));
    }
}

/// HTTP rules on an inspected host: an allowed GET passes, a POST to the
/// same path and a GET elsewhere get a 403 with the reason, a dot segment
/// is refused, and a Host header other than the name the TLS connection
/// was made for gets a 403 (no domain fronting); every request is one
/// audited decision.
#[test]
fn http_rules_and_host_check_on_inspected_hosts() {
    let Some(net) = Inet::new() else { return };
    let script = r#"
req() { curl -sS -m 20 -o /tmp/r -w '%{http_code}' "$@"; echo " $(head -c 400 /tmp/r | head -n1)"; }
req https://insp.test/repos/acme/widget
req -X POST -d x=1 https://insp.test/repos/acme/widget
req https://insp.test/repos/other/widget
req --path-as-is https://insp.test/repos/acme/../other
req -H 'Host: echo.unbound.test' https://insp.test/repos/acme/widget
req -X POST -d x=1 https://insp.test/upload/file
"#;
    let mut args: Vec<String> = vec![
        "run".into(),
        "--verbose".into(),
        "--allow-host".into(),
        "insp.test".into(),
        "--inspect-host".into(),
        "insp.test".into(),
        "--allow-http".into(),
        "GET,HEAD insp.test/repos/acme/*".into(),
        "--allow-http".into(),
        "POST insp.test/upload/*".into(),
        "--upstream-ca".into(),
        net.ca(),
    ];
    args.extend(Inet::overrides());
    args.extend(["--".into(), "sh".into(), "-c".into(), script.into()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(o) = net.airlock(Who::Root, &a) else {
        return;
    };
    assert_eq!(o.code, 0, "{o:?}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{o:?}");
    assert!(
        lines[0].starts_with("200 echo inspected-tls GET /repos/acme/widget"),
        "{o:?}"
    );
    assert!(
        lines[1].starts_with("403 airlock egress: POST /repos/acme/widget on insp.test is not allowed by any --allow-http rule"),
        "{o:?}"
    );
    assert!(
        lines[1].contains("GET,HEAD insp.test/repos/acme/*"),
        "{o:?}"
    );
    assert!(
        lines[2]
            .starts_with("403 airlock egress: GET /repos/other/widget on insp.test is not allowed"),
        "{o:?}"
    );
    assert!(
        lines[3].starts_with("400 airlock egress: the path"),
        "{o:?}"
    );
    assert!(
        lines[4].starts_with(
            "403 airlock egress: the Host header \"echo.unbound.test\" is not insp.test"
        ),
        "{o:?}"
    );
    assert!(
        lines[5].starts_with("200 echo inspected-tls POST /upload/file"),
        "{o:?}"
    );
    let log = net.log();
    assert!(
        log.contains("inspected-tls GET /repos/acme/widget"),
        "{log}"
    );
    assert!(log.contains("inspected-tls POST /upload/file"), "{log}");
    for bad in ["POST /repos/acme", "/repos/other", "/other"] {
        assert!(
            !log.lines()
                .any(|l| l.starts_with("inspected-tls") && l.contains(bad)),
            "{bad} reached the server: {log}"
        );
    }
    // Each request is an audited decision with its method and path.
    assert!(
        o.stderr.contains("airlock: egress denied (connect) insp.test:443: POST /repos/acme/widget on insp.test is not allowed"),
        "{o:?}"
    );
    assert!(
        o.stderr.contains("2 connection(s) allowed, 4 denied"),
        "{o:?}"
    );
}

/// Raw requests on one terminated connection (to the bound host): only
/// http/1.1 is negotiated even when the client offers h2; pipelined
/// requests are each checked (a second one with another Host is refused
/// and the connection ends, so a third is never forwarded); a request
/// with both Content-Length and Transfer-Encoding (smuggling) is refused;
/// an absolute URL naming another host is refused.
#[test]
fn terminated_connections_check_every_request() {
    let Some(net) = Inet::new() else { return };
    let script = r#"
import os, re, socket, ssl
def tls():
    s = socket.create_connection(('127.0.0.1', 3128), timeout=20)
    s.sendall(b'CONNECT api.bound.test:443 HTTP/1.1\r\nHost: api.bound.test:443\r\n\r\n')
    h = b''
    while b'\r\n\r\n' not in h:
        h += s.recv(1)
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(['h2', 'http/1.1'])
    return ctx.wrap_socket(s, server_hostname='api.bound.test')
def statuses(t):
    d = b''
    while True:
        try:
            x = t.recv(65536)
        except (OSError, ssl.SSLError):
            break
        if not x:
            break
        d += x
    return [x.decode() for x in re.findall(rb'(?:^|\n)HTTP/1\.1 (\d{3}) ', d)]
tok = os.environ['API_TOKEN']
t = tls()
print('alpn', t.selected_alpn_protocol())
t.sendall((f'GET /pipe-1 HTTP/1.1\r\nHost: api.bound.test\r\nAuthorization: Bearer {tok}\r\n\r\n'
           f'GET /pipe-2 HTTP/1.1\r\nHost: echo.unbound.test\r\nAuthorization: Bearer {tok}\r\n\r\n'
           f'GET /pipe-3 HTTP/1.1\r\nHost: api.bound.test\r\nAuthorization: Bearer {tok}\r\n\r\n').encode())
print('pipelined', statuses(t))
t = tls()
body = b'0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: api.bound.test\r\n\r\n'
t.sendall(b'POST /smuggle HTTP/1.1\r\nHost: api.bound.test\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n' % len(body) + body)
print('smuggle', statuses(t))
t = tls()
t.sendall(f'GET https://echo.unbound.test/abs HTTP/1.1\r\nHost: api.bound.test\r\nAuthorization: Bearer {tok}\r\n\r\n'.encode())
print('absolute', statuses(t))
t = tls()
t.sendall(f'GET /obs-fold HTTP/1.1\r\nHost: api.bound.test\r\nX-A: 1\r\n Host: echo.unbound.test\r\n\r\n'.encode())
print('folded', statuses(t))
"#;
    let mut args: Vec<String> = vec!["run".into()];
    args.extend(broker_flags(&net));
    args.extend([
        "--".into(),
        "/usr/bin/python3".into(),
        "-c".into(),
        script.into(),
    ]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(o) = net.airlock(Who::Root, &a) else {
        return;
    };
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        o.stdout,
        "alpn http/1.1\npipelined ['200', '403']\nsmuggle ['400']\nabsolute ['400']\nfolded ['400']\n",
        "{o:?}"
    );
    let log = net.log();
    assert!(log.contains("bound-tls GET /pipe-1"), "{log}");
    for never in ["/pipe-2", "/pipe-3", "/smuggle", "/abs", "/obs-fold"] {
        assert!(!log.contains(never), "{never} reached a server: {log}");
    }
}

/// An upstream whose certificate no trusted CA signed: the client gets a
/// 502 with the reason, and nothing (the secret least of all) reaches the
/// server. Without --upstream-ca the test CA is not trusted either.
#[test]
fn untrusted_upstream_is_refused() {
    let Some(net) = Inet::new() else { return };
    let mut args: Vec<String> = vec![
        "run".into(),
        "--allow-host".into(),
        "evil.bound.test".into(),
        "--allow-host".into(),
        "api.bound.test".into(),
        "--secret".into(),
        "API_TOKEN@evil.bound.test,api.bound.test".into(),
    ];
    args.extend(Inet::overrides());
    args.extend([
        "--".into(),
        "sh".into(),
        "-c".into(),
        r#"for h in evil.bound.test api.bound.test; do curl -sS -m 20 -o /tmp/r -w "%{http_code} " -H "Authorization: Bearer $API_TOKEN" https://$h/check; head -n1 /tmp/r; done"#.into(),
    ]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(o) = net.airlock(Who::Root, &a) else {
        return;
    };
    assert_eq!(o.code, 0, "{o:?}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{o:?}");
    for (l, h) in lines.iter().zip(["evil.bound.test", "api.bound.test"]) {
        assert!(
            l.starts_with(&format!("502 airlock egress: TLS to {h}")),
            "{o:?}"
        );
        assert!(l.contains("nothing was sent to it"), "{o:?}");
    }
    assert!(!o.stdout.contains(&net.secret) && !o.stderr.contains(&net.secret));
    let log = net.log();
    assert!(!log.contains("untrusted-tls"), "{log}");
    assert!(!log.contains("bound-tls"), "{log}");
}

/// `git clone` over HTTPS through the proxy (git's own proxy and CA
/// settings, as airlock sets them): from a terminated host with the
/// secret as the password in the URL (in Basic credentials; the private
/// repository refuses anything else), from an inspected host, and through
/// a plain CONNECT tunnel; and `pip install` from a package index on an
/// inspected host.
#[test]
fn git_clone_and_pip_install_through_the_proxy() {
    let Some(net) = Inet::new() else { return };
    let script = r#"
set -e
cd /tmp
git clone -q "https://x-token:$API_TOKEN@git.test/git/private/repo.git" private
git -C private log --format='private: %s'
git clone -q https://git.test/git/public/repo.git public
git -C public log --format='public: %s'
GIT_SSL_CAINFO=/certs/ca.pem git clone -q https://git2.test/git/public/repo.git tunnel
git -C tunnel log --format='tunnel: %s'
if git clone -q https://x-token:wrong@git.test/git/private/repo.git nope 2>/tmp/err; then echo cloned-without-secret; else echo "refused: $(grep -c 401 /tmp/err || true)"; fi
/usr/bin/python3 -m pip install -q --no-cache-dir --disable-pip-version-check --break-system-packages --index-url https://pypi.test/simple --target /tmp/pkgs airtestpkg
PYTHONPATH=/tmp/pkgs /usr/bin/python3 -c 'import airtestpkg; print("pip:", airtestpkg.VALUE)'
"#;
    let mut args: Vec<String> = vec![
        "run".into(),
        "--allow-host".into(),
        "git.test".into(),
        "--allow-host".into(),
        "git2.test".into(),
        "--allow-host".into(),
        "pypi.test".into(),
        "--secret".into(),
        "API_TOKEN@git.test".into(),
        "--inspect-host".into(),
        "pypi.test".into(),
        "--upstream-ca".into(),
        net.ca(),
        "--mount".into(),
        format!("{}:/certs:ro", net.dir.path().display()),
    ];
    args.extend(Inet::overrides());
    args.extend(["--".into(), "sh".into(), "-c".into(), script.into()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    if !Command::new("/usr/bin/python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        common::skip("python3-pip is missing (run scripts/setup.sh)");
        return;
    }
    for who in [Who::Root, Who::User] {
        let Some(o) = net.airlock(who, &a) else {
            continue;
        };
        assert_eq!(o.code, 0, "{who:?}: {o:?}");
        for want in [
            "private: the commit through the proxy\n",
            "public: the commit through the proxy\n",
            "tunnel: the commit through the proxy\n",
            "pip: pip-install-ok\n",
        ] {
            assert!(o.stdout.contains(want), "{who:?}: {want:?}: {o:?}");
        }
        assert!(!o.stdout.contains("cloned-without-secret"), "{o:?}");
        assert!(!o.stdout.contains(&net.secret) && !o.stderr.contains(&net.secret));
    }
    let log = net.log();
    assert!(
        log.contains("git-tls GET /git/private/repo.git/info/refs"),
        "{log}"
    );
    assert!(
        log.contains("pypi-tls GET /files/airtestpkg-0.1-py3-none-any.whl"),
        "{log}"
    );
}

/// Bad flags are refused before anything runs, without the value in the
/// message.
#[test]
fn bad_secret_flags_are_refused() {
    let Some(net) = Inet::new() else { return };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--allow-host".into(),
                "a.test".into(),
                "--secret".into(),
                "NO_SUCH_VAR@a.test".into(),
            ],
            "no variable NO_SUCH_VAR",
        ),
        (
            vec!["--secret".into(), "API_TOKEN@a.test".into()],
            "need a network",
        ),
        (
            vec![
                "--allow-host".into(),
                "a.test".into(),
                "--secret".into(),
                "API_TOKEN@10.0.0.1".into(),
            ],
            "not an address",
        ),
        (
            vec![
                "--allow-host".into(),
                "a.test".into(),
                "--secret".into(),
                "API_TOKEN".into(),
            ],
            "NAME@HOST",
        ),
        (
            vec![
                "--allow-host".into(),
                "a.test".into(),
                "--allow-http".into(),
                "GET".into(),
            ],
            "METHODS HOST/PATH",
        ),
        (
            vec![
                "--allow-host".into(),
                "a.test".into(),
                "--allow-http".into(),
                "G-T a.test/x".into(),
            ],
            "methods are words",
        ),
    ];
    for (flags, want) in cases {
        let mut a: Vec<&str> = vec!["run"];
        a.extend(flags.iter().map(String::as_str));
        a.extend(["--", "true"]);
        let Some(o) = net.airlock(Who::Root, &a) else {
            return;
        };
        assert_eq!(o.code, 125, "{flags:?}: {o:?}");
        assert!(o.stderr.contains(want), "{flags:?}: {want:?}: {o:?}");
        assert!(!o.stderr.contains(&net.secret), "{o:?}");
    }
    // A secret for a name the sandbox cannot reach: said, not fatal.
    let Some(o) = net.airlock(
        Who::Root,
        &[
            "run",
            "--allow-host",
            "a.test",
            "--secret",
            "API_TOKEN@b.test",
            "--",
            "true",
        ],
    ) else {
        return;
    };
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stderr.contains(
            "--secret API_TOKEN@b.test: no --allow-host rule lets the sandbox reach b.test:443"
        ),
        "{o:?}"
    );
    // A value with a line break could inject a header: refused, unquoted.
    let f = net.secret_dir.path().join("nl");
    std::fs::write(&f, format!("{}\r\nX-Evil: 1\n", net.secret)).unwrap();
    let spec = format!("TOK@a.test={}", f.display());
    let Some(o) = net.airlock(
        Who::Root,
        &[
            "run",
            "--allow-host",
            "a.test",
            "--secret-file",
            &spec,
            "--",
            "true",
        ],
    ) else {
        return;
    };
    assert_eq!(o.code, 125, "{o:?}");
    assert!(o.stderr.contains("control character"), "{o:?}");
    assert!(!o.stderr.contains(&net.secret), "{o:?}");
}

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
            .env("RUST_LOG", "debug")
            .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
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

    /// Every byte of its state directory (the SQLite database and its
    /// journal files included).
    fn state_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut stack = vec![self.dir.path().join("state")];
        while let Some(p) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&p) else {
                continue;
            };
            for e in rd.flatten() {
                let t = e.file_type().unwrap();
                if t.is_dir() {
                    stack.push(e.path());
                } else if t.is_file() {
                    all.extend(std::fs::read(e.path()).unwrap_or_default());
                }
            }
        }
        all
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

/// The service takes the value at creation (the API, and `airlock create
/// --secret`) and never gives it back: not in its answers (the sandbox,
/// the list, the audit, `airlock inspect`, `airlock ls --json`, `airlock
/// logs --audit`), not in its state directory, not on its stderr. The
/// sandbox's requests to the bound host carry it.
#[test]
fn service_never_echoes_the_secret() {
    let Some(net) = Inet::new() else { return };
    let d = Daemon::start(&net);
    let ca = std::fs::read_to_string(net.ca()).unwrap();
    let overrides: Vec<String> = NAMES.iter().map(|(n, a)| format!("{n}={a}")).collect();
    let (s, v) = d.req(
        "POST",
        "/v1/sandboxes",
        Some(serde_json::json!({
            "network": {
                "allow": ["api.bound.test", "echo.unbound.test"],
                "dns_override": overrides,
                "secrets": [{"name": "API_TOKEN", "hosts": ["api.bound.test"], "value": net.secret}],
                "upstream_ca": [ca],
                "allow_http": ["GET api.bound.test/check*"],
            }
        })),
    );
    assert_eq!(s, 201, "{v}");
    assert!(!v.contains(&net.secret), "{v}");
    let id = serde_json::from_str::<serde_json::Value>(&v).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Bad input is a 400 that does not quote the value.
    for bad in [
        serde_json::json!({"allow": ["api.bound.test"], "secrets": [{"name": "T", "hosts": ["api.bound.test"], "value": format!("{}\r\nX: 1", net.secret)}]}),
        serde_json::json!({"allow": ["api.bound.test"], "secrets": [{"name": "T", "hosts": ["10.0.0.0/8"], "value": net.secret}]}),
        serde_json::json!({"secrets": [{"name": "T", "hosts": ["api.bound.test"], "value": net.secret}]}),
        serde_json::json!({"allow": ["a.test"], "inspect": ["a.test"], "upstream_ca": ["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]}),
    ] {
        let (s, b) = d.req(
            "POST",
            "/v1/sandboxes",
            Some(serde_json::json!({ "network": bad })),
        );
        assert!(s == 400 || s == 422, "{bad}: {s} {b}");
        assert!(!b.contains(&net.secret), "{b}");
    }
    let (s, b) = d.req(
        "PUT",
        &format!("/v1/sandboxes/{id}/network"),
        Some(serde_json::json!({"allow": ["api.bound.test"], "secrets": [{"name": "T", "hosts": ["api.bound.test"], "value": net.secret}]})),
    );
    assert!(s == 400 || s == 422, "{s} {b}");
    assert!(
        b.contains("fixed when a sandbox is created") && !b.contains(&net.secret),
        "{b}"
    );
    let check = |id: &str| {
        d.exec(
            id,
            &[
                "sh",
                "-c",
                "curl -sS -m 20 -H \"Authorization: Bearer $API_TOKEN\" https://api.bound.test/check; echo \"ph=$API_TOKEN\"",
            ],
        )
    };
    let out = check(&id);
    assert!(out.starts_with("auth=match\nph=airlock-secret-"), "{out}");
    // The rule holds there too: a POST is refused.
    let post = d.exec(
        &id,
        &[
            "curl",
            "-sS",
            "-m",
            "20",
            "-X",
            "POST",
            "https://api.bound.test/check",
        ],
    );
    assert!(
        post.contains("is not allowed by any --allow-http rule"),
        "{post}"
    );
    // Through the CLI: the value from airlock's environment.
    let cli = |args: &[&str]| {
        let o = Command::new(common::bin())
            .env("AIRLOCK_SOCKET", d.dir.path().join("airlock.sock"))
            .env("API_TOKEN", &net.secret)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {o:?}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!all.contains(&net.secret), "{args:?}: {all}");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let mut create = vec![
        "create",
        "-q",
        "--allow-host",
        "api.bound.test",
        "--secret",
        "API_TOKEN@api.bound.test",
    ];
    let ca_path = net.ca();
    create.extend(["--upstream-ca", &ca_path]);
    for o in &overrides {
        create.extend(["--dns-override", o]);
    }
    let id2 = cli(&create);
    assert!(check(&id2).starts_with("auth=match\n"));
    // Every answer about them.
    let mut answers = Vec::new();
    for path in [
        format!("/v1/sandboxes/{id}"),
        format!("/v1/sandboxes/{id2}"),
        "/v1/sandboxes?all=true".to_string(),
        format!("/v1/sandboxes/{id}/audit"),
        format!("/v1/sandboxes/{id2}/audit"),
    ] {
        let (s, b) = d.req("GET", &path, None);
        assert_eq!(s, 200, "{path}: {b}");
        answers.push(b);
    }
    answers.push(cli(&["inspect", &id]));
    answers.push(cli(&["inspect", &id2]));
    answers.push(cli(&["ls", "-a", "--json"]));
    answers.push(cli(&["logs", "--audit", &id]));
    for a in &answers {
        assert!(!a.contains(&net.secret), "{a}");
    }
    // The audit has the terminated requests, with method and path.
    let (_, audit) = d.req("GET", &format!("/v1/sandboxes/{id}/audit"), None);
    assert!(
        audit.contains(r#""method":"GET""#) && audit.contains(r#""path":"/check""#),
        "{audit}"
    );
    assert!(audit.contains(r#""method":"POST""#), "{audit}");
    // The spec as stored still names the secret (not its value).
    assert!(answers[0].contains("\"API_TOKEN\""), "{}", answers[0]);
    for id in [&id, &id2] {
        let (s, _) = d.req("DELETE", &format!("/v1/sandboxes/{id}"), None);
        assert!(s == 200 || s == 204, "{s}");
    }
    let state = d.state_bytes();
    assert!(state.len() > 1000, "{} bytes of state", state.len());
    assert!(
        !contains(&state, &net.secret),
        "the value is in the state directory"
    );
    let stderr = std::fs::read(d.dir.path().join("stderr")).unwrap();
    let stdout = std::fs::read(d.dir.path().join("stdout")).unwrap();
    assert!(!contains(&stderr, &net.secret) && !contains(&stdout, &net.secret));
    assert!(net.log().contains(&format!(
        "bound-tls GET /check auth='Bearer {}'",
        net.secret
    )));
}

/// A tunnel opened to the bound host's address (allowed by a CIDR rule)
/// is refused whatever it names — no SNI, or another host's — since the
/// host's rules and secret would be skipped there (red team); the same
/// CIDR rule still reaches an address no terminated host has.
#[test]
fn tunnels_to_a_terminated_hosts_address_are_refused() {
    let Some(net) = Inet::new() else { return };
    let script = format!(
        r#"
import os, socket, ssl
def tunnel(ip, sni):
    s = socket.create_connection(('127.0.0.1', 3128), timeout=10)
    s.sendall(f'CONNECT {{ip}}:443 HTTP/1.1\r\nHost: {{ip}}:443\r\n\r\n'.encode())
    if not s.recv(100).startswith(b'HTTP/1.1 200'):
        return 'refused'
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    try:
        t = ctx.wrap_socket(s, server_hostname=sni)
        t.sendall(b'GET /by-address HTTP/1.1\r\nHost: api.bound.test\r\n\r\n')
        return 'reached' if t.recv(100) else 'closed'
    except (OSError, ssl.SSLError) as e:
        return 'closed ' + type(e).__name__
print('no-sni', tunnel('{BOUND}', None))
print('other-sni', tunnel('{BOUND}', 'other.test'))
print('unbound', tunnel('{UNBOUND}', None))
"#
    );
    let mut args: Vec<String> = vec!["run".into(), "--verbose".into()];
    args.extend(broker_flags(&net));
    args.extend([
        "--allow-host".into(),
        format!("{BOUND}/32:443"),
        "--allow-host".into(),
        format!("{UNBOUND}/32:443"),
        "--".into(),
        "/usr/bin/python3".into(),
        "-c".into(),
        script,
    ]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(o) = net.airlock(Who::Root, &a) else {
        return;
    };
    assert!(!o.stdout.contains("no-sni reached"), "{o:?}");
    assert!(!o.stdout.contains("other-sni reached"), "{o:?}");
    assert!(o.stdout.contains("unbound reached"), "{o:?}");
    // Only the unbound server ever saw the request.
    assert_eq!(net.log().matches("/by-address").count(), 1, "{}", net.log());
    assert!(
        o.stderr
            .contains("a host whose TLS airlock terminates: reach it by its name"),
        "{o:?}"
    );
}
