//! Which storage `berth serve` uses: the data directory (the default) or an
//! S3 bucket (`--storage s3://BUCKET[/PREFIX]`), and what berth refuses on S3
//! because it would only be right with one process writing the storage.

use crate::cli::{S3Args, ServeArgs};
use crate::config::Secret;
use anyhow::Context;
use berth_storage::{Backend, Cached, DataDirLock, FsBackend, S3Backend, S3Config};
use std::sync::Arc;
use std::time::Duration;

/// S3 credentials handed over by a program that embeds berth (the tests,
/// which must not change their own process's environment). The command
/// line and the config file never set them: berth reads AWS_ACCESS_KEY_ID
/// and AWS_SECRET_ACCESS_KEY.
#[derive(Debug, Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

/// The S3 settings of `args`, when `--storage` names a bucket. Anything
/// else in `--storage` is an error (a directory is `--data`).
pub fn s3_config(args: &ServeArgs) -> anyhow::Result<Option<S3Config>> {
    let Some(storage) = &args.storage else {
        if args.redirect {
            // A redirect needs a URL the client can fetch from the store
            // itself; a data directory has none (berth streams its blobs).
            anyhow::bail!(
                "--redirect needs S3 storage (--storage s3://BUCKET[/PREFIX]): blobs in a data \
                 directory have no URL of their own to redirect to"
            );
        }
        return Ok(None);
    };
    // SigV4 presigned URLs are valid for at most 7 days.
    let expiry = args.redirect_expiry;
    if args.redirect && !(Duration::from_secs(1)..=Duration::from_secs(7 * 24 * 3600)).contains(&expiry) {
        anyhow::bail!("--redirect-expiry {expiry:?}: expected 1s to 7d (S3's limit for presigned URLs)");
    }
    let config = s3_config_for(storage, &args.s3, "--storage")?;
    refuse_single_writer_features(args)?;
    Ok(Some(config))
}

/// The S3 settings for `url` (`s3://BUCKET[/PREFIX]`, given as option
/// `what`) and the S3 options, which every command reaching a bucket shares.
pub fn s3_config_for(url: &str, s3: &S3Args, what: &str) -> anyhow::Result<S3Config> {
    if !S3Config::is_s3_url(url) {
        anyhow::bail!("{what} {url:?}: expected s3://BUCKET[/PREFIX] (a data directory is --data)");
    }
    let mut config = S3Config::from_url(url).with_context(|| format!("{what} {url:?}"))?;
    if let Some(endpoint) = &s3.s3_endpoint {
        // A typo here would otherwise surface as an obscure connection error.
        let valid = ["http://", "https://"]
            .iter()
            .any(|s| endpoint.strip_prefix(s).is_some_and(|rest| !rest.is_empty()));
        if !valid {
            anyhow::bail!("--s3-endpoint {endpoint:?}: expected http://HOST[:PORT] or https://HOST[:PORT]");
        }
    }
    config.endpoint = s3.s3_endpoint.clone();
    config.region = s3.s3_region.clone();
    config.addressing = s3.s3_addressing_style.into();
    // Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, read by the S3
    // client from the environment, unless a program embedding berth gave them.
    if let Some(c) = &s3.s3_credentials {
        config.access_key_id = Some(c.access_key_id.clone());
        config.secret_access_key = Some(c.secret_access_key.expose().to_owned());
    }
    Ok(config)
}

/// Connects to the bucket at `url` (see [`s3_config_for`]), failing if it is
/// missing or unreachable, or no credentials are set.
pub async fn connect_s3(url: &str, s3: &S3Args, what: &str) -> anyhow::Result<S3Backend> {
    let config = s3_config_for(url, s3, what)?;
    require_credentials(&config)?;
    Ok(S3Backend::connect(config).await?)
}

/// Several berth processes may serve one bucket, and nothing tells a
/// process that it is alone there. What is only correct with a single
/// writer (its state is in one process's memory, or in the local data
/// directory) is refused on S3 rather than quietly wrong.
fn refuse_single_writer_features(args: &ServeArgs) -> anyhow::Result<()> {
    let on_s3 = "on S3 storage, where several berth processes may serve the bucket";
    if args.upstream_cache_size.is_some() {
        anyhow::bail!(
            "--upstream-cache-size is not supported {on_s3}: eviction runs under a lock in one \
             process's memory"
        );
    }
    if args.token && args.token_key.is_none() {
        anyhow::bail!(
            "--token {on_s3} needs --token-key: every replica must sign with the same key, and the key \
             berth would make is kept in the local data directory"
        );
    }
    Ok(())
}

/// Without credentials the S3 client would ask the EC2 instance metadata
/// service (169.254.169.254) for some: berth takes them from the AWS tools'
/// variables (or a web identity token or container credentials, which the
/// client reads from theirs), and says so rather than reach for the network.
pub(crate) fn require_credentials(config: &S3Config) -> anyhow::Result<()> {
    let from_env = [
        "AWS_ACCESS_KEY_ID",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    if config.access_key_id.is_none() && !from_env {
        anyhow::bail!(
            "S3 storage {}: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            config.url()
        );
    }
    Ok(())
}

/// How often a server looks for writes of `berth import` into its data
/// directory: the longest its read cache may answer as before such a write.
pub const EXTERNAL_WRITES_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Puts the read cache in front of `backend` when this process is its only
/// writer (see `berth_storage::cached`), and keeps it honest about `berth
/// import` writing into the same directory. On shared storage (S3, other
/// replicas write) reads go to the store every time.
pub async fn cache_reads(backend: Arc<dyn Backend>, exclusive: bool) -> anyhow::Result<Arc<dyn Backend>> {
    if !exclusive {
        return Ok(backend);
    }
    let cached = Arc::new(Cached::new(backend));
    cached.revalidate().await.context("reading the data directory")?;
    let weak = Arc::downgrade(&cached);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EXTERNAL_WRITES_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(cached) = weak.upgrade() else { return };
            if let Err(e) = cached.revalidate().await {
                tracing::warn!(error = %e, "could not check the data directory for writes of other processes");
            }
        }
    });
    Ok(cached)
}

/// The opened storage, with what it needs held while the server runs.
pub enum Storage {
    Fs { backend: FsBackend, _lock: DataDirLock },
    S3(S3Backend),
}

impl Storage {
    /// Opens the data directory (creating it, and taking its lock) or
    /// connects to the bucket (failing if it is missing or unreachable).
    pub async fn open(args: &ServeArgs) -> anyhow::Result<Storage> {
        if let Some(config) = s3_config(args)? {
            require_credentials(&config)?;
            return Ok(Storage::S3(S3Backend::connect(config).await?));
        }
        std::fs::create_dir_all(&args.data)
            .with_context(|| format!("creating the data directory {}", args.data.display()))?;
        // Before anything is written: a second server on the directory is refused.
        let lock = DataDirLock::acquire(&args.data)?;
        Ok(Storage::Fs {
            backend: FsBackend::with_sync(&args.data, args.sync.into()),
            _lock: lock,
        })
    }

    /// The filesystem backend, for its housekeeping (trash, temporary files).
    pub fn fs(&self) -> Option<&FsBackend> {
        match self {
            Storage::Fs { backend, .. } => Some(backend),
            Storage::S3(_) => None,
        }
    }

    /// Whether this process is the only writer of the storage: the data
    /// directory's lock makes it so; a bucket may have other replicas.
    pub fn is_exclusive(&self) -> bool {
        matches!(self, Storage::Fs { .. })
    }

    pub fn backend(&self) -> Arc<dyn berth_storage::Backend> {
        match self {
            Storage::Fs { backend, .. } => Arc::new(backend.clone()),
            Storage::S3(backend) => Arc::new(backend.clone()),
        }
    }

    /// The storage line of the startup message (no credentials).
    pub fn describe(&self, args: &ServeArgs) -> String {
        match self {
            Storage::Fs { .. } => {
                let data = std::path::absolute(&args.data).unwrap_or_else(|_| args.data.clone());
                let sync = match args.sync {
                    crate::cli::SyncArg::Grouped => "grouped syncs",
                    crate::cli::SyncArg::PerFile => "per-file syncs",
                };
                format!("filesystem {} ({sync})", data.display())
            }
            Storage::S3(b) => {
                let endpoint = b
                    .config()
                    .endpoint
                    .clone()
                    .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
                format!("S3 {} at {}", b.config().url(), endpoint.as_deref().unwrap_or("AWS S3"))
            }
        }
    }
}

/// What a command other than `serve` needs of its data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirUse {
    /// It must exist (gc, usage, export).
    Existing,
    /// Created if missing (import).
    Create,
}

/// The storage a command (gc, usage, import, export) works on: `--storage`
/// (a bucket, which other processes may share) or the data directory.
pub struct CommandStorage {
    backend: Arc<dyn Backend>,
    fs: Option<FsBackend>,
}

impl CommandStorage {
    pub async fn open(
        data: &std::path::Path,
        storage: Option<&str>,
        s3: &S3Args,
        dir: DirUse,
    ) -> anyhow::Result<CommandStorage> {
        if let Some(url) = storage {
            return Ok(CommandStorage {
                backend: Arc::new(connect_s3(url, s3, "--storage").await?),
                fs: None,
            });
        }
        match dir {
            DirUse::Create => std::fs::create_dir_all(data)
                .with_context(|| format!("creating the data directory {}", data.display()))?,
            DirUse::Existing if !data.is_dir() => anyhow::bail!("{} is not a data directory", data.display()),
            DirUse::Existing => {}
        }
        let fs = FsBackend::new(data);
        Ok(CommandStorage {
            backend: Arc::new(fs.clone()),
            fs: Some(fs),
        })
    }

    pub fn backend(&self) -> Arc<dyn Backend> {
        self.backend.clone()
    }

    /// The data directory's backend; `None` on a bucket.
    pub fn fs(&self) -> Option<&FsBackend> {
        self.fs.as_ref()
    }

    /// A data directory is written by one server at a time (its lock); a
    /// bucket may be shared with other processes.
    pub fn is_exclusive(&self) -> bool {
        self.fs.is_some()
    }
}
