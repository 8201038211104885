//! Safe application of one layer (a tar stream, plain, gzip or zstd) onto a
//! flattened tree, with OCI whiteouts and opaque directories processed.
//!
//! Rules (each refusal names the entry and the rule): no absolute path, no
//! `..`, nothing created through a symlink (every parent is opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`), hard links only to
//! regular files inside the tree, no device nodes, setuid/setgid bits and
//! file capabilities stripped unless allowed, other xattrs dropped, caps on
//! bytes, entries and path length, and a truncated stream refused.
//!
//! A file that already exists (possibly a hard link shared with the parent
//! tree) is never written in place: it is unlinked and a new inode created.

use crate::digest::{Digest, HashReader, OverLimit};
use crate::error::{ImageError, Result};
use crate::fsx;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// Caps applied to one import or build (all its layers together).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Uncompressed bytes over all layers.
    pub max_bytes: u64,
    /// Entries over all layers.
    pub max_entries: u64,
    /// Bytes in one entry's path.
    pub max_path: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 32 << 30,
            max_entries: 2_000_000,
            max_path: 4096,
        }
    }
}

/// How entries become files.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// Keep setuid/setgid bits and `security.capability`.
    pub allow_setuid: bool,
}

/// What is left of the [`Limits`] while an import runs.
#[derive(Debug, Clone)]
pub struct Budget {
    pub limits: Limits,
    pub bytes_left: u64,
    pub entries_left: u64,
}

impl Budget {
    pub fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            bytes_left: limits.max_bytes,
            entries_left: limits.max_entries,
        }
    }
}

/// The uncompressed stream of a layer blob, by its magic bytes.
pub(crate) fn decompress<'a, R: Read + 'a>(r: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(1 << 16, r);
    let head = br.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(br)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(ZstdFrames {
            dec: None,
            src: Some(br),
        }))
    } else {
        Ok(Box::new(br))
    }
}

type ZDec<R> = ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>;

/// A zstd stream of one or more frames (skippable frames skipped).
struct ZstdFrames<R: BufRead> {
    dec: Option<ZDec<R>>,
    src: Option<R>,
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(dec) = self.dec.as_mut() {
                let n = dec.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                if let Some(dec) = self.dec.take() {
                    self.src = Some(dec.into_inner());
                }
            }
            let Some(mut src) = self.src.take() else {
                return Ok(0);
            };
            if src.fill_buf()?.is_empty() {
                return Ok(0);
            }
            let head = src.fill_buf()?;
            if head.len() >= 4
                && head[3] == 0x18
                && head[0] & 0xf0 == 0x50
                && head[1..3] == [0x2a, 0x4d]
            {
                // Skippable frame: magic, u32 LE length, payload.
                let mut hdr = [0u8; 8];
                src.read_exact(&mut hdr)?;
                let len = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as u64;
                let skipped = io::copy(&mut (&mut src).take(len), &mut io::sink())?;
                if skipped != len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "truncated zstd skippable frame",
                    ));
                }
                self.src = Some(src);
                continue;
            }
            match ZDec::new(src) {
                Ok(d) => self.dec = Some(d),
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("zstd: {e}"),
                    ))
                }
            }
        }
    }
}

/// One path, split into checked components.
fn clean(raw: &[u8], max_path: usize) -> std::result::Result<Vec<&[u8]>, String> {
    if raw.len() > max_path {
        return Err(format!("path longer than {max_path} bytes"));
    }
    if raw.first() == Some(&b'/') {
        return Err("absolute path (entries must be relative to the image root)".into());
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path leaves the image root (..)".into()),
            c if c.len() > 255 => return Err("a path component is longer than 255 bytes".into()),
            c => out.push(c),
        }
    }
    if out.len() > fsx::MAX_DEPTH {
        return Err(format!("path deeper than {} components", fsx::MAX_DEPTH));
    }
    Ok(out)
}

fn joined(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&b'/')
}

struct DirMeta {
    rel: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

struct Applier<'a> {
    root: OwnedFd,
    layer: String,
    opts: ApplyOptions,
    as_root: bool,
    max_path: usize,
    max_entries: u64,
    entries_left: &'a mut u64,
    bytes_left: u64,
    created: HashSet<Vec<u8>>,
    dirs: Vec<DirMeta>,
    cache: Option<(Vec<u8>, OwnedFd)>,
}

/// Applies the layer stream `blob` (compressed or not) onto `tree`. Returns
/// the diff id (sha256 of the uncompressed stream) and its size.
pub fn apply_layer(
    tree: &Path,
    blob: impl Read,
    layer: &str,
    opts: ApplyOptions,
    budget: &mut Budget,
) -> Result<(Digest, u64)> {
    let lerr = |why: String| ImageError::Layer {
        layer: layer.to_string(),
        why,
    };
    let stream = decompress(blob).map_err(|e| lerr(format!("cannot read: {e}")))?;
    let mut hr = HashReader::new(stream, budget.bytes_left);
    let root = fsx::open_dir(tree)?;
    let max_bytes = budget.limits.max_bytes;
    let mut ap = Applier {
        root,
        layer: layer.to_string(),
        opts,
        as_root: fsx::is_root(),
        max_path: budget.limits.max_path,
        max_entries: budget.limits.max_entries,
        entries_left: &mut budget.entries_left,
        bytes_left: budget.bytes_left,
        created: HashSet::new(),
        dirs: Vec::new(),
        cache: None,
    };
    let over = |e: &io::Error| {
        e.get_ref()
            .and_then(|i| i.downcast_ref::<OverLimit>())
            .is_some()
    };
    let limit_err = |_left: u64| ImageError::Limit {
        what: format!("the uncompressed size of the image (at layer {layer})"),
        limit: max_bytes,
        hint: "a decompression bomb, or raise --max-size",
    };
    {
        let mut ar = tar::Archive::new(&mut hr);
        ar.set_ignore_zeros(false);
        let entries = ar
            .entries()
            .map_err(|e| lerr(format!("not a tar stream: {e}")))?;
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) if over(&e) => return Err(limit_err(ap.bytes_left)),
                Err(e) => return Err(lerr(format!("corrupt or truncated tar stream: {e}"))),
            };
            match ap.entry(entry) {
                Ok(()) => {}
                Err(ImageError::Io { source, .. }) if over(&source) => {
                    return Err(limit_err(ap.bytes_left))
                }
                Err(e) => return Err(e),
            }
        }
    }
    // The diff id covers the whole stream, padding after the end marker too.
    match io::copy(&mut hr, &mut io::sink()) {
        Ok(_) => {}
        Err(e) if over(&e) => return Err(limit_err(ap.bytes_left)),
        Err(e) => return Err(lerr(format!("corrupt or truncated stream: {e}"))),
    }
    ap.finish_dirs()?;
    let (diff_id, size) = hr.finish();
    budget.bytes_left = budget.bytes_left.saturating_sub(size);
    Ok((diff_id, size))
}

impl Applier<'_> {
    fn refuse(&self, entry: &[u8], rule: impl Into<String>) -> ImageError {
        ImageError::Extract {
            layer: self.layer.clone(),
            entry: String::from_utf8_lossy(entry).into_owned(),
            rule: rule.into(),
        }
    }

    fn ioerr(&self, entry: &[u8], op: &'static str, e: io::Error) -> ImageError {
        ImageError::Io {
            op,
            path: fsx::join(Path::new("/"), entry),
            source: e,
        }
    }

    /// Opens the parent directory `parts` beneath the root, creating missing
    /// directories (mode 0755) and refusing symlinks and non-directories.
    fn parent(&mut self, raw: &[u8], parts: &[&[u8]]) -> Result<BorrowedFd<'_>> {
        let rel = joined(parts);
        let hit = matches!(&self.cache, Some((p, _)) if *p == rel);
        if !hit {
            let fd = match fsx::open_dir_beneath(self.root.as_fd(), &rel) {
                Ok(fd) => fd,
                Err(_) => self.walk_create(raw, parts)?,
            };
            self.cache = Some((rel, fd));
        }
        match &self.cache {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => Err(self.refuse(raw, "internal: parent cache empty")),
        }
    }

    fn walk_create(&mut self, raw: &[u8], parts: &[&[u8]]) -> Result<OwnedFd> {
        let mut cur = fsx::open_dir_beneath(self.root.as_fd(), b"")
            .map_err(|e| self.ioerr(raw, "open root", e))?;
        for (i, c) in parts.iter().enumerate() {
            match fsx::exists_at(cur.as_fd(), c).map_err(|e| self.ioerr(raw, "stat", e))? {
                None => {
                    rfs::mkdirat(cur.as_fd(), *c, Mode::from_raw_mode(0o755))
                        .map_err(|e| self.ioerr(raw, "mkdir", e.into()))?;
                    self.created.insert(joined(&parts[..=i]));
                }
                Some(st) => match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => {}
                    FileType::Symlink => {
                        return Err(self.refuse(
                            raw,
                            format!(
                                "its parent path goes through the symlink {:?} (nothing is written through a symlink)",
                                String::from_utf8_lossy(&joined(&parts[..=i]))
                            ),
                        ))
                    }
                    _ => {
                        return Err(self.refuse(
                            raw,
                            format!(
                                "its parent {:?} is not a directory",
                                String::from_utf8_lossy(&joined(&parts[..=i]))
                            ),
                        ))
                    }
                },
            }
            cur = fsx::open_subdir(cur.as_fd(), c).map_err(|e| self.ioerr(raw, "open", e))?;
        }
        Ok(cur)
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        if *self.entries_left == 0 {
            return Err(ImageError::Limit {
                what: "the number of entries in the image".into(),
                limit: self.max_entries,
                hint: "raise --max-entries if the image is genuine",
            });
        }
        *self.entries_left -= 1;
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            return Ok(());
        }
        let parts = clean(&raw, self.max_path).map_err(|r| self.refuse(&raw, r))?;
        let hdr = entry.header();
        let bad = |what: &str| format!("unreadable {what} in the tar header");
        let mode = hdr.mode().map_err(|_| self.refuse(&raw, bad("mode")))? & 0o7777;
        let uid = hdr.uid().map_err(|_| self.refuse(&raw, bad("uid")))?;
        let gid = hdr.gid().map_err(|_| self.refuse(&raw, bad("gid")))?;
        let mtime = hdr.mtime().map_err(|_| self.refuse(&raw, bad("mtime")))? as i64;
        if self.as_root && (uid >= 65536 || gid >= 65536) {
            return Err(self.refuse(
                &raw,
                format!("owner {uid}:{gid} is outside 0-65535, the ids a sandbox maps"),
            ));
        }
        let (uid, gid) = (uid as u32, gid as u32);
        let mode = if self.opts.allow_setuid {
            mode
        } else {
            mode & !0o6000
        };
        let size = entry.size();

        // The root directory entry ("./") only carries metadata.
        let Some((name, dirparts)) = parts.split_last() else {
            if kind == tar::EntryType::Directory {
                self.dirs.push(DirMeta {
                    rel: Vec::new(),
                    mode,
                    uid,
                    gid,
                    mtime,
                });
                return Ok(());
            }
            return Err(self.refuse(&raw, "names the image root but is not a directory"));
        };
        let name: &[u8] = name;
        let rel = joined(&parts);

        // Whiteouts.
        if let Some(target) = name.strip_prefix(b".wh.") {
            if target == b".wh..opq" {
                let drel = joined(dirparts);
                let parent = self
                    .parent(&raw, dirparts)?
                    .try_clone_to_owned()
                    .map_err(|e| self.ioerr(&raw, "dup", e))?;
                for child in fsx::list(parent.as_fd()).map_err(|e| self.ioerr(&raw, "list", e))? {
                    let mut c = drel.clone();
                    if !c.is_empty() {
                        c.push(b'/');
                    }
                    c.extend_from_slice(&child);
                    if !self.created.contains(&c) {
                        fsx::remove_at(parent.as_fd(), &child)
                            .map_err(|e| self.ioerr(&raw, "remove", e))?;
                    }
                }
                self.cache = None;
                return Ok(());
            }
            if target.starts_with(b".wh.") {
                // AUFS-internal markers (.wh..wh.plnk and the like).
                return Ok(());
            }
            if target.is_empty() || target == b"." || target == b".." {
                return Err(self.refuse(&raw, "whiteout of an invalid name"));
            }
            let mut t = joined(dirparts);
            if !t.is_empty() {
                t.push(b'/');
            }
            t.extend_from_slice(target);
            if self.created.contains(&t) {
                return Ok(());
            }
            let parent = match fsx::open_dir_beneath(self.root.as_fd(), &joined(dirparts)) {
                Ok(fd) => fd,
                // Nothing below to hide.
                Err(_) => return Ok(()),
            };
            fsx::remove_at(parent.as_fd(), target).map_err(|e| self.ioerr(&raw, "remove", e))?;
            self.cache = None;
            return Ok(());
        }

        // Device nodes and unsupported kinds, before anything is touched.
        match kind {
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(self.refuse(&raw, "device node (images may not contain devices)"))
            }
            tar::EntryType::GNUSparse => {
                return Err(self.refuse(&raw, "sparse file (not supported)"))
            }
            tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::Directory
            | tar::EntryType::Symlink
            | tar::EntryType::Link
            | tar::EntryType::Fifo => {}
            other => {
                return Err(self.refuse(
                    &raw,
                    format!("unsupported tar entry type {:?}", other.as_byte() as char),
                ))
            }
        }
        if matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous)
            && size > self.bytes_left
        {
            return Err(ImageError::Limit {
                what: format!(
                    "entry {:?} of layer {} ({size} bytes)",
                    String::from_utf8_lossy(&raw),
                    self.layer
                ),
                limit: self.bytes_left,
                hint: "the image's remaining size budget; raise --max-size if the image is genuine",
            });
        }

        let link_target = match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => Some(
                entry
                    .link_name_bytes()
                    .ok_or_else(|| self.refuse(&raw, "link without a target"))?
                    .into_owned(),
            ),
            _ => None,
        };
        // Hard link source: a regular file inside the tree, reached without symlinks.
        let link_src = if kind == tar::EntryType::Link {
            let t = link_target.clone().unwrap_or_default();
            let tparts = clean(&t, self.max_path)
                .map_err(|r| self.refuse(&raw, format!("hard link target: {r}")))?;
            let Some((tname, tdir)) = tparts.split_last() else {
                return Err(self.refuse(&raw, "hard link to the image root"));
            };
            let tdirfd = fsx::open_dir_beneath(self.root.as_fd(), &joined(tdir)).map_err(|_| {
                self.refuse(
                    &raw,
                    format!(
                        "hard link target {:?} is not inside the image (or goes through a symlink)",
                        String::from_utf8_lossy(&t)
                    ),
                )
            })?;
            match fsx::exists_at(tdirfd.as_fd(), tname).map_err(|e| self.ioerr(&raw, "stat", e))? {
                Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {}
                Some(_) => {
                    return Err(self.refuse(
                        &raw,
                        format!(
                            "hard link to {:?}, which is not a regular file",
                            String::from_utf8_lossy(&t)
                        ),
                    ))
                }
                None => {
                    return Err(self.refuse(
                        &raw,
                        format!(
                            "hard link to {:?}, which was not extracted before it",
                            String::from_utf8_lossy(&t)
                        ),
                    ))
                }
            }
            if tparts == parts {
                return Ok(());
            }
            Some((tdirfd, tname.to_vec()))
        } else {
            None
        };

        let as_root = self.as_root;
        let opts = self.opts;
        let parent = self
            .parent(&raw, dirparts)?
            .try_clone_to_owned()
            .map_err(|e| self.ioerr(&raw, "dup", e))?;
        let pfd = parent.as_fd();
        let existing = fsx::exists_at(pfd, name).map_err(|e| self.ioerr(&raw, "stat", e))?;
        let is_dir = existing
            .as_ref()
            .is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
        if kind == tar::EntryType::Directory && is_dir {
            self.created.insert(rel.clone());
            self.dirs.push(DirMeta {
                rel,
                mode,
                uid,
                gid,
                mtime,
            });
            return Ok(());
        }
        if existing.is_some() {
            fsx::remove_at(pfd, name).map_err(|e| self.ioerr(&raw, "replace", e))?;
            if is_dir {
                self.cache = None;
            }
        }
        self.created.insert(rel.clone());
        let ts = rfs::Timestamps {
            last_access: rfs::Timespec {
                tv_sec: mtime as _,
                tv_nsec: 0,
            },
            last_modification: rfs::Timespec {
                tv_sec: mtime as _,
                tv_nsec: 0,
            },
        };
        let owner = |fd: BorrowedFd<'_>| -> io::Result<()> {
            if as_root {
                rfs::fchown(
                    fd,
                    Some(rfs::Uid::from_raw(uid)),
                    Some(rfs::Gid::from_raw(gid)),
                )?;
            }
            Ok(())
        };
        match kind {
            tar::EntryType::Directory => {
                rfs::mkdirat(pfd, name, Mode::from_raw_mode(0o700))
                    .map_err(|e| self.ioerr(&raw, "mkdir", e.into()))?;
                self.dirs.push(DirMeta {
                    rel,
                    mode,
                    uid,
                    gid,
                    mtime,
                });
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let fd = rfs::openat(
                    pfd,
                    name,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| self.ioerr(&raw, "create", e.into()))?;
                let mut f = File::from(fd);
                let n = self.copy_data(&raw, &mut entry, &mut f)?;
                if n != size {
                    return Err(self.refuse(
                        &raw,
                        format!("truncated: the header says {size} bytes, the layer holds {n}"),
                    ));
                }
                self.bytes_left = self.bytes_left.saturating_sub(n);
                let caps = if opts.allow_setuid && as_root {
                    file_caps(&mut entry)
                } else {
                    None
                };
                let fd = f.as_fd();
                owner(fd).map_err(|e| self.ioerr(&raw, "chown", e))?;
                rfs::fchmod(fd, Mode::from_raw_mode(mode))
                    .map_err(|e| self.ioerr(&raw, "chmod", e.into()))?;
                if let Some(c) = caps {
                    rfs::fsetxattr(fd, "security.capability", &c, rfs::XattrFlags::empty())
                        .map_err(|e| self.ioerr(&raw, "set capabilities", e.into()))?;
                }
                rfs::futimens(fd, &ts).map_err(|e| self.ioerr(&raw, "set times", e.into()))?;
            }
            tar::EntryType::Symlink => {
                let t = link_target.unwrap_or_default();
                rfs::symlinkat(t.as_slice(), pfd, name)
                    .map_err(|e| self.ioerr(&raw, "symlink", e.into()))?;
                if as_root {
                    rfs::chownat(
                        pfd,
                        name,
                        Some(rfs::Uid::from_raw(uid)),
                        Some(rfs::Gid::from_raw(gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| self.ioerr(&raw, "chown", e.into()))?;
                }
                rfs::utimensat(pfd, name, &ts, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.ioerr(&raw, "set times", e.into()))?;
            }
            tar::EntryType::Link => {
                if let Some((tdir, tname)) = link_src {
                    rfs::linkat(tdir.as_fd(), tname.as_slice(), pfd, name, AtFlags::empty())
                        .map_err(|e| self.ioerr(&raw, "link", e.into()))?;
                }
            }
            tar::EntryType::Fifo => {
                rfs::mknodat(pfd, name, FileType::Fifo, Mode::from_raw_mode(mode), 0)
                    .map_err(|e| self.ioerr(&raw, "mkfifo", e.into()))?;
                if as_root {
                    rfs::chownat(
                        pfd,
                        name,
                        Some(rfs::Uid::from_raw(uid)),
                        Some(rfs::Gid::from_raw(gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| self.ioerr(&raw, "chown", e.into()))?;
                    // chown may clear bits; set the mode again.
                    rfs::chmodat(pfd, name, Mode::from_raw_mode(mode), AtFlags::empty())
                        .map_err(|e| self.ioerr(&raw, "chmod", e.into()))?;
                }
                rfs::utimensat(pfd, name, &ts, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.ioerr(&raw, "set times", e.into()))?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Copies an entry's data, telling a bad layer (read side) from a
    /// failing store (write side).
    fn copy_data(&self, raw: &[u8], r: &mut impl Read, w: &mut File) -> Result<u64> {
        use std::io::Write as _;
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0u64;
        loop {
            let k = match r.read(&mut buf) {
                Ok(0) => return Ok(n),
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if e.get_ref()
                        .and_then(|i| i.downcast_ref::<OverLimit>())
                        .is_some()
                    {
                        return Err(ImageError::Io {
                            op: "read",
                            path: fsx::join(Path::new("/"), raw),
                            source: e,
                        });
                    }
                    return Err(ImageError::Layer {
                        layer: self.layer.clone(),
                        why: format!(
                            "corrupt or truncated stream in entry {:?}: {e}",
                            String::from_utf8_lossy(raw)
                        ),
                    });
                }
            };
            w.write_all(&buf[..k])
                .map_err(|e| self.ioerr(raw, "write", e))?;
            n += k as u64;
        }
    }

    /// Directory owners, modes and times, deepest first, once their
    /// contents are in place.
    fn finish_dirs(&mut self) -> Result<()> {
        self.cache = None;
        let dirs = std::mem::take(&mut self.dirs);
        for d in dirs.iter().rev() {
            let fd = match fsx::open_dir_beneath(self.root.as_fd(), &d.rel) {
                Ok(fd) => fd,
                // Removed again later in the same layer.
                Err(_) => continue,
            };
            let e = |op, err: rustix::io::Errno| self.ioerr(&d.rel, op, err.into());
            if self.as_root {
                rfs::fchown(
                    &fd,
                    Some(rfs::Uid::from_raw(d.uid)),
                    Some(rfs::Gid::from_raw(d.gid)),
                )
                .map_err(|x| e("chown", x))?;
            }
            rfs::fchmod(&fd, Mode::from_raw_mode(d.mode)).map_err(|x| e("chmod", x))?;
            let ts = rfs::Timestamps {
                last_access: rfs::Timespec {
                    tv_sec: d.mtime as _,
                    tv_nsec: 0,
                },
                last_modification: rfs::Timespec {
                    tv_sec: d.mtime as _,
                    tv_nsec: 0,
                },
            };
            rfs::futimens(&fd, &ts).map_err(|x| e("set times", x))?;
        }
        Ok(())
    }
}

/// The `security.capability` xattr of a tar entry, if it has one.
fn file_caps<R: Read>(entry: &mut tar::Entry<'_, R>) -> Option<Vec<u8>> {
    let exts = entry.pax_extensions().ok()??;
    for ext in exts.flatten() {
        if ext.key_bytes() == b"SCHILY.xattr.security.capability" {
            return Some(ext.value_bytes().to_vec());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        let m = 4096;
        assert_eq!(clean(b"./a/b/", m).unwrap(), vec![&b"a"[..], b"b"]);
        assert_eq!(clean(b".", m).unwrap(), Vec::<&[u8]>::new());
        assert!(clean(b"/etc/passwd", m).unwrap_err().contains("absolute"));
        assert!(clean(b"a/../../x", m).unwrap_err().contains(".."));
        assert!(clean(&[b'a'; 300], m).unwrap_err().contains("255"));
        assert!(clean(&vec![b'a'; 5000], m).unwrap_err().contains("longer"));
    }
}
