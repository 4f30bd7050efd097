//! `berth serve`: wires storage, registry and HTTP together and runs them
//! until SIGINT or SIGTERM, then lets in-flight requests finish.

use crate::cli::{LogFormat, ServeArgs};
use anyhow::Context;
use berth_registry::{Registry, RegistryConfig};
use berth_storage::FsBackend;
use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// Runs `berth serve` to completion: logging, runtime, listener, signals.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format, &args.log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let server = start(listener, &args).await?;
        server.run(shutdown_signal()).await
    })
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter).with_context(|| format!("invalid log filter {filter:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

/// A configured server, bound to its listener and ready to run.
pub struct Server {
    listener: TcpListener,
    registry: Arc<Registry>,
    addr: SocketAddr,
    purge_interval: Duration,
}

/// Builds the registry described by `args` on an already bound listener
/// (tests bind port 0 and keep the listener, so there is no race for the port).
pub async fn start(listener: TcpListener, args: &ServeArgs) -> anyhow::Result<Server> {
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating the data directory {}", args.data.display()))?;
    let backend = Arc::new(FsBackend::new(&args.data));
    let config = RegistryConfig {
        upload_max_age: Duration::from_secs(args.upload_max_age_secs),
    };
    let registry = Arc::new(Registry::new(backend, config));
    let addr = listener.local_addr()?;
    Ok(Server {
        listener,
        registry,
        addr,
        purge_interval: Duration::from_secs(args.upload_purge_interval_secs.max(1)),
    })
}

impl Server {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        tracing::info!(addr = %self.addr, "berth is serving");
        let purge = spawn_upload_purge(self.registry.clone(), self.purge_interval);
        let result = berth_http::serve(self.listener, self.registry, shutdown).await;
        purge.abort();
        tracing::info!("berth stopped");
        Ok(result?)
    }
}

fn spawn_upload_purge(registry: Arc<Registry>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match registry.purge_stale_uploads().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed stale uploads"),
                Err(e) => tracing::warn!(error = %e, "purging stale uploads failed"),
            }
        }
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
