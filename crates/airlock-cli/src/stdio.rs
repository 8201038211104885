//! The caller's side of a run: our own stdout and stderr (with
//! backpressure), the terminal in raw mode for `-t`, and the signals we
//! forward.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// One of airlock's own output fds (1 or 2). Output it cannot take yet
/// waits here; while it does, the run grants the sandbox no more credit for
/// that stream (backpressure), and its loop keeps serving the timeout,
/// signals and the agent. The caller's fd is never made non-blocking (its
/// file description is shared with the caller's shell): at most `PIPE_BUF`
/// bytes are written at a time, and only after `poll` says there is room.
pub struct HostOut {
    pub fd: RawFd,
    pending: Vec<u8>,
    /// False once the fd failed (a closed pipe) or we gave up on it.
    ok: bool,
}

impl HostOut {
    pub fn new(fd: RawFd) -> HostOut {
        HostOut {
            fd,
            pending: Vec::new(),
            ok: true,
        }
    }

    pub fn blocked(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Queues `data` and writes what the fd takes now. Returns the bytes
    /// that are done with (written or dropped).
    pub fn push(&mut self, data: &[u8]) -> usize {
        if !self.ok {
            return data.len();
        }
        self.pending.extend_from_slice(data);
        self.flush(None)
    }

    /// Writes what the fd takes now; with `until`, waits for room up to
    /// that instant, then gives up on the rest. Returns the bytes done
    /// with.
    pub fn flush(&mut self, until: Option<Instant>) -> usize {
        let mut done = 0;
        while self.ok && !self.pending.is_empty() {
            let wait = until.map_or(0, |u| {
                u.saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(i32::MAX as u128) as i32
            });
            let mut p = libc::pollfd {
                fd: self.fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, wait) };
            if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if r == 0 {
                if until.is_some() {
                    done += self.give_up();
                }
                return done;
            }
            if p.revents & (libc::POLLERR | libc::POLLNVAL) != 0 && p.revents & libc::POLLOUT == 0 {
                return done + self.give_up();
            }
            let n = self.pending.len().min(libc::PIPE_BUF);
            // SAFETY: writes from our buffer.
            let w = unsafe { libc::write(self.fd, self.pending.as_ptr().cast(), n) };
            if w < 0 {
                match io::Error::last_os_error().kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return done,
                    // Our reader is gone (EPIPE): keep draining the sandbox.
                    _ => return done + self.give_up(),
                }
            }
            self.pending.drain(..w as usize);
            done += w as usize;
        }
        done
    }

    /// Stops writing (the run timed out while our reader did not read, or
    /// the fd failed); returns the bytes dropped.
    pub fn give_up(&mut self) -> usize {
        self.ok = false;
        let n = self.pending.len();
        self.pending = Vec::new();
        n
    }
}

/// The caller's terminal in raw mode for `-t`, restored on drop.
pub struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    pub fn enter() -> Option<RawMode> {
        // SAFETY: termios is plain data; tcgetattr/tcsetattr on our stdin.
        unsafe {
            if libc::isatty(0) != 1 {
                return None;
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
            Some(RawMode { saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the termios we saved.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}

/// The size of the caller's terminal, if stdin is one.
pub fn winsize() -> Option<(u16, u16)> {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it if stdin is a tty.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: ioctl into a local struct.
    let ok = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Signals the caller sends airlock, to forward to the command.
pub struct SignalFd {
    fd: OwnedFd,
}

/// The signals airlock forwards to the command.
fn forwarded(winch: bool) -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::sigaddset(&mut set, s);
        }
        if winch {
            libc::sigaddset(&mut set, libc::SIGWINCH);
        }
        set
    }
}

/// Blocks the forwarded signals, so that one arriving before the run loop
/// waits in the queue for it instead of killing airlock alone. The agent is
/// started with an empty mask.
pub fn block_forwarded_signals() {
    let set = forwarded(true);
    // SAFETY: changes this thread's signal mask only.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

impl SignalFd {
    pub fn new(winch: bool) -> io::Result<SignalFd> {
        let set = forwarded(winch);
        // SAFETY: sigprocmask on a valid set; signalfd returns a new fd.
        unsafe {
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(SignalFd {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn read(&self) -> Vec<i32> {
        let mut out = Vec::new();
        loop {
            // SAFETY: signalfd_siginfo is plain data of the size read.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            // SAFETY: reads one siginfo into `info`.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    std::mem::size_of::<libc::signalfd_siginfo>(),
                )
            };
            if n != std::mem::size_of::<libc::signalfd_siginfo>() as isize {
                return out;
            }
            out.push(info.ssi_signo as i32);
        }
    }
}
