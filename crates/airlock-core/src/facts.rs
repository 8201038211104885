//! What this host offers sandboxes, probed once per process.

use airlock_jail::rlimit::KernelLimits;
use airlock_jail::{HostFacts, IdMap};
use std::sync::OnceLock;

/// Everything about the host a sandbox's plan depends on. (The cgroup
/// layout is read only by runs that ask for limits: it costs a read of
/// mountinfo.)
#[derive(Debug, Clone)]
pub struct Facts {
    /// What the `host` image is made of.
    pub image: HostFacts,
    pub kernel: KernelLimits,
    /// 0 when the kernel has no Landlock.
    pub landlock_abi: i64,
    /// How a container sandbox's ids map onto the host for this caller.
    pub idmap: IdMap,
}

impl Facts {
    /// Probes the host now.
    pub fn probe() -> Facts {
        Facts {
            image: HostFacts::probe(),
            kernel: KernelLimits::probe(),
            landlock_abi: airlock_jail::landlock::abi(),
            idmap: idmap(),
        }
    }

    /// The facts of this process, probed on first use.
    pub fn get() -> &'static Facts {
        static F: OnceLock<Facts> = OnceLock::new();
        F.get_or_init(Facts::probe)
    }
}

/// How a container sandbox's ids map onto the host for this caller
/// (reads /etc/subuid and /etc/subgid once).
pub fn idmap() -> IdMap {
    static M: OnceLock<IdMap> = OnceLock::new();
    *M.get_or_init(IdMap::for_current_process)
}
