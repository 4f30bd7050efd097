//! Hashing the bytes of a push as they stream in, off the request's task
//! once the push is big.
//!
//! On the request's task, SHA-256 of a big push is the bottleneck: the task
//! receives a chunk, hashes it, hands it to the writer, and only then reads
//! the next one (a profile of a 1 GiB push put the hashing at 55 % of that
//! task's CPU). Past [`OFFLOAD_AFTER`] bytes the hashing moves to a thread of
//! its own, fed the same `Bytes` (reference-counted, not copied), so that
//! receiving, writing and hashing run side by side. Small pushes (nearly all
//! of them) never pay for the thread.

use berth_spec::Digester;
use bytes::Bytes;
use tokio::sync::mpsc;

/// Bytes hashed inline before the hashing moves to its own thread.
pub(crate) const OFFLOAD_AFTER: u64 = 4 << 20;

/// Chunks queued for the hashing thread before the stream waits for it.
const QUEUE: usize = 64;

pub(crate) struct StreamHasher {
    /// The state while hashing inline (`None` once moved to the thread).
    inline: Option<Digester>,
    seen: u64,
    thread: Option<(mpsc::Sender<Bytes>, tokio::task::JoinHandle<Digester>)>,
}

impl StreamHasher {
    pub(crate) fn new(hasher: Digester) -> StreamHasher {
        StreamHasher {
            inline: Some(hasher),
            seen: 0,
            thread: None,
        }
    }

    /// Adds `chunk` to the hash (waits when the hashing thread is behind).
    pub(crate) async fn update(&mut self, chunk: &Bytes) {
        self.seen += chunk.len() as u64;
        if let Some(hasher) = &mut self.inline {
            if self.seen <= OFFLOAD_AFTER {
                hasher.update(chunk);
                return;
            }
            let mut hasher = self.inline.take().expect("checked above");
            let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
            let handle = tokio::task::spawn_blocking(move || {
                while let Some(chunk) = rx.blocking_recv() {
                    hasher.update(&chunk);
                }
                hasher
            });
            self.thread = Some((tx, handle));
        }
        let (tx, _) = self.thread.as_ref().expect("inline or on the thread");
        // The receiver lives until the sender is dropped in `finish`.
        let _ = tx.send(chunk.clone()).await;
    }

    /// The hash state after every chunk passed to `update`.
    pub(crate) async fn finish(self) -> Digester {
        match (self.inline, self.thread) {
            (Some(hasher), _) => hasher,
            (None, Some((tx, handle))) => {
                drop(tx);
                match handle.await {
                    Ok(hasher) => hasher,
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                }
            }
            (None, None) => unreachable!("the state is inline or on the thread"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_spec::Algorithm;

    /// The digest is the same whether the bytes were hashed inline or partly
    /// on the thread, whatever the chunk sizes.
    #[tokio::test]
    async fn the_digest_does_not_depend_on_where_it_was_computed() {
        let data: Vec<u8> = (0..(3 * OFFLOAD_AFTER as usize + 12_345))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut expected = Algorithm::Sha256.digester();
        expected.update(&data);
        let expected = expected.finish();
        for chunk in [1000, 64 << 10, OFFLOAD_AFTER as usize, 5 << 20] {
            let mut h = StreamHasher::new(Algorithm::Sha256.digester());
            for part in data.chunks(chunk) {
                h.update(&Bytes::copy_from_slice(part)).await;
            }
            assert!(h.thread.is_some(), "offloaded with chunks of {chunk}");
            assert_eq!(h.finish().await.finish(), expected, "chunks of {chunk}");
        }
        let mut small = StreamHasher::new(Algorithm::Sha256.digester());
        small.update(&Bytes::from_static(b"abc")).await;
        assert!(small.thread.is_none());
        let mut abc = Algorithm::Sha256.digester();
        abc.update(b"abc");
        assert_eq!(small.finish().await.finish(), abc.finish());
    }
}
