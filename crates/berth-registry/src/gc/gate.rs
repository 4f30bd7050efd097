//! The reference gate: how pushes and the collector agree on which blobs may
//! go. A blob begins its life unreferenced (its layers are pushed before the
//! manifest that names them), so the collector's mark alone cannot tell a
//! blob about to be referenced from garbage. Every path that adds a reference
//! to a digest (an upload's commit, a mount, a manifest PUT naming it or
//! being stored under it) holds a *pin* on the digest while it checks that
//! the bytes exist and writes its link; the collector deletes a digest only
//! after *claiming* it, which succeeds only if nothing pins it and nothing has
//! touched it since the pass began.
//!
//! Both sides take one lock, so the two decisions are ordered:
//! - a pin taken before the claim makes the claim fail (pinned, or touched
//!   since the pass began once it is released);
//! - a pin asked for after the claim waits until the deletion is over, and the
//!   pusher then finds no bytes: an upload stores them again, a manifest PUT
//!   is refused with MANIFEST_BLOB_UNKNOWN and the client uploads again.
//!
//! A reference that was complete before the pass began is visible to the mark
//! (it reads storage after that moment), so between the mark and the gate no
//! acknowledged reference can lose its blob. ARCHITECTURE.md has the whole
//! argument.
//!
//! The gate is in memory: it covers the writers of one process, which on the
//! filesystem backend is all of them (one server per data directory).

use berth_spec::Digest;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct ReferenceGate {
    state: Mutex<GateState>,
    /// Woken whenever a deletion ends.
    deleted: Notify,
    /// How many digests are being deleted: reads check it without the lock.
    deleting_count: AtomicUsize,
}

#[derive(Default)]
struct GateState {
    /// Digests references are being added to, with how many such operations
    /// are in flight and when the last one began or ended.
    pins: HashMap<Digest, Pinned>,
    /// Digests the collector has claimed, and whether it is deleting their
    /// bytes (true) or only a link to them (false).
    deleting: HashMap<Digest, bool>,
}

#[derive(Clone, Copy)]
struct Pinned {
    count: usize,
    touched: Instant,
}

/// Holds a digest pinned; dropping it unpins (and records the time).
pub(crate) struct Pin<'a> {
    gate: &'a ReferenceGate,
    digest: Digest,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut s = self.gate.state.lock().unwrap();
        if let Some(p) = s.pins.get_mut(&self.digest) {
            p.count -= 1;
            p.touched = Instant::now();
        }
    }
}

/// Why the collector may not delete a digest now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A reference is being added right now.
    Pinned,
    /// A reference was added since the pass began, or within the grace period.
    Touched,
}

impl ReferenceGate {
    /// Pins `digest` for a reference about to be added. If the collector is
    /// deleting it, waits until that is over: the caller then finds the bytes
    /// gone and acts as for any absent blob.
    pub(crate) async fn pin(&self, digest: &Digest) -> Pin<'_> {
        loop {
            let notified = self.deleted.notified();
            tokio::pin!(notified);
            {
                let mut s = self.state.lock().unwrap();
                if !s.deleting.contains_key(digest) {
                    let p = s.pins.entry(digest.clone()).or_insert(Pinned {
                        count: 0,
                        touched: Instant::now(),
                    });
                    p.count += 1;
                    p.touched = Instant::now();
                    return Pin {
                        gate: self,
                        digest: digest.clone(),
                    };
                }
                // Registered before the lock is released, so the end of the
                // deletion cannot slip between the check and the wait.
                notified.as_mut().enable();
            }
            notified.await;
        }
    }

    /// Pins every digest of `digests` (in a fixed order, so two callers never
    /// wait on each other's half).
    pub(crate) async fn pin_all<'d>(&self, digests: impl IntoIterator<Item = &'d Digest>) -> Vec<Pin<'_>> {
        let mut sorted: Vec<&Digest> = digests.into_iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut pins = Vec::with_capacity(sorted.len());
        for d in sorted {
            pins.push(self.pin(d).await);
        }
        pins
    }

    /// True while the collector is deleting the bytes of `digest`: a reader
    /// answers as for an unknown blob, so a pusher checking for it uploads it
    /// again. One atomic load when nothing is being deleted.
    pub(crate) fn is_deleting(&self, digest: &Digest) -> bool {
        if self.deleting_count.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.state.lock().unwrap().deleting.get(digest) == Some(&true)
    }

    /// The collector claims `digest` to delete a link to it (a manifest
    /// revision, a repository's layer link): pins wait, reads go on. Refused
    /// while it is pinned, or if a reference to it was added after
    /// `pass_start` or less than `grace` ago. Released with [`ReferenceGate::release`].
    pub(crate) fn claim(&self, digest: &Digest, pass_start: Instant, grace: Duration) -> Result<(), Refusal> {
        self.claim_as(digest, pass_start, grace, false)
    }

    /// Like [`ReferenceGate::claim`], to delete the bytes themselves: reads
    /// of the blob answer "unknown" until the claim is released.
    pub(crate) fn claim_for_deletion(
        &self,
        digest: &Digest,
        pass_start: Instant,
        grace: Duration,
    ) -> Result<(), Refusal> {
        self.claim_as(digest, pass_start, grace, true)
    }

    fn claim_as(&self, digest: &Digest, pass_start: Instant, grace: Duration, bytes: bool) -> Result<(), Refusal> {
        let mut s = self.state.lock().unwrap();
        if let Some(p) = s.pins.get(digest) {
            if p.count > 0 {
                return Err(Refusal::Pinned);
            }
            if p.touched >= pass_start || p.touched.elapsed() < grace {
                return Err(Refusal::Touched);
            }
        }
        s.deleting.insert(digest.clone(), bytes);
        if bytes {
            self.deleting_count.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Ends a deletion (done or abandoned) and wakes the pins waiting for it.
    pub(crate) fn release(&self, digest: &Digest) {
        let removed = self.state.lock().unwrap().deleting.remove(digest);
        if removed == Some(true) {
            self.deleting_count.fetch_sub(1, Ordering::AcqRel);
        }
        self.deleted.notify_waiters();
    }

    /// Forgets touches older than `grace` that no pin holds: they can no
    /// longer refuse a claim. Keeps the table as small as the recent pushes.
    pub(crate) fn forget_older_than(&self, grace: Duration) {
        let mut s = self.state.lock().unwrap();
        s.pins.retain(|_, p| p.count > 0 || p.touched.elapsed() < grace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        format!("sha256:{}", hex_of(n)).parse().unwrap()
    }

    fn hex_of(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    #[tokio::test]
    async fn a_pin_taken_first_refuses_the_claim() {
        let gate = ReferenceGate::default();
        let d = digest(1);
        let start = Instant::now();
        let pin = gate.pin(&d).await;
        assert_eq!(gate.claim(&d, start, Duration::ZERO), Err(Refusal::Pinned));
        drop(pin);
        // Released after the pass began: still refused.
        assert_eq!(gate.claim(&d, start, Duration::ZERO), Err(Refusal::Touched));
        // A later pass may take it.
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(gate.claim(&d, Instant::now(), Duration::ZERO), Ok(()));
        gate.release(&d);
    }

    #[tokio::test]
    async fn a_touch_within_the_grace_period_refuses_the_claim() {
        let gate = ReferenceGate::default();
        let d = digest(2);
        drop(gate.pin(&d).await);
        tokio::time::sleep(Duration::from_millis(2)).await;
        let start = Instant::now();
        assert_eq!(gate.claim(&d, start, Duration::from_secs(60)), Err(Refusal::Touched));
        assert_eq!(gate.claim(&d, start, Duration::ZERO), Ok(()));
        gate.release(&d);
        gate.forget_older_than(Duration::ZERO);
        assert!(gate.state.lock().unwrap().pins.is_empty());
    }

    #[tokio::test]
    async fn a_pin_asked_for_during_a_deletion_waits_for_its_end() {
        let gate = std::sync::Arc::new(ReferenceGate::default());
        let d = digest(3);
        gate.claim_for_deletion(&d, Instant::now(), Duration::ZERO).unwrap();
        assert!(gate.is_deleting(&d));
        assert!(!gate.is_deleting(&digest(4)));
        let (g, d2) = (gate.clone(), d.clone());
        let waiter = tokio::spawn(async move {
            let _pin = g.pin(&d2).await;
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "the pin must wait while the digest is being deleted"
        );
        let released = Instant::now();
        gate.release(&d);
        let pinned_at = waiter.await.unwrap();
        assert!(pinned_at >= released);
        assert!(!gate.is_deleting(&d));
    }

    #[tokio::test]
    async fn a_link_claim_blocks_pins_but_not_reads() {
        let gate = std::sync::Arc::new(ReferenceGate::default());
        let d = digest(8);
        gate.claim(&d, Instant::now(), Duration::ZERO).unwrap();
        assert!(!gate.is_deleting(&d), "the blob lives on elsewhere");
        let (g, d2) = (gate.clone(), d.clone());
        let waiter = tokio::spawn(async move { drop(g.pin(&d2).await) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        gate.release(&d);
        waiter.await.unwrap();
    }

    #[tokio::test]
    async fn pins_of_other_digests_do_not_wait() {
        let gate = ReferenceGate::default();
        gate.claim(&digest(5), Instant::now(), Duration::ZERO).unwrap();
        let pins = tokio::time::timeout(
            Duration::from_secs(1),
            gate.pin_all([&digest(6), &digest(7), &digest(6)]),
        )
        .await
        .expect("no wait");
        assert_eq!(pins.len(), 2);
        gate.release(&digest(5));
    }
}
