//! Quotas where several processes write the store (S3 replicas serving one
//! bucket): what one process's memory orders on exclusive storage (see
//! [`super::quota`]) is ordered through the store.
//!
//! Each quota has, under `berth/v1/quota/<id>/`:
//! - a **lock**, created only if absent (`If-None-Match: *`), held by one
//!   manifest PUT while it checks the quota and records what it adds: a few
//!   round trips. A lock seen unchanged for [`LedgerTiming::stale_lock`]
//!   belongs to a process that died: a waiter removes it. Its holder gives
//!   up (the PUT fails with 503, the client retries) if it would still be
//!   writing after half that time.
//! - a **log** of reservations: one object per manifest PUT that added
//!   blobs, naming their keys and sizes, written under the lock before the
//!   PUT writes its revision. A process's count of a quota is the walk of
//!   its repositories plus every log entry, so a reservation is counted
//!   everywhere from the moment it is written, revision written or not.
//! - a **generation**, replaced by each garbage collection pass after it
//!   removed the entries older than twice the pin validity (their PUTs have
//!   written their revisions, which a walk reads, or failed): every process
//!   seeing a new generation counts afresh, the bytes the pass freed
//!   included.
//!
//! A process reading the log keeps the names of the entries it applied, so
//! an entry listed late (a slow holder whose lock was taken as stale) is
//! still counted once.

use crate::gc::shared::SharedTiming;
use crate::gc::Key;
use crate::{RegistryError, Result};
use berth_storage::{layout, Backend, StorageError};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How long a quota lock may be held before waiters take it as abandoned,
/// and how often they look.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LedgerTiming {
    pub stale_lock: Duration,
    pub poll: Duration,
    /// Log entries older than this are folded into the walk by a pass.
    pub keep_entries: Duration,
}

impl From<SharedTiming> for LedgerTiming {
    fn from(t: SharedTiming) -> Self {
        LedgerTiming {
            stale_lock: t.claim_limit,
            poll: t.poll.min(Duration::from_millis(50)),
            keep_entries: 2 * t.pin_validity + Duration::from_secs(1),
        }
    }
}

/// The store side of the quotas of one process.
pub(crate) struct Ledger {
    backend: Arc<dyn Backend>,
    process: String,
    timing: LedgerTiming,
}

/// One quota's lock, held.
pub(crate) struct LedgerLock {
    key: String,
    taken: Instant,
    backend: Arc<dyn Backend>,
    released: bool,
}

impl Drop for LedgerLock {
    /// A PUT cancelled half-way (its client went away) lets go at once
    /// rather than leave every other push waiting for the lock to go stale.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (backend, key) = (self.backend.clone(), self.key.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = backend.delete(&key).await;
            });
        }
    }
}

/// What a process learned from the log since it last looked.
pub(crate) enum LogNews {
    /// A pass began a new generation: count afresh (walk and every entry).
    NewGeneration(String),
    /// Entries not applied yet, with their names.
    Entries(Vec<(String, Vec<(Key, u64)>)>),
}

/// Where a process's count of a quota stands in the log.
#[derive(Default)]
pub(crate) struct LogPosition {
    pub generation: Option<String>,
    pub applied: HashSet<String>,
    /// When the log was last read, to spare reads on the upload path.
    pub read_at: Option<Instant>,
}

impl Ledger {
    pub(crate) fn new(backend: Arc<dyn Backend>, timing: LedgerTiming) -> Ledger {
        Ledger {
            backend,
            process: uuid::Uuid::new_v4().simple().to_string(),
            timing,
        }
    }

    /// Takes quota `id`'s lock, waiting while another process holds it.
    pub(crate) async fn lock(&self, id: &str) -> Result<LedgerLock> {
        let key = layout::quota_lock(id);
        let mut seen: Option<(Bytes, Instant)> = None;
        loop {
            let body = Bytes::from(format!("{} {}", self.process, uuid::Uuid::new_v4().simple()));
            if self.backend.put_if_absent(&key, body).await? {
                return Ok(LedgerLock {
                    key,
                    taken: Instant::now(),
                    backend: self.backend.clone(),
                    released: false,
                });
            }
            // Each holding writes a body of its own: the same body for long
            // is one holder that stopped.
            let current = match self.backend.get(&key).await {
                Ok(b) => b,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            match &seen {
                Some((body, since)) if *body == current => {
                    if since.elapsed() >= self.timing.stale_lock {
                        tracing::warn!(lock = %key, "removing a quota lock held too long (its process stopped)");
                        self.backend.delete(&key).await?;
                        seen = None;
                        continue;
                    }
                }
                _ => seen = Some((current, Instant::now())),
            }
            tokio::time::sleep(self.timing.poll).await;
        }
    }

    /// Fails if `lock` was held so long that waiters may take it as stale:
    /// the caller then writes nothing.
    pub(crate) fn check_held(&self, lock: &LedgerLock) -> Result<()> {
        if lock.taken.elapsed() < self.timing.stale_lock / 2 {
            return Ok(());
        }
        Err(RegistryError::Storage(StorageError::Unavailable {
            key: lock.key.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the store was too slow to check the quota while holding its lock; retry",
            ),
        }))
    }

    pub(crate) async fn unlock(&self, mut lock: LedgerLock) -> Result<()> {
        lock.released = true;
        self.backend.delete(&lock.key).await.map_err(Into::into)
    }

    /// What changed in quota `id`'s log since `position`.
    pub(crate) async fn news(&self, id: &str, position: &LogPosition) -> Result<LogNews> {
        let (generation, names) = futures::try_join!(self.generation(id), async {
            self.backend
                .list(&layout::quota_log_dir(id))
                .await
                .map_err(RegistryError::from)
        })?;
        if generation != position.generation {
            return Ok(LogNews::NewGeneration(generation.unwrap_or_default()));
        }
        let fresh: Vec<String> = names.into_iter().filter(|n| !position.applied.contains(n)).collect();
        self.read_entries(id, fresh).await.map(LogNews::Entries)
    }

    /// Every entry of quota `id`'s log (for counting afresh).
    pub(crate) async fn all_entries(&self, id: &str) -> Result<Vec<(String, Vec<(Key, u64)>)>> {
        let names = self.backend.list(&layout::quota_log_dir(id)).await?;
        self.read_entries(id, names).await
    }

    async fn read_entries(&self, id: &str, names: Vec<String>) -> Result<Vec<(String, Vec<(Key, u64)>)>> {
        let dir = layout::quota_log_dir(id);
        let reads = names.into_iter().map(|name| {
            let key = format!("{dir}/{name}");
            async move {
                match self.backend.get(&key).await {
                    Ok(bytes) => Ok(Some((name, parse_entry(&bytes)))),
                    // Removed by a pass meanwhile: the walk counts it.
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(RegistryError::from(e)),
                }
            }
        });
        let read = futures::future::try_join_all(reads).await?;
        Ok(read.into_iter().flatten().collect())
    }

    async fn generation(&self, id: &str) -> Result<Option<String>> {
        match self.backend.get(&layout::quota_generation(id)).await {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Records `blobs` in quota `id`'s log (its lock held); returns the
    /// entry's name.
    pub(crate) async fn append(&self, id: &str, lock: &LedgerLock, blobs: &[(Key, u64)]) -> Result<String> {
        self.check_held(lock)?;
        let name = uuid::Uuid::new_v4().simple().to_string();
        let mut body = String::with_capacity(blobs.len() * 80);
        for (k, size) in blobs {
            body.push_str(&hex::encode(k));
            body.push(' ');
            body.push_str(&size.to_string());
            body.push('\n');
        }
        self.backend
            .put(&format!("{}/{name}", layout::quota_log_dir(id)), Bytes::from(body))
            .await?;
        Ok(name)
    }

    /// After a garbage collection pass (`now` in store time): removes quota
    /// `id`'s entries older than [`LedgerTiming::keep_entries`] and starts a
    /// new generation, so that every process counts afresh.
    pub(crate) async fn compact(&self, id: &str, now: SystemTime) -> Result<usize> {
        let lock = self.lock(id).await?;
        let cutoff = now
            .checked_sub(self.timing.keep_entries)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let dir = layout::quota_log_dir(id);
        // Side by side: a day of pushes may have left thousands.
        let names = self.backend.list(&dir).await?;
        let removed = futures::stream::iter(names)
            .map(|name| {
                let key = format!("{dir}/{name}");
                async move {
                    match self.backend.head(&key).await {
                        Ok(meta) if meta.modified.is_some_and(|t| t < cutoff) => {
                            self.backend.delete(&key).await?;
                            Ok(true)
                        }
                        Ok(_) => Ok(false),
                        Err(e) if e.is_not_found() => Ok(false),
                        Err(e) => Err(RegistryError::from(e)),
                    }
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<bool>>()
            .await?
            .into_iter()
            .filter(|r| *r)
            .count();
        let generation = uuid::Uuid::new_v4().simple().to_string();
        self.backend
            .put(&layout::quota_generation(id), Bytes::from(generation))
            .await?;
        self.unlock(lock).await?;
        Ok(removed)
    }
}

/// An entry's lines: `<key hex> <size>`. A damaged line is skipped (it can
/// only under-count a reservation the next pass folds into the walk).
fn parse_entry(bytes: &[u8]) -> Vec<(Key, u64)> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .filter_map(|line| {
            let (k, size) = line.split_once(' ')?;
            let mut key = [0u8; 32];
            hex::decode_to_slice(k, &mut key).ok()?;
            Some((key, size.parse().ok()?))
        })
        .collect()
}

/// The name of a quota in the store: its repository pattern, hashed (every
/// process has the same rules).
pub(crate) fn quota_id(pattern: &str) -> String {
    let mut h = berth_spec::Algorithm::Sha256.digester();
    h.update(pattern.as_bytes());
    h.finish().hex()[..32].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_skipped() {
        let k = [7u8; 32];
        let text = format!("{} 42\nnot a line\n{} x\n", hex::encode(k), hex::encode([1u8; 32]));
        assert_eq!(parse_entry(text.as_bytes()), vec![(k, 42)]);
        assert_eq!(quota_id("team/**"), quota_id("team/**"));
        assert_ne!(quota_id("team/**"), quota_id("team/*"));
        assert_eq!(quota_id("x").len(), 32);
    }
}
