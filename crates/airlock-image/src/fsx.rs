//! File-descriptor based tree operations: every walk opens each component
//! with `O_NOFOLLOW`, so nothing here follows a symlink out of a tree.

use crate::error::{ImageError, Result};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Deepest path (in components) a tree may have: keeps every walk's open
/// descriptors bounded.
pub const MAX_DEPTH: usize = 128;

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub(crate) fn open_dir(path: &Path) -> Result<OwnedFd> {
    rfs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| ImageError::io("open directory", path, e.into()))
}

/// Opens directory `rel` (relative, no `..`) beneath `root` without
/// following any symlink on the way (`openat2` with `RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS`). An empty `rel` opens `root` itself.
pub(crate) fn open_dir_beneath(root: BorrowedFd<'_>, rel: &[u8]) -> io::Result<OwnedFd> {
    let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
    rfs::openat2(
        root,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(io::Error::from)
}

pub(crate) fn open_subdir(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// The entries of a directory (without `.` and `..`), read at once so the
/// directory stream is closed before any recursion.
pub(crate) fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut d = rfs::Dir::read_from(dir)?;
    while let Some(e) = d.read() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(n.to_vec());
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<rfs::Stat> {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from)
}

pub(crate) fn exists_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<rfs::Stat>> {
    match lstat_at(dir, name) {
        Ok(st) => Ok(Some(st)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `name` in `dir`, recursively if it is a directory (never
/// following a symlink). Directories we cannot write (rootless, mode 0555)
/// are made writable first.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let st = match exists_at(dir, name)? {
        Some(st) => st,
        None => return Ok(()),
    };
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        if st.st_mode & 0o700 != 0o700 {
            // Our own store: nothing else swaps this entry under us.
            rfs::chmodat(dir, name, Mode::from_raw_mode(0o700), AtFlags::empty())?;
        }
        let sub = open_subdir(dir, name)?;
        for child in list(sub.as_fd())? {
            remove_at(sub.as_fd(), &child)?;
        }
        drop(sub);
        rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    } else {
        rfs::unlinkat(dir, name, AtFlags::empty())?;
    }
    Ok(())
}

/// Removes the tree at `path` (if present).
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or(OsStr::new(""));
    if name.is_empty() {
        return Ok(());
    }
    let pfd = match open_dir(parent) {
        Ok(fd) => fd,
        Err(ImageError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    remove_at(pfd.as_fd(), name.as_bytes()).map_err(|e| ImageError::io("remove", path, e))
}

fn copy_meta(fd: BorrowedFd<'_>, st: &rfs::Stat, root: bool) -> io::Result<()> {
    if root {
        rfs::fchown(
            fd,
            Some(rfs::Uid::from_raw(st.st_uid)),
            Some(rfs::Gid::from_raw(st.st_gid)),
        )?;
    }
    rfs::fchmod(fd, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    let ts = rfs::Timestamps {
        last_access: rfs::Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: rfs::Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    };
    rfs::futimens(fd, &ts)?;
    Ok(())
}

/// Makes `dst` (which must not exist) a copy of the tree `src`: directories
/// are real copies (with owner, mode and times), everything else is a hard
/// link to the same inode. Whoever changes the copy must replace a file by
/// a new inode, never write to it in place.
pub(crate) fn copy_tree_linked(src: &Path, dst: &Path) -> Result<()> {
    let root = is_root();
    let sfd = open_dir(src)?;
    rfs::mkdir(dst, Mode::from_raw_mode(0o700))
        .map_err(|e| ImageError::io("mkdir", dst, e.into()))?;
    let dfd = open_dir(dst)?;
    copy_dir(sfd.as_fd(), dfd.as_fd(), root, 0).map_err(|e| ImageError::io("copy tree", src, e))?;
    let st = rfs::fstat(&sfd).map_err(|e| ImageError::io("stat", src, e.into()))?;
    copy_meta(dfd.as_fd(), &st, root).map_err(|e| ImageError::io("copy metadata", dst, e))
}

fn copy_dir(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, root: bool, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other("tree deeper than the depth limit"));
    }
    for name in list(src)? {
        let st = lstat_at(src, &name)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            rfs::mkdirat(dst, name.as_slice(), Mode::from_raw_mode(0o700))?;
            let s = open_subdir(src, &name)?;
            let d = open_subdir(dst, &name)?;
            copy_dir(s.as_fd(), d.as_fd(), root, depth + 1)?;
            copy_meta(d.as_fd(), &st, root)?;
        } else {
            rfs::linkat(src, name.as_slice(), dst, name.as_slice(), AtFlags::empty())?;
        }
    }
    Ok(())
}

/// Bytes of regular files in a tree (each inode once) and the entry count.
pub(crate) fn tree_size(path: &Path) -> Result<u64> {
    let fd = open_dir(path)?;
    let mut seen = HashSet::new();
    size_dir(fd.as_fd(), &mut seen, 0).map_err(|e| ImageError::io("measure", path, e))
}

fn size_dir(dir: BorrowedFd<'_>, seen: &mut HashSet<(u64, u64)>, depth: usize) -> io::Result<u64> {
    if depth > MAX_DEPTH {
        return Ok(0);
    }
    let mut total = 0;
    for name in list(dir)? {
        let st = lstat_at(dir, &name)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let sub = open_subdir(dir, &name)?;
                total += size_dir(sub.as_fd(), seen, depth + 1)?;
            }
            FileType::RegularFile if st.st_nlink <= 1 || seen.insert((st.st_dev, st.st_ino)) => {
                total += st.st_size as u64;
            }
            _ => {}
        }
    }
    Ok(total)
}

/// A unique name for a temporary entry: pid, time and a counter.
pub(crate) fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `path` joined with a relative byte path.
pub(crate) fn join(base: &Path, rel: &[u8]) -> PathBuf {
    base.join(OsStr::from_bytes(rel))
}
