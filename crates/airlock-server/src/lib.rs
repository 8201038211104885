//! `airlock serve`: the sandbox service. A daemon on a unix socket (mode
//! 0600) and, with a bearer token only, on TCP; REST API v1 over the core
//! library; state and audit in SQLite; crash recovery at start; a warm
//! pool; graceful shutdown on SIGTERM.

pub mod actor;
pub mod api;
pub mod mcp;
pub mod ports;
pub mod runs;
pub mod service;
pub mod state;

use clap::Parser;
use std::path::{Path, PathBuf};

/// Marks a request that came over TCP (it then needs the token).
#[derive(Clone, Copy)]
pub struct Tcp;

#[derive(Parser, Debug)]
#[command(
    name = "airlock serve",
    about = "Airlock's sandbox service (REST API v1)"
)]
pub struct Args {
    /// The unix socket (default $XDG_RUNTIME_DIR/airlock.sock, or
    /// /run/airlock/airlock.sock for root).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Also listen on TCP (e.g. 127.0.0.1:8080); needs --token-file.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// A file holding the bearer token TCP clients must send.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Keep N sandboxes of the default spec created and idle.
    #[arg(long, value_name = "N", default_value = "0")]
    pub warm: usize,
    /// Where the state database lives (default: airlock's state dir).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The tier of the MCP endpoint (/mcp): untrusted (microvm),
    /// experimental (container) or own (none); its tools may ask for a
    /// stronger tier, never a weaker one.
    #[arg(long, value_name = "LEVEL", default_value = "experimental")]
    pub mcp_trust: String,
}

fn default_socket() -> PathBuf {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/run/airlock/airlock.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("airlock.sock"),
        // SAFETY: getuid cannot fail.
        None => PathBuf::from(format!("/tmp/airlock-{}/airlock.sock", unsafe {
            libc::getuid()
        })),
    }
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("airlock: {msg}");
    std::process::exit(125);
}

/// Binds the unix socket: a stale one (nobody answering) is replaced; a
/// live one is an error (another service runs).
fn bind_unix(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    if let Ok(md) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !md.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another service answers on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    // Created with no access for anyone else from the start.
    // SAFETY: umask only changes this process's file-creation mask.
    let old = unsafe { libc::umask(0o177) };
    let l = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: restores the mask.
    unsafe { libc::umask(old) };
    let l = l?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Marks sandboxes that a crash left as failed, and removes what they left
/// behind: their agents died with the service (parent-death signal); empty
/// cgroups of dead services go.
fn recover(db: &state::Db) -> usize {
    let rows = db.list(false).unwrap_or_default();
    let mut n = 0;
    for r in rows {
        if let Some(pid) = r.agent_pid {
            // Only if it still is an agent (the pid may be someone else's).
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "airlock-agent" {
                // SAFETY: kill with a pid we checked is an airlock agent.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        let _ = db.end(
            &r.id,
            true,
            "the service stopped unexpectedly; recovered at its next start",
        );
        db.audit(&r.id, "recover", serde_json::json!({ "was": r.state }));
        n += 1;
    }
    let layout = airlock_jail::cgroup::Layout::detect();
    airlock_jail::cgroup::reap_stale(&layout);
    n
}

pub fn main() {
    let args = Args::parse();
    match mcp::floor_of_trust(&args.mcp_trust) {
        Some(f) => {
            let _ = mcp::HTTP_FLOOR.set(f);
        }
        None => fail("--mcp-trust: untrusted, experimental or own"),
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| airlock_image::default_state_dir().unwrap_or_else(|e| fail(e)));
    if let Err(e) = std::fs::create_dir_all(&state_dir) {
        fail(format!("cannot create {}: {e}", state_dir.display()));
    }
    let db = state::Db::open(&state_dir.join("service.db"))
        .unwrap_or_else(|e| fail(format!("cannot open the state database: {e}")));
    let recovered = recover(&db);
    if recovered > 0 {
        tracing::warn!(
            recovered,
            "sandboxes left by an earlier crash marked failed"
        );
    }
    let token = match (&args.listen, &args.token_file) {
        (Some(_), None) => {
            fail("--listen needs --token-file: the API is never served on TCP without a token")
        }
        (_, Some(f)) => {
            let t = std::fs::read_to_string(f)
                .unwrap_or_else(|e| fail(format!("cannot read {}: {e}", f.display())));
            let t = t.trim().to_string();
            if t.len() < 16 {
                fail("the token must be at least 16 characters");
            }
            Some(t)
        }
        _ => None,
    };
    let socket = args.socket.clone().unwrap_or_else(default_socket);
    let unix = bind_unix(&socket)
        .unwrap_or_else(|e| fail(format!("cannot listen on {}: {e}", socket.display())));
    unix.set_nonblocking(true).unwrap_or_else(|e| fail(e));
    let tcp = args.listen.as_ref().map(|a| {
        let l = std::net::TcpListener::bind(a)
            .unwrap_or_else(|e| fail(format!("cannot listen on {a}: {e}")));
        l.set_nonblocking(true).unwrap_or_else(|e| fail(e));
        l
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(e));
    rt.block_on(async move {
        let svc = service::Service::new(db, token, args.warm);
        let app = api::router(svc.clone());
        tokio::spawn(svc.clone().reaper());
        if svc.pool_size > 0 {
            tokio::spawn(svc.clone().refill());
        }
        let unix = tokio::net::UnixListener::from_std(unix).unwrap_or_else(|e| fail(e));
        tracing::info!(socket = %socket.display(), "listening");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        {
            let mut rx = stop_rx.clone();
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(unix, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.changed().await;
                    })
                    .await;
            }));
        }
        if let Some(l) = tcp {
            let l = tokio::net::TcpListener::from_std(l).unwrap_or_else(|e| fail(e));
            tracing::info!(addr = ?l.local_addr().ok(), "listening on TCP (bearer token required)");
            let app = app.clone().layer(axum::Extension(Tcp));
            let mut rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(l, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.changed().await;
                    })
                    .await;
            }));
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .unwrap_or_else(|e| fail(e));
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .unwrap_or_else(|e| fail(e));
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping every sandbox");
        svc.stop_all("the service stopped").await;
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
        let _ = std::fs::remove_file(&socket);
        tracing::info!("stopped");
    });
    std::process::exit(0);
}
