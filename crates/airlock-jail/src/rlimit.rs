//! rlimits: always no core dumps; memory and process caps when no cgroup can
//! enforce them.

use crate::sys;
use std::io;

fn set(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let r = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `r` is a valid rlimit struct.
    sys::cvt(unsafe { libc::setrlimit(resource, &r) })?;
    Ok(())
}

/// What the command gets in place of cgroup limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fallback {
    /// `RLIMIT_DATA` (private writable memory of each process).
    pub data: Option<u64>,
    /// `RLIMIT_NPROC` (processes of the command's user in its namespace).
    pub nproc: Option<u64>,
}

pub fn apply(f: &Fallback) -> io::Result<()> {
    set(libc::RLIMIT_CORE, 0)?;
    if let Some(d) = f.data {
        set(libc::RLIMIT_DATA, d)?;
    }
    if let Some(n) = f.nproc {
        set(libc::RLIMIT_NPROC, n)?;
    }
    Ok(())
}
