//! The agent: PID 1 inside every sandbox.
//!
//! It starts the command (the tier supplies the confinement that runs
//! between fork and exec), reports whether the exec worked, reaps every
//! zombie, forwards the host's signals to the command's process group, and
//! when the command ends reports its status and exits — which, as PID 1 of
//! the sandbox's PID namespace, kills everything still running inside.
//!
//! It speaks to the host over one [`airlock_protocol`] channel and never
//! trusts what arrives there beyond the protocol's own validation.

use airlock_protocol::{Message, Stage, MAX_FRAME};
use std::os::fd::RawFd;

/// What the tier-specific launcher reports when the command could not be
/// started: the stage that failed and its errno.
pub type LaunchFailure = (Stage, i32);

fn send(channel: RawFd, m: &Message) {
    let buf = m.encode();
    // SAFETY: `buf` is valid for its length; a failed send means the host is
    // gone, and the agent exits on its next read.
    unsafe { libc::send(channel, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
}

/// Tells the user something about the set-up (before the command runs).
pub fn note(channel: RawFd, text: String) {
    send(channel, &Message::Note { text });
}

/// Reports a failure before the agent proper ran, then exits.
pub fn fail_setup(channel: RawFd, stage: Stage, errno: i32, detail: String) -> ! {
    send(
        channel,
        &Message::SetupFailed {
            stage,
            errno: errno.clamp(1, 4095),
            detail,
        },
    );
    // SAFETY: _exit never returns and runs no destructors, as wanted in a
    // forked child.
    unsafe { libc::_exit(125) }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Runs the agent. `launch` runs in the forked child and must exec the
/// command; it returns only on failure.
pub fn serve(channel: RawFd, launch: &mut dyn FnMut() -> LaunchFailure) -> ! {
    // SAFETY: sigset manipulation on locals; signalfd creation.
    let sfd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
    };
    if sfd < 0 {
        fail_setup(channel, Stage::Agent, errno(), "signalfd".into());
    }
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        fail_setup(channel, Stage::Agent, errno(), "pipe".into());
    }
    let (err_r, err_w) = (fds[0], fds[1]);
    // SAFETY: the agent is single-threaded, so fork is safe.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        fail_setup(channel, Stage::Agent, errno(), "fork".into());
    }
    if pid == 0 {
        // SAFETY: plain fd and signal-mask calls in the child.
        unsafe {
            libc::close(err_r);
            libc::close(sfd);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        }
        let (stage, e) = launch();
        let mut msg = [0u8; 5];
        msg[0] = stage as u8;
        msg[1..].copy_from_slice(&e.to_le_bytes());
        // SAFETY: writes 5 bytes from a local buffer, then exits.
        unsafe {
            libc::write(err_w, msg.as_ptr().cast(), msg.len());
            libc::_exit(127);
        }
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(err_w) };
    let mut msg = [0u8; 5];
    let mut got = 0;
    while got < msg.len() {
        // SAFETY: reads into the unfilled part of `msg`.
        let n = unsafe { libc::read(err_r, msg[got..].as_mut_ptr().cast(), msg.len() - got) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    // SAFETY: closing the read end once.
    unsafe { libc::close(err_r) };
    if got == msg.len() {
        let e = i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]).clamp(1, 4095);
        let mut st = 0;
        // SAFETY: reaps the failed child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        if msg[0] == Stage::Exec as u8 {
            send(channel, &Message::ExecFailed { errno: e });
        } else {
            let stage = stage_from(msg[0]);
            send(
                channel,
                &Message::SetupFailed {
                    stage,
                    errno: e,
                    detail: String::new(),
                },
            );
        }
        // SAFETY: exits the agent; the namespace dies with it.
        unsafe { libc::_exit(0) };
    }
    send(channel, &Message::Started { pid: pid as u32 });
    event_loop(channel, sfd, pid)
}

fn stage_from(v: u8) -> Stage {
    use Stage::*;
    [
        UserNamespace,
        Mounts,
        Network,
        Hostname,
        Credentials,
        Landlock,
        Seccomp,
        Workdir,
        Stdio,
        Exec,
        Limits,
        Agent,
    ]
    .into_iter()
    .find(|s| *s as u8 == v)
    .unwrap_or(Agent)
}

fn event_loop(channel: RawFd, sfd: RawFd, cmd: libc::pid_t) -> ! {
    let mut buf = vec![0u8; MAX_FRAME];
    loop {
        let mut pfd = [
            libc::pollfd {
                fd: channel,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `pfd` holds two valid pollfd entries.
        let n = unsafe { libc::poll(pfd.as_mut_ptr(), 2, -1) };
        if n < 0 {
            continue;
        }
        if pfd[1].revents != 0 {
            // Drain the signalfd, then reap everything that has exited.
            let mut info = [0u8; 128];
            // SAFETY: reads into a local buffer of the right size.
            while unsafe { libc::read(sfd, info.as_mut_ptr().cast(), info.len()) } > 0 {}
            reap(channel, cmd);
        }
        if pfd[0].revents != 0 {
            // SAFETY: receives into `buf`, which has MAX_FRAME bytes.
            let n = unsafe {
                libc::recv(
                    channel,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n == 0 || (n < 0 && errno() != libc::EAGAIN && errno() != libc::EINTR) {
                // The host is gone: nothing may outlive it.
                // SAFETY: exiting PID 1 kills the namespace.
                unsafe { libc::_exit(0) };
            }
            if n > 0 {
                match Message::decode(&buf[..n as usize]) {
                    Ok(Message::Signal { signo }) => {
                        // SAFETY: signals the command's process group (it
                        // called setsid), or the command alone.
                        unsafe {
                            if libc::kill(-cmd, signo as i32) < 0 {
                                libc::kill(cmd, signo as i32);
                            }
                        }
                    }
                    // SAFETY: exiting PID 1 kills the namespace.
                    Ok(Message::Shutdown) => unsafe { libc::_exit(0) },
                    // Anything else from the host is a bug; ignore it.
                    _ => {}
                }
            }
        }
    }
}

fn reap(channel: RawFd, cmd: libc::pid_t) {
    loop {
        let mut st = 0;
        // SAFETY: rusage is plain old data.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes into `st` and `ru`.
        let pid = unsafe { libc::wait4(-1, &mut st, libc::WNOHANG, &mut ru) };
        if pid <= 0 {
            return;
        }
        if pid == cmd {
            let (code, signal) = if libc::WIFEXITED(st) {
                (Some(libc::WEXITSTATUS(st) as u8), None)
            } else {
                (None, Some(libc::WTERMSIG(st) as u8))
            };
            send(
                channel,
                &Message::Exited {
                    code,
                    signal,
                    max_rss_kib: ru.ru_maxrss.max(0) as u64,
                },
            );
            // SAFETY: exiting PID 1 kills whatever the command left behind.
            unsafe { libc::_exit(0) };
        }
    }
}
