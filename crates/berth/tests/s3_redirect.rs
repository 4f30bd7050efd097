//! `berth serve --redirect` on S3 (a real Ceph RGW): blob GETs answer 307 to
//! a presigned URL of the bucket, so the bytes go from the store to the
//! client; HEAD is answered by berth; ranges work through the redirect; and
//! dockerd pulls through the redirects; the filesystem refuses the option.
//!
//! Ceph is named by `BERTH_TEST_S3_CEPH_*`; without them a test says so and
//! passes, except in CI (`CI=true`), where it fails (see `S3Engine::ceph`).

mod support;

use support::compat::noise;
use support::docker::{docker, inspect, load, remove, run, transfer, Cleanup};
use support::images::{layout_blob, layout_ref, unique, Entry, Image, Layer, OciLayout, Platform};
use support::s3::S3Prefix;
use support::tools::{skopeo_copy, skopeo_raw};
use support::{berth_cli, BerthProcess};

/// The blob GETs berth logged: (path, status, bytes sent).
fn blob_gets(berth: &BerthProcess) -> Vec<(String, u64, u64)> {
    berth
        .log_lines()
        .iter()
        .filter(|l| l["method"] == "GET" && l["path"].as_str().is_some_and(|p| p.contains("/blobs/sha256:")))
        .map(|l| {
            (
                l["path"].as_str().unwrap().to_owned(),
                l["status"].as_u64().unwrap_or(0),
                l["bytes"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// `berth serve --redirect` on the prefix.
fn redirecting(prefix: &S3Prefix, data: &std::path::Path) -> BerthProcess {
    let mut args = vec!["--no-self-image".to_string(), "--redirect".into()];
    args.extend(prefix.engine.serve_args(&prefix.storage));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    BerthProcess::spawn_with(data, &args, |cmd| prefix.engine.configure(cmd))
}

/// Every blob GET berth answered was a 307 without a body (the bytes did
/// not pass through berth), and each of `digests` was asked for.
fn all_redirected(berth: &BerthProcess, repo: &str, digests: &[&str]) {
    let gets = blob_gets(berth);
    for digest in digests {
        let path = format!("/v2/{repo}/blobs/{digest}");
        assert!(gets.iter().any(|(p, _, _)| *p == path), "no GET of {path}: {gets:?}");
    }
    assert!(
        gets.iter().all(|(_, status, bytes)| *status == 307 && *bytes == 0),
        "{gets:?}"
    );
}

#[test]
fn blob_bytes_go_from_the_store_to_skopeo() {
    let Some(prefix) = S3Prefix::ceph() else { return };
    let data = tempfile::tempdir().unwrap();
    let berth = redirecting(&prefix, data.path());
    let host = berth.addr.to_string();

    // Two layers, one of 6 MiB, pushed through berth (pushes are not redirected).
    let marker = unique("s3-redirect");
    let image = Image::new(
        Platform::amd64(),
        vec![
            Layer::new(&[Entry::file("marker", format!("{marker}\n"))]),
            Layer::new(&[Entry::file("noise", noise(marker.len() as u64 * 7919, 6 << 20))]),
        ],
        &["/bin/sh"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut src = OciLayout::create(&tmp.path().join("src"));
    src.add_image("v1", &image);
    skopeo_copy(&src.reference("v1"), &format!("docker://{host}/s3/redirect:v1"), false);
    assert!(
        blob_gets(&berth).is_empty(),
        "the push fetched blobs: {:?}",
        blob_gets(&berth)
    );

    // skopeo follows the 307s to Ceph and gets every blob whole.
    let out = tmp.path().join("out");
    skopeo_copy(
        &format!("docker://{host}/s3/redirect:v1"),
        &format!("oci:{}:v1", out.display()),
        false,
    );
    assert_eq!(layout_ref(&out, "v1")["digest"], image.manifest.digest);
    for blob in image.blobs() {
        assert_eq!(layout_blob(&out, &blob.digest), blob.bytes);
    }
    assert_eq!(
        skopeo_raw(&format!("{host}/s3/redirect@{}", image.manifest.digest)),
        image.manifest.bytes
    );

    let digests: Vec<&str> = image.blobs().iter().map(|b| b.digest.as_str()).collect();
    all_redirected(&berth, "s3/redirect", &digests);

    let layer = &image.layers[1].blob;
    let url = format!("{}/v2/s3/redirect/blobs/{}", berth.url, layer.digest);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The redirect itself: a presigned URL of the store, valid for the
        // default 15 minutes.
        let plain = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = plain.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 307);
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            location.starts_with(&prefix.engine.endpoint)
                && location.contains("X-Amz-Signature=")
                && location.contains("X-Amz-Expires=900"),
            "{location}"
        );
        assert_eq!(r.headers()["docker-content-digest"], layer.digest.as_str());

        // HEAD is answered by berth, with the size and no redirect.
        let r = plain.head(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-length"], layer.size().to_string().as_str());
        assert!(r.headers().get("location").is_none());

        // A client that follows the redirect with its Range gets the range
        // from the store.
        let r = reqwest::Client::new()
            .get(&url)
            .header("range", "bytes=5000000-5000099")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &layer.bytes[5_000_000..5_000_100]);

        // Unknown blobs are still berth's 404, not a URL to nothing.
        let missing = format!("{}/v2/s3/redirect/blobs/sha256:{}", berth.url, "0".repeat(64));
        let r = plain.get(&missing).send().await.unwrap();
        assert_eq!(r.status(), 404);
    });
}

/// dockerd pulls from berth with `--redirect`: it follows every 307 of the
/// config and layer GETs to Ceph, gets them whole (the image runs), and no
/// blob byte passes through berth.
#[test]
fn docker_pulls_layers_from_the_store_through_redirects() {
    let Some(prefix) = S3Prefix::ceph() else { return };
    let data = tempfile::tempdir().unwrap();
    let berth = redirecting(&prefix, data.path());
    let mut cleanup = Cleanup::default();
    let marker = unique("s3-redirect-docker");
    let image = Image::runnable(&marker);
    let local = format!("redirect-local/{marker}:src");
    load(&image, &local, &mut cleanup);
    let remote = format!("{}/s3/redirect-docker:v1", berth.addr);
    cleanup.add(&remote);
    docker(["tag", local.as_str(), remote.as_str()]).ok();
    let push = transfer("push", &remote);
    assert!(push.stdout.contains("Pushed"), "{}", push.describe());
    assert!(blob_gets(&berth).is_empty(), "the push fetched blobs");

    remove(&local);
    remove(&remote);
    let pull = transfer("pull", &remote);
    assert!(pull.stdout.contains("Pull complete"), "{}", pull.describe());
    assert_eq!(inspect(&remote)["Id"], image.config.digest);
    assert_eq!(run(&remote).trim(), marker);
    // docker pushed layers of its own compression: the digests are the
    // manifest's.
    let manifest: serde_json::Value =
        serde_json::from_slice(&skopeo_raw(&format!("{}/s3/redirect-docker:v1", berth.addr))).unwrap();
    let mut digests = vec![manifest["config"]["digest"].as_str().unwrap()];
    digests.extend(
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap()),
    );
    assert_eq!(digests[0], image.config.digest);
    all_redirected(&berth, "s3/redirect-docker", &digests);
}

/// A data directory has no URL to redirect to: `--redirect` there is a
/// startup error that says what it needs, and so is an expiry S3 refuses.
#[test]
fn redirect_needs_s3_storage_and_a_valid_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let out = berth_cli([
        "serve",
        "--no-self-image",
        "--listen",
        "127.0.0.1:0",
        "--redirect",
        "--data",
    ])
    .arg(dir.path().to_str().unwrap())
    .fails();
    assert!(out.stderr.contains("--redirect needs S3 storage"), "{}", out.describe());
    let out = berth_cli([
        "serve",
        "--check-config",
        "--redirect",
        "--redirect-expiry",
        "8d",
        "--storage",
        "s3://registry/berth",
    ])
    .fails();
    assert!(out.stderr.contains("--redirect-expiry"), "{}", out.describe());
}
