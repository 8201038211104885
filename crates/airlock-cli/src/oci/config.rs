//! A bundle's `config.json` (runtime-spec, read with the `oci-spec` crate)
//! mapped onto a [`SandboxSpec`]. Pure: every decision is here and unit
//! tested. What would weaken the sandbox is refused with a reason; what
//! airlock does its own (stricter) way is accepted and named in the notes
//! that go to the `--log` file.

use airlock_confine::rlimit::{self, Lower};
use airlock_confine::seccomp::profile::{self, Action, Cond, Op, Profile, Rule};
use airlock_spec::{Image, Mount, MountMode, SandboxSpec, User, MAX_ID, MAX_TIMEOUT};
use oci_spec::runtime::{
    Arch, LinuxNamespaceType, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, Process, Spec,
};
use std::path::{Path, PathBuf};

/// The capabilities engines give a container by default (docker's and
/// podman's default sets, runc's spec example). A spec may ask for these:
/// airlock grants none of them (its sandboxes hold no capabilities at
/// all), which is stricter and said in the notes. Anything beyond this
/// set is a request for more power than a default container has and is
/// refused.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// Mount destinations the sandbox provides itself (its own `/proc`,
/// `/dev`, `/dev/pts`, `/dev/shm`), or leaves out on purpose (`/sys`,
/// cgroupfs, mqueue): the spec's entries for them are not mounted.
const OWN_DESTINATIONS: &[&str] = &[
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
];

/// What a bundle becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub spec: SandboxSpec,
    /// The rootfs directory on the host (absolute).
    pub rootfs: PathBuf,
    /// The init process.
    pub process: ProcessPlan,
    /// What airlock does differently from the spec (stricter), for the log.
    pub notes: Vec<String>,
    /// The init process's `rlimits`, applied (lowering only) to every
    /// process of the container.
    pub rlimits: Vec<Lower>,
    /// `linux.seccomp`, installed after airlock's own allowlist.
    pub seccomp: Option<Profile>,
    /// A network namespace named by path (a pod's): joined only if it is
    /// another airlock sandbox's (decided at create, see `netns`).
    pub join_net: Option<PathBuf>,
}

/// A process to start in the sandbox (init, or one of `exec`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessPlan {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub user: User,
    pub terminal: bool,
    /// (rows, cols)
    pub console_size: Option<(u16, u16)>,
}

/// Refusals carry the reason as the engine's user should read it.
pub type Refusal = String;

fn cap_names(p: &Process) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(c) = p.capabilities() {
        for set in [
            c.bounding(),
            c.effective(),
            c.inheritable(),
            c.permitted(),
            c.ambient(),
        ]
        .into_iter()
        .flatten()
        {
            for cap in set {
                let n = format!("CAP_{cap}");
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
    }
    out.sort();
    out
}

/// The process's `rlimits`, as limits that only ever lower airlock's own:
/// one above what airlock gives every sandbox process is capped there
/// (said in the notes), never refused — engines ask for more open files
/// than airlock's 1024 by default (podman: 1048576), and a sandbox process
/// could not raise a hard limit anyway.
pub fn rlimits(p: &Process, notes: &mut Vec<String>) -> Result<Vec<Lower>, Refusal> {
    let mut out = Vec::new();
    for r in p.rlimits().clone().unwrap_or_default() {
        let name = r.typ().to_string();
        let Some(resource) = rlimit::resource_by_name(&name) else {
            return Err(format!("unknown rlimit {name}"));
        };
        if r.soft() > r.hard() {
            return Err(format!(
                "{name}: the soft limit {} is above the hard limit {}",
                r.soft(),
                r.hard()
            ));
        }
        if let Some(ours) = rlimit::fixed_limit(resource) {
            if r.hard() > ours {
                notes.push(format!(
                    "{name} {}:{} is capped at airlock's own limit {ours}: rlimits only ever lower what a sandbox gets",
                    r.soft(),
                    r.hard()
                ));
            }
        }
        out.push(Lower {
            resource,
            soft: r.soft(),
            hard: r.hard(),
        });
    }
    Ok(out)
}

fn action(
    a: LinuxSeccompAction,
    errno: Option<u32>,
    default_errno: u32,
) -> Result<Action, Refusal> {
    let e = |v: u32| -> Result<u16, Refusal> {
        u16::try_from(v)
            .ok()
            .filter(|v| *v < 4096)
            .ok_or_else(|| format!("seccomp errno {v} is out of range"))
    };
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            Action::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => Action::KillProcess,
        LinuxSeccompAction::ScmpActTrap => Action::Trap,
        LinuxSeccompAction::ScmpActErrno => match errno.unwrap_or(default_errno) {
            // An "error" 0 is a faked success: when two filters both
            // answer with an errno the later one's data wins, so it would
            // make calls airlock's allowlist refuses look as if they had
            // run (red team).
            0 => return Err("seccomp SCMP_ACT_ERRNO with errnoRet 0 (a faked success) is refused: it would report success for calls airlock refuses".into()),
            v => Action::Errno(e(v)?),
        },
        LinuxSeccompAction::ScmpActTrace => Action::Trace(e(errno.unwrap_or(libc::EPERM as u32))?),
        LinuxSeccompAction::ScmpActLog => Action::Log,
        LinuxSeccompAction::ScmpActAllow => Action::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err("seccomp SCMP_ACT_NOTIFY (a user-space agent) is not supported".into())
        }
    })
}

/// `linux.seccomp` as a second filter, installed after airlock's own
/// allowlist (both apply: the kernel takes the strictest verdict, so the
/// profile can narrow the sandbox but never widen it). Names this x86_64
/// table does not know are skipped, as runc skips those libseccomp does
/// not know; several conditions on the same argument make one rule each
/// (runc's reading), otherwise a rule's conditions all must hold.
pub fn seccomp(sc: &LinuxSeccomp, notes: &mut Vec<String>) -> Result<Profile, Refusal> {
    if let Some(archs) = sc.architectures() {
        let ours = [
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
            Arch::ScmpArchNative,
        ];
        if !archs.is_empty() && !archs.iter().any(|a| ours.contains(a)) {
            return Err("linux.seccomp names no x86 architecture".into());
        }
    }
    if sc.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        notes.push("linux.seccomp flags are not applied".into());
    }
    let default_errno = sc.default_errno_ret().unwrap_or(libc::EPERM as u32);
    let default = action(sc.default_action(), Some(default_errno), default_errno)?;
    let mut rules = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    for call in sc.syscalls().clone().unwrap_or_default() {
        let act = action(call.action(), call.errno_ret(), default_errno)?;
        let mut conds = Vec::new();
        for a in call.args().clone().unwrap_or_default() {
            if a.index() > 5 {
                return Err(format!("a seccomp rule compares argument {}", a.index()));
            }
            let op = match a.op() {
                LinuxSeccompOperator::ScmpCmpNe => Op::Ne,
                LinuxSeccompOperator::ScmpCmpLt => Op::Lt,
                LinuxSeccompOperator::ScmpCmpLe => Op::Le,
                LinuxSeccompOperator::ScmpCmpEq => Op::Eq,
                LinuxSeccompOperator::ScmpCmpGe => Op::Ge,
                LinuxSeccompOperator::ScmpCmpGt => Op::Gt,
                LinuxSeccompOperator::ScmpCmpMaskedEq => Op::MaskedEq,
            };
            conds.push(Cond {
                arg: a.index() as u8,
                op,
                value: a.value(),
                value_two: a.value_two().unwrap_or(0),
            });
        }
        let mut seen = [false; 6];
        let repeated = conds
            .iter()
            .any(|c| std::mem::replace(&mut seen[c.arg as usize], true));
        let sets: Vec<Vec<Cond>> = if repeated {
            conds.iter().map(|c| vec![*c]).collect()
        } else {
            vec![conds]
        };
        for name in call.names() {
            let Some(nr) = profile::syscall_nr(name) else {
                if !unknown.contains(name) {
                    unknown.push(name.clone());
                }
                continue;
            };
            for set in &sets {
                rules.push(Rule {
                    nr,
                    action: act,
                    conds: set.clone(),
                });
            }
        }
    }
    if !unknown.is_empty() {
        unknown.sort();
        notes.push(format!(
            "linux.seccomp: syscalls unknown on x86_64 skipped: {}",
            unknown.join(", ")
        ));
    }
    let p = Profile { default, rules };
    p.compile()
        .map_err(|e| format!("linux.seccomp does not compile: {e}"))?;
    notes.push("linux.seccomp is installed after airlock's own seccomp allowlist: both apply, the strictest answer wins".into());
    Ok(p)
}

/// Maps a process (the spec's, or `exec --process`'s).
pub fn process(p: &Process, notes: &mut Vec<String>) -> Result<ProcessPlan, Refusal> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err("the process has no args".into());
    }
    if args.iter().any(|a| a.contains('\0')) {
        return Err("an argument holds a NUL byte".into());
    }
    let extra: Vec<String> = cap_names(p)
        .into_iter()
        .filter(|c| !DEFAULT_CAPS.contains(&c.as_str()))
        .collect();
    if !extra.is_empty() {
        return Err(format!(
            "the process asks for capabilities beyond a default container's ({}): airlock runs every sandbox without capabilities and refuses privileged containers",
            extra.join(", ")
        ));
    }
    if !cap_names(p).is_empty() {
        notes.push(
            "the spec's default capabilities are not granted: airlock sandboxes hold no capabilities (root inside is an unprivileged user on the host)".into(),
        );
    }
    if p.no_new_privileges() == Some(false) {
        notes.push("noNewPrivileges=false is ignored: airlock always sets no_new_privs".into());
    }
    if p.apparmor_profile().is_some() || p.selinux_label().is_some() {
        notes.push(
            "AppArmor/SELinux labels are not applied (seccomp allowlist and Landlock are)".into(),
        );
    }
    let mut env = Vec::new();
    for kv in p.env().clone().unwrap_or_default() {
        if kv.contains('\0') {
            return Err("an environment variable holds a NUL byte".into());
        }
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => env.push((k.to_string(), v.to_string())),
            _ => notes.push(format!("environment entry {kv:?} has no KEY=: ignored")),
        }
    }
    let u = p.user();
    if u.uid() >= MAX_ID || u.gid() >= MAX_ID {
        return Err(format!(
            "user {}:{}: ids inside an airlock sandbox are below {MAX_ID}",
            u.uid(),
            u.gid()
        ));
    }
    if u.additional_gids().as_ref().is_some_and(|g| !g.is_empty()) {
        notes.push("additionalGids are not applied".into());
    }
    let cwd = p.cwd().clone();
    if !cwd.is_absolute() {
        return Err(format!("cwd {} is not absolute", cwd.display()));
    }
    let console_size = p
        .console_size()
        .map(|b| {
            (
                b.height().min(u16::MAX as u64) as u16,
                b.width().min(u16::MAX as u64) as u16,
            )
        })
        .filter(|(r, c)| *r > 0 && *c > 0);
    Ok(ProcessPlan {
        args,
        env,
        cwd,
        user: User {
            uid: u.uid(),
            gid: u.gid(),
        },
        terminal: p.terminal().unwrap_or(false),
        console_size,
    })
}

fn is_bind(m: &oci_spec::runtime::Mount) -> bool {
    let opts = m.options().clone().unwrap_or_default();
    m.typ().as_deref() == Some("bind") || opts.iter().any(|o| o == "bind" || o == "rbind")
}

/// Maps the whole bundle (`bundle`: its absolute directory).
pub fn map(spec: &Spec, bundle: &Path) -> Result<Mapped, Refusal> {
    let mut notes = Vec::new();
    let p = spec
        .process()
        .as_ref()
        .ok_or("config.json has no process")?;
    let process = process(p, &mut notes)?;
    let root = spec.root().as_ref().ok_or("config.json has no root")?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    if root.readonly() == Some(true) {
        notes.push("root.readonly: the root is an overlay whose changes vanish with the sandbox, writable inside".into());
    } else {
        notes.push("the rootfs is the lower layer of the sandbox's own overlay: writes to / stay in the sandbox (on a tmpfs) and do not reach the bundle's rootfs".into());
    }
    let linux = spec.linux().as_ref();
    // Namespaces: every one the sandbox has must be asked for; a missing
    // one means "share the host's", which airlock does not do.
    let ns: Vec<(LinuxNamespaceType, Option<PathBuf>)> = linux
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
        .iter()
        .map(|n| (n.typ(), n.path().clone()))
        .collect();
    let mut join_net = None;
    for (t, what) in [
        (LinuxNamespaceType::Network, "network"),
        (LinuxNamespaceType::Pid, "pid"),
        (LinuxNamespaceType::Ipc, "ipc"),
        (LinuxNamespaceType::Uts, "uts"),
        (LinuxNamespaceType::Mount, "mount"),
    ] {
        match ns.iter().find(|(x, _)| *x == t) {
            None => {
                return Err(format!(
                    "the spec shares the host's {what} namespace (no {what} namespace in linux.namespaces): airlock refuses to weaken the sandbox that way"
                ))
            }
            Some((_, Some(path))) if t == LinuxNamespaceType::Network => {
                join_net = Some(path.clone())
            }
            Some((_, Some(path))) => notes.push(format!(
                "the {what} namespace at {} is not joined: the sandbox gets a new one of its own{}",
                path.display(),
                if t == LinuxNamespaceType::Network {
                    " (loopback only)"
                } else {
                    ""
                }
            )),
            Some((_, None)) => {}
        }
    }
    if linux
        .and_then(|l| l.uid_mappings().as_ref())
        .is_some_and(|m| !m.is_empty())
    {
        notes.push("the spec's uid/gid mappings are replaced by airlock's own (a subordinate range; root inside is never root outside)".into());
    }
    let rlimits = rlimits(p, &mut notes)?;
    let seccomp = match linux.and_then(|l| l.seccomp().as_ref()) {
        Some(sc) => Some(seccomp(sc, &mut notes)?),
        None => None,
    };
    if let Some(l) = linux {
        if l.sysctl().as_ref().is_some_and(|s| !s.is_empty()) {
            notes.push("linux.sysctl is not applied".into());
        }
        if l.devices().as_ref().is_some_and(|d| !d.is_empty()) {
            notes.push("linux.devices: the sandbox gets only its own null, zero, full, random, urandom and tty".into());
        }
    }
    let mut s = SandboxSpec::new(process.args.clone());
    s.image = Image::Store("oci-bundle".into());
    s.env = process.env.clone();
    s.workdir = Some(process.cwd.clone());
    s.user = process.user;
    s.tty = process.terminal;
    // An engine's container lives until it is stopped.
    s.limits.timeout = MAX_TIMEOUT;
    if let Some(h) = spec.hostname() {
        if !h.is_empty() {
            s.hostname = h.clone();
        }
    }
    if let Some(r) = linux.and_then(|l| l.resources().as_ref()) {
        if let Some(m) = r.memory().as_ref().and_then(|m| m.limit()) {
            if m > 0 {
                s.limits.memory = Some(m as u64);
            }
        }
        if let Some(pl) = r.pids().as_ref().map(|p| p.limit()) {
            if pl > 0 {
                s.limits.pids = Some(pl as u64);
            }
        }
        if let Some(c) = r.cpu().as_ref() {
            if let (Some(q), Some(per)) = (c.quota(), c.period()) {
                if q > 0 && per > 0 {
                    s.limits.cpus = Some((q as f64 / per as f64).clamp(0.01, 4096.0));
                }
            }
        }
    }
    for m in spec.mounts().clone().unwrap_or_default() {
        let dst = m.destination().clone();
        let dst_s = dst.to_string_lossy().to_string();
        if OWN_DESTINATIONS.contains(&dst_s.trim_end_matches('/')) {
            continue;
        }
        if dst.starts_with("/etc") {
            // The sandbox writes its own /etc/hostname, /etc/hosts and
            // /etc/resolv.conf; /etc is airlock's to manage.
            if !["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"].contains(&dst_s.as_str()) {
                notes.push(format!(
                    "mount at {dst_s} is not made: /etc is managed by airlock"
                ));
            }
            continue;
        }
        if !is_bind(&m) {
            notes.push(format!(
                "mount of type {} at {dst_s} is not made (only bind mounts of host paths are)",
                m.typ().as_deref().unwrap_or("?")
            ));
            continue;
        }
        let Some(src) = m.source().clone() else {
            return Err(format!("bind mount at {dst_s} has no source"));
        };
        let src = if src.is_absolute() {
            src
        } else {
            bundle.join(src)
        };
        let opts = m.options().clone().unwrap_or_default();
        let ro = opts.iter().any(|o| o == "ro");
        s.mounts.push(Mount {
            source: src,
            target: dst,
            mode: if ro { MountMode::Ro } else { MountMode::Rw },
            as_owner: false,
        });
    }
    if let Some(h) = spec.hooks() {
        if h.create_container().as_ref().is_some_and(|v| !v.is_empty())
            || h.start_container().as_ref().is_some_and(|v| !v.is_empty())
        {
            return Err("createContainer/startContainer hooks run inside the container's namespaces, which airlock does not support".into());
        }
    }
    s.validate()
        .map_err(|e| format!("the spec maps to an invalid sandbox: {e}"))?;
    Ok(Mapped {
        spec: s,
        rootfs,
        process,
        notes,
        rlimits,
        seccomp,
        join_net,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "hostname": "box",
            "process": {
                "args": ["sh", "-c", "echo hi"],
                "env": ["PATH=/bin", "A=b=c"],
                "cwd": "/",
                "user": {"uid": 0, "gid": 0},
                "capabilities": {"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_KILL"]}
            },
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro"]},
                {"destination": "/w", "source": "/srv/w", "options": ["bind"]},
                {"destination": "/run", "type": "tmpfs", "source": "tmpfs"}
            ],
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
                "resources": {"memory": {"limit": 67108864}, "pids": {"limit": 50}, "cpu": {"quota": 50000, "period": 100000}}
            }
        })
    }

    fn parse(v: serde_json::Value) -> Result<Mapped, Refusal> {
        let spec: Spec = serde_json::from_value(v).unwrap();
        map(&spec, Path::new("/b"))
    }

    #[test]
    fn maps_a_default_bundle() {
        let m = parse(base()).unwrap();
        assert_eq!(m.rootfs, Path::new("/b/rootfs"));
        assert_eq!(m.spec.command, ["sh", "-c", "echo hi"]);
        assert_eq!(m.spec.hostname, "box");
        assert_eq!(m.spec.user, User::ROOT);
        assert_eq!(
            m.spec.env,
            [("PATH".into(), "/bin".into()), ("A".into(), "b=c".into())]
        );
        assert_eq!(m.spec.limits.memory, Some(64 << 20));
        assert_eq!(m.spec.limits.pids, Some(50));
        assert_eq!(m.spec.limits.cpus, Some(0.5));
        assert_eq!(m.spec.limits.timeout, MAX_TIMEOUT);
        assert_eq!(m.spec.mounts.len(), 2);
        assert_eq!(m.spec.mounts[0].mode, MountMode::Ro);
        assert_eq!(m.spec.mounts[1].mode, MountMode::Rw);
        assert!(m.notes.iter().any(|n| n.contains("capabilities")));
        assert!(m.notes.iter().any(|n| n.contains("tmpfs at /run")));
    }

    #[test]
    fn refuses_what_weakens_the_sandbox() {
        for (ns, what) in [("network", "network"), ("pid", "pid"), ("mount", "mount")] {
            let mut v = base();
            let list = v["linux"]["namespaces"].as_array_mut().unwrap();
            list.retain(|n| n["type"] != ns);
            let e = parse(v).unwrap_err();
            assert!(e.contains(&format!("host's {what} namespace")), "{e}");
        }
        let mut v = base();
        v["process"]["capabilities"]["bounding"] =
            serde_json::json!(["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"]);
        let e = parse(v).unwrap_err();
        assert!(e.contains("CAP_NET_ADMIN, CAP_SYS_ADMIN"), "{e}");
        let mut v = base();
        v["process"]["capabilities"]["ambient"] = serde_json::json!(["CAP_SYS_PTRACE"]);
        assert!(parse(v).unwrap_err().contains("CAP_SYS_PTRACE"));
        let mut v = base();
        v["process"]["user"]["uid"] = serde_json::json!(100000);
        assert!(parse(v).unwrap_err().contains("below 65536"));
        let mut v = base();
        v["hooks"] = serde_json::json!({"createContainer": [{"path": "/bin/true"}]});
        assert!(parse(v).unwrap_err().contains("hooks"));
    }

    #[test]
    fn a_joined_namespace_is_replaced_not_joined() {
        let mut v = base();
        v["linux"]["namespaces"][2] = serde_json::json!({"type": "ipc", "path": "/proc/1/ns/ipc"});
        v["linux"]["namespaces"][1] =
            serde_json::json!({"type": "network", "path": "/proc/7/ns/net"});
        let m = parse(v).unwrap();
        assert!(m
            .notes
            .iter()
            .any(|n| n.contains("/proc/1/ns/ipc is not joined")));
        // Decided at create (another sandbox's, or refused).
        assert_eq!(m.join_net.as_deref(), Some(Path::new("/proc/7/ns/net")));
    }

    #[test]
    fn rlimits_lower_and_are_capped() {
        let mut v = base();
        v["process"]["rlimits"] = serde_json::json!([
            {"type": "RLIMIT_NOFILE", "soft": 64, "hard": 64},
            {"type": "RLIMIT_NPROC", "soft": 1048576, "hard": 1048576},
            {"type": "RLIMIT_MEMLOCK", "soft": 1, "hard": 1048576000}
        ]);
        let m = parse(v).unwrap();
        assert_eq!(m.rlimits.len(), 3);
        assert_eq!(m.rlimits[0].resource, libc::RLIMIT_NOFILE);
        assert_eq!((m.rlimits[0].soft, m.rlimits[0].hard), (64, 64));
        assert!(m
            .notes
            .iter()
            .any(|n| n.contains("RLIMIT_MEMLOCK 1:1048576000 is capped")));
        let mut v = base();
        v["process"]["rlimits"] =
            serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 65, "hard": 64}]);
        assert!(parse(v).unwrap_err().contains("above the hard limit"));
    }

    #[test]
    fn seccomp_profiles_map() {
        let mut v = base();
        v["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat", "no_such_call"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 9, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_KILL",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}, {"index": 1, "value": 0, "op": "SCMP_CMP_NE"}]}
            ]
        });
        let m = parse(v).unwrap();
        let p = m.seccomp.unwrap();
        assert_eq!(p.default, Action::Allow);
        let mkdir = libc::SYS_mkdir as u32;
        assert!(p
            .rules
            .iter()
            .any(|r| r.nr == mkdir && r.action == Action::Errno(1) && r.conds.is_empty()));
        // Two conditions on one argument: two rules of one condition each.
        let pers: Vec<_> = p
            .rules
            .iter()
            .filter(|r| r.nr == libc::SYS_personality as u32)
            .collect();
        assert_eq!(pers.len(), 2);
        assert!(pers.iter().all(|r| r.conds.len() == 1));
        // On different arguments: one rule with both.
        let clone: Vec<_> = p
            .rules
            .iter()
            .filter(|r| r.nr == libc::SYS_clone as u32)
            .collect();
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0].conds.len(), 2);
        assert_eq!(clone[0].action, Action::KillThread);
        assert!(m.notes.iter().any(|n| n.contains("no_such_call")));
        let mut v = base();
        v["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/run/x.sock",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        });
        assert!(parse(v).unwrap_err().contains("SCMP_ACT_NOTIFY"));
        // A faked success would hide airlock's own refusals (red team).
        let mut v = base();
        v["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mount", "unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 0}]
        });
        assert!(parse(v).unwrap_err().contains("errnoRet 0"));
        let mut v = base();
        v["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 0,
        });
        assert!(parse(v).unwrap_err().contains("errnoRet 0"));
        let mut v = base();
        v["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_AARCH64"]
        });
        assert!(parse(v).unwrap_err().contains("no x86"));
    }
}
