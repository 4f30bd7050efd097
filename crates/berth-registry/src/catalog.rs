//! The catalog (every repository) and housekeeping that walks repositories.

use crate::{Registry, Result};
use berth_spec::RepoName;
use berth_storage::layout;
use std::time::SystemTime;

impl Registry {
    /// Every repository, from storage and from the read-only sources, sorted.
    ///
    /// Storage is walked: a directory is a repository when it holds
    /// `_manifests`, as in distribution. Directories starting with `_` are
    /// repository internals and never names.
    pub async fn catalog(&self) -> Result<Vec<String>> {
        let mut repos: Vec<String> = self
            .stored_repositories()
            .await?
            .into_iter()
            .map(|n| n.to_string())
            .collect();
        for source in &self.sources {
            repos.extend(source.repositories().await?.into_iter().map(|n| n.to_string()));
        }
        repos.sort();
        repos.dedup();
        Ok(repos)
    }

    /// Walks `repositories/` and returns every repository directory that
    /// holds the internal directory `marker` (`_manifests`, `_uploads`, ...).
    /// Directories starting with `_` are repository internals, never names.
    pub(crate) async fn repositories_with(&self, marker: &str) -> Result<Vec<RepoName>> {
        let root = layout::repositories_root();
        let mut found = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(rel) = pending.pop() {
            let dir = if rel.is_empty() {
                root.clone()
            } else {
                format!("{root}/{rel}")
            };
            for child in self.backend.list(&dir).await? {
                if child == marker {
                    if let Ok(name) = rel.parse::<RepoName>() {
                        found.push(name);
                    }
                } else if !child.starts_with('_') {
                    pending.push(if rel.is_empty() {
                        child
                    } else {
                        format!("{rel}/{child}")
                    });
                }
            }
        }
        Ok(found)
    }

    pub(crate) async fn stored_repositories(&self) -> Result<Vec<RepoName>> {
        self.repositories_with("_manifests").await
    }

    /// Removes uploads idle for longer than the configured maximum age.
    /// Returns how many were removed.
    pub async fn purge_stale_uploads(&self) -> Result<usize> {
        let max_age = self.config.upload_max_age;
        let now = SystemTime::now();
        let mut removed = 0;
        for name in self.repositories_with("_uploads").await? {
            removed += self.purge_repository_uploads(&name, now, max_age).await?;
        }
        Ok(removed)
    }

    async fn purge_repository_uploads(
        &self,
        name: &RepoName,
        now: SystemTime,
        max_age: std::time::Duration,
    ) -> Result<usize> {
        let mut removed = 0;
        for id in self.backend.list(&layout::uploads_dir(name)).await? {
            let key = layout::upload_data(name, &id);
            let (last_active, legacy) = match self.backend.head(&key).await {
                Ok(meta) => (meta.modified, false),
                // Not a file: an upload in distribution's layout (a directory
                // with its start time), or gone since the listing.
                Err(e) if e.is_not_found() => (self.legacy_upload_start(name, &id).await?, true),
                Err(e) => return Err(e.into()),
            };
            let stale = match last_active {
                Some(t) => now.duration_since(t).map(|age| age > max_age).unwrap_or(false),
                // A legacy directory without a start time is a crash's leftover;
                // a file whose time the backend cannot tell is left alone.
                None => legacy,
            };
            // An upload some request is writing to right now is not stale, whatever its age.
            let session = crate::uploads::session_key(name, &id);
            if stale && self.uploads.close_if_idle(&session) {
                let deleted = match legacy {
                    true => self.backend.delete_prefix(&key).await,
                    false => self.backend.delete(&key).await,
                };
                self.uploads.remove(&session);
                deleted?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn legacy_upload_start(&self, name: &RepoName, id: &str) -> Result<Option<SystemTime>> {
        match self.backend.get(&layout::legacy_upload_started_at(name, id)).await {
            Ok(bytes) => Ok(std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| {
                    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339).ok()
                })
                .map(SystemTime::from)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
