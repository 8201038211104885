//! The microVM tier's machinery on the host: QEMU's `microvm` machine with
//! a guest kernel (by default the installed Debian cloud kernel), an
//! initramfs airlock builds around its agent (the guest's `/init`), the
//! image as read-only erofs disks, the agent's channel on virtio-serial,
//! KVM when a probe shows it really runs a guest, software emulation (TCG)
//! otherwise, and boot snapshots that later machines restore from.
//!
//! - [`accel`]: the KVM probe (it runs a guest instruction), cached per boot.
//! - [`kernel`]: the guest kernel and the modules the agent loads.
//! - [`initramfs`]: the cpio archive (newc), written here.
//! - [`image`]: the erofs disks of the `host` image, cached.
//! - [`qmp`]: a small blocking QMP client.
//! - [`mounts`]: a sandbox's `ro` and `overlay` mounts as one erofs disk.
//! - [`machine`]: the QEMU command line, its start inside its jail
//!   (`airlock_jail::vmm`), templates and restores.
//!
//! Everything built is cached under `<state>/vm/` (the state directory of
//! the image store), keyed by what it was built from, written to a
//! temporary name and renamed into place under a lock.

pub mod accel;
pub mod image;
pub mod initramfs;
pub mod kernel;
pub mod machine;
pub mod mounts;
pub mod qmp;

pub use accel::Accel;
pub use image::HostImage;
pub use kernel::Kernel;
pub use machine::{Machine, MachineOptions, Vm};
pub use qmp::Qmp;

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{what} {path:?}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        err: io::Error,
    },
    #[error("no guest kernel for the microVM tier: {why} (install the Debian package linux-image-cloud-amd64 — scripts/setup.sh does — or pass --kernel PATH)")]
    NoKernel { why: String },
    #[error("guest kernel {path:?}: {why}")]
    Kernel { path: PathBuf, why: String },
    #[error("no {what} on this machine: the microVM tier needs it ({hint})")]
    Missing { what: String, hint: &'static str },
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        tool: &'static str,
        status: String,
        stderr: String,
    },
    #[error("the host image in a microVM needs a merged /usr (/{0} is a directory here, not a symlink into /usr)")]
    UnmergedUsr(String),
    #[error("the agent binary: {0}")]
    Agent(String),
    #[error("QEMU: {0}")]
    Qemu(String),
    #[error("QMP: {0}")]
    Qmp(String),
    #[error(transparent)]
    Jail(#[from] airlock_jail::vmm::VmmError),
    #[error("state directory: {0}")]
    State(String),
}

pub type Result<T> = std::result::Result<T, VmError>;

pub(crate) fn io_err(what: &'static str, path: &Path) -> impl Fn(io::Error) -> VmError {
    let path = path.to_path_buf();
    move |err| VmError::Io {
        what,
        path: path.clone(),
        err,
    }
}

/// Where airlock keeps its state (the image store's directory):
/// `$AIRLOCK_STATE_DIR`, else `/var/lib/airlock` for root, else
/// `$XDG_DATA_HOME/airlock` (`~/.local/share/airlock`).
pub fn state_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("AIRLOCK_STATE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(PathBuf::from("/var/lib/airlock"));
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("airlock"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/airlock")),
        None => Err(VmError::State(
            "HOME is not set; set AIRLOCK_STATE_DIR".into(),
        )),
    }
}

/// `<state>/vm/<sub>`, made (mode 0700 for `vm` itself).
pub(crate) fn vm_dir(state: &Path, sub: &str) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let vm = state.join("vm");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&vm)
        .map_err(io_err("create", &vm))?;
    let d = vm.join(sub);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&d)
        .map_err(io_err("create", &d))?;
    Ok(d)
}

/// An exclusive lock on `path` (created), held until dropped.
pub(crate) struct Lock(#[allow(dead_code)] File);

pub(crate) fn lock(path: &Path) -> Result<Lock> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("open lock", path))?;
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(Lock(f));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(VmError::Io {
                what: "lock",
                path: path.to_path_buf(),
                err: e,
            });
        }
    }
}

/// A temporary name beside `path` (same directory, so a rename is atomic).
pub(crate) fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

/// Hex of a SHA-256 over `parts` (each length-prefixed).
pub(crate) fn hash(parts: &[&[u8]]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A file's identity for cache keys: (size, mtime ns, ino, dev).
pub(crate) fn file_id(path: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).map_err(io_err("stat", path))?;
    Ok(format!(
        "{}:{}:{}.{}:{}:{}",
        path.display(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ino(),
        m.dev()
    ))
}

/// The program `name` on the usual `PATH` directories.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    for d in ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"] {
        let p = Path::new(d).join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    None
}
