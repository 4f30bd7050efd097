//! `/v2/<name>/blobs/<digest>`

use crate::body::response_body;
use crate::error::ApiError;
use crate::header_str;
use crate::manifests::{accepted, parse_name};
use axum::body::Body;
use axum::response::Response;
use berth_registry::{Registry, RegistryError};
use berth_spec::range::ByteRange;
use berth_spec::Digest;
use http::request::Parts as Request;
use http::{header, HeaderValue, StatusCode};

pub(crate) fn parse_digest(digest: &str) -> Result<Digest, ApiError> {
    digest.parse::<Digest>().map_err(|e| RegistryError::from(e).into())
}

pub async fn get(reg: &Registry, name: &str, digest: &str, req: &Request, head: bool) -> Result<Response, ApiError> {
    let name = parse_name(name)?;
    let digest = parse_digest(digest)?;
    // A Range header that is not a single bytes range is ignored (RFC 9110 allows it).
    let range = match header_str(req, header::RANGE).map(ByteRange::parse) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(range))) => Some(range),
        Some(Err(_backwards)) => {
            // Unknown blobs are still 404; a known one gets the 416 with its size.
            let blob = reg.get_blob(&name, &digest, None, true).await?;
            return Err(RegistryError::RangeNotSatisfiable { size: blob.size }.into());
        }
    };
    let blob = reg.get_blob(&name, &digest, range, head).await?;
    if let Some(location) = blob.redirect {
        // A mirror that leaves blobs at its upstream (distribution's own blob redirects look the same).
        let location = HeaderValue::from_str(&location)
            .map_err(|_| RegistryError::Upstream("the upstream's blob location is not a valid header".into()))?;
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        resp.headers_mut().insert(header::LOCATION, location);
        resp.headers_mut().insert(
            "docker-content-digest",
            HeaderValue::from_str(&digest.to_string()).expect("ascii"),
        );
        return Ok(resp);
    }
    let len = blob.range.end - blob.range.start;
    let mut resp = match blob.body {
        Some(body) => Response::new(response_body(body)),
        None => Response::new(Body::empty()),
    };
    if range.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        let value = format!(
            "bytes {}-{}/{}",
            blob.range.start,
            blob.range.end.saturating_sub(1),
            blob.size
        );
        resp.headers_mut()
            .insert(header::CONTENT_RANGE, HeaderValue::from_str(&value).expect("ascii"));
    }
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let d = HeaderValue::from_str(&digest.to_string()).expect("ascii");
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{digest}\"")).expect("ascii"),
    );
    h.insert("docker-content-digest", d);
    // Blobs never change under their digest.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=31536000"));
    Ok(resp)
}

pub async fn delete(reg: &Registry, name: &str, digest: &str) -> Result<Response, ApiError> {
    let name = parse_name(name)?;
    let digest = parse_digest(digest)?;
    reg.delete_blob(&name, &digest).await?;
    Ok(accepted())
}
