//! An engine's rootfs that is itself an overlayfs mount (podman's and
//! containerd's default storage). overlayfs cannot be id-mapped, and a
//! root-run sandbox needs its image id-mapped onto its subordinate range
//! (else root's files inside are nobody's). overlayfs *layers* can be: so
//! the monitor takes the engine's layers from the mount (its upper
//! directory and lower directories, all read-only here), id-maps each
//! onto the sandbox's range, and makes a read-only overlay of them. That
//! overlay's files already carry the sandbox's host ids; it is attached
//! under the container's state directory just long enough for the jail to
//! open it, then detached.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const OVERLAYFS_MAGIC: i64 = 0x794c_7630;

fn is_overlay(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills a plain struct; a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == OVERLAYFS_MAGIC }
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(n) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(n);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The layers of the overlay mounted at `at` (upper first, then the lower
/// ones in order), from a mountinfo text.
pub fn layers_from_mountinfo(mountinfo: &str, at: &Path) -> Option<Vec<PathBuf>> {
    let mut found = None;
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mp) = pre.split(' ').nth(4) else {
            continue;
        };
        if Path::new(&unescape(mp)) != at {
            continue;
        }
        let mut it = post.split(' ');
        if it.next() != Some("overlay") {
            continue;
        }
        let _src = it.next();
        // The last such mount wins (it is the one on top).
        found = it.next().map(str::to_string);
    }
    let opts = found?;
    let mut upper = None;
    let mut lowers = Vec::new();
    for o in opts.split(',') {
        if let Some(v) = o.strip_prefix("upperdir=") {
            upper = Some(PathBuf::from(unescape(v)));
        } else if let Some(v) = o.strip_prefix("lowerdir=") {
            for l in unescape(v).split(':').filter(|l| !l.is_empty()) {
                lowers.push(PathBuf::from(l));
            }
        }
    }
    // Relative lower paths (containers/storage's short links, `l/ID`) are
    // relative to the driver's directory, the upper's grandparent.
    let base = upper
        .as_ref()
        .and_then(|u| u.parent()?.parent().map(Path::to_path_buf));
    let mut out: Vec<PathBuf> = upper.into_iter().collect();
    for l in lowers {
        if l.is_absolute() {
            out.push(l);
        } else {
            out.push(base.as_ref()?.join(l));
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A rootfs made usable: the path to give the jail, and whether it is
/// premapped (then [`Premapped::detach`] it once the sandbox exists).
pub struct Premapped {
    pub at: PathBuf,
}

impl Premapped {
    /// Detaches the overlay from the host's tree (the sandbox keeps its
    /// own clone) and removes its mount point.
    pub fn detach(self) {
        if let Ok(c) = CString::new(self.at.as_os_str().as_bytes()) {
            // SAFETY: unmounts our own mount at a path we made.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.at);
    }
}

/// If `rootfs` is an overlay mount and the sandbox is root-run (a
/// subordinate range), builds the id-mapped overlay of its layers at
/// `at` (a directory made here). `Ok(None)`: use `rootfs` as it is.
pub fn premap(rootfs: &Path, at: &Path) -> io::Result<Option<Premapped>> {
    let airlock_jail::userns::IdMap::Range { .. } = airlock_core::facts::idmap() else {
        return Ok(None);
    };
    if !is_overlay(rootfs) {
        return Ok(None);
    }
    let canon = std::fs::canonicalize(rootfs)?;
    let mi = std::fs::read_to_string("/proc/self/mountinfo")?;
    let layers = layers_from_mountinfo(&mi, &canon).ok_or_else(|| {
        io::Error::other(format!(
            "{} is on overlayfs but is not an overlay mount point whose layers can be read from /proc/self/mountinfo",
            canon.display()
        ))
    })?;
    let (uid_map, gid_map) = airlock_core::facts::idmap().map_lines();
    let ns = airlock_jail::userns::userns_with_maps(&uid_map, &gid_map)?;
    let mut trees: Vec<OwnedFd> = Vec::new();
    for l in &layers {
        let t = airlock_sys::open_tree_clone(l, false)
            .map_err(|e| io::Error::other(format!("open layer {}: {e}", l.display())))?;
        airlock_sys::mount_setattr(
            t.as_raw_fd(),
            airlock_sys::MOUNT_ATTR_RDONLY
                | airlock_sys::MOUNT_ATTR_NOSUID
                | airlock_sys::MOUNT_ATTR_NODEV,
            0,
            false,
        )?;
        airlock_sys::mount_setattr_userns(
            t.as_raw_fd(),
            airlock_sys::MOUNT_ATTR_IDMAP,
            0,
            false,
            Some(ns.as_raw_fd()),
        )
        .map_err(|e| io::Error::other(format!("id-map layer {}: {e}", l.display())))?;
        trees.push(t);
    }
    let fds: Vec<i32> = trees.iter().map(|t| t.as_raw_fd()).collect();
    let ovl = airlock_sys::overlay_from_fds(
        &fds,
        &[],
        airlock_sys::MOUNT_ATTR_RDONLY
            | airlock_sys::MOUNT_ATTR_NOSUID
            | airlock_sys::MOUNT_ATTR_NODEV,
    )
    .map_err(|e| io::Error::other(format!("overlay of the rootfs's layers: {e:?}")))?;
    std::fs::create_dir(at)?;
    if let Err(e) = airlock_sys::move_mount_path(ovl.as_raw_fd(), at) {
        let _ = std::fs::remove_dir(at);
        return Err(e);
    }
    Ok(Some(Premapped {
        at: at.to_path_buf(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_of_a_podman_mount() {
        let mi = "\
22 1 8:1 / / rw,relatime - ext4 /dev/vda rw
400 22 0:99 / /var/lib/containers/storage/overlay/abc/merged rw,relatime - overlay overlay rw,lowerdir=l/AAA:l/BBB,upperdir=/var/lib/containers/storage/overlay/abc/diff,workdir=/var/lib/containers/storage/overlay/abc/work
401 22 0:98 / /run/x\\040y rw - overlay overlay rw,lowerdir=/a:/b
";
        let l = layers_from_mountinfo(
            mi,
            Path::new("/var/lib/containers/storage/overlay/abc/merged"),
        )
        .unwrap();
        assert_eq!(
            l,
            [
                "/var/lib/containers/storage/overlay/abc/diff",
                "/var/lib/containers/storage/overlay/l/AAA",
                "/var/lib/containers/storage/overlay/l/BBB"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(
            layers_from_mountinfo(mi, Path::new("/run/x y")).unwrap(),
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert!(layers_from_mountinfo(mi, Path::new("/")).is_none());
    }
}
