//! HTTP for berth: the distribution API on top of [`berth_registry::Registry`].
//!
//! One fallback handler receives every request, [`route::parse`] decides the
//! endpoint, and the handlers translate between HTTP and the registry domain.
//! [`error::ApiError`] is the only place where errors become status codes.
//! [`serve`] (in `server/`) accepts connections and runs them.

mod access_log;
mod admin;
pub mod auth;
mod blobs;
mod body;
mod body_end;
mod browse;
pub mod error;
mod events;
mod listing;
mod manifests;
mod mirror_ns;
mod observe;
pub mod route;
mod sendfile;
mod server;
mod ui;
mod uploads;

pub use server::{
    default_max_connections, serve, serve_metrics, ClientCertificate, ServerOptions, Timeouts, Tls, TlsError, TlsFiles,
};

use auth::{Auth, Permit};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use berth_registry::sources::SelfImageSource;
use berth_registry::Registry;
use error::ApiError;
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode};
use route::Route;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    /// Authentication and the access policy; `None`: everyone may do everything.
    pub auth: Option<Arc<Auth>>,
    /// Where requests are counted; `None`: metrics are off (`--metrics off`).
    pub metrics: Option<Arc<berth_metrics::Metrics>>,
    /// Whether this listener answers `/metrics` (not when they have a listener of their own).
    pub serve_metrics: bool,
    /// The self image, whose readiness `/readyz` reports; `None` when not served.
    pub self_image: Option<Arc<SelfImageSource>>,
    /// Webhook notifications; `None` when no endpoint is configured.
    pub notifier: Option<Arc<berth_notify::Notifier>>,
}

impl AppState {
    pub fn new(registry: Arc<Registry>) -> AppState {
        AppState {
            registry,
            auth: None,
            metrics: None,
            serve_metrics: true,
            self_image: None,
            notifier: None,
        }
    }
}

/// The whole API as an axum router.
pub fn router(state: AppState) -> Router {
    // axum clones the state for every request: one reference count to
    // touch (shared by the cores) instead of one per field, and the same
    // whatever is configured.
    Router::new().fallback(dispatch).with_state(Arc::new(state))
}

/// A router that answers `/metrics` only, for `--metrics-listen`.
pub fn metrics_router(metrics: Arc<berth_metrics::Metrics>) -> Router {
    Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move { observe::metrics_response(&metrics) }
        }),
    )
}

async fn dispatch(State(state): State<Arc<AppState>>, mut req: Request) -> Response {
    if let Some(uri) = mirror_ns::rewrite(req.uri(), &state.registry) {
        *req.uri_mut() = uri;
    }
    let mut log = access_log::start(&req);
    let observed = state.metrics.as_ref().map(|m| {
        let o = observe::Observed::start(m, observe::route_kind(req.uri().path()), req.method());
        if matches!(*req.method(), Method::PUT | Method::PATCH | Method::POST) {
            req = o.count_request_body(std::mem::take(&mut req));
        }
        o
    });
    let answered = observe::answer(&state, req.uri().path(), req.method()).await;
    let mut resp = match answered {
        Some(answer) => answer,
        None => api(&state, req, &mut log).await,
    };
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    let line = log.finish(&mut resp);
    let counting = observed.and_then(|o| o.finish(&resp));
    body_end::watch(resp, line, counting)
}

/// The registry API and the token endpoints, behind authentication.
async fn api(state: &AppState, req: Request, log: &mut access_log::Pending) -> Response {
    let (req, permit) = match &state.auth {
        None => (req, Permit::unrestricted()),
        Some(auth) => {
            // Decisions are written down only for the log line.
            let record = access_log::enabled().then(auth::SharedRecord::default);
            if let Some(r) = &record {
                log.set_auth(r.clone());
            }
            match gate(auth, req, record.as_ref()).await {
                Gate::Pass(req, permit) => (req, permit),
                Gate::Answer(answer) => {
                    let resp = answer.unwrap_or_else(|e| e.into_response());
                    let status = resp.status();
                    if let (Some(m), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) = (&state.metrics, status) {
                        m.http.auth_failure(status == StatusCode::FORBIDDEN);
                    }
                    return resp;
                }
            }
        }
    };
    let event = state.notifier.as_ref().and_then(|n| events::pending(n, &req));
    let actor = event.as_ref().map(|_| permit.user().unwrap_or_default().to_owned());
    let resp = handle(state, req, permit).await.unwrap_or_else(|e| e.into_response());
    if let (Some(event), Some(notifier)) = (event, &state.notifier) {
        event.finish(notifier, &resp, actor.unwrap_or_default());
    }
    resp
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
        p if ui::is_page(p) => return Gate::Answer(Ok(ui::serve(p, &parts.method))),
        p if p.starts_with(browse::PREFIX) => {
            // Identifies the caller; the browse handlers decide per repository.
            return match auth.authorize(&parts, auth::Need::Catalog, record).await {
                Ok(permit) => Gate::Pass(Request::from_parts(parts, body), permit),
                Err(e) => Gate::Answer(Err(browse::without_challenge(e))),
            };
        }
        "/token" => {
            let answer = Box::pin(auth.token_endpoint(&parts, body, record)).await;
            return Gate::Answer(answer.unwrap_or_else(|| Err(ApiError::not_found_route())));
        }
        "/.well-known/jwks.json" if parts.method == Method::GET => {
            return Gate::Answer(auth.jwks().ok_or_else(ApiError::not_found_route));
        }
        _ => {}
    }
    let path = parts.uri.path();
    let need = if path.starts_with("/berth/") {
        auth::need_berth_api(path)
    } else {
        let Some(route) = route::parse(path) else {
            return Gate::Answer(Err(ApiError::not_found_route()));
        };
        auth::need(&route, &parts.method)
    };
    match auth.authorize(&parts, need, record).await {
        Ok(permit) => Gate::Pass(Request::from_parts(parts, body), permit),
        Err(e) => Gate::Answer(Err(e)),
    }
}

async fn handle(state: &AppState, req: Request, permit: Permit) -> Result<Response, ApiError> {
    let (req, body) = req.into_parts();
    let path = req.uri.path().to_owned();
    if ui::is_page(&path) {
        return Ok(ui::serve(&path, &req.method));
    }
    if path.starts_with(browse::PREFIX) {
        return browse::handle(&state.registry, &req, &permit).await;
    }
    let body = if path.starts_with("/berth/") {
        match admin::handle(&state.registry, &req, body).await {
            Some(answer) => return answer,
            None => return Err(ApiError::not_found_route()),
        }
    } else {
        body
    };
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
        (Route::Manifest { name, reference }, Method::DELETE) => {
            manifests::delete(reg, name, reference, &req, &permit).await
        }
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
