//! Garbage collection while the registry serves: mark everything that must
//! stay, then delete what nothing marks, one digest at a time through the
//! [`gate::ReferenceGate`], so that a push running meanwhile never loses a
//! blob it was acknowledged for.
//!
//! A pass:
//! 1. **Mark.** Walk every repository: its tags, manifest revisions, layer
//!    links and referrers. The manifests that stay are every revision (by
//!    default), or with `delete_untagged_after` the tagged ones, the younger
//!    untagged ones, the children of kept indexes and the referrers of kept
//!    subjects. Every blob a kept manifest names (config, layers, children)
//!    is marked, globally: blobs are shared between repositories.
//! 2. **Sweep.** A blob is deleted when nothing marks it, its bytes and every
//!    link to it are older than the grace period, and the gate lets the
//!    collector claim it (nothing pins it, nothing touched it since the pass
//!    began). Its links go first, then its bytes. A layer link nothing in its
//!    repository references is removed the same way, leaving the blob to
//!    the repositories that use it. Untagged manifests past their age lose
//!    their revision link. Stale uploads are purged.
//!
//! The safety argument is in ARCHITECTURE.md ("Garbage collection").

pub(crate) mod gate;
mod pace;
pub(crate) mod shared;

use futures::StreamExt;

use crate::rules::retention::TagInfo;
use crate::{Registry, RegistryError, Result};
use berth_spec::{Digest, Manifest, ManifestKind, RepoName, Tag};
use berth_storage::layout;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Blob deletions a pass runs at once (they share the filesystem's syncs).
const GC_DELETES_IN_FLIGHT: usize = 32;

/// Reads of links and metadata a pass runs at once (round trips on S3).
const GC_READS_IN_FLIGHT: usize = 16;

/// Blobs a pass gathers for deletion before deleting them.
const GC_DELETE_BATCH: usize = 4 * GC_DELETES_IN_FLIGHT;

/// The pins an operation holds while it adds references: in this process's
/// gate, and in the store when other processes write it too.
pub(crate) struct ReferencePins<'a> {
    _local: Vec<gate::Pin<'a>>,
    shared: Option<shared::StorePins>,
}

impl ReferencePins<'_> {
    /// Called just before the operation writes its last reference (see
    /// [`shared::StorePins::confirm`]); always fine on exclusive storage.
    pub(crate) fn confirm(&self) -> Result<()> {
        match &self.shared {
            Some(s) => s.confirm(),
            None => Ok(()),
        }
    }
}

/// A digest the collector holds, in this process's gate and in the store.
struct Claim<'r> {
    registry: &'r Registry,
    digest: Digest,
    shared: Option<shared::StoreClaim>,
    released: bool,
}

impl Drop for Claim<'_> {
    /// A pass dropped half-way (its task cancelled) must not leave the
    /// digest claimed: every push of it would wait for ever.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.registry.gate.release(&self.digest);
        if let (Some(g), Some(c)) = (&self.registry.shared_gate, self.shared.take()) {
            g.release_in_background(c);
        }
    }
}

/// What a pass needs to claim digests.
pub(crate) struct PassClaims {
    pub(crate) started: Instant,
    pub(crate) grace: Duration,
    /// On shared storage: pins younger than this (store time) refuse a claim.
    pub(crate) horizon: Option<SystemTime>,
}

/// What one pass does.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Blobs and links younger than this are never deleted: layers are pushed
    /// before the manifest that references them. At least the upload session
    /// lifetime in production.
    pub grace: Duration,
    /// Remove untagged manifests (that no kept index or subject needs) once
    /// their revision is older than this. `None` keeps them all.
    pub delete_untagged_after: Option<Duration>,
    /// Report what would be deleted, delete nothing.
    pub dry_run: bool,
    /// Told how far the pass is (for a progress bar).
    pub progress: Option<ProgressHook>,
    /// Rest as long as it works, leaving the machine to requests (passes
    /// the server runs; see `pace.rs`). Off, the pass goes flat out.
    pub yield_to_requests: bool,
}

/// How far a pass is: repositories marked, blob store directories swept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcStep {
    Marking { done: usize, total: usize },
    Sweeping { done: usize, total: usize },
}

/// Called with each [`GcStep`].
#[derive(Clone)]
pub struct ProgressHook(pub std::sync::Arc<dyn Fn(GcStep) + Send + Sync>);

impl std::fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressHook")
    }
}

impl GcOptions {
    fn step(&self, step: GcStep) {
        if let Some(p) = &self.progress {
            (p.0)(step);
        }
    }
}

/// What a pass deleted (or, dry, would delete).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub repositories: usize,
    pub blobs_marked: usize,
    pub blobs_deleted: usize,
    pub bytes_freed: u64,
    pub layer_links_deleted: usize,
    pub manifests_deleted: usize,
    pub uploads_purged: usize,
    /// Tags removed by retention rules, as `repository:tag`.
    pub tags_deleted: Vec<String>,
    /// Candidates left alone because a push was referencing them.
    pub spared_in_use: usize,
    /// Images evicted from the upstream mirror's cache to keep it within its bound.
    pub cache_images_evicted: usize,
    pub duration_ms: u64,
}

/// What the mark found in one repository.
#[derive(Default)]
pub(crate) struct RepoScan {
    tags: Vec<Digest>,
    /// Manifests retention left without a tag: collected like untagged
    /// manifests past their age (unless a kept index or subject needs them).
    released: HashSet<Key>,
    /// Manifest revisions with the time their link was written.
    pub(crate) revisions: Vec<(Digest, Option<SystemTime>)>,
    /// Layer links with the time they were written.
    pub(crate) layers: Vec<(Digest, Option<SystemTime>)>,
}

/// A digest as the collector's tables hold it: 32 bytes instead of a
/// 100-odd-byte `Digest`, which keeps a pass over 100,000 blobs small. A
/// sha256 digest is its own bytes; any other is the sha256 of its text.
pub(crate) type Key = [u8; 32];

pub(crate) fn key(d: &Digest) -> Key {
    let mut k = [0u8; 32];
    let text;
    let hex = match d.algorithm() {
        berth_spec::Algorithm::Sha256 => d.hex(),
        _ => {
            text = Digest::sha256_of(d.to_string().as_bytes());
            text.hex()
        }
    };
    hex::decode_to_slice(hex, &mut k).expect("a digest's hex is hex");
    k
}

/// The references of one manifest, as far as the collector cares.
#[derive(Clone, Default)]
struct Refs {
    /// Config and layers: blobs that must stay.
    blobs: Vec<Key>,
    /// Children of an index: manifests that must stay.
    children: Vec<Key>,
    subject: Option<Digest>,
}

impl Registry {
    /// Pins `digests` for an operation that adds references to them: the
    /// collector spares them, or has finished deleting them (the operation
    /// then finds their bytes gone).
    pub(crate) async fn pin_references<'d>(
        &self,
        digests: impl IntoIterator<Item = &'d Digest>,
    ) -> Result<ReferencePins<'_>> {
        let digests: Vec<&Digest> = digests.into_iter().collect();
        let local = self.gate.pin_all(digests.iter().copied()).await;
        let shared = match &self.shared_gate {
            Some(g) => Some(g.pin(&digests).await?),
            None => None,
        };
        Ok(ReferencePins { _local: local, shared })
    }

    /// The store half of [`Registry::pin_references`], alone: for an upload,
    /// whose pin in this process's gate came before its streaming.
    pub(crate) async fn pin_in_store(&self, digests: &[&Digest]) -> Result<Option<shared::StorePins>> {
        match &self.shared_gate {
            Some(g) => Ok(Some(g.pin(digests).await?)),
            None => Ok(None),
        }
    }

    /// Claims `digest` (for its bytes when `bytes`, else for a link to it).
    async fn claim(&self, digest: &Digest, bytes: bool, pass: &PassClaims) -> Result<Option<Claim<'_>>> {
        let local = match bytes {
            true => self.gate.claim_for_deletion(digest, pass.started, pass.grace),
            false => self.gate.claim(digest, pass.started, pass.grace),
        };
        if local.is_err() {
            return Ok(None);
        }
        // From here the guard releases the local claim on every way out.
        let mut claim = Claim {
            registry: self,
            digest: digest.clone(),
            shared: None,
            released: false,
        };
        if let (Some(g), Some(horizon)) = (&self.shared_gate, pass.horizon) {
            match g.claim(digest, horizon).await? {
                Ok(c) => claim.shared = Some(c),
                Err(shared::Busy::Pinned) => return Ok(None),
            }
        }
        Ok(Some(claim))
    }

    /// Whether the collector may still delete under `claim` (a claim in the
    /// store is honoured for a bounded time).
    fn claim_held(&self, claim: &Claim) -> bool {
        match (&self.shared_gate, &claim.shared) {
            (Some(g), Some(c)) => g.still_held(c),
            _ => true,
        }
    }

    async fn release_claim(&self, mut claim: Claim<'_>) -> Result<()> {
        // Pushes waiting here then wait for the store's claim, if any.
        self.gate.release(&claim.digest);
        claim.released = true;
        match (&self.shared_gate, claim.shared.take()) {
            (Some(g), Some(c)) => g.release(c).await,
            _ => Ok(()),
        }
    }

    /// Runs one pass in a task of its own, so that a caller that goes away
    /// (a client disconnecting from `POST /berth/v1/gc`) does not stop it
    /// half-way: it finishes, and its report is logged.
    pub async fn collect_garbage_detached(self: &Arc<Self>, opts: GcOptions) -> Result<GcReport> {
        let registry = self.clone();
        let pass = tokio::spawn(async move { registry.collect_garbage(&opts).await });
        match pass.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(RegistryError::Busy("the server is shutting down".into())),
        }
    }

    /// Runs one garbage collection pass. Passes do not overlap: a second
    /// caller waits for the running one.
    pub async fn collect_garbage(&self, opts: &GcOptions) -> Result<GcReport> {
        // The mirror's cache bound first: what it evicts is then gone for the mark.
        let eviction = match opts.dry_run {
            true => None,
            false => Some(self.enforce_upstream_cache_bound().await?),
        };
        let mut result = self.gc_pass(opts).await;
        if let (Ok(report), Some(e)) = (&mut result, eviction) {
            report.cache_images_evicted = e.images_evicted;
            report.blobs_deleted += e.blobs_deleted;
        }
        if let (Some(m), false) = (&self.metrics, opts.dry_run) {
            let report = result.as_ref().ok();
            m.registry_domain.gc_pass(
                report.is_some(),
                report.map_or(0, |r| r.bytes_freed),
                report.map_or(0, |r| r.blobs_deleted as u64),
                report.map_or(0, |r| r.manifests_deleted as u64),
            );
        }
        result
    }

    async fn gc_pass(&self, opts: &GcOptions) -> Result<GcReport> {
        let _one_at_a_time = self.gc_running.lock().await;
        let Some(g) = &self.shared_gate else {
            return self.gc_pass_locked(opts, None, None).await;
        };
        // Storage other processes write: the store's time, and its lease
        // (one collector per bucket; a dry run deletes nothing and needs none).
        let clock = g.clock().await?;
        if opts.dry_run {
            return self.gc_pass_locked(opts, Some(clock), None).await;
        }
        let Some(mut lease) = g.acquire_lease(&clock).await? else {
            return Err(shared::lease_held());
        };
        let result = self.gc_pass_locked(opts, Some(clock), Some(&mut lease)).await;
        let released = g.release_lease(lease).await;
        let report = result?;
        released?;
        Ok(report)
    }

    /// Renews the pass's lease when it is due (shared storage only).
    async fn keep_lease(&self, lease: Option<&mut shared::Lease>) -> Result<()> {
        match (&self.shared_gate, lease) {
            (Some(g), Some(l)) => g.renew(l).await,
            _ => Ok(()),
        }
    }

    async fn gc_pass_locked(
        &self,
        opts: &GcOptions,
        clock: Option<shared::StoreClock>,
        mut lease: Option<&mut shared::Lease>,
    ) -> Result<GcReport> {
        let started = Instant::now();
        let mut pacer = pace::Pacer::new(opts.yield_to_requests);
        // Ages are measured in the store's time where other processes write it.
        let now = clock.map_or_else(SystemTime::now, |c| c.now());
        let pass = PassClaims {
            started,
            grace: opts.grace,
            horizon: match (&self.shared_gate, clock) {
                (Some(g), Some(_)) => {
                    let back = opts.grace.max(2 * g.timing().pin_validity);
                    Some(now.checked_sub(back).unwrap_or(SystemTime::UNIX_EPOCH))
                }
                _ => None,
            },
        };
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..GcReport::default()
        };
        let old_enough = |t: Option<SystemTime>, age: Duration| match t {
            // A time in the future (clock steps) or unknown is "young": keep.
            Some(t) => now.duration_since(t).is_ok_and(|a| a >= age),
            None => false,
        };

        // 1. Mark. Every repository directory with manifests or layer links
        // (a push whose manifest never came has only the latter).
        let mut repos = self.repositories_with("_manifests").await?;
        repos.extend(self.repositories_with("_layers").await?);
        repos.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        repos.dedup();
        report.repositories = repos.len();
        let mut scans: Vec<(RepoName, RepoScan)> = Vec::with_capacity(repos.len());
        let total = repos.len();
        for (done, name) in repos.into_iter().enumerate() {
            pacer.breathe().await;
            opts.step(GcStep::Marking { done, total });
            self.keep_lease(lease.as_deref_mut()).await?;
            // Retention first: the tags it removes (or, dry, would remove)
            // are gone for the mark.
            let removed = self.apply_retention(&name, now, opts.dry_run).await?;
            report
                .tags_deleted
                .extend(removed.iter().map(|t| format!("{name}:{}", t.tag.as_str())));
            let mut scan = self.scan_repository(&name, &removed).await?;
            scan.released = removed
                .iter()
                .filter(|t| !scan.tags.contains(&t.digest))
                .map(|t| key(&t.digest))
                .collect();
            scans.push((name, scan));
        }
        let mut refs_cache: HashMap<Digest, Option<Refs>> = HashMap::new();
        let mut marked: HashSet<Key> = HashSet::new();
        // Per repository: what its kept manifests name (its layer links stay).
        let mut used_in_repo: Vec<HashSet<Key>> = Vec::with_capacity(scans.len());
        let mut untagged_to_delete: Vec<(usize, Digest)> = Vec::new();
        for (_, scan) in &scans {
            pacer.breathe().await;
            let kept = self.kept_manifests(scan, opts, &mut refs_cache, &old_enough).await?;
            let mut used = HashSet::new();
            for (d, _) in &scan.revisions {
                let k = key(d);
                if !kept.contains(&k) {
                    untagged_to_delete.push((used_in_repo.len(), d.clone()));
                    continue;
                }
                used.insert(k);
                if let Some(Some(refs)) = refs_cache.get(d) {
                    used.extend(refs.blobs.iter().chain(&refs.children).copied());
                }
            }
            marked.extend(used.iter().copied());
            used_in_repo.push(used);
        }
        // Only the subjects of manifests are needed from here on.
        refs_cache.retain(|_, r| matches!(r, Some(Refs { subject: Some(_), .. })));
        report.blobs_marked = marked.len();

        // The youngest link of every digest, and which repositories link it
        // (sorted by digest, so a digest's repositories are one range).
        let mut newest_link: HashMap<Key, Option<SystemTime>> = HashMap::new();
        let mut linked_from: Vec<(Key, u32)> = Vec::new();
        for (i, (_, scan)) in scans.iter().enumerate() {
            for (d, t) in scan.layers.iter().chain(&scan.revisions) {
                let e = newest_link.entry(key(d)).or_insert(*t);
                *e = match (*e, *t) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            linked_from.extend(scan.layers.iter().map(|(d, _)| (key(d), i as u32)));
        }
        linked_from.sort_unstable();
        let repos_linking = |k: Key| {
            let start = linked_from.partition_point(|(x, _)| x < &k);
            linked_from[start..]
                .iter()
                .take_while(move |(x, _)| x == &k)
                .map(|(_, i)| *i as usize)
        };

        // 2. Sweep. Untagged manifests first, so their blobs are free below.
        for (i, digest) in &untagged_to_delete {
            pacer.breathe().await;
            let name = &scans[*i].0;
            if opts.dry_run {
                report.manifests_deleted += 1;
                continue;
            }
            let Some(claim) = self.claim(digest, false, &pass).await? else {
                report.spared_in_use += 1;
                continue;
            };
            let deleted = match self.claim_held(&claim) {
                true => self.delete_revision(name, digest, &mut refs_cache).await.map(|()| true),
                false => Ok(false),
            };
            let released = self.release_claim(claim).await;
            match deleted? {
                true => report.manifests_deleted += 1,
                false => report.spared_in_use += 1,
            }
            released?;
        }

        // The blob store, one `<alg>/<xx>` directory at a time.
        let root = layout::blobs_root();
        let mut prefixes = Vec::new();
        for alg in self.backend.list(&root).await? {
            for prefix in self.backend.list(&format!("{root}/{alg}")).await? {
                prefixes.push((alg.clone(), prefix));
            }
        }
        let total = prefixes.len();
        opts.step(GcStep::Marking {
            done: scans.len(),
            total: scans.len(),
        });
        // Deleted side by side, across directories: each delete waits for a
        // sync (concurrent ones share it: group commit) or, on S3, for a few
        // round trips. Gathered in batches, so memory stays bounded.
        let mut doomed = Vec::new();
        let last = total.saturating_sub(1);
        // The next directories are listed while one is swept.
        let mut listings = futures::stream::iter(prefixes)
            .map(|(alg, prefix)| {
                let dir = format!("{root}/{alg}/{prefix}");
                async move { self.stored_blobs_in(&dir, &alg).await }
            })
            .buffered(4)
            .enumerate();
        while let Some((done, listed)) = listings.next().await {
            pacer.breathe().await;
            opts.step(GcStep::Sweeping { done, total });
            self.keep_lease(lease.as_deref_mut()).await?;
            {
                for (digest, size, modified) in listed? {
                    let k = key(&digest);
                    if marked.contains(&k) {
                        continue;
                    }
                    let link_age_ok = newest_link.get(&k).is_none_or(|t| old_enough(*t, opts.grace));
                    if !old_enough(modified, opts.grace) || !link_age_ok {
                        continue;
                    }
                    if opts.dry_run {
                        report.blobs_deleted += 1;
                        report.bytes_freed += size;
                        report.layer_links_deleted += repos_linking(k).count();
                        continue;
                    }
                    doomed.push((digest, k, size));
                }
                if doomed.len() < GC_DELETE_BATCH && done < last {
                    continue;
                }
                let deletions = futures::stream::iter(std::mem::take(&mut doomed))
                    .map(|(digest, k, size)| {
                        let links: Vec<String> = repos_linking(k)
                            .map(|i| layout::layer_link(&scans[i].0, &digest))
                            .collect();
                        self.delete_blob_for_gc(digest, links, size, &pass)
                    })
                    .buffer_unordered(GC_DELETES_IN_FLIGHT)
                    .collect::<Vec<_>>()
                    .await;
                pacer.breathe().await;
                for outcome in deletions {
                    match outcome? {
                        Some((size, links)) => {
                            report.blobs_deleted += 1;
                            report.bytes_freed += size;
                            report.layer_links_deleted += links;
                        }
                        None => report.spared_in_use += 1,
                    }
                }
            }
        }

        // Layer links of blobs that live on elsewhere but that nothing in this
        // repository references any more (layers of a push never finished,
        // manifests deleted).
        for (i, (name, scan)) in scans.iter().enumerate() {
            pacer.breathe().await;
            for (digest, t) in &scan.layers {
                let k = key(digest);
                if used_in_repo[i].contains(&k) || !marked.contains(&k) || !old_enough(*t, opts.grace) {
                    continue;
                }
                if opts.dry_run {
                    report.layer_links_deleted += 1;
                    continue;
                }
                let Some(claim) = self.claim(digest, false, &pass).await? else {
                    report.spared_in_use += 1;
                    continue;
                };
                let deleted = match self.claim_held(&claim) {
                    true => self
                        .backend
                        .delete(&layout::layer_link(name, digest))
                        .await
                        .map(|()| true),
                    false => Ok(false),
                };
                let released = self.release_claim(claim).await;
                match deleted? {
                    true => report.layer_links_deleted += 1,
                    false => report.spared_in_use += 1,
                }
                released?;
            }
        }

        opts.step(GcStep::Sweeping { done: total, total });
        if !opts.dry_run {
            report.uploads_purged = self.purge_stale_uploads().await?;
            // Usage only went down: counted afresh on the next push, here
            // and (a new generation of the quotas' logs) on other replicas.
            if self.shared_gate.is_some() {
                self.compact_quota_logs(now).await?;
                // The catalog index: what the mark walked, less what is gone.
                let walked: Vec<RepoName> = scans.iter().map(|(n, _)| n.clone()).collect();
                self.reconcile_catalog_index(Some(&walked), Some(now)).await?;
            }
            self.forget_quota_counts().await;
        }
        self.gate.forget_older_than(opts.grace);
        if let (Some(g), Some(horizon), false) = (&self.shared_gate, pass.horizon, opts.dry_run) {
            g.forget_pins_before(horizon).await?;
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Deletes one unmarked blob: its links, then its bytes, under a claim.
    /// `None` when the gate refuses (a push is referencing it); otherwise the
    /// bytes freed and the links removed.
    pub(crate) async fn delete_blob_for_gc(
        &self,
        digest: Digest,
        links: Vec<String>,
        size: u64,
        pass: &PassClaims,
    ) -> Result<Option<(u64, usize)>> {
        let Some(claim) = self.claim(&digest, true, pass).await? else {
            return Ok(None);
        };
        if !self.claim_held(&claim) {
            self.release_claim(claim).await?;
            return Ok(None);
        }
        // Links first: a link without bytes reads as an unknown blob, bytes
        // without a link are garbage for the next pass; never a link to
        // nothing that a manifest could be accepted on (the manifest PUT
        // checks the bytes).
        let mut result = Ok(());
        for link in &links {
            result = result.and(self.backend.delete(link).await);
        }
        if result.is_ok() {
            result = self.backend.delete_prefix(&layout::blob_dir(&digest)).await;
        }
        // Before the release: a push of the same manifest after it must not
        // find the deleted bytes in the cache and skip storing them.
        self.manifest_cache.remove(&digest);
        let released = self.release_claim(claim).await;
        result?;
        released?;
        Ok(Some((size, links.len())))
    }

    /// What `name` holds, without the tags retention removed (`removed`,
    /// still there in a dry run).
    pub(crate) async fn scan_repository(&self, name: &RepoName, removed: &[TagInfo]) -> Result<RepoScan> {
        // Each read is a round trip on S3: they run side by side, in order.
        let mut scan = RepoScan::default();
        let tags: Vec<Tag> = self
            .backend
            .list(&layout::tags_dir(name))
            .await?
            .into_iter()
            .filter_map(|t| t.parse::<Tag>().ok())
            .filter(|tag| !removed.iter().any(|t| &t.tag == tag))
            .collect();
        let resolved = futures::stream::iter(tags)
            .map(|tag| async move { self.resolve_tag(name, &tag).await })
            .buffered(GC_READS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        for d in resolved {
            scan.tags.extend(d?);
        }
        let revisions = self.list_digest_dirs(&layout::revisions_dir(name)).await?;
        scan.revisions = self
            .link_times(revisions, |d| layout::manifest_revision_link(name, d))
            .await?;
        let layers = self.list_digest_dirs(&layout::layers_dir(name)).await?;
        scan.layers = self.link_times(layers, |d| layout::layer_link(name, d)).await?;
        Ok(scan)
    }

    /// The links of `digests` that exist (`link` names each), with their times.
    async fn link_times(
        &self,
        digests: Vec<Digest>,
        link: impl Fn(&Digest) -> String,
    ) -> Result<Vec<(Digest, Option<SystemTime>)>> {
        let times = futures::stream::iter(digests)
            .map(|d| {
                let key = link(&d);
                async move { self.link_time(&key).await.map(|t| t.map(|t| (d, t))) }
            })
            .buffered(GC_READS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        let mut out = Vec::new();
        for t in times {
            out.extend(t?);
        }
        Ok(out)
    }

    /// `Some(modified)` when the link exists (`modified` may be unknown).
    async fn link_time(&self, key: &str) -> Result<Option<Option<SystemTime>>> {
        match self.backend.head(key).await {
            Ok(meta) => Ok(Some(meta.modified)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The digests of a `<alg>/<hex>/...` tree.
    pub(crate) async fn list_digest_dirs(&self, dir: &str) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in self.backend.list(dir).await? {
            for hex in self.backend.list(&format!("{dir}/{alg}")).await? {
                if let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// The blobs of one `<alg>/<xx>` directory of the blob store, with their
    /// size and modification time.
    async fn stored_blobs_in(&self, dir: &str, alg: &str) -> Result<Vec<(Digest, u64, Option<SystemTime>)>> {
        let digests = self
            .backend
            .list(dir)
            .await?
            .into_iter()
            .filter_map(|hex| format!("{alg}:{hex}").parse::<Digest>().ok());
        // Side by side: on S3 each is a round trip.
        let heads = futures::stream::iter(digests)
            .map(|d| async move {
                match self.backend.head(&layout::blob_data(&d)).await {
                    Ok(meta) => Ok(Some((d, meta.size, meta.modified))),
                    // A directory without data: an interrupted delete; the
                    // empty directory costs nothing.
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(RegistryError::from(e)),
                }
            })
            .buffer_unordered(GC_READS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        let mut out = Vec::new();
        for h in heads {
            out.extend(h?);
        }
        Ok(out)
    }

    /// Every blob in the blob store (for tests).
    #[cfg(test)]
    async fn stored_blobs(&self) -> Result<Vec<(Digest, u64, Option<SystemTime>)>> {
        let root = layout::blobs_root();
        let mut out = Vec::new();
        for alg in self.backend.list(&root).await? {
            for prefix in self.backend.list(&format!("{root}/{alg}")).await? {
                out.extend(self.stored_blobs_in(&format!("{root}/{alg}/{prefix}"), &alg).await?);
            }
        }
        Ok(out)
    }

    /// What a stored manifest references, read once per pass. `None` for a
    /// manifest whose bytes are gone.
    async fn manifest_refs(&self, digest: &Digest, cache: &mut HashMap<Digest, Option<Refs>>) -> Result<Option<Refs>> {
        if let Some(hit) = cache.get(digest) {
            return Ok(hit.clone());
        }
        let refs = match self.read_manifest_blob(digest).await? {
            None => None,
            Some(content) => Some(match Manifest::parse(&content.bytes, Some(&content.media_type)) {
                Ok(m) => Refs {
                    blobs: m.required_blobs().map(|d| key(&d.digest)).collect(),
                    children: match m.kind {
                        ManifestKind::Index => m.manifests.iter().map(|d| key(&d.digest)).collect(),
                        _ => Vec::new(),
                    },
                    subject: m.subject.map(|s| s.digest),
                },
                // A manifest berth cannot parse (docker schema 1, from a
                // distribution directory): keep every digest it mentions.
                Err(_) => Refs {
                    blobs: digests_mentioned(&content.bytes).iter().map(key).collect(),
                    ..Refs::default()
                },
            }),
        };
        cache.insert(digest.clone(), refs.clone());
        Ok(refs)
    }

    /// The manifests of a repository that stay.
    async fn kept_manifests(
        &self,
        scan: &RepoScan,
        opts: &GcOptions,
        cache: &mut HashMap<Digest, Option<Refs>>,
        old_enough: impl Fn(Option<SystemTime>, Duration) -> bool,
    ) -> Result<HashSet<Key>> {
        let stored: HashSet<Key> = scan.revisions.iter().map(|(d, _)| key(d)).collect();
        let mut kept: HashSet<Key> = scan.tags.iter().map(key).filter(|k| stored.contains(k)).collect();
        for (d, t) in &scan.revisions {
            let k = key(d);
            let keep = if scan.released.contains(&k) {
                // Untagged by retention in this pass: goes, unless young.
                !old_enough(*t, opts.grace)
            } else {
                match opts.delete_untagged_after {
                    // Default: every manifest stays.
                    None => true,
                    Some(max_age) => !old_enough(*t, max_age) || !old_enough(*t, opts.grace),
                }
            };
            if keep {
                kept.insert(k);
            }
        }
        // Children of kept indexes, and referrers of kept subjects, until nothing changes.
        loop {
            let mut added = Vec::new();
            for (d, _) in &scan.revisions {
                let k = key(d);
                let refs = self.manifest_refs(d, cache).await?;
                if kept.contains(&k) {
                    if let Some(r) = &refs {
                        added.extend(r.children.iter().filter(|c| !kept.contains(*c)).copied());
                    }
                } else if let Some(Refs { subject: Some(s), .. }) = &refs {
                    if kept.contains(&key(s)) {
                        added.push(k);
                    }
                }
            }
            if added.is_empty() {
                break;
            }
            kept.extend(added);
        }
        Ok(kept)
    }

    /// Removes an untagged manifest from a repository: its revision link and
    /// its entry in its subject's referrers.
    async fn delete_revision(
        &self,
        name: &RepoName,
        digest: &Digest,
        cache: &mut HashMap<Digest, Option<Refs>>,
    ) -> Result<()> {
        if let Some(Refs { subject: Some(s), .. }) = self.manifest_refs(digest, cache).await? {
            self.backend.delete(&layout::referrer_entry(name, &s, digest)).await?;
        }
        self.backend
            .delete(&layout::manifest_revision_link(name, digest))
            .await
            .map_err(RegistryError::from)
    }
}

/// Every `sha256:<hex>` / `sha512:<hex>` string in a document.
fn digests_mentioned(bytes: &[u8]) -> Vec<Digest> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    for (alg, len) in [("sha256:", 64), ("sha512:", 128)] {
        let mut rest = text.as_ref();
        while let Some(i) = rest.find(alg) {
            let candidate = rest[i..].get(..alg.len() + len).unwrap_or("");
            if let Ok(d) = candidate.parse::<Digest>() {
                out.push(d);
            }
            rest = &rest[i + alg.len()..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn digests_are_found_in_documents_berth_cannot_parse() {
        let h = "ab".repeat(32);
        let doc =
            format!(r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"sha256:{h}"}},{{"blobSum":"sha256:short"}}]}}"#);
        let found = super::digests_mentioned(doc.as_bytes());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].hex(), h);
    }
}

#[cfg(test)]
pub(crate) mod registry_tests;
