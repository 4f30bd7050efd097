//! Metrics of the registry domain and the server around it: garbage
//! collection passes, open upload sessions, the self image and the
//! read-only sources.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

type Labels = [(&'static str, &'static str); 1];

/// States of the self image, one series each (the current one is 1).
pub const SELF_IMAGE_STATES: [&str; 4] = ["disabled", "packaging", "ready", "failed"];

pub struct DomainMetrics {
    /// [ok, failed]
    gc_passes: [Counter; 2],
    gc_bytes_freed: Counter,
    gc_blobs_deleted: Counter,
    gc_manifests_deleted: Counter,
    /// Upload sessions open in this process (set before each scrape).
    pub uploads_open: Gauge,
    self_image: [Gauge; 4],
    /// Read-only sources being served, and those that could not be opened.
    pub sources_serving: Gauge,
    pub sources_failed: Gauge,
    /// Blobs of served sources that do not match their digests (not served).
    pub source_blobs_damaged: Gauge,
}

impl DomainMetrics {
    pub(crate) fn new(registry: &mut Registry) -> DomainMetrics {
        let passes = Family::<Labels, Counter>::default();
        let gc_passes = [
            passes.get_or_create_owned(&[("result", "ok")]),
            passes.get_or_create_owned(&[("result", "failed")]),
        ];
        let self_f = Family::<Labels, Gauge>::default();
        let self_image = SELF_IMAGE_STATES.map(|s| self_f.get_or_create_owned(&[("state", s)]));
        let m = DomainMetrics {
            gc_passes,
            gc_bytes_freed: Counter::default(),
            gc_blobs_deleted: Counter::default(),
            gc_manifests_deleted: Counter::default(),
            uploads_open: Gauge::default(),
            self_image,
            sources_serving: Gauge::default(),
            sources_failed: Gauge::default(),
            source_blobs_damaged: Gauge::default(),
        };
        registry.register(
            "gc_passes",
            "Garbage collection passes that deleted (dry runs are not counted), by result",
            passes,
        );
        registry.register_with_unit(
            "gc_freed",
            "Bytes of blobs garbage collection deleted",
            Unit::Bytes,
            m.gc_bytes_freed.clone(),
        );
        registry.register(
            "gc_blobs_deleted",
            "Blobs garbage collection deleted",
            m.gc_blobs_deleted.clone(),
        );
        registry.register(
            "gc_manifests_deleted",
            "Untagged manifests garbage collection deleted",
            m.gc_manifests_deleted.clone(),
        );
        registry.register("uploads_open", "Blob upload sessions open", m.uploads_open.clone());
        registry.register(
            "self_image",
            "State of berth's own image: the current state is 1",
            self_f,
        );
        registry.register(
            "sources_serving",
            "Read-only image sources being served",
            m.sources_serving.clone(),
        );
        registry.register(
            "sources_failed",
            "Read-only image sources that could not be opened",
            m.sources_failed.clone(),
        );
        registry.register(
            "source_blobs_damaged",
            "Blobs of read-only sources that do not match their digests (not served)",
            m.source_blobs_damaged.clone(),
        );
        m.set_self_image("disabled");
        m
    }

    /// A garbage collection pass that deleted (not a dry run) ended.
    pub fn gc_pass(&self, ok: bool, bytes_freed: u64, blobs_deleted: u64, manifests_deleted: u64) {
        self.gc_passes[!ok as usize].inc();
        self.gc_bytes_freed.inc_by(bytes_freed);
        self.gc_blobs_deleted.inc_by(blobs_deleted);
        self.gc_manifests_deleted.inc_by(manifests_deleted);
    }

    /// Sets the self image's state, one of [`SELF_IMAGE_STATES`].
    pub fn set_self_image(&self, state: &str) {
        for (s, g) in SELF_IMAGE_STATES.iter().zip(&self.self_image) {
            g.set((*s == state) as i64);
        }
    }
}
