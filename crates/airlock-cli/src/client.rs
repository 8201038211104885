//! The CLI's side of the service: a small blocking HTTP/1.1 client (and
//! the client half of WebSocket, for `exec -it`) over the daemon's unix
//! socket or TCP with a bearer token. Written here rather than pulled in,
//! so that `airlock` stays small (every `airlock run` execs it).

use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;

/// Where the service is.
#[derive(Clone, Debug)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { addr: String, token: String },
}

pub fn default_socket() -> PathBuf {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/run/airlock/airlock.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("airlock.sock"),
        // SAFETY: getuid cannot fail.
        None => PathBuf::from(format!("/tmp/airlock-{}/airlock.sock", unsafe {
            libc::getuid()
        })),
    }
}

impl Endpoint {
    /// `AIRLOCK_SOCKET`, else `AIRLOCK_URL` + `AIRLOCK_TOKEN`, else the
    /// default socket.
    pub fn from_env() -> Result<Endpoint> {
        if let Some(s) = std::env::var_os("AIRLOCK_SOCKET").filter(|s| !s.is_empty()) {
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        if let Ok(u) = std::env::var("AIRLOCK_URL") {
            let addr = u
                .strip_prefix("http://")
                .ok_or_else(|| anyhow!("AIRLOCK_URL must be http://HOST:PORT"))?
                .trim_end_matches('/')
                .to_string();
            let token = std::env::var("AIRLOCK_TOKEN").map_err(|_| {
                anyhow!("AIRLOCK_URL needs AIRLOCK_TOKEN (the service's bearer token)")
            })?;
            return Ok(Endpoint::Tcp { addr, token });
        }
        Ok(Endpoint::Unix(default_socket()))
    }

    fn connect(&self) -> Result<Box<dyn Stream>> {
        match self {
            Endpoint::Unix(p) => {
                let s = std::os::unix::net::UnixStream::connect(p).with_context(|| {
                    format!(
                        "cannot reach the airlock service at {} (start it with `airlock serve`, or set AIRLOCK_SOCKET)",
                        p.display()
                    )
                })?;
                Ok(Box::new(s))
            }
            Endpoint::Tcp { addr, .. } => {
                let s = std::net::TcpStream::connect(addr)
                    .with_context(|| format!("cannot reach the airlock service at {addr}"))?;
                let _ = s.set_nodelay(true);
                Ok(Box::new(s))
            }
        }
    }

    fn host_header(&self) -> String {
        match self {
            Endpoint::Unix(_) => "airlock".into(),
            Endpoint::Tcp { addr, .. } => addr.clone(),
        }
    }

    fn auth_header(&self) -> String {
        match self {
            Endpoint::Tcp { token, .. } => format!("Authorization: Bearer {token}\r\n"),
            Endpoint::Unix(_) => String::new(),
        }
    }
}

pub trait Stream: Read + Write + Send {
    fn try_clone_box(&self) -> std::io::Result<Box<dyn Stream>>;
}

impl Stream for std::os::unix::net::UnixStream {
    fn try_clone_box(&self) -> std::io::Result<Box<dyn Stream>> {
        Ok(Box::new(self.try_clone()?))
    }
}

impl Stream for std::net::TcpStream {
    fn try_clone_box(&self) -> std::io::Result<Box<dyn Stream>> {
        Ok(Box::new(self.try_clone()?))
    }
}

/// A request body.
pub enum Body<'a> {
    None,
    Json(serde_json::Value),
    Bytes(&'a [u8]),
    /// Streamed with chunked transfer encoding.
    Reader(Box<dyn Read + Send + 'a>),
}

/// A response: status, headers and a body reader.
pub struct Response {
    pub status: u16,
    pub body: Box<dyn BufRead + Send>,
}

impl Response {
    /// The whole body as JSON; an error body becomes an error.
    pub fn json(mut self) -> Result<serde_json::Value> {
        let mut s = String::new();
        self.body.read_to_string(&mut s)?;
        let v: serde_json::Value = if s.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&s).with_context(|| format!("bad answer from the service: {s}"))?
        };
        if self.status >= 400 {
            return Err(api_error(self.status, &v));
        }
        Ok(v)
    }

    /// Checks the status (reading an error body).
    pub fn ok(self) -> Result<Response> {
        if self.status >= 400 {
            let st = self.status;
            let v = self.json().err();
            return Err(v.unwrap_or_else(|| anyhow!("the service answered {st}")));
        }
        Ok(self)
    }
}

fn api_error(status: u16, v: &serde_json::Value) -> anyhow::Error {
    let msg = v
        .get("error")
        .and_then(|e| e.get("message"))
        .and_then(|m| m.as_str())
        .map(String::from)
        .unwrap_or_else(|| format!("the service answered {status}"));
    anyhow!(msg)
}

/// The body of a response: by length, chunked, or until the connection
/// closes.
struct BodyReader {
    inner: BufReader<Box<dyn Stream>>,
    mode: Mode,
}

enum Mode {
    Length(u64),
    Chunked { left: u64, done: bool },
    Close,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.mode {
            Mode::Length(0) => Ok(0),
            Mode::Length(n) => {
                let want = (*n).min(buf.len() as u64) as usize;
                let got = self.inner.read(&mut buf[..want])?;
                *n -= got as u64;
                Ok(got)
            }
            Mode::Close => self.inner.read(buf),
            Mode::Chunked { left, done } => {
                if *done {
                    return Ok(0);
                }
                if *left == 0 {
                    let mut line = String::new();
                    self.inner.read_line(&mut line)?;
                    let size =
                        u64::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                            .map_err(|_| std::io::Error::other("bad chunk size"))?;
                    if size == 0 {
                        // Trailers end with an empty line.
                        loop {
                            let mut t = String::new();
                            if self.inner.read_line(&mut t)? == 0 || t.trim().is_empty() {
                                break;
                            }
                        }
                        *done = true;
                        return Ok(0);
                    }
                    *left = size;
                }
                let want = (*left).min(buf.len() as u64) as usize;
                let got = self.inner.read(&mut buf[..want])?;
                if got == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
                }
                *left -= got as u64;
                if *left == 0 {
                    let mut crlf = [0u8; 2];
                    self.inner.read_exact(&mut crlf)?;
                }
                Ok(got)
            }
        }
    }
}

pub struct Client {
    pub ep: Endpoint,
}

fn encode_query(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                o.push(b as char)
            }
            _ => o.push_str(&format!("%{b:02X}")),
        }
    }
    o
}

impl Client {
    pub fn new() -> Result<Client> {
        Ok(Client {
            ep: Endpoint::from_env()?,
        })
    }

    /// `path?k=v&...` with the values encoded.
    pub fn url(path: &str, q: &[(&str, &str)]) -> String {
        if q.is_empty() {
            return path.to_string();
        }
        let parts: Vec<String> = q
            .iter()
            .map(|(k, v)| format!("{k}={}", encode_query(v)))
            .collect();
        format!("{path}?{}", parts.join("&"))
    }

    pub fn request(&self, method: &str, path: &str, body: Body<'_>) -> Result<Response> {
        let mut s = self.ep.connect()?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{}Connection: close\r\n",
            self.ep.host_header(),
            self.ep.auth_header()
        );
        match &body {
            Body::None => head.push_str("Content-Length: 0\r\n\r\n"),
            Body::Json(v) => {
                let b = v.to_string();
                head.push_str(&format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                    b.len()
                ));
            }
            Body::Bytes(b) => head.push_str(&format!(
                "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                b.len()
            )),
            Body::Reader(_) => head.push_str(
                "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
        }
        s.write_all(head.as_bytes())?;
        match body {
            Body::Bytes(b) => s.write_all(b)?,
            Body::Reader(mut r) => {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = r.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    s.write_all(format!("{n:x}\r\n").as_bytes())?;
                    s.write_all(&buf[..n])?;
                    s.write_all(b"\r\n")?;
                }
                s.write_all(b"0\r\n\r\n")?;
            }
            _ => {}
        }
        s.flush()?;
        read_response(s)
    }

    pub fn get(&self, path: &str) -> Result<serde_json::Value> {
        self.request("GET", path, Body::None)?.json()
    }

    pub fn post(&self, path: &str, v: serde_json::Value) -> Result<serde_json::Value> {
        self.request("POST", path, Body::Json(v))?.json()
    }

    /// Opens a WebSocket at `path`.
    pub fn websocket(&self, path: &str) -> Result<WebSocket> {
        let mut s = self.ep.connect()?;
        let mut key = [0u8; 16];
        // SAFETY: getrandom fills our buffer.
        unsafe { libc::getrandom(key.as_mut_ptr().cast(), 16, 0) };
        let key = base64(&key);
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            self.ep.host_header(),
            self.ep.auth_header()
        );
        s.write_all(head.as_bytes())?;
        let mut r = BufReader::new(s.try_clone_box()?);
        let (status, headers) = read_head(&mut r)?;
        if status != 101 {
            let resp = finish_response(status, headers, r)?;
            return Err(resp
                .json()
                .err()
                .unwrap_or_else(|| anyhow!("no WebSocket ({status})")));
        }
        Ok(WebSocket {
            reader: r,
            writer: s,
        })
    }
}

fn read_head(r: &mut impl BufRead) -> Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        bail!("the service closed the connection");
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line from the service: {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

fn finish_response(
    status: u16,
    headers: Vec<(String, String)>,
    inner: BufReader<Box<dyn Stream>>,
) -> Result<Response> {
    let get = |k: &str| headers.iter().find(|(h, _)| h == k).map(|(_, v)| v.clone());
    let mode = if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        Mode::Chunked {
            left: 0,
            done: false,
        }
    } else if let Some(n) = get("content-length").and_then(|v| v.parse().ok()) {
        Mode::Length(n)
    } else {
        Mode::Close
    };
    Ok(Response {
        status,
        body: Box::new(BufReader::new(BodyReader { inner, mode })),
    })
}

fn read_response(s: Box<dyn Stream>) -> Result<Response> {
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r)?;
    finish_response(status, headers, r)
}

fn base64(b: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        o.push(T[(n >> 18) as usize & 63] as char);
        o.push(T[(n >> 12) as usize & 63] as char);
        o.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        o.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    o
}

pub fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let Some(v) = val(c) else { continue };
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// The client half of a WebSocket (RFC 6455): masked frames out.
pub struct WebSocket {
    reader: BufReader<Box<dyn Stream>>,
    writer: Box<dyn Stream>,
}

pub enum WsFrame {
    Text(String),
    Binary(Vec<u8>),
    Close,
}

impl WebSocket {
    pub fn writer(&self) -> Result<WsWriter> {
        Ok(WsWriter {
            w: self.writer.try_clone_box()?,
        })
    }

    pub fn read(&mut self) -> Result<WsFrame> {
        let mut msg = Vec::new();
        let mut text = false;
        loop {
            let mut h = [0u8; 2];
            self.reader.read_exact(&mut h)?;
            let fin = h[0] & 0x80 != 0;
            let op = h[0] & 0x0f;
            let mut len = (h[1] & 0x7f) as u64;
            if len == 126 {
                let mut b = [0u8; 2];
                self.reader.read_exact(&mut b)?;
                len = u16::from_be_bytes(b) as u64;
            } else if len == 127 {
                let mut b = [0u8; 8];
                self.reader.read_exact(&mut b)?;
                len = u64::from_be_bytes(b);
            }
            if len > 16 << 20 {
                bail!("WebSocket frame too large");
            }
            let mut data = vec![0u8; len as usize];
            self.reader.read_exact(&mut data)?;
            match op {
                0x8 => return Ok(WsFrame::Close),
                0x9 => {
                    let mut w = WsWriter {
                        w: self.writer.try_clone_box()?,
                    };
                    w.frame(0xA, &data)?;
                    continue;
                }
                0xA => continue,
                0x1 => text = true,
                _ => {}
            }
            msg.extend_from_slice(&data);
            if fin {
                return Ok(if text {
                    WsFrame::Text(String::from_utf8_lossy(&msg).into_owned())
                } else {
                    WsFrame::Binary(msg)
                });
            }
        }
    }
}

pub struct WsWriter {
    w: Box<dyn Stream>,
}

impl WsWriter {
    pub fn frame(&mut self, op: u8, data: &[u8]) -> Result<()> {
        let mut f = vec![0x80 | op];
        let n = data.len();
        if n < 126 {
            f.push(0x80 | n as u8);
        } else if n < 65536 {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        let mut mask = [0u8; 4];
        // SAFETY: getrandom fills our buffer.
        unsafe { libc::getrandom(mask.as_mut_ptr().cast(), 4, 0) };
        f.extend_from_slice(&mask);
        f.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.w.write_all(&f)?;
        Ok(())
    }
    pub fn binary(&mut self, data: &[u8]) -> Result<()> {
        self.frame(0x2, data)
    }
    pub fn text(&mut self, t: &str) -> Result<()> {
        self.frame(0x1, t.as_bytes())
    }
}
