//! `airlock oci` (also reached as `airlock-runc`): a runc-compatible
//! command line, so that containerd's runc shim, podman (through conmon)
//! and anything else that drives runc can run airlock sandboxes.
//!
//! Model: `create` forks a *monitor* — the process whose pid goes to
//! `--pid-file`, so the engine (a subreaper) waits for it as it would for
//! runc's init. The monitor creates the sandbox (its agent is the
//! monitor's child), keeps it, relays the init process's stdio (the fds
//! the engine gave `create`, or a pty sent to `--console-socket`), answers
//! the other commands on a unix socket in the state directory
//! (`ROOT/ID/ctl.sock`, mode 0600 in a 0700 directory), and exits with
//! the init process's exit code (128+N after signal N) once it is over,
//! taking the sandbox with it. The init process is parked until `start`:
//! the sandbox exists, its command is not started yet.

mod config;
mod ipc;
mod monitor;
mod netns;
mod rootfs;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use ipc::Lines;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The OCI runtime-spec version airlock reports.
pub const OCI_VERSION: &str = "1.0.2";

#[derive(Parser)]
#[command(
    name = "airlock-runc",
    version,
    about = "airlock as an OCI runtime (runc's command line)"
)]
struct OciCli {
    /// Directory of the containers' state.
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Log file (errors and notes about the spec go there).
    #[arg(long, global = true, value_name = "FILE")]
    log: Option<PathBuf>,
    /// text or json (runc's JSON log lines).
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    /// Not supported: airlock manages cgroups itself (cgroupfs).
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    #[arg(long, global = true, hide = true)]
    debug: bool,
    #[arg(long, global = true, hide = true, value_name = "X")]
    rootless: Option<String>,
    #[arg(long, global = true, hide = true, value_name = "X")]
    criu: Option<String>,
    #[command(subcommand)]
    cmd: OciCmd,
}

#[derive(Subcommand)]
enum OciCmd {
    /// Create a container from a bundle; its process waits for `start`.
    Create {
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        #[arg(long = "no-pivot", hide = true)]
        no_pivot: bool,
        #[arg(long = "no-new-keyring", hide = true)]
        no_new_keyring: bool,
        #[arg(long = "preserve-fds", hide = true, default_value = "0")]
        preserve_fds: u32,
        id: String,
    },
    /// Create and start a container, and (unless --detach) wait for it,
    /// forwarding signals, then delete it (unless --keep); its exit code.
    Run {
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        #[arg(long, short = 'd')]
        detach: bool,
        #[arg(long)]
        keep: bool,
        #[arg(long = "no-pivot", hide = true)]
        no_pivot: bool,
        #[arg(long = "no-new-keyring", hide = true)]
        no_new_keyring: bool,
        #[arg(long = "preserve-fds", hide = true, default_value = "0")]
        preserve_fds: u32,
        id: String,
    },
    /// Resource usage of a container: one `stats` event (--stats), or one
    /// every --interval until it stops (runc's JSON events).
    Events {
        #[arg(long)]
        stats: bool,
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
    /// Start the process of a created container.
    Start { id: String },
    /// The container's state (runtime-spec JSON).
    State { id: String },
    /// Send a signal to the container's process (or all with --all).
    Kill {
        #[arg(long, short = 'a')]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Remove a stopped container (--force: kill it first).
    Delete {
        #[arg(long, short = 'f')]
        force: bool,
        id: String,
    },
    /// Run another process in a running container.
    Exec(Box<ExecArgs>),
    /// The host pids of the container's processes.
    Ps {
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// What this runtime supports (runc's features JSON).
    Features,
    /// Freeze every process of the container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change the container's resource limits.
    Update(UpdateArgs),
    /// List the containers under --root.
    List {
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        #[arg(long, short = 'q')]
        quiet: bool,
    },
}

#[derive(clap::Args)]
struct ExecArgs {
    /// A runtime-spec process (JSON file).
    #[arg(long, short = 'p')]
    process: Option<PathBuf>,
    #[arg(long, short = 'd')]
    detach: bool,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(long, short = 't')]
    tty: bool,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    #[arg(long)]
    cwd: Option<PathBuf>,
    #[arg(long, short = 'e')]
    env: Vec<String>,
    #[arg(long, short = 'u')]
    user: Option<String>,
    #[arg(long = "preserve-fds", hide = true, default_value = "0")]
    preserve_fds: u32,
    #[arg(long = "cap", short = 'c', hide = true)]
    cap: Vec<String>,
    #[arg(long = "no-new-privs", hide = true)]
    no_new_privs: bool,
    #[arg(long = "process-label", hide = true)]
    process_label: Option<String>,
    #[arg(long = "apparmor", hide = true)]
    apparmor: Option<String>,
    #[arg(long = "cgroup", hide = true)]
    cgroup: Option<String>,
    id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
struct UpdateArgs {
    /// A runtime-spec LinuxResources JSON file ("-": stdin).
    #[arg(long, short = 'r')]
    resources: Option<PathBuf>,
    #[arg(long, short = 'm')]
    memory: Option<String>,
    #[arg(long = "pids-limit")]
    pids_limit: Option<i64>,
    #[arg(long = "cpu-quota")]
    cpu_quota: Option<i64>,
    #[arg(long = "cpu-period")]
    cpu_period: Option<u64>,
    id: String,
}

/// The log the engine reads errors from (`--log`, `--log-format`).
#[derive(Clone)]
pub struct Log {
    path: Option<PathBuf>,
    json: bool,
}

impl Log {
    pub fn write(&self, level: &str, msg: &str) {
        let line = if self.json {
            let mut s = serde_json::json!({
                "level": level,
                "msg": msg,
                "time": ipc::rfc3339(std::time::SystemTime::now()),
            })
            .to_string();
            s.push('\n');
            s
        } else {
            format!(
                "time=\"{}\" level={level} msg={:?}\n",
                ipc::rfc3339(std::time::SystemTime::now()),
                msg
            )
        };
        match &self.path {
            Some(p) => {
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(p)
                {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            // Without a log file only errors go to stderr (engines show
            // the runtime's stderr to their users).
            None if level == "error" => {
                let _ = airlock_sys::write_all_fd(2, line.as_bytes());
            }
            None => {}
        }
    }
    pub fn error(&self, msg: &str) {
        self.write("error", msg);
    }
    pub fn warn(&self, msg: &str) {
        self.write("warning", msg);
    }
    pub fn info(&self, msg: &str) {
        self.write("info", msg);
    }
}

/// What the state directory keeps of a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// The monitor's pid (the engine waits for it).
    pub pid: i32,
    /// Its start time (`/proc/PID/stat`), so a reused pid is not taken
    /// for it.
    pub pid_start: u64,
    pub created: String,
    /// created, running, paused, stopped.
    pub status: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The spec's hooks (poststop runs at delete).
    #[serde(default)]
    pub hooks: Option<serde_json::Value>,
    /// The sandbox's PID 1 on the host (its agent), and its start time:
    /// another container of a pod finds its network namespace by it.
    #[serde(default)]
    pub sandbox_pid: i32,
    #[serde(default)]
    pub sandbox_pid_start: u64,
}

impl Saved {
    pub fn alive(&self) -> bool {
        self.pid > 0 && ipc::proc_start(self.pid) == Some((self.pid_start, false))
    }

    /// The status as the runtime-spec has it: the monitor's record while
    /// it lives, `stopped` once it is gone.
    pub fn status_now(&self) -> &str {
        if self.alive() {
            &self.status
        } else {
            "stopped"
        }
    }

    /// runc's `state` output.
    pub fn state_json(&self) -> serde_json::Value {
        let alive = self.alive();
        serde_json::json!({
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "pid": if alive { self.pid } else { 0 },
            "status": self.status_now(),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "annotations": self.annotations,
            "owner": "",
        })
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join("state.json.tmp");
        let data = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&data)?;
        }
        std::fs::rename(&tmp, dir.join("state.json"))
    }
}

fn default_root() -> PathBuf {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        PathBuf::from("/run/airlock-runc")
    } else {
        match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(d) => PathBuf::from(d).join("airlock-runc"),
            None => std::env::temp_dir().join(format!("airlock-runc-{uid}")),
        }
    }
}

/// runc's rule for ids: letters, digits and `_ + - .`, not `.` or `..`.
fn check_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 1024
        || id == "."
        || id == ".."
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b))
    {
        bail!("invalid container id {id:?}: use letters, digits and _ + - .");
    }
    Ok(())
}

struct Ctx {
    root: PathBuf,
    log: Log,
}

impl Ctx {
    fn dir(&self, id: &str) -> Result<PathBuf> {
        check_id(id)?;
        Ok(self.root.join(id))
    }

    fn load(&self, id: &str) -> Result<(PathBuf, Saved)> {
        let dir = self.dir(id)?;
        let data = match std::fs::read(dir.join("state.json")) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("container does not exist: {id}")
            }
            Err(e) => return Err(e).context(format!("read the state of {id}")),
        };
        let s: Saved = serde_json::from_slice(&data).context("state.json")?;
        Ok((dir, s))
    }

    /// One request to a running container's monitor, one answer.
    fn ask(&self, id: &str, req: serde_json::Value) -> Result<serde_json::Value> {
        let (dir, s) = self.load(id)?;
        if !s.alive() {
            bail!("container not running");
        }
        let sock = UnixStream::connect(dir.join("ctl.sock"))
            .with_context(|| format!("connect to the monitor of {id}"))?;
        let mut l = Lines::new(sock);
        l.send(&req)?;
        let ans = l
            .next()?
            .ok_or_else(|| anyhow!("the monitor of {id} closed the connection"))?;
        if let Some(e) = ans.get("error").and_then(|e| e.as_str()) {
            bail!("{e}");
        }
        Ok(ans)
    }
}

/// Entry point: `args` after `airlock oci` (or `airlock-runc`).
pub fn main(args: Vec<std::ffi::OsString>) -> i32 {
    let mut full = vec![std::ffi::OsString::from("airlock-runc")];
    full.extend(args);
    let cli = match OciCli::try_parse_from(full) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let _ = e.print();
            return if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                0
            } else {
                1
            };
        }
    };
    let log = Log {
        path: cli.log.clone(),
        json: cli.log_format == "json",
    };
    let ctx = Ctx {
        root: cli.root.clone().unwrap_or_else(default_root),
        log: log.clone(),
    };
    let r = if cli.systemd_cgroup {
        Err(anyhow!("--systemd-cgroup is not supported: airlock manages its cgroups itself through cgroupfs (podman: --cgroup-manager=cgroupfs; containerd: SystemdCgroup = false)"))
    } else {
        dispatch(&ctx, cli.cmd)
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            let msg = crate::chain(&e);
            log.error(&msg);
            if cli.log.is_some() {
                // The engine shows the log; a human running it by hand
                // reads stderr.
                eprintln!("airlock-runc: {msg}");
            }
            1
        }
    }
}

fn dispatch(ctx: &Ctx, cmd: OciCmd) -> Result<i32> {
    match cmd {
        OciCmd::Create {
            bundle,
            pid_file,
            console_socket,
            id,
            ..
        } => create(ctx, &bundle, pid_file.as_deref(), console_socket, &id),
        OciCmd::Run {
            bundle,
            pid_file,
            console_socket,
            detach,
            keep,
            id,
            ..
        } => run(
            ctx,
            &bundle,
            pid_file.as_deref(),
            console_socket,
            detach,
            keep,
            &id,
        ),
        OciCmd::Events {
            stats,
            interval,
            id,
        } => events(ctx, stats, &interval, &id),
        OciCmd::Start { id } => {
            let (_, s) = ctx.load(&id)?;
            if s.status_now() != "created" {
                bail!("cannot start container {id}: it is {}", s.status_now());
            }
            ctx.ask(&id, serde_json::json!({"op": "start"}))?;
            Ok(0)
        }
        OciCmd::State { id } => {
            let (_, s) = ctx.load(&id)?;
            println!("{:#}", s.state_json());
            Ok(0)
        }
        OciCmd::Kill { all, id, signal } => {
            let sig = parse_signal(&signal)?;
            let (_, s) = ctx.load(&id)?;
            if !s.alive() {
                // runc's words (the shims match them); --all on a stopped
                // container has nothing left to signal, as with runc.
                if all {
                    return Ok(0);
                }
                bail!("container not running");
            }
            ctx.ask(
                &id,
                serde_json::json!({"op": "kill", "signal": sig, "all": all}),
            )?;
            Ok(0)
        }
        OciCmd::Delete { force, id } => delete(ctx, &id, force),
        OciCmd::Exec(a) => exec(ctx, *a),
        OciCmd::Ps { format, id, .. } => {
            let ans = ctx.ask(&id, serde_json::json!({"op": "ps"}))?;
            let pids: Vec<i64> = ans["pids"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p.as_i64()).collect())
                .unwrap_or_default();
            if format == "json" {
                println!("{}", serde_json::json!(pids));
            } else {
                println!("PID");
                for p in pids {
                    println!("{p}");
                }
            }
            Ok(0)
        }
        OciCmd::Features => {
            println!("{:#}", features());
            Ok(0)
        }
        OciCmd::Pause { id } => {
            ctx.ask(&id, serde_json::json!({"op": "pause"}))?;
            Ok(0)
        }
        OciCmd::Resume { id } => {
            ctx.ask(&id, serde_json::json!({"op": "resume"}))?;
            Ok(0)
        }
        OciCmd::Update(a) => update(ctx, a),
        OciCmd::List { format, quiet } => {
            let mut all = Vec::new();
            if let Ok(rd) = std::fs::read_dir(&ctx.root) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Ok((_, s)) = ctx.load(&name) {
                        all.push(s);
                    }
                }
            }
            all.sort_by(|a, b| a.id.cmp(&b.id));
            if quiet {
                for s in &all {
                    println!("{}", s.id);
                }
            } else if format == "json" {
                let v: Vec<serde_json::Value> = all.iter().map(|s| s.state_json()).collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                println!("ID\tPID\tSTATUS\tBUNDLE\tCREATED");
                for s in &all {
                    let j = s.state_json();
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        s.id,
                        j["pid"],
                        s.status_now(),
                        s.bundle.display(),
                        s.created
                    );
                }
            }
            Ok(0)
        }
    }
}

/// `SIGTERM`, `TERM` or `15`.
fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        bail!("invalid signal {s}");
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => bail!("unknown signal {s:?}"),
    };
    Ok(n)
}

fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": ["bind", "rbind", "ro", "rw"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": [],
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
                ],
                "archs": ["SCMP_ARCH_X32", "SCMP_ARCH_X86", "SCMP_ARCH_X86_64"]
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
        },
        "annotations": {
            "run.airlock.capabilities": "none (requests beyond a default container's set are refused)",
            "run.airlock.seccomp": "airlock's allowlist, always; a bundle's profile is installed after it (both apply)",
            "run.airlock.landlock": "on where the kernel has it",
        }
    })
}

/// Writes `pid` to `path` atomically (the engine reads it right after).
fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("--pid-file {} has no file name", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, pid.to_string())
        .with_context(|| format!("write the pid file {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("write the pid file {}", path.display()))
}

fn create(
    ctx: &Ctx,
    bundle: &Path,
    pid_file: Option<&Path>,
    console_socket: Option<PathBuf>,
    id: &str,
) -> Result<i32> {
    let dir = ctx.dir(id)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&ctx.root)
        .with_context(|| format!("create the state directory {}", ctx.root.display()))?;
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("container with id exists: {id}")
        }
        Err(e) => return Err(e).with_context(|| format!("create {}", dir.display())),
    }
    // From here on the directory is ours: removed again if create fails.
    let r = create_in(ctx, &dir, bundle, pid_file, console_socket, id);
    if r.is_err() {
        remove_state_dir(&dir);
    }
    r
}

/// Removes what `create` put in a container's directory, and it: the
/// files, and the mount point of an id-mapped rootfs (detached first, in
/// case its monitor died before it could).
fn remove_state_dir(dir: &Path) {
    for f in ["ctl.sock", "state.json", "state.json.tmp"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let rootfs = dir.join("rootfs");
    if let Ok(c) = std::ffi::CString::new(rootfs.as_os_str().as_encoded_bytes()) {
        // SAFETY: a mount point we made; EINVAL when nothing is mounted.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
    }
    let _ = std::fs::remove_dir(&rootfs);
    let _ = std::fs::remove_dir(dir);
}

fn create_in(
    ctx: &Ctx,
    dir: &Path,
    bundle: &Path,
    pid_file: Option<&Path>,
    console_socket: Option<PathBuf>,
    id: &str,
) -> Result<i32> {
    let bundle = std::path::absolute(bundle).context("the bundle's path")?;
    let spec = oci_spec::runtime::Spec::load(bundle.join("config.json"))
        .map_err(|e| anyhow!("{}: {e}", bundle.join("config.json").display()))?;
    let mapped = config::map(&spec, &bundle).map_err(|why| anyhow!("refused: {why}"))?;
    for n in &mapped.notes {
        ctx.log.info(&format!("{id}: {n}"));
    }
    if mapped.process.terminal && console_socket.is_none() {
        bail!("process.terminal is set but no --console-socket was given");
    }
    let hooks = spec
        .hooks()
        .as_ref()
        .map(|h| serde_json::to_value(h).unwrap_or_default());
    let annotations: BTreeMap<String, String> = spec
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let saved = Saved {
        id: id.to_string(),
        bundle: bundle.clone(),
        rootfs: mapped.rootfs.clone(),
        pid: 0,
        pid_start: 0,
        created: ipc::rfc3339(std::time::SystemTime::now()),
        status: "creating".into(),
        annotations,
        exit_code: None,
        hooks,
        sandbox_pid: 0,
        sandbox_pid_start: 0,
    };
    // A pod's container: the network namespace of its pause container
    // (another airlock sandbox), never the host's.
    let join_net = match &mapped.join_net {
        Some(p) => match netns::resolve(p, &ctx.root).map_err(|why| anyhow!("refused: {why}"))? {
            netns::Decision::Join(fd, whose) => {
                ctx.log.info(&format!(
                    "{id}: joins the network namespace of container {whose} ({})",
                    p.display()
                ));
                Some(fd)
            }
            netns::Decision::Own(note) => {
                ctx.log.info(&format!("{id}: {note}"));
                None
            }
        },
        None => None,
    };
    let (ready_r, ready_w) = airlock_sys::pipe_cloexec().context("pipe")?;
    // SAFETY: this process has a single thread (nothing in `airlock oci`
    // starts one); the child only runs the monitor and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        drop(ready_r);
        // SAFETY: a new session for the monitor (it outlives us).
        unsafe { libc::setsid() };
        let code = monitor::run(monitor::Args {
            dir: dir.to_path_buf(),
            saved,
            mapped,
            console_socket,
            log: ctx.log.clone(),
            ready: ready_w,
            join_net,
        });
        std::process::exit(code);
    }
    drop(ready_w);
    let mut f = std::fs::File::from(ready_r);
    let mut msg = String::new();
    use std::io::Read;
    let _ = f.read_to_string(&mut msg);
    if let Some(rest) = msg.strip_prefix("ok") {
        let _ = rest;
        if let Some(p) = pid_file {
            if let Err(e) = write_pid_file(p, pid) {
                // SAFETY: our child, killed and reaped.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                return Err(e);
            }
        }
        return Ok(0);
    }
    // The monitor failed and exits: reap it.
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    let why = msg.strip_prefix("err ").unwrap_or(&msg).trim();
    bail!(
        "{}",
        if why.is_empty() {
            "the sandbox's monitor died during create"
        } else {
            why
        }
    )
}

/// `run`: create, start, then (unless `detach`) wait for the monitor (our
/// child), forwarding the usual signals to the container, and delete it
/// (unless `keep`).
fn run(
    ctx: &Ctx,
    bundle: &Path,
    pid_file: Option<&Path>,
    console_socket: Option<PathBuf>,
    detach: bool,
    keep: bool,
    id: &str,
) -> Result<i32> {
    create(ctx, bundle, pid_file, console_socket, id)?;
    let (_, s) = ctx.load(id)?;
    let monitor = s.pid;
    // Blocked before the container starts: a signal that comes as soon as
    // it runs is forwarded, not taken by us.
    const FORWARD: [i32; 6] = [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ];
    // SAFETY: a signal set of our own; blocking signals in this (single-
    // threaded) process so that sigtimedwait takes them.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in FORWARD {
            libc::sigaddset(&mut set, sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    if let Err(e) = ctx.ask(id, serde_json::json!({"op": "start"})) {
        let _ = delete(ctx, id, true);
        // SAFETY: reaps our own child (the monitor), gone after delete.
        unsafe { libc::waitpid(monitor, std::ptr::null_mut(), 0) };
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let code = loop {
        let mut st = 0;
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(monitor, &mut st, libc::WNOHANG) };
        if r == monitor {
            break if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                128 + libc::WTERMSIG(st)
            };
        }
        if r < 0 {
            bail!(
                "wait for the container: {}",
                std::io::Error::last_os_error()
            );
        }
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 50_000_000,
        };
        // SAFETY: waits for one of the blocked signals, with a timeout.
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
        if sig > 0 {
            let _ = ctx.ask(
                id,
                serde_json::json!({"op": "kill", "signal": sig, "all": false}),
            );
        }
    };
    if !keep {
        delete(ctx, id, true)?;
    }
    Ok(code)
}

/// Seconds of a Go-style duration (`5s`, `500ms`, `1m`); plain numbers are
/// seconds.
fn parse_interval(s: &str) -> Result<Duration> {
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| anyhow!("invalid interval {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => bail!("invalid interval {s:?}"),
    };
    if !(0.01..=86400.0).contains(&secs) {
        bail!("invalid interval {s:?}");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `events`: runc's `stats` event (the parts airlock measures: CPU time,
/// memory, pids, from the sandbox's cgroup).
fn events(ctx: &Ctx, stats: bool, interval: &str, id: &str) -> Result<i32> {
    let every = parse_interval(interval)?;
    loop {
        let (_, s) = ctx.load(id)?;
        if !s.alive() {
            if stats {
                bail!("container {id} is not running");
            }
            return Ok(0);
        }
        let a = ctx.ask(id, serde_json::json!({"op": "stats"}))?;
        let ev = serde_json::json!({
            "type": "stats",
            "id": id,
            "data": {
                "cpu": {"usage": {"total": a["cpu_usec"].as_u64().map(|u| u * 1000).unwrap_or(0)}},
                "memory": {"usage": {
                    "usage": a["memory_bytes"].as_u64().unwrap_or(0),
                    "limit": a["memory_limit"].as_u64().unwrap_or(0),
                }},
                "pids": {
                    "current": a["pids"].as_u64().unwrap_or(0),
                    "limit": a["pids_limit"].as_u64().unwrap_or(0),
                },
            },
        });
        println!("{ev}");
        if stats {
            return Ok(0);
        }
        std::thread::sleep(every);
    }
}

fn delete(ctx: &Ctx, id: &str, force: bool) -> Result<i32> {
    let (dir, s) = ctx.load(id)?;
    if s.alive() {
        if !force {
            bail!(
                "cannot delete container {id} that is not stopped: {} (use --force)",
                s.status_now()
            );
        }
        let _ = ctx.ask(
            id,
            serde_json::json!({"op": "kill", "signal": 9, "all": true}),
        );
        let end = Instant::now() + Duration::from_secs(10);
        while s.alive() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        if s.alive() {
            // SAFETY: the monitor, checked by start time just now; its
            // agent dies with it (parent-death signal).
            unsafe { libc::kill(s.pid, libc::SIGKILL) };
            let end = Instant::now() + Duration::from_secs(5);
            while s.alive() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    if let Some(h) = &s.hooks {
        if let Some(list) = h.get("poststop").and_then(|v| v.as_array()) {
            let mut st = s.state_json();
            st["status"] = "stopped".into();
            // The container is gone: no pid a hook could enter (never the
            // monitor's, whose namespaces are the host's).
            st["pid"] = 0.into();
            for hook in list {
                if let Err(e) = monitor::run_hook(hook, &st) {
                    ctx.log.warn(&format!("{id}: poststop hook: {e}"));
                }
            }
        }
    }
    remove_state_dir(&dir);
    // Groups left by a monitor that was killed (empty once its sandbox is
    // gone; a live one's are never touched).
    airlock_jail::cgroup::reap_stale(&airlock_jail::cgroup::Layout::detect());
    Ok(0)
}

fn update(ctx: &Ctx, a: UpdateArgs) -> Result<i32> {
    let mut memory: Option<u64> = None;
    let mut pids: Option<u64> = None;
    let mut cpus: Option<f64> = None;
    if let Some(r) = &a.resources {
        let data = if r.as_os_str() == "-" {
            let mut v = Vec::new();
            use std::io::Read;
            std::io::stdin().read_to_end(&mut v)?;
            v
        } else {
            std::fs::read(r).with_context(|| format!("read {}", r.display()))?
        };
        let res: oci_spec::runtime::LinuxResources =
            serde_json::from_slice(&data).context("the resources JSON")?;
        if let Some(m) = res.memory().as_ref().and_then(|m| m.limit()) {
            if m > 0 {
                memory = Some(m as u64);
            }
        }
        if let Some(p) = res.pids().as_ref().map(|p| p.limit()) {
            if p > 0 {
                pids = Some(p as u64);
            }
        }
        if let Some(c) = res.cpu() {
            if let (Some(q), Some(p)) = (c.quota(), c.period()) {
                if q > 0 && p > 0 {
                    cpus = Some(q as f64 / p as f64);
                }
            }
        }
    }
    if let Some(m) = &a.memory {
        memory = Some(airlock_spec::parse_size(m).map_err(|e| anyhow!("--memory: {e}"))?);
    }
    if let Some(p) = a.pids_limit {
        if p > 0 {
            pids = Some(p as u64);
        }
    }
    if let Some(q) = a.cpu_quota {
        if q > 0 {
            cpus = Some(q as f64 / a.cpu_period.unwrap_or(100_000).max(1) as f64);
        }
    }
    if memory.is_some_and(|m| m < airlock_spec::MIN_MEMORY) {
        bail!("memory limit below airlock's minimum of 6M");
    }
    if pids.is_some_and(|p| p < airlock_spec::MIN_PIDS) {
        bail!("pids limit below 2");
    }
    ctx.ask(
        &a.id,
        serde_json::json!({"op": "update", "memory": memory, "pids": pids, "cpus": cpus}),
    )?;
    Ok(0)
}

/// The process `exec` runs: `--process FILE`, or the command line.
fn exec_process(a: &ExecArgs) -> Result<serde_json::Value> {
    if let Some(p) = &a.process {
        let data = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
        let proc: oci_spec::runtime::Process =
            serde_json::from_slice(&data).context("the --process JSON")?;
        return Ok(serde_json::to_value(proc)?);
    }
    if a.command.is_empty() {
        bail!("exec needs --process FILE or a command after the id");
    }
    let (uid, gid) = match &a.user {
        Some(u) => {
            let (x, y) = u.split_once(':').unwrap_or((u, "0"));
            (
                x.parse::<u32>().context("--user")?,
                y.parse::<u32>().context("--user")?,
            )
        }
        None => (0, 0),
    };
    Ok(serde_json::json!({
        "args": a.command,
        "env": a.env,
        "cwd": a.cwd.clone().unwrap_or_else(|| PathBuf::from("/")),
        "user": {"uid": uid, "gid": gid},
        "terminal": a.tty,
    }))
}

fn exec(ctx: &Ctx, a: ExecArgs) -> Result<i32> {
    let (dir, s) = ctx.load(&a.id)?;
    if !s.alive() || s.status != "running" {
        bail!(
            "cannot exec in container {}: it is {}",
            a.id,
            s.status_now()
        );
    }
    let mut process = exec_process(&a)?;
    if a.tty {
        process["terminal"] = true.into();
    }
    let tty = process["terminal"].as_bool().unwrap_or(false);
    // The pty's slave stays here (the waiter's controlling terminal, for
    // resizes); the monitor gets it as the process's stdio.
    let slave: Option<OwnedFd> = if tty {
        let sock = a
            .console_socket
            .as_ref()
            .ok_or_else(|| anyhow!("a terminal needs --console-socket"))?;
        let (m, sl) = ipc::openpty().context("openpty")?;
        ipc::make_raw(sl.as_raw_fd());
        ipc::send_console(sock, m.as_raw_fd())
            .with_context(|| format!("send the pty to {}", sock.display()))?;
        Some(sl)
    } else {
        None
    };
    let fds: Vec<i32> = match &slave {
        Some(sl) => vec![sl.as_raw_fd()],
        None => vec![0, 1, 2],
    };
    let sock = UnixStream::connect(dir.join("ctl.sock"))
        .with_context(|| format!("connect to the monitor of {}", a.id))?;
    let mut req = serde_json::json!({"op": "exec", "process": process}).to_string();
    req.push('\n');
    ipc::send_with_fds(sock.as_raw_fd(), req.as_bytes(), &fds)?;
    let mut lines = Lines::new(sock);
    let ans = lines
        .next()?
        .ok_or_else(|| anyhow!("the monitor closed the connection"))?;
    if let Some(e) = ans.get("error").and_then(|e| e.as_str()) {
        bail!("{e}");
    }
    if a.detach {
        // The waiter: the engine waits for its pid as for runc's exec'd
        // process; it exits with the process's code.
        // SAFETY: single-threaded; the child only waits and exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            bail!("fork: {}", std::io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: a session of its own; the pty (if any) becomes its
            // controlling terminal so that resizes reach it as SIGWINCH.
            unsafe {
                libc::setsid();
                if let Some(sl) = &slave {
                    libc::ioctl(sl.as_raw_fd(), libc::TIOCSCTTY, 0);
                }
                // The engine's stdio is the process's, not ours.
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    for fd in 0..3 {
                        libc::dup2(null, fd);
                    }
                    if null > 2 {
                        libc::close(null);
                    }
                }
            }
            std::process::exit(wait_exec(lines, slave.as_ref()));
        }
        if let Some(p) = &a.pid_file {
            write_pid_file(p, pid)?;
        }
        return Ok(0);
    }
    Ok(wait_exec(lines, None))
}

/// Waits for an exec'd process's exit, forwarding our signals (and the
/// terminal's size) to it; its exit code.
fn wait_exec(mut lines: Lines, tty: Option<&OwnedFd>) -> i32 {
    let sigs = match crate::stdio::SignalFd::new(tty.is_some()) {
        Ok(s) => s,
        Err(_) => return 125,
    };
    loop {
        match lines.take() {
            Ok(Some(v)) => {
                if let Some(c) = v.get("exited").and_then(|c| c.as_i64()) {
                    if let Some(t) = tty {
                        ipc::drain_tty(t.as_raw_fd(), Duration::from_secs(2));
                    }
                    return c as i32;
                }
                continue;
            }
            Ok(None) => {}
            Err(_) => return 125,
        }
        let mut fds = [
            libc::pollfd {
                fd: lines.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sigs.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: a valid pollfd array.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            continue;
        }
        if fds[1].revents != 0 {
            for s in sigs.read() {
                let msg = if s == libc::SIGWINCH {
                    match tty.and_then(|t| ipc::winsize_of(t.as_raw_fd())) {
                        Some((r, c)) => serde_json::json!({"op": "resize", "rows": r, "cols": c}),
                        None => continue,
                    }
                } else {
                    serde_json::json!({"op": "signal", "signal": s})
                };
                let _ = lines.send(&msg);
            }
        }
        if fds[0].revents != 0 {
            let mut buf = [0u8; 4096];
            use std::io::Read;
            match lines.sock.read(&mut buf) {
                Ok(0) | Err(_) => return 255,
                Ok(n) => lines.feed(&buf[..n]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), 15);
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("usr1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse_signal("2").unwrap(), 2);
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("SIGNOPE").is_err());
    }

    #[test]
    fn ids_follow_runc() {
        assert!(check_id("abc-1_2+3.4").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "../x"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_takes_what_engines_pass() {
        for args in [
            &[
                "--root",
                "/r",
                "--log",
                "/l",
                "--log-format=json",
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "/p",
                "--console-socket",
                "/s",
                "id",
            ][..],
            &[
                "--log-format",
                "json",
                "exec",
                "--process",
                "/p.json",
                "--detach",
                "--pid-file",
                "/p",
                "--tty",
                "--console-socket",
                "/s",
                "id",
            ],
            &["kill", "--all", "id", "KILL"],
            &["kill", "id"],
            &["delete", "--force", "id"],
            &["ps", "--format", "json", "id"],
            &["update", "--resources", "-", "id"],
            &["--systemd-cgroup", "state", "id"],
        ] {
            let mut v = vec!["airlock-runc"];
            v.extend_from_slice(args);
            assert!(OciCli::try_parse_from(v).is_ok(), "{args:?}");
        }
    }
}
