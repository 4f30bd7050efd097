//! Fetching a missing blob from the upstream once, however many clients ask.
//!
//! The first request starts a fetch that runs on its own task (a client that
//! goes away does not stop it). Every request that joins before the first
//! byte has gone out subscribes and receives the bytes as they arrive, while
//! the task writes them to a staged object through the storage backend and
//! hashes them. Only bytes whose digest matches are committed, and the last
//! chunk is held back until they are: a client of a corrupt or cut-short
//! fetch never receives a whole body, it sees the connection fail.
//!
//! Clients of one blob rarely arrive in the same millisecond (a fleet of CI
//! jobs starting, 50 `curl`s forked one after another), so the fetch keeps
//! the bytes it has sent while it is young (its first [`REPLAY_LIMIT`] bytes,
//! within a process-wide [`REPLAY_BUDGET`]): a request that joins then gets
//! those from memory and the rest live. One that joins later waits for the
//! end and reads the cache; before this window every late joiner did, and
//! they all read the cache at the same instant (50 clients of a 100 MiB blob
//! from an upstream at 40 MB/s: the slowest at 0.71x of one pull's rate).
//!
//! Subscribers are fed in step: the fetch goes as fast as its slowest
//! subscriber, within a small per-subscriber buffer (the server's body
//! timeout closes a client that stops reading).

use super::client::{content_length, error_chain, UpstreamError};
use super::{Mirror, Proxied};
use crate::hashing::PipelinedHasher;
use crate::{BlobContent, Registry, RegistryError, Result};
use berth_spec::range::ByteRange;
use berth_spec::{Digest, RepoName};
use berth_storage::{layout, Backend, ObjectBody};
use bytes::Bytes;
use futures::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// Chunks buffered per subscriber before the fetch waits for it.
const SUBSCRIBER_BUFFER: usize = 64;

/// Where a request that joined a fetch receives its chunks.
type Subscriber = mpsc::Sender<io::Result<Bytes>>;

/// How much of its start a fetch keeps for requests that join it late.
const REPLAY_LIMIT: u64 = 16 << 20;

/// The most replay bytes held by all fetches of the process together; a fetch
/// that would go over it stops taking joiners (they read the cache after).
const REPLAY_BUDGET: u64 = 64 << 20;

/// Replay bytes held now, by every fetch of the process.
static REPLAY_HELD: AtomicU64 = AtomicU64::new(0);

#[derive(Default)]
pub(crate) struct InFlight(Mutex<HashMap<Digest, Arc<Fetch>>>);

pub(crate) struct Fetch {
    phase: watch::Sender<Phase>,
    subscribers: Mutex<Subscribers>,
}

struct Subscribers {
    list: Vec<Subscriber>,
    /// What has been sent so far, while requests may still join live; `None`
    /// once closed to them (later requests read the cache).
    replay: Option<Replay>,
}

impl Default for Subscribers {
    fn default() -> Self {
        Subscribers {
            list: Vec::new(),
            replay: Some(Replay::default()),
        }
    }
}

#[derive(Default)]
struct Replay {
    chunks: Vec<Bytes>,
    bytes: u64,
}

/// What a request joining a fetch gets: the bytes sent before it joined, and
/// the rest as they are sent.
struct Joined {
    sent: Vec<Bytes>,
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

#[derive(Clone, Debug)]
enum Phase {
    Connecting,
    Streaming { size: u64 },
    Committed,
    Failed(Failure),
}

#[derive(Clone, Debug)]
enum Failure {
    NotFound,
    Upstream(String),
}

impl Fetch {
    fn subscribe(&self) -> Option<Joined> {
        let mut s = self.subscribers.lock().unwrap();
        let sent = s.replay.as_ref()?.chunks.clone();
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        s.list.push(tx);
        Some(Joined { sent, rx })
    }

    /// Records `chunk` as sent and returns who to send it to. Under one lock
    /// with [`Fetch::subscribe`], so that a request that joins gets every
    /// chunk exactly once: in its replay, or through its channel. `Err` with
    /// the final list once the fetch has grown past its replay window.
    fn send_to(&self, chunk: &Bytes) -> std::result::Result<Vec<Subscriber>, Vec<Subscriber>> {
        let mut s = self.subscribers.lock().unwrap();
        let len = chunk.len() as u64;
        let kept = match s.replay.as_mut() {
            Some(r) if r.bytes + len <= REPLAY_LIMIT && take_budget(len) => {
                r.chunks.push(chunk.clone());
                r.bytes += len;
                true
            }
            _ => false,
        };
        if kept {
            Ok(s.list.clone())
        } else {
            drop(s);
            Err(self.seal())
        }
    }

    /// Closes the fetch to joiners (freeing its replay): from now on the task
    /// feeds the returned list alone.
    fn seal(&self) -> Vec<Subscriber> {
        let mut s = self.subscribers.lock().unwrap();
        if let Some(r) = s.replay.take() {
            REPLAY_HELD.fetch_sub(r.bytes, Ordering::Relaxed);
        }
        std::mem::take(&mut s.list)
    }
}

/// Reserves `len` bytes of the process's replay budget, if they are free.
fn take_budget(len: u64) -> bool {
    REPLAY_HELD
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
            (held + len <= REPLAY_BUDGET).then_some(held + len)
        })
        .is_ok()
}

/// Sends `item` to every subscriber still listening, dropping those gone.
async fn broadcast(subs: &mut Vec<Subscriber>, item: &io::Result<Bytes>) {
    let copy = |item: &io::Result<Bytes>| match item {
        Ok(b) => Ok(b.clone()),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    };
    let results = futures::future::join_all(subs.iter().map(|tx| tx.send(copy(item)))).await;
    let mut ok = results.iter().map(|r| r.is_ok());
    subs.retain(|_| ok.next().unwrap_or(false));
}

/// Serves `digest` of `p` (or `range` of it) through the one fetch of it.
pub(crate) async fn get(reg: &Registry, p: &Proxied, digest: &Digest, asked: Option<ByteRange>) -> Result<BlobContent> {
    let (fetch, joined) = {
        let mut map = p.mirror.blob_fetches.0.lock().unwrap();
        match map.get(digest).cloned() {
            Some(f) => {
                let joined = f.subscribe();
                (f, joined)
            }
            None => {
                let f = Arc::new(Fetch {
                    phase: watch::Sender::new(Phase::Connecting),
                    subscribers: Mutex::new(Subscribers::default()),
                });
                map.insert(digest.clone(), f.clone());
                // Subscribed before the task starts, so that even a blob of one
                // chunk reaches this request live.
                let joined = f.subscribe();
                let task = Task {
                    backend: reg.backend.clone(),
                    mirror: p.mirror.clone(),
                    local: p.local.clone(),
                    upstream: p.upstream.clone(),
                    digest: digest.clone(),
                    fetch: f.clone(),
                };
                tokio::spawn(task.run());
                (f, joined)
            }
        }
    };
    let mut phase = fetch.phase.subscribe();
    let started = phase
        .wait_for(|p| !matches!(p, Phase::Connecting))
        .await
        .map(|p| p.clone())
        .expect("the fetch holds its sender");
    let size = match started {
        Phase::Streaming { size } => size,
        Phase::Committed => return reg.local_blob(&p.local, digest, asked, false).await,
        Phase::Failed(f) => return Err(failure(f, digest)),
        Phase::Connecting => unreachable!("waited past it"),
    };
    let range = match asked {
        None => 0..size,
        Some(r) => r.resolve(size).ok_or(RegistryError::RangeNotSatisfiable { size })?,
    };
    // Joined too late for the live bytes: the cache has them once the fetch ends.
    let Some(Joined { sent, mut rx }) = joined else {
        return after_the_fetch(reg, p, digest, asked, &mut phase).await;
    };
    let mut sent = VecDeque::from(sent);
    // The response waits for the first byte: a fetch that fails before any
    // byte went out (a one-chunk blob whose digest is wrong, an upstream that
    // hangs up) is answered with an error status, not a broken-off body.
    if sent.is_empty() {
        match rx.recv().await {
            Some(Ok(chunk)) => sent.push_back(chunk),
            Some(Err(_)) | None => return after_the_fetch(reg, p, digest, asked, &mut phase).await,
        }
    }
    let len = range.end - range.start;
    let stream = live_stream(sent, rx, range.clone());
    Ok(BlobContent {
        size,
        range,
        body: Some(ObjectBody::Stream { stream, len }),
        redirect: None,
    })
}

/// Waits for the fetch to end, then answers from the cache or with its failure.
async fn after_the_fetch(
    reg: &Registry,
    p: &Proxied,
    digest: &Digest,
    asked: Option<ByteRange>,
    phase: &mut watch::Receiver<Phase>,
) -> Result<BlobContent> {
    let end = phase
        .wait_for(|p| matches!(p, Phase::Committed | Phase::Failed(_)))
        .await
        .map(|p| p.clone())
        .expect("the fetch holds its sender");
    match end {
        Phase::Failed(f) => Err(failure(f, digest)),
        _ => reg.local_blob(&p.local, digest, asked, false).await,
    }
}

fn failure(f: Failure, digest: &Digest) -> RegistryError {
    match f {
        Failure::NotFound => RegistryError::BlobUnknown(digest.clone()),
        Failure::Upstream(m) => RegistryError::Upstream(m),
    }
}

/// The part `range` of the fetched bytes, as they arrive; an error if the
/// fetch fails or ends before the range is complete.
/// `sent` holds the chunks sent before `rx` began.
fn live_stream(
    sent: VecDeque<Bytes>,
    rx: mpsc::Receiver<io::Result<Bytes>>,
    range: std::ops::Range<u64>,
) -> berth_storage::ByteStream {
    struct State {
        sent: VecDeque<Bytes>,
        rx: mpsc::Receiver<io::Result<Bytes>>,
        pos: u64,
        range: std::ops::Range<u64>,
        done: bool,
    }
    let state = State {
        sent,
        rx,
        pos: 0,
        range,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.done || s.pos >= s.range.end {
                return None;
            }
            let next = match s.sent.pop_front() {
                Some(chunk) => Some(Ok(chunk)),
                None => s.rx.recv().await,
            };
            match next {
                Some(Ok(chunk)) => {
                    let start = s.pos;
                    s.pos += chunk.len() as u64;
                    let from = s.range.start.max(start);
                    let to = s.range.end.min(s.pos);
                    if from < to {
                        let piece = chunk.slice((from - start) as usize..(to - start) as usize);
                        return Some((Ok(piece), s));
                    }
                }
                Some(Err(e)) => {
                    s.done = true;
                    return Some((Err(e), s));
                }
                None => {
                    s.done = true;
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "the upstream fetch ended early");
                    return Some((Err(e), s));
                }
            }
        }
    })
    .boxed()
}

struct Task {
    backend: Arc<dyn Backend>,
    mirror: Arc<Mirror>,
    local: RepoName,
    upstream: String,
    digest: Digest,
    fetch: Arc<Fetch>,
}

impl Task {
    async fn run(self) {
        let mut subs = Vec::new();
        let staged = layout::upload_data(&self.local, &uuid::Uuid::new_v4().to_string());
        match self.transfer(&staged, &mut subs).await {
            Ok(last) => {
                tracing::info!(repository = %self.local, digest = %self.digest, "cached a blob from the upstream");
                self.fetch.phase.send_replace(Phase::Committed);
                if let Some(last) = last {
                    broadcast(&mut subs, &Ok(last)).await;
                }
            }
            Err(f) => {
                tracing::warn!(repository = %self.local, digest = %self.digest, error = ?f,
                    "fetching a blob from the upstream failed; nothing cached");
                // Out of the map before anyone learns of the failure, so that a
                // client retrying at once starts a new fetch instead of joining
                // this failed one.
                self.forget();
                if let Err(e) = self.backend.delete(&staged).await {
                    tracing::warn!(key = %staged, error = %e, "could not remove a failed fetch's staged bytes");
                }
                let msg = match &f {
                    Failure::NotFound => "the upstream does not have the blob".to_owned(),
                    Failure::Upstream(m) => m.clone(),
                };
                broadcast(&mut subs, &Err(io::Error::other(msg))).await;
                // Anyone who subscribed but got no byte learns it from the phase.
                self.fetch.phase.send_replace(Phase::Failed(f));
                drop(self.fetch.seal());
            }
        }
        self.forget();
    }

    /// Removes this fetch from the in-flight map (if it is still there).
    fn forget(&self) {
        let mut map = self.mirror.blob_fetches.0.lock().unwrap();
        if map.get(&self.digest).is_some_and(|f| Arc::ptr_eq(f, &self.fetch)) {
            map.remove(&self.digest);
        }
    }

    /// Streams the blob into the staged object and out to the subscribers;
    /// commits it if its bytes are right. Returns the held-back last chunk.
    async fn transfer(&self, staged: &str, subs: &mut Vec<Subscriber>) -> std::result::Result<Option<Bytes>, Failure> {
        let storage = |e: berth_storage::StorageError| Failure::Upstream(format!("caching the blob failed: {e}"));
        let mut resp = match self.mirror.client.blob(&self.upstream, &self.digest.to_string()).await {
            Ok(r) => r,
            Err(UpstreamError::NotFound) => return Err(Failure::NotFound),
            Err(e) => return Err(Failure::Upstream(e.to_string())),
        };
        let size = content_length(&resp).ok_or_else(|| {
            Failure::Upstream(format!(
                "the upstream sent blob {} without a Content-Length",
                self.digest
            ))
        })?;
        self.fetch.phase.send_replace(Phase::Streaming { size });
        let mut writer = self.backend.append(staged, 0).await.map_err(storage)?;
        let mut hasher = PipelinedHasher::new(self.digest.algorithm().digester());
        let mut received = 0u64;
        let mut held: Option<Bytes> = None;
        let mut sealed = false;
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    return Err(Failure::Upstream(format!(
                        "reading blob {} from the upstream: {}",
                        self.digest,
                        error_chain(&e)
                    )))
                }
            };
            received += chunk.len() as u64;
            if received > size {
                return Err(Failure::Upstream(format!(
                    "the upstream sent more than the {size} bytes it announced for {}",
                    self.digest
                )));
            }
            hasher.update(&chunk).await;
            writer.write(chunk.clone()).await.map_err(storage)?;
            if let Some(prev) = held.replace(chunk) {
                if sealed {
                    broadcast(subs, &Ok(prev)).await;
                } else {
                    match self.fetch.send_to(&prev) {
                        Ok(mut now) => broadcast(&mut now, &Ok(prev)).await,
                        Err(last) => {
                            *subs = last;
                            sealed = true;
                            broadcast(subs, &Ok(prev)).await;
                        }
                    }
                }
            }
        }
        if !sealed {
            *subs = self.fetch.seal();
        }
        if received != size {
            return Err(Failure::Upstream(format!(
                "the upstream sent {received} of the {size} bytes of {}",
                self.digest
            )));
        }
        let actual = hasher.finish().await.finish();
        if actual != self.digest {
            return Err(Failure::Upstream(format!(
                "the upstream sent bytes for {} whose digest is {actual}",
                self.digest
            )));
        }
        writer.finish().await.map_err(storage)?;
        // The link first: one without its blob reads as unknown (as after a
        // failed push), so a crash between the two leaves nothing wrong served.
        self.backend
            .put(
                &layout::layer_link(&self.local, &self.digest),
                Bytes::from(layout::link_content(&self.digest)),
            )
            .await
            .map_err(storage)?;
        let blob = layout::blob_data(&self.digest);
        match self.backend.head(&blob).await {
            Ok(meta) if meta.size == size => self.backend.delete(staged).await.map_err(storage)?,
            _ => self.backend.promote(staged, &blob).await.map_err(storage)?,
        }
        Ok(held)
    }
}
