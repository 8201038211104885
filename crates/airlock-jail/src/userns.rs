//! User namespaces: who the sandbox is on the host.
//!
//! Run by root, a sandbox maps ids 0..65536 inside onto a subordinate range
//! of unprivileged host ids (the entry for user `airlock` in `/etc/subuid` and
//! `/etc/subgid`, or [`DEFAULT_SUBID_BASE`]), the way container runtimes'
//! user-namespace remapping does: nothing inside is ever host root.
//! Rootless, the kernel lets an unprivileged user map only their own id, so
//! uid 0 inside is the caller, and the command gets a nested user namespace
//! that shows it as its `--user` id with no capabilities.

use crate::sys;
use std::io;
use std::path::Path;

/// Where the subordinate range starts when `/etc/subuid` names none for
/// `airlock`: far above any id a distribution hands out.
pub const DEFAULT_SUBID_BASE: u32 = 0x7000_0000;
pub const SUBID_COUNT: u32 = 65536;
pub const SUBID_USER: &str = "airlock";

/// How ids inside map onto the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdMap {
    /// Run by root: inside 0..count is host base..base+count.
    Range {
        uid_base: u32,
        gid_base: u32,
        count: u32,
    },
    /// Rootless: inside 0 is the caller's own ids, nothing else is mapped.
    Caller { uid: u32, gid: u32 },
}

impl IdMap {
    /// Chooses the mapping for this process.
    pub fn for_current_process() -> IdMap {
        // SAFETY: geteuid/getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        if uid == 0 {
            let u = subid_range(Path::new("/etc/subuid"), SUBID_USER);
            let g = subid_range(Path::new("/etc/subgid"), SUBID_USER);
            let (ub, uc) = u.unwrap_or((DEFAULT_SUBID_BASE, SUBID_COUNT));
            let (gb, gc) = g.unwrap_or((DEFAULT_SUBID_BASE, SUBID_COUNT));
            IdMap::Range {
                uid_base: ub,
                gid_base: gb,
                count: uc.min(gc).min(SUBID_COUNT),
            }
        } else {
            IdMap::Caller { uid, gid }
        }
    }

    /// Who creates (and so owns) the sandbox's user namespace: run by
    /// root, the first subordinate ids (the sandbox's own root); rootless,
    /// the caller (`None`: nothing to change).
    pub fn namespace_owner(&self) -> Option<(u32, u32)> {
        match *self {
            IdMap::Range {
                uid_base, gid_base, ..
            } => Some((uid_base, gid_base)),
            IdMap::Caller { .. } => None,
        }
    }

    pub fn is_rootless(&self) -> bool {
        matches!(self, IdMap::Caller { .. })
    }

    /// The `uid_map` and `gid_map` lines the parent writes for the sandbox.
    pub fn map_lines(&self) -> (String, String) {
        match *self {
            IdMap::Range {
                uid_base,
                gid_base,
                count,
            } => (
                format!("0 {uid_base} {count}\n"),
                format!("0 {gid_base} {count}\n"),
            ),
            IdMap::Caller { uid, gid } => (format!("0 {uid} 1\n"), format!("0 {gid} 1\n")),
        }
    }

    /// The host uid that an id inside the sandbox runs as.
    pub fn host_uid(&self, inside: u32) -> Option<u32> {
        match *self {
            IdMap::Range {
                uid_base, count, ..
            } => (inside < count).then(|| uid_base + inside),
            IdMap::Caller { uid, .. } => Some(uid),
        }
    }

    /// The host gid that a gid inside the sandbox runs as.
    pub fn host_gid(&self, inside: u32) -> Option<u32> {
        match *self {
            IdMap::Range {
                gid_base, count, ..
            } => (inside < count).then(|| gid_base + inside),
            IdMap::Caller { gid, .. } => Some(gid),
        }
    }

    /// Whether the command needs its own nested user namespace to appear as
    /// `uid` (rootless, any id but 0).
    pub fn needs_nested_userns(&self, uid: u32) -> bool {
        self.is_rootless() && uid != 0
    }

    /// Writes the maps of the freshly cloned child `pid`.
    pub fn write_for(&self, pid: libc::pid_t) -> io::Result<()> {
        let (u, g) = self.map_lines();
        let base = format!("/proc/{pid}");
        if self.is_rootless() {
            sys::write_file(Path::new(&format!("{base}/setgroups")), b"deny")?;
        }
        sys::write_file(Path::new(&format!("{base}/uid_map")), u.as_bytes())?;
        sys::write_file(Path::new(&format!("{base}/gid_map")), g.as_bytes())?;
        Ok(())
    }
}

/// The `(start, count)` of `user`'s entry in a subid file.
pub fn subid_range(file: &Path, user: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    parse_subid(&text, user)
}

fn parse_subid(text: &str, user: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|l| {
        let mut it = l.trim().split(':');
        let (name, start, count) = (it.next()?, it.next()?, it.next()?);
        if name != user {
            return None;
        }
        let start: u32 = start.parse().ok()?;
        let count: u32 = count.parse().ok()?;
        (start > 0 && count > 0 && start.checked_add(count).is_some()).then_some((start, count))
    })
}

/// In the command's process (rootless): a new user namespace in which the
/// caller's id (uid 0 of the sandbox) appears as `uid`/`gid`.
pub fn enter_nested(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: unshare takes only flags.
    sys::cvt(unsafe { libc::unshare(libc::CLONE_NEWUSER) })?;
    sys::write_file(Path::new("/proc/self/setgroups"), b"deny")?;
    sys::write_file(
        Path::new("/proc/self/uid_map"),
        format!("{uid} 0 1\n").as_bytes(),
    )?;
    sys::write_file(
        Path::new("/proc/self/gid_map"),
        format!("{gid} 0 1\n").as_bytes(),
    )?;
    Ok(())
}

/// A user namespace (as an fd) whose only mapping is `inside` → `host`
/// for both uid and gid: an id-mapped mount with it shows files owned by
/// `inside` as owned by `host`, and stores files created by `host` as
/// `inside`. Root only.
pub fn idmap_userns(inside: (u32, u32), host: (u32, u32)) -> io::Result<std::os::fd::OwnedFd> {
    userns_with_maps(
        &format!("{} {} 1\n", inside.0, host.0),
        &format!("{} {} 1\n", inside.1, host.1),
    )
}

/// A user namespace (as an fd) with these `uid_map` and `gid_map` lines.
/// With the sandbox's own lines ([`IdMap::map_lines`]), an id-mapped
/// mount shows a file whose owner on disk is `n` (0..65536) as the
/// sandbox's `n`, and stores what the sandbox's `n` creates as `n`: an
/// image tree keeps its owners inside. Root only.
pub fn userns_with_maps(uid_map: &str, gid_map: &str) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let (r, w) = sys::pipe_cloexec()?;
    // SAFETY: the caller is single-threaded; the child only unshares, tells
    // the parent, and waits to be killed.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: async-signal-safe calls only, then _exit.
        unsafe {
            let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
            libc::write(w.as_raw_fd(), [ok as u8].as_ptr().cast(), 1);
            libc::pause();
            libc::_exit(0);
        }
    }
    drop(w);
    let mut b = [0u8; 1];
    // SAFETY: reads one byte.
    let n = unsafe { libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
    let res = (|| {
        if n != 1 || b[0] != 1 {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let base = format!("/proc/{pid}");
        sys::write_file(Path::new(&format!("{base}/uid_map")), uid_map.as_bytes())?;
        sys::write_file(Path::new(&format!("{base}/gid_map")), gid_map.as_bytes())?;
        let c = sys::cpath(Path::new(&format!("{base}/ns/user")))?;
        // SAFETY: valid C string.
        let fd = sys::cvt(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
        // SAFETY: a new fd.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    })();
    // SAFETY: kill and reap our helper child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_parsing() {
        let t = "alice:100000:65536\nairlock:2000000:65536\nbad:x:1\n";
        assert_eq!(parse_subid(t, "airlock"), Some((2000000, 65536)));
        assert_eq!(parse_subid(t, "alice"), Some((100000, 65536)));
        assert_eq!(parse_subid(t, "bad"), None);
        assert_eq!(parse_subid(t, "bob"), None);
        assert_eq!(parse_subid("airlock:0:65536", "airlock"), None);
        assert_eq!(parse_subid("airlock:4294967295:2", "airlock"), None);
    }

    #[test]
    fn root_maps_to_an_unprivileged_range() {
        let m = IdMap::Range {
            uid_base: DEFAULT_SUBID_BASE,
            gid_base: DEFAULT_SUBID_BASE,
            count: SUBID_COUNT,
        };
        let (u, g) = m.map_lines();
        assert_eq!(u, format!("0 {DEFAULT_SUBID_BASE} 65536\n"));
        assert_eq!(g, u);
        assert_eq!(m.host_uid(0), Some(DEFAULT_SUBID_BASE));
        assert_eq!(m.host_uid(1000), Some(DEFAULT_SUBID_BASE + 1000));
        assert_eq!(m.host_uid(65536), None);
        assert!(!m.needs_nested_userns(1000));
        // Nothing in the sandbox is host root.
        for inside in [0, 1, 1000, 65535] {
            assert_ne!(m.host_uid(inside), Some(0));
        }
    }

    #[test]
    fn rootless_maps_only_the_caller() {
        let m = IdMap::Caller {
            uid: 1001,
            gid: 1002,
        };
        assert_eq!(m.map_lines(), ("0 1001 1\n".into(), "0 1002 1\n".into()));
        assert!(m.needs_nested_userns(1000));
        assert!(!m.needs_nested_userns(0));
    }
}
