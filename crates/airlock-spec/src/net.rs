//! The network policy: what a sandbox may reach through the egress proxy.
//!
//! Pure: rules as the user writes them (`github.com`, `*.pypi.org:443`,
//! `203.0.113.0/24`), strict host-name canonicalisation, address
//! classification, and the decision rule. The proxy (on the host) asks
//! [`Policy`] and does the resolving and dialling itself.
//!
//! The rule, exactly: a request by **name** passes when a name rule matches
//! the name (and port), the address the proxy resolved is public or covered
//! by a CIDR rule (and port), and no deny rule matches the name or the
//! address; a request by **IP literal** passes only when a CIDR rule
//! matches it and no deny rule does. A CIDR rule never lets a name through
//! on its own. `--net all` stands for a name rule matching every name and
//! every public address; non-public addresses still need a CIDR rule.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The HTTP proxy's port on the sandbox's loopback (HTTP forward + CONNECT).
pub const HTTP_PROXY_PORT: u16 = 3128;
/// The SOCKS5 port on the sandbox's loopback.
pub const SOCKS_PORT: u16 = 1080;

/// The variables that point programs inside at the proxy: the usual
/// `*_PROXY` in both cases, `NO_PROXY` for loopback, and the settings npm,
/// pip, cargo and git read.
pub fn proxy_env() -> Vec<(String, String)> {
    let http = format!("http://127.0.0.1:{HTTP_PROXY_PORT}");
    let socks = format!("socks5h://127.0.0.1:{SOCKS_PORT}");
    let no = "localhost,127.0.0.1,::1".to_string();
    let mut v = Vec::new();
    for (k, val) in [
        ("HTTP_PROXY", &http),
        ("HTTPS_PROXY", &http),
        ("ALL_PROXY", &socks),
        ("NO_PROXY", &no),
    ] {
        v.push((k.to_string(), val.clone()));
        v.push((k.to_ascii_lowercase(), val.clone()));
    }
    for (k, val) in [
        ("npm_config_proxy", &http),
        ("npm_config_https_proxy", &http),
        ("PIP_PROXY", &http),
        ("CARGO_HTTP_PROXY", &http),
        ("GIT_CONFIG_COUNT", &"1".to_string()),
        ("GIT_CONFIG_KEY_0", &"http.proxy".to_string()),
        ("GIT_CONFIG_VALUE_0", &http),
    ] {
        v.push((k.to_string(), val.clone()));
    }
    v
}

/// Which network a sandbox has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// Loopback only; no proxy.
    #[default]
    None,
    /// Everything public, through the proxy (deny rules still apply).
    All,
    /// Only what the allow rules name.
    Allowlist,
}

impl NetMode {
    pub fn name(self) -> &'static str {
        match self {
            NetMode::None => "none",
            NetMode::All => "all",
            NetMode::Allowlist => "allowlist",
        }
    }
}

/// The policy as data (the spec's `network`). In JSON either the string
/// `"none"` / `"all"` or an object with these fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Network {
    pub mode: NetMode,
    /// `NAME`, `*.SUFFIX` or `CIDR`, each with an optional `:PORT`.
    pub allow: Vec<String>,
    /// Same forms; a match wins over every allow rule.
    pub deny: Vec<String>,
    /// `NAME=IP`: the proxy's resolver answers NAME with IP (repeatable).
    pub dns_override: Vec<String>,
    /// Credentials the proxy swaps in for their placeholders, in requests
    /// to their hosts only (TLS terminated there). The values are never
    /// serialized.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretBinding>,
    /// Names (`NAME`, `*.SUFFIX`) whose TLS the proxy terminates without a
    /// secret, to apply the HTTP rules and the Host check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inspect: Vec<String>,
    /// `METHODS HOST/PATH-GLOB` (`GET,HEAD api.github.com/repos/acme/*`):
    /// on a terminated host named by some rule, a request passes only when
    /// one of them matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_http: Vec<String>,
    /// PEM certificates the proxy trusts (besides the system's roots) for
    /// the upstream servers whose TLS it terminates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream_ca: Vec<String>,
    /// Set by the runtime when the proxy terminates TLS: the CA bundle
    /// (the system's roots plus the sandbox's own CA) written inside.
    #[serde(skip)]
    pub trust_bundle: Option<std::sync::Arc<Vec<u8>>>,
}

/// Where a sandbox's CA bundle is written inside (when it has one).
pub const CA_BUNDLE_PATH: &str = "/etc/airlock-ca-bundle.pem";

/// The variables that point TLS clients inside at the CA bundle.
pub const CA_BUNDLE_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "CARGO_HTTP_CAINFO",
    "PIP_CERT",
];

/// A secret's value: never serialized, never printed.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretValue(pub String);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `--secret NAME@HOSTS`: inside, `NAME` holds `placeholder`; the proxy
/// replaces the placeholder by the value in requests to `hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretBinding {
    pub name: String,
    /// `NAME` or `*.SUFFIX` (no port, no address).
    pub hosts: Vec<String>,
    pub placeholder: String,
    #[serde(skip)]
    pub value: SecretValue,
}

/// A fresh placeholder: `airlock-secret-` and 32 random hex digits. An
/// error (never a predictable placeholder) without randomness.
pub fn random_placeholder() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| std::io::Error::new(e.kind(), format!("read /dev/urandom: {e}")))?;
    let mut s = String::from("airlock-secret-");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    Ok(s)
}

/// Parses `NAME@HOST1,HOST2` (the `--secret` form).
pub fn parse_secret_arg(input: &str) -> Result<(String, Vec<String>), NetError> {
    let err = |why: &str| NetError {
        what: "--secret",
        input: input.to_string(),
        why: why.to_string(),
    };
    let (name, hosts) = input
        .split_once('@')
        .ok_or_else(|| err("expected NAME@HOST[,HOST...]"))?;
    let hosts: Vec<String> = hosts.split(',').map(|h| h.trim().to_string()).collect();
    if hosts.iter().any(|h| h.is_empty()) {
        return Err(err("an empty host"));
    }
    Ok((name.to_string(), hosts))
}

/// A host pattern of a secret, `--inspect-host` or HTTP rule: `NAME` or
/// `*.SUFFIX`, nothing else.
pub fn parse_name_pattern(what: &'static str, input: &str) -> Result<Target, NetError> {
    let r = parse_rule(input)?;
    match (&r.target, r.port) {
        (Target::Cidr(_), _) => Err(NetError {
            what,
            input: input.into(),
            why: "a name or *.SUFFIX is needed here (TLS is terminated by name), not an address"
                .into(),
        }),
        (_, Some(_)) => Err(NetError {
            what,
            input: input.into(),
            why: "no :PORT here (every port of the name)".into(),
        }),
        (t, None) => Ok(t.clone()),
    }
}

impl Target {
    /// Whether a (canonical) name matches a name target.
    pub fn matches_name(&self, name: &str) -> bool {
        name_matches(self, name)
    }
}

/// One `--allow-http` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRule {
    /// Upper-case methods; empty: any.
    pub methods: Vec<String>,
    pub host: Target,
    /// A glob on the path (without the query): `*` matches any run of
    /// characters, `/` included.
    pub path: String,
}

impl std::fmt::Display for HttpRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = if self.methods.is_empty() {
            "*".to_string()
        } else {
            self.methods.join(",")
        };
        let h = match &self.host {
            Target::Name(n) => n.clone(),
            Target::Below(s) => format!("*.{s}"),
            Target::Cidr(c) => c.to_string(),
        };
        write!(f, "{m} {h}{}", self.path)
    }
}

impl HttpRule {
    pub fn matches(&self, method: &str, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && glob(&self.path, path)
    }
}

/// `*` matches any run of bytes; everything else itself.
pub fn glob(pattern: &str, s: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Parses `METHODS HOST/PATH` (`GET,HEAD api.github.com/repos/acme/*`;
/// `*` for any method; without a path: every path).
pub fn parse_http_rule(input: &str) -> Result<HttpRule, NetError> {
    let err = |why: &str| NetError {
        what: "--allow-http rule",
        input: input.to_string(),
        why: why.to_string(),
    };
    let (m, rest) = input.trim().split_once(' ').ok_or_else(|| {
        err("expected 'METHODS HOST/PATH' (e.g. 'GET,HEAD api.github.com/repos/acme/*')")
    })?;
    let rest = rest.trim();
    let methods = if m == "*" {
        Vec::new()
    } else {
        let v: Vec<String> = m
            .split(',')
            .map(|x| x.trim().to_ascii_uppercase())
            .collect();
        if v.iter()
            .any(|x| x.is_empty() || !x.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(err("methods are words like GET, separated by commas, or *"));
        }
        v
    };
    let (h, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/*".to_string()),
    };
    if path
        .bytes()
        .any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#')
    {
        return Err(err("the path glob has a space, control byte, '?' or '#'"));
    }
    let host = parse_name_pattern("--allow-http rule", h)?;
    Ok(HttpRule {
        methods,
        host,
        path,
    })
}

/// Validates what the TLS-terminating part of the proxy is given.
pub fn check_broker(n: &Network) -> Result<(), NetError> {
    let bad = |what: &'static str, input: &str, why: &str| NetError {
        what,
        input: input.to_string(),
        why: why.to_string(),
    };
    let any = !n.secrets.is_empty() || !n.inspect.is_empty() || !n.allow_http.is_empty();
    if any && n.mode == NetMode::None {
        return Err(bad(
            "network",
            "none",
            "--secret, --inspect-host and --allow-http need a network (--allow-host)",
        ));
    }
    let mut names = Vec::new();
    for s in &n.secrets {
        // The name only (never the value) goes into messages.
        let ok = !s.name.is_empty()
            && !s.name.as_bytes()[0].is_ascii_digit()
            && s.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(bad(
                "--secret name",
                &s.name,
                "a variable name: letters, digits and '_'",
            ));
        }
        if names.contains(&&s.name) {
            return Err(bad("--secret name", &s.name, "given twice"));
        }
        names.push(&s.name);
        if s.hosts.is_empty() {
            return Err(bad("--secret", &s.name, "bound to no host"));
        }
        for h in &s.hosts {
            parse_name_pattern("--secret host", h)?;
        }
        let ph = s.placeholder.strip_prefix("airlock-secret-").unwrap_or("");
        if ph.len() < 32 || !ph.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(
                "--secret placeholder",
                &s.placeholder,
                "not one airlock made",
            ));
        }
        let v = &s.value.0;
        if v.is_empty() {
            return Err(bad("--secret", &s.name, "its value is empty"));
        }
        if v.len() > 16 * 1024 {
            return Err(bad("--secret", &s.name, "its value is over 16 KiB"));
        }
        if v.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
            return Err(bad(
                "--secret",
                &s.name,
                "its value has a control character (a line break?): it would not fit in a header",
            ));
        }
        if v.contains(&s.placeholder) || s.placeholder.contains(v.as_str()) {
            return Err(bad(
                "--secret",
                &s.name,
                "its value overlaps its placeholder",
            ));
        }
    }
    for h in &n.inspect {
        parse_name_pattern("--inspect-host", h)?;
    }
    for r in &n.allow_http {
        parse_http_rule(r)?;
    }
    for c in &n.upstream_ca {
        if !c.contains("-----BEGIN CERTIFICATE-----") {
            return Err(bad("--upstream-ca", "", "no PEM certificate in it"));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkObj {
    #[serde(default)]
    mode: Option<NetMode>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    dns_override: Vec<String>,
    #[serde(default)]
    secrets: Vec<SecretBinding>,
    #[serde(default)]
    inspect: Vec<String>,
    #[serde(default)]
    allow_http: Vec<String>,
    #[serde(default)]
    upstream_ca: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NetworkRepr {
    Mode(NetMode),
    Obj(NetworkObj),
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Network, D::Error> {
        Ok(match NetworkRepr::deserialize(d)? {
            NetworkRepr::Mode(mode) => Network {
                mode,
                ..Network::default()
            },
            NetworkRepr::Obj(o) => Network {
                // Rules without a mode mean an allowlist; an empty object
                // means nothing (never "everything").
                mode: o
                    .mode
                    .unwrap_or(if o.allow.is_empty() && o.deny.is_empty() {
                        NetMode::None
                    } else {
                        NetMode::Allowlist
                    }),
                allow: o.allow,
                deny: o.deny,
                dns_override: o.dns_override,
                secrets: o.secrets,
                inspect: o.inspect,
                allow_http: o.allow_http,
                upstream_ca: o.upstream_ca,
                trust_bundle: None,
            },
        })
    }
}

/// Why a rule, name or override is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: {why}")]
pub struct NetError {
    pub what: &'static str,
    pub input: String,
    pub why: String,
}

/// A host as a request names it, canonical.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// Lower-case ASCII (IDNA), no trailing dot, valid labels.
    Name(String),
    /// An IP literal in its one canonical form (dotted quad, or IPv6).
    Ip(IpAddr),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(a) => write!(f, "{a}"),
        }
    }
}

fn is_numeric_label(l: &str) -> bool {
    let l = l.as_bytes();
    !l.is_empty()
        && (l.iter().all(u8::is_ascii_digit)
            || (l.len() >= 2 && l[0] == b'0' && (l[1] | 0x20) == b'x')
                && l[2..].iter().all(u8::is_ascii_hexdigit))
}

/// Strict canonicalisation of a host as a client wrote it. Refuses NUL,
/// CR/LF and every other control or space, `%` (IPv6 zone ids), `/ \ @`,
/// empty labels, labels over 63 bytes, names over 253, and every IPv4 form
/// other than the dotted quad of four decimal numbers without leading
/// zeros (`2130706433`, `127.1`, `0x7f.1`, `017700000001` are refused, not
/// read as addresses). Lower-cases, applies IDNA (to the `xn--` form), and
/// drops one trailing dot. `[v6]` and bare IPv6 become [`Host::Ip`].
pub fn canonical_host(input: &str) -> Result<Host, String> {
    if input.is_empty() {
        return Err("empty".into());
    }
    if let Some(b) = input
        .bytes()
        .find(|&b| b < 0x21 || b == 0x7f || matches!(b, b'%' | b'/' | b'\\' | b'@' | b'#' | b'?'))
    {
        return Err(match b {
            0 => "contains a NUL byte".into(),
            b'\r' | b'\n' => "contains CR or LF".into(),
            b'%' => "contains '%' (IPv6 zone ids and escapes are refused)".into(),
            b' ' => "contains a space".into(),
            _ => format!("contains the byte 0x{b:02x}"),
        });
    }
    if let Some(inner) = input.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| "unbalanced '['".to_string())?;
        return inner
            .parse::<Ipv6Addr>()
            .map(|a| Host::Ip(IpAddr::V6(a)))
            .map_err(|_| "not an IPv6 address inside [ ]".into());
    }
    if input.contains(':') {
        return input
            .parse::<Ipv6Addr>()
            .map(|a| Host::Ip(IpAddr::V6(a)))
            .map_err(|_| "contains ':' but is not an IPv6 address".into());
    }
    let ascii = if input.is_ascii() {
        input.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii_strict(input)
            .map_err(|_| "not a valid international name".to_string())?
    };
    let name = ascii.strip_suffix('.').unwrap_or(&ascii);
    if name.is_empty() {
        return Err("empty".into());
    }
    let labels: Vec<&str> = name.split('.').collect();
    // A numeric last label is an address or nothing: only the canonical
    // dotted quad is one.
    if labels.last().is_some_and(|l| is_numeric_label(l)) {
        let canonical = labels.len() == 4
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 3
                    && l.bytes().all(|b| b.is_ascii_digit())
                    && (l.len() == 1 || !l.starts_with('0'))
                    && l.parse::<u16>().is_ok_and(|v| v <= 255)
            });
        if !canonical {
            return Err(
                "not a canonical IPv4 address (decimal, octal, hex and short forms are refused)"
                    .into(),
            );
        }
        return name
            .parse::<Ipv4Addr>()
            .map(|a| Host::Ip(IpAddr::V4(a)))
            .map_err(|_| "not an IPv4 address".into());
    }
    if name.len() > 253 {
        return Err("longer than 253 bytes".into());
    }
    for l in &labels {
        if l.is_empty() {
            return Err("has an empty label".into());
        }
        if l.len() > 63 {
            return Err("has a label longer than 63 bytes".into());
        }
        if !l
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, '-', '_' and '.' are allowed".into());
        }
        if l.starts_with('-') || l.ends_with('-') {
            return Err("a label starts or ends with '-'".into());
        }
    }
    Ok(Host::Name(name.to_string()))
}

/// An address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What a rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Exactly this name.
    Name(String),
    /// Any name strictly below this suffix (`*.example.com`: `a.example.com`,
    /// `a.b.example.com`; not `example.com`, not `evilexample.com`).
    Below(String),
    Cidr(Cidr),
}

/// One allow or deny rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub target: Target,
    /// `None`: every port.
    pub port: Option<u16>,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Target::Name(n) => f.write_str(n)?,
            Target::Below(s) => write!(f, "*.{s}")?,
            Target::Cidr(c) if c.addr.is_ipv6() && self.port.is_some() => write!(f, "[{c}]")?,
            Target::Cidr(c) => write!(f, "{c}")?,
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {p:?} is not a number"));
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port {p} is not within 1-65535")),
        Ok(v) => Ok(v),
    }
}

fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr = match canonical_host(a)? {
        Host::Ip(ip) => ip,
        Host::Name(_) => return Err("not an address".into()),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match len {
        None => max,
        Some(l) => {
            if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("prefix length {l:?} is not a number"));
            }
            let v: u8 = l
                .parse()
                .map_err(|_| format!("prefix length {l} is too large"))?;
            if v > max {
                return Err(format!("prefix length {v} is over {max}"));
            }
            v
        }
    };
    let c = Cidr { addr, prefix };
    // Host bits set: the user meant something else; say so.
    let base = Cidr { addr, prefix };
    let net_ok = match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & !m == 0
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & !m == 0
        }
    };
    if !net_ok {
        return Err(format!("{base} has host bits set"));
    }
    Ok(c)
}

/// Parses one rule: `NAME`, `*.SUFFIX`, `ADDR`, `ADDR/LEN`, each with an
/// optional `:PORT` (IPv6 with a port in brackets: `[2001:db8::/32]:443`).
pub fn parse_rule(input: &str) -> Result<Rule, NetError> {
    let err = |why: String| NetError {
        what: "host rule",
        input: input.to_string(),
        why,
    };
    if input.is_empty() {
        return Err(err("empty".into()));
    }
    // Split off the port.
    let (body, port) = if let Some(rest) = input.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| err("unbalanced '['".into()))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| err("expected ':PORT' after ']'".into()))?,
            ),
        };
        (inner, port)
    } else if input.matches(':').count() > 1 {
        (input, None) // bare IPv6, no port
    } else {
        match input.rsplit_once(':') {
            Some((b, p)) => (b, Some(p)),
            None => (input, None),
        }
    };
    let port = port.map(parse_port).transpose().map_err(err)?;
    if body.contains('/') || body.contains(':') {
        let c = parse_cidr(body).map_err(err)?;
        return Ok(Rule {
            target: Target::Cidr(c),
            port,
        });
    }
    if let Some(suffix) = body.strip_prefix("*.") {
        return match canonical_host(suffix).map_err(err)? {
            Host::Name(n) => Ok(Rule {
                target: Target::Below(n),
                port,
            }),
            _ => Err(err("'*.' must be followed by a name".into())),
        };
    }
    if body.contains('*') {
        return Err(err(
            "'*' is only allowed as a whole first label ('*.example.com')".into(),
        ));
    }
    match canonical_host(body).map_err(err)? {
        Host::Name(n) => Ok(Rule {
            target: Target::Name(n),
            port,
        }),
        Host::Ip(ip) => Ok(Rule {
            target: Target::Cidr(Cidr {
                addr: ip,
                prefix: if ip.is_ipv4() { 32 } else { 128 },
            }),
            port,
        }),
    }
}

/// Parses `NAME=IP` (a name, not a pattern; the address canonical).
pub fn parse_dns_override(input: &str) -> Result<(String, IpAddr), NetError> {
    let err = |why: String| NetError {
        what: "--dns-override",
        input: input.to_string(),
        why,
    };
    let (n, a) = input
        .split_once('=')
        .ok_or_else(|| err("the form is NAME=IP".into()))?;
    let name = match canonical_host(n).map_err(&err)? {
        Host::Name(n) => n,
        Host::Ip(_) => return Err(err("NAME is an address".into())),
    };
    let ip = match canonical_host(a).map_err(&err)? {
        Host::Ip(ip) => ip,
        Host::Name(_) => return Err(err("IP is not an address".into())),
    };
    Ok((name, ip))
}

/// Why an address is not public, if it is not: loopback, private, link-
/// local (the cloud metadata address among them), CGNAT, multicast,
/// reserved and documentation ranges, and IPv6 forms that embed an IPv4
/// address (mapped, compatible, NAT64, 6to4, Teredo).
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            Some(match o {
                [169, 254, 169, 254] => "the cloud metadata address",
                [0, ..] => "\"this network\" (0.0.0.0/8)",
                [10, ..] => "private (10.0.0.0/8)",
                [100, b, ..] if (64..128).contains(&b) => "carrier-grade NAT (100.64.0.0/10)",
                [127, ..] => "loopback",
                [169, 254, ..] => "link-local",
                [172, b, ..] if (16..32).contains(&b) => "private (172.16.0.0/12)",
                [192, 0, 0, _] => "IETF protocol assignments (192.0.0.0/24)",
                [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation",
                [192, 88, 99, _] => "6to4 relay anycast",
                [192, 168, ..] => "private (192.168.0.0/16)",
                [198, b, ..] if b == 18 || b == 19 => "benchmarking (198.18.0.0/15)",
                [a0, ..] if (224..240).contains(&a0) => "multicast",
                [a0, ..] if a0 >= 240 => "reserved or broadcast",
                _ => return None,
            })
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            let v = u128::from(a);
            Some(if a.is_loopback() {
                "loopback"
            } else if a.is_unspecified() {
                "unspecified"
            } else if s[0] == 0
                && s[1] == 0
                && s[2] == 0
                && s[3] == 0
                && s[4] == 0
                && s[5] == 0xffff
            {
                "IPv4-mapped"
            } else if v >> 32 == 0 {
                "IPv4-compatible"
            } else if s[0] == 0x64 && s[1] == 0xff9b {
                "NAT64"
            } else if s[0] == 0x2002 {
                "6to4"
            } else if s[0] == 0x2001 && s[1] == 0 {
                "Teredo"
            } else if s[0] == 0x2001 && s[1] == 0xdb8 {
                "documentation"
            } else if s[0] & 0xfe00 == 0xfc00 {
                "unique local (private)"
            } else if s[0] & 0xffc0 == 0xfe80 || s[0] & 0xffc0 == 0xfec0 {
                "link-local"
            } else if s[0] & 0xff00 == 0xff00 {
                "multicast"
            } else if s[0] & 0xe000 != 0x2000 {
                "not global unicast"
            } else {
                return None;
            })
        }
    }
}

/// The compiled policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    pub mode: NetMode,
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
    pub overrides: Vec<(String, IpAddr)>,
}

/// A refusal, with the reason the client hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn port_ok(r: &Rule, port: u16) -> bool {
    r.port.is_none_or(|p| p == port)
}

fn name_matches(t: &Target, name: &str) -> bool {
    match t {
        Target::Name(n) => n == name,
        Target::Below(s) => {
            name.len() > s.len() + 1
                && name.ends_with(s.as_str())
                && name.as_bytes()[name.len() - s.len() - 1] == b'.'
        }
        Target::Cidr(_) => false,
    }
}

fn cidr_matches(t: &Target, ip: IpAddr) -> bool {
    matches!(t, Target::Cidr(c) if c.contains(ip))
}

impl Policy {
    /// Compiles (and so validates) a spec's network.
    pub fn compile(n: &Network) -> Result<Policy, NetError> {
        let mut p = Policy {
            mode: n.mode,
            ..Policy::default()
        };
        for r in &n.allow {
            p.allow.push(parse_rule(r)?);
        }
        for r in &n.deny {
            p.deny.push(parse_rule(r)?);
        }
        for o in &n.dns_override {
            p.overrides.push(parse_dns_override(o)?);
        }
        check_broker(n)?;
        if n.mode == NetMode::None && !(n.allow.is_empty() && n.deny.is_empty()) {
            return Err(NetError {
                what: "network",
                input: "none".into(),
                why: "--net none takes no --allow-host / --deny-host rules".into(),
            });
        }
        Ok(p)
    }

    /// Whether the sandbox has the proxy at all.
    pub fn enabled(&self) -> bool {
        self.mode != NetMode::None
    }

    /// The first step for a request by name: a name rule must match and no
    /// deny name rule may. Nothing is resolved before this passes.
    pub fn check_name(&self, name: &str, port: u16) -> Result<(), Denied> {
        if self.mode == NetMode::None {
            return Err(Denied("the sandbox has no network (--net none)".into()));
        }
        if let Some(r) = self
            .deny
            .iter()
            .find(|r| port_ok(r, port) && name_matches(&r.target, name))
        {
            return Err(Denied(format!(
                "{name}:{port} is denied by --deny-host {r}"
            )));
        }
        if self.mode == NetMode::All
            || self
                .allow
                .iter()
                .any(|r| port_ok(r, port) && name_matches(&r.target, name))
        {
            return Ok(());
        }
        Err(Denied(format!(
            "{name}:{port} is not allowed (no --allow-host rule matches it)"
        )))
    }

    /// The second step: an address the name resolved to.
    pub fn check_resolved(&self, name: &str, ip: IpAddr, port: u16) -> Result<(), Denied> {
        if let Some(r) = self
            .deny
            .iter()
            .find(|r| port_ok(r, port) && cidr_matches(&r.target, ip))
        {
            return Err(Denied(format!(
                "{name} resolves to {ip}, which is denied by --deny-host {r}"
            )));
        }
        match non_public(ip) {
            None => Ok(()),
            Some(class) => {
                if self
                    .allow
                    .iter()
                    .any(|r| port_ok(r, port) && cidr_matches(&r.target, ip))
                {
                    Ok(())
                } else {
                    Err(Denied(format!(
                        "{name} resolves to {ip} ({class}), which no CIDR rule allows"
                    )))
                }
            }
        }
    }

    /// An address of the host the proxy runs on (one of its interfaces'):
    /// it counts as non-public whatever its range, since services bound to
    /// all interfaces answer there. Only a CIDR rule lets it through.
    pub fn check_host_addr(&self, ip: IpAddr, port: u16) -> Result<(), Denied> {
        if self
            .allow
            .iter()
            .any(|r| port_ok(r, port) && cidr_matches(&r.target, ip))
        {
            return Ok(());
        }
        Err(Denied(format!(
            "{}:{port} is an address of this host, which no CIDR rule allows",
            Host::Ip(ip)
        )))
    }

    /// Whether some deny rule names names (not addresses).
    pub fn denies_names(&self) -> bool {
        self.deny
            .iter()
            .any(|r| !matches!(r.target, Target::Cidr(_)))
    }

    /// A name the client showed inside a tunnel opened to an IP literal
    /// (its TLS server name or HTTP Host): deny rules by name hold there
    /// too.
    pub fn check_denied_name(&self, name: &str, port: u16) -> Result<(), Denied> {
        match self
            .deny
            .iter()
            .find(|r| port_ok(r, port) && name_matches(&r.target, name))
        {
            Some(r) => Err(Denied(format!(
                "{name}:{port} (named inside the tunnel) is denied by --deny-host {r}"
            ))),
            None => Ok(()),
        }
    }

    /// A request by IP literal.
    pub fn check_ip(&self, ip: IpAddr, port: u16) -> Result<(), Denied> {
        if self.mode == NetMode::None {
            return Err(Denied("the sandbox has no network (--net none)".into()));
        }
        let shown = Host::Ip(ip);
        if let Some(r) = self
            .deny
            .iter()
            .find(|r| port_ok(r, port) && cidr_matches(&r.target, ip))
        {
            return Err(Denied(format!(
                "{shown}:{port} is denied by --deny-host {r}"
            )));
        }
        if self
            .allow
            .iter()
            .any(|r| port_ok(r, port) && cidr_matches(&r.target, ip))
        {
            return Ok(());
        }
        if self.mode == NetMode::All && non_public(ip).is_none() {
            return Ok(());
        }
        Err(Denied(match non_public(ip) {
            Some(class) => {
                format!("{shown}:{port} is an IP literal ({class}) that no CIDR rule allows")
            }
            None => format!("{shown}:{port} is an IP literal that no CIDR rule allows"),
        }))
    }

    /// The `--dns-override` answer for a name, if any.
    pub fn overridden(&self, name: &str) -> Vec<IpAddr> {
        self.overrides
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .collect()
    }
}

/// Transparent mode: the address pools the sandbox's DNS stub may answer
/// from, in order of preference. The first that no CIDR rule (allow or
/// deny) overlaps is used, so that an address a rule names is never one
/// the stub hands out.
pub const TRANSPARENT_POOLS: [(Ipv4Addr, u8); 2] = [
    // The benchmarking range: never a real destination.
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    // Carrier-grade NAT.
    (Ipv4Addr::new(100, 64, 0, 0), 10),
];

/// At most this many ports are caught transparently.
pub const MAX_TRANSPARENT_PORTS: usize = 16;

impl Cidr {
    /// Whether the two blocks share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

impl Policy {
    /// Transparent mode's address pool: the first of [`TRANSPARENT_POOLS`]
    /// that no CIDR rule overlaps (`None`: every one is taken by a rule,
    /// and transparent mode is off).
    pub fn transparent_pool(&self) -> Option<Cidr> {
        TRANSPARENT_POOLS
            .iter()
            .map(|&(a, prefix)| Cidr {
                addr: IpAddr::V4(a),
                prefix,
            })
            .find(|pool| {
                !self
                    .allow
                    .iter()
                    .chain(&self.deny)
                    .any(|r| matches!(&r.target, Target::Cidr(c) if c.overlaps(pool)))
            })
    }

    /// The TCP ports transparent mode catches: 80, 443 and every port an
    /// allow rule for a name names (at most [`MAX_TRANSPARENT_PORTS`]).
    pub fn transparent_ports(&self) -> Vec<u16> {
        let mut v = vec![80, 443];
        if self.mode == NetMode::Allowlist {
            for r in &self.allow {
                if let (Target::Name(_) | Target::Below(_), Some(p)) = (&r.target, r.port) {
                    if !v.contains(&p) && v.len() < MAX_TRANSPARENT_PORTS {
                        v.push(p);
                    }
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pol(mode: NetMode, allow: &[&str], deny: &[&str]) -> Policy {
        Policy::compile(&Network {
            mode,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            dns_override: vec![],
            ..Network::default()
        })
        .unwrap()
    }

    #[test]
    fn transparent_pool_and_ports() {
        let p = pol(
            NetMode::Allowlist,
            &["a.com", "*.b.org:8443", "c.net:443"],
            &[],
        );
        assert_eq!(p.transparent_ports(), vec![80, 443, 8443]);
        assert_eq!(p.transparent_pool().unwrap().to_string(), "198.18.0.0/15");
        // A rule inside the first pool moves it to the second; one over
        // both leaves none.
        let p = pol(NetMode::Allowlist, &["198.19.1.0/24"], &[]);
        assert_eq!(p.transparent_pool().unwrap().to_string(), "100.64.0.0/10");
        let p = pol(NetMode::Allowlist, &["a.com"], &["0.0.0.0/0"]);
        assert_eq!(p.transparent_pool(), None);
        let p = pol(NetMode::All, &["x.com:8080"], &[]);
        assert_eq!(p.transparent_ports(), vec![80, 443]);
    }

    #[test]
    fn canonical_names() {
        let n = |s: &str| canonical_host(s);
        assert_eq!(n("GitHub.COM.").unwrap(), Host::Name("github.com".into()));
        assert_eq!(
            n("bücher.de").unwrap(),
            Host::Name("xn--bcher-kva.de".into())
        );
        assert_eq!(
            n("1.2.3.4").unwrap(),
            Host::Ip(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)))
        );
        assert_eq!(n("[::1]").unwrap(), Host::Ip("::1".parse().unwrap()));
        for bad in [
            "",
            ".",
            "a..b",
            "github.com..",
            "a\0b.com",
            "a.com\r\nX: y",
            "a\nb",
            "fe80::1%eth0",
            "[fe80::1%25eth0]",
            "2130706433",
            "127.1",
            "0x7f.1",
            "0x7f000001",
            "017700000001",
            "0177.0.0.1",
            "127.0.0.01",
            "127.0.0.1.",
            "1.2.3.256",
            "1.2.3.4.5",
            "a b.com",
            "-a.com",
            "a/b.com",
            "user@a.com",
            "a.com:80",
            "[::1",
        ] {
            // "127.0.0.1." is canonical after the dot is dropped: allowed
            // only as the address itself.
            if bad == "127.0.0.1." {
                assert_eq!(
                    n(bad).unwrap(),
                    Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    "{bad:?}"
                );
                continue;
            }
            assert!(n(bad).is_err(), "{bad:?} was accepted: {:?}", n(bad));
        }
        assert!(n(&format!("{}.com", "a".repeat(64))).is_err());
    }

    #[test]
    fn rules_parse() {
        let r = parse_rule("*.pypi.org:443").unwrap();
        assert_eq!(r.target, Target::Below("pypi.org".into()));
        assert_eq!(r.port, Some(443));
        assert_eq!(r.to_string(), "*.pypi.org:443");
        let r = parse_rule("203.0.113.0/24").unwrap();
        assert_eq!(r.to_string(), "203.0.113.0/24");
        let r = parse_rule("[2001:db8::/32]:8443").unwrap();
        assert_eq!(r.port, Some(8443));
        assert_eq!(parse_rule("2001:db8::/32").unwrap().port, None);
        assert_eq!(
            parse_rule("1.2.3.4").unwrap().target,
            Target::Cidr(Cidr {
                addr: "1.2.3.4".parse().unwrap(),
                prefix: 32
            })
        );
        for bad in [
            "",
            "*",
            "*.",
            "a.*.com",
            "git*hub.com",
            "x.com:0",
            "x.com:65536",
            "x.com:",
            "x.com:ab",
            "10.0.0.1/33",
            "10.0.0.1/8",
            "127.1/8",
            "x.com/8",
            "a\nb.com",
        ] {
            assert!(parse_rule(bad).is_err(), "{bad:?}");
        }
        assert!(parse_dns_override("a.test=10.1.2.3").is_ok());
        assert!(parse_dns_override("a.test=0x7f.1").is_err());
        assert!(parse_dns_override("*.a.test=1.2.3.4").is_err());
        assert!(parse_dns_override("a.test").is_err());
    }

    #[test]
    fn wildcard_is_strictly_below() {
        let p = pol(NetMode::Allowlist, &["*.example.com"], &[]);
        assert!(p.check_name("a.example.com", 443).is_ok());
        assert!(p.check_name("a.b.example.com", 80).is_ok());
        assert!(p.check_name("example.com", 443).is_err());
        assert!(p.check_name("evilexample.com", 443).is_err());
        assert!(p.check_name("example.com.evil.org", 443).is_err());
    }

    #[test]
    fn the_rule() {
        let p = pol(
            NetMode::Allowlist,
            &[
                "github.com:443",
                "*.test",
                "10.9.0.0/16:80",
                "203.0.113.0/24",
            ],
            &["bad.test", "10.9.9.0/24"],
        );
        // Names: name rule and port.
        assert!(p.check_name("github.com", 443).is_ok());
        assert!(p.check_name("github.com", 80).is_err());
        assert!(p.check_name("bad.test", 80).unwrap_err().0.contains("deny"));
        // A CIDR rule never lets a name through on its own.
        assert!(p.check_name("foo.example", 80).is_err());
        // Resolved addresses: public, or covered by a CIDR rule (and port).
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p.check_resolved("a.test", ip("93.184.216.34"), 80).is_ok());
        assert!(p.check_resolved("a.test", ip("127.0.0.1"), 80).is_err());
        assert!(p
            .check_resolved("a.test", ip("169.254.169.254"), 80)
            .is_err());
        assert!(p.check_resolved("a.test", ip("10.9.1.1"), 80).is_ok());
        assert!(p.check_resolved("a.test", ip("10.9.1.1"), 81).is_err());
        assert!(p.check_resolved("a.test", ip("10.9.9.1"), 80).is_err());
        assert!(p
            .check_resolved("a.test", ip("::ffff:93.184.216.34"), 80)
            .is_err());
        // IP literals: only a CIDR rule.
        assert!(p.check_ip(ip("203.0.113.7"), 22).is_ok());
        assert!(p.check_ip(ip("93.184.216.34"), 80).is_err());
        assert!(p.check_ip(ip("10.9.9.1"), 80).is_err());
        assert!(p.check_ip(ip("10.9.8.1"), 80).is_ok());
        // Nothing for none; an empty allowlist allows nothing.
        let none = pol(NetMode::None, &[], &[]);
        assert!(none.check_name("github.com", 443).is_err());
        let empty = pol(NetMode::Allowlist, &[], &[]);
        assert!(empty.check_name("github.com", 443).is_err());
        assert!(empty.check_ip(ip("93.184.216.34"), 443).is_err());
        // All: public names and addresses, never private ones.
        let all = pol(NetMode::All, &[], &["*.evil.test"]);
        assert!(all.check_name("github.com", 443).is_ok());
        assert!(all.check_name("x.evil.test", 443).is_err());
        assert!(all.check_ip(ip("93.184.216.34"), 443).is_ok());
        assert!(all.check_ip(ip("127.0.0.1"), 443).is_err());
        assert!(all.check_resolved("x", ip("192.168.1.1"), 443).is_err());
    }

    #[test]
    fn classes() {
        let np = |s: &str| non_public(s.parse().unwrap());
        for s in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(np(s).is_some(), "{s} counted as public");
        }
        for s in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
        ] {
            assert_eq!(np(s), None, "{s}");
        }
    }

    proptest::proptest! {
        /// Whatever a client writes: an accepted name is plain (letters,
        /// digits, '-', '_', dots between non-empty labels, no numeric
        /// last label), and an accepted IPv4 literal was written exactly
        /// as the address prints — no other spelling of an address gets in.
        /// Number-like hosts in every notation: only the dotted quad of
        /// canonical decimals is an address; nothing is a name.
        #[test]
        fn numeric_hosts(input in "(0[xX])?[0-9a-f]{1,4}(\\.(0[xX])?[0-9]{1,4}){0,4}\\.?") {
            match canonical_host(&input) {
                Ok(Host::Ip(IpAddr::V4(a))) => {
                    let written = input.strip_suffix('.').unwrap_or(&input);
                    proptest::prop_assert_eq!(written, a.to_string());
                }
                Ok(Host::Name(n)) => {
                    proptest::prop_assert!(!is_numeric_label(n.rsplit('.').next().unwrap_or("")), "{}", n);
                }
                Ok(other) => proptest::prop_assert!(false, "{:?}", other),
                Err(_) => {}
            }
        }

        #[test]
        fn canonical_hosts_are_plain(input in "[0-9a-fxA-FX.:%\\[\\]\0\r\n @_-]{0,24}") {
            match canonical_host(&input) {
                Ok(Host::Name(n)) => {
                    proptest::prop_assert!(n.len() <= 253);
                    proptest::prop_assert!(n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'));
                    proptest::prop_assert!(n.split('.').all(|l| !l.is_empty()));
                    proptest::prop_assert!(!is_numeric_label(n.rsplit('.').next().unwrap_or("")));
                }
                Ok(Host::Ip(IpAddr::V4(a))) => {
                    let written = input.strip_suffix('.').unwrap_or(&input);
                    proptest::prop_assert_eq!(written, a.to_string());
                }
                Ok(Host::Ip(IpAddr::V6(_))) => {
                    proptest::prop_assert!(!input.contains('%'));
                }
                Err(_) => {}
            }
        }
    }

    #[test]
    fn json_forms() {
        let n: Network = serde_json::from_str("\"none\"").unwrap();
        assert_eq!(n.mode, NetMode::None);
        let n: Network = serde_json::from_str("\"all\"").unwrap();
        assert_eq!(n.mode, NetMode::All);
        let n: Network = serde_json::from_str(r#"{"allow":["github.com"]}"#).unwrap();
        assert_eq!(n.mode, NetMode::Allowlist);
        let n: Network = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(n.mode, NetMode::None);
        assert!(serde_json::from_str::<Network>(r#"{"alow":["x"]}"#).is_err());
        let back: Network = serde_json::from_value(serde_json::to_value(&n).unwrap()).unwrap();
        assert_eq!(back, n);
    }

    #[test]
    fn globs() {
        assert!(glob("/repos/acme/*", "/repos/acme/x"));
        assert!(glob("/repos/acme/*", "/repos/acme/x/y/z"));
        assert!(glob("/repos/acme/*", "/repos/acme/"));
        assert!(!glob("/repos/acme/*", "/repos/acme"));
        assert!(!glob("/repos/acme/*", "/repos/acmex/y"));
        assert!(glob("/a/*/c", "/a/b/c"));
        assert!(glob("/a/*/c", "/a/b/x/c"));
        assert!(!glob("/a/*/c", "/a/b/cd"));
        assert!(glob("*", ""));
        assert!(glob("/x", "/x"));
        assert!(!glob("/x", "/x/"));
    }

    #[test]
    fn http_rules() {
        let r = parse_http_rule("GET,head api.github.com/repos/acme/*").unwrap();
        assert_eq!(r.methods, ["GET", "HEAD"]);
        assert_eq!(r.host, Target::Name("api.github.com".into()));
        assert!(r.matches("GET", "/repos/acme/widget"));
        assert!(r.matches("HEAD", "/repos/acme/widget"));
        assert!(!r.matches("POST", "/repos/acme/widget"));
        assert!(!r.matches("GET", "/repos/other/widget"));
        assert_eq!(r.to_string(), "GET,HEAD api.github.com/repos/acme/*");
        let any = parse_http_rule("* *.example.com").unwrap();
        assert!(any.methods.is_empty() && any.path == "/*");
        assert!(any.host.matches_name("a.example.com"));
        assert!(!any.host.matches_name("example.com"));
        for bad in [
            "GET",
            "G-T a.test/x",
            "GET 10.0.0.1/x",
            "GET a.test:443/x",
            "GET a.test/x?y",
            "GET a.test/x y",
        ] {
            assert!(parse_http_rule(bad).is_err(), "{bad}");
        }
    }

    fn secret(name: &str, hosts: &[&str], value: &str) -> SecretBinding {
        SecretBinding {
            name: name.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            placeholder: random_placeholder().unwrap(),
            value: SecretValue(value.into()),
        }
    }

    #[test]
    fn secrets_are_checked_and_never_serialized() {
        let mut n = Network {
            mode: NetMode::Allowlist,
            allow: vec!["api.test".into()],
            secrets: vec![secret("TOKEN", &["api.test", "*.api.test"], "v4lue-xyz")],
            ..Network::default()
        };
        check_broker(&n).unwrap();
        let json = serde_json::to_string(&n).unwrap();
        assert!(!json.contains("v4lue-xyz"), "{json}");
        assert!(json.contains("TOKEN") && json.contains("airlock-secret-"));
        assert!(!format!("{n:?}").contains("v4lue-xyz"));
        // Read back: no value (it never travels in JSON).
        let back: Network = serde_json::from_str(&json).unwrap();
        assert_eq!(back.secrets[0].value, SecretValue::default());
        for (s, why) in [
            (secret("1X", &["a.test"], "v"), "variable name"),
            (secret("X", &[], "v"), "no host"),
            (secret("X", &["10.0.0.0/8"], "v"), "not an address"),
            (secret("X", &["a.test:443"], "v"), "no :PORT"),
            (secret("X", &["a.test"], ""), "empty"),
            (
                secret("X", &["a.test"], "a\r\nX-Evil: 1"),
                "control character",
            ),
        ] {
            n.secrets = vec![s];
            let e = check_broker(&n).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
            assert!(!e.contains("X-Evil"), "{e}");
        }
        let mut p = secret("X", &["a.test"], "v");
        p.placeholder = "chosen".into();
        n.secrets = vec![p];
        assert!(check_broker(&n).is_err());
        n.secrets = vec![secret("X", &["a.test"], "v"), secret("X", &["b.test"], "w")];
        assert!(check_broker(&n).unwrap_err().to_string().contains("twice"));
        n.secrets = vec![secret("X", &["a.test"], "v")];
        n.mode = NetMode::None;
        n.allow.clear();
        assert!(check_broker(&n)
            .unwrap_err()
            .to_string()
            .contains("need a network"));
    }
}
