//! The `host` image as the guest sees it: two read-only erofs disks, one
//! of the host's `/usr` and one of the few `/etc` entries the container
//! tier takes from the host (the dynamic loader's cache, certificates,
//! time zone, ...). Nothing else of the host goes in: no home, no `/var`,
//! no `/etc/shadow`. The guest mounts them read-only at `/usr` and `/etc`
//! and builds the sandbox's root on them exactly as the container tier
//! does on the host's.
//!
//! Built with `mkfs.erofs` (package `erofs-utils`) and cached under
//! `<state>/vm/host/`, keyed by what they were built from: `/usr`'s
//! identity and its top directories' and dpkg's status file's change
//! times (a package installed or removed changes them), and every `/etc`
//! entry's. A change that touches none of these (a file rewritten in
//! place below `/usr/lib/x`) is not seen until the next package change:
//! `airlock vm` users who edit `/usr` by hand remove `<state>/vm/host/`.
//! airlock's own programs in `/usr/local/bin` (which `scripts/setup.sh`
//! reinstalls on every run) are left out of both the key and the disk, so
//! that installing airlock does not rebuild `/usr`'s disk.
//! The first build copies all of `/usr` (minutes, and its size on disk).

use crate::{io_err, Result, VmError};
use airlock_jail::mount::{HostFacts, HostKind};
use std::path::{Path, PathBuf};

/// The host image's disks.
#[derive(Debug, Clone)]
pub struct HostImage {
    pub usr: PathBuf,
    pub etc: PathBuf,
}

/// The virtio serial numbers of the disks (the guest finds them by these).
pub const SERIAL_USR: &str = "airlock-usr";
pub const SERIAL_ETC: &str = "airlock-etc";

fn change_id(p: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(p) {
        Ok(m) => format!(
            "{}:{}:{}:{}.{}:{}",
            p.display(),
            m.dev(),
            m.ino(),
            m.ctime(),
            m.ctime_nsec(),
            m.size()
        ),
        Err(_) => format!("{}:-", p.display()),
    }
}

fn walk_ids(p: &Path, out: &mut Vec<String>, depth: usize) {
    out.push(change_id(p));
    if depth > 8 {
        return;
    }
    if let Ok(m) = std::fs::symlink_metadata(p) {
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(p) {
                let mut names: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
                names.sort();
                for n in names {
                    walk_ids(&n, out, depth + 1);
                }
            }
        }
    }
}

pub(crate) fn mkfs(dir: &Path, out: &Path) -> Result<()> {
    mkfs_with(dir, out, &[])
}

/// airlock's own programs as `setup.sh` installs them in
/// `/usr/local/bin`: every install replaces them, which would change
/// `/usr`'s key and rebuild its several-GB disk; they are neither part of
/// the key nor of the disk (a guest has no use for the host's airlock).
const OWN_PROGRAMS: &[&str] = &[
    "airlock",
    "airlock-agent",
    "airlock-serve",
    "airlock-pull",
    "airlock-runc",
];

fn mkfs_with(dir: &Path, out: &Path, extra: &[String]) -> Result<()> {
    let prog = crate::find_program("mkfs.erofs").ok_or(VmError::Missing {
        what: "mkfs.erofs".into(),
        hint: "install the Debian package erofs-utils; scripts/setup.sh does",
    })?;
    let o = std::process::Command::new(prog)
        .arg("--quiet")
        .args(extra)
        .arg(out)
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(io_err("run mkfs.erofs for", dir))?;
    if !o.status.success() {
        return Err(VmError::Tool {
            tool: "mkfs.erofs",
            status: o.status.to_string(),
            stderr: String::from_utf8_lossy(&o.stderr)
                .chars()
                .take(2000)
                .collect(),
        });
    }
    Ok(())
}

/// Builds (or finds) `name` in `dir` from `make` (given a temporary
/// output path), under the directory's lock.
fn cached(dir: &Path, name: &str, make: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        return Ok(path);
    }
    let _lock = crate::lock(&dir.join(".lock"))?;
    if path.is_file() {
        return Ok(path);
    }
    // Older builds of the same kind go first (the host changed since, so
    // they are never used again; a machine still running holds its disk
    // open): the disk never needs room for two `/usr` images at once.
    let prefix = name.split('-').next().unwrap_or(name).to_string();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n != name && n.starts_with(&format!("{prefix}-")) && n.ends_with(".erofs") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let tmp = crate::temp_beside(&path);
    let _ = std::fs::remove_file(&tmp);
    if let Err(e) = make(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
    Ok(path)
}

impl HostImage {
    /// The disks of the `host` image, built if needed.
    pub fn get(state: &Path, facts: &HostFacts) -> Result<HostImage> {
        for (name, link) in &facts.top {
            if name != "usr" && link.is_none() {
                return Err(VmError::UnmergedUsr(name.clone()));
            }
        }
        let dir = crate::vm_dir(state, "host")?;
        let mut ukey = Vec::new();
        for p in [
            "/usr",
            "/usr/bin",
            "/usr/sbin",
            "/usr/lib",
            "/usr/lib/x86_64-linux-gnu",
            "/usr/local",
            "/usr/local/lib",
            "/usr/share",
            "/var/lib/dpkg/status",
        ] {
            ukey.push(change_id(Path::new(p)));
        }
        // /usr/local/bin entry by entry, but for airlock's own programs
        // (the directory's own times change with each of their installs).
        ukey.push("usr v2".into());
        if let Ok(rd) = std::fs::read_dir("/usr/local/bin") {
            let mut names: Vec<PathBuf> = rd
                .flatten()
                .filter(|e| !OWN_PROGRAMS.iter().any(|p| e.file_name() == *p))
                .map(|e| e.path())
                .collect();
            names.sort();
            for n in names {
                ukey.push(change_id(&n));
            }
        }
        let parts: Vec<&[u8]> = ukey.iter().map(|s| s.as_bytes()).collect();
        let exclude = format!("--exclude-regex=^local/bin/({})$", OWN_PROGRAMS.join("|"));
        let usr = cached(&dir, &format!("usr-{}.erofs", crate::hash(&parts)), |out| {
            mkfs_with(Path::new("/usr"), out, &[exclude])
        })?;
        let mut ekey = vec!["etc v1".to_string()];
        for (name, _) in &facts.etc {
            walk_ids(&Path::new("/etc").join(name), &mut ekey, 0);
        }
        let parts: Vec<&[u8]> = ekey.iter().map(|s| s.as_bytes()).collect();
        let etc = cached(&dir, &format!("etc-{}.erofs", crate::hash(&parts)), |out| {
            let stage = out.with_extension("d");
            let _ = std::fs::remove_dir_all(&stage);
            std::fs::create_dir(&stage).map_err(io_err("create", &stage))?;
            let r = (|| {
                for (name, kind) in &facts.etc {
                    let from = Path::new("/etc").join(name);
                    let to = stage.join(name);
                    match kind {
                        HostKind::Symlink(t) => {
                            std::os::unix::fs::symlink(t, &to).map_err(io_err("symlink", &to))?
                        }
                        HostKind::File | HostKind::Dir => {
                            let o = std::process::Command::new("cp")
                                .arg("-a")
                                .arg("--")
                                .arg(&from)
                                .arg(&to)
                                .output()
                                .map_err(io_err("copy", &from))?;
                            if !o.status.success() {
                                return Err(VmError::Tool {
                                    tool: "cp",
                                    status: o.status.to_string(),
                                    stderr: String::from_utf8_lossy(&o.stderr)
                                        .chars()
                                        .take(2000)
                                        .collect(),
                                });
                            }
                        }
                    }
                }
                mkfs(&stage, out)
            })();
            // Our own staging directory, made above.
            let _ = std::fs::remove_dir_all(&stage);
            r
        })?;
        Ok(HostImage { usr, etc })
    }
}

/// The virtio serial number of a store image's disk.
pub const SERIAL_IMAGE: &str = "airlock-image";

/// A store image's flattened tree as a read-only erofs disk, cached under
/// `<state>/vm/images/` by the tree's path and identity (store trees are
/// content-addressed and never change in place).
pub fn store_image(state: &Path, tree: &Path) -> Result<PathBuf> {
    let dir = crate::vm_dir(state, "images")?;
    let key = [format!("image v1 {}", tree.display()), change_id(tree)];
    let parts: Vec<&[u8]> = key.iter().map(|s| s.as_bytes()).collect();
    let name = format!("img{}-{}.erofs", crate::hash(&parts), "t");
    cached(&dir, &name, |out| mkfs(tree, out))
}
