//! Egress streams: connections the agent accepted on the sandbox's proxy
//! ports and offered to the host. Each becomes one end of a socketpair
//! whose other end the proxy ([`airlock_egress::Proxy`]) serves in a thread
//! of its own; the sandbox's loop moves bytes between the agent's stream
//! and the socketpair under the protocol's credit.

use airlock_egress::{Kind, Proxy};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

/// Egress connections a sandbox may have open at once (each is a thread or
/// two on the host); more are refused until some end.
pub(crate) const MAX_STREAMS: usize = 256;

pub(crate) struct Stream {
    pub sock: UnixStream,
    /// Bytes from the agent still to write to the proxy.
    pub to_sock: Vec<u8>,
    /// The agent half-closed: shut our write side once `to_sock` is out.
    pub shut_pending: bool,
    pub got_shut: bool,
    /// The proxy closed its side (we told the agent).
    pub read_done: bool,
    pub close_sent: bool,
}

pub(crate) struct Egress {
    pub proxy: Arc<Proxy>,
    pub streams: BTreeMap<u32, Stream>,
}

impl Egress {
    pub fn new(proxy: Arc<Proxy>) -> Egress {
        Egress {
            proxy,
            streams: BTreeMap::new(),
        }
    }

    /// The proxy kind for an offer to `port` on the sandbox's loopback.
    pub fn kind_of(port: u16) -> Option<Kind> {
        match port {
            airlock_spec::net::HTTP_PROXY_PORT => Some(Kind::Http),
            airlock_spec::net::SOCKS_PORT => Some(Kind::Socks),
            _ => None,
        }
    }

    /// A new stream: the proxy gets one end.
    pub fn open(&mut self, id: u32, kind: Kind) -> std::io::Result<()> {
        let (a, b) = UnixStream::pair()?;
        b.set_nonblocking(true)?;
        self.proxy.spawn(kind, a);
        self.streams.insert(
            id,
            Stream {
                sock: b,
                to_sock: Vec::new(),
                shut_pending: false,
                got_shut: false,
                read_done: false,
                close_sent: false,
            },
        );
        Ok(())
    }

    /// The fds to poll, with their events; `credit` says how much the
    /// agent takes on a stream now.
    pub fn poll_set(&self, credit: impl Fn(u32) -> usize, add: &mut dyn FnMut(RawFd, i16)) {
        for (&id, s) in &self.streams {
            let mut ev = 0;
            if !s.read_done && !s.close_sent && credit(id) > 0 {
                ev |= libc::POLLIN;
            }
            if !s.to_sock.is_empty() {
                ev |= libc::POLLOUT;
            }
            if ev != 0 {
                add(s.sock.as_raw_fd(), ev);
            }
        }
    }

    pub fn id_of(&self, fd: RawFd) -> Option<u32> {
        self.streams
            .iter()
            .find(|(_, s)| s.sock.as_raw_fd() == fd)
            .map(|(&id, _)| id)
    }

    /// Writes what it can to the proxy; returns the bytes written, or
    /// `Err` when the proxy's side is gone.
    pub fn flush(&mut self, id: u32) -> Result<usize, ()> {
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(0);
        };
        let mut done = 0;
        while done < s.to_sock.len() {
            match s.sock.write(&s.to_sock[done..]) {
                Ok(0) => return Err(()),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
        s.to_sock.drain(..done);
        if s.to_sock.is_empty() && s.shut_pending {
            s.shut_pending = false;
            let _ = s.sock.shutdown(std::net::Shutdown::Write);
        }
        Ok(done)
    }

    /// Reads up to `max` bytes from the proxy: `Ok(None)` at EOF.
    pub fn read(&mut self, id: u32, buf: &mut [u8]) -> Result<Option<usize>, ()> {
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(Some(0));
        };
        loop {
            match s.sock.read(buf) {
                Ok(0) => return Ok(None),
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(Some(0)),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
    }
}
