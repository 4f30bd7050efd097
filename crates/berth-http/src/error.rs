//! The only place where errors become HTTP: the spec's JSON error body with
//! the right code and status.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use berth_registry::RegistryError;
use berth_spec::{ErrorCode, ManifestError};
use berth_storage::StorageError;
use http::{HeaderValue, StatusCode};
use serde::Serialize;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    /// Extra headers (an upload's Range and Location with a 416, a blob's Content-Range).
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: http::HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> ApiError {
        self.detail = Some(detail);
        self
    }

    pub fn not_found_route() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::Unsupported,
            "no such endpoint in the registry API",
        )
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unsupported,
            "method not allowed on this endpoint",
        )
    }
}

/// Seconds a client is told to wait when the store is unavailable: the
/// backend already retried for several seconds, and throttling or a store
/// restart usually passes within a few more.
const STORAGE_RETRY_AFTER: &str = "5";

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        use RegistryError as E;
        let message = e.to_string();
        let (status, code) = match &e {
            E::BlobUnknown(_) => (StatusCode::NOT_FOUND, ErrorCode::BlobUnknown),
            E::UploadUnknown(_) => (StatusCode::NOT_FOUND, ErrorCode::BlobUploadUnknown),
            E::UploadInvalid(_) | E::Body(_) => (StatusCode::BAD_REQUEST, ErrorCode::BlobUploadInvalid),
            E::UploadOutOfOrder { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, ErrorCode::BlobUploadInvalid),
            E::RangeNotSatisfiable { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, ErrorCode::RangeInvalid),
            E::DigestMismatch { .. } | E::DigestInvalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::DigestInvalid),
            E::NameInvalid(berth_spec::NameError::InvalidTag(_)) => (StatusCode::BAD_REQUEST, ErrorCode::TagInvalid),
            E::NameInvalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::NameInvalid),
            E::SizeInvalid(_) => (StatusCode::BAD_REQUEST, ErrorCode::SizeInvalid),
            E::ManifestUnknown(_) => (StatusCode::NOT_FOUND, ErrorCode::ManifestUnknown),
            E::ManifestInvalid(ManifestError::TooLarge) => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::SizeInvalid),
            E::ManifestInvalid(_) | E::DescriptorSizeMismatch { .. } => {
                (StatusCode::BAD_REQUEST, ErrorCode::ManifestInvalid)
            }
            E::ManifestBlobUnknown(_) => (StatusCode::BAD_REQUEST, ErrorCode::ManifestBlobUnknown),
            E::NameUnknown(_) => (StatusCode::NOT_FOUND, ErrorCode::NameUnknown),
            E::Denied(_) => (StatusCode::FORBIDDEN, ErrorCode::Denied),
            E::Unsupported(_) => (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::Unsupported),
            E::Busy(_) => (StatusCode::CONFLICT, ErrorCode::TooManyRequests),
            E::Augmentation(_) => (StatusCode::BAD_REQUEST, ErrorCode::Unsupported),
            // The mirror's upstream failed: not the client's fault, not berth's storage.
            E::Upstream(_) => (StatusCode::BAD_GATEWAY, ErrorCode::Unknown),
            E::Storage(StorageError::Io { source, .. }) if source.kind() == std::io::ErrorKind::StorageFull => {
                (StatusCode::INSUFFICIENT_STORAGE, ErrorCode::Unsupported)
            }
            // The store is throttling, failing or unreachable even after the
            // backend's retries: a transient fault, which the client may retry.
            E::Storage(StorageError::Unavailable { .. }) => {
                tracing::warn!(error = %e, "storage unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::TooManyRequests)
            }
            E::Storage(_) => {
                tracing::error!(error = %e, "storage failure");
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Unsupported)
            }
        };
        let mut err = ApiError::new(status, code, message);
        match &e {
            E::Storage(StorageError::Unavailable { .. }) => {
                err = err.with_header(http::header::RETRY_AFTER, HeaderValue::from_static(STORAGE_RETRY_AFTER));
            }
            E::RangeNotSatisfiable { size } => {
                err = err.with_header(
                    http::header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
                );
            }
            E::DigestMismatch { expected, actual } => {
                err = err.with_detail(serde_json::json!({"expected": expected, "actual": actual}));
            }
            E::DescriptorSizeMismatch {
                digest,
                declared,
                stored,
            } => {
                err = err.with_detail(serde_json::json!({"digest": digest, "size": declared, "actual": stored}));
            }
            E::ManifestBlobUnknown(d) | E::BlobUnknown(d) => {
                err = err.with_detail(serde_json::json!({"digest": d}));
            }
            _ => {}
        }
        err
    }
}

#[derive(Serialize)]
struct Body_<'a> {
    errors: [Entry<'a>; 1],
}

#[derive(Serialize)]
struct Entry<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a serde_json::Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&Body_ {
            errors: [Entry {
                code: self.code.as_str(),
                message: &self.message,
                detail: self.detail.as_ref(),
            }],
        })
        .expect("error bodies serialize");
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() = self.status;
        resp.extensions_mut().insert(crate::access_log::ErrorSummary {
            code: self.code.as_str(),
            message: self.message,
        });
        let h = resp.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in self.headers {
            h.insert(name, value);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that stays unavailable after the backend's retries is a 503
    /// the client may retry, not a 500; other storage faults stay 500.
    #[test]
    fn an_unavailable_store_is_a_503_with_retry_after() {
        let unavailable = RegistryError::Storage(StorageError::Unavailable {
            key: "k".into(),
            source: std::io::Error::other("503 SlowDown"),
        });
        let err = ApiError::from(unavailable);
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.code, ErrorCode::TooManyRequests);
        assert!(err
            .headers
            .iter()
            .any(|(n, v)| n == http::header::RETRY_AFTER && v == STORAGE_RETRY_AFTER));
        let broken = RegistryError::Storage(StorageError::Io {
            key: "k".into(),
            source: std::io::Error::other("bad"),
        });
        let err = ApiError::from(broken);
        assert_eq!(err.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(err.headers.is_empty());
    }
}
