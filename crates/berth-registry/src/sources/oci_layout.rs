//! OCI image layouts (image-spec `image-layout.md`), as a directory or a tar
//! archive (`skopeo copy ... oci-archive:x.tar`, and newer `docker save`).

use super::{BlobLocation, ImageSetBuilder, Placement, SourceError, Tree};
use berth_spec::manifest::{stored_media_type, MAX_MANIFEST_SIZE};
use berth_spec::{Descriptor, Digest, Manifest, ManifestKind};
use bytes::Bytes;
use serde::Deserialize;

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutFile {
    image_layout_version: String,
}

#[derive(Deserialize)]
struct IndexFile {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

pub fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.hex())
}

pub(crate) fn load(tree: &Tree, b: &mut ImageSetBuilder, placement: &Placement) -> Result<(), SourceError> {
    let file = tree.path().display().to_string();
    let fail = |what: String| SourceError::new(format!("{file}: {what}"));
    if let Some(bytes) = tree.read_small("oci-layout", 64 * 1024)? {
        let layout: LayoutFile =
            serde_json::from_slice(&bytes).map_err(|e| fail(format!("oci-layout is not valid: {e}")))?;
        if !layout.image_layout_version.starts_with("1.") {
            return Err(fail(format!(
                "unsupported imageLayoutVersion {:?}",
                layout.image_layout_version
            )));
        }
    }
    let index = tree
        .read_small("index.json", MAX_MANIFEST_SIZE as u64)?
        .ok_or_else(|| fail("index.json is missing".into()))?;
    let index: IndexFile = serde_json::from_slice(&index).map_err(|e| fail(format!("index.json is not valid: {e}")))?;
    if index.manifests.is_empty() {
        return Err(fail("index.json lists no images".into()));
    }
    for desc in &index.manifests {
        load_manifest(tree, b, desc, &fail)?;
        let annotations = desc.annotations.clone().unwrap_or_default();
        // containerd's full name beats the ref name, which newer docker save
        // sets to the bare tag.
        let name = annotations
            .get(CONTAINERD_NAME)
            .or_else(|| annotations.get(REF_NAME))
            .filter(|n| !n.is_empty());
        match name {
            Some(name) => match placement.place(name) {
                Ok((repo, tag)) => b.name(repo, tag, desc.digest.clone()),
                Err(e) => return Err(fail(format!("image {}: {e}", desc.digest))),
            },
            None => match placement.unnamed_repo() {
                Some(repo) => b.reach(repo.clone(), desc.digest.clone()),
                None => tracing::warn!(source = %file, image = %desc.digest,
                    "skipping an image without a name (give --repo to import it)"),
            },
        }
    }
    Ok(())
}

fn load_manifest(
    tree: &Tree,
    b: &mut ImageSetBuilder,
    desc: &Descriptor,
    fail: &dyn Fn(String) -> SourceError,
) -> Result<(), SourceError> {
    if b.has_manifest(&desc.digest) {
        return Ok(());
    }
    let path = blob_path(&desc.digest);
    let bytes = tree
        .read_small(&path, MAX_MANIFEST_SIZE as u64)?
        .ok_or_else(|| fail(format!("manifest {} is missing ({path})", desc.digest)))?;
    if bytes.len() as u64 != desc.size {
        return Err(fail(format!(
            "manifest {} is {} bytes, its descriptor says {}",
            desc.digest,
            bytes.len(),
            desc.size
        )));
    }
    let mut h = desc.digest.algorithm().digester();
    h.update(&bytes);
    let actual = h.finish();
    if actual != desc.digest {
        return Err(fail(format!(
            "manifest {} does not match its digest (it is {actual})",
            desc.digest
        )));
    }
    let media_type = if desc.media_type.is_empty() {
        stored_media_type(&bytes)
    } else {
        desc.media_type.clone()
    };
    let manifest =
        Manifest::parse(&bytes, Some(&media_type)).map_err(|e| fail(format!("manifest {}: {e}", desc.digest)))?;
    if desc.digest.algorithm() == berth_spec::Algorithm::Sha256 {
        b.add_manifest(Bytes::from(bytes), media_type);
    } else {
        return Err(fail(format!(
            "manifest {}: only sha256 manifests are supported",
            desc.digest
        )));
    }
    match manifest.kind {
        ManifestKind::Index => {
            for child in &manifest.manifests {
                if tree.locate(&blob_path(&child.digest)).is_some() {
                    load_manifest(tree, b, child, fail)?;
                } else {
                    // Saving one platform of a multi-platform image keeps the whole index.
                    tracing::debug!(source = %tree.path().display(), manifest = %child.digest,
                        "the archive lacks one manifest of an index");
                }
            }
        }
        ManifestKind::Image => {
            for blob in manifest.config.iter().chain(manifest.layers.iter()) {
                if b.has_blob(&blob.digest) {
                    continue;
                }
                match tree.locate(&blob_path(&blob.digest)) {
                    Some(region) if region.len == blob.size => {
                        b.add_blob(blob.digest.clone(), BlobLocation::File(region))?
                    }
                    Some(region) => {
                        return Err(fail(format!(
                            "blob {} is {} bytes, its descriptor says {} (truncated or corrupt)",
                            blob.digest, region.len, blob.size
                        )))
                    }
                    None if blob.is_foreign() => {}
                    None => tracing::warn!(source = %tree.path().display(), blob = %blob.digest,
                        "the archive lacks a blob of image {}; pulls of it will fail", desc.digest),
                }
            }
        }
    }
    Ok(())
}
