//! The Kubernetes path without a cluster: containerd 1.6's CRI with a
//! runtime handler `airlock` (the runc v2 shim calling airlock-runc, as
//! contrib/k8s/containerd-airlock.toml configures it), driven the way the
//! kubelet drives it — RunPodSandbox, CreateContainer, StartContainer,
//! ContainerStatus, RemoveContainer, StopPodSandbox, RemovePodSandbox with
//! `runtime_handler=airlock` — by a small gRPC client (tests/cri/, Python
//! grpcio from the test venv). The pod's pause image and the container's
//! image are archives built here; the pod network is a CNI plugin of the
//! test's own that hands out an address and touches nothing (airlock's
//! sandboxes have loopback only).

mod common;
#[path = "common/oci.rs"]
mod oci;

use common::{bin, is_root, skip, tempdir};
use oci::{img, l, tar, Comp, Kind, E};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const VENV_PY: &str = "/opt/airlock-test-venv/bin/python";

const PAUSE_C: &str = r#"
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
static void done(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    signal(SIGTERM, done);
    signal(SIGINT, done);
    signal(SIGCHLD, reap);
    /* The test's pause also answers on 127.0.0.1:8181: a container of the
       pod that reaches it shares this network namespace. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(8181);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 && listen(s, 8) == 0) {
        for (;;) {
            int c = accept(s, 0, 0);
            if (c >= 0) {
                (void)!write(c, "pause-netns\n", 12);
                close(c);
            }
        }
    }
    for (;;) pause();
}
"#;

const CNI_PLUGIN: &str = r#"#!/bin/sh
# A CNI plugin for the test: it reports an address and changes nothing.
case "$CNI_COMMAND" in
ADD) printf '{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"%s"}],"ips":[{"version":"4","address":"10.250.0.2/24","interface":0}]}' "$CNI_NETNS" ;;
VERSION) printf '{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0"]}' ;;
*) : ;;
esac
"#;

struct Cri {
    dir: tempdir::Dir,
    child: Child,
}

impl Drop for Cri {
    fn drop(&mut self) {
        // What a failed test left running (the shims outlive containerd,
        // as they do runc's containers): killed and deleted first.
        let d = self.dir.path().to_path_buf();
        let tasks = ctr(&d, &["task", "ls", "-q"]);
        for id in String::from_utf8_lossy(&tasks.stdout).split_whitespace() {
            let _ = ctr(&d, &["task", "kill", "-s", "KILL", id]);
            std::thread::sleep(Duration::from_millis(200));
            let _ = ctr(&d, &["task", "delete", "-f", id]);
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
        if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
            let d = self.dir.path().to_string_lossy().into_owned();
            let mut mps: Vec<&str> = mi
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| m.starts_with(&d))
                .collect();
            mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for mp in mps {
                if let Ok(c) = std::ffi::CString::new(mp) {
                    // SAFETY: unmounts a mount below our own directory.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
            }
        }
    }
}

fn ctr(dir: &Path, args: &[&str]) -> Output {
    Command::new("ctr")
        .arg("-a")
        .arg(dir.join("c.sock"))
        .args(["-n", "k8s.io"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A docker-save archive of one layer: `files` (path, bytes, mode) and
/// symlinks, tagged test:latest.
fn archive(
    out: &Path,
    files: &[(&str, Vec<u8>, u32)],
    links: &[(&str, &str)],
    config: serde_json::Value,
) {
    let mut entries = vec![oci::d("bin"), oci::d("tmp"), oci::d("etc")];
    for (p, data, mode) in files {
        entries.push(E {
            path: p.as_bytes().to_vec(),
            kind: Kind::File(data.clone()),
            mode: *mode,
            uid: 0,
            gid: 0,
            size_override: None,
            mtime: 0,
        });
    }
    for (p, t) in links {
        entries.push(l(p, t));
    }
    let image = img(&[(tar(&entries), Comp::Gzip)], config);
    std::fs::write(out, oci::tar_files(&oci::docker_files(&image))).unwrap();
}

fn start() -> Option<Cri> {
    if !is_root() {
        skip("containerd's CRI runs as root here");
        return None;
    }
    for p in [
        "/usr/bin/containerd",
        "/usr/bin/ctr",
        "/bin/busybox",
        "/usr/bin/gcc",
    ] {
        if !Path::new(p).exists() {
            skip(&format!("needs {p} (scripts/setup.sh)"));
            return None;
        }
    }
    let grpc_ok = Command::new(VENV_PY)
        .args(["-c", "import grpc, grpc_tools"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !grpc_ok {
        skip("needs grpcio and grpcio-tools in /opt/airlock-test-venv (scripts/setup.sh)");
        return None;
    }
    let dir = tempdir::Dir::new();
    let d = dir.path().to_path_buf();
    let b = bin();
    let runtime = b.with_file_name("airlock-runc");
    if !runtime.exists() {
        let _ = std::os::unix::fs::symlink(&b, &runtime);
    }
    std::fs::create_dir_all(d.join("cni-bin")).unwrap();
    std::fs::create_dir_all(d.join("cni-conf")).unwrap();
    // containerd also runs CNI's loopback plugin (it brings up lo in the
    // pod's namespace, nothing else).
    std::os::unix::fs::symlink("/usr/lib/cni/loopback", d.join("cni-bin/loopback")).unwrap();
    let plugin = d.join("cni-bin/airlock-test-cni");
    std::fs::write(&plugin, CNI_PLUGIN).unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        d.join("cni-conf/10-airlock-test.conflist"),
        r#"{"cniVersion":"0.4.0","name":"airlock-test","plugins":[{"type":"airlock-test-cni"}]}"#,
    )
    .unwrap();
    // The runtime handler exactly as contrib/k8s configures it, but with
    // the test's airlock-runc.
    let dropin = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/k8s/containerd-airlock.toml"),
    )
    .unwrap()
    .replace("/usr/local/bin/airlock-runc", runtime.to_str().unwrap());
    let cfg = format!(
        r#"version = 2
root = "{r}/root"
state = "{r}/state"
[grpc]
  address = "{r}/c.sock"
[ttrpc]
  address = "{r}/c.ttrpc.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/airlock-pause:test"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # A node's own config (containerd config default) has runc; the drop-in
  # only adds airlock.
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{r}/cni-bin"
    conf_dir = "{r}/cni-conf"
"#,
        r = d.display()
    );
    // Appended, as the installer DaemonSet does (containerd 1.6 replaces a
    // whole plugin section with an imported file's).
    let dropin: String = dropin
        .lines()
        .filter(|l| !l.starts_with("version"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(d.join("config.toml"), cfg + &dropin).unwrap();
    let log = std::fs::File::create(d.join("containerd.log")).unwrap();
    let child = Command::new("containerd")
        .arg("--config")
        .arg(d.join("config.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let c = Cri { dir, child };
    let end = Instant::now() + Duration::from_secs(30);
    while !ctr(&d, &["version"]).status.success() {
        assert!(Instant::now() < end, "containerd did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The images: a pause program, and busybox.
    let pause_bin = d.join("pause");
    let src = d.join("pause.c");
    std::fs::write(&src, PAUSE_C).unwrap();
    assert!(Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&pause_bin)
        .arg(&src)
        .status()
        .unwrap()
        .success());
    for (tag, arch) in [
        ("localhost/airlock-pause:test", {
            let a = d.join("pause.tar");
            archive(
                &a,
                &[("pause", std::fs::read(&pause_bin).unwrap(), 0o755)],
                &[],
                serde_json::json!({"Entrypoint": ["/pause"]}),
            );
            a
        }),
        ("localhost/airlock-busybox:test", {
            let a = d.join("busybox.tar");
            let links: Vec<(String, &str)> = [
                "sh", "echo", "cat", "id", "hostname", "sleep", "grep", "nc", "readlink",
            ]
            .iter()
            .map(|x| (format!("bin/{x}"), "busybox"))
            .collect();
            let links: Vec<(&str, &str)> = links.iter().map(|(a, b)| (a.as_str(), *b)).collect();
            archive(
                &a,
                &[("bin/busybox", std::fs::read("/bin/busybox").unwrap(), 0o755)],
                &links,
                serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}),
            );
            a
        }),
    ] {
        let o = ctr(&d, &["image", "import", arch.to_str().unwrap()]);
        assert!(o.status.success(), "import: {o:?}");
        let o = ctr(
            &d,
            &[
                "image",
                "tag",
                "--force",
                "docker.io/library/test:latest",
                tag,
            ],
        );
        assert!(o.status.success(), "tag: {o:?}");
        let _ = ctr(&d, &["image", "rm", "docker.io/library/test:latest"]);
    }
    Some(c)
}

fn client(c: &Cri, handler: &str, cmd: &[&str]) -> serde_json::Value {
    let d = c.dir.path();
    let out = d.join("py");
    std::fs::create_dir_all(&out).unwrap();
    let logs = d.join("pod-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cri/cri_client.py");
    let o = Command::new("timeout")
        .arg("300")
        .arg(VENV_PY)
        .arg(script)
        .arg(d.join("c.sock"))
        .arg(&out)
        .arg(handler)
        .arg("localhost/airlock-busybox:test")
        .arg(&logs)
        .arg("--")
        .args(cmd)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "client: {e}: {text} {}\ncontainerd log:\n{}",
            String::from_utf8_lossy(&o.stderr),
            std::fs::read_to_string(d.join("containerd.log")).unwrap_or_default()
        )
    })
}

#[test]
fn cri_runs_a_pod_with_runtime_handler_airlock() {
    let Some(c) = start() else { return };
    let r = client(
        &c,
        "airlock",
        &[
            "sh",
            "-c",
            "echo $GREETING as $(id -u) on $(hostname); grep CapEff /proc/self/status; exit 3",
        ],
    );
    assert!(r.get("run_pod_error").is_none(), "{r}");
    assert!(r.get("container_error").is_none(), "{r}");
    assert_eq!(r["state"], "CONTAINER_EXITED", "{r}");
    assert_eq!(r["exit_code"], 3, "{r}");
    assert_eq!(r["removed"], true);
    let log = c.dir.path().join("pod-logs/main.log");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        // (The pod's hostname is the pause container's UTS namespace, which
        // airlock's containers do not join: docs/oci.md.)
        text.contains("stdout F hello from the CRI as 0 on "),
        "container log: {text:?}"
    );
    // It ran under airlock: no capabilities (runc would grant the CRI's
    // default set).
    assert!(text.contains("CapEff:\t0000000000000000"), "{text:?}");
}

#[test]
fn cri_unknown_handler_is_refused() {
    let Some(c) = start() else { return };
    let r = client(&c, "no-such-handler", &["true"]);
    assert!(r.get("run_pod_error").is_some(), "{r}");
}

/// The pod's containers share its pause container's network namespace
/// (CRI names it as `/proc/PID/ns/net` of the pause container's pid):
/// airlock joins it because it is another airlock sandbox's. The container
/// reaches the pause program's loopback listener, and the namespace is not
/// the host's.
#[test]
fn cri_pod_containers_share_the_pause_network_namespace() {
    let Some(c) = start() else { return };
    let r = client(
        &c,
        "airlock",
        &[
            "sh",
            "-c",
            "readlink /proc/self/ns/net; nc 127.0.0.1 8181 </dev/null",
        ],
    );
    assert!(r.get("run_pod_error").is_none(), "{r}");
    assert!(r.get("container_error").is_none(), "{r}");
    assert_eq!(r["state"], "CONTAINER_EXITED", "{r}");
    assert_eq!(r["exit_code"], 0, "{r}");
    let text = std::fs::read_to_string(c.dir.path().join("pod-logs/main.log")).unwrap_or_default();
    assert!(
        text.contains("stdout F pause-netns"),
        "container log: {text:?}"
    );
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    let host = host.to_string_lossy();
    let ns = text
        .lines()
        .find_map(|l| {
            l.split("stdout F ")
                .nth(1)
                .filter(|x| x.starts_with("net:["))
        })
        .unwrap_or_else(|| panic!("no namespace in {text:?}"));
    assert_ne!(ns, host, "the pod runs in the host's network namespace");
}
