//! HTTP for berth: the distribution API on top of [`berth_registry::Registry`].
//!
//! One fallback handler receives every request, [`route::parse`] decides the
//! endpoint, and the handlers translate between HTTP and the registry domain.
//! [`error::ApiError`] is the only place where errors become status codes.

mod access_log;
pub mod auth;
mod blobs;
mod body;
pub mod error;
mod listing;
mod manifests;
pub mod route;
mod sendfile;
mod uploads;

use auth::{Auth, Permit};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use berth_registry::Registry;
use error::ApiError;
use http::request::Parts;
use http::{HeaderValue, Method};
use route::Route;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    /// Authentication and the access policy; `None`: everyone may do everything.
    pub auth: Option<Arc<Auth>>,
}

impl AppState {
    pub fn new(registry: Arc<Registry>) -> AppState {
        AppState { registry, auth: None }
    }
}

/// The whole API as an axum router.
pub fn router(state: AppState) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish.
///
/// HTTP/1.1 only (what registry clients speak). Each connection runs on its own
/// task with a [`sendfile::Conn`] socket, so blob downloads go out with
/// sendfile(2) instead of being copied through user space.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router(state);
    let mut http = hyper::server::conn::http1::Builder::new();
    // Body frames must reach the socket as they are (queued, written with
    // writev), never copied into one buffer: sendfile placeholders depend on it.
    // (This is also why pipeline_flush stays off: it forces the copying strategy.)
    http.writev(true);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or an aborted handshake: keep serving.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = stream;
        let _ = stream.set_nodelay(true);
        let io = sendfile::Conn::new(stream);
        let regions = io.regions();
        let router = router.clone();
        let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            tower::ServiceExt::oneshot(router.clone(), req.map(Body::new))
        });
        let conn = http.serve_connection(hyper_util::rt::TokioIo::new(io), service);
        let mut stop = stop_rx.clone();
        // The peer is known to the connection's task, not to each request.
        tokio::spawn(auth::CLIENT.scope(
            peer,
            sendfile::REGIONS.scope(regions, async move {
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = stop.changed() => {}
                }
                // Finish the request in flight, then close.
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }),
        ));
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(());
    // Every connection task holds a receiver until it ends.
    stop_tx.closed().await;
    Ok(())
}

async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let mut log = access_log::start(&req);
    let result = match &state.auth {
        None => handle(&state, req, Permit::unrestricted()).await,
        Some(auth) => {
            // Decisions are written down only for the log line.
            let record = access_log::enabled().then(auth::SharedRecord::default);
            if let Some(r) = &record {
                log.set_auth(r.clone());
            }
            match gate(auth, req, record.as_ref()).await {
                Gate::Pass(req, permit) => handle(&state, req, permit).await,
                Gate::Answer(answer) => answer,
            }
        }
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    log.finish(resp)
}

/// What [`gate`] decided: handle the request with this permit, or answer
/// without handling it (a refusal, or the token endpoints).
enum Gate {
    Pass(Request, Permit),
    Answer(Result<Response, ApiError>),
}

/// Identifies the caller and checks the request against the policy before it
/// is handled; serves the token endpoints. Its state is small (a bcrypt check
/// and the token endpoint are boxed), so requests pay little for awaiting it.
async fn gate(auth: &Arc<Auth>, req: Request, record: Option<&auth::SharedRecord>) -> Gate {
    let (parts, body) = req.into_parts();
    match parts.uri.path() {
        "/token" => {
            let answer = Box::pin(auth.token_endpoint(&parts, body, record)).await;
            return Gate::Answer(answer.unwrap_or_else(|| Err(ApiError::not_found_route())));
        }
        "/.well-known/jwks.json" if parts.method == Method::GET => {
            return Gate::Answer(auth.jwks().ok_or_else(ApiError::not_found_route));
        }
        _ => {}
    }
    let Some(route) = route::parse(parts.uri.path()) else {
        return Gate::Answer(Err(ApiError::not_found_route()));
    };
    match auth.authorize(&parts, auth::need(&route, &parts.method), record).await {
        Ok(permit) => Gate::Pass(Request::from_parts(parts, body), permit),
        Err(e) => Gate::Answer(Err(e)),
    }
}

async fn handle(state: &AppState, req: Request, permit: Permit) -> Result<Response, ApiError> {
    let (req, body) = req.into_parts();
    let path = req.uri.path().to_owned();
    let route = route::parse(&path).ok_or_else(ApiError::not_found_route)?;
    let reg = &state.registry;
    let method = req.method.clone();
    match (route, method) {
        (Route::Base, Method::GET | Method::HEAD) => Ok(json_response(b"{}".to_vec())),
        (Route::Catalog, Method::GET) => listing::catalog(reg, &req, &permit).await,
        (Route::Tags { name }, Method::GET) => listing::tags(reg, name, &req).await,
        (Route::Referrers { name, digest }, Method::GET) => listing::referrers(reg, name, digest, &req).await,
        (Route::Manifest { name, reference }, m @ (Method::GET | Method::HEAD)) => {
            manifests::get(reg, name, reference, &req, m == Method::HEAD).await
        }
        (Route::Manifest { name, reference }, Method::PUT) => {
            manifests::put(reg, name, reference, &req, body, &permit).await
        }
        (Route::Manifest { name, reference }, Method::DELETE) => manifests::delete(reg, name, reference).await,
        (Route::Blob { name, digest }, m @ (Method::GET | Method::HEAD)) => {
            blobs::get(reg, name, digest, &req, m == Method::HEAD).await
        }
        (Route::Blob { name, digest }, Method::DELETE) => blobs::delete(reg, name, digest).await,
        (Route::UploadStart { name }, Method::POST) => uploads::start(reg, name, &req, body, &permit).await,
        (Route::Upload { name, id }, Method::GET) => uploads::status(reg, name, id).await,
        (Route::Upload { name, id }, Method::PATCH) => uploads::patch(reg, name, id, &req, body).await,
        (Route::Upload { name, id }, Method::PUT) => uploads::finish(reg, name, id, &req, body).await,
        (Route::Upload { name, id }, Method::DELETE) => uploads::cancel(reg, name, id).await,
        _ => Err(ApiError::method_not_allowed()),
    }
}

pub(crate) fn json_response(body: Vec<u8>) -> Response {
    let len = body.len();
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// Query parameters, in order, decoded.
pub(crate) fn query_pairs(req: &Parts) -> Vec<(String, String)> {
    req.uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

pub(crate) fn query_param(req: &Parts, key: &str) -> Option<String> {
    query_pairs(req).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

pub(crate) fn header_str(req: &Parts, name: impl http::header::AsHeaderName) -> Option<&str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}
