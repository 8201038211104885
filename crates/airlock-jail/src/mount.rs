//! The sandbox's root filesystem.
//!
//! Compiling a spec into a [`RootPlan`] is pure. The parent then opens every
//! bind source as a detached mount tree (`open_tree`, with `nosuid,nodev` and
//! `ro` re-applied recursively to every submount, via `mount_setattr`) before
//! it clones the sandbox, so sources are resolved once, with the caller's own
//! rights, and cannot be swapped afterwards. The child builds the root on one
//! size-capped tmpfs (the writable layer), attaching each tree onto a target
//! that it resolves with `openat2(RESOLVE_IN_ROOT)` — symlinks inside the new
//! root cannot point out of it — then `pivot_root`s into it, detaches the
//! host's tree and makes `/` read-only; `/tmp`, `$HOME`, `/dev/shm` and the
//! working directory stay writable (same tmpfs, same cap).

use crate::sys::{self, cpath};
use crate::ChildFail;
use airlock_protocol::Stage;
use airlock_spec::{Mount, MountMode, User};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where the child attaches the new root before pivoting into it. Only the
/// child's private mount namespace sees this mount.
const STAGE: &str = "/tmp";
/// Inside the new root: lower layers and upper/work dirs of overlay mounts,
/// hidden under an empty read-only tmpfs once the overlays exist.
const OVERLAY_DIR: &str = ".airlock";

/// `/etc` entries taken from the host (if present): what programs need to
/// load libraries, find alternatives, verify certificates, tell the time
/// zone and the OS, and name services and protocols — nothing that describes
/// the host's users, secrets or services. (Shell start-up files, perl's and
/// python's site configuration are optional for the programs that read
/// them and stay out.)
const ETC_FROM_HOST: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "ssl",
    "localtime",
    "timezone",
    "os-release",
    "debian_version",
    "protocols",
    "services",
    "gai.conf",
    "host.conf",
    "mime.types",
];
/// Top-level entries of the `host` image.
const IMAGE_TOP: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];
/// Device nodes bound from the host.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What one path in the new root is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir {
        path: PathBuf,
        mode: u32,
    },
    Symlink {
        path: PathBuf,
        target: PathBuf,
    },
    /// A file airlock writes itself.
    File {
        path: PathBuf,
        contents: Vec<u8>,
        mode: u32,
    },
    /// A small host file copied in.
    Copy {
        path: PathBuf,
        from: PathBuf,
    },
    /// A read-only bind of a host path (directory or file), `noexec` for
    /// devices.
    Bind {
        path: PathBuf,
        source: PathBuf,
        dir: bool,
        device: bool,
    },
}

/// What the host offers the `host` image: gathered by [`HostFacts::probe`],
/// kept separate so that plan compilation stays pure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// Top-level image entries: name → symlink target or `None` for a dir.
    pub top: Vec<(String, Option<PathBuf>)>,
    /// `/etc` entries found: name → kind.
    pub etc: Vec<(String, HostKind)>,
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    File,
    Dir,
    Symlink(PathBuf),
}

impl HostFacts {
    pub fn probe() -> HostFacts {
        let mut f = HostFacts::default();
        for name in IMAGE_TOP {
            let p = Path::new("/").join(name);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(t) = std::fs::read_link(&p) {
                        f.top.push((name.to_string(), Some(t)));
                    }
                }
                Ok(m) if m.is_dir() => f.top.push((name.to_string(), None)),
                _ => {}
            }
        }
        for n in ETC_FROM_HOST {
            let p = Path::new("/etc").join(n);
            let kind = match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(&p) {
                    Ok(t) => HostKind::Symlink(t),
                    Err(_) => continue,
                },
                Ok(m) if m.is_dir() => HostKind::Dir,
                Ok(m) if m.is_file() => HostKind::File,
                _ => continue,
            };
            f.etc.push((n.to_string(), kind));
        }
        for d in DEVICES {
            if Path::new("/dev").join(d).exists() {
                f.devices.push(d.to_string());
            }
        }
        f
    }
}

/// Everything the child needs to build the root.
#[derive(Debug, Clone, PartialEq)]
pub struct RootPlan {
    pub disk: u64,
    pub entries: Vec<Entry>,
    /// Directories that stay writable (bound onto themselves before `/`
    /// turns read-only), with their mode and whether the user owns them.
    pub writable: Vec<(PathBuf, u32, bool)>,
    pub user_mounts: Vec<Mount>,
    pub user: User,
    /// A working directory to create below a writable directory:
    /// (the writable directory, the working directory), both relative.
    pub workdir_below: Option<(PathBuf, PathBuf)>,
}

impl RootPlan {
    pub fn compile(
        facts: &HostFacts,
        user: User,
        hostname: &str,
        workdir: &Path,
        mounts: &[Mount],
        disk: u64,
    ) -> RootPlan {
        let mut e = Vec::new();
        let p = |s: &str| PathBuf::from(s);
        for (name, link) in &facts.top {
            match link {
                Some(t) => e.push(Entry::Symlink {
                    path: p(name.as_str()),
                    target: t.clone(),
                }),
                None => e.push(Entry::Bind {
                    path: p(name.as_str()),
                    source: Path::new("/").join(name),
                    dir: true,
                    device: false,
                }),
            }
        }
        e.push(Entry::Dir {
            path: p("etc"),
            mode: 0o755,
        });
        for (name, kind) in &facts.etc {
            let path = Path::new("etc").join(name);
            let source = Path::new("/etc").join(name);
            e.push(match kind {
                HostKind::Symlink(t) => Entry::Symlink {
                    path,
                    target: t.clone(),
                },
                HostKind::Dir => Entry::Bind {
                    path,
                    source,
                    dir: true,
                    device: false,
                },
                HostKind::File => Entry::Copy { path, from: source },
            });
        }
        let file = |name: &str, contents: String| Entry::File {
            path: Path::new("etc").join(name),
            contents: contents.into_bytes(),
            mode: 0o644,
        };
        let home = user.home();
        let name = user.name();
        let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
        let mut group = String::from("root:x:0:\n");
        if user.uid != 0 {
            passwd += &format!(
                "{name}:x:{}:{}:{name}:{}:/bin/sh\n",
                user.uid,
                user.gid,
                home.display()
            );
        }
        if user.gid != 0 {
            group += &format!(
                "{}:x:{}:\n",
                if user.uid == user.gid { &name } else { "users" },
                user.gid
            );
        }
        if user.uid != 65534 {
            passwd += "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
        }
        if user.gid != 65534 {
            group += "nogroup:x:65534:\n";
        }
        e.push(file("passwd", passwd));
        e.push(file("group", group));
        e.push(file("hostname", format!("{hostname}\n")));
        e.push(file(
            "hosts",
            format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        ));
        e.push(file("resolv.conf", String::new()));
        e.push(file(
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\nprotocols: files\nservices: files\n"
                .into(),
        ));
        e.push(Entry::Symlink {
            path: p("etc/mtab"),
            target: p("../proc/self/mounts"),
        });
        e.push(Entry::Dir {
            path: p("dev"),
            mode: 0o755,
        });
        for d in &facts.devices {
            e.push(Entry::Bind {
                path: Path::new("dev").join(d),
                source: Path::new("/dev").join(d),
                dir: false,
                device: true,
            });
        }
        for (link, target) in [
            ("dev/fd", "/proc/self/fd"),
            ("dev/stdin", "/proc/self/fd/0"),
            ("dev/stdout", "/proc/self/fd/1"),
            ("dev/stderr", "/proc/self/fd/2"),
            ("dev/ptmx", "pts/ptmx"),
        ] {
            e.push(Entry::Symlink {
                path: p(link),
                target: p(target),
            });
        }
        for d in ["dev/pts", "proc", "home", "var"] {
            e.push(Entry::Dir {
                path: p(d),
                mode: 0o755,
            });
        }
        e.push(Entry::Symlink {
            path: p("var/tmp"),
            target: p("/tmp"),
        });
        let rel = |a: &Path| a.strip_prefix("/").unwrap_or(a).to_path_buf();
        let mut writable = vec![
            (p("tmp"), 0o1777, false),
            (p("dev/shm"), 0o1777, false),
            (rel(&home), 0o755, true),
        ];
        // A working directory that no mount provides is made (writable, the
        // user's), like `docker run -w`.
        let wd = rel(workdir);
        let provided = mounts.iter().any(|m| workdir.starts_with(&m.target))
            || writable.iter().any(|(w, _, _)| wd.starts_with(w))
            || IMAGE_TOP.iter().any(|t| wd.starts_with(t))
            || wd.starts_with("etc")
            || wd.as_os_str().is_empty();
        // One inside a writable place (/tmp/build, ~/proj) is made there.
        let mut workdir_below = None;
        if let Some((w, _, _)) = writable
            .iter()
            .find(|(w, _, _)| wd.starts_with(w) && wd != *w)
        {
            if !mounts.iter().any(|m| workdir.starts_with(&m.target)) {
                workdir_below = Some((w.clone(), wd.clone()));
            }
        }
        if !provided {
            writable.push((wd, 0o755, true));
        }
        let mut user_mounts = mounts.to_vec();
        user_mounts.sort_by_key(|m| m.target.components().count());
        RootPlan {
            workdir_below,
            disk,
            entries: e,
            writable,
            user_mounts,
            user,
        }
    }
}

/// Detached mount trees the parent opened, in the order the child uses them.
pub struct OpenedTrees {
    /// One per `Entry::Bind`, in entry order.
    pub binds: Vec<OwnedFd>,
    /// One per user mount, in `user_mounts` order; `true` if the source is a
    /// directory.
    pub mounts: Vec<(OwnedFd, bool)>,
    /// Things the user should hear about (a mount that could not be
    /// id-mapped).
    pub notes: Vec<String>,
}

/// Parent side: open every source as a detached tree with its attributes set.
///
/// `idmap_to` (run by root): the host uid/gid of the sandbox's user. Each
/// user mount whose owner is not root is then id-mapped so that its owner
/// appears inside as the sandbox's user, and what the sandbox creates there
/// belongs to that owner on the host — never to the subordinate uid, never
/// to root.
pub fn open_trees(
    plan: &RootPlan,
    idmap_to: Option<(u32, u32)>,
) -> Result<OpenedTrees, crate::JailError> {
    let mut binds = Vec::new();
    for e in &plan.entries {
        if let Entry::Bind {
            source,
            device,
            dir,
            ..
        } = e
        {
            let mut attrs = sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID;
            if *device {
                attrs = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC;
            } else {
                attrs |= sys::MOUNT_ATTR_NODEV;
            }
            binds.push(open_one(source, *dir, attrs)?);
        }
    }
    let mut mounts = Vec::new();
    let mut notes = Vec::new();
    let passwd = if idmap_to.is_some() && !plan.user_mounts.is_empty() {
        std::fs::read_to_string("/etc/passwd").unwrap_or_default()
    } else {
        String::new()
    };
    let mut namespaces: Vec<((u32, u32), OwnedFd)> = Vec::new();
    for m in &plan.user_mounts {
        use std::os::unix::fs::MetadataExt;
        let err = |e| crate::JailError::MountSource {
            source_path: m.source.clone(),
            err: e,
        };
        let meta = std::fs::metadata(&m.source).map_err(err)?;
        let mut attrs = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
        if m.mode != MountMode::Rw {
            attrs |= sys::MOUNT_ATTR_RDONLY;
        }
        let fd = open_one(&m.source, meta.is_dir(), attrs)?;
        let owner = (meta.uid(), meta.gid());
        // A root-owned source is never mapped, in any mode: the sandbox
        // would hold root's owner rights over the tree — read root-only
        // files (a mounted /etc's shadow), and with rw leave setuid-root
        // programs behind. It stays as it is: its files appear owned by
        // nobody and are usable only where others may.
        let idmap_to = if owner.0 == 0 {
            if idmap_to.is_some() {
                notes.push(format!(
                    "{} is owned by root, so it is not id-mapped: the sandbox sees its files as nobody's and may read or write only where others may (chown -R it to a normal user and group, e.g. alice:alice, to work in it as its owner)",
                    m.source.display()
                ));
            }
            None
        } else {
            idmap_to
        };
        // The group side maps only onto the owner's own primary group: the
        // directory's group may be root or another privileged group
        // (docker, shadow), which the sandbox must neither read as nor
        // leave setgid programs of.
        let owner = (owner.0, idmap_group(owner.0, &passwd));
        if let Some(host) = idmap_to {
            let ns = match namespaces.iter().find(|(o, _)| *o == owner) {
                Some((_, ns)) => Some(ns.as_raw_fd()),
                None => match crate::userns::idmap_userns(owner, host) {
                    Ok(ns) => {
                        namespaces.push((owner, ns));
                        namespaces.last().map(|(_, ns)| ns.as_raw_fd())
                    }
                    Err(e) => {
                        notes.push(format!("cannot id-map {}: {e}", m.source.display()));
                        None
                    }
                },
            };
            if let Some(ns) = ns {
                if let Err(e) = sys::mount_setattr_userns(
                    fd.as_raw_fd(),
                    sys::MOUNT_ATTR_IDMAP,
                    0,
                    meta.is_dir(),
                    Some(ns),
                ) {
                    notes.push(format!(
                        "cannot id-map {} ({e}); its files appear owned by nobody and the sandbox user can write only where others may",
                        m.source.display()
                    ));
                }
            }
        }
        mounts.push((fd, meta.is_dir()));
    }
    Ok(OpenedTrees {
        binds,
        mounts,
        notes,
    })
}

/// The on-disk group that an id-mapped mount owned by `uid` shows as the
/// sandbox user's group: that user's primary group if it has a non-root one,
/// else `nogroup` (65534), which grants nothing.
pub fn idmap_group(uid: u32, passwd: &str) -> u32 {
    const NOGROUP: u32 = 65534;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[2].parse::<u32>().ok() == Some(uid))
                .then(|| f[3].parse::<u32>().ok())?
        })
        .filter(|g| *g != 0)
        .unwrap_or(NOGROUP)
}

fn open_one(source: &Path, recursive: bool, attrs: u64) -> Result<OwnedFd, crate::JailError> {
    let err = |e| crate::JailError::MountSource {
        source_path: source.to_path_buf(),
        err: e,
    };
    let fd = sys::open_tree_clone(source, recursive).map_err(err)?;
    sys::mount_setattr(fd.as_raw_fd(), attrs, 0, recursive).map_err(err)?;
    Ok(fd)
}

fn fail(what: impl Into<String>, path: &Path, e: io::Error) -> ChildFail {
    ChildFail {
        stage: Stage::Mounts,
        errno: sys::errno_of(&e),
        detail: format!("{} {}: {e}", what.into(), path.display()),
    }
}

fn cstring(s: String) -> CString {
    // Sizes and paths built here contain no NUL bytes.
    CString::new(s).unwrap_or_default()
}

/// Child side, uid 0 of a fresh user + mount namespace: builds the root and
/// pivots into it. Returns with `/` being the new root.
pub fn build_root(plan: &RootPlan, trees: &OpenedTrees, rootless: bool) -> Result<(), ChildFail> {
    let stage = Path::new(STAGE);
    // SAFETY: constant C strings; changes propagation of our private copy.
    sys::cvt(unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    })
    .map_err(|e| fail("make private", Path::new("/"), e))?;

    let size = cstring(plan.disk.to_string());
    let tmpfs = sys::fs_mount(
        c"tmpfs",
        &[(c"size", size.as_c_str()), (c"mode", c"0755")],
        sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
    )
    .map_err(|e| fail("create tmpfs (--disk)", stage, e))?;
    sys::move_mount_path(tmpfs.as_raw_fd(), stage)
        .map_err(|e| fail("attach tmpfs at", stage, e))?;
    drop(tmpfs);

    let root = |rel: &Path| stage.join(rel);
    let mut bind_fds = trees.binds.iter();
    for e in &plan.entries {
        match e {
            Entry::Dir { path, mode } => mkdir(&root(path), *mode)?,
            Entry::Symlink { path, target } => std::os::unix::fs::symlink(target, root(path))
                .map_err(|e| fail("symlink", path, e))?,
            Entry::File {
                path,
                contents,
                mode,
            } => write_new(&root(path), contents, *mode)?,
            Entry::Copy { path, from } => {
                let data = std::fs::read(from).map_err(|e| fail("read host", from, e))?;
                write_new(&root(path), &data, 0o644)?;
            }
            Entry::Bind { path, dir, .. } => {
                let fd = bind_fds.next().ok_or_else(|| {
                    fail(
                        "no opened tree for",
                        path,
                        io::Error::from_raw_os_error(libc::EINVAL),
                    )
                })?;
                let t = root(path);
                if *dir {
                    mkdir(&t, 0o755)?;
                } else {
                    write_new(&t, b"", 0o644)?;
                }
                sys::move_mount_path(fd.as_raw_fd(), &t).map_err(|e| fail("bind onto", path, e))?;
            }
        }
    }

    // Writable directories: bound onto themselves so they keep `rw` when `/`
    // becomes read-only.
    let uid = plan.user.uid;
    let gid = plan.user.gid;
    for (dir, mode, owned) in &plan.writable {
        let t = root(dir);
        mkdir_all(&t)?;
        set_mode(&t, *mode)?;
        if *owned && !rootless {
            chown(&t, uid, gid)?;
        }
        bind_self(&t)?;
    }

    if let Some((base, wd)) = &plan.workdir_below {
        mkdir_all(&root(wd))?;
        if !rootless {
            // Everything below the (fresh, empty) writable directory is new.
            let mut p = wd.as_path();
            while p != base.as_path() {
                chown(&root(p), uid, gid)?;
                match p.parent() {
                    Some(q) => p = q,
                    None => break,
                }
            }
        }
    }

    mount_fs(
        c"proc",
        &root(Path::new("proc")),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )?;
    mount_fs(
        c"devpts",
        &root(Path::new("dev/pts")),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(c"newinstance,ptmxmode=0666,mode=0620"),
    )?;

    // The user's mounts, shallowest first, onto targets resolved inside the
    // new root.
    let root_dir = std::fs::File::open(stage).map_err(|e| fail("open", stage, e))?;
    let mut overlays = 0usize;
    for (m, (tree, is_dir)) in plan.user_mounts.iter().zip(&trees.mounts) {
        let target = make_target(root_dir.as_raw_fd(), &m.target, *is_dir)?;
        match m.mode {
            MountMode::Ro | MountMode::Rw => {
                sys::move_mount_fd(tree.as_raw_fd(), target.as_raw_fd())
                    .map_err(|e| fail("bind onto", &m.target, e))?
            }
            MountMode::Overlay => {
                if !*is_dir {
                    return Err(fail(
                        "overlay needs a directory source for",
                        &m.target,
                        io::Error::from_raw_os_error(libc::ENOTDIR),
                    ));
                }
                let base = root(Path::new(OVERLAY_DIR));
                if overlays == 0 {
                    mkdir(&base, 0o700)?;
                }
                let lower = base.join(format!("l{overlays}"));
                let upper = base.join(format!("u{overlays}"));
                let work = base.join(format!("w{overlays}"));
                mkdir(&lower, 0o700)?;
                mkdir(&upper, 0o755)?;
                mkdir(&work, 0o700)?;
                if !rootless {
                    chown(&upper, uid, gid)?;
                }
                sys::move_mount_path(tree.as_raw_fd(), &lower)
                    .map_err(|e| fail("attach lower", &m.target, e))?;
                let lo = cstring(lower.display().to_string());
                let up = cstring(upper.display().to_string());
                let wk = cstring(work.display().to_string());
                // The sandbox is always in a user namespace, where only
                // user.* xattrs can be set on the upper layer.
                let opts: Vec<(&CStr, &CStr)> = vec![
                    (c"lowerdir", &lo),
                    (c"upperdir", &up),
                    (c"workdir", &wk),
                    (c"userxattr", c""),
                ];
                let ovl = sys::fs_mount(
                    c"overlay",
                    &opts,
                    sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
                )
                .map_err(|e| fail("overlay", &m.target, e))?;
                sys::move_mount_fd(ovl.as_raw_fd(), target.as_raw_fd())
                    .map_err(|e| fail("overlay onto", &m.target, e))?;
                // The overlay holds its own reference to the lower layer.
                umount_detach(&lower)?;
                overlays += 1;
            }
        }
    }
    drop(root_dir);

    // Into the new root; the host's tree is detached and gone.
    std::env::set_current_dir(stage).map_err(|e| fail("chdir", stage, e))?;
    sys::pivot_root_here().map_err(|e| fail("pivot_root into", stage, e))?;
    umount_detach(Path::new("."))?;
    std::env::set_current_dir("/").map_err(|e| fail("chdir", Path::new("/"), e))?;

    if overlays > 0 {
        let hide = sys::fs_mount(
            c"tmpfs",
            &[(c"size", c"4k"), (c"mode", c"0")],
            sys::MOUNT_ATTR_RDONLY
                | sys::MOUNT_ATTR_NOSUID
                | sys::MOUNT_ATTR_NODEV
                | sys::MOUNT_ATTR_NOEXEC,
        )
        .map_err(|e| fail("hide", Path::new(OVERLAY_DIR), e))?;
        sys::move_mount_path(hide.as_raw_fd(), &Path::new("/").join(OVERLAY_DIR))
            .map_err(|e| fail("hide", Path::new(OVERLAY_DIR), e))?;
    }
    let slash = std::fs::File::open("/").map_err(|e| fail("open", Path::new("/"), e))?;
    sys::mount_setattr(slash.as_raw_fd(), sys::MOUNT_ATTR_RDONLY, 0, false)
        .map_err(|e| fail("make read-only", Path::new("/"), e))?;
    Ok(())
}

fn mkdir(p: &Path, mode: u32) -> Result<(), ChildFail> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(p)
        .map_err(|e| fail("mkdir", p, e))
}

fn mkdir_all(p: &Path) -> Result<(), ChildFail> {
    std::fs::create_dir_all(p).map_err(|e| fail("mkdir", p, e))
}

fn set_mode(p: &Path, mode: u32) -> Result<(), ChildFail> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| fail("chmod", p, e))
}

fn chown(p: &Path, uid: u32, gid: u32) -> Result<(), ChildFail> {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(|e| fail("chown", p, e))
}

fn write_new(p: &Path, data: &[u8], mode: u32) -> Result<(), ChildFail> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(p)
        .map_err(|e| fail("create", p, e))?;
    f.write_all(data).map_err(|e| fail("write", p, e))
}

fn bind_self(p: &Path) -> Result<(), ChildFail> {
    let c = cpath(p).map_err(|e| fail("bind", p, e))?;
    // SAFETY: valid C strings; a plain bind of a directory onto itself.
    sys::cvt(unsafe {
        libc::mount(
            c.as_ptr(),
            c.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        )
    })
    .map_err(|e| fail("bind", p, e))?;
    Ok(())
}

fn mount_fs(
    fstype: &CStr,
    target: &Path,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Result<(), ChildFail> {
    let t = cpath(target).map_err(|e| fail("mount", target, e))?;
    // SAFETY: valid C strings; `data` is either null or a valid C string.
    sys::cvt(unsafe {
        libc::mount(
            fstype.as_ptr(),
            t.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    })
    .map_err(|e| fail(format!("mount {}", fstype.to_string_lossy()), target, e))?;
    Ok(())
}

fn umount_detach(p: &Path) -> Result<(), ChildFail> {
    let c = cpath(p).map_err(|e| fail("umount", p, e))?;
    // SAFETY: valid C string.
    sys::cvt(unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) })
        .map_err(|e| fail("umount", p, e))?;
    Ok(())
}

/// Resolves (creating what is missing) `target` inside the root `dir`,
/// component by component, never leaving the root: `..` and symlinks are
/// resolved as if `dir` were `/`. Returns an `O_PATH` fd of the target.
fn make_target(dir: i32, target: &Path, is_dir: bool) -> Result<OwnedFd, ChildFail> {
    let rel = target.strip_prefix("/").unwrap_or(target);
    let n = rel.components().count();
    let mut sofar = PathBuf::new();
    for (i, c) in rel.components().enumerate() {
        sofar.push(c);
        let last = i + 1 == n;
        match sys::open_in_root(dir, &sofar, false) {
            Ok(fd) if last => return Ok(fd),
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                // Create it through the resolved parent, so a symlink in
                // the path is followed inside the root only.
                let parent = match sofar.parent() {
                    Some(p) if !p.as_os_str().is_empty() => sys::open_in_root(dir, p, false)
                        .map_err(|e| fail("resolve mount target", target, e))?,
                    _ => sys::open_in_root(dir, Path::new("."), false)
                        .map_err(|e| fail("resolve mount target", target, e))?,
                };
                let name =
                    cpath(Path::new(c.as_os_str())).map_err(|e| fail("mount target", target, e))?;
                let pfd = parent.as_raw_fd();
                let r = if last && !is_dir {
                    // SAFETY: valid fd and C string; O_PATH parents are
                    // accepted by the *at calls with AT_EMPTY_PATH semantics
                    // not needed here.
                    let fd = unsafe {
                        libc::openat(
                            pfd,
                            name.as_ptr(),
                            libc::O_CREAT
                                | libc::O_EXCL
                                | libc::O_WRONLY
                                | libc::O_CLOEXEC
                                | libc::O_NOFOLLOW,
                            0o644,
                        )
                    };
                    if fd >= 0 {
                        // SAFETY: fd was just returned by openat.
                        unsafe { libc::close(fd) };
                    }
                    fd
                } else {
                    // SAFETY: valid fd and C string.
                    unsafe { libc::mkdirat(pfd, name.as_ptr(), 0o755) }
                };
                sys::cvt(r).map_err(|e| {
                    let why = if e.raw_os_error() == Some(libc::EROFS) {
                        "create mount target (its parent is read-only in the image)"
                    } else {
                        "create mount target"
                    };
                    fail(why, target, e)
                })?;
                if last {
                    return sys::open_in_root(dir, &sofar, false)
                        .map_err(|e| fail("resolve mount target", target, e));
                }
            }
            Err(e) => return Err(fail("resolve mount target", target, e)),
        }
    }
    Err(fail(
        "empty mount target",
        target,
        io::Error::from_raw_os_error(libc::EINVAL),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> HostFacts {
        HostFacts {
            top: vec![
                ("usr".into(), None),
                ("bin".into(), Some(PathBuf::from("usr/bin"))),
            ],
            etc: vec![
                ("ld.so.cache".into(), HostKind::File),
                ("ssl".into(), HostKind::Dir),
                (
                    "os-release".into(),
                    HostKind::Symlink("../usr/lib/os-release".into()),
                ),
            ],
            devices: vec!["null".into()],
        }
    }

    fn plan(workdir: &str, mounts: &[Mount]) -> RootPlan {
        RootPlan::compile(
            &facts(),
            User::SANDBOX,
            "box",
            Path::new(workdir),
            mounts,
            1 << 20,
        )
    }

    #[test]
    fn host_image_layout() {
        let p = plan("/home/sandbox", &[]);
        assert!(p.entries.contains(&Entry::Bind {
            path: "usr".into(),
            source: "/usr".into(),
            dir: true,
            device: false
        }));
        assert!(p.entries.contains(&Entry::Symlink {
            path: "bin".into(),
            target: "usr/bin".into()
        }));
        assert!(p.entries.contains(&Entry::Copy {
            path: "etc/ld.so.cache".into(),
            from: "/etc/ld.so.cache".into()
        }));
        assert!(p.entries.iter().any(
            |e| matches!(e, Entry::Bind { path, device: true, .. } if path == Path::new("dev/null"))
        ));
        // Nothing from the host's user database, home or runtime dirs.
        for e in &p.entries {
            let path = match e {
                Entry::Bind { source, .. } => source.clone(),
                Entry::Copy { from, .. } => from.clone(),
                _ => continue,
            };
            for banned in [
                "/etc/shadow",
                "/etc/passwd",
                "/home",
                "/root",
                "/var",
                "/run",
                "/etc/ssh",
            ] {
                assert!(!path.starts_with(banned), "{path:?}");
            }
        }
    }

    #[test]
    fn generated_passwd_has_the_user_and_no_host_entries() {
        let p = plan("/home/sandbox", &[]);
        let passwd = p
            .entries
            .iter()
            .find_map(|e| match e {
                Entry::File { path, contents, .. } if path == Path::new("etc/passwd") => {
                    Some(String::from_utf8_lossy(contents).into_owned())
                }
                _ => None,
            })
            .unwrap();
        assert!(passwd.contains("sandbox:x:1000:1000:sandbox:/home/sandbox:/bin/sh"));
        assert_eq!(passwd.lines().count(), 3);
    }

    #[test]
    fn writable_dirs_and_workdir() {
        let p = plan("/home/sandbox", &[]);
        let dirs: Vec<_> = p.writable.iter().map(|w| w.0.clone()).collect();
        assert_eq!(
            dirs,
            vec![
                PathBuf::from("tmp"),
                "dev/shm".into(),
                "home/sandbox".into()
            ]
        );
        // A workdir nobody provides is created, writable.
        let p = plan("/work", &[]);
        assert!(p.writable.iter().any(|w| w.0 == Path::new("work") && w.2));
        // One a mount provides is not.
        let m = Mount {
            source: "/src".into(),
            target: "/work".into(),
            mode: MountMode::Ro,
        };
        let p = plan("/work/sub", std::slice::from_ref(&m));
        assert_eq!(p.writable.len(), 3);
    }

    #[test]
    fn workdir_below_a_writable_dir_is_made_there() {
        let p = plan("/home/sandbox/proj/sub", &[]);
        assert_eq!(
            p.workdir_below,
            Some((
                PathBuf::from("home/sandbox"),
                PathBuf::from("home/sandbox/proj/sub")
            ))
        );
        assert_eq!(p.writable.len(), 3);
        assert_eq!(plan("/home/sandbox", &[]).workdir_below, None);
        let m = Mount {
            source: "/src".into(),
            target: "/tmp/w".into(),
            mode: MountMode::Rw,
        };
        assert_eq!(
            plan("/tmp/w/x", std::slice::from_ref(&m)).workdir_below,
            None
        );
    }

    #[test]
    fn idmapped_group_is_the_owners_own() {
        let pw = "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nsvc:x:998:0::/:/bin/false\n";
        assert_eq!(idmap_group(1000, pw), 1000);
        // A user whose primary group is root, or who is unknown: nogroup.
        assert_eq!(idmap_group(998, pw), 65534);
        assert_eq!(idmap_group(4242, pw), 65534);
        assert_eq!(idmap_group(1000, ""), 65534);
    }

    #[test]
    fn user_mounts_shallowest_first() {
        let m = |t: &str| Mount {
            source: "/s".into(),
            target: t.into(),
            mode: MountMode::Ro,
        };
        let p = plan("/", &[m("/a/b/c"), m("/a"), m("/a/b")]);
        let order: Vec<_> = p.user_mounts.iter().map(|m| m.target.clone()).collect();
        assert_eq!(
            order,
            vec![PathBuf::from("/a"), "/a/b".into(), "/a/b/c".into()]
        );
    }
}
