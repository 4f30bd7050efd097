//! The `berth` executable.

use berth::cli::{Cli, Command};
use clap::Parser;

fn main() -> anyhow::Result<()> {
    berth::memory::tune();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => berth::app::run(args),
        Command::Import(args) => berth::import::run(args),
        Command::Export(args) => berth::export::run(args),
    }
}
