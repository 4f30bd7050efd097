//! The pull-through mirror: repositories under a configured prefix are read
//! from an upstream registry and cached in the registry's own storage, in the
//! normal layout (blobs, revision links, tag links of the proxied repository),
//! so that cached content is served by the normal read path and works with
//! any storage backend.
//!
//! - Manifests by digest are cached for good; a tag is revalidated with a
//!   `HEAD` once its TTL has passed, and served stale (with a warning) when the
//!   upstream is down, slow, failing or rate-limiting.
//! - A missing blob is fetched once however many clients ask ([`fetch`]): its
//!   bytes stream to every client while they are written and hashed, and only
//!   verified bytes are committed.
//! - Proxied repositories are read-only.

mod challenge;
mod client;
mod evict;
mod fetch;

pub use evict::{CacheBound, EvictionReport};

use crate::{BlobContent, ManifestContent, Registry, RegistryError, Result};
use berth_spec::manifest::stored_media_type;
use berth_spec::range::ByteRange;
use berth_spec::{Digest, Reference, RepoName, Tag};
use berth_storage::layout;
use bytes::Bytes;
use client::{UpstreamClient, UpstreamError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Bearer challenge of a `WWW-Authenticate` header as (realm, service,
/// scope), `None` for anything else; public for the fuzz target.
#[doc(hidden)]
pub fn parse_challenge(header: &str) -> Option<(String, Option<String>, Option<String>)> {
    match challenge::parse(header)? {
        challenge::Challenge::Bearer { realm, service, scope } => Some((realm, service, scope)),
        challenge::Challenge::Basic => None,
    }
}

/// A user name and password for an upstream. Never printed.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ username: {:?}, password: <redacted> }}",
            self.username
        )
    }
}

/// One upstream registry and how it is mirrored.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Repositories at or below this name are read from the upstream, with
    /// the prefix removed (`docker.io/library/alpine` is `library/alpine` there).
    pub prefix: String,
    /// Base URLs (`https://registry-1.docker.io`), tried in order.
    pub urls: Vec<String>,
    pub credentials: Option<Credentials>,
    /// How long a tag is served from the cache before it is revalidated.
    pub tag_ttl: Duration,
    /// Answer blob requests with a redirect to the upstream instead of caching them.
    pub redirect_blobs: bool,
    /// Also serve names outside every prefix from this upstream (docker's
    /// `registry-mirrors`, which asks a mirror for `library/alpine`), when no
    /// local repository has the name. A one-component name gets `library/`.
    pub root: bool,
    /// How long the upstream may take to answer a request (connect, head, each read).
    pub timeout: Duration,
}

impl UpstreamConfig {
    pub fn new(prefix: impl Into<String>, urls: Vec<String>) -> UpstreamConfig {
        UpstreamConfig {
            prefix: prefix.into(),
            urls,
            credentials: None,
            tag_ttl: Duration::from_secs(300),
            redirect_blobs: false,
            root: false,
            timeout: Duration::from_secs(30),
        }
    }
}

/// A configured upstream with its client and in-flight work.
pub(crate) struct Mirror {
    pub(crate) config: UpstreamConfig,
    client: UpstreamClient,
    /// When each cached tag was last confirmed upstream (lost on restart,
    /// which costs one `HEAD` per tag).
    validated: Mutex<HashMap<(RepoName, String), Instant>>,
    /// Manifest fetches in flight, so that concurrent requests make one.
    manifest_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Blob fetches in flight, by digest.
    blob_fetches: fetch::InFlight,
    /// When each cached manifest was last read through the mirror (for
    /// eviction; lost on restart, when the time it was cached stands in).
    pulled: Mutex<HashMap<(RepoName, Digest), std::time::SystemTime>>,
}

/// A proxied repository: its name in the cache and at the upstream.
pub(crate) struct Proxied {
    pub(crate) mirror: Arc<Mirror>,
    pub(crate) local: RepoName,
    pub(crate) upstream: String,
}

impl Mirror {
    pub(crate) fn new(config: UpstreamConfig) -> std::result::Result<Mirror, String> {
        if config.prefix.parse::<RepoName>().is_err() {
            return Err(format!("upstream prefix {:?} is not a repository name", config.prefix));
        }
        let client = UpstreamClient::new(config.urls.clone(), config.credentials.clone(), config.timeout)?;
        Ok(Mirror {
            config,
            client,
            validated: Mutex::new(HashMap::new()),
            manifest_locks: Mutex::new(HashMap::new()),
            blob_fetches: fetch::InFlight::default(),
            pulled: Mutex::new(HashMap::new()),
        })
    }

    fn describe(&self) -> String {
        format!("the mirror of {}", self.config.urls.join(", "))
    }

    fn upstream_error(&self, e: UpstreamError, unknown: impl FnOnce() -> RegistryError) -> RegistryError {
        match e {
            UpstreamError::NotFound => unknown(),
            other => RegistryError::Upstream(other.to_string()),
        }
    }

    fn is_fresh(&self, name: &RepoName, tag: &Tag) -> bool {
        let key = (name.clone(), tag.as_str().to_owned());
        matches!(self.validated.lock().unwrap().get(&key), Some(t) if t.elapsed() < self.config.tag_ttl)
    }

    fn mark_fresh(&self, name: &RepoName, tag: &Tag) {
        let key = (name.clone(), tag.as_str().to_owned());
        self.validated.lock().unwrap().insert(key, Instant::now());
    }

    /// One lock per manifest being fetched; the map forgets it once unused.
    async fn manifest_lock(&self, key: String) -> ManifestGuard<'_> {
        let lock = self
            .manifest_locks
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        ManifestGuard {
            mirror: self,
            key,
            _guard: guard,
        }
    }
}

struct ManifestGuard<'a> {
    mirror: &'a Mirror,
    key: String,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for ManifestGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.mirror.manifest_locks.lock().unwrap();
        // Two references: the map's and the guard's own; nobody else waits.
        if map.get(&self.key).is_some_and(|l| Arc::strong_count(l) <= 2) {
            map.remove(&self.key);
        }
    }
}

impl Registry {
    /// Mirrors `config.prefix` from its upstream.
    pub fn add_upstream(&mut self, config: UpstreamConfig) -> std::result::Result<(), String> {
        if config.root && self.mirrors.iter().any(|m| m.config.root) {
            return Err("only one upstream can serve names at the registry root".into());
        }
        if self.mirrors.iter().any(|m| m.config.prefix == config.prefix) {
            return Err(format!("upstream prefix {:?} is configured twice", config.prefix));
        }
        self.mirrors.push(Arc::new(Mirror::new(config)?));
        Ok(())
    }

    /// True when `ns` is the prefix of an upstream (containerd's `?ns=`).
    pub fn mirrors_namespace(&self, ns: &str) -> bool {
        self.mirrors.iter().any(|m| m.config.prefix == ns)
    }

    /// The mirror whose prefix holds `name` (or is it).
    pub(crate) fn mirror_holding(&self, name: &RepoName) -> Option<&Arc<Mirror>> {
        self.mirrors.iter().find(|m| name.is_under(&m.config.prefix))
    }

    /// The upstream whose prefix holds `name`.
    pub(crate) fn mirror_for(&self, name: &RepoName) -> Option<Proxied> {
        let m = self.mirror_holding(name)?;
        let upstream = name.as_str()[m.config.prefix.len()..]
            .trim_start_matches('/')
            .to_owned();
        if upstream.is_empty() {
            return None;
        }
        Some(Proxied {
            mirror: m.clone(),
            local: name.clone(),
            upstream,
        })
    }

    /// The proxied repository a read of `name` goes to: by prefix, or, for a
    /// name no source, prefix or local repository claims, the root upstream.
    pub(crate) async fn proxied_for_read(&self, name: &RepoName) -> Result<Option<Proxied>> {
        if let Some(p) = self.mirror_for(name) {
            return Ok(Some(p));
        }
        let Some(root) = self.mirrors.iter().find(|m| m.config.root) else {
            return Ok(None);
        };
        if self.source_for(name).is_some() || self.is_local_repository(name).await? {
            return Ok(None);
        }
        // Docker Hub's official images live under `library/`.
        let upstream = if name.as_str().contains('/') {
            name.to_string()
        } else {
            format!("library/{name}")
        };
        let Ok(local) = format!("{}/{upstream}", root.config.prefix).parse::<RepoName>() else {
            return Ok(None); // too long with the prefix: not mirrored
        };
        Ok(Some(Proxied {
            mirror: root.clone(),
            local,
            upstream,
        }))
    }

    async fn is_local_repository(&self, name: &RepoName) -> Result<bool> {
        let children = self.backend.list(&layout::repository(name)).await?;
        Ok(children.iter().any(|c| c == "_manifests" || c == "_layers"))
    }

    /// Refuses writes under an upstream's prefix.
    pub(crate) fn ensure_not_mirrored(&self, name: &RepoName) -> Result<()> {
        match self.mirror_for(name) {
            Some(p) => Err(RegistryError::Denied(format!(
                "repository {name} is served read-only from {}; push to another name",
                p.mirror.describe()
            ))),
            None => Ok(()),
        }
    }

    pub(crate) async fn proxied_manifest(&self, p: &Proxied, reference: &Reference) -> Result<ManifestContent> {
        let content = self.proxied_manifest_uncounted(p, reference).await?;
        p.mirror.note_pull(&p.local, &content.digest);
        Ok(content)
    }

    async fn proxied_manifest_uncounted(&self, p: &Proxied, reference: &Reference) -> Result<ManifestContent> {
        let unknown = || RegistryError::ManifestUnknown(reference.to_string());
        match reference {
            Reference::Digest(digest) => {
                if let Some(m) = self.cached_manifest(&p.local, digest).await? {
                    return Ok(m);
                }
                let _flight = p.mirror.manifest_lock(format!("{}@{digest}", p.local)).await;
                if let Some(m) = self.cached_manifest(&p.local, digest).await? {
                    return Ok(m);
                }
                let fetched = p
                    .mirror
                    .client
                    .manifest(&p.upstream, &digest.to_string())
                    .await
                    .map_err(|e| p.mirror.upstream_error(e, unknown))?;
                self.store_proxied_manifest(p, fetched.bytes, Some(digest), None).await
            }
            Reference::Tag(tag) => {
                let cached = self.cached_tag(&p.local, tag).await?;
                if let Some(m) = &cached {
                    if p.mirror.is_fresh(&p.local, tag) {
                        return Ok(m.clone());
                    }
                }
                let _flight = p.mirror.manifest_lock(format!("{}:{tag}", p.local)).await;
                // Another request may have revalidated it while this one waited.
                let cached = match self.cached_tag(&p.local, tag).await? {
                    Some(m) if p.mirror.is_fresh(&p.local, tag) => return Ok(m),
                    c => c.or(cached),
                };
                match self.revalidate_tag(p, tag, cached.as_ref()).await {
                    Ok(m) => Ok(m),
                    Err(UpstreamError::NotFound) => Err(unknown()),
                    Err(UpstreamError::Unavailable(why)) if cached.is_some() => {
                        tracing::warn!(repository = %p.local, %tag, reason = %why,
                            "serving a cached tag stale: the upstream is unavailable");
                        Ok(cached.expect("checked"))
                    }
                    Err(e) => Err(RegistryError::Upstream(e.to_string())),
                }
            }
        }
    }

    /// Asks the upstream what `tag` points at now; fetches it if that is not
    /// what the cache holds.
    async fn revalidate_tag(
        &self,
        p: &Proxied,
        tag: &Tag,
        cached: Option<&ManifestContent>,
    ) -> std::result::Result<ManifestContent, UpstreamError> {
        let client = &p.mirror.client;
        if let Some(cached) = cached {
            // A HEAD, which Docker Hub does not count against its pull limit.
            let current = client.manifest_digest(&p.upstream, tag.as_str()).await?;
            if current.as_deref() == Some(cached.digest.to_string().as_str()) {
                p.mirror.mark_fresh(&p.local, tag);
                return Ok(cached.clone());
            }
        }
        let fetched = client.manifest(&p.upstream, tag.as_str()).await?;
        let declared = fetched.digest_header.as_deref().and_then(|d| d.parse::<Digest>().ok());
        let content = self
            .store_proxied_manifest(p, fetched.bytes, declared.as_ref(), Some(tag))
            .await
            .map_err(|e| UpstreamError::Failed(e.to_string()))?;
        p.mirror.mark_fresh(&p.local, tag);
        Ok(content)
    }

    async fn cached_manifest(&self, name: &RepoName, digest: &Digest) -> Result<Option<ManifestContent>> {
        if !self.exists(&layout::manifest_revision_link(name, digest)).await? {
            return Ok(None);
        }
        self.read_manifest_blob(digest).await
    }

    async fn cached_tag(&self, name: &RepoName, tag: &Tag) -> Result<Option<ManifestContent>> {
        match self.resolve_tag(name, tag).await? {
            Some(d) => self.cached_manifest(name, &d).await,
            None => Ok(None),
        }
    }

    /// Stores an upstream manifest under the proxied name, as a push would
    /// (bytes, revision link, tag links), after checking it has the digest it
    /// was asked or announced by. Its references are fetched when asked for.
    async fn store_proxied_manifest(
        &self,
        p: &Proxied,
        bytes: Bytes,
        expected: Option<&Digest>,
        tag: Option<&Tag>,
    ) -> Result<ManifestContent> {
        let algorithm = expected
            .map(|d| d.algorithm())
            .unwrap_or(berth_spec::digest::Algorithm::Sha256);
        let mut h = algorithm.digester();
        h.update(&bytes);
        let digest = h.finish();
        if let Some(expected) = expected {
            if &digest != expected {
                return Err(RegistryError::Upstream(format!(
                    "upstream sent a manifest for {expected} whose digest is {digest}; not served"
                )));
            }
        }
        if berth_spec::Manifest::parse(&bytes, Some(&stored_media_type(&bytes))).is_err() {
            return Err(RegistryError::Upstream(format!(
                "upstream sent manifest {digest} that is not a valid manifest"
            )));
        }
        if self.read_manifest_blob(&digest).await?.is_none() {
            self.backend.put(&layout::blob_data(&digest), bytes.clone()).await?;
        }
        let link = Bytes::from(layout::link_content(&digest));
        self.backend
            .put(&layout::manifest_revision_link(&p.local, &digest), link.clone())
            .await?;
        if let Some(tag) = tag {
            self.backend
                .put(&layout::tag_index_link(&p.local, tag, &digest), link.clone())
                .await?;
            self.backend.put(&layout::tag_current_link(&p.local, tag), link).await?;
        }
        let content = ManifestContent {
            digest,
            media_type: stored_media_type(&bytes),
            bytes,
        };
        self.manifest_cache.insert(content.clone());
        Ok(content)
    }

    pub(crate) async fn proxied_blob(
        &self,
        p: &Proxied,
        digest: &Digest,
        range: Option<ByteRange>,
        head_only: bool,
    ) -> Result<BlobContent> {
        match self.local_blob(&p.local, digest, range, head_only).await {
            Err(RegistryError::BlobUnknown(_)) => {}
            other => return other,
        }
        let unknown = || RegistryError::BlobUnknown(digest.clone());
        let client = &p.mirror.client;
        if p.mirror.config.redirect_blobs {
            let location = client
                .blob_location(&p.upstream, &digest.to_string())
                .await
                .map_err(|e| p.mirror.upstream_error(e, unknown))?;
            return Ok(BlobContent {
                size: 0,
                range: 0..0,
                body: None,
                redirect: Some(location),
            });
        }
        // Already in the blob store (pushed elsewhere, or fetched for another
        // repository): the upstream need only confirm this repository has it.
        if self.exists(&layout::blob_data(digest)).await? {
            client
                .blob_size(&p.upstream, &digest.to_string())
                .await
                .map_err(|e| p.mirror.upstream_error(e, unknown))?;
            self.link_blob(&p.local, digest).await?;
            return self.local_blob(&p.local, digest, range, head_only).await;
        }
        if head_only {
            let size = client
                .blob_size(&p.upstream, &digest.to_string())
                .await
                .map_err(|e| p.mirror.upstream_error(e, unknown))?;
            let range = match range {
                None => 0..size,
                Some(r) => r.resolve(size).ok_or(RegistryError::RangeNotSatisfiable { size })?,
            };
            return Ok(BlobContent {
                size,
                range,
                body: None,
                redirect: None,
            });
        }
        fetch::get(self, p, digest, range).await
    }

    /// The upstream's tags of a proxied repository; the cached ones when it is unavailable.
    pub(crate) async fn proxied_tags(&self, p: &Proxied) -> Result<Vec<String>> {
        match p.mirror.client.tags(&p.upstream).await {
            Ok(tags) => Ok(tags),
            Err(UpstreamError::NotFound) => Err(RegistryError::NameUnknown(p.local.clone())),
            Err(UpstreamError::Unavailable(why)) => {
                tracing::warn!(repository = %p.local, reason = %why, "listing cached tags: the upstream is unavailable");
                self.resolving_tags(&p.local).await
            }
            Err(e) => Err(RegistryError::Upstream(e.to_string())),
        }
    }
}
