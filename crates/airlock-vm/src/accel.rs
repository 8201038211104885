//! Which accelerator runs the guest: KVM when a probe shows that it really
//! runs guest code here, software emulation (TCG) otherwise.
//!
//! `/dev/kvm` being there is not enough: nested KVM without VMX, for one,
//! opens, creates a VM and a vCPU, and then fails on the first instruction
//! ("emulation failure"). So the probe runs one: a real-mode `hlt` at
//! 0x1000, which must come back as `KVM_EXIT_HLT`. It costs a few
//! milliseconds, once per process.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

/// The accelerator a guest runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    /// Software emulation, and why KVM is not used.
    Tcg {
        why: String,
    },
}

impl Accel {
    /// QEMU's name for it (`-accel`).
    pub fn qemu_name(&self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg { .. } => "tcg",
        }
    }

    /// One line for the user.
    pub fn describe(&self) -> String {
        match self {
            Accel::Kvm => "microVM accelerator: KVM".to_string(),
            Accel::Tcg { why } => format!(
                "microVM accelerator: TCG (software emulation, much slower than KVM): {why}"
            ),
        }
    }

    /// The accelerator of this host: `AIRLOCK_VM_ACCEL=tcg` forces
    /// software emulation; else the probe decides (once per process).
    pub fn detect() -> Accel {
        static A: OnceLock<Accel> = OnceLock::new();
        A.get_or_init(|| {
            if std::env::var("AIRLOCK_VM_ACCEL").is_ok_and(|v| v == "tcg") {
                return Accel::Tcg {
                    why: "AIRLOCK_VM_ACCEL=tcg".into(),
                };
            }
            let boot_id =
                std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
            let cache = crate::state_dir()
                .ok()
                .and_then(|s| crate::vm_dir(&s, "accel").ok())
                .map(|d| d.join(boot_id.trim()));
            if let Some(c) = cache.as_ref().filter(|_| !boot_id.trim().is_empty()) {
                if let Ok(t) = std::fs::read_to_string(c) {
                    if t == "kvm" {
                        return Accel::Kvm;
                    }
                    if let Some(why) = t.strip_prefix("tcg:") {
                        return Accel::Tcg { why: why.into() };
                    }
                }
            }
            let a = match probe_kvm().and_then(|()| probe_qemu_kvm()) {
                Ok(()) => Accel::Kvm,
                Err(why) => Accel::Tcg { why },
            };
            if let Some(c) = cache.filter(|_| !boot_id.trim().is_empty()) {
                let text = match &a {
                    Accel::Kvm => "kvm".to_string(),
                    Accel::Tcg { why } => format!("tcg:{why}"),
                };
                let tmp = crate::temp_beside(&c);
                if std::fs::write(&tmp, text).is_ok() {
                    let _ = std::fs::rename(&tmp, &c);
                }
            }
            a
        })
        .clone()
    }
}

const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
const KVM_GET_VCPU_MMAP_SIZE: libc::c_ulong = 0xAE04;
const KVM_CREATE_VCPU: libc::c_ulong = 0xAE41;
const KVM_SET_USER_MEMORY_REGION: libc::c_ulong = 0x4020_AE46;
const KVM_RUN: libc::c_ulong = 0xAE80;
const KVM_GET_SREGS: libc::c_ulong = 0x8138_AE83;
const KVM_SET_SREGS: libc::c_ulong = 0x4138_AE84;
const KVM_SET_REGS: libc::c_ulong = 0x4090_AE82;
const KVM_EXIT_HLT: u32 = 5;
const KVM_EXIT_INTERNAL_ERROR: u32 = 17;

#[repr(C)]
struct MemoryRegion {
    slot: u32,
    flags: u32,
    guest_phys_addr: u64,
    memory_size: u64,
    userspace_addr: u64,
}

fn ioctl(fd: RawFd, req: libc::c_ulong, arg: usize) -> Result<i32, std::io::Error> {
    // SAFETY: every request used here takes an integer or a pointer to a
    // live buffer of the size its number encodes.
    let r = unsafe { libc::ioctl(fd, req, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: a new fd from the kernel that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A mapping unmapped on drop.
struct Map(*mut libc::c_void, usize);

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmaps what we mapped, once.
        unsafe { libc::munmap(self.0, self.1) };
    }
}

/// QEMU itself on KVM: some hosts run the probe's `hlt` but refuse what
/// QEMU sets up (model-specific registers under nested virtualization).
/// A `microvm` with its firmware and no kernel must still be running
/// after a second and a half.
fn probe_qemu_kvm() -> Result<(), String> {
    let qemu = crate::find_program("qemu-system-x86_64")
        .ok_or_else(|| "no qemu-system-x86_64".to_string())?;
    let mut child = std::process::Command::new(qemu)
        .args([
            "-M",
            "microvm,accel=kvm",
            "-cpu",
            "host",
            "-m",
            "32M",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-net",
            "none",
        ])
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("start QEMU: {e}"))?;
    let end = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = (&mut e).take(4096).read_to_string(&mut err);
                }
                let line = err.lines().next().unwrap_or("").trim().to_string();
                return Err(format!(
                    "QEMU cannot run a guest on KVM here ({st}: {line})"
                ));
            }
            Ok(None) if std::time::Instant::now() < end => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(());
            }
        }
    }
}

/// Runs one `hlt` in a fresh VM.
pub fn probe_kvm() -> Result<(), String> {
    // SAFETY: a constant C string; the kernel returns a new fd or -1.
    let kvm = unsafe { libc::open(c"/dev/kvm".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if kvm < 0 {
        return Err(format!(
            "/dev/kvm: {} (load kvm_intel or kvm_amd, enable virtualization in the firmware, or give this user access to /dev/kvm)",
            std::io::Error::last_os_error()
        ));
    }
    let kvm = owned(kvm);
    let k = kvm.as_raw_fd();
    let e = |what: &str| {
        let what = what.to_string();
        move |err: std::io::Error| format!("KVM {what}: {err}")
    };
    if ioctl(k, KVM_GET_API_VERSION, 0).map_err(e("API version"))? != 12 {
        return Err("KVM API version is not 12".into());
    }
    let vm = owned(ioctl(k, KVM_CREATE_VM, 0).map_err(e("create VM"))?);
    let size = 0x1000usize;
    // SAFETY: an anonymous private mapping; checked below.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    let mem = Map(mem, size);
    // SAFETY: the mapping is `size` bytes long and writable.
    unsafe { *(mem.0 as *mut u8) = 0xf4 }; // hlt
    let region = MemoryRegion {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0x1000,
        memory_size: size as u64,
        userspace_addr: mem.0 as u64,
    };
    ioctl(
        vm.as_raw_fd(),
        KVM_SET_USER_MEMORY_REGION,
        &region as *const MemoryRegion as usize,
    )
    .map_err(e("set memory"))?;
    let vcpu = owned(ioctl(vm.as_raw_fd(), KVM_CREATE_VCPU, 0).map_err(e("create vCPU"))?);
    let run_size = ioctl(k, KVM_GET_VCPU_MMAP_SIZE, 0).map_err(e("vCPU mmap size"))? as usize;
    // SAFETY: maps the vCPU's run structure, of the size KVM gave.
    let run = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            run_size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            vcpu.as_raw_fd(),
            0,
        )
    };
    if run == libc::MAP_FAILED {
        return Err(format!("mmap vCPU: {}", std::io::Error::last_os_error()));
    }
    let run = Map(run, run_size);
    let mut sregs = [0u8; 312];
    ioctl(vcpu.as_raw_fd(), KVM_GET_SREGS, sregs.as_mut_ptr() as usize).map_err(e("get sregs"))?;
    // cs: base (u64 at 0) and selector (u16 at 12) both 0.
    sregs[0..8].copy_from_slice(&0u64.to_le_bytes());
    sregs[12..14].copy_from_slice(&0u16.to_le_bytes());
    ioctl(vcpu.as_raw_fd(), KVM_SET_SREGS, sregs.as_ptr() as usize).map_err(e("set sregs"))?;
    let mut regs = [0u64; 18];
    regs[16] = 0x1000; // rip
    regs[17] = 0x2; // rflags
    ioctl(vcpu.as_raw_fd(), KVM_SET_REGS, regs.as_ptr() as usize).map_err(e("set regs"))?;
    ioctl(vcpu.as_raw_fd(), KVM_RUN, 0).map_err(e("run"))?;
    // SAFETY: exit_reason is the u32 at offset 8 of the run structure.
    let reason = unsafe { std::ptr::read_volatile((run.0 as *const u8).add(8) as *const u32) };
    match reason {
        KVM_EXIT_HLT => Ok(()),
        KVM_EXIT_INTERNAL_ERROR => Err(
            "KVM cannot run guest code here (internal error: emulation failure; nested virtualization without VMX/SVM?)".into(),
        ),
        r => Err(format!("KVM ran the probe to exit reason {r}, not hlt")),
    }
}
