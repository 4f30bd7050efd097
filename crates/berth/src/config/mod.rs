//! The config file of `berth serve` (`--config berth.toml`), merged with the
//! command line and the environment.
//!
//! - **Keys are the long options**, in kebab-case as on the command line
//!   (`log-format`, not `log_format`, which is refused with a hint), so every
//!   option of [`crate::cli::ServeArgs`] can be set in the file without code
//!   here: the file's values become command-line arguments and clap parses
//!   and validates them like flags. Switches are `true`/`false`, repeatable
//!   options are lists (`source = ["a=a.tar"]`).
//! - **Precedence**: flag > environment (`BERTH_*`) > file > default; clap's
//!   `value_source` tells which options a flag or the environment set.
//! - **Sections** (`[name]`) hold structured settings that have no flag form;
//!   each is a field of [`Sections`], deserialized with serde.
//! - **Unknown keys and sections are errors** naming the key and its line.
//! - **Secrets** never appear in the file, on the command line, in logs or in
//!   `--check-config`'s output: an option of type [`Secret`] is read from its
//!   environment variable only, and a `...-file` option names a file holding
//!   the secret (see [`secret`]).

pub mod augmentation;
mod effective;
mod file;
pub mod secret;
pub mod upstream;

pub use effective::{Effective, Entry, Origin};
pub use file::ConfigFile;
pub use secret::Secret;

use crate::cli::{Cli, Command, ServeArgs};
use anyhow::bail;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::PathBuf;

/// Structured settings of the config file that have no flag: one field per
/// `[section]`, named in kebab-case. Unknown sections are errors.
///
/// To add a section: a field `pub name: Option<T>` (or a `T: Default` with
/// `#[serde(default)]`), where `T` derives `Debug`, `Clone`, `Deserialize` and
/// `Serialize` with `#[serde(deny_unknown_fields, rename_all = "kebab-case")]`
/// (so a mistyped key is an error naming its line, and `--check-config` can
/// print it). A section holds no [`Secret`], only paths of files with secrets.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Sections {
    /// The access policy (`[auth]`, `[auth.groups]`, `[[auth.access]]`): the
    /// keys of an `--auth-config` file (examples/auth.toml), in this file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<berth_policy::PolicyConfig>,
    /// `[[retention]]`: tags garbage collection removes (crate::rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retention: Vec<crate::rules::RetentionSection>,
    /// `[[immutable]]`: tags that never move.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub immutable: Vec<crate::rules::ImmutableSection>,
    /// `[[quota]]`: bytes a set of repositories may hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quota: Vec<crate::rules::QuotaSection>,
    /// Webhook endpoints (`[[notifications.endpoints]]`).
    pub notifications: Option<berth_notify::NotificationsConfig>,
    /// `[[augmentation]]`: images served with extra layers and settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub augmentation: Vec<augmentation::AugmentationSection>,
    /// `[[upstream]]`: mirrored upstream registries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<upstream::UpstreamSection>,
}

/// A command line with the config file merged in.
#[derive(Debug)]
pub struct Resolved<C, S> {
    pub cli: C,
    /// The configured subcommand's options and their origins, when it ran.
    pub effective: Option<Effective>,
    /// The file's sections (their defaults without a file).
    pub sections: S,
}

/// The options of the config file's subcommand that configure the reading.
const CONFIG_ID: &str = "config";

/// Parses `argv` like `C::try_parse_from`, and for subcommand `sub` fills in
/// the options that neither a flag nor the environment set from the file its
/// `--config` option names. A `clap::Error` (including `--help`) is returned as
/// it is, for the caller to `exit()` with.
pub fn resolve<C, S>(argv: impl IntoIterator<Item = impl Into<OsString>>, sub: &str) -> anyhow::Result<Resolved<C, S>>
where
    C: CommandFactory + FromArgMatches,
    S: DeserializeOwned + Default,
{
    let mut argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let cmd = C::command();
    let Some(sub_cmd) = cmd.find_subcommand(sub).cloned() else {
        bail!("no subcommand {sub}");
    };
    // A first parse with nothing required, to learn what the command line and
    // the environment set (an option required by clap may be in the file).
    let lenient = cmd.clone().mut_subcommand(sub, |s| {
        let ids: Vec<_> = s.get_arguments().map(|a| a.get_id().clone()).collect();
        ids.into_iter().fold(s, |s, id| s.mut_arg(id, |a| a.required(false)))
    });
    let first = match lenient.try_get_matches_from(&argv) {
        Ok(m) => m,
        // The strict parse fails too; its message (or help) is the true one.
        Err(e) => return Err(cmd.try_get_matches_from(&argv).err().unwrap_or(e).into()),
    };
    let Some(given) = first.subcommand_matches(sub) else {
        let matches = cmd.try_get_matches_from(&argv)?;
        return Ok(Resolved {
            cli: C::from_arg_matches(&matches)?,
            effective: None,
            sections: S::default(),
        });
    };
    for arg in sub_cmd.get_arguments().filter(|a| secret::is_secret(a)) {
        if given.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            bail!(
                "--{} takes a secret, which on the command line every user can read in the process list: set {} instead",
                arg.get_long().unwrap_or_default(),
                env.as_deref().unwrap_or("it in the environment")
            );
        }
    }
    let file = given
        .get_one::<PathBuf>(CONFIG_ID)
        .map(|p| ConfigFile::load(p))
        .transpose()?;
    let from_file = match &file {
        Some(f) => {
            let command = format!("{} {sub}", cmd.get_name());
            f.args_for(&sub_cmd, &command, given, file::field_names::<S>())?
        }
        None => Default::default(),
    };
    let sections: S = file.as_ref().map(ConfigFile::sections).transpose()?.unwrap_or_default();
    // The file's values go last: no option they set was given before.
    argv.extend(from_file.argv);
    let matches = cmd.try_get_matches_from(&argv)?;
    let cli = C::from_arg_matches(&matches)?;
    let effective = matches
        .subcommand_matches(sub)
        .map(|m| Effective::collect(&sub_cmd, m, file.as_ref().map(ConfigFile::path), &from_file.used));
    Ok(Resolved {
        cli,
        effective,
        sections,
    })
}

/// berth's command line, with the config file of `berth serve` merged in.
pub fn parse_cli(argv: impl IntoIterator<Item = impl Into<OsString>>) -> anyhow::Result<(Cli, Option<Effective>)> {
    let resolved = resolve::<Cli, Sections>(argv, "serve")?;
    let mut cli = resolved.cli;
    if let Command::Serve(args) = &mut cli.command {
        args.sections = resolved.sections;
    }
    Ok((cli, resolved.effective))
}

/// `berth serve --check-config`: validates what berth would start with and
/// prints it (secrets redacted) on stdout.
pub fn check(args: &ServeArgs, effective: Option<&Effective>) -> anyhow::Result<()> {
    crate::app::validate(args)?;
    if let Some(effective) = effective {
        print!("{}", effective.render());
    }
    let sections = toml::to_string(&args.sections)?;
    if !sections.trim().is_empty() {
        println!("\n{sections}");
    }
    match &args.config {
        Some(path) => eprintln!("configuration is valid ({})", path.display()),
        None => eprintln!("configuration is valid (no config file)"),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
