//! The MCP server with a real MCP client: the `mcp` package from PyPI
//! (installed by scripts/setup.sh in /opt/airlock-mcp-venv) drives
//! `airlock mcp` over stdio and the daemon's /mcp over streamable HTTP
//! (TCP with the bearer token). The client script
//! (tests/mcp_client.py) lists the tools, calls each — with good and bad
//! arguments, a 1 GiB output flood, task mode — and reports what it got;
//! the assertions are here. Also `POST /v1/tasks` over the REST API.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VENV_PYTHON: &str = "/opt/airlock-mcp-venv/bin/python";

fn client_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_client.py")
}

fn ready() -> bool {
    if !is_root() {
        skip("the MCP tests run sandboxes as root");
        return false;
    }
    if test_user_ids().is_none() {
        skip("no test user (scripts/setup.sh creates airlock-test)");
        return false;
    }
    if !Path::new(VENV_PYTHON).exists() {
        skip("no /opt/airlock-mcp-venv (scripts/setup.sh installs the mcp package there)");
        return false;
    }
    true
}

/// A small repository: text, a file to delete, one to rename, a script
/// to make executable.
fn make_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("src")).unwrap();
    std::fs::write(repo.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(repo.join("gone.txt"), "to be deleted\n").unwrap();
    std::fs::write(repo.join("keep.txt"), "renamed but unchanged\n").unwrap();
    std::fs::write(repo.join("run.sh"), "#!/bin/sh\necho run\n").unwrap();
    std::fs::write(repo.join("src/lib.rs"), "pub fn f() {}\n").unwrap();
    // A developer's checkout, not root's: the sandbox works in it as its
    // owner (a root-owned tree is not id-mapped).
    let (uid, gid) = test_user_ids().expect("the test user (scripts/setup.sh)");
    for p in [
        "",
        "src",
        "hello.txt",
        "gone.txt",
        "keep.txt",
        "run.sh",
        "src/lib.rs",
    ] {
        std::os::unix::fs::chown(repo.join(p), Some(uid), Some(gid)).unwrap();
    }
    repo
}

/// Every file under `root` with its mode and content (no .git).
fn tree(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if rel == ".git" {
                continue;
            }
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                out.insert(rel, (md.permissions().mode(), Vec::new()));
                stack.push(p);
            } else {
                out.insert(
                    rel,
                    (
                        md.permissions().mode(),
                        std::fs::read(&p).unwrap_or_default(),
                    ),
                );
            }
        }
    }
    out
}

fn run_client(args: &[&str]) -> Value {
    run_client_in(Command::new(VENV_PYTHON).arg(client_script()), args)
}

fn run_client_in(c: &mut Command, args: &[&str]) -> Value {
    let t0 = Instant::now();
    let out = c.args(args).stdin(Stdio::null()).output().unwrap();
    eprintln!(
        "mcp client ran {:.1} s; stderr:\n{}",
        t0.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the MCP client failed");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn text(v: &Value) -> &str {
    v["text"].as_str().unwrap_or("")
}

fn ok<'a>(out: &'a Value, k: &str) -> &'a Value {
    let v = &out[k];
    assert_eq!(v["is_error"], false, "{k} failed: {v}");
    v
}

fn tool_error(out: &Value, k: &str, needle: &str) {
    let v = &out[k];
    assert!(
        v.get("protocol_error").is_none(),
        "{k}: a protocol error, not a tool error: {v}"
    );
    assert_eq!(v["is_error"], true, "{k} should be a tool error: {v}");
    assert!(
        text(v).contains(needle),
        "{k}: the message should say {needle:?}: {}",
        text(v)
    );
}

/// The patch in a task's text: everything after its header line.
fn patch_of(v: &Value) -> String {
    let t = text(v);
    let i = t.find("--- patch (").expect("a patch section");
    let rest = &t[i..];
    let nl = rest.find('\n').unwrap();
    rest[nl + 1..].to_string()
}

/// What every scenario must show, whatever the transport.
fn check(out: &Value, repo: &Path, scratch: &Path) {
    let tools: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for t in [
        "run",
        "sandbox_create",
        "sandbox_exec",
        "file_write",
        "file_read",
        "file_list",
        "task",
        "sandbox_destroy",
        "sandbox_list",
    ] {
        assert!(tools.contains(&t), "tool {t} missing: {tools:?}");
        assert_eq!(out["schemas"][t]["type"], "object", "{t}'s schema");
    }

    // run: exit code, both streams.
    let r = ok(out, "run");
    assert_eq!(r["structured"]["exit_code"], 3, "{r}");
    assert!(text(r).contains("exit_code: 3"), "{r}");
    assert!(text(r).contains("hello from airlock"), "{r}");
    assert!(text(r).contains("to-stderr"), "{r}");
    assert_eq!(r["structured"]["isolation"], "container");
    // argv: no shell, arguments as given.
    let r = ok(out, "run_argv");
    assert!(text(r).contains("a b $HOME\n"), "{r}");

    // run with repo: at /work, changes stay in the sandbox.
    let r = ok(out, "run_repo");
    assert_eq!(r["structured"]["exit_code"], 0, "{r}");
    assert!(text(r).contains("/work\nhello\n"), "{r}");

    // timeout: killed, 124.
    let r = ok(out, "run_timeout");
    assert_eq!(r["structured"]["exit_code"], 124, "{r}");
    assert_eq!(r["structured"]["timed_out"], true, "{r}");
    assert!(
        r["seconds"].as_f64().unwrap() < 20.0,
        "a 1 s timeout took {r}"
    );

    // The 1 GiB flood comes back bounded, counted, with a note.
    let f = ok(out, "flood");
    assert_eq!(
        f["structured"]["exit_code"], 0,
        "flood: {}",
        f["structured"]
    );
    assert_eq!(f["structured"]["stdout_bytes"], 1u64 << 30);
    assert_eq!(f["structured"]["truncated"], true);
    let n = f["text_len"].as_u64().unwrap();
    assert!(n < 40_000, "the flood's result is {n} characters");
    assert!(
        text(f).contains("bytes omitted; 1073741824 bytes in all"),
        "{}",
        &text(f)[..300.min(text(f).len())]
    );
    assert!(text(f).starts_with("exit_code: 0\n--- stdout (1073741824 bytes) ---\nairlock-flood\n"));
    eprintln!(
        "1 GiB flood: {} characters back in {:.1} s",
        n,
        f["seconds"].as_f64().unwrap()
    );
    let f = ok(out, "flood_small_cap");
    assert!(f["text_len"].as_u64().unwrap() < 1_400, "{f}");
    assert!(
        text(f).starts_with("exit_code: 0\n--- stdout (588895 bytes) ---\n1\n2\n3\n"),
        "{f}"
    );
    assert!(text(f).contains("100000\n"), "the tail is kept: {f}");

    // Bad arguments are tool errors with a message.
    tool_error(out, "bad_timeout", "timeout \"forever\"");
    tool_error(out, "bad_missing_command", "missing the command");
    tool_error(out, "bad_type", "invalid arguments");
    tool_error(out, "bad_unknown_field", "colour");
    tool_error(out, "bad_weaker_tier", "weaker than this server allows");
    tool_error(out, "bad_trust_conflict", "different tiers");
    tool_error(out, "bad_repo", "/nonexistent/airlock-repo");
    tool_error(out, "bad_sandbox", "no sandbox sb-0000000000000000");
    // An unknown tool is the protocol's error.
    assert!(
        out["unknown_tool"].get("protocol_error").is_some(),
        "{}",
        out["unknown_tool"]
    );

    // A sandbox's life.
    let sid = out["sandbox_id"]
        .as_str()
        .expect("sandbox_create gave an id");
    assert!(sid.starts_with("sb-"), "{sid}");
    let r = ok(out, "exec");
    assert!(text(r).contains("/work\nhello\n"), "{r}");
    assert!(!text(r).contains("\n0\n"), "the command ran as root: {r}");
    let r = ok(out, "write");
    assert_eq!(r["structured"]["bytes"], 32, "{r}");
    let r = ok(out, "write_b64");
    assert_eq!(r["structured"]["bytes"], 6, "{r}");
    let r = ok(out, "exec_after_write");
    assert!(
        text(r).contains("line one\nline 'two' \"quoted\" $x\n600\n 00 01 02 fd fe ff\n"),
        "{r}"
    );
    let r = ok(out, "read");
    assert_eq!(text(r), "line one\nline 'two' \"quoted\" $x\n");
    let r = ok(out, "read_b64");
    assert_eq!(r["structured"]["encoding"], "base64");
    assert!(text(r).contains("AAEC/f7/"), "{r}");
    let r = ok(out, "read_part");
    assert_eq!(r["structured"]["bytes"], 5000, "{r}");
    assert_eq!(r["structured"]["next_offset"], 6000, "{r}");
    assert!(text(r).starts_with(&"z".repeat(5000)), "{r}");
    assert!(text(r).contains("read on with offset 6000"), "{r}");
    tool_error(out, "read_missing", "/tmp/nope");
    tool_error(out, "read_relative", "absolute path");
    let r = ok(out, "list");
    let names: Vec<&str> = r["structured"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for n in ["big.txt", "bin.dat", "note.txt"] {
        assert!(names.contains(&n), "{names:?}");
    }
    let r = ok(out, "list_default");
    assert_eq!(r["structured"]["path"], "/work", "{r}");
    let r = ok(out, "list_sandboxes");
    assert!(text(r).contains(sid), "{r}");
    let r = ok(out, "exec_flood");
    assert_eq!(r["structured"]["stdout_bytes"], 256u64 << 20, "{r}");
    assert!(r["text_len"].as_u64().unwrap() < 40_000);
    ok(out, "destroy");
    tool_error(out, "exec_after_destroy", "stopped");
    tool_error(out, "destroy_again", "already stopped");

    // Task mode: the patch applies to a fresh copy and gives the tree the
    // command left; the repository itself was not touched.
    let t = ok(out, "task");
    assert_eq!(t["structured"]["exit_code"], 0, "{t}");
    assert_eq!(t["structured"]["files_changed"], 6, "{t}");
    let patch = patch_of(t);
    assert_eq!(
        patch.len() as u64,
        t["structured"]["patch_bytes"].as_u64().unwrap()
    );
    let copy = scratch.join("applied");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(repo)
        .arg(&copy)
        .status()
        .unwrap()
        .success());
    let pf = scratch.join("task.patch");
    std::fs::write(&pf, &patch).unwrap();
    let o = Command::new("git")
        .args(["apply", "--whitespace=nowarn"])
        .arg(&pf)
        .current_dir(&copy)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git apply: {}\n{patch}",
        String::from_utf8_lossy(&o.stderr)
    );
    let got = tree(&copy);
    assert_eq!(got["hello.txt"].1, b"hello\nchanged\n");
    assert_eq!(got["new.txt"].1, b"brand new\n");
    assert_eq!(got["moved.txt"].1, b"renamed but unchanged\n");
    assert_eq!(got["blob.bin"].1, b"\0\x01\x02");
    assert!(!got.contains_key("gone.txt") && !got.contains_key("keep.txt"));
    assert_eq!(got["run.sh"].0 & 0o111, 0o111, "run.sh made executable");
    assert!(patch.contains("rename from keep.txt"), "{patch}");
    assert!(patch.contains("GIT binary patch"), "{patch}");

    let t = ok(out, "task_small_patch");
    assert_eq!(t["structured"]["patch_truncated"], true, "{t}");
    assert!(text(t).contains("the first 2000 are shown"), "{t}");
    assert!(t["text_len"].as_u64().unwrap() < 4_000, "{t}");
}

fn repo_untouched(repo: &Path, before: &BTreeMap<String, (u32, Vec<u8>)>) {
    assert_eq!(&tree(repo), before, "the repository on the host changed");
}

#[test]
fn mcp_stdio_with_a_real_client() {
    if !ready() {
        return;
    }
    let dir = tempdir::Dir::new();
    let repo = make_repo(dir.path());
    let before = tree(&repo);
    let out = run_client(&["stdio", bin().to_str().unwrap(), repo.to_str().unwrap()]);
    check(&out, &repo, dir.path());
    repo_untouched(&repo, &before);
}

/// `airlock mcp` stops its sandboxes when the client goes: a process left
/// running in a sandbox the client never destroyed is gone from the host
/// once the client has closed the pipe.
#[test]
fn mcp_stdio_sandboxes_end_with_the_client() {
    if !ready() {
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let marker = format!("86400.{:09}{}", nanos, std::process::id());
    let out = run_client(&["leave", bin().to_str().unwrap(), &marker]);
    ok(&out, "start");
    let ps = ok(&out, "ps");
    assert!(text(ps).contains(&format!("sleep {marker}")), "{ps}");
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let left = host_processes_matching(&format!("sleep {marker}"));
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < end,
            "still running on the host after the client left: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The same, rootless: `airlock mcp` run by the unprivileged test user
/// (its in-process service makes rootless sandboxes).
#[test]
fn mcp_stdio_rootless_with_a_real_client() {
    if !ready() {
        return;
    }
    let dir = tempdir::Dir::new();
    let repo = make_repo(dir.path());
    let before = tree(&repo);
    // The client script where the test user can read it.
    let script = dir.path().join("mcp_client.py");
    std::fs::copy(client_script(), &script).unwrap();
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        TEST_USER,
        "--regid",
        TEST_USER,
        "--init-groups",
        "--reset-env",
        "env",
    ])
    .arg(format!("HOME={}", dir.path().display()))
    .arg(VENV_PYTHON)
    .arg(&script)
    .current_dir(dir.path());
    let out = run_client_in(
        &mut c,
        &["stdio", bin().to_str().unwrap(), repo.to_str().unwrap()],
    );
    // The scratch files of `check` are root's to make.
    let scratch = dir.path().join("root-scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    check(&out, &repo, &scratch);
    repo_untouched(&repo, &before);
}

struct Daemon {
    child: Option<Child>,
    sock: PathBuf,
    addr: String,
    token: String,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let sock = dir.join("run/airlock.sock");
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let token = "mcp-t0ken-for-the-airlock-tests-0123456789".to_string();
        let tf = dir.join("token");
        std::fs::write(&tf, &token).unwrap();
        let child = Command::new(bin().with_file_name("airlock-serve"))
            .arg("--socket")
            .arg(&sock)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--listen", &addr, "--token-file"])
            .arg(&tf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let d = Daemon {
            child: Some(child),
            sock,
            addr,
            token,
        };
        let end = Instant::now() + Duration::from_secs(30);
        while d.curl(&["http://airlock/healthz"]).0 != 200 {
            assert!(Instant::now() < end, "the service did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// curl over the unix socket: (status, body).
    fn curl(&self, args: &[&str]) -> (u16, String) {
        let o = Command::new("curl")
            .args(["-sS", "--unix-socket"])
            .arg(&self.sock)
            .args(["-o", "-", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, code) = s.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: SIGTERM to the daemon this test started.
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

#[test]
fn mcp_streamable_http_with_a_real_client() {
    if !ready() {
        return;
    }
    let dir = tempdir::Dir::new();
    let repo = make_repo(dir.path());
    let before = tree(&repo);
    let d = Daemon::start(dir.path());
    // On TCP, /mcp needs the token like every other endpoint.
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}"#;
    for auth in [None, Some("Bearer not-the-token-0123456789")] {
        let mut c = Command::new("curl");
        c.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .args(["-H", "content-type: application/json"])
            .args(["-H", "accept: application/json, text/event-stream"])
            .args(["--data-binary", init]);
        if let Some(a) = auth {
            c.args(["-H", &format!("authorization: {a}")]);
        }
        let o = c.arg(format!("http://{}/mcp", d.addr)).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "401", "{auth:?}");
    }
    let url = format!("http://{}/mcp", d.addr);
    let out = run_client(&["http", &url, &d.token, repo.to_str().unwrap()]);
    check(&out, &repo, dir.path());
    repo_untouched(&repo, &before);
    // The MCP sandboxes are the daemon's: the one made by sandbox_create
    // shows in its REST API, stopped, with its audit log.
    let sid = out["sandbox_id"].as_str().unwrap();
    let (s, body) = d.curl(&[&format!("http://airlock/v1/sandboxes/{sid}")]);
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["state"], "stopped", "{v}");
    // No sandbox of the run/task tools is left running.
    let (_, body) = d.curl(&["http://airlock/v1/sandboxes"]);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 0, "left running: {v}");
}

#[test]
fn rest_tasks_endpoint() {
    if !is_root() || test_user_ids().is_none() {
        skip("the service tests run the daemon as root, with the test user");
        return;
    }
    let dir = tempdir::Dir::new();
    let repo = make_repo(dir.path());
    let before = tree(&repo);
    let d = Daemon::start(dir.path());
    let post = |body: Value| -> (u16, Value) {
        let (s, b) = d.curl(&[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body.to_string(),
            "http://airlock/v1/tasks",
        ]);
        (s, serde_json::from_str(&b).unwrap_or(Value::Null))
    };
    let (s, v) = post(serde_json::json!({
        "repo": repo,
        "argv": ["sh", "-c", "echo out; echo err >&2; sed -i s/hello/bye/ hello.txt; rm gone.txt; touch /work/empty; echo escaped > /tmp/outside; exit 5"],
        "limits": {"timeout": "2m"}
    }));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["exit_code"], 5, "{v}");
    assert_eq!(v["stdout"], "out\n");
    assert_eq!(v["stderr"], "err\n");
    assert_eq!(v["files_changed"], 3, "{v}");
    assert_eq!(v["sandbox"], Value::Null);
    let patch = v["patch"].as_str().unwrap();
    assert!(patch.contains("-hello\n+bye\n"), "{patch}");
    assert!(patch.contains("deleted file mode 100644"), "{patch}");
    assert!(patch.contains("new file mode 100644"), "{patch}");
    assert!(!patch.contains("outside"), "{patch}");
    repo_untouched(&repo, &before);
    // Bounded output: stdout_bytes counts all, stdout keeps output_limit.
    let (s, v) = post(serde_json::json!({
        "repo": repo, "argv": ["sh", "-c", "yes | head -c 10000000"], "output_limit": 4096
    }));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stdout_bytes"], 10_000_000);
    assert_eq!(v["truncated"], true);
    assert!(v["stdout"].as_str().unwrap().len() < 4096 + 200, "{v}");
    assert_eq!(v["patch"], "");
    // keep: the sandbox stays, with the command's changes.
    let (s, v) = post(serde_json::json!({
        "repo": repo, "argv": ["sh", "-c", "echo kept > k.txt"], "keep": true
    }));
    assert_eq!(s, 200, "{v}");
    let sid = v["sandbox"].as_str().unwrap().to_string();
    let (s, body) = d.curl(&[&format!(
        "http://airlock/v1/sandboxes/{sid}/files?path=/work/k.txt"
    )]);
    assert_eq!((s, body.as_str()), (200, "kept\n"));
    let (s, _) = d.curl(&[
        "-X",
        "DELETE",
        &format!("http://airlock/v1/sandboxes/{sid}"),
    ]);
    assert_eq!(s, 204);
    // Errors: a repo that is not there, no command, a tier mix-up, an
    // unknown field.
    for (body, want) in [
        (
            serde_json::json!({"repo": "/nonexistent/x", "argv": ["true"]}),
            "/nonexistent/x",
        ),
        (
            serde_json::json!({"repo": repo, "argv": []}),
            "argv must name a command",
        ),
        (
            serde_json::json!({"repo": repo, "argv": ["true"], "isolation": "none", "trust": "untrusted"}),
            "different tiers",
        ),
        (
            serde_json::json!({"repo": repo, "argv": ["true"], "colour": 1}),
            "colour",
        ),
    ] {
        let (s, v) = post(body);
        assert_eq!(s, 422, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(want),
            "{v}"
        );
    }
    repo_untouched(&repo, &before);

    // Attack: the daemon reads the base tree as root; a task on a user's
    // repository holding a root-only file must not get that file's content
    // back in its patch. (The sandbox cannot read nor remove the file —
    // it is not id-mapped — so its tree lacks it and, read as root, the
    // patch would show it deleted with its content: seen before the fix.)
    let evil = dir.path().join("evil");
    std::fs::create_dir_all(&evil).unwrap();
    std::fs::write(evil.join("secret.txt"), "TOPSECRET-airlock\n").unwrap();
    std::fs::set_permissions(
        evil.join("secret.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(evil.join("ok.txt"), "fine\n").unwrap();
    let (uid, gid) = test_user_ids().unwrap();
    std::os::unix::fs::chown(&evil, Some(uid), Some(gid)).unwrap();
    std::os::unix::fs::chown(evil.join("ok.txt"), Some(uid), Some(gid)).unwrap();
    let (code, body) = d.curl(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "--data-binary",
        &serde_json::json!({"repo": evil, "argv": ["sh", "-c", "rm -f secret.txt && echo removed"]})
            .to_string(),
        "http://airlock/v1/tasks",
    ]);
    assert!(!body.contains("TOPSECRET"), "{code}: {body}");
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("Permission denied"), "{body}");
    assert_eq!(
        std::fs::read_to_string(evil.join("secret.txt")).unwrap(),
        "TOPSECRET-airlock\n"
    );

    // The same with root-owned repositories (not id-mapped): a 0700
    // directory, and a 0755 one holding a 0600 file. The sandbox reads
    // neither secret; nor may the patch (found by a red team: both came
    // back as "deleted" files with their content).
    for (mode, name) in [(0o700, "root700"), (0o755, "root755")] {
        let r = dir.path().join(name);
        std::fs::create_dir_all(&r).unwrap();
        std::fs::write(r.join("key"), "TOPSECRET-root\n").unwrap();
        std::fs::set_permissions(r.join("key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(r.join("pub.txt"), "ok\n").unwrap();
        std::fs::set_permissions(&r, std::fs::Permissions::from_mode(mode)).unwrap();
        let (code, body) = d.curl(&[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data-binary",
            &serde_json::json!({"repo": r, "argv": ["sh", "-c", "cat /work/key; true"]})
                .to_string(),
            "http://airlock/v1/tasks",
        ]);
        assert!(!body.contains("TOPSECRET"), "{name}: {code}: {body}");
        assert!(!body.contains("deleted file"), "{name}: {code}: {body}");
    }
}

/// The MCP tools in the microVM tier: `run` with a repository (an overlay
/// in the guest: the command sees it at /work and may change it, the
/// host's copy is untouched) and `task` by trust (untrusted = microvm),
/// whose patch applies to a clean copy.
#[test]
fn mcp_run_with_repo_and_task_in_a_microvm() {
    if !ready() {
        return;
    }
    let dir = tempdir::Dir::new();
    let repo = make_repo(dir.path());
    let before = tree(&repo);
    let out = run_client(&["microvm", bin().to_str().unwrap(), repo.to_str().unwrap()]);
    let r = ok(&out, "run_repo");
    assert_eq!(r["structured"]["exit_code"], 0, "{r}");
    let t = text(r);
    assert!(t.contains("/work\n"), "{r}");
    assert!(
        t.contains("-cloud-amd64\nhello\nscribble\n"),
        "not in a guest? {r}"
    );
    let t = ok(&out, "task");
    assert_eq!(t["structured"]["exit_code"], 0, "{t}");
    assert!(text(t).contains("-cloud-amd64"), "not in a guest? {t}");
    assert_eq!(t["structured"]["files_changed"], 3, "{t}");
    let patch = patch_of(t);
    let copy = dir.path().join("applied");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&repo)
        .arg(&copy)
        .status()
        .unwrap()
        .success());
    let pf = dir.path().join("task.patch");
    std::fs::write(&pf, &patch).unwrap();
    let o = Command::new("git")
        .args(["apply"])
        .arg(&pf)
        .current_dir(&copy)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git apply: {}\n{patch}",
        String::from_utf8_lossy(&o.stderr)
    );
    let got = tree(&copy);
    assert_eq!(got["hello.txt"].1, b"hello\nchanged\n");
    assert_eq!(got["new.txt"].1, b"brand new\n");
    assert!(!got.contains_key("gone.txt"));
    repo_untouched(&repo, &before);
}
