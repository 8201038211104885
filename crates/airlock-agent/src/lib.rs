//! The agent: one long-lived process inside every sandbox that serves many
//! processes, file operations, terminals and TCP streams over one channel
//! (protocol v2).
//!
//! It is the `airlock` binary itself, exec'd (never forked from the CLI,
//! so it holds no host memory) from an fd opened before the sandbox exists,
//! as `airlock-agent`, with an empty environment. It learns what it is from
//! the host's Plan:
//!
//! - **container PID 1**: it waits until the host has written its id maps,
//!   becomes root of its user namespace, applies the plan (the root
//!   filesystem, hostname, loopback, its namespace's limits), makes itself
//!   non-dumpable and serves. When it exits, the kernel kills everything in
//!   its PID namespace.
//! - **local**: a plain child of airlock (the local tier); nothing to set
//!   up; it is the subreaper of what it starts and kills it all when it
//!   stops.
//!
//! Every process it starts is confined by `airlock-confine` between fork
//! and exec (the agent is single-threaded, so allocating there is sound).
//! The host never trusts the agent, and the agent validates what the host
//! sends with `AgentSession`.

mod files;
mod guest;
pub mod plan;
mod procs;
mod serve;
mod setup;
mod tcp;
mod transparent;

use airlock_protocol::v2::Stage;
pub use plan::{
    AgentPlan, ContainerPlan, GuestDisk, GuestMount, GuestPlan, Inherited, MountShape, Role,
    Transparent,
};
pub use serve::{serve, Served};

/// A set-up failure, reported as SetupFailed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupError {
    pub stage: Stage,
    pub errno: i32,
    pub detail: String,
}

impl SetupError {
    pub(crate) fn io(stage: Stage, what: impl std::fmt::Display, e: std::io::Error) -> SetupError {
        SetupError {
            stage,
            errno: airlock_sys::errno_of(&e),
            detail: format!("{what}: {e}"),
        }
    }
}

/// Whether this process was started as the agent (`argv[0]`), or is a
/// microVM guest's `/init`.
pub fn is_agent_invocation() -> bool {
    std::env::args_os().next().is_some_and(|a| a == plan::ARGV0) || guest::is_guest_init()
}

/// The agent's `main`: never returns.
pub fn main() -> ! {
    // --- microVM tier: the guest's /init, and the VMM's jail helper ---
    if guest::is_guest_init() {
        guest::main();
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == airlock_jail::vmm::HELPER_ARG)
    {
        airlock_jail::vmm::helper_main();
    }
    // --- end microVM tier ---
    let code = match serve::run() {
        Ok(()) => 0,
        Err(_) => 1,
    };
    // SAFETY: leaves without running destructors of anything half-done.
    unsafe { libc::_exit(code) }
}
