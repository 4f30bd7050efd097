//! Webhook notifications: events on manifest pushes, manifest pulls and
//! deletes, posted to configured endpoints in the envelope CNCF distribution
//! uses, so receivers written for it work unchanged.
//!
//! - [`config`]: the `[[notifications.endpoints]]` of the config file.
//! - [`event`]: the event and its envelope.
//! - [`Notifier`]: what the HTTP layer calls. [`Notifier::notify`] never
//!   waits: each endpoint has a bounded queue and its own background task
//!   that sends (with a timeout, retries and backoff). When an endpoint is
//!   down and its queue full, new events for it are dropped, counted in
//!   `berth_notifications_dropped_total{endpoint}` and logged, instead of
//!   piling up in memory.

pub mod config;
pub mod event;
mod sender;

pub use config::{EndpointConfig, NotificationsConfig};
pub use event::{Action, Actor, Event, RequestInfo, Source, Target};

use berth_metrics::prometheus_client::metrics::counter::Counter;
use berth_metrics::prometheus_client::metrics::family::Family;
use berth_metrics::prometheus_client::metrics::gauge::Gauge;
use berth_metrics::Metrics;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Sends events to every configured endpoint.
pub struct Notifier {
    endpoints: Vec<Endpoint>,
    source: Source,
    url_scheme: &'static str,
}

struct Endpoint {
    filter: config::Filter,
    name: String,
    queue: mpsc::Sender<Arc<Event>>,
    stats: Arc<Stats>,
    /// When a drop was last logged (ms since `epoch`), so a dead endpoint
    /// under load logs a line every few seconds rather than one per event.
    last_drop_log: AtomicU64,
    epoch: Instant,
}

/// One endpoint's counters.
pub(crate) struct Stats {
    pub sent: Counter,
    pub failed: Counter,
    pub dropped: Counter,
    pub queued: Gauge,
}

impl Notifier {
    /// Starts one sending task per endpoint (on the current runtime). Its
    /// counters go into `metrics` when given. `source` says which registry
    /// sends; `url_scheme` is how clients reach it (`http` or `https`), for
    /// the targets' URLs.
    pub fn start(
        config: &NotificationsConfig,
        metrics: Option<&Metrics>,
        source: Source,
        url_scheme: &'static str,
    ) -> Result<Notifier, String> {
        config.validate()?;
        let families = Families::default();
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .build()
            .map_err(|e| format!("notifications: cannot build the HTTP client: {e}"))?;
        let mut endpoints = Vec::new();
        for ep in &config.endpoints {
            let settings = ep.settings()?;
            let label = [("endpoint", ep.name.clone())];
            let stats = Arc::new(Stats {
                sent: families.sent.get_or_create_owned(&label),
                failed: families.failed.get_or_create_owned(&label),
                dropped: families.dropped.get_or_create_owned(&label),
                queued: families.queued.get_or_create_owned(&label),
            });
            let (tx, rx) = mpsc::channel(settings.queue);
            tokio::spawn(sender::run(client.clone(), settings.clone(), rx, stats.clone()));
            endpoints.push(Endpoint {
                filter: settings.filter,
                name: ep.name.clone(),
                queue: tx,
                stats,
                last_drop_log: AtomicU64::new(0),
                epoch: Instant::now(),
            });
        }
        if let Some(m) = metrics {
            families.register(m);
        }
        Ok(Notifier {
            endpoints,
            source,
            url_scheme,
        })
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    pub fn url_scheme(&self) -> &'static str {
        self.url_scheme
    }

    /// Whether any endpoint wants events of this action for this repository:
    /// the HTTP layer gathers an event's request details only then.
    pub fn wants(&self, action: Action, repository: &str) -> bool {
        self.endpoints.iter().any(|e| e.filter.wants(action, repository))
    }

    /// Queues `event` for every endpoint that wants it; never waits.
    pub fn notify(&self, event: Event) {
        let event = Arc::new(event);
        for ep in &self.endpoints {
            if !ep.filter.wants(event.action, &event.target.repository) {
                continue;
            }
            match ep.queue.try_send(event.clone()) {
                Ok(()) => {
                    ep.stats.queued.inc();
                }
                Err(_) => {
                    ep.stats.dropped.inc();
                    ep.log_drop();
                }
            }
        }
    }

    /// Events dropped so far for the endpoint named `name` (for tests).
    pub fn dropped(&self, name: &str) -> Option<u64> {
        self.endpoints
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.stats.dropped.get())
    }
}

impl Endpoint {
    fn log_drop(&self) {
        const EVERY_MS: u64 = 10_000;
        let now = self.epoch.elapsed().as_millis() as u64 + EVERY_MS;
        let last = self.last_drop_log.load(Relaxed);
        if now - last >= EVERY_MS && self.last_drop_log.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
            tracing::warn!(
                endpoint = %self.name,
                dropped_total = self.stats.dropped.get(),
                "notification queue full (is the endpoint down?): dropping events"
            );
        }
    }
}

type Labels = [(&'static str, String); 1];

#[derive(Default)]
struct Families {
    sent: Family<Labels, Counter>,
    failed: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    queued: Family<Labels, Gauge>,
}

impl Families {
    fn register(self, m: &Metrics) {
        m.register(
            "notifications_sent",
            "Notification requests an endpoint accepted (2xx), by endpoint",
            self.sent,
        );
        m.register(
            "notifications_failed",
            "Notification requests given up after their retries, by endpoint",
            self.failed,
        );
        m.register(
            "notifications_dropped",
            "Events dropped because the endpoint's queue was full, by endpoint",
            self.dropped,
        );
        m.register(
            "notifications_queued",
            "Events waiting to be sent, by endpoint",
            self.queued,
        );
    }
}

/// Parses `500ms`, `5s`, `2m` or a number of seconds.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}
