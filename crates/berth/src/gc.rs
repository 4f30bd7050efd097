//! `berth gc`: one garbage collection pass on a data directory no server is
//! serving (a running server collects itself, and takes a pass over HTTP).

use crate::cli::GcArgs;
use anyhow::Context;
use berth_registry::{GcOptions, GcReport, Registry, RegistryConfig};
use berth_storage::{DataDirLock, FsBackend, LockError};
use std::sync::Arc;

pub fn run(args: GcArgs) -> anyhow::Result<()> {
    if !args.data.is_dir() {
        anyhow::bail!("{} is not a data directory", args.data.display());
    }
    // The collector's safety rests on seeing every push (the reference gate
    // is in memory): with a server running, the pass must run inside it.
    let _lock = DataDirLock::acquire(&args.data).map_err(|e| match e {
        LockError::HeldBy { pid, .. } => anyhow::anyhow!(
            "a berth (pid {pid}) is serving {}: it collects garbage itself (--gc-interval); \
             to run a pass now: curl -X POST http://<host>/berth/v1/gc (GET for a dry run)",
            args.data.display()
        ),
        e => e.into(),
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(async {
        let registry = Registry::new(Arc::new(FsBackend::new(&args.data)), RegistryConfig::default());
        registry
            .collect_garbage(&GcOptions {
                grace: args.grace,
                delete_untagged_after: args.delete_untagged_after,
                dry_run: args.dry_run,
            })
            .await
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", describe(&report));
    }
    Ok(())
}

/// One line a person reads: what was (or would be) freed.
pub fn describe(r: &GcReport) -> String {
    let verb = if r.dry_run { "would free" } else { "freed" };
    format!(
        "{verb} {} in {} blobs ({} layer links, {} untagged manifests, {} stale uploads); \
         {} blobs in use in {} repositories; {} spared because a push was using them; {} ms",
        human_bytes(r.bytes_freed),
        r.blobs_deleted,
        r.layer_links_deleted,
        r.manifests_deleted,
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
