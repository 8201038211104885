//! TLS termination for the hosts a sandbox's secrets are bound to (and the
//! `--inspect-host` ones): credential brokering and HTTP rules.
//!
//! Each sandbox that needs it gets a CA of its own, made here with a fresh
//! key that never leaves this process; only that sandbox's CA bundle holds
//! its certificate. Through a tunnel to a terminated host the proxy
//! answers the client's TLS with a certificate for the name it asked for
//! (the SNI, already checked to be the CONNECT name), opens TLS of its own
//! to the server it dialled and verifies the server's certificate against
//! the system's roots plus `--upstream-ca`, and then serves HTTP/1.1
//! request by request (keep-alive; each head parsed, bodies with a
//! Content-Length or chunked passed through): the Host header must name
//! the host (no domain fronting), the `--allow-http` rules naming the host
//! must let the method and path through, and on hosts a secret is bound to
//! the secret's placeholder is swapped for its value in the header values
//! (inside `Basic` credentials too), while credential headers the client
//! set itself without a placeholder (`Authorization`, `Cookie`) are
//! dropped. Only `http/1.1` is offered in ALPN, on both sides.
//!
//! Plain HTTP to a terminated host is refused outright (the placeholder
//! never travels in the clear, and the value never does).

use crate::{parse_request, same_host, Decision, Proxy};
use airlock_spec::net::{parse_http_rule, parse_name_pattern, Host, HttpRule, Network, Target};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the system's roots are looked for (the first that exists).
const SYSTEM_ROOTS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// How long a kept-alive client may be silent between requests, and how
/// long either side may be silent within one.
const IDLE: Duration = Duration::from_secs(120);
const MAX_LINE: usize = 8 * 1024;

struct Bound {
    name: String,
    placeholder: String,
    value: String,
    hosts: Vec<Target>,
}

/// The TLS-terminating part of one sandbox's proxy.
pub struct Broker {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    secrets: Vec<Bound>,
    inspect: Vec<Target>,
    rules: Vec<HttpRule>,
    client: Arc<rustls::ClientConfig>,
    servers: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

/// `n` random bytes; an error (never predictable serials or ids) without
/// randomness.
fn random(n: usize) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("read /dev/urandom: {e}"))?;
    Ok(b)
}

/// The system's root certificates as PEM text ("" when none is found).
pub fn system_roots_pem() -> String {
    for p in SYSTEM_ROOTS {
        if let Ok(t) = std::fs::read_to_string(p) {
            return t;
        }
    }
    String::new()
}

/// Checks `--upstream-ca` texts: each must hold PEM certificates that
/// parse (a request with a bad one is refused before a sandbox is made).
pub fn check_upstream_ca(pems: &[String]) -> Result<(), String> {
    for pem in pems {
        let mut roots = rustls::RootCertStore::empty();
        let mut any = false;
        for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let c = c.map_err(|e| format!("upstream_ca: {e}"))?;
            roots
                .add(c)
                .map_err(|e| format!("upstream_ca: a certificate refused: {e}"))?;
            any = true;
        }
        if !any {
            return Err("upstream_ca: no certificate in it".into());
        }
    }
    Ok(())
}

impl Broker {
    /// The broker a network asks for (`None`: no secret, no inspected
    /// host, no HTTP rule). Makes the sandbox's CA.
    pub fn from_network(n: &Network) -> Result<Option<Broker>, String> {
        if n.secrets.is_empty() && n.inspect.is_empty() && n.allow_http.is_empty() {
            return Ok(None);
        }
        let e = |x: airlock_spec::net::NetError| x.to_string();
        let mut secrets = Vec::new();
        for s in &n.secrets {
            let mut hosts = Vec::new();
            for h in &s.hosts {
                hosts.push(parse_name_pattern("--secret host", h).map_err(e)?);
            }
            secrets.push(Bound {
                name: s.name.clone(),
                placeholder: s.placeholder.clone(),
                value: s.value.0.clone(),
                hosts,
            });
        }
        let mut inspect = Vec::new();
        for h in &n.inspect {
            inspect.push(parse_name_pattern("--inspect-host", h).map_err(e)?);
        }
        let mut rules = Vec::new();
        for r in &n.allow_http {
            rules.push(parse_http_rule(r).map_err(e)?);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        // The sandbox's CA.
        let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot make a CA key: {e}"))?;
        let mut p =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| format!("CA: {e}"))?;
        let id: String = random(4)?.iter().map(|b| format!("{b:02x}")).collect();
        p.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("airlock sandbox CA {id}"),
        );
        p.distinguished_name.push(
            rcgen::DnType::OrganizationName,
            "airlock (ephemeral, one sandbox)",
        );
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        p.serial_number = Some(serial()?);
        let cert = p
            .self_signed(&key)
            .map_err(|e| format!("cannot make the CA: {e}"))?;
        let ca_pem = cert.pem();
        let ca_der = cert.der().clone();
        let issuer = rcgen::Issuer::new(p, key);

        // What the upstream servers are verified against.
        let mut roots = rustls::RootCertStore::empty();
        let sys = system_roots_pem();
        for c in CertificateDer::pem_slice_iter(sys.as_bytes()).flatten() {
            let _ = roots.add(c);
        }
        for pem in &n.upstream_ca {
            let mut any = false;
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let c = c.map_err(|e| format!("--upstream-ca: {e}"))?;
                roots
                    .add(c)
                    .map_err(|e| format!("--upstream-ca: a certificate refused: {e}"))?;
                any = true;
            }
            if !any {
                return Err("--upstream-ca: no certificate in it".into());
            }
        }
        let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Broker {
            ca_pem,
            ca_der,
            issuer,
            secrets,
            inspect,
            rules,
            client: Arc::new(client),
            servers: Mutex::new(HashMap::new()),
            provider,
        }))
    }

    /// The sandbox's CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The bundle written inside: the system's roots, then the CA.
    pub fn trust_bundle(&self) -> Vec<u8> {
        let mut b = system_roots_pem();
        if !b.is_empty() && !b.ends_with('\n') {
            b.push('\n');
        }
        b.push_str("# airlock: this sandbox's own CA (its key stays in the proxy on the host)\n");
        b.push_str(&self.ca_pem);
        b.into_bytes()
    }

    /// Every host pattern whose TLS the proxy terminates.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.secrets
            .iter()
            .flat_map(|s| s.hosts.iter())
            .chain(self.inspect.iter())
            .chain(self.rules.iter().map(|r| &r.host))
    }

    /// Whether the proxy terminates TLS to `name` (canonical).
    pub fn terminates(&self, name: &str) -> bool {
        self.secrets
            .iter()
            .any(|s| s.hosts.iter().any(|h| h.matches_name(name)))
            || self.inspect.iter().any(|h| h.matches_name(name))
            || self.rules.iter().any(|r| r.host.matches_name(name))
    }

    fn server_config(&self, name: &str) -> Result<Arc<rustls::ServerConfig>, String> {
        let mut m = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = m.get(name) {
            return Ok(c.clone());
        }
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut p =
            rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = rcgen::IsCa::NoCa;
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p.serial_number = Some(serial()?);
        p.use_authority_key_identifier_extension = true;
        let cert = p
            .signed_by(&key, &self.issuer)
            .map_err(|e| format!("cannot make a certificate for {name}: {e}"))?;
        let key_der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let mut c = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), self.ca_der.clone()], key_der)
            .map_err(|e| e.to_string())?;
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        let c = Arc::new(c);
        if m.len() > 1024 {
            m.clear();
        }
        m.insert(name.to_string(), c.clone());
        Ok(c)
    }

    fn bound_to<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Bound> + 'a {
        self.secrets
            .iter()
            .filter(move |s| s.hosts.iter().any(|h| h.matches_name(name)))
    }

    /// Serves a tunnel to a terminated host: `first` holds the client's
    /// first bytes (its ClientHello, SNI already checked), `up` the
    /// connection to the address the policy allowed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn serve(
        &self,
        proxy: &Proxy,
        via: &'static str,
        mut c: UnixStream,
        up: TcpStream,
        first: Vec<u8>,
        name: &str,
        port: u16,
        addr: IpAddr,
    ) {
        let deny = |why: String, method: Option<&str>, path: Option<&str>| {
            proxy.report(Decision {
                allowed: false,
                via,
                host: name.to_string(),
                addr: Some(addr),
                port,
                bytes_out: 0,
                bytes_in: 0,
                reason: why,
                method: method.map(str::to_string),
                path: path.map(str::to_string),
            })
        };
        if first.first() != Some(&0x16) {
            let why = format!(
                "{name} is a host whose TLS airlock terminates (a secret is bound to it, or it is inspected): plain HTTP to it is refused, use https"
            );
            if crate::looks_like_http(&first) {
                let _ = crate::deny_http(&mut c, 403, "Forbidden", &why);
            }
            deny(why, None, None);
            return;
        }
        let cfg = match self.server_config(name) {
            Ok(c) => c,
            Err(e) => return deny(e, None, None),
        };
        let _ = c.set_read_timeout(Some(IDLE));
        let _ = up.set_read_timeout(Some(IDLE));
        let _ = up.set_write_timeout(Some(IDLE));
        let _ = c.set_write_timeout(Some(IDLE));
        let server = match rustls::ServerConnection::new(cfg) {
            Ok(s) => s,
            Err(e) => return deny(e.to_string(), None, None),
        };
        let mut cs = rustls::StreamOwned::new(
            server,
            Prefixed {
                pre: first,
                pos: 0,
                s: c,
            },
        );
        while cs.conn.is_handshaking() {
            if let Err(e) = cs.conn.complete_io(&mut cs.sock) {
                return deny(
                    format!("the client's TLS handshake failed (does it trust the sandbox's CA bundle?): {e}"),
                    None,
                    None,
                );
            }
        }
        // Upstream: verified before any request is forwarded.
        let sn = match ServerName::try_from(name.to_string()) {
            Ok(s) => s,
            Err(e) => return deny(format!("{name}: {e}"), None, None),
        };
        let mut upstream_err = None;
        let mut us = None;
        match rustls::ClientConnection::new(self.client.clone(), sn) {
            Err(e) => upstream_err = Some(e.to_string()),
            Ok(conn) => {
                let mut s = rustls::StreamOwned::new(conn, up);
                while s.conn.is_handshaking() {
                    if let Err(e) = s.conn.complete_io(&mut s.sock) {
                        upstream_err = Some(format!(
                            "TLS to {name} ({addr}) failed, nothing was sent to it: {e}"
                        ));
                        break;
                    }
                }
                if upstream_err.is_none() {
                    us = Some(s);
                }
            }
        }
        let mut cli = Reader::new(cs);
        let Some(us) = us else {
            let why = upstream_err.unwrap_or_default();
            // Answer the first request with the reason.
            if let Ok(Some(head)) = cli.read_head() {
                let (m, p) = match parse_request(&String::from_utf8_lossy(&head)) {
                    Ok(r) => (Some(r.method), Some(path_of(&r.target).to_string())),
                    Err(_) => (None, None),
                };
                let _ = respond(cli.get_mut(), 502, "Bad Gateway", &why);
                deny(why, m.as_deref(), p.as_deref());
            } else {
                deny(why, None, None);
            }
            return;
        };
        let mut upr = Reader::new(us);
        while let Ok(true) = self.one_request(proxy, via, &mut cli, &mut upr, name, port, addr) {}
        cli.get_mut().conn.send_close_notify();
        let _ = cli.get_mut().flush();
        upr.get_mut().conn.send_close_notify();
        let _ = upr.get_mut().flush();
    }

    /// One request and its response; `Ok(true)`: the connection goes on.
    #[allow(clippy::too_many_arguments)]
    fn one_request(
        &self,
        proxy: &Proxy,
        via: &'static str,
        cli: &mut Reader<rustls::StreamOwned<rustls::ServerConnection, Prefixed>>,
        upr: &mut Reader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
        name: &str,
        port: u16,
        addr: IpAddr,
    ) -> io::Result<bool> {
        if !wait_next(cli, upr) {
            return Ok(false);
        }
        let head = match cli.read_head() {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(false),
            Err(e) => {
                let why = format!("bad request: {e}");
                let _ = respond(cli.get_mut(), 400, "Bad Request", &why);
                return Err(e);
            }
        };
        let mut d = Decision {
            allowed: false,
            via,
            host: name.to_string(),
            addr: Some(addr),
            port,
            bytes_out: 0,
            bytes_in: 0,
            reason: String::new(),
            method: None,
            path: None,
        };
        let text = match String::from_utf8(head) {
            Ok(t) => t,
            Err(_) => {
                d.reason = "a request head that is not UTF-8".into();
                let _ = respond(cli.get_mut(), 400, "Bad Request", &d.reason);
                proxy.report(d);
                return Ok(false);
            }
        };
        let req = match parse_request(&text) {
            Ok(r) => r,
            Err(e) => {
                d.reason = format!("bad request: {e}");
                let _ = respond(cli.get_mut(), 400, "Bad Request", &d.reason);
                proxy.report(d);
                return Ok(false);
            }
        };
        let path = path_of(&req.target).to_string();
        d.method = Some(req.method.clone());
        d.path = Some(path.chars().take(512).collect());
        match self.check(&req, name, port, &path) {
            Ok(()) => {}
            Err((code, why)) => {
                d.reason = why;
                let text = if code == 400 {
                    "Bad Request"
                } else {
                    "Forbidden"
                };
                let _ = respond(cli.get_mut(), code, text, &d.reason);
                proxy.report(d);
                return Ok(false);
            }
        }
        // The request's body framing.
        let body = match request_body(&req) {
            Ok(b) => b,
            Err(why) => {
                d.reason = why;
                let _ = respond(cli.get_mut(), 400, "Bad Request", &d.reason);
                proxy.report(d);
                return Ok(false);
            }
        };
        let (out_head, stripped) = self.rewrite(&req, name);
        if !stripped.is_empty() {
            d.reason = format!(
                "dropped {} set by the client without the secret's placeholder",
                stripped.join(", ")
            );
        }
        let mut close = req.version == "HTTP/1.0"
            || req
                .header("connection")
                .is_some_and(|v| v.to_ascii_lowercase().contains("close"));
        let expect = req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        // Head and body in as few TLS records (and packets) as fit.
        let mut body_sent = false;
        {
            let mut w = io::BufWriter::with_capacity(64 * 1024, upr.get_mut());
            w.write_all(out_head.as_bytes())?;
            d.bytes_out += out_head.len() as u64;
            if !expect {
                d.bytes_out += send_body(cli, &mut w, body)?;
                body_sent = true;
            }
            w.flush()?;
        }
        // Responses: 1xx ones first (passed on at once).
        let result = loop {
            let Some(rhead) = upr.read_head()? else {
                d.reason = format!("{name} closed the connection without an answer");
                let _ = respond(cli.get_mut(), 502, "Bad Gateway", &d.reason);
                proxy.report(d);
                return Ok(false);
            };
            let (status, rh) = match parse_response(&rhead) {
                Ok(x) => x,
                Err(why) => {
                    d.reason = format!("a bad answer from {name}: {why}");
                    let _ = respond(cli.get_mut(), 502, "Bad Gateway", &d.reason);
                    proxy.report(d);
                    return Ok(false);
                }
            };
            if (100..200).contains(&status) && status != 101 {
                cli.get_mut().write_all(&rhead)?;
                cli.get_mut().flush()?;
                d.bytes_in += rhead.len() as u64;
                if status == 100 && !body_sent {
                    let mut w = io::BufWriter::with_capacity(64 * 1024, upr.get_mut());
                    d.bytes_out += send_body(cli, &mut w, body)?;
                    w.flush()?;
                    body_sent = true;
                }
                continue;
            }
            if status == 101 {
                // Upgrades were taken out of the request; a server that
                // switches anyway ends the connection here.
                close = true;
            }
            break (status, rh, rhead);
        };
        let (status, rh, rhead) = result;
        if !body_sent && !matches!(body, Body::None) {
            // The server answered without asking for the body: the
            // client's body is still on its way, so the connection ends.
            close = true;
        }
        let hdr = |k: &str| {
            rh.iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        if hdr("connection")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("close"))
        {
            close = true;
        }
        // The response's framing, decided before a byte of it goes out.
        let no_body =
            req.method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
        let te = hdr("transfer-encoding");
        let cl = hdr("content-length");
        let framing = if no_body {
            Body::None
        } else if !te.is_empty() {
            let last = te
                .last()
                .and_then(|v| v.rsplit(',').next())
                .map(|s| s.trim().to_ascii_lowercase());
            if last.as_deref() == Some("chunked") {
                Body::Chunked
            } else {
                close = true;
                Body::Eof
            }
        } else if let Some(v) = cl.first() {
            match v.parse::<u64>() {
                Ok(n) if cl.iter().all(|x| x == v) => Body::Len(n),
                _ => {
                    d.reason = format!("a bad Content-Length from {name}");
                    let _ = respond(cli.get_mut(), 502, "Bad Gateway", &d.reason);
                    proxy.report(d);
                    return Ok(false);
                }
            }
        } else {
            close = true;
            Body::Eof
        };
        let mut w = io::BufWriter::with_capacity(64 * 1024, cli.get_mut());
        w.write_all(&rhead)?;
        d.bytes_in += rhead.len() as u64;
        d.bytes_in += match framing {
            Body::None => 0,
            Body::Len(n) => copy_len(upr, &mut w, n)?,
            Body::Chunked => copy_chunked(upr, &mut w)?,
            Body::Eof => copy_eof(upr, &mut w)?,
        };
        w.flush()?;
        d.allowed = true;
        proxy.report(d);
        Ok(!close)
    }

    /// The checks on one request: the target's form, the Host header, the
    /// path's segments and the HTTP rules. `Err((status, reason))`.
    fn check(
        &self,
        req: &crate::Request,
        name: &str,
        port: u16,
        path: &str,
    ) -> Result<(), (u16, String)> {
        if !(req.target.starts_with('/') || (req.target == "*" && req.method == "OPTIONS")) {
            return Err((
                400,
                format!(
                    "the request target {:?} is not a path (origin form)",
                    req.target.chars().take(200).collect::<String>()
                ),
            ));
        }
        let hosts = req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
            .count();
        let host = Host::Name(name.to_string());
        match req.header("host") {
            Some(h) if hosts == 1 && same_host(h, &host, port, 443) => {}
            Some(h) if hosts == 1 => {
                return Err((
                    403,
                    format!("the Host header {h:?} is not {name}, the name this TLS connection was made for (no domain fronting)"),
                ))
            }
            _ => {
                return Err((
                    403,
                    format!("a request to {name} without exactly one Host header"),
                ))
            }
        }
        if matches!(req.method.as_str(), "TRACE" | "CONNECT") {
            return Err((
                403,
                format!("{} is refused on hosts airlock terminates", req.method),
            ));
        }
        if has_dot_segment(path) {
            return Err((
                400,
                format!("the path {path:?} has a '.' or '..' segment (plain or percent-encoded)"),
            ));
        }
        let mine: Vec<&HttpRule> = self
            .rules
            .iter()
            .filter(|r| r.host.matches_name(name))
            .collect();
        if !mine.is_empty() && !mine.iter().any(|r| r.matches(&req.method, path)) {
            let list: Vec<String> = mine.iter().map(|r| r.to_string()).collect();
            return Err((
                403,
                format!(
                    "{} {} on {name} is not allowed by any --allow-http rule (the rules for it: {})",
                    req.method,
                    path.chars().take(200).collect::<String>(),
                    list.join("; ")
                ),
            ));
        }
        Ok(())
    }

    /// The head sent upstream, and the credential headers dropped.
    fn rewrite(&self, req: &crate::Request, name: &str) -> (String, Vec<String>) {
        let bound: Vec<&Bound> = self.bound_to(name).collect();
        let mut stripped = Vec::new();
        let mut h = format!("{} {} {}\r\n", req.method, req.target, req.version);
        for (k, v) in &req.headers {
            let lk = k.to_ascii_lowercase();
            if matches!(lk.as_str(), "proxy-connection" | "upgrade") {
                // No websockets through a terminated host.
                continue;
            }
            if lk == "proxy-authorization" {
                stripped.push(k.clone());
                continue;
            }
            let mut val = v.clone();
            let mut had = false;
            for b in &bound {
                if val.contains(&b.placeholder) {
                    val = val.replace(&b.placeholder, &b.value);
                    had = true;
                }
            }
            if lk == "authorization" && !bound.is_empty() {
                if let Some((scheme, cred)) = val.split_once(' ') {
                    if scheme.eq_ignore_ascii_case("basic") {
                        if let Some(mut plain) = b64_decode(cred.trim()) {
                            let mut changed = false;
                            for b in &bound {
                                if contains(&plain, b.placeholder.as_bytes()) {
                                    plain = replace(
                                        &plain,
                                        b.placeholder.as_bytes(),
                                        b.value.as_bytes(),
                                    );
                                    changed = true;
                                }
                            }
                            if changed {
                                val = format!("{scheme} {}", b64_encode(&plain));
                                had = true;
                            }
                        }
                    }
                }
            }
            if !bound.is_empty() && matches!(lk.as_str(), "authorization" | "cookie") && !had {
                stripped.push(k.clone());
                continue;
            }
            h.push_str(k);
            h.push_str(": ");
            h.push_str(&val);
            h.push_str("\r\n");
        }
        h.push_str("\r\n");
        (h, stripped)
    }

    /// The names of the secrets bound to `name` (for messages).
    pub fn secret_names(&self, name: &str) -> Vec<String> {
        self.bound_to(name).map(|b| b.name.clone()).collect()
    }
}

/// Waits for the client's next request on a kept-alive connection;
/// `false` when upstream closed (or spoke unasked) first, or the client
/// stayed silent too long: the client's connection is then closed before
/// it sends a request into a dead upstream connection (clients retry a
/// closed idle connection on a new one; a request lost mid-way they may
/// not).
fn wait_next(
    cli: &mut Reader<rustls::StreamOwned<rustls::ServerConnection, Prefixed>>,
    upr: &mut Reader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
) -> bool {
    use std::os::fd::AsRawFd;
    // Anything from upstream that no request asked for (a response beyond
    // the one that was framed) ends the connection, before any next
    // request: it must never pass for that request's answer.
    if !upstream_quiet(upr) {
        return false;
    }
    if !cli.avail().is_empty() || cli.s.sock.pos < cli.s.sock.pre.len() {
        return true;
    }
    // Plaintext rustls already decrypted.
    let mut b = [0u8; 16 * 1024];
    match cli.s.conn.reader().read(&mut b) {
        Ok(0) => return true,
        Ok(n) => {
            cli.buf.extend_from_slice(&b[..n]);
            return true;
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(_) => return true,
    }
    let mut p = [
        libc::pollfd {
            fd: cli.s.sock.s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: upr.s.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        p[0].revents = 0;
        p[1].revents = 0;
        // SAFETY: two valid pollfds.
        let n = unsafe { libc::poll(p.as_mut_ptr(), 2, IDLE.as_millis() as i32) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return false;
        }
        if p[1].revents != 0 {
            // TLS records from upstream between requests: session tickets
            // (TLS 1.3) are fine; its close, or data nobody asked for, end
            // the connection — checked before the client's request even
            // when that is there too (a request on a closed idle
            // connection is one a client retries).
            let us = &mut upr.s;
            match us.conn.read_tls(&mut us.sock) {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
            match us.conn.process_new_packets() {
                Ok(st) if st.plaintext_bytes_to_read() == 0 && !st.peer_has_closed() => continue,
                _ => return false,
            }
        }
        return p[0].revents != 0;
    }
}

/// Whether upstream has sent nothing since the last response: no bytes
/// left over, none decrypted and waiting, no record with data (or its
/// close) on the socket. TLS 1.3 session tickets are fine.
fn upstream_quiet(
    upr: &mut Reader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
) -> bool {
    use std::os::fd::AsRawFd;
    if !upr.avail().is_empty() {
        return false;
    }
    loop {
        let mut b = [0u8; 1];
        match upr.s.conn.reader().read(&mut b) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            _ => return false,
        }
        let mut p = libc::pollfd {
            fd: upr.s.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; no wait.
        if unsafe { libc::poll(&mut p, 1, 0) } <= 0 || p.revents == 0 {
            return true;
        }
        let us = &mut upr.s;
        match us.conn.read_tls(&mut us.sock) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        match us.conn.process_new_packets() {
            Ok(st) if st.plaintext_bytes_to_read() == 0 && !st.peer_has_closed() => continue,
            _ => return false,
        }
    }
}

fn serial() -> Result<rcgen::SerialNumber, String> {
    let mut b = random(16)?;
    b[0] &= 0x7f;
    b[0] |= 0x01;
    Ok(rcgen::SerialNumber::from_slice(&b))
}

fn path_of(target: &str) -> &str {
    match target.find(['?', '#']) {
        Some(i) => &target[..i],
        None => target,
    }
}

/// Whether a path has a `.` or `..` segment once `%2e`, `%2f` and `%5c`
/// (and `\`) are read as what they encode.
fn has_dot_segment(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let d = lower
        .replace("%2e", ".")
        .replace("%2f", "/")
        .replace("%5c", "/")
        .replace('\\', "/");
    // A segment's `;params` are dropped before the comparison, as Tomcat,
    // Jetty and Spring drop them before normalising (`/..;/admin`).
    d.split('/')
        .map(|s| s.split(';').next().unwrap_or(""))
        .any(|s| s == "." || s == "..")
}

#[derive(Clone, Copy)]
enum Body {
    None,
    Len(u64),
    Chunked,
    /// Until the server closes (responses only).
    Eof,
}

fn request_body(req: &crate::Request) -> Result<Body, String> {
    let te: Vec<&str> = req
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, v)| v.as_str())
        .collect();
    let cl: Vec<&str> = req
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.as_str())
        .collect();
    if !te.is_empty() {
        if !cl.is_empty() {
            return Err("a request with both Transfer-Encoding and Content-Length".into());
        }
        if te.len() != 1 || !te[0].eq_ignore_ascii_case("chunked") {
            return Err("a Transfer-Encoding other than chunked".into());
        }
        return Ok(Body::Chunked);
    }
    match cl.first() {
        None => Ok(Body::None),
        Some(v) => {
            if !cl.iter().all(|x| x == v)
                || v.is_empty()
                || v.len() > 18
                || !v.bytes().all(|b| b.is_ascii_digit())
            {
                return Err("a bad Content-Length".into());
            }
            Ok(Body::Len(v.parse().map_err(|_| "a bad Content-Length")?))
        }
    }
}

fn send_body<R: Read, W: Write>(r: &mut Reader<R>, w: &mut W, b: Body) -> io::Result<u64> {
    match b {
        Body::None => Ok(0),
        Body::Len(n) => copy_len(r, w, n),
        Body::Chunked => copy_chunked(r, w),
        Body::Eof => copy_eof(r, w),
    }
}

fn respond(w: &mut impl Write, code: u16, text: &str, why: &str) -> io::Result<()> {
    let why = why.replace(['\r', '\n'], " ");
    let body = format!("airlock egress: {why}\n");
    let r = format!(
        "HTTP/1.1 {code} {text}\r\nContent-Type: text/plain; charset=utf-8\r\nX-Airlock-Denied: {why}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    w.write_all(r.as_bytes())?;
    w.flush()
}

fn parse_response(head: &[u8]) -> Result<(u16, Vec<(String, String)>), String> {
    let t = String::from_utf8_lossy(head);
    let t = t.strip_suffix("\r\n\r\n").ok_or("no empty line")?;
    let mut lines = t.split("\r\n");
    let sl = lines.next().ok_or("no status line")?;
    let mut p = sl.splitn(3, ' ');
    let v = p.next().unwrap_or("");
    if v != "HTTP/1.1" && v != "HTTP/1.0" {
        return Err(format!("bad status line {sl:?}"));
    }
    let code = p
        .next()
        .and_then(|c| (c.len() == 3).then(|| c.parse::<u16>().ok()).flatten())
        .ok_or_else(|| format!("bad status line {sl:?}"))?;
    let mut h = Vec::new();
    for l in lines {
        let (k, v) = l.split_once(':').ok_or("a bad header line")?;
        h.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok((code, h))
}

/// The client's first bytes (already read), then its stream.
pub(crate) struct Prefixed {
    pre: Vec<u8>,
    pos: usize,
    s: UnixStream,
}

impl Read for Prefixed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.pre.len() {
            let n = buf.len().min(self.pre.len() - self.pos);
            buf[..n].copy_from_slice(&self.pre[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.s.read(buf)
    }
}

impl Write for Prefixed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.s.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.s.flush()
    }
}

/// A buffered reader that also lends its stream for writing.
pub(crate) struct Reader<S> {
    s: S,
    buf: Vec<u8>,
    pos: usize,
}

fn eof_ok(e: &io::Error) -> bool {
    // A peer that closes TCP without TLS's close_notify.
    e.kind() == io::ErrorKind::UnexpectedEof
}

impl<S: Read> Reader<S> {
    fn new(s: S) -> Self {
        Reader {
            s,
            buf: Vec::new(),
            pos: 0,
        }
    }
    fn get_mut(&mut self) -> &mut S {
        &mut self.s
    }
    fn avail(&self) -> &[u8] {
        &self.buf[self.pos..]
    }
    /// More bytes; `Ok(false)` at EOF.
    fn fill(&mut self) -> io::Result<bool> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.s.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if eof_ok(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }
    /// A head up to its empty line (at most 64 KiB); `None` at EOF before
    /// any byte of it.
    fn read_head(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(end) = crate::find_head_end(self.avail()) {
                let h = self.avail()[..end].to_vec();
                self.pos += end;
                return Ok(Some(h));
            }
            if self.avail().len() > crate::MAX_HEAD {
                return Err(io::Error::other("a head over 64 KiB"));
            }
            let more = match self.fill() {
                // A kept-alive client that stays silent between requests:
                // the connection ends quietly.
                Err(e)
                    if self.avail().is_empty()
                        && matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                {
                    return Ok(None)
                }
                r => r?,
            };
            if !more {
                if self.avail().is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the stream ended within a head",
                ));
            }
        }
    }
    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.avail().windows(2).position(|w| w == b"\r\n") {
                let l = self.avail()[..i + 2].to_vec();
                self.pos += i + 2;
                return Ok(l);
            }
            if self.avail().len() > MAX_LINE {
                return Err(io::Error::other("a chunk line over 8 KiB"));
            }
            if !self.fill()? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the stream ended within a chunk line",
                ));
            }
        }
    }
}

fn copy_len<R: Read, W: Write>(r: &mut Reader<R>, w: &mut W, mut n: u64) -> io::Result<u64> {
    let total = n;
    while n > 0 {
        if r.avail().is_empty() && !r.fill()? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the stream ended within a body",
            ));
        }
        let k = (r.avail().len() as u64).min(n) as usize;
        w.write_all(&r.avail()[..k])?;
        r.pos += k;
        n -= k as u64;
    }
    Ok(total)
}

fn copy_eof<R: Read, W: Write>(r: &mut Reader<R>, w: &mut W) -> io::Result<u64> {
    let mut n = 0u64;
    loop {
        if !r.avail().is_empty() {
            let k = r.avail().len();
            w.write_all(r.avail())?;
            r.pos += k;
            n += k as u64;
        }
        if !r.fill()? {
            return Ok(n);
        }
    }
}

fn copy_chunked<R: Read, W: Write>(r: &mut Reader<R>, w: &mut W) -> io::Result<u64> {
    // Every chunk line is parsed strictly and written anew (size only, no
    // extension), and trailers are dropped: nothing of the client's
    // framing reaches the server as it was sent, so a server that reads a
    // bare LF or an odd extension differently cannot see another request
    // in it (red team / review: request capture through chunk lines).
    let bad = || io::Error::other("a bad chunk size line");
    let mut n = 0u64;
    loop {
        let line = r.read_line()?;
        let body = &line[..line.len() - 2];
        if body
            .iter()
            .any(|&b| b < 0x20 && b != b'\t' || b == 0x7f || b >= 0x80)
        {
            return Err(bad());
        }
        let s = std::str::from_utf8(body).map_err(|_| bad())?;
        let (hex, ext) = match s.split_once(';') {
            Some((h, e)) => (h, Some(e)),
            None => (s, None),
        };
        if hex.is_empty() || hex.len() > 15 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        if ext.is_some_and(|e| e.contains(['\r', '\n'])) {
            return Err(bad());
        }
        let size = u64::from_str_radix(hex, 16).map_err(|_| bad())?;
        let out = format!("{size:x}\r\n");
        w.write_all(out.as_bytes())?;
        n += out.len() as u64;
        if size == 0 {
            // Trailers are read (bounded, as lines) and dropped.
            let mut lines = 0;
            loop {
                let t = r.read_line()?;
                if t == b"\r\n" {
                    w.write_all(b"\r\n")?;
                    return Ok(n + 2);
                }
                lines += 1;
                if lines > 64 {
                    return Err(io::Error::other("too many trailer lines"));
                }
            }
        }
        n += copy_len(r, w, size)?;
        let crlf = r.read_line()?;
        if crlf != b"\r\n" {
            return Err(io::Error::other("a chunk without its CRLF"));
        }
        w.write_all(&crlf)?;
        n += 2;
    }
}

fn contains(h: &[u8], n: &[u8]) -> bool {
    !n.is_empty() && h.windows(n.len()).any(|w| w == n)
}

fn replace(h: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(h.len());
    let mut i = 0;
    while i < h.len() {
        if h[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(h[i]);
            i += 1;
        }
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_encode(d: &[u8]) -> String {
    let mut s = String::new();
    for c in d.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                s.push(B64[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        for s in ["", "a", "ab", "abc", "abcd", "user:airlock-secret-00"] {
            assert_eq!(b64_decode(&b64_encode(s.as_bytes())).unwrap(), s.as_bytes());
        }
        assert_eq!(b64_encode(b"user:pass"), "dXNlcjpwYXNz");
        assert!(b64_decode("!!").is_none());
    }

    #[test]
    fn dot_segments() {
        assert!(has_dot_segment("/repos/acme/../evil"));
        assert!(has_dot_segment("/repos/acme/%2e%2E/evil"));
        assert!(has_dot_segment("/repos/acme/..%2fevil"));
        assert!(has_dot_segment("/a/./b"));
        assert!(has_dot_segment("/ok/..;/admin"));
        assert!(has_dot_segment("/ok/%2e%2e;x/admin"));
        assert!(has_dot_segment("/ok/.;/admin"));
        assert!(!has_dot_segment("/ok/a;b/c"));
        assert!(!has_dot_segment("/repos/acme/x..y"));
        assert!(!has_dot_segment("/projects/acme%2Fapp"));
    }

    fn broker() -> (Broker, String) {
        let ph = airlock_spec::net::random_placeholder().unwrap();
        let n = Network {
            mode: airlock_spec::NetMode::Allowlist,
            allow: vec!["api.test".into()],
            secrets: vec![airlock_spec::net::SecretBinding {
                name: "TOKEN".into(),
                hosts: vec!["api.test".into()],
                placeholder: ph.clone(),
                value: airlock_spec::net::SecretValue("s3cret".into()),
            }],
            inspect: vec!["*.insp.test".into()],
            allow_http: vec!["GET rules.test/ok/*".into()],
            ..Network::default()
        };
        (Broker::from_network(&n).unwrap().unwrap(), ph)
    }

    #[test]
    fn which_hosts_are_terminated() {
        let (b, _) = broker();
        assert!(b.terminates("api.test"));
        assert!(b.terminates("a.insp.test"));
        assert!(!b.terminates("insp.test"));
        assert!(b.terminates("rules.test"));
        assert!(!b.terminates("other.test"));
        assert!(b.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let bundle = String::from_utf8(b.trust_bundle()).unwrap();
        assert!(bundle.ends_with(b.ca_pem()));
        assert_eq!(b.secret_names("api.test"), ["TOKEN"]);
        assert!(b.secret_names("a.insp.test").is_empty());
    }

    #[test]
    fn rewrite_swaps_only_on_bound_hosts() {
        let (b, ph) = broker();
        let head = format!(
            "GET /x?t={ph} HTTP/1.1\r\nHost: api.test\r\nAuthorization: Basic {}\r\nX-Key: k-{ph}\r\nCookie: own=1\r\nProxy-Authorization: Basic eDp5\r\nUpgrade: h2c\r\n\r\n",
            b64_encode(format!("user:{ph}").as_bytes())
        );
        let req = parse_request(&head).unwrap();
        let (out, stripped) = b.rewrite(&req, "api.test");
        assert!(
            out.starts_with(&format!("GET /x?t={ph} HTTP/1.1\r\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "Authorization: Basic {}\r\n",
                b64_encode(b"user:s3cret")
            )),
            "{out}"
        );
        assert!(out.contains("X-Key: k-s3cret\r\n"), "{out}");
        assert!(
            !out.contains("Cookie")
                && !out.contains("Proxy-Authorization")
                && !out.contains("Upgrade"),
            "{out}"
        );
        assert_eq!(stripped, ["Cookie", "Proxy-Authorization"]);
        // Elsewhere (an inspected host): nothing swapped, nothing dropped
        // but the proxy's own header.
        let (out, stripped) = b.rewrite(&req, "a.insp.test");
        assert!(!out.contains("s3cret"), "{out}");
        assert!(
            out.contains(&format!("X-Key: k-{ph}")) && out.contains("Cookie: own=1"),
            "{out}"
        );
        assert_eq!(stripped, ["Proxy-Authorization"]);
    }

    #[test]
    fn checks() {
        let (b, _) = broker();
        let req = |h: &str| parse_request(h).unwrap();
        let ok = req("GET /ok/a HTTP/1.1\r\nHost: rules.test\r\n\r\n");
        assert!(b.check(&ok, "rules.test", 443, "/ok/a").is_ok());
        let e = b
            .check(
                &req("POST /ok/a HTTP/1.1\r\nHost: rules.test\r\n\r\n"),
                "rules.test",
                443,
                "/ok/a",
            )
            .unwrap_err();
        assert_eq!(e.0, 403);
        assert!(e.1.contains("GET rules.test/ok/*"), "{}", e.1);
        let e = b
            .check(
                &req("GET /ok/a HTTP/1.1\r\nHost: other.test\r\n\r\n"),
                "rules.test",
                443,
                "/ok/a",
            )
            .unwrap_err();
        assert!(e.1.contains("no domain fronting"), "{}", e.1);
        let e = b
            .check(
                &req("GET /ok/a HTTP/1.1\r\nHost: rules.test\r\nHost: rules.test\r\n\r\n"),
                "rules.test",
                443,
                "/ok/a",
            )
            .unwrap_err();
        assert_eq!(e.0, 403);
        let e = b
            .check(
                &req("GET http://rules.test/ok/a HTTP/1.1\r\nHost: rules.test\r\n\r\n"),
                "rules.test",
                443,
                "/ok/a",
            )
            .unwrap_err();
        assert_eq!(e.0, 400);
        let e = b
            .check(
                &req("TRACE /ok/a HTTP/1.1\r\nHost: rules.test\r\n\r\n"),
                "rules.test",
                443,
                "/ok/a",
            )
            .unwrap_err();
        assert_eq!(e.0, 403);
        // Host with the port, on another port.
        let p = req("GET /ok/a HTTP/1.1\r\nHost: rules.test:8443\r\n\r\n");
        assert!(b.check(&p, "rules.test", 8443, "/ok/a").is_ok());
        assert!(b.check(&p, "rules.test", 443, "/ok/a").is_err());
        // No rule names the host: everything passes there.
        let any = req("DELETE /anything HTTP/1.1\r\nHost: a.insp.test\r\n\r\n");
        assert!(b.check(&any, "a.insp.test", 443, "/anything").is_ok());
    }

    #[test]
    fn framing() {
        let r = |h: &str| request_body(&parse_request(h).unwrap());
        assert!(matches!(
            r("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            Ok(Body::Len(5))
        ));
        assert!(matches!(
            r("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(Body::Chunked)
        ));
        assert!(
            r("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n")
                .is_err()
        );
        assert!(r("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").is_err());
        assert!(r("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n").is_err());
        assert!(r("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n").is_err());
        // Chunked bodies pass with their framing written anew (sizes only,
        // no extensions, no trailers); a bad one stops.
        let mut src = Reader::new(&b"05;name=v\r\nhello\r\n0\r\nT: 1\r\n\r\nNEXT"[..]);
        let mut out = Vec::new();
        copy_chunked(&mut src, &mut out).unwrap();
        assert_eq!(out, b"5\r\nhello\r\n0\r\n\r\n");
        assert_eq!(src.avail(), b"NEXT");
        // Bare LFs where a lenient server would split (review: request
        // capture through chunk lines and trailers).
        for b in [
            &b"5\n\r\nhello\r\n0\r\n\r\n"[..],
            &b"5;x\nPOST /admin HTTP/1.1\r\nhello\r\n0\r\n\r\n"[..],
            &b"5 \r\nhello\r\n0\r\n\r\n"[..],
            &b"5\x7f\r\nhello\r\n0\r\n\r\n"[..],
        ] {
            let mut bad = Reader::new(b);
            assert!(copy_chunked(&mut bad, &mut Vec::new()).is_err(), "{b:?}");
        }
        // A trailer with a bare LF is read and dropped, never forwarded.
        let mut src = Reader::new(&b"0\r\nT: 1\nGET /x HTTP/1.1\r\n\r\n"[..]);
        let mut out = Vec::new();
        copy_chunked(&mut src, &mut out).unwrap();
        assert_eq!(out, b"0\r\n\r\n");
        let mut bad = Reader::new(&b"5\r\nhelloXX0\r\n\r\n"[..]);
        assert!(copy_chunked(&mut bad, &mut Vec::new()).is_err());
        let mut bad = Reader::new(&b"zz\r\n"[..]);
        assert!(copy_chunked(&mut bad, &mut Vec::new()).is_err());
    }
}
