//! The agent as a microVM guest's `/init`.
//!
//! The kernel runs `/init` of the initramfs airlock built (the agent and
//! the kernel modules it needs, nothing else) as PID 1. At boot it mounts
//! `/proc`, `/sys` and `/dev` (devtmpfs), loads the modules the initramfs
//! lists ([`MODULES`], in dependency order, with their parameters from the
//! kernel command line, as modprobe would), turns module loading off for
//! good, leaves the initramfs for a small tmpfs root (`pivot_root` does
//! not work from the initramfs), opens its channel — the virtio-serial
//! port named [`PORT_NAME`] — and serves protocol v2 over that byte
//! stream. A template snapshot is taken here, while it waits for the
//! host's Hello.
//!
//! With the plan ([`GuestPlan`]) it reseeds the kernel's RNG with the
//! host's fresh seed, sets the clock, mounts the image's read-only disks
//! where the host has those directories (`/usr`, `/etc`), and builds the
//! sandbox's root exactly as the container tier does
//! (`airlock_jail::mount::build_root`: a tmpfs of `--disk` for every
//! write, the image's directories as read-only overlays, a generated
//! `/etc`, a `/dev` of its own with six nodes, `pivot_root`), then confines
//! every process it starts as the container tier does (capabilities,
//! seccomp, Landlock where the guest kernel has it, rlimits, the sandbox
//! user's ids). Nothing is ever written back to a disk.
//!
//! It never exits: when serving ends it kills everything and powers the
//! guest off (`reboot(RB_POWER_OFF)`), so the guest kernel never panics
//! for want of an init.

use crate::plan::{GuestDisk, GuestPlan};
use crate::SetupError;
use airlock_confine::Confinement;
use airlock_jail::mount::{self, OpenedTrees};
use airlock_protocol::v2::{Stage, Transport};
use airlock_sys as sys;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

pub use crate::plan::{GUEST_MODULES as MODULES, GUEST_PORT as PORT_NAME};

/// `/dev/kmsg`, opened at boot: where the agent's own troubles go (the
/// guest's console, which the host keeps).
static KMSG: AtomicI32 = AtomicI32::new(-1);

/// PID 1, started as `/init`: a microVM guest's init.
pub(crate) fn is_guest_init() -> bool {
    // SAFETY: getpid cannot fail.
    let pid1 = unsafe { libc::getpid() } == 1;
    pid1 && std::env::args_os().next().is_some_and(|a| a == "/init")
}

/// Says `text` in the guest's kernel log and on its console (our stderr,
/// the console the kernel opened for init), which the host keeps for
/// diagnostics.
fn kmsg(text: &str) {
    let fd = KMSG.load(Ordering::Relaxed);
    if fd >= 0 {
        let line = format!("<3>airlock-agent: {text}\n");
        let _ = sys::write_all_fd(fd, line.as_bytes());
    }
    let _ = sys::write_all_fd(2, format!("airlock-agent: {text}\n").as_bytes());
}

/// The guest's init: never returns.
pub(crate) fn main() -> ! {
    crate::serve::reset_signals();
    match boot() {
        Ok(port) => {
            let end = crate::serve::serve(port.as_raw_fd(), Transport::Stream);
            if end != crate::Served::Shutdown {
                kmsg(&format!("serving ended: {end:?}"));
            }
        }
        Err(e) => kmsg(&format!("guest boot failed: {e}")),
    }
    power_off()
}

fn mount(
    src: &std::ffi::CStr,
    at: &str,
    fstype: &std::ffi::CStr,
    flags: libc::c_ulong,
) -> Result<(), String> {
    let _ = std::fs::create_dir_all(at);
    let c = sys::cpath(Path::new(at)).map_err(|e| format!("{at}: {e}"))?;
    // SAFETY: valid C strings; no data argument.
    sys::cvt(unsafe {
        libc::mount(
            src.as_ptr(),
            c.as_ptr(),
            fstype.as_ptr(),
            flags,
            std::ptr::null(),
        )
    })
    .map(|_| ())
    .map_err(|e| format!("mount {at}: {e}"))
}

/// Boot: kernel filesystems, modules, out of the initramfs, the channel.
fn boot() -> Result<OwnedFd, String> {
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount(c"proc", "/proc", c"proc", nosuid)?;
    mount(c"sysfs", "/sys", c"sysfs", nosuid)?;
    mount(
        c"devtmpfs",
        "/dev",
        c"devtmpfs",
        libc::MS_NOSUID | libc::MS_NOEXEC,
    )?;
    // SAFETY: a constant C string; the kernel returns a new fd or -1.
    let k = unsafe { libc::open(c"/dev/kmsg".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    KMSG.store(k, Ordering::Relaxed);
    load_modules()?;
    // No module is ever loaded again, whatever runs later; and the console
    // (the host keeps it) hears only emergencies (a panic).
    let _ = sys::write_file(Path::new("/proc/sys/kernel/modules_disabled"), b"1");
    let debug =
        std::fs::read_to_string("/proc/cmdline").is_ok_and(|c| c.contains("airlock.debug=1"));
    if !debug {
        let _ = sys::write_file(Path::new("/proc/sys/kernel/printk"), b"1");
    }
    leave_initramfs()?;
    find_port(Duration::from_secs(20))
}

/// The module parameters the kernel command line gives `module`
/// (`module.key=value`; `-` and `_` are the same in module names).
fn params_for(cmdline: &str, module: &str) -> String {
    let norm = |s: &str| s.replace('-', "_");
    let want = norm(module);
    cmdline
        .split_whitespace()
        .filter_map(|t| {
            let (m, rest) = t.split_once('.')?;
            rest.contains('=').then_some(())?;
            (norm(m) == want).then(|| rest.to_string())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Loads the modules [`MODULES`] lists (file names in its directory, one
/// a line, in dependency order).
fn load_modules() -> Result<(), String> {
    let list = match std::fs::read_to_string(MODULES) {
        Ok(l) => l,
        // Everything built in: nothing to load.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{MODULES}: {e}")),
    };
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let dir = Path::new(MODULES).parent().unwrap_or(Path::new("/"));
    for name in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = dir.join(name);
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let module = name.trim_end_matches(".ko");
        let params = std::ffi::CString::new(params_for(&cmdline, module)).unwrap_or_default();
        // SAFETY: a valid fd and C string.
        let r =
            unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!("load module {name}: {e}"));
            }
        }
    }
    // Their memory back (the initramfs is never looked at again).
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// Moves the kernel filesystems onto a small tmpfs and makes it `/`
/// (as switch_root does): `pivot_root`, which building the sandbox's root
/// needs, refuses the initramfs.
fn leave_initramfs() -> Result<(), String> {
    let new = "/.guest";
    let tmpfs = |at: &str| -> Result<(), String> {
        let _ = std::fs::create_dir_all(at);
        let c = sys::cpath(Path::new(at)).map_err(|e| e.to_string())?;
        // SAFETY: valid C strings.
        sys::cvt(unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                c.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"size=4m,nr_inodes=1024,mode=0755".as_ptr().cast(),
            )
        })
        .map(|_| ())
        .map_err(|e| format!("tmpfs {at}: {e}"))
    };
    tmpfs(new)?;
    for d in ["proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(format!("{new}/{d}")).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    for d in ["proc", "sys", "dev"] {
        let from = sys::cpath(&Path::new("/").join(d)).map_err(|e| e.to_string())?;
        let to = sys::cpath(&Path::new(new).join(d)).map_err(|e| e.to_string())?;
        // SAFETY: valid C strings.
        sys::cvt(unsafe {
            libc::mount(
                from.as_ptr(),
                to.as_ptr(),
                std::ptr::null(),
                libc::MS_MOVE,
                std::ptr::null(),
            )
        })
        .map_err(|e| format!("move /{d}: {e}"))?;
    }
    std::env::set_current_dir(new).map_err(|e| format!("chdir {new}: {e}"))?;
    // SAFETY: constant C strings: the tmpfs moves over `/`, and becomes our
    // root.
    unsafe {
        sys::cvt(libc::mount(
            c".".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_MOVE,
            std::ptr::null(),
        ))
        .map_err(|e| format!("move the root: {e}"))?;
        sys::cvt(libc::chroot(c".".as_ptr())).map_err(|e| format!("chroot: {e}"))?;
    }
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

/// Opens the virtio-serial port named [`PORT_NAME`], waiting for it to
/// appear.
fn find_port(limit: Duration) -> Result<OwnedFd, String> {
    let end = Instant::now() + limit;
    loop {
        if let Ok(rd) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in rd.flatten() {
                let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if name.trim() != PORT_NAME {
                    continue;
                }
                let dev = Path::new("/dev").join(e.file_name());
                let c = sys::cpath(&dev).map_err(|e| e.to_string())?;
                // SAFETY: a valid C string; the kernel returns a new fd or -1.
                let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
                if fd >= 0 {
                    // SAFETY: a new fd that nothing else owns.
                    return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        if Instant::now() >= end {
            return Err(format!("no virtio-serial port named {PORT_NAME}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Applies the plan (between Plan and Ready). Returns what the user should
/// hear about.
pub(crate) fn setup(g: &GuestPlan, c: &mut Confinement) -> Result<Vec<String>, SetupError> {
    let mut notes = Vec::new();
    reseed(&g.seed).map_err(|e| SetupError::io(Stage::Agent, "reseed the guest's RNG", e))?;
    set_clock(g.time_ns);
    for d in &g.disks {
        mount_disk(d)?;
    }
    sys::timing::mark("disks");
    let dev_fs = mount::private_dev(&g.root)
        .map_err(|e| SetupError::io(Stage::Mounts, "the sandbox's /dev", e))?;
    // A store image: its disk (mounted above) is the root's lower layer,
    // a read-only clone as the container tier's host side makes.
    let image = match &g.root.image {
        Some(img) => {
            let t = sys::open_tree_clone(&img.tree, true)
                .map_err(|e| SetupError::io(Stage::Mounts, "open the image's disk", e))?;
            sys::mount_setattr(
                t.as_raw_fd(),
                sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
                0,
                true,
            )
            .map_err(|e| SetupError::io(Stage::Mounts, "make the image read-only", e))?;
            Some(t)
        }
        None => None,
    };
    let mounts = user_mounts(g)?;
    let trees = OpenedTrees {
        devices: Vec::new(),
        dev_fs: Some(dev_fs),
        mounts,
        image,
        capture: None,
        notes: Vec::new(),
    };
    notes.extend(
        mount::build_root(&g.root, &trees, false).map_err(|f| SetupError {
            stage: Stage::Mounts,
            errno: f.errno,
            detail: f.detail,
        })?,
    );
    drop(trees);
    sys::timing::mark("root built");
    let h = g.hostname.as_bytes();
    // SAFETY: `h` is valid for its length.
    sys::cvt(unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) })
        .map_err(|e| SetupError::io(Stage::Hostname, "sethostname", e))?;
    airlock_jail::net::loopback_up()
        .map_err(|e| SetupError::io(Stage::Network, "bring up lo", e))?;
    if c.landlock.is_some() && airlock_confine::landlock::abi() == 0 {
        c.landlock = None;
        notes.push("the guest kernel has no Landlock: commands run without its filesystem-confinement layer (the guest kernel is the boundary)".into());
    }
    crate::setup::non_dumpable()?;
    Ok(notes)
}

/// The user mounts' sources on the mounts disk (mounted read-only by
/// now), each a read-only `nosuid,nodev` clone, in `user_mounts` order.
fn user_mounts(g: &GuestPlan) -> Result<Vec<mount::OpenedMount>, SetupError> {
    if g.mounts.len() != g.root.user_mounts.len() {
        return Err(SetupError {
            stage: Stage::Mounts,
            errno: libc::EINVAL,
            detail: format!(
                "{} mounts in the plan, {} on the mounts disk",
                g.root.user_mounts.len(),
                g.mounts.len()
            ),
        });
    }
    let mut out = Vec::new();
    for m in &g.mounts {
        let err = |e| SetupError::io(Stage::Mounts, format!("open {}", m.path.display()), e);
        let t = sys::open_tree_clone(&m.path, m.is_dir).map_err(err)?;
        sys::mount_setattr(
            t.as_raw_fd(),
            sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
            0,
            m.is_dir,
        )
        .map_err(err)?;
        out.push(mount::OpenedMount {
            tree: t,
            is_dir: m.is_dir,
        });
    }
    Ok(out)
}

/// `BLKFLSBUF`: `_IO(0x12, 97)`.
const BLKFLSBUF: libc::c_ulong = 0x1261;

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `RNDRESEEDCRNG`: `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Mixes `seed` into the input pool (credited) and reseeds the CRNG from
/// it now, so that what `/dev/urandom` and `getrandom` give from here on
/// differs from every other clone of the same snapshot.
fn reseed(seed: &[u8]) -> std::io::Result<()> {
    #[repr(C)]
    struct PoolInfo {
        entropy_count: libc::c_int,
        buf_size: libc::c_int,
        buf: [u8; 64],
    }
    if seed.is_empty() {
        return Ok(());
    }
    let n = seed.len().min(64);
    let mut info = PoolInfo {
        entropy_count: (n * 8) as libc::c_int,
        buf_size: n as libc::c_int,
        buf: [0; 64],
    };
    info.buf[..n].copy_from_slice(&seed[..n]);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/urandom")?;
    // SAFETY: RNDADDENTROPY reads a rand_pool_info of buf_size bytes.
    sys::cvt(unsafe { libc::ioctl(f.as_raw_fd(), RNDADDENTROPY, &info) })?;
    // SAFETY: RNDRESEEDCRNG takes no argument.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG, 0) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        // Not initialised yet: the credited seed initialises it.
        if e.raw_os_error() != Some(libc::ENODATA) {
            return Err(e);
        }
    }
    // The buffer held the seed.
    info.buf = [0; 64];
    std::hint::black_box(&info);
    Ok(())
}

/// Sets the wall clock (a restored guest's is the snapshot's).
fn set_clock(ns: u64) {
    if ns == 0 {
        return;
    }
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: clock_settime reads one timespec.
    unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) };
}

/// The block device whose virtio serial is `serial`.
fn disk_by_serial(serial: &str) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir("/sys/block").ok()?.flatten() {
        let s = std::fs::read_to_string(e.path().join("serial")).unwrap_or_default();
        if s.trim() == serial {
            return Some(Path::new("/dev").join(e.file_name()));
        }
    }
    None
}

/// Mounts one of the image's disks, read-only, where the plan says.
fn mount_disk(d: &GuestDisk) -> Result<(), SetupError> {
    let end = Instant::now() + Duration::from_secs(10);
    let dev = loop {
        if let Some(p) = disk_by_serial(&d.serial) {
            break p;
        }
        if Instant::now() >= end {
            return Err(SetupError {
                stage: Stage::Mounts,
                errno: libc::ENODEV,
                detail: format!("no disk with serial {:?} in the guest", d.serial),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    std::fs::create_dir_all(&d.at)
        .map_err(|e| SetupError::io(Stage::Mounts, format!("mkdir {}", d.at.display()), e))?;
    let err = |e| SetupError::io(Stage::Mounts, format!("mount disk {}", d.serial), e);
    // A restored guest's page cache may hold blocks of what was in the
    // slot when the template booted (the partition scan read them): gone.
    if let Ok(f) = std::fs::File::open(&dev) {
        // SAFETY: BLKFLSBUF takes no argument.
        unsafe { libc::ioctl(f.as_raw_fd(), BLKFLSBUF, 0) };
    }
    let src = sys::cpath(&dev).map_err(err)?;
    let at = sys::cpath(&d.at).map_err(err)?;
    let fstype = std::ffi::CString::new(d.fstype.as_str())
        .map_err(|_| err(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
    // SAFETY: valid C strings; no data argument.
    sys::cvt(unsafe {
        libc::mount(
            src.as_ptr(),
            at.as_ptr(),
            fstype.as_ptr(),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        )
    })
    .map_err(err)?;
    Ok(())
}

/// Everything killed, the guest powered off. Never returns.
fn power_off() -> ! {
    // SAFETY: as the guest's init, kill(-1) signals every other process;
    // sync and reboot take integers only.
    unsafe {
        libc::kill(-1, libc::SIGKILL);
        libc::sync();
        libc::reboot(libc::LINUX_REBOOT_CMD_POWER_OFF);
    }
    // Not reached unless the reboot was refused: init must not exit.
    loop {
        // SAFETY: pause takes no arguments.
        unsafe { libc::pause() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_parameters_from_the_command_line() {
        let c = "console=ttyS0 virtio_mmio.device=512@0xfeb00e00:12 virtio-mmio.device=1@2:3 foo.bar=1 erofs.x";
        assert_eq!(
            params_for(c, "virtio_mmio"),
            "device=512@0xfeb00e00:12 device=1@2:3"
        );
        assert_eq!(params_for(c, "erofs"), "");
        assert_eq!(params_for(c, "foo"), "bar=1");
    }
}
