//! The reference gate and the collector's lease on storage that several
//! berth processes write: S3 replicas serving one bucket. The in-memory
//! [`super::gate::ReferenceGate`] orders the pushes and the collector of one
//! process; here the same two decisions are ordered through the store, which
//! is strongly consistent for reads and listings after writes (Ceph RGW,
//! SeaweedFS and AWS S3 all are):
//!
//! - a pusher adding a reference to digest D first writes a *pin*,
//!   `gc/pins/<D>/<id>`, then lists `gc/claims/`; if D is claimed it waits
//!   until the claim is gone and starts again (and then finds D's bytes gone,
//!   like any pusher after a deletion);
//! - the collector first writes the *claim* `gc/claims/<D>`, then lists D's
//!   pins, and deletes nothing if one was written since its horizon.
//!
//! Each side writes before it reads what the other writes, so at least one
//! of them sees the other: either the collector sees the pin (and spares D),
//! or the pusher sees the claim (and waits for the deletion to end).
//!
//! Time comes from the store, not from the replicas' clocks: a pass reads the
//! store's time once (it writes an object and reads back its modification
//! time) and counts on from there with its own monotonic clock; a pin's time
//! is its object's modification time. A pin stays after its operation (it
//! records that D was referenced lately); the collector spares D if any pin
//! of D is younger than the *horizon*: the pass's start less the grace
//! period, and at least twice [`SharedTiming::pin_validity`]. An operation
//! must write its last reference within `pin_validity` of writing its pin,
//! or it fails (503, retry) before acknowledging anything
//! ([`StorePins::confirm`]). So a reference written after the pass began has
//! a pin younger than the horizon, and one written before it was read by the
//! mark. ARCHITECTURE.md has the whole argument.
//!
//! Claims are short: a collector deletes under a claim only within
//! [`SharedTiming::claim_limit`] of writing it, and a pusher that has seen a
//! claim for [`SharedTiming::stale_claim`] (its collector died) removes it.
//!
//! Retention removes tags the same way: the collector writes the claim
//! `gc/tag-claims/<repo>/_tag/<tag>`, then reads the tag again and removes
//! it only if it is still what it judged; a push of a tag that a retention
//! rule covers writes the tag, then looks for that claim, and if there is
//! one, waits for it to go and writes the tag again. Either the collector's
//! second read sees the push, or the push sees the claim and its write
//! comes after the removal.
//!
//! The lease makes one collector run per bucket at a time, to spare the work
//! of two; safety does not rest on it (two collectors both go through the
//! pins and claims). It is the object `gc/lease`, created only if absent
//! (`If-None-Match: *`), renewed by its holder, and taken over when its
//! modification time is older than [`SharedTiming::lease_ttl`] in store time.

use crate::{RegistryError, Result};
use berth_spec::{Digest, RepoName, Tag};
use berth_storage::{layout, Backend, StorageError};
use bytes::Bytes;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The durations of the shared protocol. Every replica of a bucket must use
/// the same ones (the defaults, outside tests).
#[derive(Debug, Clone, Copy)]
pub struct SharedTiming {
    /// An operation that adds references must have written them this soon
    /// after its pins, or it fails without acknowledging.
    pub pin_validity: Duration,
    /// A collector deletes under a claim only this soon after writing it.
    pub claim_limit: Duration,
    /// A claim a pusher has seen for this long belongs to a collector that
    /// died: the pusher removes it. Much longer than `claim_limit`.
    pub stale_claim: Duration,
    /// A lease not renewed for this long (store time) may be taken over.
    pub lease_ttl: Duration,
    /// How often a pusher waiting for a claim looks again.
    pub poll: Duration,
}

impl SharedTiming {
    /// The timing for `pin_validity` and `lease_ttl`: a claim is honoured for
    /// a fifth of the lease's time and thought stale after all of it.
    pub fn new(pin_validity: Duration, lease_ttl: Duration) -> SharedTiming {
        SharedTiming {
            pin_validity,
            claim_limit: lease_ttl / 5,
            stale_claim: lease_ttl,
            lease_ttl,
            poll: Duration::from_millis(200).min(lease_ttl / 10),
        }
    }
}

impl Default for SharedTiming {
    fn default() -> Self {
        SharedTiming::new(Duration::from_secs(10 * 60), Duration::from_secs(5 * 60))
    }
}

/// The store side of the reference gate, for one process.
pub(crate) struct SharedGate {
    backend: Arc<dyn Backend>,
    /// Names this process in the lease and its objects.
    process: String,
    timing: SharedTiming,
}

/// Pins written for one operation.
pub(crate) struct StorePins {
    written: Instant,
    validity: Duration,
}

impl StorePins {
    /// Called just before an operation writes its last reference: fails if
    /// the pins are too old to protect it (a stalled store or process), so
    /// that the operation is not acknowledged and the client retries.
    pub(crate) fn confirm(&self) -> Result<()> {
        if self.written.elapsed() <= self.validity {
            return Ok(());
        }
        Err(RegistryError::Storage(StorageError::Unavailable {
            key: layout::gc_pins_root(),
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "adding the references took longer than {:?} after pinning them; not acknowledged, retry",
                    self.validity
                ),
            ),
        }))
    }
}

/// One collector pass's view of the store's time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreClock {
    /// The store's time when the pass began...
    start: SystemTime,
    /// ...and the same moment on this process's monotonic clock.
    started: Instant,
}

impl StoreClock {
    /// The store's time now.
    pub(crate) fn now(&self) -> SystemTime {
        self.start + self.started.elapsed()
    }
}

/// A digest claimed in the store.
pub(crate) struct StoreClaim {
    key: String,
    written: Instant,
}

/// A claim that goes when dropped unreleased (a pass cancelled half-way, or
/// failing): every push of what it names would otherwise wait until it is
/// stale.
pub(crate) struct HeldClaim<'g> {
    gate: &'g SharedGate,
    claim: Option<StoreClaim>,
}

impl HeldClaim<'_> {
    /// Whether the collector may still delete under the claim.
    pub(crate) fn still_held(&self) -> bool {
        self.claim.as_ref().is_some_and(|c| self.gate.still_held(c))
    }

    pub(crate) async fn release(mut self) -> Result<()> {
        match self.claim.take() {
            Some(c) => self.gate.release(c).await,
            None => Ok(()),
        }
    }
}

impl Drop for HeldClaim<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.claim.take() {
            self.gate.release_in_background(c);
        }
    }
}

/// Why the store refused a claim, or a lease.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Busy {
    /// A reference to the digest was added since the horizon.
    Pinned,
}

/// The lease of the one collector of the bucket.
pub(crate) struct Lease {
    epoch: u64,
    renewed: Instant,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LeaseBody {
    holder: String,
    epoch: u64,
}

impl SharedGate {
    pub(crate) fn new(backend: Arc<dyn Backend>, timing: SharedTiming) -> SharedGate {
        SharedGate {
            backend,
            process: uuid::Uuid::new_v4().simple().to_string(),
            timing,
        }
    }

    pub(crate) fn timing(&self) -> SharedTiming {
        self.timing
    }

    /// Pins `digests` for an operation about to add
    /// references to them; waits while the collector deletes one of them.
    pub(crate) async fn pin(&self, digests: &[&Digest]) -> Result<StorePins> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut seen: HashMap<String, Instant> = HashMap::new();
        loop {
            let written = Instant::now();
            let keys: Vec<String> = digests.iter().map(|d| layout::gc_pin(d, &id)).collect();
            let puts = keys.iter().map(|k| self.backend.put(k, Bytes::new()));
            futures::future::try_join_all(puts).await?;
            let claimed = self.claimed_among(digests).await?;
            if claimed.is_empty() {
                return Ok(StorePins {
                    written,
                    validity: self.timing.pin_validity,
                });
            }
            // The collector may be deleting one of them: wait for its claim
            // to go, then pin again (and find the bytes gone, or not).
            let now = Instant::now();
            for name in &claimed {
                let first = *seen.entry(name.clone()).or_insert(now);
                if first.elapsed() >= self.timing.stale_claim {
                    tracing::warn!(claim = %name, "removing a garbage collection claim held too long (its collector stopped)");
                    self.backend
                        .delete(&format!("{}/{name}", layout::gc_claims_dir()))
                        .await?;
                }
            }
            tokio::time::sleep(self.timing.poll).await;
        }
    }

    /// The names of the claims of `digests`.
    async fn claimed_among(&self, digests: &[&Digest]) -> Result<Vec<String>> {
        let claims = self.backend.list(&layout::gc_claims_dir()).await?;
        if claims.is_empty() {
            return Ok(claims);
        }
        Ok(claims
            .into_iter()
            .filter(|name| layout::parse_gc_claim_name(name).is_some_and(|d| digests.contains(&&d)))
            .collect())
    }

    /// Reads the store's time: writes an object and reads back its
    /// modification time.
    pub(crate) async fn clock(&self) -> Result<StoreClock> {
        let key = layout::gc_clock(&self.process);
        let started = Instant::now();
        self.backend.put(&key, Bytes::new()).await?;
        let meta = self.backend.head(&key).await;
        let _ = self.backend.delete(&key).await;
        let start = meta?.modified.ok_or_else(|| {
            RegistryError::Unsupported(
                "the store does not report modification times, which garbage collection needs".into(),
            )
        })?;
        Ok(StoreClock { start, started })
    }

    /// Claims `digest` for a deletion, unless a pin of it is younger than
    /// `horizon` (store time).
    pub(crate) async fn claim(
        &self,
        digest: &Digest,
        horizon: SystemTime,
    ) -> Result<std::result::Result<StoreClaim, Busy>> {
        let key = layout::gc_claim(digest);
        let written = Instant::now();
        self.backend.put(&key, Bytes::from(self.process.clone())).await?;
        let claim = StoreClaim { key, written };
        match self.pinned_since(digest, horizon).await {
            Ok(false) => Ok(Ok(claim)),
            Ok(true) => {
                self.release(claim).await?;
                Ok(Err(Busy::Pinned))
            }
            Err(e) => {
                let _ = self.release(claim).await;
                Err(e)
            }
        }
    }

    /// Whether a pin of `digest` was written at or after `horizon`. Store
    /// times have a resolution of one second: a pin within a second before
    /// counts too.
    async fn pinned_since(&self, digest: &Digest, horizon: SystemTime) -> Result<bool> {
        let dir = layout::gc_pins_of(digest);
        let horizon = horizon.checked_sub(Duration::from_secs(1)).unwrap_or(horizon);
        for pin in self.backend.list(&dir).await? {
            match self.backend.head(&format!("{dir}/{pin}")).await {
                Ok(meta) => match meta.modified {
                    Some(t) if t < horizon => {}
                    // Young, or of unknown age: spare the digest.
                    _ => return Ok(true),
                },
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// Claims `tag` of `name` for its removal by a retention rule. The
    /// caller reads the tag again after this, and removes it only if it is
    /// as judged and [`SharedGate::still_held`].
    pub(crate) async fn claim_tag(&self, name: &RepoName, tag: &Tag) -> Result<HeldClaim<'_>> {
        let key = layout::gc_tag_claim(name, tag);
        let written = Instant::now();
        self.backend.put(&key, Bytes::from(self.process.clone())).await?;
        Ok(HeldClaim {
            gate: self,
            claim: Some(StoreClaim { key, written }),
        })
    }

    /// Called after a push wrote `tag` of `name`: if a collector has claimed
    /// the tag (it may have removed it after the write), waits until the
    /// claim is gone, removing it once stale, and returns true: the caller
    /// writes the tag again.
    pub(crate) async fn wait_tag_unclaimed(&self, name: &RepoName, tag: &Tag) -> Result<bool> {
        let key = layout::gc_tag_claim(name, tag);
        let mut first_seen: Option<Instant> = None;
        loop {
            match self.backend.head(&key).await {
                Err(e) if e.is_not_found() => return Ok(first_seen.is_some()),
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            let first = *first_seen.get_or_insert_with(Instant::now);
            if first.elapsed() >= self.timing.stale_claim {
                tracing::warn!(claim = %key, "removing a retention claim held too long (its collector stopped)");
                self.backend.delete(&key).await?;
                continue;
            }
            tokio::time::sleep(self.timing.poll).await;
        }
    }

    /// Whether the collector may still delete under `claim`.
    pub(crate) fn still_held(&self, claim: &StoreClaim) -> bool {
        claim.written.elapsed() < self.timing.claim_limit
    }

    pub(crate) async fn release(&self, claim: StoreClaim) -> Result<()> {
        self.backend.delete(&claim.key).await.map_err(Into::into)
    }

    /// Removes `claim` from a task of its own (for a pass dropped half-way);
    /// if that fails too, pushers remove it once it is stale.
    pub(crate) fn release_in_background(&self, claim: StoreClaim) {
        let backend = self.backend.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = backend.delete(&claim.key).await;
            });
        }
    }

    /// Removes the pins older than `horizon`: they can refuse no claim any
    /// more. Returns how many went.
    pub(crate) async fn forget_pins_before(&self, horizon: SystemTime) -> Result<usize> {
        let root = layout::gc_pins_root();
        let horizon = horizon.checked_sub(Duration::from_secs(1)).unwrap_or(horizon);
        let mut dirs = Vec::new();
        for alg in self.backend.list(&root).await? {
            for hex in self.backend.list(&format!("{root}/{alg}")).await? {
                dirs.push(format!("{root}/{alg}/{hex}"));
            }
        }
        // One digest's pins after another would cost a few round trips
        // each on S3: side by side.
        let removed = futures::stream::iter(dirs)
            .map(|dir| async move { self.forget_pins_in(&dir, horizon).await })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        removed.into_iter().sum()
    }

    async fn forget_pins_in(&self, dir: &str, horizon: SystemTime) -> Result<usize> {
        let mut removed = 0;
        for pin in self.backend.list(dir).await? {
            let key = format!("{dir}/{pin}");
            match self.backend.head(&key).await {
                Ok(meta) if meta.modified.is_some_and(|t| t < horizon) => {
                    self.backend.delete(&key).await?;
                    removed += 1;
                }
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(removed)
    }

    /// Takes the collector's lease, or `None` while another process holds it.
    pub(crate) async fn acquire_lease(&self, clock: &StoreClock) -> Result<Option<Lease>> {
        let key = layout::gc_lease();
        for _ in 0..2 {
            let epoch = match self.backend.head(&key).await {
                Err(e) if e.is_not_found() => 1,
                Err(e) => return Err(e.into()),
                Ok(meta) => {
                    let body = self.read_lease().await?;
                    let fresh = meta.modified.is_none_or(|t| t + self.timing.lease_ttl > clock.now());
                    if fresh {
                        return Ok(None);
                    }
                    tracing::warn!(
                        holder = body.as_ref().map_or("?", |b| b.holder.as_str()),
                        "taking over a garbage collection lease that was not renewed"
                    );
                    self.backend.delete(&key).await?;
                    body.map_or(1, |b| b.epoch + 1)
                }
            };
            let body = LeaseBody {
                holder: self.process.clone(),
                epoch,
            };
            let bytes = Bytes::from(serde_json::to_vec(&body).expect("serializable"));
            if self.backend.put_if_absent(&key, bytes).await? {
                return Ok(Some(Lease {
                    epoch,
                    renewed: Instant::now(),
                }));
            }
        }
        Ok(None)
    }

    async fn read_lease(&self) -> Result<Option<LeaseBody>> {
        match self.backend.get(&layout::gc_lease()).await {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Renews `lease` when a third of its time has passed. Fails if another
    /// process took it over (this one stalled past the lease's time).
    pub(crate) async fn renew(&self, lease: &mut Lease) -> Result<()> {
        if lease.renewed.elapsed() < self.timing.lease_ttl / 3 {
            return Ok(());
        }
        match self.read_lease().await? {
            Some(b) if b.holder == self.process && b.epoch == lease.epoch => {}
            _ => return Err(lease_lost()),
        }
        let body = LeaseBody {
            holder: self.process.clone(),
            epoch: lease.epoch,
        };
        self.backend
            .put(
                &layout::gc_lease(),
                Bytes::from(serde_json::to_vec(&body).expect("serializable")),
            )
            .await?;
        lease.renewed = Instant::now();
        Ok(())
    }

    /// Gives the lease up (if it is still this process's).
    pub(crate) async fn release_lease(&self, lease: Lease) -> Result<()> {
        match self.read_lease().await? {
            Some(b) if b.holder == self.process && b.epoch == lease.epoch => {
                self.backend.delete(&layout::gc_lease()).await.map_err(Into::into)
            }
            _ => Ok(()),
        }
    }
}

fn lease_lost() -> RegistryError {
    RegistryError::Busy(
        "this garbage collection pass lost its lease to another replica (it stalled past the lease's time); \
         the other replica's pass goes on"
            .into(),
    )
}

/// Another replica's pass holds the lease.
pub(crate) fn lease_held() -> RegistryError {
    RegistryError::Busy(
        "another replica is running garbage collection on this storage; passes run one at a time".into(),
    )
}

#[cfg(test)]
mod tests;
