//! Command-line interface. Every option of `serve` can also be set from the
//! environment (`BERTH_*`), which is how containers are usually configured, and
//! in a config file (`--config`, see [`crate::config`]): an option added here
//! works in the file without more code, under its long name.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "berth", version, about = "A container image registry in one static binary", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

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

    /// Serve, read-only under repository prefix PREFIX, the images at PATH: an
    /// OCI image layout directory, an OCI layout tar (skopeo's oci-archive) or a
    /// `docker save` tarball. Repeatable. `alpine:3.19` in the archive becomes
    /// PREFIX/alpine:3.19; a bare tag (`latest`) names PREFIX itself.
    #[arg(long = "source", value_name = "PREFIX=PATH")]
    pub sources: Vec<String>,

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
