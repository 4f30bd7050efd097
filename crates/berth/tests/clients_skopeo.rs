//! skopeo against berth: copies in and out keep every digest, inspect,
//! delete and list-tags. Fails (never skips) when skopeo is missing.

mod support;

use serde_json::Value;
use support::images::{layout_blob, layout_ref, sha256_digest, unique, Image, Index, OciLayout};
use support::skopeo_scenarios;
use support::tools::{berth, skopeo, skopeo_copy, skopeo_raw};

#[test]
fn copy_index_in_and_out_keeps_digests() {
    skopeo_scenarios::copy_index_in_and_out_keeps_digests(&berth(&[]));
}

/// A single image: in and out with the same manifest digest, and `skopeo
/// inspect` reports what the image is.
#[test]
fn copy_image_and_inspect() {
    let server = berth(&[]);
    let img = Image::runnable(&unique("h2-skopeo-image"));
    let tmp = tempfile::tempdir().unwrap();
    let mut src = OciLayout::create(&tmp.path().join("src"));
    src.add_image("one", &img);
    let image = format!("{}/h2/skopeo/one:v1", server.host());
    skopeo_copy(&src.reference("one"), &format!("docker://{image}"), false);

    let out = skopeo(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.describe()));
    assert_eq!(v["Digest"], img.manifest.digest, "{v}");
    assert_eq!(v["Architecture"], "amd64", "{v}");
    assert_eq!(v["Os"], "linux", "{v}");
    assert_eq!(v["Layers"], serde_json::json!([img.layers[0].blob.digest]), "{v}");
    assert!(
        v["RepoTags"].as_array().unwrap().iter().any(|t| t == "v1"),
        "RepoTags: {v}"
    );
    let config = skopeo(["inspect", "--config", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .ok();
    assert_eq!(config.stdout.as_bytes(), img.config.bytes.as_slice());

    let out_dir = tmp.path().join("out");
    skopeo_copy(
        &format!("docker://{image}"),
        &format!("oci:{}:back", out_dir.display()),
        false,
    );
    assert_eq!(layout_ref(&out_dir, "back")["digest"], img.manifest.digest);
    for b in img.blobs() {
        assert_eq!(layout_blob(&out_dir, &b.digest), b.bytes);
    }
}

#[test]
fn delete_then_not_found() {
    let server = berth(&[]);
    let img = Image::runnable(&unique("h2-skopeo-delete"));
    let tmp = tempfile::tempdir().unwrap();
    let mut src = OciLayout::create(tmp.path());
    src.add_image("d", &img);
    let image = format!("{}/h2/skopeo/delete:gone", server.host());
    skopeo_copy(&src.reference("d"), &format!("docker://{image}"), false);
    let url = format!("{}/v2/h2/skopeo/delete/manifests/{}", server.url, img.manifest.digest);
    assert_eq!(support::tools::http_get(&url).0, 200);

    skopeo(["delete", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .ok();

    let (status, body) = support::tools::http_get(&url);
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let err: Value = serde_json::from_slice(&body).expect("a JSON error body");
    assert_eq!(err["errors"][0]["code"], "MANIFEST_UNKNOWN", "{err}");
    let (status, _) = support::tools::http_get(&format!("{}/v2/h2/skopeo/delete/manifests/gone", server.url));
    assert_eq!(status, 404, "the tag outlived its manifest");
    let inspect = skopeo(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .fails();
    assert!(
        inspect.stderr.contains("manifest unknown") || inspect.stderr.contains("not found"),
        "{}",
        inspect.describe()
    );
}

#[test]
fn list_tags() {
    let server = berth(&[]);
    let a = Image::runnable(&unique("h2-skopeo-tags-a"));
    let b = Image::runnable(&unique("h2-skopeo-tags-b"));
    let tmp = tempfile::tempdir().unwrap();
    let mut src = OciLayout::create(tmp.path());
    src.add_image("a", &a);
    src.add_image("b", &b);
    let repo = format!("{}/h2/skopeo/tags", server.host());
    for (from, tag) in [("a", "v1"), ("b", "v2"), ("a", "latest"), ("b", "1.0.0-rc_1")] {
        skopeo_copy(&src.reference(from), &format!("docker://{repo}:{tag}"), false);
    }
    let out = skopeo(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{repo}"))
        .ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.describe()));
    assert_eq!(v["Repository"], repo, "{v}");
    let mut tags: Vec<&str> = v["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, ["1.0.0-rc_1", "latest", "v1", "v2"]);
    assert_eq!(sha256_digest(&skopeo_raw(&format!("{repo}:latest"))), a.manifest.digest);
    assert_eq!(sha256_digest(&skopeo_raw(&format!("{repo}:v2"))), b.manifest.digest);
}

/// The test images are what the other tests assume: deterministic bytes, and
/// layers that hold what their configs say (checked with the tar and gzip
/// readers, independently of the builder).
#[test]
fn test_images_are_deterministic_and_well_formed() {
    use std::io::Read;
    let a = Index::multi_arch("same");
    let b = Index::multi_arch("same");
    assert_eq!(a.index.digest, b.index.digest);
    assert_ne!(a.index.digest, Index::multi_arch("other").index.digest);

    let amd64 = a.image("amd64");
    let layer = &amd64.layers[0];
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(layer.blob.bytes.as_slice())
        .read_to_end(&mut tar)
        .unwrap();
    assert_eq!(sha256_digest(&tar), layer.diff_id);
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut entries = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let link = e.link_name().unwrap().map(|l| l.display().to_string());
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        entries.push((path, link, data.len()));
    }
    let busybox_len = std::fs::metadata(support::images::BUSYBOX).unwrap().len() as usize;
    assert_eq!(
        entries,
        [
            ("bin/".to_string(), None, 0),
            ("bin/busybox".to_string(), None, busybox_len),
            ("bin/sh".to_string(), Some("busybox".to_string()), 0),
            ("marker".to_string(), None, "same-amd64\n".len()),
        ]
    );
    let config: Value = serde_json::from_slice(&amd64.config.bytes).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], layer.diff_id);
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(a.image("arm64").platform.variant.as_deref(), Some("v8"));
}
