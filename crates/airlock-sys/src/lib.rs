//! Thin wrappers over the syscalls `libc` exposes only as numbers.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub fn cvt_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A path as a C string; a path with a NUL byte cannot name a file.
pub fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

pub fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

pub const OPEN_TREE_CLONE: libc::c_uint = 1;
pub const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
pub const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
pub const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
pub const FSCONFIG_SET_FLAG: libc::c_uint = 0;
pub const FSCONFIG_SET_STRING: libc::c_uint = 1;
pub const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
pub const FSOPEN_CLOEXEC: libc::c_uint = 1;
pub const FSMOUNT_CLOEXEC: libc::c_uint = 1;
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_IN_ROOT: u64 = 0x10;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `open_tree(OPEN_TREE_CLONE | AT_RECURSIVE?)`: a detached copy of the mount
/// tree at `path`, as an fd.
pub fn open_tree_clone(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let fd =
        cvt_long(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) })?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `open_tree(fd, "", AT_EMPTY_PATH | OPEN_TREE_CLONE [| AT_RECURSIVE])`:
/// a detached copy of the mount tree at the object an (`O_PATH`) fd names,
/// with no second path lookup.
pub fn open_tree_clone_fd(fd: RawFd, recursive: bool) -> io::Result<OwnedFd> {
    let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: an empty C string with AT_EMPTY_PATH names the fd itself.
    let fd = cvt_long(unsafe { libc::syscall(libc::SYS_open_tree, fd, c"".as_ptr(), flags) })?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `fstat` of an fd (an `O_PATH` fd of a symlink gives the link itself).
pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data, filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer; an empty path with AT_EMPTY_PATH
    // names the fd itself.
    cvt(unsafe {
        libc::fstatat(
            fd,
            c"".as_ptr(),
            &mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE])`.
pub fn mount_setattr(fd: RawFd, set: u64, clear: u64, recursive: bool) -> io::Result<()> {
    mount_setattr_userns(fd, set, clear, recursive, None)
}

/// `mount_setattr`, with the user namespace fd for `MOUNT_ATTR_IDMAP`.
pub fn mount_setattr_userns(
    fd: RawFd,
    set: u64,
    clear: u64,
    recursive: bool,
    userns: Option<RawFd>,
) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: userns.map_or(0, |f| f as u64),
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `attr` is a live, correctly laid out struct and its size is passed.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })?;
    Ok(())
}

/// Attaches the detached (or O_PATH-named) mount `from` onto the directory or
/// file that the fd `onto` names.
pub fn move_mount_fd(from: RawFd, onto: RawFd) -> io::Result<()> {
    // SAFETY: empty C strings with the *_EMPTY_PATH flags name the fds themselves.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from,
            c"".as_ptr(),
            onto,
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })?;
    Ok(())
}

/// Attaches the detached mount `from` at `path`.
pub fn move_mount_path(from: RawFd, path: &Path) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: valid C strings; `from` is an fd owned by the caller.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from,
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })?;
    Ok(())
}

/// A new, detached filesystem instance: `fsopen` + options (an empty
/// value sets a flag) + `fsmount`.
pub fn fs_mount(fstype: &CStr, options: &[(&CStr, &CStr)], attrs: u64) -> io::Result<OwnedFd> {
    // SAFETY: `fstype` is a valid C string.
    let fs = cvt_long(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as RawFd) };
    for (k, v) in options {
        // An empty value is a flag option ("userxattr").
        let (cmd, value) = if v.is_empty() {
            (FSCONFIG_SET_FLAG, std::ptr::null())
        } else {
            (FSCONFIG_SET_STRING, v.as_ptr())
        };
        // SAFETY: valid C strings for key and value (or a null value for a
        // flag).
        cvt_long(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                cmd,
                k.as_ptr(),
                value,
                0,
            )
        })?;
    }
    // SAFETY: no pointers are passed.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })?;
    // SAFETY: no pointers are passed.
    let m = cvt_long(unsafe {
        libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs)
    })?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(m as RawFd) })
}

pub const FSCONFIG_SET_FD: libc::c_uint = 5;

/// Why an overlay from fds could not be made.
#[derive(Debug)]
pub enum OverlayFdError {
    /// The kernel does not take layers as fds (before Linux 6.13): the
    /// caller may fall back to paths.
    Unsupported(io::Error),
    Other(io::Error),
}

/// An overlayfs instance whose lower layers are given as fds (detached
/// trees or `O_PATH` directories: `lowerdir+` with `FSCONFIG_SET_FD`), plus
/// string options (an empty value sets a flag), mounted detached.
pub fn overlay_from_fds(
    lowers: &[RawFd],
    options: &[(&CStr, &CStr)],
    attrs: u64,
) -> Result<OwnedFd, OverlayFdError> {
    use OverlayFdError::*;
    // SAFETY: a valid C string.
    let fs =
        cvt_long(unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) })
            .map_err(Other)?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as RawFd) };
    for fd in lowers {
        // SAFETY: a valid C string key, no value pointer, an fd argument.
        cvt_long(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_FD,
                c"lowerdir+".as_ptr(),
                std::ptr::null::<libc::c_char>(),
                *fd,
            )
        })
        .map_err(Unsupported)?;
    }
    for (k, v) in options {
        let (cmd, value) = if v.is_empty() {
            (FSCONFIG_SET_FLAG, std::ptr::null())
        } else {
            (FSCONFIG_SET_STRING, v.as_ptr())
        };
        // SAFETY: valid C strings for key and value (or a null value).
        cvt_long(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                cmd,
                k.as_ptr(),
                value,
                0,
            )
        })
        .map_err(Other)?;
    }
    // SAFETY: no pointers are passed.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })
    .map_err(Other)?;
    // SAFETY: no pointers are passed.
    let m = cvt_long(unsafe {
        libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs)
    })
    .map_err(Other)?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(m as RawFd) })
}

/// Whether overlayfs here takes layers as fds (Linux 6.13+): tries to
/// give a fresh overlay context `dir` as a lower layer.
pub fn overlay_takes_fds(dir: RawFd) -> bool {
    // SAFETY: a valid C string.
    let Ok(fs) =
        cvt_long(unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) })
    else {
        return false;
    };
    // SAFETY: the kernel returned a new fd that nothing else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as RawFd) };
    // SAFETY: a valid C string key, no value pointer, an fd argument.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_FD,
            c"lowerdir+".as_ptr(),
            std::ptr::null::<libc::c_char>(),
            dir,
        )
    };
    r == 0
}

/// `open_tree(dir, path, OPEN_TREE_CLONE)`: a detached copy of the mount at
/// `path` below the (detached or attached) mount `dir`, not recursive.
pub fn open_tree_clone_at(dir: RawFd, path: &Path) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    let flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
    // SAFETY: a valid fd and C string.
    let fd = cvt_long(unsafe { libc::syscall(libc::SYS_open_tree, dir, c.as_ptr(), flags) })?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `openat2(dir, path, O_PATH|O_CLOEXEC [| O_NOFOLLOW], RESOLVE_IN_ROOT |
/// RESOLVE_NO_MAGICLINKS)`: symlinks resolve as if `dir` were `/`, so a
/// hostile symlink inside the tree cannot point outside it.
pub fn open_in_root(dir: RawFd, path: &Path, nofollow: bool) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    let mut flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    if nofollow {
        flags |= libc::O_NOFOLLOW as u64;
    }
    let how = OpenHow {
        flags,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: valid C string and a correctly laid out `open_how` with its size.
    let fd = cvt_long(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_BENEATH: u64 = 0x08;

/// `openat2(dir, path, flags | O_CLOEXEC, mode, resolve)`.
pub fn openat2(
    dir: RawFd,
    path: &CStr,
    flags: libc::c_int,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
            u64::from(mode)
        } else {
            0
        },
        resolve,
    };
    // SAFETY: valid C string and a correctly laid out `open_how` with its size.
    let fd = cvt_long(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub fn pivot_root_here() -> io::Result<()> {
    // SAFETY: "." is a valid C string; pivot_root(".", ".") stacks the old
    // root under the new one, which the caller then detaches.
    cvt_long(unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) })?;
    Ok(())
}

/// Marks every fd from `first` up close-on-exec.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: no pointers; affects only this process's fd table.
    cvt_long(unsafe {
        libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC)
    })?;
    Ok(())
}

/// Closes every fd from `first` up.
pub fn close_from(first: u32) -> io::Result<()> {
    // SAFETY: no pointers; affects only this process's fd table.
    cvt_long(unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) })?;
    Ok(())
}

pub fn write_all_fd(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Writes a small file that must already exist (procfs, cgroupfs).
pub fn write_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(contents)
}

pub fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Overwrites this process's argv area with `title` (NUL-padded), so that
/// `/proc/<pid>/cmdline` no longer shows the host command line it was forked
/// with (`--env` values, host paths). The area's bounds come from
/// `/proc/self/stat` (`arg_start`, `arg_end`).
pub fn scrub_cmdline(title: &[u8]) -> io::Result<()> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which may contain spaces and ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); arg_start and arg_end are 48 and 49.
    let num = |i: usize| -> io::Result<usize> {
        f.get(i - 3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
    };
    let (start, end) = (num(48)?, num(49)?);
    if end <= start || end - start > (1 << 20) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let len = end - start;
    // SAFETY: the kernel reports [arg_start, arg_end) as this process's own
    // argument strings, which live in its writable stack mapping; nothing
    // holds references into them (std copied argv at startup).
    unsafe {
        let p = start as *mut u8;
        std::ptr::write_bytes(p, 0, len);
        std::ptr::copy_nonoverlapping(title.as_ptr(), p, title.len().min(len - 1));
    }
    Ok(())
}

/// Whether the other end of a socket has gone (closed or hung up).
pub fn peer_gone(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) != 0
}

/// Start-up timing marks: a fixed table filled without allocating (safe in
/// a forked child), read out by whoever wants to show them
/// (`AIRLOCK_TRACE_TIMING=1`). Times are `CLOCK_MONOTONIC` microseconds, so
/// marks of different processes line up.
pub mod timing {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    const SLOTS: usize = 32;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static TIMES: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
    static LABELS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
    static LABEL_LENS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];

    /// `CLOCK_MONOTONIC` in microseconds.
    pub fn now_us() -> u64 {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
        t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1000
    }

    /// Records `label` now (the first 32 marks are kept).
    pub fn mark(label: &'static str) {
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        if i < SLOTS {
            TIMES[i].store(now_us(), Ordering::Relaxed);
            LABELS[i].store(label.as_ptr() as usize, Ordering::Relaxed);
            LABEL_LENS[i].store(label.len(), Ordering::Release);
        }
    }

    /// The marks so far: (label, time).
    pub fn marks() -> Vec<(&'static str, u64)> {
        let n = NEXT.load(Ordering::Acquire).min(SLOTS);
        (0..n)
            .filter_map(|i| {
                let len = LABEL_LENS[i].load(Ordering::Acquire);
                let ptr = LABELS[i].load(Ordering::Relaxed) as *const u8;
                if ptr.is_null() {
                    return None;
                }
                // SAFETY: `ptr`/`len` were stored together from a
                // `&'static str` by `mark`.
                let s =
                    unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(ptr, len)) };
                Some((s, TIMES[i].load(Ordering::Relaxed)))
            })
            .collect()
    }
}

/// System calls that touch no memory of the process but their arguments:
/// no `errno` (thread-local, and a `CLONE_VM` child shares it with its
/// parent), no allocation. For code that runs beside its parent in the
/// same address space. Returns the kernel's value: `-errno` on failure.
pub mod raw {
    /// # Safety
    /// As the system call `nr` with these arguments.
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn syscall6(nr: libc::c_long, a: [usize; 6]) -> isize {
        let ret: isize;
        // SAFETY: the x86-64 system call convention; rcx and r11 are
        // clobbered by `syscall`; the caller vouches for the arguments.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") nr as isize => ret,
                in("rdi") a[0],
                in("rsi") a[1],
                in("rdx") a[2],
                in("r10") a[3],
                in("r8") a[4],
                in("r9") a[5],
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    /// # Safety
    /// As the system call `nr` with these arguments.
    #[cfg(target_arch = "aarch64")]
    pub unsafe fn syscall6(nr: libc::c_long, a: [usize; 6]) -> isize {
        let ret: isize;
        // SAFETY: the AArch64 system call convention; the caller vouches
        // for the arguments.
        unsafe {
            std::arch::asm!(
                "svc 0",
                in("x8") nr,
                inlateout("x0") a[0] as isize => ret,
                in("x1") a[1],
                in("x2") a[2],
                in("x3") a[3],
                in("x4") a[4],
                in("x5") a[5],
                options(nostack),
            );
        }
        ret
    }
}
