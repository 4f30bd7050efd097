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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry (OCI Distribution Spec and Docker Registry HTTP API V2).
    Serve(ServeArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
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

    /// Uploads not finished within this many seconds are removed.
    #[arg(long, env = "BERTH_UPLOAD_MAX_AGE", default_value_t = 24 * 3600)]
    pub upload_max_age_secs: u64,

    /// How often, in seconds, to look for stale uploads.
    #[arg(long, env = "BERTH_UPLOAD_PURGE_INTERVAL", default_value_t = 3600)]
    pub upload_purge_interval_secs: u64,
}
