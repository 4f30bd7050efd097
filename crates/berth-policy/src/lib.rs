//! berth's access policy: who may do what in which repository.
//!
//! The HTTP layer identifies the caller (anonymous or a user) and asks
//! [`Policy::decide`]; the policy answers from its rules alone and says why, so
//! that every decision can be logged. Nothing here knows about HTTP, tokens or
//! storage.
//!
//! Every rule grants; nothing denies. A caller's actions in a repository are
//! the union of the defaults ([`PolicyConfig::default`] for signed-in users,
//! [`PolicyConfig::anonymous`] for everyone) and of every rule whose pattern
//! matches the repository. Admins may do everything everywhere. To restrict
//! signed-in users, make `default` smaller and grant with rules.
//!
//! Anonymous pull of `public/**` and authenticated push elsewhere:
//!
//! ```toml
//! [[access]]
//! repository = "public/**"
//! anonymous = ["pull"]
//! ```

mod config;
mod pattern;

pub use config::{PolicyConfig, RuleConfig};
pub use pattern::{Pattern, PatternError};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One thing a caller may do in a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Read manifests, blobs, tags and referrers; see the repository in the catalog.
    Pull,
    /// Upload blobs and manifests, create tags that do not exist yet.
    Push,
    /// Move an existing tag to another manifest.
    Overwrite,
    /// Delete manifests, tags and blobs.
    Delete,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Pull, Action::Push, Action::Overwrite, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Overwrite => "overwrite",
            Action::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`Action`]s (a bit set: copying and combining cost nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const ALL: Actions = Actions(0b1111);

    pub fn contains(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }

    pub fn with(self, a: Action) -> Actions {
        Actions(self.0 | a.bit())
    }

    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    pub fn intersection(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

impl FromIterator<Action> for Actions {
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Actions {
        iter.into_iter().fold(Actions::NONE, Actions::with)
    }
}

impl fmt::Display for Actions {
    /// `pull,push`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for a in self.iter() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            f.write_str(a.as_str())?;
        }
        Ok(())
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal<'a> {
    Anonymous,
    User(&'a str),
}

/// Why a caller has the actions it has in a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant<'p> {
    /// The user is an admin (listed in `admins` or a member of the admin group).
    Admin,
    /// The defaults and the rules (`rule <pattern>`) that gave something.
    Rules { actions: Actions, from: Vec<&'p str> },
}

/// The answer to "may this caller do this here?", with the reason to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// What the caller may do in the repository, all rules together.
    pub actions: Actions,
    /// Human-readable: `admin`, `rule public/**`, `default`, or why not.
    pub reason: String,
}

#[derive(Debug, Clone)]
struct Rule {
    pattern: Pattern,
    /// `rule <pattern>`, as decisions name it.
    label: String,
    anonymous: Actions,
    authenticated: Actions,
    users: BTreeMap<String, Actions>,
    groups: BTreeMap<String, Actions>,
}

/// A checked [`PolicyConfig`], ready to answer.
#[derive(Debug, Clone)]
pub struct Policy {
    default: Actions,
    anonymous: Actions,
    admins: BTreeSet<String>,
    /// user -> groups the user is a member of.
    memberships: BTreeMap<String, Vec<String>>,
    admin_group: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

impl Default for Policy {
    /// Without configuration: signed-in users may do everything, anonymous
    /// callers nothing (what a registry with only an htpasswd file does).
    fn default() -> Policy {
        Policy::new(&PolicyConfig::default()).expect("the default configuration is valid")
    }
}

impl Policy {
    pub fn new(config: &PolicyConfig) -> Result<Policy, PolicyError> {
        let mut memberships: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (group, members) in &config.groups {
            for m in members {
                memberships.entry(m.clone()).or_default().push(group.clone());
            }
        }
        let mut rules = Vec::with_capacity(config.access.len());
        for (i, r) in config.access.iter().enumerate() {
            let pattern = Pattern::parse(&r.repository)
                .map_err(|e| PolicyError(format!("access rule {} (repository {:?}): {e}", i + 1, r.repository)))?;
            for g in r.groups.keys() {
                if !config.groups.contains_key(g) && g != &config.admin_group {
                    return Err(PolicyError(format!(
                        "access rule {} (repository {:?}) names group {g:?}, which [groups] does not define",
                        i + 1,
                        r.repository
                    )));
                }
            }
            rules.push(Rule {
                label: format!("rule {pattern}"),
                pattern,
                anonymous: r.anonymous.0,
                authenticated: r.authenticated.0,
                users: r.users.iter().map(|(k, v)| (k.clone(), v.0)).collect(),
                groups: r.groups.iter().map(|(k, v)| (k.clone(), v.0)).collect(),
            });
        }
        Ok(Policy {
            default: config.default.0,
            anonymous: config.anonymous.0,
            admins: config.admins.iter().cloned().collect(),
            memberships,
            admin_group: config.admin_group.clone(),
            rules,
        })
    }

    /// Whether anonymous callers may do anything anywhere. When not, a registry
    /// can ask for credentials up front (`/v2/` answers 401).
    pub fn anonymous_may_do_anything(&self) -> bool {
        !self.anonymous.is_empty() || self.rules.iter().any(|r| !r.anonymous.is_empty())
    }

    /// Whether anonymous callers may do everything everywhere: then no request
    /// ever needs credentials.
    pub fn anonymous_may_do_everything(&self) -> bool {
        self.anonymous == Actions::ALL
    }

    pub fn is_admin(&self, user: &str) -> bool {
        self.admins.contains(user) || self.groups_of(user).iter().any(|g| g == &self.admin_group)
    }

    /// The groups `user` is a member of.
    pub fn groups_of(&self, user: &str) -> &[String] {
        self.memberships.get(user).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Everything `who` may do in `repository`, and which grants gave it.
    pub fn grant(&self, who: Principal<'_>, repository: &str) -> Grant<'_> {
        if let Principal::User(u) = who {
            if self.is_admin(u) {
                return Grant::Admin;
            }
        }
        let mut actions = self.anonymous;
        let mut from = Vec::new();
        if !self.anonymous.is_empty() {
            from.push("anonymous default");
        }
        if let Principal::User(_) = who {
            if !self.default.is_empty() {
                actions = actions.union(self.default);
                from.push("default");
            }
        }
        for rule in &self.rules {
            let mut got = rule.anonymous;
            if let Principal::User(u) = who {
                got = got.union(rule.authenticated);
                if let Some(a) = rule.users.get(u) {
                    got = got.union(*a);
                }
                for g in self.groups_of(u) {
                    if let Some(a) = rule.groups.get(g) {
                        got = got.union(*a);
                    }
                }
            }
            if !got.is_empty() && rule.pattern.matches(repository) {
                actions = actions.union(got);
                from.push(rule.label.as_str());
            }
        }
        Grant::Rules { actions, from }
    }

    /// What `who` may do in `repository`.
    pub fn actions(&self, who: Principal<'_>, repository: &str) -> Actions {
        match self.grant(who, repository) {
            Grant::Admin => Actions::ALL,
            Grant::Rules { actions, .. } => actions,
        }
    }

    /// Whether `who` may do `action` in `repository`, with the reason.
    pub fn decide(&self, who: Principal<'_>, action: Action, repository: &str) -> Decision {
        match self.grant(who, repository) {
            Grant::Admin => Decision {
                allowed: true,
                actions: Actions::ALL,
                reason: "admin".to_owned(),
            },
            Grant::Rules { actions, from } => {
                let allowed = actions.contains(action);
                let reason = if allowed {
                    // Name the grants that gave this very action would need a
                    // second pass; the list of what matched is as useful.
                    from.join(", ")
                } else if from.is_empty() {
                    "no rule matches".to_owned()
                } else {
                    format!("{} grant only {actions}", from.join(", "))
                };
                Decision {
                    allowed,
                    actions,
                    reason,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
