//! The container tier: namespaces, mounts, seccomp, Landlock, capabilities,
//! cgroups and rlimits.
//!
//! [`Plan::compile`] turns a spec into everything the sandbox needs, purely.
//! [`spawn`] clones a child into new user, pid, mount, net, ipc and uts
//! namespaces (and a cgroup namespace when it has its own group), writes its
//! id maps and cgroup membership from outside, and lets it go: the child
//! builds its root, brings up `lo`, becomes non-dumpable and runs the agent
//! as PID 1. The agent forks the command, which drops to its user with no
//! capabilities, `no_new_privs`, Landlock and the seccomp allowlist, and
//! execs.

pub mod cgroup;
pub mod mount;
pub mod net;
pub mod safepath;
pub mod userns;

pub use airlock_confine::{caps, landlock, rlimit, seccomp};
pub use airlock_sys as sys;

use airlock_protocol::Stage;
use airlock_spec::{MountMode, SandboxSpec, User};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use mount::{HostFacts, RootPlan};
pub use userns::IdMap;

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("cannot open mount source {source_path:?}")]
    MountSource {
        source_path: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("mount source {source_path:?}")]
    MountPath {
        source_path: PathBuf,
        #[source]
        err: safepath::PathError,
    },
    #[error("mount source {source_path:?} is a unix socket: a read-only ({mode}) mount would still let the sandbox connect to it; mount it rw if you mean to give the sandbox this socket")]
    MountSocket {
        source_path: PathBuf,
        mode: &'static str,
    },
    #[error("mount source {source_path:?} is not a directory: overlay mounts need one")]
    OverlayNotDir { source_path: PathBuf },
    #[error("cgroup {path:?}")]
    Cgroup {
        path: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("cannot create the sandbox's namespaces (clone){hint}")]
    Clone {
        hint: &'static str,
        #[source]
        err: io::Error,
    },
    #[error("cannot write the sandbox's id maps{hint}")]
    IdMap {
        hint: &'static str,
        #[source]
        err: io::Error,
    },
    #[error("cannot take the subordinate uid to create the sandbox's user namespace")]
    Owner {
        #[source]
        err: io::Error,
    },
    #[error("cannot create the host-agent channel")]
    Channel(#[source] io::Error),
    #[error("seccomp filter")]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("argument or environment entry {what:?} contains a NUL byte")]
    Nul { what: String },
}

/// A failure inside the child, reported to the host over the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildFail {
    pub stage: Stage,
    pub errno: i32,
    pub detail: String,
}

impl ChildFail {
    fn io(stage: Stage, what: &str, e: io::Error) -> ChildFail {
        ChildFail {
            stage,
            errno: sys::errno_of(&e),
            detail: format!("{what}: {e}"),
        }
    }
}

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything a container sandbox needs, computed before anything runs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub root: RootPlan,
    pub idmap: IdMap,
    pub hostname: String,
    pub user: User,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub path_dirs: Vec<PathBuf>,
    pub workdir: PathBuf,
    /// `None` where the kernel has no Landlock (the caller says so).
    pub landlock: Option<landlock::Rules>,
    pub rlimits: rlimit::Rlimits,
    /// Limits set in the sandbox's own user namespace (`/proc/sys/user`).
    pub userns_limits: Vec<(&'static str, u64)>,
    pub tty: bool,
}

/// The environment a sandbox starts with: only PATH, HOME, USER, LANG, TERM
/// and TZ, then what `--env` named. Nothing else of the host's leaks in.
pub fn base_env(
    spec: &SandboxSpec,
    host: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_string(), DEFAULT_PATH.to_string()),
        ("HOME".to_string(), spec.user.home().display().to_string()),
        ("USER".to_string(), spec.user.name()),
        (
            "LANG".to_string(),
            host("LANG").unwrap_or_else(|| "C.UTF-8".into()),
        ),
        (
            "TERM".to_string(),
            host("TERM").unwrap_or_else(|| "dumb".into()),
        ),
    ];
    if let Some(tz) = host("TZ") {
        env.push(("TZ".into(), tz));
    }
    for (k, v) in &spec.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

fn cstrings(items: impl IntoIterator<Item = String>) -> Result<Vec<CString>, JailError> {
    items
        .into_iter()
        .map(|s| CString::new(s.clone()).map_err(|_| JailError::Nul { what: s }))
        .collect()
}

impl Plan {
    /// Pure: the spec, what the host offers, and the limits that no cgroup
    /// enforces.
    #[allow(clippy::too_many_arguments)]
    pub fn compile(
        spec: &SandboxSpec,
        facts: &HostFacts,
        kernel: &rlimit::KernelLimits,
        idmap: IdMap,
        env: Vec<(String, String)>,
        unenforced: &[cgroup::Controller],
        landlock_abi: i64,
    ) -> Result<Plan, JailError> {
        let workdir = spec.effective_workdir();
        let root = RootPlan::compile(
            facts,
            spec.user,
            &spec.hostname,
            &workdir,
            &spec.mounts,
            spec.limits.disk,
        );
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| DEFAULT_PATH.into());
        let path_dirs = path
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(PathBuf::from)
            .collect();
        let mut rules = landlock::Rules::default();
        for t in [
            "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc",
        ] {
            rules.read_exec.push(Path::new("/").join(t));
        }
        for (dir, _, _) in &root.writable {
            rules.full.push(Path::new("/").join(dir));
        }
        for m in &spec.mounts {
            match m.mode {
                MountMode::Ro => rules.read_exec.push(m.target.clone()),
                MountMode::Rw | MountMode::Overlay => rules.full.push(m.target.clone()),
            }
        }
        let data = unenforced
            .contains(&cgroup::Controller::Memory)
            .then_some(spec.limits.memory)
            .flatten();
        let tasks = spec.limits.pids.unwrap_or_else(|| kernel.default_tasks());
        let rlimits = rlimit::Rlimits::sandbox(tasks, data);
        Ok(Plan {
            root,
            idmap,
            hostname: spec.hostname.clone(),
            user: spec.user,
            argv: cstrings(spec.command.iter().cloned())?,
            envp: cstrings(env.into_iter().map(|(k, v)| format!("{k}={v}")))?,
            path_dirs,
            workdir,
            landlock: (landlock_abi > 0).then_some(rules),
            rlimits,
            userns_limits: kernel.userns_limits(),
            tty: spec.tty,
        })
    }
}

/// The sandbox-side ends of the command's stdio.
pub struct Stdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// A running sandbox, seen from the host.
pub struct Sandbox {
    /// The agent's pid on the host (PID 1 inside).
    pub pid: libc::pid_t,
    /// The host's end of the agent channel.
    pub channel: OwnedFd,
    /// What the user should hear about the setup.
    pub notes: Vec<String>,
}

const CLONE_FLAGS: libc::c_int = libc::CLONE_NEWUSER
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

/// Starts a sandbox. The caller must be single-threaded (the child is a
/// forked copy of it until it execs).
pub fn spawn(
    plan: &Plan,
    stdio: Stdio,
    cg: Option<&cgroup::Cgroup>,
    filter: &seccomp::Filter,
) -> Result<Sandbox, JailError> {
    // Run by root, sources are opened here, with root's rights, before the
    // clone; rootless, the child opens them once it owns a mount namespace
    // (open_tree needs CAP_SYS_ADMIN there), with the caller's same rights.
    let trees = if plan.idmap.is_rootless() {
        // Checked here as well, so that a bad source is a clear error
        // before anything exists; the child checks again as it opens.
        for m in &plan.root.user_mounts {
            mount::check_source(m)?;
        }
        None
    } else {
        let host = (
            plan.idmap.host_uid(plan.user.uid).unwrap_or(u32::MAX),
            plan.idmap.host_gid(plan.user.gid).unwrap_or(u32::MAX),
        );
        Some(mount::open_trees(&plan.root, Some(host))?)
    };
    let notes = trees.as_ref().map(|t| t.notes.clone()).unwrap_or_default();
    let mut sp = [0; 2];
    // SAFETY: `sp` has room for two fds.
    sys::cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            sp.as_mut_ptr(),
        )
    })
    .map_err(JailError::Channel)?;
    // SAFETY: both fds are new and owned by nobody else.
    let (host_end, sandbox_end) =
        unsafe { (OwnedFd::from_raw_fd(sp[0]), OwnedFd::from_raw_fd(sp[1])) };
    let (sync_r, sync_w) = sys::pipe_cloexec().map_err(JailError::Channel)?;

    // Run by root, the sandbox's user namespace is created by the
    // subordinate uid, not by root: the kernel charges what a user
    // namespace's processes hold (inotify instances and watches, queued
    // signals, message queues) up to the user that owns the namespace, and
    // host root's own share must stay out of the sandbox's reach. The
    // effective ids change for the clone only (real and saved stay root).
    let owner = plan.idmap.namespace_owner();
    if let Some((u, g)) = owner {
        // SAFETY: credential syscalls with plain integers; -1 leaves an id.
        let r = unsafe {
            sys::cvt(libc::setresgid(u32::MAX, g, u32::MAX))
                .and_then(|_| sys::cvt(libc::setresuid(u32::MAX, u, u32::MAX)))
        };
        if let Err(err) = r {
            restore_root();
            return Err(JailError::Owner { err });
        }
    }
    // SAFETY: raw clone with fork semantics (no new stack: the child runs on
    // a copy-on-write copy of ours). The caller is single-threaded, so the
    // child inherits a consistent heap.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (CLONE_FLAGS | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid != 0 && owner.is_some() {
        restore_root();
    }
    if pid < 0 {
        let err = io::Error::last_os_error();
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
    if pid == 0 {
        drop(host_end);
        drop(sync_w);
        child(plan, &trees, sandbox_end, sync_r, stdio, filter);
    }
    let pid = pid as libc::pid_t;
    drop(sandbox_end);
    drop(sync_r);
    drop(trees);
    drop(stdio);
    let kill = || {
        // SAFETY: kills and reaps the child we just created.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    };
    if let Err(err) = plan.idmap.write_for(pid) {
        kill();
        let hint = if plan.idmap.is_rootless() {
            USERNS_HINT
        } else {
            ""
        };
        return Err(JailError::IdMap { hint, err });
    }
    if let Some(cg) = cg {
        if let Err(e) = cg.add(pid) {
            kill();
            return Err(e);
        }
    }
    // Release the child.
    if let Err(e) = sys::write_all_fd(sync_w.as_raw_fd(), b"1") {
        kill();
        return Err(JailError::Channel(e));
    }
    Ok(Sandbox {
        pid,
        channel: host_end,
        notes,
    })
}

/// Back to effective root after the clone (real and saved ids are root).
fn restore_root() {
    // SAFETY: credential syscalls with plain integers; euid 0 is our real
    // and saved uid, so this cannot fail for lack of privilege.
    unsafe {
        libc::setresuid(u32::MAX, 0, u32::MAX);
        libc::setresgid(u32::MAX, 0, u32::MAX);
    }
}

/// The child: PID 1 of the new namespaces. Never returns.
fn child(
    plan: &Plan,
    trees: &Option<mount::OpenedTrees>,
    channel: OwnedFd,
    sync: OwnedFd,
    stdio: Stdio,
    filter: &seccomp::Filter,
) -> ! {
    let ch = channel.as_raw_fd();
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
    // Wait for the parent's go; EOF means it died before giving it.
    let mut b = [0u8; 1];
    // SAFETY: reads one byte into `b`.
    if unsafe { libc::read(sync.as_raw_fd(), b.as_mut_ptr().cast(), 1) } != 1 {
        // SAFETY: exit without running the parent's destructors.
        unsafe { libc::_exit(125) };
    }
    drop(sync);
    // The sandbox may read PID 1's cmdline: show it ours, not the host's.
    if let Err(e) = sys::scrub_cmdline(b"airlock-agent") {
        airlock_agent::fail_setup(ch, Stage::Agent, sys::errno_of(&e), "scrub cmdline".into());
    }
    if let Err(f) = setup(plan, trees, ch) {
        airlock_agent::fail_setup(ch, f.stage, f.errno, f.detail);
    }
    // stdio onto 0-2, the channel onto 3, nothing else survives.
    let moves = [
        (stdio.stdin.as_raw_fd(), 0),
        (stdio.stdout.as_raw_fd(), 1),
        (stdio.stderr.as_raw_fd(), 2),
    ];
    // SAFETY: dup/dup2 on fds we own; the channel is first moved above 2.
    let ch = unsafe {
        let c = libc::fcntl(ch, libc::F_DUPFD_CLOEXEC, 10);
        for (from, to) in moves {
            libc::dup2(from, to);
        }
        libc::dup3(c, 3, libc::O_CLOEXEC);
        3
    };
    std::mem::forget(channel);
    std::mem::forget(stdio);
    if let Err(e) = sys::close_from(4) {
        airlock_agent::fail_setup(ch, Stage::Agent, sys::errno_of(&e), "close_range".into());
    }
    airlock_agent::serve(ch, &mut || launch(plan, filter))
}

/// Namespaced setup as uid 0 of the new user namespace.
fn setup(plan: &Plan, trees: &Option<mount::OpenedTrees>, channel: RawFd) -> Result<(), ChildFail> {
    // Become uid/gid 0 of the new namespace: run by root, the clone still
    // carries host uid 0, which the namespace does not map.
    // SAFETY: credential syscalls with plain integers.
    unsafe {
        if !plan.idmap.is_rootless() {
            sys::cvt(libc::setgroups(0, std::ptr::null()))
                .map_err(|e| ChildFail::io(Stage::UserNamespace, "setgroups", e))?;
        }
        sys::cvt(libc::setresgid(0, 0, 0))
            .map_err(|e| ChildFail::io(Stage::UserNamespace, "setresgid", e))?;
        sys::cvt(libc::setresuid(0, 0, 0))
            .map_err(|e| ChildFail::io(Stage::UserNamespace, "setresuid", e))?;
    }

    // Changing the euid (run by root: host 0 -> the subordinate range)
    // clears the parent-death signal: arm it again, then make sure airlock
    // did not die in between (its end of the channel would have hung up).
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
    if sys::peer_gone(channel) {
        // SAFETY: exit without running the parent's destructors.
        unsafe { libc::_exit(125) };
    }
    // Always a cgroup namespace of its own (rooted at the sandbox's group,
    // which the parent has put it in by now, or airlock's): the sandbox
    // never learns the host's cgroup paths.
    // SAFETY: unshare takes only flags.
    sys::cvt(unsafe { libc::unshare(libc::CLONE_NEWCGROUP) })
        .map_err(|e| ChildFail::io(Stage::Limits, "cgroup namespace", e))?;
    let opened;
    let trees = match trees {
        Some(t) => t,
        None => {
            opened = mount::open_trees(&plan.root, None).map_err(|e| ChildFail {
                stage: Stage::Mounts,
                errno: libc::EPERM,
                detail: error_chain(&e),
            })?;
            &opened
        }
    };
    let notes = mount::build_root(&plan.root, trees, plan.idmap.is_rootless())?;
    for text in notes {
        airlock_agent::note(channel, text);
    }
    // The sandbox's own user namespace limits (it is uid 0 there, with
    // CAP_SYS_RESOURCE): it runs out of inotify instances and watches
    // before its owner on the host does, and creates no namespaces.
    for (name, value) in &plan.userns_limits {
        let p = Path::new("/proc/sys/user").join(name);
        // A kernel without one of these simply has no such quota.
        if let Err(e) = sys::write_file(&p, value.to_string().as_bytes()) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(ChildFail::io(
                    Stage::Limits,
                    &format!("set {}", p.display()),
                    e,
                ));
            }
        }
    }
    let h = plan.hostname.as_bytes();
    // SAFETY: `h` is valid for its length.
    sys::cvt(unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) })
        .map_err(|e| ChildFail::io(Stage::Hostname, "sethostname", e))?;
    net::loopback_up().map_err(|e| ChildFail::io(Stage::Network, "bring up lo", e))?;
    // Nothing in the sandbox may ptrace, read the memory of, or open
    // /proc/1/{root,exe,mem} of the agent.
    // SAFETY: prctl with integer arguments.
    sys::cvt(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) })
        .map_err(|e| ChildFail::io(Stage::Agent, "PR_SET_DUMPABLE", e))?;
    Ok(())
}

/// In the command's process, between the agent's fork and exec. Returns
/// only on failure.
fn launch(plan: &Plan, filter: &seccomp::Filter) -> airlock_agent::LaunchFailure {
    match confine(plan, filter) {
        Ok(()) => exec(plan),
        Err((stage, e)) => (stage, e),
    }
}

fn confine(plan: &Plan, filter: &seccomp::Filter) -> Result<(), (Stage, i32)> {
    let e = |stage: Stage| move |err: io::Error| (stage, sys::errno_of(&err));
    // The agent is non-dumpable and we are its fork; execve would make us
    // dumpable anyway, and nothing else runs in the sandbox yet. Our own
    // /proc/self files (uid_map for the nested namespace) need it now.
    // SAFETY: prctl with integer arguments.
    sys::cvt(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) })
        .map_err(e(Stage::Credentials))?;
    // A new session: no controlling terminal of the host's (no TIOCSTI into
    // the caller's shell); with -t, the sandbox's pty becomes ours.
    // SAFETY: setsid and ioctl on our own stdin.
    unsafe {
        libc::setsid();
        if plan.tty {
            sys::cvt(libc::ioctl(0, libc::TIOCSCTTY, 0)).map_err(e(Stage::Stdio))?;
        }
        // Every signal back to its default (the host binary ignores SIGPIPE).
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
    rlimit::apply(&plan.rlimits).map_err(e(Stage::Limits))?;
    let User { uid, gid } = plan.user;
    if plan.idmap.is_rootless() {
        if plan.idmap.needs_nested_userns(uid) {
            userns::enter_nested(uid, gid).map_err(e(Stage::Credentials))?;
        }
        caps::drop_bounding().map_err(e(Stage::Credentials))?;
        caps::lock_securebits().map_err(e(Stage::Credentials))?;
    } else {
        caps::drop_bounding().map_err(e(Stage::Credentials))?;
        caps::lock_securebits().map_err(e(Stage::Credentials))?;
        // SAFETY: credential syscalls with plain integers.
        unsafe {
            sys::cvt(libc::setgroups(0, std::ptr::null())).map_err(e(Stage::Credentials))?;
            sys::cvt(libc::setresgid(gid, gid, gid)).map_err(e(Stage::Credentials))?;
            sys::cvt(libc::setresuid(uid, uid, uid)).map_err(e(Stage::Credentials))?;
        }
    }
    caps::clear_all().map_err(e(Stage::Credentials))?;
    std::env::set_current_dir(&plan.workdir).map_err(e(Stage::Workdir))?;
    // SAFETY: prctl with integer arguments.
    sys::cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
        .map_err(e(Stage::Credentials))?;
    if let Some(rules) = &plan.landlock {
        landlock::restrict(rules).map_err(|_| (Stage::Landlock, libc::EPERM))?;
    }
    sys::cloexec_from(3).map_err(e(Stage::Stdio))?;
    filter.apply().map_err(|_| (Stage::Seccomp, libc::EPERM))?;
    Ok(())
}

/// `execvpe` with the sandbox's PATH: the first match wins; EACCES is kept
/// if nothing better turns up.
fn exec(plan: &Plan) -> airlock_agent::LaunchFailure {
    (
        Stage::Exec,
        exec_search(&plan.argv, &plan.envp, &plan.path_dirs),
    )
}

/// Executes `argv[0]` (searched in `path` unless it contains a `/`) and
/// returns the errno if no exec worked. Shared by every tier.
pub fn exec_search(argv: &[CString], envp: &[CString], path: &[PathBuf]) -> i32 {
    let Some(arg0) = argv.first() else {
        return libc::ENOENT;
    };
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut en: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    en.push(std::ptr::null());
    let try_exec = |p: &CString| -> i32 {
        // SAFETY: NUL-terminated argv/envp arrays of valid C strings.
        unsafe { libc::execve(p.as_ptr(), a.as_ptr(), en.as_ptr()) };
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOENT)
    };
    if arg0.as_bytes().contains(&b'/') {
        return try_exec(arg0);
    }
    let mut best = libc::ENOENT;
    for dir in path {
        let mut full = dir.as_os_str().as_bytes().to_vec();
        full.push(b'/');
        full.extend_from_slice(arg0.as_bytes());
        let Ok(c) = CString::new(full) else { continue };
        match try_exec(&c) {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => best = libc::EACCES,
            other => return other,
        }
    }
    best
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A raw fd that the caller owns, for poll loops.
pub fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_spec::{Mount, SandboxSpec};

    fn compile(spec: &SandboxSpec, unenforced: &[cgroup::Controller]) -> Plan {
        let env = base_env(spec, |k| (k == "LANG").then(|| "en_US.UTF-8".to_string()));
        Plan::compile(
            spec,
            &HostFacts::default(),
            &rlimit::KernelLimits::default(),
            IdMap::Caller {
                uid: 1000,
                gid: 1000,
            },
            env,
            unenforced,
            7,
        )
        .unwrap()
    }

    #[test]
    fn environment_is_only_the_base_and_what_env_names() {
        let mut spec = SandboxSpec::new(vec!["true".into()]);
        spec.env = vec![("FOO".into(), "1".into()), ("TERM".into(), "xterm".into())];
        let env = base_env(&spec, |k| match k {
            "LANG" => Some("en_US.UTF-8".into()),
            "AWS_SECRET_ACCESS_KEY" | "GITHUB_TOKEN" => Some("secret".into()),
            _ => None,
        });
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["PATH", "HOME", "USER", "LANG", "FOO", "TERM"]);
        assert!(env.contains(&("TERM".into(), "xterm".into())));
        assert!(env.contains(&("HOME".into(), "/home/sandbox".into())));
        assert!(!env.iter().any(|(_, v)| v == "secret"));
    }

    #[test]
    fn landlock_rules_follow_mount_modes() {
        let mut spec = SandboxSpec::new(vec!["true".into()]);
        for (t, mode) in [
            ("/ro", MountMode::Ro),
            ("/rw", MountMode::Rw),
            ("/ov", MountMode::Overlay),
        ] {
            spec.mounts.push(Mount {
                source: "/x".into(),
                target: t.into(),
                mode,
            });
        }
        let p = compile(&spec, &[]);
        let ll = p.landlock.as_ref().unwrap();
        assert!(ll.read_exec.contains(&PathBuf::from("/ro")));
        assert!(ll.full.contains(&PathBuf::from("/rw")));
        assert!(ll.full.contains(&PathBuf::from("/ov")));
        assert!(!ll.full.contains(&PathBuf::from("/ro")));
        assert!(ll.full.contains(&PathBuf::from("/tmp")));
        assert!(ll.full.contains(&PathBuf::from("/home/sandbox")));
        assert!(!ll
            .full
            .iter()
            .any(|p| p == Path::new("/usr") || p == Path::new("/etc")));
    }

    #[test]
    fn no_landlock_rules_where_the_kernel_has_none() {
        let spec = SandboxSpec::new(vec!["true".into()]);
        let p = Plan::compile(
            &spec,
            &HostFacts::default(),
            &rlimit::KernelLimits::default(),
            IdMap::Caller { uid: 1, gid: 1 },
            vec![],
            &[],
            0,
        )
        .unwrap();
        assert!(p.landlock.is_none());
    }

    #[test]
    fn rlimit_fallbacks_only_for_what_cgroups_cannot_do() {
        let mut spec = SandboxSpec::new(vec!["true".into()]);
        spec.limits.memory = Some(1 << 30);
        let p = compile(&spec, &[]);
        assert_eq!(p.rlimits.data, None);
        assert_eq!(
            p.rlimits.nproc,
            Some(rlimit::KernelLimits::default().default_tasks())
        );
        assert_eq!(p.rlimits.nofile, Some(rlimit::NOFILE));
        assert_eq!(p.rlimits.sigpending, Some(rlimit::SIGPENDING));
        let p = compile(&spec, &[cgroup::Controller::Memory]);
        assert_eq!(p.rlimits.data, Some(1 << 30));
        spec.limits.pids = Some(50);
        assert_eq!(compile(&spec, &[]).rlimits.nproc, Some(50));
    }

    #[test]
    fn nul_in_argv_is_an_error() {
        let spec = SandboxSpec::new(vec!["a\0b".into()]);
        let r = Plan::compile(
            &spec,
            &HostFacts::default(),
            &rlimit::KernelLimits::default(),
            IdMap::Caller { uid: 1, gid: 1 },
            vec![],
            &[],
            7,
        );
        assert!(matches!(r, Err(JailError::Nul { .. })));
    }
}
