//! containerd (Debian's 1.6) with its runc shim (io.containerd.runc.v2)
//! calling airlock-runc: `ctr run --runc-binary`, on a containerd of the
//! test's own (root, state and socket in a temporary directory, the CRI
//! plugin off) and an image imported from a `docker save` archive the
//! test builds byte by byte (busybox, static). Output, exit codes, `ctr
//! task exec`, `kill`, and nothing left once the task is deleted.

mod common;
#[path = "common/oci.rs"]
mod oci;

use common::{bin, is_root, skip, tempdir};
use oci::{img, l, tar, Comp, Kind, E};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "docker.io/library/test:latest";

struct Containerd {
    dir: tempdir::Dir,
    child: Child,
    runtime: PathBuf,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in ["ctr-run", "ctr-task", "ctr-kill"] {
            let _ = self.ctr(&["task", "kill", "-s", "KILL", id]);
            let _ = self.ctr(&["task", "delete", "-f", id]);
            let _ = self.ctr(&["container", "delete", id]);
        }
        // SAFETY: our child, asked to stop, then reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its snapshot mounts, if a task was left (lazily, under our dir).
        if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
            let d = self.dir.path().to_string_lossy().into_owned();
            for line in mi.lines() {
                if let Some(mp) = line.split(' ').nth(4) {
                    if mp.starts_with(&d) {
                        if let Ok(c) = std::ffi::CString::new(mp) {
                            // SAFETY: unmounts a mount below our own dir.
                            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                        }
                    }
                }
            }
        }
    }
}

impl Containerd {
    fn start() -> Option<Containerd> {
        if !is_root() {
            skip("containerd runs as root here");
            return None;
        }
        for p in [
            "/usr/bin/containerd",
            "/usr/bin/ctr",
            "/usr/bin/containerd-shim-runc-v2",
            "/bin/busybox",
        ] {
            if !Path::new(p).exists() {
                skip(&format!(
                    "needs {p} (scripts/setup.sh installs containerd and busybox-static)"
                ));
                return None;
            }
        }
        let dir = tempdir::Dir::new();
        let d = dir.path();
        let cfg = format!(
            "version = 2\nroot = \"{r}/root\"\nstate = \"{r}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{r}/c.sock\"\n[ttrpc]\n  address = \"{r}/c.ttrpc.sock\"\n",
            r = d.display()
        );
        std::fs::write(d.join("config.toml"), cfg).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let b = bin();
        let runtime = b.with_file_name("airlock-runc");
        if !runtime.exists() {
            let _ = std::os::unix::fs::symlink(&b, &runtime);
        }
        let c = Containerd {
            dir,
            child,
            runtime,
        };
        let end = Instant::now() + Duration::from_secs(30);
        while !c.ctr(&["version"]).status.success() {
            assert!(Instant::now() < end, "containerd did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        // The image: one layer with busybox and its applets.
        let bb = std::fs::read("/bin/busybox").unwrap();
        let mut entries = vec![
            oci::d("bin"),
            oci::d("tmp"),
            oci::d("etc"),
            E {
                path: b"bin/busybox".to_vec(),
                kind: Kind::File(bb),
                mode: 0o755,
                uid: 0,
                gid: 0,
                size_override: None,
                mtime: 0,
            },
        ];
        for a in [
            "sh", "echo", "cat", "sleep", "id", "hostname", "true", "kill",
        ] {
            entries.push(l(&format!("bin/{a}"), "busybox"));
        }
        let image = img(
            &[(tar(&entries), Comp::Gzip)],
            serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}),
        );
        let files = oci::docker_files(&image);
        let archive = c.dir.path().join("image.tar");
        std::fs::write(&archive, oci::tar_files(&files)).unwrap();
        let o = c.ctr(&["image", "import", archive.to_str().unwrap()]);
        assert!(o.status.success(), "ctr image import: {o:?}");
        Some(c)
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(self.dir.path().join("c.sock"))
            .args(["-n", "airlock-test"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
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
fn ctr_run_with_airlock_runc() {
    let Some(c) = Containerd::start() else { return };
    let rt = c.runtime.to_str().unwrap().to_string();
    // Output and exit code through the shim.
    let (code, out, err) = text(&c.ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        &rt,
        IMAGE,
        "ctr-run",
        "sh",
        "-c",
        "echo hi from $(id -u); echo to-err >&2; exit 5",
    ]));
    assert_eq!(code, 5, "{out} {err}");
    assert!(out.contains("hi from 0"), "{out}");

    // A long-running task: exec into it, signal it, delete it.
    let (code, _, err) = text(&c.ctr(&[
        "run",
        "-d",
        "--runc-binary",
        &rt,
        IMAGE,
        "ctr-task",
        "sh",
        "-c",
        "echo secret > /tmp/s; trap 'exit 7' TERM; sleep 1000 & wait",
    ]));
    assert_eq!(code, 0, "{err}");
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out, _) = text(&c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "e1",
            "ctr-task",
            "cat",
            "/tmp/s",
        ]));
        if code == 0 && out == "secret\n" {
            break;
        }
        assert!(
            Instant::now() < end,
            "exec never saw the file: {code} {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, _, _) = text(&c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        "ctr-task",
        "sh",
        "-c",
        "exit 9",
    ]));
    assert_eq!(code, 9);
    let (_, ls, _) = text(&c.ctr(&["task", "ls"]));
    assert!(
        ls.lines()
            .any(|l| l.contains("ctr-task") && l.contains("RUNNING")),
        "{ls}"
    );
    let pid: i32 = ls
        .lines()
        .find(|l| l.contains("ctr-task"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap();
    let (code, _, err) = text(&c.ctr(&["task", "kill", "-s", "TERM", "ctr-task"]));
    assert_eq!(code, 0, "{err}");
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, ls, _) = text(&c.ctr(&["task", "ls"]));
        if ls
            .lines()
            .any(|l| l.contains("ctr-task") && l.contains("STOPPED"))
        {
            break;
        }
        assert!(Instant::now() < end, "the task did not stop: {ls}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, out, err) = text(&c.ctr(&["task", "delete", "ctr-task"]));
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            s.contains(") Z")
        }
    );
    let _ = c.ctr(&["container", "delete", "ctr-task"]);
    // A privileged container is refused, with airlock's reason.
    let (code, out, err) = text(&c.ctr(&[
        "run",
        "--rm",
        "--privileged",
        "--runc-binary",
        &rt,
        IMAGE,
        "ctr-kill",
        "true",
    ]));
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("capabilities"), "{err}");
    let _ = c.ctr(&["container", "delete", "ctr-kill"]);
}
