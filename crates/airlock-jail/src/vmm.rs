//! The VMM's jail: the microVM tier's QEMU runs in namespaces of its own
//! (mount, pid, network, ipc, uts; a user namespace too when airlock is
//! rootless), on a root that holds only what it needs — read-only binds of
//! the files and directories its caller names (its binary and libraries,
//! the guest kernel, initramfs and disk images) and the device nodes it
//! names (`/dev/null`, `/dev/urandom`, `/dev/kvm`) — with no network
//! interface, no capabilities, `no_new_privs`, and (run by root) an
//! unprivileged uid. QEMU's own seccomp filter (`-sandbox on`) comes on top.
//!
//! Like the container tier's agent, the jail is set up by the airlock
//! binary exec'd (never forked from a process that may have threads): the
//! agent binary is exec'd as `airlock-agent vmm-jail` with an empty
//! environment, reads a [`VmmJail`] from its control socket, clones the
//! VMM's process into the new namespaces as airlock's child
//! (`CLONE_PARENT`), reports its pid and exits; the VMM's process builds
//! the jail and execs the VMM. The fds the VMM gets (channel, QMP, ...)
//! are at [`FD_FIRST_PASSED`] and up, in the order the caller gave them.
//!
//! Control socket (seqpacket, fd [`FD_CTL`] in the helper): airlock sends
//! the spec (JSON, one packet); the helper answers `P` + pid (u32 LE), or
//! `E` + errno (u32 LE) + a message; the VMM's process sends `E` the same
//! way if its set-up fails, and nothing if it execs (its end closes).

use crate::sys;
use airlock_confine::caps;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `argv[1]` of the agent binary in this role.
pub const HELPER_ARG: &str = "vmm-jail";
/// The control socket, in the helper and the VMM's process (never in the
/// VMM: close-on-exec).
pub const FD_CTL: RawFd = 3;
/// The first fd handed to the VMM.
pub const FD_FIRST_PASSED: RawFd = 4;
/// The most fds handed to the VMM.
pub const MAX_PASSED: usize = 16;
/// The largest spec (one packet).
const MAX_SPEC: usize = 60 * 1024;

/// What the jail holds and what runs in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmJail {
    /// The program, as a path inside the jail.
    pub program: PathBuf,
    /// Its arguments (after `argv[0]`).
    pub args: Vec<String>,
    /// Host paths (directories or files) shown read-only in the jail:
    /// (host path, path in the jail).
    pub ro: Vec<(PathBuf, PathBuf)>,
    /// Host device nodes shown at the same path (read-only mount,
    /// `nosuid,noexec`).
    pub devices: Vec<PathBuf>,
    /// Symlinks made in the jail: (path, target).
    pub symlinks: Vec<(PathBuf, PathBuf)>,
    /// How many fds the VMM gets, from [`FD_FIRST_PASSED`] on.
    pub passed: usize,
    /// Run by root: the uid, gid and supplementary groups the VMM runs
    /// as. `None`: rootless (the helper makes a user namespace that maps
    /// only the caller, and the VMM runs as the caller with no
    /// capabilities).
    pub ids: Option<(u32, u32, Vec<u32>)>,
}

/// A VMM started in its jail: airlock's child.
pub struct Vmm {
    pub pid: libc::pid_t,
    /// Readable once the VMM has exited.
    pub pidfd: OwnedFd,
}

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("cannot start the VMM's jail helper")]
    Helper(#[source] io::Error),
    #[error("the VMM's jail: {what}")]
    Setup {
        what: String,
        #[source]
        err: io::Error,
    },
    #[error("the VMM's jail spec is too large ({0} bytes)")]
    TooLarge(usize),
}

// ---------------------------------------------------------------- host side

/// What the launching child needs, prepared before the clone (it shares
/// our memory and runs raw system calls only).
struct Launch {
    moves: Vec<(RawFd, RawFd)>,
    first_free: RawFd,
    exe: RawFd,
    argv: [*const libc::c_char; 3],
    envp: [*const libc::c_char; 1],
}

extern "C" fn launch_main(arg: *mut libc::c_void) -> libc::c_int {
    use airlock_sys::raw::syscall6 as sc;
    // SAFETY: `arg` is the Launch our parent keeps alive while it is
    // suspended (CLONE_VFORK) until we exec or exit; only raw system calls
    // follow (no errno, no allocation).
    unsafe {
        let a = &*(arg as *const Launch);
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
                sc(libc::SYS_exit, [125, 0, 0, 0, 0, 0]);
            }
        }
        const CLOSE_RANGE_CLOEXEC: usize = 1 << 2;
        sc(
            libc::SYS_close_range,
            [
                a.first_free as usize,
                u32::MAX as usize,
                CLOSE_RANGE_CLOEXEC,
                0,
                0,
                0,
            ],
        );
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
        sc(libc::SYS_exit, [127, 0, 0, 0, 0, 0]);
    }
    127
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut sp = [0; 2];
    // SAFETY: `sp` has room for two fds.
    sys::cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            sp.as_mut_ptr(),
        )
    })?;
    // SAFETY: both fds are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(sp[0]), OwnedFd::from_raw_fd(sp[1])) })
}

/// Receives one packet, waiting at most `limit`; `Ok(None)` at EOF.
fn recv_packet(fd: RawFd, limit: Duration) -> io::Result<Option<Vec<u8>>> {
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
    let mut b = vec![0u8; 4096];
    // SAFETY: receives into a buffer of its length.
    let r = unsafe { libc::recv(fd, b.as_mut_ptr().cast(), b.len(), 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if r == 0 {
        return Ok(None);
    }
    b.truncate(r as usize);
    Ok(Some(b))
}

fn report_error(b: &[u8]) -> VmmError {
    let errno = if b.len() >= 5 {
        u32::from_le_bytes([b[1], b[2], b[3], b[4]]) as i32
    } else {
        libc::EPROTO
    };
    VmmError::Setup {
        what: String::from_utf8_lossy(b.get(5..).unwrap_or_default()).into_owned(),
        err: io::Error::from_raw_os_error(errno),
    }
}

/// Starts `spec` in its jail: the agent binary ([`crate::spawn::agent_exe`])
/// exec'd as the helper, with `passed` at [`FD_FIRST_PASSED`] and up,
/// `stdout` and `stderr` as the VMM's (stdin is `/dev/null`). Returns once
/// the VMM has been exec'd (or its jail failed).
pub fn spawn(
    spec: &VmmJail,
    passed: &[RawFd],
    stdout: RawFd,
    stderr: RawFd,
) -> Result<Vmm, VmmError> {
    if passed.len() != spec.passed || passed.len() > MAX_PASSED {
        return Err(VmmError::Helper(io::Error::from_raw_os_error(libc::EINVAL)));
    }
    let data = serde_json::to_vec(spec).unwrap_or_default();
    if data.len() > MAX_SPEC {
        return Err(VmmError::TooLarge(data.len()));
    }
    let exe = crate::spawn::agent_exe().map_err(VmmError::Helper)?;
    let (ours, theirs) = seqpacket_pair().map_err(VmmError::Helper)?;
    // SAFETY: a constant C string; the kernel returns a new fd or -1.
    let null =
        sys::cvt(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })
            .map_err(VmmError::Helper)?;
    // SAFETY: a new fd that nothing else owns.
    let null = unsafe { OwnedFd::from_raw_fd(null) };
    let mut wanted: Vec<(RawFd, RawFd)> = vec![
        (null.as_raw_fd(), 0),
        (stdout, 1),
        (stderr, 2),
        (theirs.as_raw_fd(), FD_CTL),
    ];
    for (i, fd) in passed.iter().enumerate() {
        wanted.push((*fd, FD_FIRST_PASSED + i as RawFd));
    }
    let first_free = FD_FIRST_PASSED + passed.len() as RawFd;
    // Every source above every target, so that no dup3 overwrites a
    // source still to come.
    let above = first_free + 8;
    let mut dups: Vec<OwnedFd> = Vec::with_capacity(wanted.len() + 1);
    let mut moves = Vec::with_capacity(wanted.len());
    let high = |fd: RawFd| -> Result<OwnedFd, VmmError> {
        // SAFETY: duplicates an fd the caller owns.
        let d = sys::cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above) })
            .map_err(VmmError::Helper)?;
        // SAFETY: a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(d) })
    };
    for (from, to) in wanted {
        let d = high(from)?;
        moves.push((d.as_raw_fd(), to));
        dups.push(d);
    }
    let exe = high(exe)?;
    let argv0 = CString::new(crate::spawn::AGENT_ARGV0).unwrap_or_default();
    let argv1 = CString::new(HELPER_ARG).unwrap_or_default();
    let launch = Launch {
        moves,
        first_free,
        exe: exe.as_raw_fd(),
        argv: [argv0.as_ptr(), argv1.as_ptr(), std::ptr::null()],
        envp: [std::ptr::null()],
    };
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: CLONE_VFORK suspends us until the child has exec'd or exited,
    // so `launch` and the stack outlive its use of them; the child makes
    // raw system calls only.
    let helper = unsafe {
        let top = stack.as_mut_ptr().add(stack.len() - 64);
        let top = top.sub(top as usize % 16);
        libc::clone(
            launch_main,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&launch as *const Launch).cast_mut().cast(),
        )
    };
    if helper < 0 {
        return Err(VmmError::Helper(io::Error::last_os_error()));
    }
    drop(dups);
    drop(exe);
    drop(theirs);
    drop(null);
    let reap = |p: libc::pid_t, kill: bool| {
        // SAFETY: kills (if asked) and reaps our own child.
        unsafe {
            if kill {
                libc::kill(p, libc::SIGKILL);
            }
            libc::waitpid(p, std::ptr::null_mut(), 0);
        }
    };
    // SAFETY: sends one packet from a live buffer.
    let sent = unsafe {
        libc::send(
            ours.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if sent != data.len() as isize {
        let e = io::Error::last_os_error();
        reap(helper, true);
        return Err(VmmError::Helper(e));
    }
    let first = recv_packet(ours.as_raw_fd(), Duration::from_secs(30));
    let pid = match first {
        Ok(Some(b)) if b.len() == 5 && b[0] == b'P' => {
            u32::from_le_bytes([b[1], b[2], b[3], b[4]]) as libc::pid_t
        }
        Ok(Some(b)) if b.first() == Some(&b'E') => {
            reap(helper, false);
            return Err(report_error(&b));
        }
        Ok(_) => {
            reap(helper, true);
            return Err(VmmError::Helper(io::Error::from_raw_os_error(libc::EPROTO)));
        }
        Err(e) => {
            reap(helper, true);
            return Err(VmmError::Helper(e));
        }
    };
    // The helper exits right after its report.
    reap(helper, false);
    // The VMM's process: EOF once it has exec'd, or its failure.
    match recv_packet(ours.as_raw_fd(), Duration::from_secs(30)) {
        Ok(None) => {}
        Ok(Some(b)) => {
            reap(pid, true);
            return Err(report_error(&b));
        }
        Err(e) => {
            reap(pid, true);
            return Err(VmmError::Helper(e));
        }
    }
    // SAFETY: pidfd_open on our own, unreaped child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        let e = io::Error::last_os_error();
        reap(pid, true);
        return Err(VmmError::Helper(e));
    }
    Ok(Vmm {
        pid,
        // SAFETY: a new fd that nothing else owns.
        pidfd: unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) },
    })
}

// -------------------------------------------------------------- helper side

/// A failure in the helper or the VMM's process: what, and the errno.
struct Fail(String, i32);

fn fail(what: impl std::fmt::Display) -> impl Fn(io::Error) -> Fail {
    let what = what.to_string();
    move |e: io::Error| Fail(format!("{what}: {e}"), sys::errno_of(&e))
}

fn report(tag: u8, n: u32, text: &str) {
    let mut m = vec![tag];
    m.extend_from_slice(&n.to_le_bytes());
    m.extend_from_slice(&text.as_bytes()[..text.len().min(2000)]);
    // SAFETY: sends one packet from a live buffer on our control socket.
    unsafe { libc::send(FD_CTL, m.as_ptr().cast(), m.len(), libc::MSG_NOSIGNAL) };
}

fn die(f: Fail) -> ! {
    report(b'E', f.1.max(1) as u32, &f.0);
    // SAFETY: leaves at once.
    unsafe { libc::_exit(125) }
}

/// The helper (`airlock-agent vmm-jail`): never returns.
pub fn helper_main() -> ! {
    let mut b = vec![0u8; MAX_SPEC + 1];
    // SAFETY: receives into a buffer of its length.
    let n = unsafe { libc::recv(FD_CTL, b.as_mut_ptr().cast(), b.len(), 0) };
    if n <= 0 {
        // SAFETY: leaves at once.
        unsafe { libc::_exit(125) };
    }
    let spec: VmmJail = match serde_json::from_slice(&b[..n as usize]) {
        Ok(s) => s,
        Err(e) => die(Fail(format!("bad spec: {e}"), libc::EINVAL)),
    };
    if spec.ids.is_none() {
        if let Err(f) = own_userns() {
            die(f);
        }
    }
    let flags = libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_PARENT;
    // SAFETY: raw clone with fork semantics (this process is single-
    // threaded); CLONE_PARENT makes the child airlock's.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        die(fail("clone the VMM's namespaces")(
            io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        match jail(&spec) {
            Ok(never) => match never {},
            Err(f) => die(f),
        }
    }
    report(b'P', pid as u32, "");
    // SAFETY: leaves at once.
    unsafe { libc::_exit(0) }
}

/// Rootless: a user namespace mapping only the caller (as itself).
fn own_userns() -> Result<(), Fail> {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    // SAFETY: unshare takes only flags.
    sys::cvt(unsafe { libc::unshare(libc::CLONE_NEWUSER) }).map_err(fail("user namespace"))?;
    sys::write_file(Path::new("/proc/self/setgroups"), b"deny").map_err(fail("setgroups"))?;
    sys::write_file(
        Path::new("/proc/self/uid_map"),
        format!("{uid} {uid} 1\n").as_bytes(),
    )
    .map_err(fail("uid_map"))?;
    sys::write_file(
        Path::new("/proc/self/gid_map"),
        format!("{gid} {gid} 1\n").as_bytes(),
    )
    .map_err(fail("gid_map"))?;
    Ok(())
}

/// Where the jail's root is attached before the pivot (only this mount
/// namespace sees it).
const STAGE: &str = "/tmp";

fn rel(p: &Path) -> &Path {
    p.strip_prefix("/").unwrap_or(p)
}

/// Makes `rel` (and its parents) below `root`: a directory, or with
/// `file` an empty file.
fn make_target(root: &Path, rel: &Path, file: bool) -> Result<PathBuf, Fail> {
    let t = root.join(rel);
    if let Some(parent) = t.parent() {
        std::fs::create_dir_all(parent).map_err(fail(format!("mkdir {}", parent.display())))?;
    }
    if file {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&t)
            .map_err(fail(format!("create {}", t.display())))?;
    } else {
        std::fs::create_dir_all(&t).map_err(fail(format!("mkdir {}", t.display())))?;
    }
    Ok(t)
}

/// The VMM's process: PID 1 of its own namespaces. Builds the jail and
/// execs the VMM; returns only on failure.
fn jail(spec: &VmmJail) -> Result<std::convert::Infallible, Fail> {
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
    // SAFETY: constant C strings; changes propagation of our private copy.
    sys::cvt(unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    })
    .map_err(fail("make / private"))?;
    // Every source is opened (as a detached copy) before anything is
    // attached, so that the stage hides none of them.
    let mut trees = Vec::new();
    for (host, at) in &spec.ro {
        let t =
            sys::open_tree_clone(host, true).map_err(fail(format!("open {}", host.display())))?;
        sys::mount_setattr(
            t.as_raw_fd(),
            sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
            0,
            true,
        )
        .map_err(fail(format!("make {} read-only", host.display())))?;
        let is_dir = sys::fstat(t.as_raw_fd())
            .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .map_err(fail(format!("stat {}", host.display())))?;
        trees.push((t, at.clone(), is_dir));
    }
    for dev in &spec.devices {
        let t =
            sys::open_tree_clone(dev, false).map_err(fail(format!("open {}", dev.display())))?;
        sys::mount_setattr(
            t.as_raw_fd(),
            sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC,
            0,
            false,
        )
        .map_err(fail(format!("mount options of {}", dev.display())))?;
        trees.push((t, dev.clone(), false));
    }
    let root = sys::fs_mount(
        c"tmpfs",
        &[
            (c"size", c"256k"),
            (c"nr_inodes", c"512"),
            (c"mode", c"0755"),
        ],
        sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
    )
    .map_err(fail("the jail's root (tmpfs)"))?;
    let stage = Path::new(STAGE);
    sys::move_mount_path(root.as_raw_fd(), stage).map_err(fail("attach the jail's root"))?;
    drop(root);
    for (t, at, is_dir) in &trees {
        let target = make_target(stage, rel(at), !*is_dir)?;
        sys::move_mount_path(t.as_raw_fd(), &target)
            .map_err(fail(format!("mount {}", at.display())))?;
    }
    drop(trees);
    for (path, target) in &spec.symlinks {
        let p = stage.join(rel(path));
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(fail(format!("mkdir {}", parent.display())))?;
        }
        std::os::unix::fs::symlink(target, &p).map_err(fail(format!("symlink {}", p.display())))?;
    }
    std::env::set_current_dir(stage).map_err(fail("chdir into the jail"))?;
    sys::pivot_root_here().map_err(fail("pivot_root into the jail"))?;
    // SAFETY: a constant C string; detaches the old root stacked under us.
    sys::cvt(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) })
        .map_err(fail("detach the host's tree"))?;
    std::env::set_current_dir("/").map_err(fail("chdir /"))?;
    let slash = std::fs::File::open("/").map_err(fail("open /"))?;
    sys::mount_setattr(slash.as_raw_fd(), sys::MOUNT_ATTR_RDONLY, 0, false)
        .map_err(fail("make / read-only"))?;
    drop(slash);
    // SAFETY: sethostname with a constant buffer of its length.
    unsafe { libc::sethostname(c"airlock-vmm".as_ptr(), 11) };

    // Credentials: nothing to keep.
    caps::drop_bounding().map_err(fail("drop the bounding set"))?;
    if let Some((uid, gid, groups)) = &spec.ids {
        {
            // SAFETY: credential syscalls with plain integers and a live
            // array of groups.
            unsafe {
                sys::cvt(libc::setgroups(groups.len(), groups.as_ptr()))
                    .map_err(fail("setgroups"))?;
                sys::cvt(libc::setresgid(*gid, *gid, *gid)).map_err(fail("setresgid"))?;
                sys::cvt(libc::setresuid(*uid, *uid, *uid)).map_err(fail("setresuid"))?;
            }
        }
    }
    caps::clear_all().map_err(fail("clear capabilities"))?;
    // SAFETY: prctl with integer arguments.
    unsafe {
        sys::cvt(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
            .map_err(fail("no_new_privs"))?;
        // A credential change clears the parent-death signal.
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    // Had airlock died before that, its end of the control socket is
    // closed.
    if sys::peer_gone(FD_CTL) {
        // SAFETY: leaves at once.
        unsafe { libc::_exit(125) };
    }
    // Only the passed fds reach the VMM.
    // SAFETY: fcntl on our own fd.
    unsafe { libc::fcntl(FD_CTL, libc::F_SETFD, libc::FD_CLOEXEC) };
    sys::close_from((FD_FIRST_PASSED as usize + spec.passed) as u32)
        .map_err(fail("close other fds"))?;

    let cs =
        |s: &[u8]| CString::new(s).map_err(|_| Fail("NUL in an argument".into(), libc::EINVAL));
    let prog = cs(spec.program.as_os_str().as_bytes())?;
    let mut args = vec![prog.clone()];
    for a in &spec.args {
        args.push(cs(a.as_bytes())?);
    }
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: NUL-terminated arrays of pointers into live C strings.
    unsafe { libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(fail(format!("exec {}", spec.program.display()))(
        io::Error::last_os_error(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips() {
        let s = VmmJail {
            program: "/usr/bin/qemu-system-x86_64".into(),
            args: vec!["-M".into(), "microvm".into()],
            ro: vec![("/usr".into(), "/usr".into())],
            devices: vec!["/dev/null".into()],
            symlinks: vec![("/lib".into(), "usr/lib".into())],
            passed: 2,
            ids: Some((100, 100, vec![5])),
        };
        let b = serde_json::to_vec(&s).unwrap();
        assert_eq!(serde_json::from_slice::<VmmJail>(&b).unwrap(), s);
    }
}
