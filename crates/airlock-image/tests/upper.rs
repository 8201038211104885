//! RUN steps leave their changes in an overlayfs upper directory; these
//! tests turn upper directories into layers: built by hand in both xattr
//! formats (`trusted.overlay.*` as root mounts write, `user.overlay.*` as
//! `userxattr` mounts write), and made by a real overlayfs mount.

use airlock_image::{add_tar_layer, commit_upper, Limits, StepLayer, Store};
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn skip(why: &str) {
    if std::env::var("AIRLOCK_TEST_MUST_RUN").is_ok_and(|v| v == "1") {
        panic!("AIRLOCK_TEST_MUST_RUN=1 but this test cannot run: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

struct Tmp(PathBuf);
impl Tmp {
    fn new(tag: &str) -> Tmp {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "airlock-upper-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.0.join("mnt"))
            .output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The base layer: a, b, mod, d/{x,y}, keep/k, link -> a.
fn base_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, data: &[u8], mode: u32, link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        match link {
            Some(t) => b.append_link(&mut h, path, t).unwrap(),
            None => b.append_data(&mut h, path, data).unwrap(),
        }
    };
    add("a", tar::EntryType::Regular, b"a", 0o644, None);
    add("b", tar::EntryType::Regular, b"b", 0o644, None);
    add("mod", tar::EntryType::Regular, b"old", 0o644, None);
    add("d/", tar::EntryType::Directory, b"", 0o755, None);
    add("d/x", tar::EntryType::Regular, b"x", 0o644, None);
    add("d/y", tar::EntryType::Regular, b"y", 0o644, None);
    add("keep/", tar::EntryType::Directory, b"", 0o755, None);
    add("keep/k", tar::EntryType::Regular, b"k", 0o644, None);
    add("link", tar::EntryType::Symlink, b"", 0o777, Some("a"));
    b.into_inner().unwrap()
}

fn base(store: &Store) -> StepLayer {
    let mut txn = store.begin().unwrap();
    let t = base_tar();
    let sl = add_tar_layer(&mut txn, None, false, Limits::default(), |w| {
        std::io::Write::write_all(w, &t).map_err(|e| airlock_image::ImageError::Io {
            op: "write",
            path: "layer".into(),
            source: e,
        })
    })
    .unwrap();
    txn.commit().unwrap();
    StepLayer {
        tree: store.tree_dir(&sl.rootfs),
        ..sl
    }
}

/// `kind path [=content | -> target]` for every entry.
fn tree(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel)).unwrap().flatten() {
            let r = rel.join(e.file_name());
            let p = root.join(&r);
            let m = std::fs::symlink_metadata(&p).unwrap();
            let s = if m.is_dir() {
                stack.push(r.clone());
                format!("d {}", r.display())
            } else if m.file_type().is_symlink() {
                format!(
                    "l {} -> {}",
                    r.display(),
                    std::fs::read_link(&p).unwrap().display()
                )
            } else if m.is_file() {
                format!(
                    "f {} ={}",
                    r.display(),
                    std::fs::read_to_string(&p).unwrap()
                )
            } else {
                format!("? {}", r.display())
            };
            out.insert(s);
        }
    }
    out
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn layer_names(store: &Store, sl: &StepLayer) -> BTreeSet<String> {
    let blob = store.read_blob(&sl.layer.digest).unwrap();
    let mut ar = tar::Archive::new(&blob[..]);
    ar.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

fn setxattr(p: &Path, name: &str, v: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn whiteout(p: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string; a 0/0 character device is overlayfs's whiteout.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, 0) };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

const EXPECTED: &[&str] = &[
    "d d",
    "d keep",
    "f b =b",
    "f c =new",
    "f c2 =new",
    "f d/z =z",
    "f keep/k =k",
    "f mod =changed",
    "l link -> a",
    "l sym -> c",
];

fn check(store: &Store, parent: &StepLayer, sl: &StepLayer) {
    assert_eq!(tree(&sl.tree), set(EXPECTED));
    // The parent's tree is untouched and shares unchanged inodes only.
    assert!(tree(&parent.tree).contains("f mod =old"));
    assert!(tree(&parent.tree).contains("f a =a"));
    let ino = |t: &Path, p: &str| std::fs::symlink_metadata(t.join(p)).unwrap().ino();
    assert_ne!(ino(&parent.tree, "mod"), ino(&sl.tree, "mod"));
    assert_eq!(ino(&parent.tree, "keep/k"), ino(&sl.tree, "keep/k"));
    // Hard links inside the upper stay one inode.
    assert_eq!(ino(&sl.tree, "c"), ino(&sl.tree, "c2"));
    let names = layer_names(store, sl);
    assert!(names.contains(".wh.a"), "{names:?}");
    assert!(names.contains("d/.wh..wh..opq"), "{names:?}");
    assert_eq!(
        sl.chain_id,
        airlock_image::Digest::chain(Some(&parent.chain_id), &sl.layer.diff_id)
    );
}

fn hand_made(xattr_ns: &str) {
    if !is_root() {
        skip("making 0/0 whiteouts and trusted.* xattrs by hand needs root");
        return;
    }
    let t = Tmp::new(xattr_ns);
    let store = Store::open(&t.0.join("state")).unwrap();
    let parent = base(&store);
    let mut txn = store.begin().unwrap();
    let up = txn.scratch("upper-").unwrap();
    std::fs::write(up.join("c"), "new").unwrap();
    std::fs::hard_link(up.join("c"), up.join("c2")).unwrap();
    std::fs::write(up.join("mod"), "changed").unwrap();
    whiteout(&up.join("a"));
    std::fs::create_dir(up.join("d")).unwrap();
    setxattr(&up.join("d"), &format!("{xattr_ns}.overlay.opaque"), b"y");
    std::fs::write(up.join("d/z"), "z").unwrap();
    std::os::unix::fs::symlink("c", up.join("sym")).unwrap();
    let sl = commit_upper(
        &mut txn,
        Some(&parent.chain_id),
        &up,
        false,
        Limits::default(),
    )
    .unwrap();
    txn.commit().unwrap();
    let sl = StepLayer {
        tree: store.tree_dir(&sl.rootfs),
        ..sl
    };
    check(&store, &parent, &sl);
}

#[test]
fn upper_by_hand_trusted_xattrs() {
    hand_made("trusted");
}

#[test]
fn upper_by_hand_user_xattrs() {
    hand_made("user");
}

#[test]
fn upper_refuses_devices_and_redirects() {
    if !is_root() {
        skip("mknod of a device needs root");
        return;
    }
    let t = Tmp::new("bad");
    let store = Store::open(&t.0.join("state")).unwrap();
    let parent = base(&store);
    let mut txn = store.begin().unwrap();
    let up = txn.scratch("upper-").unwrap();
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(up.join("null").as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string; makes /dev/null's device number.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(r, 0);
    let e = commit_upper(
        &mut txn,
        Some(&parent.chain_id),
        &up,
        false,
        Limits::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("device node"), "{e}");
    std::fs::remove_file(up.join("null")).unwrap();
    std::fs::create_dir(up.join("moved")).unwrap();
    setxattr(&up.join("moved"), "trusted.overlay.redirect", b"/d");
    let e = commit_upper(
        &mut txn,
        Some(&parent.chain_id),
        &up,
        false,
        Limits::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("redirect_dir=off"), "{e}");
}

#[test]
fn upper_from_a_real_overlayfs_mount() {
    if !is_root() {
        skip("mounting overlayfs needs root");
        return;
    }
    let t = Tmp::new("mount");
    let store = Store::open(&t.0.join("state")).unwrap();
    let parent = base(&store);
    let mut txn = store.begin().unwrap();
    let up = txn.scratch("upper-").unwrap();
    let work = txn.scratch("work-").unwrap();
    let mnt = t.0.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off",
        parent.tree.display(),
        up.display(),
        work.display()
    );
    let o = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&mnt)
        .output()
        .unwrap();
    if !o.status.success() {
        skip(&format!(
            "cannot mount overlayfs here: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
        return;
    }
    let sh = format!(
        "set -e; cd {}; echo -n new > c; ln c c2; rm a; rm -r d; mkdir d; echo -n z > d/z; echo -n changed > mod; ln -s c sym",
        mnt.display()
    );
    let r = Command::new("sh").arg("-c").arg(&sh).status().unwrap();
    let u = Command::new("umount").arg(&mnt).status().unwrap();
    assert!(r.success() && u.success());
    let sl = commit_upper(
        &mut txn,
        Some(&parent.chain_id),
        &up,
        false,
        Limits::default(),
    )
    .unwrap();
    txn.commit().unwrap();
    let sl = StepLayer {
        tree: store.tree_dir(&sl.rootfs),
        ..sl
    };
    check(&store, &parent, &sl);
}
