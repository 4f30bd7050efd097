//! The registry domain: what a repository holds and how it changes.
//!
//! [`Registry`] owns a storage [`Backend`] and a set of read-only
//! [`ImageSource`]s. It enforces the rules of the distribution spec that do
//! not depend on HTTP: digests are verified while streaming, blobs are only
//! readable from repositories they were pushed or mounted into, manifests
//! must reference content the repository holds, tags move atomically, and
//! read-only sources refuse writes.

pub mod augment;
mod blobs;
pub mod browse;
mod catalog;
pub mod catalog_index;
mod error;
pub mod gc;
mod hashing;
pub mod inventory;
mod manifests;
pub mod proxy;
mod resolved;
pub mod rules;
pub mod source;
pub mod sources;
mod uploads;

pub use augment::{Augmentation, InjectedLayer};
pub use blobs::BlobContent;
pub use catalog::CatalogPage;
pub use error::{RegistryError, Result};
pub use gc::shared::SharedTiming;
pub use gc::{GcOptions, GcReport, GcStep, ProgressHook};
pub use manifests::{ManifestContent, PutManifest, TagsPage};
pub use proxy::{CacheBound, Credentials, EvictionReport, UpstreamConfig};
pub use rules::{ImmutableRule, QuotaRule, RetentionRule, Rules, UsageReport};
pub use source::ImageSource;
pub use uploads::UploadStatus;

use berth_spec::RepoName;
use berth_storage::Backend;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Uploads not finished within this long are removed by [`Registry::purge_stale_uploads`].
    pub upload_max_age: Duration,
    /// Accept manifests whose layers or index children were never pushed
    /// (the spec lets a registry choose; distribution-spec's `OCI_DATA_SPARSE`).
    /// The config blob of an image is still required.
    pub allow_sparse_manifests: bool,
    /// Whether manifests, tags and blobs may be deleted. Off, every delete is
    /// refused as unsupported (what distribution does by default).
    pub deletes: bool,
    /// Garbage collection's grace period and untagged-manifest policy (see [`GcOptions`]).
    pub gc_grace: Duration,
    pub delete_untagged_after: Option<Duration>,
    /// Retention, immutable tags and quotas by repository pattern.
    pub rules: Rules,
    /// The size bound of the upstream mirror's cache, if any.
    pub upstream_cache: Option<CacheBound>,
    /// Whether this process is the only writer of its storage (the data
    /// directory's lock makes it so; S3 replicas share a bucket). When not,
    /// garbage collection's reference gate and lease live in the store too
    /// (see [`gc::shared`]).
    pub exclusive_storage: bool,
    /// The durations of that shared protocol (the same on every replica).
    pub gc_shared: SharedTiming,
    /// Answer blob GETs with a redirect to a presigned URL of the store, valid
    /// this long, instead of streaming the bytes (`--redirect`; only where
    /// the backend signs URLs: S3). HEAD is answered here all the same.
    pub blob_redirect: Option<Duration>,
    /// On storage others write: how long a manifest GET or HEAD may be
    /// answered from what its reference resolved to on this replica (see
    /// [`resolved`]); zero reads the store every time. Writes through this
    /// replica are seen at once, other replicas' within this bound.
    pub reference_cache_ttl: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            upload_max_age: Duration::from_secs(24 * 3600),
            allow_sparse_manifests: false,
            deletes: true,
            gc_grace: Duration::from_secs(24 * 3600),
            delete_untagged_after: None,
            rules: Rules::default(),
            upstream_cache: None,
            exclusive_storage: true,
            gc_shared: SharedTiming::default(),
            blob_redirect: None,
            reference_cache_ttl: Duration::from_secs(1),
        }
    }
}

pub struct Registry {
    backend: Arc<dyn Backend>,
    sources: Vec<Arc<dyn ImageSource>>,
    /// Upstream registries mirrored under their prefixes (see [`proxy`]).
    mirrors: Vec<Arc<proxy::Mirror>>,
    uploads: uploads::UploadTable,
    manifest_cache: manifests::ManifestCache,
    /// On storage others write, what manifest references resolved to lately.
    resolved: Option<Arc<resolved::ResolvedCache>>,
    config: RegistryConfig,
    /// Where pushes and the garbage collector agree on what may be deleted.
    gate: gc::gate::ReferenceGate,
    /// The same, in the store, on storage other processes write.
    shared_gate: Option<gc::shared::SharedGate>,
    /// Held by the running garbage collection pass.
    gc_running: tokio::sync::Mutex<()>,
    /// The catalog index was seen complete (see [`catalog_index`]).
    catalog_indexed: std::sync::atomic::AtomicBool,
    /// Tag writes hold it shared; retention's tag deletes and pushes of
    /// immutable tags hold it alone, to check and write as one step.
    tag_writes: tokio::sync::RwLock<()>,
    /// The usage each quota counts.
    quotas: rules::quota::QuotaCounters,
    /// Where garbage collection passes are counted, when metrics are on.
    metrics: Option<Arc<berth_metrics::Metrics>>,
    /// Manifest summaries for browsing, by digest.
    summaries: browse::SummaryCache,
    /// Augmentation definitions and augmented manifests (see [`augment`]).
    augment: augment::AugmentState,
}

impl Registry {
    pub fn new(backend: Arc<dyn Backend>, config: RegistryConfig) -> Registry {
        // Where other processes write too, the catalog is paged from an
        // index that every link written keeps up to date (see
        // `catalog_index`).
        let backend: Arc<dyn Backend> = if config.exclusive_storage {
            backend
        } else {
            Arc::new(berth_storage::CatalogIndexed::new(backend))
        };
        // Outermost, so that every write of the registry passes it.
        let resolved = (!config.exclusive_storage && !config.reference_cache_ttl.is_zero())
            .then(|| Arc::new(resolved::ResolvedCache::new(config.reference_cache_ttl)));
        let backend: Arc<dyn Backend> = match &resolved {
            Some(cache) => Arc::new(resolved::Invalidating::new(backend, cache.clone())),
            None => backend,
        };
        let shared_gate =
            (!config.exclusive_storage).then(|| gc::shared::SharedGate::new(backend.clone(), config.gc_shared));
        let quotas = rules::quota::QuotaCounters::new(
            &config.rules.quotas,
            (!config.exclusive_storage).then(|| rules::ledger::Ledger::new(backend.clone(), config.gc_shared.into())),
        );
        Registry {
            backend,
            sources: Vec::new(),
            mirrors: Vec::new(),
            uploads: uploads::UploadTable::default(),
            manifest_cache: manifests::ManifestCache::default(),
            resolved,
            gate: gc::gate::ReferenceGate::default(),
            shared_gate,
            gc_running: tokio::sync::Mutex::new(()),
            catalog_indexed: std::sync::atomic::AtomicBool::new(false),
            tag_writes: tokio::sync::RwLock::new(()),
            quotas,
            config,
            metrics: None,
            summaries: browse::SummaryCache::default(),
            augment: augment::AugmentState::default(),
        }
    }

    /// Serves the repositories of `source` (those under its prefix) read-only.
    pub fn add_source(&mut self, source: Arc<dyn ImageSource>) {
        self.sources.push(source);
    }

    /// Counts garbage collection passes in `metrics`.
    pub fn set_metrics(&mut self, metrics: Arc<berth_metrics::Metrics>) {
        self.metrics = Some(metrics);
    }

    /// Upload sessions open in this process (for the metrics; sessions begun
    /// before a restart count once a request touches them again).
    pub fn open_uploads(&self) -> usize {
        self.uploads.len()
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// A garbage collection pass as configured.
    pub fn gc_options(&self, dry_run: bool) -> GcOptions {
        GcOptions {
            grace: self.config.gc_grace,
            delete_untagged_after: self.config.delete_untagged_after,
            dry_run,
            progress: None,
            yield_to_requests: true,
        }
    }

    /// Whether `name` is served from a read-only source (nothing there can change).
    pub fn is_read_only(&self, name: &RepoName) -> bool {
        self.source_for(name).is_some()
    }

    /// The read-only source that owns `name`, if any.
    fn source_for(&self, name: &RepoName) -> Option<&Arc<dyn ImageSource>> {
        self.sources.iter().find(|s| name.is_under(s.prefix()))
    }

    /// Refuses deletes when they are turned off, and in read-only sources.
    fn ensure_deletable(&self, name: &RepoName) -> Result<()> {
        if !self.config.deletes {
            return Err(RegistryError::Unsupported(
                "deletes are disabled on this registry (berth serve --deletes off)".into(),
            ));
        }
        self.ensure_writable(name)
    }

    /// Refuses writes to repositories served from a read-only source or mirrored from an upstream.
    fn ensure_writable(&self, name: &RepoName) -> Result<()> {
        self.ensure_not_mirrored(name)?;
        if name.as_str() == augment::PREFIX || name.is_under(augment::PREFIX) {
            return Err(RegistryError::Denied(format!(
                "repository {name} is made by berth from an augmentation and is read-only; push to another name"
            )));
        }
        match self.source_for(name) {
            Some(s) => Err(RegistryError::Denied(format!(
                "repository {name} is served read-only from {}; push to another name",
                s.describe()
            ))),
            None => Ok(()),
        }
    }
}
