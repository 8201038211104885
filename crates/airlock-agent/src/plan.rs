//! What the host tells the agent to be: the plan, sent as the protocol's
//! Plan message (JSON inside), and the fds the agent starts with.

use airlock_confine::Confinement;
use airlock_jail::RootPlan;
use serde::{Deserialize, Serialize};

pub use airlock_jail::spawn::{AGENT_ARGV0 as ARGV0, FD_CHANNEL, FD_FIRST_TREE};

/// A microVM guest's channel: the virtio-serial port of this name.
pub const GUEST_PORT: &str = "org.airlock.agent";
/// In a guest's initramfs: the kernel modules to load, one file name a
/// line (the files beside it), in dependency order.
pub const GUEST_MODULES: &str = "/airlock/modules";

/// How one user mount's inherited tree looks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountShape {
    pub is_dir: bool,
}

/// The trees a root-run agent inherits from [`FD_FIRST_TREE`] on, in this
/// order: its own `/dev` (a tmpfs with its device nodes, when airlock
/// could make one), one tree per host device node (when it could not), one
/// per user mount, then the image's tree and a build step's capture
/// directory (when the root is an image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inherited {
    pub dev_fs: bool,
    pub devices: usize,
    pub mounts: Vec<MountShape>,
    #[serde(default)]
    pub image: bool,
    #[serde(default)]
    pub capture: bool,
}

/// A container sandbox's set-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerPlan {
    pub root: RootPlan,
    pub rootless: bool,
    pub hostname: String,
    /// `/proc/sys/user/*` of the sandbox's own user namespace.
    pub userns_limits: Vec<(String, u64)>,
    /// Run by root, the parent opened the mount trees (with root's rights,
    /// id-mapped) and the agent inherits them from [`FD_FIRST_TREE`] on.
    /// `None`: the agent opens them itself (rootless), from `pinned`.
    pub inherited: Option<Inherited>,
    /// Rootless: each user mount's source as the parent resolved it on the
    /// host, in `root.user_mounts` order; the agent opens exactly these.
    #[serde(default)]
    pub pinned: Vec<airlock_jail::mount::Pinned>,
    /// Rootless, with an image root: its tree (and capture directory) as
    /// the parent resolved them.
    #[serde(default)]
    pub image_pins: Option<airlock_jail::mount::ImagePins>,
}

/// Which kind of agent this is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Role {
    /// PID 1 of a container sandbox.
    Container(Box<ContainerPlan>),
    /// A plain child of airlock (the local tier): no isolation to set up.
    Local,
    /// `/init` of a microVM guest (see `guest.rs`).
    Guest(Box<GuestPlan>),
    /// A plain child of airlock confined by Landlock (the Landlock tier):
    /// the agent confines itself with its processes' Landlock rules (so
    /// that its file operations reach no further than they do), and, run
    /// by root, acts on files as the sandbox's unprivileged ids.
    Landlock,
}

/// A microVM guest's set-up, applied by the agent as the guest's `/init`
/// after boot (or after a snapshot of it was restored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestPlan {
    /// The sandbox's root, as the container tier builds it; the image's
    /// directories come from the guest's read-only disks.
    pub root: RootPlan,
    pub hostname: String,
    /// The image's disks, each mounted read-only before the root is built.
    pub disks: Vec<GuestDisk>,
    /// Fresh entropy from the host, mixed into the guest kernel's RNG and
    /// reseeded from before any command runs: clones of one snapshot
    /// share the RNG state they were saved with.
    pub seed: Vec<u8>,
    /// The host's wall clock (ns since the epoch) when the plan was made:
    /// a restored guest's clock is the snapshot's.
    pub time_ns: u64,
    /// Where each of `root.user_mounts` (in that order) is in the guest:
    /// a directory or file of the mounts disk (mounted by `disks`).
    #[serde(default)]
    pub mounts: Vec<GuestMount>,
}

/// A user mount's source in the guest (on the read-only mounts disk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestMount {
    pub path: std::path::PathBuf,
    pub is_dir: bool,
}

/// A read-only disk of the guest's image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestDisk {
    /// Its virtio serial number (`/sys/block/vdX/serial`).
    pub serial: String,
    /// Where it is mounted (before the sandbox's root is built).
    pub at: std::path::PathBuf,
    /// Its filesystem (`erofs`).
    pub fstype: String,
}

/// Everything the agent needs, from the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentPlan {
    pub role: Role,
    /// How every process it starts is confined.
    pub confinement: Confinement,
    /// Who file operations act as (uid, gid in the sandbox).
    pub file_user: (u32, u32),
    /// Report start-up timing marks (a notice before Ready).
    #[serde(default)]
    pub trace_timing: bool,
    /// A one-shot sandbox (`airlock run`): the agent exits (killing what is
    /// left) once every process it started has exited and been reported.
    #[serde(default)]
    pub exit_when_idle: bool,
    /// Loopback ports the agent listens on inside the sandbox's network
    /// namespace (the egress proxy's HTTP and SOCKS ports); each accepted
    /// connection is offered to the host, which decides.
    #[serde(default)]
    pub egress_ports: Vec<u16>,
    /// Transparent egress (a network but `none`): the agent's DNS stub and
    /// the listeners that tunnel its pool's addresses to the host's proxy.
    #[serde(default)]
    pub transparent: Option<Transparent>,
}

/// What the agent needs for transparent egress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transparent {
    /// The sandbox's network policy at start: the stub answers only names
    /// it allows (the host's proxy still decides every connection, with
    /// the policy of the moment).
    pub network: airlock_spec::Network,
    /// The pool the stub answers from (an IPv4 block, made local on `lo`).
    pub pool: (std::net::Ipv4Addr, u8),
    /// The TCP ports caught for each name the stub hands out.
    pub ports: Vec<u16>,
    /// Whether the agent makes the pool local itself (it may change its
    /// network namespace: rootless, or a microVM guest); otherwise the
    /// host has done it.
    pub agent_routes: bool,
}

impl Transparent {
    /// For a spec's network: `None` without a network, or when every
    /// pool is taken by a CIDR rule.
    pub fn for_network(n: &airlock_spec::Network, agent_routes: bool) -> Option<Transparent> {
        if n.mode == airlock_spec::NetMode::None {
            return None;
        }
        // The stub needs the rules and nothing else: never secrets (their
        // values do not go into the sandbox, and without them the broker's
        // part of the policy would not compile there — red team: any
        // --secret turned transparent mode off).
        let n = &airlock_spec::Network {
            mode: n.mode,
            allow: n.allow.clone(),
            deny: n.deny.clone(),
            ..airlock_spec::Network::default()
        };
        let p = airlock_spec::net::Policy::compile(n).ok()?;
        if !p.enabled() {
            return None;
        }
        let pool = p.transparent_pool()?;
        let std::net::IpAddr::V4(a) = pool.addr else {
            return None;
        };
        Some(Transparent {
            network: n.clone(),
            pool: (a, pool.prefix),
            ports: p.transparent_ports(),
            agent_routes,
        })
    }
}

impl AgentPlan {
    pub fn to_bytes(&self) -> Vec<u8> {
        // A plan is plain data (strings, numbers, byte vectors): it always
        // serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(b: &[u8]) -> Result<AgentPlan, serde_json::Error> {
        serde_json::from_slice(b)
    }
}

#[cfg(test)]
mod tests {
    use super::Transparent;
    use airlock_spec::{NetMode, Network};

    #[test]
    fn transparent_only_with_a_network() {
        assert_eq!(Transparent::for_network(&Network::default(), true), None);
        let n = Network {
            mode: NetMode::Allowlist,
            allow: vec!["a.test".into(), "*.b.test:8443".into()],
            ..Network::default()
        };
        let t = Transparent::for_network(&n, false).unwrap();
        assert_eq!(t.pool, ("198.18.0.0".parse().unwrap(), 15));
        assert_eq!(t.ports, vec![80, 443, 8443]);
        assert!(!t.agent_routes);
        // Every pool overlapped by a rule: off.
        let n = Network {
            mode: NetMode::Allowlist,
            allow: vec!["a.test".into()],
            deny: vec!["0.0.0.0/0".into()],
            ..Network::default()
        };
        assert_eq!(Transparent::for_network(&n, true), None);
    }
}
