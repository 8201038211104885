//! Dockerfile builds: one base (FROM), then config steps (ENV, ARG,
//! WORKDIR, USER, ENTRYPOINT, CMD, LABEL) and layer steps (COPY, ADD, RUN,
//! and WORKDIR when it must create its directory), cached by content as
//! docker's build cache is: a step's key is its parent chain, the
//! instruction after expansion, the build state it depends on and, for
//! COPY/ADD, a hash of the copied content and metadata.
//!
//! RUN steps are delegated to a [`StepRunner`] (the sandbox), which leaves
//! the step's changes in an overlayfs upper directory; [`crate::commit_upper`]
//! turns that into the step's layer.

use crate::debian::{self, DebianOptions};
use crate::digest::{Digest, Hasher};
use crate::dockerfile::{self, CmdForm, Ignore, Inst};
use crate::error::{ImageError, Result};
use crate::import::{tree_key, ImportOptions};
use crate::layer::{self, Limits};
use crate::oci::{self, Descriptor, History, ImageConfig, Manifest};
use crate::pull::PullOptions;
use crate::store::{
    self, Base, CacheEntry, ImageDefaults, ImageRecord, LayerRecord, Ownership, Store, Txn,
};
use crate::upper::{self, StepLayer};
use crate::{fsx, Progress};
use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One RUN step for the runner to execute.
#[derive(Debug, Clone)]
pub struct RunStep {
    /// Dockerfile line of the step.
    pub line: usize,
    /// The flattened tree to run on (read-only lower layer).
    pub rootfs: PathBuf,
    /// Whether the tree sits on the host image (`FROM host`).
    pub base: Base,
    /// `KEY=VALUE`: the image's Env plus the build args in scope.
    pub env: Vec<String>,
    /// Absolute working directory (`/` if none set).
    pub workdir: String,
    /// USER as written (`name`, `uid`, `uid:gid`); empty means root.
    pub user: String,
    /// The command; shell form is `["/bin/sh", "-c", TEXT]`.
    pub argv: Vec<String>,
    /// Hosts the step may reach (`--allow-host`); empty means no network.
    pub allow_hosts: Vec<String>,
    /// Empty directory `upper` in a directory of its own on the store's
    /// filesystem: the overlayfs upper directory; after the run it must
    /// hold the step's changes.
    pub upper: PathBuf,
    /// Empty directory `work` beside `upper`: the overlayfs work directory.
    pub work: PathBuf,
}

/// How a RUN step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOutcome {
    pub exit_code: i32,
}

pub type RunnerError = Box<dyn std::error::Error + Send + Sync>;

/// Executes RUN steps (the sandbox, provided by the jail).
pub trait StepRunner {
    fn run(&self, step: &RunStep) -> std::result::Result<RunOutcome, RunnerError>;
}

/// Where FROM images come from when they are not in the store.
#[derive(Debug, Clone)]
pub struct BaseOptions {
    /// Registry access for FROM references.
    pub pull: PullOptions,
    /// Mirror for `FROM debian:<suite>` (default: the host's).
    pub debian_mirror: Option<String>,
}

impl Default for BaseOptions {
    fn default() -> Self {
        BaseOptions {
            pull: PullOptions::new("base"),
            debian_mirror: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub name: String,
    pub dockerfile: PathBuf,
    pub context: PathBuf,
    pub build_args: Vec<(String, String)>,
    pub limits: Limits,
    pub allow_hosts: Vec<String>,
    pub no_cache: bool,
    pub base: BaseOptions,
}

impl BuildOptions {
    pub fn new(name: &str, dockerfile: &Path, context: &Path) -> BuildOptions {
        BuildOptions {
            name: name.to_string(),
            dockerfile: dockerfile.to_path_buf(),
            context: context.to_path_buf(),
            build_args: Vec::new(),
            limits: Limits::default(),
            allow_hosts: Vec::new(),
            no_cache: false,
            base: BaseOptions::default(),
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    pub line: usize,
    pub instruction: String,
    /// A layer step served from the cache.
    pub cached: bool,
    /// Whether the step produced a layer.
    pub layer: bool,
}

#[derive(Debug, Clone)]
pub struct BuildReport {
    pub image: ImageRecord,
    pub steps: Vec<StepReport>,
}

/// Builds the Dockerfile `opts.dockerfile` with context `opts.context`.
pub fn build(
    store: &Store,
    opts: &BuildOptions,
    runner: Option<&dyn StepRunner>,
    puller: Option<&dyn crate::Puller>,
    progress: &dyn Progress,
) -> Result<BuildReport> {
    store::validate_name(&opts.name)?;
    let file = opts.dockerfile.display().to_string();
    let text = std::fs::read_to_string(&opts.dockerfile)
        .map_err(|e| ImageError::io("read", &opts.dockerfile, e))?;
    let df = dockerfile::parse(&text).map_err(|e| ImageError::Dockerfile {
        file: file.clone(),
        line: e.line,
        why: e.why,
    })?;
    let ctx = std::fs::canonicalize(&opts.context)
        .map_err(|e| ImageError::io("open build context", &opts.context, e))?;
    let esc = df.escape;
    let build_args: HashMap<String, String> = opts.build_args.iter().cloned().collect();
    let derr = |line: usize, why: String| ImageError::Dockerfile {
        file: file.clone(),
        line,
        why,
    };

    // Global ARGs, then the one FROM.
    let mut meta: HashMap<String, String> = HashMap::new();
    let mut from_at = None;
    for (i, ins) in df.instructions.iter().enumerate() {
        match &ins.inst {
            Inst::Arg(v) => {
                for (k, d) in v {
                    let val = match build_args.get(k) {
                        Some(b) => b.clone(),
                        None => match d {
                            Some(d) => {
                                dockerfile::expand(d, &meta, esc).map_err(|w| derr(ins.line, w))?
                            }
                            None => String::new(),
                        },
                    };
                    meta.insert(k.clone(), val);
                }
            }
            Inst::From { .. } => {
                from_at = Some(i);
                break;
            }
            _ => {
                return Err(derr(
                    ins.line,
                    "the first instruction must be FROM (only ARG may come before it)".into(),
                ))
            }
        }
    }
    let Some(from_at) = from_at else {
        return Err(derr(1, "no FROM instruction".into()));
    };
    if let Some(second) = df.instructions[from_at + 1..]
        .iter()
        .find(|i| matches!(i.inst, Inst::From { .. }))
    {
        return Err(derr(
            second.line,
            "a second FROM (multi-stage builds) is not supported".into(),
        ));
    }
    let from = &df.instructions[from_at];
    let Inst::From { image, .. } = &from.inst else {
        return Err(derr(from.line, "FROM expected".into()));
    };
    let image = dockerfile::expand(image, &meta, esc).map_err(|w| derr(from.line, w))?;
    progress.phase(&format!("FROM {image}"), None);
    let base_rec =
        resolve_base(store, &image, opts, puller, progress).map_err(|e| ImageError::Step {
            file: file.clone(),
            line: from.line,
            instruction: format!("FROM {image}"),
            why: e.to_string(),
        })?;
    progress.done();

    let mut txn = store.begin()?;
    let mut st = State {
        layers: Vec::new(),
        chain: None,
        defaults: ImageDefaults::default(),
        base: Base::Tree,
        setuid: false,
        cmd_inherited: true,
        history: Vec::new(),
    };
    let mut base_history = Vec::new();
    match &base_rec {
        BaseImage::Scratch => {}
        BaseImage::Host => st.base = Base::Host,
        BaseImage::Image(rec) => {
            st.layers = rec.layers.clone();
            st.chain = (!rec.layers.is_empty()).then(|| rec.chain_id.clone());
            st.defaults = rec.defaults.clone();
            st.base = rec.base;
            st.setuid = rec.setuid;
            if let Ok(cb) = store.read_blob(&rec.config_digest) {
                if let Ok(c) = ImageConfig::parse(&cb, "base config") {
                    base_history = c.history;
                }
            }
        }
    }
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut reports = Vec::new();
    let ignore = match std::fs::read_to_string(ctx.join(".dockerignore")) {
        Ok(t) => Ignore::parse(&t),
        Err(_) => Ignore::default(),
    };
    let total = df.instructions.len() - from_at - 1;
    for (n, ins) in df.instructions[from_at + 1..].iter().enumerate() {
        let line = ins.line;
        let serr = |why: String| ImageError::Step {
            file: file.clone(),
            line,
            instruction: ins
                .text
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase(),
            why,
        };
        progress.phase(&format!("[{}/{total}] {}", n + 1, ins.text), None);
        // Variables for expansion: ARGs, overridden by ENV.
        let mut vars: HashMap<String, String> =
            args.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for e in &st.defaults.env {
            if let Some((k, v)) = e.split_once('=') {
                vars.insert(k.to_string(), v.to_string());
            }
        }
        let x = |w: &str| dockerfile::expand(w, &vars, esc).map_err(&serr);
        let mut produced: Option<(StepLayer, bool)> = None;
        match &ins.inst {
            Inst::From { .. } => {}
            Inst::Arg(v) => {
                for (k, d) in v {
                    let val = match (build_args.get(k), d) {
                        (Some(b), _) => b.clone(),
                        (None, Some(d)) => x(d)?,
                        (None, None) => meta.get(k).cloned().unwrap_or_default(),
                    };
                    args.insert(k.clone(), val);
                }
            }
            Inst::Env(kv) => {
                for (k, v) in kv {
                    let v = x(v)?;
                    st.defaults
                        .env
                        .retain(|e| e.split_once('=').map(|(a, _)| a) != Some(k.as_str()));
                    // As in docker, later pairs of the same ENV see the
                    // values from before the instruction.
                    st.defaults.env.push(format!("{k}={v}"));
                }
            }
            Inst::Label(kv) => {
                for (k, v) in kv {
                    st.defaults.labels.insert(k.clone(), x(v)?);
                }
            }
            Inst::User(u) => st.defaults.user = Some(x(u)?),
            Inst::Entrypoint(c) => {
                st.defaults.entrypoint = Some(c.argv());
                if st.cmd_inherited {
                    st.defaults.cmd = None;
                }
            }
            Inst::Cmd(c) => {
                st.defaults.cmd = Some(c.argv());
                st.cmd_inherited = false;
            }
            Inst::Workdir(w) => {
                let w = x(w)?;
                let abs = absolute(st.defaults.working_dir.as_deref(), &w);
                st.defaults.working_dir = Some(abs.clone());
                let tree = current_tree(&mut txn, &st)?;
                let missing = missing_dirs(&tree, &abs).map_err(&serr)?;
                if !missing.is_empty() {
                    let key = step_key(&st, &format!("WORKDIR {abs}"), "", None);
                    produced = Some(cached_or(&mut txn, &key, opts.no_cache, |txn| {
                        upper::add_tar_layer(txn, st.chain.as_ref(), st.setuid, opts.limits, |w| {
                            let mut b = tar::Builder::new(w);
                            for d in &missing {
                                let mut h = dir_header(0o755, 0, 0, 0);
                                b.append_data(&mut h, format!("{d}/"), io::empty())
                                    .map_err(|e| werr(d, e))?;
                            }
                            b.finish().map_err(|e| werr("layer", e))
                        })
                    })?);
                }
            }
            Inst::Copy {
                add,
                srcs,
                dest,
                chown,
                chmod,
            } => {
                let srcs = srcs.iter().map(|s| x(s)).collect::<Result<Vec<_>>>()?;
                let dest = x(dest)?;
                let chown = chown.as_deref().map(&x).transpose()?;
                let tree = current_tree(&mut txn, &st)?;
                let plan = plan_copy(
                    &ctx,
                    &ignore,
                    *add,
                    &srcs,
                    &dest,
                    st.defaults.working_dir.as_deref(),
                    chown.as_deref(),
                    chmod.as_deref(),
                    &tree,
                )
                .map_err(&serr)?;
                let canonical = format!(
                    "{} {} {} --chown={} --chmod={}",
                    if *add { "ADD" } else { "COPY" },
                    srcs.join(" "),
                    dest,
                    chown.clone().unwrap_or_default(),
                    chmod.clone().unwrap_or_default()
                );
                let key = step_key(&st, &canonical, &plan.hash, None);
                produced = Some(cached_or(&mut txn, &key, opts.no_cache, |txn| {
                    upper::add_tar_layer(txn, st.chain.as_ref(), st.setuid, opts.limits, |w| {
                        write_copy(&plan, w)
                    })
                })?);
            }
            Inst::Run(c) => {
                let argv = c.argv();
                let canonical = match c {
                    CmdForm::Exec(v) => {
                        format!("RUN {}", serde_json::to_string(v).unwrap_or_default())
                    }
                    CmdForm::Shell(s) => format!("RUN {s}"),
                };
                let key = step_key(&st, &canonical, "", Some(&args));
                let hit = if opts.no_cache {
                    None
                } else {
                    txn.cached(&key)
                };
                let sl = match hit {
                    Some(c) => {
                        let tree = txn.tree(&c.rootfs).unwrap_or_default();
                        produced = Some((
                            StepLayer {
                                layer: c.layer,
                                chain_id: c.chain_id,
                                rootfs: c.rootfs,
                                tree,
                            },
                            true,
                        ));
                        None
                    }
                    None => {
                        let Some(runner) = runner else {
                            return Err(ImageError::Run {
                                file: file.clone(),
                                line,
                                why: "RUN steps need the sandbox runner: not wired yet".into(),
                            });
                        };
                        let rootfs = current_tree(&mut txn, &st)?;
                        // Both on one directory of the store's filesystem
                        // (overlayfs wants them on the same mount).
                        let run_dir = txn.scratch("run-")?;
                        let upper_dir = run_dir.join("upper");
                        let work = run_dir.join("work");
                        for d in [&upper_dir, &work] {
                            std::fs::create_dir(d).map_err(|e| ImageError::io("create", d, e))?;
                        }
                        let mut env = st.defaults.env.clone();
                        for (k, v) in &args {
                            if !env
                                .iter()
                                .any(|e| e.split_once('=').map(|(a, _)| a) == Some(k.as_str()))
                            {
                                env.push(format!("{k}={v}"));
                            }
                        }
                        let step = RunStep {
                            line,
                            rootfs,
                            base: st.base,
                            env,
                            workdir: st
                                .defaults
                                .working_dir
                                .clone()
                                .unwrap_or_else(|| "/".into()),
                            user: st.defaults.user.clone().unwrap_or_default(),
                            argv,
                            allow_hosts: opts.allow_hosts.clone(),
                            upper: upper_dir.clone(),
                            work: work.clone(),
                        };
                        let out = runner.run(&step).map_err(|e| ImageError::Run {
                            file: file.clone(),
                            line,
                            why: format!("the sandbox failed: {e}"),
                        })?;
                        if out.exit_code != 0 {
                            return Err(ImageError::Run {
                                file: file.clone(),
                                line,
                                why: format!("{canonical:?} exited with code {}", out.exit_code),
                            });
                        }
                        let sl = upper::commit_upper(
                            &mut txn,
                            st.chain.as_ref(),
                            &upper_dir,
                            st.setuid,
                            opts.limits,
                        )?;
                        fsx::remove_tree(&run_dir)?;
                        Some(sl)
                    }
                };
                if let Some(sl) = sl {
                    txn.cache_put(
                        key,
                        CacheEntry {
                            chain_id: sl.chain_id.clone(),
                            rootfs: sl.rootfs.clone(),
                            layer: sl.layer.clone(),
                        },
                    );
                    produced = Some((sl, false));
                }
            }
        }
        let mut report = StepReport {
            line,
            instruction: ins.text.clone(),
            cached: false,
            layer: false,
        };
        if let Some((sl, cached)) = produced {
            report.cached = cached;
            report.layer = true;
            st.layers.push(sl.layer.clone());
            st.chain = Some(sl.chain_id.clone());
            if cached {
                progress.note(&format!("line {line}: CACHED {}", ins.text));
            }
        }
        st.history.push(History {
            created: Some(store::now_rfc3339()),
            created_by: Some(ins.text.clone()),
            empty_layer: !report.layer,
        });
        reports.push(report);
        progress.done();
    }

    // The image: config, manifest, record.
    let tree = current_tree(&mut txn, &st)?;
    let rootfs_key = match &st.chain {
        Some(c) => tree_key(c, st.setuid),
        None => tree_key(&Digest::chain_of(&[]), false),
    };
    let mut config = ImageConfig::from_defaults(&st.defaults);
    config.created = Some(store::now_rfc3339());
    config.rootfs.diff_ids = st.layers.iter().map(|l| l.diff_id.to_string()).collect();
    config.history = base_history;
    config.history.extend(st.history.iter().cloned());
    let cbytes = serde_json::to_vec(&config).map_err(|e| ImageError::Format {
        what: "config".into(),
        why: e.to_string(),
    })?;
    let cdigest = txn.put_blob_bytes(&cbytes, None, "config")?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MT_OCI_MANIFEST.into()),
        config: Descriptor {
            media_type: oci::MT_OCI_CONFIG.into(),
            digest: cdigest.to_string(),
            size: cbytes.len() as i64,
            platform: None,
            annotations: None,
        },
        layers: st
            .layers
            .iter()
            .map(|l| Descriptor {
                media_type: l.media_type.clone(),
                digest: l.digest.to_string(),
                size: l.size as i64,
                platform: None,
                annotations: None,
            })
            .collect(),
    };
    let mbytes = serde_json::to_vec(&manifest).map_err(|e| ImageError::Format {
        what: "manifest".into(),
        why: e.to_string(),
    })?;
    let mdigest = txn.put_blob_bytes(&mbytes, None, "manifest")?;
    let rec = ImageRecord {
        name: opts.name.clone(),
        manifest_digest: mdigest,
        config_digest: cdigest,
        chain_id: st.chain.clone().unwrap_or_else(|| Digest::chain_of(&[])),
        rootfs: rootfs_key,
        layers: st.layers.clone(),
        created: store::now_rfc3339(),
        size: fsx::tree_size(&tree)?,
        defaults: st.defaults.clone(),
        ownership: Ownership::current(),
        base: st.base,
        setuid: st.setuid,
        source: format!("build {}", opts.dockerfile.display()),
    };
    txn.set_image(rec.clone());
    txn.commit()?;
    Ok(BuildReport {
        image: rec,
        steps: reports,
    })
}

enum BaseImage {
    Scratch,
    Host,
    Image(Box<ImageRecord>),
}

/// FROM: `scratch`, `host`, an image in the store, `debian:<suite>`
/// (mmdebstrap), or a registry reference (pulled).
fn resolve_base(
    store: &Store,
    image: &str,
    opts: &BuildOptions,
    puller: Option<&dyn crate::Puller>,
    progress: &dyn Progress,
) -> Result<BaseImage> {
    match image {
        "scratch" => return Ok(BaseImage::Scratch),
        "host" => return Ok(BaseImage::Host),
        _ => {}
    }
    if let Ok(rec) = store.get(image) {
        return Ok(BaseImage::Image(Box::new(rec)));
    }
    if let Some(suite) = image.strip_prefix("debian:") {
        if !suite.is_empty() && suite.bytes().all(|b| b.is_ascii_lowercase()) {
            let mut d = DebianOptions::new(image, suite);
            d.import.limits = opts.limits;
            d.mirror = opts.base.debian_mirror.clone();
            return Ok(BaseImage::Image(Box::new(debian::build_debian(
                store, &d, progress,
            )?)));
        }
    }
    let mut p = opts.base.pull.clone();
    p.import = ImportOptions {
        name: image.to_string(),
        limits: opts.limits,
        allow_setuid: false,
    };
    let puller = puller.ok_or_else(|| ImageError::Registry {
        registry: image.to_string(),
        why: "pulling from a registry is not available here".into(),
    })?;
    Ok(BaseImage::Image(Box::new(
        puller.pull(store, image, &p, progress)?,
    )))
}

struct State {
    layers: Vec<LayerRecord>,
    chain: Option<Digest>,
    defaults: ImageDefaults,
    base: Base,
    setuid: bool,
    cmd_inherited: bool,
    history: Vec<History>,
}

/// The tree of the current chain (the empty tree for no layers).
fn current_tree(txn: &mut Txn<'_>, st: &State) -> Result<PathBuf> {
    match &st.chain {
        Some(c) => {
            let key = tree_key(c, st.setuid);
            txn.tree(&key).ok_or_else(|| ImageError::State {
                path: txn.store().tree_dir(&key),
                why: "the tree of the build's base is missing from the store".into(),
            })
        }
        None => {
            let key = tree_key(&Digest::chain_of(&[]), false);
            if let Some(t) = txn.tree(&key) {
                return Ok(t);
            }
            let t = txn.new_tree(None)?;
            txn.finish_tree(t, &key)
        }
    }
}

fn step_key(
    st: &State,
    canonical: &str,
    content: &str,
    args: Option<&BTreeMap<String, String>>,
) -> String {
    let v = serde_json::json!({
        "v": 1,
        "parent": st.chain.as_ref().map(|c| c.to_string()),
        "setuid": st.setuid,
        "base": format!("{:?}", st.base),
        "step": canonical,
        "env": st.defaults.env,
        "workdir": st.defaults.working_dir,
        "user": st.defaults.user,
        "args": args,
        "content": content,
    });
    Digest::of(v.to_string().as_bytes()).to_string()
}

fn cached_or(
    txn: &mut Txn<'_>,
    key: &str,
    no_cache: bool,
    make: impl FnOnce(&mut Txn<'_>) -> Result<StepLayer>,
) -> Result<(StepLayer, bool)> {
    if !no_cache {
        if let Some(c) = txn.cached(key) {
            let tree = txn.tree(&c.rootfs).unwrap_or_default();
            return Ok((
                StepLayer {
                    layer: c.layer,
                    chain_id: c.chain_id,
                    rootfs: c.rootfs,
                    tree,
                },
                true,
            ));
        }
    }
    let sl = make(txn)?;
    txn.cache_put(
        key.to_string(),
        CacheEntry {
            chain_id: sl.chain_id.clone(),
            rootfs: sl.rootfs.clone(),
            layer: sl.layer.clone(),
        },
    );
    Ok((sl, false))
}

fn werr(what: &str, e: io::Error) -> ImageError {
    ImageError::io("write layer", what, e)
}

fn absolute(cur: Option<&str>, p: &str) -> String {
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{}/{p}", cur.unwrap_or("/"))
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The components of absolute `dir` missing in `tree`, as relative paths
/// (`a`, `a/b`); a symlink on the way is refused.
fn missing_dirs(tree: &Path, dir: &str) -> std::result::Result<Vec<String>, String> {
    let root = fsx::open_dir(tree).map_err(|e| e.to_string())?;
    let mut cur = fsx::open_dir_beneath(root.as_fd(), b"").map_err(|e| e.to_string())?;
    let comps: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
    let mut missing = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        let rel = comps[..=i].join("/");
        if !missing.is_empty() {
            missing.push(rel);
            continue;
        }
        match fsx::exists_at(cur.as_fd(), c.as_bytes()).map_err(|e| e.to_string())? {
            None => missing.push(rel),
            Some(st) => match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    cur = fsx::open_subdir(cur.as_fd(), c.as_bytes()).map_err(|e| e.to_string())?;
                }
                FileType::Symlink => return Err(format!("/{rel} is a symlink in the image; a destination through a symlink is not supported")),
                _ => return Err(format!("/{rel} exists in the image and is not a directory")),
            },
        }
    }
    Ok(missing)
}

fn dir_header(mode: u32, uid: u32, gid: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(mode);
    h.set_uid(uid as u64);
    h.set_gid(gid as u64);
    h.set_mtime(mtime);
    h.set_size(0);
    h
}

enum Item {
    Dir {
        mode: u32,
        mtime: u64,
    },
    File {
        host: PathBuf,
        mode: u32,
        size: u64,
        mtime: u64,
    },
    Symlink {
        target: String,
        mtime: u64,
    },
    /// ADD of a local tar: its entries go under the destination.
    Extract {
        host: PathBuf,
    },
}

struct CopyPlan {
    /// (path relative to the image root, what) in order.
    items: Vec<(String, Item)>,
    uid: u32,
    gid: u32,
    chmod: Option<u32>,
    hash: String,
}

fn clean_ctx(src: &str) -> std::result::Result<String, String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in src.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("{src:?} is outside the build context"));
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Every path in the context (relative), directories before their contents.
fn context_paths(ctx: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(PathBuf::new(), 0usize)];
    while let Some((rel, depth)) = stack.pop() {
        if depth > fsx::MAX_DEPTH {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(ctx.join(&rel)) else {
            continue;
        };
        let mut names: Vec<_> = rd.flatten().collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let r = rel.join(e.file_name());
            out.push(r.to_string_lossy().into_owned());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((r, depth + 1));
            }
        }
    }
    out
}

/// A name in the image's /etc/passwd or /etc/group, read without
/// following symlinks out of the tree.
/// The entry `name` of the image's `/etc/passwd` or `/etc/group`, as its
/// fields; read without following symlinks out of the tree.
fn etc_entry(tree: &Path, file: &str, name: &str) -> Option<Vec<String>> {
    let root = fsx::open_dir(tree).ok()?;
    let etc = fsx::open_dir_beneath(root.as_fd(), b"etc").ok()?;
    let fd = rfs::openat(
        &etc,
        file,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut s = String::new();
    File::from(fd).take(1 << 20).read_to_string(&mut s).ok()?;
    s.lines()
        .map(|l| l.split(':').map(String::from).collect::<Vec<_>>())
        .find(|f| f.first().is_some_and(|n| n == name))
}

/// `--chown USER[:GROUP]`: numbers, or names from the image's passwd and
/// group files; without a group, the user's primary group.
fn parse_chown(tree: &Path, spec: &str) -> std::result::Result<(u32, u32), String> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let field = |f: &[String], i: usize| f.get(i).and_then(|x| x.parse::<u32>().ok());
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => {
            let f = etc_entry(tree, "passwd", u)
                .ok_or_else(|| format!("--chown: no user {u:?} in the image's /etc/passwd"))?;
            match (field(&f, 2), field(&f, 3)) {
                (Some(uid), Some(gid)) => (uid, gid),
                _ => return Err(format!("--chown: bad /etc/passwd entry for {u:?}")),
            }
        }
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => etc_entry(tree, "group", g)
                .and_then(|f| field(&f, 2))
                .ok_or_else(|| format!("--chown: no group {g:?} in the image's /etc/group"))?,
        },
    };
    if uid >= 65536 || gid >= 65536 {
        return Err(format!("--chown {spec}: ids must be below 65536"));
    }
    Ok((uid, gid))
}

fn is_tar_file(p: &Path) -> bool {
    let Ok(f) = File::open(p) else { return false };
    let Ok(mut r) = layer::decompress(f) else {
        return false;
    };
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < 512 {
        match r.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n == 512 && (&head[257..262] == b"ustar")
}

fn mtime_of(md: &std::fs::Metadata) -> u64 {
    md.mtime().max(0) as u64
}

#[allow(clippy::too_many_arguments)]
fn plan_copy(
    ctx: &Path,
    ignore: &Ignore,
    add: bool,
    srcs: &[String],
    dest: &str,
    workdir: Option<&str>,
    chown: Option<&str>,
    chmod: Option<&str>,
    tree: &Path,
) -> std::result::Result<CopyPlan, String> {
    let (uid, gid) = match chown {
        Some(c) => parse_chown(tree, c)?,
        None => (0, 0),
    };
    let chmod = match chmod {
        Some(m) => Some(
            u32::from_str_radix(m, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| format!("--chmod {m:?}: an octal mode"))?,
        ),
        None => None,
    };
    // Sources: (context-relative path).
    let mut found: Vec<String> = Vec::new();
    let mut all: Option<Vec<String>> = None;
    for s in srcs {
        if s.contains("://") || s.starts_with("git@") {
            return Err(if add {
                format!("ADD of a URL ({s}) is not supported: download it into the build context and COPY it")
            } else {
                format!("COPY cannot fetch {s}: only files in the build context")
            });
        }
        let rel = clean_ctx(s)?;
        if dockerfile::has_glob(&rel) {
            let paths = all.get_or_insert_with(|| context_paths(ctx));
            let pat: Vec<&str> = rel.split('/').collect();
            let hits: Vec<String> = paths
                .iter()
                .filter(|p| {
                    let parts: Vec<&str> = p.split('/').collect();
                    dockerfile::match_path(&pat, &parts) && !ignore.excluded(p)
                })
                .cloned()
                .collect();
            if hits.is_empty() {
                return Err(format!("no file in the build context matches {s:?}"));
            }
            found.extend(hits);
        } else {
            if (!rel.is_empty() && ignore.excluded(&rel))
                || std::fs::symlink_metadata(ctx.join(&rel)).is_err()
            {
                return Err(format!(
                    "{s:?} not found in the build context{}",
                    if ignore.excluded(&rel) {
                        " (excluded by .dockerignore)"
                    } else {
                        ""
                    }
                ));
            }
            found.push(rel);
        }
    }
    let dest_abs = absolute(workdir, dest);
    let single_dir =
        found.len() == 1 && std::fs::metadata(ctx.join(&found[0])).is_ok_and(|m| m.is_dir());
    let dest_is_dir = dest.ends_with('/') || found.len() > 1 || single_dir;
    let dest_rel = dest_abs.trim_start_matches('/').to_string();
    let mut items: Vec<(String, Item)> = Vec::new();
    // Missing parents (and the destination directory itself).
    let dir_of_dest = if dest_is_dir {
        dest_abs.clone()
    } else {
        absolute(None, &format!("{dest_abs}/.."))
    };
    let missing = missing_dirs(tree, &dir_of_dest)?;
    let ctx_canon = ctx.to_path_buf();
    for m in &missing {
        items.push((
            m.clone(),
            Item::Dir {
                mode: 0o755,
                mtime: 0,
            },
        ));
    }
    let under = |base: &str, name: &str| {
        if base.is_empty() {
            name.to_string()
        } else {
            format!("{base}/{name}")
        }
    };
    for rel in &found {
        let host = ctx.join(rel);
        // A top-level symlink is followed, inside the context only.
        let host = match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                let t = std::fs::canonicalize(&host).map_err(|e| format!("{rel:?}: {e}"))?;
                if !t.starts_with(&ctx_canon) {
                    return Err(format!("{rel:?} is a symlink out of the build context"));
                }
                t
            }
            _ => host,
        };
        let md = std::fs::metadata(&host).map_err(|e| format!("{rel:?}: {e}"))?;
        let base_name = Path::new(rel)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if md.is_dir() {
            // The contents of a directory go into the destination (as
            // with docker, also when several directories are copied).
            let target = dest_rel.clone();
            let mut stack = vec![(host.clone(), rel.clone(), target.clone(), 0usize)];
            while let Some((hdir, crel, drel, depth)) = stack.pop() {
                if depth > fsx::MAX_DEPTH {
                    return Err(format!("{crel:?} is nested too deep"));
                }
                let mut ents: Vec<_> = std::fs::read_dir(&hdir)
                    .map_err(|e| format!("{crel:?}: {e}"))?
                    .flatten()
                    .collect();
                ents.sort_by_key(|e| e.file_name());
                let mut subdirs = Vec::new();
                for e in ents {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let c = under(&crel, &name);
                    if ignore.excluded(&c) {
                        continue;
                    }
                    let d = under(&drel, &name);
                    let m =
                        std::fs::symlink_metadata(e.path()).map_err(|x| format!("{c:?}: {x}"))?;
                    let ft = m.file_type();
                    if ft.is_dir() {
                        items.push((
                            d.clone(),
                            Item::Dir {
                                mode: m.mode() & 0o7777,
                                mtime: mtime_of(&m),
                            },
                        ));
                        subdirs.push((e.path(), c, d, depth + 1));
                    } else if ft.is_symlink() {
                        let t = std::fs::read_link(e.path()).map_err(|x| format!("{c:?}: {x}"))?;
                        items.push((
                            d,
                            Item::Symlink {
                                target: t.to_string_lossy().into_owned(),
                                mtime: mtime_of(&m),
                            },
                        ));
                    } else if ft.is_file() {
                        items.push((
                            d,
                            Item::File {
                                host: e.path(),
                                mode: m.mode() & 0o7777,
                                size: m.len(),
                                mtime: mtime_of(&m),
                            },
                        ));
                    }
                    // Sockets, devices and FIFOs of the context are skipped.
                }
                subdirs.reverse();
                stack.extend(subdirs);
            }
        } else if md.is_file() {
            if add && is_tar_file(&host) {
                // A local tar is unpacked into the destination directory.
                items.push((dest_rel.clone(), Item::Extract { host }));
            } else {
                let d = if dest_is_dir {
                    under(&dest_rel, &base_name)
                } else {
                    dest_rel.clone()
                };
                items.push((
                    d,
                    Item::File {
                        host,
                        mode: md.mode() & 0o7777,
                        size: md.len(),
                        mtime: mtime_of(&md),
                    },
                ));
            }
        } else {
            return Err(format!("{rel:?} is not a regular file or directory"));
        }
    }
    // The content hash: paths, kinds, modes, sizes, link targets, contents.
    let mut h = Hasher::new();
    h.update(format!("{uid}:{gid}:{chmod:?}\n").as_bytes());
    for (p, it) in &items {
        match it {
            Item::Dir { mode, .. } => h.update(format!("d {p} {mode:o}\n").as_bytes()),
            Item::Symlink { target, .. } => h.update(format!("l {p} {target}\n").as_bytes()),
            Item::File {
                host, mode, size, ..
            } => {
                h.update(format!("f {p} {mode:o} {size} ").as_bytes());
                hash_file(&mut h, host).map_err(|e| format!("{}: {e}", host.display()))?;
                h.update(b"\n");
            }
            Item::Extract { host } => {
                h.update(format!("x {p} ").as_bytes());
                hash_file(&mut h, host).map_err(|e| format!("{}: {e}", host.display()))?;
                h.update(b"\n");
            }
        }
    }
    Ok(CopyPlan {
        items,
        uid,
        gid,
        chmod,
        hash: h.finish().to_string(),
    })
}

fn hash_file(h: &mut Hasher, p: &Path) -> io::Result<()> {
    let mut f = File::open(p)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

fn write_copy(plan: &CopyPlan, w: &mut dyn Write) -> Result<()> {
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    for (p, it) in &plan.items {
        match it {
            Item::Dir { mode, mtime } => {
                let mut h = dir_header(plan.chmod.unwrap_or(*mode), plan.uid, plan.gid, *mtime);
                b.append_data(&mut h, format!("{p}/"), io::empty())
                    .map_err(|e| werr(p, e))?;
            }
            Item::File {
                host,
                mode,
                size,
                mtime,
            } => {
                let f = File::open(host).map_err(|e| ImageError::io("open", host, e))?;
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(plan.chmod.unwrap_or(*mode));
                h.set_uid(plan.uid as u64);
                h.set_gid(plan.gid as u64);
                h.set_mtime(*mtime);
                h.set_size(*size);
                // A file that changed size since it was hashed fails here.
                b.append_data(&mut h, p, f.take(*size))
                    .map_err(|e| werr(p, e))?;
            }
            Item::Symlink { target, mtime } => {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_uid(plan.uid as u64);
                h.set_gid(plan.gid as u64);
                h.set_mtime(*mtime);
                h.set_size(0);
                b.append_link(&mut h, p, target).map_err(|e| werr(p, e))?;
            }
            Item::Extract { host } => {
                let f = File::open(host).map_err(|e| ImageError::io("open", host, e))?;
                let r = layer::decompress(f).map_err(|e| ImageError::io("read", host, e))?;
                let mut ar = tar::Archive::new(r);
                let entries = ar.entries().map_err(|e| ImageError::io("read", host, e))?;
                for ent in entries {
                    let mut ent = ent.map_err(|e| ImageError::io("read", host, e))?;
                    let path = String::from_utf8_lossy(&ent.path_bytes()).into_owned();
                    let np = if p.is_empty() {
                        path.clone()
                    } else {
                        format!("{p}/{path}")
                    };
                    let mut h = ent.header().clone();
                    match h.entry_type() {
                        tar::EntryType::Link => {
                            let t = ent
                                .link_name_bytes()
                                .map(|t| String::from_utf8_lossy(&t).into_owned())
                                .unwrap_or_default();
                            let nt = if p.is_empty() { t } else { format!("{p}/{t}") };
                            b.append_link(&mut h, &np, &nt).map_err(|e| werr(&np, e))?;
                        }
                        tar::EntryType::Symlink => {
                            let t = ent
                                .link_name_bytes()
                                .map(|t| String::from_utf8_lossy(&t).into_owned())
                                .unwrap_or_default();
                            b.append_link(&mut h, &np, &t).map_err(|e| werr(&np, e))?;
                        }
                        tar::EntryType::XGlobalHeader => {}
                        _ => {
                            b.append_data(&mut h, &np, &mut ent)
                                .map_err(|e| werr(&np, e))?;
                        }
                    }
                }
            }
        }
    }
    b.finish().map_err(|e| werr("layer", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chown_names_from_the_image() {
        let t = std::env::temp_dir().join(format!("airlock-chown-{}", std::process::id()));
        std::fs::create_dir_all(t.join("etc")).unwrap();
        std::fs::write(
            t.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1001:1002::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(t.join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(parse_chown(&t, "app"), Ok((1001, 1002)));
        assert_eq!(parse_chown(&t, "app:staff"), Ok((1001, 50)));
        assert_eq!(parse_chown(&t, "5:6"), Ok((5, 6)));
        assert_eq!(parse_chown(&t, "7"), Ok((7, 7)));
        assert!(parse_chown(&t, "nobody").unwrap_err().contains("no user"));
        assert!(parse_chown(&t, "app:wheel")
            .unwrap_err()
            .contains("no group"));
        assert!(parse_chown(&t, "70000")
            .unwrap_err()
            .contains("below 65536"));
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn absolute_paths() {
        assert_eq!(absolute(None, "app"), "/app");
        assert_eq!(absolute(Some("/a"), "b/../c"), "/a/c");
        assert_eq!(absolute(Some("/a"), "/x/"), "/x");
        assert_eq!(clean_ctx("./a/../b").unwrap(), "b");
        assert!(clean_ctx("../x").is_err());
    }
}
