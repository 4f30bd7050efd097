//! Manifests are kept as the raw bytes the client pushed (their digest is the
//! digest of those bytes); this module reads just enough of them to validate a
//! push, find what they reference, and index their `subject`.

use crate::media_type::{self, essence};
use crate::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The size limit on manifests accepted by PUT. The spec asks for at least 4 MiB.
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// The deepest nesting of arrays and objects accepted anywhere in a manifest,
/// unknown fields included. Real manifests nest four or five levels (an
/// index's descriptor's platform's features); berth stores bytes that every
/// client will parse, and deep nesting overflows the stacks of recursive
/// parsers.
pub const MAX_JSON_DEPTH: usize = 64;

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
    #[error("manifest nests arrays and objects deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
    #[error("manifest has schemaVersion {0}; only schemaVersion 2 is supported")]
    SchemaVersion(i64),
    #[error("schema 1 manifests are not supported; push with a current client")]
    Schema1,
    #[error("manifest mediaType {field:?} does not match the request's Content-Type {header:?}")]
    MediaTypeMismatch { field: String, header: String },
    #[error(
        "manifest has no mediaType field, so the request's Content-Type must name its type \
         (application/vnd.oci.image.manifest.v1+json or application/vnd.oci.image.index.v1+json), not {0:?}"
    )]
    UndeclaredMediaType(String),
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
        // JSON is UTF-8, and serde_json checks it only in the strings it
        // decodes, not in those of unknown fields it skips (found by fuzzing).
        let text = std::str::from_utf8(bytes).map_err(|e| ManifestError::Json(format!("not UTF-8: {e}")))?;
        check_depth(bytes, MAX_JSON_DEPTH)?;
        let raw: Raw = serde_json::from_str(text).map_err(|e| ManifestError::Json(e.to_string()))?;
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

        // What berth will serve as the manifest's Content-Type must be what
        // the client declared: with a mediaType field, the request's
        // Content-Type must name the same type (parameters aside); without
        // one, the Content-Type is all there is, so it must name one of the
        // two types whose documents may omit the field (OCI image manifest
        // and index; Docker's schema 2 types require it).
        let media_type = match (&raw.media_type, header) {
            (Some(field), Some(h)) if h.eq_ignore_ascii_case(field) => field.clone(),
            (Some(field), h) => {
                return Err(ManifestError::MediaTypeMismatch {
                    field: field.clone(),
                    header: h.unwrap_or_default().to_owned(),
                })
            }
            (None, Some(h)) if h.eq_ignore_ascii_case(media_type::OCI_MANIFEST) => media_type::OCI_MANIFEST.to_owned(),
            (None, Some(h)) if h.eq_ignore_ascii_case(media_type::OCI_INDEX) => media_type::OCI_INDEX.to_owned(),
            (None, h) => return Err(ManifestError::UndeclaredMediaType(h.unwrap_or_default().to_owned())),
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

/// Refuses JSON nested deeper than `limit`, with one pass over the bytes and
/// before any parsing: serde_json skips unknown fields without a depth limit,
/// so a 100,000-deep array in an unknown field would otherwise be stored.
/// Brackets inside strings do not count; a string ends at an unescaped quote.
/// Malformed JSON is left for the parser to report.
fn check_depth(bytes: &[u8], limit: usize) -> Result<(), ManifestError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(ManifestError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
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
    fn content_type_must_match_the_media_type_field() {
        let body = image(media_type::OCI_MANIFEST);
        for ok in [
            media_type::OCI_MANIFEST.to_owned(),
            format!("{}; charset=utf-8", media_type::OCI_MANIFEST),
            format!(" {} ;q=1", media_type::OCI_MANIFEST.to_uppercase()),
        ] {
            let m = Manifest::parse(body.as_bytes(), Some(&ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(m.media_type, media_type::OCI_MANIFEST);
        }
        // What the hostile probe sent, and no Content-Type at all.
        for bad in [Some("text/plain"), Some("application/json"), Some(""), None] {
            assert!(
                matches!(
                    Manifest::parse(body.as_bytes(), bad),
                    Err(ManifestError::MediaTypeMismatch { .. })
                ),
                "{bad:?}"
            );
        }
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[]}}"#,
            media_type::DOCKER_MANIFEST_LIST
        );
        assert!(Manifest::parse(list.as_bytes(), Some(media_type::OCI_INDEX)).is_err());
        let m = Manifest::parse(list.as_bytes(), Some(media_type::DOCKER_MANIFEST_LIST)).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
    }

    #[test]
    fn without_a_media_type_field_the_content_type_decides() {
        let index = r#"{"schemaVersion":2,"manifests":[]}"#;
        let m = Manifest::parse(index.as_bytes(), Some(media_type::OCI_INDEX)).unwrap();
        assert_eq!(
            (m.media_type.as_str(), m.kind),
            (media_type::OCI_INDEX, ManifestKind::Index)
        );
        let image =
            image(media_type::OCI_MANIFEST).replace(&format!(r#""mediaType":"{}","#, media_type::OCI_MANIFEST), "");
        assert!(!image.contains(media_type::OCI_MANIFEST));
        let m = Manifest::parse(image.as_bytes(), Some(media_type::OCI_MANIFEST)).unwrap();
        assert_eq!(
            (m.media_type.as_str(), m.kind),
            (media_type::OCI_MANIFEST, ManifestKind::Image)
        );
        // Nothing declared, something else declared, or a Docker type (whose
        // documents must carry the field): refused.
        for bad in [
            None,
            Some("application/json"),
            Some(media_type::DOCKER_MANIFEST_LIST),
            Some(media_type::DOCKER_MANIFEST),
        ] {
            assert!(
                matches!(
                    Manifest::parse(index.as_bytes(), bad),
                    Err(ManifestError::UndeclaredMediaType(_))
                ),
                "{bad:?}"
            );
        }
        // The declared type must fit the document's shape.
        assert_eq!(
            Manifest::parse(index.as_bytes(), Some(media_type::OCI_MANIFEST)).unwrap_err(),
            ManifestError::MissingField("config")
        );
        assert_eq!(
            Manifest::parse(image.as_bytes(), Some(media_type::OCI_INDEX)).unwrap_err(),
            ManifestError::MissingField("manifests")
        );
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
            Manifest::parse(br#"{"schemaVersion":2,"mediaType":"text/plain"}"#, Some("text/plain")),
            Err(ManifestError::UnknownMediaType(_))
        ));
        assert!(matches!(
            Manifest::parse(
                format!(r#"{{"schemaVersion":2,"mediaType":"{}"}}"#, media_type::OCI_MANIFEST).as_bytes(),
                Some(media_type::OCI_MANIFEST)
            ),
            Err(ManifestError::MissingField("config"))
        ));
        let bad_digest = image(media_type::OCI_MANIFEST).replace("e3b0", "zzzz");
        assert!(matches!(
            Manifest::parse(bad_digest.as_bytes(), Some(media_type::OCI_MANIFEST)),
            Err(ManifestError::Json(_))
        ));
    }

    #[test]
    fn depth_is_bounded_everywhere() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let with_unknown =
            |value: &str| image(media_type::OCI_MANIFEST).replacen('{', &format!(r#"{{"x":{value},"#), 1);
        // The manifest itself is one level and the unknown field's array the next.
        let ok = with_unknown(&nested(MAX_JSON_DEPTH - 1));
        Manifest::parse(ok.as_bytes(), Some(media_type::OCI_MANIFEST)).unwrap();
        let deep = with_unknown(&nested(MAX_JSON_DEPTH));
        assert_eq!(
            Manifest::parse(deep.as_bytes(), Some(media_type::OCI_MANIFEST)).unwrap_err(),
            ManifestError::TooDeep
        );
        // What the hostile probe sent: 100,000 levels in an unknown field.
        let probe = with_unknown(&nested(100_000));
        assert_eq!(
            Manifest::parse(probe.as_bytes(), Some(media_type::OCI_MANIFEST)).unwrap_err(),
            ManifestError::TooDeep
        );
        // Deep in a known field, and in an annotation's value, is refused the same way.
        let in_annotations =
            image(media_type::OCI_MANIFEST).replacen('{', &format!(r#"{{"annotations":{{"a":{}}},"#, nested(100)), 1);
        assert_eq!(
            Manifest::parse(in_annotations.as_bytes(), None).unwrap_err(),
            ManifestError::TooDeep
        );
    }

    /// Regression (fuzz target `manifest`): invalid UTF-8 inside a string of
    /// an unknown field was accepted, because serde_json skips such strings
    /// without checking them.
    #[test]
    fn invalid_utf8_anywhere_is_refused() {
        let body = image(media_type::OCI_MANIFEST);
        let mut bytes = body.replacen('{', r#"{"sub`ject":"ap??ication","#, 1).into_bytes();
        let at = bytes.windows(2).position(|w| w == b"??").unwrap();
        bytes[at..at + 2].copy_from_slice(&[0x90, 0x99]);
        assert!(matches!(
            Manifest::parse(&bytes, Some(media_type::OCI_MANIFEST)),
            Err(ManifestError::Json(e)) if e.contains("UTF-8")
        ));
        // The same with valid UTF-8 is fine.
        let fine = body.replacen('{', r#"{"sub`ject":"apéication é","#, 1);
        Manifest::parse(fine.as_bytes(), Some(media_type::OCI_MANIFEST)).unwrap();
    }

    #[test]
    fn brackets_in_strings_do_not_count() {
        let deep_text = "[{".repeat(200);
        for value in [
            format!(r#""{deep_text}""#),
            // An escaped quote does not end the string; an escaped backslash does not escape the quote.
            format!(r#""\"{deep_text}""#),
            format!(r#""\\\"{deep_text}""#),
        ] {
            let body =
                image(media_type::OCI_MANIFEST).replacen('{', &format!(r#"{{"annotations":{{"a":{value}}},"#), 1);
            Manifest::parse(body.as_bytes(), Some(media_type::OCI_MANIFEST)).unwrap_or_else(|e| panic!("{e}: {body}"));
        }
        // An escaped backslash does not escape the quote after it: the string ends there.
        assert_eq!(check_depth(br#"{"a":"\\"}"#, 1), Ok(()));
        assert_eq!(check_depth(br#"{"a":"\\",[]}"#, 1), Err(ManifestError::TooDeep));
        assert_eq!(check_depth(&[b'['; 3], 2), Err(ManifestError::TooDeep));
        assert_eq!(check_depth(br#"["]]]]", [[]]]"#, 3), Ok(()));
        assert_eq!(check_depth(br#"["]]]]", [[[]]]]"#, 3), Err(ManifestError::TooDeep));
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
