//! Retention: which tags of a repository a garbage collection pass removes.
//!
//! A tag's push time is the modification time of its `current/link` in the
//! distribution layout (every push of the tag rewrites it, a re-push of the
//! same digest included): the filesystem's mtime, or an object store's
//! `LastModified`, read through `Backend::head`. Nothing else is recorded, so
//! a data directory written by distribution has push times too.

use super::RetentionRule;
use crate::{Registry, Result};
use berth_spec::{Digest, RepoName, Tag};
use berth_storage::layout;
use std::time::SystemTime;

/// One tag as retention sees it.
#[derive(Debug, Clone)]
pub(crate) struct TagInfo {
    pub tag: Tag,
    pub digest: Digest,
    /// When it was last pushed (`None`: unknown, which counts as just now).
    pub pushed: Option<SystemTime>,
}

/// The tags `rule` removes from `tags`, by index. A tag stays if it is among
/// the `keep_last` most recently pushed, matches `keep_tags`, was pushed
/// within `keep_within` of `now`, or is immutable.
pub(crate) fn tags_to_remove(
    rule: &RetentionRule,
    tags: &[TagInfo],
    now: SystemTime,
    immutable: impl Fn(&Tag) -> bool,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..tags.len()).collect();
    // Newest first; ties (same second on coarse clocks) by name, so the
    // choice is the same on every run.
    order.sort_by(|&a, &b| {
        let ta = tags[a].pushed.unwrap_or(now);
        let tb = tags[b].pushed.unwrap_or(now);
        tb.cmp(&ta).then_with(|| tags[a].tag.as_str().cmp(tags[b].tag.as_str()))
    });
    let mut remove = Vec::new();
    for (rank, &i) in order.iter().enumerate() {
        let t = &tags[i];
        let recent = rule.keep_last.is_some_and(|n| rank < n);
        let named = rule.keep_tags.as_ref().is_some_and(|re| re.is_match(t.tag.as_str()));
        let young = rule.keep_within.is_some_and(|age| {
            // Unknown or in the future (a clock step) is young.
            t.pushed.is_none_or(|p| now.duration_since(p).map_or(true, |a| a < age))
        });
        if !(recent || named || young || immutable(&t.tag)) {
            remove.push(i);
        }
    }
    remove.sort_unstable();
    remove
}

impl Registry {
    /// The tags of `name` with their digests and push times.
    pub(crate) async fn tags_with_times(&self, name: &RepoName) -> Result<Vec<TagInfo>> {
        let mut out = Vec::new();
        for entry in self.backend.list(&layout::tags_dir(name)).await? {
            let Ok(tag) = entry.parse::<Tag>() else { continue };
            if let Some(info) = self.tag_info(name, &tag).await? {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Applies the retention rule of `name`, if it has one: the tags it
    /// removes (already removed unless `dry_run`). A tag pushed again between
    /// the decision and the delete is left alone (see `remove_judged_tag`).
    pub(crate) async fn apply_retention(
        &self,
        name: &RepoName,
        now: SystemTime,
        dry_run: bool,
    ) -> Result<Vec<TagInfo>> {
        let Some(rule) = self.config.rules.retention_for(name) else {
            return Ok(Vec::new());
        };
        let mut tags = self.tags_with_times(name).await?;
        // Listed in storage order; reported by name.
        tags.sort_by(|a, b| a.tag.as_str().cmp(b.tag.as_str()));
        let doomed = tags_to_remove(rule, &tags, now, |t| {
            self.config.rules.immutable_rule(name, t).is_some()
        });
        let mut removed = Vec::with_capacity(doomed.len());
        for i in doomed {
            let t = &tags[i];
            if !dry_run && !self.remove_judged_tag(name, t).await? {
                continue;
            }
            removed.push(t.clone());
        }
        Ok(removed)
    }

    /// Removes a tag retention judged, unless it was pushed again since
    /// (it points elsewhere, or has another push time). Returns whether it
    /// went. On exclusive storage the check and the removal happen under the
    /// tag write lock, which every push of a tag takes; where other processes
    /// push too, under a claim in the store (see `gc::shared`).
    async fn remove_judged_tag(&self, name: &RepoName, judged: &TagInfo) -> Result<bool> {
        let unchanged = |now: &Option<TagInfo>| {
            now.as_ref().map(|s| (&s.digest, s.pushed)) == Some((&judged.digest, judged.pushed))
        };
        let Some(gate) = &self.shared_gate else {
            let _writes = self.tag_writes.write().await;
            if !unchanged(&self.tag_info(name, &judged.tag).await?) {
                return Ok(false);
            }
            self.backend.delete_prefix(&layout::tag_dir(name, &judged.tag)).await?;
            return Ok(true);
        };
        let claim = gate.claim_tag(name, &judged.tag).await?;
        if !unchanged(&self.tag_info(name, &judged.tag).await?) || !claim.still_held() {
            claim.release().await?;
            return Ok(false);
        }
        self.backend.delete_prefix(&layout::tag_dir(name, &judged.tag)).await?;
        claim.release().await?;
        Ok(true)
    }

    async fn tag_info(&self, name: &RepoName, tag: &Tag) -> Result<Option<TagInfo>> {
        let Some(digest) = self.resolve_tag(name, tag).await? else {
            return Ok(None);
        };
        match self.backend.head(&layout::tag_current_link(name, tag)).await {
            Ok(meta) => Ok(Some(TagInfo {
                tag: tag.clone(),
                digest,
                pushed: meta.modified,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
