//! Opening host paths that a sandbox may have tampered with.
//!
//! A sandbox with an `rw` mount can leave symlinks in it for a later airlock
//! run to trip over: a mount source or a `--json` file named through them
//! would be redirected anywhere on the host. So every host path airlock
//! opens on a sandbox's behalf is resolved here, one component at a time
//! with `O_PATH | O_NOFOLLOW`, following a symlink only when **root** owns
//! it. No sandbox can make such a link: a root-run sandbox is never host
//! root (it maps to a subordinate range, and its id-mapped writes belong to
//! the mount's owner), and a rootless one is its caller. The walk ends with
//! an `O_PATH` fd of the object itself, so what is checked is what gets
//! used — there is no second lookup to race.
//!
//! The walk also records who owns each directory on the way down, so that
//! root-run id-mapping can follow the owner of a mount only when nobody else
//! could have put the object where it is (see [`Resolved::owner_chain`]).

use crate::sys;
use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed in one resolution, as the kernel's own limit.
const MAX_LINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{path:?} is not an absolute path")]
    NotAbsolute { path: PathBuf },
    #[error(
        "{link:?} is a symlink (to {target:?}) owned by uid {owner}, not root: airlock follows only root's symlinks in the host paths it opens for a sandbox (a sandbox could have planted any other); name the real path instead"
    )]
    Symlink {
        link: PathBuf,
        target: PathBuf,
        owner: u32,
    },
    #[error("{path:?}: too many levels of symbolic links")]
    TooManyLinks { path: PathBuf },
    #[error("{path:?} is not a directory")]
    NotDir { path: PathBuf },
    #[error("{path:?}: {err}")]
    Io {
        path: PathBuf,
        #[source]
        err: io::Error,
    },
}

impl PathError {
    /// The errno closest to this failure.
    pub fn errno(&self) -> i32 {
        match self {
            PathError::NotAbsolute { .. } => libc::EINVAL,
            PathError::Symlink { .. } => libc::ELOOP,
            PathError::TooManyLinks { .. } => libc::ELOOP,
            PathError::NotDir { .. } => libc::ENOTDIR,
            PathError::Io { err, .. } => sys::errno_of(err),
        }
    }

    /// True when the path (or a directory on it) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, PathError::Io { err, .. } if err.kind() == io::ErrorKind::NotFound)
    }
}

/// A host object reached by a safe walk.
#[derive(Debug)]
pub struct Resolved {
    /// `O_PATH` fd of the object.
    pub fd: OwnedFd,
    /// `O_PATH` fd of the directory that holds it (`/` holds itself).
    pub parent: OwnedFd,
    /// The object's name in `parent` (empty for `/`).
    pub name: OsString,
    /// Its status (not following a symlink: it is never one).
    pub stat: libc::stat,
    /// The path the walk took, symlinks replaced by what they point at.
    pub real: PathBuf,
    /// The owners of the directories from `/` down to `parent`, in order.
    pub dirs: Vec<u32>,
}

impl Resolved {
    pub fn is_dir(&self) -> bool {
        self.stat.st_mode & libc::S_IFMT == libc::S_IFDIR
    }

    pub fn is_socket(&self) -> bool {
        self.stat.st_mode & libc::S_IFMT == libc::S_IFSOCK
    }

    pub fn is_regular(&self) -> bool {
        self.stat.st_mode & libc::S_IFMT == libc::S_IFREG
    }

    /// The object's owner, if the path down to it could only have been
    /// arranged by root or by that owner: every directory below the last
    /// root-owned one on the way down belongs to the object's owner. `None`
    /// when another user's directory lies in between (that user could have
    /// moved the object there).
    pub fn owner_chain(&self) -> Option<u32> {
        owner_chain(&self.dirs, self.stat.st_uid)
    }
}

/// See [`Resolved::owner_chain`].
pub fn owner_chain(dirs: &[u32], owner: u32) -> Option<u32> {
    let after_root = match dirs.iter().rposition(|&u| u == 0) {
        Some(i) => &dirs[i + 1..],
        None => dirs,
    };
    after_root.iter().all(|&u| u == owner).then_some(owner)
}

fn open_path(dir: RawFd, name: &OsStr) -> io::Result<OwnedFd> {
    let c =
        CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a valid C string; the kernel returns a new fd or -1.
    let fd = sys::cvt(unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn read_link(fd: RawFd) -> io::Result<PathBuf> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `buf` is valid for its length; an empty path names the
    // O_PATH symlink fd itself.
    let n = unsafe { libc::readlinkat(fd, c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(OsString::from_vec(buf)))
}

/// One step of a walk.
enum Step {
    Root,
    Parent,
    Name(OsString),
}

fn steps(p: &Path) -> impl DoubleEndedIterator<Item = Step> + '_ {
    p.components().filter_map(|c| match c {
        Component::RootDir => Some(Step::Root),
        Component::ParentDir => Some(Step::Parent),
        Component::Normal(n) => Some(Step::Name(n.to_os_string())),
        Component::CurDir | Component::Prefix(_) => None,
    })
}

/// Resolves the absolute `path` as described in the module docs.
pub fn resolve(path: &Path) -> Result<Resolved, PathError> {
    if !path.is_absolute() {
        return Err(PathError::NotAbsolute {
            path: path.to_path_buf(),
        });
    }
    let io_err = |p: &Path, err: io::Error| PathError::Io {
        path: p.to_path_buf(),
        err,
    };
    let root = open_path(libc::AT_FDCWD, OsStr::new("/")).map_err(|e| io_err(Path::new("/"), e))?;
    let root_uid = sys::fstat(root.as_raw_fd())
        .map_err(|e| io_err(Path::new("/"), e))?
        .st_uid;
    // The directories walked so far, `/` first: fd, owner, name.
    let mut stack: Vec<(OwnedFd, u32, OsString)> = vec![(root, root_uid, OsString::new())];
    let here = |stack: &[(OwnedFd, u32, OsString)]| -> PathBuf {
        let mut p = PathBuf::from("/");
        for (_, _, n) in &stack[1..] {
            p.push(n);
        }
        p
    };
    let mut todo: VecDeque<Step> = steps(path).collect();
    let mut links = 0usize;
    // The final object, when it is not a directory.
    let mut last: Option<(OwnedFd, libc::stat, OsString)> = None;
    while let Some(step) = todo.pop_front() {
        if let Some((_, _, n)) = &last {
            let mut p = here(&stack);
            p.push(n);
            return Err(PathError::NotDir { path: p });
        }
        match step {
            Step::Root => stack.truncate(1),
            Step::Parent => {
                if stack.len() > 1 {
                    stack.pop();
                }
            }
            Step::Name(name) => {
                let top = stack
                    .last()
                    .map_or(libc::AT_FDCWD, |(fd, _, _)| fd.as_raw_fd());
                let mut p = here(&stack);
                p.push(&name);
                let fd = open_path(top, &name).map_err(|e| io_err(&p, e))?;
                let st = sys::fstat(fd.as_raw_fd()).map_err(|e| io_err(&p, e))?;
                match st.st_mode & libc::S_IFMT {
                    libc::S_IFLNK => {
                        let target = read_link(fd.as_raw_fd()).map_err(|e| io_err(&p, e))?;
                        if st.st_uid != 0 {
                            return Err(PathError::Symlink {
                                link: p,
                                target,
                                owner: st.st_uid,
                            });
                        }
                        links += 1;
                        if links > MAX_LINKS {
                            return Err(PathError::TooManyLinks {
                                path: path.to_path_buf(),
                            });
                        }
                        for s in steps(&target).rev() {
                            todo.push_front(s);
                        }
                    }
                    libc::S_IFDIR => stack.push((fd, st.st_uid, name)),
                    _ => last = Some((fd, st, name)),
                }
            }
        }
    }
    let mut real = here(&stack);
    let (fd, stat, name, parent) = match last {
        Some((fd, stat, name)) => {
            real.push(&name);
            let parent = stack
                .last()
                .map(|(p, _, _)| p.try_clone())
                .transpose()
                .map_err(|e| io_err(path, e))?;
            (fd, stat, name, parent)
        }
        None => {
            let (fd, _, name) = match stack.len() {
                1 => {
                    let (fd, u, n) = &stack[0];
                    (fd.try_clone().map_err(|e| io_err(path, e))?, *u, n.clone())
                }
                _ => stack
                    .pop()
                    .ok_or_else(|| io_err(path, io::Error::from_raw_os_error(libc::EINVAL)))?,
            };
            let stat = sys::fstat(fd.as_raw_fd()).map_err(|e| io_err(path, e))?;
            let parent = stack
                .last()
                .map(|(p, _, _)| p.try_clone())
                .transpose()
                .map_err(|e| io_err(path, e))?;
            (fd, stat, name, parent)
        }
    };
    let parent = match parent {
        Some(p) => p,
        None => fd.try_clone().map_err(|e| io_err(path, e))?,
    };
    // For `/` itself the stack still holds it: it has no parent directory.
    let dirs = if name.is_empty() {
        Vec::new()
    } else {
        stack.iter().map(|(_, u, _)| *u).collect()
    };
    Ok(Resolved {
        fd,
        parent,
        name,
        stat,
        real,
        dirs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn tmp(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("airlock-safepath-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("a/b")).unwrap();
        std::fs::write(p.join("a/b/f"), "x").unwrap();
        Tmp(p)
    }
    fn is_root() -> bool {
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn plain_paths_resolve() {
        let t = tmp("plain");
        let r = resolve(&t.0.join("a/b/f")).unwrap();
        assert!(r.is_regular());
        assert_eq!(r.real, t.0.join("a/b/f"));
        assert_eq!(r.name, OsString::from("f"));
        let r = resolve(&t.0.join("a/./b/../b")).unwrap();
        assert!(r.is_dir());
        assert_eq!(r.real, t.0.join("a/b"));
        let r = resolve(Path::new("/")).unwrap();
        assert!(r.is_dir());
        assert_eq!(r.real, PathBuf::from("/"));
        assert!(r.dirs.is_empty());
        let r = resolve(Path::new("/../..")).unwrap();
        assert_eq!(r.real, PathBuf::from("/"));
    }

    #[test]
    fn missing_and_not_dir() {
        let t = tmp("missing");
        assert!(resolve(&t.0.join("nope")).unwrap_err().is_not_found());
        assert!(matches!(
            resolve(&t.0.join("a/b/f/g")),
            Err(PathError::NotDir { .. })
        ));
        assert!(matches!(
            resolve(Path::new("rel")),
            Err(PathError::NotAbsolute { .. })
        ));
    }

    #[test]
    fn symlinks_are_followed_only_when_root_owns_them() {
        let t = tmp("links");
        let l = t.0.join("link");
        symlink(t.0.join("a/b"), &l).unwrap();
        let rel = t.0.join("rel");
        symlink("a/b", &rel).unwrap();
        if is_root() {
            // Root's own links are followed, absolute and relative.
            let r = resolve(&l.join("f")).unwrap();
            assert_eq!(r.real, t.0.join("a/b/f"));
            let r = resolve(&rel.join("..")).unwrap();
            assert_eq!(r.real, t.0.join("a"));
            // Anyone else's are refused, naming the link and its target.
            std::os::unix::fs::lchown(&l, Some(4242), Some(4242)).unwrap();
        }
        match resolve(&l.join("f")) {
            Err(PathError::Symlink {
                link,
                target,
                owner,
            }) => {
                assert_eq!(link, l);
                assert_eq!(target, t.0.join("a/b"));
                assert_ne!(owner, 0);
            }
            // Not root: the test's own link is not root's, refused too.
            other => panic!("{other:?}"),
        }
        // The last component too.
        assert!(matches!(resolve(&l), Err(PathError::Symlink { .. })));
    }

    #[test]
    fn link_loops_end() {
        if !is_root() {
            return;
        }
        let t = tmp("loop");
        symlink(t.0.join("y"), t.0.join("x")).unwrap();
        symlink(t.0.join("x"), t.0.join("y")).unwrap();
        assert!(matches!(
            resolve(&t.0.join("x")),
            Err(PathError::TooManyLinks { .. })
        ));
    }

    #[test]
    fn owner_chain_rule() {
        // / root, /home root, alice's home and project.
        assert_eq!(owner_chain(&[0, 0, 1001, 1001], 1001), Some(1001));
        // bob's directory inside alice's.
        assert_eq!(owner_chain(&[0, 0, 1001], 1002), None);
        // Directly under a root-owned directory.
        assert_eq!(owner_chain(&[0, 0], 1002), Some(1002));
        assert_eq!(owner_chain(&[0], 0), Some(0));
        // A root-owned directory inside alice's resets the chain.
        assert_eq!(owner_chain(&[0, 1001, 0], 1002), Some(1002));
        assert_eq!(owner_chain(&[], 7), Some(7));
    }
}
