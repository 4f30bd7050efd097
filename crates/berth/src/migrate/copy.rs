//! The copy of `berth migrate`, in the order that keeps the destination
//! consistent whenever it stops:
//!
//! 1. blobs (layers, configs and manifest bytes), streamed from the source
//!    into the destination registry's `store_blob`, which hashes them as they
//!    pass and stores nothing under a digest the bytes do not match;
//! 2. links: manifest revisions, layer links, referrers index entries — each
//!    only a claim on bytes that step 1 put in place;
//! 3. tags last: history first, `current/link` at the very end, and only
//!    when the manifest it names is at the destination.
//!
//! A step starts only when the one before succeeded for everything, so an
//! interrupted or failed run never leaves a tag pointing at something
//! missing. What the destination already has (a blob of the source's size, a
//! link with the same bytes) is skipped, which makes a second run cheap and
//! a resumption of the first.

use crate::progress::{self, Progress};
use anyhow::anyhow;
use berth_registry::inventory::{LinkKey, RepositoryInventory};
use berth_registry::{Registry, RegistryConfig, RegistryError};
use berth_spec::{Digest, RepoName, Tag};
use berth_storage::{layout, Backend};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Chunks of a blob streamed from the source: the size of a read, not of the blob.
const CHUNK: usize = 1 << 20;

/// What a migration did, for the summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub repositories: u64,
    pub tags: Counts,
    pub manifests: Counts,
    pub blobs: Counts,
    /// Layer links and referrers index entries.
    pub links: Counts,
    pub bytes_copied: u64,
    /// Blobs a repository links whose bytes the source does not have (a
    /// garbage-collected or interrupted push): there is nothing to copy.
    pub absent_in_source: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub copied: u64,
    pub skipped: u64,
}

impl Counts {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Copied => self.copied += 1,
            Outcome::Skipped => self.skipped += 1,
            Outcome::Gone => {}
        }
    }
}

impl Tally {
    /// `migrated 2 repositories: tags 3 copied 0 skipped, ...`: one line,
    /// the same on a terminal and in a log.
    pub fn summary(&self) -> String {
        let c = |name: &str, c: &Counts| format!("{name} {} copied {} skipped", c.copied, c.skipped);
        let mut line = format!(
            "migrated {} repositories: {}, {}, {}, {}, {} bytes copied ({})",
            self.repositories,
            c("tags", &self.tags),
            c("manifests", &self.manifests),
            c("blobs", &self.blobs),
            c("links", &self.links),
            self.bytes_copied,
            progress::human(self.bytes_copied),
        );
        if self.absent_in_source > 0 {
            line.push_str(&format!(
                ", {} linked blobs absent at the source",
                self.absent_in_source
            ));
        }
        line
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Copied,
    Skipped,
    /// Gone from the source since the walk (deleted meanwhile): nothing to copy.
    Gone,
}

pub struct Copier {
    src: Arc<dyn Backend>,
    dst: Arc<dyn Backend>,
    /// The source's domain view: the walk.
    src_registry: Registry,
    /// The destination's: verified blob writes.
    dst_registry: Registry,
    jobs: usize,
    tally: Mutex<Tally>,
    progress: Progress,
    /// Bytes of blobs copied so far, for the progress line.
    streamed: AtomicU64,
}

impl Copier {
    pub fn new(src: Arc<dyn Backend>, dst: Arc<dyn Backend>, jobs: usize) -> Copier {
        Copier {
            src_registry: Registry::new(src.clone(), RegistryConfig::default()),
            dst_registry: Registry::new(dst.clone(), RegistryConfig::default()),
            src,
            dst,
            jobs: jobs.max(1),
            tally: Mutex::new(Tally::default()),
            progress: Progress::new(),
            streamed: AtomicU64::new(0),
        }
    }

    pub fn tally(&self) -> Tally {
        *self.tally.lock().unwrap()
    }

    /// Runs the three steps; `Err` holds every item that failed, each naming it.
    pub async fn run(&self) -> Result<(), Vec<anyhow::Error>> {
        let repositories = self.walk().await.map_err(|e| vec![e])?;
        self.tally.lock().unwrap().repositories = repositories.len() as u64;

        // Each blob once, staged under one repository that links it.
        let mut blobs: BTreeMap<&Digest, &RepoName> = BTreeMap::new();
        for inv in &repositories {
            for d in inv.blobs() {
                blobs.entry(d).or_insert(&inv.name);
            }
        }
        let total = blobs.len() as u64;
        let done = &AtomicU64::new(0);
        let failures: Vec<anyhow::Error> = futures::stream::iter(blobs)
            .map(|(digest, repo)| async move {
                let result = self.copy_blob(repo, digest, done, total).await;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                self.show_blobs(n, total);
                result
            })
            .buffer_unordered(self.jobs)
            .filter_map(|r| async move { r.err() })
            .collect()
            .await;
        if !failures.is_empty() {
            return Err(failures);
        }

        let links: Vec<(LinkKey, &RepoName)> = repositories
            .iter()
            .flat_map(|inv| inv.link_keys().into_iter().map(move |k| (k, &inv.name)))
            .collect();
        let total = links.len() as u64;
        let done = &AtomicU64::new(0);
        let failures: Vec<anyhow::Error> = futures::stream::iter(links)
            .map(|(link, repo)| async move {
                let result = self
                    .copy_link(link.key())
                    .await
                    .map_err(|e| e.context(format!("{repo}")));
                if let Ok(outcome) = result {
                    let mut tally = self.tally.lock().unwrap();
                    match link {
                        LinkKey::Revision(_) => tally.manifests.add(outcome),
                        LinkKey::Layer(_) | LinkKey::Referrer(_) => tally.links.add(outcome),
                    }
                }
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                self.progress.count("links", n, total);
                result.err()
            })
            .buffer_unordered(self.jobs * 4)
            .filter_map(|e| async move { e })
            .collect()
            .await;
        if !failures.is_empty() {
            return Err(failures);
        }

        let total: u64 = repositories.iter().map(|inv| inv.tags.len() as u64).sum();
        let mut done = 0;
        let mut failures = Vec::new();
        for inv in &repositories {
            for (tag, history) in &inv.tags {
                match self.copy_tag(inv, tag, history).await {
                    Ok(outcome) => self.tally.lock().unwrap().tags.add(outcome),
                    Err(e) => failures.push(e),
                }
                done += 1;
                self.progress.count("tags", done, total);
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }

    /// Every stored repository of the source and what it holds.
    async fn walk(&self) -> anyhow::Result<Vec<RepositoryInventory>> {
        let names = self
            .src_registry
            .stored_repository_names()
            .await
            .map_err(|e| anyhow!(e).context("listing the source's repositories"))?;
        let mut out = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let inv = self
                .src_registry
                .inventory(name)
                .await
                .map_err(|e| anyhow!(e).context(format!("reading repository {name} at the source")))?;
            out.push(inv);
            self.progress.count("repositories", i as u64 + 1, names.len() as u64);
        }
        Ok(out)
    }

    fn show_blobs(&self, done: u64, total: u64) {
        let bytes = self.streamed.load(Ordering::Relaxed);
        self.progress
            .count(&format!("blobs ({} copied)", progress::human(bytes)), done, total);
    }

    async fn copy_blob(&self, repo: &RepoName, digest: &Digest, done: &AtomicU64, total: u64) -> anyhow::Result<()> {
        let key = layout::blob_data(digest);
        let size = match self.src.head(&key).await {
            Ok(meta) => meta.size,
            Err(e) if e.is_not_found() => {
                tracing::warn!(%digest, %repo, "linked, but the source has no bytes for it: not copied");
                self.tally.lock().unwrap().absent_in_source += 1;
                return Ok(());
            }
            Err(e) => return Err(anyhow!(e).context(format!("blob {digest}: reading the source"))),
        };
        match self.dst.head(&key).await {
            Ok(meta) if meta.size == size => {
                self.tally.lock().unwrap().blobs.skipped += 1;
                return Ok(());
            }
            // A torn or foreign copy of another size: replaced by the verified one.
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(anyhow!(e).context(format!("blob {digest}: reading the destination"))),
        }
        let body = match self.src.open(&key, None).await {
            Ok(body) => body,
            // Deleted between the head and the open (a collection at the source).
            Err(e) if e.is_not_found() => {
                self.tally.lock().unwrap().absent_in_source += 1;
                return Ok(());
            }
            Err(e) => return Err(anyhow!(e).context(format!("blob {digest}: reading the source"))),
        };
        let stream = body
            .into_stream(CHUNK)
            .inspect(|chunk| {
                if let Ok(c) = chunk {
                    self.streamed.fetch_add(c.len() as u64, Ordering::Relaxed);
                    self.show_blobs(done.load(Ordering::Relaxed), total);
                }
            })
            .boxed();
        // `store_blob` needs a 'static stream: the inspection above borrows
        // self, so the bytes go through a channel to a stream that owns nothing.
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(2);
        let forward = async move {
            let mut stream = stream;
            while let Some(chunk) = stream.next().await {
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        };
        let mut rx = rx;
        let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
        let (stored, ()) = tokio::join!(self.dst_registry.store_blob(repo, digest, body), forward);
        match stored {
            Ok(stored) => {
                let mut tally = self.tally.lock().unwrap();
                tally.blobs.copied += 1;
                tally.bytes_copied += stored;
                Ok(())
            }
            Err(RegistryError::DigestMismatch { expected, actual }) => Err(anyhow!(
                "blob {expected}: the source's bytes hash to {actual} (corrupt at the source); nothing was stored under {expected}"
            )),
            Err(e) => Err(anyhow!(e).context(format!("blob {digest}: copying into the destination"))),
        }
    }

    /// Copies one small object unless the destination holds the same bytes.
    async fn copy_link(&self, key: &str) -> anyhow::Result<Outcome> {
        let content = match self.src.get(key).await {
            Ok(c) => c,
            Err(e) if e.is_not_found() => return Ok(Outcome::Gone),
            Err(e) => return Err(anyhow!(e).context(format!("reading {key} at the source"))),
        };
        match self.dst.get(key).await {
            Ok(existing) if existing == content => return Ok(Outcome::Skipped),
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(anyhow!(e).context(format!("reading {key} at the destination"))),
        }
        self.dst
            .put(key, content)
            .await
            .map_err(|e| anyhow!(e).context(format!("writing {key} at the destination")))?;
        Ok(Outcome::Copied)
    }

    /// Copies one tag: its history, then `current/link`, and only if the
    /// manifest it names (now: the tag may have moved since the walk) is
    /// stored at the destination.
    async fn copy_tag(&self, inv: &RepositoryInventory, tag: &Tag, history: &[Digest]) -> anyhow::Result<Outcome> {
        let name = &inv.name;
        let current = layout::tag_current_link(name, tag);
        let content = match self.src.get(&current).await {
            Ok(c) => c,
            // No current link: deleted since the walk, or never completed.
            Err(e) if e.is_not_found() => return Ok(Outcome::Gone),
            Err(e) => return Err(anyhow!(e).context(format!("tag {name}:{tag}: reading the source"))),
        };
        let digest: Digest = std::str::from_utf8(&content)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| anyhow!("tag {name}:{tag}: its link at the source does not hold a digest"))?;
        match self.dst.head(&layout::manifest_revision_link(name, &digest)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                return Err(anyhow!(
                    "tag {name}:{tag}: points at {digest}, which is not at the destination (pushed to the \
                     source during the migration); run the migration again to copy it"
                ))
            }
            Err(e) => return Err(anyhow!(e).context(format!("tag {name}:{tag}: reading the destination"))),
        }
        let mut outcome = Outcome::Skipped;
        for key in inv.tag_history_keys(tag, history, &digest) {
            let copied = self
                .copy_link(&key)
                .await
                .map_err(|e| e.context(format!("tag {name}:{tag}")))?;
            if copied == Outcome::Copied {
                outcome = Outcome::Copied;
            }
        }
        // The bytes checked above, not a second read that may have moved on.
        let write =
            |e: berth_storage::StorageError| anyhow!(e).context(format!("tag {name}:{tag}: writing the destination"));
        match self.dst.get(&current).await {
            Ok(existing) if existing == content => {}
            Ok(_) => {
                self.dst.put(&current, content).await.map_err(write)?;
                outcome = Outcome::Copied;
            }
            Err(e) if e.is_not_found() => {
                self.dst.put(&current, content).await.map_err(write)?;
                outcome = Outcome::Copied;
            }
            Err(e) => return Err(anyhow!(e).context(format!("tag {name}:{tag}: reading the destination"))),
        }
        Ok(outcome)
    }
}
