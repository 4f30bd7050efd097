//! The effective configuration: every option's value and where it came from,
//! as `--check-config` prints it (valid TOML, secrets redacted).

use super::file::{is_option, NOT_IN_FILE};
use super::secret::{is_secret, REDACTED};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use std::any::TypeId;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where an option's value came from, in order of precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    /// The named environment variable.
    Environment(String),
    /// The config file, at this line.
    File(usize),
    Default,
}

/// One option of the effective configuration.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The long option name, which is also the config file's key.
    pub key: String,
    /// The value (`<redacted>` for a secret), or `None` when unset.
    pub value: Option<toml::Value>,
    pub origin: Origin,
}

/// Every option of a command after flags, environment, file and defaults.
#[derive(Debug, Clone, Default)]
pub struct Effective {
    pub file: Option<PathBuf>,
    pub entries: Vec<Entry>,
}

impl Effective {
    /// Reads every option of `cmd` from `matches` (the final parse, in which
    /// the file's values are command-line arguments: `from_file` says which).
    pub fn collect(
        cmd: &Command,
        matches: &ArgMatches,
        file: Option<&Path>,
        from_file: &BTreeMap<String, usize>,
    ) -> Effective {
        let entries = cmd
            .get_arguments()
            .filter(|a| is_option(a))
            .filter_map(|arg| {
                let key = arg.get_long()?.to_string();
                if NOT_IN_FILE.contains(&key.as_str()) {
                    return None;
                }
                let id = arg.get_id().as_str();
                let origin = match (matches.value_source(id), from_file.get(&key)) {
                    (Some(ValueSource::CommandLine), Some(line)) => Origin::File(*line),
                    (Some(ValueSource::CommandLine), None) => Origin::CommandLine,
                    (Some(ValueSource::EnvVariable), _) => Origin::Environment(
                        arg.get_env()
                            .map(|e| e.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    ),
                    _ => Origin::Default,
                };
                let value = value_of(arg, matches);
                Some(Entry { key, value, origin })
            })
            .collect();
        Effective {
            file: file.map(Path::to_owned),
            entries,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// The configuration as a TOML document that `--config` accepts, each
    /// value commented with where it came from.
    pub fn render(&self) -> String {
        let mut out = String::from("# Effective configuration of `berth serve` (secrets redacted).\n");
        if let Some(file) = &self.file {
            out.push_str(&format!("# Config file: {}\n", file.display()));
        }
        let file_name = self.file.as_ref().map(|f| f.display().to_string()).unwrap_or_default();
        let lines: Vec<(String, String)> = self
            .entries
            .iter()
            .map(|e| {
                let origin = match &e.origin {
                    Origin::CommandLine => "command line".to_string(),
                    Origin::Environment(var) => format!("environment {var}"),
                    Origin::File(line) => format!("{file_name} line {line}"),
                    Origin::Default => "default".to_string(),
                };
                match &e.value {
                    Some(v) => (format!("{} = {v}", e.key), origin),
                    None => (format!("# {} is not set", e.key), String::new()),
                }
            })
            .collect();
        let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for (line, origin) in lines {
            if origin.is_empty() {
                out.push_str(&format!("{line}\n"));
            } else {
                out.push_str(&format!("{line:width$}  # {origin}\n"));
            }
        }
        out
    }
}

/// The option's value as TOML: a switch is a bool, a number a number, a
/// repeatable option a list, everything else the text it was given as.
fn value_of(arg: &Arg, matches: &ArgMatches) -> Option<toml::Value> {
    let id = arg.get_id().as_str();
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => {
            return matches.get_one::<bool>(id).map(|b| toml::Value::Boolean(*b));
        }
        ArgAction::Count => return Some(toml::Value::Integer(matches.get_count(id).into())),
        _ => {}
    }
    let raw: Vec<String> = matches.get_raw(id)?.map(|v| v.to_string_lossy().into_owned()).collect();
    let scalar = |text: String| {
        if is_secret(arg) {
            toml::Value::String(REDACTED.to_string())
        } else if is_number(arg) {
            text.parse::<i64>()
                .map(toml::Value::Integer)
                .or_else(|_| text.parse::<f64>().map(toml::Value::Float))
                .unwrap_or(toml::Value::String(text))
        } else {
            toml::Value::String(text)
        }
    };
    match arg.get_action() {
        ArgAction::Append => Some(toml::Value::Array(raw.into_iter().map(scalar).collect())),
        _ => raw.into_iter().next().map(scalar),
    }
}

fn is_number(arg: &Arg) -> bool {
    let t = arg.get_value_parser().type_id();
    [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<usize>(),
        TypeId::of::<i8>(),
        TypeId::of::<i16>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<isize>(),
        TypeId::of::<f32>(),
        TypeId::of::<f64>(),
    ]
    .iter()
    .any(|n| t == *n)
}
