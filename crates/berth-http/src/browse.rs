//! The browse API: what the web page shows, as JSON, one request per view.
//!
//! ```text
//! GET /berth/v1/browse/session                          auth on?, who is signed in, deletes on?
//! GET /berth/v1/browse/repositories?q=&prefix=&n=&offset=   a page of repositories, summarized
//! GET /berth/v1/browse/repository?name=                 a repository's tags (digest, size, platforms, push time, referrers)
//! GET /berth/v1/browse/image?name=&reference=           one manifest: config, layers, history, index children
//! ```
//! Names and references travel as query parameters, so a repository named
//! `x/image` can never be mistaken for a path. With authentication on, the
//! catalog lists only what the caller may pull, and the other views need
//! pull; refusals carry no challenge (the page shows its own sign-in
//! form instead of the browser's dialog).

use crate::auth::Permit;
use crate::error::ApiError;
use crate::manifests::{parse_name, parse_reference};
use crate::{json_response, query_param};
use axum::response::Response;
use berth_policy::Action;
use berth_registry::browse::CatalogQuery;
use berth_registry::Registry;
use berth_spec::{ErrorCode, RepoName};
use http::request::Parts;
use http::{Method, StatusCode};
use serde::Serialize;

pub const PREFIX: &str = "/berth/v1/browse/";

/// Repositories per catalog page unless `n` says otherwise, and the most `n` may ask for.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// Handles a `/berth/v1/browse/...` request.
pub async fn handle(reg: &Registry, req: &Parts, permit: &Permit) -> Result<Response, ApiError> {
    if req.method != Method::GET && req.method != Method::HEAD {
        return Err(ApiError::method_not_allowed());
    }
    let body = match req.uri.path().strip_prefix(PREFIX) {
        Some("session") => to_json(&session(reg, permit)),
        Some("repositories") => to_json(&reg.browse_catalog(&catalog_query(req)?, |n| permit.lists(n)).await?),
        Some("repository") => {
            let name = name_param(req)?;
            require_pull(permit, &name)?;
            let detail = reg.browse_repository(&name).await?;
            let may_delete = may_delete(reg, permit, &name, detail.read_only);
            to_json(&WithDelete { detail, may_delete })
        }
        Some("image") => {
            let name = name_param(req)?;
            let reference = query_param(req, "reference").ok_or_else(|| missing("reference"))?;
            let reference = parse_reference(&reference)?;
            require_pull(permit, &name)?;
            let detail = reg.browse_image(&name, &reference).await?;
            let read_only = reg.is_read_only(&name);
            let may_delete = may_delete(reg, permit, &name, read_only);
            to_json(&WithDelete { detail, may_delete })
        }
        _ => return Err(ApiError::not_found_route()),
    };
    Ok(json_response(body))
}

#[derive(Serialize)]
struct WithDelete<T: Serialize> {
    #[serde(flatten)]
    detail: T,
    /// Whether the caller may delete tags here (the page shows delete buttons).
    may_delete: bool,
}

#[derive(Serialize)]
struct Session<'a> {
    /// Whether the registry asks for credentials at all.
    auth: bool,
    /// The signed-in user; `null` for an anonymous caller.
    user: Option<&'a str>,
    /// Whether deletes are enabled on this registry.
    deletes: bool,
}

fn session<'a>(reg: &Registry, permit: &'a Permit) -> Session<'a> {
    Session {
        auth: !permit.is_unrestricted(),
        user: permit.user(),
        deletes: reg.config().deletes,
    }
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("browse answers serialize")
}

fn missing(param: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::Unsupported,
        format!("the query parameter {param} is required"),
    )
}

fn name_param(req: &Parts) -> Result<RepoName, ApiError> {
    parse_name(&query_param(req, "name").ok_or_else(|| missing("name"))?)
}

fn catalog_query(req: &Parts) -> Result<CatalogQuery, ApiError> {
    let number = |key: &str, default: usize| -> Result<usize, ApiError> {
        match query_param(req, key) {
            None => Ok(default),
            Some(v) => v.parse::<usize>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::Unsupported,
                    format!("{key}={v:?} is not a non-negative number"),
                )
            }),
        }
    };
    Ok(CatalogQuery {
        search: query_param(req, "q").unwrap_or_default(),
        prefix: query_param(req, "prefix").unwrap_or_default(),
        offset: number("offset", 0)?,
        limit: number("n", DEFAULT_PAGE)?.min(MAX_PAGE),
    })
}

/// Pull is needed to see a repository; a refusal answers 401 to an
/// anonymous caller (signing in may help) and 403 to a signed-in one.
fn require_pull(permit: &Permit, name: &RepoName) -> Result<(), ApiError> {
    if permit.may(Action::Pull, name.as_str(), "browse") {
        return Ok(());
    }
    Err(match permit.user() {
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "sign in to see this repository",
        ),
        Some(_) => ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Denied,
            format!("you may not pull from {name}"),
        ),
    })
}

fn may_delete(reg: &Registry, permit: &Permit, name: &RepoName, read_only: bool) -> bool {
    reg.config().deletes && !read_only && permit.may(Action::Delete, name.as_str(), "browse: delete button")
}

/// Browse answers never carry a challenge: a browser would show its own
/// sign-in dialog for it, in front of the page's.
pub fn without_challenge(mut e: ApiError) -> ApiError {
    e.headers.retain(|(name, _)| *name != http::header::WWW_AUTHENTICATE);
    e
}
