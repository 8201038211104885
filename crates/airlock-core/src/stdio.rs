//! The host side of the command's stdio: pipes (stdout and stderr kept
//! apart) or a pty (`-t`), live forwarding, the output limit, signals.

use crate::CoreError;
use airlock_jail::Stdio;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

const CHUNK: usize = 64 * 1024;

/// One of airlock's own output fds (1 or 2). Output it cannot take yet
/// waits here; while it does, airlock stops reading that stream from the
/// sandbox (backpressure), and its loop keeps serving the timeout, signals
/// and the agent. The caller's fd is never made non-blocking (its file
/// description is shared with the caller's shell): we write at most
/// `PIPE_BUF` bytes, and only after `poll` says it has room.
struct HostOut {
    fd: RawFd,
    pending: Vec<u8>,
    /// False once the fd failed (a closed pipe) or we gave up on it.
    ok: bool,
}

impl HostOut {
    fn new(fd: RawFd) -> HostOut {
        HostOut {
            fd,
            pending: Vec::new(),
            ok: true,
        }
    }

    fn blocked(&self) -> bool {
        !self.pending.is_empty()
    }

    fn push(&mut self, data: &[u8]) {
        if self.ok {
            self.pending.extend_from_slice(data);
            self.flush(None);
        }
    }

    /// Writes what the fd takes now; with `until`, waits for room up to
    /// that instant, then gives up on the rest.
    fn flush(&mut self, until: Option<Instant>) {
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
                    self.give_up();
                }
                return;
            }
            if p.revents & (libc::POLLERR | libc::POLLNVAL) != 0 && p.revents & libc::POLLOUT == 0 {
                self.give_up();
                return;
            }
            let n = self.pending.len().min(libc::PIPE_BUF);
            // SAFETY: writes from our buffer.
            let w = unsafe { libc::write(self.fd, self.pending.as_ptr().cast(), n) };
            if w < 0 {
                match io::Error::last_os_error().kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return,
                    // Our reader is gone (EPIPE): keep draining the sandbox.
                    _ => {
                        self.give_up();
                        return;
                    }
                }
            }
            self.pending.drain(..w as usize);
        }
    }

    fn give_up(&mut self) {
        self.ok = false;
        self.pending = Vec::new();
    }
}

/// Host-side ends plus forwarding state.
pub struct Streams {
    stdin_open: bool,
    to_sandbox: Option<OwnedFd>,
    pending: Vec<u8>,
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    kept: u64,
    out_bytes: u64,
    err_bytes: u64,
    out_trunc: bool,
    err_trunc: bool,
    noted: bool,
    /// Our own stdout and stderr, with what they could not take yet.
    host: [HostOut; 2],
    tty: Option<RawMode>,
    master: Option<RawFd>,
    buf: Vec<u8>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), CoreError> {
    airlock_jail::sys::pipe_cloexec().map_err(CoreError::io("pipe"))
}

fn set_nonblock(fd: RawFd) {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// Bytes waiting to be read from a pipe or pty master.
fn queued(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } < 0 {
        return 0;
    }
    n.max(0) as usize
}

fn dup(fd: RawFd) -> Result<OwnedFd, CoreError> {
    // SAFETY: duplicates an fd we own.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(CoreError::io("dup")(io::Error::last_os_error()));
    }
    // SAFETY: `n` is a new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// The host's streams and the sandbox's ends of them.
pub fn pair(tty: bool) -> Result<(Streams, Stdio), CoreError> {
    let mut s = Streams {
        stdin_open: true,
        to_sandbox: None,
        pending: Vec::new(),
        out: None,
        err: None,
        kept: 0,
        out_bytes: 0,
        err_bytes: 0,
        out_trunc: false,
        err_trunc: false,
        noted: false,
        host: [HostOut::new(1), HostOut::new(2)],
        tty: None,
        master: None,
        buf: vec![0u8; CHUNK],
    };
    if tty {
        let (mut m, mut sl) = (0, 0);
        // SAFETY: winsize is plain data; TIOCGWINSZ fills it if stdin is a tty.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: ioctl into a local struct.
        let have_ws = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0;
        // SAFETY: openpty writes two fds; the winsize pointer is valid or null.
        let r = unsafe {
            libc::openpty(
                &mut m,
                &mut sl,
                std::ptr::null_mut(),
                std::ptr::null(),
                if have_ws { &ws } else { std::ptr::null() },
            )
        };
        if r < 0 {
            return Err(CoreError::io("openpty")(io::Error::last_os_error()));
        }
        // SAFETY: both fds are new.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(sl)) };
        // SAFETY: set close-on-exec on our own fds.
        unsafe {
            libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
            libc::fcntl(slave.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
        }
        s.master = Some(master.as_raw_fd());
        let w = dup(master.as_raw_fd())?;
        set_nonblock(w.as_raw_fd());
        s.to_sandbox = Some(w);
        s.out = Some(master);
        s.tty = RawMode::enter();
        let sandbox = Stdio {
            stdin: dup(slave.as_raw_fd())?,
            stdout: dup(slave.as_raw_fd())?,
            stderr: slave,
        };
        return Ok((s, sandbox));
    }
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    set_nonblock(in_w.as_raw_fd());
    s.to_sandbox = Some(in_w);
    s.out = Some(out_r);
    s.err = Some(err_r);
    Ok((
        s,
        Stdio {
            stdin: in_r,
            stdout: out_w,
            stderr: err_w,
        },
    ))
}

impl Streams {
    /// stdout and stderr have both reached end-of-file, and all of it has
    /// been written out (or given up on).
    pub fn drained(&self) -> bool {
        self.out.is_none() && self.err.is_none() && !self.host.iter().any(HostOut::blocked)
    }

    /// Reads what stdout and stderr hold right now — no more: whoever else
    /// may hold their write ends (a process that escaped, or someone the
    /// sandbox passed them to) cannot keep this going — without waiting for
    /// end-of-file, and stops reading them; then writes it out, waiting for
    /// our own reader until `until` at most. Used once the command has
    /// exited or the sandbox is gone: everything it wrote is in the pipes
    /// already.
    pub fn drain_now(&mut self, limit: Option<u64>, until: Instant) {
        for (i, is_out) in [(0, true), (1, false)] {
            if let Some(fd) = (if is_out { &self.out } else { &self.err })
                .as_ref()
                .map(|f| f.as_raw_fd())
            {
                set_nonblock(fd);
                let mut left = queued(fd);
                while left > 0 {
                    self.host[i].flush(Some(until));
                    match self.pump(is_out, limit) {
                        0 => break,
                        n => left = left.saturating_sub(n),
                    }
                }
            }
            if is_out {
                self.out = None;
            } else {
                self.err = None;
            }
            self.host[i].flush(Some(until));
        }
    }

    /// Stops writing to our own stdout and stderr (the run timed out while
    /// our reader did not read).
    pub fn give_up_output(&mut self) {
        for h in &mut self.host {
            h.give_up();
        }
    }

    pub fn close_stdin(&mut self) {
        self.to_sandbox = None;
        self.stdin_open = false;
    }

    /// Byte counts and truncation flags, into the run's result.
    pub fn record(&self, r: &mut crate::RunResult) {
        r.stdout_bytes = self.out_bytes;
        r.stderr_bytes = self.err_bytes;
        r.stdout_truncated = self.out_trunc;
        r.stderr_truncated = self.err_trunc;
    }

    pub fn sync_winsize(&self) {
        if let Some(m) = self.master {
            // SAFETY: winsize is plain data; ioctls on our stdin and master.
            unsafe {
                let mut ws: libc::winsize = std::mem::zeroed();
                if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
                    libc::ioctl(m, libc::TIOCSWINSZ, &ws);
                }
            }
        }
    }

    /// Waits for activity, moves data, and returns the `extra` fds that are
    /// ready.
    pub fn poll(
        &mut self,
        extra: &[(RawFd, libc::c_short)],
        timeout_ms: i32,
        limit: Option<u64>,
    ) -> Result<Vec<(RawFd, libc::c_short)>, CoreError> {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(6);
        let pfd = |fd, events| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let out = self.out.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
        let err = self.err.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
        let dst = self
            .to_sandbox
            .as_ref()
            .map(|f| f.as_raw_fd())
            .unwrap_or(-1);
        // A stream whose output we cannot pass on yet is not read.
        fds.push(pfd(
            if self.host[0].blocked() { -1 } else { out },
            libc::POLLIN,
        ));
        fds.push(pfd(
            if self.host[1].blocked() { -1 } else { err },
            libc::POLLIN,
        ));
        let want_stdin = self.stdin_open && dst >= 0 && self.pending.is_empty();
        fds.push(pfd(if want_stdin { 0 } else { -1 }, libc::POLLIN));
        fds.push(pfd(
            if self.pending.is_empty() { -1 } else { dst },
            libc::POLLOUT,
        ));
        for h in &self.host {
            fds.push(pfd(if h.blocked() { h.fd } else { -1 }, libc::POLLOUT));
        }
        for (fd, ev) in extra {
            fds.push(pfd(*fd, *ev));
        }
        // SAFETY: `fds` is a valid array of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(Vec::new());
            }
            return Err(CoreError::io("poll")(e));
        }
        if fds[0].revents != 0 {
            let _ = self.pump(true, limit);
        }
        if fds[1].revents != 0 {
            let _ = self.pump(false, limit);
        }
        if fds[2].revents != 0 {
            self.read_stdin();
        }
        if fds[3].revents != 0 {
            self.flush_stdin();
        }
        for i in 0..2 {
            if fds[4 + i].revents != 0 {
                self.host[i].flush(None);
            }
        }
        Ok(fds[6..]
            .iter()
            .filter(|p| p.revents != 0)
            .map(|p| (p.fd, p.revents))
            .collect())
    }

    fn read_stdin(&mut self) {
        // SAFETY: reads into our buffer.
        let n = unsafe { libc::read(0, self.buf.as_mut_ptr().cast(), self.buf.len()) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            return;
        }
        if n <= 0 {
            // EOF (or no usable stdin): the command sees EOF too — except
            // with a pty, where the line discipline has no EOF to give.
            self.stdin_open = false;
            if self.master.is_none() {
                self.to_sandbox = None;
            }
            return;
        }
        self.pending.extend_from_slice(&self.buf[..n as usize]);
        self.flush_stdin();
    }

    fn flush_stdin(&mut self) {
        let Some(dst) = self.to_sandbox.as_ref() else {
            self.pending.clear();
            return;
        };
        while !self.pending.is_empty() {
            // SAFETY: writes from our buffer.
            let n = unsafe {
                libc::write(
                    dst.as_raw_fd(),
                    self.pending.as_ptr().cast(),
                    self.pending.len(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
                    return;
                }
                // The command closed its stdin.
                self.pending.clear();
                self.close_stdin();
                return;
            }
            self.pending.drain(..n as usize);
        }
    }

    /// Moves one chunk; returns how many bytes it read.
    fn pump(&mut self, is_out: bool, limit: Option<u64>) -> usize {
        let Some(fd) = (if is_out { &self.out } else { &self.err })
            .as_ref()
            .map(|f| f.as_raw_fd())
        else {
            return 0;
        };
        // SAFETY: reads into our buffer.
        let n = unsafe { libc::read(fd, self.buf.as_mut_ptr().cast(), self.buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::WouldBlock {
                return 0;
            }
        }
        if n <= 0 {
            // EOF, or EIO from a pty master whose last slave closed.
            if is_out {
                self.out = None;
            } else {
                self.err = None;
            }
            return 0;
        }
        let n = n as usize;
        if is_out {
            self.out_bytes += n as u64;
        } else {
            self.err_bytes += n as u64;
        }
        let keep = match limit {
            Some(l) => (l.saturating_sub(self.kept)).min(n as u64) as usize,
            None => n,
        };
        if keep < n {
            if is_out {
                self.out_trunc = true;
            } else {
                self.err_trunc = true;
            }
        }
        self.kept += keep as u64;
        if keep > 0 {
            let i = if is_out { 0 } else { 1 };
            let chunk = self.buf[..keep].to_vec();
            self.host[i].push(&chunk);
        }
        if keep < n && !self.noted {
            self.noted = true;
            let l = limit.unwrap_or(0);
            let msg = format!(
                "\nairlock: output limit of {l} bytes reached (--output-limit); the rest of stdout and stderr is dropped\n"
            );
            let _ = airlock_jail::sys::write_all_fd(2, msg.as_bytes());
        }
        n
    }
}

/// The caller's terminal in raw mode for `-t`, restored on drop.
struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
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
        // SAFETY: restores the saved attributes of our stdin.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        self.tty.take();
    }
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
/// waits in the queue for it instead of killing airlock alone. Children
/// reset their mask before exec.
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
