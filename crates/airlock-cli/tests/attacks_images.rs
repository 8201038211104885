//! Attacks through an image: a hostile image is the sandbox's root, so
//! everything in it is the attacker's — symlinks where airlock writes its
//! own files (`/etc/hosts` → `/etc/shadow`, `/etc/resolv.conf` →
//! `/proc/1/root/...`), symlinks and files where airlock mounts (`/proc`,
//! `/dev`, `/tmp`), a home directory down `/proc/1/root`, an `/etc/passwd`
//! that is a symlink to the host's `/etc/shadow`, setuid-root programs,
//! device nodes planted in the store. None of it reaches a host file or
//! gains a privilege, and the store's tree is left as it was.
//! Root-run and rootless.

mod common;
#[path = "common/oci.rs"]
mod oci;

use common::*;
use oci::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;

fn airlock_in(who: Who, state: &Path, args: &[&str]) -> Option<Out> {
    let sd = state.display().to_string();
    let mut c = airlock_env(who, &[("AIRLOCK_STATE_DIR", sd.as_str())])?;
    c.args(args).stdin(Stdio::null());
    let o = c.output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    Some(Out {
        code: o
            .status
            .code()
            .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0)),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    })
}

fn caller_ids(who: Who) -> (u32, u32) {
    match who {
        Who::Root => (0, 0),
        Who::User => test_user_ids().unwrap_or_else(|| {
            // SAFETY: getuid/getgid cannot fail.
            unsafe { (libc::getuid(), libc::getgid()) }
        }),
    }
}

fn import(who: Who, state: &Path, work: &Path, i: &Img, name: &str, extra: &[&str]) {
    let p = work.join(format!("{name}.tar"));
    std::fs::write(&p, tar_files(&oci_files(i))).unwrap();
    let (u, g) = caller_ids(who);
    std::os::unix::fs::chown(&p, Some(u), Some(g)).unwrap();
    let mut a = vec!["image", "import", p.to_str().unwrap(), "--name", name, "-q"];
    a.extend_from_slice(extra);
    airlock_in(who, state, &a).unwrap().ok();
}

fn tree_of(who: Who, state: &Path, name: &str) -> PathBuf {
    let o = airlock_in(who, state, &["image", "inspect", name]).unwrap();
    o.ok();
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    PathBuf::from(v["rootfs_path"].as_str().unwrap())
}

/// A tree's entries with kind, mode, owner, size, times and content.
fn snap(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let m = std::fs::symlink_metadata(&p).unwrap();
        let extra = if m.is_file() {
            String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()
        } else if m.file_type().is_symlink() {
            std::fs::read_link(&p).unwrap().display().to_string()
        } else {
            String::new()
        };
        out.push(format!(
            "{} {:o} {}:{} {} {} {} {} {extra:?}",
            rel.display(),
            m.mode(),
            m.uid(),
            m.gid(),
            m.size(),
            m.mtime(),
            m.ctime(),
            m.ino(),
        ));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap().flatten() {
                stack.push(rel.join(e.file_name()));
            }
        }
    }
    out.sort();
    out
}

/// A host file's content and times, to see that nothing wrote it.
fn host_state(p: &str) -> Option<(Vec<u8>, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).ok()?;
    Some((std::fs::read(p).unwrap_or_default(), m.mtime(), m.ctime()))
}

/// The hostile image: every place airlock writes or mounts is a trap.
/// `decoy` is a host directory anyone may write (as a user's own files
/// are, rootless): airlock must not write there either.
fn hostile(decoy: &Path) -> Img {
    let decoy = decoy.display().to_string();
    let shadow =
        format!("root:x:0:0:root:/root:/bin/sh\nleak:x:1001:1001:leak:{decoy}/home:/bin/sh\n");
    let layer = tar(&[
        d("usr/"),
        l("bin", "usr/bin"),
        l("lib", "usr/lib"),
        l("lib64", "usr/lib64"),
        d("etc/"),
        // Its /etc/passwd is a symlink to the *host's* shadow: resolved in
        // the image it is the image's own etc/shadow, which is in passwd
        // form and names the user the config asks for.
        l("etc/passwd", "/etc/shadow"),
        f("etc/shadow", &shadow),
        l("etc/hosts", "/etc/shadow"),
        l("etc/hostname", &format!("{decoy}/file")),
        l("etc/resolv.conf", "/proc/1/root/etc/resolv.conf"),
        // Where airlock mounts: a symlink out, a file.
        l("dev", "/"),
        f("proc", "not a directory"),
        l("tmp", "/proc/1/root/tmp"),
        // Absolute symlinks to host places.
        l("hostetc", "/etc"),
        l("hostroot", "/proc/1/root"),
        l("wd", "/proc/self/root/../../.."),
        l("work", "/proc/1/root/tmp/airlock-pwned-wd"),
        l("decoy", &decoy),
        l("up", "../../../../../../../../../etc/passwd"),
        // A setuid-root program (kept only with --allow-setuid).
        d("opt/"),
    ]);
    img(
        &[(layer, Comp::Gzip)],
        serde_json::json!({
            "User": "leak",
            "WorkingDir": "/decoy/wd",
            "Env": ["PATH=/usr/bin:/bin"],
            "Cmd": ["sh"],
        }),
    )
}

/// A layer with a setuid-root copy of the host's `id`.
fn suid_layer() -> Vec<u8> {
    let id = std::fs::read("/usr/bin/id").unwrap();
    let e = E {
        path: b"opt/id".to_vec(),
        kind: Kind::File(id),
        mode: 0o4755,
        uid: 0,
        gid: 0,
        size_override: None,
        mtime: 1_600_000_000,
    };
    tar(&[d("opt/"), e])
}

const SCRIPT: &str = r#"
echo "user=$(id -u):$(id -g) home=$HOME cwd=$(pwd)"
echo "hosts:"; cat /etc/hosts
echo "hostname:"; cat /etc/hostname
echo "resolv:"; cat /etc/resolv.conf; echo "."
test -L /etc/hosts && echo "hosts is a symlink"
echo "shadow:"; cat /hostetc/shadow 2>&1 | head -1
ls /hostroot/ 2>&1 | head -1
ls /proc/1/root/ 2>&1 | head -1
echo pwned > /tmp/airlock-pwned-tmp 2>&1 || echo "tmp write refused"
mkdir -p "$HOME/x" 2>&1 || echo "home refused"
test -d /dev && ! test -L /dev && echo "dev is a directory"
test -d /proc/self && echo "proc is procfs"
cat /dev/null && echo "dev/null works"
/opt/id 2>/dev/null | grep -o 'euid=[0-9]*' || echo "no euid"
"#;

#[test]
fn hostile_image_reaches_no_host_file_and_gains_nothing() {
    both(|who| {
        let Some(_) = airlock(who) else { return };
        let state = scratch(who);
        let work = tempdir::Dir::new();
        // Everyone may write the decoy (a rootless caller's own files are
        // the sandbox's to write, a root-run sandbox's ids are others).
        let decoy = work.path().join("decoy");
        std::fs::create_dir(&decoy).unwrap();
        std::fs::write(decoy.join("file"), "decoy").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&decoy, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(decoy.join("file"), std::fs::Permissions::from_mode(0o666))
            .unwrap();
        let decoy_before = snap(&decoy);
        let mut i = hostile(&decoy);
        // The setuid copy as a second layer (its diff id must be in the
        // config).
        let sl = suid_layer();
        i.config["rootfs"]["diff_ids"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::Value::String(
                airlock_image::Digest::of(&sl).to_string(),
            ));
        i.blobs.push((sl, "application/vnd.oci.image.layer.v1.tar"));
        import(
            who,
            state.path(),
            work.path(),
            &i,
            "evil",
            &["--allow-setuid"],
        );
        let tree = tree_of(who, state.path(), "evil");
        assert_eq!(
            std::fs::metadata(tree.join("opt/id"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o4755,
            "the test image keeps its setuid bit"
        );
        let watched = [
            "/etc/shadow",
            "/etc/passwd",
            "/etc/hosts",
            "/etc/hostname",
            "/etc/resolv.conf",
        ];
        let before: Vec<_> = watched.iter().map(|p| host_state(p)).collect();
        let tree_before = snap(&tree);
        let pwned = [
            "/tmp/airlock-pwned-tmp",
            "/tmp/airlock-pwned-home",
            "/tmp/airlock-pwned-wd",
        ];
        for p in pwned {
            assert!(!Path::new(p).exists(), "{p} exists before the test");
        }
        let shadow_line = std::fs::read_to_string("/etc/shadow")
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or("root:")
            .to_string();

        for user in [None, Some("root")] {
            let mut a = vec![
                "run",
                "--image",
                "evil",
                "--mount",
                "/usr:/usr:ro",
                "--workdir",
                "/opt",
            ];
            if let Some(u) = user {
                a.extend_from_slice(&["--user", u]);
            }
            a.extend_from_slice(&["--", "sh", "-c", SCRIPT]);
            let o = airlock_in(who, state.path(), &a).unwrap();
            let out = o.stdout.clone();
            assert_eq!(o.code, 0, "{who:?} {user:?}: {o:?}");
            let home = format!("{}/home", decoy.display());
            let (uid, home) = match user {
                None => ("1001:1001", home.as_str()),
                Some(_) => ("0:0", "/root"),
            };
            assert!(
                out.contains(&format!("user={uid} home={home} cwd=/opt")),
                "{who:?} {user:?}: {out}"
            );
            // airlock's files replaced the image's symlinks (written into
            // the overlay, never through them).
            assert!(
                out.contains("hosts:\n127.0.0.1\tlocalhost airlock\n"),
                "{who:?}: {out}"
            );
            assert!(out.contains("hostname:\nairlock\n"), "{who:?}: {out}");
            assert!(out.contains("resolv:\n.\n"), "{who:?}: {out}");
            assert!(!out.contains("hosts is a symlink"), "{who:?}: {out}");
            // Absolute symlinks resolve in the sandbox: the image's shadow.
            assert!(
                out.contains("shadow:\nroot:x:0:0:root:/root:/bin/sh\n"),
                "{who:?}: {out}"
            );
            assert!(
                !out.contains(&shadow_line),
                "{who:?}: the host's shadow: {out}"
            );
            // /proc/1 is the agent: its root is not to be followed.
            assert!(out.contains("Permission denied"), "{who:?}: {out}");
            assert!(out.contains("tmp write refused"), "{who:?}: {out}");
            assert!(out.contains("dev is a directory"), "{who:?}: {out}");
            assert!(out.contains("proc is procfs"), "{who:?}: {out}");
            assert!(out.contains("dev/null works"), "{who:?}: {out}");
            // The setuid-root program runs without its privilege.
            assert!(
                !out.contains("euid=0"),
                "{who:?} {user:?}: setuid worked: {out}"
            );
        }
        // Working directories that lead nowhere: the run fails, cleanly.
        // (The image's own, /decoy/wd, leads through its /tmp symlink.)
        for wd in [None, Some("/work"), Some("/wd/x"), Some("/up")] {
            let mut a = vec!["run", "--image", "evil", "--mount", "/usr:/usr:ro"];
            if let Some(w) = wd {
                a.extend_from_slice(&["--workdir", w]);
            }
            a.extend_from_slice(&["--", "true"]);
            let o = airlock_in(who, state.path(), &a).unwrap();
            assert_eq!(o.code, 125, "{who:?} {wd:?}: {o:?}");
            assert!(
                o.stderr.contains("working directory")
                    || o.stderr.contains("something other than a directory"),
                "{who:?}: {o:?}"
            );
        }
        for p in pwned {
            assert!(
                !Path::new(p).exists(),
                "{who:?}: {p} was written on the host"
            );
        }
        let after: Vec<_> = watched.iter().map(|p| host_state(p)).collect();
        assert_eq!(before, after, "{who:?}: a host file changed");
        assert_eq!(snap(&decoy), decoy_before, "{who:?}: the decoy changed");
        assert_eq!(
            snap(&tree),
            tree_before,
            "{who:?}: the store's tree changed"
        );
    });
}

/// Device nodes cannot come through an import, a pull or a build; should
/// one be in a store's tree anyway (planted behind airlock's back), the
/// root overlay is `nodev` and the sandbox's user namespace owns it: the
/// node does not open.
#[test]
fn a_device_node_planted_in_the_store_does_not_open() {
    let Some(_) = airlock(Who::Root) else { return };
    let state = tempdir::Dir::new();
    let work = tempdir::Dir::new();
    let i = img(
        &[(
            tar(&[
                d("usr/"),
                l("bin", "usr/bin"),
                l("lib", "usr/lib"),
                l("lib64", "usr/lib64"),
            ]),
            Comp::None,
        )],
        serde_json::json!({"Cmd": ["sh"]}),
    );
    import(Who::Root, state.path(), work.path(), &i, "dev", &[]);
    let tree = tree_of(Who::Root, state.path(), "dev");
    // /dev/zero's numbers, world-readable and -writable.
    let node = tree.join("zero-node");
    let c = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 5)) };
    assert_eq!(r, 0, "mknod: {}", std::io::Error::last_os_error());
    for user in ["root", "1000"] {
        let o = airlock_in(
            Who::Root,
            state.path(),
            &[
                "run", "--image", "dev", "--user", user, "--mount", "/usr:/usr:ro", "--", "sh", "-c",
                "test -c /zero-node && echo chr; \
                 if dd if=/zero-node of=/dev/null bs=4 count=1 status=none 2>/tmp/e; then echo opened; else cat /tmp/e; fi; \
                 if { echo > /zero-node; } 2>/tmp/e; then echo wrote; else cat /tmp/e; fi",
            ],
        )
        .unwrap();
        o.ok();
        assert!(o.stdout.contains("chr"), "{o:?}");
        assert_eq!(
            o.stdout.matches("Permission denied").count(),
            2,
            "{user}: {o:?}"
        );
        assert!(
            !o.stdout.contains("opened") && !o.stdout.contains("wrote"),
            "{user}: the node opened: {o:?}"
        );
    }
}
