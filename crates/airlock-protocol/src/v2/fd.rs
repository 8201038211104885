//! A thin adapter that moves frames over a file descriptor, blocking or
//! non-blocking: a `SOCK_SEQPACKET` socket (one frame per packet) or any
//! byte stream (pipe, `SOCK_STREAM` socket, virtio-serial port, vsock).
//!
//! It owns no policy: frames to send are appended to its outbound queue
//! (typically by [`super::HostSession::send`] writing into
//! [`Channel::outbound`]), [`Channel::flush`] writes what the fd takes, and
//! [`Channel::recv`] returns the next frame read. With a non-blocking fd,
//! both return early on `EAGAIN` and keep their place: a stream write may
//! stop in the middle of a frame, and the rest goes out on the next flush.
//!
//! A seqpacket socket's `SO_SNDBUF` must leave room for one whole
//! [`MAX_FRAME`] packet (Linux's default does); a packet larger than the
//! buffer fails with `EMSGSIZE`, which is reported, never split.
//!
//! Backpressure: a side should stop reading while its own outbound queue
//! is above [`OUT_HIGH_WATER`] ([`Channel::should_read`]), so that a peer
//! that sends requests but never reads the answers cannot make it queue
//! without bound.

use std::io;
use std::os::fd::RawFd;

use super::error::{Error, WireError};
use super::frame::{frame_size, Frame};
use super::framer::StreamFramer;
use super::MAX_FRAME;

/// Stop reading while more than this many bytes wait to be sent.
pub const OUT_HIGH_WATER: usize = 4 * MAX_FRAME;

/// What kind of fd the channel runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `SOCK_SEQPACKET`: one frame per packet.
    Seqpacket,
    /// A byte stream.
    Stream,
}

/// Frames over one fd, which the channel does not own (it never closes it).
#[derive(Debug)]
pub struct Channel {
    fd: RawFd,
    transport: Transport,
    out: Vec<u8>,
    out_head: usize,
    rbuf: Vec<u8>,
    framer: StreamFramer,
    /// `send(2)` failed with ENOTSOCK once: use `write(2)` (a pipe).
    not_socket: bool,
}

impl Channel {
    pub fn new(fd: RawFd, transport: Transport) -> Channel {
        Channel {
            fd,
            transport,
            out: Vec::new(),
            out_head: 0,
            rbuf: Vec::new(),
            framer: StreamFramer::new(),
            not_socket: false,
        }
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The outbound queue, to append whole frames to.
    pub fn outbound(&mut self) -> &mut Vec<u8> {
        if self.out_head > 0 {
            self.out.drain(..self.out_head);
            self.out_head = 0;
        }
        &mut self.out
    }

    /// Bytes waiting to be written.
    pub fn pending_out(&self) -> usize {
        self.out.len() - self.out_head
    }

    /// Whether there is something to write (poll for `POLLOUT`).
    pub fn wants_write(&self) -> bool {
        self.pending_out() > 0
    }

    /// Whether reading more is reasonable now (see [`OUT_HIGH_WATER`]).
    pub fn should_read(&self) -> bool {
        self.pending_out() <= OUT_HIGH_WATER
    }

    /// Writes queued frames until the queue is empty (`Ok(true)`) or the fd
    /// would block (`Ok(false)`; non-blocking fds only).
    pub fn flush(&mut self) -> Result<bool, Error> {
        while self.out_head < self.out.len() {
            let pending = &self.out[self.out_head..];
            let chunk = match self.transport {
                Transport::Stream => pending,
                Transport::Seqpacket => match frame_size(pending) {
                    Some(Ok(n)) if n <= pending.len() => &pending[..n],
                    // The queue only ever holds encoded frames.
                    _ => return Err(Error::Wire(WireError::FrameTooShort { len: pending.len() })),
                },
            };
            match write_some(self.fd, chunk, &mut self.not_socket) {
                Ok(n) => self.out_head += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Io {
                        op: "write",
                        fd: self.fd,
                        source,
                    })
                }
            }
        }
        self.out.clear();
        self.out_head = 0;
        Ok(true)
    }

    /// Reads until a whole frame is there and returns it, or returns
    /// `Ok(None)` when a non-blocking fd has nothing more for now. The
    /// peer closing the channel is [`Error::Closed`].
    pub fn recv(&mut self) -> Result<Option<Frame<'_>>, Error> {
        match self.transport {
            Transport::Seqpacket => {
                let n = loop {
                    if self.rbuf.len() < MAX_FRAME {
                        self.rbuf.resize(MAX_FRAME, 0);
                    }
                    match recv_packet(self.fd, &mut self.rbuf) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // The peer closed with packets of ours unread. The
                        // kernel reports that once, ahead of the packets
                        // the peer sent before closing (its last words: an
                        // error report, an exit status), which are still
                        // queued: read on, to them and then to the EOF.
                        Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {}
                        Err(source) => {
                            return Err(Error::Io {
                                op: "recv",
                                fd: self.fd,
                                source,
                            })
                        }
                    }
                };
                if n == 0 {
                    return Err(Error::Closed { mid_frame: false });
                }
                if n > MAX_FRAME {
                    return Err(Error::Wire(WireError::FrameTooLarge {
                        len: n,
                        max: MAX_FRAME,
                    }));
                }
                Ok(Some(Frame::decode(&self.rbuf[..n])?))
            }
            Transport::Stream => {
                while !self.framer_ready() {
                    if self.rbuf.len() < MAX_FRAME {
                        self.rbuf.resize(MAX_FRAME, 0);
                    }
                    match read_some(self.fd, &mut self.rbuf) {
                        Ok(0) => {
                            return Err(Error::Closed {
                                mid_frame: self.framer.mid_frame(),
                            })
                        }
                        Ok(n) => self.framer.push(&self.rbuf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(source) => {
                            return Err(Error::Io {
                                op: "read",
                                fd: self.fd,
                                source,
                            })
                        }
                    }
                }
                Ok(self.framer.next_frame()?)
            }
        }
    }

    /// Whether the stream framer can answer without reading: a whole
    /// frame, or an error, is buffered.
    fn framer_ready(&self) -> bool {
        self.framer.failed().is_some() || self.framer.has_frame()
    }
}

/// Sets or clears `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFL/F_SETFL reads and sets flags of an fd the
    // caller owns; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn write_some(fd: RawFd, buf: &[u8], not_socket: &mut bool) -> io::Result<usize> {
    if !*not_socket {
        // SAFETY: buf is a valid slice for its length; MSG_NOSIGNAL turns a
        // closed peer into EPIPE instead of SIGPIPE.
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOTSOCK) {
            return Err(e);
        }
        *not_socket = true;
    }
    // SAFETY: buf is a valid slice for its length.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn read_some(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid, writable slice for its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Receives one packet; with `MSG_TRUNC` the result is the packet's real
/// size even when it did not fit `buf`, so an oversized packet is seen as
/// such instead of being silently cut.
fn recv_packet(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid, writable slice for its length; the kernel
    // writes at most buf.len() bytes whatever MSG_TRUNC reports.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
