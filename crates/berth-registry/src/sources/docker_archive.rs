//! Classic `docker save` tarballs: a `manifest.json` listing each image's
//! config file, tags and uncompressed layer tars. No registry manifest is
//! stored, so one is synthesized: docker schema 2 with the config as stored
//! and `rootfs.diff.tar` (uncompressed) layers, whose digests are the config's
//! `diff_ids`. Those digests are checked like every other blob's: before the
//! layer is first served.

use super::{BlobLocation, ImageSetBuilder, Placement, SourceError, Tree};
use berth_spec::{media_type, Digest};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Image configs are small JSON documents; anything this big is not one.
const MAX_CONFIG_SIZE: u64 = 16 << 20;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct Config {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<Digest>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SchemaTwo<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Desc<'a>,
    layers: Vec<Desc<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Desc<'a> {
    media_type: &'a str,
    size: u64,
    digest: &'a Digest,
}

pub(crate) fn load(tree: &Tree, b: &mut ImageSetBuilder, placement: &Placement) -> Result<(), SourceError> {
    let file = tree.path().display().to_string();
    let fail = |what: String| SourceError::new(format!("{file}: {what}"));
    let bytes = tree
        .read_small("manifest.json", 16 << 20)?
        .ok_or_else(|| fail("manifest.json is missing".into()))?;
    let entries: Vec<Entry> =
        serde_json::from_slice(&bytes).map_err(|e| fail(format!("manifest.json is not valid: {e}")))?;
    if entries.is_empty() {
        return Err(fail("manifest.json lists no images".into()));
    }
    for entry in entries {
        let config_bytes = tree
            .read_small(&entry.config, MAX_CONFIG_SIZE)?
            .ok_or_else(|| fail(format!("config {} is missing", entry.config)))?;
        let config: Config = serde_json::from_slice(&config_bytes)
            .map_err(|e| fail(format!("config {} is not a valid image config: {e}", entry.config)))?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(fail(format!(
                "config {} lists {} layers, manifest.json {}",
                entry.config,
                config.rootfs.diff_ids.len(),
                entry.layers.len()
            )));
        }
        let config_digest = Digest::sha256_of(&config_bytes);
        let config_size = config_bytes.len() as u64;
        b.add_blob(config_digest.clone(), BlobLocation::Bytes(Bytes::from(config_bytes)))?;
        let mut layers = Vec::new();
        for (path, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            let region = tree
                .locate(path)
                .ok_or_else(|| fail(format!("layer {path} is missing")))?;
            layers.push((diff_id, region.len));
            if !b.has_blob(diff_id) {
                b.add_blob(diff_id.clone(), BlobLocation::File(region))?;
            }
        }
        let manifest = SchemaTwo {
            schema_version: 2,
            media_type: media_type::DOCKER_MANIFEST,
            config: Desc {
                media_type: media_type::DOCKER_CONFIG,
                size: config_size,
                digest: &config_digest,
            },
            layers: layers
                .iter()
                .map(|(digest, size)| Desc {
                    media_type: media_type::DOCKER_LAYER_TAR,
                    size: *size,
                    digest,
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
        let digest = b.add_manifest(Bytes::from(bytes), media_type::DOCKER_MANIFEST.to_owned());
        let tags = entry.repo_tags.unwrap_or_default();
        if tags.is_empty() {
            match placement.unnamed_repo() {
                Some(repo) => b.reach(repo.clone(), digest.clone()),
                None => tracing::warn!(source = %file, config = %entry.config,
                    "skipping an image without a name (give --repo to import it)"),
            }
        }
        for tag in tags {
            let (repo, tag) = placement
                .place(&tag)
                .map_err(|e| fail(format!("image {}: {e}", entry.config)))?;
            b.name(repo, tag, digest.clone());
        }
    }
    Ok(())
}
