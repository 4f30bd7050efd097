//! Metrics of the HTTP layer: requests by route kind, method and status
//! class, their latency, bytes each way, requests in flight, and
//! authentication failures. Every series exists from the start (a counter that
//! is still 0 is a fact too), and the request path reaches its series by index.

use crate::sharded::{shard, CounterFamily, Gauge, HistogramFamily};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

/// What a request is for: the label that stands in for its path, so that the
/// label set stays bounded whatever the names of repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Base,
    Catalog,
    Tags,
    Manifest,
    Blob,
    UploadStart,
    Upload,
    Referrers,
    Token,
    Admin,
    Health,
    Metrics,
    Ui,
    /// Anything else (answered 404).
    Other,
}

impl RouteKind {
    pub const ALL: [RouteKind; 14] = [
        RouteKind::Base,
        RouteKind::Catalog,
        RouteKind::Tags,
        RouteKind::Manifest,
        RouteKind::Blob,
        RouteKind::UploadStart,
        RouteKind::Upload,
        RouteKind::Referrers,
        RouteKind::Token,
        RouteKind::Admin,
        RouteKind::Health,
        RouteKind::Metrics,
        RouteKind::Ui,
        RouteKind::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RouteKind::Base => "base",
            RouteKind::Catalog => "catalog",
            RouteKind::Tags => "tags",
            RouteKind::Manifest => "manifest",
            RouteKind::Blob => "blob",
            RouteKind::UploadStart => "upload_start",
            RouteKind::Upload => "upload",
            RouteKind::Referrers => "referrers",
            RouteKind::Token => "token",
            RouteKind::Admin => "admin",
            RouteKind::Health => "health",
            RouteKind::Metrics => "metrics",
            RouteKind::Ui => "ui",
            RouteKind::Other => "other",
        }
    }
}

/// Request methods as a bounded label: the ones the API uses, and `other`.
const METHODS: [&str; 8] = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "other"];

/// The method as its bounded label index (see [`HttpMetrics::finish`]).
pub type Method = u8;

/// The label index of a request method.
pub fn method(m: &str) -> Method {
    match m {
        "GET" => 0,
        "HEAD" => 1,
        "PUT" => 2,
        "POST" => 3,
        "PATCH" => 4,
        "DELETE" => 5,
        "OPTIONS" => 6,
        _ => 7,
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Latency buckets (seconds): from a cached manifest (well under a
/// millisecond) to a large blob on a slow link.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

type Labels3 = [(&'static str, &'static str); 3];
type Labels2 = [(&'static str, &'static str); 2];
type Labels1 = [(&'static str, &'static str); 1];

pub struct HttpMetrics {
    /// [route][method][class]
    requests: CounterFamily<Labels3>,
    /// [route][method]
    latency: HistogramFamily<Labels2>,
    /// [route]
    bytes_in: CounterFamily<Labels1>,
    bytes_out: CounterFamily<Labels1>,
    in_flight: Gauge,
    /// [unauthorized, denied]
    auth_failures: CounterFamily<Labels1>,
}

const R: usize = RouteKind::ALL.len();
const M: usize = METHODS.len();
const C: usize = CLASSES.len();

impl HttpMetrics {
    pub(crate) fn new(registry: &mut Registry) -> HttpMetrics {
        let mut requests = Vec::with_capacity(R * M * C);
        let mut latency = Vec::with_capacity(R * M);
        for route in RouteKind::ALL {
            for method in METHODS {
                for class in CLASSES {
                    requests.push([("route", route.name()), ("method", method), ("status", class)]);
                }
                latency.push([("route", route.name()), ("method", method)]);
            }
        }
        let per_route = || RouteKind::ALL.iter().map(|r| [("route", r.name())]).collect();
        let m = HttpMetrics {
            requests: CounterFamily::new(requests),
            latency: HistogramFamily::new(LATENCY_BUCKETS, latency),
            bytes_in: CounterFamily::new(per_route()),
            bytes_out: CounterFamily::new(per_route()),
            in_flight: Gauge::new(),
            auth_failures: CounterFamily::new(vec![[("reason", "unauthorized")], [("reason", "denied")]]),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by route kind, method and status class",
            m.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to the end of its response body",
            Unit::Seconds,
            m.latency.clone(),
        );
        registry.register_with_unit(
            "http_request_body",
            "Bytes received in request bodies",
            Unit::Bytes,
            m.bytes_in.clone(),
        );
        registry.register_with_unit(
            "http_response_body",
            "Bytes sent in response bodies",
            Unit::Bytes,
            m.bytes_out.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "Requests received whose response body is not finished",
            m.in_flight.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused by authentication (unauthorized: no or bad credentials) or by the access policy (denied)",
            m.auth_failures.clone(),
        );
        m
    }

    /// A request arrived; it is in flight until [`HttpMetrics::finish`] or
    /// [`HttpMetrics::abandon`].
    #[inline]
    pub fn start(&self) {
        self.in_flight.inc(shard());
    }

    /// A request's response is done (or its body abandoned after the head).
    pub fn finish(&self, route: RouteKind, method: Method, status: u16, elapsed: Duration, bytes_out: u64) {
        let shard = shard();
        let (r, m) = (route as usize, method as usize);
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.requests.inc_by(shard, (r * M + m) * C + class, 1);
        self.latency.observe(shard, r * M + m, elapsed);
        if bytes_out > 0 {
            self.bytes_out.inc_by(shard, r, bytes_out);
        }
        self.in_flight.dec(shard);
    }

    /// A request that ended without a response (the client went away first).
    pub fn abandon(&self) {
        self.in_flight.dec(shard());
    }

    pub fn add_bytes_in(&self, route: RouteKind, n: u64) {
        self.bytes_in.inc_by(shard(), route as usize, n);
    }

    /// Authentication refused a request: 401 (`denied` false) or 403.
    pub fn auth_failure(&self, denied: bool) {
        self.auth_failures.inc_by(shard(), denied as usize, 1);
    }

    /// Requests counted so far for this route kind, method label and class
    /// (`"2xx"`); for tests.
    pub fn requests(&self, route: RouteKind, method: &str, class: &str) -> u64 {
        let m = self::method(method) as usize;
        let c = CLASSES.iter().position(|x| *x == class).expect("a status class");
        self.requests.get((route as usize * M + m) * C + c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_found_by_index() {
        let mut reg = Registry::default();
        let m = HttpMetrics::new(&mut reg);
        m.start();
        m.finish(RouteKind::Manifest, method("GET"), 200, Duration::from_millis(2), 10);
        m.start();
        m.finish(RouteKind::Manifest, method("BREW"), 404, Duration::from_millis(2), 0);
        assert_eq!(m.requests(RouteKind::Manifest, "GET", "2xx"), 1);
        assert_eq!(m.requests(RouteKind::Manifest, "other", "4xx"), 1);
        assert_eq!(m.requests(RouteKind::Blob, "GET", "2xx"), 0);
        assert_eq!(m.in_flight.get(), 0);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &reg).unwrap();
        assert!(
            out.contains(r#"http_requests_total{route="manifest",method="GET",status="2xx"} 1"#),
            "{out}"
        );
    }
}
