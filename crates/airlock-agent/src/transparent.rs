//! Transparent egress, for programs that ignore the proxy variables.
//!
//! - A DNS stub on 127.0.0.1:53 (UDP; `/etc/resolv.conf` names it). It
//!   never forwards a query anywhere: it answers an A query for a name the
//!   sandbox's policy allows with an address from a private pool (one per
//!   name, stable for the sandbox's life), an AAAA or other query for such
//!   a name with no data, and everything else with NXDOMAIN. A query for a
//!   name that is not allowed (data in its labels, TXT, AAAA…) ends here.
//! - The pool is local on `lo` (a `local` route), and for each name handed
//!   out the agent listens on its address at the caught ports (80, 443 and
//!   each port an allow rule names). A connection accepted there becomes a
//!   stream to the host's HTTP proxy on which the agent sends `CONNECT
//!   name:port` itself; the host's proxy decides exactly as for a client
//!   that set the proxy variables (SNI / Host checks, brokering, audit).
//! - Any other address has no route in the sandbox's namespace (only `lo`
//!   is there): raw IP connections, UDP other than the stub, and ICMP go
//!   nowhere.

use crate::plan::Transparent;
use crate::tcp::Tcps;
use airlock_spec::net::{canonical_host, Host, Policy};
use airlock_sys as sys;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Names the stub hands addresses out for (each holds a listener per
/// caught port); a sandbox that asks for more gets SERVFAIL.
const MAX_NAMES: usize = 256;
/// Listeners at most (the agent's fds and its poll set stay small).
const MAX_LISTENERS: usize = 768;
/// Addresses tried for one name before giving up (each taken by a
/// process of the sandbox).
const MAX_TRIES: usize = 32;
/// Datagrams handled per wake-up (others wait for the next).
const BURST: usize = 64;
/// The answers' TTL: the mapping never changes while the sandbox runs.
const TTL: u32 = 300;

const RCODE_FORMERR: u8 = 1;
const RCODE_SERVFAIL: u8 = 2;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_NOTIMP: u8 = 4;
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;

pub(crate) struct Stub {
    policy: Policy,
    ports: Vec<u16>,
    base: u32,
    size: u32,
    next: u32,
    names: HashMap<String, Ipv4Addr>,
    udp: OwnedFd,
    /// DNS over TCP (dig asks ANY that way; resolvers retry truncated
    /// answers that way): the listener and its connections.
    tcp: OwnedFd,
    conns: BTreeMap<u32, Conn>,
    next_conn: u32,
}

/// A DNS-over-TCP connection: bytes read, replies not yet written.
struct Conn {
    fd: OwnedFd,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
}

/// DNS-over-TCP connections at once (the oldest is dropped for a new one).
const MAX_CONNS: usize = 16;

/// What a poll entry of the stub stands for.
pub(crate) const DNS_UDP: u32 = 0;
pub(crate) const DNS_TCP: u32 = 1;

/// What the stub says about one query.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    A(Ipv4Addr),
    NoData,
    Error(u8),
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn on_53(ty: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket creation.
    let fd = sys::cvt(unsafe {
        libc::socket(
            libc::AF_INET,
            ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_in is plain data.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = 53u16.to_be();
    sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
    // SAFETY: a valid sockaddr_in and its size.
    sys::cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })?;
    if ty == libc::SOCK_STREAM {
        // SAFETY: listen on our socket.
        sys::cvt(unsafe { libc::listen(fd.as_raw_fd(), 16) })?;
    }
    Ok(fd)
}

impl Stub {
    /// Makes the pool local (when the agent may) and opens the stub.
    pub fn start(t: &Transparent) -> Result<Stub, String> {
        let policy = Policy::compile(&t.network).map_err(|e| e.to_string())?;
        let (pool, prefix) = t.pool;
        if !(8..=30).contains(&prefix) {
            return Err(format!("the pool {pool}/{prefix} is not usable"));
        }
        if t.agent_routes {
            airlock_jail::net::add_local_route(pool, prefix)
                .map_err(|e| format!("the pool {pool}/{prefix} could not be made local: {e}"))?;
        }
        let udp = on_53(libc::SOCK_DGRAM)
            .map_err(|e| format!("the DNS stub cannot listen on port 53: {e}"))?;
        let tcp = on_53(libc::SOCK_STREAM)
            .map_err(|e| format!("the DNS stub cannot listen on TCP port 53: {e}"))?;
        Ok(Stub {
            policy,
            ports: t.ports.clone(),
            base: u32::from(pool),
            size: 1u32 << (32 - prefix),
            // .0 is left out (the network's own address).
            next: 1,
            names: HashMap::new(),
            udp,
            tcp,
            conns: BTreeMap::new(),
            next_conn: 2,
        })
    }

    /// The fds to poll: `(fd, events, which)`.
    pub fn poll_set(&self, add: &mut impl FnMut(RawFd, libc::c_short, u32)) {
        add(self.udp.as_raw_fd(), libc::POLLIN, DNS_UDP);
        add(self.tcp.as_raw_fd(), libc::POLLIN, DNS_TCP);
        for (&id, c) in &self.conns {
            let ev = if c.outbuf.is_empty() {
                libc::POLLIN
            } else {
                libc::POLLOUT
            };
            add(c.fd.as_raw_fd(), ev, id);
        }
    }

    /// One of the stub's fds is ready.
    pub fn on_ready(&mut self, which: u32, tcps: &mut Tcps) {
        match which {
            DNS_UDP => self.on_udp(tcps),
            DNS_TCP => self.on_accept(),
            id => self.on_conn(id, tcps),
        }
    }

    fn on_accept(&mut self) {
        // SAFETY: accept4 on our listener; no address wanted.
        let fd = unsafe {
            libc::accept4(
                self.tcp.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return;
        }
        if self.conns.len() >= MAX_CONNS {
            if let Some(&oldest) = self.conns.keys().next() {
                self.conns.remove(&oldest);
            }
        }
        let id = self.next_conn;
        self.next_conn = self.next_conn.checked_add(1).unwrap_or(2);
        self.conns.insert(
            id,
            Conn {
                // SAFETY: a new fd that nothing else owns.
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
                inbuf: Vec::new(),
                outbuf: Vec::new(),
            },
        );
    }

    fn on_conn(&mut self, id: u32, tcps: &mut Tcps) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if !c.outbuf.is_empty() {
            // SAFETY: sends from our buffer, never raising SIGPIPE.
            let n = unsafe {
                libc::send(
                    c.fd.as_raw_fd(),
                    c.outbuf.as_ptr().cast(),
                    c.outbuf.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 && !matches!(errno(), libc::EAGAIN | libc::EINTR) {
                self.conns.remove(&id);
            } else if n > 0 {
                c.outbuf.drain(..n as usize);
            }
            return;
        }
        let mut buf = [0u8; 2048];
        // SAFETY: reads into our buffer.
        let n = unsafe { libc::recv(c.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n == 0 || (n < 0 && !matches!(errno(), libc::EAGAIN | libc::EINTR)) {
            self.conns.remove(&id);
            return;
        }
        if n < 0 {
            return;
        }
        c.inbuf.extend_from_slice(&buf[..n as usize]);
        // Every complete message (two bytes of length, then the message).
        loop {
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            if c.inbuf.len() < 2 {
                return;
            }
            let len = u16::from_be_bytes([c.inbuf[0], c.inbuf[1]]) as usize;
            if c.inbuf.len() < 2 + len {
                if c.inbuf.len() > 2 + 4096 {
                    self.conns.remove(&id);
                }
                return;
            }
            let msg: Vec<u8> = c.inbuf.drain(..2 + len).skip(2).collect();
            let reply = self.reply(&msg, tcps);
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            match reply {
                Some(r) => {
                    c.outbuf.extend_from_slice(&(r.len() as u16).to_be_bytes());
                    c.outbuf.extend_from_slice(&r);
                }
                None => {
                    self.conns.remove(&id);
                    return;
                }
            }
        }
    }

    /// The caught ports the policy allows for `name` (empty: not allowed).
    fn ports_for(&self, name: &str) -> Vec<u16> {
        self.ports
            .iter()
            .copied()
            .filter(|&p| self.policy.check_name(name, p).is_ok())
            .collect()
    }

    /// The address of an allowed name: the one it has, or a new one with
    /// its listeners.
    fn address_of(&mut self, name: &str, ports: &[u16], tcps: &mut Tcps) -> Option<Ipv4Addr> {
        if let Some(a) = self.names.get(name) {
            return Some(*a);
        }
        if self.names.len() >= MAX_NAMES
            || tcps.transparent_listeners() + ports.len() > MAX_LISTENERS
        {
            return None;
        }
        // An address some process of the sandbox holds already (it may
        // bind low ports in its own namespace) is skipped.
        // A process that holds a caught port on every address (bound to
        // 0.0.0.0) makes every address taken: a few tries, then SERVFAIL.
        // The addresses tried are not used up by a failure.
        let start = self.next;
        let mut tries = 0;
        while self.next < self.size - 1 && tries < MAX_TRIES {
            tries += 1;
            let addr = Ipv4Addr::from(self.base + self.next);
            self.next += 1;
            match tcps.listen_transparent(addr, ports, name) {
                Ok(()) => {
                    self.names.insert(name.to_string(), addr);
                    return Some(addr);
                }
                // Taken: the next one.
                Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {}
                // Anything else (no route, no right to the port) would
                // fail for every address alike.
                Err(_) => break,
            }
        }
        self.next = start;
        None
    }

    fn answer(&mut self, qname: &str, qtype: u16, qclass: u16, tcps: &mut Tcps) -> Answer {
        let name = match canonical_host(qname) {
            Ok(Host::Name(n)) => n,
            _ => return Answer::Error(RCODE_NXDOMAIN),
        };
        let ports = self.ports_for(&name);
        if ports.is_empty() || qclass != CLASS_IN {
            return Answer::Error(RCODE_NXDOMAIN);
        }
        if qtype != TYPE_A {
            // AAAA (and the rest) for an allowed name: the name exists,
            // with no such data (NXDOMAIN would end an A lookup too).
            return Answer::NoData;
        }
        match self.address_of(&name, &ports, tcps) {
            Some(a) => Answer::A(a),
            None => Answer::Error(RCODE_SERVFAIL),
        }
    }

    /// The UDP socket is readable: answers what is there.
    fn on_udp(&mut self, tcps: &mut Tcps) {
        let mut buf = [0u8; 1500];
        for _ in 0..BURST {
            // SAFETY: sockaddr_in is plain data, filled by recvfrom.
            let mut from: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            let mut flen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            // SAFETY: reads into our buffer and address.
            let n = unsafe {
                libc::recvfrom(
                    self.udp.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_in).cast(),
                    &mut flen,
                )
            };
            if n < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                return;
            }
            let Some(reply) = self.reply(&buf[..n as usize], tcps) else {
                continue;
            };
            // SAFETY: sends our buffer back to the address it came from.
            unsafe {
                libc::sendto(
                    self.udp.as_raw_fd(),
                    reply.as_ptr().cast(),
                    reply.len(),
                    libc::MSG_DONTWAIT,
                    (&from as *const libc::sockaddr_in).cast(),
                    flen,
                )
            };
        }
    }

    /// The reply to one datagram (`None`: not a query; dropped).
    fn reply(&mut self, q: &[u8], tcps: &mut Tcps) -> Option<Vec<u8>> {
        let parsed = parse_query(q)?;
        let (qname, qtype, qclass, qend) = match parsed {
            Ok(x) => x,
            Err(rcode) => return Some(header_only(q, rcode)),
        };
        let ans = self.answer(&qname, qtype, qclass, tcps);
        Some(build_reply(q, qend, &ans))
    }
}

/// Parses a query: `None` when it is no query at all (too short, or a
/// response); `Err(rcode)` for one we refuse; else the question's name
/// (dotted, as sent), type, class and where the question ends.
#[allow(clippy::type_complexity)]
fn parse_query(q: &[u8]) -> Option<Result<(String, u16, u16, usize), u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 {
        return None;
    }
    let opcode = (q[2] >> 3) & 0x0f;
    if opcode != 0 {
        return Some(Err(RCODE_NOTIMP));
    }
    let qd = u16::from_be_bytes([q[4], q[5]]);
    if qd != 1 {
        return Some(Err(RCODE_FORMERR));
    }
    let mut i = 12;
    let mut name = String::new();
    loop {
        let Some(&len) = q.get(i) else {
            return Some(Err(RCODE_FORMERR));
        };
        i += 1;
        if len == 0 {
            break;
        }
        // No compression in a question; labels of at most 63 bytes.
        if len > 63 || i + len as usize > q.len() || name.len() + len as usize > 255 {
            return Some(Err(RCODE_FORMERR));
        }
        let label = &q[i..i + len as usize];
        // Bytes outside printable ASCII (and '.') would change the name's
        // meaning once joined: refused as a name that does not exist.
        if !label.iter().all(|&b| b.is_ascii_graphic() && b != b'.') {
            return Some(Err(RCODE_NXDOMAIN));
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(std::str::from_utf8(label).ok()?);
        i += len as usize;
    }
    if i + 4 > q.len() {
        return Some(Err(RCODE_FORMERR));
    }
    let qtype = u16::from_be_bytes([q[i], q[i + 1]]);
    let qclass = u16::from_be_bytes([q[i + 2], q[i + 3]]);
    if name.is_empty() {
        return Some(Err(RCODE_NXDOMAIN));
    }
    Some(Ok((name, qtype, qclass, i + 4)))
}

/// Flags of a reply: QR, the query's opcode and RD, RA, and `rcode`; AA
/// (the stub is the authority on what the sandbox may reach).
fn flags(q: &[u8], rcode: u8) -> [u8; 2] {
    [0x80 | 0x04 | (q[2] & 0x79), 0x80 | (rcode & 0x0f)]
}

fn header_only(q: &[u8], rcode: u8) -> Vec<u8> {
    let mut r = Vec::with_capacity(12);
    r.extend_from_slice(&q[0..2]);
    r.extend_from_slice(&flags(q, rcode));
    r.extend_from_slice(&[0; 8]);
    r
}

fn build_reply(q: &[u8], qend: usize, ans: &Answer) -> Vec<u8> {
    let rcode = match ans {
        Answer::Error(c) => *c,
        _ => 0,
    };
    let mut r = Vec::with_capacity(qend + 16);
    r.extend_from_slice(&q[0..2]);
    r.extend_from_slice(&flags(q, rcode));
    r.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    let an: u16 = matches!(ans, Answer::A(_)).into();
    r.extend_from_slice(&an.to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]); // NS, AR
    r.extend_from_slice(&q[12..qend]);
    if let Answer::A(a) = ans {
        r.extend_from_slice(&[0xc0, 12]); // the question's name
        r.extend_from_slice(&TYPE_A.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&TTL.to_be_bytes());
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&a.octets());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[test]
    fn parses_and_replies() {
        let q = query("Example.COM", 1);
        let (n, t, c, end) = parse_query(&q).unwrap().unwrap();
        assert_eq!((n.as_str(), t, c, end), ("Example.COM", 1, 1, q.len()));
        let r = build_reply(&q, end, &Answer::A(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert_eq!(r[2] & 0x80, 0x80);
        assert_eq!(r[3] & 0x0f, 0);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1);
        assert_eq!(&r[r.len() - 4..], &[198, 18, 0, 1]);
        let r = build_reply(&q, end, &Answer::Error(RCODE_NXDOMAIN));
        assert_eq!(r[3] & 0x0f, 3);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 0);
        let r = build_reply(&q, end, &Answer::NoData);
        assert_eq!((r[3] & 0x0f, r[7]), (0, 0));
    }

    #[test]
    fn refuses_odd_queries() {
        // A response is dropped.
        let mut q = query("a.com", 1);
        q[2] |= 0x80;
        assert!(parse_query(&q).is_none());
        // Two questions, a truncated one, a compression pointer.
        let mut q = query("a.com", 1);
        q[5] = 2;
        assert_eq!(parse_query(&q), Some(Err(RCODE_FORMERR)));
        let q = query("a.com", 1);
        assert_eq!(parse_query(&q[..q.len() - 3]), Some(Err(RCODE_FORMERR)));
        let mut q = query("a.com", 1);
        q[12] = 0xc0;
        assert_eq!(parse_query(&q), Some(Err(RCODE_FORMERR)));
        // A dot or a NUL inside a label.
        let q = query("a\0b.com", 1);
        assert_eq!(parse_query(&q), Some(Err(RCODE_NXDOMAIN)));
        let mut q = query("axb.com", 1);
        q[14] = b'.';
        assert_eq!(parse_query(&q), Some(Err(RCODE_NXDOMAIN)));
        // Not a plain query.
        let mut q = query("a.com", 1);
        q[2] = 0x28;
        assert_eq!(parse_query(&q), Some(Err(RCODE_NOTIMP)));
    }
}
