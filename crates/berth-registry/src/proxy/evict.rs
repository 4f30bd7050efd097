//! The size bound of the mirror's cache: when the bytes cached for upstreams
//! pass it, the least recently pulled images go, until the cache fits.
//!
//! - What counts: the distinct blobs (manifests, configs, layers) referenced
//!   by the manifests of proxied repositories, except blobs some other
//!   repository links too (evicting would not free them; they are pushed
//!   content, not cache).
//! - What goes: whole images (a manifest with, for an index, its children),
//!   least recently pulled first. "Pulled" is a manifest read through the
//!   mirror since this process started, or else when the image was cached.
//! - What never goes: an image pulled within `protect` (a pull in progress
//!   reads its manifests first and its blobs after, within that time), and
//!   a blob another kept manifest or another repository references.
//! - How: like garbage collection, under its lock and through its gate: the
//!   image's tags and revision links first, then each freed blob's links and
//!   bytes, a digest at a time; a blob a push pins, or that was touched
//!   since the pass began, is spared.

use super::Mirror;
use crate::gc::{key, Key};
use crate::{Registry, Result};
use berth_spec::{Digest, Manifest, ManifestKind, RepoName, Tag};
use berth_storage::layout;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

/// The bound and what it spares.
#[derive(Debug, Clone, Copy)]
pub struct CacheBound {
    pub max_bytes: u64,
    /// Images pulled within this long are never evicted.
    pub protect: Duration,
}

/// What one enforcement of the bound did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EvictionReport {
    /// Cached bytes before and after.
    pub cached_bytes: u64,
    pub cached_bytes_after: u64,
    pub images_evicted: usize,
    pub blobs_deleted: usize,
    /// Candidates left alone: pulled within the protection, or in use.
    pub spared: usize,
}

/// What a cached manifest references: config and layers, and an index's children.
#[derive(Clone, Default)]
struct Refs {
    blobs: Vec<Digest>,
    children: Vec<Digest>,
}

/// One cached image: a manifest and (for an index) its children.
struct Unit {
    repo: usize,
    top: Digest,
    members: Vec<Digest>,
    last_use: SystemTime,
}

impl Mirror {
    /// Notes that `digest` was read through the mirror from `name`.
    pub(crate) fn note_pull(&self, name: &RepoName, digest: &Digest) {
        let mut pulled = self.pulled.lock().unwrap();
        pulled.insert((name.clone(), digest.clone()), SystemTime::now());
    }

    fn last_pull(&self, name: &RepoName, digest: &Digest) -> Option<SystemTime> {
        self.pulled
            .lock()
            .unwrap()
            .get(&(name.clone(), digest.clone()))
            .copied()
    }
}

impl Registry {
    async fn refs_of(&self, digest: &Digest, cache: &mut HashMap<Digest, Refs>) -> Result<Refs> {
        if let Some(r) = cache.get(digest) {
            return Ok(r.clone());
        }
        let refs = match self.read_manifest_blob(digest).await? {
            Some(content) => match Manifest::parse(&content.bytes, Some(&content.media_type)) {
                Ok(m) => Refs {
                    blobs: m.required_blobs().map(|d| d.digest.clone()).collect(),
                    children: match m.kind {
                        ManifestKind::Index => m.manifests.iter().map(|d| d.digest.clone()).collect(),
                        _ => Vec::new(),
                    },
                },
                Err(_) => Refs::default(),
            },
            None => Refs::default(),
        };
        cache.insert(digest.clone(), refs.clone());
        Ok(refs)
    }

    /// Evicts least recently pulled images until the cache fits its bound;
    /// nothing without a bound. Waits for a running garbage collection pass.
    pub async fn enforce_upstream_cache_bound(&self) -> Result<EvictionReport> {
        let Some(bound) = self.config.upstream_cache else {
            return Ok(EvictionReport::default());
        };
        if !self.config.exclusive_storage {
            // Refused at start (the binary checks); a library user gets the reason.
            return Err(crate::RegistryError::Unsupported(
                "evicting from the upstream cache needs storage no other berth process writes".into(),
            ));
        }
        let _one_at_a_time = self.gc_running.lock().await;
        let started = Instant::now();
        let now = SystemTime::now();
        let mut report = EvictionReport::default();

        let mut repos = self.repositories_with("_manifests").await?;
        repos.extend(self.repositories_with("_layers").await?);
        repos.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        repos.dedup();
        let (proxied, others): (Vec<RepoName>, Vec<RepoName>) =
            repos.into_iter().partition(|r| self.mirror_holding(r).is_some());
        if proxied.is_empty() {
            return Ok(report);
        }
        // Blobs other repositories link: not cache, never deleted here.
        let mut outside: HashSet<Key> = HashSet::new();
        for name in &others {
            let scan = self.scan_repository(name, &[]).await?;
            outside.extend(scan.layers.iter().chain(&scan.revisions).map(|(d, _)| key(d)));
        }

        // Every cached image, and what each manifest references.
        let mut refs: HashMap<Digest, Refs> = HashMap::new();
        let mut units: Vec<Unit> = Vec::new();
        let mut unit_blobs: Vec<Vec<Key>> = Vec::new();
        let mut referrers: HashMap<Key, usize> = HashMap::new();
        let mut digests: HashMap<Key, Digest> = HashMap::new();
        let mut links: HashMap<Key, Vec<String>> = HashMap::new();
        for (i, name) in proxied.iter().enumerate() {
            let mirror = self.mirror_holding(name).expect("partitioned").clone();
            let scan = self.scan_repository(name, &[]).await?;
            for (d, _) in &scan.layers {
                links.entry(key(d)).or_default().push(layout::layer_link(name, d));
            }
            let mut children_of_some: HashSet<Key> = HashSet::new();
            for (d, _) in &scan.revisions {
                let r = self.refs_of(d, &mut refs).await?;
                children_of_some.extend(r.children.iter().map(key));
            }
            let revisions: HashSet<Key> = scan.revisions.iter().map(|(d, _)| key(d)).collect();
            for (d, t) in &scan.revisions {
                if children_of_some.contains(&key(d)) {
                    continue; // goes with its index
                }
                let mut members = vec![d.clone()];
                let children = self.refs_of(d, &mut refs).await?.children;
                members.extend(children.into_iter().filter(|c| revisions.contains(&key(c))));
                let mut last_use = t.unwrap_or(now);
                let mut blobs = Vec::new();
                for m in &members {
                    if let Some(p) = mirror.last_pull(name, m) {
                        last_use = last_use.max(p);
                    }
                    blobs.push(m.clone());
                    blobs.extend(self.refs_of(m, &mut refs).await?.blobs);
                }
                let mut keys: Vec<Key> = blobs
                    .into_iter()
                    .map(|b| {
                        let k = key(&b);
                        digests.entry(k).or_insert(b);
                        k
                    })
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                for k in &keys {
                    *referrers.entry(*k).or_default() += 1;
                }
                unit_blobs.push(keys);
                units.push(Unit {
                    repo: i,
                    top: d.clone(),
                    members,
                    last_use,
                });
            }
        }
        let mut sizes: HashMap<Key, u64> = HashMap::new();
        let mut cached = 0u64;
        for (k, d) in &digests {
            if outside.contains(k) {
                continue;
            }
            let size = match self.backend.head(&layout::blob_data(d)).await {
                Ok(meta) => meta.size,
                Err(e) if e.is_not_found() => 0,
                Err(e) => return Err(e.into()),
            };
            sizes.insert(*k, size);
            cached += size;
        }
        report.cached_bytes = cached;
        if cached <= bound.max_bytes {
            report.cached_bytes_after = cached;
            return Ok(report);
        }

        let mut order: Vec<usize> = (0..units.len()).collect();
        order.sort_by_key(|&i| units[i].last_use);
        for i in order {
            if cached <= bound.max_bytes {
                break;
            }
            let unit = &units[i];
            if now.duration_since(unit.last_use).unwrap_or_default() < bound.protect {
                report.spared += 1;
                continue;
            }
            let name = &proxied[unit.repo];
            // The image first: its tags, then its revision links.
            for tag in self.backend.list(&layout::tags_dir(name)).await? {
                let Ok(tag) = tag.parse::<Tag>() else { continue };
                if self.resolve_tag(name, &tag).await?.as_ref() == Some(&unit.top) {
                    self.backend.delete_prefix(&layout::tag_dir(name, &tag)).await?;
                }
            }
            for m in &unit.members {
                match self.backend.delete(&layout::manifest_revision_link(name, m)).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
                if let Some(mirror) = self.mirror_holding(name) {
                    mirror.pulled.lock().unwrap().remove(&(name.clone(), m.clone()));
                }
            }
            report.images_evicted += 1;
            // Then every blob nothing else references any more.
            for b in &unit_blobs[i] {
                let count = referrers.get_mut(b).expect("counted");
                *count -= 1;
                if *count > 0 || outside.contains(b) {
                    continue;
                }
                let (Some(digest), Some(size)) = (digests.get(b).cloned(), sizes.get(b).copied()) else {
                    continue;
                };
                let blob_links = links.remove(b).unwrap_or_default();
                match self
                    .delete_blob_for_gc(
                        digest,
                        blob_links,
                        size,
                        &crate::gc::PassClaims {
                            started,
                            grace: Duration::ZERO,
                            horizon: None,
                        },
                    )
                    .await?
                {
                    Some((freed, _)) => {
                        cached = cached.saturating_sub(freed);
                        report.blobs_deleted += 1;
                    }
                    None => report.spared += 1,
                }
            }
        }
        report.cached_bytes_after = cached;
        tracing::info!(
            evicted = report.images_evicted,
            blobs = report.blobs_deleted,
            before = report.cached_bytes,
            after = cached,
            bound = bound.max_bytes,
            "upstream cache over its bound: least recently pulled images evicted"
        );
        Ok(report)
    }
}
