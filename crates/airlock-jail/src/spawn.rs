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
use std::path::Path;
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
/// The namespaces PID 1 is cloned into.
pub const NS_FLAGS: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

const USERNS_HINT: &str = ": unprivileged user namespaces look disabled or restricted here. \
On Ubuntu 23.10+ install airlock's AppArmor profile (contrib/apparmor/airlock; scripts/setup.sh \
does) or run `sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0`; elsewhere check `sysctl user.max_user_namespaces` and \
`kernel.unprivileged_userns_clone`; inside Docker, run with --security-opt seccomp=unconfined \
or use another tier: `--isolation landlock` (no namespaces: Landlock, seccomp without network, \
no capabilities; it gives up pid, mount and IPC isolation and sees the host's filesystem, only \
restricted) or `--isolation microvm`. `airlock doctor` checks all of this";

/// The running binary, opened once, before any sandbox exists.
static AGENT_EXE: OnceLock<Result<OwnedFd, i32>> = OnceLock::new();

fn open_exe(path: &std::ffi::CStr) -> Result<OwnedFd, i32> {
    // SAFETY: a valid C string; the kernel returns a new fd or -1.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        // SAFETY: a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Uses the airlock binary at `path` as every sandbox's agent, instead of
/// this process's own executable (for programs that link the core but are
/// not airlock: tests, embedders). Opened now, before any sandbox exists;
/// fails if an agent binary was already chosen.
pub fn set_agent_exe(path: &Path) -> io::Result<()> {
    let c = sys::cpath(path)?;
    let mut result = Err(io::Error::from_raw_os_error(libc::EBUSY));
    AGENT_EXE.get_or_init(|| {
        let r = open_exe(&c);
        result = r
            .as_ref()
            .map(|_| ())
            .map_err(|e| io::Error::from_raw_os_error(*e));
        r
    });
    result
}

/// The agent's binary, opened once, before any sandbox exists (a sandbox
/// can never replace what later agents run): `airlock-agent` beside
/// airlock's own executable — a small static program, cheaper to exec
/// than all of airlock — when it is there and no one but root or we may
/// change it; else airlock's own executable, which can be the agent too.
pub fn agent_exe() -> io::Result<RawFd> {
    match AGENT_EXE.get_or_init(|| sibling_agent().unwrap_or_else(|| open_exe(c"/proc/self/exe"))) {
        Ok(fd) => Ok(fd.as_raw_fd()),
        Err(e) => Err(io::Error::from_raw_os_error(*e)),
    }
}

/// `airlock-agent` in the directory of our own executable, if trusted:
/// the file and its directory owned by root or by us, and writable by
/// no one else.
fn sibling_agent() -> Option<Result<OwnedFd, i32>> {
    use std::os::unix::fs::MetadataExt;
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    let dir = exe.parent()?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let trusted = |m: &std::fs::Metadata| (m.uid() == 0 || m.uid() == me) && m.mode() & 0o022 == 0;
    if !trusted(&std::fs::metadata(dir).ok()?) {
        return None;
    }
    let path = dir.join(AGENT_ARGV0);
    let c = sys::cpath(&path).ok()?;
    let fd = open_exe(&c).ok()?;
    // The file we opened, not the name: it is what will be exec'd.
    let st = sys::fstat(fd.as_raw_fd()).ok()?;
    let ok = (st.st_uid == 0 || st.st_uid == me)
        && st.st_mode & 0o022 == 0
        && st.st_mode & libc::S_IFMT == libc::S_IFREG;
    ok.then_some(Ok(fd))
}

/// How to start an agent that is already exec'd ([`prespawn`]).
pub struct AgentSpawn<'a> {
    /// Container tier: the sandbox's id mapping. `None`: the local tier.
    pub idmap: Option<IdMap>,
    pub cgroup: Option<&'a Cgroup>,
    /// Mount trees the agent gets from [`FD_FIRST_TREE`] on.
    pub inherit: Vec<OwnedFd>,
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
    /// The agent's name, which `argv` points into.
    _argv0: CString,
}

/// The memory an agent's launching child uses until it has exec'd (it
/// shares ours): kept by [`Pending`] until then.
struct Launch {
    args: Box<ChildArgs>,
    stack: Vec<u8>,
    /// Reaches EOF once the child has exec'd (or died): its copy of the
    /// write end is close-on-exec.
    exec_done: OwnedFd,
}

impl Launch {
    /// Waits until the child no longer uses our memory.
    fn wait(&self) {
        let mut b = [0u8; 1];
        loop {
            // SAFETY: reads into a local buffer from our own pipe.
            let n = unsafe { libc::read(self.exec_done.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        let _ = (&self.args, &self.stack);
    }
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

/// The most mount trees one sandbox passes to its agent (one control
/// message carries them all).
pub const MAX_TREES: usize = 240;

/// An agent exec'd ahead of its sandbox: its exec, its start-up and (for
/// a container) the creation of the sandbox's namespaces run on another
/// CPU while airlock works out the plan; [`Pending::start`] finishes it.
pub struct Pending {
    pid: libc::pid_t,
    channel: OwnedFd,
    ctl: OwnedFd,
    /// What it was told to be: a container with this mapping, or the
    /// local tier.
    idmap: Option<IdMap>,
    /// Run by root: the helper making the sandbox's network namespace.
    netns: Option<crate::net::NetnsMaker>,
    /// The launching child's memory, until it has exec'd.
    launch: Option<Launch>,
    done: bool,
}

/// Config flag: the sandbox's network namespace follows on the control
/// socket (made by [`crate::net::NetnsMaker`]).
pub const CONFIG_NETNS_FOLLOWS: u8 = 1;

/// Forks and execs the agent (see the module docs), its configuration
/// already waiting on its control socket: a container with `idmap`, or
/// (`None`) the local tier.
pub fn prespawn(stream: bool, idmap: Option<IdMap>) -> Result<Pending, JailError> {
    prespawn_joining(stream, idmap, None)
}

/// [`prespawn`], for a container run by root whose PID 1 joins the network
/// namespace `netns` (an fd of it) instead of getting a new one. The
/// caller decides that joining it is safe (another sandbox's, never the
/// host's); the agent enters it while it is still root on the host, before
/// it takes the subordinate ids.
pub fn prespawn_joining(
    stream: bool,
    idmap: Option<IdMap>,
    netns: Option<std::os::fd::BorrowedFd<'_>>,
) -> Result<Pending, JailError> {
    if netns.is_some() && idmap.is_none_or(|m| m.is_rootless()) {
        // Only root can enter a namespace it does not own.
        return Err(JailError::Channel(io::Error::from_raw_os_error(
            libc::EPERM,
        )));
    }
    let exe = agent_exe().map_err(JailError::AgentExe)?;
    sys::timing::mark("agent exe");
    let (ours, theirs) = socketpair(if stream {
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
    let wanted: [(RawFd, RawFd); 5] = [
        (null.as_raw_fd(), 0),
        (null.as_raw_fd(), 1),
        (null.as_raw_fd(), 2),
        (theirs.as_raw_fd(), FD_CHANNEL),
        (ctl_theirs.as_raw_fd(), FD_CONTROL),
    ];
    let first_free = FD_FIRST_TREE;
    let high = |fd: RawFd| -> Result<OwnedFd, JailError> {
        // SAFETY: duplicates an fd we own.
        let d = sys::cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, first_free + 8) })
            .map_err(JailError::Channel)?;
        // SAFETY: a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(d) })
    };
    let mut dups: Vec<OwnedFd> = Vec::with_capacity(wanted.len());
    let mut moves = Vec::with_capacity(wanted.len());
    for (from, to) in wanted {
        let d = high(from)?;
        moves.push((d.as_raw_fd(), to));
        dups.push(d);
    }
    let exe = high(exe)?;
    let argv0 = CString::new(AGENT_ARGV0).unwrap_or_default();
    let (done_r, done_w) = sys::pipe_cloexec().map_err(JailError::Channel)?;
    let mut args = Box::new(ChildArgs {
        moves,
        first_free,
        exe: exe.as_raw_fd(),
        argv: [argv0.as_ptr(), std::ptr::null()],
        envp: [std::ptr::null()],
        _argv0: argv0,
    });
    // The configuration, there before the agent starts reading.
    let cfg = match idmap {
        None => vec![CONFIG_LOCAL],
        Some(m) => {
            let (uid, gid) = m.namespace_owner().unwrap_or((u32::MAX, u32::MAX));
            let mut c = vec![CONFIG_CONTAINER];
            c.extend_from_slice(&uid.to_le_bytes());
            c.extend_from_slice(&gid.to_le_bytes());
            // Run by root, the network namespace is made beside the
            // agent's start (rootless, PID 1 is cloned into a new one).
            c.push(if m.is_rootless() {
                0
            } else {
                CONFIG_NETNS_FOLLOWS
            });
            c
        }
    };
    send_ctl(ctl.as_raw_fd(), &cfg).map_err(JailError::Channel)?;
    // The agent's child shares our memory on a stack of its own (no page
    // tables copied) and we go on at once: its exec runs beside our own
    // work. It touches nothing of ours but `args` and its stack, kept
    // until it has exec'd (Launch).
    let mut stack = vec![0u8; CHILD_STACK];
    // SAFETY: the stack and `args` outlive the child's use of them (kept
    // in Pending's Launch until its exec is done); the child makes raw
    // system calls only (no errno, no allocation).
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(CHILD_STACK - 64);
        let top = top.sub(top as usize % 16);
        libc::clone(
            child_main,
            top.cast(),
            libc::CLONE_VM | libc::SIGCHLD,
            (&mut *args as *mut ChildArgs).cast(),
        )
    };
    if pid < 0 {
        return Err(JailError::Channel(io::Error::last_os_error()));
    }
    drop(done_w);
    let launch = Some(Launch {
        args,
        stack,
        exec_done: done_r,
    });
    // The network namespace's helper, while the agent execs.
    let netns = match idmap {
        Some(_) if netns.is_some() => {
            let join = netns.map(|f| f.as_raw_fd()).unwrap_or(-1);
            if send_with_fds(ctl.as_raw_fd(), &[crate::net::NETNS_TAG, 0], &[join]).is_err() {
                // The agent makes its own: tell it none follows.
                let none = [crate::net::NETNS_TAG, libc::EAGAIN as u8];
                let _ = send_ctl(ctl.as_raw_fd(), &none);
            }
            None
        }
        Some(m) if !m.is_rootless() => match crate::net::NetnsMaker::spawn(ctl.as_raw_fd()) {
            Ok(n) => Some(n),
            Err(_) => {
                // The agent makes its own: tell it none follows.
                let none = [crate::net::NETNS_TAG, libc::EAGAIN as u8];
                let _ = send_ctl(ctl.as_raw_fd(), &none);
                None
            }
        },
        _ => None,
    };
    drop(dups);
    drop(exe);
    drop(theirs);
    drop(ctl_theirs);
    drop(null);
    Ok(Pending {
        pid,
        channel: ours,
        ctl,
        idmap,
        netns,
        launch,
        done: false,
    })
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.idmap.is_none() {
            // SAFETY: kills and reaps our own child, never started.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
            return;
        }
        // A container agent may have cloned PID 1 already (our child) and
        // only its report tells us its pid. Nothing more is coming from us
        // (it sees EOF, goes on without a network namespace if it waited
        // for one, reports, and exits); then the report, if any, is here.
        // SAFETY: shutdown of our own socket.
        unsafe { libc::shutdown(self.ctl.as_raw_fd(), libc::SHUT_WR) };
        let end = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            // SAFETY: reaps our own child if it has exited.
            let r = unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), libc::WNOHANG) };
            if r != 0 {
                break;
            }
            if std::time::Instant::now() >= end {
                // SAFETY: kills and reaps our own child.
                unsafe {
                    libc::kill(self.pid, libc::SIGKILL);
                    libc::waitpid(self.pid, std::ptr::null_mut(), 0);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Ok(r) = recv_ctl(self.ctl.as_raw_fd(), Duration::ZERO) {
            if r.len() == 5 && r[0] == REPORT_PID {
                let pid1 = u32::from_le_bytes([r[1], r[2], r[3], r[4]]) as libc::pid_t;
                // SAFETY: PID 1 is our child (CLONE_PARENT), unreaped.
                unsafe {
                    libc::kill(pid1, libc::SIGKILL);
                    libc::waitpid(pid1, std::ptr::null_mut(), 0);
                }
            }
        }
    }
}

/// Sends `msg` with `fds` attached (SCM_RIGHTS).
fn send_with_fds(sock: RawFd, msg: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr() as *mut libc::c_void,
        iov_len: msg.len(),
    };
    let space = if fds.is_empty() {
        0
    } else {
        // SAFETY: CMSG_SPACE is a pure size computation.
        unsafe { libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32) as usize }
    };
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain data.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    if !fds.is_empty() {
        m.msg_control = cbuf.as_mut_ptr().cast();
        m.msg_controllen = space;
        // SAFETY: the control buffer has room for one header and the fds
        // (CMSG_SPACE above); CMSG_* walk only that buffer.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&m);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c) as *mut RawFd,
                fds.len(),
            );
        }
    }
    // SAFETY: a valid msghdr over live buffers.
    let r = unsafe { libc::sendmsg(sock, &m, libc::MSG_NOSIGNAL) };
    if r != msg.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Pending {
    /// What it was started as (a container with this mapping, or local).
    pub fn idmap(&self) -> Option<IdMap> {
        self.idmap
    }

    /// Finishes the start: puts the agent in `cgroup` (so that nothing it
    /// starts escapes the limits) and, for a container, writes PID 1's id
    /// maps and hands it its mount trees. `s.idmap` must be what the agent
    /// was pre-spawned with.
    pub fn start(mut self, s: AgentSpawn<'_>) -> Result<Agent, JailError> {
        // The launching child has exec'd (long ago, as a rule) and no
        // longer uses our memory.
        if let Some(l) = self.launch.take() {
            l.wait();
        }
        if s.inherit.len() > MAX_TREES {
            return Err(JailError::TooManyMounts { max: MAX_TREES });
        }
        if s.idmap != self.idmap {
            return Err(JailError::Channel(io::Error::from_raw_os_error(
                libc::EINVAL,
            )));
        }
        let kill = |p: libc::pid_t| {
            // SAFETY: kills and reaps our own child.
            unsafe {
                libc::kill(p, libc::SIGKILL);
                libc::waitpid(p, std::ptr::null_mut(), 0);
            }
        };
        let ctl = self.ctl.as_raw_fd();
        let Some(map) = s.idmap else {
            // The local tier: this process is the agent; it starts nothing
            // before the handshake, which comes after this.
            if let Some(cg) = s.cgroup {
                cg.add(self.pid)?;
            }
            self.done = true;
            return finish(
                self.pid,
                self.channel.try_clone().map_err(JailError::Channel)?,
                kill,
            );
        };
        let report = recv_ctl(ctl, Duration::from_secs(30));
        // The network namespace's helper is done (or never needed).
        drop(self.netns.take());
        // The exec'd agent has done its part (or failed): reap it.
        self.done = true;
        // SAFETY: reaps our own child.
        unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
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
        if let Some(cg) = s.cgroup {
            if let Err(e) = cg.add(pid1) {
                kill(pid1);
                return Err(e);
            }
        }
        // Let PID 1 go, with its mount trees.
        let fds: Vec<RawFd> = s.inherit.iter().map(|f| f.as_raw_fd()).collect();
        let mut go = vec![b'1'];
        go.extend_from_slice(&(fds.len() as u32).to_le_bytes());
        if let Err(e) = send_with_fds(ctl, &go, &fds) {
            kill(pid1);
            return Err(JailError::Channel(e));
        }
        drop(s.inherit);
        finish(
            pid1,
            self.channel.try_clone().map_err(JailError::Channel)?,
            kill,
        )
    }
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

/// The stack of the child that execs the agent.
const CHILD_STACK: usize = 64 * 1024;

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points at the ChildArgs our parent keeps until we exec.
    let a = unsafe { &*(arg as *const ChildArgs) };
    child(a)
}

/// The child, between clone and exec: async-signal-safe calls only (it
/// shares its parent's memory; the parent waits).
fn child(a: &ChildArgs) -> ! {
    use airlock_sys::raw::syscall6 as sc;
    // SAFETY: raw system calls on integers and on memory the parent keeps
    // for us until we exec (`a`, our stack): nothing here touches errno or
    // the heap, which we share with a running parent.
    unsafe {
        let exit = |code: usize| -> ! {
            sc(libc::SYS_exit, [code, 0, 0, 0, 0, 0]);
            // SAFETY: not reached (exit does not return).
            loop {
                std::hint::spin_loop();
            }
        };
        sc(
            libc::SYS_prctl,
            [
                libc::PR_SET_PDEATHSIG as usize,
                libc::SIGKILL as usize,
                0,
                0,
                0,
                0,
            ],
        );
        for &(from, to) in &a.moves {
            if sc(libc::SYS_dup3, [from as usize, to as usize, 0, 0, 0, 0]) < 0 {
                exit(125);
            }
        }
        // Nothing else reaches the agent.
        const CLOSE_RANGE_CLOEXEC: usize = 1 << 2;
        if sc(
            libc::SYS_close_range,
            [
                a.first_free as usize,
                u32::MAX as usize,
                CLOSE_RANGE_CLOEXEC,
                0,
                0,
                0,
            ],
        ) < 0
        {
            exit(125);
        }
        let empty: u64 = 0;
        sc(
            libc::SYS_rt_sigprocmask,
            [
                libc::SIG_SETMASK as usize,
                &empty as *const u64 as usize,
                0,
                8,
                0,
                0,
            ],
        );
        sc(
            libc::SYS_execveat,
            [
                a.exe as usize,
                c"".as_ptr() as usize,
                a.argv.as_ptr() as usize,
                a.envp.as_ptr() as usize,
                libc::AT_EMPTY_PATH as usize,
                0,
            ],
        );
        exit(127)
    }
}

/// Receives one control message and the fds attached to it.
fn recv_with_fds(sock: RawFd) -> io::Result<(Vec<u8>, Vec<RawFd>)> {
    let mut data = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space =
        unsafe { libc::CMSG_SPACE((MAX_TREES * std::mem::size_of::<RawFd>()) as u32) as usize };
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain data.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    m.msg_control = cbuf.as_mut_ptr().cast();
    m.msg_controllen = space;
    // SAFETY: a valid msghdr over live buffers.
    let n = unsafe { libc::recvmsg(sock, &mut m, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walks the control messages the kernel wrote into `cbuf`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&m);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let k = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                let p = libc::CMSG_DATA(c) as *const RawFd;
                for i in 0..k {
                    fds.push(*p.add(i));
                }
            }
            c = libc::CMSG_NXTHDR(&m, c);
        }
    }
    Ok((data[..n as usize].to_vec(), fds))
}

/// In the exec'd agent, first thing: reads the configuration. For a
/// container, takes the subordinate ids if asked (dropping host root for
/// good), clones PID 1 into the sandbox's namespaces as a child of airlock,
/// reports its pid and exits; PID 1 returns from here once airlock has
/// written its id maps and handed it its mount trees, with every capability
/// in its new user namespace. For the local tier, returns at once. Never
/// returns on failure.
pub fn agent_bootstrap() -> Bootstrap {
    let exit = |code| -> ! {
        // SAFETY: leaves at once.
        unsafe { libc::_exit(code) }
    };
    let mut b = [0u8; 16];
    // SAFETY: receives into a local buffer from our control socket.
    let n = unsafe { libc::recv(FD_CONTROL, b.as_mut_ptr().cast(), b.len(), 0) };
    sys::timing::mark("config");
    if n == 1 && b[0] == CONFIG_LOCAL {
        // SAFETY: closing our control socket once.
        unsafe { libc::close(FD_CONTROL) };
        return Bootstrap { net_ready: false };
    }
    if n != 10 || b[0] != CONFIG_CONTAINER {
        exit(125);
    }
    let mut flags = NS_FLAGS;
    let mut net_ready = false;
    if b[9] & CONFIG_NETNS_FOLLOWS != 0 {
        // The namespace airlock's helper made (run by root; we still are).
        // Without it PID 1 gets a new one of its own.
        if let Ok((msg, fds)) = recv_with_fds(FD_CONTROL) {
            for fd in fds {
                // SAFETY: a received fd we own; setns on a namespace fd.
                unsafe {
                    if !net_ready
                        && msg.len() == 2
                        && msg == [crate::net::NETNS_TAG, 0]
                        && libc::setns(fd, libc::CLONE_NEWNET) == 0
                    {
                        net_ready = true;
                        flags &= !libc::CLONE_NEWNET;
                    }
                    libc::close(fd);
                }
            }
        }
        sys::timing::mark("netns");
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
        if uid != u32::MAX
            && libc::geteuid() != uid
            && (libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0)
        {
            report(REPORT_ERRNO, libc::EPERM as u32);
            exit(125);
        }
    }
    sys::timing::mark("clone");
    // SAFETY: raw clone with fork semantics (this process is single-
    // threaded); CLONE_PARENT makes PID 1 airlock's child.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
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
    // Had airlock died before the parent-death signal was armed, the wait
    // for the go below ends at once (its end of the socket is closed).
    sys::timing::mark("pid 1");
    // Wait for the go (the id maps are written), with the mount trees.
    let (go, fds) = match recv_with_fds(FD_CONTROL) {
        Ok(x) => x,
        Err(_) => exit(125),
    };
    if go.len() != 5 || go[0] != b'1' {
        exit(125);
    }
    let count = u32::from_le_bytes([go[1], go[2], go[3], go[4]]) as usize;
    if count != fds.len() {
        exit(125);
    }
    // SAFETY: closing our control socket once.
    unsafe { libc::close(FD_CONTROL) };
    // The mount trees, where the agent expects them: first out of the way
    // (above every target number), then into place.
    let above = FD_FIRST_TREE + count as RawFd + 8;
    let mut high = Vec::with_capacity(count);
    for fd in &fds {
        // SAFETY: duplicates and closes fds we received and own.
        let h = unsafe {
            let h = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, above);
            libc::close(*fd);
            h
        };
        if h < 0 {
            exit(125);
        }
        high.push(h);
    }
    for (i, h) in high.into_iter().enumerate() {
        // SAFETY: dup3 onto a free number, then closing the copy.
        unsafe {
            if libc::dup3(h, FD_FIRST_TREE + i as RawFd, 0) < 0 {
                exit(125);
            }
            libc::close(h);
        }
    }
    sys::timing::mark("go");
    Bootstrap { net_ready }
}

/// What [`agent_bootstrap`] did.
pub struct Bootstrap {
    /// PID 1 is in a network namespace whose `lo` is up already (one that
    /// airlock's helper made; PID 1 cannot configure it).
    pub net_ready: bool,
}
