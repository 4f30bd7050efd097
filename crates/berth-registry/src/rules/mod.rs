//! Repository rules beyond the spec: which tags a garbage collection pass
//! removes (retention), which tags never move (immutability), and how many
//! bytes a set of repositories may hold (quotas). Repositories are chosen by
//! the same globs as the access policy (`berth_policy::Pattern`: `*` within a
//! component, `**` any depth).
//!
//! - **Retention** runs inside a garbage collection pass, before the mark: for
//!   each repository, the first rule whose pattern matches it decides which
//!   tags stay (see [`retention`]); only those tags are removed, never other
//!   tags sharing their digest, and the manifests left without any tag are
//!   then collected in the same pass.
//! - **Immutability**: a tag matched by any immutable rule, once it exists,
//!   cannot be moved to another digest (the same digest may be pushed again;
//!   pushes by digest are never concerned), and deleting it needs the
//!   caller's explicit override. Retention never removes it.
//! - **Quotas** (see [`quota`]): every rule whose pattern matches a
//!   repository applies; the usage of a rule is the bytes of the distinct
//!   blobs that the manifests of all its repositories reference.

pub(crate) mod ledger;
pub(crate) mod quota;
pub(crate) mod retention;

pub use quota::{QuotaUsage, RepositoryUsage, UsageReport};

use berth_policy::Pattern;
use berth_spec::{RepoName, Tag};
use regex::Regex;
use std::time::Duration;

/// Which tags of the matching repositories a garbage collection pass keeps.
/// A tag stays if any condition keeps it; the others are removed.
#[derive(Debug, Clone)]
pub struct RetentionRule {
    pub repositories: Pattern,
    /// Keep the N most recently pushed tags.
    pub keep_last: Option<usize>,
    /// Keep every tag matching this regular expression.
    pub keep_tags: Option<Regex>,
    /// Keep tags pushed within this long.
    pub keep_within: Option<Duration>,
}

/// Tags of the matching repositories that never move once pushed.
#[derive(Debug, Clone)]
pub struct ImmutableRule {
    pub repositories: Pattern,
    /// Only the tags matching this regular expression (all tags without it).
    pub tags: Option<Regex>,
}

/// The most bytes the matching repositories may hold together (each blob
/// counted once however many of them reference it).
#[derive(Debug, Clone)]
pub struct QuotaRule {
    pub repositories: Pattern,
    pub limit: u64,
}

/// Every rule of a registry.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub retention: Vec<RetentionRule>,
    pub immutable: Vec<ImmutableRule>,
    pub quotas: Vec<QuotaRule>,
}

impl RetentionRule {
    /// A rule that keeps nothing would delete every tag it matches: refused,
    /// since that is never what a person writing one meant.
    pub fn check(&self) -> Result<(), String> {
        if self.keep_last.is_none() && self.keep_tags.is_none() && self.keep_within.is_none() {
            return Err(format!(
                "retention rule for {}: set keep-last, keep-tags or keep-within (a rule keeping nothing would delete every tag)",
                self.repositories.as_str()
            ));
        }
        Ok(())
    }
}

impl Rules {
    /// The retention rule of a repository: the first that matches.
    pub fn retention_for(&self, name: &RepoName) -> Option<&RetentionRule> {
        self.retention.iter().find(|r| r.repositories.matches(name.as_str()))
    }

    /// The immutable rule that covers `tag` of `name`, if any.
    pub fn immutable_rule(&self, name: &RepoName, tag: &Tag) -> Option<&ImmutableRule> {
        self.immutable.iter().find(|r| {
            r.repositories.matches(name.as_str()) && r.tags.as_ref().is_none_or(|re| re.is_match(tag.as_str()))
        })
    }

    /// The quotas that apply to `name`, by index into `quotas`.
    pub(crate) fn quotas_for<'a>(&'a self, name: &'a RepoName) -> impl Iterator<Item = (usize, &'a QuotaRule)> + 'a {
        self.quotas
            .iter()
            .enumerate()
            .filter(move |(_, q)| q.repositories.matches(name.as_str()))
    }
}

impl ImmutableRule {
    /// How the rule reads in an error message.
    pub fn describe(&self) -> String {
        match &self.tags {
            Some(re) => format!("immutable rule {} tags {}", self.repositories.as_str(), re.as_str()),
            None => format!("immutable rule {}", self.repositories.as_str()),
        }
    }
}

#[cfg(test)]
mod tests;

/// A regular expression from a config file, with the error naming where it was.
fn regex(text: &str, what: &str) -> Result<Regex, String> {
    Regex::new(text).map_err(|e| format!("{what}: {text:?} is not a regular expression: {e}"))
}

fn pattern(text: &str, what: &str) -> Result<Pattern, String> {
    Pattern::parse(text).map_err(|e| format!("{what}: {e}"))
}

impl RetentionRule {
    /// A rule from its config form (repository glob, tag regex).
    pub fn new(
        repositories: &str,
        keep_last: Option<usize>,
        keep_tags: Option<&str>,
        keep_within: Option<Duration>,
    ) -> Result<RetentionRule, String> {
        let what = format!("retention rule for {repositories:?}");
        let rule = RetentionRule {
            repositories: pattern(repositories, &what)?,
            keep_last,
            keep_tags: keep_tags.map(|t| regex(t, &format!("{what}, keep-tags"))).transpose()?,
            keep_within,
        };
        rule.check()?;
        Ok(rule)
    }
}

impl ImmutableRule {
    pub fn new(repositories: &str, tags: Option<&str>) -> Result<ImmutableRule, String> {
        let what = format!("immutable rule for {repositories:?}");
        Ok(ImmutableRule {
            repositories: pattern(repositories, &what)?,
            tags: tags.map(|t| regex(t, &format!("{what}, tags"))).transpose()?,
        })
    }
}

impl QuotaRule {
    pub fn new(repositories: &str, limit: u64) -> Result<QuotaRule, String> {
        Ok(QuotaRule {
            repositories: pattern(repositories, &format!("quota for {repositories:?}"))?,
            limit,
        })
    }
}
