//! The content-addressed image store.
//!
//! ```text
//! <state>/images/                 mode 0700, owned by the caller
//!   lock                          flock: one writer at a time
//!   index.json                    name -> ImageRecord (written atomically)
//!   cache.json                    build cache: step key -> CacheEntry
//!   blobs/sha256/<hex>            layers, configs, manifests as received, verified
//!   rootfs/<chain-hex>[-setuid]/  flattened tree of a layer chain, shared by images
//!   tmp/<unique>/                 staging; renamed into place only when complete
//! ```

use crate::digest::{Digest, HashWriter};
use crate::error::{ImageError, Result};
use crate::fsx;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The config defaults an image brings (from its OCI config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDefaults {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One layer of an image as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerRecord {
    /// Digest of the blob as stored (compressed or not).
    pub digest: Digest,
    /// Digest of the uncompressed tar stream.
    pub diff_id: Digest,
    pub media_type: String,
    /// Bytes of the blob.
    pub size: u64,
}

/// Who owns the files of a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Ownership {
    /// Extracted by root: files keep the archive's uid/gid (0-65535).
    Preserved,
    /// Extracted rootless: everything belongs to the caller.
    Caller { uid: u32, gid: u32 },
}

impl Ownership {
    pub fn current() -> Ownership {
        if fsx::is_root() {
            Ownership::Preserved
        } else {
            Ownership::Caller {
                uid: rustix::process::geteuid().as_raw(),
                gid: rustix::process::getegid().as_raw(),
            }
        }
    }
}

/// What the layers of an image sit on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    /// The tree is the whole root filesystem.
    #[default]
    Tree,
    /// `FROM host`: the tree goes on top of the host image (the host's
    /// `/usr`, `/bin`, `/lib*`, `/sbin` read-only and a generated `/etc`).
    Host,
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRecord {
    pub name: String,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub chain_id: Digest,
    /// The tree's directory name under `<store>/rootfs/`.
    pub rootfs: String,
    pub layers: Vec<LayerRecord>,
    /// RFC 3339, UTC.
    pub created: String,
    /// Bytes of regular files in the tree.
    pub size: u64,
    pub defaults: ImageDefaults,
    pub ownership: Ownership,
    #[serde(default)]
    pub base: Base,
    /// Extracted with setuid bits and file capabilities kept.
    pub setuid: bool,
    /// Where it came from: a file, a registry reference, a build.
    pub source: String,
}

/// A cached build step's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheEntry {
    pub chain_id: Digest,
    pub rootfs: String,
    pub layer: LayerRecord,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    version: u32,
    images: BTreeMap<String, ImageRecord>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Cache {
    version: u32,
    steps: BTreeMap<String, CacheEntry>,
}

/// Where airlock keeps its state: `$AIRLOCK_STATE_DIR`, else
/// `/var/lib/airlock` for root, else `$XDG_DATA_HOME/airlock`
/// (`~/.local/share/airlock`).
pub fn default_state_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("AIRLOCK_STATE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if fsx::is_root() {
        return Ok(PathBuf::from("/var/lib/airlock"));
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("airlock"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/airlock")),
        None => Err(ImageError::State {
            path: PathBuf::from("~/.local/share/airlock"),
            why: "HOME is not set; set AIRLOCK_STATE_DIR".into(),
        }),
    }
}

/// Checks an image name: 1-255 of `[A-Za-z0-9._/:@-]`, no `..`, not `host`
/// (the same rule as a spec's `image`: [`airlock_spec::validate_image_name`]).
pub fn validate_name(name: &str) -> Result<()> {
    airlock_spec::validate_image_name(name).map_err(|why| ImageError::BadName {
        name: name.to_string(),
        why,
    })
}

/// The store at `<state>/images`.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

fn mkdir0700(p: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(ImageError::io("create", p, e)),
    }
}

impl Store {
    /// Opens (creating) the store under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Store> {
        fs::create_dir_all(state_dir).map_err(|e| ImageError::io("create", state_dir, e))?;
        let root = state_dir.join("images");
        mkdir0700(&root)?;
        let md = fs::symlink_metadata(&root).map_err(|e| ImageError::io("stat", &root, e))?;
        if !md.is_dir() {
            return Err(ImageError::State {
                path: root,
                why: "not a directory".into(),
            });
        }
        let me = rustix::process::geteuid().as_raw();
        if md.uid() != me {
            return Err(ImageError::State {
                path: root,
                why: format!("owned by uid {}, not by you (uid {me})", md.uid()),
            });
        }
        if md.mode() & 0o077 != 0 {
            fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .map_err(|e| ImageError::io("chmod", &root, e))?;
        }
        for d in ["blobs", "blobs/sha256", "rootfs", "tmp"] {
            mkdir0700(&root.join(d))?;
        }
        Ok(Store { root })
    }

    /// Opens the store in [`default_state_dir`].
    pub fn open_default() -> Result<Store> {
        Store::open(&default_state_dir()?)
    }

    /// Opens the store under `state_dir` only if there is one (creating
    /// nothing): for readers, such as a sandbox that runs an image.
    pub fn open_existing(state_dir: &Path) -> Result<Option<Store>> {
        match fs::symlink_metadata(state_dir.join("images")) {
            Ok(_) => Store::open(state_dir).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::io("stat", state_dir.join("images"), e)),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// The flattened tree of an image.
    pub fn rootfs_path(&self, rec: &ImageRecord) -> PathBuf {
        self.root.join("rootfs").join(&rec.rootfs)
    }

    /// The tree stored under `key` (e.g. [`ImageRecord::rootfs`]).
    pub fn tree_dir(&self, key: &str) -> PathBuf {
        self.root.join("rootfs").join(key)
    }

    fn read_json<T: Default + for<'de> Deserialize<'de>>(&self, file: &str) -> Result<T> {
        let p = self.root.join(file);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| ImageError::Corrupt {
                path: p,
                why: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(T::default()),
            Err(e) => Err(ImageError::io("read", p, e)),
        }
    }

    fn write_json<T: Serialize>(&self, file: &str, v: &T) -> Result<()> {
        let p = self.root.join(file);
        let tmp = self.root.join(format!(".{file}.{}", fsx::unique("")));
        let text = serde_json::to_vec_pretty(v).map_err(|e| ImageError::Corrupt {
            path: p.clone(),
            why: e.to_string(),
        })?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| ImageError::io("create", &tmp, e))?;
        f.write_all(&text)
            .and_then(|_| f.sync_all())
            .map_err(|e| ImageError::io("write", &tmp, e))?;
        fs::rename(&tmp, &p).map_err(|e| ImageError::io("rename", &p, e))
    }

    /// Every image, by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let idx: Index = self.read_json("index.json")?;
        Ok(idx.images.into_values().collect())
    }

    pub fn get(&self, name: &str) -> Result<ImageRecord> {
        let idx: Index = self.read_json("index.json")?;
        idx.images
            .get(name)
            .cloned()
            .ok_or_else(|| ImageError::NotFound {
                name: name.to_string(),
            })
    }

    pub fn contains(&self, name: &str) -> Result<bool> {
        let idx: Index = self.read_json("index.json")?;
        Ok(idx.images.contains_key(name))
    }

    /// Reads a stored blob.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        fs::read(&p).map_err(|e| ImageError::io("read", p, e))
    }

    /// Takes the writer lock and starts a transaction; removes stale staging
    /// directories (no other writer can be using them while we hold the lock).
    pub fn begin(&self) -> Result<Txn<'_>> {
        let lp = self.root.join("lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lp)
            .map_err(|e| ImageError::io("open", &lp, e))?;
        rustix::fs::flock(lock.as_fd(), rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| ImageError::io("lock", &lp, e.into()))?;
        let tmproot = self.root.join("tmp");
        if let Ok(rd) = fs::read_dir(&tmproot) {
            for e in rd.flatten() {
                fsx::remove_tree(&e.path())?;
            }
        }
        let tmp = tmproot.join(fsx::unique(""));
        mkdir0700(&tmp)?;
        mkdir0700(&tmp.join("blobs"))?;
        mkdir0700(&tmp.join("trees"))?;
        mkdir0700(&tmp.join("work"))?;
        let index = self.read_json("index.json")?;
        let cache = self.read_json("cache.json")?;
        Ok(Txn {
            store: self,
            _lock: lock,
            tmp,
            blobs: BTreeSet::new(),
            trees: BTreeMap::new(),
            index,
            cache,
            dirty: false,
        })
    }

    /// Removes images by name, then every blob and tree nothing refers to.
    pub fn remove(&self, names: &[String]) -> Result<()> {
        let mut txn = self.begin()?;
        for n in names {
            if txn.index.images.remove(n).is_none() {
                return Err(ImageError::NotFound { name: n.clone() });
            }
        }
        txn.dirty = true;
        txn.commit()?;
        self.gc()
    }

    /// Forgets the build cache and removes what nothing refers to.
    pub fn prune(&self) -> Result<()> {
        let mut txn = self.begin()?;
        txn.cache.steps.clear();
        txn.dirty = true;
        txn.commit()?;
        self.gc()
    }

    fn gc(&self) -> Result<()> {
        let txn = self.begin()?;
        let mut blobs = BTreeSet::new();
        let mut trees = BTreeSet::new();
        for r in txn.index.images.values() {
            blobs.insert(r.manifest_digest.hex().to_string());
            blobs.insert(r.config_digest.hex().to_string());
            for l in &r.layers {
                blobs.insert(l.digest.hex().to_string());
            }
            trees.insert(r.rootfs.clone());
        }
        for c in txn.cache.steps.values() {
            blobs.insert(c.layer.digest.hex().to_string());
            trees.insert(c.rootfs.clone());
        }
        for (dir, keep) in [("blobs/sha256", &blobs), ("rootfs", &trees)] {
            let p = self.root.join(dir);
            for e in fs::read_dir(&p)
                .map_err(|e| ImageError::io("list", &p, e))?
                .flatten()
            {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    fsx::remove_tree(&e.path())?;
                }
            }
        }
        Ok(())
    }
}

/// A write transaction: holds the store lock; everything new is staged under
/// `tmp/<unique>/` and moved into place by [`Txn::commit`]. Dropped without
/// commit, it leaves nothing behind.
pub struct Txn<'s> {
    store: &'s Store,
    _lock: File,
    tmp: PathBuf,
    blobs: BTreeSet<Digest>,
    trees: BTreeMap<String, PathBuf>,
    index: Index,
    cache: Cache,
    dirty: bool,
}

impl<'s> Txn<'s> {
    pub fn store(&self) -> &'s Store {
        self.store
    }

    /// A fresh scratch directory inside the staging area (same filesystem
    /// as the store).
    pub fn scratch(&self, prefix: &str) -> Result<PathBuf> {
        let p = self.tmp.join("work").join(fsx::unique(prefix));
        mkdir0700(&p)?;
        Ok(p)
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blobs.contains(d) || self.store.blob_path(d).exists()
    }

    /// Where a blob is, staged or stored.
    pub fn blob_file(&self, d: &Digest) -> Option<PathBuf> {
        if self.blobs.contains(d) {
            return Some(self.tmp.join("blobs").join(d.hex()));
        }
        let p = self.store.blob_path(d);
        p.exists().then_some(p)
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        let p = self.blob_file(d).ok_or_else(|| ImageError::MissingBlob {
            what: "the image".into(),
            digest: d.to_string(),
            source_kind: "store",
        })?;
        File::open(&p).map_err(|e| ImageError::io("open", p, e))
    }

    /// Stages a blob from `r`, checking it against `expected` (when given).
    /// A blob already present is not read again.
    pub fn put_blob(
        &mut self,
        mut r: impl Read,
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<(Digest, u64)> {
        if let Some(d) = expected {
            if let Some(p) = self.blob_file(d) {
                let size = fs::metadata(&p)
                    .map_err(|e| ImageError::io("stat", &p, e))?
                    .len();
                return Ok((d.clone(), size));
            }
        }
        let part = self.tmp.join("blobs").join(fsx::unique("part-"));
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&part)
            .map_err(|e| ImageError::io("create", &part, e))?;
        let mut w = HashWriter::new(io::BufWriter::new(f));
        io::copy(&mut r, &mut w).map_err(|e| ImageError::Format {
            what: what.to_string(),
            why: format!("cannot read: {e}"),
        })?;
        let (bw, digest, size) = w.finish();
        bw.into_inner()
            .map_err(|e| ImageError::io("write", &part, e.into_error()))?;
        self.adopt_blob(&part, digest.clone(), expected, what)?;
        Ok((digest, size))
    }

    pub fn put_blob_bytes(
        &mut self,
        b: &[u8],
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<Digest> {
        Ok(self.put_blob(b, expected, what)?.0)
    }

    /// Stages the finished file `part` whose content hashes to `digest`.
    pub(crate) fn adopt_blob(
        &mut self,
        part: &Path,
        digest: Digest,
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<()> {
        if let Some(exp) = expected {
            if *exp != digest {
                let _ = fs::remove_file(part);
                return Err(ImageError::DigestMismatch {
                    what: what.to_string(),
                    expected: exp.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        if self.has_blob(&digest) {
            let _ = fs::remove_file(part);
            return Ok(());
        }
        let dst = self.tmp.join("blobs").join(digest.hex());
        fs::rename(part, &dst).map_err(|e| ImageError::io("rename", &dst, e))?;
        self.blobs.insert(digest);
        Ok(())
    }

    /// A new writable staging path for a blob being produced.
    pub(crate) fn blob_part(&self) -> PathBuf {
        self.tmp.join("blobs").join(fsx::unique("part-"))
    }

    /// The tree stored or staged under `key`.
    pub fn tree(&self, key: &str) -> Option<PathBuf> {
        if let Some(p) = self.trees.get(key) {
            return Some(p.clone());
        }
        let p = self.store.tree_dir(key);
        p.is_dir().then_some(p)
    }

    /// A new staging tree: empty, or a hard-linked copy of `parent`.
    pub fn new_tree(&self, parent: Option<&Path>) -> Result<PathBuf> {
        let p = self.tmp.join("trees").join(fsx::unique("t-"));
        match parent {
            Some(src) => fsx::copy_tree_linked(src, &p)?,
            None => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&p)
                    .map_err(|e| ImageError::io("create", &p, e))?;
            }
        }
        Ok(p)
    }

    /// Registers the finished staging tree `path` under `key`.
    pub fn finish_tree(&mut self, path: PathBuf, key: &str) -> Result<PathBuf> {
        if let Some(existing) = self.tree(key) {
            fsx::remove_tree(&path)?;
            return Ok(existing);
        }
        self.trees.insert(key.to_string(), path.clone());
        Ok(path)
    }

    pub fn cached(&self, key: &str) -> Option<CacheEntry> {
        let c = self.cache.steps.get(key)?;
        // A cache entry whose tree or layer went away is a miss.
        (self.tree(&c.rootfs).is_some() && self.has_blob(&c.layer.digest)).then(|| c.clone())
    }

    pub fn cache_put(&mut self, key: String, e: CacheEntry) {
        self.cache.steps.insert(key, e);
        self.dirty = true;
    }

    pub fn get(&self, name: &str) -> Option<&ImageRecord> {
        self.index.images.get(name)
    }

    pub fn set_image(&mut self, rec: ImageRecord) {
        self.index.images.insert(rec.name.clone(), rec);
        self.dirty = true;
    }

    /// Moves staged blobs and trees into place, then writes the index.
    pub fn commit(mut self) -> Result<()> {
        for d in std::mem::take(&mut self.blobs) {
            let src = self.tmp.join("blobs").join(d.hex());
            let dst = self.store.blob_path(&d);
            if dst.exists() {
                continue;
            }
            fs::rename(&src, &dst).map_err(|e| ImageError::io("rename", &dst, e))?;
        }
        for (key, src) in std::mem::take(&mut self.trees) {
            let dst = self.store.tree_dir(&key);
            if dst.exists() {
                continue;
            }
            fs::rename(&src, &dst).map_err(|e| ImageError::io("rename", &dst, e))?;
        }
        if self.dirty {
            self.index.version = 1;
            self.cache.version = 1;
            self.store.write_json("cache.json", &self.cache)?;
            self.store.write_json("index.json", &self.index)?;
        }
        Ok(())
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        let _ = fsx::remove_tree(&self.tmp);
    }
}

/// Now, as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    rfc3339(secs)
}

/// Unix seconds as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn names() {
        for ok in [
            "py",
            "library/debian:12",
            "a@sha256-x",
            "127.0.0.1:5000/t:v",
        ] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "host", "../x", "-x", "/x", "a b", "a\nb"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
