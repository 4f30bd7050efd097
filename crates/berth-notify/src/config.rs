//! `[notifications]` of the config file:
//!
//! ```toml
//! [[notifications.endpoints]]
//! name = "ci"                                  # the metrics' `endpoint` label
//! url = "http://hooks.example:8080/registry"
//! headers = { Authorization = "Bearer ..." }   # redacted by --check-config
//! timeout = "5s"                               # per request
//! retries = 3                                  # after the first try
//! backoff = "1s"                               # doubles after each failure
//! actions = ["push", "pull", "delete"]         # default: all
//! repositories = ["team/**"]                   # default: all
//! queue = 1000                                 # events waiting, at most
//! ```

use crate::event::Action;
use berth_policy::Pattern;
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NotificationsConfig {
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EndpointConfig {
    pub name: String,
    pub url: String,
    /// Sent with every request (e.g. a receiver's token): printed redacted.
    #[serde(default, serialize_with = "redacted")]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout")]
    pub timeout: String,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_backoff")]
    pub backoff: String,
    /// `push`, `pull`, `delete`; empty: all.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Repository patterns (`*` within a component, `**` any depth); empty: all.
    #[serde(default)]
    pub repositories: Vec<String>,
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_timeout() -> String {
    "5s".into()
}
fn default_retries() -> u32 {
    3
}
fn default_backoff() -> String {
    "1s".into()
}
fn default_queue() -> usize {
    1000
}

fn redacted<S: Serializer>(headers: &BTreeMap<String, String>, s: S) -> Result<S::Ok, S::Error> {
    let shown: BTreeMap<&str, &str> = headers.keys().map(|k| (k.as_str(), "<redacted>")).collect();
    shown.serialize(s)
}

/// Which events an endpoint wants.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    /// Bit per [`Action`].
    actions: u8,
    repositories: Vec<Pattern>,
}

impl Filter {
    pub(crate) fn wants(&self, action: Action, repository: &str) -> bool {
        self.actions & action.bit() != 0
            && (self.repositories.is_empty() || self.repositories.iter().any(|p| p.matches(repository)))
    }
}

/// An endpoint's settings, checked.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub url: reqwest::Url,
    pub name: String,
    pub headers: reqwest::header::HeaderMap,
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    pub queue: usize,
    pub filter: Filter,
}

impl EndpointConfig {
    /// Checks the endpoint's settings; errors name the endpoint and the key.
    pub fn validate(&self) -> Result<(), String> {
        self.settings().map(|_| ())
    }

    pub(crate) fn settings(&self) -> Result<Settings, String> {
        let what = |key: &str| format!("notifications endpoint {:?}: {key}", self.name);
        if self.name.is_empty() {
            return Err("notifications endpoint: `name` must not be empty".into());
        }
        let url = reqwest::Url::parse(&self.url).map_err(|e| format!("{}: {e}", what("url")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{}: must be http or https", what("url")));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &self.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("{}: {k:?} is not a header name", what("headers")))?;
            let mut value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|_| format!("{}: the value of {k} is not a valid header value", what("headers")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let duration = |key: &str, v: &str| {
            crate::parse_duration(v)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("{}: {v:?} is not a duration (like 500ms, 5s, 1m)", what(key)))
        };
        let mut actions = 0;
        for a in &self.actions {
            actions |= Action::parse(a)
                .ok_or_else(|| format!("{}: unknown action {a:?} (push, pull, delete)", what("actions")))?
                .bit();
        }
        if self.actions.is_empty() {
            actions = Action::ALL.iter().map(|a| a.bit()).sum();
        }
        let repositories = self
            .repositories
            .iter()
            .map(|p| Pattern::parse(p).map_err(|e| format!("{}: {e}", what("repositories"))))
            .collect::<Result<_, _>>()?;
        if self.queue == 0 {
            return Err(format!("{}: must be at least 1", what("queue")));
        }
        Ok(Settings {
            url,
            name: self.name.clone(),
            headers,
            timeout: duration("timeout", &self.timeout)?,
            retries: self.retries,
            backoff: duration("backoff", &self.backoff)?,
            queue: self.queue,
            filter: Filter { actions, repositories },
        })
    }
}

impl NotificationsConfig {
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for ep in &self.endpoints {
            ep.validate()?;
            if !names.insert(ep.name.as_str()) {
                return Err(format!("notifications endpoint {:?} is named twice", ep.name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(toml_text: &str) -> EndpointConfig {
        let full = format!("name = \"e\"\nurl = \"http://127.0.0.1:1/\"\n{toml_text}");
        toml::from_str(&full).unwrap()
    }

    #[test]
    fn filters_by_action_and_repository() {
        let s = endpoint("actions = [\"push\"]\nrepositories = [\"team/**\"]\n")
            .settings()
            .unwrap();
        assert!(s.filter.wants(Action::Push, "team/app"));
        assert!(s.filter.wants(Action::Push, "team/a/b"));
        assert!(!s.filter.wants(Action::Pull, "team/app"));
        assert!(!s.filter.wants(Action::Push, "other/app"));
        let all = endpoint("").settings().unwrap();
        assert!(Action::ALL.iter().all(|a| all.filter.wants(*a, "x")));
        assert_eq!((all.timeout, all.retries, all.queue), (Duration::from_secs(5), 3, 1000));
    }

    #[test]
    fn header_values_are_printed_redacted() {
        let e = endpoint("headers = { Authorization = \"Bearer hunter2\" }\n");
        let printed = toml::to_string(&e).unwrap();
        assert!(
            printed.contains("Authorization") && !printed.contains("hunter2"),
            "{printed}"
        );
        assert!(e.settings().unwrap().headers["authorization"].is_sensitive());
    }
}
