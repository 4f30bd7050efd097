//! Robustness of what berth keeps on disk: upload sessions survive restarts,
//! stale uploads are purged, concurrent pushes stay consistent, and debris of
//! a crash (temporary files, half-written uploads) never shows as a blob.

mod conformance_common;
mod support;

use conformance_common::*;
use reqwest::{Method, StatusCode};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn blob_path(data: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    data.join(format!("docker/registry/v2/blobs/{alg}/{}/{hex}/data", &hex[..2]))
}

/// The file holding an upload's bytes so far.
fn upload_file(data: &Path, repo: &str, loc: &str) -> PathBuf {
    let id = loc.rsplit('/').next().unwrap().split('?').next().unwrap();
    data.join(format!("docker/registry/v2/repositories/{repo}/_uploads/{id}"))
}

/// Rewrites a Location of one server for another server (same path, new host).
fn relocate(loc: &str, base: &str) -> String {
    match loc.find("/v2/") {
        Some(i) => format!("{base}{}", &loc[i..]),
        None => panic!("odd Location {loc}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_sessions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let blob = data(80, 300_000);
    let digest = sha256(&blob);

    let s = server_with(&["--data", &data_dir]);
    let c = Client::new(&s.url);
    let loc = c.start_upload("robust/restart").await;
    let r = c
        .req(Method::PATCH, &loc)
        .header("content-range", "0-99999")
        .body(blob[..100_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = location(&r);
    s.stop();

    let s = server_with(&["--data", &data_dir]);
    let c = Client::new(&s.url);
    let loc = relocate(&loc, &s.url);
    let r = c.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), Some("0-99999"));
    // An out-of-order chunk is still refused after the restart.
    let r = c
        .req(Method::PATCH, &loc)
        .header("content-range", "150000-199999")
        .body(blob[150_000..200_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "range"), Some("0-99999"));
    let r = c
        .req(Method::PATCH, &loc)
        .header("content-range", "100000-199999")
        .body(blob[100_000..200_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), Some("0-199999"));
    let r = c
        .req(Method::PUT, &with_query(&location(&r), &format!("digest={digest}")))
        .body(blob[200_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c.get(&format!("/v2/robust/restart/blobs/{digest}")).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), blob.as_slice());
}

#[tokio::test(flavor = "multi_thread")]
async fn sha512_upload_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let blob = data(81, 10_000);
    let digest = sha512(&blob);
    let s = server_with(&["--data", &data_dir]);
    let c = Client::new(&s.url);
    let loc = c.start_upload("robust/sha512").await;
    let r = c
        .req(Method::PATCH, &loc)
        .body(blob[..4000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = location(&r);
    s.stop();
    let s = server_with(&["--data", &data_dir]);
    let c = Client::new(&s.url);
    let r = c
        .req(
            Method::PUT,
            &with_query(&relocate(&loc, &s.url), &format!("digest={digest}")),
        )
        .body(blob[4000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c.get(&format!("/v2/robust/sha512/blobs/{digest}")).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), blob.as_slice());
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_uploads_are_purged() {
    let s = server_with(&["--upload-max-age-secs", "1", "--upload-purge-interval-secs", "1"]);
    let c = Client::new(&s.url);
    let loc = c.start_upload("robust/stale").await;
    let r = c.req(Method::PATCH, &loc).body(vec![7u8; 100]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let file = upload_file(&s.data, "robust/stale", &loc);
    assert!(file.exists());
    let gone = support::wait_until(Duration::from_secs(15), || !file.exists());
    assert!(gone, "{file:?} was not purged");
    assert_error(c.get(&loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let d = sha256(&[7u8; 100]);
    assert_error(
        c.req(Method::PUT, &with_query(&loc, &format!("digest={d}")))
            .send()
            .await
            .unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    // Fresh uploads still work afterwards.
    c.push_blob("robust/stale", b"fresh").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fresh_uploads_are_not_purged() {
    let s = server_with(&["--upload-max-age-secs", "3600", "--upload-purge-interval-secs", "1"]);
    let c = Client::new(&s.url);
    let loc = c.start_upload("robust/fresh").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = c.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pushes_of_one_blob() {
    let s = server();
    let blob = data(82, 2 * 1024 * 1024 + 5);
    let digest = sha256(&blob);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let base = s.url.clone();
        let blob = blob.clone();
        tasks.push(tokio::spawn(async move {
            let c = Client::new(&base);
            let repo = if i % 2 == 0 { "robust/same" } else { "robust/same2" };
            if i % 3 == 0 {
                c.push_blob(repo, &blob).await;
            } else {
                let loc = c.start_upload(repo).await;
                let mid = blob.len() / 2;
                let r = c
                    .req(Method::PATCH, &loc)
                    .header("content-range", format!("0-{}", mid - 1))
                    .body(blob[..mid].to_vec())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                let r = c
                    .req(
                        Method::PUT,
                        &with_query(&location(&r), &format!("digest={}", sha256(&blob))),
                    )
                    .body(blob[mid..].to_vec())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let c = Client::new(&s.url);
    for repo in ["robust/same", "robust/same2"] {
        let r = c.get(&format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        let got = r.bytes().await.unwrap();
        assert_eq!(sha256(&got), digest);
    }
    // No upload debris left behind.
    for repo in ["robust/same", "robust/same2"] {
        let uploads = s.data.join(format!("docker/registry/v2/repositories/{repo}/_uploads"));
        let left: Vec<_> = std::fs::read_dir(&uploads)
            .map(|d| d.filter_map(|e| e.ok()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pushes_of_one_tag() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "robust/tag";
    let config = br#"{"os":"linux","architecture":"amd64"}"#;
    c.push_blob(repo, config).await;
    let mut manifests = Vec::new();
    for i in 0..8u64 {
        let layer = data(90 + i, 100);
        c.push_blob(repo, &layer).await;
        manifests.push(image_manifest(config, &[&layer]));
    }
    let mut tasks = Vec::new();
    for round in 0..3 {
        for m in manifests.clone() {
            let base = s.url.clone();
            tasks.push(tokio::spawn(async move {
                let c = Client::new(&base);
                let r = c.put_manifest(repo, "latest", OCI_MANIFEST, &m).await;
                assert_eq!(r.status(), StatusCode::CREATED, "round {round}");
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let r = c.get(&format!("/v2/{repo}/manifests/latest")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let d = header(&r, "docker-content-digest").unwrap().to_owned();
    let body = r.bytes().await.unwrap();
    assert_eq!(sha256(&body), d, "the tag serves bytes matching its digest");
    assert!(manifests.iter().any(|m| m.as_slice() == body.as_ref()));
    // Every pushed manifest is there by digest.
    for m in &manifests {
        assert_eq!(
            c.head(&format!("/v2/{repo}/manifests/{}", sha256(m))).await.status(),
            200
        );
    }
    let tags = json_body(c.get(&format!("/v2/{repo}/tags/list")).await).await;
    assert_eq!(tags["tags"], serde_json::json!(["latest"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn temporary_files_never_become_blobs() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "robust/tmp";
    let blob = data(83, 5000);
    let digest = sha256(&blob);
    // A crash while writing the blob left a temporary file with part of it.
    let target = blob_path(&s.data, &digest);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(target.parent().unwrap().join(".tmp-crashed"), &blob[..100]).unwrap();
    assert_error(c.get(&format!("/v2/{repo}/blobs/{digest}")).await, 404, "BLOB_UNKNOWN").await;
    // A link to it (a crash after linking, before data): still unknown, never an empty or partial blob.
    let link = s.data.join(format!(
        "docker/registry/v2/repositories/{repo}/_layers/sha256/{}/link",
        digest.strip_prefix("sha256:").unwrap()
    ));
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::fs::write(&link, &digest).unwrap();
    assert_error(c.get(&format!("/v2/{repo}/blobs/{digest}")).await, 404, "BLOB_UNKNOWN").await;
    let r = c.head(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Pushing it for real works and serves the right bytes.
    c.push_blob(repo, &blob).await;
    let r = c.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), blob.as_slice());
    // Temporary files in listings never show as tags or repositories.
    let tags_dir = s
        .data
        .join(format!("docker/registry/v2/repositories/{repo}/_manifests/tags"));
    std::fs::create_dir_all(&tags_dir).unwrap();
    std::fs::write(tags_dir.join(".tmp-abc"), b"x").unwrap();
    let r = c.get(&format!("/v2/{repo}/tags/list")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let tags = json_body(r).await;
    assert!(!tags.to_string().contains(".tmp"), "{tags}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_whose_stored_bytes_are_wrong_is_replaced_not_kept() {
    // A data file that does not match its digest (a torn copy from another
    // tool, a disk error) must not be what a new push of that digest links.
    let s = server();
    let c = Client::new(&s.url);
    let blob = data(84, 4000);
    let digest = sha256(&blob);
    let target = blob_path(&s.data, &digest);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, &blob[..1000]).unwrap();
    c.push_blob("robust/torn", &blob).await;
    let r = c.get(&format!("/v2/robust/torn/blobs/{digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let got = r.bytes().await.unwrap();
    assert_eq!(sha256(&got), digest, "served bytes must match the digest");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_whose_blob_is_missing_is_not_a_blob() {
    // A push links the blob while moving it into place; a crash between the
    // two leaves a link without bytes. It must read as unknown, must not let
    // a manifest through, and a new push of the blob must mend it.
    let s = server();
    let c = Client::new(&s.url);
    let config = b"{}".to_vec();
    let layer = data(85, 3000);
    c.push_blob("robust/dangling", &config).await;
    let layer_digest = c.push_blob("robust/dangling", &layer).await;
    let stored = blob_path(&s.data, &layer_digest);
    std::fs::remove_file(&stored).unwrap();
    let blob_url = format!("/v2/robust/dangling/blobs/{layer_digest}");
    assert_eq!(c.head(&blob_url).await.status(), StatusCode::NOT_FOUND);
    assert_error(c.get(&blob_url).await, 404, "BLOB_UNKNOWN").await;
    let manifest = image_manifest(&config, &[&layer]);
    let r = c
        .put_manifest(
            "robust/dangling",
            "v1",
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        )
        .await;
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    c.push_blob("robust/dangling", &layer).await;
    assert_eq!(c.head(&blob_url).await.status(), StatusCode::OK);
    let r = c
        .put_manifest(
            "robust/dangling",
            "v1",
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn half_written_upload_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let blob = data(85, 60_000);
    let digest = sha256(&blob);
    let repo = "robust/crash";

    let s = server_with(&["--data", &data_dir]);
    let c = Client::new(&s.url);
    let loc = c.start_upload(repo).await;
    let r = c
        .req(Method::PATCH, &loc)
        .header("content-range", "0-19999")
        .body(blob[..20_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = location(&r);
    // A second upload that will be finished with the wrong bytes.
    let loc2 = c.start_upload(repo).await;
    let r = c
        .req(Method::PATCH, &loc2)
        .body(blob[..20_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc2 = location(&r);
    s.stop();

    // The crash: part of the next chunk reached the disk, unacknowledged.
    let staged = upload_file(dir.path(), repo, &loc);
    let mut f = std::fs::OpenOptions::new().append(true).open(&staged).unwrap();
    std::io::Write::write_all(&mut f, &blob[20_000..25_000]).unwrap();
    drop(f);
    // And garbage reached the other one.
    let staged2 = upload_file(dir.path(), repo, &loc2);
    let mut f = std::fs::OpenOptions::new().append(true).open(&staged2).unwrap();
    std::io::Write::write_all(&mut f, b"garbage").unwrap();
    drop(f);

    let s = server_with(&["--data", &data_dir]);
    let c = Client::new(&s.url);
    let loc = relocate(&loc, &s.url);
    // The client retries its chunk from where it thinks the upload is: refused, with the real offset.
    let r = c
        .req(Method::PATCH, &loc)
        .header("content-range", "20000-39999")
        .body(blob[20_000..40_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "range"), Some("0-24999"));
    // It resumes from there.
    let r = c
        .req(Method::PATCH, &loc)
        .header("content-range", "25000-39999")
        .body(blob[25_000..40_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .req(Method::PUT, &with_query(&location(&r), &format!("digest={digest}")))
        .body(blob[40_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), blob.as_slice());

    // The corrupted one cannot be finished under the digest the client meant.
    let other = data(86, 30_000);
    let mut intended = blob[..20_000].to_vec();
    intended.extend_from_slice(&other);
    let d2 = sha256(&intended);
    let r = c
        .req(
            Method::PUT,
            &with_query(&relocate(&loc2, &s.url), &format!("digest={d2}")),
        )
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "DIGEST_INVALID").await;
    assert_error(c.get(&format!("/v2/{repo}/blobs/{d2}")).await, 404, "BLOB_UNKNOWN").await;
    assert!(!blob_path(dir.path(), &d2).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_tag_pushes_and_deletes_never_fail() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "robust/tagdel";
    let (m, digest) = c.push_image(repo, "latest", 95).await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let base = s.url.clone();
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let c = Client::new(&base);
            for _ in 0..25 {
                if i % 2 == 0 {
                    let r = c.put_manifest(repo, "latest", OCI_MANIFEST, &m).await;
                    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
                } else {
                    let r = c.delete(&format!("/v2/{repo}/manifests/latest")).await;
                    let st = r.status().as_u16();
                    assert!(st == 202 || st == 404, "delete tag: {st} {}", text(r).await);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // The manifest itself is untouched, and the tag is either there or not, never broken.
    assert_eq!(c.head(&format!("/v2/{repo}/manifests/{digest}")).await.status(), 200);
    let r = c.get(&format!("/v2/{repo}/manifests/latest")).await;
    match r.status().as_u16() {
        200 => assert_eq!(r.bytes().await.unwrap().as_ref(), m.as_slice()),
        404 => {}
        other => panic!("tag in a broken state: {other}"),
    }
    let r = c.put_manifest(repo, "latest", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_racing_chunks_never_fails() {
    let s = server();
    for round in 0..10 {
        let c = Client::new(&s.url);
        let loc = c.start_upload("robust/cancel").await;
        let mut tasks = Vec::new();
        for i in 0..4 {
            let base = s.url.clone();
            let loc = loc.clone();
            tasks.push(tokio::spawn(async move {
                let c = Client::new(&base);
                let r = if i == 3 {
                    c.delete(&loc).await
                } else {
                    c.req(Method::PATCH, &loc)
                        .body(vec![i as u8; 50_000])
                        .send()
                        .await
                        .unwrap()
                };
                let st = r.status().as_u16();
                assert!(
                    [202, 204, 404].contains(&st),
                    "round {round} task {i}: {st} {}",
                    text(r).await
                );
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Whatever the order, the session ends cancelled and leaves nothing behind.
        let r = c.get(&loc).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "round {round}");
        assert!(!upload_file(&s.data, "robust/cancel", &loc).exists(), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_manifest_is_never_served_and_a_push_repairs_it() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "robust/manifest";
    let (m, digest) = c.push_image(repo, "v1", 96).await;
    let (m2, digest2) = c.push_image(repo, "v2", 97).await;
    // Same size, different bytes: a bit flip on disk, written before berth ever read it.
    let path = blob_path(&s.data, &digest2);
    let mut damaged = std::fs::read(&path).unwrap();
    damaged[10] ^= 0x20;
    std::fs::write(&path, &damaged).unwrap();
    assert_error(
        c.get(&format!("/v2/{repo}/manifests/{digest2}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(
        c.get(&format!("/v2/{repo}/manifests/v2")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    // Pushing the manifest again repairs it.
    assert_eq!(c.put_manifest(repo, "v2", OCI_MANIFEST, &m2).await.status(), 201);
    let r = c.get(&format!("/v2/{repo}/manifests/v2")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), m2.as_slice());
    // The undamaged one was never affected.
    let r = c.get(&format!("/v2/{repo}/manifests/{digest}")).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), m.as_slice());
}

/// A delete interrupted by a crash leaves its tree in the trash; the next
/// start removes it, and the repository's live data is untouched.
#[tokio::test(flavor = "multi_thread")]
async fn the_trash_of_a_crash_is_emptied_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let s = server_with(&["--data", &data_dir]);
    let c = Client::new(&s.url);
    let digest = c.push_blob("robust/trash", b"kept").await;
    s.stop();
    let left = dir.path().join("berth/v1/trash/0123abcd/v1/current");
    std::fs::create_dir_all(&left).unwrap();
    std::fs::write(left.join("link"), digest.as_bytes()).unwrap();

    let s = server_with(&["--data", &data_dir]);
    let trash = dir.path().join("berth/v1/trash");
    let swept = support::wait_until(Duration::from_secs(10), || {
        std::fs::read_dir(&trash)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false)
    });
    assert!(swept, "the trash was not emptied");
    let c = Client::new(&s.url);
    let r = c.get(&format!("/v2/robust/trash/blobs/{digest}")).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"kept");
}
