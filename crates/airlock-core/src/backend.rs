//! Backends: how a tier starts its agent and what its processes get by
//! default: the container, local and microVM tiers.

use crate::facts::Facts;
use crate::CoreError;
use airlock_agent::{
    AgentPlan, ContainerPlan, GuestDisk, GuestMount, GuestPlan, Inherited, MountShape, Role,
};
use airlock_confine::{rlimit::Rlimits, Confinement};
use airlock_jail::cgroup::{Cgroup, Controller};
use airlock_jail::mount;
use airlock_jail::spawn::{Agent, AgentSpawn, Pending};
use airlock_jail::{ImageRoot, Plan};
use airlock_spec::{Isolation, User, ValidSpec};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// A started agent and the plan to send it.
pub struct Spawned {
    pub agent: Agent,
    pub plan: AgentPlan,
    /// What the user should hear about the set-up.
    pub notes: Vec<String>,
    /// A microVM's QEMU monitor (pause and resume).
    pub vm_monitor: Option<airlock_vm::Qmp>,
    /// A microVM's console (what the guest's kernel said last: a panic).
    pub vm_console: Option<std::fs::File>,
}

/// One isolation tier.
pub trait Backend {
    fn isolation(&self) -> Isolation;
    /// Starts the agent for `spec` (the pre-spawned one, for the tiers
    /// whose agent runs on the host), in `cgroup` if there is one.
    fn spawn(
        &self,
        pending: Option<Pending>,
        spec: &ValidSpec,
        facts: &Facts,
        cgroup: Option<&Cgroup>,
        unenforced: &[Controller],
        image: Option<&ImageRoot>,
    ) -> Result<Spawned, CoreError>;
    /// The environment a process starts with, before its own variables.
    fn env(&self, spec: &ValidSpec) -> Vec<(String, String)> {
        airlock_jail::base_env(spec, |k| std::env::var(k).ok())
    }
    /// Where a process starts unless it says otherwise.
    fn cwd(&self, spec: &ValidSpec) -> Result<PathBuf, CoreError> {
        Ok(spec.effective_workdir())
    }
    /// The ids a process runs as inside.
    fn user(&self, spec: &ValidSpec) -> User {
        spec.user
    }
    /// Stops everything at once: the agent and every process it started
    /// (`started`: their pids, each its own process group).
    fn kill(&self, agent: &Agent, started: &[i32]);
}

/// The backend for a spec's tier.
pub fn for_spec(spec: &ValidSpec) -> Result<Box<dyn Backend>, CoreError> {
    match spec.isolation {
        Isolation::Container => Ok(Box::new(Container)),
        Isolation::None => Ok(Box::new(Local)),
        Isolation::Landlock => Ok(Box::new(LandlockTier::new(spec)?)),
        Isolation::Microvm => Ok(Box::new(Microvm)),
    }
}

/// The container tier.
pub struct Container;

impl Backend for Container {
    fn isolation(&self) -> Isolation {
        Isolation::Container
    }

    fn spawn(
        &self,
        pending: Option<Pending>,
        spec: &ValidSpec,
        facts: &Facts,
        cgroup: Option<&Cgroup>,
        unenforced: &[Controller],
        image: Option<&ImageRoot>,
    ) -> Result<Spawned, CoreError> {
        let plan = Plan::compile(
            spec,
            &facts.image,
            &facts.kernel,
            facts.idmap,
            unenforced,
            facts.landlock_abi,
            image,
        );
        let rootless = plan.idmap.is_rootless();
        let mut notes = Vec::new();
        let mut inherit: Vec<OwnedFd> = Vec::new();
        let mut pinned = Vec::new();
        let mut image_pins = None;
        let inherited = if rootless {
            // Each source is resolved here, on the host, once; the agent
            // (which alone can open trees rootless) opens exactly what was
            // found, and refuses anything else.
            for m in &plan.root.user_mounts {
                pinned.push(mount::Pinned::of(&mount::check_source(m)?));
            }
            if let Some(img) = &plan.root.image {
                let capture = match &img.capture {
                    Some(c) => Some(mount::Pinned::of(&mount::check_image_dir(c)?)),
                    None => None,
                };
                image_pins = Some(mount::ImagePins {
                    tree: mount::Pinned::of(&mount::check_image_dir(&img.tree)?),
                    capture,
                });
            }
            None
        } else {
            // Run by root, sources are opened here, with root's rights,
            // and id-mapped before the sandbox exists; the device nodes
            // are made here.
            let host = (
                plan.idmap.host_uid(plan.user.uid).unwrap_or(u32::MAX),
                plan.idmap.host_gid(plan.user.gid).unwrap_or(u32::MAX),
            );
            let trees = mount::open_trees(&plan.root, host, &plan.idmap)?;
            notes.extend(trees.notes);
            let dev_fs = trees.dev_fs.is_some();
            inherit.extend(trees.dev_fs);
            let devices = trees.devices.len();
            inherit.extend(trees.devices);
            let mut mounts = Vec::new();
            for m in trees.mounts {
                mounts.push(MountShape { is_dir: m.is_dir });
                inherit.push(m.tree);
            }
            let (image, capture) = (trees.image.is_some(), trees.capture.is_some());
            inherit.extend(trees.image);
            inherit.extend(trees.capture);
            Some(Inherited {
                dev_fs,
                devices,
                mounts,
                image,
                capture,
            })
        };
        let pending = pending.ok_or_else(|| CoreError::Misuse("no agent".into()))?;
        let agent = pending.start(AgentSpawn {
            idmap: Some(plan.idmap),
            cgroup,
            inherit,
        })?;
        // Transparent egress: run by root, the sandbox's network namespace
        // is the initial user namespace's, and only we can make the pool
        // local and let the agent bind low ports there.
        let mut transparent = airlock_agent::Transparent::for_network(&spec.network, rootless);
        if let Some(t) = transparent.as_ref().filter(|t| !t.agent_routes) {
            if let Err(e) = airlock_jail::net::prepare_transparent(agent.pid, t.pool.0, t.pool.1) {
                notes.push(format!(
                    "transparent egress is off: the sandbox's network could not be prepared: {e}"
                ));
                transparent = None;
            }
        }
        let agent_plan = AgentPlan {
            role: Role::Container(Box::new(ContainerPlan {
                root: plan.root,
                rootless,
                hostname: plan.hostname,
                userns_limits: plan
                    .userns_limits
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
                inherited,
                pinned,
                image_pins,
            })),
            confinement: plan.confinement,
            file_user: (plan.user.uid, plan.user.gid),
            trace_timing: crate::timing::on(),
            exit_when_idle: false,
            egress_ports: egress_ports(spec),
            transparent,
        };
        Ok(Spawned {
            agent,
            plan: agent_plan,
            notes,
            vm_monitor: None,
            vm_console: None,
        })
    }

    fn kill(&self, agent: &Agent, _started: &[i32]) {
        // SAFETY: the agent is our unreaped child; as PID 1 of the
        // sandbox's PID namespace, its death kills everything in it.
        unsafe { libc::kill(agent.pid, libc::SIGKILL) };
    }
}

/// The local tier: your own code, no isolation; a scrubbed environment,
/// limits, the timeout.
pub struct Local;

impl Backend for Local {
    fn isolation(&self) -> Isolation {
        Isolation::None
    }

    fn spawn(
        &self,
        pending: Option<Pending>,
        spec: &ValidSpec,
        _facts: &Facts,
        cgroup: Option<&Cgroup>,
        unenforced: &[Controller],
        _image: Option<&ImageRoot>,
    ) -> Result<Spawned, CoreError> {
        let rlimits = Rlimits {
            data: unenforced
                .contains(&Controller::Memory)
                .then_some(spec.limits.memory)
                .flatten(),
            nproc: unenforced
                .contains(&Controller::Pids)
                .then_some(spec.limits.pids)
                .flatten(),
            ..Rlimits::default()
        };
        let pending = pending.ok_or_else(|| CoreError::Misuse("no agent".into()))?;
        let agent = pending.start(AgentSpawn {
            idmap: None,
            cgroup,
            inherit: Vec::new(),
        })?;
        // SAFETY: getuid/getgid cannot fail.
        let ids = unsafe { (libc::getuid(), libc::getgid()) };
        Ok(Spawned {
            agent,
            plan: AgentPlan {
                role: Role::Local,
                confinement: Confinement {
                    rlimits,
                    ..Confinement::default()
                },
                file_user: ids,
                trace_timing: crate::timing::on(),
                exit_when_idle: false,
                egress_ports: Vec::new(),
                transparent: None,
            },
            notes: Vec::new(),
            vm_monitor: None,
            vm_console: None,
        })
    }

    fn env(&self, spec: &ValidSpec) -> Vec<(String, String)> {
        let host = |k: &str| std::env::var(k).ok();
        let mut env: Vec<(String, String)> = Vec::new();
        for k in ["PATH", "HOME", "USER", "LANG", "TERM", "TZ"] {
            if let Some(v) = host(k) {
                env.push((k.into(), v));
            }
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), airlock_confine::DEFAULT_PATH.into()));
        }
        for (k, v) in &spec.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }

    fn cwd(&self, spec: &ValidSpec) -> Result<PathBuf, CoreError> {
        match &spec.workdir {
            Some(w) => Ok(w.clone()),
            None => std::env::current_dir().map_err(|err| CoreError::Io {
                what: "current directory",
                err,
            }),
        }
    }

    fn user(&self, _spec: &ValidSpec) -> User {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        User { uid, gid }
    }

    fn kill(&self, agent: &Agent, started: &[i32]) {
        // SAFETY: each pid is a process the agent started and reported;
        // it called setsid, so its group has its id. The agent is our
        // unreaped child.
        unsafe {
            for &p in started {
                libc::kill(-p, libc::SIGKILL);
            }
            libc::kill(agent.pid, libc::SIGKILL);
        }
    }
}

/// The Landlock tier (opt-in, for hosts that refuse user namespaces): a
/// plain child like the local tier's, confined as a container's processes
/// are but for what needs namespaces — Landlock over the host's own
/// filesystem (the container tier's read/exec and write rules: the system
/// directories read-only, a private home that is also the temporary
/// directory, the spec's mounts as the host paths they name), the seccomp
/// allowlist with no network socket at all, no capabilities,
/// `no_new_privs`, a new session, a scrubbed environment, rlimits and the
/// timeout. Run by root, its processes run as an unprivileged id of
/// airlock's subordinate range, never as root.
pub struct LandlockTier {
    /// The private home and temporary directory, created for this
    /// sandbox and removed with it.
    scratch: PathBuf,
    /// The ids its processes run as on the host.
    ids: (u32, u32),
    /// They are not airlock's own (run by root).
    set_ids: bool,
}

impl LandlockTier {
    pub fn new(spec: &ValidSpec) -> Result<LandlockTier, CoreError> {
        if Facts::get().landlock_abi < 1 {
            return Err(CoreError::LandlockUnavailable);
        }
        // SAFETY: geteuid/getuid/getgid cannot fail.
        let (euid, uid, gid) = unsafe { (libc::geteuid(), libc::getuid(), libc::getgid()) };
        let (ids, set_ids) = if euid == 0 {
            let map = crate::facts::idmap();
            match (map.host_uid(spec.user.uid), map.host_gid(spec.user.gid)) {
                (Some(u), Some(g)) if u != 0 && g != 0 => ((u, g), true),
                _ => {
                    return Err(CoreError::Io {
                        what: "the Landlock tier run by root needs airlock's subordinate id range (/etc/subuid)",
                        err: std::io::Error::from_raw_os_error(libc::EINVAL),
                    })
                }
            }
        } else {
            ((uid, gid), false)
        };
        let scratch = std::env::temp_dir().join(format!(
            "airlock-landlock-{:x}-{}",
            crate::unique(),
            std::process::id()
        ));
        let io = |what: &'static str| move |err| CoreError::Io { what, err };
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&scratch)
                .map_err(io("the Landlock tier's private directory"))?;
        }
        if set_ids {
            std::os::unix::fs::chown(&scratch, Some(ids.0), Some(ids.1))
                .map_err(io("the Landlock tier's private directory"))?;
        }
        Ok(LandlockTier {
            scratch,
            ids,
            set_ids,
        })
    }

    /// Landlock rules as the container tier derives them from the spec,
    /// on the host's filesystem.
    pub fn rules(&self, spec: &ValidSpec) -> airlock_confine::landlock::Rules {
        let mut rules = airlock_confine::landlock::Rules {
            on_host: true,
            ..Default::default()
        };
        for t in [
            "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc",
        ] {
            rules.read_exec.push(std::path::Path::new("/").join(t));
        }
        rules.full.push(self.scratch.clone());
        for m in &spec.mounts {
            match m.mode {
                airlock_spec::MountMode::Ro => rules.read_exec.push(m.source.clone()),
                _ => rules.full.push(m.source.clone()),
            }
        }
        rules
    }
}

impl Drop for LandlockTier {
    fn drop(&mut self) {
        // The directory this tier created (a fresh name, 0700); its
        // processes are gone by now. remove_dir_all does not follow
        // symbolic links planted inside.
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

impl Backend for LandlockTier {
    fn isolation(&self) -> Isolation {
        Isolation::Landlock
    }

    fn spawn(
        &self,
        pending: Option<Pending>,
        spec: &ValidSpec,
        facts: &Facts,
        cgroup: Option<&Cgroup>,
        unenforced: &[Controller],
        _image: Option<&ImageRoot>,
    ) -> Result<Spawned, CoreError> {
        let pending = pending.ok_or_else(|| CoreError::Misuse("no agent".into()))?;
        let data = unenforced
            .contains(&Controller::Memory)
            .then_some(spec.limits.memory)
            .flatten();
        let tasks = spec
            .limits
            .pids
            .unwrap_or_else(|| facts.kernel.default_tasks());
        let agent = pending.start(AgentSpawn {
            idmap: None,
            cgroup,
            inherit: Vec::new(),
        })?;
        Ok(Spawned {
            agent,
            plan: AgentPlan {
                role: Role::Landlock,
                confinement: Confinement {
                    landlock: Some(self.rules(spec)),
                    rlimits: Rlimits::sandbox(tasks, data),
                    drop_privileges: true,
                    // Rootless there are no capabilities to drop (and no
                    // CAP_SETPCAP to empty the bounding set with).
                    unprivileged: !self.set_ids,
                    seccomp: true,
                    no_network: true,
                    nested_userns: false,
                    set_ids: self.set_ids,
                    lower_rlimits: Vec::new(),
                    profile: None,
                },
                file_user: self.ids,
                trace_timing: crate::timing::on(),
                exit_when_idle: false,
                // No network namespace: a proxy port inside would be the
                // host's (the spec refuses a network policy here).
                egress_ports: Vec::new(),
                transparent: None,
            },
            notes: Vec::new(),
            vm_monitor: None,
            vm_console: None,
        })
    }

    fn env(&self, spec: &ValidSpec) -> Vec<(String, String)> {
        let mut env = airlock_jail::base_env(spec, |k| std::env::var(k).ok());
        let home = self.scratch.display().to_string();
        for (k, v) in env.iter_mut() {
            if k == "HOME" && !spec.env.iter().any(|(ek, _)| ek == "HOME") {
                *v = home.clone();
            }
        }
        if !spec.env.iter().any(|(k, _)| k == "TMPDIR") {
            env.push(("TMPDIR".into(), home));
        }
        env
    }

    fn cwd(&self, spec: &ValidSpec) -> Result<PathBuf, CoreError> {
        Ok(spec.workdir.clone().unwrap_or_else(|| self.scratch.clone()))
    }

    fn user(&self, _spec: &ValidSpec) -> User {
        User {
            uid: self.ids.0,
            gid: self.ids.1,
        }
    }

    fn kill(&self, agent: &Agent, started: &[i32]) {
        Local.kill(agent, started)
    }
}

/// The microVM tier: the agent is the `/init` of a guest under QEMU
/// (`airlock-vm`), started from the template snapshot of its kind of
/// machine; the host sees QEMU (jailed) as the agent's process and the
/// virtio-serial port as its channel.
pub struct Microvm;

/// Where a store image's disk is mounted in the guest (outside the
/// sandbox's root, which is built on it).
const GUEST_IMAGE_AT: &str = "/.image";

/// Where the mounts disk is mounted in the guest (outside the sandbox's
/// root).
const GUEST_MOUNTS_AT: &str = "/.mounts";

/// The `ro` and `overlay` mounts of `plan` as one erofs disk
/// ([`airlock_vm::mounts`]): a copy of each source as the container
/// tier's sandbox user would see it (owners mapped by the same rules),
/// and where each is in the guest, in `user_mounts` order.
fn mounts_disk(
    plan: &Plan,
    notes: &mut Vec<String>,
) -> Result<(Option<airlock_vm::mounts::MountsDisk>, Vec<GuestMount>), CoreError> {
    use airlock_spec::MountMode;
    let user_mounts = &plan.root.user_mounts;
    if user_mounts.is_empty() {
        return Ok((None, Vec::new()));
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let mut sources = Vec::new();
    let mut guest = Vec::new();
    for (i, m) in user_mounts.iter().enumerate() {
        let r = mount::check_source(m)?;
        let is_dir = r.is_dir();
        let owner = match r.owner_chain() {
            Some(0) if m.as_owner && m.mode == MountMode::Overlay => Some((0, 0)),
            Some(0) => {
                notes.push(format!(
                    "{} is owned by root: in the microVM its files are nobody's and the sandbox may read only what others may",
                    m.source.display()
                ));
                None
            }
            None => {
                notes.push(format!(
                    "{} lies inside a directory of another user: in the microVM its files are nobody's and the sandbox may read only what others may",
                    m.source.display()
                ));
                None
            }
            Some(u) => Some((u, mount::idmap_group(u, &passwd))),
        };
        let at = PathBuf::from(GUEST_MOUNTS_AT).join(i.to_string());
        guest.push(GuestMount {
            path: if is_dir {
                at
            } else {
                at.join(airlock_vm::mounts::FILE_NAME)
            },
            is_dir,
        });
        sources.push(airlock_vm::mounts::Source {
            fd: r.fd,
            is_dir,
            owner,
        });
    }
    let state = airlock_vm::state_dir()?;
    let disk = airlock_vm::mounts::build(
        &state,
        &sources,
        airlock_vm::mounts::Ids {
            uid: plan.user.uid,
            gid: plan.user.gid,
        },
    )?;
    notes.extend(disk.notes.iter().cloned());
    crate::timing::mark("vm mounts copied");
    Ok((Some(disk), guest))
}

/// The guest kernel of this process's microVMs (`airlock run --kernel`),
/// set once before any sandbox starts; else `AIRLOCK_VM_KERNEL`, else the
/// newest Debian cloud kernel.
static VM_KERNEL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Sets this process's guest kernel (the first call wins).
pub fn set_vm_kernel(path: PathBuf) {
    let _ = VM_KERNEL.set(path);
}

/// Fresh bytes from the host's kernel.
fn seed() -> Vec<u8> {
    let mut b = vec![0u8; 64];
    // SAFETY: getrandom fills the buffer it is given.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    b.truncate(n.max(0) as usize);
    b
}

impl Backend for Microvm {
    fn isolation(&self) -> Isolation {
        Isolation::Microvm
    }

    fn spawn(
        &self,
        _pending: Option<Pending>,
        spec: &ValidSpec,
        facts: &Facts,
        _cgroup: Option<&Cgroup>,
        _unenforced: &[Controller],
        image: Option<&ImageRoot>,
    ) -> Result<Spawned, CoreError> {
        if image.is_some_and(|i| i.capture.is_some()) {
            return Err(CoreError::MicrovmUnsupported(
                "image build steps (RUN) run in the container tier".into(),
            ));
        }
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err(CoreError::MicrovmUnsupported(
                "it runs as root for now (QEMU then runs as nobody in its own namespaces, with no capabilities); rootless microVMs are not supported yet".into(),
            ));
        }
        if let Some(m) = spec
            .mounts
            .iter()
            .find(|m| m.mode == airlock_spec::MountMode::Rw)
        {
            return Err(CoreError::MicrovmUnsupported(format!(
                "rw mounts ({}) are refused in a microVM: nothing the guest writes goes back to the host. Mount it --overlay (a copy the guest may change; `airlock task` turns the changes into a patch) or --ro, copy results out with `airlock cp`, or use the container tier",
                m.source.display()
            )));
        }
        let opts = airlock_vm::MachineOptions::from_limits(
            VM_KERNEL
                .get()
                .cloned()
                .or_else(|| std::env::var_os("AIRLOCK_VM_KERNEL").map(PathBuf::from)),
            spec.limits.memory,
            spec.limits.cpus,
        );
        let mut machine =
            airlock_vm::Machine::prepare(opts, &facts.image, image.map(|i| i.tree.as_path()))?;
        crate::timing::mark("vm prepared");
        let mut notes = vec![machine.accel.describe()];
        // A store image's tree is its disk, mounted in the guest here.
        let guest_image = image.map(|i| ImageRoot {
            tree: PathBuf::from(GUEST_IMAGE_AT),
            home: i.home.clone(),
            capture: None,
            premapped: false,
        });
        // Inside the guest the agent is root of the guest's own kernel:
        // the sandbox's ids are used as they are.
        let plan = Plan::compile(
            spec,
            &facts.image,
            &facts.kernel,
            facts.idmap,
            &[],
            // The guest kernel's Landlock (the agent drops the layer, and
            // says so, if the guest kernel has none).
            1,
            guest_image.as_ref(),
        );
        let (mounts_disk, guest_mounts) = mounts_disk(&plan, &mut notes)?;
        machine.mounts = mounts_disk.as_ref().map(|d| d.path.clone());
        let vm = machine.start()?;
        // QEMU has it open: its name goes.
        drop(mounts_disk);
        crate::timing::mark("vm started");
        if !vm.restored {
            notes.push("microVM booted (no template)".into());
        }
        let console = vm.console();
        let (pid, pidfd, channel, monitor) = vm
            .into_parts()
            .ok_or_else(|| CoreError::Misuse("microVM already taken".into()))?;
        let agent = Agent {
            pid,
            pidfd,
            channel,
        };
        let mut confinement = plan.confinement;
        confinement.set_ids = true;
        confinement.nested_userns = false;
        let time_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let agent_plan = AgentPlan {
            role: Role::Guest(Box::new(GuestPlan {
                root: plan.root,
                hostname: plan.hostname,
                disks: vec![
                    GuestDisk {
                        serial: airlock_vm::image::SERIAL_USR.into(),
                        at: "/usr".into(),
                        fstype: "erofs".into(),
                    },
                    GuestDisk {
                        serial: airlock_vm::image::SERIAL_ETC.into(),
                        at: "/etc".into(),
                        fstype: "erofs".into(),
                    },
                ]
                .into_iter()
                .chain(guest_image.as_ref().map(|_| GuestDisk {
                    serial: airlock_vm::image::SERIAL_IMAGE.into(),
                    at: GUEST_IMAGE_AT.into(),
                    fstype: "erofs".into(),
                }))
                .chain((!guest_mounts.is_empty()).then(|| GuestDisk {
                    serial: airlock_vm::mounts::SERIAL_MOUNTS.into(),
                    at: GUEST_MOUNTS_AT.into(),
                    fstype: "erofs".into(),
                }))
                .collect(),
                seed: seed(),
                time_ns,
                mounts: guest_mounts,
            })),
            confinement,
            file_user: (plan.user.uid, plan.user.gid),
            trace_timing: crate::timing::on(),
            exit_when_idle: false,
            // The guest has no NIC: its one way out is the agent's tunnel
            // to the host's proxy, as in a container.
            egress_ports: egress_ports(spec),
            // The guest's agent is root of the guest: it makes the pool
            // local itself.
            transparent: airlock_agent::Transparent::for_network(&spec.network, true),
        };
        notes.retain(|n| !n.is_empty());
        Ok(Spawned {
            agent,
            plan: agent_plan,
            notes,
            vm_monitor: monitor,
            vm_console: console,
        })
    }

    fn kill(&self, agent: &Agent, _started: &[i32]) {
        // SAFETY: QEMU is our unreaped child and PID 1 of its jail's PID
        // namespace: its death ends the guest and everything in its jail.
        unsafe { libc::kill(agent.pid, libc::SIGKILL) };
    }
}

/// The proxy ports the agent listens on inside (none without a network).
fn egress_ports(spec: &ValidSpec) -> Vec<u16> {
    if spec.network.mode == airlock_spec::NetMode::None {
        Vec::new()
    } else {
        vec![
            airlock_spec::net::HTTP_PROXY_PORT,
            airlock_spec::net::SOCKS_PORT,
        ]
    }
}
