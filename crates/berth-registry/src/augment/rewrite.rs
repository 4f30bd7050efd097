//! The pure part of augmenting an image: new config, manifest and index
//! documents from the base's, with no I/O, so that the same inputs give the
//! same bytes on every berth (the documents' digests are the image's name).
//!
//! Documents are rewritten as `serde_json::Value`s, so fields berth does not
//! know survive, and written with every object's keys sorted and no
//! whitespace: the output depends only on the content of the inputs, not on
//! their formatting or on how serde_json orders maps in this build.

use super::Augmentation;
use berth_spec::media_type::{self, DOCKER_LAYER_GZIP, DOCKER_LAYER_TAR, OCI_LAYER_GZIP, OCI_LAYER_TAR};
use berth_spec::Digest;
use serde_json::{Map, Value};

/// Why a base document cannot be augmented.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("the base image's {what} is not valid JSON: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("the base image's {0} is not what an image has: {1}")]
    Shape(&'static str, &'static str),
}

type Result<T> = std::result::Result<T, RewriteError>;

/// A document and the digest of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub bytes: Vec<u8>,
    pub digest: Digest,
}

impl Document {
    fn new(value: &Value) -> Document {
        let bytes = Document::canonical_bytes(value);
        Document {
            digest: Digest::sha256_of(&bytes),
            bytes,
        }
    }
}

impl Document {
    /// `value` written with sorted keys and no whitespace.
    pub fn canonical_bytes(value: &Value) -> Vec<u8> {
        serde_json::to_vec(&canonical(value)).expect("JSON values serialize")
    }
}

/// `value` with the keys of every object in sorted order.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), canonical(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

fn parse(what: &'static str, bytes: &[u8]) -> Result<Map<String, Value>> {
    match serde_json::from_slice(bytes).map_err(|source| RewriteError::Json { what, source })? {
        Value::Object(map) => Ok(map),
        _ => Err(RewriteError::Shape(what, "not a JSON object")),
    }
}

/// The image config with the augmentation's layers and settings: `diff_ids`
/// and `history` extended, `Env` entries replaced by name or added,
/// `Entrypoint`, `Cmd` and `WorkingDir` replaced when given, labels merged.
pub fn config(base: &[u8], aug: &Augmentation, id: &str) -> Result<Document> {
    let mut doc = parse("config", base)?;
    let rootfs = doc
        .entry("rootfs")
        .or_insert_with(|| serde_json::json!({"type": "layers", "diff_ids": []}));
    let diff_ids = rootfs
        .as_object_mut()
        .ok_or(RewriteError::Shape("config", "rootfs is not an object"))?
        .entry("diff_ids")
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or(RewriteError::Shape("config", "rootfs.diff_ids is not a list"))?;
    diff_ids.extend(aug.layers.iter().map(|l| Value::String(l.diff_id.to_string())));
    let history = doc
        .entry("history")
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or(RewriteError::Shape("config", "history is not a list"))?;
    // No `created` time: the same augmentation must give the same bytes.
    for (i, layer) in aug.layers.iter().enumerate() {
        history.push(serde_json::json!({
            "created_by": format!("berth augmentation {id}: layer {} {}", i + 1, layer.digest),
            "comment": "injected by berth",
        }));
    }
    if aug.changes_settings() {
        history.push(serde_json::json!({
            "created_by": format!("berth augmentation {id}: settings"),
            "empty_layer": true,
        }));
    }
    let settings = doc
        .entry("config")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or(RewriteError::Shape("config", "config is not an object"))?;
    apply_settings(settings, aug)?;
    Ok(Document::new(&Value::Object(doc)))
}

fn apply_settings(settings: &mut Map<String, Value>, aug: &Augmentation) -> Result<()> {
    if !aug.env.is_empty() {
        let env = settings.entry("Env").or_insert_with(|| Value::Array(Vec::new()));
        if env.is_null() {
            *env = Value::Array(Vec::new());
        }
        let env = env
            .as_array_mut()
            .ok_or(RewriteError::Shape("config", "config.Env is not a list"))?;
        for entry in &aug.env {
            let name = entry.split('=').next().unwrap_or(entry);
            let same_name = |v: &Value| v.as_str().is_some_and(|s| s.split('=').next() == Some(name));
            match env.iter_mut().find(|v| same_name(v)) {
                Some(v) => *v = Value::String(entry.clone()),
                None => env.push(Value::String(entry.clone())),
            }
        }
    }
    let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    if let Some(entrypoint) = &aug.entrypoint {
        settings.insert("Entrypoint".into(), strings(entrypoint));
        // As in a Dockerfile: a new entrypoint drops the base's cmd unless one is given.
        if aug.cmd.is_none() {
            settings.remove("Cmd");
        }
    }
    if let Some(cmd) = &aug.cmd {
        settings.insert("Cmd".into(), strings(cmd));
    }
    if let Some(dir) = &aug.working_dir {
        settings.insert("WorkingDir".into(), Value::String(dir.clone()));
    }
    if !aug.labels.is_empty() {
        let labels = settings.entry("Labels").or_insert_with(|| Value::Object(Map::new()));
        if labels.is_null() {
            *labels = Value::Object(Map::new());
        }
        let labels = labels
            .as_object_mut()
            .ok_or(RewriteError::Shape("config", "config.Labels is not an object"))?;
        for (k, v) in &aug.labels {
            labels.insert(k.clone(), Value::String(v.clone()));
        }
    }
    Ok(())
}

/// The image manifest pointing at `config` with the injected layers appended,
/// in the media types of the base's kind (Docker or OCI).
pub fn image_manifest(base: &[u8], config: &Document, aug: &Augmentation) -> Result<Document> {
    let mut doc = parse("manifest", base)?;
    let docker = doc.get("mediaType").and_then(Value::as_str) == Some(media_type::DOCKER_MANIFEST);
    let cfg = doc
        .get_mut("config")
        .and_then(Value::as_object_mut)
        .ok_or(RewriteError::Shape("manifest", "it has no config descriptor"))?;
    cfg.insert("digest".into(), Value::String(config.digest.to_string()));
    cfg.insert("size".into(), Value::from(config.bytes.len() as u64));
    let layers = doc
        .entry("layers")
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or(RewriteError::Shape("manifest", "layers is not a list"))?;
    for layer in &aug.layers {
        let media_type = match (docker, layer.compressed) {
            (true, true) => DOCKER_LAYER_GZIP,
            (true, false) => DOCKER_LAYER_TAR,
            (false, true) => OCI_LAYER_GZIP,
            (false, false) => OCI_LAYER_TAR,
        };
        layers.push(serde_json::json!({
            "mediaType": media_type,
            "digest": layer.digest.to_string(),
            "size": layer.size,
        }));
    }
    Ok(Document::new(&Value::Object(doc)))
}

/// What an index entry is to the augmenter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A platform image: augment it.
    Image(Digest),
    /// An attestation or other artifact about the base's images (platform
    /// `unknown/unknown`): it describes bytes the augmented image no longer
    /// has, so it is left out.
    Dropped,
}

/// What each entry of an index is, in order.
pub fn index_entries(base: &[u8]) -> Result<Vec<Entry>> {
    let doc = parse("index", base)?;
    let manifests = doc
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or(RewriteError::Shape("index", "it has no manifests list"))?;
    manifests
        .iter()
        .map(|m| {
            let platform_os = m.pointer("/platform/os").and_then(Value::as_str);
            if platform_os == Some("unknown") {
                return Ok(Entry::Dropped);
            }
            let digest = m
                .get("digest")
                .and_then(Value::as_str)
                .and_then(|d| d.parse::<Digest>().ok())
                .ok_or(RewriteError::Shape("index", "an entry has no valid digest"))?;
            Ok(Entry::Image(digest))
        })
        .collect()
}

/// The index with each kept entry pointing at its augmented manifest
/// (`augmented[i]` for the i-th entry, `None` where [`index_entries`] said
/// [`Entry::Dropped`]).
pub fn index(base: &[u8], augmented: &[Option<Document>]) -> Result<Document> {
    let mut doc = parse("index", base)?;
    let manifests = doc
        .get_mut("manifests")
        .and_then(Value::as_array_mut)
        .ok_or(RewriteError::Shape("index", "it has no manifests list"))?;
    if manifests.len() != augmented.len() {
        return Err(RewriteError::Shape("index", "it changed while it was augmented"));
    }
    let kept = std::mem::take(manifests)
        .into_iter()
        .zip(augmented)
        .filter_map(|(mut entry, new)| {
            let new = new.as_ref()?;
            let obj = entry.as_object_mut()?;
            obj.insert("digest".into(), Value::String(new.digest.to_string()));
            obj.insert("size".into(), Value::from(new.bytes.len() as u64));
            Some(entry)
        })
        .collect();
    *manifests = kept;
    Ok(Document::new(&Value::Object(doc)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::InjectedLayer;

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64)).parse().unwrap()
    }

    fn aug() -> Augmentation {
        Augmentation {
            layers: vec![InjectedLayer {
                digest: digest('a'),
                size: 10,
                diff_id: digest('b'),
                compressed: true,
            }],
            env: vec!["PATH=/opt/bin:/bin".into(), "NEW=1".into()],
            entrypoint: None,
            cmd: Some(vec!["/opt/bin/tool".into()]),
            working_dir: Some("/work".into()),
            labels: [("team".to_string(), "infra".to_string())].into(),
        }
    }

    const CONFIG: &str = r#"{"architecture":"amd64","os":"linux",
        "config":{"Env":["PATH=/bin","HOME=/root"],"Cmd":["sh"],"Labels":null},
        "rootfs":{"type":"layers","diff_ids":["sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"]},
        "history":[{"created":"2024-01-01T00:00:00Z","created_by":"ADD rootfs"}]}"#;

    #[test]
    fn config_gains_the_layers_and_settings_and_keeps_the_rest() {
        let doc = config(CONFIG.as_bytes(), &aug(), "ID").unwrap();
        let v: Value = serde_json::from_slice(&doc.bytes).unwrap();
        assert_eq!(v["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
        assert_eq!(v["rootfs"]["diff_ids"][1], digest('b').to_string());
        assert_eq!(
            v["config"]["Env"],
            serde_json::json!(["PATH=/opt/bin:/bin", "HOME=/root", "NEW=1"])
        );
        assert_eq!(v["config"]["Cmd"], serde_json::json!(["/opt/bin/tool"]));
        assert_eq!(v["config"]["WorkingDir"], "/work");
        assert_eq!(v["config"]["Labels"]["team"], "infra");
        // One history line per layer and one for the settings.
        assert_eq!(v["history"].as_array().unwrap().len(), 3);
        assert_eq!(v["history"][2]["empty_layer"], true);
        assert_eq!(v["architecture"], "amd64");
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes_whatever_their_formatting() {
        let a = config(CONFIG.as_bytes(), &aug(), "ID").unwrap();
        let reformatted = serde_json::to_vec_pretty(&serde_json::from_str::<Value>(CONFIG).unwrap()).unwrap();
        let b = config(&reformatted, &aug(), "ID").unwrap();
        assert_eq!(a, b);
        let mut other = aug();
        other.env.push("X=1".into());
        assert_ne!(config(CONFIG.as_bytes(), &other, "ID").unwrap().digest, a.digest);
    }

    #[test]
    fn a_new_entrypoint_drops_the_base_cmd_unless_one_is_given() {
        let mut a = aug();
        a.cmd = None;
        a.entrypoint = Some(vec!["/tool".into()]);
        let v: Value = serde_json::from_slice(&config(CONFIG.as_bytes(), &a, "ID").unwrap().bytes).unwrap();
        assert_eq!(v["config"]["Entrypoint"], serde_json::json!(["/tool"]));
        assert!(v["config"].get("Cmd").is_none());
    }

    #[test]
    fn manifests_point_at_the_new_config_and_append_layers_of_their_kind() {
        let cfg = config(CONFIG.as_bytes(), &aug(), "ID").unwrap();
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":1}},"layers":[]}}"#,
            media_type::DOCKER_MANIFEST,
            media_type::DOCKER_CONFIG,
            digest('c')
        );
        let m: Value = serde_json::from_slice(&image_manifest(docker.as_bytes(), &cfg, &aug()).unwrap().bytes).unwrap();
        assert_eq!(m["config"]["digest"], cfg.digest.to_string());
        assert_eq!(m["config"]["size"], cfg.bytes.len() as u64);
        assert_eq!(m["layers"][0]["mediaType"], DOCKER_LAYER_GZIP);
        let oci = docker.replace(media_type::DOCKER_MANIFEST, media_type::OCI_MANIFEST);
        let m: Value = serde_json::from_slice(&image_manifest(oci.as_bytes(), &cfg, &aug()).unwrap().bytes).unwrap();
        assert_eq!(m["layers"][0]["mediaType"], OCI_LAYER_GZIP);
    }

    #[test]
    fn indexes_replace_platform_entries_and_drop_attestations() {
        let base = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[
                {{"mediaType":"{m}","digest":"{}","size":5,"platform":{{"architecture":"amd64","os":"linux"}}}},
                {{"mediaType":"{m}","digest":"{}","size":6,"platform":{{"architecture":"unknown","os":"unknown"}}}}]}}"#,
            media_type::OCI_INDEX,
            digest('d'),
            digest('e'),
            m = media_type::OCI_MANIFEST
        );
        let entries = index_entries(base.as_bytes()).unwrap();
        assert_eq!(entries, vec![Entry::Image(digest('d')), Entry::Dropped]);
        let new = Document::new(&serde_json::json!({"x": 1}));
        let out = index(base.as_bytes(), &[Some(new.clone()), None]).unwrap();
        let v: Value = serde_json::from_slice(&out.bytes).unwrap();
        assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
        assert_eq!(v["manifests"][0]["digest"], new.digest.to_string());
        assert_eq!(v["manifests"][0]["platform"]["architecture"], "amd64");
    }

    #[test]
    fn documents_that_are_not_images_are_refused_not_panicked_on() {
        assert!(config(b"[1]", &aug(), "ID").is_err());
        assert!(config(b"{\"rootfs\":3}", &aug(), "ID").is_err());
        assert!(image_manifest(b"{}", &Document::new(&Value::Null), &aug()).is_err());
        assert!(index_entries(b"{\"manifests\":[{}]}").is_err());
        assert!(index(b"{\"manifests\":[]}", &[None]).is_err());
    }
}
