//! Shared harness for the integration tests: they run the real `airlock`
//! binary, as root and as the unprivileged user `airlock-test` (created by
//! `scripts/setup.sh`).
//!
//! A test that cannot run here (not root, no test user) is skipped loudly;
//! with `AIRLOCK_TEST_MUST_RUN=1` (set in CI) a skip is a failure.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub const TEST_USER: &str = "airlock-test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// airlock run by root (the sandbox maps to a subordinate uid range).
    Root,
    /// airlock run by an unprivileged user (rootless).
    User,
}

pub fn must_run() -> bool {
    std::env::var("AIRLOCK_TEST_MUST_RUN").is_ok_and(|v| v == "1")
}

/// Skips loudly, or fails when skips are not allowed.
pub fn skip(why: &str) {
    if must_run() {
        panic!("AIRLOCK_TEST_MUST_RUN=1 but this test cannot run: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn test_user_ids() -> Option<(u32, u32)> {
    let out = Command::new("id").arg("-u").arg(TEST_USER).output().ok()?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    let out = Command::new("id").arg("-g").arg(TEST_USER).output().ok()?;
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some((uid, gid))
}

static BIN_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Removes the copied binary's directory when the test process exits.
extern "C" fn remove_bin_dir() {
    if let Some(d) = BIN_DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The binary, copied once into a world-readable directory so that the
/// unprivileged test user can run it wherever the checkout lives; the
/// directory goes when the test process exits.
pub fn bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = PathBuf::from(env!("CARGO_BIN_EXE_airlock"));
        let dir = std::env::temp_dir().join(format!("airlock-test-bin-{}", std::process::id()));
        if BIN_DIR.set(dir.clone()).is_ok() {
            // SAFETY: registers a plain extern "C" function with no
            // arguments, run once at exit.
            unsafe { libc::atexit(remove_bin_dir) };
        }
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        // airlock and the programs it runs from beside itself.
        for name in ["airlock-agent", "airlock-pull", "airlock-serve"] {
            let s = src.with_file_name(name);
            if s.exists() {
                let d = dir.join(name);
                std::fs::copy(&s, &d).unwrap();
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        let dst = dir.join("airlock");
        std::fs::copy(&src, &dst).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
        dst
    })
    .clone()
}

/// A scratch directory that `who` owns (and root can use).
pub fn scratch(who: Who) -> tempdir::Dir {
    let d = tempdir::Dir::new();
    if who == Who::User {
        if let Some((u, g)) = test_user_ids() {
            std::os::unix::fs::chown(d.path(), Some(u), Some(g)).unwrap();
        }
    }
    d
}

pub mod tempdir {
    use std::path::{Path, PathBuf};

    /// A directory removed on drop.
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> Dir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "airlock-t-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&p).unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A `Command` for `airlock` as `who`, with a clean environment; `None`
/// (after a loud skip) when this machine cannot run as `who`.
pub fn airlock(who: Who) -> Option<Command> {
    airlock_env(who, &[])
}

/// Like [`airlock`], with `env` in airlock's own environment (for the test
/// user through `env` after `setpriv --reset-env`, which would otherwise
/// wipe them before airlock sees them).
pub fn airlock_env(who: Who, env: &[(&str, &str)]) -> Option<Command> {
    match who {
        Who::Root => {
            if !is_root() {
                skip("needs root");
                return None;
            }
            let mut c = Command::new(bin());
            c.env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .env("HOME", "/root")
                .envs(env.iter().copied())
                .current_dir("/");
            Some(c)
        }
        Who::User => {
            if !is_root() {
                // Already unprivileged: run directly.
                let mut c = Command::new(bin());
                c.env_clear()
                    .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                    .envs(env.iter().copied())
                    .current_dir("/");
                return Some(c);
            }
            if test_user_ids().is_none() {
                skip("needs the unprivileged user airlock-test (run scripts/setup.sh)");
                return None;
            }
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid",
                TEST_USER,
                "--regid",
                TEST_USER,
                "--init-groups",
                "--reset-env",
                "--",
                "env",
            ])
            .args(env.iter().map(|(k, v)| format!("{k}={v}")))
            .arg(bin())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .current_dir("/");
            Some(c)
        }
    }
}

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    fn from(o: Output) -> Out {
        use std::os::unix::process::ExitStatusExt;
        let code = o
            .status
            .code()
            .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0));
        Out {
            code,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// The stdout lines, trimmed.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().map(str::trim).collect()
    }

    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        self
    }
}

/// Runs `airlock <args>` as `who` with stdin from /dev/null.
pub fn run(who: Who, args: &[&str]) -> Option<Out> {
    let mut c = airlock(who)?;
    c.args(args).stdin(Stdio::null());
    Some(Out::from(c.output().unwrap()))
}

/// `airlock run [flags] -- sh -c SCRIPT`.
pub fn sh(who: Who, flags: &[&str], script: &str) -> Option<Out> {
    let mut a = vec!["run"];
    a.extend_from_slice(flags);
    a.extend_from_slice(&["--", "sh", "-c", script]);
    run(who, &a)
}

/// Python run inside the sandbox with [`PY_PRELUDE`] in front.
pub fn py(who: Who, flags: &[&str], code: &str) -> Option<Out> {
    let full = format!("{PY_PRELUDE}\n{code}");
    let mut a = vec!["run"];
    a.extend_from_slice(flags);
    a.extend_from_slice(&["--", "python3", "-c", &full]);
    run(who, &a)
}

/// Helpers for attack code: `sc(nr, *args)` makes a raw syscall and returns
/// the errno name ("OK" on success); `try_(f)` runs a Python call and
/// returns the errno name of the OSError it raised, or "OK".
pub const PY_PRELUDE: &str = r#"
import ctypes, errno, os, sys, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def en(e):
    return errno.errorcode.get(e, str(e)) if e else "OK"
def sc(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return "OK" if r >= 0 else en(ctypes.get_errno())
def try_(f, *a, **k):
    try:
        f(*a, **k)
        return "OK"
    except OSError as e:
        return en(e.errno)
"#;

/// Runs `f` for root and for the unprivileged user.
pub fn both(f: impl Fn(Who)) {
    for who in [Who::Root, Who::User] {
        f(who);
    }
}

/// Processes on the host whose command line starts with `prefix`.
pub fn host_processes_starting(prefix: &str) -> Vec<String> {
    host_processes_matching(prefix)
        .into_iter()
        .filter(|l| {
            l.split_once(": ")
                .is_some_and(|(_, cmd)| cmd.starts_with(prefix))
        })
        .collect()
}

/// Processes on the host whose command line contains `needle`.
pub fn host_processes_matching(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{pid}: {cmd}"));
            }
        }
    }
    found
}

/// Runs `airlock <args>` as `who`, killing it if it has not ended after
/// `limit` (a hang is then a failed assertion, not a hung test). Returns
/// what it printed and how long it took.
pub fn run_bounded(
    who: Who,
    args: &[&str],
    limit: std::time::Duration,
) -> Option<(Out, std::time::Duration)> {
    use std::io::Read;
    let mut c = airlock(who)?;
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = std::time::Instant::now();
    let mut child = c.spawn().unwrap();
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let so = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let se = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let took = t.elapsed();
    let o = Output {
        status,
        stdout: so.join().unwrap_or_default(),
        stderr: se.join().unwrap_or_default(),
    };
    Some((Out::from(o), took))
}

/// A local "internet" beside a "host": two network namespaces that exist
/// already, `host` (where airlock runs) and `inet` (where the test's
/// servers live), joined by a veth pair (10.255.255.1/30 on the host's
/// side, .2 on the internet's) with default routes both ways, loopback up
/// in both; plus any `host_addrs` (`ADDR/PREFIX`) on the host's side. The
/// servers cannot be on the host's own addresses: the egress proxy refuses
/// those like its loopback.
pub fn link_namespaces(host: &str, inet: &str, host_addrs: &[&str]) {
    let ip = |args: &[&str]| {
        let st = Command::new("ip").args(args).status().unwrap();
        assert!(st.success(), "ip {args:?}");
    };
    for n in [host, inet] {
        ip(&["-n", n, "link", "set", "lo", "up"]);
    }
    ip(&[
        "-n", host, "link", "add", "ve-host", "type", "veth", "peer", "name", "ve-inet", "netns",
        inet,
    ]);
    ip(&[
        "-n",
        host,
        "addr",
        "add",
        "10.255.255.1/30",
        "dev",
        "ve-host",
    ]);
    for a in host_addrs {
        ip(&["-n", host, "addr", "add", a, "dev", "ve-host"]);
    }
    ip(&[
        "-n",
        inet,
        "addr",
        "add",
        "10.255.255.2/30",
        "dev",
        "ve-inet",
    ]);
    ip(&["-n", host, "link", "set", "ve-host", "up"]);
    ip(&["-n", inet, "link", "set", "ve-inet", "up"]);
    ip(&["-n", host, "route", "add", "default", "via", "10.255.255.2"]);
    ip(&["-n", inet, "route", "add", "default", "via", "10.255.255.1"]);
}
