//! The `berth` executable.

use berth::cli::Command;
use std::process::ExitCode;

fn main() -> ExitCode {
    berth::memory::tune();
    let (cli, effective) = match berth::config::parse_cli(std::env::args_os()) {
        Ok(parsed) => parsed,
        // clap prints usage errors and --help itself, with its own exit codes.
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(clap_error) => clap_error.exit(),
            Err(e) => return fail(&e),
        },
    };
    let result = match cli.command {
        Command::Serve(args) if args.check_config => berth::config::check(&args, effective.as_ref()),
        Command::Serve(args) => berth::app::run(args),
        Command::Import(args) => berth::import::run(args),
        Command::Export(args) => berth::export::run(args),
        Command::Migrate(args) => berth::migrate::run(args),
        Command::Gc(args) => berth::gc::run(args),
        Command::Usage(args) => berth::gc::usage(args),
        Command::SelfDigest => berth::describe::self_digest(),
        Command::Sbom => berth::describe::sbom(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Reports an error that stops berth (a port in use, a bad config file): the
/// error and each of its causes on a line, and no backtrace even with
/// RUST_BACKTRACE=1, which is for panics (bugs), not for the user's mistakes.
fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {error}");
    for cause in error.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    ExitCode::FAILURE
}
