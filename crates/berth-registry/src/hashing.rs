//! Hashing a stream's bytes on another core than the task that receives them.
//!
//! A big push is received, hashed and written by one task, in series; on
//! this hardware SHA-256 (~1.75 GB/s with SHA-NI) is more than half of that
//! task's time, so it caps a push well below the disk's rate. Here the bytes
//! are gathered (by reference: the received buffers, no copy) into batches of
//! [`BATCH`] and hashed by a blocking-pool thread while the task receives and
//! writes the next ones. Batches keep the hand-overs rare: handing over
//! every received chunk (a few KiB to a few hundred) cost more in wake-ups
//! than the overlap gave (tried in an earlier round: 0.97x the rate, 25 %
//! more CPU). A body under one batch never leaves the task.
//!
//! The thread lags behind the receiver by at most [`QUEUED`] batches, and
//! [`PipelinedHasher::finish`] waits for it: a digest is only ever read once
//! every byte was hashed. What is queued pins the receive buffers it points
//! into: 1 MiB batches with 4 queued raised a 1 GiB push's peak RSS from 21
//! to 34 MiB; 512 KiB with 2 queued costs 4 MiB for the same gain in rate
//! (1.05-1.23x in interleaved A/B runs of 1 GiB monolithic pushes).

use berth_spec::Digester;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bytes gathered before a hand-over to the hashing thread.
const BATCH: usize = 512 << 10;

/// Batches waiting for the hashing thread before the receiver waits for it.
const QUEUED: usize = 2;

pub(crate) struct PipelinedHasher {
    hasher: Hasher,
    batch: Vec<Bytes>,
    batched: usize,
}

/// Where the hashing happens: in place until the first whole batch, then on
/// a thread of its own. (One per request body, on its task's stack: the
/// size of the in-place variant costs nothing worth a box.)
#[allow(clippy::large_enum_variant)]
enum Hasher {
    Here(Digester),
    Thread {
        batches: mpsc::Sender<Vec<Bytes>>,
        done: JoinHandle<Digester>,
    },
}

impl Hasher {
    fn start_thread(mut hasher: Digester) -> Hasher {
        let (batches, mut rx) = mpsc::channel::<Vec<Bytes>>(QUEUED);
        let done = tokio::task::spawn_blocking(move || {
            while let Some(batch) = rx.blocking_recv() {
                for b in &batch {
                    hasher.update(b);
                }
            }
            hasher
        });
        Hasher::Thread { batches, done }
    }
}

impl PipelinedHasher {
    pub(crate) fn new(hasher: Digester) -> PipelinedHasher {
        PipelinedHasher {
            hasher: Hasher::Here(hasher),
            batch: Vec::new(),
            batched: 0,
        }
    }

    /// Adds `chunk` (hashed now or later, always in order).
    pub(crate) async fn update(&mut self, chunk: &Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.batched += chunk.len();
        self.batch.push(chunk.clone());
        if self.batched < BATCH {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.batched = 0;
        if let Hasher::Here(hasher) = &self.hasher {
            self.hasher = Hasher::start_thread(hasher.clone());
        }
        if let Hasher::Thread { batches, .. } = &self.hasher {
            // The thread only stops when the sender is dropped, or by a
            // panic, which `finish` reports.
            let _ = batches.send(batch).await;
        }
    }

    /// The hasher with every byte given to [`PipelinedHasher::update`] in it.
    pub(crate) async fn finish(self) -> Digester {
        match self.hasher {
            Hasher::Here(mut hasher) => {
                for b in &self.batch {
                    hasher.update(b);
                }
                hasher
            }
            Hasher::Thread { batches, done } => {
                if !self.batch.is_empty() {
                    let _ = batches.send(self.batch).await;
                }
                drop(batches);
                done.await.expect("the hashing thread does not panic")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_spec::digest::Algorithm;

    fn expected(data: &[u8]) -> berth_spec::Digest {
        let mut h = Algorithm::Sha256.digester();
        h.update(data);
        h.finish()
    }

    /// Bodies under, at and over a batch, in chunks of uneven sizes: the same
    /// digest as hashing the bytes at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gives_the_digest_of_the_bytes_in_order() {
        let data: Vec<u8> = (0..(3 * BATCH + 12_345)).map(|i| (i * 7 % 251) as u8).collect();
        for len in [0, 1, 1000, BATCH - 1, BATCH, BATCH + 1, 2 * BATCH + 17, data.len()] {
            for chunk in [1usize << 10, 65_537, 300_000, BATCH + 3] {
                let body = &data[..len];
                let mut p = PipelinedHasher::new(Algorithm::Sha256.digester());
                for c in body.chunks(chunk) {
                    p.update(&Bytes::copy_from_slice(c)).await;
                }
                assert_eq!(
                    p.finish().await.finish(),
                    expected(body),
                    "len {len}, chunks of {chunk}"
                );
            }
        }
    }

    /// A hasher that already holds bytes (a resumed upload) goes on from them.
    #[tokio::test]
    async fn continues_a_hasher_with_bytes_in_it() {
        let data: Vec<u8> = (0..(2 * BATCH + 5)).map(|i| (i % 13) as u8).collect();
        let mut h = Algorithm::Sha256.digester();
        h.update(&data[..100]);
        let mut p = PipelinedHasher::new(h);
        p.update(&Bytes::copy_from_slice(&data[100..])).await;
        assert_eq!(p.finish().await.finish(), expected(&data));
    }
}
