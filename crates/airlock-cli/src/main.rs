//! `airlock`: run untrusted code in a fresh, isolated, ephemeral sandbox.

mod client;
mod doctor;
mod image;
mod oci;
mod remote;
mod run;
mod secrets;
mod stdio;

use airlock_spec::{
    parse_duration, parse_env, parse_mount, parse_size, EnvArg, Image, Isolation, Mount,
    SandboxSpec,
};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Exit code when airlock itself fails (docker's convention).
const EXIT_AIRLOCK: i32 = 125;

#[derive(Parser)]
#[command(
    name = "airlock",
    version,
    about = "Run untrusted code in a fresh, isolated, ephemeral sandbox"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a command in a new sandbox; exits with the command's exit code.
    #[command(
        after_help = "Exit codes: the command's own; 128+N if killed by signal N; 124 on timeout; \
125 if airlock itself failed; 126 if the command cannot be executed; 127 if it is not found.\n\n\
Examples:\n  airlock run -- python3 -c 'print(1)'\n  airlock run --mount ./repo:/work:overlay --workdir /work --timeout 5m --memory 1G --pids 256 --cpus 1 -- cargo test\n  airlock run --image py -- python3 -c 'print(1)'\n  airlock run --isolation none -- make\n  airlock run --isolation landlock -- make   (hosts without user namespaces; weaker)"
    )]
    Run(Box<RunArgs>),
    /// Check what this machine's kernel offers each tier, with fixes.
    Doctor {
        /// The same checks as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Manage images: ls, rm, inspect, import, pull, build.
    Image {
        #[command(subcommand)]
        cmd: image::ImageCmd,
    },
    /// Run a command on a copy-on-write copy of a repository and, with
    /// --patch, write what it changed as a git patch.
    #[command(
        after_help = "The repository (--repo DIR) appears at /work, where the command starts; DIR itself is never written. \
--patch FILE writes a unified diff in git's format (binary files, new, deleted and renamed files, modes) that `git apply` reproduces on a clean copy. \
Every `airlock run` flag applies.\n\nExample:\n  airlock task --repo . --patch fix.patch -- sh -c 'make fmt && make test'"
    )]
    Task(Box<TaskArgs>),
    /// Run the sandbox service (REST API on a unix socket; see --help).
    #[command(disable_help_flag = true)]
    Serve {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The MCP server for coding agents, on stdin/stdout (see --help).
    #[command(
        disable_help_flag = true,
        after_help = "Runs its own service in this process (no daemon needed); every sandbox it made \
is stopped when the client closes the pipe. The daemon serves the same tools over streamable HTTP at /mcp."
    )]
    Mcp {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Create a long-lived sandbox through the service; prints its id.
    Create(Box<remote::CreateArgs>),
    /// Run a command in a sandbox of the service (exit code as `run`).
    Exec(Box<remote::ExecArgs>),
    /// Copy files or directories between here and a sandbox (ID:PATH).
    Cp(remote::CpArgs),
    /// List the service's sandboxes.
    Ls(remote::LsArgs),
    /// A sandbox's record, usage and processes, as JSON.
    Inspect { id: String },
    /// Stop and remove sandboxes.
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// The recent output of a sandbox's processes.
    Logs {
        id: String,
        /// The audit log instead (execs, file writes, every egress
        /// decision), one JSON object per line.
        #[arg(long)]
        audit: bool,
    },
    /// Forward a loopback port here to a port inside a sandbox.
    Port(remote::PortArgs),
    /// Freeze every process of a sandbox.
    Pause { id: String },
    /// Thaw a paused sandbox.
    Resume { id: String },
    /// The OCI runtime (runc's command line) for containerd, podman and
    /// Kubernetes; also reached as `airlock-runc` (a symlink to airlock).
    #[command(disable_help_flag = true)]
    Oci {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(clap::Args)]
struct TaskArgs {
    /// The repository to work on (mounted copy-on-write at /work).
    #[arg(long, value_name = "DIR")]
    repo: PathBuf,
    /// Write what the command changed, as a git patch, to FILE.
    #[arg(long, value_name = "FILE")]
    patch: Option<PathBuf>,
    /// Leave the sandbox running afterwards and print its id (the task
    /// then runs in the service: `airlock serve` must be running; see
    /// `airlock exec`, `airlock rm`).
    #[arg(long)]
    keep: bool,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum IsolationArg {
    /// A guest kernel under a VMM (QEMU microvm; KVM, or software emulation).
    Microvm,
    /// Namespaces + seccomp + Landlock + no capabilities + cgroups.
    Container,
    /// A plain child process with a scrubbed environment and limits.
    None,
    /// Opt-in, for hosts that refuse user namespaces: a plain child
    /// confined by Landlock, seccomp without network sockets, no
    /// capabilities, limits. Weaker than container (no pid, mount or IPC
    /// isolation).
    Landlock,
}

#[derive(Clone, Copy, ValueEnum)]
enum TrustArg {
    /// Unknown contributors, generated code: microvm (by default; the
    /// trust policy in /etc/airlock/config.toml or
    /// ~/.config/airlock/config.toml may say otherwise).
    Untrusted,
    /// Trusted but experimental code: container (by default).
    Experimental,
    /// Your own code: none (by default).
    Own,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Isolation tier.
    #[arg(
        long,
        value_enum,
        default_value = "container",
        conflicts_with = "trust"
    )]
    isolation: IsolationArg,
    /// Pick the tier by how far you trust the code.
    #[arg(long, value_enum)]
    trust: Option<TrustArg>,
    /// microVM tier: the guest kernel (an x86 Linux boot image, with what
    /// it needs built in or its modules under /lib/modules/VERSION for a
    /// vmlinuz-VERSION) instead of the newest Debian cloud kernel.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Root filesystem: host (the host's /usr, /bin, /lib*, /sbin read-only)
    /// or an image in the store (airlock image ls), whose root is writable
    /// and thrown away, and whose Env, WorkingDir, User, Entrypoint and Cmd
    /// are the defaults.
    #[arg(long, value_name = "NAME", default_value = "host")]
    image: String,
    /// Run this instead of the image's Entrypoint (and drop its Cmd); ''
    /// clears it.
    #[arg(long, value_name = "CMD")]
    entrypoint: Option<String>,
    /// Mount a host path: SRC:DST[:ro|rw|overlay] (default ro; overlay is
    /// copy-on-write and its changes are thrown away). Repeatable.
    #[arg(long = "mount", short = 'v', value_name = "SRC:DST[:MODE]", value_parser = mount_arg)]
    mounts: Vec<Mount>,
    /// Working directory inside the sandbox (default: the user's home).
    #[arg(long, short = 'w', value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// Set KEY=VALUE, or copy KEY from the host. Repeatable.
    #[arg(long = "env", short = 'e', value_name = "KEY[=VALUE]", value_parser = env_arg)]
    env: Vec<EnvArg>,
    /// Kill everything in the sandbox after this long (exit 124).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = duration_arg)]
    timeout: Duration,
    /// Memory limit (e.g. 512M, 1G).
    #[arg(long, short = 'm', value_name = "SIZE", value_parser = size_arg)]
    memory: Option<u64>,
    /// Maximum number of processes and threads.
    #[arg(long, value_name = "N", value_parser = pids_arg)]
    pids: Option<u64>,
    /// CPU limit in cores (e.g. 0.5, 2).
    #[arg(long, value_name = "CORES", value_parser = cpus_arg)]
    cpus: Option<f64>,
    /// Size of the writable layer (/, /tmp, $HOME, overlays).
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = size_arg)]
    disk: u64,
    /// Bytes of stdout+stderr kept; the rest is dropped with a note.
    #[arg(long, value_name = "SIZE", value_parser = size_arg)]
    output_limit: Option<u64>,
    /// Hostname inside the sandbox.
    #[arg(long, default_value = airlock_spec::DEFAULT_HOSTNAME)]
    hostname: String,
    /// User inside: sandbox (default), root, nobody, UID or UID:GID; with
    /// --image also NAME[:GROUP] of the image's /etc/passwd (default: the
    /// image's User, else root).
    #[arg(long, short = 'u', value_name = "USER", value_parser = user_arg)]
    user: Option<String>,
    /// Write the result (exit code, signal, timed_out, duration, peak memory,
    /// truncation) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Give the command a terminal (stdout and stderr merge, as with docker -t).
    #[arg(long, short = 't')]
    tty: bool,
    /// Print nothing of airlock's own but errors.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Network: none (default: loopback only), all (every public name and
    /// address, through the egress proxy), or allowlist (implied by
    /// --allow-host).
    #[arg(long, value_name = "none|all|allowlist")]
    net: Option<String>,
    /// Let the sandbox reach NAME, *.SUFFIX (not the apex) or a CIDR, each
    /// with an optional :PORT, through the egress proxy on the host.
    /// Repeatable.
    #[arg(long = "allow-host", value_name = "NAME|*.SUFFIX|CIDR[:PORT]")]
    allow_host: Vec<String>,
    /// Never reach these (wins over every --allow-host). Repeatable.
    #[arg(long = "deny-host", value_name = "NAME|*.SUFFIX|CIDR[:PORT]")]
    deny_host: Vec<String>,
    /// The egress proxy resolves NAME to IP (as curl's --resolve).
    /// Repeatable.
    #[arg(long = "dns-override", value_name = "NAME=IP")]
    dns_override: Vec<String>,
    /// Print a summary of the egress proxy's decisions at the end.
    #[arg(long)]
    verbose: bool,
    #[command(flatten)]
    broker: secrets::BrokerArgs,
    /// The command and its arguments (after --).
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn mount_arg(s: &str) -> Result<Mount, String> {
    parse_mount(s).map_err(|e| e.to_string())
}
fn env_arg(s: &str) -> Result<EnvArg, String> {
    parse_env(s).map_err(|e| e.to_string())
}
fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}
fn size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}
/// Names are resolved later (through the image's /etc/passwd with
/// --image); what cannot be a user at all is refused now.
fn user_arg(s: &str) -> Result<String, String> {
    let part = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    let ok = match s.split_once(':') {
        Some((u, g)) => part(u) && part(g),
        None => part(s),
    };
    if !ok {
        return Err(format!(
            "invalid --user {s:?}: use sandbox, root, nobody, UID[:GID], or with --image NAME[:GROUP]"
        ));
    }
    for p in s.split(':') {
        if p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u32>().map_or(true, |n| n >= 65536) {
            return Err(format!(
                "invalid --user {s:?}: ids inside the sandbox are below 65536"
            ));
        }
    }
    Ok(s.to_string())
}
fn pids_arg(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "invalid --pids {s:?}: a whole number of at least 1"
        )),
    }
}
fn cpus_arg(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(c) if (0.01..=4096.0).contains(&c) => Ok(c),
        _ => Err(format!(
            "invalid --cpus {s:?}: a number of cores between 0.01 and 4096"
        )),
    }
}

fn main() {
    // The sandbox's agent is this binary, exec'd under another name.
    if airlock_agent::is_agent_invocation() {
        airlock_agent::main();
    }
    // `airlock run`: the sandbox's agent is started before anything else
    // (exec'd from airlock's own binary, opened now, before any sandbox
    // exists), so that its start-up runs on another CPU while this process
    // parses its arguments and works out the plan.
    airlock_core::timing::mark("main");
    // `airlock-runc` (a symlink engines call by path) is `airlock oci`.
    if std::env::args_os().next().is_some_and(|a| {
        Path::new(&a)
            .file_name()
            .is_some_and(|n| n == "airlock-runc")
    }) {
        std::process::exit(oci::main(std::env::args_os().skip(1).collect()));
    }
    let early_agent = if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "run" || a == "task")
    {
        // Most runs are container runs; a local one starts its own agent.
        airlock_core::prespawn(airlock_spec::Isolation::Container, false).ok()
    } else {
        None
    };
    airlock_core::timing::mark("prespawned");
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            // The agent started early is not needed: it goes first.
            drop(early_agent);
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            // One clear line, not a usage dump.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("airlock: {first} (see airlock --help)");
            std::process::exit(EXIT_AIRLOCK);
        }
    };
    let code = match cli.cmd {
        Cmd::Run(args) => {
            let agent = early_agent;
            // The result file is opened now, before any sandbox exists: a
            // sandbox that can write where it lives (an rw mount) could
            // otherwise plant a symlink there for airlock to write through.
            let mut json = match args.json.as_deref().map(open_json).transpose() {
                Ok(j) => j,
                Err(e) => {
                    drop(agent);
                    eprintln!("airlock: {}", chain(&e));
                    std::process::exit(EXIT_AIRLOCK);
                }
            };
            match run(*args, agent, json.as_mut()) {
                Ok(code) => code,
                Err(e) => {
                    let msg = chain(&e);
                    eprintln!("airlock: {msg}");
                    // A script reading --json finds why, not nothing.
                    if let Some(f) = json.as_mut() {
                        let v = serde_json::json!({ "exit_code": EXIT_AIRLOCK, "error": msg });
                        let _ = write_json(f, &format!("{v:#}"));
                    }
                    EXIT_AIRLOCK
                }
            }
        }
        Cmd::Doctor { json } => doctor::run(json),
        Cmd::Oci { args } => oci::main(args),
        Cmd::Serve { args } => remote::serve(args),
        Cmd::Mcp { args } => {
            remote::serve(std::iter::once("mcp".to_string()).chain(args).collect())
        }
        Cmd::Task(args) => match task(*args, early_agent) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("airlock: {}", chain(&e));
                EXIT_AIRLOCK
            }
        },
        Cmd::Image { cmd } => {
            match image::run(cmd, &|quiet| Box::new(image::HelperPuller { quiet })) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("airlock: {}", chain(&e));
                    EXIT_AIRLOCK
                }
            }
        }
        cmd => {
            let r = match cmd {
                Cmd::Create(a) => remote::create(*a),
                Cmd::Exec(a) => remote::exec(*a),
                Cmd::Cp(a) => remote::cp(a),
                Cmd::Ls(a) => remote::ls(a),
                Cmd::Inspect { id } => remote::inspect(&id),
                Cmd::Rm { ids } => remote::rm(&ids),
                Cmd::Logs { id, audit } => remote::logs(&id, audit),
                Cmd::Port(a) => remote::port(a),
                Cmd::Pause { id } => remote::pause_resume(&id, true),
                Cmd::Resume { id } => remote::pause_resume(&id, false),
                _ => Ok(EXIT_AIRLOCK),
            };
            match r {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("airlock: {}", chain(&e));
                    EXIT_AIRLOCK
                }
            }
        }
    };
    std::process::exit(code);
}

/// The whole error chain, once, on one line.
fn chain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// The spec for `airlock run`, with the image's defaults applied
/// (`airlock_core::image::prepare`), and the image's root.
fn spec_from(args: &RunArgs) -> Result<airlock_core::image::Prepared> {
    let mut spec = SandboxSpec::new(Vec::new());
    spec.image = Image::from(args.image.clone());
    spec.isolation = match (args.trust, args.isolation) {
        (Some(t), _) => {
            use airlock_core::config::{Trust, TrustPolicy};
            // The trust policy: the defaults, /etc/airlock/config.toml,
            // then the user's ~/.config/airlock/config.toml.
            TrustPolicy::load()
                .context("the trust policy (--trust)")?
                .tier(match t {
                    TrustArg::Untrusted => Trust::Untrusted,
                    TrustArg::Experimental => Trust::Experimental,
                    TrustArg::Own => Trust::Own,
                })
        }
        (None, IsolationArg::Microvm) => Isolation::Microvm,
        (None, IsolationArg::Container) => Isolation::Container,
        (None, IsolationArg::None) => Isolation::None,
        (None, IsolationArg::Landlock) => Isolation::Landlock,
    };
    if let Some(k) = &args.kernel {
        if spec.isolation != Isolation::Microvm {
            bail!("--kernel is the microVM tier's guest kernel: give --isolation microvm (or a --trust that picks it)");
        }
        let k = if k.is_absolute() {
            k.clone()
        } else {
            std::env::current_dir()
                .context("cannot read the current directory")?
                .join(k)
        };
        // Checked now, for a clear error before anything starts.
        airlock_vm::Kernel::find(Some(&k)).map_err(|e| anyhow::anyhow!("--kernel: {e}"))?;
        airlock_core::backend::set_vm_kernel(k);
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    for m in &args.mounts {
        let src = if m.source.is_absolute() {
            m.source.clone()
        } else {
            cwd.join(&m.source)
        };
        // Not canonicalised: the jail resolves the path itself, following
        // no symlink but root's (a sandbox could have planted any other in
        // an rw mount). Checked here for a clear, early error.
        if let Err(e) = airlock_jail::safepath::resolve(&src) {
            if e.is_not_found() {
                return Err(airlock_spec::SpecError::MountSource {
                    path: m.source.clone(),
                    why: e.to_string(),
                }
                .into());
            }
            return Err(
                anyhow::Error::new(e).context(format!("mount source {}", m.source.display()))
            );
        }
        spec.mounts.push(Mount {
            source: src,
            target: m.target.clone(),
            mode: m.mode,
            as_owner: m.as_owner,
        });
    }
    for e in &args.env {
        match e {
            EnvArg::Set(k, v) => spec.env.push((k.clone(), v.clone())),
            EnvArg::Copy(k) => {
                if let Ok(v) = std::env::var(k) {
                    spec.env.push((k.clone(), v));
                }
            }
        }
    }
    spec.limits.timeout = args.timeout;
    spec.limits.memory = args.memory;
    spec.limits.pids = args.pids;
    spec.limits.cpus = args.cpus;
    spec.limits.disk = args.disk;
    spec.limits.output = args.output_limit;
    spec.hostname = args.hostname.clone();
    spec.tty = args.tty;
    spec.network = network_from(
        args.net.as_deref(),
        &args.allow_host,
        &args.deny_host,
        &args.dns_override,
    )?;
    args.broker.apply(&mut spec.network)?;
    let given = airlock_core::image::Given {
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        command: args.command.clone(),
        entrypoint: args.entrypoint.clone(),
    };
    let prepared = airlock_core::image::prepare(spec, &given)?;
    prepared.spec.validate()?;
    Ok(prepared)
}

/// The network policy the flags ask for (validated with the spec).
fn network_from(
    net: Option<&str>,
    allow: &[String],
    deny: &[String],
    overrides: &[String],
) -> Result<airlock_spec::Network> {
    use airlock_spec::NetMode;
    let mode = match net {
        None if allow.is_empty() && deny.is_empty() => NetMode::None,
        None => NetMode::Allowlist,
        Some("none") => NetMode::None,
        Some("all") => NetMode::All,
        Some("allowlist") => NetMode::Allowlist,
        Some(o) => bail!("invalid --net {o:?}: none, all or allowlist"),
    };
    if mode == NetMode::None && !(allow.is_empty() && deny.is_empty()) {
        bail!("--net none takes no --allow-host / --deny-host");
    }
    if mode == NetMode::None && !overrides.is_empty() {
        bail!("--dns-override needs a network (--allow-host or --net all)");
    }
    Ok(airlock_spec::Network {
        mode,
        allow: allow.to_vec(),
        deny: deny.to_vec(),
        dns_override: overrides.to_vec(),
        ..Default::default()
    })
}

fn run(
    args: RunArgs,
    agent: Option<airlock_core::PendingAgent>,
    json: Option<&mut std::fs::File>,
) -> Result<i32> {
    // From here on, INT/TERM/HUP/QUIT are for the command.
    stdio::block_forwarded_signals();
    if args.command.is_empty() && args.image == "host" && args.entrypoint.is_none() {
        bail!(airlock_spec::SpecError::NoCommand);
    }
    let prepared = spec_from(&args)?;
    let spec = prepared.spec;
    let quiet = args.quiet;
    let mut notes = |n: &str| {
        // Warnings (the Landlock tier's) are printed even with --quiet.
        if n.starts_with("warning: ") {
            eprintln!("airlock: {n}");
        } else if !quiet {
            eprintln!("airlock: note: {n}");
        }
    };
    for n in &prepared.notes {
        notes(n);
    }
    if spec.network.mode == airlock_spec::NetMode::All {
        notes("--net all: the sandbox reaches every public name and address through the egress proxy (private, loopback and link-local addresses still need a CIDR rule)");
    }
    for n in secrets::unreachable_secret_hosts(&spec.network) {
        notes(&n);
    }
    let decisions = std::sync::Arc::new(std::sync::Mutex::new(run::EgressTally::default()));
    let audit: Option<airlock_egress::Audit> = if spec.network.mode == airlock_spec::NetMode::None {
        None
    } else {
        let d = decisions.clone();
        let verbose = args.verbose && !quiet;
        Some(std::sync::Arc::new(move |x: airlock_egress::Decision| {
            let mut t = d.lock().unwrap_or_else(|e| e.into_inner());
            if verbose && !x.allowed && t.printed <= run::LOUD_DENIALS {
                t.printed += 1;
                if t.printed > run::LOUD_DENIALS {
                    eprintln!("airlock: egress: more denials; the rest are in the summary");
                } else {
                    eprintln!(
                        "airlock: egress denied ({}) {}:{}: {}",
                        x.via, x.host, x.port, x.reason
                    );
                }
            }
            t.add(&x);
        }))
    };
    let result = run::run(&spec, agent, prepared.image, audit, &mut notes)?;
    if args.verbose && !quiet && spec.network.mode != airlock_spec::NetMode::None {
        let d = decisions.lock().unwrap_or_else(|e| e.into_inner());
        eprintln!("{}", d.summary());
    }
    if !quiet {
        if let Some(msg) = run::epilogue(&spec, &result) {
            eprintln!("airlock: {msg}");
        }
    }
    if let Some(f) = json {
        let text = serde_json::to_string_pretty(&result)?;
        write_json(f, &text).context("cannot write --json")?;
    }
    Ok(result.exit_code)
}

/// `airlock task`: `run` with the repository at /work (overlay) and, with
/// --patch, the diff of what the command changed.
fn task(mut args: TaskArgs, agent: Option<airlock_core::PendingAgent>) -> Result<i32> {
    stdio::block_forwarded_signals();
    let repo = std::fs::canonicalize(&args.repo)
        .with_context(|| format!("--repo {}", args.repo.display()))?;
    if !repo.is_dir() {
        bail!("--repo {}: not a directory", repo.display());
    }
    if args.run.command.is_empty() {
        bail!(airlock_spec::SpecError::NoCommand);
    }
    if args.keep {
        return task_kept(&args, &repo);
    }
    // The patch file is opened now, before any sandbox exists.
    let mut patch_file = match &args.patch {
        Some(p) => Some(
            std::fs::File::create(p).with_context(|| format!("cannot write {}", p.display()))?,
        ),
        None => None,
    };
    args.run.mounts.push(Mount {
        source: repo.clone(),
        target: PathBuf::from("/work"),
        mode: airlock_spec::MountMode::Overlay,
        // The command works in the copy as the repository's owner, root
        // included (the repository itself is never written).
        as_owner: true,
    });
    if args.run.workdir.is_none() {
        args.run.workdir = Some(PathBuf::from("/work"));
    }
    let prepared = spec_from(&args.run)?;
    let spec = prepared.spec;
    let quiet = args.run.quiet;
    let mut notes = |n: &str| {
        // Warnings (the Landlock tier's) are printed even with --quiet.
        if n.starts_with("warning: ") {
            eprintln!("airlock: {n}");
        } else if !quiet {
            eprintln!("airlock: note: {n}");
        }
    };
    for n in &prepared.notes {
        notes(n);
    }
    let mut summary = None;
    let mut then = |sb: &mut airlock_core::Sandbox| -> Result<(), String> {
        let Some(f) = patch_file.as_mut() else {
            return Ok(());
        };
        let t = Instant::now();
        let tree = TreeReader::start(sb, Path::new("/work"))?;
        let p = airlock_core::task::patch(&repo, tree, airlock_core::task::Caps::default())
            .map_err(|e| format!("cannot make the patch: {e}"))?;
        use std::io::Write;
        f.write_all(p.as_bytes())
            .map_err(|e| format!("cannot write the patch: {e}"))?;
        let files = p.lines().filter(|l| l.starts_with("diff --git ")).count();
        summary = Some(format!(
            "task: {files} file(s) changed; patch written ({} bytes; tree read and diffed in {} ms)",
            p.len(),
            t.elapsed().as_millis()
        ));
        Ok(())
    };
    let result = run::run_then(
        &spec,
        agent,
        prepared.image,
        None,
        &mut notes,
        Some(&mut then),
    )?;
    if !quiet {
        if let Some(msg) = run::epilogue(&spec, &result) {
            eprintln!("airlock: {msg}");
        }
        if let Some(s) = &summary {
            eprintln!("airlock: {s}");
        }
    }
    if let Some(why) = &result.after_failed {
        // Never quiet: the patch is wrong or missing.
        eprintln!(
            "airlock: error: {why} (the command's exit status was {})",
            result.exit_code
        );
        return Ok(EXIT_AIRLOCK);
    }
    Ok(result.exit_code)
}

/// `airlock task --keep`: the task runs in the service, whose sandbox
/// outlives it.
fn task_kept(args: &TaskArgs, repo: &Path) -> Result<i32> {
    let r = &args.run;
    for (unsupported, what) in [
        (!r.mounts.is_empty(), "--mount"),
        (r.image != "host", "--image"),
        (r.tty, "--tty"),
        (r.json.is_some(), "--json"),
        (r.kernel.is_some(), "--kernel"),
    ] {
        if unsupported {
            bail!("{what} is not available with task --keep (the task runs in the service)");
        }
    }
    // The spec is checked here first, for the same errors as without --keep.
    let prepared = spec_from(r)?;
    let spec = prepared.spec;
    let mut env = serde_json::Map::new();
    for e in &r.env {
        let (k, v) = match e {
            airlock_spec::EnvArg::Set(k, v) => (k.clone(), v.clone()),
            airlock_spec::EnvArg::Copy(k) => match std::env::var(k) {
                Ok(v) => (k.clone(), v),
                Err(_) => continue,
            },
        };
        env.insert(k, v.into());
    }
    let mut limits = serde_json::Map::new();
    limits.insert(
        "timeout".into(),
        format!("{}ms", spec.limits.timeout.as_millis()).into(),
    );
    if let Some(m) = spec.limits.memory {
        limits.insert("memory".into(), m.to_string().into());
    }
    if let Some(p) = spec.limits.pids {
        limits.insert("pids".into(), p.into());
    }
    if let Some(c) = spec.limits.cpus {
        limits.insert("cpus".into(), c.into());
    }
    let mut req = serde_json::json!({
        "repo": repo,
        "argv": r.command,
        "isolation": spec.isolation.name(),
        "env": env,
        "limits": limits,
        "keep": true,
    });
    if let Some(u) = &r.user {
        req["user"] = u.clone().into();
    }
    if let Some(o) = r.output_limit {
        req["output_limit"] = o.into();
    }
    let c = client::Client::new()?;
    let v = c.post("/v1/tasks", req)?;
    use std::io::Write;
    let _ = std::io::stdout().write_all(v["stdout"].as_str().unwrap_or("").as_bytes());
    let _ = std::io::stderr().write_all(v["stderr"].as_str().unwrap_or("").as_bytes());
    if let Some(p) = &args.patch {
        std::fs::write(p, v["patch"].as_str().unwrap_or(""))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if !r.quiet {
        if let Some(n) = v["notes"].as_array() {
            for n in n {
                eprintln!("airlock: note: {}", n.as_str().unwrap_or(""));
            }
        }
        eprintln!(
            "airlock: task: {} file(s) changed{}",
            v["files_changed"].as_u64().unwrap_or(0),
            if args.patch.is_some() {
                "; patch written"
            } else {
                ""
            },
        );
    }
    // Said even with --quiet: the sandbox runs on until removed. (stdout
    // is the command's alone.)
    let id = v["sandbox"].as_str().unwrap_or("?");
    eprintln!("airlock: kept sandbox {id} (airlock exec {id} -- sh; airlock rm {id})");
    Ok(v["exit_code"].as_i64().unwrap_or(i64::from(EXIT_AIRLOCK)) as i32)
}

/// A tar stream of `dir` in the sandbox, read as it comes (the patch
/// checks each entry's size before it holds a byte of it: nothing is
/// buffered whole).
struct TreeReader<'a> {
    sb: &'a mut airlock_core::Sandbox,
    id: u32,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
    end: Instant,
}

impl<'a> TreeReader<'a> {
    fn start(sb: &'a mut airlock_core::Sandbox, dir: &Path) -> Result<TreeReader<'a>, String> {
        let id = sb.tar_out(dir).map_err(|e| e.to_string())?;
        Ok(TreeReader {
            sb,
            id,
            buf: Vec::new(),
            pos: 0,
            done: false,
            end: Instant::now() + Duration::from_secs(600),
        })
    }
}

impl std::io::Read for TreeReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use airlock_core::{Event, StreamKind};
        let fail = |m: String| std::io::Error::other(m);
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            let left = self.end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(fail("reading the sandbox's tree timed out".into()));
            }
            match self.sb.wait(Some(left)).map_err(|e| fail(e.to_string()))? {
                Some(Event::FileData { id, data }) if id == self.id => {
                    let _ = self.sb.consumed(id, StreamKind::File, data.len());
                    self.buf = data;
                    self.pos = 0;
                }
                Some(Event::FileDone { id, result }) if id == self.id => match result {
                    Ok(_) => self.done = true,
                    Err(e) => {
                        return Err(fail(format!("cannot read the sandbox's tree: {}", e.text)))
                    }
                },
                Some(Event::AgentGone) | None => {
                    return Err(fail("the sandbox ended before its tree was read".into()))
                }
                Some(_) => {}
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Opens (creating) the --json file before any sandbox exists. A sandbox
/// with an rw mount could have left a trap where the result goes, so the
/// directory is reached by a walk that follows only root's symlinks
/// (`safepath`), the file is opened from that directory without following
/// a symlink and without blocking (a FIFO there cannot hang airlock), and
/// only a regular file with no other hard link (no other file's content
/// behind it) is written.
fn open_json(p: &Path) -> Result<std::fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .context("cannot read the current directory")?
            .join(p)
    };
    let (Some(dir), Some(name)) = (abs.parent(), abs.file_name()) else {
        bail!("cannot write --json {}: not a file name", p.display());
    };
    let d = airlock_jail::safepath::resolve(dir).map_err(|e| {
        if e.is_not_found() {
            anyhow::anyhow!(
                "cannot write --json {}: directory {} does not exist",
                p.display(),
                dir.display()
            )
        } else if matches!(e, airlock_jail::safepath::PathError::Symlink { .. }) {
            anyhow::anyhow!("refusing to write --json {}: {e}", p.display())
        } else {
            anyhow::Error::new(e).context(format!("cannot write --json {}", p.display()))
        }
    })?;
    if !d.is_dir() {
        bail!(
            "cannot write --json {}: {} is not a directory",
            p.display(),
            dir.display()
        );
    }
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(name))
        .context("--json path contains a NUL byte")?;
    // SAFETY: a valid dir fd and C string; the kernel returns a new fd.
    let fd = unsafe {
        libc::openat(
            d.fd.as_raw_fd(),
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ELOOP) => {
                anyhow::anyhow!("refusing to write --json {}: it is a symlink", p.display())
            }
            Some(libc::ENXIO) => anyhow::anyhow!(
                "refusing to write --json {}: it is not a regular file (a FIFO)",
                p.display()
            ),
            _ => anyhow::Error::new(e).context(format!("cannot open --json {}", p.display())),
        });
    }
    // SAFETY: a new fd that nothing else owns.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    let md = f.metadata().context("cannot stat --json file")?;
    if !md.file_type().is_file() {
        bail!(
            "refusing to write --json {}: it is not a regular file",
            p.display()
        );
    }
    if std::os::unix::fs::MetadataExt::nlink(&md) > 1 {
        bail!(
            "refusing to write --json {}: it has other hard links (writing it would change another file)",
            p.display()
        );
    }
    Ok(f)
}

fn write_json(f: &mut std::fs::File, text: &str) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    f.set_len(0)?;
    f.seek(std::io::SeekFrom::Start(0))?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")
}
