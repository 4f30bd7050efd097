//! What every open connection is doing, and who closes the ones that stall.
//!
//! Each connection shares an [`Activity`] with the table: counters that its
//! own task bumps as bytes and requests go by (plain stores and adds, no
//! clock and no lock on the request path). One reaper task looks at every
//! connection a few times per shortest timeout, derives from how the counters
//! moved since its last look what the connection is doing, and tells those
//! past their time to close:
//!
//! - **waiting for a request head**: the client sent part of one (or, on a
//!   new connection, nothing yet) — the header timeout, so slowloris and
//!   silent connections go;
//! - **idle between requests** (keep-alive) — the idle timeout;
//! - **in a request**, while the handler waits for body bytes from the client
//!   or the socket refuses response bytes, and no byte moved either way — the
//!   body timeout. A handler busy on its own (a sync, a self image being
//!   packaged) is never a stall.
//!
//! The table also sheds connections when there are too many (see
//! [`Connections::shed_idle`]): the ones idle the longest go first.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// The time limits a connection lives by.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the first byte of a request head (or from the connection's start)
    /// to its end.
    pub header: Duration,
    /// Between requests, with no byte of a next one.
    pub idle: Duration,
    /// Within a request, without a byte of its body received or of its
    /// response sent while one is awaited.
    pub body: Duration,
}

impl Timeouts {
    /// How often the reaper looks: a fraction of the shortest limit, so a
    /// limit is enforced within a few percent of itself.
    fn tick(&self) -> Duration {
        let shortest = self.header.min(self.idle).min(self.body);
        (shortest / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// Why a connection is told to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// Idle too long, or shed to make room: no request is lost, so it may
    /// close gracefully (an HTTP/2 GOAWAY).
    Idle = 1,
    /// A stalled request head or body: closed at once.
    Stalled = 2,
}

/// The counters one connection shares with the table.
#[derive(Default)]
pub struct Activity {
    /// Bytes read from and written to the socket (below TLS).
    read: AtomicU64,
    written: AtomicU64,
    /// Requests handed to the router, and requests whose response is done
    /// (its body dropped). Their difference is the requests in flight.
    started: AtomicU64,
    finished: AtomicU64,
    /// `read` when the last request in flight finished: bytes beyond it are
    /// the start of the next request head.
    read_at_idle: AtomicU64,
    /// The handler is waiting for request body bytes.
    body_waiting: AtomicBool,
    /// The socket did not take response bytes.
    write_waiting: AtomicBool,
    /// HTTP/2: requests are streams, and bytes between them (pings, window
    /// updates) are no request head.
    http2: AtomicBool,
    close: AtomicU8,
    wake: Notify,
}

/// Adds to a counter only one task writes (the connection's own), without
/// the cost of an atomic read-modify-write.
fn bump(counter: &AtomicU64, n: usize) {
    counter.store(counter.load(Relaxed).wrapping_add(n as u64), Relaxed);
}

impl Activity {
    pub fn set_http2(&self) {
        self.http2.store(true, Relaxed);
    }

    /// Marks a request as handed to the router; the guard marks it finished
    /// when dropped (with the response body, or with the request future if
    /// the connection goes first).
    pub fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.started.fetch_add(1, Relaxed);
        RequestGuard(self.clone())
    }

    /// Resolves when the reaper or the table wants this connection closed
    /// for `at_least` this reason (a stall is more than idleness).
    pub async fn close_requested(&self, at_least: CloseReason) -> CloseReason {
        loop {
            match self.close_reason() {
                Some(reason) if reason as u8 >= at_least as u8 => return reason,
                _ => self.wake.notified().await,
            }
        }
    }

    fn close_reason(&self) -> Option<CloseReason> {
        match self.close.load(Relaxed) {
            1 => Some(CloseReason::Idle),
            2 => Some(CloseReason::Stalled),
            _ => None,
        }
    }

    fn request_close(&self, reason: CloseReason) {
        // A stall overrides an idle close already asked for, not the reverse.
        self.close.fetch_max(reason as u8, Relaxed);
        self.wake.notify_one();
    }
}

/// One request in flight on its connection.
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let a = &self.0;
        a.read_at_idle.store(a.read.load(Relaxed), Relaxed);
        a.body_waiting.store(false, Relaxed);
        a.finished.fetch_add(1, Relaxed);
    }
}

/// A response body that keeps its request counted as in flight until hyper
/// has taken all of it.
pub struct TrackedBody<B> {
    inner: B,
    _guard: RequestGuard,
}

impl<B> TrackedBody<B> {
    pub fn new(inner: B, guard: RequestGuard) -> TrackedBody<B> {
        TrackedBody { inner, _guard: guard }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that tells the reaper when the handler waits for it.
pub struct WatchedBody<B> {
    inner: B,
    activity: Arc<Activity>,
}

impl<B> WatchedBody<B> {
    pub fn new(inner: B, activity: Arc<Activity>) -> WatchedBody<B> {
        WatchedBody { inner, activity }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for WatchedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        self.activity.body_waiting.store(polled.is_pending(), Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for WatchedBody<B> {
    fn drop(&mut self) {
        self.activity.body_waiting.store(false, Relaxed);
    }
}

/// A socket whose traffic is counted in its connection's [`Activity`].
/// Writes pass through unchanged (vectored included), so the sendfile
/// placeholders of [`crate::sendfile::Conn`] below still reach it.
pub struct Metered<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Metered<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Metered<S> {
        Metered { inner, activity }
    }

    fn wrote(&self, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match &polled {
            Poll::Ready(Ok(n)) => {
                bump(&self.activity.written, *n);
                self.activity.write_waiting.store(false, Relaxed);
            }
            Poll::Pending => self.activity.write_waiting.store(true, Relaxed),
            Poll::Ready(Err(_)) => {}
        }
        polled
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        bump(&self.activity.read, buf.filled().len() - before);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What the reaper last saw of one connection.
struct Entry {
    activity: Arc<Activity>,
    seen_started: u64,
    seen_finished: u64,
    seen_read: u64,
    seen_written: u64,
    /// Since when no request has been in flight (or the connection's start).
    idle_since: Instant,
    /// When bytes of a next request head were first seen.
    head_since: Option<Instant>,
    /// When a byte last moved either way.
    progress_at: Instant,
}

impl Entry {
    /// Updates the observation; returns why the connection must close, if it must.
    fn look(&mut self, now: Instant, limits: &Timeouts) -> Option<CloseReason> {
        let a = &self.activity;
        let (started, finished) = (a.started.load(Relaxed), a.finished.load(Relaxed));
        let (read, written) = (a.read.load(Relaxed), a.written.load(Relaxed));
        if (started, finished) != (self.seen_started, self.seen_finished) {
            (self.seen_started, self.seen_finished) = (started, finished);
            self.idle_since = now;
            self.head_since = None;
            self.progress_at = now;
        }
        if (read, written) != (self.seen_read, self.seen_written) {
            (self.seen_read, self.seen_written) = (read, written);
            self.progress_at = now;
        }
        if started == finished {
            if a.http2.load(Relaxed) {
                return (now - self.idle_since >= limits.idle).then_some(CloseReason::Idle);
            }
            if self.head_since.is_none() && read != a.read_at_idle.load(Relaxed) {
                self.head_since = Some(now);
            }
            return match self.head_since {
                Some(t) => (now - t >= limits.header).then_some(CloseReason::Stalled),
                // A new connection owes its first request within the header timeout.
                None if started == 0 => (now - self.idle_since >= limits.header).then_some(CloseReason::Stalled),
                None => (now - self.idle_since >= limits.idle).then_some(CloseReason::Idle),
            };
        }
        let awaited = a.body_waiting.load(Relaxed) || a.write_waiting.load(Relaxed);
        (awaited && now - self.progress_at >= limits.body).then_some(CloseReason::Stalled)
    }

    fn is_idle(&self) -> bool {
        self.activity.started.load(Relaxed) == self.activity.finished.load(Relaxed)
    }
}

/// Every open connection.
pub struct Connections {
    table: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    limits: Timeouts,
}

/// Removes its connection from the table when the connection's task ends.
pub struct Registration {
    connections: Arc<Connections>,
    id: u64,
    pub activity: Arc<Activity>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

impl Connections {
    pub fn new(limits: Timeouts) -> Arc<Connections> {
        Arc::new(Connections {
            table: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            limits,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Adds an accepted connection.
    pub fn register(self: &Arc<Self>) -> Registration {
        let activity = Arc::new(Activity::default());
        let id = self.next_id.fetch_add(1, Relaxed);
        let now = Instant::now();
        self.lock().insert(
            id,
            Entry {
                activity: activity.clone(),
                seen_started: 0,
                seen_finished: 0,
                seen_read: 0,
                seen_written: 0,
                idle_since: now,
                head_since: None,
                progress_at: now,
            },
        );
        Registration {
            connections: self.clone(),
            id,
            activity,
        }
    }

    /// Asks up to `count` connections without a request in flight to close,
    /// those idle the longest first; returns how many were asked.
    pub fn shed_idle(&self, count: usize) -> usize {
        let table = self.lock();
        let mut idle: Vec<(Instant, u64, &Entry)> = table
            .iter()
            .filter(|(_, e)| e.is_idle() && e.activity.close_reason().is_none())
            .map(|(id, e)| (e.idle_since, *id, e))
            .collect();
        let count = count.min(idle.len());
        if count == 0 {
            return 0;
        }
        if count < idle.len() {
            idle.select_nth_unstable_by_key(count - 1, |(since, id, _)| (*since, *id));
        }
        for (_, _, e) in &idle[..count] {
            e.activity.request_close(CloseReason::Idle);
        }
        count
    }

    /// Runs the reaper until the task is aborted.
    pub async fn reap(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.limits.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Instant::now();
            let mut table = self.lock();
            for entry in table.values_mut() {
                if let Some(reason) = entry.look(now, &self.limits) {
                    entry.activity.request_close(reason);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Timeouts {
        Timeouts {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            body: Duration::from_secs(120),
        }
    }

    fn entry(start: Instant) -> Entry {
        Entry {
            activity: Arc::new(Activity::default()),
            seen_started: 0,
            seen_finished: 0,
            seen_read: 0,
            seen_written: 0,
            idle_since: start,
            head_since: None,
            progress_at: start,
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_silent_new_connection_gets_the_header_timeout() {
        let t0 = Instant::now();
        let mut e = entry(t0);
        assert_eq!(e.look(t0 + S(9), &limits()), None);
        assert_eq!(e.look(t0 + S(10), &limits()), Some(CloseReason::Stalled));
    }

    #[test]
    fn a_partial_head_gets_the_header_timeout_from_its_first_byte() {
        let t0 = Instant::now();
        let mut e = entry(t0);
        let a = e.activity.clone();
        let guard = a.begin_request();
        drop(guard);
        assert_eq!(e.look(t0 + S(1), &limits()), None);
        // Idle for a while, then a trickle of head bytes.
        assert_eq!(e.look(t0 + S(30), &limits()), None);
        bump(&a.read, 10);
        assert_eq!(e.look(t0 + S(31), &limits()), None);
        bump(&a.read, 1);
        assert_eq!(e.look(t0 + S(40), &limits()), None);
        assert_eq!(e.look(t0 + S(41), &limits()), Some(CloseReason::Stalled));
    }

    #[test]
    fn keep_alive_gets_the_idle_timeout() {
        let t0 = Instant::now();
        let mut e = entry(t0);
        let a = e.activity.clone();
        bump(&a.read, 100);
        let guard = a.begin_request();
        assert_eq!(e.look(t0 + S(1), &limits()), None);
        drop(guard);
        assert_eq!(e.look(t0 + S(2), &limits()), None);
        assert_eq!(e.look(t0 + S(61), &limits()), None);
        assert_eq!(e.look(t0 + S(62), &limits()), Some(CloseReason::Idle));
    }

    #[test]
    fn a_stalled_body_is_closed_but_a_busy_handler_is_not() {
        let t0 = Instant::now();
        let mut e = entry(t0);
        let a = e.activity.clone();
        let _guard = a.begin_request();
        assert_eq!(e.look(t0, &limits()), None);
        // The handler works without waiting on the client: never a stall.
        assert_eq!(e.look(t0 + S(500), &limits()), None);
        // It waits for body bytes; they trickle, then stop.
        a.body_waiting.store(true, Relaxed);
        bump(&a.read, 1);
        assert_eq!(e.look(t0 + S(501), &limits()), None);
        assert_eq!(e.look(t0 + S(620), &limits()), None);
        assert_eq!(e.look(t0 + S(621), &limits()), Some(CloseReason::Stalled));
        // The same for a client that stops reading the response.
        let mut e = entry(t0);
        let a = e.activity.clone();
        let _guard = a.begin_request();
        assert_eq!(e.look(t0, &limits()), None);
        a.write_waiting.store(true, Relaxed);
        assert_eq!(e.look(t0 + S(119), &limits()), None);
        assert_eq!(e.look(t0 + S(120), &limits()), Some(CloseReason::Stalled));
    }

    #[test]
    fn http2_between_streams_is_idle_whatever_it_reads() {
        let t0 = Instant::now();
        let mut e = entry(t0);
        let a = e.activity.clone();
        a.set_http2();
        drop(a.begin_request());
        assert_eq!(e.look(t0, &limits()), None);
        bump(&a.read, 17); // a ping
        assert_eq!(e.look(t0 + S(30), &limits()), None);
        assert_eq!(e.look(t0 + S(60), &limits()), Some(CloseReason::Idle));
    }

    #[test]
    fn shedding_takes_the_longest_idle_first() {
        let c = Connections::new(limits());
        let regs: Vec<Registration> = (0..5).map(|_| c.register()).collect();
        let busy = regs[0].activity.begin_request();
        // The first (oldest) is busy: the next two oldest go.
        assert_eq!(c.shed_idle(2), 2);
        let asked: Vec<bool> = regs.iter().map(|r| r.activity.close_reason().is_some()).collect();
        assert_eq!(asked, [false, true, true, false, false]);
        assert_eq!(c.shed_idle(10), 2);
        assert_eq!(c.shed_idle(10), 0, "the busy one stays");
        drop(busy);
        assert_eq!(c.len(), 5);
        drop(regs);
        assert_eq!(c.len(), 0);
    }
}
