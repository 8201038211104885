//! The guest kernel and the modules the guest's `/init` loads.
//!
//! By default the newest installed Debian cloud kernel
//! (`/boot/vmlinuz-*-cloud-amd64`, package `linux-image-cloud-amd64`), with
//! its modules from `/lib/modules/<version>/`. The guest needs virtio-mmio
//! (QEMU's `microvm` machine), virtio-blk (the image's disks),
//! virtio-console (the agent's channel), erofs and overlay: each is either
//! built in (nothing to load) or a module, loaded with its dependencies
//! (`modules.dep`) in order. Modules must be uncompressed `.ko` files (the
//! agent loads them with `finit_module` and no decompressor).

use crate::{io_err, Result, VmError};
use std::path::{Path, PathBuf};

/// What the guest must have, by module name.
pub const NEEDED: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    "erofs",
    "overlay",
];

/// A guest kernel and the module files the initramfs carries.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub image: PathBuf,
    /// `uname -r` of it ("" if its modules directory was not found).
    pub version: String,
    /// Module files to load, in dependency order.
    pub modules: Vec<PathBuf>,
}

impl Kernel {
    /// `path`, or the newest Debian cloud kernel.
    pub fn find(path: Option<&Path>) -> Result<Kernel> {
        let image = match path {
            Some(p) => p.to_path_buf(),
            None => newest_cloud()?,
        };
        if !image.is_file() {
            return Err(match path {
                Some(p) => VmError::Kernel {
                    path: p.to_path_buf(),
                    why: "no such file (or not a regular file)".into(),
                },
                None => VmError::NoKernel {
                    why: format!("{} is not a file", image.display()),
                },
            });
        }
        check_boot_image(&image)?;
        let name = image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let version = name.strip_prefix("vmlinuz-").unwrap_or("").to_string();
        let moddir = Path::new("/lib/modules").join(&version);
        let modules = if !version.is_empty() && moddir.join("modules.dep").is_file() {
            modules_for(&moddir, NEEDED)?
        } else {
            Vec::new()
        };
        Ok(Kernel {
            image,
            version,
            modules,
        })
    }
}

/// An x86 Linux boot image carries the magic `HdrS` at 0x202 (the boot
/// protocol's header): anything else is said plainly, before QEMU fails
/// with a cryptic line.
fn check_boot_image(p: &Path) -> Result<()> {
    use std::io::Read;
    let mut head = [0u8; 0x206];
    let ok = std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok();
    if ok && &head[0x202..0x206] == b"HdrS" {
        return Ok(());
    }
    Err(VmError::Kernel {
        path: p.to_path_buf(),
        why: "not an x86 Linux kernel image (no boot-protocol header \"HdrS\" at 0x202; give a vmlinuz / bzImage)".into(),
    })
}

fn newest_cloud() -> Result<PathBuf> {
    let rd = std::fs::read_dir("/boot").map_err(|e| VmError::NoKernel {
        why: format!("/boot: {e}"),
    })?;
    let mut found: Vec<(Vec<u64>, PathBuf)> = Vec::new();
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if let Some(v) = n
            .strip_prefix("vmlinuz-")
            .filter(|v| v.ends_with("-cloud-amd64"))
        {
            let key = v
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|p| p.parse().ok())
                .collect();
            found.push((key, e.path()));
        }
    }
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .ok_or_else(|| VmError::NoKernel {
            why: "no /boot/vmlinuz-*-cloud-amd64".into(),
        })
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.trim_end_matches(".ko").replace('-', "_")
}

/// The module files for `wanted` and their dependencies, dependencies
/// first. A wanted module that is built in (`modules.builtin`) needs
/// nothing.
pub fn modules_for(moddir: &Path, wanted: &[&str]) -> Result<Vec<PathBuf>> {
    let dep_path = moddir.join("modules.dep");
    let dep = std::fs::read_to_string(&dep_path).map_err(io_err("read", &dep_path))?;
    let builtin = std::fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    let builtin: Vec<String> = builtin.lines().map(module_name).collect();
    // name -> (path, deps)
    let mut table: std::collections::BTreeMap<String, (String, Vec<String>)> =
        std::collections::BTreeMap::new();
    for line in dep.lines() {
        let Some((m, deps)) = line.split_once(':') else {
            continue;
        };
        table.insert(
            module_name(m),
            (
                m.to_string(),
                deps.split_whitespace().map(str::to_string).collect(),
            ),
        );
    }
    let mut out: Vec<String> = Vec::new();
    fn visit(
        name: &str,
        table: &std::collections::BTreeMap<String, (String, Vec<String>)>,
        out: &mut Vec<String>,
        depth: usize,
    ) -> std::result::Result<(), String> {
        if depth > 32 {
            return Err(format!("module dependency loop at {name}"));
        }
        let Some((path, deps)) = table.get(name) else {
            return Err(format!("no module {name}"));
        };
        for d in deps {
            visit(&module_name(d), table, out, depth + 1)?;
        }
        if !out.contains(path) {
            out.push(path.clone());
        }
        Ok(())
    }
    for w in wanted {
        if builtin.iter().any(|b| b == w) {
            continue;
        }
        visit(w, &table, &mut out, 0).map_err(|why| VmError::Kernel {
            path: moddir.to_path_buf(),
            why,
        })?;
    }
    let mut files = Vec::new();
    for rel in out {
        if !rel.ends_with(".ko") {
            return Err(VmError::Kernel {
                path: moddir.join(&rel),
                why: "compressed modules are not supported (the guest loads plain .ko files)"
                    .into(),
            });
        }
        files.push(moddir.join(rel));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_first() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("modules.dep"),
            "kernel/a/virtio_blk.ko: kernel/v/virtio.ko kernel/v/virtio_ring.ko\nkernel/v/virtio.ko: kernel/v/virtio_ring.ko\nkernel/v/virtio_ring.ko:\nkernel/fs/erofs.ko: kernel/lib/libcrc32c.ko\nkernel/lib/libcrc32c.ko:\n",
        )
        .unwrap();
        std::fs::write(d.path().join("modules.builtin"), "kernel/fs/overlay.ko\n").unwrap();
        let m = modules_for(d.path(), &["virtio_blk", "erofs", "overlay"]).unwrap();
        let rel: Vec<_> = m
            .iter()
            .map(|p| {
                p.strip_prefix(d.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            rel,
            [
                "kernel/v/virtio_ring.ko",
                "kernel/v/virtio.ko",
                "kernel/a/virtio_blk.ko",
                "kernel/lib/libcrc32c.ko",
                "kernel/fs/erofs.ko"
            ]
        );
        assert!(modules_for(d.path(), &["nonesuch"]).is_err());
    }
}
