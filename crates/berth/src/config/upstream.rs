//! The `[[upstream]]` sections of the config file and `--upstream` flags:
//! the upstream registries berth mirrors (see `berth_registry::proxy`).

use crate::cli::{parse_duration, ServeArgs};
use anyhow::{bail, Context};
use berth_registry::{Credentials, UpstreamConfig};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One mirrored upstream. Its password comes from an environment variable
/// or a file; the file never holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UpstreamSection {
    /// Repositories under this prefix come from the upstream, without it.
    pub prefix: String,
    /// Base URLs, tried in order.
    pub urls: Vec<String>,
    /// Also serve names outside every prefix (docker's registry-mirrors).
    #[serde(default)]
    pub root: bool,
    /// Default: `--upstream-tag-ttl`.
    pub tag_ttl: Option<String>,
    #[serde(default)]
    pub redirect_blobs: bool,
    /// Connect, response head and between reads of a body. Default 30s.
    pub timeout: Option<String>,
    pub username: Option<String>,
    /// The environment variable holding the password or token.
    pub password_env: Option<String>,
    /// A file holding the password or token (trailing newline ignored).
    pub password_file: Option<PathBuf>,
}

impl UpstreamSection {
    fn to_config(&self, default_ttl: std::time::Duration) -> anyhow::Result<UpstreamConfig> {
        let what = || format!("[[upstream]] {:?}", self.prefix);
        let mut config = UpstreamConfig::new(self.prefix.clone(), self.urls.clone());
        config.root = self.root;
        config.redirect_blobs = self.redirect_blobs;
        config.tag_ttl = match &self.tag_ttl {
            Some(t) => crate::cli::parse_span(t)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("{}: tag-ttl", what()))?,
            None => default_ttl,
        };
        if let Some(t) = &self.timeout {
            config.timeout = parse_duration(t)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("{}: timeout", what()))?;
        }
        let password = match (&self.password_env, &self.password_file) {
            (Some(_), Some(_)) => bail!("{}: password-env and password-file are exclusive", what()),
            (Some(var), None) => Some(
                std::env::var(var)
                    .with_context(|| format!("{}: the environment variable {var} (password-env) is not set", what()))?,
            ),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("{}: reading password-file {}", what(), path.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            (None, None) => None,
        };
        config.credentials = match (&self.username, password) {
            (Some(username), Some(password)) => Some(Credentials {
                username: username.clone(),
                password,
            }),
            (None, None) => None,
            _ => bail!(
                "{}: username and a password (password-env or password-file) go together",
                what()
            ),
        };
        Ok(config)
    }
}

/// Every upstream: the file's sections, then `--upstream` flags (a flag for
/// a prefix a section has is an error, not a silent override).
pub fn upstreams(args: &ServeArgs) -> anyhow::Result<Vec<UpstreamConfig>> {
    let mut out = Vec::new();
    for section in &args.sections.upstream {
        out.push(section.to_config(args.upstream_tag_ttl)?);
    }
    for flag in &args.upstreams {
        let Some((prefix, urls)) = flag.split_once('=') else {
            bail!("--upstream {flag:?}: expected PREFIX=URL[,URL...]");
        };
        let urls: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(String::from)
            .collect();
        if urls.is_empty() {
            bail!("--upstream {flag:?}: no URL");
        }
        let mut config = UpstreamConfig::new(prefix.trim(), urls);
        config.tag_ttl = args.upstream_tag_ttl;
        out.push(config);
    }
    if let Some(root) = &args.upstream_root {
        match out.iter_mut().find(|c| &c.prefix == root) {
            Some(c) => c.root = true,
            None => bail!("--upstream-root {root:?}: no upstream has that prefix"),
        }
    }
    Ok(out)
}
