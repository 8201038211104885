//! Pods: a bundle whose `linux.namespaces` names a network namespace by
//! path (CRI puts every container of a pod into its pause container's,
//! as `/proc/PID/ns/net` with PID the pause container's `state` pid).
//!
//! Airlock joins such a namespace only when it is another airlock
//! sandbox's, found in the same `--root`: the pid named is a live
//! container's monitor (or its sandbox's PID 1), or the namespace file is
//! the very namespace one of those sandboxes runs in. The host's network
//! namespace (PID 1's, or airlock's own) is refused with a clear message,
//! whatever path leads to it. Any other namespace (a CNI plugin's) is not
//! joined: the container gets a loopback-only namespace of its own, as
//! before.
//!
//! Every comparison is made on an open fd of the namespace (its nsfs
//! device and inode), so a path swapped after the check changes nothing.

use super::{ipc, Saved};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What to do with a network namespace path.
pub enum Decision {
    /// Join it: an fd of the sandbox's namespace, and whose it is.
    Join(OwnedFd, String),
    /// Not another sandbox's, not the host's: a new one of our own.
    Own(String),
}

/// `_IO(0xb7, 0x3)`: the type (`CLONE_NEW*`) of a namespace fd.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

fn open_ns(path: &Path) -> Result<OwnedFd, String> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: a NUL byte in the path", path.display()))?;
    // First without opening it for I/O (a FIFO would block, a device
    // open could act): only an nsfs file is opened for real.
    // SAFETY: a valid C string; the kernel returns a new fd or -1.
    let pfd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if pfd < 0 {
        return Err(format!(
            "the network namespace at {} cannot be opened: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a new fd that nothing else owns.
    let pfd = unsafe { OwnedFd::from_raw_fd(pfd) };
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    // SAFETY: fstatfs fills a statfs we own.
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above, on our fd.
    if unsafe { libc::fstatfs(pfd.as_raw_fd(), &mut sfs) } != 0 || sfs.f_type as i64 != NSFS_MAGIC {
        return Err(format!("{} is not a network namespace", path.display()));
    }
    let via = std::ffi::CString::new(format!("/proc/self/fd/{}", pfd.as_raw_fd()))
        .map_err(|_| "a NUL byte".to_string())?;
    // SAFETY: a valid C string; the kernel returns a new fd or -1.
    let fd = unsafe { libc::open(via.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "the network namespace at {} cannot be opened: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an ioctl without arguments on our fd.
    let ty = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) };
    if ty != libc::CLONE_NEWNET {
        return Err(format!("{} is not a network namespace", path.display()));
    }
    Ok(fd)
}

/// (device, inode): a namespace's identity.
fn id_of(fd: &OwnedFd) -> Option<(u64, u64)> {
    // SAFETY: fstat fills a stat we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    Some((st.st_dev, st.st_ino))
}

fn id_of_path(p: &str) -> Option<(u64, u64)> {
    let m = std::fs::metadata(p).ok()?;
    use std::os::unix::fs::MetadataExt;
    Some((m.dev(), m.ino()))
}

/// A live container of `root` and its sandbox's PID 1.
struct Live {
    saved: Saved,
    sandbox_pid: i32,
}

fn live_sandboxes(root: &Path) -> Vec<Live> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(data) = std::fs::read(e.path().join("state.json")) else {
            continue;
        };
        let Ok(saved) = serde_json::from_slice::<Saved>(&data) else {
            continue;
        };
        let sp = saved.sandbox_pid;
        if saved.alive() && sp > 0 && ipc::proc_start(sp) == Some((saved.sandbox_pid_start, false))
        {
            out.push(Live {
                saved,
                sandbox_pid: sp,
            });
        }
    }
    out
}

/// The pid of a `/proc/PID/ns/net` path.
fn proc_pid(path: &Path) -> Option<i32> {
    let s = path.to_str()?;
    let rest = s.strip_prefix("/proc/")?.strip_suffix("/ns/net")?;
    rest.parse().ok().filter(|p| *p > 0)
}

/// Opens a live sandbox's network namespace, checking afterwards that its
/// PID 1 is still the one recorded (not a reused pid).
fn open_sandbox_ns(l: &Live) -> Result<OwnedFd, String> {
    let fd = open_ns(&PathBuf::from(format!("/proc/{}/ns/net", l.sandbox_pid)))?;
    if ipc::proc_start(l.sandbox_pid) != Some((l.saved.sandbox_pid_start, false)) {
        return Err(format!("container {} ended meanwhile", l.saved.id));
    }
    Ok(fd)
}

/// Decides about joining the network namespace at `path` for a container
/// of `root`.
pub fn resolve(path: &Path, root: &Path) -> Result<Decision, String> {
    let host = [
        id_of_path("/proc/1/ns/net"),
        id_of_path("/proc/self/ns/net"),
    ];
    let refuse_host = |id: Option<(u64, u64)>| -> Result<(), String> {
        if id.is_none() || host.contains(&id) {
            return Err(format!(
                "joining the network namespace at {} is refused: it is the host's (airlock joins only the network namespace of another airlock sandbox, such as a pod's pause container)",
                path.display()
            ));
        }
        Ok(())
    };
    let live = live_sandboxes(root);
    // CRI's form: the pause container's pid (our monitor's) — whose own
    // namespace is the host's; the sandbox's is meant.
    if let Some(pid) = proc_pid(path) {
        if let Some(l) = live
            .iter()
            .find(|l| l.saved.pid == pid || l.sandbox_pid == pid)
        {
            let fd = open_sandbox_ns(l)?;
            refuse_host(id_of(&fd))?;
            return Ok(Decision::Join(fd, l.saved.id.clone()));
        }
    }
    let fd = open_ns(path)?;
    let id = id_of(&fd);
    refuse_host(id)?;
    for l in &live {
        if id.is_some() && id_of_path(&format!("/proc/{}/ns/net", l.sandbox_pid)) == id {
            let fd = open_sandbox_ns(l)?;
            if id_of(&fd) == id {
                return Ok(Decision::Join(fd, l.saved.id.clone()));
            }
        }
    }
    Ok(Decision::Own(format!(
        "the network namespace at {} is not joined (it is no airlock sandbox's): the container gets a new one of its own (loopback only)",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_paths() {
        assert_eq!(proc_pid(Path::new("/proc/123/ns/net")), Some(123));
        assert_eq!(proc_pid(Path::new("/proc/self/ns/net")), None);
        assert_eq!(proc_pid(Path::new("/proc/0/ns/net")), None);
        assert_eq!(proc_pid(Path::new("/var/run/netns/x")), None);
    }

    #[test]
    fn the_hosts_namespace_is_refused() {
        let empty = std::env::temp_dir().join("airlock-netns-test-no-root");
        match resolve(Path::new("/proc/self/ns/net"), &empty) {
            Err(e) => assert!(e.contains("it is the host's"), "{e}"),
            Ok(_) => panic!("our own namespace was accepted"),
        }
        // PID 1's: refused as the host's, or not even opened (where PID 1
        // is out of our reach).
        assert!(resolve(Path::new("/proc/1/ns/net"), &empty).is_err());
        match resolve(Path::new("/proc/self/ns/uts"), &empty) {
            Err(e) => assert!(e.contains("not a network namespace"), "{e}"),
            Ok(_) => panic!("a uts namespace was accepted"),
        }
    }
}
