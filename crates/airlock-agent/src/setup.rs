//! Applying the plan: what the agent does between Plan and Ready.

use crate::plan::{ContainerPlan, FD_FIRST_TREE};
use crate::SetupError;
use airlock_jail::mount::{self, OpenedMount, OpenedTrees};
use airlock_protocol::v2::Stage;
use airlock_sys as sys;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Container PID 1: becomes root of its user namespace, builds the root
/// filesystem and the rest of the sandbox. Returns what the user should
/// hear about.
pub(crate) fn container(
    p: &ContainerPlan,
    channel: RawFd,
    net_ready: bool,
) -> Result<Vec<String>, SetupError> {
    // Root of our user namespace. Run by root we still carry host root as
    // our real and saved ids (unmapped here), and its groups.
    // SAFETY: credential syscalls with plain integers.
    unsafe {
        if !p.rootless {
            sys::cvt(libc::setgroups(0, std::ptr::null()))
                .map_err(|e| SetupError::io(Stage::UserNamespace, "setgroups", e))?;
        }
        sys::cvt(libc::setresgid(0, 0, 0))
            .map_err(|e| SetupError::io(Stage::UserNamespace, "setresgid", e))?;
        sys::cvt(libc::setresuid(0, 0, 0))
            .map_err(|e| SetupError::io(Stage::UserNamespace, "setresuid", e))?;
    }
    // A credential change may clear the parent-death signal: arm it again,
    // then make sure airlock did not die in between (its end of the
    // channel would have hung up).
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if sys::peer_gone(channel) {
        // SAFETY: exits at once; nothing to clean up.
        unsafe { libc::_exit(0) };
    }
    // A cgroup namespace of its own (rooted at the sandbox's group, which
    // the host has put us in by now, or airlock's): the sandbox never
    // learns the host's cgroup paths.
    // SAFETY: unshare takes only flags.
    sys::cvt(unsafe { libc::unshare(libc::CLONE_NEWCGROUP) })
        .map_err(|e| SetupError::io(Stage::Limits, "cgroup namespace", e))?;
    sys::timing::mark("ids+cgroupns");
    let trees =
        match &p.inherited {
            Some(i) => inherited(i),
            None => mount::open_pinned_trees(&p.root, &p.pinned, p.image_pins.as_ref()).map_err(
                |e| SetupError {
                    stage: Stage::Mounts,
                    errno: libc::EPERM,
                    detail: error_chain(&e),
                },
            )?,
        };
    let notes = mount::build_root(&p.root, &trees, p.rootless).map_err(|f| SetupError {
        stage: Stage::Mounts,
        errno: f.errno,
        detail: f.detail,
    })?;
    drop(trees);
    sys::timing::mark("root built");
    let h = p.hostname.as_bytes();
    // SAFETY: `h` is valid for its length.
    sys::cvt(unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) })
        .map_err(|e| SetupError::io(Stage::Hostname, "sethostname", e))?;
    if !net_ready {
        airlock_jail::net::loopback_up()
            .map_err(|e| SetupError::io(Stage::Network, "bring up lo", e))?;
    }
    // The sandbox's own user namespace limits (we are uid 0 there, with
    // CAP_SYS_RESOURCE): it runs out of inotify instances and watches
    // before its owner on the host does.
    for (name, value) in &p.userns_limits {
        let path = Path::new("/proc/sys/user").join(name);
        // A kernel without one of these simply has no such quota.
        if let Err(e) = sys::write_file(&path, value.to_string().as_bytes()) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(SetupError::io(
                    Stage::Limits,
                    format!("set {}", path.display()),
                    e,
                ));
            }
        }
    }
    non_dumpable()?;
    sys::timing::mark("set up");
    Ok(notes)
}

/// Nothing in the sandbox may ptrace the agent, read its memory, or open
/// its `/proc/<pid>/{root,exe,mem,environ}`.
pub(crate) fn non_dumpable() -> Result<(), SetupError> {
    // SAFETY: prctl with integer arguments.
    sys::cvt(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) })
        .map_err(|e| SetupError::io(Stage::Agent, "PR_SET_DUMPABLE", e))?;
    Ok(())
}

/// The local tier: what it starts (and their orphans) stay its children,
/// so that it can kill them all.
pub(crate) fn local() -> Result<(), SetupError> {
    // SAFETY: prctl with integer arguments.
    sys::cvt(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })
        .map_err(|e| SetupError::io(Stage::Agent, "PR_SET_CHILD_SUBREAPER", e))?;
    Ok(())
}

/// The Landlock tier: a subreaper like the local tier's agent, not
/// dumpable (its processes may run as the same uid), and confined by the
/// same Landlock rules as they are (plus the pseudo-terminals it opens for
/// them), so that nothing it does for the host (files, tars) reaches
/// further than they could.
pub(crate) fn landlocked(c: &airlock_confine::Confinement) -> Result<(), SetupError> {
    local()?;
    non_dumpable()?;
    let Some(rules) = &c.landlock else {
        return Err(SetupError::io(
            Stage::Landlock,
            "no Landlock rules in the plan of the Landlock tier",
            std::io::Error::from_raw_os_error(libc::EINVAL),
        ));
    };
    let landlock_err = |e: airlock_confine::landlock::LandlockError| {
        SetupError::io(
            Stage::Landlock,
            "landlock",
            std::io::Error::other(e.to_string()),
        )
    };
    let prep = airlock_confine::landlock::prepare_agent(rules).map_err(landlock_err)?;
    // SAFETY: prctl with integer arguments.
    sys::cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
        .map_err(|e| SetupError::io(Stage::Landlock, "PR_SET_NO_NEW_PRIVS", e))?;
    prep.restrict_self().map_err(landlock_err)?;
    Ok(())
}

/// The mount trees the parent opened, from [`FD_FIRST_TREE`] on.
fn inherited(i: &crate::plan::Inherited) -> OpenedTrees {
    let mut next = FD_FIRST_TREE;
    let mut take = || {
        let fd = next;
        next += 1;
        // SAFETY: the spawner placed an open fd at each of these numbers
        // for us, and nothing else owns them.
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    let dev_fs = i.dev_fs.then(&mut take);
    let devices = (0..i.devices).map(|_| take()).collect();
    let mounts = i
        .mounts
        .iter()
        .map(|s| OpenedMount {
            tree: take(),
            is_dir: s.is_dir,
        })
        .collect();
    let image = i.image.then(&mut take);
    let capture = i.capture.then(&mut take);
    OpenedTrees {
        devices,
        dev_fs,
        mounts,
        image,
        capture,
        notes: Vec::new(),
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
