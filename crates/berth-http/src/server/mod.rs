//! The accept loop and the life of each connection: time limits, a limit on
//! their number, and a server that keeps accepting when descriptors run out.
//!
//! Plain connections speak HTTP/1.1 through a [`sendfile::Conn`] socket, so
//! blob downloads go out with sendfile(2). TLS connections ([`tls`]) speak
//! HTTP/2 or HTTP/1.1 as ALPN decides, and their bodies are copied through
//! the TLS stream (the placeholders of [`sendfile`] only exist on plain
//! HTTP/1 connections). Every socket is wrapped in a [`Metered`] counter that
//! the reaper of [`connections`] watches.

mod connections;
mod tls;

pub use connections::Timeouts;
pub use tls::{ClientCertificate, Tls, TlsError, TlsFiles};

use crate::sendfile;
use axum::body::Body;
use axum::Router;
use connections::{Activity, CloseReason, Connections, Metered, Registration, TrackedBody, WatchedBody};
use hyper_util::server::graceful::GracefulConnection;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How the server treats its connections.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub timeouts: Timeouts,
    /// At most this many connections; past it the ones idle the longest are
    /// closed to make room. `None`: half the process's descriptor limit (each
    /// connection may hold a file open too).
    pub max_connections: Option<usize>,
    /// Serve HTTPS with this configuration instead of plain HTTP.
    pub tls: Option<Arc<Tls>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            timeouts: Timeouts {
                header: Duration::from_secs(30),
                idle: Duration::from_secs(60),
                body: Duration::from_secs(120),
            },
            max_connections: None,
            tls: None,
        }
    }
}

/// Half the soft limit on open descriptors, less a reserve for storage,
/// listeners and logs.
pub fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let soft = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } {
        0 if limit.rlim_cur == libc::RLIM_INFINITY => 1 << 20,
        0 => limit.rlim_cur.min(1 << 21) as usize,
        _ => 1024,
    };
    (soft.saturating_sub(64) / 2).max(16)
}

/// Serves the API on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish (a stalled one is still closed by its timeout).
pub async fn serve(
    listener: TcpListener,
    state: crate::AppState,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_router(listener, crate::router(state), options, shutdown).await
}

/// Serves only `/metrics` on `listener` (`--metrics-listen`), with the same
/// connection handling as the API.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<berth_metrics::Metrics>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_router(listener, crate::metrics_router(metrics), options, shutdown).await
}

/// [`serve`] with any router (tests give one that shows what a handler sees).
async fn serve_router(
    listener: TcpListener,
    router: Router,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let max_connections = options.max_connections.unwrap_or_else(default_max_connections);
    let connections = Connections::new(options.timeouts);
    let reaper = tokio::spawn(connections.clone().reap());
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // Body frames must reach the socket as they are (queued, written with
    // writev), never copied into one buffer: sendfile placeholders depend on it.
    // (This is also why pipeline_flush stays off: it forces the copying strategy.)
    http1.writev(true);
    let (stop_tx, stop_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut warnings = RateLimited::default();
    let mut backoff = Duration::ZERO;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff = Duration::ZERO;
                    accepted
                }
                Err(e) if out_of_descriptors(&e) => {
                    // Close connections idle the longest to free descriptors,
                    // then try again; with none to close, back off (the
                    // pending connections wait in the listen backlog) rather
                    // than spin on a failing accept.
                    let shed = connections.shed_idle(shed_batch(connections.len()));
                    backoff = match shed {
                        0 => (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1)),
                        _ => Duration::from_millis(5),
                    };
                    warnings.warn(|n| tracing::warn!(error = %e, closed_idle = shed, times = n,
                        "out of file descriptors: closing idle connections"));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => continue,
                        _ = &mut shutdown => break,
                    }
                }
                // A connection reset before it was accepted, and the like.
                Err(e) => {
                    tracing::debug!(error = %e, "accepting a connection failed");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let open = connections.len();
        if open >= max_connections && connections.shed_idle(shed_batch(open)) == 0 {
            warnings.warn(|n| {
                tracing::warn!(
                    max_connections,
                    times = n,
                    "connection limit reached and every connection is busy: refusing new ones"
                )
            });
            continue;
        }
        let _ = stream.set_nodelay(true);
        let registration = connections.register();
        match &options.tls {
            None => spawn_http1(stream, peer, registration, &router, &http1, stop_rx.clone()),
            Some(tls) => spawn_tls(
                stream,
                peer,
                registration,
                &router,
                tls.config(),
                &http1,
                stop_rx.clone(),
            ),
        }
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(());
    // Every connection task holds a receiver until it ends.
    stop_tx.closed().await;
    reaper.abort();
    Ok(())
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// How many idle connections to close at once when room is needed: a few
/// percent of those open, so that a flood of new connections costs one scan
/// of the table per batch rather than per connection.
fn shed_batch(open: usize) -> usize {
    (open / 64).max(1)
}

fn spawn_http1(
    stream: TcpStream,
    peer: SocketAddr,
    registration: Registration,
    router: &Router,
    http1: &hyper::server::conn::http1::Builder,
    stop: watch::Receiver<()>,
) {
    let activity = registration.activity.clone();
    let socket = sendfile::Conn::new(stream);
    let regions = socket.regions();
    let io = hyper_util::rt::TokioIo::new(Metered::new(socket, activity.clone()));
    let conn = http1.serve_connection(io, service(router.clone(), activity, peer, None));
    tokio::spawn(sendfile::REGIONS.scope(regions, drive(conn, registration, stop)));
}

/// A TLS connection: the handshake (within the header timeout, like a request
/// head), then HTTP/2 or HTTP/1.1 as ALPN chose.
fn spawn_tls(
    stream: TcpStream,
    peer: SocketAddr,
    registration: Registration,
    router: &Router,
    config: Arc<rustls::ServerConfig>,
    http1: &hyper::server::conn::http1::Builder,
    mut stop: watch::Receiver<()>,
) {
    let router = router.clone();
    let http1 = http1.clone();
    tokio::spawn(async move {
        let activity = registration.activity.clone();
        let io = Metered::new(stream, activity.clone());
        let handshake = tokio_rustls::TlsAcceptor::from(config).accept(io);
        let tls = tokio::select! {
            done = handshake => match done {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
            },
            _ = activity.close_requested(CloseReason::Idle) => return,
            _ = stop.changed() => return,
        };
        let session = tls.get_ref().1;
        let http2 = session.alpn_protocol() == Some(b"h2");
        let client = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| ClientCertificate::from_der(cert));
        let service = service(router, activity.clone(), peer, client);
        let io = hyper_util::rt::TokioIo::new(tls);
        if http2 {
            activity.set_http2();
            let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(io, service);
            drive(conn, registration, stop).await;
        } else {
            drive(http1.serve_connection(io, service), registration, stop).await;
        }
    });
}

/// The router as a hyper service on one connection: each request counts as
/// in flight until its response body is done, and its body reports when the
/// handler waits for it.
fn service(
    router: Router,
    activity: Arc<Activity>,
    peer: SocketAddr,
    client: Option<ClientCertificate>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<TrackedBody<Body>>,
    Error = Infallible,
    Future = impl Future<Output = Result<http::Response<TrackedBody<Body>>, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let guard = activity.begin_request();
        let mut req = req.map(|body| Body::new(WatchedBody::new(body, activity.clone())));
        req.extensions_mut().insert(crate::access_log::ClientAddr(peer));
        if let Some(client) = &client {
            req.extensions_mut().insert(client.clone());
        }
        let call = tower::ServiceExt::oneshot(router.clone(), req);
        async move {
            let resp = call.await?;
            Ok(resp.map(|body| TrackedBody::new(body, guard)))
        }
    })
}

/// Runs one connection to its end: closed by the client, told to close by
/// the reaper or the table, or finishing its request when the server stops.
async fn drive<C: GracefulConnection>(conn: C, registration: Registration, mut stop: watch::Receiver<()>) {
    let activity = registration.activity.clone();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        reason = activity.close_requested(CloseReason::Idle) => {
            if reason == CloseReason::Stalled {
                return; // dropping the connection closes the socket
            }
        }
        _ = stop.changed() => {}
    }
    // Idle (it closes at once, or sends HTTP/2's GOAWAY), or the server is
    // stopping: finish what is in flight, unless that stalls.
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = activity.close_requested(CloseReason::Stalled) => {}
    }
    drop(registration);
}

/// A warning that repeats at most every ten seconds, with how often it happened.
#[derive(Default)]
struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    fn warn(&mut self, log: impl FnOnce(u64)) {
        self.suppressed += 1;
        if self.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            log(self.suppressed);
            self.suppressed = 0;
            self.last = Some(Instant::now());
        }
    }
}
