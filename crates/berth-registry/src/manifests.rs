//! Manifests, tags and referrers.

use crate::gc::key as gc_key;
use crate::{Registry, RegistryError, Result};
use berth_spec::manifest::{referrers_index, stored_media_type};
use berth_spec::{Descriptor, Digest, Manifest, ManifestKind, Reference, RepoName, Tag};
use berth_storage::layout;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

/// A manifest as stored: its exact bytes, their digest and the media type to serve.
#[derive(Debug, Clone)]
pub struct ManifestContent {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// What a successful manifest PUT tells the client.
#[derive(Debug, Clone)]
pub struct PutManifest {
    pub digest: Digest,
    /// Set when the manifest has a `subject` (the `OCI-Subject` header).
    pub subject: Option<Digest>,
}

/// Manifests are immutable under their digest, so their bytes can be kept in
/// memory without ever going stale. Bounded by total size; when full it is
/// simply cleared, which keeps the hot set small and the code obvious.
#[derive(Default)]
pub(crate) struct ManifestCache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    entries: HashMap<Digest, ManifestContent>,
    bytes: usize,
}

const CACHE_LIMIT_BYTES: usize = 4 << 20;

impl ManifestCache {
    fn get(&self, digest: &Digest) -> Option<ManifestContent> {
        self.inner.lock().unwrap().entries.get(digest).cloned()
    }

    /// Forgets a manifest whose bytes were deleted (garbage collection): a
    /// later push of the same bytes must find them absent and store them.
    pub(crate) fn remove(&self, digest: &Digest) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(old) = inner.entries.remove(digest) {
            inner.bytes -= old.bytes.len();
        }
    }

    pub(crate) fn insert(&self, content: ManifestContent) {
        let mut inner = self.inner.lock().unwrap();
        if inner.bytes + content.bytes.len() > CACHE_LIMIT_BYTES {
            inner.entries.clear();
            inner.bytes = 0;
        }
        inner.bytes += content.bytes.len();
        inner.entries.insert(content.digest.clone(), content);
    }
}

/// A descriptor must give the size of what it points at.
fn check_size(descriptor: &Descriptor, stored: u64) -> Result<()> {
    if descriptor.size == stored {
        return Ok(());
    }
    Err(RegistryError::DescriptorSizeMismatch {
        digest: descriptor.digest.clone(),
        declared: descriptor.size,
        stored,
    })
}

fn parse_link(bytes: &[u8]) -> Option<Digest> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// One page of a repository's tags (see [`Registry::tags_page`]).
#[derive(Debug, PartialEq, Eq)]
pub struct TagsPage {
    pub tags: Vec<String>,
    /// Whether more tags follow this page.
    pub more: bool,
}
impl Registry {
    pub(crate) async fn exists(&self, key: &str) -> Result<bool> {
        match self.backend.head(key).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The digest a tag points at, if the tag exists.
    pub(crate) async fn resolve_tag(&self, name: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        match self.backend.get(&layout::tag_current_link(name, tag)).await {
            Ok(bytes) => Ok(parse_link(&bytes)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The manifest digest a tag of a writable repository points at, if the
    /// tag exists (what deciding whether a push moves a tag needs).
    pub async fn tag_digest(&self, name: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        if self.source_for(name).is_some() {
            // Read-only: a push there is refused anyway.
            return Ok(None);
        }
        self.resolve_tag(name, tag).await
    }

    pub(crate) async fn read_manifest_blob(&self, digest: &Digest) -> Result<Option<ManifestContent>> {
        if let Some(hit) = self.manifest_cache.get(digest) {
            return Ok(Some(hit));
        }
        let bytes = match self.backend.get(&layout::blob_data(digest)).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // Manifests are small, so checking them costs little, and a damaged
        // one is never served under a digest it does not have.
        let mut h = digest.algorithm().digester();
        h.update(&bytes);
        if &h.finish() != digest {
            tracing::error!(%digest, "stored manifest does not match its digest; treating it as absent");
            return Ok(None);
        }
        let content = ManifestContent {
            digest: digest.clone(),
            media_type: stored_media_type(&bytes),
            bytes,
        };
        self.manifest_cache.insert(content.clone());
        Ok(Some(content))
    }

    pub async fn get_manifest(&self, name: &RepoName, reference: &Reference) -> Result<ManifestContent> {
        if let Some(source) = self.source_for(name) {
            return source.manifest(name, reference).await;
        }
        if let Some(a) = self.augmented_for_read(name).await? {
            return self.augmented_manifest(&a, reference).await;
        }
        if let Some(p) = self.proxied_for_read(name).await? {
            return self.proxied_manifest(&p, reference).await;
        }
        let unknown = || RegistryError::ManifestUnknown(reference.to_string());
        let digest = self.resolve_reference(name, reference).await?.ok_or_else(unknown)?;
        self.read_manifest_blob(&digest).await?.ok_or_else(unknown)
    }

    /// The digest of the manifest `reference` names in the repository, if it
    /// is there: from what this replica read lately where others write the
    /// store too (see [`crate::resolved`]), else from the store.
    async fn resolve_reference(&self, name: &RepoName, reference: &Reference) -> Result<Option<Digest>> {
        let remembered = match &self.resolved {
            Some(cache) => {
                let key = reference.to_string();
                if let Some(digest) = cache.get(name.as_str(), &key) {
                    return Ok(Some(digest));
                }
                // Before the store is read (see `ResolvedCache::insert`).
                Some((cache, key, cache.generation(name.as_str()), std::time::Instant::now()))
            }
            None => None,
        };
        let digest = match reference {
            Reference::Tag(tag) => match self.resolve_tag(name, tag).await? {
                Some(d) => d,
                None => return Ok(None),
            },
            Reference::Digest(d) => d.clone(),
        };
        if !self.exists(&layout::manifest_revision_link(name, &digest)).await? {
            return Ok(None);
        }
        if let Some((cache, key, generation, read_at)) = remembered {
            cache.insert(name.as_str(), &key, digest.clone(), generation, read_at);
        }
        Ok(Some(digest))
    }

    pub async fn put_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
        extra_tags: &[Tag],
    ) -> Result<PutManifest> {
        self.ensure_writable(name)?;
        let manifest = Manifest::parse(&bytes, content_type)?;
        let digest = match reference {
            Reference::Digest(expected) => {
                let mut h = expected.algorithm().digester();
                h.update(&bytes);
                let actual = h.finish();
                if &actual != expected {
                    return Err(RegistryError::DigestMismatch {
                        expected: expected.clone(),
                        actual,
                    });
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256_of(&bytes),
        };
        let mut tags: Vec<&Tag> = extra_tags.iter().collect();
        if let Reference::Tag(t) = reference {
            tags.push(t);
        }
        // Refused before anything is stored; checked again under the tag
        // write lock below, against a push racing this one.
        let immutable: Vec<&Tag> = tags
            .iter()
            .copied()
            .filter(|t| self.config.rules.immutable_rule(name, t).is_some())
            .collect();
        self.check_immutable(name, &immutable, &digest).await?;

        // Everything this manifest references, and its own bytes, stay while
        // it is checked and stored: the garbage collector waits, or has
        // finished deleting and the checks below find the blobs gone.
        let referenced = manifest
            .required_blobs()
            .chain(manifest.manifests.iter())
            .map(|d| &d.digest)
            .chain([&digest]);
        let pins = self.pin_references(referenced).await?;

        // The link and the bytes: a link can outlive its blob (garbage
        // collection, or a push interrupted between linking and storing, which
        // run side by side), and a manifest must not be accepted on it alone.
        // A sparse manifest may leave out layers and index children, never
        // the config, without which the image cannot be inspected or run.
        // The stat of the bytes also gives their size, which the descriptor
        // must state truly: clients trust it when they pull.
        let sparse = self.config.allow_sparse_manifests;
        // What this manifest adds to quotas: its bytes and stored blobs.
        let mut counted = vec![(gc_key(&digest), bytes.len() as u64)];
        for blob in manifest.required_blobs() {
            let may_be_absent = sparse && manifest.config.as_ref() != Some(blob);
            let size = if self.exists(&layout::layer_link(name, &blob.digest)).await? {
                match self.backend.head(&layout::blob_data(&blob.digest)).await {
                    Ok(meta) => Some(meta.size),
                    Err(e) if e.is_not_found() => None,
                    Err(e) => return Err(e.into()),
                }
            } else {
                None
            };
            match size {
                Some(size) => {
                    check_size(blob, size)?;
                    counted.push((gc_key(&blob.digest), size));
                }
                None if may_be_absent => continue,
                None => return Err(RegistryError::ManifestBlobUnknown(blob.digest.clone())),
            }
        }
        if manifest.kind == ManifestKind::Index {
            for child in &manifest.manifests {
                if !self
                    .exists(&layout::manifest_revision_link(name, &child.digest))
                    .await?
                {
                    if sparse {
                        continue;
                    }
                    return Err(RegistryError::ManifestBlobUnknown(child.digest.clone()));
                }
                let size = match self.manifest_cache.get(&child.digest) {
                    Some(cached) => cached.bytes.len() as u64,
                    None => match self.backend.head(&layout::blob_data(&child.digest)).await {
                        Ok(meta) => meta.size,
                        Err(e) if e.is_not_found() => {
                            return Err(RegistryError::ManifestBlobUnknown(child.digest.clone()))
                        }
                        Err(e) => return Err(e.into()),
                    },
                };
                check_size(child, size)?;
            }
        }

        // Held until the revision is written (see rules::quota).
        let _quota = self.reserve_quota(name, &counted).await?;

        // Written unless an intact copy is there already (a damaged one is
        // replaced). Where other processes write, the copy this process
        // remembers may have been collected since: the store decides.
        if self.shared_gate.is_some() {
            self.manifest_cache.remove(&digest);
        }
        pins.confirm()?;
        if self.read_manifest_blob(&digest).await?.is_none() {
            self.backend.put(&layout::blob_data(&digest), bytes.clone()).await?;
        }
        let link = Bytes::from(layout::link_content(&digest));
        self.backend
            .put(&layout::manifest_revision_link(name, &digest), link.clone())
            .await?;

        // Alone for an immutable tag, so its check and write are one step.
        let (_shared, _alone);
        if immutable.is_empty() {
            _shared = self.tag_writes.read().await;
        } else {
            _alone = self.tag_writes.write().await;
            self.check_immutable(name, &immutable, &digest).await?;
        }
        for tag in tags {
            self.write_tag(name, tag, &digest, &link, immutable.contains(&tag))
                .await?;
        }

        let subject = match &manifest.subject {
            Some(subject) => {
                self.index_referrer(name, &subject.digest, &digest, &manifest, bytes.len() as u64)
                    .await?;
                Some(subject.digest.clone())
            }
            None => None,
        };
        Ok(PutManifest { digest, subject })
    }

    /// Points `tag` of `name` at `digest` (its history entry, then its
    /// current link). Where other processes write the store too, what this
    /// process's tag write lock ordered is ordered through the store: an
    /// immutable tag is created only if absent (the first push wins, a later
    /// one of another digest is refused), and a tag a retention rule covers
    /// is written again if a collector claimed it meanwhile (see
    /// `gc::shared`).
    async fn write_tag(
        &self,
        name: &RepoName,
        tag: &Tag,
        digest: &Digest,
        link: &Bytes,
        immutable: bool,
    ) -> Result<()> {
        let current = layout::tag_current_link(name, tag);
        let history = layout::tag_index_link(name, tag, digest);
        let Some(gate) = &self.shared_gate else {
            self.backend.put(&history, link.clone()).await?;
            self.backend.put(&current, link.clone()).await?;
            return Ok(());
        };
        let retention = self.config.rules.retention_for(name).is_some();
        loop {
            if immutable {
                self.create_immutable_tag(name, tag, digest, &current, link).await?;
                self.backend.put(&history, link.clone()).await?;
            } else {
                self.backend.put(&history, link.clone()).await?;
                self.backend.put(&current, link.clone()).await?;
            }
            if !retention || !gate.wait_tag_unclaimed(name, tag).await? {
                return Ok(());
            }
        }
    }

    /// Writes the current link of an immutable tag where other processes
    /// push too: only if absent, or to the digest it already has.
    async fn create_immutable_tag(
        &self,
        name: &RepoName,
        tag: &Tag,
        digest: &Digest,
        current: &str,
        link: &Bytes,
    ) -> Result<()> {
        // A few rounds: the tag may be deleted (an admin's override) between
        // the refused create and the read.
        for _ in 0..4 {
            if self.backend.put_if_absent(current, link.clone()).await? {
                return Ok(());
            }
            match self.resolve_tag(name, tag).await? {
                Some(d) if &d == digest => {
                    // Pushed again: a new push time, the same digest.
                    self.backend.put(current, link.clone()).await?;
                    return Ok(());
                }
                Some(d) => return Err(self.immutable_refusal(name, tag, &d, digest)),
                None => continue,
            }
        }
        Err(RegistryError::Busy(format!(
            "tag {name}:{} is being created and deleted by others; retry",
            tag.as_str()
        )))
    }

    /// Refuses to move an immutable tag that exists to another digest.
    async fn check_immutable(&self, name: &RepoName, tags: &[&Tag], digest: &Digest) -> Result<()> {
        for tag in tags {
            match self.resolve_tag(name, tag).await? {
                Some(current) if &current != digest => {
                    return Err(self.immutable_refusal(name, tag, &current, digest));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn immutable_refusal(&self, name: &RepoName, tag: &Tag, current: &Digest, digest: &Digest) -> RegistryError {
        let rule = self
            .config
            .rules
            .immutable_rule(name, tag)
            .expect("chosen by the caller");
        RegistryError::Denied(format!(
            "tag {name}:{} is immutable ({}): it points at {current} and cannot be moved to {digest}; push a new tag",
            tag.as_str(),
            rule.describe()
        ))
    }

    async fn index_referrer(
        &self,
        name: &RepoName,
        subject: &Digest,
        digest: &Digest,
        manifest: &Manifest,
        size: u64,
    ) -> Result<()> {
        let descriptor = manifest.referrer_descriptor(digest.clone(), size);
        let json = serde_json::to_vec(&descriptor).expect("descriptors serialize");
        self.backend
            .put(&layout::referrer_entry(name, subject, digest), Bytes::from(json))
            .await?;
        Ok(())
    }

    /// Deletes a manifest by digest (with every tag pointing at it), or removes
    /// one tag, leaving the manifest in place. Immutable tags are refused.
    pub async fn delete_manifest(&self, name: &RepoName, reference: &Reference) -> Result<()> {
        self.delete_manifest_with(name, reference, false).await
    }

    /// [`Registry::delete_manifest`], where `override_immutable` (an admin's
    /// explicit request) also deletes immutable tags.
    pub async fn delete_manifest_with(
        &self,
        name: &RepoName,
        reference: &Reference,
        override_immutable: bool,
    ) -> Result<()> {
        self.ensure_deletable(name)?;
        if !override_immutable {
            self.refuse_immutable_delete(name, reference).await?;
        }
        let unknown = || RegistryError::ManifestUnknown(reference.to_string());
        match reference {
            Reference::Tag(tag) => {
                if self.resolve_tag(name, tag).await?.is_none() {
                    return Err(unknown());
                }
                self.backend.delete_prefix(&layout::tag_dir(name, tag)).await?;
            }
            Reference::Digest(digest) => {
                let link = layout::manifest_revision_link(name, digest);
                if !self.exists(&link).await? {
                    return Err(unknown());
                }
                for tag in self.tag_names(name).await? {
                    if let Ok(tag) = tag.parse::<Tag>() {
                        if self.resolve_tag(name, &tag).await?.as_ref() == Some(digest) {
                            self.backend.delete_prefix(&layout::tag_dir(name, &tag)).await?;
                        }
                    }
                }
                if let Some(content) = self.read_manifest_blob(digest).await? {
                    if let Ok(m) = Manifest::parse(&content.bytes, Some(&content.media_type)) {
                        if let Some(subject) = m.subject {
                            self.backend
                                .delete(&layout::referrer_entry(name, &subject.digest, digest))
                                .await?;
                        }
                    }
                }
                self.backend.delete(&link).await?;
            }
        }
        Ok(())
    }

    /// Refuses a delete that would remove an immutable tag: the tag itself,
    /// or (by digest) a tag pointing at the manifest.
    async fn refuse_immutable_delete(&self, name: &RepoName, reference: &Reference) -> Result<()> {
        if self.config.rules.immutable.is_empty() {
            return Ok(());
        }
        let tags: Vec<Tag> = match reference {
            Reference::Tag(t) => vec![t.clone()],
            Reference::Digest(d) => {
                let mut out = Vec::new();
                for tag in self.tag_names(name).await? {
                    if let Ok(tag) = tag.parse::<Tag>() {
                        if self.resolve_tag(name, &tag).await?.as_ref() == Some(d) {
                            out.push(tag);
                        }
                    }
                }
                out
            }
        };
        for tag in tags {
            if let Some(rule) = self.config.rules.immutable_rule(name, &tag) {
                return Err(RegistryError::Denied(format!(
                    "tag {name}:{} is immutable ({}); deleting it needs an admin's override",
                    tag.as_str(),
                    rule.describe()
                )));
            }
        }
        Ok(())
    }

    async fn tag_names(&self, name: &RepoName) -> Result<Vec<String>> {
        Ok(self.backend.list(&layout::tags_dir(name)).await?)
    }

    /// Whether the tag directory `entry` of `name` is a tag: a crash while a
    /// tag was being written leaves its directory without `current/link`, and
    /// such a tag does not exist. One stat.
    async fn tag_resolves(&self, name: &RepoName, entry: &str) -> Result<bool> {
        let Ok(tag) = entry.parse::<Tag>() else {
            return Ok(false);
        };
        self.exists(&layout::tag_current_link(name, &tag)).await
    }

    /// The tags of `name` that point at something (one stat per tag).
    pub(crate) async fn resolving_tags(&self, name: &RepoName) -> Result<Vec<String>> {
        let mut tags = Vec::new();
        for entry in self.tag_names(name).await? {
            if self.tag_resolves(name, &entry).await? {
                tags.push(entry);
            }
        }
        Ok(tags)
    }

    /// All tags of a repository, sorted lexically.
    pub async fn tags(&self, name: &RepoName) -> Result<Vec<String>> {
        Ok(self.tags_page(name, None, None).await?.tags)
    }

    /// One page of a repository's tags: the first `n` (all without `n`)
    /// that sort after `last`, and whether more follow.
    ///
    /// In storage, only the tags on the page (and one more, to know whether
    /// another page follows) are checked for a `current/link`: a deep page of
    /// a repository of 10k tags stats 101 files, not 10k. Listing and
    /// sorting the tag names stays proportional to the repository.
    pub async fn tags_page(&self, name: &RepoName, last: Option<&str>, n: Option<usize>) -> Result<TagsPage> {
        let after = |t: &String| last.is_none_or(|l| t.as_str() > l);
        let want = n.map_or(usize::MAX, |n| n.saturating_add(1));
        let mut tags = if let Some(source) = self.source_for(name) {
            source.tags(name).await?
        } else if let Some(a) = self.augmented_for_read(name).await? {
            self.augmented_tags(&a).await?
        } else if let Some(p) = self.proxied_for_read(name).await? {
            self.proxied_tags(&p).await?
        } else {
            // A repository is what holds manifests or blobs, as in distribution; a
            // directory that only parents other repositories or holds an upload is not one.
            let children = self.backend.list(&layout::repository(name)).await?;
            if !children.iter().any(|c| c == "_manifests" || c == "_layers") {
                return Err(RegistryError::NameUnknown(name.clone()));
            }
            let mut entries = self.tag_names(name).await?;
            entries.retain(after);
            entries.sort();
            let mut tags = Vec::new();
            for entry in entries {
                if tags.len() >= want {
                    break;
                }
                if self.tag_resolves(name, &entry).await? {
                    tags.push(entry);
                }
            }
            tags
        };
        tags.retain(after);
        tags.sort();
        tags.dedup();
        // n=0 asks for an empty page, which must not link to a next one (it would be the same page).
        let more = n.is_some_and(|n| n > 0 && tags.len() > n);
        if let Some(n) = n {
            tags.truncate(n);
        }
        Ok(TagsPage { tags, more })
    }

    /// The referrers index of `subject` in `name`, optionally only those of
    /// one artifact type. Returns the index body and whether a filter applied.
    pub async fn referrers(&self, name: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<u8>> {
        let wanted = |d: &Descriptor| artifact_type.is_none() || d.artifact_type.as_deref() == artifact_type;
        let mut found = Vec::new();
        if let Some(source) = self.source_for(name) {
            found = source.referrers(name, subject).await?;
            found.retain(wanted);
        } else {
            let dir = layout::referrers_dir(name, subject);
            let mut entries = self.backend.list(&dir).await?;
            entries.sort();
            for entry in entries {
                if layout::parse_referrer_entry_name(&entry).is_none() {
                    continue;
                }
                let bytes = match self.backend.get(&format!("{dir}/{entry}")).await {
                    Ok(b) => b,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                let Ok(descriptor) = serde_json::from_slice::<Descriptor>(&bytes) else {
                    tracing::warn!(entry, "skipping unreadable referrers entry");
                    continue;
                };
                if wanted(&descriptor) {
                    found.push(descriptor);
                }
            }
        }
        Ok(referrers_index(&found))
    }
}

#[cfg(test)]
mod tags_page_tests {
    use crate::{Registry, RegistryConfig};
    use berth_storage::FsBackend;
    use std::sync::Arc;

    /// Every page, after every tag and between tags, is the matching slice of
    /// all tags; a tag left without `current/link` by a crash is on no page
    /// and does not make a page short.
    #[tokio::test]
    async fn pages_are_slices_of_the_sorted_tags() {
        let dir = tempfile::tempdir().unwrap();
        let tags_dir = dir
            .path()
            .join("docker/registry/v2/repositories/team/app/_manifests/tags");
        let digest = format!("sha256:{}", "a".repeat(64));
        let tags = ["1.0", "1.0-rc", "10", "2", "Latest", "latest", "v_1"];
        for t in tags {
            std::fs::create_dir_all(tags_dir.join(t).join("current")).unwrap();
            std::fs::write(tags_dir.join(t).join("current/link"), &digest).unwrap();
        }
        std::fs::create_dir_all(tags_dir.join("1.5/index")).unwrap();
        let reg = Registry::new(Arc::new(FsBackend::new(dir.path())), RegistryConfig::default());
        let name = "team/app".parse().unwrap();
        let all = reg.tags(&name).await.unwrap();
        let mut sorted: Vec<String> = tags.map(String::from).into();
        sorted.sort();
        assert_eq!(all, sorted);

        let mut lasts: Vec<Option<String>> = vec![None, Some("".into()), Some("1.5".into()), Some("z".into())];
        lasts.extend(all.iter().cloned().map(Some));
        for last in &lasts {
            let rest: Vec<String> = all
                .iter()
                .filter(|t| last.as_ref().is_none_or(|l| *t > l))
                .cloned()
                .collect();
            for n in [None, Some(0), Some(1), Some(2), Some(3), Some(100)] {
                let page = reg.tags_page(&name, last.as_deref(), n).await.unwrap();
                let expect: Vec<String> = rest.iter().take(n.unwrap_or(usize::MAX)).cloned().collect();
                assert_eq!(page.tags, expect, "last {last:?} n {n:?}");
                assert_eq!(
                    page.more,
                    n.is_some_and(|n| n > 0 && rest.len() > n),
                    "last {last:?} n {n:?}"
                );
            }
        }
        let missing = reg.tags_page(&"team/none".parse().unwrap(), None, Some(1)).await;
        assert!(matches!(missing, Err(crate::RegistryError::NameUnknown(_))));
    }
}
