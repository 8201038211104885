//! `airlock run --image`: a generated image imported into the store, then
//! run as root and as the unprivileged test user: the sandbox sees exactly
//! the image's tree (layers applied, whiteouts, owners) plus what airlock
//! provides, the config's defaults (Env, WorkingDir, User, Entrypoint,
//! Cmd) and their overrides; the root is writable, every change is thrown
//! away, the store's tree never changes, and `--disk` caps the writes.
//!
//! The images carry no programs of their own: `usr/` is empty and `bin`,
//! `lib`, `lib64`, `sbin` point into it, and the tests mount the host's
//! `/usr` read-only over it (`--mount /usr:/usr:ro`, a user mount on top of
//! the image, as any).

mod common;
#[path = "common/oci.rs"]
mod oci;

use common::*;
use oci::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// `airlock ARGS` as `who` with the state directory `state`.
pub fn airlock_in(who: Who, state: &Path, args: &[&str]) -> Option<Out> {
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

/// The ids `who`'s sandbox files belong to on the host (root keeps the
/// archive's; rootless, everything is the caller's).
fn caller_ids(who: Who) -> (u32, u32) {
    match who {
        Who::Root => (0, 0),
        Who::User => test_user_ids().unwrap_or_else(|| {
            // SAFETY: getuid/getgid cannot fail.
            unsafe { (libc::getuid(), libc::getgid()) }
        }),
    }
}

/// Imports the image `i` as `name` into `state`, as `who`.
fn import(who: Who, state: &Path, work: &Path, i: &Img, name: &str, extra: &[&str]) {
    let p = work.join(format!("{}.tar", name.replace(['/', ':'], "_")));
    std::fs::write(&p, tar_files(&oci_files(i))).unwrap();
    let (u, g) = caller_ids(who);
    std::os::unix::fs::chown(&p, Some(u), Some(g)).unwrap();
    let mut a = vec!["image", "import", p.to_str().unwrap(), "--name", name, "-q"];
    a.extend_from_slice(extra);
    airlock_in(who, state, &a).unwrap().ok();
}

/// The image's tree on the host.
fn tree_of(who: Who, state: &Path, name: &str) -> PathBuf {
    let o = airlock_in(who, state, &["image", "inspect", name]).unwrap();
    o.ok();
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    PathBuf::from(v["rootfs_path"].as_str().unwrap())
}

/// A first layer that runs the host's programs: `bin`, `lib`, `lib64`,
/// `sbin` into an empty `usr/` (the tests mount the host's /usr there).
fn usr_base() -> Vec<E> {
    vec![
        d("usr/"),
        l("bin", "usr/bin"),
        l("lib", "usr/lib"),
        l("lib64", "usr/lib64"),
        l("sbin", "usr/sbin"),
    ]
}

const USR: [&str; 2] = ["--mount", "/usr:/usr:ro"];

fn passwd() -> E {
    f(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\napp:x:1001:1002:app:/home/app:/bin/sh\n",
    )
}

/// Two layers (gzip, zstd): whiteouts, an opaque directory, owners, a
/// symlink; a config with every default.
fn app_image() -> Img {
    let mut l1 = usr_base();
    l1.extend([
        d("etc/"),
        passwd(),
        f("etc/group", "root:x:0:\napp:x:1002:\nstaff:x:50:\n"),
        f("etc/hosts", "image hosts\n"),
        f("etc/conf", "v1"),
        d("old/"),
        f("old/x", "x"),
        f("a.txt", "a"),
        d("home/"),
        d("home/app/").mode(0o750).owner(1001, 1002),
        f("home/app/notes", "mine").mode(0o600).owner(1001, 1002),
        f("owned", "o").mode(0o640).owner(1001, 50),
        l("abs", "/etc/conf"),
    ]);
    let l2 = vec![
        f(".wh.a.txt", ""),
        d("old/"),
        f("old/.wh..wh..opq", ""),
        f("old/new", "new"),
        f("etc/conf", "v2"),
    ];
    img(
        &[(tar(&l1), Comp::Gzip), (tar(&l2), Comp::Zstd)],
        serde_json::json!({
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "GREETING=hi there", "LANG=C.UTF-8"],
            "WorkingDir": "/srv/app",
            "User": "app",
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo \"default $GREETING\"; pwd; echo \"$HOME $USER\"; id -u; id -g"],
        }),
    )
}

/// Python that prints the sandbox's root as [`snapshot`] lines (`kind
/// mode uid:gid path [=content | -> target]`, newlines and tabs in the
/// content as `\n` and `\t`), mount points left out.
const WALK: &str = r#"
import os, stat
out = []
def walk(d):
    for n in sorted(os.listdir(d)):
        p = os.path.join(d, n)
        st = os.lstat(p)
        if stat.S_ISDIR(st.st_mode) and os.path.ismount(p):
            continue
        rel = p[1:]
        if stat.S_ISLNK(st.st_mode):
            out.append(f"l 777 {st.st_uid}:{st.st_gid} {rel} -> {os.readlink(p)}")
            continue
        m = oct(stat.S_IMODE(st.st_mode))[2:]
        if stat.S_ISDIR(st.st_mode):
            out.append(f"d {m} {st.st_uid}:{st.st_gid} {rel}")
            walk(p)
        elif stat.S_ISREG(st.st_mode):
            try:
                c = open(p).read()
            except OSError as e:
                c = f"<{e.strerror}>"
            c = c.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
            out.append(f"f {m} {st.st_uid}:{st.st_gid} {rel} ={c}")
        else:
            out.append(f"? {m} {st.st_uid}:{st.st_gid} {rel}")
walk("/")
print("\n".join(sorted(out)))
"#;

/// What the sandbox shows of `app_image` as the user `app`, with ids
/// `app`/`staff`/`root` as `who` sees them.
fn expected_root(who: Who, hostname: &str) -> Vec<String> {
    // Rootless, every file is the caller's, which the command (uid 1001 in
    // its nested user namespace) sees as its own.
    let (root, app, staff) = match who {
        Who::Root => ("0:0", "1001:1002", "1001:50"),
        Who::User => ("1001:1002", "1001:1002", "1001:1002"),
    };
    let hosts =
        format!("127.0.0.1\\tlocalhost {hostname}\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n");
    let mut v: Vec<String> = [
        format!("d 755 {root} etc"),
        format!("d 755 {root} home"),
        format!("d 755 {root} old"),
        format!("d 750 {app} home/app"),
        format!("d 1777 {root} tmp"),
        // The working directory, made: the user's.
        format!("d 755 {app} srv"),
        format!("d 755 {app} srv/app"),
        format!("f 600 {app} home/app/notes =mine"),
        format!("f 640 {staff} owned =o"),
        format!("f 644 {root} etc/conf =v2"),
        format!("f 644 {root} etc/group =root:x:0:\\napp:x:1002:\\nstaff:x:50:\\n"),
        format!(
            "f 644 {root} etc/passwd =root:x:0:0:root:/root:/bin/sh\\napp:x:1001:1002:app:/home/app:/bin/sh\\n"
        ),
        format!("f 644 {root} old/new =new"),
        // airlock's own, in place of the image's /etc/hosts.
        format!("f 644 {root} etc/hostname ={hostname}\\n"),
        format!("f 644 {root} etc/hosts ={hosts}"),
        format!("f 644 {root} etc/resolv.conf ="),
        format!("l 777 {root} abs -> /etc/conf"),
        format!("l 777 {root} bin -> usr/bin"),
        format!("l 777 {root} lib -> usr/lib"),
        format!("l 777 {root} lib64 -> usr/lib64"),
        format!("l 777 {root} sbin -> usr/sbin"),
    ]
    .into_iter()
    .collect();
    v.sort();
    v
}

#[test]
fn run_image_sees_its_tree_and_the_configs_defaults() {
    both(|who| {
        let Some(_) = airlock(who) else { return };
        let state = scratch(who);
        let work = tempdir::Dir::new();
        import(who, state.path(), work.path(), &app_image(), "app", &[]);
        let run = |args: &[&str]| {
            let mut a = vec!["run", "--image", "app"];
            a.extend_from_slice(&USR);
            a.extend_from_slice(args);
            airlock_in(who, state.path(), &a).unwrap()
        };

        // No command: Entrypoint + Cmd, as the image's user, in its
        // WorkingDir (made), with its Env and HOME from its /etc/passwd.
        let o = run(&[]);
        o.ok();
        assert_eq!(
            o.lines(),
            [
                "default hi there",
                "/srv/app",
                "/home/app app",
                "1001",
                "1002"
            ],
            "{who:?}: {o:?}"
        );

        // Exactly the image's tree and what airlock adds.
        let o = run(&[
            "--hostname",
            "imgbox",
            "--entrypoint",
            "python3",
            "--",
            "-c",
            WALK,
        ]);
        o.ok();
        let got: Vec<String> = o.lines().iter().map(|l| l.to_string()).collect();
        assert_eq!(got, expected_root(who, "imgbox"), "{who:?}: {}", o.stderr);

        // A command: Entrypoint + the command; the environment's layers.
        let o = run(&[
            "--env",
            "GREETING=from --env",
            "--",
            "echo \"$GREETING|$LANG|$PATH|$TERM\"",
        ]);
        o.ok();
        assert_eq!(
            o.lines(),
            ["from --env|C.UTF-8|/usr/local/bin:/usr/bin:/bin|dumb"],
            "{who:?}: {o:?}"
        );

        // --user and --workdir win (names from the image's own files),
        // --entrypoint replaces the Entrypoint and drops the Cmd.
        let o = run(&[
            "--user",
            "app:staff",
            "--workdir",
            "/tmp/w",
            "--entrypoint",
            "/bin/sh",
            "--",
            "-c",
            "id -u; id -g; pwd; echo $HOME",
        ]);
        o.ok();
        assert_eq!(
            o.lines(),
            ["1001", "50", "/tmp/w", "/home/app"],
            "{who:?}: {o:?}"
        );
        let o = run(&[
            "--user",
            "root",
            "--entrypoint",
            "",
            "--",
            "sh",
            "-c",
            "id -u; echo $HOME; test -d /root && echo home",
        ]);
        o.ok();
        assert_eq!(o.lines(), ["0", "/root", "home"], "{who:?}: {o:?}");
        let o = run(&["--user", "ghost", "--", "true"]);
        assert_eq!(o.code, 125, "{o:?}");
        assert!(o.stderr.contains("no user \"ghost\""), "{o:?}");
        // An image that is not there: one clear line.
        let o = airlock_in(who, state.path(), &["run", "--image", "nope", "--", "true"]).unwrap();
        assert_eq!(o.code, 125);
        assert!(o.stderr.contains("no image named \"nope\""), "{o:?}");
    });
}

/// Everything about a tree that a write could change: kind, mode, owner,
/// size, mtime, ctime, inode, link count, content.
fn full_snapshot(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let m = std::fs::symlink_metadata(&p).unwrap();
        let content = if m.is_file() {
            format!("{:x}", {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::fs::read(&p).unwrap().hash(&mut h);
                h.finish()
            })
        } else if m.file_type().is_symlink() {
            std::fs::read_link(&p).unwrap().display().to_string()
        } else {
            String::new()
        };
        out.push(format!(
            "{} {:o} {}:{} {} {}.{} {}.{} {} {} {}",
            rel.display(),
            m.mode(),
            m.uid(),
            m.gid(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.ino(),
            m.nlink(),
            content
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

/// Writes everywhere a root sandbox can: files changed, appended,
/// truncated, removed, renamed, re-owned, re-moded, re-timed; directories
/// removed and made; links made; a big file — then checks that the next
/// sandbox sees none of it and that the store's tree is unchanged to the
/// inode and ctime. `--disk` caps writes to the root, copy-ups of the
/// image's files included.
#[test]
fn run_image_root_is_writable_throwaway_and_capped() {
    both(|who| {
        let Some(_) = airlock(who) else { return };
        let state = scratch(who);
        let work = tempdir::Dir::new();
        let mut l1 = usr_base();
        l1.extend([
            d("etc/"),
            passwd(),
            f("etc/conf", "v1"),
            d("data/"),
            f("data/keep", "keep"),
            f("data/gone", "gone"),
            d("data/sub/"),
            f("data/sub/deep", "deep"),
            h("data/hard", "data/keep"),
            f("big.bin", &"\0".repeat(6 << 20)),
        ]);
        let i = img(
            &[(tar(&l1), Comp::Gzip)],
            serde_json::json!({"Cmd": ["sh"]}),
        );
        import(who, state.path(), work.path(), &i, "w", &[]);
        let tree = tree_of(who, state.path(), "w");
        let before = full_snapshot(&tree);
        let script = r#"
set -e
echo changed > /etc/conf
echo more >> /data/keep
: > /data/hard
rm /data/gone
rm -r /data/sub
mkdir -p /data/sub/new /opt/new
echo n > /data/sub/new/f
mv /data/keep /data/moved
chmod 777 /etc
touch -d 2001-01-01 /big.bin
ln -s /etc/shadow /data/link
ln /etc/passwd /data/pwlink
echo t > /tmp/t
echo h > /root/h
dd if=/dev/zero of=/data/fill bs=1M count=2 status=none
cat /etc/conf /data/moved
"#;
        let o = airlock_in(
            who,
            state.path(),
            &[
                "run", "--image", "w", "--user", "root", USR[0], USR[1], "--", "sh", "-c", script,
            ],
        )
        .unwrap();
        o.ok();
        assert_eq!(o.lines(), ["changed", "keepmore"], "{who:?}: {o:?}");
        assert_eq!(
            full_snapshot(&tree),
            before,
            "{who:?}: the store's tree changed"
        );
        // The next sandbox starts from the image again.
        let o = airlock_in(
            who,
            state.path(),
            &[
                "run", "--image", "w", "--user", "root", USR[0], USR[1], "--", "sh", "-c",
                "cat /etc/conf /data/keep /data/gone; ls /data; ls /data/sub; ls /opt /tmp/t 2>&1 | head -1",
            ],
        )
        .unwrap();
        o.ok();
        assert_eq!(
            o.lines(),
            [
                "v1keepgonegone",
                "hard",
                "keep",
                "sub",
                "deep",
                "ls: cannot access '/opt': No such file or directory"
            ],
            "{who:?}: {o:?}"
        );

        // --disk 4M: writing 8 MiB into the root fails, so does the copy-up
        // of the image's 6 MiB file and a write to /tmp beyond the cap;
        // a small write still works.
        let o = airlock_in(
            who,
            state.path(),
            &[
                "run", "--image", "w", "--user", "root", "--disk", "4M", USR[0], USR[1], "--", "sh", "-c",
                "dd if=/dev/zero of=/fill bs=1M count=8 status=none 2>&1 | grep -c 'No space' ; rm -f /fill; \
                 { echo x >> /big.bin; } 2>&1 | grep -c 'No space'; \
                 dd if=/dev/zero of=/tmp/fill bs=1M count=8 status=none 2>&1 | grep -c 'No space'; rm -f /tmp/fill; \
                 echo small > /small && cat /small",
            ],
        )
        .unwrap();
        o.ok();
        assert_eq!(o.lines(), ["1", "1", "1", "small"], "{who:?}: {o:?}");
        assert_eq!(
            full_snapshot(&tree),
            before,
            "{who:?}: the store's tree changed"
        );
    });
}

/// A spec in JSON names the image as a string; --json and the spec path
/// agree with the flag.
#[test]
fn images_need_the_container_tier() {
    let Some(_) = airlock(Who::Root) else { return };
    let state = tempdir::Dir::new();
    let o = airlock_in(
        Who::Root,
        state.path(),
        &["run", "--isolation", "none", "--image", "app", "--", "true"],
    )
    .unwrap();
    assert_eq!(o.code, 125);
    assert!(
        o.stderr
            .contains("--image is not available with --isolation none"),
        "{o:?}"
    );
    let o = airlock_in(
        Who::Root,
        state.path(),
        &["run", "--image", "../x", "--", "true"],
    )
    .unwrap();
    assert_eq!(o.code, 125);
    assert!(o.stderr.contains("invalid image name"), "{o:?}");
}
