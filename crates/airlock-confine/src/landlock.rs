//! Landlock: the command may touch only what the sandbox mounts, in the way
//! each mount allows, and may not signal or reach abstract sockets outside
//! its own domain (which keeps it away from the agent, PID 1).

use landlock::{
    Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    Scope, ABI,
};
use std::path::{Path, PathBuf};

const ABI_WANTED: ABI = ABI::V6;

/// Which paths get which access.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rules {
    /// Read and execute.
    pub read_exec: Vec<PathBuf>,
    /// Everything.
    pub full: Vec<PathBuf>,
    /// The filesystem is the host's own (the Landlock tier): no listing of
    /// every directory beneath `/`, and of `/dev` only the harmless
    /// character devices, not the directory (no disks, no terminals, no
    /// `/dev/shm`).
    #[serde(default)]
    pub on_host: bool,
}

/// The devices a process on the host's `/dev` may open (read and write).
pub const HOST_DEVICES: [&str; 5] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("landlock ruleset: {0}")]
    Ruleset(#[from] landlock::RulesetError),
    #[error("landlock ruleset: {0}")]
    Dup(std::io::Error),
    #[error("landlock is not enforced by this kernel")]
    NotEnforced,
}

/// A ruleset built once (paths opened and added in the sandbox's final
/// root) and applied to each process the agent starts.
pub struct Prepared(landlock::RulesetCreated);

/// Builds the ruleset for `rules`, resolving their paths now.
pub fn prepare(rules: &Rules) -> Result<Prepared, LandlockError> {
    prepare_inner(rules, false)
}

/// The ruleset for the agent of a sandbox on the host's `/dev` (the
/// Landlock tier), which confines itself with its processes' rules plus
/// the pseudo-terminals it allocates for them (`/dev/ptmx`, `/dev/pts`).
/// Its processes add their own layer, without those.
pub fn prepare_agent(rules: &Rules) -> Result<Prepared, LandlockError> {
    prepare_inner(rules, true)
}

fn prepare_inner(rules: &Rules, ptys: bool) -> Result<Prepared, LandlockError> {
    let all = AccessFs::from_all(ABI_WANTED);
    let read = AccessFs::from_read(ABI_WANTED);
    let mut rs = Ruleset::default()
        .handle_access(all)?
        .scope(Scope::from_all(ABI_WANTED))?
        .create()?;
    // "/" itself: listing only (a rule for a directory holds for all
    // beneath it: in a sandbox's own root, not on the host's).
    if !rules.on_host {
        rs = rs
            .add_rules(open("/").map(|fd| {
                Ok::<_, landlock::RulesetError>(PathBeneath::new(fd, AccessFs::ReadDir))
            }))?;
    }
    // Kernel interfaces: read; /dev also write (null, tty) and ioctl (ttys).
    rs = rs.add_rules(open("/proc").map(|fd| {
        Ok::<_, landlock::RulesetError>(PathBeneath::new(
            fd,
            AccessFs::ReadFile | AccessFs::ReadDir,
        ))
    }))?;
    if rules.on_host {
        for d in HOST_DEVICES {
            rs = rs.add_rules(open(d).map(|fd| {
                Ok::<_, landlock::RulesetError>(PathBeneath::new(
                    fd,
                    AccessFs::ReadFile | AccessFs::WriteFile,
                ))
            }))?;
        }
        if ptys {
            let tty = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev;
            rs = rs.add_rules(
                open("/dev/ptmx")
                    .map(|fd| Ok::<_, landlock::RulesetError>(PathBeneath::new(fd, tty))),
            )?;
            rs = rs.add_rules(open("/dev/pts").map(|fd| {
                Ok::<_, landlock::RulesetError>(PathBeneath::new(fd, tty | AccessFs::ReadDir))
            }))?;
        }
    } else {
        rs = rs.add_rules(open("/dev").map(|fd| {
            Ok::<_, landlock::RulesetError>(PathBeneath::new(
                fd,
                AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::WriteFile | AccessFs::IoctlDev,
            ))
        }))?;
    }
    for p in &rules.read_exec {
        rs = rs.add_rules(
            open(p).map(|fd| Ok::<_, landlock::RulesetError>(PathBeneath::new(fd, read))),
        )?;
    }
    for p in &rules.full {
        rs = rs.add_rules(
            open(p).map(|fd| Ok::<_, landlock::RulesetError>(PathBeneath::new(fd, all))),
        )?;
    }
    Ok(Prepared(rs))
}

impl Prepared {
    /// Restricts the calling process (sets `no_new_privs` too). Fails
    /// unless the kernel enforces the ruleset.
    pub fn restrict_self(&self) -> Result<RulesetStatus, LandlockError> {
        let rs = self.0.try_clone().map_err(LandlockError::Dup)?;
        let status = rs.restrict_self()?;
        if status.ruleset == RulesetStatus::NotEnforced {
            return Err(LandlockError::NotEnforced);
        }
        Ok(status.ruleset)
    }
}

/// Applies the rules to the calling process. Returns the status so the
/// caller can tell full from partial enforcement.
pub fn restrict(rules: &Rules) -> Result<RulesetStatus, LandlockError> {
    prepare(rules)?.restrict_self()
}

/// The kernel's Landlock ABI version, or 0 when Landlock is unavailable.
pub fn abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: with a null attr and size 0 this only returns the ABI version.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    v.max(0)
}

/// A path that does not exist inside the sandbox simply gets no rule.
fn open(p: impl AsRef<Path>) -> Option<PathFd> {
    PathFd::new(p.as_ref()).ok()
}
