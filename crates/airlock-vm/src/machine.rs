//! The QEMU `microvm` machine: its command line, its start inside its jail
//! (`airlock_jail::vmm`), boot templates and restores.
//!
//! Every machine of one (QEMU, kernel, initramfs, disks, memory, vCPUs,
//! accelerator) has the same command line. The first one boots, waits
//! until the agent (the guest's `/init`) has opened its port (QMP event
//! `VSERPORT_CHANGE`: it then waits for the host's Hello), is stopped and
//! saved with a migration to a file (the template), and quits. Every
//! sandbox then starts from that file (`-incoming fd:N`), into the same
//! waiting agent, and gets its own fresh seed, clock and root with its
//! plan. Nothing of a sandbox is ever saved: the template is taken before
//! any plan.
//!
//! The guest has no network device (`-nodefaults`, `-net none`), no
//! monitor but a private QMP socket, no reboot (`-no-reboot`; a guest
//! panic reboots at once with `panic=-1` and so ends QEMU), and QEMU's
//! own seccomp filter (`-sandbox on,...`).

use crate::accel::Accel;
use crate::image::{HostImage, SERIAL_ETC, SERIAL_USR};
use crate::kernel::Kernel;
use crate::qmp::Qmp;
use crate::{io_err, Result, VmError};
use airlock_jail::vmm::{self, VmmJail};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a machine is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineOptions {
    /// `None`: the Debian cloud kernel.
    pub kernel: Option<PathBuf>,
    pub memory_mib: u64,
    pub cpus: u32,
}

/// The smallest guest (the initramfs and the agent need room).
pub const MIN_MEMORY_MIB: u64 = 128;
/// The guest's RAM unless `--memory` says otherwise.
pub const DEFAULT_MEMORY_MIB: u64 = 256;

impl MachineOptions {
    /// From a sandbox's limits: `--memory` is the guest's RAM, `--cpus`
    /// its vCPUs (rounded up).
    pub fn from_limits(kernel: Option<PathBuf>, memory: Option<u64>, cpus: Option<f64>) -> Self {
        let memory_mib = memory
            .map(|b| b.div_ceil(1 << 20))
            .unwrap_or(DEFAULT_MEMORY_MIB)
            .max(MIN_MEMORY_MIB);
        // SAFETY: sysconf with a constant.
        let host = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as u32;
        let cpus = cpus
            .map(|c| c.ceil().max(1.0) as u32)
            .unwrap_or(1)
            .clamp(1, host.min(64));
        MachineOptions {
            kernel,
            memory_mib,
            cpus,
        }
    }
}

/// Everything prepared for machines of one kind.
pub struct Machine {
    pub accel: Accel,
    pub kernel: Kernel,
    pub initramfs: PathBuf,
    pub image: HostImage,
    /// A store image's disk (its sandboxes' root), if any.
    pub store_image: Option<PathBuf>,
    /// This sandbox's mounts disk ([`crate::mounts`]), if it has mounts.
    pub mounts: Option<PathBuf>,
    /// What stands in the mounts disk's slot in a template.
    placeholder: PathBuf,
    pub opts: MachineOptions,
    qemu: PathBuf,
    state: PathBuf,
}

/// A running guest.
pub struct Vm {
    /// QEMU's pid (our child), PID 1 of its jail's namespaces.
    pub pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
    /// Our end of the agent's channel (a byte stream).
    channel: Option<OwnedFd>,
    /// QEMU's monitor (private).
    pub qmp: Option<Qmp>,
    /// The guest's serial console (QEMU's stdout), for diagnostics only.
    pub console: std::fs::File,
    /// Started from the template (not booted).
    pub restored: bool,
    reaped: bool,
}

impl Vm {
    /// The end of the console (at most `max` bytes), lossily as text: it
    /// comes from the guest and is not trusted.
    pub fn console_tail(&self, max: usize) -> String {
        console_tail(&self.console, max)
    }

    /// The guest's console (a memfd QEMU writes), to read after the
    /// machine has ended ([`console_tail`]).
    pub fn console(&self) -> Option<std::fs::File> {
        self.console.try_clone().ok()
    }

    /// Kills QEMU (and so the guest) and reaps it.
    pub fn kill(&mut self) {
        if self.reaped {
            return;
        }
        // SAFETY: our own unreaped child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
        self.reaped = true;
    }

    /// Gives up ownership of the process (the caller reaps it): its pid,
    /// pidfd, the channel and QEMU's monitor.
    pub fn into_parts(mut self) -> Option<(libc::pid_t, OwnedFd, OwnedFd, Option<Qmp>)> {
        self.reaped = true;
        Some((
            self.pid,
            self.pidfd.take()?,
            self.channel.take()?,
            self.qmp.take(),
        ))
    }

    /// QEMU's monitor.
    pub fn qmp(&mut self) -> Result<&mut Qmp> {
        self.qmp
            .as_mut()
            .ok_or_else(|| VmError::Qmp("not connected".into()))
    }

    /// Our end of the agent's channel.
    pub fn channel(&self) -> Option<RawFd> {
        self.channel.as_ref().map(|c| c.as_raw_fd())
    }

    /// Readable once QEMU has exited.
    pub fn pidfd(&self) -> Option<RawFd> {
        self.pidfd.as_ref().map(|c| c.as_raw_fd())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

fn socketpair() -> Result<(OwnedFd, OwnedFd)> {
    let mut sp = [0; 2];
    // SAFETY: `sp` has room for two fds.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            sp.as_mut_ptr(),
        )
    } < 0
    {
        return Err(VmError::Qemu(format!(
            "socketpair: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: two new fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(sp[0]), OwnedFd::from_raw_fd(sp[1])) })
}

fn memfd(name: &std::ffi::CStr) -> Result<std::fs::File> {
    // SAFETY: a valid C string; the kernel returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(VmError::Qemu(format!(
            "memfd: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// `AIRLOCK_VM_APPEND`: more of the guest kernel's command line (a
/// debugging knob of the host's user, as `AIRLOCK_VM_DEBUG`; e.g.
/// `sysctl.vm.panic_on_oom=1`), each word of letters, digits and
/// `._-=,:` only. It is part of the machine's kind (its own template).
fn extra_cmdline() -> String {
    let v = std::env::var("AIRLOCK_VM_APPEND").unwrap_or_default();
    v.split_whitespace()
        .filter(|w| {
            w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-=,:".contains(c))
        })
        .map(|w| format!(" {w}"))
        .collect()
}

/// The last `max` bytes of a guest's console, control characters
/// replaced (the guest wrote them: untrusted).
pub fn console_tail(console: &std::fs::File, max: usize) -> String {
    use std::os::unix::fs::FileExt;
    let len = console.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max as u64);
    let mut b = vec![0u8; (len - start) as usize];
    let n = console.read_at(&mut b, start).unwrap_or(0);
    b.truncate(n);
    String::from_utf8_lossy(&b)
        .chars()
        .filter(|&c| c != '\r')
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect()
}

fn debug() -> bool {
    std::env::var("AIRLOCK_VM_DEBUG").is_ok_and(|v| v == "1")
}

/// Where things are inside QEMU's jail.
const J_KERNEL: &str = "/vm/vmlinuz";
const J_INITRD: &str = "/vm/initrd";
const J_USR: &str = "/vm/usr.erofs";
const J_ETC: &str = "/vm/etc.erofs";
const J_IMAGE: &str = "/vm/image.erofs";
const J_MOUNTS: &str = "/vm/mounts.erofs";
/// The fds QEMU gets: channel, QMP, and (restore or save) the snapshot.
const FD_CHANNEL: RawFd = vmm::FD_FIRST_PASSED;
const FD_QMP: RawFd = vmm::FD_FIRST_PASSED + 1;
const FD_SNAPSHOT: RawFd = vmm::FD_FIRST_PASSED + 2;

impl Machine {
    /// Finds QEMU and the kernel, builds (or finds) the initramfs and the
    /// host image's disks, and probes the accelerator.
    pub fn prepare(
        opts: MachineOptions,
        host: &airlock_jail::HostFacts,
        store_tree: Option<&Path>,
    ) -> Result<Machine> {
        let qemu = crate::find_program("qemu-system-x86_64").ok_or(VmError::Missing {
            what: "qemu-system-x86_64".into(),
            hint: "install the Debian package qemu-system-x86; scripts/setup.sh does",
        })?;
        let state = crate::state_dir()?;
        let kernel = Kernel::find(opts.kernel.as_deref())?;
        let agent = airlock_jail::spawn::agent_exe()
            .map_err(|e| VmError::Agent(format!("open the agent binary: {e}")))?;
        let initramfs = crate::initramfs::build(&state, &kernel, agent)?;
        let image = HostImage::get(&state, host)?;
        let store_image = match store_tree {
            Some(t) => Some(crate::image::store_image(&state, t)?),
            None => None,
        };
        let placeholder = crate::mounts::placeholder(&state)?;
        Ok(Machine {
            mounts: None,
            placeholder,
            accel: Accel::detect(),
            kernel,
            initramfs,
            image,
            store_image,
            opts,
            qemu,
            state,
        })
    }

    fn args(&self) -> Vec<String> {
        let accel = self.accel.qemu_name();
        let cpu = match self.accel {
            Accel::Kvm => "host",
            Accel::Tcg { .. } => "qemu64",
        };
        let mut a: Vec<String> = vec![
            "-M".into(),
            format!("microvm,accel={accel},isa-serial=on"),
            "-cpu".into(),
            cpu.into(),
            "-m".into(),
            format!("{}M", self.opts.memory_mib),
            "-smp".into(),
            self.opts.cpus.to_string(),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            "-net".into(),
            "none".into(),
            "-sandbox".into(),
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny".into(),
            "-kernel".into(),
            J_KERNEL.into(),
            "-initrd".into(),
            J_INITRD.into(),
            "-append".into(),
            // Under TCG, no calibration of the TSC or the delay loop (they
            // fail or hang on a busy host): fixed values instead.
            format!(
                "console=ttyS0 {} panic=-1 oops=panic i8042.noaux i8042.nokbd{}",
                if debug() {
                    "airlock.debug=1"
                } else {
                    "quiet loglevel=1"
                },
                match self.accel {
                    Accel::Kvm => "",
                    Accel::Tcg { .. } => " lpj=4000000 tsc_early_khz=2000000 no_timer_check",
                }
            ) + &extra_cmdline(),
            "-chardev".into(),
            "stdio,id=con,signal=off".into(),
            "-serial".into(),
            "chardev:con".into(),
            "-chardev".into(),
            format!("socket,id=agent,fd={FD_CHANNEL}"),
            "-device".into(),
            "virtio-serial-device,max_ports=2".into(),
            "-device".into(),
            format!(
                "virtserialport,id=agentport,chardev=agent,name={}",
                airlock_agent::plan::GUEST_PORT
            ),
            "-chardev".into(),
            format!("socket,id=qmp,fd={FD_QMP}"),
            "-mon".into(),
            "chardev=qmp,mode=control".into(),
        ];
        let mut disks = vec![
            ("usr", J_USR, SERIAL_USR),
            ("etc", J_ETC, SERIAL_ETC),
            // Always there (a placeholder without mounts): one template
            // for sandboxes with and without.
            ("mounts", J_MOUNTS, crate::mounts::SERIAL_MOUNTS),
        ];
        if self.store_image.is_some() {
            disks.push(("image", J_IMAGE, crate::image::SERIAL_IMAGE));
        }
        for (id, path, serial) in disks {
            a.push("-drive".into());
            a.push(format!(
                "file={path},format=raw,if=none,id={id},readonly=on,cache=unsafe"
            ));
            a.push("-device".into());
            a.push(format!("virtio-blk-device,drive={id},serial={serial}"));
        }
        a
    }

    /// The key of this kind of machine's template.
    fn template_key(&self) -> Result<String> {
        let mut key = vec![
            "template v2".to_string(),
            crate::file_id(&self.qemu)?,
            crate::file_id(&self.kernel.image)?,
            self.initramfs.display().to_string(),
            self.image.usr.display().to_string(),
            self.image.etc.display().to_string(),
            format!("{:?}", self.store_image),
        ];
        key.extend(self.args());
        let parts: Vec<&[u8]> = key.iter().map(|s| s.as_bytes()).collect();
        Ok(crate::hash(&parts))
    }

    fn jail(&self, incoming: bool, passed: usize, template: bool) -> VmmJail {
        let mut args = self.args();
        if incoming {
            args.push("-incoming".into());
            args.push(format!("fd:{FD_SNAPSHOT}"));
        }
        let mut devices = vec![PathBuf::from("/dev/null"), PathBuf::from("/dev/urandom")];
        let mut groups = Vec::new();
        if self.accel == Accel::Kvm {
            devices.push("/dev/kvm".into());
            use std::os::unix::fs::MetadataExt;
            if let Ok(m) = std::fs::metadata("/dev/kvm") {
                groups.push(m.gid());
            }
        }
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let mut ro: Vec<(PathBuf, PathBuf)> = vec![
            ("/usr".into(), "/usr".into()),
            (self.kernel.image.clone(), J_KERNEL.into()),
            (self.initramfs.clone(), J_INITRD.into()),
            (self.image.usr.clone(), J_USR.into()),
            (self.image.etc.clone(), J_ETC.into()),
        ];
        if let Some(img) = &self.store_image {
            ro.push((img.clone(), J_IMAGE.into()));
        }
        let mounts = match (&self.mounts, template) {
            (Some(m), false) => m.clone(),
            _ => self.placeholder.clone(),
        };
        ro.push((mounts, J_MOUNTS.into()));
        VmmJail {
            program: self.qemu.clone(),
            args,
            ro,
            devices,
            symlinks: vec![
                ("/lib".into(), "usr/lib".into()),
                ("/lib64".into(), "usr/lib64".into()),
                ("/bin".into(), "usr/bin".into()),
            ],
            passed,
            // Run by root, QEMU runs as nobody, with no capabilities.
            ids: root.then_some((65534, 65534, groups)),
        }
    }

    /// Starts QEMU in its jail with `snapshot` as its third passed fd:
    /// restored from it (`incoming`), or to save into it.
    fn launch(
        &self,
        snapshot: Option<&std::fs::File>,
        incoming: bool,
        template: bool,
    ) -> Result<Vm> {
        let (channel, channel_q) = socketpair()?;
        let (qmp, qmp_q) = socketpair()?;
        let console = memfd(c"airlock-vm-console")?;
        let mut passed: Vec<RawFd> = vec![channel_q.as_raw_fd(), qmp_q.as_raw_fd()];
        if let Some(s) = snapshot {
            passed.push(s.as_raw_fd());
        }
        let spec = self.jail(incoming, passed.len(), template);
        // AIRLOCK_VM_DEBUG=1: the guest's console and QEMU's messages go to
        // our stderr (and the guest's kernel says more).
        let out = if debug() { 2 } else { console.as_raw_fd() };
        let vmm = vmm::spawn(&spec, &passed, out, out)?;
        drop(channel_q);
        drop(qmp_q);
        let mut vm = Vm {
            pid: vmm.pid,
            pidfd: Some(vmm.pidfd),
            channel: Some(channel),
            qmp: None,
            console,
            restored: incoming,
            reaped: false,
        };
        match Qmp::connect(qmp, Duration::from_secs(60)) {
            Ok(q) => vm.qmp = Some(q),
            Err(e) => {
                return Err(VmError::Qemu(format!(
                    "{e}; console: {}",
                    vm.console_tail(2000)
                )))
            }
        }
        Ok(vm)
    }

    /// Waits until the guest's agent has opened its port.
    fn wait_agent(vm: &mut Vm, limit: Duration) -> Result<()> {
        let r = vm.qmp()?.wait_event(
            |v| {
                v["event"] == "VSERPORT_CHANGE"
                    && v["data"]["id"] == "agentport"
                    && v["data"]["open"] == true
            },
            limit,
        );
        r.map(|_| ()).map_err(|e| {
            VmError::Qemu(format!(
                "the guest did not start its agent: {e}; console: {}",
                vm.console_tail(3000)
            ))
        })
    }

    /// Boots a guest (no template) and waits for its agent.
    pub fn boot(&self) -> Result<Vm> {
        let mut vm = self.launch(None, false, false)?;
        Self::wait_agent(&mut vm, Duration::from_secs(180))?;
        Ok(vm)
    }

    /// The template of this kind of machine, made now if missing.
    pub fn template(&self) -> Result<PathBuf> {
        let dir = crate::vm_dir(&self.state, "templates")?;
        let path = dir.join(format!("{}.snap", self.template_key()?));
        if path.is_file() {
            return Ok(path);
        }
        let _lock = crate::lock(&dir.join(".lock"))?;
        if path.is_file() {
            return Ok(path);
        }
        let tmp = crate::temp_beside(&path);
        let r = self.save_template(&tmp);
        if let Err(e) = r {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
        prune_templates(&dir, &path);
        Ok(path)
    }

    fn save_template(&self, out: &Path) -> Result<()> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(out)
            .map_err(io_err("create", out))?;
        let mut vm = self.launch(None, false, true)?;
        Self::wait_agent(&mut vm, Duration::from_secs(180))?;
        let t = Duration::from_secs(60);
        vm.qmp()?.execute("stop", serde_json::Value::Null, t)?;
        vm.qmp()?.send_fd("snapshot", file.as_raw_fd(), t)?;
        vm.qmp()?
            .execute("migrate", serde_json::json!({ "uri": "fd:snapshot" }), t)?;
        let end = Instant::now() + Duration::from_secs(300);
        loop {
            let st = vm
                .qmp()?
                .execute("query-migrate", serde_json::Value::Null, t)?;
            match st["status"].as_str().unwrap_or("") {
                "completed" => break,
                "failed" | "cancelled" => {
                    return Err(VmError::Qemu(format!(
                        "saving the template failed: {}",
                        st["error-desc"].as_str().unwrap_or("?")
                    )))
                }
                _ => {}
            }
            if Instant::now() >= end {
                return Err(VmError::Qemu("saving the template timed out".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = vm.qmp()?.execute("quit", serde_json::Value::Null, t);
        let mut p = libc::pollfd {
            fd: vm.pidfd().unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 5000) };
        vm.kill();
        file.sync_all().map_err(io_err("sync", out))?;
        Ok(())
    }

    /// A guest started from the template (made first if missing), or
    /// booted when `AIRLOCK_VM_COLD=1` (to measure and compare).
    pub fn start(&self) -> Result<Vm> {
        if std::env::var("AIRLOCK_VM_COLD").is_ok_and(|v| v == "1") {
            return self.boot();
        }
        let mut t = self.template()?;
        let f = match std::fs::File::open(&t) {
            Ok(f) => f,
            // Pruned by another process a moment ago: made again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                t = self.template()?;
                std::fs::File::open(&t).map_err(io_err("open", &t))?
            }
            Err(e) => return Err(io_err("open", &t)(e)),
        };
        // Its modification time says when it was last used (atime is
        // not kept on most mounts): pruning keeps the templates in use.
        let _ = f.set_modified(std::time::SystemTime::now());
        let mut vm = self.launch(Some(&f), true, false)?;
        // The template was saved stopped, and so it is restored: once the
        // state is in, the guest goes on.
        let t = Duration::from_secs(30);
        let end = Instant::now() + Duration::from_secs(300);
        loop {
            let st = vm
                .qmp()?
                .execute("query-status", serde_json::Value::Null, t)?;
            match st["status"].as_str().unwrap_or("") {
                "inmigrate" | "prelaunch" => {}
                "paused" | "postmigrate" => break,
                "running" => return Ok(vm),
                other => {
                    return Err(VmError::Qemu(format!(
                        "restoring the template: the machine is {:?}; console: {}",
                        other.chars().take(40).collect::<String>(),
                        vm.console_tail(2000)
                    )))
                }
            }
            if Instant::now() >= end {
                return Err(VmError::Qemu("restoring the template timed out".into()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        vm.qmp()?.execute("cont", serde_json::Value::Null, t)?;
        Ok(vm)
    }
}

/// How many templates are kept beyond those used in the last
/// [`TEMPLATE_RECENT`] (each is the guest's RAM as saved, ~100 MB; every
/// new agent, kernel or host image makes a new kind).
const TEMPLATES_KEPT: usize = 6;
const TEMPLATE_RECENT: Duration = Duration::from_secs(30 * 60);

/// Removes the templates in `dir` but `keep`, the [`TEMPLATES_KEPT`] used
/// most recently (by modification time: set on every use) and any used
/// in the last [`TEMPLATE_RECENT`]. A machine restoring from one that
/// goes keeps its open file; a later one makes it again.
fn prune_templates(dir: &Path, keep: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut snaps: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with(".snap") && !n.starts_with('.')
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    snaps.sort_by_key(|s| std::cmp::Reverse(s.0));
    for (i, (t, p)) in snaps.iter().enumerate() {
        let recent = t.elapsed().map(|a| a < TEMPLATE_RECENT).unwrap_or(true);
        if i >= TEMPLATES_KEPT && !recent && p != keep {
            // A file of our own cache directory, named by us.
            let _ = std::fs::remove_file(p);
        }
    }
}
