//! Starting the agent.
//!
//! The `airlock` binary is exec'd as `airlock-agent`, with an empty
//! environment, from an fd opened before the first sandbox existed
//! (`/proc/self/exe`, [`agent_exe`]) — never from a path a sandbox could
//! reach — so the agent holds no host memory. The caller may be
//! multi-threaded (a daemon): the child that execs is a fork that runs only
//! async-signal-safe calls on data prepared beforehand, no allocation, no
//! lock.
//!
//! The local tier's agent is that process. A container's is its child:
//! the exec'd agent (in the host's namespaces, where it was exec'd, so its
//! memory belongs to the host's user namespace and, non-dumpable, no
//! process of the sandbox owns its `/proc` entries — not even the
//! sandbox's root) takes the subordinate ids when run by root (so that the
//! sandbox's user namespace is owned by them, not by root: the kernel
//! charges inotify, queued signals and message queues to the namespace's
//! owner), clones the sandbox's PID 1 into new user, pid, mount, net, ipc
//! and uts namespaces as a child of airlock itself (`CLONE_PARENT`),
//! reports its pid and exits. airlock writes the id maps and lets PID 1 go.
//!
//! A control socket (fd [`FD_CONTROL`] in the agent) carries the few bytes
//! this takes: the configuration (host → agent), PID 1's pid or the errno
//! of its clone (agent → host), the go (host → PID 1).

use crate::cgroup::Cgroup;
use crate::userns::IdMap;
use crate::{sys, JailError};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::time::Duration;

/// The host↔agent channel, in the agent.
pub const FD_CHANNEL: RawFd = 3;
/// The control socket, in the agent (see the module docs).
pub const FD_CONTROL: RawFd = 4;
/// The first inherited mount tree, in the agent (root-run container).
pub const FD_FIRST_TREE: RawFd = 5;
/// The name the agent runs under (`argv[0]`; `/proc/1/cmdline` inside).
pub const AGENT_ARGV0: &str = "airlock-agent";

/// Configuration tag: the local tier (serve as you are).
pub const CONFIG_LOCAL: u8 = 1;
/// Configuration tag: a container (then uid u32, gid u32, LE).
pub const CONFIG_CONTAINER: u8 = 2;
/// Report tag: PID 1's pid follows (u32 LE).
pub const REPORT_PID: u8 = 1;
/// Report tag: the clone failed, errno follows (u32 LE).
pub const REPORT_ERRNO: u8 = 2;
/// The namespaces of a container sandbox.
pub const NS_FLAGS: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

const USERNS_HINT: &str = ": unprivileged user namespaces look disabled or restricted here. \
On Ubuntu 23.10+ run `sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0` (or add an \
AppArmor profile for airlock); elsewhere check `sysctl user.max_user_namespaces` and \
`kernel.unprivileged_userns_clone`; inside Docker, run with --security-opt seccomp=unconfined \
or use `airlock run --isolation microvm`. `airlock doctor` checks all of this";

/// The running binary, opened once, before any sandbox exists.
pub fn agent_exe() -> io::Result<RawFd> {
    static EXE: OnceLock<Result<OwnedFd, i32>> = OnceLock::new();
    let r = EXE.get_or_init(|| {
        // SAFETY: a constant C string; the kernel returns a new fd or -1.
        let fd =
            unsafe { libc::open(c"/proc/self/exe".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO))
        } else {
            // SAFETY: a new fd that nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }
    });
    match r {
        Ok(fd) => Ok(fd.as_raw_fd()),
        Err(e) => Err(io::Error::from_raw_os_error(*e)),
    }
}

/// How to start an agent.
pub struct AgentSpawn<'a> {
    /// Container tier: the sandbox's id mapping. `None`: the local tier.
    pub idmap: Option<IdMap>,
    pub cgroup: Option<&'a Cgroup>,
    /// Mount trees the agent inherits from [`FD_FIRST_TREE`] on.
    pub inherit: Vec<OwnedFd>,
    /// The channel is a byte stream (`SOCK_STREAM`) instead of a
    /// `SOCK_SEQPACKET` socketpair.
    pub stream: bool,
}

/// A started agent.
pub struct Agent {
    /// Its pid on the host (PID 1 inside a container); our child.
    pub pid: libc::pid_t,
    /// Readable once the agent has exited (its pid cannot be recycled
    /// while we hold it unreaped).
    pub pidfd: OwnedFd,
    /// Our end of the channel.
    pub channel: OwnedFd,
}

/// What the child needs, prepared before the fork.
struct ChildArgs {
    /// (from, to): `from` is above every `to`.
    moves: Vec<(RawFd, RawFd)>,
    first_free: RawFd,
    exe: RawFd,
    argv: [*const libc::c_char; 2],
    envp: [*const libc::c_char; 1],
}

fn socketpair(ty: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut sp = [0; 2];
    // SAFETY: `sp` has room for two fds.
    sys::cvt(unsafe {
        libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, sp.as_mut_ptr())
    })?;
    // SAFETY: both fds are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(sp[0]), OwnedFd::from_raw_fd(sp[1])) })
}

/// Reads one control message (at most 16 bytes), waiting at most `limit`.
fn recv_ctl(fd: RawFd, limit: Duration) -> io::Result<Vec<u8>> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, limit.as_millis().min(i32::MAX as u128) as i32) };
    if n == 0 {
        return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
    }
    let mut b = [0u8; 16];
    // SAFETY: receives into a local buffer.
    let r = unsafe { libc::recv(fd, b.as_mut_ptr().cast(), b.len(), 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(b[..r as usize].to_vec())
}

fn send_ctl(fd: RawFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: sends from a local buffer, never raising SIGPIPE.
    let r = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL) };
    if r != msg.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Starts an agent (see the module docs).
pub fn spawn_agent(s: AgentSpawn<'_>) -> Result<Agent, JailError> {
    let exe = agent_exe().map_err(JailError::AgentExe)?;
    let (ours, theirs) = socketpair(if s.stream {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_SEQPACKET
    })
    .map_err(JailError::Channel)?;
    let (ctl, ctl_theirs) = socketpair(libc::SOCK_SEQPACKET).map_err(JailError::Channel)?;
    // SAFETY: a constant C string; the kernel returns a new fd or -1.
    let null =
        sys::cvt(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })
            .map_err(JailError::Channel)?;
    // SAFETY: a new fd that nothing else owns.
    let null = unsafe { OwnedFd::from_raw_fd(null) };

    // Every fd the agent gets, and the binary's, duplicated above every
    // target number so that the child's dup3s never overwrite one another.
    let mut wanted: Vec<(RawFd, RawFd)> = vec![
        (null.as_raw_fd(), 0),
        (null.as_raw_fd(), 1),
        (null.as_raw_fd(), 2),
        (theirs.as_raw_fd(), FD_CHANNEL),
        (ctl_theirs.as_raw_fd(), FD_CONTROL),
    ];
    for (i, t) in s.inherit.iter().enumerate() {
        wanted.push((t.as_raw_fd(), FD_FIRST_TREE + i as RawFd));
    }
    let first_free = FD_FIRST_TREE + s.inherit.len() as RawFd;
    let high = |fd: RawFd| -> Result<OwnedFd, JailError> {
        // SAFETY: duplicates an fd we own.
        let d = sys::cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, first_free + 8) })
            .map_err(JailError::Channel)?;
        // SAFETY: a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(d) })
    };
    let mut dups: Vec<OwnedFd> = Vec::with_capacity(wanted.len() + 1);
    let mut moves = Vec::with_capacity(wanted.len());
    for (from, to) in wanted {
        let d = high(from)?;
        moves.push((d.as_raw_fd(), to));
        dups.push(d);
    }
    let exe = high(exe)?;
    let argv0 = CString::new(AGENT_ARGV0).unwrap_or_default();
    let args = ChildArgs {
        moves,
        first_free,
        exe: exe.as_raw_fd(),
        argv: [argv0.as_ptr(), std::ptr::null()],
        envp: [std::ptr::null()],
    };
    // SAFETY: fork. The child only calls async-signal-safe functions on
    // `args`, prepared above, then execs or exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        child(&args);
    }
    if pid < 0 {
        return Err(JailError::Channel(io::Error::last_os_error()));
    }
    drop(dups);
    drop(exe);
    drop(theirs);
    drop(ctl_theirs);
    drop(null);
    let kill = |p: libc::pid_t| {
        // SAFETY: kills and reaps our own child.
        unsafe {
            libc::kill(p, libc::SIGKILL);
            libc::waitpid(p, std::ptr::null_mut(), 0);
        }
    };
    // Everything the agent starts is in the sandbox's groups from its
    // first instruction.
    if let Some(cg) = s.cgroup {
        if let Err(e) = cg.add(pid) {
            kill(pid);
            return Err(e);
        }
    }
    let Some(map) = s.idmap else {
        // The local tier: this process is the agent.
        if let Err(e) = send_ctl(ctl.as_raw_fd(), &[CONFIG_LOCAL]) {
            kill(pid);
            return Err(JailError::Channel(e));
        }
        return finish(pid, ours, kill);
    };
    let (uid, gid) = map.namespace_owner().unwrap_or((u32::MAX, u32::MAX));
    let mut cfg = vec![CONFIG_CONTAINER];
    cfg.extend_from_slice(&uid.to_le_bytes());
    cfg.extend_from_slice(&gid.to_le_bytes());
    let report = send_ctl(ctl.as_raw_fd(), &cfg)
        .and_then(|()| recv_ctl(ctl.as_raw_fd(), Duration::from_secs(30)));
    // The exec'd agent has done its part (or failed): reap it.
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    let report = report.map_err(JailError::Channel)?;
    let word = |b: &[u8]| u32::from_le_bytes([b[1], b[2], b[3], b[4]]);
    let pid1 = match report.as_slice() {
        b if b.len() == 5 && b[0] == REPORT_PID => word(b) as libc::pid_t,
        b if b.len() == 5 && b[0] == REPORT_ERRNO => {
            let err = io::Error::from_raw_os_error(word(b) as i32);
            let hint = if matches!(
                err.raw_os_error(),
                Some(libc::EPERM) | Some(libc::ENOSPC) | Some(libc::EACCES)
            ) {
                USERNS_HINT
            } else {
                ""
            };
            return Err(JailError::Clone { hint, err });
        }
        _ => {
            return Err(JailError::Channel(io::Error::from_raw_os_error(
                libc::EPROTO,
            )))
        }
    };
    if let Err(err) = map.write_for(pid1) {
        kill(pid1);
        let hint = if map.is_rootless() { USERNS_HINT } else { "" };
        return Err(JailError::IdMap { hint, err });
    }
    // Let PID 1 go.
    if let Err(e) = send_ctl(ctl.as_raw_fd(), b"1") {
        kill(pid1);
        return Err(JailError::Channel(e));
    }
    finish(pid1, ours, kill)
}

fn finish(
    pid: libc::pid_t,
    channel: OwnedFd,
    kill: impl Fn(libc::pid_t),
) -> Result<Agent, JailError> {
    // SAFETY: pidfd_open on our own, unreaped child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        let e = io::Error::last_os_error();
        kill(pid);
        return Err(JailError::Channel(e));
    }
    Ok(Agent {
        pid,
        // SAFETY: a new fd that nothing else owns.
        pidfd: unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) },
        channel,
    })
}

/// The child, between fork and exec: async-signal-safe calls only.
fn child(a: &ChildArgs) -> ! {
    // SAFETY: every call here is an async-signal-safe syscall wrapper on
    // fds and memory prepared before the fork; _exit never returns.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        for &(from, to) in &a.moves {
            if libc::dup3(from, to, 0) < 0 {
                libc::_exit(125);
            }
        }
        // Nothing else reaches the agent.
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        if libc::syscall(
            libc::SYS_close_range,
            a.first_free as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        ) < 0
        {
            libc::_exit(125);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::syscall(
            libc::SYS_execveat,
            a.exe,
            c"".as_ptr(),
            a.argv.as_ptr(),
            a.envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        libc::_exit(127);
    }
}

/// In the exec'd agent, first thing: reads the configuration. For a
/// container, takes the subordinate ids if asked (dropping host root for
/// good), clones PID 1 into the sandbox's namespaces as a child of airlock,
/// reports its pid and exits; PID 1 returns from here once airlock has
/// written its id maps, with every capability in its new user namespace.
/// For the local tier, returns at once. Never returns on failure.
pub fn agent_bootstrap() {
    let mut b = [0u8; 16];
    // SAFETY: receives into a local buffer from our control socket.
    let n = unsafe { libc::recv(FD_CONTROL, b.as_mut_ptr().cast(), b.len(), 0) };
    let exit = |code| -> ! {
        // SAFETY: leaves at once.
        unsafe { libc::_exit(code) }
    };
    if n == 1 && b[0] == CONFIG_LOCAL {
        // SAFETY: closing our control socket once.
        unsafe { libc::close(FD_CONTROL) };
        return;
    }
    if n != 9 || b[0] != CONFIG_CONTAINER {
        exit(125);
    }
    let uid = u32::from_le_bytes([b[1], b[2], b[3], b[4]]);
    let gid = u32::from_le_bytes([b[5], b[6], b[7], b[8]]);
    let report = |tag: u8, v: u32| {
        let mut m = [tag, 0, 0, 0, 0];
        m[1..].copy_from_slice(&v.to_le_bytes());
        let _ = send_ctl(FD_CONTROL, &m);
    };
    // SAFETY: geteuid cannot fail; credential syscalls with plain ids.
    unsafe {
        if uid != u32::MAX && libc::geteuid() != uid {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                report(REPORT_ERRNO, libc::EPERM as u32);
                exit(125);
            }
        }
    }
    // SAFETY: raw clone with fork semantics (this process is single-
    // threaded); CLONE_PARENT makes PID 1 airlock's child.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (NS_FLAGS | libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        let e = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EPERM);
        report(REPORT_ERRNO, e as u32);
        exit(125);
    }
    if pid > 0 {
        report(REPORT_PID, pid as u32);
        exit(0);
    }
    // PID 1. Its parent is airlock (whose death kills it), not us.
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    // Wait for the go: the id maps are written.
    let mut go = [0u8; 1];
    // SAFETY: receives one byte into a local buffer.
    if unsafe { libc::recv(FD_CONTROL, go.as_mut_ptr().cast(), 1, 0) } != 1 {
        exit(125);
    }
    // SAFETY: closing our control socket once.
    unsafe { libc::close(FD_CONTROL) };
}
