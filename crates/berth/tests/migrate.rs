//! `berth migrate` between a data directory and another, and to and from
//! Ceph RGW: images pushed with skopeo come back with the same digests from
//! a berth serving the destination; a re-run skips what is there, also
//! after the copy was killed mid-run; a corrupt source blob fails the
//! migration naming its digest and is never stored; the source may be served
//! meanwhile, a served destination is refused.
//!
//! Ceph is named by `BERTH_TEST_S3_CEPH_*`; without them the S3 test says so
//! and passes, except in CI (`CI=true`), where it fails.

mod support;

use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use support::images::unique;
use support::migrate::{blob_path, migrate, migrate_command, stored_blobs, summary, Fixture, TAGS};
use support::s3::S3Engine;
use support::tools::{berth, post_blob};

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A berth serving the data directory `src` in a new temporary directory,
/// with the fixture pushed to it (`dst` beside it is for the destination).
fn pushed_source() -> (tempfile::TempDir, support::TestServer, Fixture) {
    let tmp = tempfile::tempdir().unwrap();
    let source = berth(&["--data", &path(&tmp.path().join("src"))]);
    let fixture = Fixture::new();
    fixture.push(&source);
    (tmp, source, fixture)
}

/// The tag's `current/link` in a data directory, if the tag exists there.
fn tag_target(data: &Path, repo: &str, tag: &str) -> Option<String> {
    std::fs::read_to_string(data.join(format!(
        "docker/registry/v2/repositories/{repo}/_manifests/tags/{tag}/current/link"
    )))
    .ok()
}

/// Every tag a data directory holds points at a manifest it holds (revision
/// link and bytes): what an interrupted or failed migration must keep true.
fn assert_no_dangling_tags(data: &Path) {
    for (repo, tag) in TAGS {
        if let Some(digest) = tag_target(data, repo, tag) {
            let hex = digest.strip_prefix("sha256:").expect("sha256");
            let revision = data.join(format!(
                "docker/registry/v2/repositories/{repo}/_manifests/revisions/sha256/{hex}/link"
            ));
            assert!(
                revision.exists(),
                "{repo}:{tag} points at {digest}, not a revision of {repo}"
            );
            assert!(
                blob_path(data, &digest).exists(),
                "{repo}:{tag} points at {digest}, whose bytes are missing"
            );
        }
    }
}

/// fs -> fs while a berth serves the source: everything arrives and is
/// served from the destination with the pushed digests; a berth serving
/// the destination makes migrate refuse; a second run copies nothing.
#[test]
fn fs_to_fs_while_the_source_is_served() {
    let (tmp, source, fixture) = pushed_source();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));

    let out = migrate(&path(&src), &path(&dst), None);
    assert!(out.success(), "{}", out.describe());
    let s = summary(&out);
    assert_eq!(s.repositories, 2, "{}", out.stdout);
    assert_eq!(s.tags, (3, 0), "{}", out.stdout);
    // mig/app: the image; mig/multi: the index and its two images.
    assert_eq!(s.manifests, (4, 0), "{}", out.stdout);
    assert_eq!(s.blobs, (fixture.blob_count() as u64, 0), "{}", out.stdout);
    assert!(s.bytes > 3 << 20, "{}", out.stdout);
    // The source kept serving throughout.
    fixture.check_served(&source);

    let dest = berth(&["--data", &path(&dst)]);
    fixture.check_served(&dest);
    let refused = migrate(&path(&src), &path(&dst), None);
    assert!(!refused.success(), "{}", refused.describe());
    assert!(
        refused.stderr.contains("is serving") && refused.stderr.contains(&path(&dst)),
        "{}",
        refused.describe()
    );
    dest.stop();

    let again = migrate(&path(&src), &path(&dst), None);
    assert!(again.success(), "{}", again.describe());
    let s = summary(&again);
    assert_eq!((s.tags, s.manifests), ((0, 3), (0, 4)), "{}", again.stdout);
    assert_eq!(
        (s.blobs, s.bytes),
        ((0, fixture.blob_count() as u64), 0),
        "{}",
        again.stdout
    );
    source.stop();
}

/// A migration killed (SIGKILL) while it copies blobs leaves no tag pointing
/// at anything missing; the same command then finishes, skipping what the
/// first run stored, and the destination serves everything.
#[test]
fn a_killed_migration_resumes_and_skips_what_it_copied() {
    let (tmp, source, fixture) = pushed_source();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    // Bulk, so that the copy takes long enough to be interrupted: an image
    // of 8 layers of 24 MiB each, pushed through the API.
    let seed = unique("bulk");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let chunk = support::docker::noise(&seed, 1 << 20);
        let mut layers = Vec::new();
        for i in 0..8u8 {
            let mut blob = Vec::with_capacity(24 << 20);
            for j in 0..24u8 {
                blob.extend_from_slice(&[i, j]);
                blob.extend_from_slice(&chunk[2..]);
            }
            let size = blob.len();
            let digest = post_blob(&client, &source.url, "mig/bulk", blob).await;
            layers.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size}));
        }
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#).into_bytes();
        let config_size = config.len();
        let config_digest = post_blob(&client, &source.url, "mig/bulk", config).await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": layers,
        });
        let r = client
            .put(format!("{}/v2/mig/bulk/manifests/bulk", source.url))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(serde_json::to_vec(&manifest).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
    });
    // The fixture's, the bulk layers, its config and its manifest.
    let total_blobs = fixture.blob_count() as u64 + 10;

    let mut child = std::process::Command::new(support::berth_exe())
        .args(["migrate", "--jobs", "1", "--from", &path(&src), "--to", &path(&dst)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored_blobs(&dst).is_empty() {
        assert!(Instant::now() < deadline, "no blob copied within a minute");
        assert!(
            child.try_wait().unwrap().is_none(),
            "migrate finished before it could be interrupted"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "migrate finished before it could be interrupted"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let stored_before = stored_blobs(&dst).len() as u64;
    assert!(stored_before < total_blobs, "the kill came after every blob was copied");
    assert_no_dangling_tags(&dst);

    let out = migrate(&path(&src), &path(&dst), None);
    assert!(out.success(), "{}", out.describe());
    let s = summary(&out);
    assert!(
        s.blobs.1 >= stored_before,
        "the blobs the killed run stored are skipped: {}",
        out.stdout
    );
    assert!(s.blobs.0 >= 1, "the rest is copied: {}", out.stdout);
    assert_eq!(s.blobs.0 + s.blobs.1, total_blobs, "{}", out.stdout);
    assert_eq!(s.tags, (4, 0), "{}", out.stdout);
    source.stop();

    let dest = berth(&["--data", &path(&dst)]);
    fixture.check_served(&dest);
}

/// A destination holding part of the data (a blob and a tag missing, a blob
/// torn to a wrong size): the re-run copies exactly those and skips the rest.
#[test]
fn a_partly_populated_destination_gets_only_what_it_lacks() {
    let (tmp, source, fixture) = pushed_source();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    source.stop();
    let first = migrate(&path(&src), &path(&dst), None);
    assert!(first.success(), "{}", first.describe());

    let arm64 = fixture.index.image("arm64");
    std::fs::remove_file(blob_path(&dst, &arm64.config.digest)).unwrap();
    let noise = &fixture.image.layers[1].blob;
    let torn = blob_path(&dst, &noise.digest);
    std::fs::write(&torn, &noise.bytes[..1000]).unwrap();
    std::fs::remove_dir_all(dst.join("docker/registry/v2/repositories/mig/multi/_manifests/tags/latest")).unwrap();

    let out = migrate(&path(&src), &path(&dst), None);
    assert!(out.success(), "{}", out.describe());
    let s = summary(&out);
    let n = fixture.blob_count() as u64;
    assert_eq!(s.blobs, (2, n - 2), "{}", out.stdout);
    assert_eq!(s.bytes, (arm64.config.size() + noise.size()) as u64, "{}", out.stdout);
    assert_eq!(s.tags, (1, 2), "{}", out.stdout);
    assert_eq!(s.manifests, (0, 4), "{}", out.stdout);
    assert_eq!(std::fs::read(&torn).unwrap(), noise.bytes);

    let dest = berth(&["--data", &path(&dst)]);
    fixture.check_served(&dest);
}

/// A source blob whose bytes changed on disk: migrate fails naming its
/// digest, stores nothing under it, and writes no tag.
#[test]
fn a_corrupt_source_blob_fails_naming_its_digest() {
    let (tmp, source, fixture) = pushed_source();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    source.stop();
    let noise = &fixture.image.layers[1].blob;
    let file = blob_path(&src, &noise.digest);
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&file, &bytes).unwrap();

    let out = migrate(&path(&src), &path(&dst), None);
    assert!(!out.success(), "{}", out.describe());
    assert!(
        out.stderr.contains(&noise.digest),
        "names the digest: {}",
        out.describe()
    );
    assert!(
        !blob_path(&dst, &noise.digest).exists(),
        "nothing stored under {}",
        noise.digest
    );
    for (repo, tag) in TAGS {
        assert_eq!(
            tag_target(&dst, repo, tag),
            None,
            "{repo}:{tag} written after a failure"
        );
    }
    let s = summary(&out);
    assert_eq!(
        s.blobs.0,
        fixture.blob_count() as u64 - 1,
        "the others are copied: {}",
        out.stdout
    );
}

/// Removes a test's prefix of the bucket however the test ends.
struct Prefix<'a>(&'a S3Engine, String);

impl Drop for Prefix<'_> {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

/// fs -> Ceph RGW -> fs: the bucket is served by `berth serve --storage
/// s3://...` and the directory copied back out of it, both with the pushed
/// digests; re-runs in both directions skip everything.
#[test]
fn fs_to_ceph_and_back() {
    let Some(engine) = S3Engine::ceph() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (src, back) = (tmp.path().join("src"), tmp.path().join("back"));
    let source = berth(&["--data", &path(&src)]);
    let fixture = Fixture::new();
    fixture.push(&source);
    let bucket = Prefix(&engine, engine.unique_storage());
    let storage = bucket.1.as_str();

    let out = migrate(&path(&src), storage, Some(&engine));
    assert!(out.success(), "{}", out.describe());
    let s = summary(&out);
    assert_eq!((s.repositories, s.tags), (2, (3, 0)), "{}", out.stdout);
    assert_eq!(s.blobs, (fixture.blob_count() as u64, 0), "{}", out.stdout);
    let again = migrate(&path(&src), storage, Some(&engine));
    assert!(again.success(), "{}", again.describe());
    assert_eq!(
        summary(&again).blobs,
        (0, fixture.blob_count() as u64),
        "{}",
        again.stdout
    );
    source.stop();

    let on_s3 = support::TestServer::start_on_s3(&engine, storage, &["--no-self-image"]);
    fixture.check_served(&on_s3);

    // Out of the bucket while a berth serves it.
    let out = migrate(storage, &path(&back), Some(&engine));
    assert!(out.success(), "{}", out.describe());
    let s = summary(&out);
    assert_eq!((s.tags, s.manifests), ((3, 0), (4, 0)), "{}", out.stdout);
    on_s3.stop();
    let again = migrate_command(storage, &path(&back), Some(&engine)).ok();
    assert_eq!(summary(&again).bytes, 0, "{}", again.stdout);

    let dest = berth(&["--data", &path(&back)]);
    fixture.check_served(&dest);
}
