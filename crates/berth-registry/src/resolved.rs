//! What manifest references resolved to, remembered per replica for a
//! bounded time, where other processes write the store too (S3).
//!
//! Serving a manifest by tag from the store costs two round trips there (the
//! tag's link, then the manifest's revision link; the bytes, immutable under
//! their digest, come from the manifest cache), ~100 ms on Ceph RGW, which
//! caps a registry at a few hundred manifest reads a second however fast it
//! is. So a resolution — "this reference of this repository named this digest,
//! and the digest's revision was there" — is kept for `ttl` after it was read
//! from the store, and served from memory until then.
//!
//! The bound, which ARCHITECTURE.md states as the consistency of a read:
//! - a write on *another* replica (a tag moved, a manifest or tag deleted) is
//!   seen by this one at most `ttl` after its acknowledgement;
//! - a write through *this* replica is seen at once: every write and delete
//!   of the store goes through [`Invalidating`], which, once it has returned,
//!   forgets the resolutions of the repository it touched (a generation per
//!   repository, so that a resolution read before the write and stored after
//!   it is never served);
//! - a reference that did not resolve is never remembered, so a new tag or
//!   manifest is served everywhere at once.
//!
//! Only the read path of a manifest GET or HEAD looks here. Pushes, deletes,
//! the garbage collector and the rules read the store itself: a decision
//! that writes must never rest on a remembered answer.

use berth_spec::Digest;
use berth_storage::backend::Result as StorageResult;
use berth_storage::layout::{self, RepositoryScope};
use berth_storage::{AppendWriter, Backend, ObjectBody, ObjectMeta};
use bytes::Bytes;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Repositories share generations by the hash of their name: a write to
/// one forgets the resolutions of the others in its slot too (a few more
/// round trips, never a stale answer).
const SLOTS: usize = 1024;

/// Past this many resolutions the memory is cleared (they are a few hundred
/// bytes each; the hot set refills in one round trip per reference).
const MAX_ENTRIES: usize = 16_384;

pub(crate) struct ResolvedCache {
    ttl: Duration,
    /// Bumped after a write that may touch any repository's manifests.
    everything: AtomicU64,
    slots: Vec<AtomicU64>,
    /// By repository, then reference (looked up by `&str`, without allocating).
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_repository: HashMap<String, HashMap<String, Entry>>,
    len: usize,
}

struct Entry {
    digest: Digest,
    generation: Generation,
    read_at: Instant,
}

/// The generations a resolution was read under; it is served only while
/// both are unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Generation {
    everything: u64,
    repository: u64,
}

impl ResolvedCache {
    pub(crate) fn new(ttl: Duration) -> ResolvedCache {
        ResolvedCache {
            ttl,
            everything: AtomicU64::new(0),
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            entries: Mutex::new(Entries::default()),
        }
    }

    fn slot(&self, repository: &str) -> &AtomicU64 {
        let mut h = DefaultHasher::new();
        repository.hash(&mut h);
        &self.slots[(h.finish() as usize) % SLOTS]
    }

    /// Taken before reading the store, handed to [`ResolvedCache::insert`] after.
    pub(crate) fn generation(&self, repository: &str) -> Generation {
        Generation {
            everything: self.everything.load(Ordering::Acquire),
            repository: self.slot(repository).load(Ordering::Acquire),
        }
    }

    /// The digest `reference` of `repository` resolved to, if that was read
    /// within the time to live and nothing this replica wrote since touched
    /// the repository's manifests.
    pub(crate) fn get(&self, repository: &str, reference: &str) -> Option<Digest> {
        let now = self.generation(repository);
        let entries = self.entries.lock().unwrap();
        let entry = entries.by_repository.get(repository)?.get(reference)?;
        (entry.generation == now && entry.read_at.elapsed() < self.ttl).then(|| entry.digest.clone())
    }

    /// Remembers a resolution read from the store under `generation` (taken
    /// before the read, so a write that returned meanwhile makes it unusable).
    pub(crate) fn insert(
        &self,
        repository: &str,
        reference: &str,
        digest: Digest,
        generation: Generation,
        read_at: Instant,
    ) {
        if generation != self.generation(repository) {
            return;
        }
        let mut entries = self.entries.lock().unwrap();
        if entries.len >= MAX_ENTRIES {
            *entries = Entries::default();
        }
        let entry = Entry {
            digest,
            generation,
            read_at,
        };
        let replaced = entries
            .by_repository
            .entry(repository.to_owned())
            .or_default()
            .insert(reference.to_owned(), entry);
        if replaced.is_none() {
            entries.len += 1;
        }
    }

    /// After a write or delete of `key` (or of every key under it) returned,
    /// whether or not it succeeded: a failed delete of a tree may have
    /// removed part of it.
    fn written(&self, key: &str) {
        match layout::repository_scope(key) {
            RepositoryScope::Manifests(name) => {
                self.slot(name).fetch_add(1, Ordering::AcqRel);
            }
            RepositoryScope::Any => {
                self.everything.fetch_add(1, Ordering::AcqRel);
            }
            RepositoryScope::Unrelated => {}
        }
    }
}

/// The store as the registry writes it on shared storage: every write and
/// delete tells the [`ResolvedCache`] what it touched once it has returned.
/// A decorator, so that no write path (pushes, deletes, retention, the
/// collector, the proxy's cache, augmentations) can forget to.
pub(crate) struct Invalidating {
    inner: Arc<dyn Backend>,
    cache: Arc<ResolvedCache>,
}

impl Invalidating {
    pub(crate) fn new(inner: Arc<dyn Backend>, cache: Arc<ResolvedCache>) -> Invalidating {
        Invalidating { inner, cache }
    }

    fn after<T>(&self, key: &str, result: StorageResult<T>) -> StorageResult<T> {
        self.cache.written(key);
        result
    }
}

#[async_trait::async_trait]
impl Backend for Invalidating {
    async fn get(&self, key: &str) -> StorageResult<Bytes> {
        self.inner.get(key).await
    }

    async fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        self.inner.head(key).await
    }

    async fn open(&self, key: &str, range: Option<Range<u64>>) -> StorageResult<ObjectBody> {
        self.inner.open(key, range).await
    }

    async fn put(&self, key: &str, data: Bytes) -> StorageResult<()> {
        let result = self.inner.put(key, data).await;
        self.after(key, result)
    }

    async fn put_ephemeral(&self, key: &str, data: Bytes) -> StorageResult<()> {
        let result = self.inner.put_ephemeral(key, data).await;
        self.after(key, result)
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> StorageResult<bool> {
        let result = self.inner.put_if_absent(key, data).await;
        self.after(key, result)
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let result = self.inner.delete(key).await;
        self.after(key, result)
    }

    async fn delete_prefix(&self, prefix: &str) -> StorageResult<()> {
        let result = self.inner.delete_prefix(prefix).await;
        self.after(prefix, result)
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<String>> {
        self.inner.list(prefix).await
    }

    async fn list_keys_after(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StorageResult<Vec<String>> {
        self.inner.list_keys_after(prefix, start_after, limit).await
    }

    async fn append(&self, key: &str, offset: u64) -> StorageResult<Box<dyn AppendWriter>> {
        // Appends write uploads in progress, which no reference resolves
        // through; their end is a promote, which is followed.
        self.inner.append(key, offset).await
    }

    async fn promote(&self, from: &str, to: &str) -> StorageResult<()> {
        let result = self.inner.promote(from, to).await;
        self.cache.written(from);
        self.after(to, result)
    }

    async fn abort_stale_multipart_uploads(&self, older_than: Duration) -> StorageResult<usize> {
        self.inner.abort_stale_multipart_uploads(older_than).await
    }

    async fn presigned_get(&self, key: &str, expires_in: Duration) -> StorageResult<Option<String>> {
        self.inner.presigned_get(key, expires_in).await
    }
}

#[cfg(test)]
mod tests {
    //! Two registries ("replicas") on one data directory, as on a shared
    //! bucket: what each serves after the other's writes, and its own.
    use crate::gc::registry_tests::{name, push_image};
    use crate::{Registry, RegistryConfig, RegistryError};
    use berth_spec::{Digest, Reference, RepoName};
    use berth_storage::{Backend, FsBackend};
    use std::sync::Arc;
    use std::time::Duration;

    const TTL: Duration = Duration::from_millis(600);

    fn replica(dir: &tempfile::TempDir, ttl: Duration) -> Registry {
        let backend: Arc<dyn Backend> = Arc::new(FsBackend::new(dir.path()));
        let config = RegistryConfig {
            exclusive_storage: false,
            reference_cache_ttl: ttl,
            ..RegistryConfig::default()
        };
        Registry::new(backend, config)
    }

    async fn served(reg: &Registry, repo: &RepoName, reference: &str) -> Option<Digest> {
        let reference: Reference = reference.parse().unwrap();
        match reg.get_manifest(repo, &reference).await {
            Ok(m) => Some(m.digest),
            Err(RegistryError::ManifestUnknown(_)) => None,
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn another_replicas_tag_move_is_seen_within_the_bound_and_ones_own_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (replica(&dir, TTL), replica(&dir, TTL));
        let repo = name("team/app");
        let first = push_image(&a, &repo, "v1", b"{\"c\":1}", &[b"layer 1"]).await;
        assert_eq!(served(&a, &repo, "v1").await, Some(first.clone()));
        let b_read_at = std::time::Instant::now();
        assert_eq!(served(&b, &repo, "v1").await, Some(first.clone()));

        // Moved through a: a serves the new digest at once (it read the old
        // one a moment ago); b may serve what it read, until the bound.
        let second = push_image(&a, &repo, "v1", b"{\"c\":2}", &[b"layer 2"]).await;
        let moved_at = std::time::Instant::now();
        assert_eq!(served(&a, &repo, "v1").await, Some(second.clone()));
        if b_read_at.elapsed() < TTL / 2 {
            // (Unless the push took that long on a loaded machine.)
            assert_eq!(
                served(&b, &repo, "v1").await,
                Some(first.clone()),
                "within the bound, b answers from memory"
            );
        }
        loop {
            let now = served(&b, &repo, "v1").await;
            if now == Some(second.clone()) {
                break;
            }
            assert!(moved_at.elapsed() < TTL, "b served the old digest past the bound");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Deleted through b: b stops serving it by tag and by digest at once,
        // a within the bound.
        assert_eq!(served(&a, &repo, &second.to_string()).await, Some(second.clone()));
        b.delete_manifest(&repo, &Reference::Digest(second.clone()))
            .await
            .unwrap();
        let deleted_at = std::time::Instant::now();
        assert_eq!(served(&b, &repo, "v1").await, None);
        assert_eq!(served(&b, &repo, &second.to_string()).await, None);
        loop {
            let (by_tag, by_digest) = (
                served(&a, &repo, "v1").await,
                served(&a, &repo, &second.to_string()).await,
            );
            if by_tag.is_none() && by_digest.is_none() {
                break;
            }
            assert!(deleted_at.elapsed() < TTL, "a served a deleted manifest past the bound");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn what_did_not_resolve_is_not_remembered_and_zero_reads_the_store_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (replica(&dir, TTL), replica(&dir, Duration::ZERO));
        let repo = name("team/app");
        assert_eq!(served(&a, &repo, "v1").await, None);
        let first = push_image(&b, &repo, "v1", b"{\"c\":1}", &[b"layer 1"]).await;
        assert_eq!(
            served(&a, &repo, "v1").await,
            Some(first.clone()),
            "a new tag is seen at once"
        );

        assert_eq!(served(&b, &repo, "v1").await, Some(first.clone()));
        let second = push_image(&a, &repo, "v1", b"{\"c\":2}", &[b"layer 2"]).await;
        assert_eq!(
            served(&b, &repo, "v1").await,
            Some(second),
            "without a cache b reads the store"
        );
    }

    /// A resolution read before a write of this replica returned, and stored
    /// after it, is never served: the generation it was read under is gone.
    #[test]
    fn a_resolution_read_before_a_local_write_is_not_kept() {
        let cache = super::ResolvedCache::new(Duration::from_secs(60));
        let repo = "team/app";
        let d: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let before = cache.generation(repo);
        let read_at = std::time::Instant::now();
        let tag = berth_storage::layout::tag_current_link(&name(repo), &"v1".parse().unwrap());
        cache.written(&tag);
        cache.insert(repo, "v1", d.clone(), before, read_at);
        assert_eq!(cache.get(repo, "v1"), None);

        let now = cache.generation(repo);
        cache.insert(repo, "v1", d.clone(), now, read_at);
        assert_eq!(cache.get(repo, "v1"), Some(d.clone()));
        // A write elsewhere leaves it; one under the repository's manifests,
        // or above every repository, does not.
        cache.written(&berth_storage::layout::layer_link(&name(repo), &d));
        cache.written(&berth_storage::layout::tag_current_link(
            &name("other/app"),
            &"v1".parse().unwrap(),
        ));
        assert_eq!(cache.get(repo, "v1"), Some(d.clone()), "other/app is in another slot");
        cache.written(&berth_storage::layout::repositories_root());
        assert_eq!(cache.get(repo, "v1"), None);
    }
}
