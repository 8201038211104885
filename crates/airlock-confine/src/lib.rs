//! Confinement of one command, in the process that is about to exec it:
//! every capability gone, `no_new_privs`, Landlock, the seccomp allowlist,
//! rlimits, the command's own identity, a new session. Shared by every tier
//! that confines: the agent applies it to each process it starts (container
//! PID 1, microVM `/init`); the local tier applies the parts that make sense
//! for your own code.
//!
//! One module per kernel mechanism. [`confine`] runs between fork and exec
//! and allocates (Landlock's ruleset): its callers fork from
//! single-threaded processes only (the agent, the local tier's spawner).

pub mod caps;
pub mod landlock;
pub mod rlimit;
pub mod seccomp;

use airlock_sys as sys;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// The default `PATH` of every sandbox.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where in a launch something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Credentials,
    Landlock,
    Seccomp,
    Limits,
    Workdir,
    Stdio,
    Exec,
}

/// A launch failure: the stage and the errno.
pub type Failure = (Stage, i32);

/// How a command is confined (part of the agent's plan).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    /// Landlock rules (`None`: the kernel has none, or the tier wants none).
    pub landlock: Option<landlock::Rules>,
    pub rlimits: rlimit::Rlimits,
    /// Drop every capability, lock the securebits and set `no_new_privs`
    /// (everything but the local tier).
    pub drop_privileges: bool,
    /// With `drop_privileges`, for a caller that holds no capabilities in
    /// its user namespace (the Landlock tier, rootless): the bounding set
    /// and the securebits (which need `CAP_SETPCAP`) are left alone —
    /// `no_new_privs` already keeps an exec from granting anything — and
    /// only the capability sets are cleared (in case of ambient ones).
    #[serde(default)]
    pub unprivileged: bool,
    /// Install the seccomp allowlist.
    pub seccomp: bool,
    /// With `seccomp`: no network sockets at all, only unix socket pairs
    /// (the Landlock tier, which shares the host's network).
    #[serde(default)]
    pub no_network: bool,
    /// Rootless container: the command enters a nested user namespace that
    /// maps its uid and gid onto the sandbox's single mapped id.
    pub nested_userns: bool,
    /// Change to the command's uid and gid (root-run container, microVM).
    pub set_ids: bool,
    /// Limits asked for on top of `rlimits` (an OCI bundle's): they only
    /// ever lower what the process gets.
    #[serde(default)]
    pub lower_rlimits: Vec<rlimit::Lower>,
    /// A second seccomp filter (an OCI bundle's profile), installed after
    /// the allowlist: both apply, the strictest verdict wins.
    #[serde(default)]
    pub profile: Option<seccomp::profile::Profile>,
}

/// What is done once per sandbox, in the agent, before its first
/// process: the seccomp filter compiled, the Landlock ruleset built (its
/// paths resolved in the sandbox's final root) and, where the agent may,
/// its own bounding set emptied, which every process it starts inherits.
/// Each launch then only applies them ([`confine`]).
pub struct Prepared {
    filter: Option<seccomp::Filter>,
    profile: Option<seccomp::profile::ProfileFilter>,
    landlock: Option<landlock::Prepared>,
    /// The agent's bounding set is empty already.
    bounding_empty: bool,
}

/// Prepares `c` in the calling process (the agent, after its set-up).
pub fn prepare(c: &Confinement) -> Result<Prepared, Failure> {
    let filter = if c.seccomp {
        let sockets = if c.no_network {
            seccomp::Sockets::UnixPairsOnly
        } else {
            seccomp::Sockets::UnixAndInet
        };
        Some(seccomp::compile_for(sockets).map_err(|_| (Stage::Seccomp, libc::EINVAL))?)
    } else {
        None
    };
    let profile = match &c.profile {
        Some(p) => Some(p.compile().map_err(|_| (Stage::Seccomp, libc::EINVAL))?),
        None => None,
    };
    let landlock = match &c.landlock {
        Some(rules) => Some(landlock::prepare(rules).map_err(|_| (Stage::Landlock, libc::EPERM))?),
        None => None,
    };
    // The agent never execs, so an empty bounding set costs it nothing
    // (it keeps what it has); it spares each launch forty-odd syscalls.
    let bounding_empty = c.drop_privileges && caps::drop_bounding().is_ok();
    Ok(Prepared {
        filter,
        profile,
        landlock,
        bounding_empty,
    })
}

/// Whether confining a command as `uid` changes state of the whole address
/// space (it makes the process dumpable to write its nested user
/// namespace's maps): its child must then be a real fork, not one that
/// shares the agent's memory, whose dumpability would change with it.
pub fn needs_own_mm(c: &Confinement, uid: u32) -> bool {
    c.nested_userns && uid != 0
}

/// In the command's process, between fork and exec: applies `c` (as
/// prepared in the agent) without allocating for a command running as `uid`/`gid` in `cwd`.
/// `tty`: stdin is a terminal to make the controlling one. The caller's
/// signal handlers are reset by the exec; it must have reset any other
/// disposition it inherited (the agent does at start) but `SIGPIPE`.
pub fn confine(
    c: &Confinement,
    prep: &Prepared,
    uid: u32,
    gid: u32,
    cwd: &std::ffi::CStr,
    tty: bool,
) -> Result<(), Failure> {
    let e = |stage: Stage| move |err: io::Error| (stage, sys::errno_of(&err));
    // A new session: no controlling terminal of the host's (no TIOCSTI into
    // the caller's shell); with a pty, it becomes ours.
    // SAFETY: setsid and ioctl on our own stdin.
    unsafe {
        libc::setsid();
        if tty {
            sys::cvt(libc::ioctl(0, libc::TIOCSCTTY, 0)).map_err(e(Stage::Stdio))?;
        }
        // The agent ignores SIGPIPE (ignored signals survive exec); the
        // command gets the default, and no signal blocked.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
    rlimit::apply(&c.rlimits).map_err(e(Stage::Limits))?;
    rlimit::lower(&c.lower_rlimits).map_err(e(Stage::Limits))?;
    if needs_own_mm(c, uid) {
        // Our own /proc/self files (uid_map for the nested namespace) need
        // a dumpable process (execve sets it again anyway). Dumpability
        // belongs to the address space: this runs only in a child with one
        // of its own (see needs_own_mm).
        // SAFETY: prctl with integer arguments.
        sys::cvt(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) })
            .map_err(e(Stage::Credentials))?;
        enter_nested_userns(uid, gid).map_err(e(Stage::Credentials))?;
    }
    if c.drop_privileges && !c.unprivileged {
        // A nested user namespace starts with a full bounding set.
        if !prep.bounding_empty || (c.nested_userns && uid != 0) {
            caps::drop_bounding().map_err(e(Stage::Credentials))?;
        }
        caps::lock_securebits().map_err(e(Stage::Credentials))?;
    }
    if c.set_ids {
        // SAFETY: credential syscalls with plain integers.
        unsafe {
            sys::cvt(libc::setgroups(0, std::ptr::null())).map_err(e(Stage::Credentials))?;
            sys::cvt(libc::setresgid(gid, gid, gid)).map_err(e(Stage::Credentials))?;
            sys::cvt(libc::setresuid(uid, uid, uid)).map_err(e(Stage::Credentials))?;
        }
    }
    if c.drop_privileges {
        caps::clear_all().map_err(e(Stage::Credentials))?;
    }
    // SAFETY: chdir with a valid C string.
    sys::cvt(unsafe { libc::chdir(cwd.as_ptr()) }).map_err(e(Stage::Workdir))?;
    if c.drop_privileges {
        // SAFETY: prctl with integer arguments.
        sys::cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
            .map_err(e(Stage::Credentials))?;
    }
    if let Some(rs) = &prep.landlock {
        rs.restrict_self()
            .map_err(|_| (Stage::Landlock, libc::EPERM))?;
    }
    sys::cloexec_from(3).map_err(e(Stage::Stdio))?;
    if let Some(f) = &prep.filter {
        f.apply().map_err(|_| (Stage::Seccomp, libc::EPERM))?;
    }
    // Only after the allowlist: whatever the profile says, the allowlist
    // has its say too.
    if let Some(f) = &prep.profile {
        f.apply().map_err(|_| (Stage::Seccomp, libc::EPERM))?;
    }
    Ok(())
}

/// A new user namespace in which the caller's id (the sandbox's single
/// mapped id, rootless) appears as `uid`/`gid`. Allocates nothing (it runs
/// in a child that shares the agent's memory).
pub fn enter_nested_userns(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: unshare takes only flags.
    sys::cvt(unsafe { libc::unshare(libc::CLONE_NEWUSER) })?;
    write_small(c"/proc/self/setgroups", b"deny")?;
    let mut buf = [0u8; 32];
    write_small(c"/proc/self/uid_map", id_map_line(uid, &mut buf))?;
    let mut buf = [0u8; 32];
    write_small(c"/proc/self/gid_map", id_map_line(gid, &mut buf))
}

/// `"{id} 0 1\n"` in `buf`.
fn id_map_line(id: u32, buf: &mut [u8; 32]) -> &[u8] {
    let mut digits = [0u8; 10];
    let mut n = id;
    let mut k = 0;
    loop {
        digits[k] = b'0' + (n % 10) as u8;
        k += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut len = 0;
    for i in (0..k).rev() {
        buf[len] = digits[i];
        len += 1;
    }
    buf[len..len + 5].copy_from_slice(b" 0 1\n");
    &buf[..len + 5]
}

/// Writes `data` to `path` in one write (proc files), without allocating.
fn write_small(path: &std::ffi::CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: a valid C string; the kernel returns a new fd or -1.
    let fd = sys::cvt(unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) })?;
    // SAFETY: writes from a live buffer, then closes the fd we opened.
    unsafe {
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let e = io::Error::last_os_error();
        libc::close(fd);
        if n == data.len() as isize {
            Ok(())
        } else {
            Err(e)
        }
    }
}

/// The `PATH` directories of an environment (`KEY=VALUE` entries).
pub fn path_dirs(env: &[CString]) -> Vec<PathBuf> {
    let path = env
        .iter()
        .find_map(|e| e.as_bytes().strip_prefix(b"PATH="))
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_else(|| DEFAULT_PATH.into());
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

/// A command ready to exec without allocating (its caller may be a child
/// that shares the agent's memory): the argument and environment arrays
/// and every path to try, worked out beforehand.
pub struct ExecPlan {
    _argv: Vec<CString>,
    _env: Vec<CString>,
    argv_p: Vec<*const libc::c_char>,
    env_p: Vec<*const libc::c_char>,
    /// `argv[0]` itself when it holds a `/`, else it under each `PATH`
    /// directory in order.
    candidates: Vec<CString>,
}

impl ExecPlan {
    pub fn new(argv: Vec<CString>, env: Vec<CString>) -> ExecPlan {
        let candidates = match argv.first() {
            None => Vec::new(),
            Some(a) if a.as_bytes().contains(&b'/') => vec![a.clone()],
            Some(a) => path_dirs(&env)
                .into_iter()
                .filter_map(|d| {
                    let mut full = d.into_os_string().into_vec();
                    full.push(b'/');
                    full.extend_from_slice(a.as_bytes());
                    CString::new(full).ok()
                })
                .collect(),
        };
        let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
        argv_p.push(std::ptr::null());
        let mut env_p: Vec<*const libc::c_char> = env.iter().map(|s| s.as_ptr()).collect();
        env_p.push(std::ptr::null());
        ExecPlan {
            _argv: argv,
            _env: env,
            argv_p,
            env_p,
            candidates,
        }
    }

    /// Executes the command (the first candidate that works, as
    /// `execvpe`); returns the errno if none did (EACCES is kept if nothing
    /// better turns up). Allocates nothing.
    pub fn exec(&self) -> i32 {
        let mut best = libc::ENOENT;
        for c in &self.candidates {
            // SAFETY: NUL-terminated arrays of pointers into C strings this
            // plan owns.
            unsafe { libc::execve(c.as_ptr(), self.argv_p.as_ptr(), self.env_p.as_ptr()) };
            match io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::ENOENT)
            {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => best = libc::EACCES,
                other => return other,
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_dirs_from_the_environment() {
        let env = vec![
            CString::new("A=1").unwrap(),
            CString::new("PATH=/x:rel:/y").unwrap(),
        ];
        assert_eq!(path_dirs(&env), vec![PathBuf::from("/x"), "/y".into()]);
        assert_eq!(path_dirs(&[]).len(), 6);
    }
}
