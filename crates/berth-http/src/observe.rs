//! What operators watch: `/metrics` (Prometheus text format), `/healthz`
//! (the process answers) and `/readyz` (storage reads and writes, the self
//! image is ready or off), and the per-request counting behind the metrics.
//!
//! These endpoints are answered before authentication: probes and scrapers
//! carry no registry credentials, the health answers say nothing about
//! content, and the metrics have no label that names a repository or user.
//! To keep the metrics private, serve them on another address with
//! `--metrics-listen` (they then leave the main listener).

use crate::AppState;
use axum::body::Body;
use axum::response::Response;
use berth_metrics::http::{Method as MethodLabel, RouteKind};
use berth_metrics::Metrics;
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// The route kind of a path, for the metrics' `route` label.
pub(crate) fn route_kind(path: &str) -> RouteKind {
    use crate::route::Route;
    match crate::route::parse(path) {
        Some(Route::Base) => RouteKind::Base,
        Some(Route::Catalog) => RouteKind::Catalog,
        Some(Route::Tags { .. }) => RouteKind::Tags,
        Some(Route::Manifest { .. }) => RouteKind::Manifest,
        Some(Route::Blob { .. }) => RouteKind::Blob,
        Some(Route::UploadStart { .. }) => RouteKind::UploadStart,
        Some(Route::Upload { .. }) => RouteKind::Upload,
        Some(Route::Referrers { .. }) => RouteKind::Referrers,
        None => match path {
            "/token" | "/.well-known/jwks.json" => RouteKind::Token,
            "/healthz" | "/readyz" => RouteKind::Health,
            "/metrics" => RouteKind::Metrics,
            p if p.starts_with("/berth/") => RouteKind::Admin,
            "/" => RouteKind::Ui,
            p if p.starts_with("/ui/") || p == "/ui" => RouteKind::Ui,
            _ => RouteKind::Other,
        },
    }
}

/// Answers `/healthz`, `/readyz` and (when served here) `/metrics`; `None`
/// for every other path.
pub(crate) async fn answer(state: &AppState, path: &str, method: &http::Method) -> Option<Response> {
    let serve = match path {
        "/healthz" | "/readyz" => true,
        "/metrics" => state.serve_metrics && state.metrics.is_some(),
        _ => false,
    };
    if !serve {
        return None;
    }
    if !matches!(*method, http::Method::GET | http::Method::HEAD) {
        return Some(text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n".into()));
    }
    Some(match path {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => readiness(state).await,
        _ => metrics_response(state.metrics.as_deref().expect("checked above")),
    })
}

pub(crate) fn metrics_response(metrics: &Metrics) -> Response {
    let mut resp = Response::new(Body::from(metrics.render()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(berth_metrics::CONTENT_TYPE),
    );
    resp
}

fn text(status: StatusCode, body: String) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Where readiness writes its probe: berth's own area of the data directory,
/// never the distribution layout (a registry:2 reading the directory ignores it).
const PROBE_DIR: &str = "berth/v1/probe";

/// 200 when storage takes a write, gives it back and deletes it, and the
/// self image is ready (or not served); 503 naming what is not.
async fn readiness(state: &AppState) -> Response {
    let mut problems = Vec::new();
    if let Err(e) = probe_storage(state).await {
        problems.push(format!("storage: {e}"));
    }
    match &state.self_image {
        None => {}
        Some(image) => match futures::FutureExt::now_or_never(image.ready()) {
            Some(Ok(_)) => {}
            Some(Err(e)) => problems.push(format!("self image: {e}")),
            None => problems.push("self image: still being packaged".into()),
        },
    }
    if problems.is_empty() {
        text(StatusCode::OK, "ready\n".into())
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{}\n", problems.join("\n")),
        )
    }
}

async fn probe_storage(state: &AppState) -> Result<(), String> {
    let backend = state.registry.backend();
    // Unique per probe, so concurrent probes do not race each other.
    let key = format!("{PROBE_DIR}/{}", uuid::Uuid::new_v4());
    let data = Bytes::from_static(b"berth readiness probe\n");
    backend
        .put_ephemeral(&key, data.clone())
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    let read = backend.get(&key).await;
    let deleted = backend.delete(&key).await;
    match read {
        Ok(b) if b == data => {}
        Ok(_) => return Err("read back different bytes".into()),
        Err(e) => return Err(format!("read failed: {e}")),
    }
    deleted.map_err(|e| format!("delete failed: {e}"))
}

/// Bodies up to this size are counted when the response head is ready.
const SMALL_BODY: u64 = 64 * 1024;

/// What is known of a request being counted.
#[derive(Clone, Copy)]
struct Counting {
    route: RouteKind,
    method: MethodLabel,
    start: Instant,
    /// 0 until the response head is known.
    status: u16,
    bytes: u64,
}

impl Counting {
    fn end(&self, metrics: &Metrics) {
        let http = &metrics.http;
        match self.status {
            0 => http.abandon(),
            status => http.finish(self.route, self.method, status, self.start.elapsed(), self.bytes),
        }
    }
}

/// One request being counted: in flight from [`Observed::start`] until its
/// response body ends (or is dropped, or the request is dropped first). It
/// borrows the metrics from the server's state: no reference count is
/// touched per request, unless the body outlives the handler
/// ([`ObservedBody`]).
pub(crate) struct Observed<'a> {
    metrics: &'a Arc<Metrics>,
    /// `None` once handed to an [`ObservedBody`].
    counting: Option<Counting>,
}

impl<'a> Observed<'a> {
    pub(crate) fn start(metrics: &'a Arc<Metrics>, route: RouteKind, method: &http::Method) -> Observed<'a> {
        metrics.http.start();
        Observed {
            metrics,
            counting: Some(Counting {
                route,
                method: berth_metrics::http::method(method.as_str()),
                start: Instant::now(),
                status: 0,
                bytes: 0,
            }),
        }
    }

    /// Counts the request body's bytes as they arrive.
    pub(crate) fn count_request_body(&self, req: axum::extract::Request) -> axum::extract::Request {
        let metrics = self.metrics.clone();
        let route = self.counting.as_ref().map_or(RouteKind::Other, |c| c.route);
        req.map(|body| {
            Body::new(CountedRequest {
                inner: body,
                metrics,
                route,
            })
        })
    }

    /// The response head is known. A small body of known size (a manifest,
    /// an error) goes out in one write: it is counted now, which spares the
    /// request a body wrapper. A larger one is counted when it ends: the
    /// returned [`ObservedBody`] goes with it (see [`crate::body_end`]).
    pub(crate) fn finish(mut self, resp: &Response) -> Option<ObservedBody> {
        let mut counting = self.counting.take()?;
        counting.status = resp.status().as_u16();
        if let Some(len) = http_body::Body::size_hint(resp.body()).exact() {
            if len <= SMALL_BODY {
                counting.bytes = len;
                counting.end(self.metrics);
                return None;
            }
        }
        Some(ObservedBody {
            metrics: self.metrics.clone(),
            counting,
        })
    }
}

impl Drop for Observed<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.counting.take() {
            c.end(self.metrics);
        }
    }
}

/// A request whose response body is still being sent: counted when it drops.
pub(crate) struct ObservedBody {
    metrics: Arc<Metrics>,
    counting: Counting,
}

impl ObservedBody {
    pub(crate) fn add_bytes(&mut self, n: u64) {
        self.counting.bytes += n;
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        self.counting.end(&self.metrics);
    }
}

struct CountedRequest {
    inner: Body,
    metrics: Arc<Metrics>,
    route: RouteKind,
}

impl http_body::Body for CountedRequest {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.metrics.http.add_bytes_in(this.route, data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_kinds() {
        assert_eq!(route_kind("/v2/"), RouteKind::Base);
        assert_eq!(route_kind("/v2/a/b/manifests/latest"), RouteKind::Manifest);
        assert_eq!(route_kind("/v2/a/blobs/uploads/"), RouteKind::UploadStart);
        assert_eq!(route_kind("/metrics"), RouteKind::Metrics);
        assert_eq!(route_kind("/readyz"), RouteKind::Health);
        assert_eq!(route_kind("/berth/v1/gc"), RouteKind::Admin);
        assert_eq!(route_kind("/token"), RouteKind::Token);
        assert_eq!(route_kind("/wp-login.php"), RouteKind::Other);
    }
}
