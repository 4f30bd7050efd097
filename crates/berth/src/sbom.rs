//! berth's bill of materials: a CycloneDX document listing every crate in
//! this binary (version, source, checksum, license), the Rust toolchain and
//! the statically linked C library. `build.rs` writes it from what cargo
//! resolved, and it is compiled in, so the running binary describes itself:
//! `berth sbom` prints it, and the self image carries it as a referrer.

use berth_registry::sources::self_image::Attachment;
use bytes::Bytes;

/// The document, byte for byte as built (deterministic, like the rest of the binary).
pub const DOCUMENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sbom.cdx.json"));

/// The document as the self image's referrer.
pub fn attachment() -> Attachment {
    Attachment {
        artifact_type: berth_spec::media_type::CYCLONEDX_JSON.to_owned(),
        title: format!("berth-{}.cdx.json", env!("CARGO_PKG_VERSION")),
        document: Bytes::from_static(DOCUMENT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::BTreeSet;

    fn document() -> Value {
        serde_json::from_slice(DOCUMENT).expect("the SBOM is JSON")
    }

    fn components(doc: &Value) -> &Vec<Value> {
        doc["components"].as_array().expect("components")
    }

    fn find<'a>(doc: &'a Value, name: &str) -> Option<&'a Value> {
        components(doc).iter().find(|c| c["name"] == name)
    }

    #[test]
    fn describes_berth_and_its_toolchain() {
        let doc = document();
        assert_eq!(doc["bomFormat"], "CycloneDX");
        assert_eq!(doc["specVersion"], "1.5");
        let root = &doc["metadata"]["component"];
        assert_eq!(root["name"], "berth");
        assert_eq!(root["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(root["licenses"][0]["expression"], "Apache-2.0");
        let property = |name: &str| {
            root["properties"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .map(|p| p["value"].as_str().unwrap().to_owned())
                .unwrap_or_else(|| panic!("no property {name}"))
        };
        assert!(
            property("rust:rustc").starts_with("rustc 1."),
            "{}",
            property("rust:rustc")
        );
        assert_eq!(property("rust:commit-hash").len(), 40);
        assert!(property("rust:cargo").starts_with("cargo 1."));
        assert_eq!(property("rust:target"), "x86_64-unknown-linux-gnu");
        let std = find(&doc, "rust-std").expect("the standard library is listed");
        assert!(property("rust:rustc").contains(std["version"].as_str().unwrap()));
        // The binary links glibc statically (crt-static): it is in the binary too.
        let glibc = find(&doc, "glibc").expect("the static C library is listed");
        assert!(glibc["version"].as_str().unwrap().starts_with("2."), "{glibc}");
    }

    #[test]
    fn lists_exactly_the_crates_compiled_in() {
        let doc = document();
        let lock: Value = {
            let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock")).unwrap();
            let lock: toml::Value = toml::from_str(&text).unwrap();
            serde_json::to_value(lock).unwrap()
        };
        let locked: BTreeSet<(String, String)> = lock["package"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["version"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let mut refs = Vec::new();
        for c in components(&doc) {
            let name = c["name"].as_str().unwrap();
            let version = c["version"].as_str().unwrap();
            refs.push(c["bom-ref"].as_str().unwrap().to_owned());
            if name == "rust-std" || name == "glibc" {
                continue;
            }
            assert!(
                locked.contains(&(name.to_owned(), version.to_owned())),
                "{name} {version} is not in Cargo.lock"
            );
            assert!(c["licenses"][0]["expression"].is_string(), "{name} has a license");
            let source = c["properties"][0]["value"].as_str().unwrap();
            if name.starts_with("berth-") {
                assert_eq!(source, "workspace");
                assert!(c.get("purl").is_none());
            } else {
                assert!(source.contains("crates.io"), "{name} from {source}");
                assert_eq!(c["purl"], format!("pkg:cargo/{name}@{version}"));
                assert_eq!(c["hashes"][0]["alg"], "SHA-256");
                assert_eq!(c["hashes"][0]["content"].as_str().unwrap().len(), 64);
            }
        }
        let mut sorted = refs.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(refs, sorted, "components are sorted by bom-ref, once each");

        // The layers, and what they stand on.
        for name in [
            "berth-spec",
            "berth-storage",
            "berth-registry",
            "berth-http",
            "tokio",
            "hyper",
            "clap",
        ] {
            assert_eq!(
                find(&doc, name).unwrap_or_else(|| panic!("{name}"))["scope"],
                "required"
            );
        }
        // A proc-macro runs in the compiler; its code is not in the binary.
        assert_eq!(find(&doc, "serde_derive").unwrap()["scope"], "excluded");
        // Not compiled in: berth's dev-dependencies, another workspace binary,
        // crates only other platforms use, build-dependencies.
        for name in ["fantoccini", "tempfile", "berth-bench", "windows-sys", "cc"] {
            assert!(find(&doc, name).is_none(), "{name} is not in the binary");
        }

        // The dependency graph names only listed components.
        let mut known: BTreeSet<String> = refs.into_iter().collect();
        known.insert(format!("berth@{}", env!("CARGO_PKG_VERSION")));
        for d in doc["dependencies"].as_array().unwrap() {
            assert!(known.contains(d["ref"].as_str().unwrap()), "{d}");
            for on in d["dependsOn"].as_array().unwrap() {
                assert!(known.contains(on.as_str().unwrap()), "{d}");
            }
        }
        let root = doc["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["ref"] == format!("berth@{}", env!("CARGO_PKG_VERSION")))
            .unwrap();
        assert!(root["dependsOn"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "berth-http@0.1.0"));
    }

    #[test]
    fn holds_nothing_of_the_build_machine() {
        let text = std::str::from_utf8(DOCUMENT).unwrap();
        let workspace = std::fs::canonicalize(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).unwrap();
        assert!(
            !text.contains(workspace.to_str().unwrap()),
            "the checkout's path is in the SBOM"
        );
        if let Some(home) = std::env::var_os("HOME") {
            assert!(
                !text.contains(home.to_str().unwrap()),
                "the home directory is in the SBOM"
            );
        }
        assert!(!text.contains("timestamp") && !text.contains("serialNumber"));
    }

    #[test]
    fn attaches_as_cyclonedx() {
        let a = attachment();
        assert_eq!(a.artifact_type, "application/vnd.cyclonedx+json");
        assert_eq!(a.title, format!("berth-{}.cdx.json", env!("CARGO_PKG_VERSION")));
        assert_eq!(&a.document[..], DOCUMENT);
    }
}
