//! Tags, catalog and referrers listings, with the spec's `n`/`last` pagination.

use crate::auth::Permit;
use crate::blobs::parse_digest;
use crate::error::ApiError;
use crate::manifests::parse_name;
use crate::{json_response, query_param};
use axum::response::Response;
use berth_registry::Registry;
use berth_spec::ErrorCode;
use http::request::Parts as Request;
use http::{header, HeaderValue, StatusCode};

/// Applies `last` (exclusive start) and `n` (page size) to a sorted list, and
/// returns the page plus whether more entries follow it.
fn paginate(all: Vec<String>, req: &Request) -> Result<(Vec<String>, Option<usize>, bool), ApiError> {
    let n = match query_param(req, "n") {
        Some(v) => Some(v.parse::<usize>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::Unsupported,
                format!("n={v:?} is not a non-negative number"),
            )
        })?),
        None => None,
    };
    let last = query_param(req, "last");
    let mut items: Vec<String> = match &last {
        Some(last) => all.into_iter().filter(|t| t.as_str() > last.as_str()).collect(),
        None => all,
    };
    // n=0 asks for an empty page, which must not link to a next one (it would be the same page).
    let more = n.is_some_and(|n| n > 0 && items.len() > n);
    if let Some(n) = n {
        items.truncate(n);
    }
    Ok((items, n, more))
}

fn link_next(path: &str, n: Option<usize>, last: Option<&String>) -> HeaderValue {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(n) = n {
        q.append_pair("n", &n.to_string());
    }
    if let Some(last) = last {
        q.append_pair("last", last);
    }
    HeaderValue::from_str(&format!("<{path}?{}>; rel=\"next\"", q.finish())).expect("ascii")
}

pub async fn tags(reg: &Registry, name: &str, req: &Request) -> Result<Response, ApiError> {
    let name = parse_name(name)?;
    let all = reg.tags(&name).await?;
    let (tags, n, more) = paginate(all, req)?;
    let body = serde_json::to_vec(&serde_json::json!({"name": name.as_str(), "tags": tags})).expect("json");
    let mut resp = json_response(body);
    if more {
        let link = link_next(&format!("/v2/{name}/tags/list"), n, tags.last());
        resp.headers_mut().insert(header::LINK, link);
    }
    Ok(resp)
}

pub async fn catalog(reg: &Registry, req: &Request, permit: &Permit) -> Result<Response, ApiError> {
    let mut all = reg.catalog().await?;
    // Only what the caller may pull (before paginating, so pages stay full).
    all.retain(|name| permit.lists(name));
    let (repos, n, more) = paginate(all, req)?;
    let body = serde_json::to_vec(&serde_json::json!({"repositories": repos})).expect("json");
    let mut resp = json_response(body);
    if more {
        resp.headers_mut()
            .insert(header::LINK, link_next("/v2/_catalog", n, repos.last()));
    }
    Ok(resp)
}

pub async fn referrers(reg: &Registry, name: &str, digest: &str, req: &Request) -> Result<Response, ApiError> {
    let name = parse_name(name)?;
    let digest = parse_digest(digest)?;
    let artifact_type = query_param(req, "artifactType");
    let body = reg.referrers(&name, &digest, artifact_type.as_deref()).await?;
    let mut resp = json_response(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(berth_spec::media_type::OCI_INDEX),
    );
    if artifact_type.is_some() {
        h.insert("oci-filters-applied", HeaderValue::from_static("artifactType"));
    }
    Ok(resp)
}
