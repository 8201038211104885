//! Images that run programs: a Debian image built with mmdebstrap (once
//! for every test here: it downloads packages from the archive the host's
//! apt uses, about a minute) runs python3; Dockerfiles whose RUN steps
//! execute in sandboxes — on that image as root, and on a small generated
//! image (the host's dash and libc) as root and rootless — build, run, are
//! cached and invalidated from the changed step; RUN has no network; a
//! failing RUN names its line.

mod common;
#[path = "common/oci.rs"]
mod oci;

use common::*;
use oci::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

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

fn inspect(who: Who, state: &Path, name: &str) -> serde_json::Value {
    let o = airlock_in(who, state, &["image", "inspect", name]).unwrap();
    o.ok();
    serde_json::from_str(&o.stdout).unwrap()
}

fn rootfs(who: Who, state: &Path, name: &str) -> PathBuf {
    PathBuf::from(inspect(who, state, name)["rootfs_path"].as_str().unwrap())
}

static SHARED: OnceLock<Option<PathBuf>> = OnceLock::new();

extern "C" fn remove_shared() {
    if let Some(Some(d)) = SHARED.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The state directory holding the Debian image `py` (bookworm, variant
/// apt, plus python3), built on first use and removed when the test
/// process exits; `None` (after a loud skip) where it cannot be built.
fn debian() -> Option<&'static Path> {
    SHARED
        .get_or_init(|| {
            airlock(Who::Root)?;
            let has = std::process::Command::new("sh")
                .args(["-c", "command -v mmdebstrap"])
                .output()
                .is_ok_and(|o| o.status.success());
            if !has {
                skip("mmdebstrap is not installed (scripts/setup.sh installs it)");
                return None;
            }
            let dir = std::env::temp_dir().join(format!("airlock-debian-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            // SAFETY: registers a plain extern "C" function, run at exit.
            unsafe { libc::atexit(remove_shared) };
            let t0 = std::time::Instant::now();
            let o = airlock_in(
                Who::Root,
                &dir,
                &[
                    "image",
                    "build",
                    "--debian",
                    "bookworm",
                    "--packages",
                    "python3",
                    "--name",
                    "py",
                    "-q",
                ],
            )
            .unwrap();
            eprintln!("mmdebstrap image: {:?}", t0.elapsed());
            assert_eq!(o.code, 0, "the Debian image: {o:?}");
            Some(dir)
        })
        .as_deref()
}

/// Slow: the Debian image (built once, see [`debian`]). Its tree, and it
/// runs python3, as its default user (root, with no capability) and as
/// another.
#[test]
fn slow_debian_image_with_mmdebstrap_runs_python() {
    let Some(state) = debian() else { return };
    let v = inspect(Who::Root, state, "py");
    assert_eq!(v["layers"].as_array().unwrap().len(), 1);
    assert_eq!(v["defaults"]["cmd"], serde_json::json!(["bash"]));
    let root = PathBuf::from(v["rootfs_path"].as_str().unwrap());
    let py = std::fs::symlink_metadata(root.join("usr/bin/python3")).unwrap();
    assert!(py.file_type().is_symlink());
    let target = std::fs::read_link(root.join("usr/bin/python3")).unwrap();
    assert!(root.join("usr/bin").join(&target).is_file(), "{target:?}");
    assert!(root.join("usr/bin/apt-get").is_file());
    assert!(std::fs::read_to_string(root.join("etc/os-release"))
        .unwrap()
        .contains("bookworm"));
    // No device nodes in an image.
    let o = std::process::Command::new("find")
        .arg(&root)
        .args(["(", "-type", "c", "-o", "-type", "b", ")", "-print"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "");

    let o = airlock_in(
        Who::Root,
        state,
        &["run", "--image", "py", "--", "python3", "-c", "print(1)"],
    )
    .unwrap();
    o.ok();
    assert_eq!(o.stdout, "1\n", "{o:?}");
    let o = airlock_in(
        Who::Root,
        state,
        &[
            "run",
            "--image",
            "py",
            "--",
            "sh",
            "-c",
            "id -un; echo $HOME; pwd; grep CapEff /proc/self/status; grep PRETTY /etc/os-release",
        ],
    )
    .unwrap();
    o.ok();
    assert_eq!(
        o.lines(),
        [
            "root",
            "/root",
            "/",
            "CapEff:\t0000000000000000",
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"",
        ],
        "{o:?}"
    );
    let o = airlock_in(
        Who::Root,
        state,
        &[
            "run",
            "--image",
            "py",
            "--user",
            "nobody",
            "--",
            "python3",
            "-c",
            "import os, pwd; print(pwd.getpwuid(os.getuid()).pw_name, os.getcwd())",
        ],
    )
    .unwrap();
    o.ok();
    assert_eq!(o.stdout, "nobody /\n", "{o:?}");

    // A bad package name is one clear line.
    let o = airlock_in(
        Who::Root,
        state,
        &[
            "image",
            "build",
            "--debian",
            "bookworm",
            "--packages",
            "--evil",
            "--name",
            "x",
        ],
    )
    .unwrap();
    assert_eq!(o.code, 125);
}

fn build(who: Who, state: &Path, ctx: &Path, name: &str, extra: &[&str]) -> Out {
    let df = ctx.join("Dockerfile").display().to_string();
    let mut a = vec!["image", "build", "-f", df.as_str(), "--name", name];
    a.extend_from_slice(extra);
    let c = ctx.display().to_string();
    a.push(c.as_str());
    airlock_in(who, state, &a).unwrap()
}

/// Slow (the Debian image): two RUN steps with COPY and ENV on Debian;
/// what RUN changed (files made, a file removed) is in the image, airlock's
/// own /etc files are not; the second build is all cache; a changed copied
/// file rebuilds from its COPY on.
#[test]
fn slow_dockerfile_run_steps_build_run_cache_and_invalidate() {
    let Some(state) = debian() else { return };
    let work = tempdir::Dir::new();
    let ctx = work.path();
    std::fs::write(
        ctx.join("Dockerfile"),
        r#"FROM py
ENV GREETING=hello
COPY app.py /app/
RUN python3 -c "print('step one')" && echo "$GREETING" > /app/greeting
COPY version.txt /app/
RUN cat /app/version.txt /app/greeting > /app/built.txt && rm /etc/issue && mkdir -p /data/cache && echo two > /data/cache/x
WORKDIR /app
CMD ["python3", "app.py"]
"#,
    )
    .unwrap();
    std::fs::write(
        ctx.join("app.py"),
        "import os\nprint(open('/app/built.txt').read().split(), os.path.exists('/etc/issue'), open('/data/cache/x').read().strip(), os.environ['GREETING'])\n",
    )
    .unwrap();
    std::fs::write(ctx.join("version.txt"), "v1\n").unwrap();
    let base = rootfs(Who::Root, state, "py");
    // (mmdebstrap makes no /etc/hosts: airlock's is then bound nowhere.)
    let base_hosts = std::fs::read(base.join("etc/hosts")).ok();

    let o = build(Who::Root, state, ctx, "app1", &[]);
    o.ok();
    assert!(
        o.stderr.lines().any(|l| l == "step one"),
        "the step's output: {o:?}"
    );
    assert!(
        o.stderr.contains("0 of 4 layer steps from the cache"),
        "{o:?}"
    );
    let o = airlock_in(Who::Root, state, &["run", "--image", "app1"]).unwrap();
    o.ok();
    assert_eq!(o.stdout, "['v1', 'hello'] False two hello\n", "{o:?}");
    let tree = rootfs(Who::Root, state, "app1");
    assert!(!tree.join("etc/issue").exists());
    assert!(base.join("etc/issue").exists(), "the base image changed");
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(tree.join("data/cache/x")).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (0, 0),
        "RUN's files keep the ids they were made with"
    );
    // airlock's /etc/hosts was bound over the image's, not written into it.
    assert_eq!(std::fs::read(tree.join("etc/hosts")).ok(), base_hosts);
    assert_eq!(
        std::fs::read(tree.join("etc/hostname")).ok(),
        std::fs::read(base.join("etc/hostname")).ok()
    );

    // Again: all from the cache.
    let o = build(Who::Root, state, ctx, "app2", &[]);
    o.ok();
    assert!(
        o.stderr.contains("4 of 4 layer steps from the cache"),
        "{o:?}"
    );
    assert!(
        !o.stderr.lines().any(|l| l == "step one"),
        "a cached RUN ran: {o:?}"
    );
    assert_eq!(
        inspect(Who::Root, state, "app2")["chain_id"],
        inspect(Who::Root, state, "app1")["chain_id"]
    );

    // The copied version changes: COPY app.py and the first RUN are cached,
    // the second COPY and RUN are not.
    std::fs::write(ctx.join("version.txt"), "v2\n").unwrap();
    let o = build(Who::Root, state, ctx, "app3", &[]);
    o.ok();
    assert!(
        o.stderr.contains("2 of 4 layer steps from the cache"),
        "{o:?}"
    );
    assert!(
        o.stderr.contains("CACHED COPY app.py") && o.stderr.contains("CACHED RUN python3"),
        "{o:?}"
    );
    assert!(!o.stderr.contains("CACHED RUN cat"), "{o:?}");
    let o = airlock_in(Who::Root, state, &["run", "--image", "app3"]).unwrap();
    o.ok();
    assert_eq!(o.stdout, "['v2', 'hello'] False two hello\n", "{o:?}");
    // The first image is as it was.
    let o = airlock_in(Who::Root, state, &["run", "--image", "app1"]).unwrap();
    assert_eq!(o.stdout, "['v1', 'hello'] False two hello\n", "{o:?}");
}

/// This host's address on the interface a default route uses, if any.
fn host_address() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// Slow (the Debian image): a RUN step cannot reach a server on the
/// host's loopback, nor the host's own address: the sandbox has only its
/// own loopback. With `--allow-host` it reaches that host through the
/// egress proxy, and only that host.
#[test]
fn slow_run_steps_have_no_network() {
    let Some(state) = debian() else { return };
    let work = tempdir::Dir::new();
    let lo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let any = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    lo.set_nonblocking(true).unwrap();
    any.set_nonblocking(true).unwrap();
    let addr = host_address().map(|ip| ip.to_string()).unwrap_or_default();
    let code = format!(
        "import socket\n\
         for h, p in [('127.0.0.1', {}), ('{addr}', {})]:\n\
         \x20   if not h: continue\n\
         \x20   s = socket.socket(); s.settimeout(5)\n\
         \x20   try:\n\
         \x20       s.connect((h, p)); print('connected', h)\n\
         \x20   except OSError as e:\n\
         \x20       print('refused' if isinstance(e, ConnectionRefusedError) else 'unreachable', h, e.errno)\n",
        lo.local_addr().unwrap().port(),
        any.local_addr().unwrap().port(),
    );
    std::fs::write(work.path().join("probe.py"), &code).unwrap();
    std::fs::write(
        work.path().join("Dockerfile"),
        "FROM py\nCOPY probe.py /\nRUN python3 /probe.py\n",
    )
    .unwrap();
    let o = build(Who::Root, state, work.path(), "net", &["--no-cache"]);
    o.ok();
    assert!(o.stderr.contains("refused 127.0.0.1"), "{o:?}");
    if !addr.is_empty() {
        assert!(o.stderr.contains(&format!("unreachable {addr}")), "{o:?}");
    }
    assert!(!o.stderr.contains("connected"), "{o:?}");
    for l in [&lo, &any] {
        assert_eq!(
            l.accept().unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "the host's server was reached"
        );
    }
    // With --allow-host the step reaches that host through the egress
    // proxy (in the build's own process), and nothing else: a server on
    // the host's loopback, allowed by a CIDR rule for its port only.
    let served = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = served.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut c, _) = served.accept().unwrap();
        let mut req = Vec::new();
        let mut b = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = c.read(&mut b).unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&b[..n]);
        }
        c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nfrom-host")
            .unwrap();
        String::from_utf8_lossy(&req).into_owned()
    });
    let denied_port = lo.local_addr().unwrap().port();
    let fetch = format!(
        "import os, urllib.request, urllib.error\n\
         for k in ('NO_PROXY', 'no_proxy'): os.environ.pop(k, None)\n\
         px = urllib.request.build_opener(urllib.request.ProxyHandler({{'http': os.environ['HTTP_PROXY']}}))\n\
         body = px.open('http://127.0.0.1:{port}/hello', timeout=20).read().decode()\n\
         open('/fetched', 'w').write(body)\n\
         try:\n\
         \x20   px.open('http://127.0.0.1:{denied_port}/x', timeout=20); print('reached the other port')\n\
         except urllib.error.HTTPError as e:\n\
         \x20   print('other port: HTTP', e.code)\n\
         s = __import__('socket').socket(); s.settimeout(5)\n\
         try:\n\
         \x20   s.connect(('127.0.0.1', {port})); print('direct connect reached the host')\n\
         except OSError as e:\n\
         \x20   print('direct refused', e.errno)\n"
    );
    std::fs::write(work.path().join("fetch.py"), &fetch).unwrap();
    std::fs::write(
        work.path().join("Dockerfile"),
        "FROM py\nCOPY fetch.py /\nRUN python3 /fetch.py\n",
    )
    .unwrap();
    let rule = format!("127.0.0.1/32:{port}");
    let o = build(
        Who::Root,
        state,
        work.path(),
        "net2",
        &["--no-cache", "--allow-host", &rule],
    );
    o.ok();
    let req = server.join().unwrap();
    assert!(req.starts_with("GET /hello "), "{req:?}");
    assert!(o.stderr.contains("other port: HTTP 403"), "{o:?}");
    assert!(
        o.stderr.contains("egress denied") && o.stderr.contains(&format!(":{denied_port}")),
        "the proxy's refusal is on the build's output: {o:?}"
    );
    assert!(o.stderr.contains("direct refused"), "{o:?}");
    assert!(!o.stderr.contains("reached"), "{o:?}");
    assert_eq!(
        lo.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the denied port was reached"
    );
    let fetched = rootfs(Who::Root, state, "net2").join("fetched");
    assert_eq!(std::fs::read_to_string(&fetched).unwrap(), "from-host");
    // A rule that is not one is refused before any step runs.
    let o = build(
        Who::Root,
        state,
        work.path(),
        "net3",
        &["--allow-host", "bad host"],
    );
    assert_eq!(o.code, 125, "{o:?}");
    assert!(o.stderr.contains("bad host"), "{o:?}");
}

/// Slow (the Debian image): a failing RUN step is one clear error naming
/// its file, line and exit code, after the step's own output (kept for
/// the error with --quiet).
#[test]
fn slow_a_failing_run_step_names_its_line() {
    let Some(state) = debian() else { return };
    let work = tempdir::Dir::new();
    std::fs::write(
        work.path().join("Dockerfile"),
        "FROM py\nENV A=1\n\nRUN echo first\nRUN python3 -c 'import sys; print(\"about to fail\"); sys.exit(3)'\n",
    )
    .unwrap();
    for quiet in [false, true] {
        let extra: &[&str] = if quiet {
            &["--quiet", "--no-cache"]
        } else {
            &["--no-cache"]
        };
        let o = build(Who::Root, state, work.path(), "bad", extra);
        assert_eq!(o.code, 125, "{o:?}");
        let last = o.stderr.lines().last().unwrap_or("");
        assert!(
            last.contains("Dockerfile:5: RUN:") && last.contains("exited with code 3"),
            "{o:?}"
        );
        assert!(o.stderr.contains("about to fail"), "{o:?}");
        assert_eq!(o.stderr.contains("first"), !quiet, "{o:?}");
    }
    let o = airlock_in(Who::Root, state, &["image", "ls", "-q"]).unwrap();
    assert!(!o.stdout.lines().any(|l| l == "bad"), "{o:?}");
}

/// The host's dash and libc, and a user: a shell without /usr.
fn dash_image() -> Img {
    let bin = |host: &str, at: &str| E {
        path: at.as_bytes().to_vec(),
        kind: Kind::File(std::fs::read(host).unwrap()),
        mode: 0o755,
        uid: 0,
        gid: 0,
        size_override: None,
        mtime: 1_600_000_000,
    };
    let layer = tar(&[
        d("bin/"),
        bin("/bin/dash", "bin/sh"),
        d("lib64/"),
        bin("/lib64/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2"),
        d("lib/"),
        d("lib/x86_64-linux-gnu/"),
        bin(
            "/lib/x86_64-linux-gnu/libc.so.6",
            "lib/x86_64-linux-gnu/libc.so.6",
        ),
        d("etc/"),
        f(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\napp:x:1001:1002::/home/app:/bin/sh\n",
        ),
        f("etc/group", "root:x:0:\napp:x:1002:\n"),
        d("home/"),
        d("home/app/").owner(1001, 1002),
    ]);
    img(
        &[(layer, Comp::Gzip)],
        serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]}),
    )
}

/// A tree's entries: kind, mode, owner, size, mtime, inode, content.
/// (Not ctime or the link count: a build links the files of a tree into
/// the next one's.)
fn snap(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let m = std::fs::symlink_metadata(&p).unwrap();
        let content = if m.is_file() {
            airlock_image::Digest::of(&std::fs::read(&p).unwrap()).to_string()
        } else {
            String::new()
        };
        out.push(format!(
            "{} {:o} {}:{} {} {} {} {content}",
            rel.display(),
            m.mode(),
            m.uid(),
            m.gid(),
            m.size(),
            m.mtime(),
            m.ino()
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

/// RUN steps on a generated image, root-run and rootless: ENV, COPY, two
/// RUN steps (one as the image's other user, whose files keep its ids),
/// USER; it runs; all cached the second time; a changed copied file
/// rebuilds from its COPY on; the base image's tree never changes.
#[test]
fn dockerfile_run_steps_on_a_generated_image() {
    both(|who| {
        let Some(_) = airlock(who) else { return };
        let state = scratch(who);
        let work = scratch(who);
        let (u, g) = match who {
            Who::Root => (0, 0),
            Who::User => test_user_ids().unwrap_or_else(|| {
                // SAFETY: getuid/getgid cannot fail.
                unsafe { (libc::getuid(), libc::getgid()) }
            }),
        };
        let p = work.path().join("dash.tar");
        std::fs::write(&p, tar_files(&oci_files(&dash_image()))).unwrap();
        std::os::unix::fs::chown(&p, Some(u), Some(g)).unwrap();
        airlock_in(
            who,
            state.path(),
            &[
                "image",
                "import",
                p.to_str().unwrap(),
                "--name",
                "dash",
                "-q",
            ],
        )
        .unwrap()
        .ok();
        let base = rootfs(who, state.path(), "dash");
        let base_before = snap(&base);
        let ctx = work.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            "FROM dash\nENV WHO=world\nCOPY msg /msg\nRUN read m < /msg; echo \"$m $WHO\" > /out; echo ran-one\nUSER app\nRUN echo mine > /home/app/f; echo ran-two\nCMD [\"/bin/sh\", \"-c\", \"read a < /out; read b < /home/app/f; echo $a $b\"]\n",
        )
        .unwrap();
        std::fs::write(ctx.join("msg"), "hello\n").unwrap();
        for path in [&ctx, &ctx.join("Dockerfile"), &ctx.join("msg")] {
            std::os::unix::fs::chown(path, Some(u), Some(g)).unwrap();
        }
        let o = build(who, state.path(), &ctx, "d1", &[]);
        o.ok();
        assert!(
            o.stderr.lines().any(|l| l == "ran-one") && o.stderr.lines().any(|l| l == "ran-two"),
            "{who:?}: {o:?}"
        );
        let o = airlock_in(who, state.path(), &["run", "--image", "d1"]).unwrap();
        o.ok();
        assert_eq!(o.stdout, "hello world mine\n", "{who:?}: {o:?}");
        use std::os::unix::fs::MetadataExt;
        let tree = rootfs(who, state.path(), "d1");
        let m = std::fs::metadata(tree.join("home/app/f")).unwrap();
        let want = if who == Who::Root {
            (1001, 1002)
        } else {
            (u, g)
        };
        assert_eq!((m.uid(), m.gid()), want, "{who:?}");
        // Nothing airlock made for the step is in its layer.
        for n in [
            "proc",
            "dev",
            "etc/hosts",
            "etc/hostname",
            "etc/resolv.conf",
            "tmp",
        ] {
            assert!(
                std::fs::symlink_metadata(tree.join(n)).is_err(),
                "{who:?}: {n} is in the image"
            );
        }

        let o = build(who, state.path(), &ctx, "d2", &[]);
        o.ok();
        assert!(
            o.stderr.contains("3 of 3 layer steps from the cache"),
            "{who:?}: {o:?}"
        );
        assert!(!o.stderr.lines().any(|l| l == "ran-one"), "{who:?}: {o:?}");
        std::fs::write(ctx.join("msg"), "bye\n").unwrap();
        let o = build(who, state.path(), &ctx, "d3", &[]);
        o.ok();
        assert!(
            o.stderr.contains("0 of 3 layer steps from the cache"),
            "{who:?}: {o:?}"
        );
        let o = airlock_in(who, state.path(), &["run", "--image", "d3"]).unwrap();
        o.ok();
        assert_eq!(o.stdout, "bye world mine\n", "{who:?}: {o:?}");
        assert_eq!(
            snap(&base),
            base_before,
            "{who:?}: the base image's tree changed"
        );
    });
}
