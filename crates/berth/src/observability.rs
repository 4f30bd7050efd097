//! Wiring of what operators watch: the metrics (`--metrics`,
//! `--metrics-listen`), the self image's and sources' state in them, and the
//! webhook notifications of the config file's `[notifications]`.

use crate::cli::{ServeArgs, Switch};
use berth_metrics::Metrics;
use berth_notify::{Notifier, Source};
use berth_registry::sources::SelfImageSource;
use berth_registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;

/// The metrics of this server, unless `--metrics off`.
pub fn metrics(args: &ServeArgs) -> Option<Arc<Metrics>> {
    (args.metrics == Switch::On).then(|| {
        let m = Metrics::new();
        m.set_build_info(env!("CARGO_PKG_VERSION"));
        m
    })
}

/// Open upload sessions are read when scraped (the registry keeps the table anyway).
pub fn watch_registry(metrics: &Metrics, registry: &Arc<Registry>) {
    let registry = Arc::downgrade(registry);
    let uploads = metrics.registry_domain.uploads_open.clone();
    metrics.on_scrape(move || {
        if let Some(r) = registry.upgrade() {
            uploads.set(r.open_uploads() as i64);
        }
    });
}

/// Follows the self image from packaging to ready (or failed) in the metrics.
pub fn watch_self_image(metrics: &Arc<Metrics>, image: &Arc<SelfImageSource>) {
    let (metrics, image) = (metrics.clone(), image.clone());
    metrics.registry_domain.set_self_image("packaging");
    tokio::spawn(async move {
        let state = if image.ready().await.is_ok() { "ready" } else { "failed" };
        metrics.registry_domain.set_self_image(state);
    });
}

/// Starts the notifier when the config file names endpoints.
pub fn notifier(
    args: &ServeArgs,
    metrics: Option<&Metrics>,
    addr: SocketAddr,
) -> anyhow::Result<Option<Arc<Notifier>>> {
    let Some(config) = args.sections.notifications.as_ref().filter(|c| !c.endpoints.is_empty()) else {
        return Ok(None);
    };
    let source = Source {
        addr: addr.to_string(),
        instance_id: uuid::Uuid::new_v4().to_string(),
    };
    let scheme = if args.tls_cert.is_some() { "https" } else { "http" };
    let notifier = Notifier::start(config, metrics, source, scheme).map_err(anyhow::Error::msg)?;
    for ep in &config.endpoints {
        tracing::info!(endpoint = %ep.name, "sending notifications");
    }
    Ok(Some(Arc::new(notifier)))
}

/// Checks the `[notifications]` section (for `--check-config`).
pub fn validate(args: &ServeArgs) -> anyhow::Result<()> {
    if let Some(config) = &args.sections.notifications {
        config.validate().map_err(anyhow::Error::msg)?;
    }
    if args.metrics == Switch::Off && args.metrics_listen.is_some() {
        anyhow::bail!("--metrics-listen serves the metrics, which --metrics off turns off");
    }
    Ok(())
}
