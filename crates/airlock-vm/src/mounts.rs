//! A microVM sandbox's `ro` and `overlay` mounts: one read-only erofs disk
//! built for the sandbox when it starts, a copy of every mounted source
//! taken at that moment. The guest mounts it read-only and attaches each
//! source's directory (or file) where the spec says, `overlay` ones under
//! a tmpfs upper layer, exactly as the container tier does with the
//! host's tree. Nothing the guest does reaches the disk's file, and the
//! file is unlinked on the host as soon as QEMU has opened it.
//!
//! Every machine has the disk's slot (so that one template serves
//! sandboxes with and without mounts): a template is made with a sparse
//! placeholder of [`CAPACITY`] bytes there, and the guest's idea of the
//! disk's size stays that of the placeholder; a restored guest reads the
//! real disk's blocks, which lie within it.
//!
//! The copy is what the container tier's sandbox user could see of the
//! source, no more: the walk never follows a symbolic link (each name is
//! opened below its parent's fd with `O_NOFOLLOW`, and what was opened is
//! checked by `fstat`), symbolic links are copied as links (inside they
//! point into the guest's own tree), owners are mapped as the container
//! tier's id-mapped mount maps them (the source's owner and their primary
//! group become the sandbox's user and group, everyone else `nobody`),
//! and a file or directory that the sandbox's user could not read there
//! is copied empty. FIFOs, sockets and device nodes are left out;
//! setuid/setgid bits are dropped (the guest mounts it `nosuid` anyway).

use crate::{io_err, Result, VmError};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The virtio serial number of the mounts disk.
pub const SERIAL_MOUNTS: &str = "airlock-mounts";
/// The size a guest believes the mounts disk has (the template's
/// placeholder's): the most all of a sandbox's mounts may take.
pub const CAPACITY: u64 = 64 << 30;
/// The name of a file source's copy inside its directory on the disk.
pub const FILE_NAME: &str = "file";

/// One source to copy: the `O_PATH` fd the host's walk ended on, and
/// whose files become the sandbox user's.
pub struct Source {
    pub fd: OwnedFd,
    pub is_dir: bool,
    /// The host owner (uid, primary gid) whose files the sandbox works in
    /// as its own; `None`: every file is nobody's.
    pub owner: Option<(u32, u32)>,
}

/// The ids the sandbox's processes run as inside the guest.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

const NOBODY: u32 = 65534;

/// The per-sandbox disk: removed (if still there) when dropped.
#[derive(Debug)]
pub struct MountsDisk {
    pub path: PathBuf,
    /// What was left out of the copy, for the user.
    pub notes: Vec<String>,
}

impl MountsDisk {
    /// Unlinks the disk's file (QEMU holds it open).
    pub fn unlink(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for MountsDisk {
    fn drop(&mut self) {
        // A file this module created under a fresh name.
        self.unlink();
    }
}

/// The template's placeholder: a sparse file of [`CAPACITY`] bytes.
pub fn placeholder(state: &Path) -> Result<PathBuf> {
    let dir = crate::vm_dir(state, "mounts")?;
    let path = dir.join("placeholder.img");
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == CAPACITY) {
        return Ok(path);
    }
    let _lock = crate::lock(&dir.join(".lock"))?;
    let tmp = crate::temp_beside(&path);
    let f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.set_len(CAPACITY).map_err(io_err("size", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
    Ok(path)
}

/// Copies `sources` (directory `N` for the N-th; a file source as
/// `N/`[`FILE_NAME`]) and makes the erofs disk of them.
pub fn build(state: &Path, sources: &[Source], ids: Ids) -> Result<MountsDisk> {
    let dir = crate::vm_dir(state, "mounts")?;
    sweep(&dir);
    let mut r = [0u8; 8];
    // SAFETY: getrandom fills the buffer it is given.
    unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
    let name = format!(
        "m{}-{}",
        std::process::id(),
        r.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let stage = dir.join(format!("{name}.d"));
    let mut disk = MountsDisk {
        path: dir.join(format!("{name}.erofs")),
        notes: Vec::new(),
    };
    std::fs::create_dir(&stage).map_err(io_err("create", &stage))?;
    let mut copy = Copy {
        ids,
        owner: None,
        skipped: 0,
        emptied: 0,
        bytes: 0,
        limit: limit_for(&dir),
    };
    let r = (|| {
        let mut notes = Vec::new();
        for (i, s) in sources.iter().enumerate() {
            let to = stage.join(i.to_string());
            copy.owner = s.owner;
            copy.skipped = 0;
            copy.emptied = 0;
            // Reopened for reading through the fd's magic link: the object
            // the host's walk checked, never a name looked up again.
            let proc = format!("/proc/self/fd/{}", s.fd.as_raw_fd());
            if s.is_dir {
                let d = open_flags(&proc, libc::O_RDONLY | libc::O_DIRECTORY)
                    .map_err(io_err("open", Path::new(&proc)))?;
                let st = airlock_sys::fstat(d.as_raw_fd()).map_err(io_err("stat", &to))?;
                copy.dir(&d, &st, &to, 0)?;
            } else {
                std::fs::create_dir(&to).map_err(io_err("create", &to))?;
                let f = open_flags(&proc, libc::O_RDONLY | libc::O_NONBLOCK)
                    .map_err(io_err("open", Path::new(&proc)))?;
                let st = airlock_sys::fstat(f.as_raw_fd()).map_err(io_err("stat", &to))?;
                if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                    return Err(VmError::State(format!(
                        "mount source #{i} is not a regular file any more"
                    )));
                }
                copy.file(f, &st, &to.join(FILE_NAME))?;
            }
            if copy.skipped > 0 {
                notes.push(format!(
                    "mount #{}: {} FIFO(s), socket(s) or device node(s) left out of the microVM's copy",
                    i + 1,
                    copy.skipped
                ));
            }
            if copy.emptied > 0 {
                notes.push(format!(
                    "mount #{}: {} file(s) or directory(ies) the sandbox's user may not read are empty in the microVM's copy",
                    i + 1,
                    copy.emptied
                ));
            }
        }
        crate::image::mkfs(&stage, &disk.path)?;
        Ok(notes)
    })();
    // Our own staging directory, made above (remove_dir_all does not
    // follow the symbolic links copied into it).
    let _ = std::fs::remove_dir_all(&stage);
    disk.notes = r?;
    Ok(disk)
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn open_flags(path: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a valid C string; the kernel returns a new fd or -1.
    let fd = airlock_sys::cvt(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the file open at `fd` carries a POSIX access ACL.
fn has_acl(fd: RawFd) -> bool {
    // SAFETY: a size query (no buffer) on an fd we hold.
    let r = unsafe {
        libc::fgetxattr(
            fd,
            c"system.posix_acl_access".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    r >= 0
}

fn openat(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: a valid C string and fd; the kernel returns a new fd or -1.
    let fd = airlock_sys::cvt(unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

struct Copy {
    ids: Ids,
    owner: Option<(u32, u32)>,
    skipped: usize,
    emptied: usize,
    bytes: u64,
    /// The most it may copy.
    limit: u64,
}

/// [`MAX_BYTES`], or less where the state directory's file system has
/// less room: the copy and its disk each take the data's size, and 1 GiB
/// stays free for everything else.
fn limit_for(dir: &Path) -> u64 {
    let Ok(c) = airlock_sys::cpath(dir) else {
        return MAX_BYTES;
    };
    // SAFETY: statvfs is plain data filled by the kernel.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return MAX_BYTES;
    }
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    MAX_BYTES.min(free.saturating_sub(1 << 30) / 2)
}

/// Deeper than this, the copy stops (a tree built to exhaust the stack).
const MAX_DEPTH: usize = 256;
/// The most a sandbox's mounts may hold (half the disk's [`CAPACITY`]:
/// room for erofs's metadata).
const MAX_BYTES: u64 = CAPACITY / 2;

/// Removes what an airlock process that died while building left here
/// (`m<pid>-...`, our own names, of pids that no longer exist).
fn sweep(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = n
            .strip_prefix('m')
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let p = e.path();
        if n.ends_with(".d") {
            let _ = std::fs::remove_dir_all(&p);
        } else if n.ends_with(".erofs") {
            let _ = std::fs::remove_file(&p);
        }
    }
}

impl Copy {
    /// The ids an entry gets inside: as the container tier's id map.
    fn ids_of(&self, st: &libc::stat) -> (u32, u32) {
        match self.owner {
            Some((u, g)) => (
                if st.st_uid == u { self.ids.uid } else { NOBODY },
                if st.st_gid == g { self.ids.gid } else { NOBODY },
            ),
            None => (NOBODY, NOBODY),
        }
    }

    /// Whether the sandbox's user may read it (`want`: 4 read, 5 read
    /// and search) by the bits that apply to it there.
    fn may(&self, fd: RawFd, st: &libc::stat, want: u32) -> bool {
        let (u, g) = self.ids_of(st);
        let m = st.st_mode;
        if u == self.ids.uid {
            // The owner may always chmod it: it is theirs.
            return true;
        }
        if has_acl(fd) {
            // A POSIX ACL may refuse (or grant) this user what the mode
            // bits say (red team): whoever is not the owner is refused,
            // whatever the bits — the copy never shows more than the
            // container tier would.
            return false;
        }
        let bits = if g == self.ids.gid {
            (m >> 3) & 7
        } else {
            m & 7
        };
        bits & want == want
    }

    fn finish(&self, path: &Path, st: &libc::stat, link: bool) -> Result<()> {
        let (u, g) = self.ids_of(st);
        let c = airlock_sys::cpath(path).map_err(io_err("name", path))?;
        // SAFETY: a valid C string.
        airlock_sys::cvt(unsafe { libc::lchown(c.as_ptr(), u, g) })
            .map_err(io_err("chown", path))?;
        if !link {
            // SAFETY: a valid C string.
            airlock_sys::cvt(unsafe { libc::chmod(c.as_ptr(), st.st_mode & 0o1777) })
                .map_err(io_err("chmod", path))?;
        }
        let times = [
            libc::timespec {
                tv_sec: st.st_atime,
                tv_nsec: st.st_atime_nsec,
            },
            libc::timespec {
                tv_sec: st.st_mtime,
                tv_nsec: st.st_mtime_nsec,
            },
        ];
        // SAFETY: a valid C string and two timespecs.
        unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        Ok(())
    }

    fn file(&mut self, f: OwnedFd, st: &libc::stat, to: &Path) -> Result<()> {
        let mut out = File::create(to).map_err(io_err("create", to))?;
        if self.may(f.as_raw_fd(), st, 4) {
            // Checked before a byte is copied (the copy is on the host's
            // disk): a file growing meanwhile is cut at its size now.
            let size = st.st_size.max(0) as u64;
            if self.bytes + size > self.limit {
                return Err(VmError::State(format!(
                    "a microVM's mounts are copied into its disk, and these hold more than {} MiB (at most {} GiB, and half the free space of the state directory less 1 GiB); mount less, or use the container tier",
                    self.limit >> 20,
                    MAX_BYTES >> 30
                )));
            }
            use std::io::Read;
            let mut src = File::from(f).take(size);
            self.bytes += std::io::copy(&mut src, &mut out).map_err(io_err("copy to", to))?;
        } else {
            self.emptied += 1;
        }
        drop(out);
        self.finish(to, st, false)
    }

    fn dir(&mut self, d: &OwnedFd, st: &libc::stat, to: &Path, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(VmError::State(format!(
                "a mounted directory is nested deeper than {MAX_DEPTH} levels"
            )));
        }
        std::fs::create_dir(to).map_err(io_err("create", to))?;
        if self.may(d.as_raw_fd(), st, 5) {
            let proc = format!("/proc/self/fd/{}", d.as_raw_fd());
            let mut names: Vec<OsString> = std::fs::read_dir(&proc)
                .map_err(io_err("list", to))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()
                .map_err(io_err("list", to))?;
            names.sort();
            for name in names {
                self.entry(d.as_raw_fd(), &name, &to.join(&name), depth)?;
            }
        } else {
            self.emptied += 1;
        }
        self.finish(to, st, false)
    }

    fn entry(&mut self, dir: RawFd, name: &OsStr, to: &Path, depth: usize) -> Result<()> {
        let c = cstr(name).map_err(io_err("name", to))?;
        // SAFETY: `st` is written by the kernel on success.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid fd, C string and stat buffer.
        let r = unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::NotFound {
                return Ok(()); // gone meanwhile
            }
            return Err(io_err("stat", to)(e));
        }
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let d = openat(dir, &c, libc::O_RDONLY | libc::O_DIRECTORY)
                    .map_err(io_err("open", to))?;
                // What was opened is what counts (it may have been swapped).
                let st = airlock_sys::fstat(d.as_raw_fd()).map_err(io_err("stat", to))?;
                self.dir(&d, &st, to, depth + 1)
            }
            libc::S_IFREG => {
                let f = openat(dir, &c, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY)
                    .map_err(io_err("open", to))?;
                let st = airlock_sys::fstat(f.as_raw_fd()).map_err(io_err("stat", to))?;
                if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                    self.skipped += 1;
                    return Ok(());
                }
                self.file(f, &st, to)
            }
            libc::S_IFLNK => {
                let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
                // SAFETY: a valid fd and C string; `buf` has room for its length.
                let n = unsafe {
                    libc::readlinkat(dir, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
                };
                if n < 0 {
                    return Err(io_err("readlink", to)(io::Error::last_os_error()));
                }
                buf.truncate(n as usize);
                std::os::unix::fs::symlink(OsStr::from_bytes(&buf), to)
                    .map_err(io_err("symlink", to))?;
                self.finish(to, &st, true)
            }
            _ => {
                self.skipped += 1;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(uid: u32, gid: u32, mode: u32) -> libc::stat {
        // SAFETY: plain data; zero is a valid stat.
        let mut s: libc::stat = unsafe { std::mem::zeroed() };
        s.st_uid = uid;
        s.st_gid = gid;
        s.st_mode = mode;
        s
    }

    fn copy(owner: Option<(u32, u32)>) -> Copy {
        Copy {
            ids: Ids {
                uid: 1000,
                gid: 1000,
            },
            owner,
            skipped: 0,
            emptied: 0,
            bytes: 0,
            limit: MAX_BYTES,
        }
    }

    #[test]
    fn owners_map_as_the_container_tiers_id_map() {
        let c = copy(Some((1001, 1001)));
        assert_eq!(c.ids_of(&st(1001, 1001, 0o644)), (1000, 1000));
        assert_eq!(c.ids_of(&st(0, 1001, 0o644)), (NOBODY, 1000));
        assert_eq!(c.ids_of(&st(1002, 0, 0o644)), (NOBODY, NOBODY));
        let c = copy(None);
        assert_eq!(c.ids_of(&st(1001, 1001, 0o644)), (NOBODY, NOBODY));
        // as_owner overlays of a root-owned tree map root.
        let c = copy(Some((0, 0)));
        assert_eq!(c.ids_of(&st(0, 0, 0o600)), (1000, 1000));
    }

    #[test]
    fn only_what_the_sandbox_user_could_read_is_copied() {
        let c = copy(Some((1001, 1001)));
        // Its own files, whatever their mode.
        assert!(c.may(-1, &st(1001, 1001, libc::S_IFREG), 4));
        // Root's: by the group bits when the group maps, else others'.
        assert!(!c.may(-1, &st(0, 1001, libc::S_IFREG | 0o600), 4));
        assert!(c.may(-1, &st(0, 1001, libc::S_IFREG | 0o640), 4));
        assert!(!c.may(-1, &st(0, 0, libc::S_IFREG | 0o640), 4));
        assert!(c.may(-1, &st(0, 0, libc::S_IFREG | 0o644), 4));
        // Directories need read and search.
        assert!(!c.may(-1, &st(0, 0, libc::S_IFDIR | 0o711), 5));
        assert!(c.may(-1, &st(0, 0, libc::S_IFDIR | 0o755), 5));
        // Not mapped at all: others' bits only.
        let c = copy(None);
        assert!(!c.may(-1, &st(1001, 1001, libc::S_IFREG | 0o640), 4));
        assert!(c.may(-1, &st(1001, 1001, libc::S_IFREG | 0o604), 4));
    }
}
