//! contrib/airlock-pretooluse-hook, the PreToolUse hook for Claude Code
//! and Codex: fed the hook's JSON as those agents send it, it must answer
//! with the tool input whose command runs under `airlock run`, and that
//! command, run by bash as the agent would, must do exactly what the
//! original did — quotes, expansions, here-documents and all — inside the
//! sandbox (the project writable, the rest of the host not).

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn hook_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../contrib/airlock-pretooluse-hook")
}

/// Runs the hook with `input` on stdin: (exit code, stdout, stderr).
fn hook(input: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new("/usr/bin/python3");
    c.arg(hook_script())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("AIRLOCK_BIN", bin())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut ch = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut i = ch.stdin.take().unwrap();
        i.write_all(input.as_bytes()).unwrap();
    }
    let o = ch.wait_with_output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The hook's input for a Bash call, as Claude Code sends it.
fn bash_event(cwd: &Path, command: &str) -> Value {
    json!({
        "session_id": "5f2b-test",
        "transcript_path": "/nonexistent/transcript.jsonl",
        "cwd": cwd,
        "permission_mode": "default",
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": command, "description": "a test command", "timeout": 120000},
        "tool_use_id": "toolu_01"
    })
}

fn rewrite(cwd: &Path, command: &str, env: &[(&str, &str)]) -> String {
    let ev = bash_event(cwd, command);
    let (code, out, err) = hook(&ev.to_string(), env);
    assert_eq!(code, 0, "hook failed: {err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    let h = &v["hookSpecificOutput"];
    assert_eq!(h["hookEventName"], "PreToolUse", "{v}");
    assert_eq!(h["permissionDecision"], "allow", "{v}");
    let upd = &h["updatedInput"];
    // The rest of the tool input is kept.
    assert_eq!(upd["description"], "a test command");
    assert_eq!(upd["timeout"], 120000);
    let c = upd["command"].as_str().unwrap().to_string();
    assert!(
        c.starts_with(&format!(
            "{} run --trust experimental --mount ",
            bin().display()
        )),
        "{c}"
    );
    c
}

/// `bash -c CMD` in `cwd`, as the agent's Bash tool runs it: (code, stdout).
fn bash(cwd: &Path, cmd: &str) -> (i32, String, String) {
    let o = Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const HOSTILE: &[&str] = &[
    r#"printf '<%s>\n' "it's" 'say "hi"' a\ b '' "$((6*7))""#,
    r#"x='$HOME'; echo "$x" '$(touch /nonexistent-x)' "\`echo tick\`" `echo ran` $(echo sub)"#,
    "cat <<'EOF'\nline 'single' \"double\" $dollar `tick` \\backslash\n\tEOF-not-yet\nEOF\necho after",
    r#"echo -- -n --help; echo ';&|<>(){}[]*?~!#' ; echo "a\\"; echo 'a\'"#,
    "echo 'héllo — ✓ 日本語' \"$(printf 'multi\\nline')\"",
    "set -- one 'two three'; printf '[%s]' \"$@\"; echo; echo $#",
    "f() { echo \"fn:$1\"; }; f \"'\\\"'\"; false || echo or; true && echo and; exit 7",
    "echo 'unterminated",
    "  echo leading-space ; # a comment with 'quote\n",
    "printf '%s\\n' \"$PWD\"; ls -1 | sort",
];

#[test]
fn hook_rewrites_quoting_hostile_commands_exactly() {
    if !is_root() {
        skip("the hook test runs airlock as root");
        return;
    }
    let d = tempdir::Dir::new();
    let project = d.path().join("my project's dir");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("b.txt"), "b\n").unwrap();
    std::fs::write(project.join("a.txt"), "a\n").unwrap();
    for cmd in HOSTILE {
        let wrapped = rewrite(&project, cmd, &[]);
        let direct = bash(&project, cmd);
        let sandboxed = bash(&project, &wrapped);
        assert_eq!(
            (sandboxed.0, &sandboxed.1),
            (direct.0, &direct.1),
            "command {cmd:?}\nwrapped {wrapped}\nsandbox stderr: {}",
            sandboxed.2
        );
    }
}

#[test]
fn hook_command_runs_sandboxed() {
    if !is_root() {
        skip("the hook test runs airlock as root");
        return;
    }
    let d = tempdir::Dir::new();
    let project = d.path().join("proj");
    std::fs::create_dir_all(&project).unwrap();
    // A developer's project (a root-owned one is not id-mapped, so the
    // sandbox could not write it).
    let Some((uid, gid)) = test_user_ids() else {
        skip("no test user (scripts/setup.sh creates airlock-test)");
        return;
    };
    std::os::unix::fs::chown(&project, Some(uid), Some(gid)).unwrap();
    let leak = d.path().join("outside-leak");
    let cmd = format!(
        "echo made > in-project.txt; echo leaked > {}; env | grep -c AIRLOCK_SECRET_TEST; true",
        leak.display()
    );
    let wrapped = rewrite(&project, &cmd, &[]);
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(&wrapped)
        .current_dir(&project)
        .env("AIRLOCK_SECRET_TEST", "s3cret");
    let o = c.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    // The project is writable (rw, the default)...
    assert_eq!(
        std::fs::read_to_string(project.join("in-project.txt")).unwrap(),
        "made\n"
    );
    // ...the rest of the host is not, and the agent's environment stays out.
    assert!(!leak.exists(), "wrote outside the project: {out}");
    assert!(out.contains("0\n"), "the environment leaked in: {out}");

    // overlay: the command's changes are thrown away.
    let wrapped = rewrite(
        &project,
        "echo gone > overlay.txt; cat in-project.txt",
        &[("AIRLOCK_HOOK_MOUNT", "overlay")],
    );
    assert!(wrapped.contains(":overlay"), "{wrapped}");
    let (code, out, err) = bash(&project, &wrapped);
    assert_eq!((code, out.as_str()), (0, "made\n"), "{err}");
    assert!(!project.join("overlay.txt").exists());

    // Extra flags reach airlock run: a 1 s timeout kills, 124.
    let wrapped = rewrite(
        &project,
        "sleep 30",
        &[("AIRLOCK_HOOK_ARGS", "--timeout 1s")],
    );
    let t0 = std::time::Instant::now();
    let (code, _, _) = bash(&project, &wrapped);
    assert_eq!(code, 124);
    assert!(t0.elapsed().as_secs() < 20);
}

#[test]
fn hook_leaves_other_tools_and_refuses_what_it_cannot_wrap() {
    let d = tempdir::Dir::new();
    let project = d.path().to_path_buf();
    // Not a shell tool: no answer.
    let ev = json!({"hook_event_name": "PreToolUse", "tool_name": "Write", "cwd": project,
        "tool_input": {"file_path": "/x", "content": "y"}});
    assert_eq!(
        hook(&ev.to_string(), &[]),
        (0, String::new(), String::new())
    );
    // Already wrapped by the hook: left alone (no double wrapping).
    let once = {
        let ev = bash_event(&project, "make test");
        let (_, out, _) = hook(&ev.to_string(), &[]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["hookSpecificOutput"]["updatedInput"]["command"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (code, out, _) = hook(&bash_event(&project, &once).to_string(), &[]);
    assert_eq!((code, out.as_str()), (0, ""));
    // But a command that calls airlock itself with a weaker tier is
    // wrapped like any other (the model does not pick its own tier).
    let sneaky = format!("{} run --isolation none -- id", bin().display());
    let (_, out, _) = hook(&bash_event(&project, &sneaky).to_string(), &[]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let c = v["hookSpecificOutput"]["updatedInput"]["command"]
        .as_str()
        .unwrap();
    assert!(c.contains("--trust experimental"), "{c}");
    assert!(c.contains(" -- bash -c "), "{c}");
    assert!(c.ends_with(" run --isolation none -- id'"), "{c}");
    // Denied, never run unwrapped: a NUL byte, a project path airlock
    // cannot mount, a bad setting.
    for (ev, env, why) in [
        (bash_event(&project, "echo a\u{0}b"), vec![], "NUL"),
        (
            bash_event(Path::new("/tmp/a:b"), "ls"),
            vec![],
            "cannot mount",
        ),
        (
            bash_event(&project, "ls"),
            vec![("AIRLOCK_HOOK_TRUST", "none")],
            "AIRLOCK_HOOK_TRUST",
        ),
        (
            bash_event(&project, "ls"),
            vec![("AIRLOCK_HOOK_DECISION", "yes")],
            "AIRLOCK_HOOK_DECISION",
        ),
    ] {
        let (code, out, _) = hook(&ev.to_string(), &env);
        assert_eq!(code, 0);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["hookSpecificOutput"]["permissionDecision"], "deny", "{v}");
        assert!(
            v["hookSpecificOutput"]["permissionDecisionReason"]
                .as_str()
                .unwrap()
                .contains(why),
            "{v}"
        );
        assert!(v["hookSpecificOutput"].get("updatedInput").is_none());
    }
    // ask (Claude Code): the rewritten command is shown for approval.
    let (_, out, _) = hook(
        &bash_event(&project, "ls").to_string(),
        &[("AIRLOCK_HOOK_DECISION", "ask")],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["hookSpecificOutput"]["permissionDecision"], "ask");
    // Not JSON: an error on stderr, exit 1 (the agent reports it).
    let (code, out, err) = hook("{not json", &[]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("not JSON"), "{err}");
}

/// Where `codex` is (scripts/setup.sh installs it from npm).
fn codex() -> Option<PathBuf> {
    ["/usr/local/bin/codex", "/usr/bin/codex"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The Codex recipe of docs/agents.md, for real, with no model call:
/// `codex mcp add airlock -- airlock mcp` writes the configuration, the
/// recipe's additions load (a long tool timeout, the shell tool off, the
/// PreToolUse hook), and a tool call made through Codex's own app server
/// reaches airlock and runs in a sandbox. Codex runs in a network
/// namespace of its own (no route anywhere).
#[test]
fn codex_loads_the_recipe_and_reaches_airlock() {
    if !is_root() {
        skip("the Codex recipe test runs airlock as root");
        return;
    }
    let Some(codex) = codex() else {
        skip("codex is not installed (scripts/setup.sh: npm i -g @openai/codex)");
        return;
    };
    let d = tempdir::Dir::new();
    let home = d.path().join("codex-home");
    let work = d.path().join("work");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        bin().parent().unwrap().display()
    );
    let run = |args: &[&str]| -> String {
        let o = Command::new("unshare")
            .arg("-n")
            .arg(&codex)
            .args(args)
            .env_clear()
            .env("PATH", &path)
            .env("HOME", d.path())
            .env("CODEX_HOME", &home)
            .current_dir(&work)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "codex {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    run(&["mcp", "add", "airlock", "--", "airlock", "mcp"]);
    let cfg = std::fs::read_to_string(home.join("config.toml")).unwrap();
    assert!(
        cfg.contains("[mcp_servers.airlock]\ncommand = \"airlock\"\nargs = [\"mcp\"]"),
        "{cfg}"
    );
    // The recipe's additions.
    let cfg = format!(
        "{cfg}tool_timeout_sec = 900\n\n[features]\nshell_tool = false\n\n\
[[hooks.PreToolUse]]\nmatcher = \"Bash\"\n[[hooks.PreToolUse.hooks]]\ntype = \"command\"\ncommand = \"{}\"\n",
        hook_script().display()
    );
    std::fs::write(home.join("config.toml"), &cfg).unwrap();
    let get: Value = serde_json::from_str(&run(&["mcp", "get", "airlock", "--json"])).unwrap();
    assert_eq!(get["tool_timeout_sec"], 900.0, "{get}");
    assert_eq!(get["transport"]["command"], "airlock", "{get}");
    let features = run(&["features", "list"]);
    assert!(
        features
            .lines()
            .any(|l| l.starts_with("shell_tool ") && l.trim_end().ends_with("false")),
        "{features}"
    );

    let o = Command::new("unshare")
        .arg("-n")
        .arg("/usr/bin/python3")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/codex_client.py"))
        .arg("echo reached airlock; cat /proc/1/comm; id -u")
        .env_clear()
        .env("PATH", &path)
        .env("HOME", d.path())
        .env("CODEX_HOME", &home)
        .current_dir(&work)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    // The hook is loaded, from the user's config.
    let hooks = v["hooks"]["data"][0]["hooks"].as_array().unwrap();
    assert!(
        hooks.iter().any(|h| h["eventName"] == "preToolUse"
            && h["matcher"] == "Bash"
            && h["command"] == hook_script().display().to_string()),
        "{}",
        v["hooks"]
    );
    // Codex started `airlock mcp` and lists its tools.
    let servers = v["servers"]["data"].as_array().unwrap();
    let ours = servers
        .iter()
        .find(|s| s["name"] == "airlock")
        .unwrap_or_else(|| panic!("{}", v["servers"]));
    for t in ["run", "task", "sandbox_create", "sandbox_exec", "file_read"] {
        assert!(ours["tools"].get(t).is_some(), "{t}: {ours}");
    }
    // The call reached airlock and ran in a sandbox (its PID 1 is
    // airlock's agent, the user is not root).
    let call = &v["call"];
    assert_eq!(call["isError"], false, "{call}");
    let text = call["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("exit_code: 0\n--- stdout (")
            && text.contains("reached airlock\nairlock-agent\n")
            && !text.contains("airlock-agent\n0\n"),
        "{text}"
    );
    assert_eq!(call["structuredContent"]["isolation"], "container");
}

/// The Claude Code recipe: `claude mcp add` (local and project scope,
/// `.mcp.json`), and `claude mcp list`, whose health check starts
/// `airlock mcp` and connects to it. No model call; Claude Code runs in a
/// network namespace of its own.
#[test]
fn claude_code_connects_to_airlock_mcp() {
    if !is_root() {
        skip("the Claude Code recipe test runs airlock as root");
        return;
    }
    let Some(claude) = ["/usr/local/bin/claude", "/usr/bin/claude"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    else {
        skip("claude is not installed (scripts/setup.sh: npm i -g @anthropic-ai/claude-code)");
        return;
    };
    let d = tempdir::Dir::new();
    let home = d.path().join("home");
    let proj = d.path().join("proj");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&proj).unwrap();
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        bin().parent().unwrap().display()
    );
    let run = |args: &[&str]| -> String {
        let o = Command::new("unshare")
            .arg("-n")
            .arg(&claude)
            .args(args)
            .env_clear()
            .env("PATH", &path)
            .env("HOME", &home)
            .current_dir(&proj)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "claude {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    run(&["mcp", "add", "airlock", "--", "airlock", "mcp"]);
    run(&[
        "mcp",
        "add",
        "--scope",
        "project",
        "airlock-team",
        "--",
        "airlock",
        "mcp",
        "--trust",
        "experimental",
    ]);
    let team: Value =
        serde_json::from_str(&std::fs::read_to_string(proj.join(".mcp.json")).unwrap()).unwrap();
    assert_eq!(
        team["mcpServers"]["airlock-team"],
        json!({"type": "stdio", "command": "airlock", "args": ["mcp", "--trust", "experimental"], "env": {}})
    );
    let list = run(&["mcp", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("airlock: airlock mcp - ") && l.contains("Connected")),
        "{list}"
    );
}
