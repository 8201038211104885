//! Tar archives of a directory, made and unpacked without following a
//! symlink anywhere: every entry is opened relative to its directory's fd
//! with `O_NOFOLLOW`, and unpacking resolves each parent with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` from the target directory — an
//! archive cannot write outside it, through a symlink it planted, or over
//! a hard link to a file outside it.

use super::clean_relative;
use airlock_sys as sys;
use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn fstatat(dir: RawFd, name: &CString) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, C string and out-pointer.
    sys::cvt(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

fn openat(dir: RawFd, name: &CString, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: valid fd and C string; the kernel returns a new fd or -1.
    let fd = sys::cvt(unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode,
        )
    })?;
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Writes a tar archive of everything below `dir` to `out`.
pub(crate) fn write_tree(dir: &OwnedFd, out: std::fs::File) -> io::Result<()> {
    let mut b = tar::Builder::new(io::BufWriter::with_capacity(64 * 1024, out));
    b.follow_symlinks(false);
    add_dir(&mut b, dir, Path::new(""), 0)?;
    let mut w = b.into_inner()?;
    w.flush()
}

fn header(st: &libc::stat, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_size(0);
    h
}

/// `e` with the archive path it happened at (the errno kept).
fn named(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn add_dir<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &OwnedFd,
    rel: &Path,
    depth: u32,
) -> io::Result<()> {
    if depth > 256 {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
        .flatten()
        .map(|e| e.file_name().as_bytes().to_vec())
        .collect();
    names.sort();
    for n in names {
        let c = cstr(&n)?;
        let st = fstatat(dir.as_raw_fd(), &c)?;
        let path = rel.join(std::ffi::OsStr::from_bytes(&n));
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let mut h = header(&st, tar::EntryType::Directory);
                b.append_data(&mut h, &path, io::empty())?;
                let sub = openat(dir.as_raw_fd(), &c, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .map_err(|e| named(e, &path))?;
                add_dir(b, &sub, &path, depth + 1)?;
            }
            libc::S_IFREG => {
                let f = openat(dir.as_raw_fd(), &c, libc::O_RDONLY | libc::O_NOCTTY, 0)
                    .map_err(|e| named(e, &path))?;
                let f = std::fs::File::from(f);
                let size = st.st_size.max(0) as u64;
                let mut h = header(&st, tar::EntryType::Regular);
                h.set_size(size);
                // Exactly the header's size, whatever a process still
                // writing to the file does meanwhile: more would run into
                // the next header, less would shift it (zeros fill).
                let exact = io::Read::take(
                    io::Read::chain(io::Read::take(f, size), io::repeat(0)),
                    size,
                );
                b.append_data(&mut h, &path, exact)?;
            }
            libc::S_IFLNK => {
                let mut buf = vec![0u8; libc::PATH_MAX as usize];
                // SAFETY: `buf` is valid for its length.
                let len = unsafe {
                    libc::readlinkat(
                        dir.as_raw_fd(),
                        c.as_ptr(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                };
                if len < 0 {
                    return Err(io::Error::last_os_error());
                }
                buf.truncate(len as usize);
                let mut h = header(&st, tar::EntryType::Symlink);
                b.append_link(&mut h, &path, std::ffi::OsStr::from_bytes(&buf))?;
            }
            // Sockets, FIFOs and devices are not archived.
            _ => {}
        }
    }
    Ok(())
}

/// The directory `rel` (relative, checked) below `dir`, created as needed,
/// reached without following any symlink.
fn dir_beneath(dir: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    let mut cur = dir.try_clone()?;
    for c in rel.components() {
        let name = cstr(c.as_os_str().as_bytes())?;
        // SAFETY: valid fd and C string.
        let r = unsafe { libc::mkdirat(cur.as_raw_fd(), name.as_ptr(), 0o755) };
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
            return Err(io::Error::last_os_error());
        }
        cur = openat(cur.as_raw_fd(), &name, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    }
    Ok(cur)
}

/// Removes a non-directory at `name` in `dir` (an entry replaces it).
fn clear(dir: RawFd, name: &CString) {
    if let Ok(st) = fstatat(dir, name) {
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            // SAFETY: valid fd and C string.
            unsafe { libc::unlinkat(dir, name.as_ptr(), 0) };
        }
    }
}

/// Unpacks the tar archive read from `input` into `dir`.
pub(crate) fn unpack(dir: &OwnedFd, input: std::fs::File) -> io::Result<()> {
    let mut ar = tar::Archive::new(io::BufReader::with_capacity(64 * 1024, input));
    for entry in ar.entries()? {
        let mut e = entry?;
        let path = clean_relative(&e.path()?)?;
        let (parent, name) = match (path.parent(), path.file_name()) {
            (Some(p), Some(n)) => (p.to_path_buf(), n.to_os_string()),
            _ => continue,
        };
        let pdir = dir_beneath(dir, &parent)?;
        let name = cstr(name.as_bytes())?;
        let mode = e.header().mode().unwrap_or(0o644) & 0o777;
        match e.header().entry_type() {
            tar::EntryType::Directory => {
                // SAFETY: valid fd and C string.
                let r = unsafe { libc::mkdirat(pdir.as_raw_fd(), name.as_ptr(), mode | 0o700) };
                if r < 0 {
                    let err = io::Error::last_os_error();
                    let is_dir = fstatat(pdir.as_raw_fd(), &name)
                        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
                    if !is_dir {
                        return Err(err);
                    }
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                clear(pdir.as_raw_fd(), &name);
                let f = openat(
                    pdir.as_raw_fd(),
                    &name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    mode,
                )?;
                let mut f = std::fs::File::from(f);
                io::copy(&mut e, &mut f)?;
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name()?
                    .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
                let t = cstr(target.as_os_str().as_bytes())?;
                clear(pdir.as_raw_fd(), &name);
                // SAFETY: valid C strings and fd.
                sys::cvt(unsafe { libc::symlinkat(t.as_ptr(), pdir.as_raw_fd(), name.as_ptr()) })?;
            }
            tar::EntryType::Link => {
                let target = e
                    .link_name()?
                    .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
                let target = clean_relative(&target)?;
                let tname = target
                    .file_name()
                    .map(|n| n.to_os_string())
                    .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
                let tparent = target.parent().unwrap_or(Path::new(""));
                let rel = cstr(if tparent.as_os_str().is_empty() {
                    b"."
                } else {
                    tparent.as_os_str().as_bytes()
                })?;
                let tdir = sys::openat2(
                    dir.as_raw_fd(),
                    &rel,
                    libc::O_PATH | libc::O_DIRECTORY,
                    0,
                    sys::RESOLVE_BENEATH | sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS,
                )?;
                let tn = cstr(tname.as_bytes())?;
                let st = fstatat(tdir.as_raw_fd(), &tn)?;
                if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("hard link {path:?} to something that is not a regular file"),
                    ));
                }
                clear(pdir.as_raw_fd(), &name);
                // SAFETY: valid fds and C strings; linkat does not follow.
                sys::cvt(unsafe {
                    libc::linkat(
                        tdir.as_raw_fd(),
                        tn.as_ptr(),
                        pdir.as_raw_fd(),
                        name.as_ptr(),
                        0,
                    )
                })?;
            }
            // Devices, FIFOs and anything else are skipped.
            _ => {}
        }
    }
    Ok(())
}
