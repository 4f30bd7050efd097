//! `berth serve`: wires storage, registry and HTTP together and runs them
//! until SIGINT or SIGTERM, then lets in-flight requests finish.

use crate::cli::{LogFormat, ServeArgs, Switch};
use anyhow::Context;
use berth_http::auth::Auth;
use berth_http::AppState;
use berth_registry::sources::{ArchiveSource, SelfImageSource};
use berth_registry::{Registry, RegistryConfig};
use berth_spec::RepoName;
use berth_storage::{Backend, FsBackend};
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
    raise_descriptor_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let server = start(listener, &args).await?;
        let server = match args.metrics_listen {
            Some(addr) => server.with_metrics_listener(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listening for metrics on {addr}"))?,
            ),
            None => server,
        };
        if let Some(tls) = server.http.tls.clone() {
            tokio::spawn(reload_on_sighup(tls));
        }
        server.run(shutdown_signal()).await
    })
}

/// Raises the soft limit on open file descriptors to the hard limit: every
/// connection is one, and a download holds a file open too. The default soft
/// limit (1,024 on most systems) is a relic of select(2), which berth does not use.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max {
            return;
        }
        let soft = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            tracing::debug!(from = soft, to = limit.rlim_max, "raised the open file limit");
        } else {
            tracing::warn!(error = %std::io::Error::last_os_error(), limit = soft,
                "could not raise the open file limit");
        }
    }
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
    /// The filesystem backend, for its housekeeping; `None` on S3.
    storage: Option<FsBackend>,
    auth: Option<Arc<Auth>>,
    addr: SocketAddr,
    purge_interval: Duration,
    /// How often to collect garbage; `None` when scheduled passes are off.
    gc_interval: Option<Duration>,
    /// What the startup line says about storage.
    storage_line: String,
    /// Held while the server runs (a data directory's lock).
    _storage: crate::storage::Storage,
    http: berth_http::ServerOptions,
    tls_reload_interval: Duration,
    metrics: Option<Arc<berth_metrics::Metrics>>,
    /// Serves the metrics when they have a listener of their own.
    metrics_listener: Option<TcpListener>,
    self_image: Option<Arc<SelfImageSource>>,
    notifier: Option<Arc<berth_notify::Notifier>>,
}

/// Builds the registry described by `args` on an already bound listener
/// (tests bind port 0 and keep the listener, so there is no race for the port).
pub async fn start(listener: TcpListener, args: &ServeArgs) -> anyhow::Result<Server> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            berth_http::Tls::load(berth_http::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.tls_client_ca.clone(),
            })
            .context("setting up TLS")?,
        ),
        _ => None,
    };
    let storage = crate::storage::Storage::open(args).await?;
    // Deletes interrupted by a crash left their trees in the trash, and
    // interrupted writes their temporary files.
    if let Some(sweeper) = storage.fs().cloned() {
        tokio::spawn(async move {
            match sweeper.sweep_trash().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(trees = n, "removed what interrupted deletes left in the trash"),
                Err(e) => tracing::warn!(error = %e, "could not empty the trash"),
            }
            sweep_temp_files(&sweeper).await;
            // Once per data directory: older berths wrote temporary files
            // beside their targets, and only a walk of everything finds them.
            match sweeper.sweep_scattered_temp_files(TEMP_FILE_MAX_AGE).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    files = n,
                    "removed temporary files an older berth left beside their targets"
                ),
                Err(e) => tracing::warn!(error = %e, "could not sweep temporary files of an older berth"),
            }
        });
    }
    let sweeper_for_run = storage.fs().cloned();
    let metrics = crate::observability::metrics(args);
    let backend: Arc<dyn Backend> = match &metrics {
        Some(m) => Arc::new(berth_storage::Instrumented::new(storage.backend(), m.clone())),
        None => storage.backend(),
    };
    let backend = crate::storage::cache_reads(backend, storage.is_exclusive()).await?;
    let config = RegistryConfig {
        upload_max_age: Duration::from_secs(args.upload_max_age_secs),
        allow_sparse_manifests: args.allow_sparse_manifests,
        deletes: args.deletes == Switch::On,
        gc_grace: args.gc_grace,
        gc_shared: args.gc_shared.timing(),
        delete_untagged_after: args.delete_untagged_after,
        rules: crate::rules::compile(&args.sections)?,
        upstream_cache: args.upstream_cache_size.map(|max_bytes| berth_registry::CacheBound {
            max_bytes,
            protect: args.upstream_cache_protect,
        }),
        exclusive_storage: storage.is_exclusive(),
        blob_redirect: args.redirect.then_some(args.redirect_expiry),
        reference_cache_ttl: args.reference_cache_ttl,
    };
    let mut registry = Registry::new(backend.clone(), config);
    if let Some(m) = &metrics {
        registry.set_metrics(m.clone());
    }
    let mut served_self_image = None;
    if !args.no_self_image {
        let name: RepoName = args
            .self_name
            .parse()
            .with_context(|| format!("--self-name {:?}", args.self_name))?;
        // Packaged in the background: /v2/ answers at once, requests for the self image wait for it.
        let self_image = SelfImageSource::start(name, backend.clone(), vec![crate::sbom::attachment()]);
        registry.add_source(self_image.clone());
        if let Some(m) = &metrics {
            crate::observability::watch_self_image(m, &self_image);
        }
        served_self_image = Some(self_image.clone());
        // Packaging allocates a few MiB (compression, hashing) that an idle
        // server need not keep.
        tokio::spawn(async move {
            let _ = self_image.ready().await;
            crate::memory::trim();
        });
    }
    for source in open_sources(&args.sources, self_name(args), metrics.as_ref()).await? {
        registry.add_source(source);
    }
    for upstream in crate::config::upstream::upstreams(args)? {
        let prefix = upstream.prefix.clone();
        registry
            .add_upstream(upstream)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("upstream {prefix}"))?;
    }
    crate::config::augmentation::define_all(&registry, &args.sections.augmentation).await?;
    let registry = Arc::new(registry);
    if let Some(m) = &metrics {
        crate::observability::watch_registry(m, &registry);
    }
    let auth = crate::auth::build(args)?.map(Arc::new);
    let addr = listener.local_addr()?;
    let notifier = crate::observability::notifier(args, metrics.as_deref(), addr)?;
    Ok(Server {
        listener,
        registry,
        storage: sweeper_for_run,
        auth,
        addr,
        purge_interval: Duration::from_secs(args.upload_purge_interval_secs.max(1)),
        gc_interval: scheduled_gc(args),
        storage_line: storage.describe(args),
        _storage: storage,
        http: berth_http::ServerOptions {
            timeouts: berth_http::Timeouts {
                header: args.header_timeout,
                idle: args.idle_timeout,
                body: args.body_timeout,
            },
            max_connections: args.max_connections,
            tls,
        },
        tls_reload_interval: args.tls_reload_interval,
        metrics,
        metrics_listener: None,
        self_image: served_self_image,
        notifier,
    })
}

/// How often to collect garbage. On storage several replicas serve, each
/// schedules passes and the store's lease lets one run at a time.
fn scheduled_gc(args: &ServeArgs) -> Option<Duration> {
    (!args.gc_interval.is_zero()).then_some(args.gc_interval)
}

/// Checks what `start` would refuse in `args` without starting anything (for
/// `--check-config`); `start` checks the same as it goes.
pub fn validate(args: &ServeArgs) -> anyhow::Result<()> {
    EnvFilter::try_new(&args.log).with_context(|| format!("invalid log filter {:?}", args.log))?;
    if !args.no_self_image {
        args.self_name
            .parse::<RepoName>()
            .with_context(|| format!("--self-name {:?}", args.self_name))?;
    }
    parse_sources(&args.sources, self_name(args))?;
    crate::rules::compile(&args.sections)?;
    crate::config::augmentation::validate(&args.sections.augmentation)?;
    crate::observability::validate(args)?;
    crate::storage::s3_config(args)?;
    if args.data.exists() && !args.data.is_dir() {
        anyhow::bail!("the data directory {} is not a directory", args.data.display());
    }
    if let Some(policy) = &args.sections.auth {
        if args.auth_config.is_some() {
            anyhow::bail!(
                "the access policy is given twice: by --auth-config and by [auth] in the config file; keep one"
            );
        }
        berth_policy::Policy::new(policy).map_err(|e| anyhow::anyhow!("[auth]: {e}"))?;
    }
    Ok(())
}

/// The repository of the self image, when it is served.
fn self_name(args: &ServeArgs) -> Option<&str> {
    (!args.no_self_image).then_some(args.self_name.as_str())
}

/// Parses every `--source PREFIX=PATH`, refusing malformed ones, prefixes
/// that overlap each other or the self image, and paths that cannot be read.
fn parse_sources(specs: &[String], self_name: Option<&str>) -> anyhow::Result<Vec<(RepoName, std::path::PathBuf)>> {
    let mut parsed: Vec<(RepoName, std::path::PathBuf)> = Vec::new();
    for spec in specs {
        let (prefix, path) = spec
            .split_once('=')
            .with_context(|| format!("--source {spec:?}: expected PREFIX=PATH"))?;
        let prefix: RepoName = prefix
            .parse()
            .with_context(|| format!("--source {spec:?}: bad repository prefix"))?;
        // One repository, one source: nested prefixes would hide each other's images.
        let taken = parsed.iter().map(|(p, _)| p.as_str()).chain(self_name);
        for other in taken {
            if let Ok(other_name) = other.parse::<RepoName>() {
                if prefix.is_under(other) || other_name.is_under(prefix.as_str()) {
                    anyhow::bail!(
                        "--source {spec:?}: prefix {prefix} overlaps {other}, which is already served \
                         (choose another prefix, or --self-name / --no-self-image)"
                    );
                }
            }
        }
        let path = std::path::PathBuf::from(path);
        // A typo in a path is the operator's to fix, not something to serve around.
        if let Err(e) = std::fs::metadata(&path).and_then(|m| {
            if m.is_dir() {
                std::fs::read_dir(&path).map(|_| ())
            } else {
                std::fs::File::open(&path).map(|_| ())
            }
        }) {
            anyhow::bail!("--source {spec:?}: cannot read {}: {e}", path.display());
        }
        parsed.push((prefix, path));
    }
    Ok(parsed)
}

/// Opens every `--source PREFIX=PATH`. A malformed argument, or a path that
/// does not exist or cannot be read, is a configuration error that stops
/// berth; an archive that exists but is damaged is reported (naming the file
/// and the problem) and left out, and berth serves everything else.
async fn open_sources(
    specs: &[String],
    self_name: Option<&str>,
    metrics: Option<&Arc<berth_metrics::Metrics>>,
) -> anyhow::Result<Vec<Arc<ArchiveSource>>> {
    let parsed = parse_sources(specs, self_name)?;
    let count = parsed.len();
    let mut opened = Vec::new();
    for (prefix, path) in parsed {
        // Reads tar headers and JSON documents only: quick even for big archives.
        let p = path.clone();
        let pre = prefix.clone();
        let result = tokio::task::spawn_blocking(move || ArchiveSource::open(pre, &p)).await?;
        match result {
            Ok(source) => {
                let set = source.images();
                tracing::info!(prefix = %prefix, path = %path.display(), images = set.named().len(),
                    repositories = set.repositories().len(), blobs = set.blob_digests().len(), "serving source");
                let source = Arc::new(source);
                let verifying = source.clone();
                let damaged = metrics.map(|m| m.registry_domain.source_blobs_damaged.clone());
                // Each blob is hashed before it is first served anyway; hashing
                // them all now reports a damaged archive without waiting for a pull.
                tokio::spawn(async move {
                    let failed = verifying.images().verify_all().await;
                    if let Some(d) = damaged {
                        d.inc_by(failed.len() as i64);
                    }
                    if failed.is_empty() {
                        tracing::info!(path = %path.display(), "source verified: every blob matches its digest");
                    } else {
                        tracing::error!(path = %path.display(), damaged = failed.len(),
                            "source has blobs that do not match their digests; they are not served");
                    }
                });
                opened.push(source);
            }
            Err(e) => tracing::error!(prefix = %prefix, error = %e, "cannot serve source; serving everything else"),
        }
    }
    if let Some(m) = metrics {
        m.registry_domain.sources_serving.set(opened.len() as i64);
        m.registry_domain.sources_failed.set((count - opened.len()) as i64);
    }
    Ok(opened)
}

impl Server {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The metrics, unless turned off.
    pub fn metrics(&self) -> Option<&Arc<berth_metrics::Metrics>> {
        self.metrics.as_ref()
    }

    /// Serves the metrics on `listener` instead of the main listener.
    pub fn with_metrics_listener(mut self, listener: TcpListener) -> Server {
        self.metrics_listener = Some(listener);
        self
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let scheme = if self.http.tls.is_some() { "https" } else { "http" };
        tracing::info!(addr = %self.addr, scheme, storage = %self.storage_line, "berth is serving");
        let purge = spawn_upload_purge(self.registry.clone(), self.storage, self.purge_interval);
        let gc = self.gc_interval.map(|every| spawn_gc(self.registry.clone(), every));
        let index = (!self.registry.config().exclusive_storage).then(|| spawn_catalog_index(self.registry.clone()));
        let cache_bound = self
            .registry
            .config()
            .upstream_cache
            .map(|_| spawn_cache_bound(self.registry.clone()));
        let watch = self
            .http
            .tls
            .clone()
            .map(|tls| tokio::spawn(tls.watch(self.tls_reload_interval)));
        let trim = crate::memory::spawn_trim(MEMORY_TRIM_INTERVAL);
        let htpasswd_watch = self.auth.as_ref().map(|a| a.watch_htpasswd());
        let (metrics_server, metrics_stop) = match (self.metrics_listener, &self.metrics) {
            (Some(listener), Some(m)) => {
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                if let Ok(addr) = listener.local_addr() {
                    tracing::info!(%addr, "serving metrics");
                }
                // Plain HTTP: a metrics listener is a private address for the scraper.
                let options = berth_http::ServerOptions {
                    tls: None,
                    ..self.http.clone()
                };
                let serve = berth_http::serve_metrics(listener, m.clone(), options, async move {
                    let _ = stopped.await;
                });
                (Some(tokio::spawn(serve)), Some(stop))
            }
            _ => (None, None),
        };
        let state = AppState {
            serve_metrics: metrics_server.is_none(),
            metrics: self.metrics,
            self_image: self.self_image,
            notifier: self.notifier,
            auth: self.auth,
            ..AppState::new(self.registry)
        };
        let result = berth_http::serve(self.listener, state, self.http, shutdown).await;
        if let Some(stop) = metrics_stop {
            let _ = stop.send(());
        }
        if let Some(server) = metrics_server {
            let _ = server.await;
        }
        if let Some(w) = htpasswd_watch {
            w.abort();
        }
        purge.abort();
        if let Some(index) = index {
            index.abort();
        }
        if let Some(gc) = gc {
            gc.abort();
        }
        if let Some(c) = cache_bound {
            c.abort();
        }
        trim.abort();
        if let Some(watch) = watch {
            watch.abort();
        }
        tracing::info!("berth stopped");
        Ok(result?)
    }
}

/// How often memory kept for reuse during transfers goes back to the kernel.
const MEMORY_TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Removes stale uploads now and then, and the temporary files of writes
/// interrupted by a crash (a restart soon after one finds them too young to
/// be sure no writer holds them, so the start's sweep may leave them). The
/// first round is one interval after the start: the purge walks every
/// repository, which a restart loop should not repeat at each start.
fn spawn_upload_purge(
    registry: Arc<Registry>,
    storage: Option<FsBackend>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match registry.purge_stale_uploads().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed stale uploads"),
                Err(e) => tracing::warn!(error = %e, "purging stale uploads failed"),
            }
            if let Some(storage) = &storage {
                sweep_temp_files(storage).await;
            }
        }
    })
}

/// On shared storage, completes the catalog's index once, in the background,
/// if no process has yet (a bucket written before the index, or by
/// distribution): until then catalog pages walk the layout.
fn spawn_catalog_index(registry: Arc<Registry>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        match registry.catalog_index_usable().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not read the catalog index's state");
                return;
            }
        }
        match registry.reconcile_catalog_index(None, None).await {
            Ok(repair) => tracing::info!(added = repair.added, "catalog index complete"),
            Err(e) => {
                tracing::warn!(error = %e, "could not complete the catalog index (catalog pages walk the storage)")
            }
        }
    })
}

/// Scheduled garbage collection: the first pass one interval after start
/// (a restart loop must not turn into a collection loop).
fn spawn_gc(registry: Arc<Registry>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match registry.collect_garbage(&registry.gc_options(false)).await {
                Ok(r) => crate::gc::log_report(&r),
                Err(berth_registry::RegistryError::Busy(why)) => {
                    tracing::info!(%why, "garbage collection pass skipped")
                }
                Err(e) => tracing::warn!(error = %e, "garbage collection pass failed"),
            }
        }
    })
}

/// How often the upstream cache is checked against its bound.
const CACHE_BOUND_INTERVAL: Duration = Duration::from_secs(60);

fn spawn_cache_bound(registry: Arc<Registry>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CACHE_BOUND_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = registry.enforce_upstream_cache_bound().await {
                tracing::warn!(error = %e, "enforcing the upstream cache bound failed");
            }
        }
    })
}

/// Temporary files older than this are a crash's leftovers: a live write holds
/// its own for one write and a sync or two.
const TEMP_FILE_MAX_AGE: Duration = Duration::from_secs(15 * 60);

async fn sweep_temp_files(storage: &FsBackend) {
    match storage.sweep_temp_files(TEMP_FILE_MAX_AGE).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(files = n, "removed temporary files of interrupted writes"),
        Err(e) => tracing::warn!(error = %e, "could not sweep temporary files"),
    }
}

/// SIGHUP reads the TLS files again (for rotations that keep the files'
/// modification times, and for operators who want it now).
async fn reload_on_sighup(tls: Arc<berth_http::Tls>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install a SIGHUP handler: TLS files reload only when they change");
        return;
    };
    while hup.recv().await.is_some() {
        let tls = tls.clone();
        let _ = tokio::task::spawn_blocking(move || tls.reload_logged("SIGHUP")).await;
    }
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
