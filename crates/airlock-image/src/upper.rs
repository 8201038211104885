//! From an overlayfs upper directory to a layer: the changes a RUN step made
//! become a tar layer (whiteouts as `.wh.NAME`, opaque directories as
//! `.wh..wh..opq`), stored as a blob, and a new flattened tree built from
//! the parent's by applying that layer with the same safe extraction as
//! imports.
//!
//! Upper directory format (overlayfs): new and changed files as they are;
//! a deleted entry is a character device 0/0 (or, with xwhiteouts, an empty
//! file with an `overlay.whiteout` xattr); a directory whose lower contents
//! are hidden has `trusted.overlay.opaque` (root) or `user.overlay.opaque`
//! (`userxattr` mounts) set to `y`. Redirects and metacopy are refused: the
//! runner mounts with `redirect_dir=off,metacopy=off`.

use crate::digest::{Digest, HashWriter};
use crate::error::{ImageError, Result};
use crate::fsx;
use crate::import::tree_key;
use crate::layer::{self, ApplyOptions, Budget, Limits};
use crate::oci;
use crate::store::{LayerRecord, Txn};
use rustix::fs::{self as rfs, FileType};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A layer added on top of a chain, with its tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepLayer {
    pub layer: LayerRecord,
    pub chain_id: Digest,
    /// The tree's directory name under `<store>/rootfs/` (staged until commit).
    pub rootfs: String,
    /// Where the tree is now (staging or store).
    pub tree: PathBuf,
}

fn xattr(fd: BorrowedFd<'_>, name: &str) -> Option<Vec<u8>> {
    let mut buf = [0u8; 256];
    match rfs::fgetxattr(fd, name, &mut buf) {
        Ok(n) => Some(buf[..n.min(buf.len())].to_vec()),
        Err(_) => None,
    }
}

fn has_overlay_xattr(fd: BorrowedFd<'_>, what: &str) -> Option<Vec<u8>> {
    xattr(fd, &format!("trusted.overlay.{what}"))
        .or_else(|| xattr(fd, &format!("user.overlay.{what}")))
}

/// Writes the changes in the overlayfs upper directory `upper` as a tar
/// layer to `out`.
pub fn upper_to_tar(upper: &Path, out: impl Write) -> Result<()> {
    let root = fsx::open_dir(upper)?;
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let mut links = HashMap::new();
    walk(root.as_fd(), Vec::new(), &mut b, &mut links, 0)?;
    b.into_inner()
        .map_err(|e| ImageError::io("write layer", upper, e))?
        .flush()
        .map_err(|e| ImageError::io("write layer", upper, e))
}

fn uerr(rel: &[u8], why: impl Into<String>) -> ImageError {
    ImageError::Upper {
        entry: String::from_utf8_lossy(rel).into_owned(),
        why: why.into(),
    }
}

fn header(st: &rfs::Stat, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid as u64);
    h.set_gid(st.st_gid as u64);
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(size);
    h
}

fn whiteout_header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    h.set_mtime(0);
    h
}

fn child(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = rel.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn walk<W: Write>(
    dir: BorrowedFd<'_>,
    rel: Vec<u8>,
    b: &mut tar::Builder<W>,
    links: &mut HashMap<(u64, u64), Vec<u8>>,
    depth: usize,
) -> Result<()> {
    if depth > fsx::MAX_DEPTH {
        return Err(uerr(&rel, "deeper than the depth limit"));
    }
    let io =
        |rel: &[u8], e: io::Error| ImageError::io("read upper", fsx::join(Path::new("/"), rel), e);
    for name in fsx::list(dir).map_err(|e| io(&rel, e))? {
        let path = child(&rel, &name);
        let p = String::from_utf8_lossy(&path).into_owned();
        let st = fsx::lstat_at(dir, &name).map_err(|e| io(&path, e))?;
        let w = |e: io::Error| ImageError::io("write layer", fsx::join(Path::new("/"), &path), e);
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let sub = fsx::open_subdir(dir, &name).map_err(|e| io(&path, e))?;
                if has_overlay_xattr(sub.as_fd(), "redirect").is_some() {
                    return Err(uerr(
                        &path,
                        "overlay redirect (mount the upper with redirect_dir=off)",
                    ));
                }
                let mut h = header(&st, tar::EntryType::Directory, 0);
                b.append_data(&mut h, format!("{p}/"), io::empty())
                    .map_err(w)?;
                if has_overlay_xattr(sub.as_fd(), "opaque").as_deref() == Some(b"y") {
                    let mut h = whiteout_header();
                    b.append_data(&mut h, format!("{p}/.wh..wh..opq"), io::empty())
                        .map_err(w)?;
                }
                walk(sub.as_fd(), path.clone(), b, links, depth + 1)?;
            }
            FileType::CharacterDevice => {
                if st.st_rdev != 0 {
                    return Err(uerr(
                        &path,
                        "device node (only 0/0 whiteouts may be in an upper directory)",
                    ));
                }
                let mut h = whiteout_header();
                b.append_data(
                    &mut h,
                    String::from_utf8_lossy(&child(&rel, &[b".wh.", name.as_slice()].concat()))
                        .into_owned(),
                    io::empty(),
                )
                .map_err(w)?;
            }
            FileType::BlockDevice => return Err(uerr(&path, "device node")),
            FileType::RegularFile => {
                let f = rfs::openat(
                    dir,
                    name.as_slice(),
                    rfs::OFlags::RDONLY | rfs::OFlags::NOFOLLOW | rfs::OFlags::CLOEXEC,
                    rfs::Mode::empty(),
                )
                .map_err(|e| io(&path, e.into()))?;
                if has_overlay_xattr(f.as_fd(), "metacopy").is_some() {
                    return Err(uerr(
                        &path,
                        "overlay metacopy (mount the upper with metacopy=off)",
                    ));
                }
                if st.st_size == 0 && has_overlay_xattr(f.as_fd(), "whiteout").is_some() {
                    let mut h = whiteout_header();
                    b.append_data(
                        &mut h,
                        String::from_utf8_lossy(&child(&rel, &[b".wh.", name.as_slice()].concat()))
                            .into_owned(),
                        io::empty(),
                    )
                    .map_err(w)?;
                    continue;
                }
                if st.st_nlink > 1 {
                    let key = (st.st_dev, st.st_ino);
                    if let Some(first) = links.get(&key) {
                        let mut h = header(&st, tar::EntryType::Link, 0);
                        b.append_link(&mut h, &p, String::from_utf8_lossy(first).as_ref())
                            .map_err(w)?;
                        continue;
                    }
                    links.insert(key, path.clone());
                }
                let mut h = header(&st, tar::EntryType::Regular, st.st_size as u64);
                b.append_data(&mut h, &p, File::from(f)).map_err(w)?;
            }
            FileType::Symlink => {
                let t = rfs::readlinkat(dir, name.as_slice(), Vec::new())
                    .map_err(|e| io(&path, e.into()))?;
                let mut h = header(&st, tar::EntryType::Symlink, 0);
                b.append_link(&mut h, &p, String::from_utf8_lossy(t.to_bytes()).as_ref())
                    .map_err(w)?;
            }
            FileType::Fifo => {
                let mut h = header(&st, tar::EntryType::Fifo, 0);
                b.append_data(&mut h, &p, io::empty()).map_err(w)?;
            }
            // Sockets do not survive into images (as with docker).
            _ => {}
        }
    }
    Ok(())
}

/// Adds a layer whose tar `write` produces on top of the chain `parent`
/// (`None`: the empty tree): stores the blob (uncompressed tar) and builds
/// the new tree from a hard-linked copy of the parent's.
pub fn add_tar_layer(
    txn: &mut Txn<'_>,
    parent: Option<&Digest>,
    setuid: bool,
    limits: Limits,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<StepLayer> {
    let part = txn.blob_part();
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&part)
        .map_err(|e| ImageError::io("create", &part, e))?;
    let mut hw = HashWriter::new(io::BufWriter::new(f));
    write(&mut hw)?;
    let (bw, digest, size) = hw.finish();
    bw.into_inner()
        .map_err(|e| ImageError::io("write", &part, e.into_error()))?;
    txn.adopt_blob(&part, digest.clone(), None, "layer")?;
    let chain_id = Digest::chain(parent, &digest);
    let key = tree_key(&chain_id, setuid);
    let layer = LayerRecord {
        digest: digest.clone(),
        diff_id: digest.clone(),
        media_type: oci::MT_OCI_LAYER.into(),
        size,
    };
    if let Some(tree) = txn.tree(&key) {
        return Ok(StepLayer {
            layer,
            chain_id,
            rootfs: key,
            tree,
        });
    }
    let ptree = match parent {
        Some(p) => Some(
            txn.tree(&tree_key(p, setuid))
                .ok_or_else(|| ImageError::State {
                    path: txn.store().tree_dir(&tree_key(p, setuid)),
                    why: "the parent tree is not in the store".into(),
                })?,
        ),
        None => None,
    };
    let tree = txn.new_tree(ptree.as_deref())?;
    let blob = txn.open_blob(&digest)?;
    let mut budget = Budget::new(limits);
    let (diff, _) = layer::apply_layer(
        &tree,
        blob,
        digest.short(),
        ApplyOptions {
            allow_setuid: setuid,
        },
        &mut budget,
    )?;
    if diff != digest {
        return Err(ImageError::DigestMismatch {
            what: "new layer".into(),
            expected: digest.to_string(),
            actual: diff.to_string(),
        });
    }
    let tree = txn.finish_tree(tree, &key)?;
    Ok(StepLayer {
        layer,
        chain_id,
        rootfs: key,
        tree,
    })
}

/// Turns the overlayfs upper directory `upper` (a RUN step's changes over
/// the tree of `parent`) into a layer and its tree.
pub fn commit_upper(
    txn: &mut Txn<'_>,
    parent: Option<&Digest>,
    upper: &Path,
    setuid: bool,
    limits: Limits,
) -> Result<StepLayer> {
    add_tar_layer(txn, parent, setuid, limits, |w| upper_to_tar(upper, w))
}
