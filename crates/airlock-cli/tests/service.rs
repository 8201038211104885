//! The sandbox service, end to end: a real `airlock-serve` on its own
//! socket and state dir, driven with curl, the CLI, a Python WebSocket
//! client and schemathesis.

mod common;

use common::*;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";
const SCHEMATHESIS: &str = "/opt/airlock-test-venv/bin/schemathesis";

struct Daemon {
    child: Option<Child>,
    dir: tempdir::Dir,
    sock: PathBuf,
    state: PathBuf,
    tcp: Option<(String, String)>,
}

fn serve_bin() -> PathBuf {
    bin().with_file_name("airlock-serve")
}

impl Daemon {
    fn start(extra: &[&str]) -> Option<Daemon> {
        if !is_root() {
            skip("the service tests run the daemon as root");
            return None;
        }
        let dir = tempdir::Dir::new();
        let state = dir.path().join("state");
        Daemon::start_in(dir, state, extra)
    }

    fn start_in(dir: tempdir::Dir, state: PathBuf, extra: &[&str]) -> Option<Daemon> {
        let sock = dir.path().join("run/airlock.sock");
        let mut args: Vec<String> = vec![
            "--socket".into(),
            sock.display().to_string(),
            "--state-dir".into(),
            state.display().to_string(),
        ];
        let mut tcp = None;
        for a in extra {
            if *a == "--tcp" {
                // A free port on loopback and a token file.
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = l.local_addr().unwrap().to_string();
                drop(l);
                let token = "t0ken-for-the-airlock-tests-0123456789".to_string();
                let tf = dir.path().join("token");
                std::fs::write(&tf, &token).unwrap();
                args.extend([
                    "--listen".into(),
                    addr.clone(),
                    "--token-file".into(),
                    tf.display().to_string(),
                ]);
                tcp = Some((addr, token));
            } else {
                args.push(a.to_string());
            }
        }
        let child = Command::new(serve_bin())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let d = Daemon {
            child: Some(child),
            dir,
            sock,
            state,
            tcp,
        };
        let end = Instant::now() + Duration::from_secs(20);
        while d.status("GET", "/healthz") != 200 {
            assert!(Instant::now() < end, "the service did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(d)
    }

    /// curl over the unix socket: (status, body).
    fn req(&self, method: &str, path: &str, body: Option<&[u8]>, json: bool) -> (u16, Vec<u8>) {
        let out = self.dir.path().join(format!("out-{}", rand_suffix()));
        let mut c = Command::new("curl");
        c.args(["-sS", "--unix-socket"])
            .arg(&self.sock)
            .args(["-X", method, "-o"])
            .arg(&out)
            .args(["-w", "%{http_code}"]);
        if json {
            c.args(["-H", "content-type: application/json"]);
        }
        let input = self.dir.path().join(format!("in-{}", rand_suffix()));
        if let Some(b) = body {
            std::fs::write(&input, b).unwrap();
            c.arg("--data-binary").arg(format!("@{}", input.display()));
        }
        c.arg(format!("http://airlock{path}"));
        let o = c.output().unwrap();
        let status: u16 = String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let b = std::fs::read(&out).unwrap_or_default();
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(&input);
        (status, b)
    }

    fn status(&self, method: &str, path: &str) -> u16 {
        self.req(method, path, None, false).0
    }

    fn json(&self, method: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let (s, b) = self.req(method, path, Some(body.to_string().as_bytes()), true);
        (
            s,
            serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null),
        )
    }

    fn get(&self, path: &str) -> serde_json::Value {
        let (s, b) = self.req("GET", path, None, false);
        assert_eq!(s, 200, "GET {path}: {}", String::from_utf8_lossy(&b));
        serde_json::from_slice(&b).unwrap()
    }

    fn create(&self, body: serde_json::Value) -> String {
        let (s, v) = self.json("POST", "/v1/sandboxes", body);
        assert_eq!(s, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// Runs argv in sandbox `id` and returns (exit code, stdout, stderr).
    fn exec(&self, id: &str, argv: &[&str]) -> (i64, String, String) {
        let (s, b) = self.req(
            "POST",
            &format!("/v1/sandboxes/{id}/processes"),
            Some(serde_json::json!({ "argv": argv }).to_string().as_bytes()),
            true,
        );
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        let (mut code, mut out, mut err) = (-1, String::new(), String::new());
        for line in String::from_utf8_lossy(&b).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            match v["type"].as_str() {
                Some("stdout") => out += v["text"].as_str().unwrap_or(""),
                Some("stderr") => err += v["text"].as_str().unwrap_or(""),
                Some("exit") => code = v["code"].as_i64().unwrap(),
                _ => {}
            }
        }
        (code, out, err)
    }

    fn cli(&self) -> Command {
        let mut c = Command::new(bin());
        c.env("AIRLOCK_SOCKET", &self.sock);
        c
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: SIGTERM to the daemon we started.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > end {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn rand_suffix() -> String {
    let mut b = [0u8; 8];
    // SAFETY: getrandom fills the buffer.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn agents_of(pid: u32) -> usize {
    // Processes named airlock-agent whose parent is `pid`.
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if let Some((_, rest)) = stat.split_once("(airlock-agent) ") {
            if rest.split_whitespace().nth(1) == Some(&pid.to_string()) {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn files_round_trip_and_hostile_paths() {
    let Some(d) = Daemon::start(&[]) else { return };
    let id = d.create(serde_json::json!({}));
    let mut data = vec![0u8; 20 << 20];
    let mut x: u64 = 0x1234_5678;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let (s, b) = d.req(
        "PUT",
        &format!("/v1/sandboxes/{id}/files?path=/tmp/blob&mode=600"),
        Some(&data),
        false,
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let (s, back) = d.req(
        "GET",
        &format!("/v1/sandboxes/{id}/files?path=/tmp/blob"),
        None,
        false,
    );
    assert_eq!(s, 200);
    assert_eq!(back.len(), data.len());
    assert_eq!(sha(&back), sha(&data));
    let st = d.get(&format!("/v1/sandboxes/{id}/files/stat?path=/tmp/blob"));
    assert_eq!(st["size"], 20 << 20);
    assert_eq!(st["mode"], 0o600);
    // Directory operations.
    assert_eq!(
        d.json(
            "POST",
            &format!("/v1/sandboxes/{id}/files/mkdir"),
            serde_json::json!({"path": "/tmp/a/b/c", "parents": true})
        )
        .0,
        204
    );
    assert_eq!(
        d.json(
            "POST",
            &format!("/v1/sandboxes/{id}/files/rename"),
            serde_json::json!({"from": "/tmp/blob", "to": "/tmp/a/blob"})
        )
        .0,
        204
    );
    let names: Vec<String> = d
        .get(&format!("/v1/sandboxes/{id}/files/list?path=/tmp/a"))
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["b", "blob"]);
    assert_eq!(
        d.status(
            "DELETE",
            &format!("/v1/sandboxes/{id}/files?path=/tmp/a&recursive=true")
        ),
        200
    );
    assert_eq!(
        d.status("GET", &format!("/v1/sandboxes/{id}/files/stat?path=/tmp/a")),
        404
    );
    // Paths that try to leave the sandbox reach no host file.
    let canary_dir = d.dir.path().join("canary");
    std::fs::create_dir(&canary_dir).unwrap();
    std::fs::write(canary_dir.join("secret"), b"HOST-CANARY").unwrap();
    let c = canary_dir.display().to_string();
    d.exec(&id, &["ln", "-s", "/", "/tmp/root"]);
    for p in [
        format!("{c}/secret"),
        format!("/tmp/root{c}/secret"),
        format!("/proc/1/root{c}/secret"),
        format!("/../../..{c}/secret"),
        "/etc/shadow".to_string(),
    ] {
        let (_, b) = d.req(
            "GET",
            &format!("/v1/sandboxes/{id}/files?path={p}"),
            None,
            false,
        );
        assert!(
            !b.windows(11).any(|w| w == b"HOST-CANARY"),
            "{p} read the host"
        );
        let (_, _) = d.req(
            "PUT",
            &format!("/v1/sandboxes/{id}/files?path={p}.planted"),
            Some(b"x"),
            false,
        );
    }
    assert_eq!(std::fs::read_dir(&canary_dir).unwrap().count(), 1);
    assert_eq!(
        std::fs::read(canary_dir.join("secret")).unwrap(),
        b"HOST-CANARY"
    );
}

#[test]
fn twenty_concurrent_execs_and_fifty_sandboxes() {
    let Some(d) = Daemon::start(&[]) else { return };
    let id = d.create(serde_json::json!({}));
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..20)
            .map(|i| {
                let d = &d;
                let id = &id;
                s.spawn(move || {
                    let (code, out, _) =
                        d.exec(id, &["sh", "-c", &format!("sleep 0.3; echo n{i}")]);
                    assert_eq!((code, out), (0, format!("n{i}\n")));
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    let t = Instant::now();
    let ids: Vec<String> = (0..50)
        .map(|_| d.create(serde_json::json!({"labels": {"batch": "50"}})))
        .collect();
    let created = t.elapsed();
    let listed = d.get("/v1/sandboxes?label=batch=50");
    assert_eq!(listed.as_array().unwrap().len(), 50);
    for id in &ids {
        assert_eq!(d.exec(id, &["true"]).0, 0);
    }
    let daemon = d.child.as_ref().unwrap().id();
    assert_eq!(agents_of(daemon), 51, "one agent per sandbox");
    for id in &ids {
        assert_eq!(d.status("DELETE", &format!("/v1/sandboxes/{id}")), 204);
    }
    assert_eq!(
        d.get(&format!("/v1/sandboxes/{}", ids[0]))["state"],
        "stopped"
    );
    assert!(
        created < Duration::from_secs(60),
        "50 creates took {created:?}"
    );
    assert_eq!(agents_of(daemon), 1);
}

#[test]
fn pty_over_a_real_websocket_client() {
    let Some(d) = Daemon::start(&[]) else { return };
    let id = d.create(serde_json::json!({}));
    let (s, v) = d.json(
        "POST",
        &format!("/v1/sandboxes/{id}/processes"),
        serde_json::json!({"argv": ["sh"], "tty": {"rows": 30, "cols": 100}, "background": true, "stdin": true}),
    );
    assert_eq!(s, 201, "{v}");
    let pid = v["id"].as_u64().unwrap();
    let script = format!(
        r#"
import asyncio, json, websockets
async def main():
    async with websockets.unix_connect({sock:?}, "ws://airlock/v1/sandboxes/{id}/processes/{pid}/pty") as ws:
        await ws.send(b"stty size; tty\n")
        out = b""
        while b"30 100" not in out:
            out += await asyncio.wait_for(ws.recv(), 20)
        await ws.send(json.dumps({{"resize": [40, 132]}}))
        await asyncio.sleep(0.3)
        await ws.send(b"stty size; exit 7\n")
        code = None
        while True:
            m = await asyncio.wait_for(ws.recv(), 20)
            if isinstance(m, str):
                code = json.loads(m)["exit"]; break
            out += m
        print(out.decode(errors="replace"))
        print("EXIT", code)
asyncio.run(main())
"#,
        sock = d.sock.display().to_string(),
    );
    let o = Command::new(PYTHON)
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(text.contains("30 100"), "{text}");
    assert!(text.contains("40 132"), "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("EXIT 7"), "{text}");
}

#[test]
fn port_forward_pause_resume_and_idle_timeout() {
    let Some(d) = Daemon::start(&[]) else { return };
    let id = d.create(serde_json::json!({}));
    // A web server inside, reached from the host through the forward.
    let (s, v) = d.json(
        "POST",
        &format!("/v1/sandboxes/{id}/processes"),
        serde_json::json!({"argv": ["python3", "-m", "http.server", "8000", "--directory", "/etc"], "background": true}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, p) = d.json(
        "POST",
        &format!("/v1/sandboxes/{id}/ports"),
        serde_json::json!({"port": 8000}),
    );
    assert_eq!(s, 201, "{p}");
    let url = format!("http://127.0.0.1:{}/hostname", p["host_port"]);
    let end = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let o = Command::new("curl").args(["-sf", &url]).output().unwrap();
        if o.status.success() {
            break String::from_utf8_lossy(&o.stdout).to_string();
        }
        assert!(Instant::now() < end, "the forward never answered");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(body.trim(), "airlock");
    // Pause stops a busy loop's CPU use; resume restarts it.
    let (s, _) = d.json(
        "POST",
        &format!("/v1/sandboxes/{id}/processes"),
        serde_json::json!({"argv": ["sh", "-c", "while :; do :; done"], "background": true}),
    );
    assert_eq!(s, 201);
    std::thread::sleep(Duration::from_millis(500));
    let cpu = || {
        d.get(&format!("/v1/sandboxes/{id}/usage"))["cpu_usec"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(d.status("POST", &format!("/v1/sandboxes/{id}/pause")), 204);
    let a = cpu();
    std::thread::sleep(Duration::from_secs(1));
    let b = cpu();
    assert!(b - a < 50_000, "paused but used {} us of CPU in 1 s", b - a);
    assert_eq!(d.get(&format!("/v1/sandboxes/{id}"))["state"], "paused");
    assert_eq!(d.status("POST", &format!("/v1/sandboxes/{id}/resume")), 204);
    let a = cpu();
    std::thread::sleep(Duration::from_secs(1));
    let b = cpu();
    assert!(
        b - a > 300_000,
        "resumed but used only {} us of CPU in 1 s",
        b - a
    );
    // Idle timeout: a sandbox with nothing running stops by itself.
    let idle = d.create(serde_json::json!({"limits": {"idle_timeout": "2s"}}));
    assert_eq!(d.exec(&idle, &["true"]).0, 0);
    std::thread::sleep(Duration::from_secs(4));
    let r = d.get(&format!("/v1/sandboxes/{idle}"));
    assert_eq!(r["state"], "stopped", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("idle"), "{r}");
    // The audit log saw the execs and the port.
    let audit = d.get(&format!("/v1/sandboxes/{id}/audit"));
    let kinds: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    for k in ["create", "exec", "port", "pause", "resume"] {
        assert!(kinds.contains(&k), "{k} not in {kinds:?}");
    }
}

#[test]
fn bad_input_gets_4xx() {
    let Some(d) = Daemon::start(&[]) else { return };
    let big = vec![b' '; 2 << 20];
    let mut body = b"{\"labels\":{\"a\":\"".to_vec();
    body.extend_from_slice(&big);
    body.extend_from_slice(b"\"}}");
    assert_eq!(d.req("POST", "/v1/sandboxes", Some(&body), true).0, 413);
    assert_eq!(
        d.json("POST", "/v1/sandboxes", serde_json::json!({"surprise": 1}))
            .0,
        422
    );
    assert_eq!(
        d.json(
            "POST",
            "/v1/sandboxes",
            serde_json::json!({"limits": {"disk": "0"}})
        )
        .0,
        422
    );
    assert_eq!(
        d.json(
            "POST",
            "/v1/sandboxes",
            serde_json::json!({"limits": {"pids": 1}})
        )
        .0,
        422
    );
    assert_eq!(
        d.json(
            "POST",
            "/v1/sandboxes",
            serde_json::json!({"limits": {"memory": "99999999T"}})
        )
        .0,
        422
    );
    assert_eq!(
        d.json(
            "POST",
            "/v1/sandboxes",
            serde_json::json!({"mounts": [{"source": "/etc", "target": "/proc/x"}]})
        )
        .0,
        422
    );
    assert_eq!(
        d.req("POST", "/v1/sandboxes", Some(b"{not json"), true).0,
        400
    );
    assert_eq!(d.status("GET", "/v1/sandboxes/sb-nope"), 404);
    assert_eq!(d.status("GET", "/nowhere"), 404);
    let id = d.create(serde_json::json!({}));
    assert_eq!(
        d.json(
            "POST",
            &format!("/v1/sandboxes/{id}/processes"),
            serde_json::json!({"argv": []})
        )
        .0,
        422
    );
    assert_eq!(
        d.json(
            "POST",
            &format!("/v1/sandboxes/{id}/processes"),
            serde_json::json!({"argv": ["x"], "bogus": true})
        )
        .0,
        422
    );
    // The error shape.
    let (_, v) = d.json(
        "POST",
        "/v1/sandboxes",
        serde_json::json!({"limits": {"cpus": 0}}),
    );
    assert!(
        v["error"]["code"].is_string() && v["error"]["message"].is_string(),
        "{v}"
    );
}

#[test]
fn schemathesis_finds_no_server_error() {
    let Some(d) = Daemon::start(&["--tcp"]) else {
        return;
    };
    if !Path::new(SCHEMATHESIS).exists() {
        if must_run() {
            panic!("schemathesis is not installed ({SCHEMATHESIS}); run scripts/setup.sh");
        }
        skip("schemathesis is not installed");
        return;
    }
    let (addr, token) = d.tcp.clone().unwrap();
    // One sandbox for the per-sandbox endpoints to find.
    let id = d.create(serde_json::json!({}));
    let o = Command::new(SCHEMATHESIS)
        .args(["run", &format!("http://{addr}/openapi.json")])
        .args(["--checks", "not_a_server_error"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--max-examples", "15", "--request-timeout", "20"])
        // The watch is an endless event stream by design.
        .args(["--exclude-path", "/v1/sandboxes/{id}/files/watch"])
        .args(["--phases", "examples,fuzzing"])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(d.dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{text}");
    assert!(!text.contains("Server error"), "{text}");
    // The service is still up and serves sandboxes (schemathesis may have
    // deleted or paused the one it was given).
    let _ = id;
    let fresh = d.create(serde_json::json!({}));
    assert_eq!(d.exec(&fresh, &["true"]).0, 0);
}

#[test]
fn auth_and_reachability() {
    let Some(d) = Daemon::start(&["--tcp"]) else {
        return;
    };
    let (addr, token) = d.tcp.clone().unwrap();
    let st = |args: &[&str]| -> String {
        let o = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert_eq!(st(&[&format!("http://{addr}/v1/sandboxes")]), "401");
    assert_eq!(
        st(&[
            "-H",
            "Authorization: Bearer wrong-token-wrong-token",
            &format!("http://{addr}/v1/sandboxes")
        ]),
        "401"
    );
    assert_eq!(
        st(&[
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("http://{addr}/v1/sandboxes")
        ]),
        "200"
    );
    // The socket is 0600 and another user cannot use it.
    let mode = std::fs::metadata(&d.sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    if test_user_ids().is_some() {
        let o = Command::new("setpriv")
            .args([
                "--reuid=airlock-test",
                "--regid=airlock-test",
                "--clear-groups",
            ])
            .arg("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--unix-socket",
            ])
            .arg(&d.sock)
            .arg("http://x/healthz")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "000",
            "another user reached the socket"
        );
    } else if must_run() {
        panic!("no test user");
    }
    // From inside a sandbox: neither the socket nor the TCP port.
    let id = d.create(serde_json::json!({}));
    let port = addr.rsplit(':').next().unwrap();
    let (code, out, _) = d.exec(
        &id,
        &[
            "python3",
            "-c",
            &format!(
                "import socket,os\nprint(os.path.exists({sock:?}))\ns=socket.socket()\ns.settimeout(2)\ntry:\n  s.connect(('127.0.0.1',{port})); print('reached')\nexcept OSError as e: print('refused', e.errno)",
                sock = d.sock.display().to_string()
            ),
        ],
    );
    assert_eq!(code, 0);
    assert!(out.starts_with("False\nrefused"), "{out}");
}

#[test]
fn crash_recovery_and_agent_death() {
    let Some(mut d) = Daemon::start(&[]) else {
        return;
    };
    let a = d.create(serde_json::json!({"limits": {"memory": "256M"}}));
    let b = d.create(serde_json::json!({}));
    let daemon = d.child.as_ref().unwrap().id();
    // An agent killed from outside: that sandbox fails with a reason.
    let (_, _, _) = d.exec(&b, &["true"]);
    // Find b's agent through the state database's view.
    let info = d.get(&format!("/v1/sandboxes/{b}/audit"));
    let bpid = info[0]["detail"]["agent_pid"].as_i64().unwrap();
    // SAFETY: SIGKILL to the agent pid the service reported.
    unsafe { libc::kill(bpid as i32, libc::SIGKILL) };
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = d.get(&format!("/v1/sandboxes/{b}"));
        if r["state"] == "failed" {
            assert!(r["reason"].as_str().unwrap().contains("agent"), "{r}");
            break;
        }
        assert!(Instant::now() < end, "{r}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // kill -9 of the service while `a` runs: everything of it goes.
    let cg_before = cgroups();
    d.kill9();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(agents_of(daemon), 0, "agents survived the service");
    // A restart on the same state marks `a` failed and cleans up.
    let dir = std::mem::replace(&mut d.dir, tempdir::Dir::new());
    let state = d.state.clone();
    drop(d);
    let d2 = Daemon::start_in(dir, state, &[]).unwrap();
    let r = d2.get(&format!("/v1/sandboxes/{a}"));
    assert_eq!(r["state"], "failed", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("recovered"), "{r}");
    let audit = d2.get(&format!("/v1/sandboxes/{a}/audit"));
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "recover"));
    let leftover: Vec<String> = cgroups()
        .into_iter()
        .filter(|c| c.contains(&format!("airlock-{daemon}-")))
        .collect();
    assert!(
        leftover.is_empty(),
        "cgroups left: {leftover:?} (before: {cg_before:?})"
    );
}

fn cgroups() -> Vec<String> {
    let mut v = Vec::new();
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let Ok(rd) = std::fs::read_dir(root) else {
            continue;
        };
        for h in rd.flatten() {
            for base in [h.path().join("airlock"), Path::new(root).join("airlock")] {
                if let Ok(g) = std::fs::read_dir(&base) {
                    for e in g.flatten() {
                        if e.path().is_dir() {
                            v.push(e.path().display().to_string());
                        }
                    }
                }
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

#[test]
fn cli_over_the_service_and_warm_pool() {
    let Some(d) = Daemon::start(&["--warm", "2"]) else {
        return;
    };
    // The pool fills in the background.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, m) = d.req("GET", "/metrics", None, false);
        if String::from_utf8_lossy(&m).contains("airlock_pool_ready 2") {
            break;
        }
        assert!(Instant::now() < end, "the pool never filled");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = |c: &mut Command| -> Output { c.stdin(Stdio::null()).output().unwrap() };
    let o = out(d.cli().args(["create", "-q"]));
    assert!(o.status.success(), "{o:?}");
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let (_, m) = d.req("GET", "/metrics", None, false);
    assert!(String::from_utf8_lossy(&m).contains("airlock_pool_hits_total 1"));
    let o = out(d.cli().args([
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]));
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    let o = out(d.cli().args(["exec", &id, "--", "no-such-command"]));
    assert_eq!(o.status.code(), Some(127));
    let mut c = d
        .cli()
        .args(["exec", "-i", &id, "--", "wc", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(&vec![b'x'; 300_000])
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "300000");
    // cp both ways, a directory with a nested file.
    let src = d.dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/f"), b"nested").unwrap();
    assert!(out(d
        .cli()
        .args(["cp", src.to_str().unwrap(), &format!("{id}:/tmp/w")]))
    .status
    .success());
    let o = out(d.cli().args(["exec", &id, "--", "cat", "/tmp/w/sub/f"]));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "nested");
    let back = d.dir.path().join("back");
    assert!(out(d
        .cli()
        .args(["cp", &format!("{id}:/tmp/w"), back.to_str().unwrap()]))
    .status
    .success());
    assert_eq!(std::fs::read(back.join("sub/f")).unwrap(), b"nested");
    let o = out(d.cli().args(["ls", "-q"]));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&id));
    let o = out(d.cli().args(["logs", &id]));
    assert!(String::from_utf8_lossy(&o.stdout).contains("out"));
    assert!(out(d.cli().args(["pause", &id])).status.success());
    assert!(out(d.cli().args(["resume", &id])).status.success());
    assert!(out(d.cli().args(["rm", &id])).status.success());
    let o = out(d.cli().args(["exec", &id, "--", "true"]));
    assert_eq!(o.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("stopped"),
        "{o:?}"
    );
}

/// docs/api.md (written from /openapi.json by scripts/api-doc.py) names
/// every route the service has, and /openapi.json is complete: every route
/// the router serves is documented.
#[test]
fn openapi_is_complete_and_documented() {
    let Some(d) = Daemon::start(&[]) else { return };
    let doc = d.get("/openapi.json");
    let paths = doc["paths"].as_object().unwrap();
    let md =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md")).unwrap();
    let mut n = 0;
    for (p, ops) in paths {
        for m in ops.as_object().unwrap().keys() {
            let line = format!("## `{} {p}`", m.to_uppercase());
            assert!(
                md.contains(&line),
                "docs/api.md lacks {line} (run scripts/api-doc.py)"
            );
            n += 1;
        }
    }
    assert!(n >= 34, "only {n} operations documented");
    // Routes that exist answer something other than the fallback's 404.
    let id = d.create(serde_json::json!({}));
    for (p, ops) in paths {
        if !ops.as_object().unwrap().contains_key("get")
            || p.contains("{pid}")
            || p.contains("{port}")
        {
            continue;
        }
        if p.ends_with("/watch") || p.ends_with("/pty") {
            continue;
        }
        let url = p.replace("{id}", &id);
        let q = if p.contains("files") {
            "?path=/etc/hostname"
        } else {
            ""
        };
        let (s, b) = d.req("GET", &format!("{url}{q}"), None, false);
        let text = String::from_utf8_lossy(&b);
        assert!(!text.contains("no such endpoint"), "{p}: {s} {text}");
    }
}

/// The service runs the Landlock tier too (`"isolation": "landlock"`):
/// never as root, no network; and its file operations reach no further
/// than the sandbox's processes: a symlink the sandbox plants in its home,
/// pointing at a host file, gives the client nothing (the agent confines
/// itself with the same Landlock rules and acts as the sandbox's ids).
#[test]
fn landlock_tier_through_the_service() {
    let Some(d) = Daemon::start(&[]) else { return };
    let out = |c: &mut Command| -> Output { c.stdin(Stdio::null()).output().unwrap() };
    // A host file any user may read: only Landlock keeps it out.
    let host_file = d.dir.path().join("host-only.txt");
    std::fs::write(&host_file, "host-only content").unwrap();
    std::fs::set_permissions(&host_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let id = d.create(serde_json::json!({ "isolation": "landlock" }));
    let (code, o, e) = d.exec(
        &id,
        &[
            "/usr/bin/python3",
            "-c",
            "import os, socket, sys\nprint(os.getuid())\nprint(os.environ['HOME'])\n\
             try:\n    socket.socket()\n    print('inet=OK')\nexcept OSError as e:\n    print('inet=%d' % e.errno)\n\
             os.symlink(sys.argv[1], os.environ['HOME'] + '/leak')\n\
             try:\n    open(sys.argv[1]).read()\n    print('direct=OK')\nexcept OSError as e:\n    print('direct=%d' % e.errno)",
            host_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{o} {e}");
    let lines: Vec<&str> = o.lines().collect();
    assert_ne!(lines[0], "0", "{o}");
    assert_eq!(lines[2], format!("inet={}", libc::EPERM), "{o}");
    assert_eq!(lines[3], format!("direct={}", libc::EACCES), "{o}");
    let home = lines[1];
    let dest = d.dir.path().join("leaked");
    let o = out(d
        .cli()
        .args(["cp", &format!("{id}:{home}/leak"), dest.to_str().unwrap()]));
    let got = std::fs::read_to_string(&dest).unwrap_or_default();
    assert!(
        !o.status.success() && !got.contains("host-only"),
        "the host file came out: {o:?}"
    );
    // Files of its own go both ways.
    let src = d.dir.path().join("in.txt");
    std::fs::write(&src, "to the sandbox").unwrap();
    assert!(out(d
        .cli()
        .args(["cp", src.to_str().unwrap(), &format!("{id}:{home}/in.txt")]))
    .status
    .success());
    let (code, o, _) = d.exec(&id, &["cat", &format!("{home}/in.txt")]);
    assert_eq!((code, o.as_str()), (0, "to the sandbox"));
}

/// A foreground exec's `started` event names the process's API id, so a
/// client that streams its events can signal it (the Python SDK kills a
/// command that runs out of its timeout that way) or feed its stdin.
#[test]
fn foreground_exec_started_event_names_the_process() {
    use std::io::{BufRead, BufReader};
    let Some(d) = Daemon::start(&[]) else { return };
    let id = d.create(serde_json::json!({}));
    // Two processes first, so that the id is not trivially 0 or 1.
    d.exec(&id, &["true"]);
    d.exec(&id, &["true"]);
    let body = serde_json::json!({"argv": ["sleep", "4242.5"]}).to_string();
    let mut curl = Command::new("curl")
        .args(["-sS", "-N", "--unix-socket"])
        .arg(&d.sock)
        .args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body,
        ])
        .arg(format!("http://airlock/v1/sandboxes/{id}/processes"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(curl.stdout.take().unwrap()).lines();
    let started: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(started["type"], "started", "{started}");
    let pid = started["id"].as_u64().expect("the started event has an id");
    // It is the id the process list shows for this command.
    let procs = d.get(&format!("/v1/sandboxes/{id}/processes"));
    let mine: Vec<&serde_json::Value> = procs
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["argv"][1] == "4242.5")
        .collect();
    assert_eq!(mine.len(), 1, "{procs}");
    assert_eq!(mine[0]["id"].as_u64(), Some(pid));
    assert_eq!(mine[0]["running"], true);
    assert_eq!(mine[0]["pid"], started["pid"]);
    // Signalled by that id, the streamed command ends with 128+9.
    let (s, v) = d.json(
        "POST",
        &format!("/v1/sandboxes/{id}/processes/{pid}/signal"),
        serde_json::json!({"signal": "KILL"}),
    );
    assert_eq!(s, 204, "{v}");
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let last: serde_json::Value = serde_json::from_str(rest.last().unwrap()).unwrap();
    assert_eq!(last["type"], "exit");
    assert_eq!(last["code"], 137);
    assert!(curl.wait().unwrap().success());
    assert!(host_processes_matching("4242.5").is_empty());
    // Once it has ended, a signal is a conflict with its state (409).
    let (s, v) = d.json(
        "POST",
        &format!("/v1/sandboxes/{id}/processes/{pid}/signal"),
        serde_json::json!({"signal": "KILL"}),
    );
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "failed");
}

/// A terminal client that goes away hangs the terminal up: its process
/// gets SIGHUP (and ends), and the client's Close is answered at once.
#[test]
fn pty_client_close_hangs_up() {
    let Some(d) = Daemon::start(&[]) else { return };
    let id = d.create(serde_json::json!({}));
    let (s, v) = d.json(
        "POST",
        &format!("/v1/sandboxes/{id}/processes"),
        serde_json::json!({"argv": ["sleep", "5151.25"], "tty": {"rows": 24, "cols": 80}, "background": true, "stdin": true}),
    );
    assert_eq!(s, 201, "{v}");
    let pid = v["id"].as_u64().unwrap();
    let script = format!(
        r#"
import asyncio, time, websockets
async def main():
    ws = await websockets.unix_connect({sock:?}, "ws://airlock/v1/sandboxes/{id}/processes/{pid}/pty")
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    await ws.close()
    print("CLOSED", ws.close_code, round(time.monotonic() - t0, 2))
asyncio.run(main())
"#,
        sock = d.sock.display().to_string(),
    );
    let end = Instant::now() + Duration::from_secs(10);
    while host_processes_matching("5151.25").is_empty() {
        assert!(Instant::now() < end, "the terminal's process never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = Command::new(PYTHON)
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The service answered the Close (not the client's 10 s close timeout).
    let secs: f64 = text.split_whitespace().last().unwrap().parse().unwrap();
    assert!(secs < 3.0, "{text}");
    let end = Instant::now() + Duration::from_secs(10);
    while !host_processes_matching("5151.25").is_empty() {
        assert!(
            Instant::now() < end,
            "the hung-up terminal's process still runs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let procs = d.get(&format!("/v1/sandboxes/{id}/processes"));
    let me = procs
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"].as_u64() == Some(pid))
        .unwrap();
    assert_eq!(me["exit_code"], 128 + 1, "{me}");
}

/// `airlock serve` with `"isolation": "microvm"`: the sandbox is a guest
/// (its kernel answers), several execs and a file over the one channel,
/// pause and resume of the whole machine, and delete leaves no QEMU.
#[test]
fn a_microvm_sandbox_through_the_service() {
    let Some(d) = Daemon::start(&[]) else {
        return;
    };
    // A directory of the host mounted ro and as an overlay: a copy in
    // the guest.
    let src = tempdir::Dir::new();
    std::fs::write(src.path().join("in.txt"), "from the host\n").unwrap();
    // A user's tree: its files are the sandbox user's inside.
    if let Some((u, g)) = test_user_ids() {
        for p in ["", "in.txt"] {
            std::os::unix::fs::chown(src.path().join(p), Some(u), Some(g)).unwrap();
        }
    }
    let s = src.path().display().to_string();
    let id = d.create(serde_json::json!({
        "isolation": "microvm",
        "limits": { "timeout": "10m" },
        "mounts": [
            {"source": s, "target": "/data", "mode": "ro"},
            {"source": s, "target": "/work", "mode": "overlay"}
        ]
    }));
    let info = d.get(&format!("/v1/sandboxes/{id}"));
    assert!(info.to_string().contains("microVM accelerator"), "{info}");
    let (code, out, err) = d.exec(
        &id,
        &[
            "sh",
            "-c",
            "cat /data/in.txt; echo changed > /work/in.txt; cat /work/in.txt; touch /data/x 2>&1",
        ],
    );
    assert_eq!(code, 1, "{out} {err}");
    assert!(out.starts_with("from the host\nchanged\n"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert_eq!(
        std::fs::read_to_string(src.path().join("in.txt")).unwrap(),
        "from the host\n"
    );
    // Usage: QEMU's own figures (the guest's RAM it holds, its CPU time).
    let u = d.get(&format!("/v1/sandboxes/{id}/usage"));
    let mem = u["memory_bytes"].as_u64().unwrap_or(0);
    assert!(mem > 16 << 20 && mem < 2 << 30, "{u}");
    assert!(u["cpu_usec"].as_u64().unwrap_or(0) > 0, "{u}");
    for i in 0..3 {
        let (code, out, err) = d.exec(&id, &["sh", "-c", &format!("echo run{i}; uname -r")]);
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with(&format!("run{i}\n")), "{out}");
        assert!(out.trim_end().ends_with("-cloud-amd64"), "{out}");
    }
    let (s, _) = d.req(
        "PUT",
        &format!("/v1/sandboxes/{id}/files?path=/tmp/f.bin"),
        Some(b"bytes in a guest"),
        false,
    );
    assert!(s == 200 || s == 201 || s == 204, "{s}");
    let (code, out, _) = d.exec(&id, &["cat", "/tmp/f.bin"]);
    assert_eq!((code, out.as_str()), (0, "bytes in a guest"));
    assert!(matches!(
        d.status("POST", &format!("/v1/sandboxes/{id}/pause")),
        200 | 204
    ));
    assert!(matches!(
        d.status("POST", &format!("/v1/sandboxes/{id}/resume")),
        200 | 204
    ));
    let (code, out, _) = d.exec(&id, &["echo", "after"]);
    assert_eq!((code, out.as_str()), (0, "after\n"));
    assert!(matches!(
        d.status("DELETE", &format!("/v1/sandboxes/{id}")),
        200 | 204
    ));
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end && qemus_of(d.child.as_ref().unwrap().id()) > 0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        qemus_of(d.child.as_ref().unwrap().id()),
        0,
        "QEMU left after delete"
    );
}

/// QEMU processes that are children of `pid`.
fn qemus_of(pid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            let p = e.file_name().to_string_lossy().into_owned();
            let st = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
            let exe = std::fs::read_link(format!("/proc/{p}/exe")).unwrap_or_default();
            st.lines().any(|l| l == format!("PPid:\t{pid}"))
                && exe.to_string_lossy().contains("qemu-system")
        })
        .count()
}

/// The CLI over the service in the microVM tier: `airlock create --trust
/// untrusted` (the default trust policy: a microVM), `exec`, `cp` both
/// ways, `inspect` with QEMU's usage figures, `rm` — and no QEMU left.
#[test]
fn cli_create_exec_cp_inspect_in_a_microvm() {
    let Some(d) = Daemon::start(&[]) else {
        return;
    };
    let policy = d.dir.path().join("no-policy");
    std::fs::create_dir_all(&policy).unwrap();
    let out = |c: &mut Command| -> Output {
        c.env("AIRLOCK_CONFIG_DIR", &policy)
            .env("HOME", &policy)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = out(d.cli().args(["create", "-q", "--trust", "untrusted"]));
    assert!(o.status.success(), "{o:?}");
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let o = out(d.cli().args(["exec", &id, "--", "uname", "-r"]));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .ends_with("-cloud-amd64"),
        "not a guest: {o:?}"
    );
    let src = d.dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/f"), b"into the guest").unwrap();
    assert!(out(d
        .cli()
        .args(["cp", src.to_str().unwrap(), &format!("{id}:/tmp/w")]))
    .status
    .success());
    let o = out(d.cli().args([
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "cat /tmp/w/sub/f; echo made-inside > /tmp/w/out.txt",
    ]));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "into the guest",
        "{o:?}"
    );
    let back = d.dir.path().join("back");
    assert!(out(d
        .cli()
        .args(["cp", &format!("{id}:/tmp/w"), back.to_str().unwrap()]))
    .status
    .success());
    assert_eq!(
        std::fs::read_to_string(back.join("out.txt")).unwrap(),
        "made-inside\n"
    );
    let o = out(d.cli().args(["inspect", &id]));
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["spec"]["isolation"], "microvm", "{v}");
    assert!(
        v["usage"]["memory_bytes"].as_u64().unwrap_or(0) > 16 << 20,
        "{v}"
    );
    assert!(out(d.cli().args(["rm", &id])).status.success());
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end && qemus_of(d.child.as_ref().unwrap().id()) > 0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(qemus_of(d.child.as_ref().unwrap().id()), 0, "QEMU left");
}
