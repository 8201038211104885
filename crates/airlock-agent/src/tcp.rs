//! TCP streams the host opens to a port inside the sandbox (port
//! forwarding): connect from the agent's network namespace, then bytes
//! both ways under the protocol's credit, half-close and close.
//!
//! And the reverse (egress): the agent listens on loopback ports of the
//! sandbox's namespace (the egress proxy's), and offers each accepted
//! connection to the host as a stream (TcpOffer to the listener's own
//! address and port). The agent decides nothing: the host's proxy reads
//! the request from the stream and applies the policy.

use crate::serve::{Out, Token};
use airlock_protocol::v2::{AgentSession, Message, StreamKind, MAX_DATA};
use airlock_sys as sys;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

struct Stream {
    fd: OwnedFd,
    connecting: bool,
    /// Bytes from the host still to write to the socket.
    buf: Vec<u8>,
    /// The host half-closed: shut our write side once `buf` is out.
    shut_pending: bool,
    /// We read EOF (and told the host).
    read_done: bool,
    /// We sent TcpClose.
    closed_sent: bool,
    /// An egress connection offered to the host, not yet accepted.
    offered: bool,
    /// Transparent egress: the CONNECT request to send once the host
    /// accepted the stream.
    connect_req: Option<Vec<u8>>,
    /// Transparent egress: the proxy's answer so far, until its head is
    /// complete (the client's bytes wait until then).
    handshake: Option<Vec<u8>>,
}

impl Stream {
    fn new(fd: OwnedFd, connecting: bool, offered: bool) -> Stream {
        Stream {
            fd,
            connecting,
            buf: Vec::new(),
            shut_pending: false,
            read_done: false,
            closed_sent: false,
            offered,
            connect_req: None,
            handshake: None,
        }
    }
}

/// A listener inside the sandbox.
struct Listener {
    fd: OwnedFd,
    port: u16,
    /// Transparent egress: the name its address stands for.
    name: Option<String>,
}

/// The longest proxy answer head the agent reads.
const MAX_ANSWER_HEAD: usize = 8 * 1024;

/// Offers that may wait for the host's answer at once (below the host's
/// own limit, which would count more as a violation).
const MAX_PENDING_OFFERS: usize = 16;

#[derive(Default)]
pub(crate) struct Tcps {
    map: BTreeMap<u32, Stream>,
    buf: Vec<u8>,
    listeners: Vec<Listener>,
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn connect(addr: IpAddr, port: u16) -> Result<(OwnedFd, bool), i32> {
    let family = match addr {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain socket creation.
    let fd = sys::cvt(unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })
    .map_err(|e| sys::errno_of(&e))?;
    // SAFETY: a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let r = match addr {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_in is plain data.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = port.to_be();
            sa.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            // SAFETY: a valid sockaddr_in and its size.
            unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        IpAddr::V6(a) => {
            // SAFETY: sockaddr_in6 is plain data.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = port.to_be();
            sa.sin6_addr.s6_addr = a.octets();
            // SAFETY: a valid sockaddr_in6 and its size.
            unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if r == 0 {
        return Ok((fd, false));
    }
    match errno() {
        libc::EINPROGRESS => Ok((fd, true)),
        e => Err(e),
    }
}

fn listen_on(addr: std::net::Ipv4Addr, port: u16) -> Result<OwnedFd, i32> {
    // SAFETY: plain socket creation.
    let fd = sys::cvt(unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })
    .map_err(|e| sys::errno_of(&e))?;
    // SAFETY: a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_in is plain data.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = port.to_be();
    sa.sin_addr.s_addr = u32::from_ne_bytes(addr.octets());
    // SAFETY: a valid sockaddr_in and its size; then listen on our socket.
    unsafe {
        if libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
            || libc::listen(fd.as_raw_fd(), 128) != 0
        {
            return Err(errno());
        }
    }
    Ok(fd)
}

impl Tcps {
    /// Listens on 127.0.0.1:`port` for egress connections.
    pub fn listen(&mut self, port: u16) -> std::io::Result<()> {
        let fd = listen_on(std::net::Ipv4Addr::LOCALHOST, port)
            .map_err(std::io::Error::from_raw_os_error)?;
        self.listeners.push(Listener {
            fd,
            port,
            name: None,
        });
        Ok(())
    }

    /// Transparent egress: listens on `addr` at each of `ports`, for
    /// `name` (all or none: an address partly taken is not used).
    pub fn listen_transparent(
        &mut self,
        addr: std::net::Ipv4Addr,
        ports: &[u16],
        name: &str,
    ) -> std::io::Result<()> {
        let mut fds = Vec::with_capacity(ports.len());
        for &p in ports {
            fds.push((
                listen_on(addr, p).map_err(std::io::Error::from_raw_os_error)?,
                p,
            ));
        }
        for (fd, port) in fds {
            self.listeners.push(Listener {
                fd,
                port,
                name: Some(name.to_string()),
            });
        }
        Ok(())
    }

    /// How many transparent listeners there are.
    pub fn transparent_listeners(&self) -> usize {
        self.listeners.iter().filter(|l| l.name.is_some()).count()
    }

    fn pending_offers(&self) -> usize {
        self.map.values().filter(|s| s.offered).count()
    }

    /// A listener is readable: accept one connection and offer it.
    pub fn on_accept(&mut self, i: usize, out: &mut Out<'_>) {
        let Some(l) = self.listeners.get(i) else {
            return;
        };
        let (lfd, port) = (&l.fd, l.port);
        // SAFETY: accept4 on our listener; no address wanted.
        let fd = unsafe {
            libc::accept4(
                lfd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return;
        }
        // SAFETY: a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let Some(id) = out.sess.next_agent_id() else {
            return;
        };
        // A transparent connection goes to the host's HTTP proxy, which
        // hears `CONNECT name:port` from us once it accepts the stream.
        let (offer_port, connect_req) = match &l.name {
            None => (port, None),
            Some(name) => (
                airlock_spec::net::HTTP_PROXY_PORT,
                Some(
                    format!("CONNECT {name}:{port} HTTP/1.1\r\nHost: {name}:{port}\r\n\r\n")
                        .into_bytes(),
                ),
            ),
        };
        out.send(Message::TcpOffer {
            id,
            dest: airlock_protocol::v2::Destination::Ip(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            port: offer_port,
        });
        let mut s = Stream::new(fd, false, true);
        s.connect_req = connect_req;
        self.map.insert(id, s);
    }

    pub fn poll_set(
        &self,
        sess: &AgentSession,
        room: bool,
        add: &mut impl FnMut(RawFd, libc::c_short, Token),
    ) {
        if room && self.pending_offers() < MAX_PENDING_OFFERS {
            for (i, l) in self.listeners.iter().enumerate() {
                add(l.fd.as_raw_fd(), libc::POLLIN, Token::Listen(i));
            }
        }
        for (&id, s) in &self.map {
            let mut ev = 0;
            if s.offered {
                continue;
            }
            if s.connecting {
                ev |= libc::POLLOUT;
            } else {
                let credit = sess.send_credit(id, StreamKind::Tcp).unwrap_or(0);
                if room && credit > 0 && !s.read_done && s.handshake.is_none() {
                    ev |= libc::POLLIN;
                }
                if !s.buf.is_empty() {
                    ev |= libc::POLLOUT;
                }
            }
            if ev != 0 {
                add(s.fd.as_raw_fd(), ev, Token::Tcp(id));
            }
        }
    }

    pub fn handle(&mut self, m: Message, out: &mut Out<'_>) {
        match m {
            Message::TcpConnect { id, addr, port } => match connect(addr, port) {
                Ok((fd, connecting)) => {
                    self.map.insert(id, Stream::new(fd, connecting, false));
                    if !connecting {
                        out.send(Message::TcpOpened { id });
                    }
                }
                Err(e) => out.send(Message::TcpFailed {
                    id,
                    errno: e.clamp(1, 4095),
                }),
            },
            Message::TcpData { id, data } => {
                let n = data.len();
                match self.map.get_mut(&id) {
                    Some(s) if s.handshake.is_some() => self.on_answer(id, data, out),
                    Some(s) => {
                        s.buf.extend_from_slice(&data);
                        self.flush(id, out);
                    }
                    None => out.consumed(id, StreamKind::Tcp, n),
                }
            }
            Message::TcpShutdownWrite { id } => {
                if self.map.get(&id).is_some_and(|s| s.handshake.is_some()) {
                    // The proxy ended before it answered.
                    self.abort(id, out);
                    return;
                }
                if let Some(s) = self.map.get_mut(&id) {
                    s.shut_pending = true;
                }
                self.flush(id, out);
            }
            Message::TcpClose { id, reset } => {
                if let Some(s) = self.map.remove(&id) {
                    if reset {
                        let l = libc::linger {
                            l_onoff: 1,
                            l_linger: 0,
                        };
                        // SAFETY: SO_LINGER reads a linger struct.
                        unsafe {
                            libc::setsockopt(
                                s.fd.as_raw_fd(),
                                libc::SOL_SOCKET,
                                libc::SO_LINGER,
                                (&l as *const libc::linger).cast(),
                                std::mem::size_of::<libc::linger>() as libc::socklen_t,
                            )
                        };
                    }
                    if !s.closed_sent {
                        out.send(Message::TcpClose { id, reset: false });
                    }
                }
            }
            Message::TcpAccept { id } => {
                if let Some(s) = self.map.get_mut(&id) {
                    s.offered = false;
                    if let Some(req) = s.connect_req.take() {
                        s.handshake = Some(Vec::new());
                        out.send(Message::TcpData { id, data: req });
                    }
                }
            }
            Message::TcpRefuse { id, .. } => {
                // Dropping the socket closes the client's connection.
                self.map.remove(&id);
            }
            _ => {}
        }
    }

    /// Transparent egress: bytes of the proxy's answer to our CONNECT.
    /// Once its head is complete: 200 lets the client's bytes through
    /// (what followed the head goes to the client); anything else closes
    /// the client's connection at once.
    fn on_answer(&mut self, id: u32, data: Vec<u8>, out: &mut Out<'_>) {
        let n = data.len();
        let Some(s) = self.map.get_mut(&id) else {
            return;
        };
        let Some(h) = s.handshake.as_mut() else {
            return;
        };
        h.extend_from_slice(&data);
        let Some(end) = h.windows(4).position(|w| w == b"\r\n\r\n") else {
            out.consumed(id, StreamKind::Tcp, n);
            if h.len() > MAX_ANSWER_HEAD {
                self.abort(id, out);
            }
            return;
        };
        let ok = {
            let line = &h[..h.iter().position(|&b| b == b'\r').unwrap_or(end)];
            let mut parts = line.split(|&b| b == b' ');
            parts.next().is_some_and(|v| v.starts_with(b"HTTP/1."))
                && parts.next() == Some(b"200".as_slice())
        };
        if !ok {
            out.consumed(id, StreamKind::Tcp, n);
            self.abort(id, out);
            return;
        }
        let rest = h.split_off(end + 4);
        s.handshake = None;
        // What came after the head counts as consumed once written.
        out.consumed(id, StreamKind::Tcp, n - rest.len());
        s.buf.extend_from_slice(&rest);
        self.flush(id, out);
    }

    /// Transparent egress refused (or broken): the client's connection is
    /// reset and the stream closed.
    fn abort(&mut self, id: u32, out: &mut Out<'_>) {
        if let Some(s) = self.map.remove(&id) {
            let l = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: SO_LINGER reads a linger struct.
            unsafe {
                libc::setsockopt(
                    s.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&l as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            if !s.closed_sent {
                out.send(Message::TcpClose { id, reset: true });
            }
        }
    }

    fn flush(&mut self, id: u32, out: &mut Out<'_>) {
        let Some(s) = self.map.get_mut(&id) else {
            return;
        };
        if s.connecting {
            return;
        }
        let mut written = 0;
        while written < s.buf.len() {
            // SAFETY: sends from our buffer, never raising SIGPIPE.
            let n = unsafe {
                libc::send(
                    s.fd.as_raw_fd(),
                    s.buf[written..].as_ptr().cast(),
                    s.buf.len() - written,
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                match errno() {
                    libc::EINTR => continue,
                    libc::EAGAIN => break,
                    _ => {
                        written = s.buf.len();
                        s.buf.clear();
                        self.reset(id, out);
                        out.consumed(id, StreamKind::Tcp, written);
                        return;
                    }
                }
            }
            written += n as usize;
        }
        s.buf.drain(..written);
        if s.buf.is_empty() && s.shut_pending {
            s.shut_pending = false;
            // SAFETY: shutdown on our socket.
            unsafe { libc::shutdown(s.fd.as_raw_fd(), libc::SHUT_WR) };
        }
        if written > 0 {
            out.consumed(id, StreamKind::Tcp, written);
        }
    }

    /// The connection failed: tell the host (reset) and forget it.
    fn reset(&mut self, id: u32, out: &mut Out<'_>) {
        if let Some(s) = self.map.get_mut(&id) {
            if !s.closed_sent {
                s.closed_sent = true;
                out.send(Message::TcpClose { id, reset: true });
            }
        }
    }

    pub fn on_ready(&mut self, id: u32, revents: libc::c_short, out: &mut Out<'_>) {
        let credit = out.credit(id, StreamKind::Tcp);
        let Some(s) = self.map.get_mut(&id) else {
            return;
        };
        if s.connecting {
            let mut err: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: SO_ERROR writes one int.
            unsafe {
                libc::getsockopt(
                    s.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&mut err as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            if err != 0 {
                self.map.remove(&id);
                out.send(Message::TcpFailed {
                    id,
                    errno: err.clamp(1, 4095),
                });
            } else {
                s.connecting = false;
                out.send(Message::TcpOpened { id });
                self.flush(id, out);
            }
            return;
        }
        if revents & libc::POLLOUT != 0 {
            self.flush(id, out);
        }
        let Some(s) = self.map.get_mut(&id) else {
            return;
        };
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 && !s.read_done {
            if self.buf.len() < MAX_DATA {
                self.buf.resize(MAX_DATA, 0);
            }
            let want = credit.min(self.buf.len());
            if want == 0 {
                return;
            }
            // SAFETY: reads into our buffer.
            let n = unsafe { libc::recv(s.fd.as_raw_fd(), self.buf.as_mut_ptr().cast(), want, 0) };
            if n > 0 {
                out.send(Message::TcpData {
                    id,
                    data: self.buf[..n as usize].to_vec(),
                });
            } else if n == 0 {
                s.read_done = true;
                out.send(Message::TcpShutdownWrite { id });
            } else if !matches!(errno(), libc::EAGAIN | libc::EINTR) {
                self.reset(id, out);
            }
        }
    }
}
