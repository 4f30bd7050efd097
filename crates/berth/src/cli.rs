//! Command-line interface. Every option of `serve` can also be set from the
//! environment (`BERTH_*`), which is how containers are usually configured.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "berth", version, about = "A container image registry in one static binary", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start: the size of the serve variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry (OCI Distribution Spec and Docker Registry HTTP API V2).
    Serve(ServeArgs),
    /// Copy the images of an archive into berth's storage, verifying every digest.
    ///
    /// The archive is an OCI image layout directory, an OCI layout tar, or a
    /// `docker save` tarball.
    Import(ImportArgs),
    /// Write images from berth's storage to an OCI layout tar archive.
    ///
    /// Every platform of a multi-platform image is included. skopeo, `docker
    /// load`, `berth import` and `berth serve --source` read the archive.
    Export(ExportArgs),
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
pub enum SyncArg {
    Grouped,
    PerFile,
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

    /// Repository under which berth serves its own image (NAME:latest and
    /// NAME:<version>), read-only. `docker run` it to get another berth.
    #[arg(long, env = "BERTH_SELF_NAME", default_value = "berth")]
    pub self_name: String,

    /// Do not serve berth's own image.
    #[arg(long, env = "BERTH_NO_SELF_IMAGE")]
    pub no_self_image: bool,

    /// Serve, read-only under repository prefix PREFIX, the images at PATH: an
    /// OCI image layout directory, an OCI layout tar (skopeo's oci-archive) or a
    /// `docker save` tarball. Repeatable. `alpine:3.19` in the archive becomes
    /// PREFIX/alpine:3.19; a bare tag (`latest`) names PREFIX itself.
    #[arg(long = "source", value_name = "PREFIX=PATH")]
    pub sources: Vec<String>,

    /// Users who may sign in: an htpasswd file with bcrypt hashes (`htpasswd
    /// -B`), re-read when it changes. Turns authentication on: by default
    /// signed-in users may do everything and anonymous clients nothing
    /// (see --auth-config).
    #[arg(long, env = "BERTH_HTPASSWD", value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,

    /// The access policy, a TOML file: `[[access]]` rules by repository
    /// pattern for users, groups and anonymous clients (examples/auth.toml).
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
}
