//! Attack suite, mounts and host-shared kernel objects: read-only mounts of
//! single files swapped under airlock's feet, rootless mount sources
//! swapped for symlinks, per-user kernel quotas (message queues, locked
//! memory) and the host's device inodes. Each test plays the attacker —
//! inside the sandbox, or a host user who can write a mounted directory —
//! and asserts the specific defense. Cases run rootful (`Who::Root`) and
//! rootless (`Who::User`) unless a comment says why one side does not
//! apply.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Files up to this size are copied into the sandbox for a `ro` mount.
const COPY_MAX: u64 = 16 << 20;

fn write(p: &Path, data: &[u8], mode: u32) {
    std::fs::write(p, data).unwrap();
    chmod(p, mode);
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(p: &Path, (u, g): (u32, u32)) {
    std::os::unix::fs::lchown(p, Some(u), Some(g)).unwrap();
}

/// The test user's ids (the "host user who can write the directory").
fn user_ids() -> (u32, u32) {
    test_user_ids().unwrap_or((65534, 65534))
}

/// The `key=value` lines a run printed.
fn kv(o: &Out) -> BTreeMap<String, String> {
    o.stdout
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Asserts exit 0 and each `(key, expected)`, `expected` allowing `A|B`.
#[track_caller]
fn expect(who: Who, o: &Out, want: &[(&str, &str)]) {
    assert_eq!(o.code, 0, "{who:?}: unexpected exit code: {o:#?}");
    let got = kv(o);
    for (k, v) in want {
        let g = got.get(*k).map(String::as_str).unwrap_or("<missing>");
        assert!(
            v.split('|').any(|alt| alt == g),
            "{who:?}: {k:?}: expected {v}, got {g}\n{o:#?}"
        );
    }
}

/// Python helper appended to the harness prelude: `out(k, v)`.
const OUT: &str = "def out(k, v):\n    print(f\"{k}={v}\", flush=True)\n";

/// Runs Python attack code in a sandbox as `who`.
fn attack(who: Who, flags: &[&str], code: &str) -> Option<Out> {
    py(who, flags, &format!("{OUT}\n{code}"))
}

/// Swaps two paths with `renameat2(RENAME_EXCHANGE)` in a tight loop
/// until dropped: what a host user (or another sandbox with an `rw` mount
/// of the directory) can do while airlock mounts one of them.
struct Swapper {
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Swapper {
    fn start(a: &Path, b: &Path) -> Swapper {
        let ca = std::ffi::CString::new(a.as_os_str().as_encoded_bytes()).unwrap();
        let cb = std::ffi::CString::new(b.as_os_str().as_encoded_bytes()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), swaps.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                // SAFETY: two valid C strings; RENAME_EXCHANGE swaps them.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_renameat2,
                        libc::AT_FDCWD,
                        ca.as_ptr(),
                        libc::AT_FDCWD,
                        cb.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                assert_eq!(r, 0, "renameat2: {}", std::io::Error::last_os_error());
                n.fetch_add(1, Ordering::Relaxed);
            }
        });
        Swapper {
            stop,
            swaps,
            handle: Some(handle),
        }
    }

    /// Stops, leaving the two names as they were at the start.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        self.swaps.load(Ordering::SeqCst)
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Runs `runs` sandboxes as `who` from `threads` threads at once, each
/// `sh -c script` with `flags`; returns every result.
fn many(who: Who, threads: usize, runs: usize, flags: &[String], script: &str) -> Vec<Out> {
    let results = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for _ in 0..threads {
            let results = results.clone();
            s.spawn(move || {
                for _ in 0..runs {
                    let f: Vec<&str> = flags.iter().map(String::as_str).collect();
                    if let Some(o) = sh(who, &f, script) {
                        results.lock().unwrap().push(o);
                    }
                }
            });
        }
    });
    Arc::try_unwrap(results).unwrap().into_inner().unwrap()
}

/// A sandbox that talks with the test: attack code prints `key=value`
/// lines and waits for a line on its stdin where it says `ready`.
struct Live {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Live {
    fn start(who: Who, flags: &[&str], code: &str) -> Option<Live> {
        let mut c = airlock(who)?;
        let full = format!("{PY_PRELUDE}\n{OUT}\n{code}");
        c.arg("run")
            .args(flags)
            .args(["--", "python3", "-c", &full])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Some(Live {
            child,
            lines: rx,
            seen: Vec::new(),
        })
    }

    #[track_caller]
    fn wait_for(&mut self, want: &str) {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.trim() == want => return,
                Ok(l) => self.seen.push(l),
                Err(_) => {
                    let _ = self.child.kill();
                    let mut err = String::new();
                    if let Some(mut e) = self.child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!(
                        "never saw {want:?}; before it: {:?}; stderr: {err}",
                        self.seen
                    );
                }
            }
        }
    }

    fn go(&mut self) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    fn finish(mut self) -> Out {
        drop(self.child.stdin.take());
        let end = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("the sandbox did not end: {:?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = self.seen.join("\n");
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            stdout.push('\n');
            stdout.push_str(&l);
        }
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        use std::os::unix::process::ExitStatusExt;
        Out {
            code: status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            stdout,
            stderr,
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Read-only mounts of a single file
// ---------------------------------------------------------------------------

/// Attack (HIGH): a host user who can write the directory of a file that
/// is mounted `ro` swaps the file for a symlink — to a host unix socket, or
/// to a root-only file — in a tight loop while sandboxes start. airlock
/// checked the file, then looked its NAME up again through an overlay of
/// the live host directory, following the symlink with the host's root:
/// the sandbox got the host socket (or the root-only file) bind-mounted.
/// Defense: the exact inode the parent checked is what the sandbox gets
/// (a private copy of it, or that inode itself); a symlink seen at the
/// check is refused. Every run either shows the original file, or fails
/// at set-up naming the symlink.
#[test]
fn ro_file_swapped_for_a_symlink_never_mounts_what_it_points_at() {
    let breaches = Mutex::new(Vec::new());
    both(|who| {
        if airlock(who).is_none() {
            return;
        }
        let attacker = user_ids();
        // The directory the attacker can write, with the file to mount.
        let d = scratch(Who::User);
        chown(d.path(), attacker);
        let f = d.path().join("f");
        write(&f, b"ORIGINAL\n", 0o644);
        chown(&f, attacker);
        // What the symlinks point at: a host socket the sandbox's user
        // could connect to (world-connectable root-run, the user's own
        // rootless), and a root-only file.
        let targets = scratch(Who::Root);
        let sock = targets.path().join("sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        listener.set_nonblocking(true).unwrap();
        if who == Who::Root {
            chmod(&sock, 0o777);
        } else {
            chown(&sock, attacker);
            chmod(&sock, 0o600);
        }
        let secret = targets.path().join("root-only");
        write(&secret, b"ROOT-ONLY-SECRET\n", 0o600);
        for (tag, target) in [("socket", &sock), ("root-only", &secret)] {
            let link = d.path().join(format!("link-{tag}"));
            std::os::unix::fs::symlink(target, &link).unwrap();
            chown(&link, attacker);
            let swapper = Swapper::start(&f, &link);
            let flags = vec!["--mount".to_string(), format!("{}:/x:ro", f.display())];
            let outs = many(
                who,
                4,
                30,
                &flags,
                "stat -c 'kind=%F' /x; echo \"data=$(cat /x 2>&1)\"",
            );
            let swaps = swapper.stop();
            assert!(swaps > 1000, "{who:?} {tag}: the swapper barely ran");
            let (mut ok, mut refused, mut bad) = (0, 0, Vec::new());
            for o in &outs {
                let got = kv(o);
                if o.code == 0
                    && got.get("kind").map(String::as_str) == Some("regular file")
                    && got.get("data").map(String::as_str) == Some("ORIGINAL")
                {
                    ok += 1;
                } else if o.code == 125
                    && (o.stderr.contains("symlink") || o.stderr.contains("changed while"))
                    && !o.stdout.contains("ROOT-ONLY-SECRET")
                {
                    refused += 1;
                } else {
                    bad.push(o);
                }
            }
            eprintln!(
                "{who:?} {tag}: {} runs, {ok} mounted the file, {refused} refused, {} breached",
                outs.len(),
                bad.len()
            );
            if let Some(o) = bad.first() {
                breaches.lock().unwrap().push(format!(
                    "{who:?} {tag}: {} of {} sandboxes saw something else than the file checked, e.g. {o:#?}",
                    bad.len(),
                    outs.len()
                ));
            }
            assert!(ok > 0, "{who:?} {tag}: no run mounted the file at all");
            // Leave the names as they were (an even number of swaps).
            if f.symlink_metadata().unwrap().file_type().is_symlink() {
                std::fs::rename(&f, d.path().join("tmp")).unwrap();
                std::fs::rename(&link, &f).unwrap();
                std::fs::rename(d.path().join("tmp"), &link).unwrap();
            }
        }
        match listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("{who:?}: the HOST socket got a connection: {other:?}"),
        }
    });
    let breaches = breaches.into_inner().unwrap();
    assert!(breaches.is_empty(), "{}", breaches.join("\n"));
}

/// A `ro` mount of one file shows that file's content, mode and owner (as
/// the id mapping shows it), read-only, as a private copy: its inode is not
/// the host's (locks and inotify stay inside), and it is charged to
/// `--disk` (too small a `--disk` is an error that says so). A file the
/// sandbox may not read is still unreadable — also for `--user nobody`,
/// whom a careless copy would make its owner.
#[test]
fn ro_file_mount_is_a_private_read_only_copy() {
    both(|who| {
        if airlock(who).is_none() {
            return;
        }
        let d = scratch(Who::User);
        let owner = user_ids();
        let f = d.path().join("f");
        write(&f, b"hello file\n", 0o640);
        chown(&f, owner);
        let x = d.path().join("x");
        write(&x, b"#!/bin/sh\necho ran\n", 0o750);
        chown(&x, owner);
        use std::os::unix::fs::MetadataExt;
        let host_ino = std::fs::metadata(&f).unwrap().ino();
        let mf = format!("{}:/m/f:ro", f.display());
        let mx = format!("{}:/m/x:ro", x.display());
        let code = format!(
            r#"
import fcntl, stat
st = os.stat("/m/f")
out("mode", oct(stat.S_IMODE(st.st_mode)))
out("owner", "%d:%d" % (st.st_uid, st.st_gid))
out("same_inode", st.st_ino == {host_ino})
out("data", open("/m/f").read().strip())
out("write", try_(open, "/m/f", "w"))
out("chmod", try_(os.chmod, "/m/f", 0o777))
out("exec", os.popen("/m/x").read().strip())
out("xmode", oct(stat.S_IMODE(os.stat("/m/x").st_mode)))
fd = os.open("/m/f", os.O_RDONLY)
out("flock", try_(fcntl.flock, fd, fcntl.LOCK_EX | fcntl.LOCK_NB))
print("ready", flush=True)
sys.stdin.readline()
"#
        );
        let Some(mut live) = Live::start(who, &["--mount", &mf, "--mount", &mx], &code) else {
            return;
        };
        live.wait_for("ready");
        // The host, while the sandbox holds its lock.
        let h = std::fs::File::open(&f).unwrap();
        // SAFETY: flock on an fd we own.
        let host_flock = unsafe { libc::flock(h.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        live.go();
        let o = live.finish();
        assert_eq!(host_flock, 0, "{who:?}: the host's flock -n was held off");
        // Root-run, the owner is id-mapped to the sandbox's user; rootless
        // the caller's file is the sandbox user's as well.
        expect(
            who,
            &o,
            &[
                ("mode", "0o640"),
                ("owner", "1000:1000"),
                ("same_inode", "False"),
                ("data", "hello file"),
                ("write", "EROFS"),
                ("chmod", "EROFS"),
                ("exec", "ran"),
                ("xmode", "0o750"),
                ("flock", "OK"),
            ],
        );

        // Root-only files stay unreadable, for every user inside; a
        // world-readable root file reads.
        let r = scratch(Who::Root);
        let secret = r.path().join("secret");
        write(&secret, b"ROOT-SECRET\n", 0o600);
        let public = r.path().join("public");
        write(&public, b"public\n", 0o644);
        let ms = format!("{}:/s:ro", secret.display());
        let mp = format!("{}:/p:ro", public.display());
        for user in ["sandbox", "nobody", "root"] {
            let code = "out('secret', try_(lambda: open('/s').read()))\nout('public', open('/p').read().strip())";
            let Some(o) = attack(who, &["--user", user, "--mount", &ms, "--mount", &mp], code)
            else {
                return;
            };
            assert!(!o.stdout.contains("ROOT-SECRET"), "{who:?} {user}: {o:#?}");
            expect(who, &o, &[("secret", "EACCES"), ("public", "public")]);
        }

        // The copy is charged to --disk.
        let big = d.path().join("big");
        write(&big, &vec![b'z'; 3 << 20], 0o644);
        chown(&big, owner);
        let mb = format!("{}:/b:ro", big.display());
        let o = sh(who, &["--disk", "2M", "--mount", &mb], "wc -c < /b").unwrap();
        assert_eq!(
            o.code, 125,
            "{who:?}: a 3 MiB copy fit in --disk 2M: {o:#?}"
        );
        assert!(o.stderr.contains("--disk"), "{who:?}: {o:#?}");
        let o = sh(who, &["--disk", "8M", "--mount", &mb], "wc -c < /b").unwrap();
        o.ok();
        assert_eq!(o.stdout.trim(), (3 << 20).to_string(), "{who:?}");
    });
}

/// A `ro` mount of a file larger than what is copied: the host file itself,
/// read-only; its content reads in full and cannot be written.
#[test]
fn ro_mount_of_a_large_file() {
    both(|who| {
        if airlock(who).is_none() {
            return;
        }
        let d = scratch(Who::User);
        let big = d.path().join("big");
        let len = COPY_MAX as usize + 4099;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        write(&big, &data, 0o644);
        chown(&big, user_ids());
        let sum: u64 = data.iter().map(|&b| b as u64).sum();
        let m = format!("{}:/big:ro", big.display());
        let code = r#"
import stat
st = os.stat("/big")
out("kind", "reg" if stat.S_ISREG(st.st_mode) else "other")
out("size", st.st_size)
out("sum", sum(open("/big", "rb").read()))
out("write", try_(open, "/big", "r+b"))
"#;
        let Some(o) = attack(who, &["--mount", &m], code) else {
            return;
        };
        let size = len.to_string();
        let sum = sum.to_string();
        expect(
            who,
            &o,
            &[
                ("kind", "reg"),
                ("size", &size),
                ("sum", &sum),
                ("write", "EROFS"),
            ],
        );
    });
}

/// Attack: a FIFO (or a device node) mounted `ro` reached the sandbox as
/// that FIFO — a channel to whoever holds the host side. Defense: a `ro`
/// mount is of a directory or a regular file only; anything else is
/// refused at set-up (exit 125).
#[test]
fn ro_mount_of_a_fifo_or_device_is_refused() {
    both(|who| {
        if airlock(who).is_none() {
            return;
        }
        let d = scratch(Who::User);
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
        chown(&fifo, user_ids());
        let mut sources = vec![fifo.clone(), PathBuf::from("/dev/null")];
        let dev = d.path().join("null");
        if who == Who::Root {
            let c = std::ffi::CString::new(dev.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid C string; makes a char device node (1, 3).
            let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
            assert_eq!(r, 0);
            sources.push(dev.clone());
        }
        for s in &sources {
            let m = format!("{}:/x:ro", s.display());
            let o = sh(who, &["--mount", &m], "stat -c %F /x").unwrap();
            assert_eq!(o.code, 125, "{who:?} {s:?}: {o:#?}");
            assert!(
                o.stderr.contains("regular file"),
                "{who:?} {s:?}: unclear error: {o:#?}"
            );
        }
    });
}

// ---------------------------------------------------------------------------
// 2. Rootless mount sources
// ---------------------------------------------------------------------------

/// Attack (HIGH, rootless): swap a mounted directory for a symlink to
/// another directory in a tight loop while sandboxes start. airlock checked
/// the path on the host, then resolved it again inside the sandbox's user
/// namespace, where the user's own symlinks look root's (the user is root
/// there) and were followed: the sandbox got the decoy. Defense: the
/// parent resolves once and pins (dev, ino, type); the agent opens that
/// canonical path without following any symlink and refuses anything
/// else. Every run shows the real directory or fails at set-up.
#[test]
fn rootless_mount_source_swapped_for_a_symlink_is_never_followed() {
    let who = Who::User;
    if airlock(who).is_none() {
        return;
    }
    let d = scratch(Who::User);
    let ids = user_ids();
    let mk = |p: &Path, marker: &str| {
        std::fs::create_dir_all(p.join("sub")).unwrap();
        write(&p.join("marker"), marker.as_bytes(), 0o644);
        write(&p.join("sub/marker"), marker.as_bytes(), 0o644);
        for q in [
            p.to_path_buf(),
            p.join("sub"),
            p.join("marker"),
            p.join("sub/marker"),
        ] {
            chown(&q, ids);
        }
    };
    let src = d.path().join("src");
    let decoy = d.path().join("decoy");
    mk(&src, "REAL");
    mk(&decoy, "DECOY");
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&decoy, &link).unwrap();
    chown(&link, ids);
    let swapper = Swapper::start(&src, &link);
    let mut outs = Vec::new();
    for (source, mode) in [
        (src.clone(), "ro"),
        (src.clone(), "rw"),
        (src.clone(), "overlay"),
        (src.join("sub"), "ro"),
    ] {
        let flags = vec![
            "--mount".to_string(),
            format!("{}:/m:{mode}", source.display()),
        ];
        for o in many(who, 3, 12, &flags, "echo \"data=$(cat /m/marker)\"") {
            outs.push((mode, o));
        }
    }
    let swaps = swapper.stop();
    assert!(swaps > 1000, "the swapper barely ran");
    let mut ok = 0;
    for (mode, o) in &outs {
        assert!(
            !o.stdout.contains("DECOY"),
            "{mode}: the decoy was mounted: {o:#?}"
        );
        if o.code == 0 {
            assert_eq!(
                kv(o).get("data").map(String::as_str),
                Some("REAL"),
                "{o:#?}"
            );
            ok += 1;
        } else {
            assert_eq!(o.code, 125, "{mode}: {o:#?}");
            assert!(
                o.stderr.contains("symlink") || o.stderr.contains("changed while"),
                "{mode}: {o:#?}"
            );
        }
    }
    assert!(ok > 0, "no run mounted the directory at all");
}

/// Rootless, a mount source reached through a root-owned symlink (as
/// `/var/lock -> /run/lock`) works: the parent resolves it on the host,
/// where root's symlinks are root's; the agent opens the resolved path.
/// (The agent used to walk it again inside the user namespace, where root
/// owns nothing, and refused root's symlink as a stranger's.)
#[test]
fn rootless_mount_through_a_root_owned_symlink() {
    let who = Who::User;
    if airlock(who).is_none() {
        return;
    }
    if !is_root() {
        skip("needs root to make a root-owned symlink");
        return;
    }
    let target = scratch(Who::User);
    std::fs::create_dir(target.path().join("sub")).unwrap();
    write(
        &target.path().join("sub/marker"),
        b"through-root-link\n",
        0o644,
    );
    chown(&target.path().join("sub"), user_ids());
    // A root-owned directory holding a root-owned symlink.
    let holder = tempdir::Dir::new();
    let link = holder.path().join("lock");
    std::os::unix::fs::symlink(target.path(), &link).unwrap();
    let m1 = format!("{}:/m:ro", link.display());
    let m2 = format!("{}/sub/marker:/f:ro", link.display());
    let o = sh(
        who,
        &["--mount", &m1, "--mount", &m2],
        "cat /m/sub/marker /f",
    )
    .unwrap();
    o.ok();
    assert_eq!(o.stdout, "through-root-link\nthrough-root-link\n");
    // The system's own, where there is one.
    if let Ok(md) = std::fs::symlink_metadata("/var/lock") {
        use std::os::unix::fs::MetadataExt;
        if md.file_type().is_symlink() && md.uid() == 0 {
            let o = sh(
                who,
                &["--mount", "/var/lock:/l:ro"],
                "test -d /l && echo dir",
            )
            .unwrap();
            o.ok();
            assert_eq!(o.stdout.trim(), "dir");
        }
    }
}

// ---------------------------------------------------------------------------
// 3. Per-user kernel quotas
// ---------------------------------------------------------------------------

/// Python: `mq_create(name)` creates a POSIX message queue of 10
/// messages of 8 KiB (the largest an unprivileged process may ask for,
/// about 81 KiB of the budget) and returns "OK" or the errno name. Inside
/// the sandbox the open that follows the creation fails with EACCES
/// (Landlock), but the queue exists by then and is charged.
const MQ: &str = r#"
class MqAttr(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long),
                ("msgsize", ctypes.c_long), ("curmsgs", ctypes.c_long),
                ("pad", ctypes.c_long * 4)]
libc.mq_open.restype = ctypes.c_int
libc.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(MqAttr)]
def mq_create(name):
    a = MqAttr(0, 10, 8192, 0)
    fd = libc.mq_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600, ctypes.byref(a))
    return "OK" if fd >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
"#;

/// Attack: fill the host user's whole POSIX message-queue budget. The
/// sandbox's RLIMIT_MSGQUEUE was the kernel's per-user default (800 KiB),
/// and the budget is the user's: rootless, nine queues made inside (each
/// refused to open by Landlock, but made and charged all the same) left
/// the user's other processes none (`mq_open`: EMFILE) while the sandbox
/// ran. And lock memory up to the host's limit. Defense: every sandbox
/// may have a quarter of the budget (200 KiB: two such queues) and 64 KiB
/// of locked memory, and cannot raise either; the user keeps the rest.
#[test]
fn message_queues_and_locked_memory_are_capped() {
    both(|who| {
        let code = format!(
            r#"
import resource, mmap
{MQ}
out("msgqueue", resource.getrlimit(resource.RLIMIT_MSGQUEUE)[1])
out("memlock", resource.getrlimit(resource.RLIMIT_MEMLOCK)[1])
class RL(ctypes.Structure):
    _fields_ = [("cur", ctypes.c_ulong), ("max", ctypes.c_ulong)]
def raise_(res, v):
    r = RL(v, v)
    return "OK" if libc.setrlimit(res, ctypes.byref(r)) == 0 else en(ctypes.get_errno())
out("raise_msgqueue", raise_(resource.RLIMIT_MSGQUEUE, 819200))
out("raise_memlock", raise_(resource.RLIMIT_MEMLOCK, 1 << 20))
made = 0
err = "none"
while made < 64:
    r = mq_create(b"/q%d" % made)
    if r not in ("OK", "EACCES"):
        err = r
        break
    made += 1
out("queues", made)
out("mq_err", err)
m = mmap.mmap(-1, 128 << 10)
buf = ctypes.c_char.from_buffer(m)
libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
r = libc.mlock(ctypes.addressof(buf), 128 << 10)
out("mlock_128k", "OK" if r == 0 else en(ctypes.get_errno()))
r = libc.mlock(ctypes.addressof(buf), 32 << 10)
out("mlock_32k", "OK" if r == 0 else en(ctypes.get_errno()))
print("ready", flush=True)
sys.stdin.readline()
"#
        );
        let Some(mut live) = Live::start(who, &[], &code) else {
            return;
        };
        live.wait_for("ready");
        // The same user on the host, while the sandbox holds its queues.
        let probe = format!(
            r#"
import ctypes, os, errno
libc = ctypes.CDLL(None, use_errno=True)
{MQ}
n = 0
names = []
while n < 6:
    name = b"/airlock-test-%d-%d" % (os.getpid(), n)
    r = mq_create(name)
    if r != "OK":
        break
    names.append(name)
    n += 1
for name in names:
    libc.mq_unlink(name)
print("host_queues=%d" % n)
"#
        );
        let mut p = if who == Who::Root {
            std::process::Command::new("/usr/bin/python3")
        } else {
            let mut c = std::process::Command::new("setpriv");
            c.args([
                "--reuid",
                TEST_USER,
                "--regid",
                TEST_USER,
                "--init-groups",
                "/usr/bin/python3",
            ]);
            c
        };
        let host = p.args(["-c", &probe]).output().unwrap();
        let host = String::from_utf8_lossy(&host.stdout).into_owned();
        live.go();
        let o = live.finish();
        expect(
            who,
            &o,
            &[
                ("msgqueue", "204800"),
                ("memlock", "65536"),
                ("raise_msgqueue", "EPERM"),
                ("raise_memlock", "EPERM"),
                ("queues", "2"),
                ("mq_err", "EMFILE"),
                ("mlock_128k", "ENOMEM|EPERM|EAGAIN"),
                ("mlock_32k", "OK"),
            ],
        );
        assert_eq!(
            host.trim(),
            "host_queues=6",
            "{who:?}: the host user could not make its own queues while the sandbox ran"
        );
    });
}

// ---------------------------------------------------------------------------
// 4. Device nodes
// ---------------------------------------------------------------------------

/// Attack (root-run): the sandbox's /dev/null was a bind of the host's
/// inode, so a `flock` on it inside held the host's `flock -n /dev/null`
/// off (and the reverse), and an inotify watch on it inside saw every
/// write on the host. Defense: run by root, the sandbox's device nodes are
/// its own, made by airlock on a small read-only tmpfs: a different inode,
/// no shared locks, no shared events; they still work. (Rootless, no node
/// can be made: the host's are bound read-only, as the README says.)
#[test]
fn device_nodes_are_the_sandboxes_own() {
    let who = Who::Root;
    if airlock(who).is_none() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let host = std::fs::metadata("/dev/null").unwrap();
    // The host holds a lock on /dev/null when the sandbox starts.
    let held = std::fs::File::open("/dev/null").unwrap();
    // SAFETY: flock on an fd we own.
    let r = unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(r, 0, "someone on the host holds a lock on /dev/null");
    let code = format!(
        r#"
import fcntl
st = os.stat("/dev/null")
out("same_inode", (st.st_dev, st.st_ino) == ({}, {}))
out("rdev", "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)))
fd = os.open("/dev/null", os.O_RDONLY)
out("flock_inside", try_(fcntl.flock, fd, fcntl.LOCK_EX | fcntl.LOCK_NB))
libc.inotify_init1.restype = ctypes.c_int
ino = libc.inotify_init1(os.O_NONBLOCK)
out("watch", "OK" if libc.inotify_add_watch(ino, b"/dev/null", 0x2 | 0x1 | 0x4) >= 0 else en(ctypes.get_errno()))
print("ready", flush=True)
sys.stdin.readline()
try:
    ev = os.read(ino, 4096)
    out("events", len(ev) // 16)
except BlockingIOError:
    out("events", 0)
w = os.open("/dev/null", os.O_WRONLY)
out("null_write", os.write(w, b"x"))
out("zero", len(open("/dev/zero", "rb").read(8)))
out("full", try_(lambda: open("/dev/full", "wb", buffering=0).write(b"x")))
out("urandom", len(open("/dev/urandom", "rb").read(8)))
out("utime", try_(os.utime, "/dev/null"))
"#,
        host.dev(),
        host.ino()
    );
    let Some(mut live) = Live::start(who, &[], &code) else {
        return;
    };
    live.wait_for("ready");
    drop(held);
    // The host, while the sandbox holds its lock and watches.
    let h = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    // SAFETY: flock on an fd we own.
    let host_flock = unsafe { libc::flock(h.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    for _ in 0..10 {
        use std::io::Write;
        (&h).write_all(b"host write\n").unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    live.go();
    let o = live.finish();
    drop(h);
    assert_eq!(
        host_flock, 0,
        "the sandbox's flock on /dev/null held the host's flock -n off"
    );
    expect(
        who,
        &o,
        &[
            ("same_inode", "False"),
            ("rdev", "1:3"),
            ("flock_inside", "OK"),
            ("watch", "OK"),
            ("events", "0"),
            ("null_write", "1"),
            ("zero", "8"),
            ("full", "ENOSPC"),
            ("urandom", "8"),
            ("utime", "EROFS"),
        ],
    );
}
