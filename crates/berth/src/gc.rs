//! `berth gc`: one garbage collection pass on a data directory no server is
//! serving (a running server collects itself, and takes a pass over HTTP),
//! or on an S3 bucket, where it takes part in the protocol of the servers
//! sharing it (see `berth_registry::gc::shared`) like one more replica.

use crate::cli::{GcArgs, UsageArgs};
use crate::config::{ConfigFile, Sections};
use crate::progress::Progress;
use crate::storage::{CommandStorage, DirUse};
use anyhow::Context;
use berth_registry::{GcOptions, GcReport, GcStep, ProgressHook, Registry, RegistryConfig, Rules, UsageReport};
use berth_storage::{DataDirLock, LockError};
use std::path::Path;
use std::sync::Arc;

/// The rules of a config file's sections (none without a file).
fn rules_from(config: Option<&Path>) -> anyhow::Result<Rules> {
    match config {
        Some(path) => crate::rules::compile(&ConfigFile::load(path)?.sections::<Sections>()?),
        None => Ok(Rules::default()),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The data directory's lock, for a pass: the collector's safety rests on
/// seeing every push (the reference gate is in memory), so with a server
/// running the pass must run inside it.
fn lock_for_pass(data: &Path) -> anyhow::Result<DataDirLock> {
    DataDirLock::acquire(data).map_err(|e| match e {
        LockError::HeldBy { pid, .. } => anyhow::anyhow!(
            "a berth (pid {pid}) is serving {}: it collects garbage itself (--gc-interval); \
             to run a pass now: curl -X POST http://<host>/berth/v1/gc (GET for a dry run)",
            data.display()
        ),
        e => e.into(),
    })
}

pub fn run(args: GcArgs) -> anyhow::Result<()> {
    let rules = rules_from(args.config.as_deref())?;
    let progress = Arc::new(Progress::new());
    let bar = progress.clone();
    let hook = ProgressHook(Arc::new(move |step| match step {
        GcStep::Marking { done, total } => bar.count("marking repositories", done as u64, total as u64),
        GcStep::Sweeping { done, total } => bar.count("sweeping blob store", done as u64, total as u64),
    }));
    let report = runtime()?.block_on(async {
        let opened = CommandStorage::open(&args.data, args.storage.as_deref(), &args.s3, DirUse::Existing).await?;
        let _lock = match opened.fs() {
            Some(_) => Some(lock_for_pass(&args.data)?),
            None => None,
        };
        let config = RegistryConfig {
            rules,
            exclusive_storage: opened.is_exclusive(),
            gc_shared: args.gc_shared.timing(),
            ..RegistryConfig::default()
        };
        let registry = Registry::new(opened.backend(), config);
        anyhow::Ok(
            registry
                .collect_garbage(&GcOptions {
                    grace: args.grace,
                    delete_untagged_after: args.delete_untagged_after,
                    dry_run: args.dry_run,
                    progress: Some(hook),
                    // No server: nothing to leave the machine to.
                    yield_to_requests: false,
                })
                .await?,
        )
    })?;
    log_report(&report);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", describe(&report));
        for tag in &report.tags_deleted {
            let verb = if report.dry_run { "would remove" } else { "removed" };
            println!("  {verb} tag {tag} (retention)");
        }
    }
    Ok(())
}

/// `berth usage`: what each quota and repository holds. Only reads, so it
/// may run beside a server (whose answer at /berth/v1/usage is the same).
pub fn usage(args: UsageArgs) -> anyhow::Result<()> {
    let rules = rules_from(args.config.as_deref())?;
    let report = runtime()?.block_on(async {
        let opened = CommandStorage::open(&args.data, args.storage.as_deref(), &args.s3, DirUse::Existing).await?;
        let config = RegistryConfig {
            rules,
            exclusive_storage: opened.is_exclusive(),
            ..RegistryConfig::default()
        };
        anyhow::Ok(Registry::new(opened.backend(), config).usage().await?)
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", describe_usage(&report));
    }
    Ok(())
}

/// The usage report as a person reads it: quotas first, then repositories.
pub fn describe_usage(r: &UsageReport) -> String {
    let mut out = String::new();
    for q in &r.quotas {
        let percent = if q.limit == 0 {
            100.0
        } else {
            q.used as f64 * 100.0 / q.limit as f64
        };
        out.push_str(&format!(
            "quota {}: {} of {} ({percent:.0}%)\n",
            q.repositories,
            human_bytes(q.used),
            human_bytes(q.limit)
        ));
    }
    for repo in &r.repositories {
        out.push_str(&format!("{}  {}\n", human_bytes(repo.bytes), repo.repository));
    }
    out
}

/// One line a person reads: what was (or would be) freed.
pub fn describe(r: &GcReport) -> String {
    let verb = if r.dry_run { "would free" } else { "freed" };
    format!(
        "{verb} {} in {} blobs ({} layer links, {} untagged manifests, {} tags by retention, {} stale uploads); \
         {} blobs in use in {} repositories; {} spared because a push was using them; {} ms",
        human_bytes(r.bytes_freed),
        r.blobs_deleted,
        r.layer_links_deleted,
        r.manifests_deleted,
        r.tags_deleted.len(),
        r.uploads_purged,
        r.blobs_marked,
        r.repositories,
        r.spared_in_use,
        r.duration_ms
    )
}

/// The summary line of a pass in the server's log.
pub fn log_report(r: &GcReport) {
    tracing::info!(
        dry_run = r.dry_run,
        blobs_deleted = r.blobs_deleted,
        bytes_freed = r.bytes_freed,
        layer_links_deleted = r.layer_links_deleted,
        manifests_deleted = r.manifests_deleted,
        tags_deleted = r.tags_deleted.len(),
        uploads_purged = r.uploads_purged,
        blobs_marked = r.blobs_marked,
        spared_in_use = r.spared_in_use,
        duration_ms = r.duration_ms,
        "garbage collection pass"
    );
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
