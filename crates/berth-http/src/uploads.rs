//! `/v2/<name>/blobs/uploads/` and `/v2/<name>/blobs/uploads/<id>`

use crate::auth::Permit;
use crate::blobs::parse_digest;
use crate::body::request_stream;
use crate::error::ApiError;
use crate::manifests::parse_name;
use crate::{header_str, query_param};
use axum::body::Body;
use axum::response::Response;
use berth_policy::Action;
use berth_registry::{Registry, RegistryError, UploadStatus};
use berth_spec::{Digest, ErrorCode, RepoName};
use berth_storage::ByteStream;
use futures::StreamExt;
use http::request::Parts as Request;
use http::{header, HeaderValue, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How much of a request body is still read after an early answer (a 416 for
/// an out-of-order chunk, a 404 for an unknown upload).
const DRAIN_LIMIT: u64 = 64 << 20;

/// A request body that, dropped before its end, goes on being read in the
/// background (up to [`DRAIN_LIMIT`]) and discarded. Answering while the client
/// is still sending and then closing with unread data makes the kernel reset
/// the connection: the client would see a broken pipe instead of the answer,
/// or a kept-alive connection that dies under its next request.
struct DrainOnDrop {
    inner: Option<ByteStream>,
}

impl DrainOnDrop {
    fn new(body: Body) -> DrainOnDrop {
        // Most POSTs have no body: nothing to read, nothing to drain.
        let empty = http_body::Body::is_end_stream(&body);
        DrainOnDrop {
            inner: (!empty).then(|| request_stream(body)),
        }
    }

    fn stream(self) -> ByteStream {
        self.boxed()
    }
}

impl futures::Stream for DrainOnDrop {
    type Item = std::io::Result<bytes::Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let polled = inner.poll_next_unpin(cx);
        if matches!(
            polled,
            std::task::Poll::Ready(None) | std::task::Poll::Ready(Some(Err(_)))
        ) {
            self.inner = None;
        }
        polled
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        let Some(mut rest) = self.inner.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut seen = 0u64;
            while let Some(Ok(chunk)) = rest.next().await {
                seen += chunk.len() as u64;
                if seen > DRAIN_LIMIT {
                    break;
                }
            }
        });
    }
}

fn location_of(name: &RepoName, id: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("/v2/{name}/blobs/uploads/{id}")).expect("ascii")
}

/// The Range header of an upload: `0-<last byte>`, without a `bytes=` prefix
/// (docker parses it literally), and `0-0` for an empty upload as distribution does.
fn range_value(offset: u64) -> HeaderValue {
    HeaderValue::from(offset.saturating_sub(1))
        .to_str()
        .map(|end| format!("0-{end}"))
        .map_or_else(
            |_| HeaderValue::from_static("0-0"),
            |v| HeaderValue::from_str(&v).expect("ascii"),
        )
}

fn upload_response(status: StatusCode, name: &RepoName, st: &UploadStatus) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::LOCATION, location_of(name, &st.id));
    h.insert(header::RANGE, range_value(st.offset));
    h.insert("docker-upload-uuid", HeaderValue::from_str(&st.id).expect("ascii"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    resp
}

fn blob_created(name: &RepoName, digest: &Digest) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::CREATED;
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/v2/{name}/blobs/{digest}")).expect("ascii"),
    );
    h.insert(
        "docker-content-digest",
        HeaderValue::from_str(&digest.to_string()).expect("ascii"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    resp
}

/// The chunk's start offset, if the request says where it starts.
fn chunk_start(req: &Request) -> Result<Option<u64>, ApiError> {
    let Some(v) = header_str(req, header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let (start, end) = berth_spec::range::parse_content_range(v).ok_or_else(|| {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::BlobUploadInvalid,
            format!("malformed Content-Range {v:?}; expected <start>-<end>"),
        )
    })?;
    if let Some(len) = header_str(req, header::CONTENT_LENGTH).and_then(|l| l.parse::<u64>().ok()) {
        if len != end - start + 1 {
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::BlobUploadInvalid,
                format!("Content-Range {v:?} does not match Content-Length {len}"),
            ));
        }
    }
    Ok(Some(start))
}

/// Out-of-order chunks get 416 with the upload's current Range, so the client can resume.
fn with_upload_state(e: RegistryError, name: &RepoName, id: &str) -> ApiError {
    let offset = match &e {
        RegistryError::UploadOutOfOrder { offset, .. } => Some(*offset),
        _ => None,
    };
    let mut err = ApiError::from(e);
    if let Some(offset) = offset {
        err = err
            .with_header(header::LOCATION, location_of(name, id))
            .with_header(header::RANGE, range_value(offset))
            .with_header(
                http::HeaderName::from_static("docker-upload-uuid"),
                HeaderValue::from_str(id).expect("ascii"),
            );
    }
    err
}

pub async fn start(
    reg: &Registry,
    name: &str,
    req: &Request,
    body: Body,
    permit: &Permit,
) -> Result<Response, ApiError> {
    let body = DrainOnDrop::new(body);
    let name = parse_name(name)?;
    if let Some(mount) = query_param(req, "mount") {
        // Malformed arguments make a mount that cannot be done, like any
        // other: the spec's answer is an ordinary upload session. Without
        // `from` the blob is mounted from wherever the registry holds it.
        let digest = mount.parse::<Digest>().ok();
        // A mount reads the source repository: without pull there, it is an
        // upload. Without `from`, the blob is mounted from wherever the
        // registry holds it, but only without access control: with it, berth
        // cannot tell which repositories hold the blob, so the client uploads.
        let from = match query_param(req, "from") {
            None if permit.is_unrestricted() => Some(None),
            None => None,
            Some(f) => f
                .parse::<RepoName>()
                .ok()
                .filter(|f| permit.may(Action::Pull, f.as_str(), "mount from"))
                .map(Some),
        };
        if let (Some(digest), Some(from)) = (digest, from) {
            if reg.mount_blob(&name, from.as_ref(), &digest).await? {
                return Ok(blob_created(&name, &digest));
            }
        }
        let st = reg.start_upload(&name).await?;
        return Ok(upload_response(StatusCode::ACCEPTED, &name, &st));
    }
    if let Some(digest) = query_param(req, "digest") {
        let digest = parse_digest(&digest)?;
        // Refused before the bytes come when a quota cannot take them.
        if let Some(size) = content_length(req) {
            reg.check_upload_quota(&name, Some(&digest), size).await?;
        }
        reg.put_blob(&name, &digest, body.stream()).await?;
        return Ok(blob_created(&name, &digest));
    }
    let st = reg.start_upload(&name).await?;
    Ok(upload_response(StatusCode::ACCEPTED, &name, &st))
}

pub async fn status(reg: &Registry, name: &str, id: &str) -> Result<Response, ApiError> {
    let name = parse_name(name)?;
    let st = reg.upload_status(&name, id).await?;
    Ok(upload_response(StatusCode::NO_CONTENT, &name, &st))
}

pub async fn patch(reg: &Registry, name: &str, id: &str, req: &Request, body: Body) -> Result<Response, ApiError> {
    let body = DrainOnDrop::new(body);
    let name = parse_name(name)?;
    let start = chunk_start(req)?;
    // A chunk whose length is announced: refused before its bytes come when
    // the upload would outgrow a quota (its digest is not known yet).
    if let Some(len) = content_length(req) {
        reg.check_upload_quota(&name, None, start.unwrap_or(0).saturating_add(len))
            .await?;
    }
    // A chunk of unannounced size (docker streams one): cut off, and
    // refused, once the upload outgrows the room its quotas leave.
    let room = match content_length(req) {
        Some(_) => None,
        None => reg.upload_room(&name).await?,
    };
    let Some(room) = room else {
        let st = reg
            .append_upload(&name, id, start, body.stream())
            .await
            .map_err(|e| with_upload_state(e, &name, id))?;
        return Ok(upload_response(StatusCode::ACCEPTED, &name, &st));
    };
    let offset = match start {
        Some(s) => s,
        None => reg.upload_status(&name, id).await?.offset,
    };
    let over = Arc::new(AtomicBool::new(false));
    let stream = within_room(body.stream(), room.saturating_sub(offset), over.clone());
    match reg.append_upload(&name, id, start, stream).await {
        Ok(st) => Ok(upload_response(StatusCode::ACCEPTED, &name, &st)),
        Err(_) if over.load(Ordering::Acquire) => {
            // The quota's own refusal, naming it, its limit and its usage.
            reg.check_upload_quota(&name, None, room.saturating_add(1)).await?;
            Err(RegistryError::Denied("quota exceeded".into()).into())
        }
        Err(e) => Err(with_upload_state(e, &name, id)),
    }
}

/// `stream`, failing once more than `room` bytes came (and saying so in `over`).
fn within_room(stream: ByteStream, room: u64, over: Arc<AtomicBool>) -> ByteStream {
    let mut seen = 0u64;
    stream
        .map(move |chunk| {
            let chunk = chunk?;
            seen = seen.saturating_add(chunk.len() as u64);
            if seen > room {
                over.store(true, Ordering::Release);
                return Err(std::io::Error::other("the upload outgrew its quota"));
            }
            Ok(chunk)
        })
        .boxed()
}

pub async fn finish(reg: &Registry, name: &str, id: &str, req: &Request, body: Body) -> Result<Response, ApiError> {
    let body = DrainOnDrop::new(body);
    let name = parse_name(name)?;
    let digest = query_param(req, "digest").ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::DigestInvalid,
            "finishing an upload needs ?digest=<digest>",
        )
    })?;
    let digest = parse_digest(&digest)?;
    let start = chunk_start(req)?;
    reg.finish_upload(&name, id, &digest, start, Some(body.stream()))
        .await
        .map_err(|e| with_upload_state(e, &name, id))?;
    Ok(blob_created(&name, &digest))
}

pub async fn cancel(reg: &Registry, name: &str, id: &str) -> Result<Response, ApiError> {
    let name = parse_name(name)?;
    reg.cancel_upload(&name, id).await?;
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

/// The body size the client announced.
fn content_length(req: &Request) -> Option<u64> {
    header_str(req, header::CONTENT_LENGTH).and_then(|l| l.parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_values() {
        assert_eq!(range_value(0), "0-0");
        assert_eq!(range_value(10), "0-9");
    }
}
