//! The fd adapter on real kernel objects: socketpair(SOCK_SEQPACKET),
//! socketpair(SOCK_STREAM) and a pipe, blocking and non-blocking.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::thread;

use super::*;

fn socketpair(ty: i32) -> (OwnedFd, OwnedFd) {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints for the kernel to fill.
    let r =
        unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    assert_eq!(r, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// (read end, write end)
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints for the kernel to fill.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0);
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A deterministic byte source (xorshift).
struct Gen(u64);
impl Gen {
    fn fill(&mut self, b: &mut [u8]) {
        for x in b {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *x = self.0 as u8;
        }
    }
}

/// FNV-1a over the stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Sum(u64);
impl Sum {
    fn new() -> Sum {
        Sum(0xcbf2_9ce4_8422_2325)
    }
    fn add(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= x as u64;
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

const TOTAL: usize = 16 * 1024 * 1024;

/// Sends 16 MiB as FileData frames (plus a fragmented Plan in the middle)
/// and a final FileDone; returns the checksum of what was sent.
fn sender(fd: OwnedFd, transport: Transport) -> Sum {
    let mut ch = Channel::new(fd.as_raw_fd(), transport);
    let mut gen = Gen(0x1234_5678);
    let mut sum = Sum::new();
    let mut sent = 0;
    let mut buf = vec![0u8; MAX_DATA];
    let mut n = 0;
    while sent < TOTAL {
        let len = (MAX_DATA - (n * 37) % 1000).min(TOTAL - sent);
        n += 1;
        gen.fill(&mut buf[..len]);
        sum.add(&buf[..len]);
        encode(
            &Message::FileData {
                id: 1,
                data: buf[..len].to_vec(),
            },
            ch.outbound(),
        )
        .unwrap();
        if n == 100 {
            encode(
                &Message::Plan {
                    data: vec![5; 300_000],
                },
                ch.outbound(),
            )
            .unwrap();
        }
        sent += len;
        assert!(ch.flush().unwrap(), "a blocking fd takes everything");
    }
    encode(
        &Message::FileDone {
            id: 1,
            result: Ok(TOTAL as u64),
        },
        ch.outbound(),
    )
    .unwrap();
    assert!(ch.flush().unwrap());
    sum
}

fn receiver(fd: OwnedFd, transport: Transport) -> (Sum, usize, bool) {
    let mut ch = Channel::new(fd.as_raw_fd(), transport);
    let mut r = Reassembler::default();
    let mut sum = Sum::new();
    let mut got = 0;
    let mut plan = false;
    loop {
        let f = ch.recv().unwrap().expect("a blocking fd waits");
        match r.push(f).unwrap() {
            Some(Message::FileData { data, .. }) => {
                sum.add(&data);
                got += data.len();
            }
            Some(Message::Plan { data }) => plan = data.len() == 300_000,
            Some(Message::FileDone { result, .. }) => {
                assert_eq!(result, Ok(TOTAL as u64));
                break;
            }
            Some(m) => panic!("unexpected {m:?}"),
            None => {}
        }
    }
    // The sender closed: EOF is reported as such.
    assert!(matches!(ch.recv(), Err(Error::Closed { mid_frame: false })));
    (sum, got, plan)
}

fn transfer(a: OwnedFd, b: OwnedFd, transport: Transport) {
    let t = thread::spawn(move || sender(a, transport));
    let (sum, got, plan) = receiver(b, transport);
    let sent = t.join().unwrap();
    assert_eq!(got, TOTAL);
    assert!(plan, "the fragmented plan arrived whole");
    assert_eq!(sum, sent, "checksum of 16 MiB");
}

#[test]
fn seqpacket_16mib() {
    let (a, b) = socketpair(libc::SOCK_SEQPACKET);
    transfer(a, b, Transport::Seqpacket);
}

#[test]
fn stream_socket_16mib() {
    let (a, b) = socketpair(libc::SOCK_STREAM);
    transfer(a, b, Transport::Stream);
}

#[test]
fn pipe_16mib() {
    let (r, w) = pipe();
    transfer(w, r, Transport::Stream);
}

fn poll2(a: i32, a_ev: i16, b: i32, b_ev: i16) {
    let mut p = [
        libc::pollfd {
            fd: a,
            events: a_ev,
            revents: 0,
        },
        libc::pollfd {
            fd: b,
            events: b_ev,
            revents: 0,
        },
    ];
    // SAFETY: p is a valid array of two pollfds.
    let r = unsafe { libc::poll(p.as_mut_ptr(), 2, 5000) };
    assert!(r > 0, "poll timed out or failed");
}

/// One thread, both ends non-blocking, small socket buffers: writes stop
/// at EAGAIN in the middle of frames (stream) or between packets
/// (seqpacket), and everything still arrives in order.
fn nonblocking(transport: Transport) {
    let ty = match transport {
        Transport::Seqpacket => libc::SOCK_SEQPACKET,
        Transport::Stream => libc::SOCK_STREAM,
    };
    let (a, b) = socketpair(ty);
    for fd in [&a, &b] {
        set_nonblocking(fd.as_raw_fd(), true).unwrap();
        // A seqpacket socket needs room for one whole frame (a smaller
        // buffer fails with EMSGSIZE); a stream socket takes any size.
        let size: i32 = match transport {
            Transport::Seqpacket => MAX_FRAME as i32,
            Transport::Stream => 4096,
        };
        // SAFETY: setsockopt reads one int from a valid pointer.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&size as *const i32).cast(),
                4,
            );
        }
    }
    let mut tx = Channel::new(a.as_raw_fd(), transport);
    let mut rx = Channel::new(b.as_raw_fd(), transport);
    let mut gen = Gen(99);
    let mut want = Sum::new();
    let total = 4 * 1024 * 1024;
    let mut queued = 0;
    let mut got = 0;
    let mut sum = Sum::new();
    let mut blocked = 0;
    let mut r = Reassembler::default();
    let mut buf = vec![0u8; MAX_DATA];
    while got < total {
        // Keep the outbound queue bounded, as a real loop would.
        while queued < total && tx.pending_out() < 16 * MAX_FRAME {
            let len = (1 + queued % 50_000).min(total - queued).min(MAX_DATA);
            gen.fill(&mut buf[..len]);
            want.add(&buf[..len]);
            encode(
                &Message::TcpData {
                    id: 3,
                    data: buf[..len].to_vec(),
                },
                tx.outbound(),
            )
            .unwrap();
            queued += len;
        }
        if !tx.flush().unwrap() {
            blocked += 1;
        }
        while let Some(f) = rx.recv().unwrap() {
            if let Some(Message::TcpData { data, .. }) = r.push(f).unwrap() {
                sum.add(&data);
                got += data.len();
            }
        }
        if got < total {
            let out = if tx.wants_write() { libc::POLLOUT } else { 0 };
            poll2(a.as_raw_fd(), out, b.as_raw_fd(), libc::POLLIN);
        }
    }
    assert_eq!(sum, want);
    assert!(blocked > 0, "the small buffer never pushed back");
}

#[test]
fn nonblocking_stream_partial_writes() {
    nonblocking(Transport::Stream);
}

#[test]
fn nonblocking_seqpacket() {
    nonblocking(Transport::Seqpacket);
}

fn raw_send(fd: &OwnedFd, b: &[u8]) {
    // SAFETY: b is a valid slice.
    let n = unsafe { libc::send(fd.as_raw_fd(), b.as_ptr().cast(), b.len(), 0) };
    assert_eq!(n, b.len() as isize, "{}", std::io::Error::last_os_error());
}

#[test]
fn seqpacket_rejects_bad_packets() {
    let (a, b) = socketpair(libc::SOCK_SEQPACKET);
    let mut rx = Channel::new(b.as_raw_fd(), Transport::Seqpacket);
    // A packet larger than a frame: seen whole through MSG_TRUNC.
    raw_send(&a, &vec![0u8; MAX_FRAME + 100]);
    assert!(matches!(
        rx.recv(),
        Err(Error::Wire(WireError::FrameTooLarge { len, .. })) if len == MAX_FRAME + 100
    ));
    // A packet whose length field disagrees with its size.
    let mut f = enc(&Message::Ping { nonce: 1 });
    f.push(0);
    raw_send(&a, &f);
    assert!(matches!(
        rx.recv(),
        Err(Error::Wire(WireError::LengthMismatch { .. }))
    ));
    // Two frames in one packet are refused too.
    let mut two = enc(&Message::Ping { nonce: 1 });
    two.extend(enc(&Message::Ping { nonce: 2 }));
    raw_send(&a, &two);
    assert!(matches!(
        rx.recv(),
        Err(Error::Wire(WireError::LengthMismatch { .. }))
    ));
    // A good one still decodes.
    raw_send(&a, &enc(&Message::Ping { nonce: 3 }));
    let f = rx.recv().unwrap().unwrap();
    assert_eq!(
        Message::decode(f.kind, f.id, f.body),
        Ok(Message::Ping { nonce: 3 })
    );
}

#[test]
fn stream_eof_mid_frame_and_garbage() {
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let mut rx = Channel::new(b.as_raw_fd(), Transport::Stream);
    let f = enc(&Message::Ping { nonce: 1 });
    raw_send(&a, &f[..7]);
    drop(a);
    assert!(matches!(rx.recv(), Err(Error::Closed { mid_frame: true })));

    let (a, b) = socketpair(libc::SOCK_STREAM);
    let mut rx = Channel::new(b.as_raw_fd(), Transport::Stream);
    raw_send(&a, &[0xff, 0xff, 0xff, 0xff, 1, 2]);
    assert!(matches!(
        rx.recv(),
        Err(Error::Wire(WireError::FrameTooLarge { .. }))
    ));
    // Fatal: the stream cannot resynchronise.
    raw_send(&a, &enc(&Message::Ping { nonce: 1 }));
    assert!(rx.recv().is_err());
}

#[test]
fn closed_peer_is_an_error_not_a_signal_and_pipes_fall_back_to_write() {
    let (a, b) = socketpair(libc::SOCK_STREAM);
    drop(b);
    let mut tx = Channel::new(a.as_raw_fd(), Transport::Stream);
    encode(&Message::Ping { nonce: 1 }, tx.outbound()).unwrap();
    assert!(matches!(tx.flush(), Err(Error::Io { op: "write", .. })));
    // A pipe takes the write(2) fallback after send(2) says ENOTSOCK (a
    // pipe has no MSG_NOSIGNAL: a process writing to one ignores SIGPIPE).
    let (r, w) = pipe();
    let mut tx = Channel::new(w.as_raw_fd(), Transport::Stream);
    encode(&Message::Ping { nonce: 1 }, tx.outbound()).unwrap();
    assert!(tx.flush().unwrap());
    let mut rx = Channel::new(r.as_raw_fd(), Transport::Stream);
    assert!(rx.recv().unwrap().is_some());
}

/// A peer that sends its last packet and closes while packets of ours sit
/// unread in its queue: the kernel answers the first recv with ECONNRESET,
/// but the last packet is still there, then the EOF. (An agent that failed
/// its set-up after the host had sent something lost its error report.)
#[test]
fn seqpacket_peer_closing_with_unread_packets_keeps_its_last_words() {
    let (a, b) = socketpair(libc::SOCK_SEQPACKET);
    let mut rx = Channel::new(b.as_raw_fd(), Transport::Seqpacket);
    // Ours, never read by the peer.
    raw_send(&b, &enc(&Message::Ping { nonce: 1 }));
    // Its last words, then it goes.
    raw_send(&a, &enc(&Message::Ping { nonce: 2 }));
    drop(a);
    let f = rx.recv().unwrap().unwrap();
    assert_eq!(
        Message::decode(f.kind, f.id, f.body),
        Ok(Message::Ping { nonce: 2 })
    );
    assert!(matches!(rx.recv(), Err(Error::Closed { mid_frame: false })));
}
