//! One log line per request: client, method, path and query, user agent,
//! status, the spec's error code and message for a 4xx or 5xx, bytes sent and
//! duration, written when the response body is finished (or abandoned), so
//! the duration of a large download is the real one.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// The peer address of a request's connection, put into the request's
/// extensions by the server loop.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// The spec error a response carries, for the log line: set by
/// `ApiError::into_response` as a response extension.
#[derive(Debug, Clone)]
pub struct ErrorSummary {
    pub code: &'static str,
    pub message: String,
}

pub struct Pending {
    method: http::Method,
    path: String,
    query: Option<String>,
    client: Option<std::net::SocketAddr>,
    user_agent: Option<String>,
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
        query: req.uri().query().map(str::to_owned),
        client: req.extensions().get::<ClientAddr>().map(|c| c.0),
        user_agent: req
            .headers()
            .get(http::header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
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
        let (mut parts, body) = resp.into_parts();
        let error = parts.extensions.remove::<ErrorSummary>();
        let logged = LoggedBody {
            inner: body,
            record: Some(Record {
                pending: self,
                status,
                error,
                bytes: 0,
            }),
        };
        Response::from_parts(parts, Body::new(logged))
    }
}

struct Record {
    pending: Pending,
    status: u16,
    error: Option<ErrorSummary>,
    bytes: u64,
}

/// Milliseconds rounded to microseconds: `0.027`, not `0.027440000000000003`.
fn rounded_ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

impl Drop for Record {
    fn drop(&mut self) {
        let auth = self
            .pending
            .auth
            .as_ref()
            .map(|r| std::mem::take(&mut *r.lock().unwrap()));
        let auth = auth.as_ref();
        let p = &self.pending;
        tracing::info!(
            target: "berth::access",
            client = p.client.map(tracing::field::display),
            method = %p.method,
            path = %p.path,
            query = p.query.as_deref(),
            status = self.status,
            error = self.error.as_ref().map(|e| e.code),
            error_message = self.error.as_ref().map(|e| e.message.as_str()),
            bytes = self.bytes,
            duration_ms = rounded_ms(p.start.elapsed()),
            user_agent = p.user_agent.as_deref(),
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

#[cfg(test)]
mod tests {
    #[test]
    fn durations_are_rounded_to_microseconds() {
        let d = std::time::Duration::from_nanos(27_440);
        assert_eq!(super::rounded_ms(d).to_string(), "0.027");
        assert_eq!(
            super::rounded_ms(std::time::Duration::from_millis(1500)).to_string(),
            "1500"
        );
    }
}
