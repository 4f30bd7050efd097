//! Augmented images: an image (from an upstream through the mirror, from a
//! source, or pushed here) served with extra layers and settings, without a
//! build. A read path like the mirror, not a special case of the handlers:
//! `get_manifest`, `get_blob` and `tags` ask [`Registry::augmented_for_read`]
//! first.
//!
//! - An [`Augmentation`] (layers, env, entrypoint, cmd, working dir, labels)
//!   is named by the digest of its canonical JSON, so the same request gives
//!   the same name everywhere. It is stored as an OCI artifact tagged
//!   `definition` in the repository `aug/<id>`: its config is the JSON, its
//!   layers the injected layers, so garbage collection keeps them like any
//!   tagged image and every replica of a shared store sees it.
//! - `aug/<id>/<base>:<tag>` reads `<base>:<tag>` through `get_manifest`,
//!   appends the layers to each platform image (to the one image, or to
//!   every platform of an index), rewrites each config ([`rewrite`]), and
//!   stores the new configs and manifests under `aug/<id>/<base>` (blob,
//!   revision link, layer links), so later reads by digest are normal reads.
//!   The documents depend only on the base's content and the augmentation:
//!   the same digests on every berth, every time.
//! - Blobs of `aug/<id>/<base>` are the injected layers and new configs
//!   (linked there) or else the base's own, read through `get_blob` of the
//!   base (the mirror's cache, a redirect, or storage).
//! - `aug/...` is read-only; reading it needs what reading `<base>` needs.

pub mod pack;
pub mod rewrite;
mod store;

use crate::{BlobContent, ManifestContent, Registry, RegistryError, Result};
use berth_spec::manifest::stored_media_type;
use berth_spec::media_type;
use berth_spec::range::ByteRange;
use berth_spec::{Digest, Manifest, Reference, RepoName, Tag};
use berth_storage::layout;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// The first component of every augmented name.
pub const PREFIX: &str = "aug";
/// The tag of an augmentation's definition in `aug/<id>`.
pub const DEFINITION_TAG: &str = "definition";
/// The media type of an augmentation's definition (the artifact's config).
pub const DEFINITION_MEDIA_TYPE: &str = "application/vnd.berth.augmentation.v1+json";
/// Hex digits of the definition's digest in the name: 128 bits.
const ID_LEN: usize = 32;
/// The largest base config berth reads into memory to rewrite (real ones are
/// a few KiB; this bounds what a hostile upstream can make berth hold).
const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// Augmented manifests remembered by (augmentation, base digest).
const MEMO_ENTRIES: usize = 4096;

/// A layer to inject, as the image config and manifest name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectedLayer {
    /// The blob (gzip-compressed or plain tar).
    pub digest: Digest,
    pub size: u64,
    /// The digest of the uncompressed tar.
    pub diff_id: Digest,
    pub compressed: bool,
}

/// What is added to an image. Field order is the canonical JSON's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augmentation {
    pub layers: Vec<InjectedLayer>,
    /// `NAME=value`; replaces the base's variable of that name, or is added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Augmentation {
    /// Whether it changes anything beside the layers.
    pub fn changes_settings(&self) -> bool {
        !self.env.is_empty()
            || self.entrypoint.is_some()
            || self.cmd.is_some()
            || self.working_dir.is_some()
            || !self.labels.is_empty()
    }

    /// The JSON its name is derived from: fields in declaration order, labels
    /// sorted, no whitespace.
    pub fn canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("augmentations serialize")
    }

    /// Its name: the first 32 hex digits of the SHA-256 of its canonical JSON.
    pub fn id(&self) -> String {
        Digest::sha256_of(&self.canonical_json()).hex()[..ID_LEN].to_owned()
    }

    fn validate(&self) -> Result<()> {
        let invalid = |why: String| Err(RegistryError::Augmentation(format!("augmentation: {why}")));
        if self.layers.is_empty() && !self.changes_settings() {
            return invalid("it adds no layer and changes no setting".into());
        }
        if let Some(bad) = self
            .env
            .iter()
            .find(|e| e.split('=').next().is_none_or(str::is_empty) || !e.contains('='))
        {
            return invalid(format!("env entry {bad:?} is not NAME=value"));
        }
        Ok(())
    }
}

/// Whether `id` has the form of an augmentation's id (32 lowercase hex digits).
pub fn is_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Splits `aug/<id>/<base>` into the id and the base name.
pub fn split_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(PREFIX)?.strip_prefix('/')?;
    let (id, base) = rest.split_once('/')?;
    (is_id(id) && !base.is_empty() && split_name(base).is_none() && base != PREFIX && !base.starts_with("aug/"))
        .then_some((id, base))
}

/// An augmented repository being read.
pub(crate) struct Augmented {
    id: String,
    aug: Arc<Augmentation>,
    /// `aug/<id>/<base>`: where its documents are stored.
    local: RepoName,
    base: RepoName,
}

/// Definitions read so far (they never change under their id) and
/// augmented manifests by (id, base digest).
#[derive(Default)]
pub(crate) struct AugmentState {
    definitions: Mutex<HashMap<String, Arc<Augmentation>>>,
    memo: Mutex<HashMap<(String, Digest), ManifestContent>>,
}

fn definition_repository(id: &str) -> RepoName {
    format!("{PREFIX}/{id}")
        .parse()
        .expect("aug/<hex> is a repository name")
}

fn layer_media_type(l: &InjectedLayer) -> &'static str {
    if l.compressed {
        media_type::OCI_LAYER_GZIP
    } else {
        media_type::OCI_LAYER_TAR
    }
}

impl Registry {
    /// Stores `aug` (whose layers must already be blobs here) and returns its id.
    pub async fn define_augmentation(&self, aug: &Augmentation) -> Result<String> {
        aug.validate()?;
        for layer in &aug.layers {
            let size = match self.backend.head(&layout::blob_data(&layer.digest)).await {
                Ok(meta) => meta.size,
                Err(e) if e.is_not_found() => return Err(RegistryError::BlobUnknown(layer.digest.clone())),
                Err(e) => return Err(e.into()),
            };
            if size != layer.size {
                return Err(RegistryError::DescriptorSizeMismatch {
                    digest: layer.digest.clone(),
                    declared: layer.size,
                    stored: size,
                });
            }
        }
        let id = aug.id();
        let repo = definition_repository(&id);
        let json = aug.canonical_json();
        let config = Digest::sha256_of(&json);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "artifactType": DEFINITION_MEDIA_TYPE,
            "config": {"mediaType": DEFINITION_MEDIA_TYPE, "digest": config.to_string(), "size": json.len()},
            "layers": aug.layers.iter().map(|l| serde_json::json!({
                "mediaType": layer_media_type(l), "digest": l.digest.to_string(), "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let manifest = rewrite::Document::canonical_bytes(&manifest);
        for layer in &aug.layers {
            self.link_blob(&repo, &layer.digest).await?;
        }
        self.store_document(&repo, &config, json, false).await?;
        let digest = Digest::sha256_of(&manifest);
        self.store_document(&repo, &digest, manifest, true).await?;
        let link = Bytes::from(layout::link_content(&digest));
        let tag: Tag = DEFINITION_TAG.parse().expect("a tag");
        self.backend
            .put(&layout::tag_index_link(&repo, &tag, &digest), link.clone())
            .await?;
        self.backend.put(&layout::tag_current_link(&repo, &tag), link).await?;
        self.augment
            .definitions
            .lock()
            .unwrap()
            .insert(id.clone(), Arc::new(aug.clone()));
        Ok(id)
    }

    /// The augmentation named `id`, if it was defined.
    pub async fn augmentation(&self, id: &str) -> Result<Option<Arc<Augmentation>>> {
        if let Some(a) = self.augment.definitions.lock().unwrap().get(id) {
            return Ok(Some(a.clone()));
        }
        let repo = definition_repository(id);
        let tag: Tag = DEFINITION_TAG.parse().expect("a tag");
        let Some(digest) = self.resolve_tag(&repo, &tag).await? else {
            return Ok(None);
        };
        let Some(manifest) = self.read_manifest_blob(&digest).await? else {
            return Ok(None);
        };
        let config = Manifest::parse(&manifest.bytes, Some(&manifest.media_type))?
            .config
            .ok_or_else(|| RegistryError::Augmentation(format!("augmentation {id}: its definition has no config")))?;
        let json = match self.backend.get(&layout::blob_data(&config.digest)).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let aug: Augmentation = serde_json::from_slice(&json)
            .map_err(|e| RegistryError::Augmentation(format!("augmentation {id}: unreadable definition: {e}")))?;
        if aug.id() != id {
            tracing::error!(
                id,
                "an augmentation's stored definition does not have its id; ignoring it"
            );
            return Ok(None);
        }
        let aug = Arc::new(aug);
        self.augment
            .definitions
            .lock()
            .unwrap()
            .insert(id.to_owned(), aug.clone());
        Ok(Some(aug))
    }

    /// The augmented repository a read of `name` goes to.
    pub(crate) async fn augmented_for_read(&self, name: &RepoName) -> Result<Option<Augmented>> {
        let Some((id, base)) = split_name(name.as_str()) else {
            return Ok(None);
        };
        let base: RepoName = base.parse()?;
        let aug = self
            .augmentation(id)
            .await?
            .ok_or_else(|| RegistryError::NameUnknown(name.clone()))?;
        Ok(Some(Augmented {
            id: id.to_owned(),
            aug,
            local: name.clone(),
            base,
        }))
    }

    pub(crate) async fn augmented_manifest(&self, a: &Augmented, reference: &Reference) -> Result<ManifestContent> {
        if let Reference::Digest(digest) = reference {
            // Only what a read by tag made (a digest names exact bytes).
            if self.exists(&layout::manifest_revision_link(&a.local, digest)).await? {
                if let Some(m) = self.read_manifest_blob(digest).await? {
                    return Ok(m);
                }
            }
            return Err(RegistryError::ManifestUnknown(reference.to_string()));
        }
        let base = Box::pin(self.get_manifest(&a.base, reference)).await?;
        let key = (a.id.clone(), base.digest.clone());
        if let Some(m) = self.augment.memo.lock().unwrap().get(&key) {
            return Ok(m.clone());
        }
        let augmented = if media_type::is_index(&base.media_type) {
            self.augment_index(a, &base).await?
        } else {
            self.augment_image(a, &base).await?
        };
        let mut memo = self.augment.memo.lock().unwrap();
        if memo.len() >= MEMO_ENTRIES {
            memo.clear();
        }
        memo.insert(key, augmented.clone());
        Ok(augmented)
    }

    async fn augment_index(&self, a: &Augmented, base: &ManifestContent) -> Result<ManifestContent> {
        let invalid = |e: rewrite::RewriteError| RegistryError::Augmentation(format!("cannot augment {}: {e}", a.base));
        let mut augmented = Vec::new();
        for entry in rewrite::index_entries(&base.bytes).map_err(invalid)? {
            augmented.push(match entry {
                rewrite::Entry::Dropped => None,
                rewrite::Entry::Image(digest) => {
                    let child = Box::pin(self.get_manifest(&a.base, &Reference::Digest(digest))).await?;
                    if !media_type::is_image_manifest(&child.media_type) {
                        return Err(RegistryError::Augmentation(format!(
                            "cannot augment {}: index entry {} is a {}, not an image",
                            a.base, child.digest, child.media_type
                        )));
                    }
                    let new = self.augment_image(a, &child).await?;
                    Some(rewrite::Document {
                        digest: new.digest,
                        bytes: new.bytes.to_vec(),
                    })
                }
            });
        }
        if augmented.iter().all(Option::is_none) {
            return Err(RegistryError::Augmentation(format!(
                "cannot augment {}: its index lists no platform image",
                a.base
            )));
        }
        let doc = rewrite::index(&base.bytes, &augmented).map_err(invalid)?;
        self.store_document(&a.local, &doc.digest, doc.bytes, true).await
    }

    async fn augment_image(&self, a: &Augmented, base: &ManifestContent) -> Result<ManifestContent> {
        let invalid = |e: rewrite::RewriteError| RegistryError::Augmentation(format!("cannot augment {}: {e}", a.base));
        if !media_type::is_image_manifest(&base.media_type) {
            return Err(RegistryError::Augmentation(format!(
                "cannot augment {}: it is a {}, not an image",
                a.base, base.media_type
            )));
        }
        let manifest = Manifest::parse(&base.bytes, Some(&base.media_type))?;
        let config = manifest
            .config
            .ok_or_else(|| RegistryError::Augmentation(format!("cannot augment {}: no config", a.base)))?;
        if config.size > MAX_CONFIG_BYTES {
            return Err(RegistryError::Augmentation(format!(
                "cannot augment {}: its config has {} bytes (at most {MAX_CONFIG_BYTES})",
                a.base, config.size
            )));
        }
        let base_config = self.read_small_blob(&a.base, &config.digest).await?;
        let new_config = rewrite::config(&base_config, &a.aug, &a.id).map_err(invalid)?;
        let new_manifest = rewrite::image_manifest(&base.bytes, &new_config, &a.aug).map_err(invalid)?;
        for layer in &a.aug.layers {
            self.link_blob(&a.local, &layer.digest).await?;
        }
        self.store_document(&a.local, &new_config.digest, new_config.bytes, false)
            .await?;
        self.store_document(&a.local, &new_manifest.digest, new_manifest.bytes, true)
            .await
    }

    /// A config blob of `name`, whole, checked against its digest.
    async fn read_small_blob(&self, name: &RepoName, digest: &Digest) -> Result<Vec<u8>> {
        let content = Box::pin(self.get_blob(name, digest, None, false)).await?;
        if content.size > MAX_CONFIG_BYTES {
            return Err(RegistryError::Augmentation(format!(
                "blob {digest} has {} bytes, more than a config may have",
                content.size
            )));
        }
        let body = content
            .body
            .ok_or_else(|| RegistryError::Augmentation(format!("blob {digest} is not served by this registry")))?;
        let mut stream = body.into_stream(64 << 10);
        let mut bytes = Vec::with_capacity(content.size as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(RegistryError::Body)?;
            if bytes.len() as u64 + chunk.len() as u64 > MAX_CONFIG_BYTES {
                return Err(RegistryError::Augmentation(format!(
                    "blob {digest} is larger than it said"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let mut h = digest.algorithm().digester();
        h.update(&bytes);
        if &h.finish() != digest {
            return Err(RegistryError::Upstream(format!(
                "blob {digest} does not match its digest"
            )));
        }
        Ok(bytes)
    }

    /// Stores a document berth made under `name`: its bytes in the blob
    /// store, and a revision link (a manifest) or a layer link (a config).
    async fn store_document(
        &self,
        name: &RepoName,
        digest: &Digest,
        bytes: Vec<u8>,
        manifest: bool,
    ) -> Result<ManifestContent> {
        let bytes = Bytes::from(bytes);
        if !self.exists(&layout::blob_data(digest)).await? {
            self.backend.put(&layout::blob_data(digest), bytes.clone()).await?;
        }
        let link = Bytes::from(layout::link_content(digest));
        if manifest {
            self.backend
                .put(&layout::manifest_revision_link(name, digest), link)
                .await?;
        } else {
            self.link_blob(name, digest).await?;
        }
        let content = ManifestContent {
            digest: digest.clone(),
            media_type: stored_media_type(&bytes),
            bytes,
        };
        if manifest {
            self.manifest_cache.insert(content.clone());
        }
        Ok(content)
    }

    pub(crate) async fn augmented_blob(
        &self,
        a: &Augmented,
        digest: &Digest,
        range: Option<ByteRange>,
        head_only: bool,
    ) -> Result<BlobContent> {
        match self.local_blob(&a.local, digest, range, head_only).await {
            Err(RegistryError::BlobUnknown(_)) => Box::pin(self.get_blob(&a.base, digest, range, head_only)).await,
            other => other,
        }
    }

    pub(crate) async fn augmented_tags(&self, a: &Augmented) -> Result<Vec<String>> {
        Box::pin(self.tags(&a.base)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_id_and_base_and_nothing_else_does() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            split_name(&format!("aug/{id}/docker.io/library/busybox")),
            Some((id, "docker.io/library/busybox"))
        );
        assert_eq!(split_name(&format!("aug/{id}")), None);
        assert_eq!(split_name(&format!("aug/{id}/aug/{id}/x")), None);
        assert_eq!(split_name("aug/short/x"), None);
        assert_eq!(split_name(&format!("aug/{}/x", id.to_uppercase())), None);
        assert_eq!(split_name(&format!("augx/{id}/x")), None);
        assert_eq!(split_name("library/busybox"), None);
    }

    #[test]
    fn the_id_depends_on_every_field_and_only_on_content() {
        let digest: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let base = Augmentation {
            layers: vec![InjectedLayer {
                digest: digest.clone(),
                size: 1,
                diff_id: digest,
                compressed: true,
            }],
            ..Augmentation::default()
        };
        let id = base.id();
        assert_eq!(id.len(), ID_LEN);
        assert_eq!(base.clone().id(), id);
        let parsed: Augmentation = serde_json::from_slice(&base.canonical_json()).unwrap();
        assert_eq!(parsed.id(), id);
        let mut other = base.clone();
        other.working_dir = Some("/".into());
        assert_ne!(other.id(), id);
        let mut other = base.clone();
        other.labels.insert("a".into(), "b".into());
        assert_ne!(other.id(), id);
    }

    #[test]
    fn empty_augmentations_and_bad_env_are_refused() {
        assert!(Augmentation::default().validate().is_err());
        let env = |e: &str| Augmentation {
            env: vec![e.into()],
            ..Augmentation::default()
        };
        assert!(env("A=1").validate().is_ok());
        assert!(env("A").validate().is_err());
        assert!(env("=1").validate().is_err());
    }
}
