//! Maps `object_store` errors onto [`StorageError`].
//!
//! What `object_store` still reports after its retries (throttling, 5xx,
//! timeouts, refused connections) is `Unavailable`: the store may well answer
//! again soon, and the HTTP layer tells the client to retry (503 with
//! `Retry-After`) instead of reporting a server fault.

use crate::backend::StorageError;
use std::error::Error as _;
use std::io;

pub(super) fn map(key: &str, e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound(key.to_owned()),
        e if is_transient(&e) => StorageError::Unavailable {
            key: key.to_owned(),
            source: io::Error::other(e),
        },
        e => StorageError::Io {
            key: key.to_owned(),
            source: io::Error::other(e),
        },
    }
}

/// Whether `e` is a fault worth retrying later: a failed connection or
/// request, a timeout, S3's 503 SlowDown, any 5xx, 429.
pub(super) fn is_transient(e: &object_store::Error) -> bool {
    if !matches!(e, object_store::Error::Generic { .. }) {
        return false;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind as K;
            return matches!(h.kind(), K::Connect | K::Request | K::Timeout | K::Interrupted);
        }
        // object_store keeps its request error type private; its message
        // carries the status ("Server returned non-2xx status code: 503 ...").
        let text = s.to_string();
        if let Some(rest) = text.split("status code: ").nth(1) {
            return rest.starts_with('5') || rest.starts_with("429");
        }
        source = s.source();
    }
    false
}
