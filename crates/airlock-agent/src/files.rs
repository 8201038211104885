//! File operations inside the sandbox, by path.
//!
//! Every path is resolved with `openat2`: in a container relative to the
//! sandbox's root with `RESOLVE_IN_ROOT` (`..` and absolute symlinks stop at
//! the sandbox's `/`) and `RESOLVE_NO_MAGICLINKS` (no `/proc/PID/root` or
//! `/proc/self/fd` trick leads out), so no operation reaches anything the
//! sandbox cannot. Operations act as the sandbox's user (its filesystem
//! ids), not as the agent's root: they can do what the user could. Large
//! reads and writes stream under the protocol's credit; tar archives are
//! made and unpacked by a helper process (a fork of the agent, as the user)
//! so that the agent's loop never blocks on a big tree.

use crate::plan::{AgentPlan, Role};
use crate::serve::{Out, Token};
use airlock_protocol::v2::{
    AgentSession, DirEntry, FileKind, FsError, Message, Stat, StreamKind, WriteFlags, MAX_BODY,
    MAX_DATA,
};
use airlock_sys as sys;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

mod tarball;

/// One file request in progress.
pub(crate) enum FileOp {
    Read {
        fd: OwnedFd,
        pos: u64,
        left: u64,
        sent: u64,
    },
    Write {
        fd: OwnedFd,
        written: u64,
    },
    List {
        dir: std::fs::ReadDir,
        dirfd: OwnedFd,
        pending: Vec<DirEntry>,
        count: u64,
    },
    TarOut {
        pipe: Option<OwnedFd>,
        err: OwnedFd,
        pid: i32,
        sent: u64,
        status: Option<i32>,
    },
    TarIn {
        pipe: Option<OwnedFd>,
        err: OwnedFd,
        pid: i32,
        buf: Vec<u8>,
        received: u64,
        ended: bool,
        status: Option<i32>,
    },
}

pub(crate) struct Files {
    ops: BTreeMap<u32, FileOp>,
    /// The directory paths are resolved in (`/` of the sandbox).
    root: Option<OwnedFd>,
    in_root: bool,
    /// The filesystem ids operations use (root-run container).
    fs_ids: Option<(u32, u32)>,
    /// The ids a tar helper takes (root-run container).
    helper_ids: Option<(u32, u32)>,
    buf: Vec<u8>,
}

fn fs_err(e: &io::Error, what: &str) -> FsError {
    FsError {
        errno: sys::errno_of(e).clamp(1, 4095),
        text: format!("{what}: {e}"),
    }
}

fn errno_err(errno: i32, what: &str) -> FsError {
    fs_err(&io::Error::from_raw_os_error(errno), what)
}

fn stat_of(st: &libc::stat) -> Stat {
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => FileKind::File,
        libc::S_IFDIR => FileKind::Dir,
        libc::S_IFLNK => FileKind::Symlink,
        _ => FileKind::Other,
    };
    Stat {
        kind,
        mode: st.st_mode & 0o7777,
        size: st.st_size.max(0) as u64,
        mtime_sec: st.st_mtime,
        mtime_nsec: (st.st_mtime_nsec.clamp(0, 999_999_999)) as u32,
        uid: st.st_uid,
        gid: st.st_gid,
    }
}

fn fstatat(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, C string and out-pointer.
    sys::cvt(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, flags) })?;
    Ok(st)
}

/// `a/b/c` → (`a/b`, `c`); the name must be a real name.
fn split(path: &[u8]) -> io::Result<(&[u8], &[u8])> {
    let trimmed = {
        let mut p = path;
        while p.len() > 1 && p.ends_with(b"/") {
            p = &p[..p.len() - 1];
        }
        p
    };
    let (parent, name) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(0) => (&b"/"[..], &trimmed[1..]),
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (&b"."[..], trimmed),
    };
    if name.is_empty() || name == b"." || name == b".." {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok((parent, name))
}

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

impl Files {
    pub fn new(plan: &AgentPlan) -> Files {
        let (in_root, ids) = match &plan.role {
            Role::Container(c) => (true, (!c.rootless).then_some(plan.file_user)),
            Role::Local => (false, None),
            Role::Guest(_) => (true, Some(plan.file_user)),
            // Run by root, file operations act as the sandbox's ids (which
            // drops the agent's power over files); the agent's own Landlock
            // domain bounds them in every case.
            Role::Landlock => {
                // SAFETY: geteuid cannot fail.
                let root = unsafe { libc::geteuid() } == 0;
                (
                    false,
                    (root && plan.file_user.0 != 0).then_some(plan.file_user),
                )
            }
        };
        let root = if in_root {
            sys::openat2(libc::AT_FDCWD, c"/", libc::O_PATH | libc::O_DIRECTORY, 0, 0).ok()
        } else {
            None
        };
        Files {
            ops: BTreeMap::new(),
            root,
            in_root,
            fs_ids: ids,
            helper_ids: ids,
            buf: vec![0u8; MAX_DATA],
        }
    }

    /// Runs `f` with the sandbox user's filesystem ids (and so without the
    /// agent's power over files).
    fn as_user<T>(&self, f: impl FnOnce() -> T) -> T {
        if let Some((u, g)) = self.fs_ids {
            // SAFETY: setfsgid/setfsuid take plain ids and affect this
            // (single) thread only.
            unsafe {
                libc::setfsgid(g);
                libc::setfsuid(u);
            }
            let r = f();
            // SAFETY: as above, back to root of the namespace.
            unsafe {
                libc::setfsuid(0);
                libc::setfsgid(0);
            }
            r
        } else {
            f()
        }
    }

    /// Opens `path` as the sandbox sees it.
    fn open(&self, path: &[u8], flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
        let c = cstr(path)?;
        let (dir, resolve) = match (&self.root, self.in_root) {
            (Some(r), true) => (
                r.as_raw_fd(),
                sys::RESOLVE_IN_ROOT | sys::RESOLVE_NO_MAGICLINKS,
            ),
            _ => (libc::AT_FDCWD, sys::RESOLVE_NO_MAGICLINKS),
        };
        sys::openat2(dir, &c, flags, mode, resolve)
    }

    /// The directory holding `path`, and its name there.
    fn parent(&self, path: &[u8]) -> io::Result<(OwnedFd, CString)> {
        let (parent, name) = split(path)?;
        let dir = self.open(parent, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        Ok((dir, cstr(name)?))
    }

    pub fn poll_set(
        &self,
        sess: &AgentSession,
        room: bool,
        add: &mut impl FnMut(RawFd, libc::c_short, Token),
    ) {
        for (&id, op) in &self.ops {
            match op {
                FileOp::TarOut { pipe: Some(p), .. } => {
                    let c = sess.send_credit(id, StreamKind::File).unwrap_or(0);
                    if room && c > 0 {
                        add(p.as_raw_fd(), libc::POLLIN, Token::File(id));
                    }
                }
                FileOp::TarIn {
                    pipe: Some(p), buf, ..
                } if !buf.is_empty() => {
                    add(p.as_raw_fd(), libc::POLLOUT, Token::File(id));
                }
                _ => {}
            }
        }
    }

    /// Whether a read or a listing can send now (no fd to poll for it).
    pub fn has_ready_work(&self, sess: &AgentSession) -> bool {
        self.ops.iter().any(|(&id, op)| {
            matches!(op, FileOp::Read { .. } | FileOp::List { .. })
                && sess.send_credit(id, StreamKind::File).unwrap_or(0) > 0
        })
    }

    /// One chunk for every read and listing that has credit.
    pub fn do_ready_work(&mut self, out: &mut Out<'_>) {
        let ids: Vec<u32> = self.ops.keys().copied().collect();
        for id in ids {
            if !out.room() {
                return;
            }
            let credit = out.credit(id, StreamKind::File);
            if credit == 0 {
                continue;
            }
            let done = match self.ops.get_mut(&id) {
                Some(FileOp::Read {
                    fd,
                    pos,
                    left,
                    sent,
                }) => {
                    let want = (credit as u64).min(*left).min(self.buf.len() as u64) as usize;
                    // SAFETY: reads at most `want` bytes into our buffer.
                    let n = unsafe {
                        libc::pread(
                            fd.as_raw_fd(),
                            self.buf.as_mut_ptr().cast(),
                            want,
                            *pos as libc::off_t,
                        )
                    };
                    if n < 0 {
                        let e = io::Error::last_os_error();
                        if e.kind() == io::ErrorKind::Interrupted {
                            None
                        } else {
                            Some(Err(fs_err(&e, "read")))
                        }
                    } else if n == 0 || want == 0 {
                        Some(Ok(*sent))
                    } else {
                        let n = n as usize;
                        out.send(Message::FileData {
                            id,
                            data: self.buf[..n].to_vec(),
                        });
                        *pos += n as u64;
                        *left -= n as u64;
                        *sent += n as u64;
                        (*left == 0).then_some(Ok(*sent))
                    }
                }
                Some(FileOp::List {
                    dir,
                    dirfd,
                    pending,
                    count,
                }) => {
                    // Fill a batch that fits one frame and the credit.
                    let limit = credit.min(MAX_BODY);
                    let mut size = 4;
                    let mut end = false;
                    let mut batch = Vec::new();
                    loop {
                        let next = match pending.pop() {
                            Some(e) => Some(e),
                            None => match dir.next() {
                                Some(Ok(e)) => {
                                    let name = e.file_name();
                                    let name = name.as_bytes();
                                    let Ok(c) = cstr(name) else { continue };
                                    match fstatat(dirfd.as_raw_fd(), &c, libc::AT_SYMLINK_NOFOLLOW)
                                    {
                                        Ok(st) => Some(DirEntry {
                                            name: name.to_vec(),
                                            stat: stat_of(&st),
                                        }),
                                        Err(_) => continue,
                                    }
                                }
                                Some(Err(_)) => continue,
                                None => {
                                    end = true;
                                    None
                                }
                            },
                        };
                        let Some(e) = next else { break };
                        let cost = 4 + e.name.len() + airlock_protocol::v2::STAT_LEN;
                        if size + cost > limit {
                            pending.push(e);
                            break;
                        }
                        size += cost;
                        batch.push(e);
                    }
                    if !batch.is_empty() {
                        *count += batch.len() as u64;
                        out.send(Message::FileEntries { id, entries: batch });
                    }
                    (end && pending.is_empty()).then_some(Ok(*count))
                }
                _ => None,
            };
            if let Some(result) = done {
                self.ops.remove(&id);
                out.send(Message::FileDone { id, result });
            }
        }
    }

    /// A request from the host. Returns a helper process it started
    /// (pid, request id), for the agent's reaper.
    pub fn handle(&mut self, m: Message, out: &mut Out<'_>) -> Option<(i32, u32)> {
        let done = |out: &mut Out<'_>, id, result| out.send(Message::FileDone { id, result });
        match m {
            Message::FileRead {
                id,
                path,
                offset,
                len,
            } => {
                let r = self.as_user(|| {
                    let fd = self
                        .open(&path, libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK, 0)
                        .map_err(|e| fs_err(&e, "open"))?;
                    let st = sys::fstat(fd.as_raw_fd()).map_err(|e| fs_err(&e, "stat"))?;
                    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                        return Err(errno_err(libc::EINVAL, "not a regular file"));
                    }
                    Ok(fd)
                });
                match r {
                    Ok(fd) => {
                        self.ops.insert(
                            id,
                            FileOp::Read {
                                fd,
                                pos: offset,
                                left: len,
                                sent: 0,
                            },
                        );
                    }
                    Err(e) => done(out, id, Err(e)),
                }
            }
            Message::FileWrite {
                id,
                path,
                mode,
                flags,
            } => {
                let r = self.as_user(|| {
                    let WriteFlags {
                        create,
                        truncate,
                        append,
                        exclusive,
                    } = flags;
                    let mut fl = libc::O_WRONLY | libc::O_NOCTTY | libc::O_NONBLOCK;
                    if create {
                        fl |= libc::O_CREAT;
                    }
                    if truncate {
                        fl |= libc::O_TRUNC;
                    }
                    if append {
                        fl |= libc::O_APPEND;
                    }
                    if exclusive {
                        fl |= libc::O_EXCL;
                    }
                    let fd = self
                        .open(&path, fl, mode & 0o777)
                        .map_err(|e| fs_err(&e, "open"))?;
                    let st = sys::fstat(fd.as_raw_fd()).map_err(|e| fs_err(&e, "stat"))?;
                    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                        return Err(errno_err(libc::EINVAL, "not a regular file"));
                    }
                    // Writes to a regular file do not block; back to plain
                    // blocking writes.
                    let _ = airlock_protocol::v2::set_nonblocking(fd.as_raw_fd(), false);
                    Ok(fd)
                });
                match r {
                    Ok(fd) => {
                        self.ops.insert(id, FileOp::Write { fd, written: 0 });
                    }
                    Err(e) => done(out, id, Err(e)),
                }
            }
            Message::FileData { id, data } => {
                let n = data.len();
                match self.ops.get_mut(&id) {
                    Some(FileOp::Write { fd, written }) => {
                        let mut f = std::mem::ManuallyDrop::new(
                            // SAFETY: borrowed for this write; ManuallyDrop
                            // keeps the File from closing our fd.
                            unsafe { std::fs::File::from_raw_fd(fd.as_raw_fd()) },
                        );
                        match f.write_all(&data) {
                            Ok(()) => {
                                *written += n as u64;
                                out.consumed(id, StreamKind::File, n);
                            }
                            Err(e) => {
                                self.ops.remove(&id);
                                done(out, id, Err(fs_err(&e, "write")));
                            }
                        }
                    }
                    Some(FileOp::TarIn { buf, .. }) => {
                        buf.extend_from_slice(&data);
                        self.flush_tar_in(id, out);
                    }
                    _ => {}
                }
            }
            Message::FileEnd { id } => match self.ops.get_mut(&id) {
                Some(FileOp::Write { written, .. }) => {
                    let w = *written;
                    self.ops.remove(&id);
                    done(out, id, Ok(w));
                }
                Some(FileOp::TarIn { ended, .. }) => {
                    *ended = true;
                    self.flush_tar_in(id, out);
                }
                _ => {}
            },
            Message::FileCancel { id } => {
                if let Some(op) = self.ops.remove(&id) {
                    match op {
                        FileOp::TarOut { pid, .. } | FileOp::TarIn { pid, .. } => {
                            // SAFETY: our helper, not yet reaped.
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                        }
                        _ => {}
                    }
                    done(out, id, Err(errno_err(libc::ECANCELED, "cancelled")));
                }
            }
            Message::FileStat { id, path, follow } => {
                let r = self.as_user(|| {
                    let mut fl = libc::O_PATH;
                    if !follow {
                        fl |= libc::O_NOFOLLOW;
                    }
                    let fd = self.open(&path, fl, 0).map_err(|e| fs_err(&e, "stat"))?;
                    sys::fstat(fd.as_raw_fd()).map_err(|e| fs_err(&e, "stat"))
                });
                match r {
                    Ok(st) => out.send(Message::FileStatResult {
                        id,
                        stat: stat_of(&st),
                    }),
                    Err(e) => done(out, id, Err(e)),
                }
            }
            Message::FileList { id, path } => {
                let r = self.as_user(|| {
                    let dirfd = self
                        .open(&path, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                        .map_err(|e| fs_err(&e, "open directory"))?;
                    let dir = std::fs::read_dir(format!("/proc/self/fd/{}", dirfd.as_raw_fd()))
                        .map_err(|e| fs_err(&e, "read directory"))?;
                    Ok((dir, dirfd))
                });
                match r {
                    Ok((dir, dirfd)) => {
                        self.ops.insert(
                            id,
                            FileOp::List {
                                dir,
                                dirfd,
                                pending: Vec::new(),
                                count: 0,
                            },
                        );
                    }
                    Err(e) => done(out, id, Err(e)),
                }
            }
            Message::FileMkdir {
                id,
                path,
                mode,
                parents,
            } => {
                let r = self.as_user(|| self.mkdir(&path, mode & 0o7777, parents));
                done(out, id, r.map(|()| 0));
            }
            Message::FileRemove {
                id,
                path,
                recursive,
            } => {
                let r = self.as_user(|| self.remove(&path, recursive));
                done(out, id, r);
            }
            Message::FileRename { id, from, to } => {
                let r = self.as_user(|| {
                    let (fd, fname) = self.parent(&from).map_err(|e| fs_err(&e, "rename"))?;
                    let (td, tname) = self.parent(&to).map_err(|e| fs_err(&e, "rename"))?;
                    // SAFETY: valid fds and C strings.
                    sys::cvt(unsafe {
                        libc::renameat(
                            fd.as_raw_fd(),
                            fname.as_ptr(),
                            td.as_raw_fd(),
                            tname.as_ptr(),
                        )
                    })
                    .map_err(|e| fs_err(&e, "rename"))?;
                    Ok(0)
                });
                done(out, id, r);
            }
            Message::FileChmod { id, path, mode } => {
                let r = self.as_user(|| {
                    let fd = self
                        .open(&path, libc::O_PATH, 0)
                        .map_err(|e| fs_err(&e, "chmod"))?;
                    let p = cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())
                        .map_err(|e| fs_err(&e, "chmod"))?;
                    // SAFETY: a valid C string naming our own fd.
                    sys::cvt(unsafe { libc::chmod(p.as_ptr(), mode & 0o7777) })
                        .map_err(|e| fs_err(&e, "chmod"))?;
                    Ok(0)
                });
                done(out, id, r);
            }
            Message::TarOut { id, path } => match self.start_tar(&path, true) {
                Ok((pipe, err, pid)) => {
                    self.ops.insert(
                        id,
                        FileOp::TarOut {
                            pipe: Some(pipe),
                            err,
                            pid,
                            sent: 0,
                            status: None,
                        },
                    );
                    return Some((pid, id));
                }
                Err(e) => done(out, id, Err(e)),
            },
            // Unpacking creates the directory (and its parents) first, as
            // `docker cp` does.
            Message::TarIn { id, path } => match self
                .as_user(|| self.mkdir(&path, 0o755, true))
                .and_then(|()| self.start_tar(&path, false))
            {
                Ok((pipe, err, pid)) => {
                    self.ops.insert(
                        id,
                        FileOp::TarIn {
                            pipe: Some(pipe),
                            err,
                            pid,
                            buf: Vec::new(),
                            received: 0,
                            ended: false,
                            status: None,
                        },
                    );
                    return Some((pid, id));
                }
                Err(e) => done(out, id, Err(e)),
            },
            _ => {}
        }
        None
    }

    fn mkdir(&self, path: &[u8], mode: u32, parents: bool) -> Result<(), FsError> {
        let one = |p: &[u8], last: bool| -> Result<(), FsError> {
            let (dir, name) = self.parent(p).map_err(|e| fs_err(&e, "mkdir"))?;
            // SAFETY: valid fd and C string.
            let r = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) };
            if r == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EEXIST) && (parents || !last) {
                let st = fstatat(dir.as_raw_fd(), &name, 0).map_err(|e| fs_err(&e, "mkdir"))?;
                if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    return Ok(());
                }
                return Err(errno_err(libc::ENOTDIR, "mkdir"));
            }
            Err(fs_err(&e, "mkdir"))
        };
        if !parents {
            return one(path, true);
        }
        let idx: Vec<usize> = path
            .iter()
            .enumerate()
            .filter(|(i, &b)| b == b'/' && *i > 0)
            .map(|(i, _)| i)
            .chain(std::iter::once(path.len()))
            .collect();
        let n = idx.len();
        for (k, end) in idx.into_iter().enumerate() {
            let p = &path[..end];
            if p.ends_with(b"/") || p.is_empty() {
                continue;
            }
            match split(p) {
                Ok((_, name)) if name == b"." || name == b".." => continue,
                Ok(_) => one(p, k + 1 == n)?,
                Err(_) => continue,
            }
        }
        Ok(())
    }

    fn remove(&self, path: &[u8], recursive: bool) -> Result<u64, FsError> {
        let (dir, name) = self.parent(path).map_err(|e| fs_err(&e, "remove"))?;
        let st = fstatat(dir.as_raw_fd(), &name, libc::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| fs_err(&e, "remove"))?;
        let mut count = 0;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            if recursive {
                // SAFETY: valid fd and C string; O_NOFOLLOW keeps a swapped
                // symlink from being entered.
                let sub = sys::cvt(unsafe {
                    libc::openat(
                        dir.as_raw_fd(),
                        name.as_ptr(),
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    )
                })
                .map_err(|e| fs_err(&e, "remove"))?;
                // SAFETY: a new fd that nothing else owns.
                let sub = unsafe { OwnedFd::from_raw_fd(sub) };
                count += remove_tree(&sub, 0).map_err(|e| fs_err(&e, "remove"))?;
            }
            // SAFETY: valid fd and C string.
            sys::cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) })
                .map_err(|e| fs_err(&e, "remove"))?;
        } else {
            // SAFETY: valid fd and C string.
            sys::cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) })
                .map_err(|e| fs_err(&e, "remove"))?;
        }
        Ok(count + 1)
    }

    /// Starts a tar helper for the directory `path`: `out` makes an archive
    /// of it, else unpacks one into it. Returns our end of its data pipe,
    /// its error pipe and its pid.
    fn start_tar(&self, path: &[u8], out: bool) -> Result<(OwnedFd, OwnedFd, i32), FsError> {
        let dir = self.as_user(|| {
            self.open(path, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .map_err(|e| fs_err(&e, "open directory"))
        })?;
        let (r, w) = sys::pipe_cloexec().map_err(|e| fs_err(&e, "pipe"))?;
        let (er, ew) = sys::pipe_cloexec().map_err(|e| fs_err(&e, "pipe"))?;
        // SAFETY: the agent is single-threaded; the helper works and exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(fs_err(&io::Error::last_os_error(), "fork"));
        }
        if pid == 0 {
            // SAFETY: process set-up syscalls in the forked helper.
            unsafe {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            }
            let code = helper(dir, if out { w } else { r }, out, self.helper_ids, &ew);
            // SAFETY: leaves the helper without running the agent's code.
            unsafe { libc::_exit(code) };
        }
        let ours = if out { r } else { w };
        drop(ew);
        let _ = airlock_protocol::v2::set_nonblocking(ours.as_raw_fd(), true);
        let _ = airlock_protocol::v2::set_nonblocking(er.as_raw_fd(), true);
        Ok((ours, er, pid))
    }

    fn flush_tar_in(&mut self, id: u32, out: &mut Out<'_>) {
        let Some(FileOp::TarIn {
            pipe, buf, ended, ..
        }) = self.ops.get_mut(&id)
        else {
            return;
        };
        let mut written = 0;
        if let Some(p) = pipe {
            while written < buf.len() {
                // SAFETY: writes from our buffer.
                let n = unsafe {
                    libc::write(
                        p.as_raw_fd(),
                        buf[written..].as_ptr().cast(),
                        buf.len() - written,
                    )
                };
                if n < 0 {
                    match io::Error::last_os_error().raw_os_error() {
                        Some(libc::EINTR) => continue,
                        Some(libc::EAGAIN) => break,
                        _ => {
                            // The helper stopped reading (it failed): the
                            // rest is dropped; its status tells why.
                            written = buf.len();
                            *pipe = None;
                            break;
                        }
                    }
                }
                written += n as usize;
            }
        } else {
            written = buf.len();
        }
        buf.drain(..written);
        if buf.is_empty() && *ended {
            *pipe = None;
        }
        if written > 0 {
            out.consumed(id, StreamKind::File, written);
        }
        self.finish_tar(id, out);
    }

    pub fn on_ready(&mut self, id: u32, revents: libc::c_short, out: &mut Out<'_>) {
        match self.ops.get_mut(&id) {
            Some(FileOp::TarOut { pipe, sent, .. }) => {
                let credit = out.credit(id, StreamKind::File);
                if let Some(p) = pipe {
                    let want = credit.min(self.buf.len());
                    if want > 0 {
                        // SAFETY: reads into our buffer.
                        let n = unsafe {
                            libc::read(p.as_raw_fd(), self.buf.as_mut_ptr().cast(), want)
                        };
                        if n > 0 {
                            let n = n as usize;
                            *sent += n as u64;
                            out.send(Message::FileData {
                                id,
                                data: self.buf[..n].to_vec(),
                            });
                        } else if n == 0
                            || io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN)
                        {
                            *pipe = None;
                        }
                    }
                }
                let _ = revents;
                self.finish_tar(id, out);
            }
            Some(FileOp::TarIn { .. }) => self.flush_tar_in(id, out),
            _ => {}
        }
    }

    /// A tar helper exited with wait status `st`.
    pub fn helper_exited(&mut self, id: u32, st: i32, out: &mut Out<'_>) {
        match self.ops.get_mut(&id) {
            Some(FileOp::TarOut { status, .. }) | Some(FileOp::TarIn { status, .. }) => {
                *status = Some(st);
            }
            _ => return,
        }
        self.finish_tar(id, out);
    }

    /// Ends a tar request once its helper has exited and its data is through.
    fn finish_tar(&mut self, id: u32, out: &mut Out<'_>) {
        let (st, moved, err) = match self.ops.get(&id) {
            Some(FileOp::TarOut {
                pipe: None,
                status: Some(st),
                sent,
                err,
                ..
            }) => (*st, *sent, err),
            Some(FileOp::TarIn {
                pipe: None,
                status: Some(st),
                received,
                err,
                ..
            }) => (*st, *received, err),
            _ => return,
        };
        let result = if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
            Ok(moved)
        } else {
            let mut text = [0u8; 512];
            // SAFETY: reads the helper's error text into a local buffer.
            let n = unsafe { libc::read(err.as_raw_fd(), text.as_mut_ptr().cast(), text.len()) };
            let t = String::from_utf8_lossy(&text[..n.max(0) as usize]).into_owned();
            let errno = if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st).max(1)
            } else {
                libc::EINTR
            };
            Err(FsError {
                errno,
                text: if t.is_empty() { "tar failed".into() } else { t },
            })
        };
        self.ops.remove(&id);
        out.send(Message::FileDone { id, result });
    }

    /// Stops every helper (the agent is going away).
    pub fn abort_all(&mut self) {
        for op in self.ops.values() {
            if let FileOp::TarOut { pid, .. } | FileOp::TarIn { pid, .. } = op {
                // SAFETY: our helper, not yet reaped.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
        }
    }
}

/// Removes everything in the directory `dir`, never following a symlink.
fn remove_tree(dir: &OwnedFd, depth: u32) -> io::Result<u64> {
    if depth > 256 {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    let mut count = 0;
    let names: Vec<Vec<u8>> = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
        .flatten()
        .map(|e| e.file_name().as_bytes().to_vec())
        .collect();
    for n in names {
        let c = cstr(&n)?;
        let st = fstatat(dir.as_raw_fd(), &c, libc::AT_SYMLINK_NOFOLLOW)?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            // SAFETY: valid fd and C string.
            let sub = sys::cvt(unsafe {
                libc::openat(
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            })?;
            // SAFETY: a new fd that nothing else owns.
            let sub = unsafe { OwnedFd::from_raw_fd(sub) };
            count += remove_tree(&sub, depth + 1)?;
            // SAFETY: valid fd and C string.
            sys::cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) })?;
        } else {
            // SAFETY: valid fd and C string.
            sys::cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) })?;
        }
        count += 1;
    }
    Ok(count)
}

/// The tar helper's body; returns its exit code (0: done; an errno).
fn helper(dir: OwnedFd, pipe: OwnedFd, out: bool, ids: Option<(u32, u32)>, err: &OwnedFd) -> i32 {
    if let Some((u, g)) = ids {
        // SAFETY: credential syscalls with plain integers.
        let ok = unsafe {
            libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(g, g, g) == 0
                && libc::setresuid(u, u, u) == 0
        };
        if !ok {
            return libc::EPERM;
        }
    }
    // SAFETY: our own pipe end, owned by this File from now on.
    let f = unsafe { std::fs::File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(pipe)) };
    let r = if out {
        tarball::write_tree(&dir, f)
    } else {
        tarball::unpack(&dir, f)
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            let text = e.to_string();
            let _ = sys::write_all_fd(err.as_raw_fd(), text.as_bytes());
            sys::errno_of(&e).clamp(1, 255)
        }
    }
}

/// A relative archive path, checked: no absolute path, no `..`, no empty.
pub(crate) fn clean_relative(p: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("archive entry {p:?} leaves its directory"),
                ))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "archive entry with an empty path",
        ));
    }
    Ok(out)
}
