//! Command-line interface. Every option of `serve` can also be set from the
//! environment (`BERTH_*`), which is how containers are usually configured, and
//! in a config file (`--config`, see [`crate::config`]): an option added here
//! works in the file without more code, under its long name.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "berth", version, about = "A container image registry in one static binary", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry (OCI Distribution Spec and Docker Registry HTTP API V2).
    Serve(ServeArgs),
    /// Copy the images of an archive into berth's storage (a data directory or
    /// an S3 bucket), verifying every digest.
    ///
    /// The archive is an OCI image layout directory, an OCI layout tar, or a
    /// `docker save` tarball.
    Import(ImportArgs),
    /// Run one garbage collection pass on a data directory no server holds,
    /// or on an S3 bucket (--storage) beside the replicas serving it, and
    /// report what was (or, with --dry-run, would be) freed.
    ///
    /// A running `berth serve` collects garbage itself (--gc-interval); to run
    /// a pass there now, POST /berth/v1/gc (GET gives a dry-run report).
    Gc(GcArgs),
    /// Report the bytes each repository and each quota holds (each blob
    /// counted once per quota), from a data directory or an S3 bucket.
    ///
    /// A running `berth serve` answers the same at GET /berth/v1/usage.
    Usage(UsageArgs),
    /// Write images from berth's storage to an OCI layout tar archive.
    ///
    /// Every platform of a multi-platform image is included. skopeo, `docker
    /// load`, `berth import` and `berth serve --source` read the archive.
    Export(ExportArgs),
    /// Copy a whole registry from one storage to another (data directory or
    /// S3 bucket), verifying every blob's digest.
    ///
    /// Copies every repository's blobs, manifests, layer links, referrers
    /// and tags (with their history), in that order: tags come last, so an
    /// interrupted migration never leaves a tag pointing at something
    /// missing. Running it again skips what the destination already has (a
    /// blob of the right size, a link with the same content) and finishes
    /// the rest. Blobs that no repository links (garbage a collection pass
    /// would remove) are not copied, nor uploads in progress.
    ///
    /// The source is only read, without its lock: a berth may keep serving
    /// it meanwhile (what it stores during the copy is taken by the next
    /// run). A destination data directory is locked like `berth serve` locks
    /// it, so a running berth there is refused. Both may be `s3://` URLs;
    /// the --s3-* options and the AWS_* variables apply to both.
    Migrate(MigrateArgs),
    /// Print the digest of the image this executable serves of itself.
    ///
    /// To compare with what a registry serves as berth:<version>. The image
    /// depends on nothing but the executable, and a release build of a given
    /// commit gives the same executable anywhere, so a berth built from the
    /// same source serves this digest.
    SelfDigest,
    /// Print this executable's bill of materials (CycloneDX JSON).
    ///
    /// Every crate compiled in, with version, source, checksum and license,
    /// the Rust toolchain and the static C library. The self image carries the
    /// same document as a referrer.
    Sbom,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SyncArg {
    Grouped,
    PerFile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum S3AddressingArg {
    Path,
    Virtual,
}

impl From<S3AddressingArg> for berth_storage::s3::AddressingStyle {
    fn from(a: S3AddressingArg) -> Self {
        match a {
            S3AddressingArg::Path => berth_storage::s3::AddressingStyle::Path,
            S3AddressingArg::Virtual => berth_storage::s3::AddressingStyle::Virtual,
        }
    }
}

/// How berth reaches an S3-compatible store: the same options for `serve`,
/// `gc`, `usage` and `migrate`. Credentials come from the AWS tools'
/// variables AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and
/// AWS_SESSION_TOKEN), never from a flag or the config file.
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// The S3 endpoint, e.g. `http://127.0.0.1:7480` for a local Ceph RGW
    /// (default: AWS S3 in the region).
    #[arg(long, env = "AWS_ENDPOINT_URL", value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// The S3 region (Ceph RGW and SeaweedFS accept any; default us-east-1).
    #[arg(long, env = "AWS_REGION")]
    pub s3_region: Option<String>,

    /// How S3 requests name the bucket: `path` (http://host/bucket/key, what
    /// Ceph RGW and SeaweedFS need without DNS set-up) or `virtual`
    /// (http://bucket.host/key).
    #[arg(long, env = "BERTH_S3_ADDRESSING_STYLE", value_enum, default_value_t = S3AddressingArg::Path)]
    pub s3_addressing_style: S3AddressingArg,

    /// S3 credentials from a program embedding berth (its tests); never set
    /// by a flag or the config file (see [`crate::storage::S3Credentials`]).
    #[arg(skip)]
    pub s3_credentials: Option<crate::storage::S3Credentials>,
}

/// The durations of the garbage collection protocol between the processes
/// sharing an S3 bucket: every server and `berth gc` on the bucket must use
/// the same ones.
#[derive(Debug, Clone, Copy, Args)]
pub struct GcSharedArgs {
    /// On S3, where replicas share the bucket: how long a push may take from
    /// pinning the blobs it references (in the bucket) to writing its
    /// references; slower, it fails (503) and the client retries. A collector
    /// spares a blob pinned within twice this, or the grace period if longer.
    /// Give every replica the same value.
    #[arg(long, env = "BERTH_GC_PIN_VALIDITY", default_value = "10m", value_parser = parse_span)]
    pub gc_pin_validity: Duration,

    /// On S3: the collector's lease in the bucket (one pass at a time across
    /// replicas) is taken over when its holder has not renewed it for this
    /// long; a claim on a blob or tag a collector left behind (it died) is
    /// removed by a pusher after as long. Give every replica the same value.
    #[arg(long, env = "BERTH_GC_LEASE_TIME", default_value = "5m", value_parser = parse_span)]
    pub gc_lease_time: Duration,
}

impl GcSharedArgs {
    pub fn timing(&self) -> berth_registry::SharedTiming {
        berth_registry::SharedTiming::new(self.gc_pin_validity, self.gc_lease_time)
    }
}

impl From<SyncArg> for berth_storage::SyncMode {
    fn from(arg: SyncArg) -> Self {
        match arg {
            SyncArg::Grouped => berth_storage::SyncMode::Grouped,
            SyncArg::PerFile => berth_storage::SyncMode::PerFile,
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on (IPv4 or [IPv6]).
    #[arg(long, env = "BERTH_LISTEN", default_value = "0.0.0.0:5000")]
    pub listen: SocketAddr,

    /// Data directory. Uses the layout of CNCF distribution's filesystem
    /// driver, so an existing registry:2 directory can be served as it is.
    #[arg(long, env = "BERTH_DATA", default_value = "./data")]
    pub data: PathBuf,

    /// Object storage instead of the data directory: `s3://BUCKET[/PREFIX]`,
    /// any S3-compatible store (Ceph RGW, SeaweedFS, AWS S3, MinIO), in the
    /// same layout below PREFIX. Credentials come from the AWS tools'
    /// variables AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and
    /// AWS_SESSION_TOKEN), never from a flag or the config file.
    #[arg(long, env = "BERTH_STORAGE", value_name = "s3://BUCKET[/PREFIX]")]
    pub storage: Option<String>,

    #[command(flatten)]
    pub s3: S3Args,

    /// Answer blob GETs with 307 to a presigned URL of the store, so the
    /// bytes go from the store to the client without passing through berth
    /// (S3 storage only; HEAD is still answered by berth).
    #[arg(long, env = "BERTH_REDIRECT")]
    pub redirect: bool,

    /// How long a presigned URL of `--redirect` stays valid: long enough for
    /// a client to fetch (and retry) the layer; a leaked URL reads that one
    /// blob until then.
    #[arg(long, env = "BERTH_REDIRECT_EXPIRY", value_name = "DURATION", default_value = "15m", value_parser = parse_duration)]
    pub redirect_expiry: Duration,

    /// On S3, where replicas share the bucket: how long a replica answers a
    /// manifest GET or HEAD from what the tag or digest resolved to when it
    /// last read the bucket, instead of reading it again (two round trips).
    /// A tag moved or a manifest deleted through another replica is seen here
    /// at most this much later; through this replica, at once. `0` reads the
    /// bucket for every request.
    #[arg(long, env = "BERTH_REFERENCE_CACHE_TTL", value_name = "DURATION", default_value = "1s", value_parser = parse_span)]
    pub reference_cache_ttl: Duration,

    /// Format of log lines (one line per request, plus events).
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info`, `warn`, `berth=debug` (tracing's EnvFilter syntax).
    /// `warn` turns off the per-request lines.
    #[arg(long, env = "BERTH_LOG", default_value = "info")]
    pub log: String,

    /// How writes are made durable before they are acknowledged. `grouped`:
    /// one filesystem sync (syncfs) for all requests waiting at the same
    /// moment, the fewest device flushes. `per-file`: fsync of each file and
    /// directory written, isolated from other processes writing to the same
    /// filesystem (whose dirty data a syncfs also writes out) or a data
    /// directory spanning several mounts.
    #[arg(long, env = "BERTH_SYNC", value_enum, default_value_t = SyncArg::Grouped)]
    pub sync: SyncArg,

    /// Uploads idle for longer than this many seconds are removed.
    #[arg(long, env = "BERTH_UPLOAD_MAX_AGE", default_value_t = 24 * 3600)]
    pub upload_max_age_secs: u64,

    /// How often, in seconds, to look for stale uploads.
    #[arg(long, env = "BERTH_UPLOAD_PURGE_INTERVAL", default_value_t = 3600)]
    pub upload_purge_interval_secs: u64,

    /// How often the server runs a garbage collection pass (`90s`, `30m`,
    /// `12h`, `7d`, or seconds); `0` turns scheduled passes off.
    #[arg(long, env = "BERTH_GC_INTERVAL", default_value = "24h", value_parser = parse_span)]
    pub gc_interval: Duration,

    /// Garbage collection never deletes a blob or link younger than this:
    /// layers are pushed before the manifest that references them. Keep it at
    /// least as long as an upload may take.
    #[arg(long, env = "BERTH_GC_GRACE", default_value = "24h", value_parser = parse_span)]
    pub gc_grace: Duration,

    /// Garbage collection also removes untagged manifests older than this
    /// (never the children of a kept index, nor referrers of a kept subject).
    /// Unset, untagged manifests are kept.
    #[arg(long, env = "BERTH_DELETE_UNTAGGED_AFTER", value_parser = parse_span)]
    pub delete_untagged_after: Option<Duration>,

    #[command(flatten)]
    pub gc_shared: GcSharedArgs,

    /// Repository under which berth serves its own image (NAME:latest and
    /// NAME:<version>), read-only. `docker run` it to get another berth.
    #[arg(long, env = "BERTH_SELF_NAME", default_value = "berth")]
    pub self_name: String,

    /// Do not serve berth's own image.
    #[arg(long, env = "BERTH_NO_SELF_IMAGE")]
    pub no_self_image: bool,

    /// Whether manifests, tags and blobs may be deleted. `off` answers every
    /// delete with 405 UNSUPPORTED (distribution's default). On by default:
    /// tag cleanup by CI jobs and `skopeo delete` are common, and the data
    /// stays until a delete is asked for.
    #[arg(long, env = "BERTH_DELETES", value_enum, default_value_t = Switch::On)]
    pub deletes: Switch,

    /// Accept manifests whose layers or index children were never pushed to
    /// the repository (sparse images and indexes, e.g. an index copied with
    /// only some of its platforms). An image's config must still be pushed.
    #[arg(long, env = "BERTH_ALLOW_SPARSE_MANIFESTS")]
    pub allow_sparse_manifests: bool,

    /// A client must send a whole request head within this time (counted
    /// from its first byte, or from the connection's start for the first
    /// request). Durations are like `30s`, `500ms`, `2m` or a number of seconds.
    #[arg(long, env = "BERTH_HEADER_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// An open connection with no request in flight is closed after this long.
    #[arg(long, env = "BERTH_IDLE_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// A request whose body (upload) or response (download) moves no byte for
    /// this long while the server waits on the client is closed. Slow links
    /// still move bytes; a dead one does not.
    #[arg(long, env = "BERTH_BODY_TIMEOUT", value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// At most this many open connections; past it, those idle the longest
    /// are closed to make room. Default: half the file descriptor limit
    /// (which berth raises to its hard limit at start).
    #[arg(long, env = "BERTH_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Serve HTTPS with this certificate chain (PEM, server certificate
    /// first). Needs --tls-key. HTTP/2 and HTTP/1.1 are offered through ALPN,
    /// TLS 1.2 and 1.3. The files are read again when they change (or on
    /// SIGHUP), without dropping connections.
    #[arg(long, env = "BERTH_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "BERTH_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Verify client certificates against these CA certificates (PEM). A
    /// client that presents one must present a valid one, and its subject's
    /// common name (CN) is the user the access policy decides for (unless the
    /// request carries other credentials). Clients without one are anonymous:
    /// with this option the access policy applies even without --htpasswd.
    #[arg(long, env = "BERTH_TLS_CLIENT_CA", value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// How often the TLS files are checked for changes.
    #[arg(long, env = "BERTH_TLS_RELOAD_INTERVAL", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,

    /// Whether to keep Prometheus metrics and serve them at /metrics. `off`
    /// takes the counting off the request path entirely.
    #[arg(long, env = "BERTH_METRICS", value_enum, default_value_t = Switch::On)]
    pub metrics: Switch,

    /// Serve /metrics on this address (plain HTTP) instead of the main
    /// listener, e.g. `127.0.0.1:9090` to keep them private.
    #[arg(long, env = "BERTH_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Serve, read-only under repository prefix PREFIX, the images at PATH: an
    /// OCI image layout directory, an OCI layout tar (skopeo's oci-archive) or a
    /// `docker save` tarball. Repeatable. `alpine:3.19` in the archive becomes
    /// PREFIX/alpine:3.19; a bare tag (`latest`) names PREFIX itself.
    #[arg(long = "source", value_name = "PREFIX=PATH")]
    pub sources: Vec<String>,

    /// Mirror an upstream registry under repository prefix PREFIX, as
    /// PREFIX=URL[,URL...]: `/v2/PREFIX/NAME/...` (and containerd's
    /// `?ns=PREFIX`) pulls NAME from the first URL that answers, caching what
    /// it fetches; the prefix is read-only. Repeatable. Credentials, tag TTL
    /// and blob redirects: the config file's [[upstream]] section.
    #[arg(long = "upstream", env = "BERTH_UPSTREAM", value_name = "PREFIX=URL[,URL...]")]
    pub upstreams: Vec<String>,

    /// The upstream (by PREFIX) that also serves names outside every prefix
    /// that no local repository has: docker's `registry-mirrors`, which asks
    /// the mirror for `library/alpine`.
    #[arg(long, env = "BERTH_UPSTREAM_ROOT", value_name = "PREFIX")]
    pub upstream_root: Option<String>,

    /// How long a mirrored tag is served from the cache before the upstream
    /// is asked (with a HEAD) whether it moved.
    #[arg(long, env = "BERTH_UPSTREAM_TAG_TTL", value_name = "DURATION", default_value = "5m", value_parser = parse_span)]
    pub upstream_tag_ttl: Duration,

    /// Bound the bytes cached for upstreams (`20GiB`, `500MB`): past it, the
    /// least recently pulled images are evicted (checked every minute and
    /// before each garbage collection pass). Unbounded without it.
    #[arg(long, env = "BERTH_UPSTREAM_CACHE_SIZE", value_name = "SIZE", value_parser = crate::rules::parse_size)]
    pub upstream_cache_size: Option<u64>,

    /// A cached image pulled within this long is never evicted, so a pull in
    /// progress never loses its blobs.
    #[arg(long, env = "BERTH_UPSTREAM_CACHE_PROTECT", value_name = "DURATION", default_value = "10m", value_parser = parse_span)]
    pub upstream_cache_protect: Duration,

    /// Read options from this TOML file. Its keys are the long options of
    /// `berth serve` (`listen = "0.0.0.0:5000"`, `source = ["a=a.tar"]`);
    /// flags and BERTH_* variables override it. See examples/berth.toml.
    #[arg(long, env = "BERTH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check the configuration (file, environment and flags), print the
    /// effective options with secrets redacted, and exit: 0 if berth would
    /// start with it.
    #[arg(long)]
    pub check_config: bool,

    /// The config file's `[sections]`: structured settings that have no flag.
    #[arg(skip)]
    pub sections: crate::config::Sections,

    /// Users who may sign in: an htpasswd file with bcrypt hashes (`htpasswd
    /// -B`), re-read when it changes. Turns authentication on: by default
    /// signed-in users may do everything and anonymous clients nothing
    /// (see --auth-config).
    #[arg(long, env = "BERTH_HTPASSWD", value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,

    /// The access policy, a TOML file: `[[access]]` rules by repository
    /// pattern for users, groups and anonymous clients (examples/auth.toml).
    /// The same keys may instead be written under `[auth]` in the config file.
    #[arg(long, env = "BERTH_AUTH_CONFIG", value_name = "FILE")]
    pub auth_config: Option<PathBuf>,

    /// Issue bearer tokens at /token (the Docker token authentication spec),
    /// signed with the key in --token-key, and ask clients for them.
    #[arg(long, env = "BERTH_TOKEN")]
    pub token: bool,

    /// The token service name: `service` in challenges, `aud` in tokens.
    #[arg(long, env = "BERTH_TOKEN_SERVICE", default_value = "berth")]
    pub token_service: String,

    /// The token issuer: `iss` of the tokens berth issues, or the issuer
    /// whose tokens berth accepts (with --token-trust).
    #[arg(long, env = "BERTH_TOKEN_ISSUER", default_value = "berth")]
    pub token_issuer: String,

    /// Where clients get tokens (the challenge's `realm`). Default with
    /// --token: this server's /token, at the host the client asked for.
    #[arg(long, env = "BERTH_TOKEN_REALM", value_name = "URL")]
    pub token_realm: Option<String>,

    /// The built-in token service's signing key (P-256, PEM). Default: made
    /// on first start and kept in the data directory (berth/v1/auth/).
    #[arg(long, env = "BERTH_TOKEN_KEY", value_name = "FILE")]
    pub token_key: Option<PathBuf>,

    /// How long the tokens berth issues are valid, in seconds (60 at least).
    #[arg(long, env = "BERTH_TOKEN_EXPIRY", default_value_t = 300)]
    pub token_expiry_secs: u64,

    /// Accept the tokens of an external issuer (with --token-realm and
    /// --token-issuer) signed by these keys: a PEM bundle of certificates or
    /// public keys, or a JWKS file. Repeatable.
    #[arg(
        long = "token-trust",
        env = "BERTH_TOKEN_TRUST",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub token_trust: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// An OCI image layout directory, an OCI layout tar, or a `docker save` tarball.
    pub archive: PathBuf,

    /// Put every image into this repository, keeping its tag, instead of the
    /// repository its name in the archive gives (`docker.io/library/alpine:3.19`
    /// is imported as alpine:3.19).
    #[arg(long, value_name = "NAME")]
    pub repo: Option<String>,

    /// Data directory of the berth to import into.
    #[arg(long, env = "BERTH_DATA", default_value = "./data")]
    pub data: PathBuf,

    /// An S3 bucket instead: `s3://BUCKET[/PREFIX]`, which servers may go on
    /// serving (the import pins what it references, as their pushes do).
    #[arg(long, env = "BERTH_STORAGE", value_name = "s3://BUCKET[/PREFIX]")]
    pub storage: Option<String>,

    #[command(flatten)]
    pub s3: S3Args,

    #[command(flatten)]
    pub gc_shared: GcSharedArgs,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Data directory to collect garbage in (no server may be serving it).
    #[arg(long, env = "BERTH_DATA", default_value = "./data")]
    pub data: PathBuf,

    /// An S3 bucket instead: `s3://BUCKET[/PREFIX]`. Servers may go on
    /// serving it: the pass takes part in their protocol (lease, pins and
    /// claims in the bucket) like one more replica.
    #[arg(long, env = "BERTH_STORAGE", value_name = "s3://BUCKET[/PREFIX]")]
    pub storage: Option<String>,

    #[command(flatten)]
    pub s3: S3Args,

    #[command(flatten)]
    pub gc_shared: GcSharedArgs,

    /// Report what would be freed; delete nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Never delete a blob or link younger than this.
    #[arg(long, default_value = "24h", value_parser = parse_span)]
    pub grace: Duration,

    /// Also remove untagged manifests older than this.
    #[arg(long, value_parser = parse_span)]
    pub delete_untagged_after: Option<Duration>,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,

    /// A `berth serve` config file: its `[[retention]]` and `[[immutable]]`
    /// sections apply to the pass (the other settings are ignored).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Data directory to report on.
    #[arg(long, env = "BERTH_DATA", default_value = "./data")]
    pub data: PathBuf,

    /// An S3 bucket instead: `s3://BUCKET[/PREFIX]`.
    #[arg(long, env = "BERTH_STORAGE", value_name = "s3://BUCKET[/PREFIX]")]
    pub storage: Option<String>,

    #[command(flatten)]
    pub s3: S3Args,

    /// A `berth serve` config file, for its `[[quota]]` sections.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Images to export, as NAME:TAG or NAME@DIGEST (NAME alone means NAME:latest).
    #[arg(required = true, value_name = "NAME:TAG")]
    pub images: Vec<String>,

    /// The archive to write (an OCI layout tar that also carries docker's manifest.json).
    #[arg(short = 'o', long, value_name = "ARCHIVE")]
    pub output: PathBuf,

    /// Data directory of the berth to export from.
    #[arg(long, env = "BERTH_DATA", default_value = "./data")]
    pub data: PathBuf,

    /// An S3 bucket instead: `s3://BUCKET[/PREFIX]`.
    #[arg(long, env = "BERTH_STORAGE", value_name = "s3://BUCKET[/PREFIX]")]
    pub storage: Option<String>,

    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The storage to copy from: a data directory or s3://BUCKET[/PREFIX].
    #[arg(long, value_name = "DIR|s3://BUCKET[/PREFIX]")]
    pub from: String,

    /// The storage to copy into: a data directory (created if missing) or
    /// s3://BUCKET[/PREFIX].
    #[arg(long, value_name = "DIR|s3://BUCKET[/PREFIX]")]
    pub to: String,

    /// How many blobs are copied at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,

    // For the s3:// side(s), one or both.
    #[command(flatten)]
    pub s3: S3Args,
}

/// Parses `30s`, `500ms`, `2m`, `1h` or a plain number of seconds (fractions allowed).
/// A positive duration: `30s`, `500ms`, `2m`, `12h`, `7d`, `1.5s`, or seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match parse_span(s)? {
        d if d.is_zero() => Err(format!("{s:?}: a duration must be positive")),
        d => Ok(d),
    }
}

/// Like [`parse_duration`], and `0` is allowed (to turn something off, or
/// no grace period at all).
pub fn parse_span(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 30s, 500ms, 2m, 12h, 7d)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        other => return Err(format!("unknown unit {other:?} in {s:?} (use ms, s, m, h or d)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{s:?} is not a duration this long or short"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        for bad in ["", "s", "0", "-1s", "10 parsecs", "1e999", "7w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_span("0"), Ok(Duration::ZERO));
        assert_eq!(parse_span("24h"), Ok(Duration::from_secs(86400)));
        assert!(parse_span("-1").is_err());
    }
}
