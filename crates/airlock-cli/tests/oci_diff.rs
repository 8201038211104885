//! Differential: the same bundles under runc, crun (Debian's) and
//! airlock-runc give the same stdout, stderr, exit codes and `state`
//! transitions — except where airlock is stricter on purpose, which is
//! asserted here as a difference (and listed in docs/oci.md): no
//! capabilities, no /sys, writes to / that do not reach the bundle.

#[path = "common/bundle.rs"]
mod bundle;
mod common;

use common::{bin, is_root, skip, tempdir};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Runtime {
    name: &'static str,
    bin: PathBuf,
    root: tempdir::Dir,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // What a failed test left: killed and removed.
        if let Ok(rd) = std::fs::read_dir(self.root.path()) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    let id = e.file_name().to_string_lossy().into_owned();
                    let _ = self.cmd().args(["delete", "--force", &id]).output();
                }
            }
        }
    }
}

fn runtimes() -> Option<Vec<Runtime>> {
    if !is_root() {
        skip("the differential test runs runc, crun and airlock-runc as root");
        return None;
    }
    for p in ["/usr/sbin/runc", "/usr/bin/crun", bundle::BUSYBOX] {
        if !Path::new(p).exists() {
            skip(&format!("needs {p} (scripts/setup.sh installs it)"));
            return None;
        }
    }
    // SAFETY: the containers' init processes (and airlock's monitors) are
    // reparented to us and reaped here, as by an engine.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let b = bin();
    let ar = b.with_file_name("airlock-runc");
    if !ar.exists() {
        let _ = std::os::unix::fs::symlink(&b, &ar);
    }
    let mut v = vec![Runtime {
        name: "runc",
        bin: "/usr/sbin/runc".into(),
        root: tempdir::Dir::new(),
    }];
    let crun = Runtime {
        name: "crun",
        bin: "/usr/bin/crun".into(),
        root: tempdir::Dir::new(),
    };
    // crun 1.8 refuses hosts whose cgroup v2 hierarchy is mounted beside v1
    // controllers ("hybrid mode"); it is compared where it runs.
    match crun_works(&crun) {
        Ok(()) => v.push(crun),
        Err(why) => eprintln!("NOTE: crun is left out of the comparison on this host: {why}"),
    }
    v.push(Runtime {
        name: "airlock",
        bin: ar,
        root: tempdir::Dir::new(),
    });
    Some(v)
}

fn crun_works(rt: &Runtime) -> Result<(), String> {
    let b = bundle(&spec(&["true"], &[], "/"));
    let o = rt
        .cmd()
        .args(["run", "--bundle"])
        .arg(b.dir.path())
        .arg(uniq("probe"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = rt.cmd().args(["delete", "-f", &uniq("probe")]).output();
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
    }
}

/// runc's own default spec (`runc spec`), with our process.
fn spec(args: &[&str], env: &[&str], cwd: &str) -> Value {
    let d = tempdir::Dir::new();
    let ok = Command::new("/usr/sbin/runc")
        .args(["spec", "--bundle"])
        .arg(d.path())
        .status()
        .unwrap();
    assert!(ok.success());
    let mut v: Value =
        serde_json::from_slice(&std::fs::read(d.path().join("config.json")).unwrap()).unwrap();
    v["process"]["terminal"] = json!(false);
    v["process"]["args"] = json!(args);
    let mut e = vec!["PATH=/bin".to_string()];
    e.extend(env.iter().map(|s| s.to_string()));
    v["process"]["env"] = json!(e);
    v["process"]["cwd"] = json!(cwd);
    v["hostname"] = json!("difftest");
    // runc's example spec has a read-only root; engines give a writable one.
    v["root"]["readonly"] = json!(false);
    v
}

struct Bundle {
    dir: tempdir::Dir,
}

fn bundle(cfg: &Value) -> Bundle {
    let dir = tempdir::Dir::new();
    let root = dir.path().join("rootfs");
    bundle::rootfs(&root);
    for d in ["tmp", "proc", "dev", "sys", "work"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec_pretty(cfg).unwrap(),
    )
    .unwrap();
    Bundle { dir }
}

#[derive(Debug, PartialEq, Clone)]
struct Run {
    states: Vec<String>,
    code: i32,
    stdout: String,
    stderr: String,
}

impl Runtime {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(self.root.path());
        c.env_clear().env("PATH", "/usr/sbin:/usr/bin:/bin");
        c
    }
    fn status(&self, id: &str) -> String {
        let o = self.cmd().args(["state", id]).output().unwrap();
        if !o.status.success() {
            return "absent".into();
        }
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["status"].as_str().unwrap_or("?").to_string()
    }
    fn ok(&self, args: &[&str]) {
        let o = self.cmd().args(args).stdin(Stdio::null()).output().unwrap();
        assert!(o.status.success(), "{} {args:?}: {o:?}", self.name);
    }
    fn fails(&self, args: &[&str]) -> bool {
        !self
            .cmd()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// create → start → (wait or `between`) → exit, with the states seen.
    fn run(&self, b: &Bundle, id: &str, between: &dyn Fn(&Runtime, &str) -> Vec<String>) -> Run {
        let out = b.dir.path().join(format!("{}.out", self.name));
        let err = b.dir.path().join(format!("{}.err", self.name));
        let pidf = b.dir.path().join(format!("{}.pid", self.name));
        let o = self
            .cmd()
            .args(["create", "--bundle"])
            .arg(b.dir.path())
            .arg("--pid-file")
            .arg(&pidf)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        assert!(
            o.success(),
            "{} create: {}",
            self.name,
            std::fs::read_to_string(&err).unwrap()
        );
        let pid: i32 = std::fs::read_to_string(&pidf)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut states = vec![self.status(id)];
        self.ok(&["start", id]);
        states.extend(between(self, id));
        let code = reap(pid);
        states.push(self.status(id));
        self.ok(&["delete", id]);
        states.push(self.status(id));
        Run {
            states,
            code,
            stdout: std::fs::read_to_string(&out).unwrap(),
            stderr: std::fs::read_to_string(&err).unwrap(),
        }
    }
}

fn reap(pid: i32) -> i32 {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let mut st = 0;
        // SAFETY: reaps one specific descendant.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                128 + libc::WTERMSIG(st)
            };
        }
        assert!(r == 0 && Instant::now() < end, "waitpid {pid}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Ids unique to this test process (runc's cgroups are named by id).
fn uniq(id: &str) -> String {
    format!("{id}-{}", std::process::id())
}

fn none(_: &Runtime, _: &str) -> Vec<String> {
    Vec::new()
}

/// The same bundle under every runtime; the runs, by runtime name.
fn all(
    rts: &[Runtime],
    cfg: &Value,
    id: &str,
    between: &dyn Fn(&Runtime, &str) -> Vec<String>,
) -> Vec<(&'static str, Run)> {
    let id = uniq(id);
    rts.iter()
        .map(|rt| (rt.name, rt.run(&bundle(cfg), &id, between)))
        .collect()
}

fn assert_same(runs: &[(&str, Run)]) {
    let (n0, r0) = &runs[0];
    for (n, r) in &runs[1..] {
        assert_eq!(r, r0, "{n} differs from {n0}");
    }
}

#[test]
fn same_output_codes_and_states() {
    let Some(rts) = runtimes() else { return };
    let runs = all(
        &rts,
        &spec(&["sh", "-c", "echo out; echo err >&2; exit 7"], &[], "/"),
        "d1",
        &none,
    );
    assert_same(&runs);
    assert_eq!(runs[0].1.code, 7);
    assert_eq!(runs[0].1.states, ["created", "stopped", "absent"]);
    let runs = all(
        &rts,
        &spec(
            &[
                "sh",
                "-c",
                "echo $FOO $(pwd) $(hostname) $(id -u):$(id -g); cat /etc/passwd | wc -l",
            ],
            &["FOO=bar baz"],
            "/work",
        ),
        "d2",
        &none,
    );
    assert_same(&runs);
    assert_eq!(runs[0].1.stdout, "bar baz /work difftest 0:0\n2\n");
    // A root write works inside under all.
    let runs = all(
        &rts,
        &spec(&["sh", "-c", "echo x > /newfile && cat /newfile"], &[], "/"),
        "d3",
        &none,
    );
    assert_same(&runs);
    assert_eq!(runs[0].1.stdout, "x\n");
    // Not found: runc and crun fail at create... so this one is compared
    // for its exit only where the runtimes agree (see docs/oci.md).
}

#[test]
fn same_transitions_kill_and_exec() {
    let Some(rts) = runtimes() else { return };
    // The process traps TERM: under runc and crun it is PID 1, which the
    // kernel shields from signals it has no handler for; under airlock it
    // is not PID 1 (docs/oci.md).
    let cfg = spec(
        &[
            "sh",
            "-c",
            "trap 'exit 143' TERM; echo up; sleep 1000 & wait",
        ],
        &[],
        "/",
    );
    let between = |rt: &Runtime, id: &str| -> Vec<String> {
        let mut s = vec![rt.status(id)];
        // exec: same output and code.
        let pf = rt.root.path().join("p.json");
        std::fs::write(
            &pf,
            json!({"args": ["sh", "-c", "echo exec-out; echo exec-err >&2; exit 3"], "env": ["PATH=/bin"],
                   "cwd": "/", "user": {"uid": 0, "gid": 0}})
            .to_string(),
        )
        .unwrap();
        let o = rt
            .cmd()
            .args(["exec", "--process"])
            .arg(&pf)
            .arg(id)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        s.push(format!(
            "exec {} {:?} {:?}",
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
        // delete without --force of a running container fails everywhere.
        s.push(format!(
            "delete-running-fails={}",
            rt.fails(&["delete", id])
        ));
        rt.ok(&["kill", id, "TERM"]);
        s
    };
    let runs = all(&rts, &cfg, "k1", &between);
    assert_same(&runs);
    let r = &runs[0].1;
    assert_eq!(r.code, 143);
    assert_eq!(r.stdout, "up\n");
    assert_eq!(
        r.states,
        [
            "created",
            "running",
            "exec 3 \"exec-out\\n\" \"exec-err\\n\"",
            "delete-running-fails=true",
            "stopped",
            "absent"
        ]
    );
    // kill of a stopped container fails everywhere.
    let k2 = uniq("k2");
    for rt in &rts {
        let b = bundle(&spec(&["true"], &[], "/"));
        let pidf = b.dir.path().join("pid");
        let ok = rt
            .cmd()
            .args(["create", "--bundle"])
            .arg(b.dir.path())
            .arg("--pid-file")
            .arg(&pidf)
            .arg(&k2)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success());
        let pid: i32 = std::fs::read_to_string(&pidf)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        rt.ok(&["start", &k2]);
        assert_eq!(reap(pid), 0);
        assert!(
            rt.fails(&["kill", &k2, "KILL"]),
            "{}: kill of a stopped container",
            rt.name
        );
        // A second create with the same id fails everywhere.
        assert!(
            rt.fails(&["create", "--bundle", b.dir.path().to_str().unwrap(), &k2]),
            "{}",
            rt.name
        );
        rt.ok(&["delete", &k2]);
    }
}

#[test]
fn where_airlock_is_stricter() {
    let Some(rts) = runtimes() else { return };
    let cfg = spec(
        &[
            "sh",
            "-c",
            "grep CapEff /proc/self/status; ls /sys | wc -l; echo w > /written",
        ],
        &[],
        "/",
    );
    let mut by = std::collections::BTreeMap::new();
    for rt in &rts {
        let b = bundle(&cfg);
        let r = rt.run(&b, &uniq("s1"), &none);
        let written = b.dir.path().join("rootfs/written").exists();
        by.insert(rt.name, (r, written));
    }
    let (runc, runc_w) = &by["runc"];
    let (air, air_w) = &by["airlock"];
    if let Some((crun, _)) = by.get("crun") {
        assert_eq!(runc.stdout, crun.stdout);
    }
    // runc grants the spec's capabilities; airlock none.
    assert!(
        !runc.stdout.contains("CapEff:\t0000000000000000"),
        "{}",
        runc.stdout
    );
    assert!(
        air.stdout.contains("CapEff:\t0000000000000000"),
        "{}",
        air.stdout
    );
    // runc mounts /sys; airlock's sandbox has none.
    let lines = |s: &str| s.lines().nth(1).unwrap_or("").trim().to_string();
    assert_ne!(lines(&runc.stdout), "0");
    assert_eq!(lines(&air.stdout), "0");
    // runc writes into the bundle's rootfs; airlock's writes stay inside.
    assert!(*runc_w);
    assert!(!*air_w);
    assert_eq!((runc.code, air.code), (0, 0));
}
