//! The MCP server: airlock's sandboxes as tools for coding agents.
//!
//! One handler over the service, two transports: streamable HTTP served by
//! the daemon at `/mcp` (on its unix socket, and on TCP behind the same
//! bearer token as the REST API), and stdio (`airlock mcp`), which runs a
//! service of its own inside the process — no daemon needed; its sandboxes
//! end when the client closes the pipe.
//!
//! Every tool's output is bounded (the first and last bytes of each
//! stream, with a note saying how much was left out), so a flood never
//! fills the model's context nor the server's memory. Bad arguments and
//! failures inside a sandbox are tool errors (`isError`) with a message
//! the model can act on, not protocol errors.
//!
//! The tier: the server has a trust level (`--trust`, default
//! experimental = container) that is both the default and the weakest tier
//! a tool call may ask for; a call may ask for a stronger one, never a
//! weaker one, so a model cannot talk its way out of the sandbox.

use crate::actor::{Cmd, FileEvent, Handle};
use crate::api::{ApiError, CreateRequest, ExecRequest, LimitsRequest, MountRequest};
use crate::runs;
use crate::service::Service;
use base64::Engine;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Output kept per stream by default (half from the start, half from the
/// end), and the most a call may ask for.
pub const DEFAULT_OUTPUT: usize = 32 << 10;
pub const MAX_OUTPUT: usize = 1 << 20;
/// A command's default timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The tiers, weakest first.
fn strength(isolation: &str) -> Option<u8> {
    match isolation {
        "none" => Some(0),
        "container" => Some(1),
        "microvm" => Some(2),
        _ => None,
    }
}

/// `--trust` of the MCP server: the default tier and the weakest allowed.
/// The tier comes from the trust policy (airlock_core::config: the
/// defaults, /etc/airlock/config.toml, the user's file); a bad policy
/// file is said on stderr and the defaults stand.
pub fn floor_of_trust(trust: &str) -> Option<&'static str> {
    use airlock_core::config::{Trust, TrustPolicy};
    let t = Trust::parse(trust).ok()?;
    let policy = TrustPolicy::load().unwrap_or_else(|e| {
        eprintln!("airlock: the trust policy: {e}");
        TrustPolicy::default()
    });
    Some(policy.tier(t).name())
}

#[derive(Clone)]
pub struct AirlockMcp {
    svc: Arc<Service>,
    /// The default and weakest tier (none, container or microvm).
    floor: &'static str,
}

impl AirlockMcp {
    pub fn new(svc: Arc<Service>, floor: &'static str) -> AirlockMcp {
        AirlockMcp { svc, floor }
    }
}

/// A tool error: what went wrong, said so that the model can fix it.
struct ToolError(String);

impl From<ApiError> for ToolError {
    fn from(e: ApiError) -> ToolError {
        ToolError(e.message)
    }
}

impl From<String> for ToolError {
    fn from(e: String) -> ToolError {
        ToolError(e)
    }
}

type ToolResult = Result<CallToolResult, ToolError>;

fn text_result(text: String, structured: Value) -> CallToolResult {
    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
    r.structured_content = Some(structured);
    r
}

// ------------------------------------------------------------ arguments

/// `30`, `2.5` (seconds) or `30s`, `5m`, `1h`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Timeout {
    Secs(f64),
    Text(String),
}

fn duration(t: &Option<Timeout>, default: Duration) -> Result<Duration, ToolError> {
    match t {
        None => Ok(default),
        Some(Timeout::Secs(s)) if s.is_finite() && *s > 0.0 && *s <= 7.0 * 86400.0 => {
            Ok(Duration::from_secs_f64(*s))
        }
        Some(Timeout::Secs(s)) => Err(ToolError(format!(
            "timeout {s}: a positive number of seconds (at most a week), or text such as 30s, 5m, 1h"
        ))),
        Some(Timeout::Text(s)) => airlock_spec::parse_duration(s).map_err(|e| {
            ToolError(format!(
                "timeout {s:?}: {e} (a number of seconds, or text such as 30s, 5m, 1h)"
            ))
        }),
    }
}

/// `command` (a shell command line, run by /bin/sh -c) or `argv`.
fn argv_of(command: &Option<String>, argv: &Option<Vec<String>>) -> Result<Vec<String>, ToolError> {
    match (command, argv) {
        (Some(c), None) => {
            if c.trim().is_empty() {
                return Err(ToolError("command is empty".into()));
            }
            Ok(vec!["/bin/sh".into(), "-c".into(), c.clone()])
        }
        (None, Some(a)) if !a.is_empty() => Ok(a.clone()),
        (None, Some(_)) => Err(ToolError("argv is empty".into())),
        (Some(_), Some(_)) => Err(ToolError(
            "give either command (a shell command line) or argv (a list), not both".into(),
        )),
        (None, None) => Err(ToolError(
            "missing the command: give command (a shell command line) or argv (a list)".into(),
        )),
    }
}

fn output_limit(v: Option<usize>) -> Result<usize, ToolError> {
    match v {
        None => Ok(DEFAULT_OUTPUT),
        Some(n) if (1..=MAX_OUTPUT).contains(&n) => Ok(n),
        Some(n) => Err(ToolError(format!(
            "max_output_bytes {n}: between 1 and {MAX_OUTPUT}"
        ))),
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    args: Option<serde_json::Map<String, Value>>,
) -> Result<T, ToolError> {
    serde_json::from_value(Value::Object(args.unwrap_or_default()))
        .map_err(|e| ToolError(format!("invalid arguments: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunArgs {
    command: Option<String>,
    argv: Option<Vec<String>>,
    isolation: Option<String>,
    trust: Option<String>,
    timeout: Option<Timeout>,
    repo: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    memory: Option<String>,
    max_output_bytes: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateArgs {
    isolation: Option<String>,
    trust: Option<String>,
    timeout: Option<Timeout>,
    repo: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    memory: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecArgs {
    sandbox_id: String,
    command: Option<String>,
    argv: Option<Vec<String>>,
    timeout: Option<Timeout>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    max_output_bytes: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    sandbox_id: String,
    path: String,
    content: String,
    /// utf-8 (default) or base64.
    encoding: Option<String>,
    mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    sandbox_id: String,
    path: String,
    offset: Option<u64>,
    max_bytes: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    sandbox_id: String,
    path: Option<String>,
    max_entries: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskArgs {
    repo: String,
    command: Option<String>,
    argv: Option<Vec<String>>,
    isolation: Option<String>,
    trust: Option<String>,
    timeout: Option<Timeout>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    memory: Option<String>,
    max_output_bytes: Option<usize>,
    max_patch_bytes: Option<usize>,
    #[serde(default)]
    keep: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdArgs {
    sandbox_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

// --------------------------------------------------------------- tools

fn schema(v: Value) -> Arc<serde_json::Map<String, Value>> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => Arc::new(serde_json::Map::new()),
    }
}

fn tools() -> Vec<Tool> {
    let tier = json!({
        "isolation": {"type": "string", "enum": ["container", "microvm", "none"],
            "description": "The isolation tier. Defaults to the server's (its --trust); a tier weaker than the server's is refused."},
        "trust": {"type": "string", "enum": ["untrusted", "experimental", "own"],
            "description": "Pick the tier by how far the code is trusted: untrusted = microvm, experimental = container, own = none. Give this or isolation."},
    });
    let timeout = json!({"type": ["number", "string"],
        "description": "Seconds (number) or text such as 30s, 5m, 1h. Default 300 s; on timeout the command is killed and exit_code is 124."});
    let cmd = json!({
        "command": {"type": "string", "description": "A shell command line, run by /bin/sh -c."},
        "argv": {"type": "array", "items": {"type": "string"}, "description": "The command as a list (instead of command)."},
    });
    let env = json!({"type": "object", "additionalProperties": {"type": "string"},
        "description": "Environment variables (nothing from the host's environment is passed in)."});
    let maxout = json!({"type": "integer", "minimum": 1, "maximum": MAX_OUTPUT,
        "description": "Bytes of stdout and of stderr returned, half from the start and half from the end (default 32768); the rest is counted and left out."});
    let id = json!({"type": "string", "description": "The sandbox's id (from sandbox_create)."});
    let merge = |parts: &[&Value], required: &[&str]| -> Arc<serde_json::Map<String, Value>> {
        let mut props = serde_json::Map::new();
        for p in parts {
            if let Value::Object(m) = p {
                for (k, v) in m {
                    props.insert(k.clone(), v.clone());
                }
            }
        }
        schema(
            json!({"type": "object", "properties": props, "required": required, "additionalProperties": false}),
        )
    };
    vec![
        Tool::new(
            "run",
            "Run a command in a fresh, isolated, throw-away sandbox: no network, no secrets, the host's files read-only. \
With repo, that host directory appears at /work (copy-on-write: the command may change it, the host's copy is never touched) and the command starts there. \
Returns exit_code, stdout and stderr (bounded; the middle of a long output is left out with a note).",
            merge(&[&cmd, &tier, &json!({"timeout": timeout, "repo": {"type": "string",
                "description": "A directory on the host to mount copy-on-write at /work (the working directory)."},
                "env": env, "cwd": {"type": "string", "description": "Working directory inside the sandbox (absolute)."},
                "memory": {"type": "string", "description": "Memory limit, e.g. 512M, 2G."},
                "max_output_bytes": maxout})], &[]),
        ),
        Tool::new(
            "sandbox_create",
            "Create a long-lived sandbox to run several commands in and exchange files with (sandbox_exec, file_write, file_read, file_list); destroy it with sandbox_destroy. Returns its id.",
            merge(&[&tier, &json!({"timeout": {"type": ["number", "string"], "description": "Its lifetime (default 1h)."},
                "repo": {"type": "string", "description": "A directory on the host to mount copy-on-write at /work (the working directory)."},
                "env": env, "memory": {"type": "string", "description": "Memory limit, e.g. 512M, 2G."}})], &[]),
        ),
        Tool::new(
            "sandbox_exec",
            "Run a command in a sandbox made by sandbox_create, to its end. Returns exit_code, stdout and stderr (bounded).",
            merge(&[&cmd, &json!({"sandbox_id": id, "timeout": timeout, "env": env,
                "cwd": {"type": "string", "description": "Working directory (absolute)."}, "max_output_bytes": maxout})], &["sandbox_id"]),
        ),
        Tool::new(
            "file_write",
            "Write a file in a sandbox (created or replaced; parent directories must exist).",
            merge(&[&json!({"sandbox_id": id, "path": {"type": "string", "description": "Absolute path inside the sandbox."},
                "content": {"type": "string"}, "encoding": {"type": "string", "enum": ["utf-8", "base64"], "description": "How content is encoded (default utf-8)."},
                "mode": {"type": "string", "description": "Permission bits in octal (default 644)."}})], &["sandbox_id", "path", "content"]),
        ),
        Tool::new(
            "file_read",
            "Read a file in a sandbox: up to max_bytes (default 65536, at most 1048576) from offset. Text is returned as is; other bytes as base64.",
            merge(&[&json!({"sandbox_id": id, "path": {"type": "string", "description": "Absolute path inside the sandbox."},
                "offset": {"type": "integer", "minimum": 0}, "max_bytes": {"type": "integer", "minimum": 1, "maximum": MAX_OUTPUT}})], &["sandbox_id", "path"]),
        ),
        Tool::new(
            "file_list",
            "List a directory in a sandbox: name, kind, size and mode of each entry (at most max_entries, default 500).",
            merge(&[&json!({"sandbox_id": id, "path": {"type": "string", "description": "Absolute path (default /work if it exists, else /)."},
                "max_entries": {"type": "integer", "minimum": 1, "maximum": 10000}})], &["sandbox_id"]),
        ),
        Tool::new(
            "task",
            "Task mode: run a command on a copy-on-write copy of a repository (at /work) in a fresh sandbox and return what it changed as a git patch \
(binary files, new, deleted and renamed files, modes), which `git apply` reproduces on a clean copy. The repository itself is never written. \
Returns exit_code, bounded output and the patch (bounded by max_patch_bytes, default 262144: a longer patch is cut with a note; use keep and sandbox tools to fetch files).",
            merge(&[&cmd, &tier, &json!({"repo": {"type": "string", "description": "The repository on the host."},
                "timeout": timeout, "env": env, "memory": {"type": "string"}, "max_output_bytes": maxout,
                "max_patch_bytes": {"type": "integer", "minimum": 1, "maximum": 16777216},
                "keep": {"type": "boolean", "description": "Leave the sandbox running; its id is returned."}})], &["repo"]),
        ),
        Tool::new(
            "sandbox_destroy",
            "Stop and remove a sandbox (every process in it is killed, its files are gone).",
            merge(&[&json!({"sandbox_id": id})], &["sandbox_id"]),
        ),
        Tool::new(
            "sandbox_list",
            "List the running sandboxes (id, state, lifetime left).",
            merge(&[], &[]),
        ),
    ]
}

/// The text of a command's result, for the model.
fn outcome_text(o: &runs::Outcome) -> String {
    let mut t = format!("exit_code: {}", o.exit_code);
    if o.timed_out {
        t.push_str(" (timed out: killed)");
    }
    if let Some(e) = &o.start_error {
        t.push_str(&format!("\nerror: {e}"));
    }
    t.push_str(&format!(
        "\n--- stdout ({} bytes) ---\n{}",
        o.stdout.total(),
        o.stdout.text()
    ));
    if !t.ends_with('\n') {
        t.push('\n');
    }
    t.push_str(&format!(
        "--- stderr ({} bytes) ---\n{}",
        o.stderr.total(),
        o.stderr.text()
    ));
    t
}

fn outcome_json(o: &runs::Outcome) -> Value {
    json!({
        "exit_code": o.exit_code,
        "timed_out": o.timed_out,
        "stdout_bytes": o.stdout.total(),
        "stderr_bytes": o.stderr.total(),
        "truncated": o.stdout.truncated() || o.stderr.truncated(),
        "seconds": o.seconds,
    })
}

/// Stops a sandbox when dropped (a call cancelled half-way leaves none).
struct StopGuard {
    svc: Arc<Service>,
    id: Option<String>,
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let svc = self.svc.clone();
            tokio::spawn(async move {
                let _ = svc.stop(&id, "its MCP call ended").await;
            });
        }
    }
}

impl AirlockMcp {
    /// The tier to use: the call's (never weaker than the server's), or
    /// the server's.
    fn tier(&self, isolation: Option<&str>, trust: Option<&str>) -> Result<String, ToolError> {
        let asked = runs::tier(isolation, trust)?;
        let Some(t) = asked else {
            return Ok(self.floor.to_string());
        };
        let s = strength(&t)
            .ok_or_else(|| ToolError(format!("isolation {t:?}: container, microvm or none")))?;
        let floor = strength(self.floor).unwrap_or(1);
        if s < floor {
            return Err(ToolError(format!(
                "isolation {t} is weaker than this server allows ({}); the user chooses the weakest tier when starting the server (airlock mcp --trust own allows none)",
                self.floor
            )));
        }
        Ok(t)
    }

    fn handle(&self, id: &str) -> Result<Handle, ToolError> {
        match self.svc.handle(id) {
            Some(h) if self.svc.is_paused(id) => {
                let _ = h;
                Err(ToolError(format!(
                    "sandbox {id} is paused: resume it first"
                )))
            }
            Some(h) => Ok(h),
            None => Err(ToolError(match self.svc.db.get(id) {
                Ok(Some(r)) => format!(
                    "sandbox {id} is {}{}",
                    r.state,
                    r.reason.map(|w| format!(" ({w})")).unwrap_or_default()
                ),
                _ => format!("no sandbox {id} (sandbox_list shows the running ones)"),
            })),
        }
    }

    fn limits(memory: Option<String>) -> LimitsRequest {
        LimitsRequest {
            memory,
            ..Default::default()
        }
    }

    fn exec_spec(
        argv: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: Option<String>,
    ) -> Result<airlock_core::ProcessSpec, ToolError> {
        Ok(crate::api::process_spec(&ExecRequest {
            argv,
            env,
            cwd,
            user: None,
            tty: None,
            stdin: false,
            background: false,
            hold_output: false,
        })?)
    }

    async fn run(&self, a: RunArgs) -> ToolResult {
        let argv = argv_of(&a.command, &a.argv)?;
        let tier = self.tier(a.isolation.as_deref(), a.trust.as_deref())?;
        let timeout = duration(&a.timeout, DEFAULT_TIMEOUT)?;
        let limit = output_limit(a.max_output_bytes)?;
        let repo = a.repo.as_deref().map(repo_of).transpose()?;
        let spec = Self::exec_spec(argv, BTreeMap::new(), a.cwd)?;
        let (id, h, notes) = runs::create_for_run(
            &self.svc,
            Some(tier.clone()),
            repo.as_deref(),
            a.env,
            Self::limits(a.memory),
            None,
            timeout + Duration::from_secs(60),
            BTreeMap::from([("airlock.mcp".to_string(), "run".to_string())]),
        )
        .await?;
        let _guard = StopGuard {
            svc: self.svc.clone(),
            id: Some(id),
        };
        let o = runs::exec_collect(&h, spec, timeout, limit).await?;
        let mut text = outcome_text(&o);
        for n in &notes {
            text.push_str(&format!("\nnote: {n}"));
        }
        let mut j = outcome_json(&o);
        j["isolation"] = json!(tier);
        Ok(text_result(text, j))
    }

    async fn create(&self, a: CreateArgs) -> ToolResult {
        let tier = self.tier(a.isolation.as_deref(), a.trust.as_deref())?;
        let lifetime = duration(&a.timeout, crate::service::DEFAULT_TIMEOUT)?;
        let repo = a.repo.as_deref().map(repo_of).transpose()?;
        let mut req = CreateRequest {
            isolation: Some(tier.clone()),
            env: a.env,
            limits: Self::limits(a.memory),
            labels: BTreeMap::from([("airlock.mcp".to_string(), "sandbox".to_string())]),
            ..Default::default()
        };
        req.limits.timeout = Some(format!("{}s", lifetime.as_secs().max(1)));
        if let Some(r) = &repo {
            req.mounts.push(MountRequest {
                source: r.display().to_string(),
                target: "/work".into(),
                mode: Some("overlay".into()),
            });
            req.workdir = Some("/work".into());
        }
        let info = self.svc.clone().create(req).await?;
        let mut text = format!(
            "sandbox_id: {}\nisolation: {tier}\nlifetime: {} s",
            info.id,
            lifetime.as_secs()
        );
        if let Some(r) = &repo {
            text.push_str(&format!(
                "\n{} is at /work (copy-on-write), the working directory",
                r.display()
            ));
        }
        for n in &info.notes {
            text.push_str(&format!("\nnote: {n}"));
        }
        Ok(text_result(
            text,
            json!({"sandbox_id": info.id, "isolation": tier, "expires": info.expires}),
        ))
    }

    async fn exec(&self, a: ExecArgs) -> ToolResult {
        let h = self.handle(&a.sandbox_id)?;
        let argv = argv_of(&a.command, &a.argv)?;
        let timeout = duration(&a.timeout, DEFAULT_TIMEOUT)?;
        let limit = output_limit(a.max_output_bytes)?;
        let spec = Self::exec_spec(argv, a.env, a.cwd)?;
        let o = runs::exec_collect(&h, spec, timeout, limit).await?;
        Ok(text_result(outcome_text(&o), outcome_json(&o)))
    }

    async fn write(&self, a: WriteArgs) -> ToolResult {
        let h = self.handle(&a.sandbox_id)?;
        let path = abs(&a.path)?;
        let data = match a.encoding.as_deref() {
            None | Some("utf-8") | Some("utf8") => a.content.into_bytes(),
            Some("base64") => base64::engine::general_purpose::STANDARD
                .decode(a.content.as_bytes())
                .map_err(|e| ToolError(format!("content is not valid base64: {e}")))?,
            Some(o) => return Err(ToolError(format!("encoding {o:?}: utf-8 or base64"))),
        };
        let mode = match &a.mode {
            None => 0o644,
            Some(m) => u32::from_str_radix(m, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| ToolError(format!("mode {m:?}: octal, at most 7777")))?,
        };
        let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
        let (rtx, rrx) = tokio::sync::oneshot::channel();
        if !h.send(Cmd::Write {
            path,
            mode,
            tar: false,
            data: rx,
            reply: rtx,
        }) {
            return Err(ToolError("the sandbox is gone".into()));
        }
        let len = data.len();
        for c in data.chunks(256 << 10) {
            if tx.send(c.to_vec()).await.is_err() {
                break;
            }
            h.poke();
        }
        drop(tx);
        h.poke();
        let n = rrx
            .await
            .map_err(|_| ToolError("the sandbox is gone".into()))?
            .map_err(|e| ToolError(format!("cannot write {}: {e}", a.path)))?;
        Ok(text_result(
            format!("wrote {n} bytes to {}", a.path),
            json!({"bytes": n, "path": a.path, "sent": len}),
        ))
    }

    async fn read(&self, a: ReadArgs) -> ToolResult {
        let h = self.handle(&a.sandbox_id)?;
        let path = abs(&a.path)?;
        let max = match a.max_bytes {
            None => 64 << 10,
            Some(n) if (1..=MAX_OUTPUT).contains(&n) => n,
            Some(n) => {
                return Err(ToolError(format!(
                    "max_bytes {n}: between 1 and {MAX_OUTPUT}"
                )))
            }
        };
        let offset = a.offset.unwrap_or(0);
        let size = h
            .ask(|reply| Cmd::Stat {
                path: path.clone(),
                follow: true,
                reply,
            })
            .await
            .map_err(|e| ToolError(format!("cannot read {}: {e}", a.path)))?;
        if size.kind != airlock_core::FileKind::File {
            return Err(ToolError(format!(
                "{} is not a regular file (file_list lists a directory)",
                a.path
            )));
        }
        if offset >= size.size {
            return Ok(text_result(
                format!(
                    "[airlock: the file has {} bytes; nothing at offset {offset}]",
                    size.size
                ),
                json!({"size": size.size, "offset": offset, "bytes": 0, "encoding": "utf-8", "next_offset": null}),
            ));
        }
        let (tx, mut rx) = mpsc::channel(crate::actor::STREAM_EVENTS);
        h.ask(|reply| Cmd::Read {
            path,
            tar: false,
            out: tx,
            reply,
        })
        .await
        .map_err(|e| ToolError(format!("cannot read {}: {e}", a.path)))?;
        let mut pos = 0u64;
        let mut buf = Vec::new();
        // Until enough is read; dropping the receiver then cancels the
        // rest of the download.
        while let Some(ev) = rx.recv().await {
            h.poke();
            match ev {
                FileEvent::Data(d) => {
                    let start = pos;
                    pos += d.len() as u64;
                    if pos <= offset {
                        continue;
                    }
                    let from = offset.saturating_sub(start) as usize;
                    let want = max - buf.len();
                    let take = (d.len() - from).min(want);
                    buf.extend_from_slice(&d[from..from + take]);
                    if buf.len() >= max {
                        break;
                    }
                }
                FileEvent::Done(Ok(_)) => break,
                FileEvent::Done(Err(e)) => {
                    return Err(ToolError(format!(
                        "cannot read {}: {}",
                        a.path,
                        crate::actor::fs_text(&e)
                    )))
                }
            }
        }
        drop(rx);
        let end = offset + buf.len() as u64;
        let more = end < size.size;
        let (content, encoding) = match std::str::from_utf8(&buf) {
            Ok(t) => (t.to_string(), "utf-8"),
            // Cut inside a character at the end: still text.
            Err(e) if e.error_len().is_none() && more => (
                String::from_utf8_lossy(&buf[..e.valid_up_to()]).into_owned(),
                "utf-8",
            ),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(&buf),
                "base64",
            ),
        };
        let shown = if encoding == "utf-8" && content.len() < buf.len() {
            content.len()
        } else {
            buf.len()
        };
        let mut text = String::new();
        if encoding == "base64" {
            text.push_str("[airlock: not UTF-8 text; base64 follows]\n");
        }
        text.push_str(&content);
        let next = offset + shown as u64;
        if next < size.size {
            text.push_str(&format!(
                "\n[... airlock: the file has {} bytes; bytes {offset}..{next} shown; read on with offset {next} ...]",
                size.size
            ));
        }
        Ok(text_result(
            text,
            json!({"size": size.size, "offset": offset, "bytes": shown, "encoding": encoding, "next_offset": (next < size.size).then_some(next)}),
        ))
    }

    async fn list(&self, a: ListArgs) -> ToolResult {
        let h = self.handle(&a.sandbox_id)?;
        let max = a.max_entries.unwrap_or(500).clamp(1, 10_000);
        let path = match &a.path {
            Some(p) => abs(p)?,
            None => {
                let work = h
                    .ask(|reply| Cmd::Stat {
                        path: "/work".into(),
                        follow: true,
                        reply,
                    })
                    .await;
                if work.is_ok_and(|s| s.kind == airlock_core::FileKind::Dir) {
                    "/work".into()
                } else {
                    "/".into()
                }
            }
        };
        let mut v = h
            .ask(|reply| Cmd::List {
                path: path.clone(),
                reply,
            })
            .await
            .map_err(|e| ToolError(format!("cannot list {}: {e}", path.display())))?;
        v.sort_by(|a, b| a.name.cmp(&b.name));
        let total = v.len();
        let mut text = format!("{} ({total} entries)\n", path.display());
        let mut items = Vec::new();
        for e in v.iter().take(max) {
            let kind = match e.stat.kind {
                airlock_core::FileKind::File => "file",
                airlock_core::FileKind::Dir => "dir",
                airlock_core::FileKind::Symlink => "symlink",
                airlock_core::FileKind::Other => "other",
            };
            let name = String::from_utf8_lossy(&e.name).into_owned();
            text.push_str(&format!(
                "{kind:7} {:>12} {:04o} {name}\n",
                e.stat.size,
                e.stat.mode & 0o7777
            ));
            items.push(json!({"name": name, "kind": kind, "size": e.stat.size, "mode": format!("{:o}", e.stat.mode & 0o7777)}));
        }
        if total > max {
            text.push_str(&format!(
                "[... airlock: {} more entries not shown (max_entries {max}) ...]\n",
                total - max
            ));
        }
        Ok(text_result(
            text,
            json!({"path": path, "total": total, "entries": items}),
        ))
    }

    async fn task(&self, a: TaskArgs) -> ToolResult {
        let argv = argv_of(&a.command, &a.argv)?;
        let tier = self.tier(a.isolation.as_deref(), a.trust.as_deref())?;
        let timeout = duration(&a.timeout, runs::TASK_TIMEOUT)?;
        let limit = output_limit(a.max_output_bytes)?;
        let max_patch = a.max_patch_bytes.unwrap_or(256 << 10).clamp(1, 16 << 20);
        let req = runs::TaskRequest {
            repo: repo_of(&a.repo)?.to_string_lossy().into_owned(),
            argv,
            isolation: Some(tier.clone()),
            trust: None,
            env: a.env,
            limits: LimitsRequest {
                memory: a.memory,
                timeout: Some(format!("{}ms", timeout.as_millis().max(1))),
                ..Default::default()
            },
            user: None,
            output_limit: Some(limit as u64),
            keep: a.keep,
        };
        let r = runs::run_task(self.svc.clone(), req).await?;
        let mut text = format!("exit_code: {}", r.exit_code);
        if r.timed_out {
            text.push_str(" (timed out: killed)");
        }
        text.push_str(&format!(
            "\nfiles changed: {}\n--- stdout ({} bytes) ---\n{}",
            r.files_changed, r.stdout_bytes, r.stdout
        ));
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "--- stderr ({} bytes) ---\n{}",
            r.stderr_bytes, r.stderr
        ));
        if !text.ends_with('\n') {
            text.push('\n');
        }
        if let Some(id) = &r.sandbox {
            text.push_str(&format!(
                "sandbox_id: {id} (kept; sandbox_destroy removes it)\n"
            ));
        }
        for n in &r.notes {
            text.push_str(&format!("note: {n}\n"));
        }
        // The patch comes last: everything after its header line is the
        // patch (and the note, when it was cut).
        let patch_len = r.patch.len();
        let cut = patch_len > max_patch;
        text.push_str(&format!("--- patch ({patch_len} bytes) ---\n"));
        if cut {
            let mut end = max_patch;
            while !r.patch.is_char_boundary(end) {
                end -= 1;
            }
            text.push_str(&r.patch[..end]);
            text.push_str(&format!(
                "\n[... airlock: the patch has {patch_len} bytes; the first {end} are shown (max_patch_bytes) ...]\n"
            ));
        } else {
            text.push_str(&r.patch);
        }
        Ok(text_result(
            text,
            json!({"exit_code": r.exit_code, "timed_out": r.timed_out, "files_changed": r.files_changed,
                "patch_bytes": patch_len, "patch_truncated": cut, "stdout_bytes": r.stdout_bytes,
                "stderr_bytes": r.stderr_bytes, "truncated": r.truncated, "sandbox_id": r.sandbox,
                "isolation": tier}),
        ))
    }

    async fn destroy(&self, a: IdArgs) -> ToolResult {
        if self.svc.handle(&a.sandbox_id).is_none() {
            return Err(ToolError(match self.svc.db.get(&a.sandbox_id) {
                Ok(Some(r)) => format!("sandbox {} is already {}", a.sandbox_id, r.state),
                _ => format!("no sandbox {}", a.sandbox_id),
            }));
        }
        self.svc
            .stop(&a.sandbox_id, "destroyed through MCP")
            .await?;
        Ok(text_result(
            format!("sandbox {} destroyed", a.sandbox_id),
            json!({"sandbox_id": a.sandbox_id, "destroyed": true}),
        ))
    }

    async fn list_sandboxes(&self, _: NoArgs) -> ToolResult {
        let rows = self
            .svc
            .db
            .list(false)
            .map_err(|e| ToolError(e.to_string()))?;
        let now = crate::state::now() as i64;
        let mut text = format!("{} running sandbox(es)\n", rows.len());
        let mut items = Vec::new();
        for r in rows.iter().take(200) {
            let left = r.expires.map(|e| (e - now).max(0));
            let iso = r
                .spec
                .get("isolation")
                .and_then(Value::as_str)
                .unwrap_or("container")
                .to_string();
            text.push_str(&format!(
                "{} {} {iso} {}\n",
                r.id,
                r.state,
                left.map(|s| format!("{s}s left")).unwrap_or_default()
            ));
            items.push(json!({"sandbox_id": r.id, "state": r.state, "isolation": iso, "seconds_left": left}));
        }
        Ok(text_result(text, json!({"sandboxes": items})))
    }

    async fn dispatch(
        &self,
        name: &str,
        args: Option<serde_json::Map<String, Value>>,
    ) -> ToolResult {
        match name {
            "run" => self.run(parse(args)?).await,
            "sandbox_create" => self.create(parse(args)?).await,
            "sandbox_exec" => self.exec(parse(args)?).await,
            "file_write" => self.write(parse(args)?).await,
            "file_read" => self.read(parse(args)?).await,
            "file_list" => self.list(parse(args)?).await,
            "task" => self.task(parse(args)?).await,
            "sandbox_destroy" => self.destroy(parse(args)?).await,
            "sandbox_list" => self.list_sandboxes(parse(args)?).await,
            other => Err(ToolError(format!("no tool {other:?}"))),
        }
    }
}

/// A repository given to a tool: a relative path is taken from the
/// server's working directory (where the agent started `airlock mcp`).
fn repo_of(r: &str) -> Result<std::path::PathBuf, ToolError> {
    let p = std::path::Path::new(r);
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| ToolError(format!("repo {r}: {e}")))?
            .join(p)
    };
    Ok(runs::repo_dir(&full.to_string_lossy())?)
}

fn abs(p: &str) -> Result<std::path::PathBuf, ToolError> {
    if !p.starts_with('/') || p.contains('\0') {
        return Err(ToolError(format!(
            "path {p:?}: an absolute path inside the sandbox (such as /work/main.py)"
        )));
    }
    Ok(std::path::PathBuf::from(p))
}

const INSTRUCTIONS: &str = "Airlock runs commands in isolated, throw-away sandboxes (no network, no secrets, the host read-only). \
Use `run` for a one-off command (with repo to work on a copy-on-write copy of a directory), `task` to get a git patch of what a command changed in a repository, \
and sandbox_create / sandbox_exec / file_* / sandbox_destroy for several steps in one sandbox. Output is bounded: long output keeps its start and end.";

impl ServerHandler for AirlockMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("airlock", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if !tools().iter().any(|t| t.name == request.name) {
            return Err(ErrorData::invalid_params(
                format!("no tool {:?}", request.name),
                None,
            ));
        }
        let r = match self.dispatch(&request.name, request.arguments).await {
            Ok(r) => r,
            Err(ToolError(msg)) => {
                CallToolResult::error(vec![ContentBlock::text(format!("error: {msg}"))])
            }
        };
        Ok(r.into())
    }
}

/// The streamable HTTP endpoint the daemon serves at /mcp (behind its
/// auth layer: the unix socket's mode, or the bearer token on TCP).
pub fn http_service(
    svc: Arc<Service>,
) -> rmcp::transport::StreamableHttpService<
    AirlockMcp,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    let floor = HTTP_FLOOR.get().copied().unwrap_or("container");
    let handler = AirlockMcp::new(svc, floor);
    // Host checks guard loopback servers without auth against DNS
    // rebinding; here TCP needs the bearer token and the unix socket is
    // not reachable from a browser, so any Host is fine.
    let config = rmcp::transport::StreamableHttpServerConfig::default().disable_allowed_hosts();
    rmcp::transport::StreamableHttpService::new(
        move || Ok(handler.clone()),
        Default::default(),
        config,
    )
}

/// The daemon's `--mcp-trust` (set once at its start).
pub static HTTP_FLOOR: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

#[derive(clap::Parser, Debug)]
#[command(
    name = "airlock mcp",
    about = "Airlock's MCP server over stdio (runs its own service in this process; no daemon needed)"
)]
pub struct StdioArgs {
    /// How far the code the agent runs is trusted: untrusted (microvm),
    /// experimental (container, the default) or own (none). The tools use
    /// this tier and may ask for a stronger one, never a weaker one.
    #[arg(long, value_name = "LEVEL", default_value = "experimental")]
    pub trust: String,
}

/// Moves the protocol's pipes off fds 0 and 1 (which become /dev/null),
/// so that nothing else in the process, nor anything it starts, can write
/// into the protocol stream.
fn take_stdio() -> std::io::Result<(std::fs::File, std::fs::File)> {
    use std::os::fd::FromRawFd;
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) returns a new fd or -1.
    let inp = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
    if inp < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    let out = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
    if out < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds are new and ours alone.
    let (inp, out) = unsafe {
        (
            std::fs::File::from_raw_fd(inp),
            std::fs::File::from_raw_fd(out),
        )
    };
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    use std::os::fd::AsRawFd;
    for fd in [0, 1] {
        // SAFETY: dup2 onto the standard fds, which we own.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((inp, out))
}

/// `airlock mcp`: the MCP server on stdin/stdout, with a service of its
/// own (state in memory); every sandbox it made is stopped when the
/// client closes the pipe.
pub fn main_stdio(args: Vec<String>) -> i32 {
    use clap::Parser;
    let a = match StdioArgs::try_parse_from(std::iter::once("airlock mcp".to_string()).chain(args))
    {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 125 } else { 0 };
        }
    };
    let Some(floor) = floor_of_trust(&a.trust) else {
        eprintln!(
            "airlock: --trust {:?}: untrusted, experimental or own",
            a.trust
        );
        return 125;
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_max_level(tracing::Level::WARN)
        .try_init();
    let (inp, out) = match take_stdio() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("airlock: cannot set up stdio: {e}");
            return 125;
        }
    };
    let db = match crate::state::Db::open(std::path::Path::new(":memory:")) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("airlock: cannot open the state database: {e}");
            return 125;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("airlock: {e}");
            return 125;
        }
    };
    rt.block_on(async move {
        use rmcp::ServiceExt;
        let svc = Service::new(db, None, 0);
        tokio::spawn(svc.clone().reaper());
        let handler = AirlockMcp::new(svc.clone(), floor);
        let transport = (
            tokio::fs::File::from_std(inp),
            tokio::fs::File::from_std(out),
        );
        let code = match handler.serve(transport).await {
            Ok(running) => {
                let _ = running.waiting().await;
                0
            }
            Err(e) => {
                eprintln!("airlock: MCP initialisation failed: {e}");
                125
            }
        };
        svc.stop_all("the MCP client left").await;
        code
    })
}
