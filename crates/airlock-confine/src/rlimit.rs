//! rlimits, and the kernel-wide limits they are derived from.
//!
//! Every sandbox's command gets, whatever the spec says: no core dumps; at
//! most [`NOFILE`] open files per process; at most [`SIGPENDING`] queued
//! signals, [`MSGQUEUE`] bytes of POSIX message queues and [`MEMLOCK`]
//! bytes of locked memory (all counted per user, and charged up to the
//! host user that owns the sandbox's user namespace — rootless, the
//! caller, so each is a fraction of what the caller has); and a task cap (`RLIMIT_NPROC`, counted per user *in the
//! sandbox's namespace*, so per sandbox): `--pids`, or a default derived
//! from the host so that one sandbox can take neither every pid
//! (`pid_max`) nor, with [`NOFILE`] files in each task, every open file of
//! the system (`file-max`, after which every non-root process gets ENFILE).
//! Memory falls back to `RLIMIT_DATA` only when no cgroup enforces it.

use airlock_sys as sys;
use std::io;

/// Open files per process.
pub const NOFILE: u64 = 1024;
/// Queued signals (per user, in the sandbox).
pub const SIGPENDING: u64 = 1024;
/// Bytes in POSIX message queues (per user): a quarter of the kernel's
/// usual per-user default (819200), so that a rootless sandbox leaves its
/// caller's other processes most of theirs.
pub const MSGQUEUE: u64 = 204_800;
/// Bytes of locked memory (`mlock`, and what the kernel counts per user:
/// `SHM_LOCK`ed segments, `memfd_secret`).
pub const MEMLOCK: u64 = 64 * 1024;
/// The task cap never exceeds this by default...
pub const MAX_DEFAULT_TASKS: u64 = 8192;
/// ...nor falls below this.
pub const MIN_DEFAULT_TASKS: u64 = 256;

fn set(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let r = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `r` is a valid rlimit struct.
    sys::cvt(unsafe { libc::setrlimit(resource, &r) })?;
    Ok(())
}

/// What the kernel allows the whole system, read from `/proc/sys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelLimits {
    pub pid_max: u64,
    pub threads_max: u64,
    pub file_max: u64,
    /// Per host user: `fs.inotify.max_user_instances` / `_watches`.
    pub inotify_instances: u64,
    pub inotify_watches: u64,
}

impl Default for KernelLimits {
    /// Linux's defaults on a small machine.
    fn default() -> Self {
        KernelLimits {
            pid_max: 32768,
            threads_max: 63_000,
            file_max: 800_000,
            inotify_instances: 128,
            inotify_watches: 65_536,
        }
    }
}

impl KernelLimits {
    pub fn probe() -> KernelLimits {
        let d = KernelLimits::default();
        let read = |p: &str, dflt: u64| -> u64 {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(dflt)
        };
        KernelLimits {
            pid_max: read("/proc/sys/kernel/pid_max", d.pid_max),
            threads_max: read("/proc/sys/kernel/threads-max", d.threads_max),
            file_max: read("/proc/sys/fs/file-max", d.file_max),
            inotify_instances: read(
                "/proc/sys/fs/inotify/max_user_instances",
                d.inotify_instances,
            ),
            inotify_watches: read("/proc/sys/fs/inotify/max_user_watches", d.inotify_watches),
        }
    }

    /// The task cap of a sandbox without `--pids`: an eighth of the pids
    /// and threads the system has, and few enough that its tasks' open
    /// files stay under a quarter of `file-max`.
    pub fn default_tasks(&self) -> u64 {
        MAX_DEFAULT_TASKS
            .min(self.pid_max / 8)
            .min(self.threads_max / 8)
            .min(self.file_max / (4 * NOFILE))
            .max(MIN_DEFAULT_TASKS)
    }

    /// The limits set in the sandbox's own user namespace
    /// (`/proc/sys/user/*`), so that the sandbox runs out before its owner
    /// on the host does: inotify instances and watches. (The other per-user
    /// namespace quotas — fanotify groups and marks, namespaces of every
    /// kind — cannot be used from inside at all: seccomp refuses
    /// `fanotify_init`, `unshare`, `setns` and namespace flags on `clone`.)
    pub fn userns_limits(&self) -> Vec<(&'static str, u64)> {
        vec![
            (
                "max_inotify_instances",
                (self.inotify_instances / 4).clamp(1, 32),
            ),
            ("max_inotify_watches", (self.inotify_watches / 4).max(1)),
        ]
    }
}

/// The rlimits a command starts with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rlimits {
    /// `RLIMIT_DATA` (private writable memory of each process): only when
    /// no cgroup enforces `--memory`.
    pub data: Option<u64>,
    /// `RLIMIT_NPROC` (tasks of the command's user in its namespace).
    pub nproc: Option<u64>,
    /// `RLIMIT_NOFILE`.
    pub nofile: Option<u64>,
    /// `RLIMIT_SIGPENDING`.
    pub sigpending: Option<u64>,
    /// `RLIMIT_MSGQUEUE`.
    pub msgqueue: Option<u64>,
    /// `RLIMIT_MEMLOCK`.
    #[serde(default)]
    pub memlock: Option<u64>,
}

impl Rlimits {
    /// A sandbox's: the caps above, with `tasks` as the task cap.
    pub fn sandbox(tasks: u64, data: Option<u64>) -> Rlimits {
        Rlimits {
            data,
            nproc: Some(tasks),
            nofile: Some(NOFILE),
            sigpending: Some(SIGPENDING),
            msgqueue: Some(MSGQUEUE),
            memlock: Some(MEMLOCK),
        }
    }
}

/// A limit asked for on top of the sandbox's own (an OCI bundle's
/// `process.rlimits`). It only ever lowers: each value is capped at what
/// the process has once the sandbox's rlimits are set (a sandbox process
/// could not raise a hard limit anyway, lacking `CAP_SYS_RESOURCE` in the
/// initial user namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lower {
    /// `RLIMIT_*`
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// `RLIMIT_*` by its name (`RLIMIT_NOFILE`), as the runtime-spec writes it.
pub fn resource_by_name(name: &str) -> Option<u32> {
    let r = match name {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    };
    Some(r)
}

/// The value airlock itself gives every sandbox process for `resource`
/// (both soft and hard), where it sets one regardless of the spec; the
/// task cap (`RLIMIT_NPROC`) depends on the sandbox and is left out.
pub fn fixed_limit(resource: u32) -> Option<u64> {
    match resource {
        libc::RLIMIT_CORE => Some(0),
        libc::RLIMIT_NOFILE => Some(NOFILE),
        libc::RLIMIT_SIGPENDING => Some(SIGPENDING),
        libc::RLIMIT_MSGQUEUE => Some(MSGQUEUE),
        libc::RLIMIT_MEMLOCK => Some(MEMLOCK),
        _ => None,
    }
}

/// Applies `extra` on top of what the process has, lowering only.
/// Allocates nothing.
pub fn lower(extra: &[Lower]) -> io::Result<()> {
    for l in extra {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit struct we own.
        sys::cvt(unsafe { libc::getrlimit(l.resource as _, &mut cur) })?;
        let hard = l.hard.min(cur.rlim_max);
        let soft = l.soft.min(hard);
        let r = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: `r` is a valid rlimit struct.
        sys::cvt(unsafe { libc::setrlimit(l.resource as _, &r) })?;
    }
    Ok(())
}

pub fn apply(r: &Rlimits) -> io::Result<()> {
    set(libc::RLIMIT_CORE, 0)?;
    for (res, v) in [
        (libc::RLIMIT_DATA, r.data),
        (libc::RLIMIT_NPROC, r.nproc),
        (libc::RLIMIT_NOFILE, r.nofile),
        (libc::RLIMIT_SIGPENDING, r.sigpending),
        (libc::RLIMIT_MSGQUEUE, r.msgqueue),
        (libc::RLIMIT_MEMLOCK, r.memlock),
    ] {
        if let Some(v) = v {
            set(res, v)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_only_lowers() {
        // In a child: limits are per process.
        // SAFETY: fork in a test; the child only makes syscalls and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = (|| -> Result<(), i32> {
                set(libc::RLIMIT_NOFILE, 512).map_err(|_| 1)?;
                lower(&[Lower {
                    resource: libc::RLIMIT_NOFILE,
                    soft: 64,
                    hard: 100_000,
                }])
                .map_err(|_| 2)?;
                let mut r = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: writes one rlimit struct.
                unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
                if (r.rlim_cur, r.rlim_max) != (64, 512) {
                    return Err(3);
                }
                lower(&[Lower {
                    resource: libc::RLIMIT_NOFILE,
                    soft: 1_000_000,
                    hard: 1_000_000,
                }])
                .map_err(|_| 4)?;
                // SAFETY: as above.
                unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
                if (r.rlim_cur, r.rlim_max) != (512, 512) {
                    return Err(5);
                }
                Ok(())
            })();
            // SAFETY: leaves the child.
            unsafe { libc::_exit(code.err().unwrap_or(0)) };
        }
        let mut st = 0;
        // SAFETY: reaps our child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        assert!(libc::WIFEXITED(st));
        assert_eq!(libc::WEXITSTATUS(st), 0);
        assert_eq!(resource_by_name("RLIMIT_NOFILE"), Some(libc::RLIMIT_NOFILE));
        assert_eq!(resource_by_name("NOFILE"), None);
        assert_eq!(fixed_limit(libc::RLIMIT_NOFILE), Some(NOFILE));
    }

    #[test]
    fn default_tasks_respect_pid_max_and_file_max() {
        let k = KernelLimits {
            pid_max: 32768,
            threads_max: 192_731,
            file_max: 2_466_193,
            ..KernelLimits::default()
        };
        // 2466193 / 4096 = 602 < 32768 / 8 = 4096.
        assert_eq!(k.default_tasks(), 602);
        assert!(k.default_tasks() * NOFILE <= k.file_max / 4);
        let big = KernelLimits {
            pid_max: 4_194_304,
            threads_max: 4_000_000,
            file_max: 100_000_000,
            ..k
        };
        assert_eq!(big.default_tasks(), MAX_DEFAULT_TASKS);
        let tiny = KernelLimits {
            pid_max: 1024,
            threads_max: 1024,
            file_max: 10_000,
            ..k
        };
        assert_eq!(tiny.default_tasks(), MIN_DEFAULT_TASKS);
    }

    #[test]
    fn userns_limits_leave_the_host_user_most_of_theirs() {
        let k = KernelLimits {
            inotify_instances: 128,
            inotify_watches: 192_536,
            ..KernelLimits::default()
        };
        let l = k.userns_limits();
        let get = |n: &str| l.iter().find(|(k, _)| *k == n).map(|(_, v)| *v).unwrap();
        assert_eq!(get("max_inotify_instances"), 32);
        assert_eq!(get("max_inotify_watches"), 48_134);
    }
}
