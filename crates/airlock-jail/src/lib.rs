//! The container tier: namespaces, mounts, seccomp, Landlock, capabilities,
//! cgroups and rlimits.

pub mod seccomp;
