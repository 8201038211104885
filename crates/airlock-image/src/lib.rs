//! Airlock's images: a content-addressed store of flattened root trees,
//! filled by importing `docker save` / OCI archives and layouts, pulling
//! from OCI registries, building Debian images with `mmdebstrap`, and
//! building Dockerfiles.
//!
//! Both sandbox tiers use the trees: the container tier mounts one read-only
//! as the lower layer of an overlay; the microVM tier builds a disk image
//! from it.

mod build;
mod debian;
mod digest;
pub mod dockerfile;
mod error;
mod fsx;
mod import;
mod layer;
pub mod oci;
mod pull;
mod store;
mod upper;

pub use build::{
    build, BaseOptions, BuildOptions, BuildReport, RunOutcome, RunStep, RunnerError, StepReport,
    StepRunner,
};
pub use debian::{build_debian, host_mirror, DebianOptions};
pub use digest::{Digest, Hasher};
pub use error::{ImageError, Result};
pub use import::{import, ImportOptions};
pub use layer::{apply_layer, ApplyOptions, Budget, Limits};
pub use pull::{docker_config_auth, parse_reference, pull, PullOptions};
pub use store::{
    default_state_dir, now_rfc3339, rfc3339, validate_name, Base, CacheEntry, ImageDefaults,
    ImageRecord, LayerRecord, Ownership, Store, Txn,
};
pub use upper::{add_tar_layer, commit_upper, upper_to_tar, StepLayer};

/// Progress reports for long operations (a CLI draws bars; tests ignore them).
pub trait Progress: Sync {
    /// A new phase: a message and, when known, its total bytes.
    fn phase(&self, _msg: &str, _total: Option<u64>) {}
    /// Bytes done in the current phase.
    fn advance(&self, _bytes: u64) {}
    /// The current phase is over.
    fn done(&self) {}
    /// A one-line note for the user.
    fn note(&self, _msg: &str) {}
}

/// Brings a registry image into the store. The registry client is a
/// separate program in airlock (`airlock-pull`): its TLS and HTTP stack
/// would otherwise load with every `airlock run` and every agent.
pub trait Puller {
    fn pull(
        &self,
        store: &Store,
        reference: &str,
        opts: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<ImageRecord>;
}

/// Pulls in this process, with the registry client linked in.
pub struct RegistryPuller;

impl Puller for RegistryPuller {
    fn pull(
        &self,
        store: &Store,
        reference: &str,
        opts: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<ImageRecord> {
        pull::pull(store, reference, opts, progress)
    }
}

/// Reports nothing.
pub struct Silent;
impl Progress for Silent {}
