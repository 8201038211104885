//! The egress proxy. It runs on the host (in `airlock run`'s process, or in
//! the daemon) and serves streams that come out of a sandbox through its
//! agent's channel — never a host port. Each stream is one client
//! connection to the sandbox's proxy ports: HTTP (forward requests and
//! CONNECT) or SOCKS5.
//!
//! For every request it canonicalises the host strictly, asks the
//! [`Policy`] about the name before resolving anything, resolves the name
//! itself (`--dns-override` first) and dials exactly an address it checked;
//! through a tunnel it then reads the client's first bytes: a TLS
//! ClientHello must carry the allowed name as its SNI (no SNI: refused),
//! plain HTTP a Host header for that name. A refusal reaches the client as
//! an HTTP 403 with the reason (SOCKS: "not allowed by ruleset"), and
//! every decision goes to the sandbox's audit through [`Decision`].
//!
//! Blocking I/O, one thread per connection (two while relaying).

pub mod broker;
pub mod hostaddr;
pub mod tls;

use airlock_spec::net::{canonical_host, Denied, Host, Policy};
use serde::Serialize;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Which listener inside the sandbox a stream came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Http,
    Socks,
}

/// One decision, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    /// `http`, `connect` or `socks`.
    pub via: &'static str,
    /// The host as the client named it (canonical when it could be made so).
    pub host: String,
    /// The address dialled (or refused).
    pub addr: Option<IpAddr>,
    pub port: u16,
    /// Bytes from the sandbox to the destination, and back.
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub reason: String,
    /// On a host whose TLS the proxy terminates: the request's method and
    /// path (without the query).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// The addresses of an allowed `name`: its `--dns-override`, else
/// `/etc/hosts`, else the resolver with the name fully qualified (never
/// the search list: an allowed `*.SUFFIX` name that does not exist must
/// not become a lookup of NAME.search.domain).
fn lookup(p: &Policy, name: &str, port: u16) -> Result<Vec<IpAddr>, String> {
    let mut addrs = p.overridden(name);
    if addrs.is_empty() {
        addrs = hostaddr::etc_hosts(name);
    }
    if addrs.is_empty() {
        addrs = (format!("{name}."), port)
            .to_socket_addrs()
            .map_err(|e| format!("{name} does not resolve: {e}"))?
            .map(|a| a.ip())
            .collect();
    }
    Ok(addrs)
}

/// What a client's first bytes in a tunnel are.
enum First {
    /// A TLS ClientHello, with its server name if it has one.
    Sni(Option<String>),
    /// An HTTP request head, with its Host header if it has one.
    Http(Option<String>),
    /// Something else from the client.
    Other,
    /// The server spoke before the client.
    ServerSpoke,
}

/// Called for every decision (from the connection's thread).
pub type Audit = Arc<dyn Fn(Decision) + Send + Sync>;

/// A sandbox's proxy: its policy (replaceable while it runs) and its audit.
pub struct Proxy {
    policy: RwLock<Arc<Policy>>,
    audit: Audit,
    /// How long a client may take to send its request head or first bytes.
    pub head_timeout: Duration,
    pub connect_timeout: Duration,
    /// Connections being served.
    active: std::sync::atomic::AtomicUsize,
    /// TLS termination for the hosts secrets are bound to and inspected
    /// ones (fixed when the sandbox is made).
    broker: Option<Arc<broker::Broker>>,
}

const MAX_HEAD: usize = 64 * 1024;

/// The longest host, reason, method and path a decision carries (bytes;
/// longer ones are cut at a character boundary and end in `…`).
pub const DECISION_HOST_MAX: usize = 256;
pub const DECISION_REASON_MAX: usize = 512;
pub const DECISION_PATH_MAX: usize = 256;

fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
        s.push('…');
    }
}

/// `d` with every free-text field cut to its bound.
pub fn bounded(mut d: Decision) -> Decision {
    cut(&mut d.host, DECISION_HOST_MAX);
    cut(&mut d.reason, DECISION_REASON_MAX);
    if let Some(m) = d.method.as_mut() {
        cut(m, 32);
    }
    if let Some(p) = d.path.as_mut() {
        cut(p, DECISION_PATH_MAX);
    }
    d
}

impl Proxy {
    pub fn new(policy: Policy, audit: Audit) -> Arc<Proxy> {
        Proxy::with_broker(policy, audit, None)
    }

    /// A proxy that terminates TLS to the hosts `broker` names.
    pub fn with_broker(
        policy: Policy,
        audit: Audit,
        broker: Option<Arc<broker::Broker>>,
    ) -> Arc<Proxy> {
        // Whatever a client sends, a decision stays small: its fields are
        // what the client named (up to 64 KiB of request target), and a
        // sandbox can make a decision per request.
        let audit: Audit = Arc::new(move |d| audit(bounded(d)));
        Arc::new(Proxy {
            policy: RwLock::new(Arc::new(policy)),
            audit,
            head_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            active: std::sync::atomic::AtomicUsize::new(0),
            broker,
        })
    }

    pub fn broker(&self) -> Option<&Arc<broker::Broker>> {
        self.broker.as_ref()
    }

    /// The broker, when it terminates TLS to `host`.
    fn terminating<'a>(&'a self, host: &'a Host) -> Option<(&'a broker::Broker, &'a str)> {
        match (host, &self.broker) {
            (Host::Name(n), Some(b)) if b.terminates(n) => Some((b, n.as_str())),
            _ => None,
        }
    }

    pub(crate) fn report(&self, d: Decision) {
        (self.audit)(d);
    }

    /// Replaces the policy; connections from now on use the new one.
    pub fn set_policy(&self, p: Policy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p);
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Serves one client stream in a thread of its own.
    pub fn spawn(self: &Arc<Self>, kind: Kind, conn: UnixStream) {
        use std::sync::atomic::Ordering;
        let me = self.clone();
        self.active.fetch_add(1, Ordering::SeqCst);
        let r = std::thread::Builder::new()
            .name("airlock-egress".into())
            .spawn(move || {
                let _ = match kind {
                    Kind::Http => me.serve_http(conn),
                    Kind::Socks => me.serve_socks(conn),
                };
                me.active.fetch_sub(1, Ordering::SeqCst);
            });
        if r.is_err() {
            self.active.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits (at most `limit`) until no connection is being served, so
    /// that every decision has been reported.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let end = std::time::Instant::now() + limit;
        while self.active.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            if std::time::Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    fn decide(&self, via: &'static str, host: &str, port: u16, reason: String) {
        (self.audit)(Decision {
            allowed: false,
            via,
            host: host.to_string(),
            addr: None,
            port,
            bytes_out: 0,
            bytes_in: 0,
            reason,
            method: None,
            path: None,
        });
    }

    /// The policy's answer for `host:port`, and the one address to dial.
    /// An address of this host itself (any of its interfaces') passes only
    /// by a CIDR rule, whatever its range: services bound to every
    /// interface answer there.
    fn resolve(&self, host: &Host, port: u16) -> Result<SocketAddr, Refusal> {
        let p = self.policy();
        let own = hostaddr::interface_addrs();
        let not_own = |ip: IpAddr| -> Result<(), Denied> {
            if hostaddr::is_host_addr(ip, &own) {
                p.check_host_addr(ip, port)
            } else {
                Ok(())
            }
        };
        match host {
            Host::Ip(ip) => {
                p.check_ip(*ip, port).map_err(Refusal::Policy)?;
                not_own(*ip).map_err(Refusal::Policy)?;
                Ok(SocketAddr::new(*ip, port))
            }
            Host::Name(name) => {
                p.check_name(name, port).map_err(Refusal::Policy)?;
                let addrs = lookup(&p, name, port).map_err(Refusal::Resolve)?;
                let mut first_no = None;
                for a in addrs {
                    // IPv4-mapped answers are refused as such (not unwrapped).
                    match p.check_resolved(name, a, port).and_then(|()| not_own(a)) {
                        Ok(()) => return Ok(SocketAddr::new(a, port)),
                        Err(d) => {
                            first_no.get_or_insert(d);
                        }
                    }
                }
                Err(match first_no {
                    Some(d) => Refusal::Policy(d),
                    None => Refusal::Resolve(format!("{name} has no address")),
                })
            }
        }
    }

    /// Through a tunnel to an address, what may not pass whatever the
    /// client names: an address that a host whose TLS airlock terminates
    /// resolves to (its HTTP rules and secret would be skipped), and — when
    /// airlock terminates a whole `*.SUFFIX`, whose addresses it cannot
    /// list — a tunnel that names no host at all.
    fn terminated_address(
        &self,
        p: &Policy,
        ip: IpAddr,
        port: u16,
        named: bool,
    ) -> Result<(), String> {
        let Some(b) = &self.broker else {
            return Ok(());
        };
        for t in b.targets() {
            match t {
                airlock_spec::net::Target::Name(n)
                    if lookup(p, n, port).is_ok_and(|a| a.contains(&ip)) =>
                {
                    return Err(format!(
                        "{ip} is an address of {n}, a host whose TLS airlock terminates: reach it by its name"
                    ));
                }
                airlock_spec::net::Target::Below(s) if !named => {
                    return Err(format!(
                        "a tunnel to {ip} that names no host, while airlock terminates TLS for *.{s}: reach hosts by name"
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn dial(&self, addr: SocketAddr) -> Result<TcpStream, Refusal> {
        let s = TcpStream::connect_timeout(&addr, self.connect_timeout)
            .map_err(|e| Refusal::Dial(format!("cannot connect to {addr}: {e}")))?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }

    // --------------------------------------------------------------
    // HTTP

    fn serve_http(&self, mut c: UnixStream) -> io::Result<()> {
        c.set_read_timeout(Some(self.head_timeout))?;
        let (head, rest) = match read_head(&mut c) {
            Ok(x) => x,
            Err(e) => {
                let why = format!("bad request: {e}");
                self.decide("http", "", 0, why.clone());
                return deny_http(&mut c, 400, "Bad Request", &why);
            }
        };
        let req = match parse_request(&head) {
            Ok(r) => r,
            Err(why) => {
                let why = format!("bad request: {why}");
                self.decide("http", "", 0, why.clone());
                return deny_http(&mut c, 400, "Bad Request", &why);
            }
        };
        let connect = req.method == "CONNECT";
        let via = if connect { "connect" } else { "http" };
        let (raw_host, port, path) = if connect {
            match split_authority(&req.target, None) {
                Ok((h, p)) => (h, p, String::new()),
                Err(why) => return self.http_refuse(&mut c, via, &req.target, 0, 400, why),
            }
        } else {
            let Some(rest) = req.target.strip_prefix("http://") else {
                let why = if req.target.starts_with("https://") {
                    "an https:// URL sent to the proxy in the clear: use CONNECT".to_string()
                } else {
                    "the proxy takes absolute http:// URLs and CONNECT only".to_string()
                };
                return self.http_refuse(&mut c, via, &req.target, 0, 400, why);
            };
            let (auth, path) = match rest.find(['/', '?']) {
                Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
                Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
                None => (rest, "/".to_string()),
            };
            if auth.contains('@') {
                return self.http_refuse(
                    &mut c,
                    via,
                    auth,
                    0,
                    400,
                    "credentials in the URL".into(),
                );
            }
            match split_authority(auth, Some(80)) {
                Ok((h, p)) => (h, p, path),
                Err(why) => return self.http_refuse(&mut c, via, auth, 0, 400, why),
            }
        };
        let host = match canonical_host(&raw_host) {
            Ok(h) => h,
            Err(why) => {
                return self.http_refuse(
                    &mut c,
                    via,
                    &raw_host,
                    port,
                    403,
                    format!("host {raw_host:?} refused: {why}"),
                )
            }
        };
        let shown = host.to_string();
        // Plain HTTP: the Host header must name the same host.
        if !connect {
            let hosts = req
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
                .count();
            if hosts > 1 {
                return self.http_refuse(&mut c, via, &shown, port, 403, "two Host headers".into());
            }
            if let Some(h) = req.header("host") {
                if !same_host(h, &host, port, 80) {
                    return self.http_refuse(
                        &mut c,
                        via,
                        &shown,
                        port,
                        403,
                        format!("the Host header {h:?} does not match the request's host {shown}"),
                    );
                }
            }
        }
        let addr = match self.resolve(&host, port) {
            Ok(a) => a,
            Err(r) => {
                let (code, why) = r.http();
                return self.http_refuse(&mut c, via, &shown, port, code, why);
            }
        };
        if !connect && self.terminating(&host).is_some() {
            return self.http_refuse(
                &mut c,
                via,
                &shown,
                port,
                403,
                format!("{shown} is a host whose TLS airlock terminates (a secret is bound to it, or it is inspected): plain HTTP to it is refused, use https"),
            );
        }
        let mut up = match self.dial(addr) {
            Ok(s) => s,
            Err(r) => {
                let (code, why) = r.http();
                return self.http_refuse(&mut c, via, &shown, port, code, why);
            }
        };
        c.set_read_timeout(None)?;
        let mut out0 = 0u64;
        let mut first;
        if connect {
            c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
            first = rest;
            if let Err(why) = self.check_first(&mut c, &up, &host, port, &mut first) {
                self.decide(via, &shown, port, why);
                let _ = up.shutdown(Shutdown::Both);
                return Ok(());
            }
            if let Some((b, name)) = self.terminating(&host) {
                b.serve(self, via, c, up, first, name, port, addr.ip());
                return Ok(());
            }
        } else {
            let mut h = format!("{} {} {}\r\n", req.method, path, req.version);
            let mut saw_host = false;
            for (k, v) in &req.headers {
                let lk = k.to_ascii_lowercase();
                if matches!(
                    lk.as_str(),
                    "proxy-connection" | "proxy-authorization" | "connection" | "keep-alive"
                ) {
                    continue;
                }
                saw_host |= lk == "host";
                h.push_str(&format!("{k}: {v}\r\n"));
            }
            if !saw_host {
                h.push_str(&format!("Host: {}\r\n", host_header(&host, port, 80)));
            }
            h.push_str("Connection: close\r\n\r\n");
            up.write_all(h.as_bytes())?;
            out0 = h.len() as u64;
            first = rest;
        }
        let (o, i) = relay(c, up, &first);
        (self.audit)(Decision {
            allowed: true,
            via,
            host: shown,
            addr: Some(addr.ip()),
            port,
            bytes_out: o + out0,
            bytes_in: i,
            reason: String::new(),
            method: None,
            path: None,
        });
        Ok(())
    }

    fn http_refuse(
        &self,
        c: &mut UnixStream,
        via: &'static str,
        host: &str,
        port: u16,
        code: u16,
        why: String,
    ) -> io::Result<()> {
        self.decide(via, host, port, why.clone());
        let text = match code {
            400 => "Bad Request",
            403 => "Forbidden",
            502 => "Bad Gateway",
            _ => "Error",
        };
        deny_http(c, code, text, &why)
    }

    /// Through a tunnel to a name, the client's first bytes must say the
    /// same name: a ClientHello's SNI, or an HTTP request's Host. A server
    /// that speaks first (SSH, SMTP) passes: it was dialled at an address
    /// the name resolved to. Through a tunnel to an IP literal, a name the
    /// client shows there (SNI, Host) must not be one a deny rule names.
    /// `first` holds what was read (forwarded later).
    fn check_first(
        &self,
        c: &mut UnixStream,
        up: &TcpStream,
        host: &Host,
        port: u16,
        first: &mut Vec<u8>,
    ) -> Result<(), String> {
        let name = match host {
            Host::Name(n) => n,
            Host::Ip(ip) => {
                let p = self.policy();
                if !p.denies_names() && self.broker.is_none() {
                    return Ok(());
                }
                let shown = match self.read_first(c, up, first)? {
                    First::Sni(Some(s)) => Some(s),
                    First::Http(Some(h)) => Some(h),
                    _ => None,
                };
                // The name as a Host header or SNI gives it (a port in a
                // Host header is the tunnel's business, not the name's).
                let named = shown.and_then(|h| split_authority(&h, Some(port)).ok());
                self.terminated_address(&p, *ip, port, named.is_some())?;
                return match named.map(|(h, _)| canonical_host(&h)) {
                    Some(Ok(Host::Name(n))) => {
                        p.check_denied_name(&n, port).map_err(|d| d.0)?;
                        // A host whose TLS airlock terminates (its HTTP
                        // rules, its secret) is reached by name only: by
                        // address the tunnel would carry it unchecked.
                        match &self.broker {
                            Some(b) if b.terminates(&n) => Err(format!(
                                "{n} (named inside a tunnel to an address) is a host whose TLS airlock terminates: reach it by its name"
                            )),
                            _ => Ok(()),
                        }
                    }
                    _ => Ok(()),
                };
            }
        };
        match self.read_first(c, up, first)? {
            First::ServerSpoke => Ok(()),
            First::Sni(Some(s)) => match canonical_host(&s) {
                Ok(Host::Name(n)) if &n == name => Ok(()),
                _ => Err(format!(
                    "the TLS server name {s:?} is not the allowed name {name}"
                )),
            },
            First::Sni(None) => Err(format!(
                "a TLS ClientHello without a server name (SNI) to {name}"
            )),
            First::Http(Some(h)) if same_host(&h, host, 0, 0) => Ok(()),
            First::Http(Some(h)) => Err(format!(
                "the Host header {h:?} in the tunnel does not match {name}"
            )),
            First::Http(None) => Err("an HTTP request in the tunnel without a Host".into()),
            First::Other => Err(format!(
                "the tunnel to {name} carries neither TLS nor HTTP from the client"
            )),
        }
    }

    /// Reads the client's first bytes in a tunnel until they say what they
    /// are (or the server speaks first).
    fn read_first(
        &self,
        c: &mut UnixStream,
        up: &TcpStream,
        first: &mut Vec<u8>,
    ) -> Result<First, String> {
        let deadline = std::time::Instant::now() + self.head_timeout;
        let mut buf = [0u8; 16 * 1024];
        loop {
            if !first.is_empty() {
                if first[0] == 0x16 {
                    match tls::client_hello(first) {
                        tls::Hello::Incomplete => {}
                        tls::Hello::Sni(s) => return Ok(First::Sni(s)),
                        tls::Hello::NotTls => {
                            return Err("a TLS record that is not a handshake".into())
                        }
                        tls::Hello::Bad(why) => return Err(why.to_string()),
                    }
                } else if looks_like_http(first) {
                    if let Some(end) = find_head_end(first) {
                        let head = String::from_utf8_lossy(&first[..end]).to_string();
                        let req = parse_request(&head).map_err(|e| format!("bad request: {e}"))?;
                        return Ok(First::Http(req.header("host").map(str::to_string)));
                    }
                    if first.len() > MAX_HEAD {
                        return Err("an HTTP head over 64 KiB".into());
                    }
                } else {
                    return Ok(First::Other);
                }
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err("the client sent nothing in time".into());
            }
            let mut p = [
                libc::pollfd {
                    fd: c.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: up.as_raw_fd(),
                    events: if first.is_empty() { libc::POLLIN } else { 0 },
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds.
            let n = unsafe { libc::poll(p.as_mut_ptr(), 2, left.as_millis().min(60_000) as i32) };
            if n < 0 {
                continue;
            }
            if p[0].revents != 0 {
                let k = c.read(&mut buf).map_err(|e| e.to_string())?;
                if k == 0 {
                    return Err("the client closed before its first bytes were checked".into());
                }
                first.extend_from_slice(&buf[..k]);
            } else if p[1].revents != 0 && first.is_empty() {
                return Ok(First::ServerSpoke);
            }
        }
    }

    // --------------------------------------------------------------
    // SOCKS5

    fn serve_socks(&self, mut c: UnixStream) -> io::Result<()> {
        c.set_read_timeout(Some(self.head_timeout))?;
        let mut b = [0u8; 2];
        c.read_exact(&mut b)?;
        if b[0] != 5 {
            self.decide(
                "socks",
                "",
                0,
                format!("SOCKS version {} refused (only 5)", b[0]),
            );
            return Ok(());
        }
        let mut methods = vec![0u8; b[1] as usize];
        c.read_exact(&mut methods)?;
        if !methods.contains(&0) {
            c.write_all(&[5, 0xff])?;
            return Ok(());
        }
        c.write_all(&[5, 0])?;
        let mut h = [0u8; 4];
        c.read_exact(&mut h)?;
        let raw = match h[3] {
            1 => {
                let mut a = [0u8; 4];
                c.read_exact(&mut a)?;
                Ok(IpAddr::from(a).to_string())
            }
            4 => {
                let mut a = [0u8; 16];
                c.read_exact(&mut a)?;
                Ok(format!("[{}]", std::net::Ipv6Addr::from(a)))
            }
            3 => {
                let mut l = [0u8; 1];
                c.read_exact(&mut l)?;
                let mut n = vec![0u8; l[0] as usize];
                c.read_exact(&mut n)?;
                String::from_utf8(n).map_err(|_| "a name that is not text".to_string())
            }
            _ => Err("an unknown address type".to_string()),
        };
        let mut pb = [0u8; 2];
        c.read_exact(&mut pb)?;
        let port = u16::from_be_bytes(pb);
        let reply = |c: &mut UnixStream, code: u8| c.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]);
        let raw = match raw {
            Ok(r) => r,
            Err(why) => {
                self.decide("socks", "", port, why);
                return reply(&mut c, 8);
            }
        };
        if h[0] != 5 || h[1] != 1 {
            self.decide(
                "socks",
                &raw,
                port,
                "only SOCKS CONNECT is served (no BIND, no UDP ASSOCIATE)".into(),
            );
            return reply(&mut c, 7);
        }
        let host = match canonical_host(&raw) {
            Ok(h) => h,
            Err(why) => {
                self.decide("socks", &raw, port, format!("host {raw:?} refused: {why}"));
                return reply(&mut c, 2);
            }
        };
        let shown = host.to_string();
        let addr = match self
            .resolve(&host, port)
            .and_then(|a| Ok((a, self.dial(a)?)))
        {
            Ok(a) => a,
            Err(r) => {
                let code = match &r {
                    Refusal::Policy(_) => 2,
                    Refusal::Resolve(_) => 4,
                    Refusal::Dial(_) => 5,
                };
                self.decide("socks", &shown, port, r.text());
                return reply(&mut c, code);
            }
        };
        let (addr, up) = addr;
        reply(&mut c, 0)?;
        c.set_read_timeout(None)?;
        let mut first = Vec::new();
        if let Err(why) = self.check_first(&mut c, &up, &host, port, &mut first) {
            self.decide("socks", &shown, port, why);
            let _ = up.shutdown(Shutdown::Both);
            return Ok(());
        }
        if let Some((b, name)) = self.terminating(&host) {
            b.serve(self, "socks", c, up, first, name, port, addr.ip());
            return Ok(());
        }
        let (o, i) = relay(c, up, &first);
        (self.audit)(Decision {
            allowed: true,
            via: "socks",
            host: shown,
            addr: Some(addr.ip()),
            port,
            bytes_out: o,
            bytes_in: i,
            reason: String::new(),
            method: None,
            path: None,
        });
        Ok(())
    }
}

enum Refusal {
    Policy(Denied),
    Resolve(String),
    Dial(String),
}

impl Refusal {
    fn text(&self) -> String {
        match self {
            Refusal::Policy(d) => d.0.clone(),
            Refusal::Resolve(s) | Refusal::Dial(s) => s.clone(),
        }
    }
    fn http(&self) -> (u16, String) {
        match self {
            Refusal::Policy(d) => (403, d.0.clone()),
            Refusal::Resolve(s) | Refusal::Dial(s) => (502, s.clone()),
        }
    }
}

fn deny_http(c: &mut UnixStream, code: u16, text: &str, why: &str) -> io::Result<()> {
    // The reason is ours (no CR/LF from the client gets in: names with
    // them are refused before they are quoted, and quoting escapes them).
    let why = why.replace(['\r', '\n'], " ");
    let body = format!("airlock egress: {why}\n");
    let resp = format!(
        "HTTP/1.1 {code} {text}\r\nContent-Type: text/plain; charset=utf-8\r\nX-Airlock-Denied: {why}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    c.write_all(resp.as_bytes())?;
    let _ = c.shutdown(Shutdown::Write);
    // Let the client read the answer before the stream goes.
    let mut sink = [0u8; 4096];
    let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
    while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
    Ok(())
}

fn find_head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn looks_like_http(b: &[u8]) -> bool {
    let n = b.len().min(8);
    b[..n]
        .iter()
        .take_while(|&&x| x != b' ')
        .all(|x| x.is_ascii_uppercase())
        && b[0].is_ascii_uppercase()
}

/// Reads a request head (up to the empty line, at most 64 KiB); returns it
/// and the bytes read after it.
fn read_head(c: &mut UnixStream) -> Result<(String, Vec<u8>), String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find_head_end(&buf) {
            let rest = buf.split_off(end);
            let head = String::from_utf8(buf).map_err(|_| "a request head that is not UTF-8")?;
            return Ok((head, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err("a request head over 64 KiB".into());
        }
        let n = c.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the client closed before the end of its request head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

struct Request {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        let mut it = self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name));
        let first = it.next()?;
        // Two Host headers: take none (the caller refuses a missing one
        // where it matters, and the mismatch check fails on "").
        if it.next().is_some() {
            return Some("");
        }
        Some(first.1.as_str())
    }
}

fn parse_request(head: &str) -> Result<Request, String> {
    let head = head
        .strip_suffix("\r\n\r\n")
        .ok_or("no empty line after the head")?;
    if head
        .bytes()
        .any(|b| b == 0 || b == 0x7f || (b < 0x20 && b != b'\r' && b != b'\n' && b != b'\t'))
    {
        return Err("control bytes in the request head".into());
    }
    // Lines end in CRLF and nowhere else: a bare LF or CR is where two
    // parsers (ours, the server's) would read different requests.
    let b = head.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        let bare_lf = c == b'\n' && (i == 0 || b[i - 1] != b'\r');
        let bare_cr = c == b'\r' && b.get(i + 1) != Some(&b'\n');
        if bare_lf || bare_cr {
            return Err("a bare CR or LF in the request head".into());
        }
    }
    let mut lines = head.split("\r\n");
    let line = lines.next().ok_or("no request line")?;
    let mut parts = line.split(' ');
    let (Some(m), Some(t), Some(v), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("bad request line {line:?}"));
    };
    if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("bad method {m:?}"));
    }
    // The target: visible ASCII only (no tab, no space, nothing a server
    // could read as the end of it).
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("bad request target {t:?}"));
    }
    // A fragment is never part of a request target (RFC 9112); a server
    // that took `#` as a path byte would see a path the rules never did.
    if t.contains('#') {
        return Err(format!("a fragment (#) in the request target {t:?}"));
    }
    if v != "HTTP/1.1" && v != "HTTP/1.0" {
        return Err(format!("bad version {v:?}"));
    }
    let mut headers = Vec::new();
    for l in lines {
        if l.contains(['\r', '\n']) {
            return Err("a bare CR or LF in a header".into());
        }
        let (k, val) = l.split_once(':').ok_or(format!("bad header line {l:?}"))?;
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("bad header name {k:?}"));
        }
        headers.push((k.to_string(), val.trim().to_string()));
    }
    Ok(Request {
        method: m.to_string(),
        target: t.to_string(),
        version: v.to_string(),
        headers,
    })
}

/// `host[:port]` or `[v6][:port]`; the port is required without a default.
fn split_authority(a: &str, default: Option<u16>) -> Result<(String, u16), String> {
    let (h, p) = if a.starts_with('[') {
        match a.find(']') {
            Some(i) => (&a[..=i], a[i + 1..].strip_prefix(':')),
            None => return Err(format!("bad authority {a:?}")),
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    let port = match p {
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("bad port in {a:?}"));
            }
            match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(format!("bad port in {a:?}")),
                Ok(v) => v,
            }
        }
        None => default.ok_or(format!("no port in {a:?}"))?,
    };
    Ok((h.to_string(), port))
}

fn host_header(h: &Host, port: u16, default: u16) -> String {
    if port == default {
        h.to_string()
    } else {
        format!("{h}:{port}")
    }
}

/// Whether a Host header names `host` (and `port`, when `port` is not 0;
/// a header without a port means `default`).
fn same_host(header: &str, host: &Host, port: u16, default: u16) -> bool {
    let Ok((h, p)) = split_authority(header, Some(default)) else {
        return false;
    };
    canonical_host(&h).is_ok_and(|hh| &hh == host) && (port == 0 || p == port)
}

/// Bytes both ways until both sides are done; `first` goes upstream first.
/// Returns (bytes to upstream, bytes from upstream).
/// After the sandbox's side has closed its sending half, the stream ends
/// once upstream has been silent this long (a client that closed for good
/// looks the same as one that half-closed, and a server that never
/// answers nor closes must not keep the connection's threads).
const HALF_CLOSED_IDLE: Duration = Duration::from_secs(5);

fn relay(c: UnixStream, mut up: TcpStream, first: &[u8]) -> (u64, u64) {
    let mut out = 0u64;
    if !first.is_empty() {
        if up.write_all(first).is_err() {
            return (0, 0);
        }
        out += first.len() as u64;
    }
    let (Ok(mut c2), Ok(mut up2)) = (c.try_clone(), up.try_clone()) else {
        return (out, 0);
    };
    let mut c = c;
    let out_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done2 = out_done.clone();
    let t = std::thread::Builder::new()
        .name("airlock-egress-in".into())
        .spawn(move || {
            let n = copy_watched(&mut up2, &mut c2, &done2);
            let _ = c2.shutdown(Shutdown::Write);
            n
        });
    out += copy(&mut c, &mut up);
    let _ = up.shutdown(Shutdown::Write);
    out_done.store(true, std::sync::atomic::Ordering::SeqCst);
    let inn = match t {
        Ok(t) => t.join().unwrap_or(0),
        Err(_) => 0,
    };
    (out, inn)
}

/// Upstream to the sandbox, until upstream's EOF — or until the sandbox's
/// end of the stream is gone altogether (its hang-up), so that a server
/// that keeps a connection open does not keep this thread for ever.
fn copy_watched(
    r: &mut TcpStream,
    w: &mut UnixStream,
    out_done: &std::sync::atomic::AtomicBool,
) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    let mut last = std::time::Instant::now();
    loop {
        if out_done.load(std::sync::atomic::Ordering::SeqCst) && last.elapsed() >= HALF_CLOSED_IDLE
        {
            return n;
        }
        let mut p = [
            libc::pollfd {
                fd: r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: w.as_raw_fd(),
                events: 0,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        if unsafe { libc::poll(p.as_mut_ptr(), 2, 500) } < 0 {
            continue;
        }
        if p[1].revents & (libc::POLLHUP | libc::POLLERR) != 0 && p[0].revents == 0 {
            return n;
        }
        if p[0].revents == 0 {
            continue;
        }
        let k = match r.read(&mut buf) {
            Ok(0) | Err(_) => return n,
            Ok(k) => k,
        };
        if w.write_all(&buf[..k]).is_err() {
            return n;
        }
        n += k as u64;
        last = std::time::Instant::now();
    }
}

fn copy(r: &mut impl Read, w: &mut impl Write) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) | Err(_) => return n,
            Ok(k) => k,
        };
        if w.write_all(&buf[..k]).is_err() {
            return n;
        }
        n += k as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority() {
        assert_eq!(
            split_authority("a.com:443", None).unwrap(),
            ("a.com".into(), 443)
        );
        assert_eq!(
            split_authority("[::1]:80", None).unwrap(),
            ("[::1]".into(), 80)
        );
        assert_eq!(
            split_authority("a.com", Some(80)).unwrap(),
            ("a.com".into(), 80)
        );
        assert!(split_authority("a.com", None).is_err());
        assert!(split_authority("a.com:0", None).is_err());
        assert!(split_authority("a.com:+1", None).is_err());
    }

    #[test]
    fn host_header_match() {
        let h = Host::Name("a.test".into());
        assert!(same_host("a.test", &h, 80, 80));
        assert!(same_host("A.Test.", &h, 80, 80));
        assert!(same_host("a.test:8080", &h, 8080, 80));
        assert!(!same_host("a.test:8080", &h, 80, 80));
        assert!(!same_host("b.test", &h, 80, 80));
        assert!(!same_host("", &h, 80, 80));
        assert!(same_host("a.test:1234", &h, 0, 0));
    }

    #[test]
    fn requests() {
        let r = parse_request("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(r.header("HOST"), Some("a"));
        assert!(parse_request("GET http://a/ HTTP/1.1\r\nHost: a\0\r\n\r\n").is_err());
        assert!(parse_request("GET  http://a/ HTTP/1.1\r\n\r\n").is_err());
        // Smuggling shapes (red team): a tab or bare LF in the target, a
        // bare LF or CR between lines, DEL.
        for bad in [
            "GET /ok/x\tHTTP/1.1\nHost:a\n\nDELETE\t/admin\tHTTP/1.1\nX: HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
            "GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /repos/acme#/../../admin HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
        assert!(parse_request("GET /a?b=%20 HTTP/1.1\r\nHost: a\r\nX: a\tb\r\n\r\n").is_ok());
        let two = parse_request("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").unwrap();
        assert_eq!(two.header("host"), Some(""));
    }

    #[test]
    fn decisions_are_bounded() {
        let d = bounded(Decision {
            allowed: false,
            via: "http",
            host: "é".repeat(40_000),
            addr: None,
            port: 80,
            bytes_out: 0,
            bytes_in: 0,
            reason: format!("host {:?} refused", "A".repeat(60_000)),
            method: Some("M".repeat(100)),
            path: Some("/".repeat(10_000)),
        });
        assert!(d.host.len() <= DECISION_HOST_MAX + 3 && d.host.ends_with('…'));
        assert!(d.reason.len() <= DECISION_REASON_MAX + 3);
        assert!(d.method.unwrap().len() <= 35);
        assert!(d.path.unwrap().len() <= DECISION_PATH_MAX + 3);
        let small = bounded(Decision {
            allowed: true,
            via: "connect",
            host: "a.test".into(),
            addr: None,
            port: 443,
            bytes_out: 1,
            bytes_in: 2,
            reason: String::new(),
            method: None,
            path: None,
        });
        assert_eq!(small.host, "a.test");
    }
}
