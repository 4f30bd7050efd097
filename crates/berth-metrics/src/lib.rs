//! berth's metrics: one shared [`Metrics`] object that every layer adds its
//! metrics to, rendered in Prometheus text format at `/metrics`.
//!
//! The format, the registry and the metric families come from
//! `prometheus-client` (the Prometheus project's Rust client). What berth adds
//! is what the request path needs: every labelled series is created when the
//! server starts, in families indexed by small enums, so counting a request is
//! an array index and an atomic add, with no label allocation, no hash lookup
//! and no lock; and the families of the request path ([`sharded`]) keep one
//! copy of their cells per CPU, so that cores do not fight over the cache
//! lines of the counters every request adds to. [`Histogram`] is a
//! fixed-bucket histogram of atomics for metrics updated less often (the
//! crate's own takes a lock per observation).
//!
//! Adding metrics (a proxy's hits, an S3 backend's retries): create them with
//! `prometheus-client` types or [`Histogram`], keep handles where they are
//! counted, and [`Metrics::register`] them once; values that are cheaper to
//! read than to keep up to date go in a [`Metrics::on_scrape`] hook.

mod histogram;
pub mod http;
pub mod registry;
pub mod sharded;
pub mod storage;

pub use histogram::Histogram;
pub use prometheus_client;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};
use std::sync::{Arc, Mutex};

/// `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type ScrapeHook = Box<dyn Fn() + Send + Sync>;

/// Every metric of one server.
pub struct Metrics {
    registry: Mutex<Registry>,
    hooks: Mutex<Vec<ScrapeHook>>,
    pub http: http::HttpMetrics,
    pub storage: storage::StorageMetrics,
    pub registry_domain: registry::DomainMetrics,
    /// `berth_build_info{version}`: always 1; the labels are the point.
    build_info: Family<[(&'static str, String); 1], Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A new set of metrics, with berth's own registered under the `berth_` prefix.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("berth");
        let http = http::HttpMetrics::new(&mut registry);
        let storage = storage::StorageMetrics::new(&mut registry);
        let registry_domain = registry::DomainMetrics::new(&mut registry);
        let build_info = Family::<[(&'static str, String); 1], Gauge>::default();
        registry.register(
            "build_info",
            "The running berth: its version as a label, value 1",
            build_info.clone(),
        );
        Arc::new(Metrics {
            registry: Mutex::new(registry),
            hooks: Mutex::new(Vec::new()),
            http,
            storage,
            registry_domain,
            build_info,
        })
    }

    /// Sets `berth_build_info{version=...}` to 1.
    pub fn set_build_info(&self, version: &str) {
        self.build_info.get_or_create(&[("version", version.to_owned())]).set(1);
    }

    /// Registers a metric under `berth_<name>` (a counter's `_total` suffix is
    /// added by the encoder). Call once, when the feature starts; keep a clone
    /// of the metric to update it.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.lock_registry().register(name, help, metric);
    }

    /// Runs `hook` before every scrape: for gauges read from state that is
    /// cheaper to look at than to track (open uploads, a self image's state).
    pub fn on_scrape(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(hook));
    }

    /// Everything, in Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        for hook in self.hooks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            hook();
        }
        let mut out = String::with_capacity(64 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.lock_registry())
            .expect("writing to a String cannot fail");
        out
    }

    fn lock_registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}
