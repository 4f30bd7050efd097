//! Reading the config file: a TOML table whose keys are the long options of a
//! command (kebab-case, as on the command line), plus `[sections]` for
//! structured settings that have no flag. Option values become command-line
//! arguments, so clap parses and validates them exactly as it does flags.

use super::secret;
use anyhow::{anyhow, bail, Context};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Options that configure the reading of the file itself.
pub(crate) const NOT_IN_FILE: &[&str] = &["config", "check-config"];

/// A config file's text and where it came from.
pub struct ConfigFile {
    path: PathBuf,
    text: String,
}

/// What the file adds to the command line.
#[derive(Debug, Default)]
pub struct FileArgs {
    /// Arguments for the options that neither a flag nor the environment set.
    pub argv: Vec<OsString>,
    /// The options those arguments set, with the line of each in the file.
    pub used: BTreeMap<String, usize>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> anyhow::Result<ConfigFile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read the config file {}", path.display()))?;
        Ok(ConfigFile::from_text(path, text))
    }

    pub fn from_text(path: &Path, text: impl Into<String>) -> ConfigFile {
        ConfigFile {
            path: path.to_owned(),
            text: text.into(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn parse(&self) -> anyhow::Result<Spanned<DeTable<'_>>> {
        DeTable::parse(&self.text).map_err(|e| anyhow!("{}: {}", self.path.display(), e.to_string().trim_end()))
    }

    /// "berth.toml, line 3", for messages about what starts at `offset`.
    fn at(&self, offset: usize) -> String {
        let line = line_of(&self.text, offset);
        format!("{}, line {line}", self.path.display())
    }

    /// Checks every top-level key of the file (an option of `cmd` by its long
    /// name, or one of `sections`) and every option value, and returns the
    /// arguments that give `cmd` the file's values for the options `given`
    /// (the matches of flags and environment) left at their defaults.
    /// `command` is how messages name `cmd` (`berth serve`).
    pub fn args_for(
        &self,
        cmd: &Command,
        command: &str,
        given: &ArgMatches,
        sections: &[&str],
    ) -> anyhow::Result<FileArgs> {
        let table = self.parse()?;
        let mut probe = probe_command(cmd);
        let mut out = FileArgs::default();
        for (key, value) in table.get_ref().iter() {
            let name: &str = key.get_ref();
            let at = self.at(key.span().start);
            if sections.contains(&name) {
                // `[name]`, or `[[name]]` for a section that is a list of tables.
                let v = value.get_ref();
                let tables = v.is_table() || v.as_array().is_some_and(|a| a.iter().all(|t| t.get_ref().is_table()));
                if !tables {
                    bail!("{at}: `{name}` is a section: write it as [{name}] (or [[{name}]] for a list)");
                }
                continue;
            }
            let Some(arg) = find_option(cmd, name) else {
                bail!(
                    "{at}: {}",
                    unknown_key(cmd, command, name, value.get_ref().is_table(), sections)
                );
            };
            if NOT_IN_FILE.contains(&name) {
                bail!("{at}: `{name}` cannot be set in the config file; give it as --{name}");
            }
            if secret::is_secret(arg) {
                bail!(
                    "{at}: `{name}` is a secret, and secrets are not written in the config file: {}",
                    secret_hint(arg)
                );
            }
            let occurrences = self.occurrences(arg, name, value, &mut probe)?;
            let source = given.value_source(arg.get_id().as_str());
            if matches!(source, Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
                continue; // flag > environment > file
            }
            out.argv.extend(occurrences);
            out.used.insert(name.to_string(), line_of(&self.text, key.span().start));
        }
        Ok(out)
    }

    /// The command-line arguments that say what `value` says for `arg`, each
    /// value checked by clap's parser for the option.
    fn occurrences(
        &self,
        arg: &Arg,
        name: &str,
        value: &Spanned<DeValue<'_>>,
        probe: &mut Command,
    ) -> anyhow::Result<Vec<OsString>> {
        let at = self.at(value.span().start);
        let flag = || OsString::from(format!("--{name}"));
        let v = value.get_ref();
        let args = match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => {
                let Some(on) = v.as_bool() else {
                    bail!("{at}: `{name}` is a switch: write `{name} = true` or `{name} = false`");
                };
                let sets = matches!(arg.get_action(), ArgAction::SetTrue);
                if on == sets {
                    vec![flag()]
                } else {
                    vec![]
                }
            }
            ArgAction::Count => {
                let n = v
                    .as_integer()
                    .and_then(|i| u8::from_str_radix(i.as_str(), i.radix()).ok());
                let Some(n) = n else {
                    bail!("{at}: `{name}` is a count: write a number from 0 to 255");
                };
                vec![flag(); n as usize]
            }
            ArgAction::Set => {
                if v.is_array() {
                    bail!("{at}: `{name}` takes one value, not a list");
                }
                vec![self.one_value(name, value, probe)?]
            }
            ArgAction::Append => match v.as_array() {
                Some(items) => items
                    .iter()
                    .map(|item| self.one_value(name, item, probe))
                    .collect::<anyhow::Result<_>>()?,
                None => vec![self.one_value(name, value, probe)?],
            },
            _ => bail!("{at}: `{name}` cannot be set in the config file"),
        };
        Ok(args)
    }

    /// `--name=value` for a scalar, after clap's parser for the option accepted it.
    fn one_value(&self, name: &str, value: &Spanned<DeValue<'_>>, probe: &mut Command) -> anyhow::Result<OsString> {
        let at = self.at(value.span().start);
        let text = match value.get_ref() {
            DeValue::String(s) => s.to_string(),
            DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| anyhow!("{at}: `{name}`: the number is too large"))?
                .to_string(),
            DeValue::Float(f) => f.as_str().to_string(),
            DeValue::Boolean(b) => b.to_string(),
            DeValue::Datetime(d) => d.to_string(),
            DeValue::Array(_) => bail!("{at}: `{name}`: a list cannot hold lists"),
            DeValue::Table(_) => bail!("{at}: `{name}` takes a value, not a table"),
        };
        // `--name=value` keeps a value that starts with `-` a value.
        let argument = format!("--{name}={text}");
        if let Err(e) = probe.try_get_matches_from_mut([probe.get_name().to_string(), argument.clone()]) {
            use clap::error::ErrorKind::*;
            // Only the value is on trial here: a missing companion option or a
            // conflict is for the real parse to judge, with everything given.
            if matches!(e.kind(), InvalidValue | ValueValidation | InvalidUtf8 | NoEquals) {
                bail!(
                    "{at}: `{name} = {}`: {}",
                    value_source_text(&self.text, value),
                    clap_message(&e)
                );
            }
        }
        Ok(OsString::from(argument))
    }

    /// Deserializes the file's `[sections]` (the keys that are not options)
    /// into `S`, whose fields are the sections. Errors name the line.
    pub fn sections<S: DeserializeOwned>(&self) -> anyhow::Result<S> {
        let table = self.parse()?;
        let span = table.span();
        let names = field_names::<S>();
        let mut only = DeTable::new();
        for (key, value) in table.into_inner() {
            if names.contains(&key.get_ref().as_ref()) {
                only.insert(key, value);
            }
        }
        S::deserialize(toml::de::Deserializer::from(Spanned::new(span, only))).map_err(|mut e| {
            e.set_input(Some(&self.text));
            anyhow!("{}: {}", self.path.display(), e.to_string().trim_end())
        })
    }
}

/// The option of `cmd` whose long name is `key` (help and version excluded).
fn find_option<'c>(cmd: &'c Command, key: &str) -> Option<&'c Arg> {
    cmd.get_arguments()
        .filter(|a| is_option(a))
        .find(|a| a.get_long() == Some(key))
}

/// Whether `arg` is a setting (not `--help` or `--version`, not positional).
pub(crate) fn is_option(arg: &Arg) -> bool {
    arg.get_long().is_some()
        && !matches!(
            arg.get_action(),
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
        )
}

fn unknown_key(cmd: &Command, command: &str, key: &str, is_table: bool, sections: &[&str]) -> String {
    let kebab = key.replace('_', "-");
    if kebab != key && (find_option(cmd, &kebab).is_some() || sections.contains(&kebab.as_str())) {
        return format!("unknown key `{key}`: keys are spelled like the long options, in kebab-case: `{kebab}`");
    }
    let mut options: Vec<&str> = cmd
        .get_arguments()
        .filter(|a| is_option(a))
        .filter_map(|a| a.get_long())
        .filter(|l| !NOT_IN_FILE.contains(l))
        .collect();
    options.sort_unstable();
    let sections = match sections {
        [] => "there are no sections".to_string(),
        _ => {
            let names: Vec<String> = sections.iter().map(|s| format!("[{s}]")).collect();
            format!("the sections are {}", names.join(", "))
        }
    };
    let what = if is_table { "section" } else { "key" };
    format!(
        "unknown {what} `{key}`: the keys are the long options of `{command}` ({}), and {sections}",
        options.join(", ")
    )
}

/// How to give a secret option instead.
fn secret_hint(arg: &Arg) -> String {
    match arg.get_env() {
        Some(env) => format!("set {} in the environment", env.to_string_lossy()),
        None => "give it through the environment".to_string(),
    }
}

/// A copy of `cmd` that parses one option at a time, to check values.
fn probe_command(cmd: &Command) -> Command {
    let ids: Vec<_> = cmd.get_arguments().map(|a| a.get_id().clone()).collect();
    ids.into_iter()
        .fold(cmd.clone(), |c, id| c.mut_arg(id, |a| a.required(false)))
}

/// clap's message for a bad value, on one line and without the usage hint.
fn clap_message(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let lines: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect();
    let message = lines.join(" ");
    message.strip_prefix("error: ").unwrap_or(&message).to_string()
}

/// The value as written in the file.
fn value_source_text(text: &str, value: &Spanned<DeValue<'_>>) -> String {
    text.get(value.span()).unwrap_or("?").to_string()
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The field names of struct `S`, as serde's derive declares them: the
/// sections a [`super::Sections`]-like struct accepts.
pub(crate) fn field_names<S: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor};
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("sections must be a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Self::Error::custom("only the field names were wanted"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = S::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_from_one() {
        let text = "a = 1\n\nb = 2\n";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, text.find('b').unwrap()), 3);
        assert_eq!(line_of(text, 10_000), 4);
    }

    #[test]
    fn field_names_come_from_serde() {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "kebab-case")]
        #[allow(dead_code)]
        struct S {
            access_rules: Option<u8>,
            other: u8,
        }
        assert_eq!(field_names::<S>(), ["access-rules", "other"]);
    }
}
