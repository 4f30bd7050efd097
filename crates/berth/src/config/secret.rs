//! Secrets: values that must not appear in logs, in `--check-config`'s output,
//! in the process list or in the config file.

use anyhow::Context;
use std::any::TypeId;
use std::path::Path;

/// A secret value (a password, a key), as an option's type: an option declared
/// `Option<Secret>` is taken from its `BERTH_*` environment variable only (a
/// command-line value would be visible to every user in the process list, and
/// the config file is often world-readable or committed), and is printed as
/// `<redacted>` by `Debug`, `Display` and `--check-config`.
///
/// The other way to give a secret is a file whose contents are the secret: an
/// option ending in `-file` (or one that names a key or password file, like
/// `--htpasswd`) takes a path, which may appear anywhere; read the file with
/// [`Secret::read_file`].
///
/// `Secret` has no `Deserialize` or `Serialize` on purpose: a `[section]` of
/// the config file cannot hold one, only the path of a file that does.
#[derive(Clone)]
pub struct Secret(String);

/// What secrets print as.
pub const REDACTED: &str = "<redacted>";

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself. Call this only where it is used (compared, hashed,
    /// sent), never to log or print it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret from a file, without the line break an editor or
    /// `echo` leaves at its end. The error names the file, not its contents.
    pub fn read_file(path: &Path) -> anyhow::Result<Secret> {
        let mut text =
            std::fs::read_to_string(path).with_context(|| format!("reading the secret in {}", path.display()))?;
        let kept = text.trim_end_matches(['\n', '\r']).len();
        text.truncate(kept);
        Ok(Secret(text))
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Whether a command-line option holds a [`Secret`] (known from its type, so a
/// new secret option needs no list to be kept up to date).
pub(crate) fn is_secret(arg: &clap::Arg) -> bool {
    arg.get_value_parser().type_id() == TypeId::of::<Secret>()
}

/// Words that make an option's name look like it holds a secret: such an
/// option must be a [`Secret`] or take a file (`...-file`). Checked by a test
/// over every option of `berth serve`.
#[cfg(test)]
pub(crate) const SECRET_WORDS: &[&str] = &["password", "passwd", "secret", "passphrase", "credential"];

/// Why an option named like a secret is not declared as one, if it is not.
#[cfg(test)]
pub(crate) fn misdeclared(arg: &clap::Arg) -> Option<String> {
    let long = arg.get_long()?;
    let looks_secret = SECRET_WORDS.iter().any(|w| long.contains(w));
    // A path to a file holding secrets (`--htpasswd FILE`) is fine: the path is not one.
    let takes_file = long.ends_with("-file") || arg.get_value_names().is_some_and(|n| n.iter().any(|v| v == "FILE"));
    (looks_secret && !is_secret(arg) && !takes_file).then(|| {
        format!("--{long} is named like a secret: declare it as Option<Secret> (environment only) or take a file (--{long}-file)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_print_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{:?}", Some(s.clone())), format!("Some({REDACTED})"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn secret_files_lose_their_final_line_break_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, " pass word \r\n").unwrap();
        assert_eq!(Secret::read_file(&path).unwrap().expose(), " pass word ");
        let missing = Secret::read_file(&dir.path().join("none")).unwrap_err();
        assert!(format!("{missing:#}").contains("none"), "{missing:#}");
    }

    #[test]
    fn secret_options_are_recognised_by_type() {
        let secret = clap::Arg::new("p")
            .long("admin-password")
            .value_parser(clap::value_parser!(Secret));
        let path = clap::Arg::new("f")
            .long("admin-password-file")
            .value_parser(clap::value_parser!(std::path::PathBuf));
        let plain = clap::Arg::new("q")
            .long("admin-password")
            .value_parser(clap::value_parser!(String));
        assert!(is_secret(&secret) && !is_secret(&path) && !is_secret(&plain));
        assert_eq!(misdeclared(&secret), None);
        assert_eq!(misdeclared(&path), None);
        assert!(misdeclared(&plain).is_some());
    }
}
