//! `airlock image import`: a `docker save` archive, an OCI archive (a tar
//! of an OCI image layout) or an OCI layout directory, plain or compressed.

use crate::digest::{Digest, HashReader};
use crate::error::{ImageError, Result};
use crate::layer::{self, ApplyOptions, Budget, Limits};
use crate::oci::{self, Descriptor, Doc, ImageConfig, Manifest};
use crate::store::{self, Base, ImageRecord, LayerRecord, Ownership, Store, Txn};
use crate::{fsx, Progress};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// What an import (or pull) needs besides its source.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ImportOptions {
    pub name: String,
    pub limits: Limits,
    pub allow_setuid: bool,
}

impl ImportOptions {
    pub fn new(name: &str) -> ImportOptions {
        ImportOptions {
            name: name.to_string(),
            limits: Limits::default(),
            allow_setuid: false,
        }
    }
}

/// Most files in the outer archive (blobs and metadata, not layer entries).
const MAX_ARCHIVE_FILES: u64 = 100_000;

/// Largest JSON document (manifest, index, config) we read.
const MAX_DOC: u64 = 16 << 20;

/// Imports `path` (archive file or OCI layout directory) as `opts.name`.
pub fn import(
    store: &Store,
    path: &Path,
    opts: &ImportOptions,
    progress: &dyn Progress,
) -> Result<ImageRecord> {
    store::validate_name(&opts.name)?;
    let mut txn = store.begin()?;
    let md = std::fs::metadata(path).map_err(|e| ImageError::io("open", path, e))?;
    let (manifest_bytes, manifest_digest) = if md.is_dir() {
        stage_layout_dir(&mut txn, path, progress)?
    } else {
        stage_archive(&mut txn, path, opts, progress)?
    };
    let rec = finish(
        &mut txn,
        &manifest_bytes,
        manifest_digest,
        opts,
        &format!("import {}", path.display()),
        progress,
    )?;
    txn.commit()?;
    Ok(rec)
}

/// A file of the outer archive, as staged.
enum Staged {
    Memory(Vec<u8>),
    Blob(Digest),
    Link(String),
}

fn norm(p: &[u8]) -> String {
    let s = String::from_utf8_lossy(p);
    s.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn stage_archive(
    txn: &mut Txn<'_>,
    path: &Path,
    opts: &ImportOptions,
    progress: &dyn Progress,
) -> Result<(Vec<u8>, Digest)> {
    let what = path.display().to_string();
    let f = File::open(path).map_err(|e| ImageError::io("open", path, e))?;
    let total = f.metadata().map(|m| m.len()).ok();
    progress.phase(&format!("reading {}", path.display()), total);
    let counted = ProgressReader { inner: f, progress };
    let stream = layer::decompress(counted).map_err(|e| ImageError::io("read", path, e))?;
    let mut hr = HashReader::new(stream, opts.limits.max_bytes);
    let mut files: HashMap<String, Staged> = HashMap::new();
    {
        let mut ar = tar::Archive::new(&mut hr);
        let entries = ar.entries().map_err(|e| ImageError::Format {
            what: what.clone(),
            why: format!("not a tar archive: {e}"),
        })?;
        for (n, entry) in entries.enumerate() {
            if n as u64 > MAX_ARCHIVE_FILES {
                return Err(ImageError::Limit {
                    what: format!("the number of files in {what}"),
                    limit: MAX_ARCHIVE_FILES,
                    hint: "an image archive holds a few files per layer",
                });
            }
            let mut entry = entry.map_err(|e| ImageError::Format {
                what: what.clone(),
                why: format!("corrupt or truncated archive: {e}"),
            })?;
            let name = norm(&entry.path_bytes());
            let kind = entry.header().entry_type();
            if kind == tar::EntryType::Symlink || kind == tar::EntryType::Link {
                if let Some(t) = entry.link_name_bytes() {
                    let t = String::from_utf8_lossy(&t).into_owned();
                    let target = if kind == tar::EntryType::Link {
                        norm(t.as_bytes())
                    } else {
                        let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                        let mut parts: Vec<&str> = if t.starts_with('/') {
                            vec![]
                        } else {
                            dir.split('/').filter(|c| !c.is_empty()).collect()
                        };
                        for c in t.split('/') {
                            match c {
                                "" | "." => {}
                                ".." => {
                                    parts.pop();
                                }
                                c => parts.push(c),
                            }
                        }
                        parts.join("/")
                    };
                    files.insert(name, Staged::Link(target));
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let size = entry.size();
            if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                let expected = Digest::from_hex(hex).map_err(|_| ImageError::Format {
                    what: what.clone(),
                    why: format!("blob file name {name:?} is not a sha256 digest"),
                })?;
                let (d, got) =
                    txn.put_blob(&mut entry, Some(&expected), &format!("{what}: {name}"))?;
                if got != size {
                    return Err(ImageError::Format {
                        what: what.clone(),
                        why: format!("{name} is truncated"),
                    });
                }
                files.insert(name, Staged::Blob(d));
            } else if name.ends_with(".json") || name == "oci-layout" || name == "repositories" {
                if size > MAX_DOC {
                    return Err(ImageError::Limit {
                        what: format!("{name} in {what}"),
                        limit: MAX_DOC,
                        hint: "metadata files are small",
                    });
                }
                let mut b = Vec::new();
                entry.read_to_end(&mut b).map_err(|e| ImageError::Format {
                    what: what.clone(),
                    why: format!("cannot read {name}: {e}"),
                })?;
                files.insert(name, Staged::Memory(b));
            } else {
                let (d, got) = txn.put_blob(&mut entry, None, &format!("{what}: {name}"))?;
                if got != size {
                    return Err(ImageError::Format {
                        what: what.clone(),
                        why: format!("{name} is truncated"),
                    });
                }
                files.insert(name, Staged::Blob(d));
            }
        }
    }
    io::copy(&mut hr, &mut io::sink()).map_err(|e| ImageError::Format {
        what: what.clone(),
        why: format!("corrupt or truncated archive: {e}"),
    })?;
    progress.done();

    let resolve = |name: &str| -> Option<&Staged> {
        let mut n = name.to_string();
        for _ in 0..8 {
            match files.get(&n)? {
                Staged::Link(t) => n = t.clone(),
                s => return Some(s),
            }
        }
        None
    };
    if let Some(Staged::Memory(idx)) = resolve("index.json") {
        let idx = idx.clone();
        return resolve_index(txn, &idx, &what, "archive");
    }
    let Some(Staged::Memory(m)) = resolve("manifest.json") else {
        return Err(ImageError::Format {
            what,
            why: "neither index.json (OCI) nor manifest.json (docker save) in it".into(),
        });
    };
    let entries: Vec<oci::DockerSaveEntry> =
        serde_json::from_slice(m).map_err(|e| ImageError::Format {
            what: format!("{what}: manifest.json"),
            why: e.to_string(),
        })?;
    let Some(ent) = entries.first() else {
        return Err(ImageError::Format {
            what: format!("{what}: manifest.json"),
            why: "no image in it".into(),
        });
    };
    // The config: a file named by its digest (<hex>.json, or blobs/sha256/<hex>).
    let cname = norm(ent.config.as_bytes());
    let chex = cname
        .rsplit('/')
        .next()
        .unwrap_or("")
        .trim_end_matches(".json")
        .to_string();
    let cdigest = Digest::from_hex(&chex).map_err(|_| ImageError::Format {
        what: format!("{what}: manifest.json"),
        why: format!("config {:?} is not named by its sha256", ent.config),
    })?;
    let missing = |n: &str| ImageError::MissingBlob {
        what: format!("{what}: manifest.json"),
        digest: n.to_string(),
        source_kind: "archive",
    };
    match resolve(&cname).ok_or_else(|| missing(&ent.config))? {
        Staged::Memory(b) => {
            txn.put_blob_bytes(b, Some(&cdigest), &format!("{what}: config {cname}"))?;
        }
        Staged::Blob(d) => {
            if *d != cdigest {
                return Err(ImageError::DigestMismatch {
                    what: format!("{what}: config {cname}"),
                    expected: cdigest.to_string(),
                    actual: d.to_string(),
                });
            }
        }
        Staged::Link(_) => return Err(missing(&ent.config)),
    }
    let csize = txn
        .open_blob(&cdigest)?
        .metadata()
        .map(|m| m.len())
        .unwrap_or(0);
    let mut layers = Vec::new();
    for l in &ent.layers {
        let d = match resolve(&norm(l.as_bytes())).ok_or_else(|| missing(l))? {
            Staged::Blob(d) => d.clone(),
            Staged::Memory(b) => {
                let b = b.clone();
                txn.put_blob_bytes(&b, None, l)?
            }
            Staged::Link(_) => return Err(missing(l)),
        };
        let mut f = txn.open_blob(&d)?;
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut head = [0u8; 4];
        let n = f.read(&mut head).unwrap_or(0);
        let mt = if n >= 2 && head[..2] == [0x1f, 0x8b] {
            oci::MT_OCI_LAYER_GZIP
        } else if n == 4 && head == [0x28, 0xb5, 0x2f, 0xfd] {
            oci::MT_OCI_LAYER_ZSTD
        } else {
            oci::MT_OCI_LAYER
        };
        layers.push(Descriptor {
            media_type: mt.into(),
            digest: d.to_string(),
            size: size as i64,
            platform: None,
            annotations: None,
        });
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MT_OCI_MANIFEST.into()),
        config: Descriptor {
            media_type: oci::MT_OCI_CONFIG.into(),
            digest: cdigest.to_string(),
            size: csize as i64,
            platform: None,
            annotations: None,
        },
        layers,
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| ImageError::Format {
        what,
        why: e.to_string(),
    })?;
    let d = txn.put_blob_bytes(&bytes, None, "manifest")?;
    Ok((bytes, d))
}

/// Follows an index (nested indexes too) to the linux/amd64 manifest,
/// whose blobs must already be staged or stored.
fn resolve_index(
    txn: &mut Txn<'_>,
    idx: &[u8],
    what: &str,
    kind: &'static str,
) -> Result<(Vec<u8>, Digest)> {
    let mut doc = oci::parse_doc(idx, &format!("{what}: index.json"))?;
    for _ in 0..4 {
        match doc {
            Doc::Manifest(_) => {
                return Err(ImageError::Format {
                    what: format!("{what}: index.json"),
                    why: "is a manifest, not an index".into(),
                })
            }
            Doc::Index(i) => {
                let d = oci::pick_platform(&i, &format!("{what}: index"))?;
                let dg = d.digest(what)?;
                let bytes = read_small(txn, &dg, what, kind)?;
                match oci::parse_doc(&bytes, &format!("{what}: {dg}"))? {
                    Doc::Manifest(_) => return Ok((bytes, dg)),
                    next => doc = next,
                }
            }
        }
    }
    Err(ImageError::Format {
        what: what.to_string(),
        why: "indexes nested too deep".into(),
    })
}

fn read_small(txn: &Txn<'_>, d: &Digest, what: &str, kind: &'static str) -> Result<Vec<u8>> {
    if !txn.has_blob(d) {
        return Err(ImageError::MissingBlob {
            what: what.to_string(),
            digest: d.to_string(),
            source_kind: kind,
        });
    }
    let f = txn.open_blob(d)?;
    let mut b = Vec::new();
    f.take(MAX_DOC + 1)
        .read_to_end(&mut b)
        .map_err(|e| ImageError::io("read", d.to_string(), e))?;
    if b.len() as u64 > MAX_DOC {
        return Err(ImageError::Limit {
            what: format!("document {d}"),
            limit: MAX_DOC,
            hint: "manifests and configs are small",
        });
    }
    Ok(b)
}

fn stage_layout_dir(
    txn: &mut Txn<'_>,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<(Vec<u8>, Digest)> {
    let what = dir.display().to_string();
    let ip = dir.join("index.json");
    let idx = std::fs::read(&ip).map_err(|e| ImageError::io("read", &ip, e))?;
    // Stage exactly the blobs the chosen manifest needs, verified.
    let mut doc = oci::parse_doc(&idx, &format!("{what}: index.json"))?;
    for _ in 0..4 {
        let Doc::Index(i) = doc else { break };
        let d = oci::pick_platform(&i, &format!("{what}: index"))?.digest(&what)?;
        stage_file(txn, dir, &d, &what, progress)?;
        let bytes = read_small(txn, &d, &what, "layout")?;
        doc = oci::parse_doc(&bytes, &format!("{what}: {d}"))?;
        if let Doc::Manifest(m) = &doc {
            stage_file(txn, dir, &m.config.digest(&what)?, &what, progress)?;
            for l in &m.layers {
                stage_file(txn, dir, &l.digest(&what)?, &what, progress)?;
            }
            return Ok((bytes, d));
        }
    }
    Err(ImageError::Format {
        what,
        why: "index.json does not lead to an image manifest".into(),
    })
}

fn stage_file(
    txn: &mut Txn<'_>,
    dir: &Path,
    d: &Digest,
    what: &str,
    progress: &dyn Progress,
) -> Result<()> {
    if txn.has_blob(d) {
        return Ok(());
    }
    let p = dir.join("blobs/sha256").join(d.hex());
    let f = match File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ImageError::MissingBlob {
                what: what.to_string(),
                digest: d.to_string(),
                source_kind: "layout",
            })
        }
        Err(e) => return Err(ImageError::io("open", p, e)),
    };
    progress.phase(
        &format!("copying {}", d.short()),
        f.metadata().map(|m| m.len()).ok(),
    );
    txn.put_blob(
        ProgressReader { inner: f, progress },
        Some(d),
        &format!("{what}: blob {d}"),
    )?;
    progress.done();
    Ok(())
}

/// Builds the image from a staged manifest: verifies the config and every
/// layer, applies the layers (starting from the longest stored prefix of
/// the chain) and records the image. The caller commits.
pub(crate) fn finish(
    txn: &mut Txn<'_>,
    manifest_bytes: &[u8],
    manifest_digest: Digest,
    opts: &ImportOptions,
    source: &str,
    progress: &dyn Progress,
) -> Result<ImageRecord> {
    let what = format!("manifest {}", manifest_digest.short());
    let Doc::Manifest(m) = oci::parse_doc(manifest_bytes, &what)? else {
        return Err(ImageError::Format {
            what,
            why: "is an index, not an image manifest".into(),
        });
    };
    if !txn.has_blob(&manifest_digest) {
        txn.put_blob_bytes(manifest_bytes, Some(&manifest_digest), &what)?;
    }
    let cdigest = m.config.digest(&what)?;
    let cbytes = read_small(txn, &cdigest, &what, "archive or the store")?;
    let config = ImageConfig::parse(&cbytes, &format!("config {}", cdigest.short()))?;
    if !config.os.is_empty() && config.os != "linux" {
        return Err(ImageError::Format {
            what: format!("config {}", cdigest.short()),
            why: format!("image is for {}, not linux", config.os),
        });
    }
    let diff_ids = config.diff_ids(&format!("config {}", cdigest.short()))?;
    if diff_ids.len() != m.layers.len() {
        return Err(ImageError::Format {
            what: format!("config {}", cdigest.short()),
            why: format!(
                "lists {} diff_ids but the manifest has {} layers",
                diff_ids.len(),
                m.layers.len()
            ),
        });
    }
    let mut layers = Vec::new();
    for (i, l) in m.layers.iter().enumerate() {
        let d = l.digest(&what)?;
        if !txn.has_blob(&d) {
            return Err(ImageError::MissingBlob {
                what: format!("{what} (layer {i})"),
                digest: d.to_string(),
                source_kind: "archive or the store",
            });
        }
        layers.push(LayerRecord {
            digest: d,
            diff_id: diff_ids[i].clone(),
            media_type: l.media_type.clone(),
            size: l.size.max(0) as u64,
        });
    }
    let (chain, rootfs, size) = build_chain(txn, &layers, opts, progress)?;
    let rec = ImageRecord {
        name: opts.name.clone(),
        manifest_digest,
        config_digest: cdigest,
        chain_id: chain,
        rootfs,
        layers,
        created: store::now_rfc3339(),
        size,
        defaults: config.defaults(),
        ownership: Ownership::current(),
        base: Base::Tree,
        setuid: opts.allow_setuid,
        source: source.to_string(),
    };
    txn.set_image(rec.clone());
    Ok(rec)
}

/// The tree directory name for a chain.
pub(crate) fn tree_key(chain: &Digest, setuid: bool) -> String {
    if setuid {
        format!("{}-setuid", chain.hex())
    } else {
        chain.hex().to_string()
    }
}

/// Makes sure the tree of `layers` exists (staged or stored). Every layer
/// is checked against its diff id, also those whose tree is reused.
/// Returns the chain id, tree key and tree size.
pub(crate) fn build_chain(
    txn: &mut Txn<'_>,
    layers: &[LayerRecord],
    opts: &ImportOptions,
    progress: &dyn Progress,
) -> Result<(Digest, String, u64)> {
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let chains: Vec<Digest> = (0..=layers.len())
        .map(|k| Digest::chain_of(&diff_ids[..k]))
        .collect();
    let n = layers.len();
    let key = tree_key(&chains[n], opts.allow_setuid);
    // Longest stored prefix.
    let mut k = n;
    while k > 0 && txn.tree(&tree_key(&chains[k], opts.allow_setuid)).is_none() {
        k -= 1;
    }
    let mut budget = Budget::new(opts.limits);
    // Layers under a reused tree: checked, not extracted.
    for l in &layers[..k] {
        let f = txn.open_blob(&l.digest)?;
        let name = l.digest.short().to_string();
        progress.phase(&format!("verifying layer {name}"), Some(l.size));
        let stream = layer::decompress(ProgressReader { inner: f, progress }).map_err(|e| {
            ImageError::Layer {
                layer: name.clone(),
                why: e.to_string(),
            }
        })?;
        let mut hr = HashReader::new(stream, budget.bytes_left);
        io::copy(&mut hr, &mut io::sink()).map_err(|e| ImageError::Layer {
            layer: name.clone(),
            why: format!("corrupt, truncated or over the size limit: {e}"),
        })?;
        let (d, sz) = hr.finish();
        budget.bytes_left = budget.bytes_left.saturating_sub(sz);
        check_diff(&d, l)?;
        progress.done();
    }
    if k == n {
        let p = txn.tree(&key).ok_or_else(|| ImageError::State {
            path: txn.store().tree_dir(&key),
            why: "tree vanished".into(),
        })?;
        let size = fsx::tree_size(&p)?;
        return Ok((chains[n].clone(), key, size));
    }
    let parent = if k == 0 {
        None
    } else {
        txn.tree(&tree_key(&chains[k], opts.allow_setuid))
    };
    let tree = txn.new_tree(parent.as_deref())?;
    let aopts = ApplyOptions {
        allow_setuid: opts.allow_setuid,
    };
    for l in &layers[k..] {
        let f = txn.open_blob(&l.digest)?;
        let name = l.digest.short().to_string();
        progress.phase(&format!("extracting layer {name}"), Some(l.size));
        let (d, _) = layer::apply_layer(
            &tree,
            ProgressReader { inner: f, progress },
            &name,
            aopts,
            &mut budget,
        )?;
        check_diff(&d, l)?;
        progress.done();
    }
    let size = fsx::tree_size(&tree)?;
    txn.finish_tree(tree, &key)?;
    Ok((chains[n].clone(), key, size))
}

fn check_diff(got: &Digest, l: &LayerRecord) -> Result<()> {
    if *got != l.diff_id {
        return Err(ImageError::DigestMismatch {
            what: format!(
                "layer {} (uncompressed, against the config's diff_id)",
                l.digest.short()
            ),
            expected: l.diff_id.to_string(),
            actual: got.to_string(),
        });
    }
    Ok(())
}

/// Counts bytes read into a [`Progress`].
pub(crate) struct ProgressReader<'p, R> {
    pub inner: R,
    pub progress: &'p dyn Progress,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}
