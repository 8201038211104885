//! `airlock oci` / `airlock-runc`, the runc-compatible runtime, driven the
//! way engines drive runc: bundles with a `config.json` and a rootfs
//! (busybox, static, from Debian's busybox-static), `create` with a pid
//! file and the process parked, `start`, `state`, `kill`, `delete`,
//! `exec`, `ps`, `pause`/`resume`, `update`, a TTY through
//! `--console-socket`, and what airlock refuses. The test process is a
//! child subreaper, as conmon and the containerd shim are, and reaps each
//! container's monitor (whose exit code is the container's).

#[path = "common/bundle.rs"]
mod bundle;
mod common;

use bundle::{config, rootfs, BUSYBOX};

use common::{bin, is_root, skip, tempdir};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ready() -> bool {
    if !is_root() {
        skip("the OCI runtime tests run airlock-runc as root, as engines do");
        return false;
    }
    if !Path::new(BUSYBOX).exists() {
        skip("needs /bin/busybox (Debian's busybox-static; scripts/setup.sh installs it)");
        return false;
    }
    // SAFETY: makes this process the reaper of its orphaned descendants
    // (the containers' monitors), as an engine is.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    true
}

/// `airlock-runc`: a symlink to the test's copy of airlock.
fn runc_bin() -> PathBuf {
    let b = bin();
    let l = b.with_file_name("airlock-runc");
    if !l.exists() {
        let _ = std::os::unix::fs::symlink(&b, &l);
    }
    l
}

pub struct Bundle {
    pub dir: tempdir::Dir,
}

impl Bundle {
    pub fn new(cfg: &Value) -> Bundle {
        let dir = tempdir::Dir::new();
        rootfs(&dir.path().join("rootfs"));
        Bundle::write(&dir, cfg);
        Bundle { dir }
    }
    fn write(dir: &tempdir::Dir, cfg: &Value) {
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec_pretty(cfg).unwrap(),
        )
        .unwrap();
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A runtime root and log of its own per test.
struct Rt {
    root: tempdir::Dir,
    log: PathBuf,
}

#[derive(Debug)]
struct R {
    code: i32,
    out: String,
    err: String,
}

impl Rt {
    fn new() -> Rt {
        let root = tempdir::Dir::new();
        let log = root.path().join("log.json");
        Rt { root, log }
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new(runc_bin());
        c.arg("--root")
            .arg(self.root.path().join("state"))
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json")
            .env_clear()
            .env("PATH", "/usr/bin:/bin");
        c
    }
    fn run(&self, args: &[&str]) -> R {
        let o = self.cmd().args(args).stdin(Stdio::null()).output().unwrap();
        R {
            code: o.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&o.stdout).into(),
            err: String::from_utf8_lossy(&o.stderr).into(),
        }
    }
    fn ok(&self, args: &[&str]) -> R {
        let r = self.run(args);
        assert_eq!(r.code, 0, "{args:?}: {r:?}\nlog: {}", self.log_text());
        r
    }
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn status(&self, id: &str) -> String {
        let r = self.ok(&["state", id]);
        let v: Value = serde_json::from_str(&r.out).unwrap();
        v["status"].as_str().unwrap().to_string()
    }
    fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id]).out).unwrap()
    }
    /// `create` with the container's stdout and stderr in files; the
    /// monitor's pid.
    fn create(&self, b: &Bundle, id: &str) -> (i32, PathBuf) {
        let out = self.root.path().join(format!("{id}.out"));
        let pidf = self.root.path().join(format!("{id}.pid"));
        let f = std::fs::File::create(&out).unwrap();
        let o = self
            .cmd()
            .args(["create", "--bundle"])
            .arg(b.path())
            .arg("--pid-file")
            .arg(&pidf)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .status()
            .unwrap();
        assert!(o.success(), "create {id}: {}", self.log_text());
        let pid: i32 = std::fs::read_to_string(&pidf)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        (pid, out)
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        // Whatever a failed test left: killed and removed.
        if let Ok(rd) = std::fs::read_dir(self.root.path().join("state")) {
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let _ = self.run(&["delete", "--force", &id]);
            }
        }
    }
}

/// Reaps the monitor `pid` (our orphaned descendant); its exit code.
fn reap(pid: i32, within: Duration) -> i32 {
    let end = Instant::now() + within;
    loop {
        let mut st = 0;
        // SAFETY: waits for one specific descendant that we reap.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(st) {
                return libc::WEXITSTATUS(st);
            }
            return 128 + libc::WTERMSIG(st);
        }
        assert!(r == 0, "waitpid {pid}: {}", std::io::Error::last_os_error());
        assert!(Instant::now() < end, "monitor {pid} did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let st = s.rsplit_once(')').map(|x| x.1.trim_start()).unwrap_or("");
            !st.starts_with('Z') && !st.starts_with('X')
        })
        .unwrap_or(false)
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pids(rt: &Rt, id: &str) -> Vec<i32> {
    let r = rt.ok(&["ps", "--format", "json", id]);
    serde_json::from_str(&r.out).unwrap()
}

#[test]
fn lifecycle_create_start_kill_delete() {
    if !ready() {
        return;
    }
    let rt = Rt::new();
    let b = Bundle::new(&config(
        &[
            "sh",
            "-c",
            "echo started as $(id -u) on $(hostname); exec sleep 1000",
        ],
        false,
    ));
    let (pid, out) = rt.create(&b, "life");
    // Parked: the sandbox exists, the process has not run.
    assert_eq!(rt.status("life"), "created");
    let st = rt.state("life");
    assert_eq!(st["pid"], pid);
    assert_eq!(st["id"], "life");
    assert_eq!(st["bundle"], b.path().to_str().unwrap());
    assert!(st["ociVersion"].as_str().unwrap().starts_with("1."));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "",
        "ran before start"
    );
    // A second create with the same id fails and leaves the first alone.
    let r = rt.run(&["create", "--bundle", b.path().to_str().unwrap(), "life"]);
    assert_ne!(r.code, 0);
    assert!(rt.log_text().contains("container with id exists: life"));
    assert_eq!(rt.status("life"), "created");

    rt.ok(&["start", "life"]);
    assert_eq!(rt.status("life"), "running");
    wait_for("the output", Duration::from_secs(10), || {
        std::fs::read_to_string(&out).unwrap().contains("started")
    });
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "started as 0 on oci-test\n"
    );
    // A second start is refused.
    assert_ne!(rt.run(&["start", "life"]).code, 0);
    let procs = pids(&rt, "life");
    assert!(procs.len() >= 2, "{procs:?}");
    // delete of a running container without --force fails.
    let r = rt.run(&["delete", "life"]);
    assert_ne!(r.code, 0);
    assert!(rt.log_text().contains("not stopped"), "{}", rt.log_text());
    assert_eq!(rt.status("life"), "running");

    rt.ok(&["kill", "life", "SIGTERM"]);
    assert_eq!(reap(pid, Duration::from_secs(10)), 128 + libc::SIGTERM);
    assert_eq!(rt.status("life"), "stopped");
    assert_eq!(rt.state("life")["pid"], 0);
    for p in &procs {
        assert!(!alive(*p), "process {p} of the container outlived it");
    }
    // kill of a stopped container fails.
    let r = rt.run(&["kill", "life", "KILL"]);
    assert_ne!(r.code, 0);
    assert!(rt.log_text().contains("not running"));
    rt.ok(&["delete", "life"]);
    assert_ne!(rt.run(&["state", "life"]).code, 0);
    assert!(!rt.root.path().join("state/life").exists());
    // The log is runc's JSON lines.
    for line in rt.log_text().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(v["level"].is_string() && v["msg"].is_string() && v["time"].is_string());
    }
}

#[test]
fn exit_codes_are_the_containers() {
    if !ready() {
        return;
    }
    let rt = Rt::new();
    for (id, args, want) in [
        ("zero", vec!["true"], 0),
        ("seven", vec!["sh", "-c", "exit 7"], 7),
        ("sig", vec!["sh", "-c", "kill -KILL $$"], 128 + 9),
    ] {
        let b = Bundle::new(&config(&args, false));
        let (pid, _) = rt.create(&b, id);
        rt.ok(&["start", id]);
        assert_eq!(reap(pid, Duration::from_secs(10)), want, "{id}");
        assert_eq!(rt.status(id), "stopped");
        rt.ok(&["delete", id]);
    }
    // A command that does not exist: start fails, the monitor exits 127.
    let b = Bundle::new(&config(&["/no/such/program"], false));
    let (pid, _) = rt.create(&b, "missing");
    let r = rt.run(&["start", "missing"]);
    assert_ne!(r.code, 0);
    assert!(
        rt.log_text().contains("/no/such/program"),
        "{}",
        rt.log_text()
    );
    assert_eq!(reap(pid, Duration::from_secs(10)), 127);
    rt.ok(&["delete", "missing"]);
}

#[test]
fn force_delete_kills_everything() {
    if !ready() {
        return;
    }
    let rt = Rt::new();
    let b = Bundle::new(&config(
        &["sh", "-c", "sleep 1000 & sleep 1000 & exec sleep 1000"],
        false,
    ));
    let (pid, _) = rt.create(&b, "force");
    rt.ok(&["start", "force"]);
    wait_for("three sleeps", Duration::from_secs(10), || {
        pids(&rt, "force").len() >= 4
    });
    let procs = pids(&rt, "force");
    rt.ok(&["delete", "--force", "force"]);
    assert_eq!(reap(pid, Duration::from_secs(10)), 128 + 9);
    for p in &procs {
        assert!(!alive(*p), "process {p} outlived delete --force");
    }
    assert!(!rt.root.path().join("state/force").exists());
    // A created (never started) container goes the same way.
    let (pid, _) = rt.create(&b, "parked");
    rt.ok(&["delete", "--force", "parked"]);
    reap(pid, Duration::from_secs(10));
}

#[test]
fn kill_all_and_signals_reach_the_process() {
    if !ready() {
        return;
    }
    let rt = Rt::new();
    let b = Bundle::new(&config(
        &[
            "sh",
            "-c",
            "trap 'echo got-usr1' USR1; echo ready; while true; do sleep 0.05; done",
        ],
        false,
    ));
    let (pid, out) = rt.create(&b, "sig");
    rt.ok(&["start", "sig"]);
    wait_for("ready", Duration::from_secs(10), || {
        std::fs::read_to_string(&out).unwrap().contains("ready")
    });
    rt.ok(&["kill", "sig", "USR1"]);
    wait_for("the trap", Duration::from_secs(10), || {
        std::fs::read_to_string(&out).unwrap().contains("got-usr1")
    });
    assert_eq!(rt.status("sig"), "running");
    rt.ok(&["kill", "--all", "sig", "KILL"]);
    assert_eq!(reap(pid, Duration::from_secs(10)), 128 + 9);
    rt.ok(&["delete", "sig"]);
}

#[test]
fn exec_runs_in_the_same_sandbox() {
    if !ready() {
        return;
    }
    let rt = Rt::new();
    let b = Bundle::new(&config(
        &["sh", "-c", "echo secret > /tmp/shared; exec sleep 1000"],
        false,
    ));
    let (pid, _) = rt.create(&b, "ex");
    rt.ok(&["start", "ex"]);
    let proc_file = rt.root.path().join("p.json");
    let write_proc = |args: &[&str]| {
        std::fs::write(
            &proc_file,
            json!({"args": args, "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}})
                .to_string(),
        )
        .unwrap();
    };
    write_proc(&["sh", "-c", "cat /tmp/shared; echo err >&2; exit 5"]);
    wait_for("the file", Duration::from_secs(10), || {
        rt.run(&["exec", "--process", proc_file.to_str().unwrap(), "ex"])
            .out
            .contains("secret")
    });
    let r = rt.run(&["exec", "--process", proc_file.to_str().unwrap(), "ex"]);
    assert_eq!(
        (r.code, r.out.as_str(), r.err.as_str()),
        (5, "secret\n", "err\n")
    );
    // Detached, as conmon and the shim run it: the pid file names a
    // waiter that exits with the process's code.
    write_proc(&["sh", "-c", "sleep 0.3; exit 9"]);
    let pidf = rt.root.path().join("exec.pid");
    rt.ok(&[
        "exec",
        "--process",
        proc_file.to_str().unwrap(),
        "--detach",
        "--pid-file",
        pidf.to_str().unwrap(),
        "ex",
    ]);
    let wpid: i32 = std::fs::read_to_string(&pidf)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(reap(wpid, Duration::from_secs(10)), 9);
    // Extra capabilities in an exec are refused.
    std::fs::write(
        &proc_file,
        json!({"args": ["id"], "cwd": "/", "user": {"uid": 0, "gid": 0},
               "capabilities": {"effective": ["CAP_SYS_ADMIN"]}})
        .to_string(),
    )
    .unwrap();
    let r = rt.run(&["exec", "--process", proc_file.to_str().unwrap(), "ex"]);
    assert_ne!(r.code, 0);
    assert!(rt.log_text().contains("CAP_SYS_ADMIN"));
    rt.ok(&["kill", "ex", "KILL"]);
    reap(pid, Duration::from_secs(10));
    // exec in a stopped container fails.
    write_proc(&["true"]);
    assert_ne!(
        rt.run(&["exec", "--process", proc_file.to_str().unwrap(), "ex"])
            .code,
        0
    );
    rt.ok(&["delete", "ex"]);
}

/// Receives the pty master the runtime sends to the console socket.
fn recv_console(l: &UnixListener) -> OwnedFd {
    let (s, _) = l.accept().unwrap();
    let mut buf = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u8; 64];
    // SAFETY: msghdr is plain data; recvmsg fills our buffers.
    let fd = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = cbuf.len();
        assert!(libc::recvmsg(s.as_raw_fd(), &mut msg, 0) >= 0);
        let c = libc::CMSG_FIRSTHDR(&msg);
        assert!(!c.is_null(), "no descriptor came with the console message");
        assert_eq!((*c).cmsg_type, libc::SCM_RIGHTS);
        std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const i32)
    };
    // SAFETY: a new fd received from the runtime, ours now.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn read_until(f: &mut std::fs::File, want: &str, within: Duration) -> String {
    let end = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains(want) {
        assert!(
            Instant::now() < end,
            "no {want:?} on the terminal: {:?}",
            String::from_utf8_lossy(&got)
        );
        let mut p = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, 100) } == 1 {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn tty_through_the_console_socket() {
    if !ready() {
        return;
    }
    let rt = Rt::new();
    let sock = rt.root.path().join("console.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let mut cfg = config(
        &[
            "sh",
            "-c",
            "test -t 0 && test -t 1 && echo is-a-tty; read x; echo got-$x; stty size",
        ],
        true,
    );
    cfg["process"]["consoleSize"] = json!({"height": 33, "width": 101});
    let b = Bundle::new(&cfg);
    let pidf = rt.root.path().join("tty.pid");
    let mut child = rt
        .cmd()
        .args(["create", "--bundle"])
        .arg(b.path())
        .arg("--pid-file")
        .arg(&pidf)
        .arg("--console-socket")
        .arg(&sock)
        .arg("tty")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let master = recv_console(&l);
    assert!(child.wait().unwrap().success(), "{}", rt.log_text());
    let pid: i32 = std::fs::read_to_string(&pidf)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut m = std::fs::File::from(master);
    rt.ok(&["start", "tty"]);
    let seen = read_until(&mut m, "is-a-tty", Duration::from_secs(10));
    assert!(seen.contains("is-a-tty"), "{seen}");
    m.write_all(b"hello\r").unwrap();
    let seen = read_until(&mut m, "33 101", Duration::from_secs(10));
    assert!(seen.contains("got-hello"), "{seen}");
    assert_eq!(reap(pid, Duration::from_secs(10)), 0);
    rt.ok(&["delete", "tty"]);
    // A terminal exec gets its own pty through the socket too.
    let _ = std::fs::remove_file(&sock);
}

#[test]
fn tty_exec_through_the_console_socket() {
    if !ready() {
        return;
    }
    let rt = Rt::new();
    let b = Bundle::new(&config(&["sleep", "1000"], false));
    let (pid, _) = rt.create(&b, "tex");
    rt.ok(&["start", "tex"]);
    let sock = rt.root.path().join("exec-console.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let proc_file = rt.root.path().join("p.json");
    std::fs::write(
        &proc_file,
        json!({"terminal": true, "args": ["sh", "-c", "test -t 1 && echo exec-tty; read y; echo y=$y; exit 4"],
               "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}})
        .to_string(),
    )
    .unwrap();
    let pidf = rt.root.path().join("texec.pid");
    let mut child = rt
        .cmd()
        .arg("exec")
        .arg("--process")
        .arg(&proc_file)
        .args(["--detach", "--tty", "--console-socket"])
        .arg(&sock)
        .arg("--pid-file")
        .arg(&pidf)
        .arg("tex")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut m = std::fs::File::from(recv_console(&l));
    assert!(child.wait().unwrap().success(), "{}", rt.log_text());
    let wpid: i32 = std::fs::read_to_string(&pidf)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    read_until(&mut m, "exec-tty", Duration::from_secs(10));
    m.write_all(b"abc\r").unwrap();
    read_until(&mut m, "y=abc", Duration::from_secs(10));
    assert_eq!(reap(wpid, Duration::from_secs(10)), 4);
    rt.ok(&["kill", "tex", "KILL"]);
    reap(pid, Duration::from_secs(10));
    rt.ok(&["delete", "tex"]);
}

#[test]
fn pause_resume_update_ps() {
    if !ready() {
        return;
    }
    let rt = Rt::new();
    let b = Bundle::new(&config(
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.02; done",
        ],
        false,
    ));
    let (pid, _) = rt.create(&b, "pz");
    rt.ok(&["start", "pz"]);
    wait_for("the loop", Duration::from_secs(10), || {
        pids(&rt, "pz").len() >= 2
    });
    rt.ok(&["pause", "pz"]);
    assert_eq!(rt.status("pz"), "paused");
    // The sandbox's PID 1 (the first pid of the group) stays; its root
    // shows the counter, which does not move while frozen.
    let p = pids(&rt, "pz")[0];
    let n = || std::fs::read_to_string(format!("/proc/{p}/root/tmp/n")).unwrap();
    let a = n();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a, n(), "the counter moved while paused");
    rt.ok(&["resume", "pz"]);
    assert_eq!(rt.status("pz"), "running");
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(a, n(), "the counter did not move after resume");
    // update: the memory limit lands in the container's cgroup.
    rt.ok(&["update", "--memory", "96M", "pz"]);
    let cg = std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
    let mem = cg
        .lines()
        .find_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctl, path) = (it.next()?, it.next()?, it.next()?);
            (ctl.split(',').any(|c| c == "memory") || ctl.is_empty()).then(|| path.to_string())
        })
        .unwrap();
    let candidates = [
        format!("/sys/fs/cgroup/memory{mem}/memory.limit_in_bytes"),
        format!("/sys/fs/cgroup/unified{mem}/memory.max"),
        format!("/sys/fs/cgroup{mem}/memory.max"),
    ];
    let limit = candidates
        .iter()
        .find_map(|f| std::fs::read_to_string(f).ok())
        .unwrap_or_else(|| panic!("no memory limit file for {cg}"));
    assert_eq!(limit.trim(), (96u64 << 20).to_string());
    rt.ok(&["kill", "pz", "KILL"]);
    reap(pid, Duration::from_secs(10));
    rt.ok(&["delete", "pz"]);
}

#[test]
fn refusals_are_clear_and_leave_nothing() {
    if !ready() {
        return;
    }
    let rt = Rt::new();
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "hostnet",
            Box::new(|c: &mut Value| {
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|n| n["type"] != "network")
            }),
            "host's network namespace",
        ),
        (
            "hostpid",
            Box::new(|c: &mut Value| {
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|n| n["type"] != "pid")
            }),
            "host's pid namespace",
        ),
        (
            "privileged",
            Box::new(|c: &mut Value| {
                c["process"]["capabilities"]["bounding"] =
                    json!(["CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_CHOWN"])
            }),
            "CAP_SYS_ADMIN, CAP_SYS_MODULE",
        ),
    ];
    for (id, f, want) in cases {
        let mut c = config(&["true"], false);
        f(&mut c);
        let b = Bundle::new(&c);
        let r = rt.run(&["create", "--bundle", b.path().to_str().unwrap(), id]);
        assert_eq!(r.code, 1, "{id} was not refused");
        let log = rt.log_text();
        let last: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
        assert_eq!(last["level"], "error");
        assert!(last["msg"].as_str().unwrap().contains(want), "{id}: {last}");
        assert!(!rt.root.path().join("state").join(id).exists());
        assert_ne!(rt.run(&["state", id]).code, 0);
    }
    // --systemd-cgroup is refused with what to do instead.
    let r = rt.run(&["--systemd-cgroup", "state", "x"]);
    assert_eq!(r.code, 1);
    assert!(rt.log_text().contains("cgroupfs"));
}

#[test]
fn features_and_argv0() {
    if !ready() {
        return;
    }
    let rt = Rt::new();
    let v: Value = serde_json::from_str(&rt.ok(&["features"]).out).unwrap();
    assert_eq!(v["linux"]["cgroup"]["systemd"], false);
    // Bundle seccomp profiles are applied (on top of airlock's allowlist).
    assert!(v["linux"]["seccomp"]["actions"]
        .as_array()
        .unwrap()
        .contains(&json!("SCMP_ACT_ERRNO")));
    assert!(v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&json!("network")));
    // The same through `airlock oci`.
    let o = Command::new(bin())
        .args(["oci", "features"])
        .output()
        .unwrap();
    let w: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v, w);
}

#[test]
fn hooks_run_on_the_host_with_the_state() {
    if !ready() {
        return;
    }
    let rt = Rt::new();
    let out = rt.root.path().join("hooks.txt");
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} $(cat) >> {}", out.display())]});
    // What a hook that enters the container by its pid finds: the
    // container's mount namespace, never the host's (red team).
    let ns_out = rt.root.path().join("ns.txt");
    let ns_hook = |name: &str| {
        json!({"path": "/bin/sh", "args": ["sh", "-c", format!(
            "pid=$(sed -n 's/.*\"pid\":\\([0-9]*\\).*/\\1/p'); echo {name} $(readlink /proc/$pid/ns/mnt) >> {}",
            ns_out.display()
        )]})
    };
    let mut c = config(&["sleep", "2"], false);
    c["hooks"] = json!({
        "createRuntime": [hook("createRuntime"), ns_hook("createRuntime")],
        "prestart": [hook("prestart"), ns_hook("prestart")],
        "poststart": [hook("poststart"), ns_hook("poststart")],
        "poststop": [hook("poststop")]
    });
    let b = Bundle::new(&c);
    let (pid, _) = rt.create(&b, "hk");
    rt.ok(&["start", "hk"]);
    reap(pid, Duration::from_secs(10));
    rt.ok(&["delete", "hk"]);
    let text = std::fs::read_to_string(&out).unwrap();
    let names: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        ["createRuntime", "prestart", "poststart", "poststop"]
    );
    for l in text.lines() {
        let st: Value = serde_json::from_str(l.split_once(' ').unwrap().1).unwrap();
        assert_eq!(st["id"], "hk");
    }
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let host_mnt = host_mnt.to_string_lossy();
    let ns = std::fs::read_to_string(&ns_out).unwrap();
    assert_eq!(ns.lines().count(), 3, "{ns}");
    for l in ns.lines() {
        let (name, mnt) = l.split_once(' ').unwrap();
        assert!(mnt.starts_with("mnt:["), "{name}: {l:?}");
        assert_ne!(
            mnt, host_mnt,
            "{name}'s pid is in the host's mount namespace"
        );
    }
}

#[test]
fn a_killed_monitor_leaves_nothing_after_delete() {
    if !ready() {
        return;
    }
    let rt = Rt::new();
    let mut cfg = config(&["sh", "-c", "sleep 1000 & exec sleep 1000"], false);
    cfg["linux"]["resources"] = json!({"memory": {"limit": 64 << 20}, "pids": {"limit": 100}});
    let b = Bundle::new(&cfg);
    let (pid, _) = rt.create(&b, "killed");
    rt.ok(&["start", "killed"]);
    wait_for("the sleeps", Duration::from_secs(10), || {
        pids(&rt, "killed").len() >= 3
    });
    let procs = pids(&rt, "killed");
    let groups = |pid: i32| -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    continue;
                }
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("airlock-{pid}-"))
                {
                    out.push(e.path());
                } else if e.path().components().count() < 8 {
                    stack.push(e.path());
                }
            }
        }
        out
    };
    assert!(!groups(pid).is_empty(), "the container has no cgroup");
    // SAFETY: the monitor, our descendant, killed and reaped below.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(reap(pid, Duration::from_secs(10)), 128 + 9);
    assert_eq!(rt.status("killed"), "stopped");
    wait_for(
        "the sandbox to die with its monitor",
        Duration::from_secs(10),
        || procs.iter().all(|p| !alive(*p)),
    );
    rt.ok(&["delete", "killed"]);
    assert!(groups(pid).is_empty(), "cgroups left: {:?}", groups(pid));
    assert!(!rt.root.path().join("state/killed").exists());
}

/// Creates, starts and waits for a container; (exit code, its output).
fn run_to_end(rt: &Rt, cfg: &Value, id: &str) -> (i32, String) {
    let b = Bundle::new(cfg);
    let (pid, out) = rt.create(&b, id);
    rt.ok(&["start", id]);
    let code = reap(pid, Duration::from_secs(20));
    let text = std::fs::read_to_string(&out).unwrap();
    rt.ok(&["delete", id]);
    (code, text)
}

/// `process.rlimits` lower airlock's own limits, for init and exec alike;
/// one above airlock's is capped there (and said in the log), never
/// raised.
#[test]
fn rlimits_lower_but_never_raise() {
    if !ready() {
        return;
    }
    let rt = Rt::new();
    let mut c = config(&["sh", "-c", "echo $(ulimit -Sn) $(ulimit -Hn)"], false);
    c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 64, "hard": 64}]);
    let (code, out) = run_to_end(&rt, &c, "nofile64");
    assert_eq!((code, out.as_str()), (0, "64 64\n"));
    // Soft below hard.
    c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 32, "hard": 512}]);
    let (code, out) = run_to_end(&rt, &c, "nofile32");
    assert_eq!((code, out.as_str()), (0, "32 512\n"));
    // podman's default asks for a million: airlock's 1024 stays.
    c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 1048576, "hard": 1048576}]);
    let (code, out) = run_to_end(&rt, &c, "nofilebig");
    assert_eq!((code, out.as_str()), (0, "1024 1024\n"));
    assert!(
        rt.log_text()
            .contains("RLIMIT_NOFILE 1048576:1048576 is capped at airlock's own limit 1024"),
        "{}",
        rt.log_text()
    );
    // An exec'd process gets the container's.
    let mut c = config(&["sleep", "1000"], false);
    c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 64, "hard": 64}]);
    let b = Bundle::new(&c);
    let (pid, _) = rt.create(&b, "execlim");
    rt.ok(&["start", "execlim"]);
    let r = rt.ok(&["exec", "execlim", "sh", "-c", "ulimit -n"]);
    assert_eq!(r.out, "64\n");
    rt.ok(&["kill", "execlim", "KILL"]);
    reap(pid, Duration::from_secs(10));
    rt.ok(&["delete", "execlim"]);
}

/// `linux.seccomp` is a second filter on top of airlock's allowlist: what
/// it denies fails with its errno; what it allows that airlock denies
/// stays denied (a hostile profile cannot weaken the sandbox).
#[test]
fn seccomp_profile_adds_to_ours_never_replaces_it() {
    if !ready() {
        return;
    }
    let rt = Rt::new();
    let mut c = config(
        &[
            "sh",
            "-c",
            "mkdir /tmp/made; echo mkdir=$?; test -d /tmp/made && echo made; echo hi",
        ],
        false,
    );
    c["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
        ]
    });
    let (code, out) = run_to_end(&rt, &c, "nomkdir");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("mkdir=1\n"), "{out}");
    assert!(!out.contains("made\n"), "{out}");
    // stdout and stderr are two streams in one file: their lines may
    // interleave either way, stdout's own order holds.
    let so: Vec<&str> = out.lines().filter(|l| !l.starts_with("mkdir:")).collect();
    assert_eq!(so, ["mkdir=1", "hi"], "{out}");
    // ENOSYS as the profile's errno: its own, not ours.
    c["linux"]["seccomp"]["syscalls"][0]["errnoRet"] = json!(libc::ENOSYS);
    let (_, out) = run_to_end(&rt, &c, "nomkdir2");
    assert!(out.contains("Function not implemented"), "{out}");
    assert!(out.contains("mkdir=1\n"), "{out}");
    // A hostile profile: everything allowed, and explicitly what airlock
    // denies. unshare, mount and ptrace stay refused.
    let mut c = config(
        &[
            "sh",
            "-c",
            "unshare -U true; echo unshare=$?; mount -t tmpfs t /tmp; echo mount=$?; \
             grep -c ' /tmp tmpfs' /proc/mounts; echo done",
        ],
        false,
    );
    c["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["unshare", "mount", "ptrace", "setns", "bpf", "keyctl", "clone", "clone3"],
             "action": "SCMP_ACT_ALLOW"}
        ]
    });
    let (code, out) = run_to_end(&rt, &c, "hostile");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("unshare=1\n"), "{out}");
    assert!(
        out.contains("mount=") && !out.contains("mount=0\n"),
        "{out}"
    );
    assert!(out.contains("\n0\ndone\n"), "{out}");
    assert!(
        rt.log_text()
            .contains("installed after airlock's own seccomp allowlist"),
        "{}",
        rt.log_text()
    );
    // A profile that needs a user-space agent is refused.
    let mut c = config(&["true"], false);
    c["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "/run/nobody.sock",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
    });
    let b = Bundle::new(&c);
    let r = rt.run(&["create", "--bundle", b.path().to_str().unwrap(), "notify"]);
    assert_eq!(r.code, 1);
    assert!(rt.log_text().contains("SCMP_ACT_NOTIFY"));
}

/// A pod: the app container names the pause container's network
/// namespace by `/proc/PID/ns/net` (PID: the pause container's `state`
/// pid, as CRI does) and joins it — the pause *sandbox's* namespace, not
/// the host's. Naming the host's namespace by path is refused.
#[test]
fn a_pod_shares_its_pause_containers_network_namespace() {
    if !ready() {
        return;
    }
    let rt = Rt::new();
    let pause = Bundle::new(&config(
        &[
            "sh",
            "-c",
            "readlink /proc/self/ns/net; nc -l -p 8080 -e echo from-pause; exec sleep 1000",
        ],
        false,
    ));
    let (ppid, pout) = rt.create(&pause, "pause");
    rt.ok(&["start", "pause"]);
    wait_for("the pause output", Duration::from_secs(10), || {
        std::fs::read_to_string(&pout).unwrap().contains("net:[")
    });
    let pause_ns = std::fs::read_to_string(&pout).unwrap().trim().to_string();
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(pause_ns, host_ns.to_string_lossy());
    let state_pid = rt.state("pause")["pid"].as_i64().unwrap();
    assert_eq!(state_pid, ppid as i64);

    let mut c = config(
        &[
            "sh",
            "-c",
            "readlink /proc/self/ns/net; for i in 1 2 3 4 5 6 7 8 9 10; do nc 127.0.0.1 8080 </dev/null && break; sleep 0.2; done",
        ],
        false,
    );
    c["linux"]["namespaces"][1] =
        json!({"type": "network", "path": format!("/proc/{state_pid}/ns/net")});
    let (code, out) = run_to_end(&rt, &c, "app");
    assert_eq!(code, 0, "{out}\n{}", rt.log_text());
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(pause_ns.as_str()), "{out}");
    assert_eq!(lines.next(), Some("from-pause"), "{out}");
    assert!(
        rt.log_text()
            .contains("joins the network namespace of container pause"),
        "{}",
        rt.log_text()
    );
    rt.ok(&["kill", "pause", "KILL"]);
    reap(ppid, Duration::from_secs(10));
    rt.ok(&["delete", "pause"]);

    // The host's namespace, by our own pid (any host process's) or by
    // PID 1's: refused, nothing left.
    let me = std::process::id();
    for (id, path) in [
        ("hostns", format!("/proc/{me}/ns/net")),
        ("initns", "/proc/1/ns/net".to_string()),
        // A container that is gone: its pid now names nobody's sandbox.
        ("gonens", format!("/proc/{state_pid}/ns/net")),
    ] {
        let mut c = config(&["true"], false);
        c["linux"]["namespaces"][1] = json!({"type": "network", "path": path});
        let b = Bundle::new(&c);
        let r = rt.run(&["create", "--bundle", b.path().to_str().unwrap(), id]);
        if id == "gonens" && r.code == 0 {
            // The pid was reused by nothing: the path does not open.
            panic!("a dead container's namespace path was accepted");
        }
        assert_eq!(r.code, 1, "{id} was not refused");
        let log = rt.log_text();
        let last: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
        assert_eq!(last["level"], "error");
        let msg = last["msg"].as_str().unwrap();
        assert!(msg.contains("refused"), "{id}: {msg}");
        if id == "hostns" {
            assert!(msg.contains("it is the host's"), "{msg}");
        }
        assert!(!rt.root.path().join("state").join(id).exists());
    }
}

/// `run` (create + start + wait + delete, the container's exit code; a
/// signal to `run` reaches the container), `run --detach`, `run --keep`,
/// and `events --stats`.
#[test]
fn run_and_events() {
    if !ready() {
        return;
    }
    let rt = Rt::new();
    let b = Bundle::new(&config(
        &["sh", "-c", "echo out-$(hostname); exit 5"],
        false,
    ));
    let o = rt
        .cmd()
        .args(["run", "--bundle"])
        .arg(b.path())
        .arg("r1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", rt.log_text());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out-oci-test\n");
    // Deleted after it ended.
    assert_ne!(rt.run(&["state", "r1"]).code, 0);
    assert!(!rt.root.path().join("state/r1").exists());
    // --keep: left stopped.
    let o = rt
        .cmd()
        .args(["run", "--keep", "--bundle"])
        .arg(b.path())
        .arg("r2")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(rt.status("r2"), "stopped");
    rt.ok(&["delete", "r2"]);
    // A signal to `run` is the container's.
    let b = Bundle::new(&config(
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 3' TERM; echo up; while :; do sleep 0.1; done",
        ],
        false,
    ));
    let mut child = rt
        .cmd()
        .args(["run", "--bundle"])
        .arg(b.path())
        .arg("r3")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 3];
    out.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"up\n");
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(st.code(), Some(3), "{rest} {}", rt.log_text());
    assert_eq!(rest, "got-term\n");
    assert_ne!(rt.run(&["state", "r3"]).code, 0);
    // --detach: running, measured by events --stats.
    let mut c = config(&["sleep", "1000"], false);
    c["linux"]["resources"] = json!({"pids": {"limit": 77}});
    let b = Bundle::new(&c);
    let pidf = rt.root.path().join("r4.pid");
    let o = rt
        .cmd()
        .args(["run", "-d", "--pid-file"])
        .arg(&pidf)
        .arg("--bundle")
        .arg(b.path())
        .arg("r4")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(o.success(), "{}", rt.log_text());
    let pid: i32 = std::fs::read_to_string(&pidf)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(rt.status("r4"), "running");
    let ev: Value = serde_json::from_str(rt.ok(&["events", "--stats", "r4"]).out.trim()).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["id"], "r4");
    assert_eq!(ev["data"]["pids"]["limit"], 77);
    let cur = ev["data"]["pids"]["current"].as_u64().unwrap();
    assert!((1..77).contains(&cur), "{ev}");
    assert!(
        ev["data"]["memory"]["usage"]["usage"].as_u64().unwrap() > 0,
        "{ev}"
    );
    rt.ok(&["kill", "r4", "KILL"]);
    reap(pid, Duration::from_secs(10));
    assert_ne!(rt.run(&["events", "--stats", "r4"]).code, 0);
    rt.ok(&["delete", "r4"]);
}
