//! The CLI over the service: `airlock serve` and `create`, `exec`, `cp`,
//! `ls`, `inspect`, `rm`, `logs`, `port`, `pause`, `resume`.

use crate::client::{base64_decode, Body, Client, WsFrame};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

/// Exit code when airlock itself fails.
const EXIT_AIRLOCK: i32 = 125;

#[derive(Args, Clone)]
pub struct CreateArgs {
    /// Isolation tier: container (default), none, landlock, microvm.
    #[arg(long, default_value = "container", conflicts_with = "trust")]
    isolation: String,
    /// Pick the tier by how far you trust the code: untrusted (microvm),
    /// experimental (container), own (none), or as the trust policy
    /// (/etc/airlock/config.toml, ~/.config/airlock/config.toml) says.
    #[arg(long, value_parser = ["untrusted", "experimental", "own"])]
    trust: Option<String>,
    /// Root filesystem image (host).
    #[arg(long)]
    image: Option<String>,
    /// Mount a host path: SRC:DST[:ro|rw|overlay]. Repeatable.
    #[arg(long = "mount", short = 'v', value_name = "SRC:DST[:MODE]")]
    mounts: Vec<String>,
    /// Working directory inside the sandbox.
    #[arg(long, short = 'w', value_name = "DIR")]
    workdir: Option<String>,
    /// Set KEY=VALUE, or copy KEY from here. Repeatable.
    #[arg(long = "env", short = 'e', value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Lifetime (default 1h); `airlock` extends it with the API.
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Stop after this long without activity.
    #[arg(long, value_name = "DURATION")]
    idle_timeout: Option<String>,
    /// Memory limit (512M, 1G).
    #[arg(long, short = 'm', value_name = "SIZE")]
    memory: Option<String>,
    /// Maximum processes and threads.
    #[arg(long, value_name = "N")]
    pids: Option<u64>,
    /// CPU limit in cores.
    #[arg(long, value_name = "CORES")]
    cpus: Option<f64>,
    /// Size of the writable layer.
    #[arg(long, value_name = "SIZE")]
    disk: Option<String>,
    /// Hostname inside.
    #[arg(long)]
    hostname: Option<String>,
    /// User inside: sandbox, root, nobody, UID[:GID].
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// A label KEY=VALUE. Repeatable.
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Network: none (default), all, or allowlist (implied by --allow-host).
    #[arg(long, value_name = "none|all|allowlist")]
    net: Option<String>,
    /// Let the sandbox reach NAME, *.SUFFIX or a CIDR, with an optional
    /// :PORT, through the egress proxy. Repeatable.
    #[arg(long = "allow-host", value_name = "NAME|*.SUFFIX|CIDR[:PORT]")]
    allow_host: Vec<String>,
    /// Never reach these (wins over --allow-host). Repeatable.
    #[arg(long = "deny-host", value_name = "NAME|*.SUFFIX|CIDR[:PORT]")]
    deny_host: Vec<String>,
    /// The egress proxy resolves NAME to IP. Repeatable.
    #[arg(long = "dns-override", value_name = "NAME=IP")]
    dns_override: Vec<String>,
    #[command(flatten)]
    broker: crate::secrets::BrokerArgs,
    /// Print nothing but the id.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(Args)]
pub struct ExecArgs {
    /// Keep stdin open and send it to the command.
    #[arg(long, short = 'i')]
    interactive: bool,
    /// A terminal (with -i: interactive, as `docker exec -it`).
    #[arg(long, short = 't')]
    tty: bool,
    /// Working directory inside.
    #[arg(long, short = 'w', value_name = "DIR")]
    workdir: Option<String>,
    /// Set KEY=VALUE, or copy KEY from here. Repeatable.
    #[arg(long = "env", short = 'e', value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// User inside.
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// The sandbox.
    id: String,
    /// The command (after --).
    #[arg(trailing_var_arg = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Args)]
pub struct CpArgs {
    /// A local path, or ID:PATH.
    src: String,
    /// A local path, or ID:PATH.
    dst: String,
}

#[derive(Args)]
pub struct LsArgs {
    /// Include stopped and failed sandboxes.
    #[arg(long, short = 'a')]
    all: bool,
    /// Only those with this label KEY=VALUE.
    #[arg(long, short = 'l')]
    label: Option<String>,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Only ids.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(Args)]
pub struct PortArgs {
    pub id: String,
    /// The port inside the sandbox.
    pub port: u16,
    /// Guard it with a token (clients send `AIRLOCK-TOKEN <token>\n` first).
    #[arg(long)]
    pub token: bool,
}

fn env_pairs(env: &[String]) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut m = serde_json::Map::new();
    for e in env {
        match e.split_once('=') {
            Some((k, v)) => {
                m.insert(k.into(), v.into());
            }
            None => {
                if let Ok(v) = std::env::var(e) {
                    m.insert(e.clone(), v.into());
                }
            }
        }
    }
    Ok(m)
}

fn sandbox_path(id: &str) -> String {
    format!("/v1/sandboxes/{id}")
}

/// `airlock serve ...`: runs the service program installed beside airlock.
pub fn serve(args: Vec<String>) -> i32 {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("airlock-serve")));
    let Some(exe) = exe.filter(|p| p.exists()) else {
        eprintln!("airlock: the airlock-serve program is not installed beside airlock");
        return EXIT_AIRLOCK;
    };
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&exe).args(args).exec();
    eprintln!("airlock: cannot run {}: {err}", exe.display());
    EXIT_AIRLOCK
}

pub fn create(a: CreateArgs) -> Result<i32> {
    let c = Client::new()?;
    let cwd = std::env::current_dir()?;
    let mut mounts = Vec::new();
    for m in &a.mounts {
        let parsed = airlock_spec::parse_mount(m)?;
        let src = if parsed.source.is_absolute() {
            parsed.source
        } else {
            cwd.join(parsed.source)
        };
        mounts.push(serde_json::json!({
            "source": src,
            "target": parsed.target,
            "mode": match parsed.mode {
                airlock_spec::MountMode::Ro => "ro",
                airlock_spec::MountMode::Rw => "rw",
                airlock_spec::MountMode::Overlay => "overlay",
            },
        }));
    }
    let mut labels = serde_json::Map::new();
    for l in &a.labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| anyhow!("a label is KEY=VALUE: {l}"))?;
        labels.insert(k.into(), v.into());
    }
    let mut limits = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        if !v.is_null() {
            limits.insert(k.into(), v);
        }
    };
    put("memory", serde_json::json!(a.memory));
    put("pids", serde_json::json!(a.pids));
    put("cpus", serde_json::json!(a.cpus));
    put("disk", serde_json::json!(a.disk));
    put("timeout", serde_json::json!(a.timeout));
    put("idle_timeout", serde_json::json!(a.idle_timeout));
    let isolation = match &a.trust {
        Some(t) => {
            use airlock_core::config::{Trust, TrustPolicy};
            let policy = TrustPolicy::load().context("the trust policy (--trust)")?;
            policy.tier(Trust::parse(t)?).name().to_string()
        }
        None => a.isolation.clone(),
    };
    let mut req = serde_json::json!({
        "isolation": isolation,
        "mounts": mounts,
        "env": env_pairs(&a.env)?,
        "limits": limits,
        "labels": labels,
    });
    if a.net.is_some() || !a.allow_host.is_empty() || !a.deny_host.is_empty() || a.broker.any() {
        req["network"] = serde_json::json!({
            "mode": a.net.clone().unwrap_or_else(|| "allowlist".into()),
            "allow": a.allow_host,
            "deny": a.deny_host,
            "dns_override": a.dns_override,
        });
        a.broker.api_fields(&mut req["network"])?;
    }
    for (k, v) in [
        ("image", &a.image),
        ("workdir", &a.workdir),
        ("hostname", &a.hostname),
        ("user", &a.user),
    ] {
        if let Some(v) = v {
            req[k] = serde_json::json!(v);
        }
    }
    let v = c.post("/v1/sandboxes", req)?;
    if !a.quiet {
        if let Some(n) = v.get("notes").and_then(|n| n.as_array()) {
            for n in n {
                eprintln!("airlock: note: {}", n.as_str().unwrap_or(""));
            }
        }
    }
    println!("{}", v["id"].as_str().unwrap_or(""));
    Ok(0)
}

/// The exit code a process's end means (as `airlock run`).
fn exit_of(ev: &serde_json::Value) -> Option<i32> {
    match ev.get("type").and_then(|t| t.as_str()) {
        Some("exit") => ev.get("code").and_then(|c| c.as_i64()).map(|c| c as i32),
        Some("error") => {
            eprintln!(
                "airlock: cannot run the command: {}",
                ev.get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("failed")
            );
            Some(ev.get("code").and_then(|c| c.as_i64()).unwrap_or(126) as i32)
        }
        _ => None,
    }
}

/// Prints a stream of events; returns the exit code.
fn follow(body: &mut dyn BufRead) -> Result<i32> {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut line = String::new();
    loop {
        line.clear();
        if body.read_line(&mut line)? == 0 {
            bail!("the service ended the stream before the command exited");
        }
        let ev: serde_json::Value = match serde_json::from_str(line.trim()) {
            Ok(v) => v,
            Err(_) => continue,
        };
        let data = || -> Vec<u8> {
            if let Some(t) = ev.get("text").and_then(|t| t.as_str()) {
                t.as_bytes().to_vec()
            } else {
                base64_decode(ev.get("b64").and_then(|t| t.as_str()).unwrap_or(""))
            }
        };
        match ev.get("type").and_then(|t| t.as_str()) {
            Some("stdout") => {
                let _ = out.write_all(&data());
                let _ = out.flush();
            }
            Some("stderr") => {
                let _ = err.write_all(&data());
                let _ = err.flush();
            }
            _ => {
                if let Some(code) = exit_of(&ev) {
                    return Ok(code);
                }
            }
        }
    }
}

pub fn exec(a: ExecArgs) -> Result<i32> {
    let c = Client::new()?;
    let base = sandbox_path(&a.id);
    let mut req = serde_json::json!({
        "argv": a.command,
        "env": env_pairs(&a.env)?,
    });
    if let Some(w) = &a.workdir {
        req["cwd"] = w.clone().into();
    }
    if let Some(u) = &a.user {
        req["user"] = u.clone().into();
    }
    if a.tty {
        return exec_tty(&c, &base, req);
    }
    if !a.interactive {
        let mut r = c
            .request("POST", &format!("{base}/processes"), Body::Json(req))?
            .ok()?;
        return follow(&mut r.body);
    }
    // With stdin: start it holding its output, then read the output and
    // send stdin side by side.
    req["background"] = true.into();
    req["hold_output"] = true.into();
    req["stdin"] = true.into();
    let v = c.post(&format!("{base}/processes"), req)?;
    let pid = v["id"].as_u64().ok_or_else(|| anyhow!("no process id"))?;
    let ep = c.ep.clone();
    let stdin_path = format!("{base}/processes/{pid}/stdin");
    let close_path = format!("{base}/processes/{pid}/stdin/close");
    std::thread::spawn(move || {
        let c = Client { ep };
        let r = c.request(
            "POST",
            &stdin_path,
            Body::Reader(Box::new(std::io::stdin())),
        );
        let _ = r.and_then(|r| r.ok());
        let _ = c.request("POST", &close_path, Body::None);
    });
    let mut r = c
        .request(
            "GET",
            &Client::url(
                &format!("{base}/processes/{pid}/events"),
                &[("primary", "true")],
            ),
            Body::None,
        )?
        .ok()?;
    follow(&mut r.body)
}

fn winsize() -> (u16, u16) {
    // SAFETY: winsize is plain data filled by the kernel.
    let mut w: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize.
    if unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut w) } == 0 && w.ws_row > 0 {
        (w.ws_row, w.ws_col)
    } else {
        (24, 80)
    }
}

fn exec_tty(c: &Client, base: &str, mut req: serde_json::Value) -> Result<i32> {
    let (rows, cols) = winsize();
    req["tty"] = serde_json::json!({ "rows": rows, "cols": cols });
    req["background"] = true.into();
    req["stdin"] = true.into();
    let v = c.post(&format!("{base}/processes"), req)?;
    let pid = v["id"].as_u64().ok_or_else(|| anyhow!("no process id"))?;
    let mut ws = c.websocket(&format!("{base}/processes/{pid}/pty"))?;
    let raw = crate::stdio::RawMode::enter();
    let mut w = ws.writer()?;
    let mut w2 = ws.writer()?;
    // Input, and resizes (polled: SIGWINCH belongs to the main loop here).
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut last = winsize();
        loop {
            let mut p = libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut p, 1, 200) };
            let now = winsize();
            if now != last {
                last = now;
                let _ = w2.text(&serde_json::json!({ "resize": [now.0, now.1] }).to_string());
            }
            if n <= 0 {
                continue;
            }
            match std::io::stdin().read(&mut buf) {
                Ok(0) | Err(_) => {
                    // End of input (the terminal stays: output may follow).
                    let _ = w.text(r#"{"eof":true}"#);
                    break;
                }
                Ok(k) => {
                    if w.binary(&buf[..k]).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut out = std::io::stdout();
    let code = loop {
        match ws.read() {
            Ok(WsFrame::Binary(b)) => {
                let _ = out.write_all(&b);
                let _ = out.flush();
            }
            Ok(WsFrame::Text(t)) => {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) {
                    if let Some(c) = v.get("exit").and_then(|c| c.as_i64()) {
                        break c as i32;
                    }
                }
            }
            Ok(WsFrame::Close) | Err(_) => break EXIT_AIRLOCK,
        }
    };
    drop(raw);
    Ok(code)
}

/// `ID:PATH` → (id, path).
fn remote(s: &str) -> Option<(&str, &str)> {
    let (id, p) = s.split_once(':')?;
    (id.starts_with("sb-") && p.starts_with('/')).then_some((id, p))
}

pub fn cp(a: CpArgs) -> Result<i32> {
    let c = Client::new()?;
    match (remote(&a.src), remote(&a.dst)) {
        (None, Some((id, dst))) => {
            let src = PathBuf::from(&a.src);
            let md = std::fs::metadata(&src)
                .with_context(|| format!("cannot read {}", src.display()))?;
            let base = sandbox_path(id);
            if md.is_dir() {
                // The directory's contents go into DST (made if needed).
                let mut tar = Vec::new();
                {
                    let mut b = tar::Builder::new(&mut tar);
                    b.follow_symlinks(false);
                    let pack = |b: &mut tar::Builder<&mut Vec<u8>>| -> std::io::Result<()> {
                        for e in std::fs::read_dir(&src)? {
                            let e = e?;
                            let name = e.file_name();
                            if e.file_type()?.is_dir() {
                                b.append_dir_all(&name, e.path())?;
                            } else {
                                b.append_path_with_name(e.path(), &name)?;
                            }
                        }
                        Ok(())
                    };
                    pack(&mut b).with_context(|| format!("cannot pack {}", src.display()))?;
                    b.finish()?;
                }
                c.request(
                    "PUT",
                    &Client::url(&format!("{base}/files/tar"), &[("path", dst)]),
                    Body::Bytes(&tar),
                )?
                .json()?;
            } else {
                let dst = if dst.ends_with('/') {
                    format!(
                        "{dst}{}",
                        src.file_name()
                            .map(|n| n.to_string_lossy())
                            .unwrap_or_default()
                    )
                } else {
                    dst.to_string()
                };
                use std::os::unix::fs::PermissionsExt;
                let mode = format!("{:o}", md.permissions().mode() & 0o777);
                let f = std::fs::File::open(&src)?;
                c.request(
                    "PUT",
                    &Client::url(&format!("{base}/files"), &[("path", &dst), ("mode", &mode)]),
                    Body::Reader(Box::new(f)),
                )?
                .json()?;
            }
            Ok(0)
        }
        (Some((id, src)), None) => {
            let base = sandbox_path(id);
            let st = c.get(&Client::url(
                &format!("{base}/files/stat"),
                &[("path", src), ("follow", "true")],
            ))?;
            let dst = PathBuf::from(&a.dst);
            if st["kind"] == "dir" {
                let r = c
                    .request(
                        "GET",
                        &Client::url(&format!("{base}/files/tar"), &[("path", src)]),
                        Body::None,
                    )?
                    .ok()?;
                std::fs::create_dir_all(&dst)?;
                let mut ar = tar::Archive::new(r.body);
                ar.set_overwrite(true);
                for e in ar.entries()? {
                    let mut e = e?;
                    // unpack_in refuses paths that leave `dst`.
                    e.unpack_in(&dst)?;
                }
            } else {
                let target = if dst.is_dir() {
                    dst.join(Path::new(src).file_name().unwrap_or_default())
                } else {
                    dst
                };
                let mut r = c
                    .request(
                        "GET",
                        &Client::url(&format!("{base}/files"), &[("path", src)]),
                        Body::None,
                    )?
                    .ok()?;
                let mut f = std::fs::File::create(&target)
                    .with_context(|| format!("cannot write {}", target.display()))?;
                std::io::copy(&mut r.body, &mut f)?;
            }
            Ok(0)
        }
        _ => bail!(
            "one side is a local path and the other ID:/PATH (e.g. airlock cp ./repo sb-...:/work)"
        ),
    }
}

fn age(secs: i64) -> String {
    let d = (crate_now() - secs).max(0);
    match d {
        0..=59 => format!("{d}s ago"),
        60..=3599 => format!("{}m ago", d / 60),
        _ => format!("{}h ago", d / 3600),
    }
}

fn crate_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn ls(a: LsArgs) -> Result<i32> {
    let c = Client::new()?;
    let mut q = Vec::new();
    if a.all {
        q.push(("all", "true"));
    }
    if let Some(l) = &a.label {
        q.push(("label", l.as_str()));
    }
    let v = c.get(&Client::url("/v1/sandboxes", &q))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let rows = v.as_array().cloned().unwrap_or_default();
    if a.quiet {
        for r in rows {
            println!("{}", r["id"].as_str().unwrap_or(""));
        }
        return Ok(0);
    }
    println!("{:<20} {:<9} {:<12} LABELS", "ID", "STATE", "CREATED");
    for r in rows {
        let labels: Vec<String> = r["labels"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{:<20} {:<9} {:<12} {}",
            r["id"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            age(r["created"].as_i64().unwrap_or(0)),
            labels.join(",")
        );
    }
    Ok(0)
}

pub fn inspect(id: &str) -> Result<i32> {
    let c = Client::new()?;
    let mut v = c.get(&sandbox_path(id))?;
    if v["state"] == "running" || v["state"] == "paused" {
        if let Ok(u) = c.get(&format!("{}/usage", sandbox_path(id))) {
            v["usage"] = u;
        }
        if let Ok(p) = c.get(&format!("{}/processes", sandbox_path(id))) {
            v["processes"] = p;
        }
    }
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(0)
}

pub fn rm(ids: &[String]) -> Result<i32> {
    let c = Client::new()?;
    let mut code = 0;
    for id in ids {
        match c.request("DELETE", &sandbox_path(id), Body::None)?.ok() {
            Ok(_) => println!("{id}"),
            Err(e) => {
                eprintln!("airlock: {id}: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

pub fn logs(id: &str, audit: bool) -> Result<i32> {
    let c = Client::new()?;
    if audit {
        // The audit log: one JSON object per line (execs, file writes,
        // egress decisions, ...).
        let v = c.get(&format!("{}/audit", sandbox_path(id)))?;
        for row in v.as_array().into_iter().flatten() {
            println!("{row}");
        }
        return Ok(0);
    }
    let r = c
        .request("GET", &format!("{}/logs", sandbox_path(id)), Body::None)?
        .ok()?;
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    for line in r.body.lines() {
        let line = line?;
        let ev: serde_json::Value = serde_json::from_str(&line)?;
        let data = match ev.get("text").and_then(|t| t.as_str()) {
            Some(t) => t.as_bytes().to_vec(),
            None => base64_decode(ev.get("b64").and_then(|t| t.as_str()).unwrap_or("")),
        };
        if ev["type"] == "stderr" {
            err.write_all(&data)?;
        } else {
            out.write_all(&data)?;
        }
    }
    Ok(0)
}

pub fn port(a: PortArgs) -> Result<i32> {
    let c = Client::new()?;
    let v = c.post(
        &format!("{}/ports", sandbox_path(&a.id)),
        serde_json::json!({ "port": a.port, "token": a.token }),
    )?;
    println!(
        "{}:{}",
        v["host"].as_str().unwrap_or("127.0.0.1"),
        v["host_port"]
    );
    if let Some(t) = v["token"].as_str() {
        eprintln!("airlock: token: {t} (send `AIRLOCK-TOKEN {t}` and a newline first)");
    }
    Ok(0)
}

pub fn pause_resume(id: &str, pause: bool) -> Result<i32> {
    let c = Client::new()?;
    c.request(
        "POST",
        &format!(
            "{}/{}",
            sandbox_path(id),
            if pause { "pause" } else { "resume" }
        ),
        Body::None,
    )?
    .ok()?;
    Ok(0)
}
