//! `/v2/<name>/manifests/<reference>`

use crate::auth::Permit;
use crate::body::read_limited;
use crate::error::ApiError;
use crate::{header_str, query_pairs, query_param};
use axum::body::Body;
use axum::response::Response;
use berth_policy::Action;
use berth_registry::{Registry, RegistryError};
use berth_spec::manifest::MAX_MANIFEST_SIZE;
use berth_spec::reference::ReferenceError;
use berth_spec::{ErrorCode, ManifestError, Reference, RepoName, Tag};
use http::request::Parts as Request;
use http::{header, HeaderValue, StatusCode};

pub(crate) fn parse_name(name: &str) -> Result<RepoName, ApiError> {
    name.parse::<RepoName>().map_err(|e| RegistryError::from(e).into())
}

/// The reference of a PUT: a malformed tag is TAG_INVALID (400).
pub(crate) fn parse_reference(reference: &str) -> Result<Reference, ApiError> {
    reference.parse::<Reference>().map_err(|e| {
        let e = match e {
            ReferenceError::Digest(d) => RegistryError::DigestInvalid(d),
            ReferenceError::Tag(t) => RegistryError::NameInvalid(t),
        };
        e.into()
    })
}

/// The reference of a read or a delete. A string that cannot be a tag names no
/// manifest, so it is MANIFEST_UNKNOWN (404), as the OCI conformance suite
/// expects; a malformed digest stays DIGEST_INVALID.
fn parse_existing_reference(reference: &str) -> Result<Reference, ApiError> {
    reference.parse::<Reference>().map_err(|e| match e {
        ReferenceError::Digest(d) => RegistryError::DigestInvalid(d).into(),
        ReferenceError::Tag(_) => RegistryError::ManifestUnknown(reference.to_owned()).into(),
    })
}

/// At most this many `?tag=` parameters in one manifest PUT (the spec asks
/// for at least 10 and allows 414 beyond a limit).
const MAX_TAG_PARAMS: usize = 100;

fn etag(digest: &berth_spec::Digest) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{digest}\"")).expect("digests are ascii")
}

fn digest_header(digest: &berth_spec::Digest) -> HeaderValue {
    HeaderValue::from_str(&digest.to_string()).expect("digests are ascii")
}

pub async fn get(reg: &Registry, name: &str, reference: &str, req: &Request, head: bool) -> Result<Response, ApiError> {
    let name = parse_name(name)?;
    let reference = parse_existing_reference(reference)?;
    // The stored manifest is served whatever the Accept header says: refusing
    // it (as distribution does for some types) only breaks clients.
    let m = reg.get_manifest(&name, &reference).await?;
    let tag = etag(&m.digest);
    let not_modified = header_str(req, header::IF_NONE_MATCH)
        .map(|v| {
            v.split(',')
                .any(|t| t.trim() == tag.to_str().unwrap_or("") || t.trim() == "*")
        })
        .unwrap_or(false);
    let len = m.bytes.len();
    let mut resp = if not_modified {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else if head {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(m.bytes))
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&m.media_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if !not_modified {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    h.insert("docker-content-digest", digest_header(&m.digest));
    h.insert(header::ETAG, tag);
    Ok(resp)
}

/// Moving an existing tag to another manifest needs `overwrite`; creating a
/// tag, or pushing the manifest it already names, needs only `push` (checked
/// before the handler ran).
async fn check_overwrite(
    reg: &Registry,
    permit: &Permit,
    name: &RepoName,
    tag: &Tag,
    bytes: &[u8],
) -> Result<(), ApiError> {
    if permit.is_unrestricted() {
        return Ok(());
    }
    let Some(current) = reg.tag_digest(name, tag).await? else {
        return Ok(());
    };
    let mut h = current.algorithm().digester();
    h.update(bytes);
    if h.finish() == current {
        return Ok(());
    }
    permit.require(Action::Overwrite, name.as_str(), &format!("move tag {tag}"))
}

pub async fn put(
    reg: &Registry,
    name: &str,
    reference: &str,
    req: &Request,
    body: Body,
    permit: &Permit,
) -> Result<Response, ApiError> {
    let name = parse_name(name)?;
    let reference = parse_reference(reference)?;
    let mut extra_tags = Vec::new();
    for (k, v) in query_pairs(req) {
        if k == "tag" {
            extra_tags.push(v.parse::<Tag>().map_err(RegistryError::from)?);
        }
    }
    if extra_tags.len() > MAX_TAG_PARAMS {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            ErrorCode::TagInvalid,
            format!("at most {MAX_TAG_PARAMS} tag parameters per request"),
        ));
    }
    let content_type = header_str(req, header::CONTENT_TYPE).map(str::to_owned);
    let too_large = || ApiError::from(RegistryError::ManifestInvalid(ManifestError::TooLarge));
    if let Some(len) = header_str(req, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok()) {
        if len > DRAIN_LIMIT as u64 {
            return Err(too_large());
        }
    }
    let bytes = read_limited(body, DRAIN_LIMIT)
        .await
        .map_err(RegistryError::Body)?
        .filter(|b| b.len() <= MAX_MANIFEST_SIZE)
        .ok_or_else(too_large)?;
    if let Reference::Tag(tag) = &reference {
        check_overwrite(reg, permit, &name, tag, &bytes).await?;
    }
    for tag in &extra_tags {
        check_overwrite(reg, permit, &name, tag, &bytes).await?;
    }
    let size = bytes.len() as u64;
    let put = reg
        .put_manifest(&name, &reference, content_type.as_deref(), bytes, &extra_tags)
        .await?;
    let mut resp = Response::new(Body::empty());
    resp.extensions_mut().insert(crate::events::PushedSize(size));
    *resp.status_mut() = StatusCode::CREATED;
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/v2/{name}/manifests/{}", put.digest)).expect("ascii"),
    );
    h.insert("docker-content-digest", digest_header(&put.digest));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    if let Some(subject) = &put.subject {
        h.insert("oci-subject", digest_header(subject));
    }
    // One OCI-Tag header per tag the PUT created (distribution-spec: "for
    // each accepted tag"); tags are ASCII by their grammar.
    for tag in &extra_tags {
        h.append("oci-tag", HeaderValue::from_str(tag.as_str()).expect("tags are ascii"));
    }
    Ok(resp)
}

/// How much of an oversized manifest is read (and dropped) before answering
/// 413: reading it lets the client see the 413 instead of a broken pipe while
/// it is still sending. Bodies larger still get the 413 without being read.
const DRAIN_LIMIT: usize = 2 * MAX_MANIFEST_SIZE;

/// The query parameter with which an admin deletes an immutable tag.
pub const OVERRIDE_IMMUTABLE: &str = "berth-override-immutable";

pub async fn delete(
    reg: &Registry,
    name: &str,
    reference: &str,
    req: &Request,
    permit: &Permit,
) -> Result<Response, ApiError> {
    let name = parse_name(name)?;
    let reference = parse_existing_reference(reference)?;
    // Asked for explicitly, and honoured for admins only (everyone is one
    // without access control).
    let wants_override = query_param(req, OVERRIDE_IMMUTABLE).is_some_and(|v| v == "true" || v == "1");
    let override_immutable = wants_override && permit.may_override_immutable(name.as_str());
    reg.delete_manifest_with(&name, &reference, override_immutable).await?;
    Ok(accepted())
}

pub(crate) fn accepted() -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    resp
}
