//! One log line per request: method, path, status, bytes sent and duration,
//! written when the response body is finished (or abandoned), so the duration
//! of a large download is the real one.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

pub struct Pending {
    method: http::Method,
    path: String,
    start: Instant,
    /// Who the caller is and what the policy decided (when auth is configured).
    auth: Option<crate::auth::SharedRecord>,
}

/// Whether request lines are logged at all.
pub fn enabled() -> bool {
    tracing::enabled!(target: "berth::access", tracing::Level::INFO)
}

pub fn start(req: &Request) -> Pending {
    Pending {
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        start: Instant::now(),
        auth: None,
    }
}

impl Pending {
    pub fn set_auth(&mut self, record: crate::auth::SharedRecord) {
        self.auth = Some(record);
    }

    pub fn finish(self, resp: Response) -> Response {
        if !enabled() {
            return resp;
        }
        let status = resp.status().as_u16();
        let (parts, body) = resp.into_parts();
        let logged = LoggedBody {
            inner: body,
            record: Some(Record {
                pending: self,
                status,
                bytes: 0,
            }),
        };
        Response::from_parts(parts, Body::new(logged))
    }
}

struct Record {
    pending: Pending,
    status: u16,
    bytes: u64,
}

impl Drop for Record {
    fn drop(&mut self) {
        let auth = self
            .pending
            .auth
            .as_ref()
            .map(|r| std::mem::take(&mut *r.lock().unwrap()));
        let auth = auth.as_ref();
        tracing::info!(
            target: "berth::access",
            method = %self.pending.method,
            path = %self.pending.path,
            status = self.status,
            bytes = self.bytes,
            duration_ms = self.pending.start.elapsed().as_secs_f64() * 1000.0,
            user = auth.map(|a| if a.user.is_empty() { "-" } else { a.user.as_str() }),
            action = auth.and_then(|a| a.action),
            repository = auth.and_then(|a| a.repository.as_deref()),
            access = auth.map(|a| a.access.as_str()),
        );
    }
}

struct LoggedBody {
    inner: Body,
    record: Option<Record>,
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(rec)) = (frame.data_ref(), this.record.as_mut()) {
                    rec.bytes += data.len() as u64;
                }
            }
            // Finished or failed: log now rather than when the connection lets go of the body.
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.record = None,
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
