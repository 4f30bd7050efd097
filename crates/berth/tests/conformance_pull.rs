//! OCI Distribution Spec v1.1, "Pull" conformance category: the base
//! endpoint, manifests and blobs by tag and digest, ranges, and the errors
//! for what is unknown.

mod conformance_common;
mod support;

use conformance_common::*;
use reqwest::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread")]
async fn base_endpoint_and_version_header_everywhere() {
    let s = server();
    let c = Client::new(&s.url);
    for path in ["/v2/", "/v2"] {
        let r = c.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_api_version(&r);
    }
    let r = c.head("/v2/").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_api_version(&r);
    // Errors and unknown endpoints carry it too.
    assert_api_version(&c.get("/v2/nothing/manifests/latest").await);
    assert_api_version(&c.get("/v2/a/unknown-endpoint/x").await);
    assert_api_version(&c.get("/not-v2").await);
    let r = c.req(Method::POST, "/v2/").send().await.unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    assert_api_version(&r);
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_by_tag_and_digest() {
    let s = server();
    let c = Client::new(&s.url);
    let (m, digest) = c.push_image("pull/app", "v1", 1).await;

    for reference in ["v1", digest.as_str()] {
        let path = format!("/v2/pull/app/manifests/{reference}");
        let r = c
            .req(Method::GET, &path)
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_api_version(&r);
        assert_eq!(header(&r, "content-type"), Some(OCI_MANIFEST));
        assert_eq!(header(&r, "docker-content-digest"), Some(digest.as_str()));
        assert_eq!(header(&r, "content-length"), Some(m.len().to_string().as_str()));
        assert_eq!(header(&r, "etag"), Some(format!("\"{digest}\"").as_str()));
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            m.as_slice(),
            "exact bytes are served"
        );

        let r = c.head(&path).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type"), Some(OCI_MANIFEST));
        assert_eq!(header(&r, "docker-content-digest"), Some(digest.as_str()));
        assert_eq!(header(&r, "content-length"), Some(m.len().to_string().as_str()));
        assert!(r.bytes().await.unwrap().is_empty(), "HEAD has no body");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_if_none_match_gives_304() {
    let s = server();
    let c = Client::new(&s.url);
    let (_, digest) = c.push_image("pull/etag", "v1", 2).await;
    let etag = format!("\"{digest}\"");
    for method in [Method::GET, Method::HEAD] {
        let r = c
            .req(method.clone(), "/v2/pull/etag/manifests/v1")
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{method}");
        assert_eq!(header(&r, "etag"), Some(etag.as_str()));
        assert_api_version(&r);
        assert!(r.bytes().await.unwrap().is_empty());
    }
    let r = c
        .req(Method::GET, "/v2/pull/etag/manifests/v1")
        .header("if-none-match", "\"sha256:0000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "a different ETag gets the manifest");
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_manifest_is_served_whatever_the_accept_header() {
    let s = server();
    let c = Client::new(&s.url);
    // A Docker schema 2 manifest and an OCI index, each asked for with Accept headers that do not name it.
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = data(3, 300);
    c.push_blob("pull/accept", config).await;
    c.push_blob("pull/accept", &layer).await;
    let docker = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, config),
        "layers": [descriptor(DOCKER_LAYER, &layer)],
    }))
    .unwrap();
    let r = c.put_manifest("pull/accept", "docker", DOCKER_MANIFEST, &docker).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    let index = index_manifest(&[(DOCKER_MANIFEST, &docker)]);
    let r = c.put_manifest("pull/accept", "index", OCI_INDEX, &index).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);

    for (tag, body, ty) in [("docker", &docker, DOCKER_MANIFEST), ("index", &index, OCI_INDEX)] {
        for accept in [None, Some(OCI_MANIFEST), Some("application/json"), Some("text/html")] {
            let mut req = c.req(Method::GET, &format!("/v2/pull/accept/manifests/{tag}"));
            if let Some(a) = accept {
                req = req.header("accept", a);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{tag} with Accept {accept:?}");
            assert_eq!(header(&r, "content-type"), Some(ty), "{tag} with Accept {accept:?}");
            assert_eq!(&r.bytes().await.unwrap()[..], &body[..]);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_get_and_head() {
    let s = server();
    let c = Client::new(&s.url);
    let blob = data(4, 200_000);
    let digest = c.push_blob("pull/blob", &blob).await;
    let path = format!("/v2/pull/blob/blobs/{digest}");
    let r = c.get(&path).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_api_version(&r);
    assert_eq!(header(&r, "docker-content-digest"), Some(digest.as_str()));
    assert_eq!(header(&r, "content-length"), Some("200000"));
    assert_eq!(header(&r, "etag"), Some(format!("\"{digest}\"").as_str()));
    assert_eq!(r.bytes().await.unwrap().as_ref(), blob.as_slice());

    let r = c.head(&path).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), Some("200000"));
    assert_eq!(header(&r, "docker-content-digest"), Some(digest.as_str()));
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_ranges() {
    let s = server();
    let c = Client::new(&s.url);
    let blob = data(5, 1000);
    let digest = c.push_blob("pull/range", &blob).await;
    let path = format!("/v2/pull/range/blobs/{digest}");
    let get_range = |range: &'static str| {
        let req = c.req(Method::GET, &path).header("range", range);
        async move { req.send().await.unwrap() }
    };

    for (range, start, end) in [
        ("bytes=0-99", 0usize, 99usize),
        ("bytes=100-", 100, 999),
        ("bytes=-10", 990, 999),
        ("bytes=990-5000", 990, 999),
        ("bytes=500-500", 500, 500),
    ] {
        let r = get_range(range).await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_api_version(&r);
        assert_eq!(
            header(&r, "content-range"),
            Some(format!("bytes {start}-{end}/1000").as_str()),
            "{range}"
        );
        assert_eq!(
            header(&r, "content-length"),
            Some((end - start + 1).to_string().as_str()),
            "{range}"
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), &blob[start..=end], "{range}");
    }

    // Past the end, and backwards (last < first: the OCI conformance suite's
    // `bytes=500-0`): 416 with the blob's size.
    for range in [
        "bytes=1000-",
        "bytes=1000-2000",
        "bytes=5000-6000",
        "bytes=500-0",
        "bytes=1-0",
    ] {
        let r = get_range(range).await;
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_api_version(&r);
        assert_eq!(header(&r, "content-range"), Some("bytes */1000"), "{range}");
    }
    // A backwards range on a blob that does not exist is still a 404.
    let missing = sha256(b"no such blob");
    let r = c
        .req(Method::GET, &format!("/v2/pull/range/blobs/{missing}"))
        .header("range", "bytes=500-0")
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "BLOB_UNKNOWN").await;
    // A HEAD with a range describes the same part.
    let r = c
        .req(Method::HEAD, &path)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), Some("bytes 10-19/1000"));
    assert_eq!(header(&r, "content-length"), Some("10"));
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_manifests_and_blobs() {
    let s = server();
    let c = Client::new(&s.url);
    c.push_image("pull/known", "v1", 6).await;
    let missing = sha256(b"never pushed");
    for path in [
        "/v2/pull/known/manifests/nope".to_owned(),
        format!("/v2/pull/known/manifests/{missing}"),
        "/v2/pull/unknown-repo/manifests/v1".to_owned(),
    ] {
        assert_error(c.get(&path).await, 404, "MANIFEST_UNKNOWN").await;
        let r = c.head(&path).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "HEAD {path}");
        assert_api_version(&r);
    }
    for path in [
        format!("/v2/pull/known/blobs/{missing}"),
        format!("/v2/pull/unknown-repo/blobs/{missing}"),
        format!("/v2/pull/known/blobs/{}", sha512(b"never pushed")),
    ] {
        let body = assert_error(c.get(&path).await, 404, "BLOB_UNKNOWN").await;
        assert!(body.to_string().contains("BLOB_UNKNOWN"));
        let r = c.head(&path).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "HEAD {path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn blobs_are_readable_only_where_pushed_or_mounted() {
    let s = server();
    let c = Client::new(&s.url);
    let blob = data(7, 5000);
    let digest = c.push_blob("pull/owner", &blob).await;
    assert_error(
        c.get(&format!("/v2/pull/other/blobs/{digest}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    let r = c.head(&format!("/v2/pull/other/blobs/{digest}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A manifest of another repository cannot be read either.
    let (_, mdigest) = c.push_image("pull/owner", "v1", 7).await;
    assert_error(
        c.get(&format!("/v2/pull/other/manifests/{mdigest}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;

    let r = c
        .req(
            Method::POST,
            &format!("/v2/pull/other/blobs/uploads/?mount={digest}&from=pull/owner"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c.get(&format!("/v2/pull/other/blobs/{digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), blob.as_slice());
}
