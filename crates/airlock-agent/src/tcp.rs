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
}

/// Offers that may wait for the host's answer at once (below the host's
/// own limit, which would count more as a violation).
const MAX_PENDING_OFFERS: usize = 16;

#[derive(Default)]
pub(crate) struct Tcps {
    map: BTreeMap<u32, Stream>,
    buf: Vec<u8>,
    listeners: Vec<(OwnedFd, u16)>,
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

fn listen_on(port: u16) -> Result<OwnedFd, i32> {
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
    sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
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
        let fd = listen_on(port).map_err(std::io::Error::from_raw_os_error)?;
        self.listeners.push((fd, port));
        Ok(())
    }

    fn pending_offers(&self) -> usize {
        self.map.values().filter(|s| s.offered).count()
    }

    /// A listener is readable: accept one connection and offer it.
    pub fn on_accept(&mut self, i: usize, out: &mut Out<'_>) {
        let Some((lfd, port)) = self.listeners.get(i) else {
            return;
        };
        let port = *port;
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
        out.send(Message::TcpOffer {
            id,
            dest: airlock_protocol::v2::Destination::Ip(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            port,
        });
        self.map.insert(
            id,
            Stream {
                fd,
                connecting: false,
                buf: Vec::new(),
                shut_pending: false,
                read_done: false,
                closed_sent: false,
                offered: true,
            },
        );
    }

    pub fn poll_set(
        &self,
        sess: &AgentSession,
        room: bool,
        add: &mut impl FnMut(RawFd, libc::c_short, Token),
    ) {
        if room && self.pending_offers() < MAX_PENDING_OFFERS {
            for (i, (fd, _)) in self.listeners.iter().enumerate() {
                add(fd.as_raw_fd(), libc::POLLIN, Token::Listen(i));
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
                if room && credit > 0 && !s.read_done {
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
                    self.map.insert(
                        id,
                        Stream {
                            fd,
                            connecting,
                            buf: Vec::new(),
                            shut_pending: false,
                            read_done: false,
                            closed_sent: false,
                            offered: false,
                        },
                    );
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
                    Some(s) => {
                        s.buf.extend_from_slice(&data);
                        self.flush(id, out);
                    }
                    None => out.consumed(id, StreamKind::Tcp, n),
                }
            }
            Message::TcpShutdownWrite { id } => {
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
                }
            }
            Message::TcpRefuse { id, .. } => {
                // Dropping the socket closes the client's connection.
                self.map.remove(&id);
            }
            _ => {}
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
