//! One log line per request: client, method, path and query, user agent,
//! status, the spec's error code and message for a 4xx or 5xx, bytes sent and
//! duration, written when the response body is finished (or abandoned), so
//! the duration of a large download is the real one.

use axum::extract::Request;
use axum::response::Response;
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

    /// The line to write when the response body ends (see
    /// [`crate::body_end`]); `None` when request lines are not logged.
    pub(crate) fn finish(self, resp: &mut Response) -> Option<Record> {
        if !enabled() {
            return None;
        }
        Some(Record {
            status: resp.status().as_u16(),
            error: resp.extensions_mut().remove::<ErrorSummary>(),
            pending: self,
            bytes: 0,
        })
    }
}

/// A request's log line, written when it drops: when its response body has
/// ended or was abandoned.
pub(crate) struct Record {
    pending: Pending,
    status: u16,
    error: Option<ErrorSummary>,
    /// Response body bytes sent so far.
    pub(crate) bytes: u64,
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
