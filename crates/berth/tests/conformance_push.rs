//! OCI Distribution Spec v1.1, "Push" conformance category: monolithic,
//! chunked and streamed blob uploads, mounts, and manifest pushes with their
//! validation.

mod conformance_common;
mod support;

use conformance_common::*;
use reqwest::{Method, StatusCode};

async fn blob_is(c: &Client, repo: &str, digest: &str, expected: &[u8]) {
    let r = c.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(r.status(), StatusCode::OK, "GET {repo}@{digest}");
    assert_eq!(header(&r, "docker-content-digest"), Some(digest));
    assert_eq!(r.bytes().await.unwrap().as_ref(), expected, "{repo}@{digest}");
}

fn assert_created_blob(r: &reqwest::Response, repo: &str, digest: &str) {
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.headers());
    assert_api_version(r);
    assert_eq!(header(r, "docker-content-digest"), Some(digest));
    let loc = location(r);
    assert!(loc.ends_with(&format!("/v2/{repo}/blobs/{digest}")), "{loc}");
}

#[tokio::test(flavor = "multi_thread")]
async fn post_then_put_monolithic() {
    let s = server();
    let c = Client::new(&s.url);
    let blob = data(10, 70_000);
    let digest = sha256(&blob);
    let r = c
        .req(Method::POST, "/v2/push/mono/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_api_version(&r);
    let loc = location(&r);
    assert!(loc.contains("/v2/push/mono/blobs/uploads/"), "{loc}");
    assert_eq!(header(&r, "range"), Some("0-0"));
    let r = c
        .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_created_blob(&r, "push/mono", &digest);
    blob_is(&c, "push/mono", &digest, &blob).await;
    // The session is over.
    assert_error(c.get(&loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn post_with_digest_is_monolithic() {
    let s = server();
    let c = Client::new(&s.url);
    let blob = data(11, 12_345);
    let digest = sha256(&blob);
    let r = c
        .req(Method::POST, &format!("/v2/push/post/blobs/uploads/?digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_created_blob(&r, "push/post", &digest);
    blob_is(&c, "push/post", &digest, &blob).await;

    // A wrong digest stores nothing.
    let wrong = sha256(b"something else");
    let r = c
        .req(Method::POST, &format!("/v2/push/post/blobs/uploads/?digest={wrong}"))
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "DIGEST_INVALID").await;
    assert_error(
        c.get(&format!("/v2/push/post/blobs/{wrong}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_upload_in_order_and_out_of_order() {
    let s = server();
    let c = Client::new(&s.url);
    let blob = data(12, 30_000);
    let digest = sha256(&blob);
    let loc = c.start_upload("push/chunked").await;
    let mut loc = loc;
    let chunks = [(0usize, 10_000usize), (10_000, 20_000)];
    for (start, end) in chunks {
        let r = c
            .req(Method::PATCH, &loc)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{}-{}", start, end - 1))
            .header("content-length", (end - start).to_string())
            .body(blob[start..end].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_api_version(&r);
        assert_eq!(header(&r, "range"), Some(format!("0-{}", end - 1).as_str()));
        loc = location(&r);
        assert!(loc.contains("/v2/push/chunked/blobs/uploads/"), "{loc}");
    }
    // Status says the same.
    let r = c.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), Some("0-19999"));
    assert!(header(&r, "location").is_some());

    // A chunk that skips ahead, one that repeats, and one that overlaps are refused with the current Range.
    for (start, end) in [(25_000usize, 30_000usize), (0, 10_000), (15_000, 25_000)] {
        let r = c
            .req(Method::PATCH, &loc)
            .header("content-range", format!("{}-{}", start, end - 1))
            .header("content-length", (end - start).to_string())
            .body(blob[start..end].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{start}-{end}");
        assert_api_version(&r);
        assert_eq!(header(&r, "range"), Some("0-19999"), "{start}-{end}");
        assert!(header(&r, "location").is_some());
    }
    // An out-of-order last chunk sent with the closing PUT is refused the same
    // way, and the session lives on.
    let r = c
        .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
        .header("content-range", "25000-29999")
        .header("content-length", "5000")
        .body(blob[25_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "range"), Some("0-19999"));
    let loc = location(&r);
    assert_error(
        c.get(&format!("/v2/push/chunked/blobs/{digest}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    // A malformed Content-Range is refused too, without touching the upload.
    let r = c
        .req(Method::PATCH, &loc)
        .header("content-range", "garbage")
        .body(b"xx".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&c.get(&loc).await, "range"), Some("0-19999"));

    // The upload goes on from where it was, and finishes with the last chunk in the PUT.
    let r = c
        .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
        .header("content-range", "20000-29999")
        .header("content-length", "10000")
        .body(blob[20_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_created_blob(&r, "push/chunked", &digest);
    blob_is(&c, "push/chunked", &digest, &blob).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_patch_without_content_range_and_empty_put() {
    let s = server();
    let c = Client::new(&s.url);
    let blob = data(13, 3 * 1024 * 1024 + 17);
    let digest = sha256(&blob);
    let loc = c.start_upload("push/stream").await;
    // Chunked transfer encoding: no Content-Length, no Content-Range.
    let parts: Vec<Result<Vec<u8>, std::io::Error>> = blob.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let r = c
        .req(Method::PATCH, &loc)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(parts)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), Some(format!("0-{}", blob.len() - 1).as_str()));
    let loc = location(&r);
    let r = c
        .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_created_blob(&r, "push/stream", &digest);
    blob_is(&c, "push/stream", &digest, &blob).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_status_and_cancel() {
    let s = server();
    let c = Client::new(&s.url);
    let loc = c.start_upload("push/cancel").await;
    let r = c.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_api_version(&r);
    assert_eq!(header(&r, "range"), Some("0-0"));
    let r = c.req(Method::PATCH, &loc).body(vec![1u8; 10]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), Some("0-9"));

    let r = c.delete(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_api_version(&r);
    assert_error(c.get(&loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_error(
        c.req(Method::PATCH, &loc).body(vec![1u8; 10]).send().await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    let d = sha256(&[1u8; 10]);
    assert_error(
        c.req(Method::PUT, &with_query(&loc, &format!("digest={d}")))
            .send()
            .await
            .unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_error(c.delete(&loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    // A session belongs to its repository: its id is unknown anywhere else.
    let other = c.start_upload("push/cancel").await;
    let id = other.rsplit('/').next().unwrap();
    let foreign = format!("/v2/push/elsewhere/blobs/uploads/{id}");
    assert_error(c.get(&foreign).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_error(
        c.req(Method::PATCH, &foreign).body(vec![1u8; 10]).send().await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_error(c.delete(&foreign).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_eq!(c.get(&other).await.status(), StatusCode::NO_CONTENT);
    // Nothing left on disk for the cancelled session.
    let id = loc.rsplit('/').next().unwrap();
    let dir = s
        .data
        .join("docker/registry/v2/repositories/push/cancel/_uploads")
        .join(id);
    assert!(!dir.exists(), "{dir:?} still exists");
}

#[tokio::test(flavor = "multi_thread")]
async fn digest_mismatch_stores_nothing() {
    let s = server();
    let c = Client::new(&s.url);
    let blob = data(14, 4096);
    let claimed = sha256(b"the client lies");
    let loc = c.start_upload("push/mismatch").await;
    let r = c
        .req(Method::PUT, &with_query(&loc, &format!("digest={claimed}")))
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "DIGEST_INVALID").await;
    assert_error(
        c.get(&format!("/v2/push/mismatch/blobs/{claimed}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    // Nor under the real digest: nobody asked for it.
    let real = sha256(&blob);
    assert_eq!(c.head(&format!("/v2/push/mismatch/blobs/{real}")).await.status(), 404);
    let hex = claimed.strip_prefix("sha256:").unwrap();
    let stored = s
        .data
        .join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]));
    assert!(!stored.exists());
    // PUT without ?digest= and with a malformed one are refused too.
    let loc = c.start_upload("push/mismatch").await;
    assert_error(
        c.req(Method::PUT, &loc).body(blob.clone()).send().await.unwrap(),
        400,
        "DIGEST_INVALID",
    )
    .await;
    assert_error(
        c.req(Method::PUT, &with_query(&loc, "digest=sha256:zz"))
            .body(blob.clone())
            .send()
            .await
            .unwrap(),
        400,
        "DIGEST_INVALID",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sha512_and_empty_blobs() {
    let s = server();
    let c = Client::new(&s.url);
    let blob = data(15, 50_000);
    let d512 = sha512(&blob);
    // Chunked upload with a sha512 digest.
    let loc = c.start_upload("push/sha512").await;
    let r = c
        .req(Method::PATCH, &loc)
        .header("content-range", "0-24999")
        .header("content-length", "25000")
        .body(blob[..25_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .req(Method::PUT, &with_query(&location(&r), &format!("digest={d512}")))
        .header("content-range", "25000-49999")
        .body(blob[25_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_created_blob(&r, "push/sha512", &d512);
    blob_is(&c, "push/sha512", &d512, &blob).await;
    // Monolithic with sha512.
    let other = data(16, 999);
    let d = sha512(&other);
    let r = c
        .req(Method::POST, &format!("/v2/push/sha512/blobs/uploads/?digest={d}"))
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_created_blob(&r, "push/sha512", &d);
    blob_is(&c, "push/sha512", &d, &other).await;
    // A wrong sha512 is a mismatch.
    let r = c
        .req(
            Method::POST,
            &format!("/v2/push/sha512/blobs/uploads/?digest={}", sha512(b"x")),
        )
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "DIGEST_INVALID").await;

    // The empty blob, both ways.
    let empty = sha256(b"");
    let loc = c.start_upload("push/empty").await;
    let r = c
        .req(Method::PUT, &with_query(&loc, &format!("digest={empty}")))
        .send()
        .await
        .unwrap();
    assert_created_blob(&r, "push/empty", &empty);
    let r = c.head(&format!("/v2/push/empty/blobs/{empty}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), Some("0"));
    let r = c
        .req(Method::POST, &format!("/v2/push/empty2/blobs/uploads/?digest={empty}"))
        .send()
        .await
        .unwrap();
    assert_created_blob(&r, "push/empty2", &empty);
    blob_is(&c, "push/empty2", &empty, b"").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_repository_mount() {
    let s = server();
    let c = Client::new(&s.url);
    let blob = data(17, 2000);
    let digest = c.push_blob("push/src", &blob).await;
    let r = c
        .req(
            Method::POST,
            &format!("/v2/push/dst/blobs/uploads/?mount={digest}&from=push/src"),
        )
        .send()
        .await
        .unwrap();
    assert_created_blob(&r, "push/dst", &digest);
    blob_is(&c, "push/dst", &digest, &blob).await;

    // Without `from` (the spec lets the registry treat it as optional), the
    // blob is mounted from wherever the registry holds it.
    let r = c
        .req(Method::POST, &format!("/v2/push/anon/blobs/uploads/?mount={digest}"))
        .send()
        .await
        .unwrap();
    assert_created_blob(&r, "push/anon", &digest);
    blob_is(&c, "push/anon", &digest, &blob).await;

    // Not mountable (unknown blob, with or without a source; wrong source): 202 and a usable session.
    let missing = sha256(b"missing");
    for q in [
        format!("mount={missing}&from=push/src"),
        format!("mount={digest}&from=push/nowhere"),
        format!("mount={missing}"),
    ] {
        let r = c
            .req(Method::POST, &format!("/v2/push/dst2/blobs/uploads/?{q}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{q}");
        assert_api_version(&r);
        let loc = location(&r);
        assert!(loc.contains("/v2/push/dst2/blobs/uploads/"), "{loc}");
        let r = c.get(&loc).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{q}");
    }
    assert_eq!(c.head(&format!("/v2/push/dst2/blobs/{digest}")).await.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_push_locations_and_validation() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "push/manifest";
    let config = br#"{"architecture":"arm64","os":"linux"}"#;
    let layer = data(18, 777);
    c.push_blob(repo, config).await;
    c.push_blob(repo, &layer).await;
    let m = image_manifest(config, &[&layer]);
    let digest = sha256(&m);
    let r = c.put_manifest(repo, "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_api_version(&r);
    assert_eq!(header(&r, "docker-content-digest"), Some(digest.as_str()));
    let loc = location(&r);
    assert!(loc.ends_with(&format!("/v2/{repo}/manifests/{digest}")), "{loc}");
    assert!(header(&r, "oci-subject").is_none());

    // Invalid JSON, wrong schema, missing fields: MANIFEST_INVALID.
    for bad in [
        b"{not json".to_vec(),
        b"[]".to_vec(),
        br#"{"schemaVersion":1,"fsLayers":[]}"#.to_vec(),
        br#"{"schemaVersion":3,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#.to_vec(),
        format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#).into_bytes(),
        format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"x","digest":"sha256:zz","size":1}},"layers":[]}}"#).into_bytes(),
    ] {
        let r = c.put_manifest(repo, "bad", OCI_MANIFEST, &bad).await;
        assert_error(r, 400, "MANIFEST_INVALID").await;
    }
    // Parameters on the Content-Type are ignored.
    let r = c
        .put_manifest(repo, "params", &format!("{OCI_MANIFEST}; charset=utf-8"), &m)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    let r = c.get(&format!("/v2/{repo}/manifests/params")).await;
    assert_eq!(header(&r, "content-type"), Some(OCI_MANIFEST));
    // mediaType field and Content-Type disagree.
    let r = c.put_manifest(repo, "bad", DOCKER_MANIFEST, &m).await;
    assert_error(r, 400, "MANIFEST_INVALID").await;
    assert_error(
        c.get(&format!("/v2/{repo}/manifests/bad")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;

    // A layer the repository does not hold.
    let missing = data(19, 10);
    let m2 = image_manifest(config, &[&layer, &missing]);
    let body = assert_error(
        c.put_manifest(repo, "missing", OCI_MANIFEST, &m2).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    assert!(body.to_string().contains(&sha256(&missing)), "{body}");
    // A blob of another repository does not count.
    c.push_blob("push/elsewhere", &missing).await;
    assert_error(
        c.put_manifest(repo, "missing", OCI_MANIFEST, &m2).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    assert_error(
        c.get(&format!("/v2/{repo}/manifests/missing")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;

    // Over 4 MiB: 413.
    let mut big = m.clone();
    big.pop();
    big.extend_from_slice(br#","annotations":{"x":""#);
    big.extend_from_slice(&vec![b'a'; 4 * 1024 * 1024]);
    big.extend_from_slice(br#""}}"#);
    let r = c.put_manifest(repo, "big", OCI_MANIFEST, &big).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_api_version(&r);
    // Streamed (no Content-Length), the limit holds as well.
    let parts: Vec<Result<Vec<u8>, std::io::Error>> = big.chunks(65536).map(|c| Ok(c.to_vec())).collect();
    let r = c
        .req(Method::PUT, &format!("/v2/{repo}/manifests/big"))
        .header("content-type", OCI_MANIFEST)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(parts)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(c.head(&format!("/v2/{repo}/manifests/big")).await.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn index_needs_its_children() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "push/index";
    let (child, _) = c.push_image(repo, "child", 20).await;
    let absent = image_manifest(b"{}", &[]);
    let idx = index_manifest(&[(OCI_MANIFEST, &child), (OCI_MANIFEST, &absent)]);
    assert_error(
        c.put_manifest(repo, "idx", OCI_INDEX, &idx).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    let idx = index_manifest(&[(OCI_MANIFEST, &child)]);
    let r = c.put_manifest(repo, "idx", OCI_INDEX, &idx).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    let r = c.get(&format!("/v2/{repo}/manifests/idx")).await;
    assert_eq!(header(&r, "content-type"), Some(OCI_INDEX));
    assert_eq!(r.bytes().await.unwrap().as_ref(), idx.as_slice());
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_by_digest_and_extra_tags() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "push/bydigest";
    let config = br#"{"os":"linux","architecture":"amd64"}"#;
    c.push_blob(repo, config).await;
    let m = image_manifest(config, &[]);
    let digest = sha256(&m);
    // A digest that does not match the body.
    let wrong = sha256(b"not the manifest");
    assert_error(
        c.put_manifest(repo, &wrong, OCI_MANIFEST, &m).await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    assert_error(
        c.get(&format!("/v2/{repo}/manifests/{wrong}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let r = c.put_manifest(repo, &digest, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), Some(digest.as_str()));
    // By sha512 too.
    let d512 = sha512(&m);
    let r = c.put_manifest(repo, &d512, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    let r = c.get(&format!("/v2/{repo}/manifests/{d512}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), Some(d512.as_str()));
    assert_eq!(r.bytes().await.unwrap().as_ref(), m.as_slice());

    // PUT by digest with ?tag= tags it several times at once, and names
    // every tag it created in an OCI-Tag header.
    let r = c
        .req(Method::PUT, &format!("/v2/{repo}/manifests/{digest}?tag=a&tag=b&tag=c"))
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(oci_tags(&r), ["a", "b", "c"]);
    for t in ["a", "b", "c"] {
        let r = c.get(&format!("/v2/{repo}/manifests/{t}")).await;
        assert_eq!(r.status(), StatusCode::OK, "tag {t}");
        assert_eq!(header(&r, "docker-content-digest"), Some(digest.as_str()));
    }
    let tags = json_body(c.get(&format!("/v2/{repo}/tags/list")).await).await;
    assert_eq!(tags["tags"], serde_json::json!(["a", "b", "c"]));
    // An invalid ?tag= is refused and tags nothing.
    let r = c
        .req(Method::PUT, &format!("/v2/{repo}/manifests/{digest}?tag=ok&tag=-bad"))
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    assert_eq!(c.head(&format!("/v2/{repo}/manifests/ok")).await.status(), 404);
    // More tags than one request may create: 414, nothing tagged.
    let many: Vec<String> = (0..101).map(|i| format!("tag=t{i}")).collect();
    let r = c
        .req(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{digest}?{}", many.join("&")),
        )
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::URI_TOO_LONG);
    assert_eq!(c.head(&format!("/v2/{repo}/manifests/t0")).await.status(), 404);
}

/// The tags named by a response's OCI-Tag headers (comma-separated or repeated).
fn oci_tags(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("oci-tag")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|t| t.trim().to_owned())
        .collect()
}

/// An index pushed by sha512 digest with tag parameters (the OCI suite's
/// "tag-param-sha512" data): every answer about it uses the sha512 digest.
#[tokio::test(flavor = "multi_thread")]
async fn sha512_index_with_tag_parameters() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "push/sha512";
    let config = br#"{"os":"linux","architecture":"arm64"}"#;
    c.push_blob(repo, config).await;
    let child = image_manifest(config, &[]);
    let child512 = sha512(&child);
    let r = c
        .req(Method::PUT, &format!("/v2/{repo}/manifests/{child512}?tag=child"))
        .header("content-type", OCI_MANIFEST)
        .body(child.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child512, "size": child.len()}],
    }))
    .unwrap();
    let index512 = sha512(&index);
    let r = c
        .req(Method::PUT, &format!("/v2/{repo}/manifests/{index512}?tag=one&tag=two"))
        .header("content-type", OCI_INDEX)
        .body(index.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    assert_eq!(header(&r, "docker-content-digest"), Some(index512.as_str()));
    assert_eq!(location(&r), format!("/v2/{repo}/manifests/{index512}"));
    assert_eq!(oci_tags(&r), ["one", "two"]);
    for reference in ["one", "two", index512.as_str()] {
        for method in [Method::GET, Method::HEAD] {
            let r = c
                .req(method.clone(), &format!("/v2/{repo}/manifests/{reference}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{method} {reference}");
            assert_eq!(
                header(&r, "docker-content-digest"),
                Some(index512.as_str()),
                "{method} {reference}"
            );
        }
    }
    let r = c.get(&format!("/v2/{repo}/manifests/child")).await;
    assert_eq!(header(&r, "docker-content-digest"), Some(child512.as_str()));
}

/// Sparse manifests (the OCI suite's `OCI_DATA_SPARSE`): refused by
/// default, accepted with `--allow-sparse-manifests`, config still required.
#[tokio::test(flavor = "multi_thread")]
async fn sparse_manifests_only_when_allowed() {
    let pushed = data(90, 1500);
    let never = data(91, 1024);
    let config = br#"{"os":"linux","architecture":"amd64","sparse":true}"#;
    for allow in [false, true] {
        let s = if allow {
            server_with(&["--allow-sparse-manifests"])
        } else {
            server()
        };
        let c = Client::new(&s.url);
        let repo = "push/sparse";
        c.push_blob(repo, config).await;
        c.push_blob(repo, &pushed).await;
        let image = image_manifest(config, &[&pushed, &never]);
        let r = c.put_manifest(repo, "image", OCI_MANIFEST, &image).await;
        if allow {
            assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
        } else {
            assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
        }
        // An index with a platform that was never pushed.
        let (present, _) = c.push_image(repo, "present", 92).await;
        let absent = image_manifest(&data(93, 10), &[]);
        let index = index_manifest(&[(OCI_MANIFEST, &present), (OCI_MANIFEST, &absent)]);
        let r = c.put_manifest(repo, "index", OCI_INDEX, &index).await;
        if allow {
            assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
            let r = c.get(&format!("/v2/{repo}/manifests/index")).await;
            assert_eq!(r.bytes().await.unwrap().as_ref(), index.as_slice());
        } else {
            assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
        }
        // Never without its config.
        let no_config = image_manifest(b"{\"never\":1}", &[&pushed]);
        assert_error(
            c.put_manifest(repo, "noconfig", OCI_MANIFEST, &no_config).await,
            400,
            "MANIFEST_BLOB_UNKNOWN",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_with_subject_gets_oci_subject() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "push/subject";
    let (m, digest) = c.push_image(repo, "v1", 21).await;
    c.push_empty_config(repo).await;
    let sig = artifact_manifest("application/example.sig", &digest, m.len(), "sig");
    let r = c.put_manifest(repo, &sha256(&sig), OCI_MANIFEST, &sig).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    assert_eq!(header(&r, "oci-subject"), Some(digest.as_str()));
    // Tags work just as well.
    let r = c.put_manifest(repo, "sig-tag", OCI_MANIFEST, &sig).await;
    assert_eq!(header(&r, "oci-subject"), Some(digest.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_manifest_list_push() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "push/dockerlist";
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = data(22, 100);
    c.push_blob(repo, config).await;
    c.push_blob(repo, &layer).await;
    let m = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, config),
        "layers": [descriptor(DOCKER_LAYER, &layer)],
    }))
    .unwrap();
    assert_eq!(c.put_manifest(repo, "amd64", DOCKER_MANIFEST, &m).await.status(), 201);
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": sha256(&m), "size": m.len(),
                        "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap();
    let r = c.put_manifest(repo, "latest", DOCKER_LIST, &list).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    let r = c.get(&format!("/v2/{repo}/manifests/latest")).await;
    assert_eq!(header(&r, "content-type"), Some(DOCKER_LIST));
}

#[tokio::test(flavor = "multi_thread")]
async fn early_refusals_leave_the_connection_usable() {
    // A refusal sent before the request body is read (out-of-order chunk,
    // unknown upload) must reach the client, and the kept-alive connection
    // must still carry the next request.
    let s = server();
    let c = Client::new(&s.url);
    let loc = c.start_upload("push/early").await;
    let big = data(23, 2 * 1024 * 1024);
    for round in 0..5 {
        let r = c
            .req(Method::PATCH, &loc)
            .header("content-range", format!("1000-{}", 1000 + big.len() - 1))
            .body(big.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: out-of-order chunk: {e:?}"));
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "round {round}");
        assert_eq!(header(&r, "range"), Some("0-0"));
        let r = c
            .req(
                Method::PATCH,
                "/v2/push/early/blobs/uploads/0b6e2c3e-0000-4000-8000-000000000000",
            )
            .body(big.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: unknown upload: {e:?}"));
        assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
        let r = c.get(&loc).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn query_parameters_may_be_percent_encoded() {
    let s = server();
    let c = Client::new(&s.url);
    let blob = data(24, 1234);
    let digest = sha256(&blob);
    let encoded = digest.replace(':', "%3A");
    let loc = c.start_upload("push/encoded").await;
    let r = c
        .req(Method::PUT, &with_query(&loc, &format!("digest={encoded}")))
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_created_blob(&r, "push/encoded", &digest);
    let r = c
        .req(
            Method::POST,
            &format!("/v2/push/encoded2/blobs/uploads/?mount={encoded}&from=push%2Fencoded"),
        )
        .send()
        .await
        .unwrap();
    assert_created_blob(&r, "push/encoded2", &digest);
    blob_is(&c, "push/encoded2", &digest, &blob).await;
    // A manifest is readable through the blob endpoint of its repository too, as in distribution.
    let (m, md) = c.push_image("push/encoded", "v1", 25).await;
    blob_is(&c, "push/encoded", &md, &m).await;
}
