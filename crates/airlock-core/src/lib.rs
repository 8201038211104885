//! The core as a library: a [`Sandbox`] handle over a [`Backend`] (the
//! container and local tiers; the microVM tier will be a third), an
//! explicit lifecycle ([`State`]), and structured [`Event`]s from the
//! sandbox's agent over protocol v2. The CLI's `airlock run`, the daemon
//! and task mode are clients of it.

pub mod backend;
pub mod build;
pub mod config;
mod egress;
pub mod facts;
pub mod image;
pub mod sandbox;
pub mod task;

pub use backend::Backend;
pub use facts::Facts;
pub use sandbox::{
    prespawn, prespawn_joining, CreateOptions, Event, PendingAgent, ProcessSpec, Sandbox, State,
    Teardown, Usage,
};

pub use airlock_protocol::v2::{
    DirEntry, ExitStatus, FileKind, FsError, OutStream, Stage, Stat, StreamKind, WriteFlags,
};

use airlock_jail::JailError;

/// Uses the airlock binary at `path` as every sandbox's agent (exec'd as
/// `airlock-agent`), instead of this process's own executable. For programs
/// that link the core but are not the airlock binary; call it before the
/// first sandbox. Fails if an agent binary was already chosen.
pub fn use_agent_binary(path: &std::path::Path) -> std::io::Result<()> {
    airlock_jail::spawn::set_agent_exe(path)
}
use airlock_spec::SpecError;
use std::io;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Jail(#[from] JailError),
    #[error("sandbox setup failed at {}: {detail}", stage.name())]
    Setup {
        stage: Stage,
        errno: i32,
        detail: String,
    },
    #[error("the sandbox's agent broke protocol: {what}")]
    AgentMisbehaved { what: String },
    #[error("request refused by the protocol session: {0}")]
    Misuse(String),
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        err: io::Error,
    },
    #[error("the microVM tier: {0}")]
    Microvm(#[from] airlock_vm::VmError),
    #[error("the microVM tier: {0}")]
    MicrovmUnsupported(String),
    #[error("the microVM ended before the command did: its QEMU process was killed from outside, or the guest kernel stopped (a panic); the sandbox is gone{}", console_said(.0))]
    MicrovmGone(String),
    #[error("the Landlock tier needs Landlock, which this kernel does not offer (Linux 5.13+ booted with landlock in lsm=; see airlock doctor)")]
    LandlockUnavailable,
    #[error(transparent)]
    Image(#[from] airlock_image::ImageError),
    #[error("image {image}: {why}")]
    ImageUse { image: String, why: String },
}

/// A number unique to this process and moment (cgroup names).
pub(crate) fn unique() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (std::process::id() as u64).rotate_left(40)
}

/// Formats a size the way users type it (`64K`, `1M`, `1.5G`).
pub fn human_size(n: u64) -> String {
    for (unit, shift) in [("G", 30), ("M", 20), ("K", 10)] {
        let u = 1u64 << shift;
        if n >= u {
            return if n.is_multiple_of(u) {
                format!("{}{unit}", n / u)
            } else {
                format!("{:.1}{unit}", n as f64 / u as f64)
            };
        }
    }
    n.to_string()
}

/// Formats a duration the way users typed it.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 && s < 60 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(3600) && s > 0 {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) && s > 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_typed() {
        assert_eq!(human_duration(Duration::from_secs(300)), "5m");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn sizes_print_as_typed() {
        assert_eq!(human_size(64 << 10), "64K");
        assert_eq!(human_size(1 << 20), "1M");
        assert_eq!(human_size(3 << 29), "1.5G");
        assert_eq!(human_size(100), "100");
    }
}

/// Opt-in start-up timing (`AIRLOCK_TRACE_TIMING=1`): marks of this
/// process and, sent along as a notice, of the agent, printed to stderr as
/// microseconds since the first mark.
pub mod timing {
    use std::sync::OnceLock;

    static ON: OnceLock<bool> = OnceLock::new();

    /// Whether timing is on (checked once).
    pub fn on() -> bool {
        *ON.get_or_init(|| std::env::var_os("AIRLOCK_TRACE_TIMING").is_some())
    }

    /// Records `what` if timing is on.
    pub fn mark(what: &'static str) {
        if on() {
            airlock_sys::timing::mark(what);
        }
    }

    /// Prints this process's marks and `extra` (the agent's), in order.
    pub fn print(extra: &[(String, u64)]) {
        if !on() {
            return;
        }
        let mut all: Vec<(String, u64)> = airlock_sys::timing::marks()
            .into_iter()
            .map(|(l, t)| (l.to_string(), t))
            .chain(extra.iter().cloned())
            .collect();
        all.sort_by_key(|m| m.1);
        let t0 = all.first().map(|m| m.1).unwrap_or(0);
        for (l, t) in all {
            eprintln!("airlock: timing {:>7} us  {l}", t - t0);
        }
    }

    /// An agent's timing notice: `timing: label=us label=us ...`.
    pub fn parse_notice(text: &str) -> Option<Vec<(String, u64)>> {
        let rest = text.strip_prefix("timing:")?;
        Some(
            rest.split_whitespace()
                .filter_map(|kv| {
                    let (k, v) = kv.rsplit_once('=')?;
                    Some((format!("agent: {k}"), v.parse().ok()?))
                })
                .collect(),
        )
    }
}

/// The guest console's last lines, as a clause of an error.
fn console_said(tail: &str) -> String {
    let lines: Vec<&str> = tail
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    // A panic's own line says why; else the last two.
    let said = match lines.iter().rev().find(|l| l.contains("Kernel panic")) {
        Some(p) => p.to_string(),
        None => lines[lines.len().saturating_sub(2)..].join(" | "),
    };
    // The kernel's timestamp goes.
    let said = match said.strip_prefix('[').and_then(|r| r.split_once("] ")) {
        Some((_, rest)) => rest.to_string(),
        None => said,
    };
    format!(
        "; the guest's console said: {}",
        said.chars().take(300).collect::<String>()
    )
}
