//! oras-py (the ORAS project's Python client) against berth's referrers: it
//! finds the SBOM hanging on berth's self image and pulls it, and attaches a
//! user's own SBOM and signature to an image pushed with skopeo, then lists
//! them (all, and by artifact type) and pulls them back. Fails (never skips)
//! without the client: `scripts/python-clients.sh` installs it, as test.sh does.

mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use support::images::{sha256_digest, unique, Image, OciLayout};
use support::tools::{berth, skopeo_copy, tool};
use support::{berth_cli, BerthProcess};

const CYCLONEDX: &str = "application/vnd.cyclonedx+json";
const SPDX: &str = "application/spdx+json";
const SIGSTORE_BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The Python that has oras-py: `BERTH_TEST_PYTHON`, or the virtualenv
/// scripts/python-clients.sh makes.
fn python() -> PathBuf {
    let path = std::env::var_os("BERTH_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/python-clients/bin/python"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/python-clients.sh (test.sh does) to install oras-py",
        path.display()
    );
    path
}

/// Runs one subcommand of tests/oras/client.py; what it printed, parsed.
fn oras(args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oras/client.py");
    let out = tool(python().to_str().unwrap())
        .arg(script.to_str().unwrap())
        .args(args)
        .ok();
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.describe()))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn oras_pulls_the_sbom_of_the_self_image_through_the_referrers_api() {
    let data = tempfile::tempdir().unwrap();
    // The real executable, so the SBOM is the one built into it.
    let server = BerthProcess::spawn(data.path(), &[]);
    let host = server.addr.to_string();
    let digest = berth_cli(["self-digest"]).ok().stdout.trim().to_owned();

    let listed = oras(&["referrers", &host, "berth", &digest]);
    assert_eq!(listed["status"], 200, "{listed}");
    assert_eq!(listed["content_type"], OCI_INDEX);
    assert_eq!(listed["filters_applied"], Value::Null);
    let manifests = listed["index"]["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{listed}");
    assert_eq!(manifests[0]["artifactType"], CYCLONEDX);
    assert_eq!(manifests[0]["mediaType"], OCI_MANIFEST);
    let sbom_manifest = manifests[0]["digest"].as_str().unwrap();

    let out = tempfile::tempdir().unwrap();
    let target = format!("berth@{sbom_manifest}");
    let pulled = oras(&["pull", &host, &target, out.path().to_str().unwrap()]);
    let name = format!("berth-{}.cdx.json", env!("CARGO_PKG_VERSION"));
    assert_eq!(pulled["files"], json!([name]), "{pulled}");
    let document = read(&out.path().join(&name));
    assert_eq!(
        document.as_slice(),
        berth_cli(["sbom"]).ok().stdout.as_bytes(),
        "the served SBOM is the one in the binary"
    );
    let sbom: Value = serde_json::from_slice(&document).unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    assert_eq!(sbom["metadata"]["component"]["name"], "berth");
    let components = sbom["components"].as_array().unwrap();
    let tokio = components
        .iter()
        .find(|c| c["name"] == "tokio")
        .expect("tokio is listed");
    assert!(
        tokio["purl"].as_str().unwrap().starts_with("pkg:cargo/tokio@"),
        "{tokio}"
    );
    assert_eq!(tokio["licenses"][0]["expression"], "MIT");

    // Filtered by another artifact type, nothing; by its own, the SBOM.
    let other = oras(&["referrers", &host, "berth", &digest, SPDX]);
    assert_eq!(other["filters_applied"], "artifactType");
    assert_eq!(other["index"]["manifests"], json!([]));
    let same = oras(&["referrers", &host, "berth", &digest, CYCLONEDX]);
    assert_eq!(same["index"]["manifests"], listed["index"]["manifests"]);
}

#[test]
fn oras_attaches_an_sbom_and_a_signature_to_a_pushed_image() {
    let server = berth(&[]);
    let host = server.host();
    let tmp = tempfile::tempdir().unwrap();
    let image = Image::runnable(&unique("oras-subject"));
    let mut layout = OciLayout::create(&tmp.path().join("layout"));
    layout.add_image("v1", &image);
    skopeo_copy(&layout.reference("v1"), &format!("docker://{host}/team/app:v1"), false);
    let subject = json!({
        "mediaType": OCI_MANIFEST,
        "digest": image.manifest.digest,
        "size": image.manifest.size(),
    })
    .to_string();

    // A user's SBOM and signature, each pushed by oras with the image as subject.
    let files = tmp.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let sbom_path = files.join("app.spdx.json");
    std::fs::write(
        &sbom_path,
        br#"{"spdxVersion":"SPDX-2.3","dataLicense":"CC0-1.0","SPDXID":"SPDXRef-DOCUMENT","name":"app"}"#,
    )
    .unwrap();
    let signature_path = files.join("app.sigstore.json");
    std::fs::write(
        &signature_path,
        br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}"#,
    )
    .unwrap();
    let mut attached = Vec::new();
    for (path, artifact_type, tag) in [(&sbom_path, SPDX, "sbom"), (&signature_path, SIGSTORE_BUNDLE, "sig")] {
        let target = format!("team/app:{tag}");
        let pushed = oras(&[
            "attach",
            &host,
            &target,
            &subject,
            path.to_str().unwrap(),
            artifact_type,
            &format!("org.example.kind={tag}"),
        ]);
        assert_eq!(pushed["status"], 201, "{pushed}");
        assert_eq!(pushed["oci_subject"], image.manifest.digest.as_str(), "{pushed}");
        attached.push((pushed["digest"].as_str().unwrap().to_owned(), artifact_type, tag, path));
    }

    // Both are listed under the image, sorted by digest, with their types and annotations.
    let listed = oras(&["referrers", &host, "team/app", &image.manifest.digest]);
    assert_eq!(listed["status"], 200);
    let manifests = listed["index"]["manifests"].as_array().unwrap().clone();
    let mut expected: Vec<&(String, &str, &str, &PathBuf)> = attached.iter().collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(manifests.len(), 2, "{listed}");
    for (m, (digest, artifact_type, tag, _)) in manifests.iter().zip(&expected) {
        assert_eq!(m["digest"], digest.as_str());
        assert_eq!(m["artifactType"], *artifact_type);
        assert_eq!(m["mediaType"], OCI_MANIFEST);
        assert_eq!(m["annotations"]["org.example.kind"], *tag);
    }
    let signatures = oras(&["referrers", &host, "team/app", &image.manifest.digest, SIGSTORE_BUNDLE]);
    assert_eq!(signatures["filters_applied"], "artifactType");
    let only = signatures["index"]["manifests"].as_array().unwrap();
    assert_eq!(only.len(), 1, "{signatures}");
    assert_eq!(only[0]["artifactType"], SIGSTORE_BUNDLE);

    // Each pulls back by its digest, byte for byte.
    for (digest, _, _, path) in &attached {
        let out = tmp.path().join(format!("pulled-{}", &digest[7..19]));
        let target = format!("team/app@{digest}");
        let pulled = oras(&["pull", &host, &target, out.to_str().unwrap()]);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(pulled["files"], json!([name]), "{pulled}");
        assert_eq!(read(&out.join(name)), read(path));
    }

    // The image itself is untouched, and another image has no referrers.
    let raw = support::tools::skopeo_raw(&format!("{host}/team/app:v1"));
    assert_eq!(sha256_digest(&raw), image.manifest.digest);
    let none = oras(&["referrers", &host, "team/app", &sha256_digest(b"no such manifest")]);
    assert_eq!(none["status"], 200);
    assert_eq!(none["index"]["manifests"], json!([]));
}
