//! The guest's initramfs: a cpio archive (newc) that airlock writes
//! itself, holding the agent as `/init`, the kernel modules it loads
//! (listed in `/airlock/modules`, dependencies first), `/dev/console`, and
//! — only when the agent binary is dynamically linked (a debug build) —
//! its loader and libraries at the paths it names. A release agent is
//! static and needs nothing else.
//!
//! Cached under `<state>/vm/initramfs/`, keyed by the identity of every
//! file that goes in.

use crate::kernel::Kernel;
use crate::{io_err, Result, VmError};
use std::io::Write;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

/// A cpio (newc) archive being written.
pub struct Cpio<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

impl<W: Write> Cpio<W> {
    pub fn new(out: W) -> Cpio<W> {
        Cpio {
            out,
            ino: 1,
            written: 0,
        }
    }

    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> std::io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> std::io::Result<()> {
        let name = name.trim_start_matches('/');
        let ino = self.ino;
        self.ino += 1;
        let hdr = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.put(hdr.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    pub fn dir(&mut self, name: &str) -> std::io::Result<()> {
        self.entry(name, libc::S_IFDIR | 0o755, (0, 0), &[])
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        self.entry(name, libc::S_IFREG | mode, (0, 0), data)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> std::io::Result<()> {
        self.entry(name, libc::S_IFLNK | 0o777, (0, 0), target.as_bytes())
    }

    pub fn chardev(
        &mut self,
        name: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> std::io::Result<()> {
        self.entry(name, libc::S_IFCHR | mode, (major, minor), &[])
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The loader and libraries a dynamic executable needs (`ldd`), as
/// (path it is looked up at, file to read). Empty for a static one.
fn shared_libraries(exe: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let out = std::process::Command::new("ldd")
        .arg(exe)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .map_err(|e| VmError::Agent(format!("ldd {}: {e}", exe.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next().unwrap_or(""),
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            let p = PathBuf::from(path);
            let real = std::fs::canonicalize(&p).map_err(io_err("resolve", &p))?;
            libs.push((p, real));
        }
    }
    Ok(libs)
}

/// The initramfs for `kernel` around the agent binary open at `agent_fd`
/// (read through `/proc/self/fd`), cached; returns its path.
pub fn build(state: &Path, kernel: &Kernel, agent_fd: RawFd) -> Result<PathBuf> {
    let agent = PathBuf::from(format!("/proc/self/fd/{agent_fd}"));
    let st = airlock_sys::fstat(agent_fd).map_err(io_err("stat", &agent))?;
    // The tools below run in processes of their own, which do not have our
    // fd: they get the file's path (only to learn its libraries and take
    // out its debug information; its bytes are read from our fd).
    let named = std::fs::read_link(&agent).map_err(io_err("read link", &agent))?;
    let libs = shared_libraries(&named)?;
    let mut key: Vec<String> = vec![
        "initramfs v1".into(),
        format!(
            "agent {}:{}:{}:{}.{}",
            st.st_dev, st.st_ino, st.st_size, st.st_mtime, st.st_mtime_nsec
        ),
    ];
    for m in &kernel.modules {
        key.push(crate::file_id(m)?);
    }
    for (_, real) in &libs {
        key.push(crate::file_id(real)?);
    }
    let parts: Vec<&[u8]> = key.iter().map(|s| s.as_bytes()).collect();
    let dir = crate::vm_dir(state, "initramfs")?;
    let path = dir.join(format!("{}.cpio", crate::hash(&parts)));
    if path.is_file() {
        return Ok(path);
    }
    let _lock = crate::lock(&dir.join(".lock"))?;
    if path.is_file() {
        return Ok(path);
    }
    let tmp = crate::temp_beside(&path);
    let f = std::fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
    let werr = io_err("write", &tmp);
    let result = (|| -> std::io::Result<()> {
        let mut c = Cpio::new(std::io::BufWriter::new(f));
        for d in ["dev", "proc", "sys", "tmp", "airlock"] {
            c.dir(d)?;
        }
        c.chardev("dev/console", 0o600, 5, 1)?;
        c.chardev("dev/null", 0o666, 1, 3)?;
        let data = stripped(&named, &dir).map_or_else(|| std::fs::read(&agent), Ok)?;
        c.file("init", 0o755, &data)?;
        let mut list = String::new();
        for m in &kernel.modules {
            let name = m
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            c.file(&format!("airlock/{name}"), 0o644, &std::fs::read(m)?)?;
            list.push_str(&name);
            list.push('\n');
        }
        c.file("airlock/modules", 0o644, list.as_bytes())?;
        let mut made: Vec<PathBuf> = Vec::new();
        for (at, real) in &libs {
            let mut parents: Vec<&Path> = at.ancestors().skip(1).collect();
            parents.reverse();
            for p in parents {
                if p == Path::new("/") || made.iter().any(|m| m == p) {
                    continue;
                }
                if !["/dev", "/proc", "/sys", "/tmp"]
                    .iter()
                    .any(|d| Path::new(d) == p)
                {
                    c.dir(&p.to_string_lossy())?;
                }
                made.push(p.to_path_buf());
            }
            c.file(&at.to_string_lossy(), 0o755, &std::fs::read(real)?)?;
        }
        c.finish()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(e));
    }
    std::fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
    // Archives not used for a day go (the agent or the kernel changed
    // since); a newer one may serve another airlock binary of this
    // machine, and its templates need it.
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let old = e
                .metadata()
                .and_then(|m| m.accessed())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(86400));
            if e.path() != path && n.ends_with(".cpio") && old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(path)
}

/// The agent without its debug information (a debug build's is most of
/// its size), if `objcopy` is there to take it out.
fn stripped(agent: &Path, dir: &Path) -> Option<Vec<u8>> {
    // In airlock's own cache directory (below a 0700 one), not /tmp.
    let out = dir.join(format!(".agent-stripped.{}", std::process::id()));
    let ok = std::process::Command::new("objcopy")
        .arg("--strip-debug")
        .arg(agent)
        .arg(&out)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let data = if ok { std::fs::read(&out).ok() } else { None };
    let _ = std::fs::remove_file(&out);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut c = Cpio::new(Vec::new());
        c.dir("dev").unwrap();
        c.file("init", 0o755, b"abcde").unwrap();
        let out = c.finish().unwrap();
        assert_eq!(&out[..6], b"070701");
        assert_eq!(out.len() % 4, 0);
        let s = String::from_utf8_lossy(&out);
        assert!(s.contains("init\0"));
        assert!(s.contains("abcde"));
        assert!(s.contains("TRAILER!!!"));
        // The file's header: mode 0100755, size 5.
        let i = s.find("init\0").unwrap();
        let hdr = &s[i - 110..i];
        assert_eq!(&hdr[14..22], "000081ed");
        assert_eq!(&hdr[54..62], "00000005");
    }
}
