//! `airlock image ...`: the image store from the command line.

use airlock_image::{
    BuildOptions, DebianOptions, ImageRecord, ImportOptions, Limits, Progress, PullOptions, Puller,
    Store,
};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(Subcommand)]
pub enum ImageCmd {
    /// List the images in the store.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Remove images (and whatever only they used).
    Rm {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Show an image's record as JSON.
    Inspect {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Import a `docker save` archive, an OCI archive or an OCI layout directory.
    Import(Box<ImportArgs>),
    /// Pull an image from an OCI registry (distribution API v2).
    Pull(Box<PullArgs>),
    /// Build an image from a Dockerfile, or a Debian image with mmdebstrap.
    #[command(
        after_help = "Examples:\n  airlock image build --debian bookworm --packages python3,git --name py\n  airlock image build -f Dockerfile --name app ."
    )]
    Build(Box<BuildArgs>),
    /// Forget the build cache and remove what no image uses.
    Prune,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Args)]
pub struct LsArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Only names.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(Args, Clone)]
pub struct CommonArgs {
    /// Keep setuid/setgid bits and file capabilities (stripped by default).
    #[arg(long)]
    allow_setuid: bool,
    /// Cap on the image's uncompressed size.
    #[arg(long, value_name = "SIZE", default_value = "32G", value_parser = size_arg)]
    max_size: u64,
    /// Cap on the number of entries in the image's layers.
    #[arg(long, value_name = "N", default_value = "2000000")]
    max_entries: u64,
    /// No progress, no notes: only errors (and the result on stdout).
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(Args)]
pub struct ImportArgs {
    /// The archive (tar, tar.gz, tar.zst) or OCI layout directory.
    #[arg(value_name = "FILE|DIR")]
    path: PathBuf,
    /// Name of the image in the store.
    #[arg(long)]
    name: String,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args, Clone)]
pub struct RegistryArgs {
    /// Registry user (with --password-stdin).
    #[arg(long, requires = "password_stdin")]
    username: Option<String>,
    /// Read the registry password from stdin.
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// Plain HTTP, for a registry on loopback (127.0.0.1, ::1, localhost).
    #[arg(long)]
    insecure: bool,
    /// Plain HTTP to this registry (HOST[:PORT]), named explicitly. Repeatable.
    #[arg(long, value_name = "HOST[:PORT]")]
    insecure_registry: Vec<String>,
}

#[derive(Args)]
pub struct PullArgs {
    /// Image reference: [REGISTRY/]REPO[:TAG|@DIGEST].
    #[arg(value_name = "REF")]
    reference: String,
    /// Name in the store (default: REF).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
pub struct BuildArgs {
    /// Name of the image in the store.
    #[arg(long)]
    name: String,
    /// The Dockerfile (default CONTEXT/Dockerfile).
    #[arg(
        long = "file",
        short = 'f',
        value_name = "DOCKERFILE",
        conflicts_with = "debian"
    )]
    file: Option<PathBuf>,
    /// Build context directory (default .).
    #[arg(value_name = "CONTEXT", conflicts_with = "debian")]
    context: Option<PathBuf>,
    /// Build a Debian image of this suite with mmdebstrap (e.g. bookworm).
    #[arg(long, value_name = "SUITE")]
    debian: Option<String>,
    /// Packages to add to the Debian image (comma-separated).
    #[arg(
        long,
        value_name = "PKG,...",
        value_delimiter = ',',
        requires = "debian"
    )]
    packages: Vec<String>,
    /// mmdebstrap variant.
    #[arg(long, default_value = "apt", requires = "debian")]
    variant: String,
    /// Debian mirror (default: the one the host's apt uses).
    #[arg(long, value_name = "URL")]
    mirror: Option<String>,
    /// ARG value for the Dockerfile: KEY=VALUE. Repeatable.
    #[arg(long = "build-arg", value_name = "KEY=VALUE", value_parser = build_arg)]
    build_args: Vec<(String, String)>,
    /// A host RUN steps may reach, through the egress proxy (NAME,
    /// *.SUFFIX or CIDR, with an optional :PORT, as `airlock run
    /// --allow-host`); the network is off otherwise. Repeatable. A step's
    /// cached result is reused whatever the hosts: --no-cache to fetch
    /// again.
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_hosts: Vec<String>,
    /// Build every step again.
    #[arg(long)]
    no_cache: bool,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    common: CommonArgs,
}

fn size_arg(s: &str) -> Result<u64, String> {
    airlock_spec::parse_size(s).map_err(|e| e.to_string())
}

fn build_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => match std::env::var(s) {
            Ok(v) if !s.is_empty() => Ok((s.to_string(), v)),
            _ => Err(format!("invalid --build-arg {s:?}: KEY=VALUE")),
        },
    }
}

/// Bars on a terminal, step lines otherwise, nothing with --quiet.
pub(crate) struct Bars {
    quiet: bool,
    tty: bool,
    bar: Mutex<Option<ProgressBar>>,
    /// With --quiet, the end of the current RUN step's output (shown if
    /// the build fails).
    tail: Mutex<Vec<u8>>,
}

/// How much of the RUN steps' output --quiet keeps for a failure.
const TAIL: usize = 8 << 10;

impl Bars {
    pub(crate) fn new(quiet: bool) -> Bars {
        Bars {
            quiet,
            tty: std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
            tail: Mutex::new(Vec::new()),
        }
    }

    /// A RUN step's output: to stderr as it comes (above the bar), or with
    /// --quiet only the end of it, kept.
    pub(crate) fn output(&self, data: &[u8]) {
        use std::io::Write;
        if self.quiet {
            if let Ok(mut t) = self.tail.lock() {
                t.extend_from_slice(data);
                let over = t.len().saturating_sub(TAIL);
                t.drain(..over);
            }
            return;
        }
        let write = || {
            let _ = std::io::stderr().write_all(data);
        };
        match self.bar.lock().ok().as_ref().and_then(|g| g.as_ref()) {
            Some(b) => b.suspend(write),
            None => write(),
        }
    }

    /// What --quiet kept of the steps' output.
    pub(crate) fn take_tail(&self) -> Vec<u8> {
        self.tail
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }
}

impl Progress for Bars {
    fn phase(&self, msg: &str, total: Option<u64>) {
        if self.quiet {
            // What a failure shows is the failing step's own output.
            if let Ok(mut t) = self.tail.lock() {
                t.clear();
            }
            return;
        }
        if !self.tty {
            if msg.starts_with('[') || msg.starts_with("FROM") || msg.starts_with("mmdebstrap") {
                eprintln!("airlock: {msg}");
            }
            return;
        }
        let bar = match total {
            Some(t) => {
                let b = ProgressBar::new(t);
                b.set_style(
                    ProgressStyle::with_template(
                        "{msg:40!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b
            }
            None => {
                let b = ProgressBar::new_spinner();
                b.enable_steady_tick(std::time::Duration::from_millis(120));
                b
            }
        };
        bar.set_message(msg.to_string());
        if let Ok(mut g) = self.bar.lock() {
            if let Some(old) = g.take() {
                old.finish_and_clear();
            }
            *g = Some(bar);
        }
    }
    fn advance(&self, bytes: u64) {
        if let Ok(g) = self.bar.lock() {
            if let Some(b) = g.as_ref() {
                b.inc(bytes);
            }
        }
    }
    fn done(&self) {
        if let Ok(mut g) = self.bar.lock() {
            if let Some(b) = g.take() {
                b.finish_and_clear();
            }
        }
    }
    fn note(&self, msg: &str) {
        if self.quiet {
            return;
        }
        let g = self.bar.lock().ok();
        match g.as_ref().and_then(|g| g.as_ref()) {
            Some(b) => b.println(format!("airlock: {msg}")),
            None => eprintln!("airlock: {msg}"),
        }
    }
}

fn limits(c: &CommonArgs) -> Limits {
    Limits {
        max_bytes: c.max_size,
        max_entries: c.max_entries,
        ..Limits::default()
    }
}

fn import_opts(name: &str, c: &CommonArgs) -> ImportOptions {
    ImportOptions {
        name: name.to_string(),
        limits: limits(c),
        allow_setuid: c.allow_setuid,
    }
}

fn pull_opts(name: &str, r: &RegistryArgs, c: &CommonArgs) -> Result<PullOptions> {
    let mut p = PullOptions::new(name);
    p.import = import_opts(name, c);
    p.insecure = r.insecure;
    p.insecure_registries = r.insecure_registry.clone();
    if let Some(u) = &r.username {
        let mut pw = String::new();
        std::io::stdin()
            .read_to_string(&mut pw)
            .context("cannot read the password from stdin")?;
        let pw = pw.trim_end_matches(['\n', '\r']).to_string();
        if pw.is_empty() {
            bail!("--password-stdin: stdin was empty");
        }
        p.credentials = Some((u.clone(), pw));
    }
    Ok(p)
}

/// Runs an `image` subcommand; the exit code. `puller(quiet)` brings
/// registry images (`pull`, and FROM a registry reference in `build`).
pub fn run(cmd: ImageCmd, puller: &dyn Fn(bool) -> Box<dyn Puller>) -> Result<i32> {
    let store = Store::open_default().context("cannot open the image store")?;
    match cmd {
        ImageCmd::Ls(a) => ls(&store, &a),
        ImageCmd::Rm { names } => {
            store.remove(&names)?;
            for n in names {
                println!("{n}");
            }
            Ok(0)
        }
        ImageCmd::Inspect { name } => {
            let rec = store.get(&name)?;
            let mut v = serde_json::to_value(&rec)?;
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "rootfs_path".into(),
                    serde_json::Value::String(store.rootfs_path(&rec).display().to_string()),
                );
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(0)
        }
        ImageCmd::Import(a) => {
            let bars = Bars::new(a.common.quiet);
            let rec =
                airlock_image::import(&store, &a.path, &import_opts(&a.name, &a.common), &bars)?;
            done(&bars, "imported", &rec);
            Ok(0)
        }
        ImageCmd::Pull(a) => {
            let name = a.name.clone().unwrap_or_else(|| a.reference.clone());
            let bars = Bars::new(a.common.quiet);
            let p = pull_opts(&name, &a.registry, &a.common)?;
            let rec = puller(a.common.quiet).pull(&store, &a.reference, &p, &bars)?;
            done(&bars, "pulled", &rec);
            Ok(0)
        }
        ImageCmd::Build(a) => build(&store, *a, puller),
        ImageCmd::Prune => {
            store.prune()?;
            Ok(0)
        }
    }
}

fn done(bars: &Bars, what: &str, rec: &ImageRecord) {
    bars.note(&format!(
        "{what} {} ({} layer{}, {})",
        rec.name,
        rec.layers.len(),
        if rec.layers.len() == 1 { "" } else { "s" },
        human_size(rec.size)
    ));
    println!("{}", rec.manifest_digest);
}

fn build(store: &Store, a: BuildArgs, puller: &dyn Fn(bool) -> Box<dyn Puller>) -> Result<i32> {
    let bars = Bars::new(a.common.quiet);
    let puller = puller(a.common.quiet);
    if let Some(suite) = &a.debian {
        let mut d = DebianOptions::new(&a.name, suite);
        d.import = import_opts(&a.name, &a.common);
        d.packages = a
            .packages
            .iter()
            .filter(|p| !p.is_empty())
            .cloned()
            .collect();
        d.variant = a.variant.clone();
        d.mirror = a.mirror.clone();
        let rec = airlock_image::build_debian(store, &d, &bars)?;
        done(&bars, "built", &rec);
        return Ok(0);
    }
    let context = a.context.clone().unwrap_or_else(|| PathBuf::from("."));
    let file = a.file.clone().unwrap_or_else(|| context.join("Dockerfile"));
    let mut o = BuildOptions::new(&a.name, &file, &context);
    o.build_args = a.build_args.clone();
    o.limits = limits(&a.common);
    o.allow_hosts = a.allow_hosts.clone();
    o.no_cache = a.no_cache;
    o.base.debian_mirror = a.mirror.clone();
    o.base.pull = pull_opts(&a.name, &a.registry, &a.common)?;
    if !o.allow_hosts.is_empty() {
        // Refused now, not at the first RUN step.
        airlock_spec::net::Policy::compile(&airlock_spec::Network {
            mode: airlock_spec::NetMode::Allowlist,
            allow: o.allow_hosts.clone(),
            ..airlock_spec::Network::default()
        })?;
    }
    // Each RUN step in a container sandbox, its output on stderr.
    let out = |b: &[u8]| bars.output(b);
    let runner = airlock_core::build::SandboxRunner::new(&out);
    let report = match airlock_image::build(store, &o, Some(&runner), Some(puller.as_ref()), &bars)
    {
        Ok(r) => r,
        Err(e) => {
            bars.done();
            let tail = bars.take_tail();
            if !tail.is_empty() {
                use std::io::Write;
                let _ = std::io::stderr().write_all(&tail);
                if !tail.ends_with(b"\n") {
                    eprintln!();
                }
            }
            return Err(e.into());
        }
    };
    let cached = report.steps.iter().filter(|s| s.cached).count();
    let layers = report.steps.iter().filter(|s| s.layer).count();
    bars.note(&format!("{cached} of {layers} layer steps from the cache"));
    done(&bars, "built", &report.image);
    Ok(0)
}

fn ls(store: &Store, a: &LsArgs) -> Result<i32> {
    let mut recs = store.list()?;
    recs.sort_by(|x, y| y.created.cmp(&x.created).then(x.name.cmp(&y.name)));
    if a.quiet {
        for r in &recs {
            println!("{}", r.name);
        }
        return Ok(0);
    }
    if a.format == Format::Json {
        let v: Vec<serde_json::Value> = recs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name,
                    "digest": r.manifest_digest,
                    "size": r.size,
                    "created": r.created,
                    "layers": r.layers.len(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let rows: Vec<[String; 4]> = recs
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.manifest_digest.short().to_string(),
                human_size(r.size),
                ago(now, &r.created),
            ]
        })
        .collect();
    let head = ["NAME", "DIGEST", "SIZE", "CREATED"];
    let mut w = [0usize; 4];
    for (i, h) in head.iter().enumerate() {
        w[i] = rows
            .iter()
            .map(|r| r[i].len())
            .max()
            .unwrap_or(0)
            .max(h.len());
    }
    println!(
        "{:<a$}   {:<b$}   {:<c$}   {}",
        head[0],
        head[1],
        head[2],
        head[3],
        a = w[0],
        b = w[1],
        c = w[2]
    );
    for r in rows {
        println!(
            "{:<a$}   {:<b$}   {:<c$}   {}",
            r[0],
            r[1],
            r[2],
            r[3],
            a = w[0],
            b = w[1],
            c = w[2]
        );
    }
    Ok(0)
}

/// Bytes the way `docker image ls` shows them (decimal units).
fn human_size(b: u64) -> String {
    let f = b as f64;
    if f >= 1e9 {
        format!("{:.2}GB", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.1}MB", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.1}kB", f / 1e3)
    } else {
        format!("{b}B")
    }
}

/// "5 minutes ago" from an RFC 3339 UTC time.
fn ago(now: i64, created: &str) -> String {
    let Some(t) = parse_rfc3339(created) else {
        return created.to_string();
    };
    let d = (now - t).max(0);
    let (n, unit) = match d {
        0..=59 => return "Less than a minute ago".into(),
        60..=3599 => (d / 60, "minute"),
        3600..=86_399 => (d / 3600, "hour"),
        86_400..=604_799 => (d / 86_400, "day"),
        604_800..=2_591_999 => (d / 604_800, "week"),
        2_592_000..=31_535_999 => (d / 2_592_000, "month"),
        _ => (d / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_sizes() {
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(
            parse_rfc3339(&airlock_image::rfc3339(951_782_400)),
            Some(951_782_400)
        );
        assert_eq!(
            ago(1_700_000_000 + 120, "2023-11-14T22:13:20Z"),
            "2 minutes ago"
        );
        assert_eq!(
            ago(1_700_000_000 + 3600, "2023-11-14T22:13:20Z"),
            "1 hour ago"
        );
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_500_000), "1.5MB");
    }
}

/// What `airlock-pull` is asked to do (JSON on its stdin).
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct PullRequest {
    pub state_dir: PathBuf,
    pub reference: String,
    pub opts: PullOptions,
    pub quiet: bool,
}

/// Pulls with the `airlock-pull` program installed beside this one (the
/// registry client lives there, out of every sandbox's start-up).
pub(crate) struct HelperPuller {
    pub quiet: bool,
}

impl Puller for HelperPuller {
    fn pull(
        &self,
        store: &Store,
        reference: &str,
        opts: &PullOptions,
        progress: &dyn Progress,
    ) -> airlock_image::Result<ImageRecord> {
        use std::io::Write;
        let fail = |why: String| airlock_image::ImageError::Registry {
            registry: reference.to_string(),
            why,
        };
        progress.done();
        let exe = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("airlock-pull")))
            .filter(|p| p.exists())
            .ok_or_else(|| {
                fail("the airlock-pull program is not installed beside airlock".into())
            })?;
        let state_dir = store
            .root()
            .parent()
            .map(PathBuf::from)
            .ok_or_else(|| fail("the store has no state directory".into()))?;
        let req = PullRequest {
            state_dir,
            reference: reference.to_string(),
            opts: opts.clone(),
            quiet: self.quiet,
        };
        let body = serde_json::to_vec(&req).map_err(|e| fail(e.to_string()))?;
        let mut child = std::process::Command::new(&exe)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot start {}: {e}", exe.display())))?;
        if let Some(mut i) = child.stdin.take() {
            i.write_all(&body)
                .map_err(|e| fail(format!("cannot talk to airlock-pull: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| fail(format!("airlock-pull: {e}")))?;
        if !out.status.success() {
            let why = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                .unwrap_or_else(|| format!("airlock-pull failed ({})", out.status));
            return Err(airlock_image::ImageError::Reported(why));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("airlock-pull's answer: {e}")))
    }
}
