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

/// The spec's `n` (page size) and `last` (exclusive start) of a listing.
fn page_params(req: &Request) -> Result<(Option<usize>, Option<String>), ApiError> {
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
    Ok((n, query_param(req, "last")))
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
    let (n, last) = page_params(req)?;
    let page = reg.tags_page(&name, last.as_deref(), n).await?;
    let body = serde_json::to_vec(&serde_json::json!({"name": name.as_str(), "tags": page.tags})).expect("json");
    let mut resp = json_response(body);
    if page.more {
        let link = link_next(&format!("/v2/{name}/tags/list"), n, page.tags.last());
        resp.headers_mut().insert(header::LINK, link);
    }
    Ok(resp)
}

pub async fn catalog(reg: &Registry, req: &Request, permit: &Permit) -> Result<Response, ApiError> {
    let (n, last) = page_params(req)?;
    // Only what the caller may pull (filtered in the walk, so pages stay full);
    // the walk stops at the end of the page.
    let page = reg.catalog_page(last.as_deref(), n, |name| permit.lists(name)).await?;
    let body = serde_json::to_vec(&serde_json::json!({"repositories": page.repositories})).expect("json");
    let mut resp = json_response(body);
    if page.more {
        resp.headers_mut()
            .insert(header::LINK, link_next("/v2/_catalog", n, page.repositories.last()));
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
