//! `berth migrate`: copies a whole registry from one storage to another (a
//! data directory or an S3 bucket, either way), through the layout the
//! registry domain walks (`berth_registry::inventory`), never a path of its own.
//!
//! Opening: the source is only read, and a data directory source is opened
//! without its serve lock, so a running berth keeps serving it (it writes
//! through atomic renames, so every object read is whole). A data directory
//! destination is locked as `berth serve` locks it: a berth serving it would
//! keep answering from its read cache, blind to what the copy writes, and a
//! server started there mid-copy would serve half a registry.
//!
//! The copy itself (order, verification, skipping) is in [`copy`].

mod copy;

use crate::cli::MigrateArgs;
use crate::progress;
use anyhow::{bail, Context};
use berth_storage::{Backend, DataDirLock, FsBackend, LockError, S3Backend, S3Config};
use std::path::PathBuf;
use std::sync::Arc;

pub use copy::Tally;

/// One side of a migration, as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Dir(PathBuf),
    S3(String),
}

impl Location {
    fn parse(value: &str) -> Location {
        if S3Config::is_s3_url(value) {
            Location::S3(value.to_owned())
        } else {
            Location::Dir(PathBuf::from(value))
        }
    }

    /// Whether both name the same storage (a copy onto itself).
    fn same_as(&self, other: &Location) -> bool {
        match (self, other) {
            (Location::Dir(a), Location::Dir(b)) => match (a.canonicalize(), b.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            },
            (Location::S3(a), Location::S3(b)) => a.trim_end_matches('/') == b.trim_end_matches('/'),
            _ => false,
        }
    }
}

/// An opened side, with what must be held while the copy runs.
struct Opened {
    backend: Arc<dyn Backend>,
    _lock: Option<DataDirLock>,
}

pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    progress::init_cli_logging();
    let from = Location::parse(&args.from);
    let to = Location::parse(&args.to);
    if from.same_as(&to) {
        bail!("--from and --to name the same storage ({})", args.from);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let source = open_source(&from, &args).await.context("opening --from")?;
        let destination = open_destination(&to, &args).await.context("opening --to")?;
        let copier = copy::Copier::new(source.backend.clone(), destination.backend.clone(), args.jobs.into());
        let result = copier.run().await;
        let tally = copier.tally();
        println!("{}", tally.summary());
        match result {
            Ok(()) => Ok(()),
            Err(failures) => {
                for f in &failures {
                    eprintln!("failed: {f:#}");
                }
                bail!(
                    "{} item(s) could not be migrated (named above); no tag points at anything missing; \
                     run the same command again to finish",
                    failures.len()
                )
            }
        }
    })
}

/// The source, read-only: no lock, nothing created.
async fn open_source(location: &Location, args: &MigrateArgs) -> anyhow::Result<Opened> {
    match location {
        Location::Dir(dir) => {
            if !dir.join(berth_storage::layout::ROOT).is_dir() {
                bail!(
                    "{}: not a data directory (no {} in it)",
                    dir.display(),
                    berth_storage::layout::ROOT
                );
            }
            Ok(Opened {
                backend: Arc::new(FsBackend::new(dir)),
                _lock: None,
            })
        }
        Location::S3(url) => Ok(Opened {
            backend: Arc::new(connect_s3(url, args).await?),
            _lock: None,
        }),
    }
}

/// The destination: a data directory is created and locked for the copy.
async fn open_destination(location: &Location, args: &MigrateArgs) -> anyhow::Result<Opened> {
    match location {
        Location::Dir(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating the data directory {}", dir.display()))?;
            let lock = DataDirLock::acquire(dir).map_err(|e| match e {
                LockError::HeldBy { pid, dir } => anyhow::anyhow!(
                    "a berth (pid {pid}) is serving {}: stop it before migrating into it (it would not see \
                     what the copy writes), then start it again afterwards",
                    dir.display()
                ),
                e => e.into(),
            })?;
            Ok(Opened {
                backend: Arc::new(FsBackend::new(dir)),
                _lock: Some(lock),
            })
        }
        Location::S3(url) => Ok(Opened {
            backend: Arc::new(connect_s3(url, args).await?),
            _lock: None,
        }),
    }
}

async fn connect_s3(url: &str, args: &MigrateArgs) -> anyhow::Result<S3Backend> {
    crate::storage::connect_s3(url, &args.s3, "storage").await
}
