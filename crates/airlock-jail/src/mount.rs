//! The sandbox's root filesystem.
//!
//! Compiling a spec into a [`RootPlan`] is pure. The child builds the root
//! on one size- and inode-capped tmpfs (the writable layer), attaches what
//! the plan names onto targets it resolves with `openat2(RESOLVE_IN_ROOT)`
//! — symlinks inside the new root cannot point out of it — then
//! `pivot_root`s into it, detaches the host's tree and makes `/` read-only;
//! `/tmp`, `$HOME`, `/dev/shm` and the working directory stay writable (same
//! tmpfs, same cap).
//!
//! **No host socket inode is reachable through a read-only mount.** A
//! read-only bind does not stop `connect()` to a unix socket under it (nor
//! does Landlock up to ABI 7), so a tmux, ssh-agent, dbus or docker socket
//! under a mounted directory would be a way out. Every directory read-only
//! from the host — the `host` image's and `ro` user mounts — is therefore
//! a read-only **overlayfs** over the host directory: an overlay's inodes
//! are its own, no socket is bound to them (`connect()` gives
//! `ECONNREFUSED`, also for sockets created after the sandbox started),
//! and locks and leases taken on them stay on the overlay's inodes instead
//! of the host's files. A `ro` file is a copy (below). Only `rw` mounts,
//! and `ro` files too large to copy, show host inodes themselves (see the
//! README for what that leaves).
//!
//! User mount sources are resolved once, on the host, by the parent with
//! [`crate::safepath`] (no symlink but root's is followed), and what that
//! walk ended on is what gets mounted — never a second lookup by name:
//! run by root, the parent opens it as a detached tree right there
//! (`open_tree` on the walk's fd, with `nosuid,nodev` and `ro` re-applied
//! recursively via `mount_setattr`); rootless, where only the child can
//! open trees, the plan carries the resolved path with its (dev, ino,
//! type) ([`Pinned`]) and the child opens that path without following any
//! symlink and refuses anything else. A `ro` mount of a single file is a
//! private read-only copy of that inode (up to [`COPY_MAX`]; larger ones
//! are that inode itself, read-only); only directories and regular files
//! can be mounted `ro`.
//!
//! Run by root, the sandbox's device nodes are its own: its whole `/dev`
//! is a small read-only tmpfs the parent makes ([`private_dev`]), so no
//! lock, inotify watch or timestamp of the nodes is shared with the
//! host's. Rootless, no node can be made: the host's are bound read-only
//! into a `/dev` on the sandbox's tmpfs.

use crate::sys::{self, cpath};
use crate::ChildFail;
use airlock_spec::{Mount, MountMode, User};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
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
/// The sandbox's device nodes: name, major, minor (Linux's fixed numbers).
const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];
/// Files up to this size are copied into the sandbox for a `ro` mount of a
/// single file; larger ones are bound (that very inode, read-only).
pub const COPY_MAX: u64 = 16 << 20;

/// What one path in the new root is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// A host directory, read-only, through an overlay (no host inode, so
    /// no host socket, under it is reachable).
    HostDir {
        path: PathBuf,
        source: PathBuf,
    },
    /// A character device, read-only (its timestamps cannot be changed
    /// from inside), `nosuid,noexec`: the sandbox's own node when run by
    /// root (in [`private_dev`]), the host's `source` bound rootless.
    Device {
        path: PathBuf,
        source: PathBuf,
        /// (major, minor).
        dev: (u32, u32),
    },
}

impl Entry {
    /// Where in the new root it goes.
    pub fn path(&self) -> &Path {
        match self {
            Entry::Dir { path, .. }
            | Entry::Symlink { path, .. }
            | Entry::File { path, .. }
            | Entry::Copy { path, .. }
            | Entry::HostDir { path, .. }
            | Entry::Device { path, .. } => path,
        }
    }
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
        for (d, _, _) in DEVICES {
            if Path::new("/dev").join(d).exists() {
                f.devices.push(d.to_string());
            }
        }
        f
    }
}

/// Everything the child needs to build the root.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// The root is an image's tree (one overlay), not the host image.
    #[serde(default)]
    pub image: Option<ImageRoot>,
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
                None => e.push(Entry::HostDir {
                    path: p(name.as_str()),
                    source: Path::new("/").join(name),
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
                HostKind::Dir => Entry::HostDir { path, source },
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
        e.extend(network_files(hostname));
        e.push(file(
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\nprotocols: files\nservices: files\n"
                .into(),
        ));
        e.push(Entry::Symlink {
            path: p("etc/mtab"),
            target: p("../proc/self/mounts"),
        });
        e.extend(dev_entries(facts));
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
            image: None,
        }
    }

    /// The plan of a root made of an image: one overlay whose lower layer
    /// is the image's tree and whose upper layer is on the sandbox's
    /// tmpfs (or, for a build step, `image.capture`). airlock adds only
    /// what a sandbox needs: `/proc`, its `/dev` (with `/dev/pts` and
    /// `/dev/shm`), `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`
    /// (written into the overlay, or bound over the image's own when the
    /// changes are kept), and `/tmp`, the user's home and the working
    /// directory where the image has none. The image's own `/etc`
    /// (passwd, group) is kept.
    #[allow(clippy::too_many_arguments)]
    pub fn compile_image(
        facts: &HostFacts,
        image: &ImageRoot,
        user: User,
        hostname: &str,
        workdir: &Path,
        mounts: &[Mount],
        disk: u64,
    ) -> RootPlan {
        let p = |s: &str| PathBuf::from(s);
        let mut e = dev_entries(facts);
        e.push(Entry::Dir {
            path: p("dev/pts"),
            mode: 0o755,
        });
        e.push(Entry::Dir {
            path: p("proc"),
            mode: 0o555,
        });
        e.extend(network_files(hostname));
        let rel = |a: &Path| a.strip_prefix("/").unwrap_or(a).to_path_buf();
        let mut writable = vec![(p("dev/shm"), 0o1777, false)];
        if image.capture.is_none() {
            // Made in the overlay where the image has none (a build step
            // gets nothing it did not make itself).
            for (dir, mode, owned) in [
                (p("tmp"), 0o1777, false),
                (rel(&image.home), 0o755, true),
                (rel(workdir), 0o755, true),
            ] {
                if !dir.as_os_str().is_empty() && !writable.iter().any(|(w, _, _)| *w == dir) {
                    writable.push((dir, mode, owned));
                }
            }
        }
        let mut user_mounts = mounts.to_vec();
        user_mounts.sort_by_key(|m| m.target.components().count());
        RootPlan {
            disk,
            entries: e,
            writable,
            user_mounts,
            user,
            workdir_below: None,
            image: Some(image.clone()),
        }
    }
}

impl RootPlan {
    /// Transparent egress: `/etc/resolv.conf` names the agent's DNS stub
    /// (127.0.0.1:53), and the host image's `/etc/nsswitch.conf` asks DNS
    /// after `/etc/hosts`. Nothing else changes.
    pub fn use_dns_stub(&mut self) {
        for e in &mut self.entries {
            let Entry::File { path, contents, .. } = e else {
                continue;
            };
            if path == Path::new("etc/resolv.conf") {
                *contents = b"nameserver 127.0.0.1\noptions timeout:2 attempts:2\n".to_vec();
            } else if path == Path::new("etc/nsswitch.conf") {
                let text = String::from_utf8_lossy(contents)
                    .replace("hosts: files\n", "hosts: files dns\n");
                *contents = text.into_bytes();
            }
        }
    }
}

/// The sandbox's `/dev`: the directory, the device nodes the host has,
/// and the usual symlinks.
fn dev_entries(facts: &HostFacts) -> Vec<Entry> {
    let p = |s: &str| PathBuf::from(s);
    let mut e = vec![Entry::Dir {
        path: p("dev"),
        mode: 0o755,
    }];
    for d in &facts.devices {
        let Some(&(_, major, minor)) = DEVICES.iter().find(|(n, _, _)| n == d) else {
            continue;
        };
        e.push(Entry::Device {
            path: Path::new("dev").join(d),
            source: Path::new("/dev").join(d),
            dev: (major, minor),
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
    e
}

/// `/etc/hostname`, `/etc/hosts` and an empty `/etc/resolv.conf` (no
/// network but loopback).
fn network_files(hostname: &str) -> Vec<Entry> {
    let file = |name: &str, contents: String| Entry::File {
        path: Path::new("etc").join(name),
        contents: contents.into_bytes(),
        mode: 0o644,
    };
    vec![
        file("hostname", format!("{hostname}\n")),
        file(
            "hosts",
            format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        ),
        file("resolv.conf", String::new()),
    ]
}

/// An image as a sandbox's root: its tree in the store is the lower layer
/// of the root overlay.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageRoot {
    /// The image's flattened tree on the host (in the store).
    pub tree: PathBuf,
    /// The home directory of the sandbox's user inside (made if missing).
    pub home: PathBuf,
    /// A build step's: the changes are kept in `upper` (and overlayfs
    /// works in `work`) of this host directory instead of vanishing with
    /// the sandbox's tmpfs.
    #[serde(default)]
    pub capture: Option<PathBuf>,
    /// Run by root: the tree's files already carry the sandbox's host ids
    /// (an overlay whose layers were id-mapped onto the sandbox's range,
    /// as `airlock oci` makes of an engine's overlay rootfs, which itself
    /// cannot be id-mapped), so it is not id-mapped again.
    #[serde(default)]
    pub premapped: bool,
}

/// The names of the upper and work directories in [`ImageRoot::capture`].
pub const CAPTURE_UPPER: &str = "upper";
pub const CAPTURE_WORK: &str = "work";

/// Rootless: the image's tree (and the capture directory) as the parent
/// resolved them on the host, for the agent to open (see [`Pinned`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImagePins {
    pub tree: Pinned,
    #[serde(default)]
    pub capture: Option<Pinned>,
}

/// One user mount, opened.
pub struct OpenedMount {
    /// The detached tree of the source: the object the parent's check
    /// ended on, never looked up again by name.
    pub tree: OwnedFd,
    pub is_dir: bool,
}

/// Detached mount trees, in the order the child uses them.
pub struct OpenedTrees {
    /// The host's device nodes (rootless), one per `Entry::Device`, in
    /// entry order; empty when `dev_fs` holds the sandbox's own.
    pub devices: Vec<OwnedFd>,
    /// Run by root: the sandbox's own `/dev` ([`private_dev`]), which the
    /// child attaches there.
    pub dev_fs: Option<OwnedFd>,
    /// One per user mount, in `user_mounts` order.
    pub mounts: Vec<OpenedMount>,
    /// The image's tree, a read-only (`nosuid,nodev`) clone, id-mapped
    /// onto the sandbox's ids when run by root; `None` for the host image.
    pub image: Option<OwnedFd>,
    /// A build step's capture directory (writable clone, id-mapped alike).
    pub capture: Option<OwnedFd>,
    /// Things the user should hear about (a mount that could not be
    /// id-mapped).
    pub notes: Vec<String>,
}

/// A user mount's source as the parent resolved it on the host, for a
/// rootless child to open: the path the walk took (every symlink replaced
/// by what it points at, so it has none) and what it found there. The
/// child opens the path without following any symlink
/// ([`Pinned::open`]) and refuses anything that is not this object —
/// it never walks the path itself, which inside its user namespace would
/// take the caller's own symlinks for root's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pinned {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    /// `st_mode & S_IFMT`.
    pub kind: u32,
}

impl Pinned {
    pub fn of(r: &crate::safepath::Resolved) -> Pinned {
        Pinned {
            path: r.real.clone(),
            dev: r.stat.st_dev,
            ino: r.stat.st_ino,
            kind: r.stat.st_mode & libc::S_IFMT,
        }
    }

    /// Opens (`O_PATH`) the object at `path` with `openat2(RESOLVE_NO_SYMLINKS
    /// | RESOLVE_NO_MAGICLINKS)`, and only if it is still the one pinned.
    pub fn open(&self, source: &Path) -> Result<OwnedFd, crate::JailError> {
        let changed = |why: String| crate::JailError::MountChanged {
            source_path: source.to_path_buf(),
            path: self.path.clone(),
            why,
        };
        let c = sys::cpath(&self.path).map_err(|err| crate::JailError::MountSource {
            source_path: source.to_path_buf(),
            err,
        })?;
        // No O_NOFOLLOW: with it, O_PATH would open a symlink now at the
        // end of the path as itself; without it, RESOLVE_NO_SYMLINKS
        // refuses it (ELOOP) like any other on the way.
        let fd = sys::openat2(
            libc::AT_FDCWD,
            &c,
            libc::O_PATH,
            0,
            sys::RESOLVE_NO_SYMLINKS | sys::RESOLVE_NO_MAGICLINKS,
        )
        .map_err(|err| match err.raw_os_error() {
            Some(libc::ELOOP) => changed("a symlink is now on its path".into()),
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => changed(format!("{err}")),
            _ => crate::JailError::MountSource {
                source_path: source.to_path_buf(),
                err,
            },
        })?;
        let st = sys::fstat(fd.as_raw_fd()).map_err(|err| crate::JailError::MountSource {
            source_path: source.to_path_buf(),
            err,
        })?;
        if st.st_dev != self.dev || st.st_ino != self.ino || st.st_mode & libc::S_IFMT != self.kind
        {
            return Err(changed("another object is there now".into()));
        }
        Ok(fd)
    }
}

fn source_err(m: &Mount) -> impl Fn(io::Error) -> crate::JailError + '_ {
    move |err| crate::JailError::MountSource {
        source_path: m.source.clone(),
        err,
    }
}

/// Resolves a user mount's source (see [`crate::safepath`]) and checks it
/// is something that mode may mount. Run by the parent, on the host, before
/// anything exists: the only resolution of the path there is.
pub fn check_source(m: &Mount) -> Result<crate::safepath::Resolved, crate::JailError> {
    let r = crate::safepath::resolve(&m.source).map_err(|err| crate::JailError::MountPath {
        source_path: m.source.clone(),
        err,
    })?;
    if r.is_socket() && m.mode != MountMode::Rw {
        return Err(crate::JailError::MountSocket {
            source_path: m.source.clone(),
            mode: if m.mode == MountMode::Ro {
                "ro"
            } else {
                "overlay"
            },
        });
    }
    if m.mode == MountMode::Overlay && !r.is_dir() {
        return Err(crate::JailError::OverlayNotDir {
            source_path: m.source.clone(),
        });
    }
    if m.mode == MountMode::Ro && !r.is_dir() && !r.is_regular() {
        return Err(crate::JailError::MountNotRegular {
            source_path: m.source.clone(),
            kind: kind_name(r.stat.st_mode),
        });
    }
    Ok(r)
}

/// What a file of mode `mode` is, in words.
fn kind_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symlink",
        libc::S_IFSOCK => "a unix socket",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        _ => "of an unknown kind",
    }
}

/// The flags of a user mount's tree.
fn mount_attrs(m: &Mount) -> u64 {
    let mut attrs = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
    if m.mode != MountMode::Rw {
        attrs |= sys::MOUNT_ATTR_RDONLY;
    }
    attrs
}

/// Run by root, before the sandbox exists: opens every source as a
/// detached tree with its attributes set — the user mounts and the
/// sandbox's own `/dev` ([`private_dev`]) (the `host` image's
/// directories are overlaid by path in the child).
///
/// `idmap_to`: the host uid/gid of the sandbox's user. A user mount is
/// id-mapped so that its owner appears inside as the sandbox's user, and
/// what the sandbox creates there belongs to that owner on the host —
/// never to the subordinate uid, never to root — when the owner is not
/// root and the path down to it belongs to root or that owner only
/// ([`crate::safepath::Resolved::owner_chain`]).
pub fn open_trees(
    plan: &RootPlan,
    idmap_to: (u32, u32),
    sandbox: &crate::IdMap,
) -> Result<OpenedTrees, crate::JailError> {
    let mut notes = Vec::new();
    let mut mounts = Vec::new();
    let passwd = if !plan.user_mounts.is_empty() {
        std::fs::read_to_string("/etc/passwd").unwrap_or_default()
    } else {
        String::new()
    };
    let mut namespaces: Vec<((u32, u32), OwnedFd)> = Vec::new();
    for m in &plan.user_mounts {
        let r = check_source(m)?;
        let err = source_err(m);
        let is_dir = r.is_dir();
        // A directory is cloned with what is mounted below it; a file
        // alone. The fd names what the walk checked: no second lookup.
        let tree = sys::open_tree_clone_fd(r.fd.as_raw_fd(), is_dir).map_err(&err)?;
        sys::mount_setattr(tree.as_raw_fd(), mount_attrs(m), 0, is_dir).map_err(&err)?;
        let owner = (r.stat.st_uid, r.stat.st_gid);
        // Whom to map, if anyone. A root-owned source is never mapped, in
        // any mode: the sandbox would hold root's owner rights over the
        // tree — read root-only files (a mounted /etc's shadow), and with rw
        // leave setuid-root programs behind. Nor is one that sits below a
        // directory of another user (who could have put it there). Either
        // stays as it is: its files appear owned by nobody and are usable
        // only where others may.
        let map = match r.owner_chain() {
            // The tree is only ever the overlay's lower layer (the spec
            // allows as_owner nowhere else): nothing reaches the host.
            Some(0) if m.as_owner && m.mode == MountMode::Overlay => Some(idmap_to),
            Some(0) => {
                notes.push(format!(
                    "{} is owned by root, so it is not id-mapped: the sandbox sees its files as nobody's and may read or write only where others may (chown -R it to a normal user and group, e.g. alice:alice, to work in it as its owner)",
                    m.source.display()
                ));
                None
            }
            None => {
                notes.push(format!(
                    "{} (owned by uid {}) lies inside a directory of another user, so it is not id-mapped to its owner: the sandbox sees its files as nobody's and may read or write only where others may (mount it from a path that belongs to root or to its owner alone)",
                    m.source.display(),
                    owner.0
                ));
                None
            }
            Some(_) => Some(idmap_to),
        };
        // The group side maps only onto the owner's own primary group: the
        // directory's group may be root or another privileged group
        // (docker, shadow), which the sandbox must neither read as nor
        // leave setgid programs of.
        // (A root-owned overlay worked in as its owner maps root's group
        // too: the overlay's copy-up must be able to keep a file's group.)
        let owner = if owner.0 == 0 && m.as_owner && m.mode == MountMode::Overlay {
            (0, 0)
        } else {
            (owner.0, idmap_group(owner.0, &passwd))
        };
        if let Some(host) = map {
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
                    tree.as_raw_fd(),
                    sys::MOUNT_ATTR_IDMAP,
                    0,
                    is_dir,
                    Some(ns),
                ) {
                    notes.push(format!(
                        "cannot id-map {} ({e}); its files appear owned by nobody and the sandbox user can write only where others may",
                        m.source.display()
                    ));
                }
                if m.mode == MountMode::Rw && is_dir {
                    if let Some(n) = foreign_ids_note(&r, owner, &m.source) {
                        notes.push(n);
                    }
                }
            }
        }
        mounts.push(OpenedMount { tree, is_dir });
    }
    let (devices, dev_fs) = match private_dev(plan) {
        Ok(fs) => (Vec::new(), Some(fs)),
        Err(e) => {
            // Where root may not make device nodes (a container without
            // CAP_MKNOD): the host's, bound read-only, and the user hears.
            notes.push(format!(
                "cannot make the sandbox's own device nodes ({e}): the host's /dev/null, /dev/zero, ... are bound read-only instead (locks and inotify watches on them are shared with the host)"
            ));
            (host_devices(plan)?, None)
        }
    };
    let (image, capture) = match &plan.image {
        Some(img) => {
            let (uid_map, gid_map) = sandbox.map_lines();
            let ns = crate::userns::userns_with_maps(&uid_map, &gid_map).map_err(|err| {
                crate::JailError::Image {
                    path: img.tree.clone(),
                    what: "cannot make the user namespace that maps the image's owners",
                    err,
                }
            })?;
            let idmap = (!img.premapped).then(|| ns.as_raw_fd());
            let tree = open_image_tree(&img.tree, true, idmap)?;
            let capture = match &img.capture {
                Some(c) => Some(open_image_tree(c, false, Some(ns.as_raw_fd()))?),
                None => None,
            };
            (Some(tree), capture)
        }
        None => (None, None),
    };
    Ok(OpenedTrees {
        devices,
        dev_fs,
        mounts,
        image,
        capture,
        notes,
    })
}

/// Resolves an image's tree (or a build step's capture directory) on the
/// host, the way mount sources are ([`crate::safepath`]: no symlink but
/// root's is followed), and checks it is a directory.
pub fn check_image_dir(path: &Path) -> Result<crate::safepath::Resolved, crate::JailError> {
    let r = crate::safepath::resolve(path).map_err(|err| crate::JailError::ImagePath {
        path: path.to_path_buf(),
        err,
    })?;
    if !r.is_dir() {
        return Err(crate::JailError::Image {
            path: path.to_path_buf(),
            what: "not a directory",
            err: io::Error::from_raw_os_error(libc::ENOTDIR),
        });
    }
    Ok(r)
}

/// The parent's clone of an image's tree (`ro`) or of a capture directory
/// (writable), `nosuid,nodev`, not recursive (a tree in the store has no
/// mounts below it), id-mapped with the user namespace `idmap` when one is
/// given: the sandbox's ids, so that the files keep their owners inside
/// and what a build step writes lands as the ids it wrote.
fn open_image_tree(
    path: &Path,
    ro: bool,
    idmap: Option<RawFd>,
) -> Result<OwnedFd, crate::JailError> {
    let r = check_image_dir(path)?;
    let err = |what: &'static str| {
        move |err| crate::JailError::Image {
            path: path.to_path_buf(),
            what,
            err,
        }
    };
    let tree = sys::open_tree_clone_fd(r.fd.as_raw_fd(), false).map_err(err("cannot open"))?;
    let mut attrs = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
    if ro {
        attrs |= sys::MOUNT_ATTR_RDONLY;
    }
    sys::mount_setattr(tree.as_raw_fd(), attrs, 0, false).map_err(err("cannot set flags on"))?;
    if let Some(ns) = idmap {
        sys::mount_setattr_userns(tree.as_raw_fd(), sys::MOUNT_ATTR_IDMAP, 0, false, Some(ns))
            .map_err(err("cannot id-map"))?;
    }
    Ok(tree)
}

/// Rootless, in the child (which owns its mount namespace; the parent has
/// no right to open trees): opens the user mounts' sources that the parent
/// resolved and pinned — one [`Pinned`] per user mount, in order — and
/// binds the host's device nodes (no node can be made here).
pub fn open_pinned_trees(
    plan: &RootPlan,
    pins: &[Pinned],
    image_pins: Option<&ImagePins>,
) -> Result<OpenedTrees, crate::JailError> {
    if pins.len() != plan.user_mounts.len() {
        return Err(crate::JailError::PinCount {
            pins: pins.len(),
            mounts: plan.user_mounts.len(),
        });
    }
    let devices = host_devices(plan)?;
    let mut mounts = Vec::new();
    for (m, pin) in plan.user_mounts.iter().zip(pins) {
        let fd = pin.open(&m.source)?;
        let is_dir = pin.kind == libc::S_IFDIR;
        let err = source_err(m);
        let tree = sys::open_tree_clone_fd(fd.as_raw_fd(), is_dir).map_err(&err)?;
        sys::mount_setattr(tree.as_raw_fd(), mount_attrs(m), 0, is_dir).map_err(&err)?;
        mounts.push(OpenedMount { tree, is_dir });
    }
    let (mut image, mut capture) = (None, None);
    if let Some(img) = &plan.image {
        let Some(pins) = image_pins.filter(|p| p.capture.is_some() == img.capture.is_some()) else {
            return Err(crate::JailError::PinCount { pins: 0, mounts: 1 });
        };
        let open = |pin: &Pinned, source: &Path, ro: bool| -> Result<OwnedFd, crate::JailError> {
            if pin.kind != libc::S_IFDIR {
                return Err(crate::JailError::Image {
                    path: source.to_path_buf(),
                    what: "not a directory",
                    err: io::Error::from_raw_os_error(libc::ENOTDIR),
                });
            }
            let fd = pin.open(source)?;
            // Rootless, the tree is the caller's, as is the sandbox's
            // root: no id mapping.
            let err = |err| crate::JailError::Image {
                path: source.to_path_buf(),
                what: "cannot open",
                err,
            };
            let tree = sys::open_tree_clone_fd(fd.as_raw_fd(), false).map_err(err)?;
            let mut attrs = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
            if ro {
                attrs |= sys::MOUNT_ATTR_RDONLY;
            }
            sys::mount_setattr(tree.as_raw_fd(), attrs, 0, false).map_err(err)?;
            Ok(tree)
        };
        image = Some(open(&pins.tree, &img.tree, true)?);
        if let (Some(pin), Some(c)) = (&pins.capture, &img.capture) {
            capture = Some(open(pin, c, false)?);
        }
    }
    Ok(OpenedTrees {
        devices,
        dev_fs: None,
        mounts,
        image,
        capture,
        notes: Vec::new(),
    })
}

/// The host's device nodes, each a read-only, `nosuid,noexec` clone.
fn host_devices(plan: &RootPlan) -> Result<Vec<OwnedFd>, crate::JailError> {
    let attrs = sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC;
    let mut devices = Vec::new();
    for e in &plan.entries {
        if let Entry::Device { source, .. } = e {
            devices.push(open_one(source, false, attrs)?);
        }
    }
    Ok(devices)
}

/// Run by root, in the initial user namespace: the sandbox's own `/dev`.
/// A small tmpfs (detached: `fsopen`/`fsmount`, a few inodes, no data)
/// gets what the plan puts below `dev/` — a character device per
/// `Entry::Device` (mode 0666, root's), the symlinks (`fd`, `stdin`, ...)
/// and directories (`pts`), and mount points for the writable directories
/// there (`shm`, a working directory) — and turns read-only
/// (`nosuid,noexec`); the child attaches it as `/dev`. (No user mount
/// targets `/dev`: the spec refuses it.)
/// Made here because nodes on a filesystem mounted inside a user
/// namespace never open; one mount for all of `/dev` because binding each
/// node on its own costs a clone here and a mount there per node, on the
/// start-up path.
pub fn private_dev(plan: &RootPlan) -> io::Result<OwnedFd> {
    let dev = Path::new("dev");
    let below = |p: &Path| -> Option<PathBuf> {
        let p = p.strip_prefix("/").unwrap_or(p);
        p.strip_prefix(dev)
            .ok()
            .filter(|r| !r.as_os_str().is_empty())
            .map(Path::to_path_buf)
    };
    let inodes = plan.entries.iter().filter(|e| below(e.path()).is_some()).count()
        + plan
            .writable
            .iter()
            .filter_map(|(d, _, _)| below(d))
            .map(|r| r.components().count())
            .sum::<usize>()
        // Its root, and a few to spare.
        + 4;
    let inodes = cstring(inodes.to_string());
    let fs = sys::fs_mount(
        c"tmpfs",
        &[(c"nr_inodes", inodes.as_c_str()), (c"mode", c"0755")],
        sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC,
    )?;
    let root = fs.as_raw_fd();
    for e in &plan.entries {
        match e {
            Entry::Device {
                path,
                dev: (major, minor),
                ..
            } => {
                let Some(r) = below(path) else { continue };
                let c = sys::cpath(&r)?;
                // SAFETY: a valid fd and C string; makes a character device.
                sys::cvt(unsafe {
                    libc::mknodat(
                        root,
                        c.as_ptr(),
                        libc::S_IFCHR | 0o666,
                        libc::makedev(*major, *minor),
                    )
                })?;
                // The umask took some bits off.
                // SAFETY: a valid fd and C string.
                sys::cvt(unsafe { libc::fchmodat(root, c.as_ptr(), 0o666, 0) })?;
            }
            Entry::Symlink { path, target } => {
                let Some(r) = below(path) else { continue };
                let (c, t) = (sys::cpath(&r)?, sys::cpath(target)?);
                // SAFETY: valid C strings and fd.
                sys::cvt(unsafe { libc::symlinkat(t.as_ptr(), root, c.as_ptr()) })?;
            }
            Entry::Dir { path, .. } => {
                if let Some(r) = below(path) {
                    dev_mkdirs(root, &r)?;
                }
            }
            Entry::File { path, .. } | Entry::Copy { path, .. } | Entry::HostDir { path, .. } => {
                if below(path).is_some() {
                    return Err(io::Error::from_raw_os_error(libc::EINVAL));
                }
            }
        }
    }
    for (dir, _, _) in &plan.writable {
        if let Some(r) = below(dir) {
            dev_mkdirs(root, &r)?;
        }
    }
    sys::mount_setattr(root, sys::MOUNT_ATTR_RDONLY, 0, false)?;
    Ok(fs)
}

/// Creates the directory `rel` and those on its way (mode 0755) below the
/// directory `root`, never following a symlink; what exists is kept.
fn dev_mkdirs(root: RawFd, rel: &Path) -> io::Result<()> {
    let mut held: Option<OwnedFd> = None;
    let n = rel.components().count();
    for (i, c) in rel.components().enumerate() {
        let std::path::Component::Normal(name) = c else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        let dir = held.as_ref().map_or(root, |d| d.as_raw_fd());
        let c = sys::cpath(Path::new(name))?;
        // SAFETY: a valid fd and C string.
        if unsafe { libc::mkdirat(dir, c.as_ptr(), 0o755) } == 0 {
            // SAFETY: as above; the umask may have taken bits off.
            sys::cvt(unsafe { libc::fchmodat(dir, c.as_ptr(), 0o755, 0) })?;
        } else {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
        if i + 1 < n {
            // SAFETY: a valid fd and C string; O_NOFOLLOW refuses a symlink.
            let fd = sys::cvt(unsafe {
                libc::openat(
                    dir,
                    c.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            })?;
            // SAFETY: a new fd that nothing else owns.
            held = Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
    }
    Ok(())
}

/// Entries looked at, at most, for [`foreign_ids_note`].
const FOREIGN_SCAN: usize = 4096;

/// An id-mapped rw mount maps its owner and the owner's own group only:
/// files of any other user or group there cannot be written from inside
/// (the kernel refuses with EOVERFLOW). Says so, with the fix, when the
/// first entries of the tree hold such files.
fn foreign_ids_note(
    r: &crate::safepath::Resolved,
    (uid, gid): (u32, u32),
    source: &Path,
) -> Option<String> {
    // SAFETY: a valid fd and C string; the kernel returns a new fd or -1.
    let fd = unsafe {
        libc::openat(
            r.fd.as_raw_fd(),
            c".".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a new fd that nothing else owns.
    let dir = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let root = std::path::PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    let mut queue = std::collections::VecDeque::from([root.clone()]);
    let mut seen = 0usize;
    let mut bad_group = None;
    let mut bad_user = None;
    while let Some(d) = queue.pop_front() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            seen += 1;
            if seen > FOREIGN_SCAN {
                break;
            }
            use std::os::unix::fs::MetadataExt;
            let Ok(md) = e.metadata() else { continue };
            let rel = e.path().strip_prefix(&root).map(Path::to_path_buf).ok();
            if md.uid() != uid && bad_user.is_none() {
                bad_user = rel.clone().map(|p| (p, md.uid()));
            } else if md.gid() != gid && bad_group.is_none() {
                bad_group = rel.clone().map(|p| (p, md.gid()));
            }
            if md.is_dir() && !md.file_type().is_symlink() {
                queue.push_back(e.path());
            }
        }
        if seen > FOREIGN_SCAN {
            break;
        }
    }
    let (what, path, id) = match (bad_user, bad_group) {
        (Some((p, u)), _) => ("owned by uid", p, u),
        (None, Some((p, g))) => ("of group", p, g),
        (None, None) => return None,
    };
    Some(format!(
        "{} is id-mapped for uid {uid} and group {gid} only: files in it that are {what} {id} (such as {}) cannot be changed from the sandbox (the kernel says \"Permission denied\", or \"Value too large for defined data type\" for chmod and utime); run `chown -R {uid}:{gid} {}` (or chgrp -R {gid}) to work in them",
        source.display(),
        path.display(),
        source.display(),
    ))
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
        errno: sys::errno_of(&e),
        detail: format!("{} {}: {e}", what.into(), path.display()),
    }
}

fn cstring(s: String) -> CString {
    // Sizes and paths built here contain no NUL bytes.
    CString::new(s).unwrap_or_default()
}

/// The most ptys one sandbox's devpts hands out (the host's `kernel.pty.max`
/// is shared by every devpts instance but the host's own).
pub const MAX_PTYS: u32 = 64;
/// Inodes of the root tmpfs: one per this many bytes of `--disk`, so that
/// `--disk` also caps the kernel memory its files cost (each empty file
/// costs about a KiB of slab)...
pub const BYTES_PER_INODE: u64 = 4096;
/// ...but never fewer than this (the sandbox's own /etc, /dev and
/// directories take about fifty).
pub const MIN_INODES: u64 = 1024;

/// The tmpfs `nr_inodes` for a `--disk` size.
pub fn inodes_for(disk: u64) -> u64 {
    (disk / BYTES_PER_INODE).max(MIN_INODES)
}

/// An empty directory of the new root that read-only overlays use as their
/// second (bottom) lower layer — overlayfs wants two lower layers when it
/// has no upper one. `proc` is empty until procfs is mounted over it, which
/// the overlays do not see (they hold the tmpfs directory itself).
const EMPTY_LOWER: &str = "proc";
/// On kernels before 6.13 (no layers by fd), where a lower tree is
/// attached while an overlay is made of it (removed afterwards).
const HOST_LOWER: &str = ".airlock-lower";

/// Where detached mounts that are no longer needed are put: stacked on the
/// old root's `/proc` (nothing there is used once the new root is being
/// built), they go with the old root in the one detach after `pivot_root`.
/// Closing the last fd of a detached mount instead would detach it there
/// and then, and every detach waits for an RCU grace period (hundreds of
/// µs here).
const PARK: &str = "/proc";

/// Puts a detached mount away (see [`PARK`]).
fn park(fd: OwnedFd, what: &Path) -> Result<(), ChildFail> {
    sys::move_mount_path(fd.as_raw_fd(), Path::new(PARK)).map_err(|e| fail("park", what, e))
}

/// Makes overlays whose lower layer is a detached tree. Since Linux 6.13
/// overlayfs takes layers as fds, so nothing is attached; older kernels
/// get the tree attached for a moment inside the (attached) new root and
/// named by path.
struct Overlays {
    /// The empty bottom layer for read-only overlays (the new root's
    /// `proc`, empty until procfs goes over it), as an `O_PATH` fd...
    empty_fd: OwnedFd,
    /// ...and, on older kernels, by path.
    empty: PathBuf,
    /// Where trees are attached on older kernels.
    lower_at: PathBuf,
    by_fd: bool,
}

impl Overlays {
    /// `root` is the new root's tmpfs, still detached; `stage` is where it
    /// will be attached.
    fn new(root: &OwnedFd, stage: &Path) -> Result<Overlays, ChildFail> {
        let empty = stage.join(EMPTY_LOWER);
        // SAFETY: valid fd and C string.
        sys::cvt(unsafe { libc::mkdirat(root.as_raw_fd(), c"proc".as_ptr(), 0o755) })
            .map_err(|e| fail("mkdir", &empty, e))?;
        // SAFETY: valid fd and C string; the kernel returns a new fd or -1.
        let fd = sys::cvt(unsafe {
            libc::openat(
                root.as_raw_fd(),
                c"proc".as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })
        .map_err(|e| fail("open", &empty, e))?;
        // SAFETY: a new fd that nothing else owns.
        let empty_fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let by_fd = sys::overlay_takes_fds(empty_fd.as_raw_fd());
        Ok(Overlays {
            empty_fd,
            empty,
            lower_at: stage.join(HOST_LOWER),
            by_fd,
        })
    }

    /// An overlay of the detached tree `lower` (consumed: parked, or
    /// detached on older kernels): read-only over the empty layer, or
    /// writable with `upper` = (upperdir, workdir).
    fn make(&self, lower: OwnedFd, upper: Option<(&Path, &Path)>) -> Result<OwnedFd, ChildFail> {
        self.make_with(lower, upper, &[])
    }

    /// [`Overlays::make`] with `extra` options.
    fn make_with(
        &self,
        lower: OwnedFd,
        upper: Option<(&Path, &Path)>,
        extra: &[(&CStr, &CStr)],
    ) -> Result<OwnedFd, ChildFail> {
        let what = Path::new("overlay");
        let mut attrs = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
        let up = upper.map(|(u, w)| {
            (
                cstring(u.display().to_string()),
                cstring(w.display().to_string()),
            )
        });
        // The sandbox is always in a user namespace, where only user.*
        // xattrs can be set on an upper layer.
        let mut opts: Vec<(&CStr, &CStr)> = vec![(c"userxattr", c"")];
        opts.extend_from_slice(extra);
        match &up {
            Some((u, w)) => {
                opts.push((c"upperdir", u));
                opts.push((c"workdir", w));
            }
            None => attrs |= sys::MOUNT_ATTR_RDONLY,
        }
        if self.by_fd {
            let mut lowers = vec![lower.as_raw_fd()];
            if upper.is_none() {
                // Without an upper layer overlayfs wants two lower ones.
                lowers.push(self.empty_fd.as_raw_fd());
            }
            let made = sys::overlay_from_fds(&lowers, &opts, attrs).map_err(|e| match e {
                sys::OverlayFdError::Other(e) | sys::OverlayFdError::Unsupported(e) => {
                    fail("make overlay of", what, e)
                }
            });
            park(lower, what)?;
            return made;
        }
        mkdir(&self.lower_at, 0o700)?;
        sys::move_mount_path(lower.as_raw_fd(), &self.lower_at)
            .map_err(|e| fail("attach lower of", what, e))?;
        let spec = if upper.is_some() {
            cstring(self.lower_at.display().to_string())
        } else {
            cstring(format!(
                "{}:{}",
                self.lower_at.display(),
                self.empty.display()
            ))
        };
        opts.push((c"lowerdir", &spec));
        let made = sys::fs_mount(c"overlay", &opts, attrs).map_err(|e| fail("make", what, e));
        // The overlay holds its own reference to the lower layer.
        umount_detach(&self.lower_at)?;
        rmdir(&self.lower_at)?;
        made
    }
}

impl RootPlan {
    /// The host directories the `host` image overlays, one per top-level
    /// directory (`/usr`, `/etc`), in the order first used.
    pub fn host_layers(&self) -> Vec<PathBuf> {
        let mut layers: Vec<PathBuf> = Vec::new();
        for e in &self.entries {
            if let Entry::HostDir { source, .. } = e {
                let top = top_of(source);
                if !layers.contains(&top) {
                    layers.push(top);
                }
            }
        }
        layers
    }
}

/// `/usr/lib` → `/usr`.
fn top_of(p: &Path) -> PathBuf {
    let mut it = p
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)));
    match it.next() {
        Some(c) => Path::new("/").join(c),
        None => PathBuf::from("/"),
    }
}

/// Child side, uid 0 of a fresh user + mount namespace: builds the root and
/// pivots into it. Returns with `/` being the new root, and what the user
/// should hear about.
pub fn build_root(
    plan: &RootPlan,
    trees: &OpenedTrees,
    rootless: bool,
) -> Result<Vec<String>, ChildFail> {
    if let Some(img) = &plan.image {
        return build_image_root(plan, img, trees, rootless);
    }
    let mut notes = Vec::new();
    let stage = Path::new(STAGE);
    make_private()?;
    let files = file_sources(plan, trees)?;

    // The new root: one tmpfs, the writable layer, still detached.
    let tmpfs = writable_tmpfs(plan.disk, stage)?;
    let overlays = Overlays::new(&tmpfs, stage)?;
    let mut lowers = user_lowers(plan, trees, rootless)?;

    // With layers by fd, every read-only overlay is made now, before the
    // new root is attached; older kernels make them below, by path.
    let mut host = if overlays.by_fd {
        Some(host_dirs(plan, &overlays, &mut notes)?)
    } else {
        None
    };
    let shown = ro_overlays_now(plan, &overlays, &mut lowers)?;

    sys::move_mount_path(tmpfs.as_raw_fd(), stage)
        .map_err(|e| fail("attach tmpfs at", stage, e))?;
    drop(tmpfs);
    if host.is_none() {
        host = Some(host_dirs(plan, &overlays, &mut notes)?);
    }

    let root = |rel: &Path| stage.join(rel);
    let uid = plan.user.uid;
    let gid = plan.user.gid;
    // Run by root, `/dev` is the parent's tmpfs with everything below it
    // (the sandbox's own device nodes). The writable directories there
    // (/dev/shm) are directories of the sandbox's tmpfs (same --disk),
    // made where the parent's /dev will hide them and bound into it.
    let dev = Path::new("dev");
    let in_dev = |p: &Path| trees.dev_fs.is_some() && p.starts_with(dev) && p != dev;
    let mut dev_attached = false;
    let mut rooms = Vec::new();
    let mut devices = trees.devices.iter();
    for e in &plan.entries {
        match e {
            Entry::Dir { path, .. } | Entry::Symlink { path, .. } | Entry::Device { path, .. }
                if in_dev(path) => {}
            Entry::Dir { path, mode } => {
                if path != Path::new(EMPTY_LOWER) {
                    mkdir(&root(path), *mode)?
                }
                if let (Some(fs), true) = (&trees.dev_fs, path == dev) {
                    for (dir, mode, owned) in &plan.writable {
                        if in_dev(dir) {
                            let t = root(dir);
                            mkdir_all(&t)?;
                            set_mode(&t, *mode)?;
                            if *owned && !rootless {
                                chown(&t, uid, gid)?;
                            }
                            rooms.push(
                                sys::open_tree_clone(&t, false)
                                    .map_err(|e| fail("open", dir, e))?,
                            );
                        }
                    }
                    sys::move_mount_path(fs.as_raw_fd(), &root(path))
                        .map_err(|e| fail("attach the sandbox's own /dev at", path, e))?;
                    dev_attached = true;
                }
            }
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
            Entry::HostDir { path, .. } => mkdir(&root(path), 0o755)?,
            Entry::Device { path, .. } => {
                let fd = devices.next().ok_or_else(|| {
                    fail(
                        "no opened tree for",
                        path,
                        io::Error::from_raw_os_error(libc::EINVAL),
                    )
                })?;
                let t = root(path);
                write_new(&t, b"", 0o644)?;
                sys::move_mount_path(fd.as_raw_fd(), &t).map_err(|e| fail("bind onto", path, e))?;
            }
        }
    }
    if trees.dev_fs.is_some() && !dev_attached {
        return Err(fail(
            "no place in the plan for",
            dev,
            io::Error::from_raw_os_error(libc::EINVAL),
        ));
    }
    for (path, fd) in host.unwrap_or_default() {
        sys::move_mount_path(fd.as_raw_fd(), &root(&path))
            .map_err(|e| fail("bind onto", &path, e))?;
    }

    // Writable directories: bound onto themselves so they keep `rw` when `/`
    // becomes read-only (below the parent's /dev: made above).
    let mut rooms = rooms.into_iter();
    for (dir, mode, owned) in &plan.writable {
        let t = root(dir);
        if in_dev(dir) {
            let room = rooms.next().ok_or_else(|| {
                fail(
                    "no room made for",
                    dir,
                    io::Error::from_raw_os_error(libc::EINVAL),
                )
            })?;
            sys::move_mount_path(room.as_raw_fd(), &t).map_err(|e| fail("bind onto", dir, e))?;
            continue;
        }
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

    // The user's mounts, shallowest first, onto targets resolved inside the
    // new root. (procfs is mounted after them: the read-only overlays use
    // the empty `proc` directory as their bottom layer.)
    let root_dir = std::fs::File::open(stage).map_err(|e| fail("open", stage, e))?;
    // Overlay upper layers and copies of files mounted `ro`: hidden once
    // the root is built.
    let base = root(Path::new(OVERLAY_DIR));
    let user = UserMounts {
        lowers,
        shown,
        files,
    };
    let base_made = user.attach(
        plan,
        trees,
        root_dir.as_raw_fd(),
        &overlays,
        &base,
        rootless,
    )?;
    drop(root_dir);

    kernel_filesystems(stage)?;
    pivot_into(stage)?;

    if base_made {
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
    Ok(notes)
}

/// Makes `/` (our private copy of the host's tree) private: nothing we
/// mount propagates back to the host.
fn make_private() -> Result<(), ChildFail> {
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
    Ok(())
}

/// A `ro` mount of one file is a copy of the very inode the parent
/// checked (its detached tree), never of whatever a name leads to now:
/// each is opened for reading here, through /proc/self/fd, while /proc is
/// still the host's and nothing is parked on it.
fn file_sources(
    plan: &RootPlan,
    trees: &OpenedTrees,
) -> Result<Vec<Option<FileSource>>, ChildFail> {
    let mut files: Vec<Option<FileSource>> = Vec::new();
    for (m, opened) in plan.user_mounts.iter().zip(&trees.mounts) {
        files.push(if m.mode == MountMode::Ro && !opened.is_dir {
            Some(FileSource::open(m, opened)?)
        } else {
            None
        });
    }
    Ok(files)
}

/// The sandbox's writable layer: one size- and inode-capped tmpfs
/// (`--disk`), detached.
fn writable_tmpfs(disk: u64, stage: &Path) -> Result<OwnedFd, ChildFail> {
    let size = cstring(disk.to_string());
    let inodes = cstring(inodes_for(disk).to_string());
    sys::fs_mount(
        c"tmpfs",
        &[
            (c"size", size.as_c_str()),
            (c"nr_inodes", inodes.as_c_str()),
            (c"mode", c"0755"),
        ],
        sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
    )
    .map_err(|e| fail("create tmpfs (--disk)", stage, e))
}

/// A tree the parent opened (run by root) belongs to its mount namespace,
/// and overlayfs takes only trees of ours as layers: it is parked and
/// cloned from there as ours. Rootless, the tree is ours already.
fn own_tree(
    t: &OwnedFd,
    recursive: bool,
    rootless: bool,
    what: &Path,
) -> Result<OwnedFd, ChildFail> {
    if rootless {
        return t.try_clone().map_err(|e| fail("dup", what, e));
    }
    let park_at = Path::new(PARK);
    sys::move_mount_path(t.as_raw_fd(), park_at).map_err(|e| fail("park lower of", what, e))?;
    sys::open_tree_clone(park_at, recursive).map_err(|e| fail("clone lower of", what, e))
}

/// The lower layers of the user mounts that are overlays (directories
/// mounted `ro` or `overlay`; a file is copied), in `user_mounts` order.
fn user_lowers(
    plan: &RootPlan,
    trees: &OpenedTrees,
    rootless: bool,
) -> Result<Vec<Option<OwnedFd>>, ChildFail> {
    let mut lowers: Vec<Option<OwnedFd>> = Vec::new();
    for (m, opened) in plan.user_mounts.iter().zip(&trees.mounts) {
        let overlaid = matches!(m.mode, MountMode::Ro | MountMode::Overlay) && opened.is_dir;
        lowers.push(if overlaid {
            Some(own_tree(&opened.tree, true, rootless, &m.source)?)
        } else {
            None
        });
    }
    Ok(lowers)
}

/// With layers by fd, the read-only overlays of `ro` user mounts are made
/// at once (taking their lowers); older kernels make them later, by path.
fn ro_overlays_now(
    plan: &RootPlan,
    overlays: &Overlays,
    lowers: &mut [Option<OwnedFd>],
) -> Result<Vec<Option<OwnedFd>>, ChildFail> {
    let mut shown: Vec<Option<OwnedFd>> = Vec::new();
    for (m, lower) in plan.user_mounts.iter().zip(lowers.iter_mut()) {
        shown.push(match m.mode {
            MountMode::Ro if overlays.by_fd => match lower.take() {
                Some(l) => Some(ro_mount(overlays, m, l)?),
                None => None,
            },
            _ => None,
        });
    }
    Ok(shown)
}

/// What the user mounts are made of, in `user_mounts` order.
struct UserMounts {
    lowers: Vec<Option<OwnedFd>>,
    /// Read-only overlays made already.
    shown: Vec<Option<OwnedFd>>,
    files: Vec<Option<FileSource>>,
}

impl UserMounts {
    /// Attaches the user's mounts, shallowest first, onto targets
    /// resolved inside the new root `root_dir`. Copies of `ro` files and
    /// the upper layers of `overlay` mounts go in `base` (made when first
    /// needed: returns whether it was).
    fn attach(
        self,
        plan: &RootPlan,
        trees: &OpenedTrees,
        root_dir: RawFd,
        overlays: &Overlays,
        base: &Path,
        rootless: bool,
    ) -> Result<bool, ChildFail> {
        let (uid, gid) = (plan.user.uid, plan.user.gid);
        let mut base_made = false;
        let make_base = |made: &mut bool| -> Result<(), ChildFail> {
            if !*made {
                mkdir(base, 0o700)?;
                *made = true;
            }
            Ok(())
        };
        let mut n_overlays = 0usize;
        let mut n_files = 0usize;
        let user = plan.user_mounts.iter().zip(&trees.mounts);
        let parts = self.lowers.into_iter().zip(self.shown).zip(self.files);
        for ((m, opened), ((lower, made), file)) in user.zip(parts) {
            let target = make_target(root_dir, &m.target, opened.is_dir)?;
            let fd = match (m.mode, made, lower) {
                (MountMode::Rw, _, _) => opened.tree.try_clone(),
                (MountMode::Ro, Some(made), _) => Ok(made),
                (MountMode::Ro, None, Some(lower)) => Ok(ro_mount(overlays, m, lower)?),
                (MountMode::Ro, None, None) => {
                    let Some(src) = file else {
                        return Err(no_tree(m));
                    };
                    make_base(&mut base_made)?;
                    let staged = base.join(format!("f{n_files}"));
                    n_files += 1;
                    Ok(src.mount(m, opened, &staged)?)
                }
                (MountMode::Overlay, _, Some(lower)) => {
                    make_base(&mut base_made)?;
                    let upper = base.join(format!("u{n_overlays}"));
                    let work = base.join(format!("w{n_overlays}"));
                    mkdir(&upper, 0o755)?;
                    mkdir(&work, 0o700)?;
                    if !rootless {
                        chown(&upper, uid, gid)?;
                    }
                    n_overlays += 1;
                    Ok(overlays.make(lower, Some((&upper, &work)))?)
                }
                _ => return Err(no_tree(m)),
            }
            .map_err(|e| fail("dup", &m.target, e))?;
            sys::move_mount_fd(fd.as_raw_fd(), target.as_raw_fd())
                .map_err(|e| fail("mount onto", &m.target, e))?;
        }
        Ok(base_made)
    }
}

/// procfs and the sandbox's own devpts in the new root at `root`.
fn kernel_filesystems(root: &Path) -> Result<(), ChildFail> {
    mount_fs(
        c"proc",
        &root.join("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )?;
    let pts_opts = cstring(format!(
        "newinstance,ptmxmode=0666,mode=0620,max={MAX_PTYS}"
    ));
    mount_fs(
        c"devpts",
        &root.join("dev/pts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(&pts_opts),
    )
}

/// Into the new root at `root`; the host's tree is detached and gone, and
/// with it everything parked on it.
fn pivot_into(root: &Path) -> Result<(), ChildFail> {
    std::env::set_current_dir(root).map_err(|e| fail("chdir", root, e))?;
    sys::pivot_root_here().map_err(|e| fail("pivot_root into", root, e))?;
    umount_detach(Path::new("."))?;
    std::env::set_current_dir("/").map_err(|e| fail("chdir", Path::new("/"), e))
}

/// Options of an image's root overlay. In a user namespace only `user.`
/// xattrs can be set on the upper layer (`userxattr`), which also rules
/// out following redirects; redirects, metacopy and the index are off so
/// that an upper directory holds plain files, `0/0` whiteouts and
/// `user.overlay.opaque` only — what a build turns into a layer.
const IMAGE_OVERLAY_OPTS: &[(&CStr, &CStr)] = &[
    (c"redirect_dir", c"nofollow"),
    (c"metacopy", c"off"),
    (c"index", c"off"),
];

/// Child side, for a root made of an image ([`RootPlan::compile_image`]):
/// one overlay whose lower layer is the image's tree (the parent's clone,
/// read-only, id-mapped onto the sandbox's ids when run by root) and whose
/// upper and work directories are on the sandbox's tmpfs (`--disk`) — or,
/// for a build step, the capture directory's. The tmpfs itself is never
/// part of the root: it also holds `/dev/shm` and the user mounts' copies
/// and upper layers, and goes with the host's tree after `pivot_root`.
///
/// Everything in the tree is the image's and may be hostile (symlinks to
/// `/etc/shadow` or `/proc/1/root`, files where airlock wants a directory),
/// so nothing is done there by a path that could follow a symlink out: each
/// path is resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
/// from the root, last components are created with `O_EXCL|O_NOFOLLOW`,
/// and all of it happens before procfs is mounted in the new root.
fn build_image_root(
    plan: &RootPlan,
    img: &ImageRoot,
    trees: &OpenedTrees,
    rootless: bool,
) -> Result<Vec<String>, ChildFail> {
    let stage = Path::new(STAGE);
    make_private()?;
    let files = file_sources(plan, trees)?;
    let scratch = writable_tmpfs(plan.disk, stage)?;
    let overlays = Overlays::new(&scratch, stage)?;
    let sfd = scratch.as_raw_fd();
    let mut dirs: Vec<(&CStr, u32)> = vec![(c"root", 0o755), (c"rooms", 0o755)];
    if img.capture.is_some() {
        dirs.push((c"capture", 0o700));
    } else {
        dirs.push((c"upper", 0o755));
        dirs.push((c"work", 0o700));
    }
    for (name, mode) in dirs {
        mkdirat_mode(sfd, name, mode).map_err(|e| fail("mkdir", &stage.join(name_of(name)), e))?;
    }
    let tree = trees.image.as_ref().ok_or_else(|| {
        fail(
            "no opened tree for the image",
            &img.tree,
            io::Error::from_raw_os_error(libc::EINVAL),
        )
    })?;
    let lower = own_tree(tree, false, rootless, &img.tree)?;
    let mut lowers = user_lowers(plan, trees, rootless)?;
    let shown = ro_overlays_now(plan, &overlays, &mut lowers)?;
    sys::move_mount_path(scratch.as_raw_fd(), stage)
        .map_err(|e| fail("attach tmpfs at", stage, e))?;
    drop(scratch);

    let (upper, work) = match (&img.capture, &trees.capture) {
        (None, _) => (stage.join("upper"), stage.join("work")),
        (Some(c), Some(tree)) => {
            let at = stage.join("capture");
            sys::move_mount_path(tree.as_raw_fd(), &at)
                .map_err(|e| fail("attach the build step's directory", c, e))?;
            (at.join(CAPTURE_UPPER), at.join(CAPTURE_WORK))
        }
        (Some(c), None) => {
            return Err(fail(
                "no opened tree for",
                c,
                io::Error::from_raw_os_error(libc::EINVAL),
            ))
        }
    };
    let root_ovl = overlays
        .make_with(lower, Some((&upper, &work)), IMAGE_OVERLAY_OPTS)
        .map_err(|e| ChildFail {
            detail: format!(
                "make the root overlay of image {}: {}",
                img.tree.display(),
                e.detail
            ),
            ..e
        })?;
    let new_root = stage.join("root");
    sys::move_mount_path(root_ovl.as_raw_fd(), &new_root)
        .map_err(|e| fail("attach the image's root at", &new_root, e))?;
    drop(root_ovl);
    let root_dir = open_dir_path(&new_root)?;
    let rfd = root_dir.as_raw_fd();

    // The kernel's interfaces go on real directories of the root (the
    // image's own `proc` or `dev` may be anything).
    ensure_real_dir(rfd, c"proc", 0o555)?;
    ensure_real_dir(rfd, c"dev", 0o755)?;
    let dev_at = new_root.join("dev");
    match &trees.dev_fs {
        Some(fs) => sys::move_mount_path(fs.as_raw_fd(), &dev_at)
            .map_err(|e| fail("attach the sandbox's own /dev at", &dev_at, e))?,
        None => own_dev(plan, trees, &dev_at)?,
    }
    let dev = Path::new("dev");
    for (i, (dir, mode, _)) in plan
        .writable
        .iter()
        .filter(|(d, _, _)| d.starts_with(dev))
        .enumerate()
    {
        // A directory of the tmpfs (same --disk), bound into /dev.
        let room = stage.join("rooms").join(i.to_string());
        mkdir(&room, 0o755)?;
        set_mode(&room, *mode)?;
        let t = sys::open_tree_clone(&room, false).map_err(|e| fail("open", dir, e))?;
        sys::move_mount_path(t.as_raw_fd(), &new_root.join(dir))
            .map_err(|e| fail("bind onto", dir, e))?;
    }

    // /etc/hostname, /etc/hosts, /etc/resolv.conf: written into the
    // overlay in place of the image's (never through them); a build step
    // gets them bound over the image's own, so that they stay out of its
    // layer.
    let mut generated = 0usize;
    for e in &plan.entries {
        let Entry::File {
            path,
            contents,
            mode,
        } = e
        else {
            continue;
        };
        if img.capture.is_some() {
            bind_generated(rfd, stage, path, contents, generated)?;
            generated += 1;
        } else {
            replace_in_root(rfd, path, contents, *mode)?;
        }
    }
    // /tmp, the user's home and the working directory, where missing.
    let (uid, gid) = (plan.user.uid, plan.user.gid);
    for (dir, mode, owned) in plan.writable.iter().filter(|(d, _, _)| !d.starts_with(dev)) {
        let owner = (*owned && !rootless).then_some((uid, gid));
        ensure_dirs(rfd, dir, *mode, owner)?;
    }

    let base = stage.join(OVERLAY_DIR);
    let user = UserMounts {
        lowers,
        shown,
        files,
    };
    user.attach(plan, trees, rfd, &overlays, &base, rootless)?;
    drop(root_dir);
    kernel_filesystems(&new_root)?;
    pivot_into(&new_root)?;
    Ok(Vec::new())
}

fn name_of(c: &CStr) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(c.to_bytes()))
}

/// `mkdirat` and then the exact mode (the umask took bits off).
fn mkdirat_mode(dir: RawFd, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: a valid fd and C string.
    sys::cvt(unsafe { libc::mkdirat(dir, name.as_ptr(), mode) })?;
    // SAFETY: as above; the entry was just made as a directory.
    sys::cvt(unsafe { libc::fchmodat(dir, name.as_ptr(), mode, 0) })?;
    Ok(())
}

/// An `O_PATH` fd of the directory at `p` (a path of airlock's own).
fn open_dir_path(p: &Path) -> Result<OwnedFd, ChildFail> {
    let c = cpath(p).map_err(|e| fail("open", p, e))?;
    // SAFETY: a valid C string; the kernel returns a new fd or -1.
    let fd = sys::cvt(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
    .map_err(|e| fail("open", p, e))?;
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Makes `name` (in the root `dir`) a real directory: kept if it is one,
/// made if missing, and made in place of anything else the image has there
/// (a symlink, a file).
fn ensure_real_dir(dir: RawFd, name: &CStr, mode: u32) -> Result<(), ChildFail> {
    let what = name_of(name);
    // SAFETY: stat is plain data, filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd, C string and out-pointer; never follows a symlink.
    let r = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r == 0 {
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return Ok(());
        }
        // SAFETY: a valid fd and C string; removes the entry itself.
        sys::cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), 0) })
            .map_err(|e| fail("replace the image's", what, e))?;
    } else {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOENT) {
            return Err(fail("stat", what, e));
        }
    }
    mkdirat_mode(dir, name, mode).map_err(|e| fail("mkdir", what, e))
}

/// Resolves `rel` inside the root `root` (symlinks as if `root` were `/`,
/// no magic links), making the directories that are missing (`mode`, and
/// `owner` when given). Returns the directory, or `None` when the image
/// has a dangling symlink on the way (left as it is: the image's own
/// business).
fn ensure_dirs(
    root: RawFd,
    rel: &Path,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<Option<OwnedFd>, ChildFail> {
    let mut cur = sys::open_in_root(root, Path::new("."), false)
        .map_err(|e| fail("open the image's root", rel, e))?;
    let mut sofar = PathBuf::new();
    for c in rel.components() {
        let std::path::Component::Normal(name) = c else {
            return Err(fail(
                "make directory",
                rel,
                io::Error::from_raw_os_error(libc::EINVAL),
            ));
        };
        sofar.push(name);
        match sys::open_in_root(root, &sofar, false) {
            Ok(fd) => {
                let st = sys::fstat(fd.as_raw_fd()).map_err(|e| fail("stat", &sofar, e))?;
                if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                    return Err(fail(
                        "the image has something other than a directory at",
                        &Path::new("/").join(&sofar),
                        io::Error::from_raw_os_error(libc::ENOTDIR),
                    ));
                }
                cur = fd;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let c = cpath(Path::new(name)).map_err(|e| fail("mkdir", &sofar, e))?;
                // SAFETY: a valid fd and C string.
                if unsafe { libc::mkdirat(cur.as_raw_fd(), c.as_ptr(), mode) } != 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::EEXIST) {
                        return Ok(None);
                    }
                    return Err(fail("mkdir", &sofar, e));
                }
                // SAFETY: as above; the entry was just made as a directory.
                sys::cvt(unsafe { libc::fchmodat(cur.as_raw_fd(), c.as_ptr(), mode, 0) })
                    .map_err(|e| fail("chmod", &sofar, e))?;
                if let Some((uid, gid)) = owner {
                    // SAFETY: a valid fd and C string; never follows a symlink.
                    sys::cvt(unsafe {
                        libc::fchownat(
                            cur.as_raw_fd(),
                            c.as_ptr(),
                            uid,
                            gid,
                            libc::AT_SYMLINK_NOFOLLOW,
                        )
                    })
                    .map_err(|e| fail("chown", &sofar, e))?;
                }
                // SAFETY: a valid fd and C string; the kernel returns a new
                // fd or -1; O_NOFOLLOW refuses anything but what we made.
                let fd = sys::cvt(unsafe {
                    libc::openat(
                        cur.as_raw_fd(),
                        c.as_ptr(),
                        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    )
                })
                .map_err(|e| fail("open", &sofar, e))?;
                // SAFETY: a new fd that nothing else owns.
                cur = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            }
            Err(e) => return Err(fail("resolve", &Path::new("/").join(&sofar), e)),
        }
    }
    Ok(Some(cur))
}

/// Writes the file `rel` of the root `root` anew: whatever the image has
/// there (a symlink to a host file, a directory) is removed first, and the
/// file is created with `O_EXCL|O_NOFOLLOW` in its directory, resolved
/// inside the root.
fn replace_in_root(root: RawFd, rel: &Path, contents: &[u8], mode: u32) -> Result<(), ChildFail> {
    use std::io::Write;
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err(fail(
            "write",
            rel,
            io::Error::from_raw_os_error(libc::EINVAL),
        ));
    };
    let shown = Path::new("/").join(rel);
    let Some(dir) = ensure_dirs(root, parent, 0o755, None)? else {
        return Err(fail(
            "write (a dangling symlink of the image's is on its way)",
            &shown,
            io::Error::from_raw_os_error(libc::ENOENT),
        ));
    };
    let c = cpath(Path::new(name)).map_err(|e| fail("write", &shown, e))?;
    let d = dir.as_raw_fd();
    // SAFETY: a valid fd and C string; removes the entry itself.
    if unsafe { libc::unlinkat(d, c.as_ptr(), 0) } != 0 {
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOENT) => {}
            Some(libc::EISDIR) => {
                // SAFETY: as above (an empty directory).
                sys::cvt(unsafe { libc::unlinkat(d, c.as_ptr(), libc::AT_REMOVEDIR) })
                    .map(|_| ())
                    .map_err(|e| fail("replace the image's directory", &shown, e))?
            }
            _ => return Err(fail("replace the image's", &shown, e)),
        }
    }
    // SAFETY: a valid fd and C string; the kernel returns a new fd or -1.
    let fd = sys::cvt(unsafe {
        libc::openat(
            d,
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode,
        )
    })
    .map_err(|e| fail("create", &shown, e))?;
    // SAFETY: a new fd that nothing else owns.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    f.write_all(contents)
        .map_err(|e| fail("write", &shown, e))?;
    // SAFETY: fchmod on an fd we own (the umask took bits off).
    sys::cvt(unsafe { libc::fchmod(f.as_raw_fd(), mode) }).map_err(|e| fail("chmod", &shown, e))?;
    Ok(())
}

/// A build step's: `contents` bound over the image's own file `rel` (when
/// the image has one: resolved inside the root), from a file of the
/// sandbox's tmpfs; the step's layer never sees it.
fn bind_generated(
    root: RawFd,
    stage: &Path,
    rel: &Path,
    contents: &[u8],
    n: usize,
) -> Result<(), ChildFail> {
    let Ok(target) = sys::open_in_root(root, rel, false) else {
        return Ok(());
    };
    let st = sys::fstat(target.as_raw_fd()).map_err(|e| fail("stat", rel, e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(());
    }
    let src = stage.join(format!("generated-{n}"));
    write_new(&src, contents, 0o644)?;
    set_mode(&src, 0o644)?;
    let t = sys::open_tree_clone(&src, false).map_err(|e| fail("open", &src, e))?;
    sys::move_mount_fd(t.as_raw_fd(), target.as_raw_fd())
        .map_err(|e| fail("bind onto", &Path::new("/").join(rel), e))
}

/// Rootless (or where root may make no device node): the sandbox's `/dev`
/// at `at` is a small tmpfs of its own, with the host's nodes bound
/// read-only onto files there, the symlinks and the mount points of
/// `pts` and `shm`; then read-only itself. (The image's own `/dev`,
/// whatever it holds, is covered.)
fn own_dev(plan: &RootPlan, trees: &OpenedTrees, at: &Path) -> Result<(), ChildFail> {
    let dev = Path::new("dev");
    let below = |p: &Path| -> Option<PathBuf> {
        p.strip_prefix(dev)
            .ok()
            .filter(|r| !r.as_os_str().is_empty())
            .map(Path::to_path_buf)
    };
    let inodes = plan
        .entries
        .iter()
        .filter(|e| below(e.path()).is_some())
        .count()
        + plan.writable.len()
        + 8;
    let inodes = cstring(inodes.to_string());
    let fs = sys::fs_mount(
        c"tmpfs",
        &[
            (c"size", c"64k"),
            (c"nr_inodes", inodes.as_c_str()),
            (c"mode", c"0755"),
        ],
        sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC,
    )
    .map_err(|e| fail("create tmpfs for", at, e))?;
    sys::move_mount_path(fs.as_raw_fd(), at).map_err(|e| fail("attach /dev at", at, e))?;
    let mut devices = trees.devices.iter();
    for e in &plan.entries {
        let Some(r) = below(e.path()) else { continue };
        let t = at.join(&r);
        match e {
            Entry::Dir { mode, .. } => {
                mkdir_all(&t)?;
                set_mode(&t, *mode)?;
            }
            Entry::Symlink { target, .. } => {
                std::os::unix::fs::symlink(target, &t).map_err(|e| fail("symlink", &t, e))?
            }
            Entry::Device { path, .. } => {
                let fd = devices.next().ok_or_else(|| {
                    fail(
                        "no opened tree for",
                        path,
                        io::Error::from_raw_os_error(libc::EINVAL),
                    )
                })?;
                write_new(&t, b"", 0o644)?;
                sys::move_mount_path(fd.as_raw_fd(), &t).map_err(|e| fail("bind onto", path, e))?;
            }
            _ => {
                return Err(fail(
                    "no place in /dev for",
                    e.path(),
                    io::Error::from_raw_os_error(libc::EINVAL),
                ))
            }
        }
    }
    for (d, _, _) in &plan.writable {
        if let Some(r) = below(d) {
            mkdir_all(&at.join(r))?;
        }
    }
    sys::mount_setattr(fs.as_raw_fd(), sys::MOUNT_ATTR_RDONLY, 0, false)
        .map_err(|e| fail("make read-only", at, e))
}

fn no_tree(m: &Mount) -> ChildFail {
    fail(
        "no opened tree for",
        &m.target,
        io::Error::from_raw_os_error(libc::EINVAL),
    )
}

/// A `ro` user mount of a directory: a read-only overlay of its tree.
/// Returns the detached mount to attach at the target.
fn ro_mount(overlays: &Overlays, m: &Mount, lower: OwnedFd) -> Result<OwnedFd, ChildFail> {
    overlays.make(lower, None).map_err(|e| ChildFail {
        detail: format!(
            "mount {} read-only through overlayfs (which keeps host sockets and locks out of reach): {}",
            m.source.display(),
            e.detail
        ),
        ..e
    })
}

/// The source of a `ro` mount of one file: the inode the parent checked,
/// opened for reading when the sandbox may read it and it is small enough
/// to copy, and its status as the sandbox sees it (owner through the id
/// mapping).
struct FileSource {
    reader: Option<std::fs::File>,
    stat: libc::stat,
}

impl FileSource {
    /// Opens the file of `opened` (its detached tree: the inode itself, no
    /// name is looked up) for reading through `/proc/self/fd`, with the
    /// sandbox's own rights: this process is root in the sandbox's user
    /// namespace, so the kernel lets it read what an id-mapped owner could
    /// read, and of anything else only what any user of the sandbox may.
    /// What it may not read is not copied (and is bound as it is: unreadable
    /// inside as well).
    fn open(m: &Mount, opened: &OpenedMount) -> Result<FileSource, ChildFail> {
        let tree = opened.tree.as_raw_fd();
        let stat = sys::fstat(tree).map_err(|e| fail("stat", &m.source, e))?;
        if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(fail(
                format!(
                    "mount (it is {}; a read-only mount is of a directory or a regular file only)",
                    kind_name(stat.st_mode)
                ),
                &m.source,
                io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        if stat.st_size as u64 > COPY_MAX {
            return Ok(FileSource { reader: None, stat });
        }
        let via = cstring(format!("/proc/self/fd/{tree}"));
        // SAFETY: a valid C string; the kernel returns a new fd or -1.
        let fd = unsafe {
            libc::open(
                via.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EACCES) | Some(libc::EPERM) => Ok(FileSource { reader: None, stat }),
                _ => Err(fail("open for copying", &m.source, e)),
            };
        }
        // SAFETY: a new fd that nothing else owns.
        let reader = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // The magic link leads to the tree's own inode; make sure of it.
        let got = sys::fstat(reader.as_raw_fd()).map_err(|e| fail("stat", &m.source, e))?;
        if (got.st_dev, got.st_ino) != (stat.st_dev, stat.st_ino) {
            return Err(fail(
                "open for copying (another file came back)",
                &m.source,
                io::Error::from_raw_os_error(libc::EIO),
            ));
        }
        Ok(FileSource {
            reader: Some(reader),
            stat,
        })
    }

    /// The detached mount to attach at the target: a read-only mount of a
    /// private copy at `staged` (in the sandbox's tmpfs, so charged to
    /// `--disk`), owned and with the mode as the source shows inside; or,
    /// for a file too large to copy or unreadable inside, the source's own
    /// tree (read-only, `nosuid,nodev`).
    fn mount(self, m: &Mount, opened: &OpenedMount, staged: &Path) -> Result<OwnedFd, ChildFail> {
        if let Some(reader) = self.reader {
            if copy_file(reader, &self.stat, m, staged)? {
                let t = sys::open_tree_clone(staged, false)
                    .map_err(|e| fail("open copy of", &m.source, e))?;
                sys::mount_setattr(
                    t.as_raw_fd(),
                    sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
                    0,
                    false,
                )
                .map_err(|e| fail("make read-only", &m.target, e))?;
                return Ok(t);
            }
        }
        opened
            .tree
            .try_clone()
            .map_err(|e| fail("dup", &m.target, e))
    }
}

/// Copies the source of a `ro` file mount to `staged` and gives the copy
/// the source's mode, times and owner as the sandbox sees them. False when
/// the file grew past [`COPY_MAX`] meanwhile (nothing is left at `staged`).
fn copy_file(
    reader: std::fs::File,
    st: &libc::stat,
    m: &Mount,
    staged: &Path,
) -> Result<bool, ChildFail> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(staged)
        .map_err(|e| fail("create copy of", &m.source, e))?;
    let copied = std::io::copy(&mut reader.take(COPY_MAX + 1), &mut out).map_err(|e| {
        // ENOSPC: the sandbox's tmpfs is full; the caller names --disk.
        fail(
            format!("copy ({} bytes) of the read-only file mount", st.st_size),
            &m.source,
            e,
        )
    })?;
    if copied > COPY_MAX {
        drop(out);
        std::fs::remove_file(staged).map_err(|e| fail("remove", staged, e))?;
        return Ok(false);
    }
    let fd = out.as_raw_fd();
    let mut mode = st.st_mode & 0o7777;
    // SAFETY: fchown on an fd we own.
    let chown = |u: u32, g: u32| unsafe { libc::fchown(fd, u, g) } == 0;
    if !chown(st.st_uid, st.st_gid) {
        // Rootless, this namespace maps the caller's ids only: an owner or
        // group shown as nobody cannot be given to the copy, which stays
        // the caller's. Its bits then grant the caller what the others'
        // did (the copy holds only what this process, with the caller's
        // rights, could read: nothing more is opened up).
        let u = u32::MAX;
        if !chown(u, st.st_gid) {
            mode |= (mode & 0o7) << 3;
        }
        if !chown(st.st_uid, u) {
            mode |= ((mode >> 3 | mode) & 0o7) << 6;
        }
    }
    // After chown, which clears the set-id bits (the mount is nosuid
    // anyway).
    // SAFETY: fchmod on an fd we own.
    sys::cvt(unsafe { libc::fchmod(fd, mode) }).map_err(|e| fail("chmod copy of", &m.source, e))?;
    let times = [
        st_time(st.st_atime, st.st_atime_nsec),
        st_time(st.st_mtime, st.st_mtime_nsec),
    ];
    // SAFETY: two valid timespecs for an fd we own.
    sys::cvt(unsafe { libc::futimens(fd, times.as_ptr()) })
        .map_err(|e| fail("set times of copy of", &m.source, e))?;
    Ok(true)
}

fn st_time(sec: libc::time_t, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    }
}

/// The `host` image's directories: one read-only overlay per top-level
/// host directory, its subdirectories cloned from it. Returns each
/// directory's path in the new root with the detached mount to attach
/// there. Where overlayfs refuses a host directory (a kernel without it,
/// or mounts below it that the sandbox may not see), a read-only clone of
/// the directory takes its place and the user hears that sockets under it
/// stay reachable.
fn host_dirs(
    plan: &RootPlan,
    overlays: &Overlays,
    notes: &mut Vec<String>,
) -> Result<Vec<(PathBuf, OwnedFd)>, ChildFail> {
    let attrs = sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
    let opened = |source: &Path| {
        open_one(source, true, attrs).map_err(|e| ChildFail {
            errno: libc::EPERM,
            detail: e.to_string(),
        })
    };
    let mut out = Vec::new();
    for layer in plan.host_layers() {
        let dirs: Vec<(&PathBuf, &PathBuf)> = plan
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::HostDir { path, source } if top_of(source) == layer => Some((path, source)),
                _ => None,
            })
            .collect();
        // The lower layer is a read-only clone of the host directory, not
        // the host's own mount: overlayfs would otherwise update the host
        // files' access times as the sandbox reads them (a channel out).
        let ovl = match overlays.make(opened(&layer)?, None) {
            Ok(o) => o,
            Err(e) => {
                notes.push(format!(
                    "overlayfs refused {} ({}): it is bound read-only instead, and unix sockets under it are reachable from the sandbox",
                    layer.display(),
                    e.detail
                ));
                for (path, source) in dirs {
                    out.push((path.clone(), opened(source)?));
                }
                continue;
            }
        };
        // The whole layer in one place (`/usr`): the overlay itself.
        if let [(path, source)] = dirs.as_slice() {
            if **source == layer {
                out.push(((*path).clone(), ovl));
                continue;
            }
        }
        // Kernels before 6.15 clone nothing from a detached mount: there
        // the overlay is attached for a moment (where older kernels attach
        // lower layers) and its directories cloned by path.
        let mut attached: Option<OwnedFd> = None;
        for (path, source) in dirs {
            let rel = source.strip_prefix(&layer).unwrap_or(source);
            let rel = if rel.as_os_str().is_empty() {
                Path::new(".")
            } else {
                rel
            };
            let mut r = match &attached {
                Some(a) => sys::open_tree_clone_at(a.as_raw_fd(), rel),
                None => sys::open_tree_clone_at(ovl.as_raw_fd(), rel),
            };
            if attached.is_none()
                && matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EINVAL))
                && !overlays.by_fd
            {
                mkdir(&overlays.lower_at, 0o700)?;
                sys::move_mount_path(ovl.as_raw_fd(), &overlays.lower_at)
                    .map_err(|e| fail("attach overlay of", source, e))?;
                let dir = std::fs::File::open(&overlays.lower_at)
                    .map_err(|e| fail("open overlay of", source, e))?;
                r = sys::open_tree_clone_at(dir.as_raw_fd(), rel);
                attached = Some(dir.into());
            }
            let sub = r.map_err(|e| fail("open overlay of", source, e))?;
            out.push((path.clone(), sub));
        }
        // Parking moves the overlay away from where it was attached, too.
        park(ovl, &layer)?;
        if attached.take().is_some() {
            rmdir(&overlays.lower_at)?;
        }
    }
    Ok(out)
}

fn rmdir(p: &Path) -> Result<(), ChildFail> {
    std::fs::remove_dir(p).map_err(|e| fail("rmdir", p, e))
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
    fn dns_stub_files() {
        let file = |p: &RootPlan, name: &str| {
            p.entries.iter().find_map(|e| match e {
                Entry::File { path, contents, .. }
                    if path == Path::new("etc").join(name).as_path() =>
                {
                    Some(String::from_utf8_lossy(contents).into_owned())
                }
                _ => None,
            })
        };
        let mut p = plan("/home/sandbox", &[]);
        // No network: no resolver, and DNS is not asked.
        assert_eq!(file(&p, "resolv.conf").unwrap(), "");
        assert!(file(&p, "nsswitch.conf")
            .unwrap()
            .contains("hosts: files\n"));
        p.use_dns_stub();
        assert!(file(&p, "resolv.conf")
            .unwrap()
            .starts_with("nameserver 127.0.0.1\n"));
        assert!(file(&p, "nsswitch.conf")
            .unwrap()
            .contains("hosts: files dns\n"));
    }

    #[test]
    fn host_image_layout() {
        let p = plan("/home/sandbox", &[]);
        assert!(p.entries.contains(&Entry::HostDir {
            path: "usr".into(),
            source: "/usr".into(),
        }));
        assert!(p.entries.contains(&Entry::HostDir {
            path: "etc/ssl".into(),
            source: "/etc/ssl".into(),
        }));
        // One overlay per top-level host directory.
        assert_eq!(
            p.host_layers(),
            vec![PathBuf::from("/usr"), PathBuf::from("/etc")]
        );
        assert!(p.entries.contains(&Entry::Symlink {
            path: "bin".into(),
            target: "usr/bin".into()
        }));
        assert!(p.entries.contains(&Entry::Copy {
            path: "etc/ld.so.cache".into(),
            from: "/etc/ld.so.cache".into()
        }));
        assert!(p
            .entries
            .iter()
            .any(|e| matches!(e, Entry::Device { path, .. } if path == Path::new("dev/null"))));
        // Nothing from the host's user database, home or runtime dirs.
        for e in &p.entries {
            let path = match e {
                Entry::HostDir { source, .. } | Entry::Device { source, .. } => source.clone(),
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
            as_owner: false,
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
            as_owner: false,
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

    /// Both ways of making a read-only overlay (layers by fd, Linux 6.13+,
    /// and by path, older kernels): files read through, a unix socket in
    /// the lower directory does not connect, the overlay is read-only.
    /// Root only (a private mount namespace of a forked child).
    #[test]
    fn ro_overlay_by_fd_and_by_path() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var("AIRLOCK_TEST_MUST_RUN").as_deref() != Ok("1"),
                "AIRLOCK_TEST_MUST_RUN=1 but this test needs root"
            );
            eprintln!("SKIPPED: needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("airlock-ovl-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::create_dir_all(dir.join("stage")).unwrap();
        std::fs::write(dir.join("src/f"), "through\n").unwrap();
        let _l = std::os::unix::net::UnixListener::bind(dir.join("src/s")).unwrap();
        for by_fd in [true, false] {
            // SAFETY: the child only uses async-signal-safe-enough calls of
            // this single test thread's copy and exits with _exit.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                let code = (|| -> Result<(), String> {
                    // SAFETY: unshare takes only flags.
                    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
                        return Err("unshare".into());
                    }
                    // SAFETY: constant C strings.
                    unsafe {
                        libc::mount(
                            std::ptr::null(),
                            c"/".as_ptr(),
                            std::ptr::null(),
                            libc::MS_REC | libc::MS_PRIVATE,
                            std::ptr::null(),
                        )
                    };
                    let stage = dir.join("stage");
                    let tmpfs = sys::fs_mount(c"tmpfs", &[], 0).map_err(|e| e.to_string())?;
                    let mut o = Overlays::new(&tmpfs, &stage).map_err(|e| e.detail)?;
                    if !o.by_fd && by_fd {
                        return Err("this kernel does not take overlay layers by fd".into());
                    }
                    o.by_fd = by_fd;
                    // Parked trees go on the (private) /proc.
                    sys::move_mount_path(tmpfs.as_raw_fd(), &stage).map_err(|e| e.to_string())?;
                    let tree = open_one(&dir.join("src"), true, sys::MOUNT_ATTR_RDONLY)
                        .map_err(|e| e.to_string())?;
                    let ovl = o
                        .make(tree, None)
                        .map_err(|e| format!("make: {}", e.detail))?;
                    let at = dir.join("at");
                    std::fs::create_dir_all(&at).map_err(|e| e.to_string())?;
                    sys::move_mount_path(ovl.as_raw_fd(), &at).map_err(|e| e.to_string())?;
                    let got = std::fs::read_to_string(at.join("f")).map_err(|e| e.to_string())?;
                    if got != "through\n" {
                        return Err(format!("read {got:?}"));
                    }
                    match std::os::unix::net::UnixStream::connect(at.join("s")) {
                        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {}
                        other => return Err(format!("connect: {other:?}")),
                    }
                    match std::fs::write(at.join("new"), "x") {
                        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
                        other => return Err(format!("write: {other:?}")),
                    }
                    if stage.join(HOST_LOWER).exists() {
                        return Err("staging directory left behind".into());
                    }
                    Ok(())
                })();
                if let Err(e) = &code {
                    eprintln!("by_fd={by_fd}: {e}");
                }
                // SAFETY: leaves the forked child without unwinding.
                unsafe { libc::_exit(code.is_err() as i32) };
            }
            let mut st = 0;
            // SAFETY: reaps our child.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            assert!(
                libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
                "by_fd={by_fd}: {st}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn is_root() -> bool {
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    fn skip_unless_root() -> bool {
        if is_root() {
            return false;
        }
        assert!(
            std::env::var("AIRLOCK_TEST_MUST_RUN").as_deref() != Ok("1"),
            "AIRLOCK_TEST_MUST_RUN=1 but this test needs root"
        );
        eprintln!("SKIPPED: needs root");
        true
    }

    /// The sandbox's own /dev (root-run): the plan's nodes with Linux's
    /// numbers and mode 0666, its symlinks and directories, a mount point
    /// for /dev/shm, read-only; nothing else.
    #[test]
    fn private_dev_has_the_plans_nodes_read_only() {
        if skip_unless_root() {
            return;
        }
        let mut f = facts();
        f.devices = vec!["null".into(), "zero".into(), "tty".into()];
        let p = RootPlan::compile(
            &f,
            User::SANDBOX,
            "box",
            Path::new("/home/sandbox"),
            &[],
            1 << 20,
        );
        let fs = private_dev(&p).unwrap();
        let at = |name: &CStr| {
            // SAFETY: stat is plain data, filled by the kernel.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: a valid fd, C string and out-pointer.
            let r = unsafe {
                libc::fstatat(
                    fs.as_raw_fd(),
                    name.as_ptr(),
                    &mut st,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            (r == 0).then_some(st)
        };
        for (name, major, minor) in [(c"null", 1, 3), (c"zero", 1, 5), (c"tty", 5, 0)] {
            let st = at(name).unwrap();
            assert_eq!(st.st_mode, libc::S_IFCHR | 0o666, "{name:?}");
            assert_eq!(st.st_rdev, libc::makedev(major, minor), "{name:?}");
        }
        assert!(at(c"full").is_none());
        for name in [c"fd", c"stdin", c"stdout", c"stderr", c"ptmx"] {
            assert_eq!(at(name).unwrap().st_mode & libc::S_IFMT, libc::S_IFLNK);
        }
        for name in [c"pts", c"shm"] {
            assert_eq!(at(name).unwrap().st_mode, libc::S_IFDIR | 0o755);
        }
        // SAFETY: a valid fd and C string.
        let r = unsafe { libc::mkdirat(fs.as_raw_fd(), c"new".as_ptr(), 0o755) };
        assert_eq!(r, -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EROFS));
    }

    /// Rootless, the agent opens what the parent pinned and nothing else:
    /// the same object is opened; a symlink put in its place (or on its
    /// way), or another object under the same name, is refused as a
    /// change.
    #[test]
    fn pinned_sources_open_only_what_was_checked() {
        let dir = std::env::temp_dir().join(format!("airlock-pin-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a/sub")).unwrap();
        std::fs::create_dir_all(dir.join("decoy/sub")).unwrap();
        std::fs::write(dir.join("a/f"), "x").unwrap();
        let pin = |p: &Path| {
            Pinned::of(
                &check_source(&Mount {
                    source: p.to_path_buf(),
                    target: "/m".into(),
                    mode: MountMode::Ro,
                    as_owner: false,
                })
                .unwrap(),
            )
        };
        let changed = |r: Result<OwnedFd, crate::JailError>| {
            matches!(r, Err(crate::JailError::MountChanged { .. }))
        };
        let sub = pin(&dir.join("a/sub"));
        let file = pin(&dir.join("a/f"));
        assert_eq!(sub.kind, libc::S_IFDIR);
        assert_eq!(file.kind, libc::S_IFREG);
        assert!(sub.open(Path::new("/s")).is_ok());
        assert!(file.open(Path::new("/s")).is_ok());
        // A symlink on the way: a -> decoy.
        std::fs::rename(dir.join("a"), dir.join("a.real")).unwrap();
        std::os::unix::fs::symlink(dir.join("decoy"), dir.join("a")).unwrap();
        assert!(changed(sub.open(Path::new("/s"))));
        std::fs::remove_file(dir.join("a")).unwrap();
        // Another directory under the same name.
        std::fs::rename(dir.join("decoy"), dir.join("a")).unwrap();
        assert!(changed(sub.open(Path::new("/s"))));
        std::fs::rename(dir.join("a"), dir.join("decoy")).unwrap();
        std::fs::rename(dir.join("a.real"), dir.join("a")).unwrap();
        // The file itself swapped for a symlink to it.
        std::fs::rename(dir.join("a/f"), dir.join("a/g")).unwrap();
        std::os::unix::fs::symlink(dir.join("a/g"), dir.join("a/f")).unwrap();
        assert!(changed(file.open(Path::new("/s"))));
        std::fs::remove_file(dir.join("a/f")).unwrap();
        std::fs::rename(dir.join("a/g"), dir.join("a/f")).unwrap();
        assert!(file.open(Path::new("/s")).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A `ro` mount is of a directory or a regular file: a FIFO (which a
    /// copy would block on, and which would be a channel to the host) is
    /// refused before anything exists.
    #[test]
    fn ro_mount_of_a_fifo_is_refused() {
        let dir = std::env::temp_dir().join(format!("airlock-fifo-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("p");
        let c = cpath(&fifo).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let m = |mode| Mount {
            source: fifo.clone(),
            target: "/p".into(),
            mode,
            as_owner: false,
        };
        assert!(matches!(
            check_source(&m(MountMode::Ro)),
            Err(crate::JailError::MountNotRegular { kind: "a FIFO", .. })
        ));
        assert!(check_source(&m(MountMode::Rw)).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn user_mounts_shallowest_first() {
        let m = |t: &str| Mount {
            source: "/s".into(),
            target: t.into(),
            mode: MountMode::Ro,
            as_owner: false,
        };
        let p = plan("/", &[m("/a/b/c"), m("/a"), m("/a/b")]);
        let order: Vec<_> = p.user_mounts.iter().map(|m| m.target.clone()).collect();
        assert_eq!(
            order,
            vec![PathBuf::from("/a"), "/a/b".into(), "/a/b/c".into()]
        );
    }
}
