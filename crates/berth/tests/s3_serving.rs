//! berth serving from S3 (`--storage s3://BUCKET/PREFIX`) on a real Ceph RGW:
//! the distribution API round trip, skopeo and docker, two and three berth
//! processes sharing one bucket (one killed mid-upload), startup errors, and
//! what berth refuses on S3.
//!
//! Ceph is named by `BERTH_TEST_S3_CEPH_*` (scripts/test.sh starts it and sets
//! them). Without them a test says so and passes, except in CI (`CI=true`),
//! where it fails: CI must test S3.

mod conformance_common;
mod support;

use berth_storage::{layout, Backend};
use conformance_common::*;
use reqwest::{Method, StatusCode};
use std::time::{Duration, Instant};
use support::s3::S3Engine;
use support::{berth_cli, BerthProcess, TestServer};

/// berth in this process on a fresh prefix of Ceph's bucket (emptied when it stops).
fn on_ceph(extra: &[&str]) -> Option<TestServer> {
    let mut args = vec!["--no-self-image"];
    args.extend_from_slice(extra);
    TestServer::start_on_ceph(&args)
}

/// `loc` (a Location, absolute or a path) as a path, to send to another replica.
fn path_of(loc: &str) -> String {
    match loc.strip_prefix("http://") {
        Some(rest) => rest[rest.find('/').expect("a path")..].to_owned(),
        None => loc.to_owned(),
    }
}

async fn patch(c: &Client, loc: &str, start: usize, chunk: &[u8]) -> reqwest::Response {
    c.req(Method::PATCH, &path_of(loc))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{start}-{}", start + chunk.len() - 1))
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap()
}

async fn get_bytes(c: &Client, path: &str) -> (StatusCode, Vec<u8>) {
    let r = c
        .req(Method::GET, path)
        .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
        .send()
        .await
        .unwrap();
    (r.status(), r.bytes().await.unwrap().to_vec())
}

/// The registry API against a berth on Ceph: monolithic and chunked blob
/// pushes (chunks below and above S3's 5 MiB part minimum), manifests by tag
/// and digest, tag list, catalog, ranges, deletes, and a blob whose bytes do
/// not match its digest, which is never stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_round_trip_on_ceph() {
    let Some(server) = on_ceph(&[]) else { return };
    let c = Client::new(&server.url);
    let repo = "s3/round-trip";

    // Monolithic: POST + PUT, and POST with the digest.
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_digest = c.push_blob(repo, &config).await;
    let small = data(1, 70_000);
    let r = c
        .req(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(&small)),
        )
        .header("content-type", "application/octet-stream")
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);

    // Chunked: 3 MiB (buffered, under the part minimum), 4 MiB (folded with
    // it into a part), 100 KiB, and the last bytes with the PUT.
    let big = data(2, (7 << 20) + 150_000);
    let big_digest = sha256(&big);
    let loc = c.start_upload(repo).await;
    let mut at = 0;
    let mut loc = loc;
    for len in [3 << 20, 4 << 20, 100_000] {
        let r = patch(&c, &loc, at, &big[at..at + len]).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "PATCH at {at}: {}", text(r).await);
        at += len;
        assert_eq!(header(&r, "range"), Some(format!("0-{}", at - 1).as_str()));
        loc = location(&r);
    }
    let r = c
        .req(
            Method::PUT,
            &with_query(&path_of(&loc), &format!("digest={big_digest}")),
        )
        .header("content-type", "application/octet-stream")
        .body(big[at..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    assert_eq!(header(&r, "docker-content-digest"), Some(big_digest.as_str()));

    // Served whole, by range, and HEAD tells the size.
    let (status, body) = get_bytes(&c, &format!("/v2/{repo}/blobs/{big_digest}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == big, "the chunked blob came back different");
    let r = c
        .req(Method::GET, &format!("/v2/{repo}/blobs/{big_digest}"))
        .header("range", "bytes=5000000-5000099")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &big[5_000_000..5_000_100]);
    let r = c.head(&format!("/v2/{repo}/blobs/{big_digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), Some(big.len().to_string().as_str()));

    // Stored in distribution's layout below the prefix.
    let (engine, storage) = server.s3.clone().expect("on S3");
    let hex = big_digest.trim_start_matches("sha256:");
    let key = format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]);
    let meta = berth_storage::Backend::head(&engine.backend(&storage).await, &key)
        .await
        .expect("the blob's data object in the bucket");
    assert_eq!(meta.size, big.len() as u64);

    // A blob whose bytes do not match its digest is refused and not stored.
    let liar = data(3, 10_000);
    let claimed = sha256(b"something else");
    let loc = c.start_upload(repo).await;
    let r = c
        .req(Method::PUT, &with_query(&path_of(&loc), &format!("digest={claimed}")))
        .header("content-type", "application/octet-stream")
        .body(liar)
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "DIGEST_INVALID").await;
    assert_eq!(c.head(&format!("/v2/{repo}/blobs/{claimed}")).await.status(), 404);

    // Manifests by tag and digest, the tag list and the catalog.
    let manifest = image_manifest(&config, &[&small, &big]);
    let digest = sha256(&manifest);
    for tag in ["v1", "v2"] {
        let r = c.put_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
        assert_eq!(header(&r, "docker-content-digest"), Some(digest.as_str()));
    }
    for reference in ["v1", digest.as_str()] {
        let (status, body) = get_bytes(&c, &format!("/v2/{repo}/manifests/{reference}")).await;
        assert_eq!(status, StatusCode::OK, "{reference}");
        assert_eq!(body, manifest, "{reference}");
    }
    let r = c.head(&format!("/v2/{repo}/manifests/v2")).await;
    assert_eq!(header(&r, "docker-content-digest"), Some(digest.as_str()));
    let other = "s3/other";
    c.push_image(other, "latest", 7).await;
    let tags = json_body(c.get(&format!("/v2/{repo}/tags/list")).await).await;
    assert_eq!(tags, serde_json::json!({"name": repo, "tags": ["v1", "v2"]}));
    let catalog = json_body(c.get("/v2/_catalog").await).await;
    assert_eq!(catalog, serde_json::json!({"repositories": [other, repo]}));
    let page = c.get("/v2/_catalog?n=1").await;
    assert!(
        header(&page, "link").is_some_and(|l| l.contains("last=")),
        "{:?}",
        page.headers()
    );
    assert_eq!(json_body(page).await, serde_json::json!({"repositories": [other]}));

    // Readiness probes the bucket; usage walks it; garbage collection runs
    // (see s3_gc.rs) and, everything being just pushed, frees nothing.
    let ready = c.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK, "{}", text(ready).await);
    let usage = json_body(c.get("/berth/v1/usage").await).await;
    assert!(usage.to_string().contains(repo), "{usage}");
    let dry = c.get("/berth/v1/gc").await;
    assert_eq!(dry.status(), StatusCode::OK, "{}", text(dry).await);
    let pass = c.req(Method::POST, "/berth/v1/gc").send().await.unwrap();
    assert_eq!(pass.status(), StatusCode::OK);
    let pass = json_body(pass).await;
    assert_eq!(pass["blobs_deleted"], 0, "{pass}");

    // Deletes: a tag, the manifest, a blob.
    assert_eq!(c.delete(&format!("/v2/{repo}/manifests/v2")).await.status(), 202);
    let tags = json_body(c.get(&format!("/v2/{repo}/tags/list")).await).await;
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    assert_eq!(c.delete(&format!("/v2/{repo}/manifests/{digest}")).await.status(), 202);
    assert_error(
        c.get(&format!("/v2/{repo}/manifests/v1")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(
        c.get(&format!("/v2/{repo}/manifests/{digest}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(
        c.delete(&format!("/v2/{repo}/blobs/{config_digest}")).await.status(),
        202
    );
    assert_error(
        c.get(&format!("/v2/{repo}/blobs/{config_digest}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
}

/// skopeo copies a multi-arch index into berth on Ceph and back out, every
/// digest kept.
#[test]
fn skopeo_copies_a_multi_arch_index_in_and_out() {
    let Some(server) = on_ceph(&[]) else { return };
    support::skopeo_scenarios::copy_index_in_and_out_keeps_digests(&server);
}

/// docker pushes, pulls and runs an image through berth on Ceph.
#[test]
fn docker_push_pull_run() {
    let Some(server) = on_ceph(&[]) else { return };
    support::docker::push_pull_run(&server);
}

/// docker's one streamed PATCH per layer, with a 6 MiB layer (more than one
/// S3 part), up and down whole and in order.
#[test]
fn docker_push_pull_several_layers() {
    let Some(server) = on_ceph(&[]) else { return };
    support::docker::push_pull_several_layers(&server);
}

/// A `berth serve` process (the real executable) on `storage`.
fn replica(engine: &S3Engine, storage: &str, data: &std::path::Path) -> BerthProcess {
    replica_with(engine, storage, data, &[])
}

fn replica_with(engine: &S3Engine, storage: &str, data: &std::path::Path, args: &[&str]) -> BerthProcess {
    let mut extra = vec!["--no-self-image".to_string()];
    extra.extend(args.iter().map(|a| a.to_string()));
    extra.extend(engine.serve_args(storage));
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    BerthProcess::spawn_with(data, &extra, |cmd| engine.configure(cmd))
}

/// Two berth processes on one bucket and prefix: an upload begun on one is
/// continued on the other, then on the first again, finished on the second
/// and pulled from both; a tag PUT on either is read on the other at once.
/// A tag's move and its delete are seen at once by the replica that made
/// them and by one that reads the bucket every time (`--reference-cache-ttl
/// 0`), and within its `--reference-cache-ttl` by one that read the tag
/// before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_uploads_and_tags() {
    let Some(engine) = S3Engine::ceph() else { return };
    let storage = engine.unique_storage();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    const TTL: Duration = Duration::from_secs(2);
    let a = replica_with(&engine, &storage, dirs.0.path(), &["--reference-cache-ttl", "2s"]);
    let b = replica_with(&engine, &storage, dirs.1.path(), &["--reference-cache-ttl", "0"]);
    let (ca, cb) = (Client::new(&a.url), Client::new(&b.url));
    let repo = "s3/replicas";

    // POST + PATCH on A, PATCH on B, PATCH on A, PUT on B.
    let layer = data(20, (6 << 20) + 12_345);
    let layer_digest = sha256(&layer);
    let loc = ca.start_upload(repo).await;
    let first = 2 << 20;
    let r = patch(&ca, &loc, 0, &layer[..first]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", text(r).await);
    let loc = location(&r);
    // B knows the session: its status is the bytes A took.
    let r = cb.get(&path_of(&loc)).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", text(r).await);
    assert_eq!(header(&r, "range"), Some(format!("0-{}", first - 1).as_str()));
    let second = first + (3 << 20);
    let r = patch(&cb, &loc, first, &layer[first..second]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", text(r).await);
    let loc = location(&r);
    // Back to A, whose memory of the session is one chunk behind.
    let third = second + 1_000_000;
    let r = patch(&ca, &loc, second, &layer[second..third]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", text(r).await);
    assert_eq!(header(&r, "range"), Some(format!("0-{}", third - 1).as_str()));
    let loc = location(&r);
    let r = cb
        .req(
            Method::PUT,
            &with_query(&path_of(&loc), &format!("digest={layer_digest}")),
        )
        .header("content-type", "application/octet-stream")
        .body(layer[third..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);

    let config = br#"{"architecture":"amd64","os":"linux","replicas":2}"#.to_vec();
    ca.push_blob(repo, &config).await;
    let manifest = image_manifest(&config, &[&layer]);
    let digest = sha256(&manifest);
    let r = ca.put_manifest(repo, "shared", OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);

    // Pulled from both.
    for c in [&ca, &cb] {
        let (status, body) = get_bytes(c, &format!("/v2/{repo}/manifests/shared")).await;
        assert_eq!((status, body == manifest), (StatusCode::OK, true), "{}", c.base);
        for (blob, d) in [(&layer, &layer_digest), (&config, &sha256(&config))] {
            let (status, body) = get_bytes(c, &format!("/v2/{repo}/blobs/{d}")).await;
            assert_eq!((status, &body == blob), (StatusCode::OK, true), "{} {d}", c.base);
        }
    }

    // A tag moved on B: B reads it at once; A, which read the tag lately,
    // serves the old digest at most its TTL after the move's 201 (what it
    // remembers was read before the move).
    let tag_path = format!("/v2/{repo}/manifests/shared");
    let r = ca.head(&tag_path).await;
    assert_eq!(header(&r, "docker-content-digest"), Some(digest.as_str()));
    let config2 = br#"{"architecture":"amd64","os":"linux","replicas":"moved"}"#.to_vec();
    cb.push_blob(repo, &config2).await;
    let moved = image_manifest(&config2, &[&layer]);
    let r = cb.put_manifest(repo, "shared", OCI_MANIFEST, &moved).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    let moved_at = Instant::now();
    let r = cb.head(&tag_path).await;
    assert_eq!(header(&r, "docker-content-digest"), Some(sha256(&moved).as_str()));
    loop {
        let r = ca.head(&tag_path).await;
        let seen = header(&r, "docker-content-digest").unwrap_or_default().to_owned();
        if seen == sha256(&moved) {
            break;
        }
        assert_eq!(seen, digest, "A serves a digest the tag never named");
        assert!(
            moved_at.elapsed() < TTL,
            "A served the moved tag's old digest past its TTL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = get_bytes(&ca, &tag_path).await;
    assert_eq!((status, body == moved), (StatusCode::OK, true));
    // Deleted on A: gone on A at once, and on B (no cache) at once.
    assert_eq!(ca.delete(&tag_path).await.status(), 202);
    for c in [&ca, &cb] {
        assert_error(c.get(&tag_path).await, 404, "MANIFEST_UNKNOWN").await;
    }
    // The first manifest is still there by digest, on both.
    for c in [&ca, &cb] {
        let (status, _) = get_bytes(c, &format!("/v2/{repo}/manifests/{digest}")).await;
        assert_eq!(status, StatusCode::OK, "{}", c.base);
    }
    drop((a, b));
    engine.remove(&storage);
}

/// Three replicas on one bucket: an upload begun on A is cut off by A's
/// `kill -9` in the middle of a chunk; C reports how much of it the bucket
/// holds and takes the rest, B finishes it, and B and C serve the verified
/// blob. Then B and C push different manifests to one tag at the same time:
/// both are acknowledged, and afterwards both replicas read the same one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_survive_a_kill_mid_chunk_and_agree_on_a_raced_tag() {
    let Some(engine) = S3Engine::ceph() else { return };
    let storage = engine.unique_storage();
    let dirs = [(); 3].map(|_| tempfile::tempdir().unwrap());
    let mut a = replica(&engine, &storage, dirs[0].path());
    let b = replica(&engine, &storage, dirs[1].path());
    let c = replica(&engine, &storage, dirs[2].path());
    let (ca, cb, cc) = (Client::new(&a.url), Client::new(&b.url), Client::new(&c.url));
    let repo = "s3/three";

    let layer = data(30, (9 << 20) + 777);
    let layer_digest = sha256(&layer);
    let loc = ca.start_upload(repo).await;
    let first = 3 << 20;
    let r = patch(&ca, &loc, 0, &layer[..first]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", text(r).await);
    let loc = location(&r);
    // A chunk that A is receiving when it is killed: half of it sent, then a pause.
    let half = first + (1 << 20);
    let sent: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(layer[first..half].to_vec())];
    let body = futures::StreamExt::chain(
        futures::stream::iter(sent),
        futures::stream::once(async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(Vec::new())
        }),
    );
    let in_flight = tokio::spawn(
        ca.req(Method::PATCH, &path_of(&loc))
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    assert!(
        in_flight.await.unwrap().is_err(),
        "A answered a chunk it never finished"
    );

    // C: how far the bucket's session got (the acknowledged chunk at least,
    // the cut-off one at most), then the rest but the last byte; B finishes.
    let r = cc.get(&path_of(&loc)).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", text(r).await);
    let range = header(&r, "range").unwrap().to_owned();
    let held: usize = range.trim_start_matches("0-").parse::<usize>().unwrap() + 1;
    assert!((first..=half).contains(&held), "the session holds {held} bytes");
    let r = patch(&cc, &loc, held, &layer[held..layer.len() - 1]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", text(r).await);
    let loc = location(&r);
    let r = cb
        .req(
            Method::PUT,
            &with_query(&path_of(&loc), &format!("digest={layer_digest}")),
        )
        .header("content-type", "application/octet-stream")
        .body(layer[layer.len() - 1..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    for client in [&cb, &cc] {
        let (status, body) = get_bytes(client, &format!("/v2/{repo}/blobs/{layer_digest}")).await;
        assert_eq!(status, StatusCode::OK, "{}", client.base);
        assert_eq!(sha256(&body), layer_digest, "{}", client.base);
    }

    // One tag pushed on B and on C at once, to different manifests.
    let configs = [1, 2].map(|i| format!(r#"{{"architecture":"amd64","os":"linux","race":{i}}}"#).into_bytes());
    cb.push_blob(repo, &configs[0]).await;
    cc.push_blob(repo, &configs[1]).await;
    let manifests = [0, 1].map(|i| image_manifest(&configs[i], &[&layer]));
    let (rb, rc) = tokio::join!(
        cb.put_manifest(repo, "raced", OCI_MANIFEST, &manifests[0]),
        cc.put_manifest(repo, "raced", OCI_MANIFEST, &manifests[1]),
    );
    assert_eq!((rb.status(), rc.status()), (StatusCode::CREATED, StatusCode::CREATED));
    let digests = [sha256(&manifests[0]), sha256(&manifests[1])];
    let seen: Vec<String> = futures::future::join_all([&cb, &cc].map(|client| async move {
        let r = client.head(&format!("/v2/{repo}/manifests/raced")).await;
        header(&r, "docker-content-digest").unwrap_or_default().to_owned()
    }))
    .await;
    assert_eq!(seen[0], seen[1], "the replicas disagree on the tag");
    assert!(
        digests.contains(&seen[0]),
        "the tag names neither pushed manifest: {}",
        seen[0]
    );
    // Both manifests stay readable by digest (the loser is untagged, not lost).
    for d in &digests {
        let (status, _) = get_bytes(&cc, &format!("/v2/{repo}/manifests/{d}")).await;
        assert_eq!(status, StatusCode::OK, "{d}");
    }
    drop((b, c));
    engine.remove(&storage);
}

/// A bucket that does not exist stops berth at start, naming the bucket and
/// the endpoint, in a few lines and without a backtrace.
#[test]
fn a_missing_bucket_is_a_startup_error_naming_it() {
    let Some(engine) = S3Engine::ceph() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bucket = format!("berth-missing-{}", uuid::Uuid::new_v4().simple());
    let mut t = berth_cli(["serve", "--no-self-image", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().to_str().unwrap())
        .args(engine.serve_args(&format!("s3://{bucket}/x")))
        .env("RUST_BACKTRACE", "1")
        .timeout(Duration::from_secs(60));
    for (k, v) in engine.env() {
        t = t.env(k, v);
    }
    let out = t.fails();
    assert!(
        out.stderr.contains(&bucket) && out.stderr.contains(&engine.endpoint) && out.stderr.contains("does not exist"),
        "{}",
        out.describe()
    );
    assert_short_error(&out.stderr);
}

/// An endpoint where nothing listens stops berth at start within seconds,
/// naming the endpoint. (No engine needed.)
#[test]
fn an_unreachable_endpoint_is_a_startup_error_naming_it() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = berth_cli(["serve", "--no-self-image", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().to_str().unwrap())
        .args(["--storage", "s3://registry/berth", "--s3-endpoint", &endpoint])
        .env("AWS_ACCESS_KEY_ID", "unused")
        .env("AWS_SECRET_ACCESS_KEY", "unused")
        .env("RUST_BACKTRACE", "1")
        .timeout(Duration::from_secs(60))
        .fails();
    assert!(
        out.stderr.contains(&endpoint)
            && out.stderr.contains("cannot reach")
            && out.stderr.contains("Connection refused")
            && out.stderr.contains("s3://registry/berth"),
        "{}",
        out.describe()
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert_short_error(&out.stderr);
}

/// Without credentials berth stops at once and says which variables to set
/// (the S3 client would otherwise ask the EC2 metadata service for some).
#[test]
fn missing_credentials_are_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = berth_cli(["serve", "--no-self-image", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().to_str().unwrap())
        .args([
            "--storage",
            "s3://registry/berth",
            "--s3-endpoint",
            "http://127.0.0.1:9",
        ]);
    for v in [
        "AWS_ACCESS_KEY_ID",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        t = t.env(v, "");
    }
    let out = t.fails();
    assert!(
        out.stderr.contains("no credentials") && out.stderr.contains("AWS_ACCESS_KEY_ID"),
        "{}",
        out.describe()
    );
    assert_short_error(&out.stderr);
}

fn assert_short_error(stderr: &str) {
    let lower = stderr.to_lowercase();
    assert!(!lower.contains("backtrace") && !lower.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error:") || l.trim_start().starts_with("caused by:"))
        .collect();
    assert!(!errors.is_empty() && errors.len() <= 4, "{stderr}");
}

/// `--storage` comes from the config file or the environment like every
/// option, and `--check-config` validates it (no engine needed: nothing connects).
#[test]
fn storage_comes_from_the_file_or_the_environment_and_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let file = support::write_config(
        dir.path(),
        "storage = \"s3://from-file/berth\"\ns3-endpoint = \"http://127.0.0.1:7480\"\n",
    );
    let out = berth_cli(["serve", "--check-config", "--config", file.to_str().unwrap()]).ok();
    let effective: toml::Table = toml::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    assert_eq!(
        effective["storage"].as_str(),
        Some("s3://from-file/berth"),
        "{}",
        out.stdout
    );
    let out = berth_cli(["serve", "--check-config", "--config", file.to_str().unwrap()])
        .env("BERTH_STORAGE", "s3://from-env")
        .ok();
    let effective: toml::Table = toml::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    assert_eq!(effective["storage"].as_str(), Some("s3://from-env"), "{}", out.stdout);

    for (text, expected) in [
        ("storage = \"/var/lib/berth\"\n", "expected s3://BUCKET[/PREFIX]"),
        ("storage = \"s3://\"\n", "names no bucket"),
        ("storage = \"s3://b/a//c\"\n", "prefix"),
        (
            "storage = \"s3://b\"\ns3-endpoint = \"127.0.0.1:7480\"\n",
            "expected http://HOST[:PORT]",
        ),
        ("storage = \"s3://b\"\ns3-addressing-style = \"sideways\"\n", "line 2"),
    ] {
        let file = support::write_config(dir.path(), text);
        let out = berth_cli(["serve", "--check-config", "--config", file.to_str().unwrap()]).fails();
        assert!(out.stderr.contains(expected), "{text}: {}", out.describe());
    }
}

/// The catalog on S3 pages from the index once the server has completed it
/// (at start, on a bucket without one): pushes index their repositories, a
/// repository written behind berth's back (as distribution would) is listed
/// after the next garbage collection pass, and pages follow `Link`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_pages_from_the_index_on_ceph() {
    let Some(server) = on_ceph(&["--gc-interval", "0"]) else {
        return;
    };
    let c = Client::new(&server.url);
    let (engine, storage) = server.s3.as_ref().unwrap();
    let store = engine.backend(storage).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.head(&layout::catalog_index_complete()).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the index was never completed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for repo in ["idx/c", "idx/a/x", "idx/b", "idx/a-y"] {
        c.push_blob(repo, repo.as_bytes()).await;
    }
    let hidden = b"written by another program";
    let digest: berth_spec::Digest = sha256(hidden).parse().unwrap();
    let name: berth_spec::RepoName = "idx/zed".parse().unwrap();
    store
        .put(
            &layout::layer_link(&name, &digest),
            layout::link_content(&digest).into(),
        )
        .await
        .unwrap();
    let all = json_body(c.get("/v2/_catalog").await).await;
    assert_eq!(
        all["repositories"],
        serde_json::json!(["idx/a-y", "idx/a/x", "idx/b", "idx/c"])
    );
    let first = c.get("/v2/_catalog?n=2").await;
    let link = header(&first, "link").expect("a next page").to_owned();
    assert_eq!(
        json_body(first).await["repositories"],
        serde_json::json!(["idx/a-y", "idx/a/x"])
    );
    let next = link.trim_start_matches('<').split('>').next().unwrap().to_owned();
    assert_eq!(
        json_body(c.get(&next).await).await["repositories"],
        serde_json::json!(["idx/b", "idx/c"])
    );

    let r = c.req(reqwest::Method::POST, "/berth/v1/gc").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", text(r).await);
    let all = json_body(c.get("/v2/_catalog?last=idx/c").await).await;
    assert_eq!(all["repositories"], serde_json::json!(["idx/zed"]));
}

/// `berth import` into a bucket a server is serving, and `berth export`
/// from it: a multi-platform image goes in whole (served at once, listed in
/// the catalog) and comes out with the same digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_into_and_export_from_a_served_bucket() {
    let Some(server) = on_ceph(&[]) else { return };
    let (engine, storage) = server.s3.as_ref().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut layout = support::images::OciLayout::create(&tmp.path().join("layout"));
    let index = support::images::Index::multi_arch("s3-import");
    layout.add_index("v1", &index);
    let cli = |args: &[&str]| {
        let mut line: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        line.extend(engine.serve_args(storage));
        let mut tool = berth_cli(line);
        for (k, v) in engine.env() {
            tool = tool.env(k, v);
        }
        tool.run()
    };
    let layout_dir = layout.dir.to_str().unwrap().to_owned();
    let out = cli(&["import", &layout_dir, "--repo", "imported/app"]);
    assert!(out.success(), "{}", out.describe());

    let c = Client::new(&server.url);
    let r = c
        .req(Method::GET, "/v2/imported/app/manifests/v1")
        .header("accept", OCI_INDEX)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), Some(index.index.digest.as_str()));
    let catalog = json_body(c.get("/v2/_catalog").await).await;
    assert_eq!(catalog["repositories"], serde_json::json!(["imported/app"]));

    let archive = tmp.path().join("out.tar");
    let out = cli(&["export", "imported/app:v1", "-o", archive.to_str().unwrap()]);
    assert!(out.success(), "{}", out.describe());
    let listed = support::tools::tool("tar")
        .args(["-xOf", archive.to_str().unwrap(), "index.json"])
        .run();
    assert!(listed.success(), "{}", listed.describe());
    assert!(listed.stdout.contains(index.index.digest.as_str()), "{}", listed.stdout);
}

/// What only works with one process writing the storage is refused on S3,
/// by `--check-config` and at start, with the reason; the repository rules
/// (ordered through the bucket) are accepted.
#[test]
fn single_writer_features_are_refused_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        (
            "storage = \"s3://b\"\nupstream-cache-size = \"1GiB\"\n",
            "--upstream-cache-size is not supported on S3",
        ),
        ("storage = \"s3://b\"\ntoken = true\n", "needs --token-key"),
    ] {
        let file = support::write_config(dir.path(), text);
        let out = berth_cli(["serve", "--check-config", "--config", file.to_str().unwrap()]).fails();
        assert!(out.stderr.contains(expected), "{text}: {}", out.describe());
    }
    let rules = "storage = \"s3://b\"\n[[quota]]\nrepositories = \"**\"\nlimit = \"1GiB\"\n\
                 [[retention]]\nrepositories = \"ci/**\"\nkeep-last = 3\n[[immutable]]\nrepositories = \"rel/**\"\n";
    let file = support::write_config(dir.path(), rules);
    let out = berth_cli(["serve", "--check-config", "--config", file.to_str().unwrap()])
        .env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .run();
    assert!(out.success(), "{}", out.describe());
}

/// A TCP relay to the store that the test can cut: new connections are
/// refused and open ones closed, as when the store's host goes away.
struct Relay {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let held = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                held.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Relay {
            addr,
            task,
            connections,
        }
    }

    fn cut(&self) {
        self.task.abort();
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// A store that stops answering: after the backend's retries the client gets
/// 503 TOOMANYREQUESTS with Retry-After, never a 500, and what was stored
/// before is intact once the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_a_503_with_retry_after() {
    let Some(engine) = S3Engine::ceph() else { return };
    let relay = Relay::start(engine.endpoint.trim_start_matches("http://").to_owned()).await;
    let relayed = S3Engine {
        endpoint: format!("http://{}", relay.addr),
        ..engine.clone()
    };
    let storage = engine.unique_storage();
    let server = TestServer::start_on_s3(&relayed, &storage, &["--no-self-image"]);
    let c = Client::new(&server.url);
    let (manifest, digest) = c.push_image("s3/outage", "v1", 9).await;

    relay.cut();
    // Let the handshake of the server's thread settle (it is in this
    // process: the relay's tasks are gone once aborted).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let r = c.get("/v2/s3/outage/manifests/v1").await;
    let waited = started.elapsed();
    assert_eq!(header(&r, "retry-after"), Some("5"), "{:?}", r.headers());
    assert_error(r, 503, "TOOMANYREQUESTS").await;
    assert!(waited < Duration::from_secs(40), "answered after {waited:?}");

    // The same bucket through a working endpoint: the image is whole.
    let direct = TestServer::start_on_s3(&engine, &storage, &["--no-self-image"]);
    let (status, body) = get_bytes(&Client::new(&direct.url), "/v2/s3/outage/manifests/v1").await;
    assert_eq!((status, sha256(&body)), (StatusCode::OK, digest));
    assert_eq!(body, manifest);
    drop((server, direct));
    engine.remove(&storage);
}
