//! Pushed manifests and indexes: the JSON of a manifest PUT with its
//! Content-Type, and the lenient read of stored manifests.
#![no_main]

use berth_spec::manifest::{stored_media_type, Manifest, MAX_JSON_DEPTH};
use berth_spec::media_type;
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [Option<&str>; 6] = [
    None,
    Some(media_type::OCI_MANIFEST),
    Some(media_type::OCI_INDEX),
    Some(media_type::DOCKER_MANIFEST),
    Some(media_type::DOCKER_MANIFEST_LIST),
    Some("application/json; charset=utf-8"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[pick as usize % CONTENT_TYPES.len()];
    if let Ok(m) = Manifest::parse(body, content_type) {
        // Accepted manifests are valid JSON nested within the limit, and
        // their type is what the request declared.
        let v: serde_json::Value = serde_json::from_slice(body).expect("accepted manifests are JSON");
        assert!(depth(&v) <= MAX_JSON_DEPTH);
        let declared = media_type::essence(content_type.unwrap_or(""));
        assert!(
            declared.eq_ignore_ascii_case(&m.media_type),
            "{declared} vs {}",
            m.media_type
        );
        let _ = m.required_blobs().count();
    }
    let _ = stored_media_type(body);
});

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
