//! `airlock image ...` end to end: import of archives the tests generate
//! (three container forms, several layers, whiteouts, opaque directories,
//! symlinks, hard links, gzip and zstd), hostile archives, the store
//! commands, Dockerfile builds and their cache, and a real registry on
//! loopback. (The Debian image from mmdebstrap and RUN steps are in
//! image_build.rs, which builds it once for all its tests.)

mod common;
#[path = "common/oci.rs"]
mod oci;

use common::*;
use oci::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// `airlock image ARGS` as `who` with its own state directory.
fn image(who: Who, state: &Path, args: &[&str]) -> Option<Out> {
    let sd = state.display().to_string();
    let mut c = airlock_env(who, &[("AIRLOCK_STATE_DIR", sd.as_str())])?;
    c.arg("image").args(args).stdin(Stdio::null());
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

fn entries(p: &Path) -> Vec<String> {
    match std::fs::read_dir(p) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The store holds nothing at all: no image, blob, tree or staging dir.
#[track_caller]
fn assert_store_empty(state: &Path) {
    let s = state.join("images");
    assert_eq!(
        entries(&s.join("blobs/sha256")),
        Vec::<String>::new(),
        "blobs left"
    );
    assert_eq!(
        entries(&s.join("rootfs")),
        Vec::<String>::new(),
        "trees left"
    );
    assert_eq!(
        entries(&s.join("tmp")),
        Vec::<String>::new(),
        "staging left"
    );
    if let Ok(idx) = std::fs::read(s.join("index.json")) {
        let v: serde_json::Value = serde_json::from_slice(&idx).unwrap();
        assert!(
            v["images"].as_object().unwrap().is_empty(),
            "images left: {v}"
        );
    }
}

fn inspect(who: Who, state: &Path, name: &str) -> serde_json::Value {
    let o = image(who, state, &["inspect", name]).unwrap();
    o.ok();
    serde_json::from_str(&o.stdout).unwrap()
}

fn config() -> serde_json::Value {
    serde_json::json!({
        "Env": ["PATH=/usr/bin:/bin", "GREETING=hi"],
        "WorkingDir": "/work",
        "User": "1000:1000",
        "Entrypoint": ["/usr/bin/tool"],
        "Cmd": ["--help"],
        "Labels": {"org.example": "yes"},
    })
}

/// Three layers: gzip, zstd, plain; whiteouts, an opaque dir, a replaced
/// file whose old inode a hard link keeps, implied parents, a dir whose
/// mode a later layer changes, a fifo, a setuid file, an owned file.
fn multilayer() -> Img {
    let l1 = tar(&[
        d("etc/"),
        f("etc/conf", "v1"),
        d("usr/"),
        d("usr/bin/"),
        f("usr/bin/tool", "tool-v1").mode(0o755),
        l("usr/bin/link", "tool"),
        h("usr/bin/hard", "usr/bin/tool"),
        d("old/"),
        f("old/x", "x"),
        f("old/y", "y"),
        d("keep/"),
        f("keep/k", "k"),
        f("a.txt", "a"),
        f("suid", "s").mode(0o4755),
        fifo("pipe"),
        f("owned", "o").mode(0o640).owner(1000, 1000),
        l("abs", "/etc/conf"),
    ]);
    let l2 = tar(&[
        f(".wh.a.txt", ""),
        d("old/"),
        f("old/.wh..wh..opq", ""),
        f("old/new", "new"),
        f("usr/bin/tool", "tool-v2").mode(0o755),
        f("etc/conf2", "c2"),
        f("deep/implied/file", "i"),
    ]);
    let l3 = tar(&[
        f("b.txt", "b"),
        f("usr/bin/.wh.link", ""),
        d("keep/").mode(0o700),
    ]);
    img(
        &[(l1, Comp::Gzip), (l2, Comp::Zstd), (l3, Comp::None)],
        config(),
    )
}

fn expected_tree(uid: u32, gid: u32, owned: (u32, u32)) -> Vec<String> {
    let o = format!("{uid}:{gid}");
    let mut v = vec![
        format!("d 700 {o} keep"),
        format!("d 755 {o} deep"),
        format!("d 755 {o} deep/implied"),
        format!("d 755 {o} etc"),
        format!("d 755 {o} old"),
        format!("d 755 {o} usr"),
        format!("d 755 {o} usr/bin"),
        format!("f 644 {o} b.txt =b"),
        format!("f 644 {o} deep/implied/file =i"),
        format!("f 644 {o} etc/conf =v1"),
        format!("f 644 {o} etc/conf2 =c2"),
        format!("f 640 {}:{} owned =o", owned.0, owned.1),
        format!("f 644 {o} keep/k =k"),
        format!("f 644 {o} old/new =new"),
        format!("f 755 {o} suid =s"),
        format!("f 755 {o} usr/bin/hard =tool-v1"),
        format!("f 755 {o} usr/bin/tool =tool-v2"),
        format!("l 777 {o} abs -> /etc/conf"),
        format!("p 644 {o} pipe"),
    ];
    v.sort();
    v
}

fn rootfs(who: Who, state: &Path, name: &str) -> PathBuf {
    PathBuf::from(inspect(who, state, name)["rootfs_path"].as_str().unwrap())
}

#[test]
fn import_three_forms_exact_tree_and_defaults() {
    let Some(_) = airlock(Who::Root) else { return };
    let state = tempdir::Dir::new();
    let work = tempdir::Dir::new();
    let i = multilayer();
    let oci_dir = work.path().join("layout");
    write_dir(&oci_dir, &oci_files(&i));
    let oci_tar = work.path().join("oci.tar");
    std::fs::write(&oci_tar, tar_files(&oci_files(&i))).unwrap();
    let docker_tar = work.path().join("docker.tar.gz");
    std::fs::write(&docker_tar, gz(&tar_files(&docker_files(&i)))).unwrap();
    let mut trees = Vec::new();
    for (name, p) in [
        ("layout", &oci_dir),
        ("ociarchive", &oci_tar),
        ("dockersave", &docker_tar),
    ] {
        let o = image(
            Who::Root,
            state.path(),
            &["import", p.to_str().unwrap(), "--name", name],
        )
        .unwrap();
        o.ok();
        assert!(o.stdout.trim().starts_with("sha256:"), "{o:?}");
        let v = inspect(Who::Root, state.path(), name);
        let d = &v["defaults"];
        assert_eq!(
            d["env"],
            serde_json::json!(["PATH=/usr/bin:/bin", "GREETING=hi"]),
            "{name}"
        );
        assert_eq!(d["working_dir"], "/work");
        assert_eq!(d["user"], "1000:1000");
        assert_eq!(d["entrypoint"], serde_json::json!(["/usr/bin/tool"]));
        assert_eq!(d["cmd"], serde_json::json!(["--help"]));
        assert_eq!(d["labels"]["org.example"], "yes");
        assert_eq!(v["ownership"]["kind"], "preserved");
        assert_eq!(v["layers"].as_array().unwrap().len(), 3);
        let root = rootfs(Who::Root, state.path(), name);
        assert_eq!(snapshot(&root), expected_tree(0, 0, (1000, 1000)), "{name}");
        // The replaced file is a new inode; the hard link keeps the old one.
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &str| std::fs::metadata(root.join(p)).unwrap().ino();
        assert_ne!(ino("usr/bin/tool"), ino("usr/bin/hard"));
        trees.push(v["rootfs"].as_str().unwrap().to_string());
    }
    // Same diff ids: one shared tree (docker-save layers are the same tars).
    assert_eq!(trees[0], trees[1]);
    assert_eq!(trees[1], trees[2]);
    assert_eq!(entries(&state.path().join("images/rootfs")).len(), 1);
    // The store is private.
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(state.path().join("images")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o700);
}

#[test]
fn import_setuid_kept_only_when_allowed() {
    let Some(_) = airlock(Who::Root) else { return };
    let state = tempdir::Dir::new();
    let work = tempdir::Dir::new();
    let i = img(
        &[(
            tar(&[f("suid", "s").mode(0o6755), f("plain", "p")]),
            Comp::Gzip,
        )],
        config(),
    );
    let p = work.path().join("i.tar");
    std::fs::write(&p, tar_files(&oci_files(&i))).unwrap();
    image(
        Who::Root,
        state.path(),
        &["import", p.to_str().unwrap(), "--name", "strip", "-q"],
    )
    .unwrap()
    .ok();
    image(
        Who::Root,
        state.path(),
        &[
            "import",
            p.to_str().unwrap(),
            "--name",
            "keep",
            "--allow-setuid",
            "-q",
        ],
    )
    .unwrap()
    .ok();
    use std::os::unix::fs::PermissionsExt;
    let mode = |n: &str| {
        std::fs::metadata(rootfs(Who::Root, state.path(), n).join("suid"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("strip"), 0o755);
    assert_eq!(mode("keep"), 0o6755);
    assert_ne!(
        rootfs(Who::Root, state.path(), "strip"),
        rootfs(Who::Root, state.path(), "keep")
    );
}

#[test]
fn import_rootless_everything_belongs_to_the_caller() {
    let Some(_) = airlock(Who::User) else { return };
    let Some((uid, gid)) = test_user_ids().or_else(|| {
        // Already unprivileged.
        (!is_root()).then(|| {
            // SAFETY: getuid/getgid cannot fail.
            unsafe { (libc::getuid(), libc::getgid()) }
        })
    }) else {
        return;
    };
    let state = scratch(Who::User);
    let work = scratch(Who::User);
    let i = multilayer();
    let p = work.path().join("oci.tar");
    std::fs::write(&p, tar_files(&oci_files(&i))).unwrap();
    std::os::unix::fs::chown(&p, Some(uid), Some(gid)).ok();
    let o = image(
        Who::User,
        state.path(),
        &["import", p.to_str().unwrap(), "--name", "mine", "-q"],
    )
    .unwrap();
    o.ok();
    let v = inspect(Who::User, state.path(), "mine");
    assert_eq!(v["ownership"]["kind"], "caller");
    assert_eq!(v["ownership"]["uid"], uid);
    let root = PathBuf::from(v["rootfs_path"].as_str().unwrap());
    assert_eq!(snapshot(&root), expected_tree(uid, gid, (uid, gid)));
}

#[test]
fn ls_inspect_rm_and_garbage_collection() {
    let Some(_) = airlock(Who::Root) else { return };
    let state = tempdir::Dir::new();
    let work = tempdir::Dir::new();
    let p = work.path().join("i.tar");
    std::fs::write(&p, tar_files(&oci_files(&multilayer()))).unwrap();
    for n in ["one", "two:v1"] {
        image(
            Who::Root,
            state.path(),
            &["import", p.to_str().unwrap(), "--name", n, "-q"],
        )
        .unwrap()
        .ok();
    }
    let o = image(Who::Root, state.path(), &["ls"]).unwrap();
    o.ok();
    let lines = o.lines();
    assert!(
        lines[0].starts_with("NAME")
            && lines[0].contains("DIGEST")
            && lines[0].contains("SIZE")
            && lines[0].contains("CREATED"),
        "{o:?}"
    );
    assert_eq!(lines.len(), 3, "{o:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("two:v1 ") && l.contains("Less than a minute ago")),
        "{o:?}"
    );
    let j: serde_json::Value = serde_json::from_str(
        &image(Who::Root, state.path(), &["ls", "--format", "json"])
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(j.as_array().unwrap().len(), 2);
    assert!(j[0]["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(j[0]["size"].as_u64().unwrap() > 0);
    // Shared tree survives the first rm.
    image(Who::Root, state.path(), &["rm", "one"]).unwrap().ok();
    assert_eq!(entries(&state.path().join("images/rootfs")).len(), 1);
    assert!(!entries(&state.path().join("images/blobs/sha256")).is_empty());
    let o = image(Who::Root, state.path(), &["rm", "one"]).unwrap();
    assert_eq!(o.code, 125);
    assert!(o.stderr.contains("no image named \"one\""), "{o:?}");
    image(Who::Root, state.path(), &["rm", "two:v1"])
        .unwrap()
        .ok();
    assert_store_empty(state.path());
    let o = image(Who::Root, state.path(), &["inspect", "two:v1"]).unwrap();
    assert_eq!(o.code, 125);
    let o = image(
        Who::Root,
        state.path(),
        &["import", p.to_str().unwrap(), "--name", "host"],
    )
    .unwrap();
    assert_eq!(o.code, 125);
    assert!(o.stderr.contains("built-in host image"), "{o:?}");
}

/// A hostile archive: the files of an image layout, what to pass, and a
/// piece of the one-line error.
struct Hostile {
    what: &'static str,
    files: std::collections::BTreeMap<String, Vec<u8>>,
    args: Vec<&'static str>,
    expect: &'static str,
}

fn one_layer(entries: &[E]) -> std::collections::BTreeMap<String, Vec<u8>> {
    oci_files(&img(&[(tar(entries), Comp::Gzip)], config()))
}

#[test]
fn hostile_archives_are_rejected_and_leave_nothing() {
    let Some(_) = airlock(Who::Root) else { return };
    let state = tempdir::Dir::new();
    let work = tempdir::Dir::new();
    let outside = tempdir::Dir::new();
    let out = outside.path().display().to_string();
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    let mut cases = vec![
        Hostile {
            what: "path traversal",
            files: one_layer(&[f(leak(&format!("../../../../../../../..{out}/evil")), "x")]),
            args: vec![],
            expect: "path leaves the image root (..)",
        },
        Hostile {
            what: "absolute path",
            files: one_layer(&[f(leak(&format!("{out}/evil")), "x")]),
            args: vec![],
            expect: "absolute path",
        },
        Hostile {
            what: "write through a symlink (same layer)",
            files: one_layer(&[l("lnk", &out), f("lnk/evil", "x")]),
            args: vec![],
            expect: "goes through the symlink \"lnk\"",
        },
        Hostile {
            what: "write through a relative symlink",
            files: one_layer(&[
                d("a/"),
                l("a/up", "../../../../../../.."),
                f("a/up/tmp/evil", "x"),
            ]),
            args: vec![],
            expect: "symlink",
        },
        Hostile {
            what: "write through a symlink from a lower layer",
            files: oci_files(&img(
                &[
                    (tar(&[l("etc", &out)]), Comp::Gzip),
                    (tar(&[f("etc/evil", "x")]), Comp::Zstd),
                ],
                config(),
            )),
            args: vec![],
            expect: "symlink",
        },
        Hostile {
            what: "hard link to an absolute path",
            files: one_layer(&[h("hl", "/etc/shadow")]),
            args: vec![],
            expect: "hard link target: absolute path",
        },
        Hostile {
            what: "hard link out with ..",
            files: one_layer(&[h("hl", "../../../etc/shadow")]),
            args: vec![],
            expect: "hard link target: path leaves the image root",
        },
        Hostile {
            what: "hard link to a symlink",
            files: one_layer(&[l("s", "/etc/shadow"), h("hl", "s")]),
            args: vec![],
            expect: "not a regular file",
        },
        Hostile {
            what: "hard link to nothing yet",
            files: one_layer(&[h("hl", "later"), f("later", "x")]),
            args: vec![],
            expect: "not extracted before it",
        },
        Hostile {
            what: "character device",
            files: one_layer(&[chr("dev-mem", 1, 1)]),
            args: vec![],
            expect: "device node",
        },
        Hostile {
            what: "block device",
            files: one_layer(&[blk("sda")]),
            args: vec![],
            expect: "device node",
        },
        Hostile {
            what: "owner outside the mapped range",
            files: one_layer(&[f("x", "x").owner(70000, 0)]),
            args: vec![],
            expect: "outside 0-65535",
        },
        Hostile {
            what: "entry claiming a huge size",
            files: one_layer(&[f("big", "x").claim(1 << 40)]),
            args: vec![],
            expect: "exceeds the limit",
        },
        Hostile {
            what: "header larger than the data",
            files: one_layer(&[f("a", "a"), f("short", "0123456789").claim(5000)]),
            args: vec![],
            expect: "truncated",
        },
        Hostile {
            what: "decompression bomb",
            files: oci_files(&img(
                &[(tar(&[f("zeros", leak(&"\0".repeat(40 << 20)))]), Comp::Gzip)],
                config(),
            )),
            args: vec!["--max-size", "10M"],
            expect: "exceeds the limit of 10485760",
        },
        Hostile {
            what: "bomb after the end of the archive",
            files: {
                let mut t = tar(&[f("a", "a")]);
                t.extend(std::iter::repeat_n(0u8, 40 << 20));
                oci_files(&img(&[(t, Comp::Gzip)], config()))
            },
            args: vec!["--max-size", "10M"],
            expect: "the uncompressed size of the image (at layer",
        },
        Hostile {
            what: "too many entries",
            files: one_layer(&[f("1", ""), f("2", ""), f("3", "")]),
            args: vec!["--max-entries", "2"],
            expect: "number of entries",
        },
    ];
    // A truncated gzip layer (the blob is named by its truncated bytes).
    {
        let t = tar(&[f("a", &"abc".repeat(10000))]);
        let mut i = img(&[(t, Comp::Gzip)], config());
        let b = i.blobs[0].0.clone();
        i.blobs[0].0 = b[..b.len() / 2].to_vec();
        cases.push(Hostile {
            what: "truncated layer",
            files: oci_files(&i),
            args: vec![],
            expect: "truncated",
        });
    }
    // A blob whose content does not match its name.
    {
        let mut files = one_layer(&[f("a", "a")]);
        let i = img(&[(tar(&[f("a", "a")]), Comp::Gzip)], config());
        files.insert(blob_name(&i.blobs[0].0), b"tampered".to_vec());
        cases.push(Hostile {
            what: "bad blob digest",
            files,
            args: vec![],
            expect: "digest mismatch",
        });
    }
    // A manifest pointing at a layer that is not there.
    {
        let i = img(&[(tar(&[f("a", "a")]), Comp::Gzip)], config());
        let mut files = oci_files(&i);
        files.remove(&blob_name(&i.blobs[0].0));
        cases.push(Hostile {
            what: "manifest pointing nowhere",
            files,
            args: vec![],
            expect: "which is not in the",
        });
    }
    // The config's diff_id does not match the layer.
    {
        let mut i = img(&[(tar(&[f("a", "a")]), Comp::Gzip)], config());
        i.config["rootfs"]["diff_ids"][0] =
            serde_json::json!(airlock_image::Digest::of(b"other").to_string());
        cases.push(Hostile {
            what: "diff_id mismatch",
            files: oci_files(&i),
            args: vec![],
            expect: "diff_id",
        });
    }
    // An index with no linux/amd64 image.
    {
        let mut files = one_layer(&[f("a", "a")]);
        let mut idx: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        idx["manifests"][0]["platform"] =
            serde_json::json!({"architecture": "arm64", "os": "linux"});
        files.insert("index.json".into(), serde_json::to_vec(&idx).unwrap());
        cases.push(Hostile {
            what: "no linux/amd64",
            files,
            args: vec![],
            expect: "no linux/amd64 image",
        });
    }
    assert!(cases.len() >= 12);
    for c in cases {
        let p = work.path().join("hostile.tar");
        std::fs::write(&p, tar_files(&c.files)).unwrap();
        let mut args = vec!["import", p.to_str().unwrap(), "--name", "evil"];
        args.extend(c.args.iter().copied());
        let o = image(Who::Root, state.path(), &args).unwrap();
        eprintln!("{:>45}: {}", c.what, o.stderr.trim());
        assert_eq!(o.code, 125, "{}: {o:?}", c.what);
        assert_eq!(o.stderr.lines().count(), 1, "{}: one line: {o:?}", c.what);
        assert!(
            o.stderr.contains(c.expect),
            "{}: expected {:?} in {:?}",
            c.what,
            c.expect,
            o.stderr
        );
        assert_store_empty(state.path());
        assert_eq!(
            entries(outside.path()),
            Vec::<String>::new(),
            "{}: wrote outside",
            c.what
        );
    }
}

#[test]
fn setuid_stripped_in_hostile_style_archive_and_xattrs_dropped() {
    // A tar written by GNU tar with xattrs (security.capability on a file):
    // the capability is gone unless --allow-setuid.
    let Some(_) = airlock(Who::Root) else { return };
    let state = tempdir::Dir::new();
    let work = tempdir::Dir::new();
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("ping"), "bin").unwrap();
    let st = std::process::Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(src.join("ping"))
        .status();
    if !st.is_ok_and(|s| s.success()) {
        skip("setcap (libcap2-bin) is not available");
        return;
    }
    let layer = work.path().join("layer.tar");
    assert!(std::process::Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-C"])
        .arg(&src)
        .arg("-cf")
        .arg(&layer)
        .arg(".")
        .status()
        .unwrap()
        .success());
    let t = std::fs::read(&layer).unwrap();
    let p = work.path().join("i.tar");
    std::fs::write(
        &p,
        tar_files(&oci_files(&img(&[(t, Comp::None)], config()))),
    )
    .unwrap();
    image(
        Who::Root,
        state.path(),
        &["import", p.to_str().unwrap(), "--name", "nocap", "-q"],
    )
    .unwrap()
    .ok();
    image(
        Who::Root,
        state.path(),
        &[
            "import",
            p.to_str().unwrap(),
            "--name",
            "cap",
            "--allow-setuid",
            "-q",
        ],
    )
    .unwrap()
    .ok();
    let caps = |n: &str| {
        let o = std::process::Command::new("getcap")
            .arg(rootfs(Who::Root, state.path(), n).join("ping"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(caps("nocap").trim(), "");
    assert!(caps("cap").contains("cap_net_raw"), "{}", caps("cap"));
}

/// A build context for the Dockerfile tests.
fn context(dir: &Path, conf: &str) {
    std::fs::write(
        dir.join("Dockerfile"),
        r#"# syntax=docker/dockerfile:1
ARG BASE=scratch
FROM ${BASE}
ARG VERSION=1.0
# The app's home.
ENV APP_HOME=/app \
    GREETING="hello world"
WORKDIR $APP_HOME
COPY app.py ./
COPY --chown=1000:1000 conf/ conf/
ADD vendor.tar.gz /opt/vendor/
LABEL version=$VERSION
USER 1000
ENTRYPOINT ["python3", "app.py"]
CMD ["--serve"]
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join(".dockerignore"),
        "# not these\nconf/secret.txt\n*.log\n",
    )
    .unwrap();
    std::fs::write(dir.join("app.py"), "print('app')\n").unwrap();
    std::fs::create_dir_all(dir.join("conf")).unwrap();
    std::fs::write(dir.join("conf/a.conf"), conf).unwrap();
    std::fs::write(dir.join("conf/secret.txt"), "secret").unwrap();
    std::fs::write(dir.join("debug.log"), "log").unwrap();
    std::fs::write(
        dir.join("vendor.tar.gz"),
        gz(&tar(&[d("lib/"), f("lib/x.txt", "vendored")])),
    )
    .unwrap();
}

fn build(state: &Path, ctx: &Path, name: &str, extra: &[&str]) -> Out {
    let mut a = vec![
        "build",
        "-f",
        ctx.join("Dockerfile").to_str().unwrap().to_string().leak() as &str,
        "--name",
        name,
    ];
    a.extend_from_slice(extra);
    a.push(ctx.to_str().unwrap());
    image(Who::Root, state, &a).unwrap()
}

#[test]
fn dockerfile_builds_caches_and_invalidates_from_the_changed_step() {
    let Some(_) = airlock(Who::Root) else { return };
    let state = tempdir::Dir::new();
    let work = tempdir::Dir::new();
    // A base image in the store.
    let base = work.path().join("base.tar");
    std::fs::write(
        &base,
        tar_files(&oci_files(&img(
            &[(
                tar(&[d("etc/"), f("etc/os-release", "ID=test")]),
                Comp::Gzip,
            )],
            serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}),
        ))),
    )
    .unwrap();
    image(
        Who::Root,
        state.path(),
        &["import", base.to_str().unwrap(), "--name", "base", "-q"],
    )
    .unwrap()
    .ok();
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    context(&ctx, "a=1");

    let t0 = std::time::Instant::now();
    let o = build(state.path(), &ctx, "app", &["--build-arg", "BASE=base"]);
    o.ok();
    assert!(
        o.stderr.contains("0 of 4 layer steps from the cache"),
        "{o:?}"
    );
    eprintln!("first build: {:?}", t0.elapsed());
    let v = inspect(Who::Root, state.path(), "app");
    let d = &v["defaults"];
    assert_eq!(
        d["env"],
        serde_json::json!(["PATH=/bin", "APP_HOME=/app", "GREETING=hello world"])
    );
    assert_eq!(d["working_dir"], "/app");
    assert_eq!(d["user"], "1000");
    assert_eq!(d["entrypoint"], serde_json::json!(["python3", "app.py"]));
    assert_eq!(d["cmd"], serde_json::json!(["--serve"]));
    assert_eq!(d["labels"]["version"], "1.0");
    assert_eq!(
        v["layers"].as_array().unwrap().len(),
        5,
        "base + WORKDIR + 2 COPY + ADD"
    );
    let root = PathBuf::from(v["rootfs_path"].as_str().unwrap());
    let mut want = vec![
        "d 755 0:0 app",
        "d 755 0:0 etc",
        "d 755 0:0 opt",
        "d 755 0:0 opt/vendor",
        "d 755 0:0 opt/vendor/lib",
        "d 755 1000:1000 app/conf",
        "f 644 0:0 app/app.py =print('app')\n",
        "f 644 0:0 etc/os-release =ID=test",
        "f 644 0:0 opt/vendor/lib/x.txt =vendored",
        "f 644 1000:1000 app/conf/a.conf =a=1",
    ];
    want.sort();
    assert_eq!(snapshot(&root), want);

    // Again: every layer step from the cache, the same image.
    let o = build(state.path(), &ctx, "app2", &["--build-arg", "BASE=base"]);
    o.ok();
    assert!(
        o.stderr.contains("4 of 4 layer steps from the cache"),
        "{o:?}"
    );
    assert_eq!(o.stderr.matches("CACHED").count(), 4, "{o:?}");
    let v2 = inspect(Who::Root, state.path(), "app2");
    assert_eq!(v2["chain_id"], v["chain_id"]);
    assert_eq!(v2["rootfs"], v["rootfs"]);

    // A changed copied file: WORKDIR and COPY app.py still cached; the
    // conf COPY and everything after it built again.
    std::fs::write(ctx.join("conf/a.conf"), "a=2").unwrap();
    let o = build(
        state.path(),
        &ctx,
        "app3",
        &["--build-arg", "BASE=base", "--build-arg", "VERSION=2.0"],
    );
    o.ok();
    assert!(
        o.stderr.contains("2 of 4 layer steps from the cache"),
        "{o:?}"
    );
    assert!(
        o.stderr.contains("CACHED WORKDIR") && o.stderr.contains("CACHED COPY app.py"),
        "{o:?}"
    );
    assert!(
        !o.stderr.contains("CACHED COPY --chown") && !o.stderr.contains("CACHED ADD"),
        "{o:?}"
    );
    let v3 = inspect(Who::Root, state.path(), "app3");
    assert_eq!(v3["defaults"]["labels"]["version"], "2.0");
    let root3 = PathBuf::from(v3["rootfs_path"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(root3.join("app/conf/a.conf")).unwrap(),
        "a=2"
    );
    // The old image is untouched.
    assert_eq!(
        std::fs::read_to_string(root.join("app/conf/a.conf")).unwrap(),
        "a=1"
    );
    // A change to an ignored file changes nothing.
    std::fs::write(ctx.join("conf/secret.txt"), "other").unwrap();
    let o = build(
        state.path(),
        &ctx,
        "app4",
        &["--build-arg", "BASE=base", "--build-arg", "VERSION=2.0"],
    );
    assert!(
        o.stderr.contains("4 of 4 layer steps from the cache"),
        "{o:?}"
    );
}

#[test]
fn dockerfile_errors_are_clear() {
    let Some(_) = airlock(Who::Root) else { return };
    let state = tempdir::Dir::new();
    let work = tempdir::Dir::new();
    for (text, want) in [
        (
            // An empty image has no shell for RUN's shell form.
            "FROM scratch\nENV A=1\nRUN echo hi\n",
            "Dockerfile:3: RUN: \"RUN echo hi\" exited with code 127",
        ),
        (
            "FROM scratch\nEXPOSE 80\n",
            "Dockerfile:2: unsupported instruction EXPOSE",
        ),
        (
            "FROM scratch\nADD https://example.com/x.tgz /x\n",
            "ADD of a URL (https://example.com/x.tgz) is not supported",
        ),
        (
            "FROM scratch\nCOPY missing.txt /x\n",
            "\"missing.txt\" not found in the build context",
        ),
        (
            "FROM scratch\nCOPY ../../etc/passwd /x\n",
            "outside the build context",
        ),
        (
            "ENV A=1\nFROM scratch\n",
            "the first instruction must be FROM",
        ),
        (
            "FROM scratch\nFROM scratch\n",
            "a second FROM (multi-stage builds) is not supported",
        ),
        ("FROM scratch\nCOPY --from=x /a /b\n", "multi-stage"),
    ] {
        std::fs::write(work.path().join("Dockerfile"), text).unwrap();
        let o = build(state.path(), work.path(), "bad", &["-q"]);
        assert_eq!(o.code, 125, "{text}: {o:?}");
        // One line (a failed RUN shows its own output first).
        let lines: Vec<&str> = o.stderr.lines().collect();
        let own = if text.contains("RUN") { 2 } else { 1 };
        assert_eq!(lines.len(), own, "{text}: {o:?}");
        assert!(
            lines[own - 1].contains(want),
            "{text}: want {want:?}: {o:?}"
        );
    }
    // RUN-free Dockerfiles on `host` and `scratch` build.
    std::fs::write(
        work.path().join("Dockerfile"),
        "FROM host\nENV A=1\nCMD [\"sh\"]\n",
    )
    .unwrap();
    let o = build(state.path(), work.path(), "onhost", &[]);
    o.ok();
    assert_eq!(inspect(Who::Root, state.path(), "onhost")["base"], "host");
}

/// A token server for the registry's `auth: token` (RS256 JWTs with the
/// signing certificate in `x5c`, which the registry's rootcertbundle
/// trusts), on loopback. It grants what is asked to `user:secret`.
mod registry {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    pub const USER: &str = "user";
    pub const PASS: &str = "secret";

    pub struct Registry {
        pub addr: String,
        pub dir: tempdir::Dir,
        child: Child,
        /// Sign tokens with a key the registry does not trust.
        pub bad_key: Arc<AtomicBool>,
    }

    impl Drop for Registry {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn b64url(b: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    fn openssl(args: &[&str], dir: &Path) {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn token(dir: &Path, bad: bool, scope: &str) -> String {
        let (key, cert) = if bad {
            ("bad.key", "bad.pem")
        } else {
            ("key.pem", "cert.pem")
        };
        let pem = std::fs::read_to_string(dir.join(cert)).unwrap();
        let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [der_b64]});
        let mut access = Vec::new();
        // scope=repository:NAME:ACTIONS
        if let Some(rest) = scope.strip_prefix("repository:") {
            if let Some((name, actions)) = rest.rsplit_once(':') {
                access.push(serde_json::json!({"type": "repository", "name": name, "actions": actions.split(',').collect::<Vec<_>>()}));
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({
            "iss": "airlock-test-issuer", "sub": USER, "aud": "airlock-test",
            "exp": now + 600, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()),
            "access": access,
        });
        let signing = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let input = dir.join(format!("sign-{}", std::process::id()));
        std::fs::write(&input, &signing).unwrap();
        let o = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign", key])
            .arg(&input)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(o.status.success());
        format!("{signing}.{}", b64url(&o.stdout))
    }

    fn serve(stream: TcpStream, dir: &Path, bad: bool) {
        use base64::Engine;
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        if r.read_line(&mut line).is_err() {
            return;
        }
        let mut auth = None;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("authorization") {
                    auth = Some(v.trim().to_string());
                }
            }
        }
        let path = line.split_whitespace().nth(1).unwrap_or("");
        let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
        let mut scope = String::new();
        for kv in query.split('&') {
            if let Some(v) = kv.strip_prefix("scope=") {
                scope = v
                    .replace("%3A", ":")
                    .replace("%2C", ",")
                    .replace("%2F", "/");
            }
        }
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"))
        );
        let (status, body) = if auth.as_deref() == Some(want.as_str()) {
            let t = token(dir, bad, &scope);
            (
                "200 OK",
                serde_json::json!({"token": t, "access_token": t, "expires_in": 600}).to_string(),
            )
        } else {
            (
                "401 Unauthorized",
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.to_string(),
            )
        };
        let mut s = stream;
        let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    }

    /// Starts the token server and `docker-registry` on loopback, or skips.
    pub fn start() -> Option<Registry> {
        for tool in ["docker-registry", "skopeo", "openssl"] {
            if Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}"))
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
            {
                skip(&format!(
                    "{tool} is not installed (scripts/setup.sh installs it)"
                ));
                return None;
            }
        }
        let dir = tempdir::Dir::new();
        let d = dir.path().to_path_buf();
        for k in ["key", "bad"] {
            let (key, cert) = if k == "key" {
                ("key.pem", "cert.pem")
            } else {
                ("bad.key", "bad.pem")
            };
            openssl(
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    key,
                    "-out",
                    cert,
                    "-days",
                    "2",
                    "-subj",
                    "/CN=airlock-test-token",
                ],
                &d,
            );
        }
        let tl = TcpListener::bind("127.0.0.1:0").unwrap();
        let tport = tl.local_addr().unwrap().port();
        let bad_key = Arc::new(AtomicBool::new(false));
        {
            let d = d.clone();
            let bad = bad_key.clone();
            std::thread::spawn(move || {
                for s in tl.incoming().flatten() {
                    serve(s, &d, bad.load(Ordering::SeqCst));
                }
            });
        }
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        std::fs::write(
            d.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}/data\nhttp:\n  addr: {addr}\nauth:\n  token:\n    realm: http://127.0.0.1:{tport}/token\n    service: airlock-test\n    issuer: airlock-test-issuer\n    rootcertbundle: {}/cert.pem\n",
                d.display(),
                d.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let reg = Registry {
            addr: addr.clone(),
            dir,
            child,
            bad_key,
        };
        for _ in 0..100 {
            if TcpStream::connect(&addr).is_ok() {
                return Some(reg);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "the registry did not start: {}",
            std::fs::read_to_string(reg.dir.path().join("registry.log")).unwrap_or_default()
        );
    }

    impl Registry {
        /// `skopeo copy` of an OCI archive into REPO:TAG; the manifest digest.
        pub fn push(&self, archive: &Path, repo_tag: &str, all: bool) -> String {
            let d = self.dir.path();
            std::fs::write(
                d.join("policy.json"),
                r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
            )
            .unwrap();
            let digest = d.join("digest");
            let mut c = Command::new("skopeo");
            c.env("HOME", d)
                .arg("--policy")
                .arg(d.join("policy.json"))
                .args([
                    "copy",
                    "--quiet",
                    "--dest-tls-verify=false",
                    "--dest-creds",
                    &format!("{USER}:{PASS}"),
                ])
                .arg("--digestfile")
                .arg(&digest);
            if all {
                c.arg("--all");
            }
            let o = c
                .arg(format!("oci-archive:{}", archive.display()))
                .arg(format!("docker://{}/{repo_tag}", self.addr))
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "skopeo: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            std::fs::read_to_string(digest).unwrap().trim().to_string()
        }

        /// The registry's stored copy of a blob.
        pub fn blob_data(&self, digest: &str) -> PathBuf {
            let hex = digest.strip_prefix("sha256:").unwrap();
            self.dir.path().join(format!(
                "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
                &hex[..2]
            ))
        }
    }
}

/// `airlock image ARGS` with stdin and extra environment.
fn image_in(state: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Out {
    use std::io::Write;
    let sd = state.display().to_string();
    let mut e = vec![("AIRLOCK_STATE_DIR", sd.as_str())];
    e.extend_from_slice(env);
    let mut c = airlock_env(Who::Root, &e).unwrap();
    c.arg("image")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut ch = c.spawn().unwrap();
    ch.stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let o = ch.wait_with_output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn pull_from_a_local_registry_with_token_auth() {
    let Some(_) = airlock(Who::Root) else { return };
    let Some(reg) = registry::start() else { return };
    let state = tempdir::Dir::new();
    let work = tempdir::Dir::new();
    let t0 = std::time::Instant::now();

    // A multi-platform index: linux/amd64 is the multilayer image,
    // linux/arm64 something else; and a plain single image.
    let amd = multilayer();
    let arm = img(&[(tar(&[f("arch", "arm64")]), Comp::Gzip)], config());
    let mut files = oci_files(&amd);
    let arm_files = oci_files(&arm);
    for (k, v) in &arm_files {
        if k.starts_with("blobs/") {
            files.insert(k.clone(), v.clone());
        }
    }
    let manifest_of = |f: &std::collections::BTreeMap<String, Vec<u8>>| {
        let idx: serde_json::Value = serde_json::from_slice(&f["index.json"]).unwrap();
        idx["manifests"][0].clone()
    };
    let mut ma = manifest_of(&files);
    let mut mr = manifest_of(&arm_files);
    ma.as_object_mut().unwrap().remove("annotations");
    mr.as_object_mut().unwrap().remove("annotations");
    mr["platform"] = serde_json::json!({"architecture": "arm64", "os": "linux"});
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [mr, ma],
    }))
    .unwrap();
    files.insert(blob_name(&list), list.clone());
    files.insert(
        "index.json".into(),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": airlock_image::Digest::of(&list).to_string(), "size": list.len()}],
        }))
        .unwrap(),
    );
    let multi = work.path().join("multi.tar");
    std::fs::write(&multi, tar_files(&files)).unwrap();
    reg.push(&multi, "airlock/multi:v1", true);
    let single = work.path().join("single.tar");
    std::fs::write(&single, tar_files(&oci_files(&multilayer()))).unwrap();
    let digest = reg.push(&single, "airlock/single:v1", false);

    let r = |p: &str| format!("{}/{p}", reg.addr);
    let creds = [
        "--username",
        registry::USER,
        "--password-stdin",
        "--insecure",
        "-q",
    ];
    let pull = |reference: &str, name: &str, pw: &str| {
        let mut a = vec!["pull", reference, "--name", name];
        a.extend_from_slice(&creds);
        image_in(state.path(), &a, &[], pw)
    };

    // By tag, through the manifest list: the amd64 image.
    let o = pull(&r("airlock/multi:v1"), "multi", registry::PASS);
    o.ok();
    assert_eq!(
        snapshot(&rootfs(Who::Root, state.path(), "multi")),
        expected_tree(0, 0, (1000, 1000))
    );
    assert_eq!(
        inspect(Who::Root, state.path(), "multi")["defaults"]["working_dir"],
        "/work"
    );
    // By digest.
    let o = pull(
        &r(&format!("airlock/single@{digest}")),
        "bydigest",
        registry::PASS,
    );
    o.ok();
    assert_eq!(o.stdout.trim(), digest);
    assert_eq!(
        snapshot(&rootfs(Who::Root, state.path(), "bydigest")),
        expected_tree(0, 0, (1000, 1000))
    );
    // Credentials from docker's config.json.
    let dc = work.path().join("docker");
    std::fs::create_dir_all(&dc).unwrap();
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        registry::USER,
        registry::PASS
    ));
    std::fs::write(
        dc.join("config.json"),
        serde_json::json!({"auths": {reg.addr.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let dcs = dc.display().to_string();
    let o = image_in(
        state.path(),
        &[
            "pull",
            &r("airlock/single:v1"),
            "--name",
            "fromconfig",
            "--insecure",
            "-q",
        ],
        &[("DOCKER_CONFIG", &dcs)],
        "",
    );
    o.ok();
    assert_eq!(o.stdout.trim(), digest);

    // A Dockerfile FROM a registry reference pulls it first.
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}\nCOPY x /x\n", r("airlock/single:v1")),
    )
    .unwrap();
    std::fs::write(ctx.join("x"), "x").unwrap();
    let df = ctx.join("Dockerfile").display().to_string();
    let cs = ctx.display().to_string();
    let mut a = vec!["build", "-f", df.as_str(), "--name", "onpulled"];
    a.extend_from_slice(&creds);
    a.push(cs.as_str());
    image_in(state.path(), &a, &[], registry::PASS).ok();
    let tree = snapshot(&rootfs(Who::Root, state.path(), "onpulled"));
    assert!(
        tree.contains(&"f 644 0:0 x =x".to_string())
            && tree.contains(&"f 644 0:0 b.txt =b".to_string()),
        "{tree:?}"
    );
    assert!(
        image(
            Who::Root,
            state.path(),
            &["inspect", &r("airlock/single:v1")]
        )
        .unwrap()
        .code
            == 0
    );

    // Wrong password, no credentials, a token the registry does not trust.
    let o = pull(&r("airlock/single:v1"), "x", "wrong");
    assert_eq!(o.code, 125, "{o:?}");
    assert!(o.stderr.contains("authentication failed"), "{o:?}");
    assert_eq!(o.stderr.lines().count(), 1, "{o:?}");
    let o = image_in(
        state.path(),
        &[
            "pull",
            &r("airlock/single:v1"),
            "--name",
            "x",
            "--insecure",
            "-q",
        ],
        &[],
        "",
    );
    assert_eq!(o.code, 125, "{o:?}");
    assert!(o.stderr.contains("authentication failed"), "{o:?}");
    reg.bad_key.store(true, std::sync::atomic::Ordering::SeqCst);
    let o = pull(&r("airlock/single:v1"), "x", registry::PASS);
    reg.bad_key
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr.contains("cannot fetch the manifest") && o.stderr.contains("refused the token"),
        "{o:?}"
    );
    assert_eq!(o.stderr.lines().count(), 1, "{o:?}");
    // Plain HTTP only for loopback.
    let o = image_in(
        state.path(),
        &[
            "pull",
            "registry.example.com/x:1",
            "--name",
            "x",
            "--insecure",
            "-q",
        ],
        &[],
        "",
    );
    assert_eq!(o.code, 125, "{o:?}");
    assert!(o.stderr.contains("refusing plain HTTP"), "{o:?}");

    // A manifest whose content no longer matches its digest: refused by
    // tag and by digest, and nothing is kept.
    let before = entries(&state.path().join("images/blobs/sha256")).len();
    let data = reg.blob_data(&digest);
    let mut m = std::fs::read_to_string(&data).unwrap();
    let at = m.find("\"size\":").unwrap() + 7;
    let digit = m.as_bytes()[at];
    let flipped = if digit == b'9' {
        '8'
    } else {
        (digit + 1) as char
    };
    m.replace_range(at..at + 1, &flipped.to_string());
    std::fs::write(&data, &m).unwrap();
    for reference in [
        r("airlock/single:v1"),
        r(&format!("airlock/single@{digest}")),
    ] {
        let o = pull(&reference, "tampered", registry::PASS);
        assert_eq!(o.code, 125, "{o:?}");
        assert!(
            o.stderr.contains("digest mismatch") && o.stderr.contains(&digest),
            "{o:?}"
        );
        assert_eq!(o.stderr.lines().count(), 1, "{o:?}");
    }
    assert!(
        image(Who::Root, state.path(), &["inspect", "tampered"])
            .unwrap()
            .code
            == 125
    );
    assert_eq!(
        entries(&state.path().join("images/blobs/sha256")).len(),
        before
    );
    assert_eq!(
        entries(&state.path().join("images/tmp")),
        Vec::<String>::new()
    );
    eprintln!("registry test: {:?}", t0.elapsed());
}

#[test]
fn a_killed_import_leaves_no_image_and_its_staging_is_removed() {
    let Some(_) = airlock(Who::Root) else { return };
    let state = tempdir::Dir::new();
    let work = tempdir::Dir::new();
    // Big enough to take a while to extract: 2000 files of 32 KiB.
    let zeros = "\0".repeat(32 << 10);
    let files: Vec<E> = (0..2000)
        .map(|i| {
            f(
                Box::leak(format!("d{}/f{i}", i % 40).into_boxed_str()),
                &zeros,
            )
        })
        .collect();
    let p = work.path().join("big.tar");
    std::fs::write(
        &p,
        tar_files(&oci_files(&img(&[(tar(&files), Comp::None)], config()))),
    )
    .unwrap();
    let sd = state.path().display().to_string();
    let mut c = airlock_env(Who::Root, &[("AIRLOCK_STATE_DIR", sd.as_str())]).unwrap();
    let mut ch = c
        .args([
            "image",
            "import",
            p.to_str().unwrap(),
            "--name",
            "big",
            "-q",
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it is extracting (its tree is staged under tmp/).
    let t0 = std::time::Instant::now();
    let staging = state.path().join("images/tmp");
    loop {
        let busy = entries(&staging)
            .iter()
            .any(|d| !entries(&staging.join(d).join("trees")).is_empty());
        if busy || t0.elapsed() > std::time::Duration::from_secs(20) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    ch.kill().unwrap();
    let st = ch.wait().unwrap();
    if st.success() {
        skip("the import finished before it could be killed");
        return;
    }
    let o = image(Who::Root, state.path(), &["ls", "-q"]).unwrap();
    assert_eq!(o.stdout.trim(), "", "{o:?}");
    assert_eq!(
        entries(&state.path().join("images/rootfs")),
        Vec::<String>::new()
    );
    assert!(
        !entries(&staging).is_empty(),
        "the killed import left its staging directory"
    );
    // The next writer removes it.
    let small = work.path().join("small.tar");
    std::fs::write(
        &small,
        tar_files(&oci_files(&img(
            &[(tar(&[f("a", "a")]), Comp::None)],
            config(),
        ))),
    )
    .unwrap();
    image(
        Who::Root,
        state.path(),
        &["import", small.to_str().unwrap(), "--name", "small", "-q"],
    )
    .unwrap()
    .ok();
    assert_eq!(entries(&staging), Vec::<String>::new());
    assert_eq!(
        image(Who::Root, state.path(), &["ls", "-q"])
            .unwrap()
            .stdout
            .trim(),
        "small"
    );
}
