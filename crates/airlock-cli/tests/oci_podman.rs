//! podman (Debian's, with conmon) driving airlock as its OCI runtime:
//! `podman --runtime airlock-runc --cgroup-manager=cgroupfs`, with storage
//! of the test's own (overlay, the default driver) and an image the test
//! makes (`podman import` of a busybox root with the attack program).
//! `run --rm`, `-it` (under `script`, which gives podman a terminal),
//! `exec`, `stop`, `--memory`, named volumes; the attack suite's key cases
//! inside such containers; and nothing left after `podman rm -f`.

#[path = "common/bundle.rs"]
mod bundle;
mod common;

use common::{bin, is_root, skip, tempdir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const IMAGE: &str = "localhost/airlock-oci-test:1";

struct Podman {
    dir: PathBuf,
    runtime: PathBuf,
}

extern "C" fn cleanup() {
    if let Some(Some(p)) = PODMAN.get() {
        let _ = p.cmd().args(["rm", "-af", "-t", "0"]).output();
        let _ = p.cmd().args(["unmount", "-a"]).output();
        // conmon's exit command (`podman container cleanup`) runs after a
        // `run --rm` returns and may not have deleted the last container's
        // runtime state yet: what is left of ours goes here.
        std::thread::sleep(Duration::from_millis(500));
        if let Ok(rd) = std::fs::read_dir("/run/airlock-runc") {
            for e in rd.flatten() {
                let st = std::fs::read_to_string(e.path().join("state.json")).unwrap_or_default();
                if st.contains(p.dir.to_str().unwrap_or("\0")) {
                    let id = e.file_name().to_string_lossy().into_owned();
                    let _ = Command::new(&p.runtime)
                        .args(["delete", "--force", &id])
                        .output();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&p.dir);
    }
}

static PODMAN: OnceLock<Option<Podman>> = OnceLock::new();

/// podman with storage of its own and the test image imported; `None`
/// after a loud skip.
fn podman() -> Option<&'static Podman> {
    PODMAN
        .get_or_init(|| {
            if !is_root() {
                skip("podman with airlock-runc runs as root here (rootful podman)");
                return None;
            }
            for (prog, why) in [
                ("/usr/bin/podman", "podman"),
                ("/usr/bin/conmon", "conmon"),
                (bundle::BUSYBOX, "busybox-static"),
                ("/usr/bin/gcc", "gcc"),
                ("/usr/bin/script", "script (util-linux)"),
            ] {
                if !Path::new(prog).exists() {
                    skip(&format!("needs {why} (scripts/setup.sh installs it)"));
                    return None;
                }
            }
            let dir = std::env::temp_dir().join(format!("airlock-podman-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let b = bin();
            let runtime = b.with_file_name("airlock-runc");
            if !runtime.exists() {
                std::os::unix::fs::symlink(&b, &runtime).unwrap();
            }
            let p = Podman { dir, runtime };
            // SAFETY: registers a plain extern "C" function, run at exit.
            unsafe { libc::atexit(cleanup) };
            // The image: a busybox root, the attack program, /tmp.
            let root = p.dir.join("rootfs");
            bundle::rootfs(&root);
            std::fs::create_dir_all(root.join("tmp")).unwrap();
            std::fs::create_dir_all(root.join("mnt")).unwrap();
            assert!(
                bundle::build_attack(&root.join("bin/attack")),
                "gcc -static failed"
            );
            let tar = p.dir.join("image.tar");
            let ok = Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg(".")
                .status()
                .unwrap();
            assert!(ok.success());
            let o = p.cmd().arg("import").arg(&tar).arg(IMAGE).output().unwrap();
            assert!(o.status.success(), "podman import: {o:?}");
            Some(p)
        })
        .as_ref()
}

impl Podman {
    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.join("store"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .arg("--cgroup-manager=cgroupfs")
            .arg("--events-backend=file")
            .arg("--runtime")
            .arg(&self.runtime)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", "/root")
            .stdin(Stdio::null());
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }
}

fn text(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn podman_run_rm_echo() {
    let Some(p) = podman() else { return };
    let (code, out, err) = text(&p.run(&["run", "--rm", IMAGE, "echo", "hi"]));
    assert_eq!((code, out.as_str()), (0, "hi\n"), "{err}");
    // Exit codes and stderr come through.
    let (code, out, err) = text(&p.run(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 42",
    ]));
    assert_eq!((code, out.as_str(), err.as_str()), (42, "out\n", "err\n"));
    // stdin with -i.
    let mut c = p.cmd();
    c.args([
        "run",
        "--rm",
        "-i",
        IMAGE,
        "sh",
        "-c",
        "read x; echo got-$x",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped());
    let mut ch = c.spawn().unwrap();
    use std::io::Write;
    ch.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    let o = ch.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "got-piped\n");
    // Root inside is the image's root, on a root that is the image's.
    let (_, out, _) = text(&p.run(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "id -u; stat -c %u /bin/busybox",
    ]));
    assert_eq!(out, "0\n0\n");
}

#[test]
fn podman_run_it_has_a_terminal() {
    let Some(p) = podman() else { return };
    // `script` gives podman a pty; the container gets a pty of its own
    // (through --console-socket) and the typed line goes through both.
    let cmd = format!(
        "{} run -it --rm {IMAGE} sh -c 'test -t 0 && echo is-tty; read l; echo typed-$l; exit 3'",
        shell_words(&p.cmd())
    );
    let mut c = Command::new("timeout");
    c.args(["60", "script", "-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut ch = c.spawn().unwrap();
    let mut stdin = ch.stdin.take().unwrap();
    let mut stdout = ch.stdout.take().unwrap();
    // Typed once the container is there (podman puts its terminal in raw
    // mode first, discarding what was typed before): a slow start under
    // load must not lose the line.
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let end = std::time::Instant::now() + Duration::from_secs(50);
    while !String::from_utf8_lossy(&seen).contains("is-tty") && std::time::Instant::now() < end {
        if let Ok(b) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.extend(b);
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    use std::io::Write;
    stdin.write_all(b"abc\r").unwrap();
    // stdin stays open until the line came back (at its end, script
    // hangs up, which could overtake the line on its way in).
    while !String::from_utf8_lossy(&seen).contains("typed-") && std::time::Instant::now() < end {
        if let Ok(b) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.extend(b);
        }
    }
    drop(stdin);
    let status = ch.wait().unwrap();
    let _ = reader.join();
    while let Ok(b) = rx.try_recv() {
        seen.extend(b);
    }
    let out = String::from_utf8_lossy(&seen);
    assert!(out.contains("is-tty"), "{out}");
    assert!(out.contains("typed-abc"), "{out}");
    assert_eq!(status.code(), Some(3), "{out}");
}

/// The podman command line as a shell string (for `script -c`).
fn shell_words(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

#[test]
fn podman_exec_stop_and_rm_leave_nothing() {
    let Some(p) = podman() else { return };
    let name = "airlock-exec-stop";
    let (code, id, err) = text(&p.run(&["run", "-d", "--name", name, IMAGE, "sleep", "1000"]));
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_string();
    let (code, out, err) = text(&p.run(&["exec", name, "sh", "-c", "echo in-exec; exit 6"]));
    assert_eq!((code, out.as_str()), (6, "in-exec\n"), "{err}");
    // The pid podman knows is airlock's monitor; the sandbox's processes
    // are below it.
    let (_, pid, _) = text(&p.run(&["inspect", "-f", "{{.State.Pid}}", name]));
    let pid: i32 = pid.trim().parse().unwrap();
    assert!(pid > 0);
    let tree = descendants(pid);
    assert!(tree.len() >= 3, "monitor, agent, sleep: {tree:?}");
    let cgroups = cgroup_dirs(&format!("airlock-{pid}-"));
    assert!(
        !cgroups.is_empty(),
        "the sandbox has no cgroup of airlock's"
    );
    // stop: SIGTERM through `airlock-runc kill`; sleep dies of it.
    let (code, _, err) = text(&p.run(&["stop", "-t", "5", name]));
    assert_eq!(code, 0, "{err}");
    let (_, st, _) = text(&p.run(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}}",
        name,
    ]));
    assert_eq!(st.trim(), "exited 143");
    for q in &tree {
        assert!(!common_alive(*q), "process {q} outlived podman stop");
    }
    // rm -f of a running container: nothing left.
    let (code, _, err) = text(&p.run(&[
        "run",
        "-d",
        "--name",
        "airlock-rmf",
        IMAGE,
        "sh",
        "-c",
        "sleep 1000 & exec sleep 1000",
    ]));
    assert_eq!(code, 0, "{err}");
    let (_, pid2, _) = text(&p.run(&["inspect", "-f", "{{.State.Pid}} {{.Id}}", "airlock-rmf"]));
    let mut it = pid2.split_whitespace();
    let pid2: i32 = it.next().unwrap().parse().unwrap();
    let id2 = it.next().unwrap().to_string();
    let tree2 = descendants(pid2);
    assert!(tree2.len() >= 4, "{tree2:?}");
    let (code, _, err) = text(&p.run(&["rm", "-f", "-t", "0", "airlock-rmf"]));
    assert_eq!(code, 0, "{err}");
    p.run(&["rm", "-f", name]);
    std::thread::sleep(Duration::from_millis(200));
    for q in tree.iter().chain(&tree2) {
        assert!(!common_alive(*q), "process {q} outlived podman rm -f");
    }
    for prefix in [format!("airlock-{pid}-"), format!("airlock-{pid2}-")] {
        let left = cgroup_dirs(&prefix);
        assert!(left.is_empty(), "cgroups left: {left:?}");
    }
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for i in [&id, &id2] {
        assert!(!mi.contains(i.as_str()), "a mount of {i} is left:\n{mi}");
    }
    assert!(!Path::new("/run/airlock-runc").join(&id2).exists());
}

fn common_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let st = s.rsplit_once(')').map(|x| x.1.trim_start()).unwrap_or("");
            !st.starts_with('Z') && !st.starts_with('X')
        })
        .unwrap_or(false)
}

/// `pid` and every process below it.
fn descendants(pid: i32) -> Vec<i32> {
    let mut parent = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            if let Some(pp) = s
                .rsplit_once(')')
                .and_then(|x| x.1.split_whitespace().nth(1))
                .and_then(|x| x.parse::<i32>().ok())
            {
                parent.push((p, pp));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let q = out[i];
        out.extend(parent.iter().filter(|(_, pp)| *pp == q).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// cgroup directories (any hierarchy) whose name starts with `prefix`.
fn cgroup_dirs(prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let p = e.path();
                if e.file_name().to_string_lossy().starts_with(prefix) {
                    out.push(p.clone());
                }
                if p.components().count() < 9 {
                    stack.push(p);
                }
            }
        }
    }
    out
}

#[test]
fn podman_memory_limit_is_enforced() {
    let Some(p) = podman() else { return };
    // A 100 MiB buffer under --memory 48m: the OOM killer ends it.
    let (code, _, err) = text(&p.run(&[
        "run",
        "--rm",
        "--memory",
        "48m",
        IMAGE,
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=100M",
        "count=1",
    ]));
    assert_eq!(code, 137, "not killed under --memory 48m: {err}");
    let (code, _, err) = text(&p.run(&[
        "run",
        "--rm",
        IMAGE,
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=100M",
        "count=1",
    ]));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn podman_named_volume() {
    let Some(p) = podman() else { return };
    let vol = format!("airlock-vol-{}", std::process::id());
    assert!(p.run(&["volume", "create", &vol]).status.success());
    let (_, mp, _) = text(&p.run(&["volume", "inspect", "-f", "{{.Mountpoint}}", &vol]));
    let mp = PathBuf::from(mp.trim());
    // A fresh volume belongs to host root: airlock does not hand root's
    // ownership to the sandbox (stricter than runc), so it is readable
    // where others may read, and not writable.
    std::fs::write(mp.join("from-host"), "host data\n").unwrap();
    let (code, out, _) = text(&p.run(&[
        "run",
        "--rm",
        "-v",
        &format!("{vol}:/data"),
        IMAGE,
        "sh",
        "-c",
        "cat /data/from-host; touch /data/x",
    ]));
    assert_eq!(out, "host data\n");
    assert_ne!(code, 0, "a root-owned volume was writable");
    assert!(!mp.join("x").exists());
    // Owned by a normal user (one of /etc/passwd, whose own group is
    // mapped with it), the volume is that user's inside and out:
    // one container writes, the next reads, the host sees the owner.
    let Some((uid, gid)) = common::test_user_ids() else {
        skip("needs the user airlock-test (scripts/setup.sh)");
        return;
    };
    std::os::unix::fs::chown(&mp, Some(uid), Some(gid)).unwrap();
    let (code, _, err) = text(&p.run(&[
        "run",
        "--rm",
        "-v",
        &format!("{vol}:/data"),
        IMAGE,
        "sh",
        "-c",
        "echo persisted > /data/f",
    ]));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = text(&p.run(&[
        "run",
        "--rm",
        "-v",
        &format!("{vol}:/data"),
        IMAGE,
        "cat",
        "/data/f",
    ]));
    assert_eq!((code, out.as_str()), (0, "persisted\n"), "{err}");
    let md = std::fs::metadata(mp.join("f")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((md.uid(), md.gid()), (uid, gid));
    p.run(&["volume", "rm", "-f", &vol]);
}

#[test]
fn podman_attacks_stay_contained() {
    let Some(p) = podman() else { return };
    let host_bin = std::fs::read(&p.runtime).unwrap();
    // A host file with a marker the container must not read.
    let secret = tempdir::Dir::new();
    let marker = secret.path().join("host-secret");
    std::fs::write(&marker, "HOST-SECRET\n").unwrap();
    let marker_s = marker.to_str().unwrap().to_string();
    for (mode, extra) in [
        ("exe", vec![]),
        ("mount", vec![]),
        ("raw", vec![]),
        ("ptrace", vec![]),
        (
            "files",
            vec![
                marker_s.clone(),
                "/proc/1/root/etc/hostname".to_string(),
                format!("/proc/1/root{marker_s}"),
                "/proc/1/environ".to_string(),
                "/sys/fs/cgroup/memory/memory.limit_in_bytes".to_string(),
            ],
        ),
    ] {
        let mut args = vec!["run", "--rm", IMAGE, "/bin/attack", mode];
        args.extend(extra.iter().map(String::as_str));
        let (code, out, err) = text(&p.run(&args));
        assert!(!out.contains("ESCAPE"), "{mode}: {out}");
        assert_eq!(code, 0, "{mode} escaped: {out} {err}");
    }
    // The runtime's binary on the host is unchanged.
    assert_eq!(std::fs::read(&p.runtime).unwrap(), host_bin);
    // pids: a fork bomb under --pids-limit stops at the limit.
    let (code, out, err) = text(&p.run(&[
        "run",
        "--rm",
        "--pids-limit",
        "40",
        IMAGE,
        "/bin/attack",
        "fork",
        "10000",
    ]));
    let n: u32 = out
        .trim()
        .strip_prefix("forked=")
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("{code} {out} {err}"));
    assert!(n < 40, "forked {n} processes under --pids-limit 40");
    // The host can still fork.
    assert!(Command::new("true").status().unwrap().success());
    // A privileged container is refused, with the reason.
    let (code, _, err) = text(&p.run(&["run", "--rm", "--privileged", IMAGE, "true"]));
    assert_ne!(code, 0);
    assert!(err.contains("capabilities"), "{err}");
    let (code, _, err) = text(&p.run(&["run", "--rm", "--cap-add", "SYS_ADMIN", IMAGE, "true"]));
    assert_ne!(code, 0);
    assert!(err.contains("CAP_SYS_ADMIN"), "{err}");
    let (code, _, err) = text(&p.run(&["run", "--rm", "--network", "host", IMAGE, "true"]));
    assert_ne!(code, 0);
    assert!(err.contains("network namespace"), "{err}");
    let (code, _, err) = text(&p.run(&["run", "--rm", "--pid", "host", IMAGE, "true"]));
    assert_ne!(code, 0);
    assert!(err.contains("pid namespace"), "{err}");
}

#[test]
fn podman_killed_conmon_then_rm_leaves_nothing() {
    let Some(p) = podman() else { return };
    let name = "airlock-killed-conmon";
    let (code, id, err) = text(&p.run(&["run", "-d", "--name", name, IMAGE, "sleep", "1000"]));
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_string();
    let (_, pid, _) = text(&p.run(&["inspect", "-f", "{{.State.Pid}}", name]));
    let pid: i32 = pid.trim().parse().unwrap();
    let tree = descendants(pid);
    assert!(tree.len() >= 3, "{tree:?}");
    // conmon, the monitor's parent, dies without a word.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let conmon: i32 = stat
        .rsplit_once(')')
        .and_then(|x| x.1.split_whitespace().nth(1))
        .and_then(|x| x.parse().ok())
        .unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{conmon}/comm")).unwrap();
    assert_eq!(comm.trim(), "conmon");
    // SAFETY: the conmon of our own container, checked by name just now.
    unsafe { libc::kill(conmon, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(300));
    // The sandbox lives on (as runc's container would); rm -f ends it all.
    assert!(common_alive(pid));
    let (code, _, err) = text(&p.run(&["rm", "-f", "-t", "0", name]));
    assert_eq!(code, 0, "{err}");
    std::thread::sleep(Duration::from_millis(300));
    for q in &tree {
        assert!(
            !common_alive(*q),
            "process {q} outlived rm -f after conmon died"
        );
    }
    assert!(cgroup_dirs(&format!("airlock-{pid}-")).is_empty());
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains(id.as_str()), "a mount of {id} is left");
}

/// `--ulimit` reaches the container (lowering airlock's own limits), and
/// podman's seccomp profiles apply on top of airlock's allowlist: the
/// default one lets ordinary commands run, a custom one that denies
/// `mkdir` makes it fail.
#[test]
fn podman_ulimits_and_seccomp_profiles_apply() {
    let Some(p) = podman() else { return };
    let (code, out, err) = text(&p.run(&[
        "run",
        "--rm",
        "--ulimit",
        "nofile=64:64",
        IMAGE,
        "sh",
        "-c",
        "ulimit -Sn; ulimit -Hn",
    ]));
    assert_eq!((code, out.as_str()), (0, "64\n64\n"), "{err}");
    // podman's default profile (sent as linux.seccomp) and ours together.
    let (code, out, err) = text(&p.run(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "echo hi; mkdir /tmp/d && echo made",
    ]));
    assert_eq!((code, out.as_str()), (0, "hi\nmade\n"), "{err}");
    let dir = tempdir::Dir::new();
    let prof = dir.path().join("no-mkdir.json");
    std::fs::write(
        &prof,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", prof.display());
    let (code, out, err) = text(&p.run(&[
        "run",
        "--rm",
        "--security-opt",
        &opt,
        IMAGE,
        "sh",
        "-c",
        "mkdir /tmp/d; echo mkdir=$?; echo hi",
    ]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "mkdir=1\nhi\n", "{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
}

/// A hostile seccomp profile (everything allowed, and explicitly what
/// airlock denies), or none at all (`seccomp=unconfined`), does not weaken
/// the sandbox: the attack suite's mount, ptrace and raw-socket cases stay
/// contained.
#[test]
fn podman_hostile_seccomp_profile_cannot_weaken_ours() {
    let Some(p) = podman() else { return };
    let dir = tempdir::Dir::new();
    let prof = dir.path().join("allow-all.json");
    std::fs::write(
        &prof,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mount", "umount2", "ptrace", "unshare", "setns", "socket",
                                    "bpf", "keyctl", "clone", "clone3", "open_by_handle_at",
                                    "init_module", "kexec_load", "pivot_root"],
                          "action": "SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    let hostile = format!("seccomp={}", prof.display());
    for opt in [hostile.as_str(), "seccomp=unconfined"] {
        for mode in ["mount", "ptrace", "raw"] {
            let (code, out, err) = text(&p.run(&[
                "run",
                "--rm",
                "--security-opt",
                opt,
                IMAGE,
                "/bin/attack",
                mode,
            ]));
            assert!(!out.contains("ESCAPE"), "{opt} {mode}: {out}");
            assert_eq!(code, 0, "{opt} {mode} escaped: {out} {err}");
        }
        let (code, out, err) = text(&p.run(&[
            "run",
            "--rm",
            "--security-opt",
            opt,
            IMAGE,
            "sh",
            "-c",
            "unshare -U true; echo unshare=$?",
        ]));
        assert_eq!((code, out.as_str()), (0, "unshare=1\n"), "{opt}: {err}");
    }
}
