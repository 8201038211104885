//! Every way an image operation can fail, each with its context.

use std::path::PathBuf;

/// Why an archive entry was refused: one rule per variant's `rule` text.
pub type Rule = String;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A filesystem operation on the store or a tree failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A layer entry broke an extraction rule (hostile or broken archive).
    #[error("layer {layer}: entry {entry:?}: {rule}")]
    Extract {
        layer: String,
        entry: String,
        rule: Rule,
    },
    /// A layer stream could not be read (truncated, corrupt compression, over a cap).
    #[error("layer {layer}: {why}")]
    Layer { layer: String, why: String },
    /// Content did not hash to the digest that names it.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// A string that should be a digest is not one we accept.
    #[error("invalid digest {input:?}: {why}")]
    BadDigest { input: String, why: &'static str },
    /// The archive, layout or registry gave a document we cannot use.
    #[error("{what}: {why}")]
    Format { what: String, why: String },
    /// A blob the manifest or index refers to is not there.
    #[error("{what} refers to {digest}, which is not in the {source_kind}")]
    MissingBlob {
        what: String,
        digest: String,
        source_kind: &'static str,
    },
    /// No image by that name in the store.
    #[error("no image named {name:?} in the store (see airlock image ls)")]
    NotFound { name: String },
    /// An image name we do not accept.
    #[error("invalid image name {name:?}: {why}")]
    BadName { name: String, why: &'static str },
    /// A size or count cap was exceeded.
    #[error("{what} exceeds the limit of {limit} ({hint})")]
    Limit {
        what: String,
        limit: u64,
        hint: &'static str,
    },
    /// The store index or cache file is unreadable.
    #[error("store file {path}: {why}")]
    Corrupt { path: PathBuf, why: String },
    /// The registry said no, or could not be reached.
    #[error("registry {registry}: {why}")]
    Registry { registry: String, why: String },
    /// A reference (REF of `image pull`, or a FROM) we cannot parse.
    /// Reported by a helper program (`airlock-pull`), already worded.
    #[error("{0}")]
    Reported(String),
    #[error("invalid image reference {input:?}: {why}")]
    BadReference { input: String, why: String },
    /// Plain HTTP asked for a registry that is neither loopback nor named.
    #[error("refusing plain HTTP to registry {registry}: --insecure is only for loopback registries; name a registry you trust with --insecure-registry {registry}")]
    Insecure { registry: String },
    /// Credentials could not be read.
    #[error("credentials for {registry}: {why}")]
    Credentials { registry: String, why: String },
    /// An external tool (mmdebstrap) failed or is missing.
    #[error("{tool}: {why}")]
    Tool { tool: &'static str, why: String },
    /// The Dockerfile could not be parsed.
    #[error("{file}:{line}: {why}")]
    Dockerfile {
        file: String,
        line: usize,
        why: String,
    },
    /// A build step failed.
    #[error("{file}:{line}: {instruction}: {why}")]
    Step {
        file: String,
        line: usize,
        instruction: String,
        why: String,
    },
    /// A RUN step, and no runner (or the runner failed).
    #[error("{file}:{line}: RUN: {why}")]
    Run {
        file: String,
        line: usize,
        why: String,
    },
    /// An overlayfs upper directory we cannot turn into a layer.
    #[error("upper directory entry {entry:?}: {why}")]
    Upper { entry: String, why: String },
    /// Host apt sources could not give a Debian mirror.
    #[error("cannot find a Debian mirror in the host's apt sources ({why})")]
    Mirror { why: String },
    /// The state directory cannot be determined or used.
    #[error("state directory {path}: {why}")]
    State { path: PathBuf, why: String },
}

impl ImageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImageError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
