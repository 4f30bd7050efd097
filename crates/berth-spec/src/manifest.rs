//! Manifests are kept as the raw bytes the client pushed (their digest is the
//! digest of those bytes); this module reads just enough of them to validate a
//! push, find what they reference, and index their `subject`.

use crate::media_type::{self, essence};
use crate::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The size limit on manifests accepted by PUT. The spec asks for at least 4 MiB.
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "os.version")]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// Foreign (non-distributable) layers live elsewhere; a registry must not require them.
    pub fn is_foreign(&self) -> bool {
        !self.urls.is_empty() || self.media_type == media_type::DOCKER_FOREIGN_LAYER
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image or artifact manifest: a config and layers.
    Image,
    /// An index or manifest list: other manifests.
    Index,
}

/// What berth needs to know of a manifest; the bytes themselves stay untouched.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: String,
    pub kind: ManifestKind,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is larger than the limit of {MAX_MANIFEST_SIZE} bytes")]
    TooLarge,
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest has schemaVersion {0}; only schemaVersion 2 is supported")]
    SchemaVersion(i64),
    #[error("schema 1 manifests are not supported; push with a current client")]
    Schema1,
    #[error("manifest mediaType {field:?} does not match the Content-Type {header:?}")]
    MediaTypeMismatch { field: String, header: String },
    #[error("manifest media type {0:?} is not a manifest type this registry accepts")]
    UnknownMediaType(String),
    #[error("manifest is missing the required field {0:?}")]
    MissingField(&'static str),
    #[error("manifest field {0:?} is not allowed in this kind of manifest")]
    UnexpectedField(&'static str),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    artifact_type: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
    // Present only in schema 1.
    fs_layers: Option<serde_json::Value>,
}

impl Manifest {
    /// Parses and validates a pushed manifest. `content_type` is the request's
    /// Content-Type header, if any.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(ManifestError::TooLarge);
        }
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        let header = content_type.map(essence).filter(|h| !h.is_empty());
        if raw.fs_layers.is_some()
            || matches!(
                header,
                Some(media_type::DOCKER_SCHEMA1 | media_type::DOCKER_SCHEMA1_SIGNED)
            )
        {
            return Err(ManifestError::Schema1);
        }
        match raw.schema_version {
            Some(2) => {}
            Some(v) => return Err(ManifestError::SchemaVersion(v)),
            None => return Err(ManifestError::MissingField("schemaVersion")),
        }

        // The document's own mediaType wins; without one, a known Content-Type
        // decides, and failing that the shape of the document does.
        let media_type = match (&raw.media_type, header) {
            (Some(field), Some(h)) if field != h && is_manifest_type(h) => {
                return Err(ManifestError::MediaTypeMismatch {
                    field: field.clone(),
                    header: h.to_owned(),
                })
            }
            (Some(field), _) => field.clone(),
            (None, Some(h)) if is_manifest_type(h) => h.to_owned(),
            (None, _) if raw.manifests.is_some() => media_type::OCI_INDEX.to_owned(),
            (None, _) => media_type::OCI_MANIFEST.to_owned(),
        };

        let kind = if media_type::is_index(&media_type) {
            ManifestKind::Index
        } else if media_type::is_image_manifest(&media_type) {
            ManifestKind::Image
        } else {
            return Err(ManifestError::UnknownMediaType(media_type));
        };

        match kind {
            ManifestKind::Image => {
                if raw.config.is_none() {
                    return Err(ManifestError::MissingField("config"));
                }
                if raw.layers.is_none() {
                    return Err(ManifestError::MissingField("layers"));
                }
                if raw.manifests.is_some() {
                    return Err(ManifestError::UnexpectedField("manifests"));
                }
            }
            ManifestKind::Index => {
                if raw.manifests.is_none() {
                    return Err(ManifestError::MissingField("manifests"));
                }
                if raw.config.is_some() || raw.layers.is_some() {
                    return Err(ManifestError::UnexpectedField("layers"));
                }
            }
        }
        if media_type.starts_with("application/vnd.docker.") && raw.subject.is_some() {
            return Err(ManifestError::UnexpectedField("subject"));
        }

        // An image manifest's artifact type defaults to its config's media type
        // (image-spec "guidelines for artifact usage").
        let artifact_type = raw.artifact_type.clone().or_else(|| match kind {
            ManifestKind::Image => raw.config.as_ref().map(|c| c.media_type.clone()),
            ManifestKind::Index => None,
        });

        Ok(Manifest {
            media_type,
            kind,
            config: raw.config,
            layers: raw.layers.unwrap_or_default(),
            manifests: raw.manifests.unwrap_or_default(),
            subject: raw.subject,
            artifact_type,
            annotations: raw.annotations,
        })
    }

    /// How the referrers API lists this manifest (whose bytes have `digest`
    /// and `size`) under its subject: its media type, artifact type and annotations.
    pub fn referrer_descriptor(&self, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest,
            size,
            urls: Vec::new(),
            annotations: self.annotations.clone().filter(|a| !a.is_empty()),
            artifact_type: self.artifact_type.clone(),
            platform: None,
        }
    }

    /// Every blob this manifest needs to be present in its repository.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(self.layers.iter()).filter(|d| !d.is_foreign())
    }
}

fn is_manifest_type(t: &str) -> bool {
    media_type::is_index(t) || media_type::is_image_manifest(t)
}

/// Builds the body of `GET /v2/<name>/referrers/<digest>`: an OCI index of
/// the given descriptors, in the order given.
pub fn referrers_index(descriptors: &[Descriptor]) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Index<'a> {
        schema_version: u32,
        media_type: &'static str,
        manifests: &'a [Descriptor],
    }
    serde_json::to_vec(&Index {
        schema_version: 2,
        media_type: media_type::OCI_INDEX,
        manifests: descriptors,
    })
    .expect("serializing plain structs cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn image(media_type: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D}","size":0}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D}","size":0}}]}}"#
        )
    }

    #[test]
    fn parses_oci_image() {
        let m = Manifest::parse(
            image(media_type::OCI_MANIFEST).as_bytes(),
            Some(media_type::OCI_MANIFEST),
        )
        .unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.required_blobs().count(), 2);
        assert_eq!(m.artifact_type.as_deref(), Some(media_type::OCI_CONFIG));
    }

    #[test]
    fn media_type_from_header_or_shape() {
        let body = r#"{"schemaVersion":2,"manifests":[]}"#;
        let m = Manifest::parse(body.as_bytes(), None).unwrap();
        assert_eq!(m.media_type, media_type::OCI_INDEX);
        let m = Manifest::parse(body.as_bytes(), Some(media_type::DOCKER_MANIFEST_LIST)).unwrap();
        assert_eq!(m.media_type, media_type::DOCKER_MANIFEST_LIST);
    }

    #[test]
    fn rejects_mismatch_and_garbage() {
        let body = image(media_type::OCI_MANIFEST);
        assert!(matches!(
            Manifest::parse(body.as_bytes(), Some(media_type::DOCKER_MANIFEST)),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        assert!(matches!(Manifest::parse(b"{", None), Err(ManifestError::Json(_))));
        assert!(matches!(Manifest::parse(b"[]", None), Err(ManifestError::Json(_))));
        assert!(matches!(
            Manifest::parse(br#"{"schemaVersion":1,"fsLayers":[]}"#, None),
            Err(ManifestError::Schema1)
        ));
        assert!(matches!(
            Manifest::parse(br#"{"schemaVersion":2,"mediaType":"text/plain"}"#, None),
            Err(ManifestError::UnknownMediaType(_))
        ));
        assert!(matches!(
            Manifest::parse(
                format!(r#"{{"schemaVersion":2,"mediaType":"{}"}}"#, media_type::OCI_MANIFEST).as_bytes(),
                None
            ),
            Err(ManifestError::MissingField("config"))
        ));
        let bad_digest = image(media_type::OCI_MANIFEST).replace("e3b0", "zzzz");
        assert!(matches!(
            Manifest::parse(bad_digest.as_bytes(), None),
            Err(ManifestError::Json(_))
        ));
    }

    #[test]
    fn referrers_index_shape() {
        let v: serde_json::Value = serde_json::from_slice(&referrers_index(&[])).unwrap();
        assert_eq!(v["schemaVersion"], 2);
        assert_eq!(v["mediaType"], media_type::OCI_INDEX);
        assert_eq!(v["manifests"], serde_json::json!([]));
    }
}

/// The media type of a stored manifest, read leniently: stored manifests were
/// validated when pushed (possibly by another registry, possibly long ago), so
/// this never fails; it only decides which Content-Type to serve.
pub fn stored_media_type(bytes: &[u8]) -> String {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Peek {
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
        signatures: Option<serde::de::IgnoredAny>,
        schema_version: Option<i64>,
    }
    match serde_json::from_slice::<Peek>(bytes) {
        Ok(Peek {
            media_type: Some(t), ..
        }) => t,
        Ok(Peek {
            schema_version: Some(1),
            signatures: Some(_),
            ..
        }) => media_type::DOCKER_SCHEMA1_SIGNED.to_owned(),
        Ok(Peek {
            schema_version: Some(1),
            ..
        }) => media_type::DOCKER_SCHEMA1.to_owned(),
        Ok(Peek { manifests: Some(_), .. }) => media_type::OCI_INDEX.to_owned(),
        _ => media_type::OCI_MANIFEST.to_owned(),
    }
}

#[cfg(test)]
mod stored_tests {
    use super::*;

    #[test]
    fn stored_media_types() {
        assert_eq!(stored_media_type(br#"{"mediaType":"x/y"}"#), "x/y");
        assert_eq!(
            stored_media_type(br#"{"schemaVersion":2,"manifests":[]}"#),
            media_type::OCI_INDEX
        );
        assert_eq!(
            stored_media_type(br#"{"schemaVersion":2,"config":{}}"#),
            media_type::OCI_MANIFEST
        );
        assert_eq!(
            stored_media_type(br#"{"schemaVersion":1,"signatures":[]}"#),
            media_type::DOCKER_SCHEMA1_SIGNED
        );
        assert_eq!(stored_media_type(b"garbage"), media_type::OCI_MANIFEST);
    }
}
