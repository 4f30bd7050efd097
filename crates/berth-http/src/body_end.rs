//! One wrapper around a response body for everything that waits for its end:
//! the access log line and the request's metrics both want the bytes sent and
//! the moment the body finished (or was abandoned). One wrapper counts for
//! both, so a large body is not wrapped, boxed and polled through twice.

use crate::access_log::Record;
use crate::observe::ObservedBody;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// `resp` with its body watched for `log` and `metrics`; unchanged when
/// neither waits for it.
pub(crate) fn watch(resp: Response, log: Option<Record>, metrics: Option<ObservedBody>) -> Response {
    if log.is_none() && metrics.is_none() {
        return resp;
    }
    let (parts, inner) = resp.into_parts();
    Response::from_parts(parts, Body::new(Watched { inner, log, metrics }))
}

struct Watched {
    inner: Body,
    log: Option<Record>,
    metrics: Option<ObservedBody>,
}

impl Watched {
    /// Ends both: the log line is written and the request counted now, not
    /// when the connection lets go of the body (dropping does it otherwise).
    fn end(&mut self) {
        self.log = None;
        self.metrics = None;
    }
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if let Some(log) = &mut this.log {
                        log.bytes += n;
                    }
                    if let Some(m) = &mut this.metrics {
                        m.add_bytes(n);
                    }
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.end(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
