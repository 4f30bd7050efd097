//! What a registry's storage holds, named by the layout's keys: the walk
//! `berth migrate` copies a registry from one storage to another by.
//!
//! The copy is of the layout itself (links, tags, referrers index) and not
//! a replay of pushes, so that the destination holds exactly what the
//! source does (tag history, untagged manifests, referrers), whatever the
//! backend. The keys come from [`layout`] here, so the command that copies
//! knows no path.

use crate::{Registry, Result};
use berth_spec::{Digest, RepoName, Tag};
use berth_storage::layout;
use std::collections::BTreeSet;

/// Everything one stored repository holds, as found by one walk.
#[derive(Debug, Clone)]
pub struct RepositoryInventory {
    pub name: RepoName,
    /// Blobs linked into the repository (`_layers`): layers and configs.
    pub layers: Vec<Digest>,
    /// Manifests stored in the repository (`_manifests/revisions`).
    pub revisions: Vec<Digest>,
    /// `(subject, referrer)`: the entries of berth's referrers index.
    pub referrers: Vec<(Digest, Digest)>,
    /// Every tag directory, with the digests the tag has pointed at (its
    /// `index`). A tag's `current/link` may be absent (a crash between the
    /// two writes): the copy reads it and skips the tag then.
    pub tags: Vec<(Tag, Vec<Digest>)>,
}

impl RepositoryInventory {
    /// The blobs the repository refers to: its layers and the bytes of its
    /// manifests (both live in the one blob store).
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        self.layers.iter().chain(&self.revisions)
    }

    /// The keys of the links to copy once the blobs are in place and before
    /// any tag: revision links, layer links and referrers index entries.
    pub fn link_keys(&self) -> Vec<LinkKey> {
        let name = &self.name;
        let mut keys = Vec::new();
        for d in &self.revisions {
            keys.push(LinkKey::Revision(layout::manifest_revision_link(name, d)));
        }
        for d in &self.layers {
            keys.push(LinkKey::Layer(layout::layer_link(name, d)));
        }
        for (subject, referrer) in &self.referrers {
            keys.push(LinkKey::Referrer(layout::referrer_entry(name, subject, referrer)));
        }
        keys
    }

    /// The history (`index`) links of a tag that points at `current`, to
    /// write before its `current/link`, since the tag exists when that does.
    /// `current` is included: the tag may have moved since the walk.
    pub fn tag_history_keys(&self, tag: &Tag, history: &[Digest], current: &Digest) -> Vec<String> {
        let mut keys: Vec<String> = history
            .iter()
            .map(|d| layout::tag_index_link(&self.name, tag, d))
            .collect();
        if !history.contains(current) {
            keys.push(layout::tag_index_link(&self.name, tag, current));
        }
        keys
    }
}

/// A link to copy, by what it is (for counting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKey {
    Revision(String),
    Layer(String),
    Referrer(String),
}

impl LinkKey {
    pub fn key(&self) -> &str {
        match self {
            LinkKey::Revision(k) | LinkKey::Layer(k) | LinkKey::Referrer(k) => k,
        }
    }
}

impl Registry {
    /// Every repository in storage (not the read-only sources), sorted.
    pub async fn stored_repository_names(&self) -> Result<Vec<RepoName>> {
        let mut names = self.stored_repositories().await?;
        names.sort();
        Ok(names)
    }

    /// What `name` holds in storage, from one walk of its directories.
    pub async fn inventory(&self, name: &RepoName) -> Result<RepositoryInventory> {
        let mut inv = RepositoryInventory {
            name: name.clone(),
            layers: self.list_digest_dirs(&layout::layers_dir(name)).await?,
            revisions: self.list_digest_dirs(&layout::revisions_dir(name)).await?,
            referrers: Vec::new(),
            tags: Vec::new(),
        };
        inv.layers.sort();
        inv.revisions.sort();
        let root = layout::referrers_root(name);
        for subject in self.list_digest_dirs(&root).await? {
            let mut referrers: Vec<Digest> = self
                .backend
                .list(&layout::referrers_dir(name, &subject))
                .await?
                .iter()
                .filter_map(|entry| layout::parse_referrer_entry_name(entry))
                .collect();
            referrers.sort();
            inv.referrers
                .extend(referrers.into_iter().map(|r| (subject.clone(), r)));
        }
        let mut tags: BTreeSet<Tag> = BTreeSet::new();
        for t in self.backend.list(&layout::tags_dir(name)).await? {
            if let Ok(t) = t.parse::<Tag>() {
                tags.insert(t);
            }
        }
        for tag in tags {
            let mut history = self.list_digest_dirs(&layout::tag_index_dir(name, &tag)).await?;
            history.sort();
            inv.tags.push((tag, history));
        }
        Ok(inv)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Registry, RegistryConfig, RegistryError};
    use berth_spec::{Digest, Reference, RepoName, Tag};
    use berth_storage::{layout, Backend, FsBackend};
    use bytes::Bytes;
    use futures::StreamExt;
    use std::sync::Arc;

    fn digest_of(bytes: &[u8]) -> Digest {
        let mut d = berth_spec::Algorithm::Sha256.digester();
        d.update(bytes);
        d.finish()
    }

    fn body(bytes: &'static [u8]) -> berth_storage::ByteStream {
        futures::stream::once(async move { Ok(Bytes::from_static(bytes)) }).boxed()
    }

    /// The walk finds what a push stored, tag history included; `store_blob`
    /// stores verified bytes without a link, and nothing for wrong bytes.
    #[tokio::test]
    async fn inventory_lists_a_push_and_store_blob_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(FsBackend::new(dir.path()));
        let reg = Registry::new(backend.clone(), RegistryConfig::default());
        let name: RepoName = "team/app".parse().unwrap();
        let config: &'static [u8] = br#"{"architecture":"amd64","os":"linux"}"#;
        let layer: &'static [u8] = b"layer bytes";
        let (config_d, layer_d) = (digest_of(config), digest_of(layer));
        reg.put_blob(&name, &config_d, body(config)).await.unwrap();
        reg.put_blob(&name, &layer_d, body(layer)).await.unwrap();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_d}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        );
        let tag: Tag = "v1".parse().unwrap();
        let put = reg
            .put_manifest(
                &name,
                &Reference::Tag(tag.clone()),
                Some("application/vnd.oci.image.manifest.v1+json"),
                Bytes::from(manifest),
                &[],
            )
            .await
            .unwrap();

        assert_eq!(reg.stored_repository_names().await.unwrap(), vec![name.clone()]);
        let inv = reg.inventory(&name).await.unwrap();
        let mut layers = vec![config_d.clone(), layer_d.clone()];
        layers.sort();
        assert_eq!(inv.layers, layers);
        assert_eq!(inv.revisions, vec![put.digest.clone()]);
        assert_eq!(inv.tags, vec![(tag.clone(), vec![put.digest.clone()])]);
        assert_eq!(inv.blobs().count(), 3);
        assert_eq!(inv.link_keys().len(), 3);
        assert_eq!(
            inv.tag_history_keys(&tag, &inv.tags[0].1, &put.digest),
            vec![layout::tag_index_link(&name, &tag, &put.digest)]
        );

        let other: RepoName = "team/other".parse().unwrap();
        let good: &'static [u8] = b"good bytes";
        let good_d = digest_of(good);
        assert_eq!(reg.store_blob(&other, &good_d, body(good)).await.unwrap(), 10);
        assert!(backend.head(&layout::blob_data(&good_d)).await.is_ok());
        assert!(
            backend.head(&layout::layer_link(&other, &good_d)).await.is_err(),
            "no link"
        );
        let claimed = digest_of(b"the real bytes");
        match reg.store_blob(&other, &claimed, body(b"other bytes")).await {
            Err(RegistryError::DigestMismatch { expected, .. }) => assert_eq!(expected, claimed),
            r => panic!("expected a digest mismatch, got {r:?}"),
        }
        assert!(backend
            .head(&layout::blob_data(&claimed))
            .await
            .unwrap_err()
            .is_not_found());
        assert!(
            backend.list(&layout::uploads_dir(&other)).await.unwrap().is_empty(),
            "staged data removed"
        );
    }
}
