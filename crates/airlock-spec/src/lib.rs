//! `SandboxSpec`: what a sandbox is, as plain data.
//!
//! Everything here is pure: parsing of the user's sizes, durations, mounts and
//! environment, and validation of the whole spec. Backends compile a spec into
//! a plan; nothing in this crate touches the system.

use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

pub mod net;
mod parse;
pub use net::{NetMode, Network};
pub use parse::{parse_duration, parse_env, parse_mount, parse_size, parse_user, EnvArg};

/// Every way a spec can be wrong, each with the offending input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("invalid size {input:?}: {why} (examples: 512M, 1G, 1.5GiB, 4096)")]
    Size { input: String, why: &'static str },
    #[error("invalid duration {input:?}: {why} (examples: 30s, 5m, 1h, 1500ms)")]
    Duration { input: String, why: &'static str },
    #[error("invalid mount {input:?}: {why} (form: SRC:DST[:ro|rw|overlay])")]
    MountSyntax { input: String, why: &'static str },
    #[error("invalid mount target {target:?}: {why}")]
    MountTarget { target: PathBuf, why: &'static str },
    #[error("mount source {path:?} does not exist or cannot be reached: {why}")]
    MountSource { path: PathBuf, why: String },
    #[error("invalid --env {input:?}: {why}")]
    Env { input: String, why: &'static str },
    #[error("invalid --user {input:?}: {why} (use sandbox, root, or UID[:GID])")]
    User { input: String, why: &'static str },
    #[error("invalid --hostname {input:?}: {why}")]
    Hostname { input: String, why: &'static str },
    #[error("invalid --workdir {path:?}: {why}")]
    Workdir { path: PathBuf, why: &'static str },
    #[error("invalid --cpus {input:?}: {why}")]
    Cpus { input: String, why: &'static str },
    #[error("invalid --pids {input:?}: {why}")]
    Pids { input: String, why: &'static str },
    #[error("{what} {value} is too small: it must be at least {min}{why}")]
    TooSmall {
        what: &'static str,
        value: String,
        min: &'static str,
        why: &'static str,
    },
    #[error("{what} {value} is too large: it must be at most {max}")]
    TooLarge {
        what: &'static str,
        value: String,
        max: &'static str,
    },
    #[error("{what} contains a NUL byte, which no path, argument or variable may hold")]
    Nul { what: &'static str },
    #[error("no command given (usage: airlock run [FLAGS] -- COMMAND [ARGS...])")]
    NoCommand,
    #[error("invalid image name {name:?}: {why}")]
    Image { name: String, why: &'static str },
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error("{what} is not available with --isolation {isolation}: {why}")]
    Unsupported {
        what: &'static str,
        isolation: &'static str,
        why: &'static str,
    },
}

/// Which boundary runs the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// A guest kernel under a VMM.
    Microvm,
    /// Namespaces, seccomp, Landlock, no capabilities, cgroups.
    #[default]
    Container,
    /// A plain child process with a scrubbed environment and limits.
    None,
    /// Opt-in, for hosts without user namespaces: a plain child process
    /// confined by Landlock, a seccomp allowlist without network sockets,
    /// no capabilities, a scrubbed environment and limits. No pid, mount or
    /// IPC isolation: weaker than the container tier.
    Landlock,
}

impl Isolation {
    pub fn name(self) -> &'static str {
        match self {
            Isolation::Microvm => "microvm",
            Isolation::Container => "container",
            Isolation::None => "none",
            Isolation::Landlock => "landlock",
        }
    }

    /// The tiers whose processes are plain children of airlock (no
    /// namespaces): `none` and `landlock`.
    pub fn is_plain_child(self) -> bool {
        matches!(self, Isolation::None | Isolation::Landlock)
    }
}

/// The one line every run of the Landlock tier prints: what it gives up.
pub const LANDLOCK_WARNING: &str = "warning: --isolation landlock is weaker than the container tier: no pid, mount or IPC isolation, the host's own filesystem (only restricted by Landlock) and the host's processes in view; use it only where user namespaces are refused";

/// The root filesystem a sandbox starts from. In JSON a plain string:
/// `"host"`, or the name of an image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(from = "String", into = "String")]
pub enum Image {
    /// The host's `/usr` (and `/bin`, `/lib*`, `/sbin`) read-only, plus the
    /// few `/etc` files programs need.
    #[default]
    Host,
    /// An image in the store (`airlock image ls`), by name: its tree is
    /// the lower layer of the sandbox's root overlay.
    Store(String),
}

impl Image {
    /// The name the user gives it (`host`, or the store's name).
    pub fn name(&self) -> &str {
        match self {
            Image::Host => "host",
            Image::Store(n) => n,
        }
    }
}

impl From<String> for Image {
    fn from(s: String) -> Image {
        if s == "host" {
            Image::Host
        } else {
            Image::Store(s)
        }
    }
}

impl From<Image> for String {
    fn from(i: Image) -> String {
        match i {
            Image::Host => "host".into(),
            Image::Store(n) => n,
        }
    }
}

/// Checks the name of an image in the store: 1 to 255 of `A-Z a-z 0-9 . _
/// / : @ -`, not starting with `-`, `/` or `.`, no `..`, and not `host`
/// (the built-in host image).
pub fn validate_image_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 255 {
        return Err("must be 1 to 255 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._/:@-".contains(&b))
    {
        return Err("only letters, digits and . _ / : @ - are allowed");
    }
    if name.starts_with(['-', '/', '.']) || name.contains("..") {
        return Err("may not start with - / . or contain ..");
    }
    if name == "host" {
        return Err("\"host\" is the built-in host image");
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MountMode {
    /// Read-only bind.
    #[default]
    Ro,
    /// Read-write bind: the only way a sandbox's writes reach the host.
    Rw,
    /// Copy-on-write over the source; changes are thrown away.
    Overlay,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Absolute host path.
    pub source: PathBuf,
    /// Absolute path inside the sandbox.
    pub target: PathBuf,
    #[serde(default)]
    pub mode: MountMode,
    /// Overlay only: the sandbox works in the tree as its owner even when
    /// that is root (files only root may read there become readable to
    /// the command; the host's tree is never written). `airlock task`
    /// sets it for the repository it was given; the service's API cannot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub as_owner: bool,
}

/// The identity the command runs as inside the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

impl User {
    pub const SANDBOX: User = User {
        uid: 1000,
        gid: 1000,
    };
    pub const ROOT: User = User { uid: 0, gid: 0 };

    /// The name `/etc/passwd` inside the sandbox gives this user.
    pub fn name(&self) -> String {
        match self.uid {
            0 => "root".into(),
            1000 => "sandbox".into(),
            65534 => "nobody".into(),
            n => format!("u{n}"),
        }
    }

    /// The home directory inside the sandbox.
    pub fn home(&self) -> PathBuf {
        match self.uid {
            0 => PathBuf::from("/root"),
            _ => PathBuf::from("/home").join(self.name()),
        }
    }
}

impl Default for User {
    fn default() -> Self {
        User::SANDBOX
    }
}

/// Resource limits. `None` means "not limited beyond the defaults".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    pub memory: Option<u64>,
    pub pids: Option<u64>,
    pub cpus: Option<f64>,
    /// Size of the writable layer (root tmpfs, `/tmp`, `$HOME`, overlays).
    pub disk: u64,
    /// Bytes of stdout+stderr kept; `None` keeps everything.
    pub output: Option<u64>,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// The smallest `--pids`: the sandbox's init process counts as one.
pub const MIN_PIDS: u64 = 2;
/// The smallest `--memory` (docker's minimum too): below it even the
/// sandbox's init and a shell are killed as out of memory.
pub const MIN_MEMORY: u64 = 6 << 20;
/// The smallest `--disk`: the sandbox's own `/etc` and directories live on
/// the same writable layer.
pub const MIN_DISK: u64 = 1 << 20;
pub const DEFAULT_DISK: u64 = 1 << 30;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: DEFAULT_TIMEOUT,
            memory: None,
            pids: None,
            cpus: None,
            disk: DEFAULT_DISK,
            output: None,
        }
    }
}

impl Limits {
    /// The floors below which no sandbox can start.
    pub fn validate(&self) -> Result<(), SpecError> {
        let small = |what, value: String, min, why| {
            Err(SpecError::TooSmall {
                what,
                value,
                min,
                why,
            })
        };
        if let Some(p) = self.pids {
            if p < MIN_PIDS {
                return small(
                    "--pids",
                    p.to_string(),
                    "2",
                    " (the sandbox's init process counts as one)",
                );
            }
        }
        if let Some(m) = self.memory {
            if m < MIN_MEMORY {
                return small("--memory", m.to_string(), "6M", "");
            }
        }
        if self.disk < MIN_DISK {
            return small(
                "--disk",
                self.disk.to_string(),
                "1M",
                " (the sandbox's own /etc and directories live there too)",
            );
        }
        let large = |what, value: String, max| Err(SpecError::TooLarge { what, value, max });
        if self.disk > MAX_SIZE {
            return large("--disk", self.disk.to_string(), "1P");
        }
        if let Some(m) = self.memory {
            if m > MAX_SIZE {
                return large("--memory", m.to_string(), "1P");
            }
        }
        if let Some(o) = self.output {
            if o > MAX_SIZE {
                return large("--output-limit", o.to_string(), "1P");
            }
        }
        if let Some(p) = self.pids {
            if p > MAX_PIDS {
                return large(
                    "--pids",
                    p.to_string(),
                    "4194304 (the kernel's own maximum)",
                );
            }
        }
        if let Some(c) = self.cpus {
            if !c.is_finite() || !(MIN_CPUS..=MAX_CPUS).contains(&c) {
                return Err(SpecError::Cpus {
                    input: c.to_string(),
                    why: "a number of cores between 0.01 and 4096",
                });
            }
        }
        if self.timeout.is_zero() {
            return small("--timeout", "0".into(), "1ms", "");
        }
        if self.timeout > MAX_TIMEOUT {
            return large(
                "--timeout",
                format!("{}s", self.timeout.as_secs()),
                "365 days",
            );
        }
        Ok(())
    }
}

/// The largest size of anything (`--memory`, `--disk`, `--output-limit`):
/// 1 PiB. Larger values are mistakes, and some would wrap to "unlimited"
/// where the kernel parses them.
pub const MAX_SIZE: u64 = 1 << 50;
/// The kernel's own maximum number of tasks (`pid_max` cannot exceed it).
pub const MAX_PIDS: u64 = 4_194_304;
pub const MIN_CPUS: f64 = 0.01;
pub const MAX_CPUS: f64 = 4096.0;
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);
/// Ids inside the sandbox are below this (the mapping covers 65536 ids).
pub const MAX_ID: u32 = 65536;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    #[serde(default)]
    pub isolation: Isolation,
    #[serde(default)]
    pub image: Image,
    pub command: Vec<String>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// Variables set on top of the base environment (PATH, HOME, USER, LANG,
    /// TERM, TZ). Later entries win.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default = "default_hostname")]
    pub hostname: String,
    #[serde(default)]
    pub user: User,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub network: Network,
}

pub const DEFAULT_HOSTNAME: &str = "airlock";

fn default_hostname() -> String {
    DEFAULT_HOSTNAME.to_string()
}

impl SandboxSpec {
    /// A spec that runs `command` with every default (which deny).
    pub fn new(command: Vec<String>) -> Self {
        SandboxSpec {
            isolation: Isolation::default(),
            image: Image::default(),
            command,
            mounts: Vec::new(),
            workdir: None,
            env: Vec::new(),
            limits: Limits::default(),
            hostname: default_hostname(),
            user: User::default(),
            tty: false,
            network: Network::default(),
        }
    }

    /// The directory the command starts in.
    pub fn effective_workdir(&self) -> PathBuf {
        self.workdir.clone().unwrap_or_else(|| self.user.home())
    }

    /// Checks everything that can be checked without touching the system.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(SpecError::NoCommand);
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            return Err(SpecError::Nul {
                what: "the command",
            });
        }
        for (k, v) in &self.env {
            validate_env_key(k)?;
            if v.contains('\0') {
                return Err(SpecError::Nul {
                    what: "an --env value",
                });
            }
        }
        if self.user.uid >= MAX_ID || self.user.gid >= MAX_ID {
            return Err(SpecError::User {
                input: format!("{}:{}", self.user.uid, self.user.gid),
                why: "ids inside the sandbox are below 65536",
            });
        }
        validate_hostname(&self.hostname)?;
        if let Image::Store(name) = &self.image {
            validate_image_name(name).map_err(|why| SpecError::Image {
                name: name.clone(),
                why,
            })?;
        }
        self.limits.validate()?;
        net::Policy::compile(&self.network)?;
        for m in &self.mounts {
            if m.source.as_os_str().as_encoded_bytes().contains(&0) {
                return Err(SpecError::Nul {
                    what: "a mount source",
                });
            }
        }
        if let Some(w) = &self.workdir {
            if w.as_os_str().as_encoded_bytes().contains(&0) {
                return Err(SpecError::Nul { what: "--workdir" });
            }
        }
        let mut seen: Vec<&Path> = Vec::new();
        for m in &self.mounts {
            validate_target(&m.target)?;
            if m.as_owner && m.mode != MountMode::Overlay {
                return Err(SpecError::MountTarget {
                    target: m.target.clone(),
                    why: "as_owner is only for overlay mounts (the host's tree must never be written as its owner)",
                });
            }
            if !m.source.is_absolute() {
                return Err(SpecError::MountSource {
                    path: m.source.clone(),
                    why: "the source must be an absolute path".into(),
                });
            }
            if seen.contains(&m.target.as_path()) {
                return Err(SpecError::MountTarget {
                    target: m.target.clone(),
                    why: "two mounts have the same target",
                });
            }
            seen.push(&m.target);
        }
        if let Some(w) = &self.workdir {
            if !w.is_absolute() {
                return Err(SpecError::Workdir {
                    path: w.clone(),
                    why: "must be an absolute path inside the sandbox",
                });
            }
            if w.components().any(|c| c == Component::ParentDir) {
                return Err(SpecError::Workdir {
                    path: w.clone(),
                    why: "must not contain '..'",
                });
            }
        }
        if self.isolation == Isolation::None {
            let unsupported = |what, why| {
                Err(SpecError::Unsupported {
                    what,
                    isolation: "none",
                    why,
                })
            };
            if !self.mounts.is_empty() {
                return unsupported(
                    "--mount",
                    "the local tier sees the host filesystem as it is; use --isolation container",
                );
            }
            if self.user != User::default() {
                return unsupported(
                    "--user",
                    "the local tier runs as you; use --isolation container",
                );
            }
            if self.image != Image::Host {
                return unsupported(
                    "--image",
                    "the local tier runs on the host's own filesystem; use --isolation container",
                );
            }
            if self.network.mode != NetMode::None {
                return unsupported(
                    "--net / --allow-host",
                    "the local tier shares the host's network, where no policy can be enforced; use --isolation container",
                );
            }
            if self.hostname != DEFAULT_HOSTNAME {
                return unsupported(
                    "--hostname",
                    "the local tier shares the host's hostname; use --isolation container",
                );
            }
        }
        if self.isolation == Isolation::Landlock {
            let unsupported = |what, why| {
                Err(SpecError::Unsupported {
                    what,
                    isolation: "landlock",
                    why,
                })
            };
            for m in &self.mounts {
                if m.mode == MountMode::Overlay {
                    return unsupported(
                        "an overlay --mount",
                        "the Landlock tier has no mount namespace to put a copy-on-write layer in; mount it ro or rw, or use --isolation container",
                    );
                }
                if m.source != m.target {
                    return unsupported(
                        "a --mount whose target differs from its source",
                        "the Landlock tier has no mount namespace: a mount grants access to the host path itself, so write it as PATH:PATH[:ro|rw]",
                    );
                }
            }
            if self.user != User::default() {
                return unsupported(
                    "--user",
                    "the Landlock tier runs as you (run by root: as an unprivileged id of airlock's range); use --isolation container",
                );
            }
            if self.image != Image::Host {
                return unsupported(
                    "--image",
                    "the Landlock tier runs on the host's own filesystem; use --isolation container",
                );
            }
            if self.hostname != DEFAULT_HOSTNAME {
                return unsupported(
                    "--hostname",
                    "the Landlock tier shares the host's hostname (no UTS namespace); use --isolation container",
                );
            }
            if self.network.mode != NetMode::None {
                return unsupported(
                    "a network policy",
                    "the Landlock tier has no network namespace: it has no network at all (every socket but AF_UNIX is refused); use --isolation container for egress",
                );
            }
        }
        Ok(())
    }
}

/// A spec that passed [`SandboxSpec::validate`]: the only kind a backend
/// accepts, so that every check holds for the CLI, a JSON spec and the API
/// alike.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSpec(SandboxSpec);

impl ValidSpec {
    pub fn into_inner(self) -> SandboxSpec {
        self.0
    }
}

impl std::ops::Deref for ValidSpec {
    type Target = SandboxSpec;
    fn deref(&self) -> &SandboxSpec {
        &self.0
    }
}

impl TryFrom<SandboxSpec> for ValidSpec {
    type Error = SpecError;
    fn try_from(s: SandboxSpec) -> Result<ValidSpec, SpecError> {
        s.validate()?;
        Ok(ValidSpec(s))
    }
}

impl SandboxSpec {
    /// Validates the spec into the form backends take.
    pub fn validated(self) -> Result<ValidSpec, SpecError> {
        ValidSpec::try_from(self)
    }
}

/// Targets airlock itself owns: a mount there would hide or replace the
/// sandbox's own plumbing.
const RESERVED_TARGETS: &[&str] = &[
    "/proc",
    "/dev",
    "/sys",
    "/etc",
    "/.airlock",
    "/.airlock-lower",
];

/// A mount target must be absolute, normalised (no `.`/`..`), not `/` and not
/// inside the kernel-interface trees.
pub fn validate_target(target: &Path) -> Result<(), SpecError> {
    let bad = |why| {
        Err(SpecError::MountTarget {
            target: target.to_path_buf(),
            why,
        })
    };
    let s = target.as_os_str().as_encoded_bytes();
    if !target.is_absolute() {
        return bad("must be an absolute path inside the sandbox");
    }
    if s.contains(&0) {
        return bad("contains a NUL byte");
    }
    for c in target.components() {
        match c {
            Component::ParentDir => return bad("must not contain '..'"),
            Component::CurDir => return bad("must not contain '.'"),
            _ => {}
        }
    }
    if target == Path::new("/") {
        return bad("cannot replace the root filesystem");
    }
    for r in RESERVED_TARGETS {
        if target.starts_with(r) {
            return bad("is inside /proc, /dev, /sys, /etc or /.airlock, which airlock manages");
        }
    }
    Ok(())
}

/// A variable name: letters, digits and `_`, not starting with a digit.
pub fn validate_env_key(key: &str) -> Result<(), SpecError> {
    let ok = !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !key.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(SpecError::Env {
            input: key.to_string(),
            why: "a name is letters, digits and '_', not starting with a digit",
        })
    }
}

fn validate_hostname(h: &str) -> Result<(), SpecError> {
    let bad = |why| {
        Err(SpecError::Hostname {
            input: h.to_string(),
            why,
        })
    };
    if h.is_empty() || h.len() > 64 {
        return bad("must be 1 to 64 characters");
    }
    if !h
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return bad("only letters, digits, '-' and '.' are allowed");
    }
    if h.starts_with('-') || h.starts_with('.') {
        return bad("must start with a letter or digit");
    }
    Ok(())
}

mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SandboxSpec {
        SandboxSpec::new(vec!["true".into()])
    }

    #[test]
    fn defaults_deny() {
        let s = spec();
        assert_eq!(s.isolation, Isolation::Container);
        assert_eq!(s.network.mode, NetMode::None);
        assert_eq!(s.user, User::SANDBOX);
        assert!(s.env.is_empty());
        assert!(s.mounts.is_empty());
        assert_eq!(s.limits.timeout, DEFAULT_TIMEOUT);
        assert_eq!(s.limits.disk, DEFAULT_DISK);
        s.validate().unwrap();
    }

    #[test]
    fn limits_have_floors() {
        let mut s = spec();
        s.limits.pids = Some(1);
        assert!(matches!(
            s.validate(),
            Err(SpecError::TooSmall { what: "--pids", .. })
        ));
        s.limits.pids = Some(2);
        s.validate().unwrap();
        s.limits.memory = Some(1);
        assert!(matches!(
            s.validate(),
            Err(SpecError::TooSmall {
                what: "--memory",
                ..
            })
        ));
        s.limits.memory = Some(MIN_MEMORY);
        s.validate().unwrap();
        s.limits.disk = 0;
        let e = s.validate().unwrap_err();
        assert!(e.to_string().contains("at least 1M"), "{e}");
    }

    #[test]
    fn empty_command_rejected() {
        let mut s = spec();
        s.command.clear();
        assert_eq!(s.validate(), Err(SpecError::NoCommand));
    }

    #[test]
    fn targets_checked() {
        for t in [
            "/proc/x",
            "/proc",
            "/dev/shm",
            "/sys",
            "/etc/passwd",
            "/",
            "rel",
        ] {
            assert!(validate_target(Path::new(t)).is_err(), "{t}");
        }
        assert!(validate_target(Path::new("/work/../etc")).is_err());
        assert!(validate_target(Path::new("/work")).is_ok());
        assert!(validate_target(Path::new("/home/sandbox/x")).is_ok());
        assert!(validate_target(Path::new("/procx")).is_ok());
    }

    #[test]
    fn landlock_tier_takes_what_it_can_enforce() {
        let mut s = spec();
        s.isolation = Isolation::Landlock;
        s.validate().unwrap();
        let m = |src: &str, dst: &str, mode| Mount {
            source: src.into(),
            target: dst.into(),
            mode,
            as_owner: false,
        };
        s.mounts = vec![
            m("/srv/a", "/srv/a", MountMode::Ro),
            m("/srv/b", "/srv/b", MountMode::Rw),
        ];
        s.validate().unwrap();
        for bad in [
            m("/srv/a", "/work", MountMode::Ro),
            m("/srv/a", "/srv/a", MountMode::Overlay),
        ] {
            s.mounts = vec![bad];
            assert!(
                matches!(
                    s.validate(),
                    Err(SpecError::Unsupported {
                        isolation: "landlock",
                        ..
                    })
                ),
                "{:?}",
                s.mounts
            );
        }
        s.mounts.clear();
        s.user = User { uid: 0, gid: 0 };
        assert!(s.validate().is_err());
        s.user = User::default();
        s.image = Image::Store("py".into());
        assert!(s.validate().is_err());
        s.image = Image::Host;
        s.hostname = "other".into();
        assert!(s.validate().is_err());
        assert_eq!(Isolation::Landlock.name(), "landlock");
        assert!(Isolation::Landlock.is_plain_child() && !Isolation::Container.is_plain_child());
        let j: SandboxSpec =
            serde_json::from_str(r#"{"command":["true"],"isolation":"landlock"}"#).unwrap();
        assert_eq!(j.isolation, Isolation::Landlock);
    }

    #[test]
    fn duplicate_targets_rejected() {
        let mut s = spec();
        let m = Mount {
            source: "/tmp".into(),
            target: "/work".into(),
            mode: MountMode::Ro,
            as_owner: false,
        };
        s.mounts = vec![m.clone(), m];
        assert!(matches!(s.validate(), Err(SpecError::MountTarget { .. })));
    }

    #[test]
    fn hostnames() {
        let mut s = spec();
        for bad in ["", "-a", "a b", "a/b", &"x".repeat(65)] {
            s.hostname = bad.to_string();
            assert!(s.validate().is_err(), "{bad}");
        }
        s.hostname = "build-1.local".into();
        s.validate().unwrap();
    }

    #[test]
    fn local_tier_refuses_mounts() {
        let mut s = spec();
        s.isolation = Isolation::None;
        s.mounts.push(Mount {
            source: "/tmp".into(),
            target: "/work".into(),
            mode: MountMode::Rw,
            as_owner: false,
        });
        assert!(matches!(s.validate(), Err(SpecError::Unsupported { .. })));
    }

    #[test]
    fn local_tier_refuses_identity_flags() {
        let mut s = spec();
        s.isolation = Isolation::None;
        s.validate().unwrap();
        s.user = User::ROOT;
        assert!(matches!(
            s.validate(),
            Err(SpecError::Unsupported { what: "--user", .. })
        ));
        s.user = User::default();
        s.hostname = "box".into();
        assert!(matches!(
            s.validate(),
            Err(SpecError::Unsupported {
                what: "--hostname",
                ..
            })
        ));
    }

    #[test]
    fn serde_denies_unknown_fields() {
        let j = r#"{"command":["true"],"surprise":1}"#;
        assert!(serde_json::from_str::<SandboxSpec>(j).is_err());
        let j = r#"{"command":["true"]}"#;
        let s: SandboxSpec = serde_json::from_str(j).unwrap();
        assert_eq!(s, spec());
    }

    /// An image is a plain string in JSON: "host" or a store name.
    #[test]
    fn images_are_strings_in_json() {
        let s: SandboxSpec =
            serde_json::from_str(r#"{"command":["true"],"image":"py:3"}"#).unwrap();
        assert_eq!(s.image, Image::Store("py:3".into()));
        s.validate().unwrap();
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["image"], "py:3");
        let s: SandboxSpec =
            serde_json::from_str(r#"{"command":["true"],"image":"host"}"#).unwrap();
        assert_eq!(s.image, Image::Host);
        assert_eq!(serde_json::to_value(&s).unwrap()["image"], "host");
        assert!(serde_json::from_str::<SandboxSpec>(
            r#"{"command":["true"],"image":{"store":"x"}}"#
        )
        .is_err());
        for bad in [
            "",
            "-x",
            "/x",
            ".x",
            "a/../b",
            "a b",
            "x\ny",
            &"y".repeat(256),
        ] {
            assert!(validate_image_name(bad).is_err(), "{bad:?}");
        }
        for ok in [
            "py",
            "library/debian:12",
            "127.0.0.1:5000/t:v",
            "a@sha256-x",
        ] {
            validate_image_name(ok).unwrap();
        }
    }

    #[test]
    fn user_names_and_homes() {
        assert_eq!(User::SANDBOX.name(), "sandbox");
        assert_eq!(User::SANDBOX.home(), PathBuf::from("/home/sandbox"));
        assert_eq!(User::ROOT.home(), PathBuf::from("/root"));
        assert_eq!(User { uid: 5, gid: 5 }.name(), "u5");
    }

    /// A JSON spec (the API's way in) meets every check the CLI's parsers
    /// make: nothing out of range reaches a backend.
    #[test]
    fn json_specs_are_held_to_every_range() {
        let bad = [
            r#"{"command":["true"],"limits":{"timeout":60000,"memory":null,"pids":null,"cpus":null,"disk":0,"output":null}}"#,
            r#"{"command":["true"],"limits":{"timeout":60000,"memory":null,"pids":null,"cpus":null,"disk":18446744073709551615,"output":null}}"#,
            r#"{"command":["true"],"limits":{"timeout":60000,"memory":0,"pids":null,"cpus":null,"disk":1048576,"output":null}}"#,
            r#"{"command":["true"],"limits":{"timeout":60000,"memory":null,"pids":0,"cpus":null,"disk":1048576,"output":null}}"#,
            r#"{"command":["true"],"limits":{"timeout":60000,"memory":null,"pids":99999999,"cpus":null,"disk":1048576,"output":null}}"#,
            r#"{"command":["true"],"limits":{"timeout":60000,"memory":null,"pids":null,"cpus":0.0,"disk":1048576,"output":null}}"#,
            r#"{"command":["true"],"limits":{"timeout":60000,"memory":null,"pids":null,"cpus":100000.0,"disk":1048576,"output":null}}"#,
            r#"{"command":["true"],"limits":{"timeout":0,"memory":null,"pids":null,"cpus":null,"disk":1048576,"output":null}}"#,
            r#"{"command":["true"],"user":{"uid":70000,"gid":0}}"#,
            r#"{"command":["true"],"env":[["1X","y"]]}"#,
            r#"{"command":["true"],"env":[["X","a\u0000b"]]}"#,
            r#"{"command":["tr\u0000ue"]}"#,
            r#"{"command":[]}"#,
            r#"{"command":["true"],"hostname":"no spaces"}"#,
            r#"{"command":["true"],"workdir":"rel"}"#,
            r#"{"command":["true"],"mounts":[{"source":"/tmp","target":"/proc/x"}]}"#,
            r#"{"command":["true"],"mounts":[{"source":"tmp","target":"/x"}]}"#,
            r#"{"command":["true"],"image":"../x"}"#,
            r#"{"command":["true"],"image":""}"#,
            r#"{"command":["true"],"image":"a b"}"#,
            r#"{"command":["true"],"image":"py","isolation":"none"}"#,
        ];
        for j in bad {
            let s: SandboxSpec = serde_json::from_str(j).unwrap_or_else(|e| panic!("{j}: {e}"));
            assert!(s.clone().validated().is_err(), "accepted: {j}");
        }
        let good: SandboxSpec = serde_json::from_str(
            r#"{"command":["true"],"limits":{"timeout":60000,"memory":67108864,"pids":64,"cpus":0.5,"disk":1048576,"output":0}}"#,
        )
        .unwrap();
        let v = good.clone().validated().unwrap();
        assert_eq!(*v, good);
    }
}
