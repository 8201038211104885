//! The container tier: what the host compiles from a spec (pure), the
//! namespaces and id maps it starts the agent in, cgroups, and the root
//! filesystem the agent builds inside (`mount`, `net`).
//!
//! [`Plan::compile`] turns a spec into everything the sandbox needs,
//! purely. [`spawn::spawn_agent`] clones a child into new user, pid, mount,
//! net, ipc and uts namespaces, writes its id maps and cgroup membership
//! from outside, and lets it exec the agent, which builds the sandbox from
//! the plan and confines every process it starts (`airlock-confine`).

pub mod cgroup;
pub mod mount;
pub mod net;
pub mod safepath;
pub mod spawn;
pub mod userns;
/// The microVM tier's VMM jail (QEMU's namespaces and root).
pub mod vmm;

pub use airlock_confine::{caps, landlock, rlimit, seccomp};
pub use airlock_sys as sys;

use airlock_confine::Confinement;
use airlock_spec::{MountMode, SandboxSpec, User};
use std::io;
use std::path::{Path, PathBuf};

pub use mount::{HostFacts, ImageRoot, RootPlan};
pub use userns::IdMap;

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("cannot open mount source {source_path:?}")]
    MountSource {
        source_path: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("mount source {source_path:?}")]
    MountPath {
        source_path: PathBuf,
        #[source]
        err: safepath::PathError,
    },
    #[error("mount source {source_path:?} is a unix socket: a read-only ({mode}) mount would still let the sandbox connect to it; mount it rw if you mean to give the sandbox this socket")]
    MountSocket {
        source_path: PathBuf,
        mode: &'static str,
    },
    #[error("mount source {source_path:?} is not a directory: overlay mounts need one")]
    OverlayNotDir { source_path: PathBuf },
    #[error("mount source {source_path:?} is {kind}: a read-only mount is of a directory or a regular file only")]
    MountNotRegular {
        source_path: PathBuf,
        kind: &'static str,
    },
    #[error("mount source {source_path:?} (resolved to {path:?}) changed while being mounted ({why}): refused")]
    MountChanged {
        source_path: PathBuf,
        path: PathBuf,
        why: String,
    },
    #[error("image tree {path:?}: {what}")]
    Image {
        path: PathBuf,
        what: &'static str,
        #[source]
        err: io::Error,
    },
    #[error("image tree {path:?}")]
    ImagePath {
        path: PathBuf,
        #[source]
        err: safepath::PathError,
    },
    #[error("the plan pins {pins} mount sources for {mounts} mounts")]
    PinCount { pins: usize, mounts: usize },
    #[error("cgroup {path:?}")]
    Cgroup {
        path: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("cannot create the sandbox's namespaces (clone){hint}")]
    Clone {
        hint: &'static str,
        #[source]
        err: io::Error,
    },
    #[error("cannot write the sandbox's id maps{hint}")]
    IdMap {
        hint: &'static str,
        #[source]
        err: io::Error,
    },
    #[error("cannot take the subordinate uid to create the sandbox's user namespace")]
    Owner {
        #[source]
        err: io::Error,
    },
    #[error("too many mounts: at most {max}")]
    TooManyMounts { max: usize },
    #[error("cannot open airlock's own binary to start the sandbox's agent")]
    AgentExe(#[source] io::Error),
    #[error("cannot create the host-agent channel")]
    Channel(#[source] io::Error),
    #[error("seccomp filter")]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("argument or environment entry {what:?} contains a NUL byte")]
    Nul { what: String },
}

/// A failure while building the sandbox's root (inside the sandbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildFail {
    pub errno: i32,
    pub detail: String,
}

pub use airlock_confine::DEFAULT_PATH;

/// Everything a container sandbox needs, computed before anything runs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub root: RootPlan,
    pub idmap: IdMap,
    pub hostname: String,
    pub user: User,
    pub workdir: PathBuf,
    /// How the agent confines every process it starts.
    pub confinement: Confinement,
    /// Limits set in the sandbox's own user namespace (`/proc/sys/user`).
    pub userns_limits: Vec<(&'static str, u64)>,
}

/// The environment a sandbox starts with: only PATH, HOME, USER, LANG, TERM
/// and TZ, then what `--env` named. Nothing else of the host's leaks in.
pub fn base_env(
    spec: &SandboxSpec,
    host: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_string(), DEFAULT_PATH.to_string()),
        ("HOME".to_string(), spec.user.home().display().to_string()),
        ("USER".to_string(), spec.user.name()),
        (
            "LANG".to_string(),
            host("LANG").unwrap_or_else(|| "C.UTF-8".into()),
        ),
        (
            "TERM".to_string(),
            host("TERM").unwrap_or_else(|| "dumb".into()),
        ),
    ];
    if let Some(tz) = host("TZ") {
        env.push(("TZ".into(), tz));
    }
    if spec.network.mode != airlock_spec::NetMode::None {
        env.extend(airlock_spec::net::proxy_env());
        // Placeholders, never the values.
        for sec in &spec.network.secrets {
            env.push((sec.name.clone(), sec.placeholder.clone()));
        }
        if spec.network.trust_bundle.is_some() {
            for k in airlock_spec::net::CA_BUNDLE_VARS {
                env.push((k.to_string(), airlock_spec::net::CA_BUNDLE_PATH.to_string()));
            }
        }
    }
    for (k, v) in &spec.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

impl Plan {
    /// Pure: the spec, what the host offers, the limits that no cgroup
    /// enforces, and the image the root is made of (`None`: the host
    /// image).
    pub fn compile(
        spec: &SandboxSpec,
        facts: &HostFacts,
        kernel: &rlimit::KernelLimits,
        idmap: IdMap,
        unenforced: &[cgroup::Controller],
        landlock_abi: i64,
        image: Option<&ImageRoot>,
    ) -> Plan {
        let workdir = spec.effective_workdir();
        let mut rules = landlock::Rules::default();
        let root = match image {
            None => {
                let root = RootPlan::compile(
                    facts,
                    spec.user,
                    &spec.hostname,
                    &workdir,
                    &spec.mounts,
                    spec.limits.disk,
                );
                for t in [
                    "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc",
                ] {
                    rules.read_exec.push(Path::new("/").join(t));
                }
                for (dir, _, _) in &root.writable {
                    rules.full.push(Path::new("/").join(dir));
                }
                root
            }
            Some(img) => {
                // An image's root is writable throughout, as docker's is
                // (every change is thrown away with the overlay): Landlock
                // grants everything beneath `/`. It cannot leave `/proc` and
                // `/dev` out below that; those stay what their mounts and
                // the sandbox's user namespace allow (read-only, nosuid,
                // nodev, no capabilities).
                rules.full.push(PathBuf::from("/"));
                RootPlan::compile_image(
                    facts,
                    img,
                    spec.user,
                    &spec.hostname,
                    &workdir,
                    &spec.mounts,
                    spec.limits.disk,
                )
            }
        };
        let mut root = root;
        // Transparent egress: the agent's DNS stub answers for the
        // sandbox (see airlock-agent's transparent.rs).
        // (Nothing to compile on the default path: no network.)
        if spec.network.mode != airlock_spec::NetMode::None
            && airlock_spec::net::Policy::compile(&spec.network)
                .ok()
                .is_some_and(|p| p.enabled() && p.transparent_pool().is_some())
        {
            root.use_dns_stub();
        }
        for m in &spec.mounts {
            match m.mode {
                MountMode::Ro => rules.read_exec.push(m.target.clone()),
                MountMode::Rw | MountMode::Overlay => rules.full.push(m.target.clone()),
            }
        }
        if let Some(bundle) = &spec.network.trust_bundle {
            // The system's roots and this sandbox's own CA (see
            // airlock_egress::broker); read-only for the sandbox's user.
            root.entries.push(mount::Entry::File {
                path: PathBuf::from(airlock_spec::net::CA_BUNDLE_PATH.trim_start_matches('/')),
                contents: bundle.to_vec(),
                mode: 0o444,
            });
        }
        let data = unenforced
            .contains(&cgroup::Controller::Memory)
            .then_some(spec.limits.memory)
            .flatten();
        let tasks = spec.limits.pids.unwrap_or_else(|| kernel.default_tasks());
        let confinement = Confinement {
            landlock: (landlock_abi > 0).then_some(rules),
            rlimits: rlimit::Rlimits::sandbox(tasks, data),
            drop_privileges: true,
            unprivileged: false,
            seccomp: true,
            no_network: false,
            nested_userns: idmap.is_rootless(),
            set_ids: !idmap.is_rootless(),
            lower_rlimits: Vec::new(),
            profile: None,
        };
        Plan {
            root,
            idmap,
            hostname: spec.hostname.clone(),
            user: spec.user,
            workdir,
            confinement,
            userns_limits: kernel.userns_limits(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_spec::{Mount, SandboxSpec};

    fn compile(spec: &SandboxSpec, unenforced: &[cgroup::Controller]) -> Plan {
        Plan::compile(
            spec,
            &HostFacts::default(),
            &rlimit::KernelLimits::default(),
            IdMap::Caller {
                uid: 1000,
                gid: 1000,
            },
            unenforced,
            7,
            None,
        )
    }

    #[test]
    fn environment_is_only_the_base_and_what_env_names() {
        let mut spec = SandboxSpec::new(vec!["true".into()]);
        spec.env = vec![("FOO".into(), "1".into()), ("TERM".into(), "xterm".into())];
        let env = base_env(&spec, |k| match k {
            "LANG" => Some("en_US.UTF-8".into()),
            "AWS_SECRET_ACCESS_KEY" | "GITHUB_TOKEN" => Some("secret".into()),
            _ => None,
        });
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["PATH", "HOME", "USER", "LANG", "FOO", "TERM"]);
        assert!(env.contains(&("TERM".into(), "xterm".into())));
        assert!(env.contains(&("HOME".into(), "/home/sandbox".into())));
        assert!(!env.iter().any(|(_, v)| v == "secret"));
    }

    #[test]
    fn landlock_rules_follow_mount_modes() {
        let mut spec = SandboxSpec::new(vec!["true".into()]);
        for (t, mode) in [
            ("/ro", MountMode::Ro),
            ("/rw", MountMode::Rw),
            ("/ov", MountMode::Overlay),
        ] {
            spec.mounts.push(Mount {
                source: "/x".into(),
                target: t.into(),
                mode,
                as_owner: false,
            });
        }
        let p = compile(&spec, &[]);
        let ll = p.confinement.landlock.as_ref().unwrap();
        assert!(ll.read_exec.contains(&PathBuf::from("/ro")));
        assert!(ll.full.contains(&PathBuf::from("/rw")));
        assert!(ll.full.contains(&PathBuf::from("/ov")));
        assert!(!ll.full.contains(&PathBuf::from("/ro")));
        assert!(ll.full.contains(&PathBuf::from("/tmp")));
        assert!(ll.full.contains(&PathBuf::from("/home/sandbox")));
        assert!(!ll
            .full
            .iter()
            .any(|p| p == Path::new("/usr") || p == Path::new("/etc")));
    }

    #[test]
    fn no_landlock_rules_where_the_kernel_has_none() {
        let spec = SandboxSpec::new(vec!["true".into()]);
        let p = Plan::compile(
            &spec,
            &HostFacts::default(),
            &rlimit::KernelLimits::default(),
            IdMap::Caller { uid: 1, gid: 1 },
            &[],
            0,
            None,
        );
        assert!(p.confinement.landlock.is_none());
    }

    #[test]
    fn confinement_by_mode() {
        let spec = SandboxSpec::new(vec!["true".into()]);
        let p = compile(&spec, &[]);
        assert!(p.confinement.drop_privileges && p.confinement.seccomp);
        assert!(p.confinement.nested_userns && !p.confinement.set_ids);
        let root = Plan::compile(
            &spec,
            &HostFacts::default(),
            &rlimit::KernelLimits::default(),
            IdMap::Range {
                uid_base: 100000,
                gid_base: 100000,
                count: 65536,
            },
            &[],
            7,
            None,
        );
        assert!(!root.confinement.nested_userns && root.confinement.set_ids);
    }

    #[test]
    fn rlimit_fallbacks_only_for_what_cgroups_cannot_do() {
        let mut spec = SandboxSpec::new(vec!["true".into()]);
        spec.limits.memory = Some(1 << 30);
        let p = compile(&spec, &[]);
        let r = p.confinement.rlimits;
        assert_eq!(r.data, None);
        assert_eq!(
            r.nproc,
            Some(rlimit::KernelLimits::default().default_tasks())
        );
        assert_eq!(r.nofile, Some(rlimit::NOFILE));
        assert_eq!(r.sigpending, Some(rlimit::SIGPENDING));
        // A quarter of the usual per-user message-queue budget, 64 KiB of
        // locked memory.
        assert_eq!(r.msgqueue, Some(204_800));
        assert_eq!(r.memlock, Some(64 * 1024));
        let p = compile(&spec, &[cgroup::Controller::Memory]);
        assert_eq!(p.confinement.rlimits.data, Some(1 << 30));
        spec.limits.pids = Some(50);
        assert_eq!(compile(&spec, &[]).confinement.rlimits.nproc, Some(50));
    }
}
