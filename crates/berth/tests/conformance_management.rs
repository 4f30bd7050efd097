//! OCI Distribution Spec v1.1, "Content Management" conformance category
//! (deleting manifests, tags and blobs), plus the error cases every category
//! shares: malformed input is a 4xx with the spec's code, never a 500.

mod conformance_common;
mod support;

use conformance_common::*;
use reqwest::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread")]
async fn delete_manifest_by_digest_drops_its_tags() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "mgmt/bydigest";
    let (m, digest) = c.push_image(repo, "v1", 60).await;
    assert_eq!(c.put_manifest(repo, "v2", OCI_MANIFEST, &m).await.status(), 201);
    let (_, other) = c.push_image(repo, "keep", 61).await;

    let r = c.delete(&format!("/v2/{repo}/manifests/{digest}")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_api_version(&r);
    for reference in [digest.as_str(), "v1", "v2"] {
        assert_error(
            c.get(&format!("/v2/{repo}/manifests/{reference}")).await,
            404,
            "MANIFEST_UNKNOWN",
        )
        .await;
    }
    let tags = json_body(c.get(&format!("/v2/{repo}/tags/list")).await).await;
    assert_eq!(tags["tags"], serde_json::json!(["keep"]));
    assert_eq!(c.head(&format!("/v2/{repo}/manifests/{other}")).await.status(), 200);
    // Again: it is gone.
    assert_error(
        c.delete(&format!("/v2/{repo}/manifests/{digest}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    // Pushing it again brings it back.
    assert_eq!(c.put_manifest(repo, "v1", OCI_MANIFEST, &m).await.status(), 201);
    assert_eq!(c.head(&format!("/v2/{repo}/manifests/{digest}")).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_tag_only_untags() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "mgmt/tag";
    let (m, digest) = c.push_image(repo, "v1", 62).await;
    assert_eq!(c.put_manifest(repo, "v2", OCI_MANIFEST, &m).await.status(), 201);
    let r = c.delete(&format!("/v2/{repo}/manifests/v1")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_api_version(&r);
    assert_error(
        c.get(&format!("/v2/{repo}/manifests/v1")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let r = c.get(&format!("/v2/{repo}/manifests/{digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), m.as_slice());
    assert_eq!(c.head(&format!("/v2/{repo}/manifests/v2")).await.status(), 200);
    let tags = json_body(c.get(&format!("/v2/{repo}/tags/list")).await).await;
    assert_eq!(tags["tags"], serde_json::json!(["v2"]));
    assert_error(
        c.delete(&format!("/v2/{repo}/manifests/v1")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retagging_moves_the_tag() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "mgmt/retag";
    let (_, first) = c.push_image(repo, "latest", 63).await;
    let (_, second) = c.push_image(repo, "latest", 64).await;
    assert_ne!(first, second);
    let r = c.head(&format!("/v2/{repo}/manifests/latest")).await;
    assert_eq!(header(&r, "docker-content-digest"), Some(second.as_str()));
    // The first manifest is still there by digest; deleting it leaves the moved tag alone.
    assert_eq!(c.delete(&format!("/v2/{repo}/manifests/{first}")).await.status(), 202);
    let r = c.head(&format!("/v2/{repo}/manifests/latest")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), Some(second.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_blob() {
    let s = server();
    let c = Client::new(&s.url);
    let blob = data(65, 3000);
    let digest = c.push_blob("mgmt/blob", &blob).await;
    c.req(
        Method::POST,
        &format!("/v2/mgmt/blob2/blobs/uploads/?mount={digest}&from=mgmt/blob"),
    )
    .send()
    .await
    .unwrap();
    let r = c.delete(&format!("/v2/mgmt/blob/blobs/{digest}")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_api_version(&r);
    assert_error(
        c.get(&format!("/v2/mgmt/blob/blobs/{digest}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_error(
        c.delete(&format!("/v2/mgmt/blob/blobs/{digest}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    // Another repository that holds it still serves it.
    let r = c.get(&format!("/v2/mgmt/blob2/blobs/{digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), blob.as_slice());
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_unknown_things() {
    let s = server();
    let c = Client::new(&s.url);
    c.push_image("mgmt/known", "v1", 66).await;
    let missing = sha256(b"missing");
    assert_error(
        c.delete(&format!("/v2/mgmt/known/manifests/{missing}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(c.delete("/v2/mgmt/known/manifests/nope").await, 404, "MANIFEST_UNKNOWN").await;
    assert_error(
        c.delete(&format!("/v2/mgmt/known/blobs/{missing}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_error(
        c.delete(&format!("/v2/mgmt/unknown/manifests/{missing}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(
        c.delete(&format!("/v2/mgmt/unknown/blobs/{missing}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert_error(
        c.delete("/v2/mgmt/known/blobs/uploads/0b6e2c3e-0000-4000-8000-000000000000")
            .await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
}

/// Sends `method path` and asserts a 4xx carrying the API header and one of `codes`.
async fn assert_refused(c: &Client, method: Method, path: &str, body: Option<Vec<u8>>, status: u16, code: &str) {
    let mut req = c.req(method.clone(), path);
    if let Some(b) = body {
        req = req.body(b);
    }
    let r = req.send().await.unwrap();
    assert!(r.status().is_client_error(), "{method} {path}: {}", r.status());
    assert_error(r, status, code).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_input_is_a_client_error() {
    let s = server();
    let c = Client::new(&s.url);
    let (_, digest) = c.push_image("err/repo", "v1", 67).await;
    let loc = c.start_upload("err/repo").await;

    let bad_digests = [
        "sha256:abc",
        "sha256:XYZ",
        "sha256:",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "nocolon",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855%00",
    ];
    for d in bad_digests {
        for m in [Method::GET, Method::DELETE] {
            assert_refused(
                &c,
                m.clone(),
                &format!("/v2/err/repo/blobs/{d}"),
                None,
                400,
                "DIGEST_INVALID",
            )
            .await;
        }
        let r = c.head(&format!("/v2/err/repo/blobs/{d}")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "HEAD blob {d}");
        assert_api_version(&r);
        assert_refused(
            &c,
            Method::POST,
            &format!("/v2/err/repo/blobs/uploads/?digest={d}"),
            Some(b"x".to_vec()),
            400,
            "DIGEST_INVALID",
        )
        .await;
        // A mount that cannot be done, malformed arguments included, falls back to an upload session.
        let r = c
            .req(
                Method::POST,
                &format!("/v2/err/repo/blobs/uploads/?mount={d}&from=err/repo"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "mount={d}");
        assert!(location(&r).contains("/v2/err/repo/blobs/uploads/"));
        assert_refused(
            &c,
            Method::GET,
            &format!("/v2/err/repo/referrers/{d}"),
            None,
            400,
            "DIGEST_INVALID",
        )
        .await;
        if d.contains(':') {
            assert_refused(
                &c,
                Method::GET,
                &format!("/v2/err/repo/manifests/{d}"),
                None,
                400,
                "DIGEST_INVALID",
            )
            .await;
        }
    }
    // Manifest references that are neither tag nor digest: no manifest has
    // such a name, so reads and deletes answer 404 MANIFEST_UNKNOWN (what the
    // OCI conformance suite expects of `.INVALID_MANIFEST_NAME`), and a PUT,
    // which would create the tag, is refused as TAG_INVALID.
    let long_tag = "a".repeat(129);
    for r in ["-tag", ".tag", ".INVALID_MANIFEST_NAME", long_tag.as_str(), "t%20ag"] {
        let path = format!("/v2/err/repo/manifests/{r}");
        assert_refused(&c, Method::GET, &path, None, 404, "MANIFEST_UNKNOWN").await;
        assert_refused(&c, Method::DELETE, &path, None, 404, "MANIFEST_UNKNOWN").await;
        let resp = c.head(&path).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "HEAD reference {r}");
        assert_api_version(&resp);
        let resp = c.put_manifest("err/repo", r, OCI_MANIFEST, b"{}").await;
        assert_error(resp, 400, "TAG_INVALID").await;
    }
    // Repository names.
    let long_name = "a".repeat(256);
    for n in ["UPPER", "a//b", "-a", "a_", "a..b", "a%20b", long_name.as_str()] {
        for path in [
            format!("/v2/{n}/manifests/v1"),
            format!("/v2/{n}/blobs/{digest}"),
            format!("/v2/{n}/tags/list"),
            format!("/v2/{n}/referrers/{digest}"),
        ] {
            assert_refused(&c, Method::GET, &path, None, 400, "NAME_INVALID").await;
        }
        assert_refused(
            &c,
            Method::POST,
            &format!("/v2/{n}/blobs/uploads/"),
            None,
            400,
            "NAME_INVALID",
        )
        .await;
        let r = c
            .req(
                Method::POST,
                &format!("/v2/err/repo/blobs/uploads/?mount={digest}&from={n}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "from={n}");
    }
    // Upload ids that were never handed out, including ones that try to escape.
    for id in ["nope", "a.b", "x%2Fy", "a%00", &"a".repeat(300)] {
        let path = format!("/v2/err/repo/blobs/uploads/{id}");
        for m in [Method::GET, Method::PATCH, Method::DELETE] {
            let r = c.req(m.clone(), &path).body(Vec::new()).send().await.unwrap();
            assert!(r.status().is_client_error(), "{m} {path}: {}", r.status());
            assert_api_version(&r);
            if r.status() == StatusCode::NOT_FOUND {
                let body = json_body(r).await;
                assert_eq!(body["errors"][0]["code"], "BLOB_UPLOAD_UNKNOWN", "{m} {path}");
            }
        }
    }
    // Upload Content-Range that cannot be parsed.
    for cr in ["abc", "5-1", "-", "0-", "-5", "1-x"] {
        let r = c
            .req(Method::PATCH, &loc)
            .header("content-range", cr)
            .body(b"xy".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "Content-Range {cr}");
        assert_api_version(&r);
    }
    // Blob Range headers that are not single byte ranges are ignored (200), never a 500.
    let blob_digest = c.push_blob("err/repo", &data(68, 100)).await;
    for range in ["garbage", "bytes=", "bytes=5-1", "bytes=0-1,3-4", "items=0-1"] {
        let r = c
            .req(Method::GET, &format!("/v2/err/repo/blobs/{blob_digest}"))
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == StatusCode::OK || r.status() == StatusCode::RANGE_NOT_SATISFIABLE,
            "Range {range}: {}",
            r.status()
        );
    }
    // `n` that is not a number.
    for q in ["n=-1", "n=abc", "n=99999999999999999999999"] {
        let r = c.get(&format!("/v2/err/repo/tags/list?{q}")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{q}");
        assert_api_version(&r);
    }
    // Unknown endpoints and methods.
    let r = c.get("/v2/err/repo/unknown/x").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_api_version(&r);
    let r = c.req(Method::POST, "/v2/err/repo/manifests/v1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_api_version(&r);
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_names_and_names_like_endpoints() {
    let s = server();
    let c = Client::new(&s.url);
    let deep = (0..10).map(|i| format!("l{i}")).collect::<Vec<_>>().join("/");
    let names = [
        deep.as_str(),
        "blobs",
        "manifests",
        "tags",
        "uploads",
        "referrers",
        "a/blobs/uploads",
        "x/manifests/blobs/tags/list",
        "blobs/uploads/manifests",
        "v2/tags",
        "_catalog/x",
    ];
    for (i, repo) in names.iter().enumerate() {
        if repo.starts_with('_') {
            // Not a valid name: components start with a letter or digit.
            assert_refused(
                &c,
                Method::GET,
                &format!("/v2/{repo}/tags/list"),
                None,
                400,
                "NAME_INVALID",
            )
            .await;
            continue;
        }
        let (m, digest) = c.push_image(repo, "tags", 70 + i as u64).await;
        let r = c.get(&format!("/v2/{repo}/manifests/tags")).await;
        assert_eq!(r.status(), StatusCode::OK, "{repo}");
        assert_eq!(r.bytes().await.unwrap().as_ref(), m.as_slice(), "{repo}");
        let tags = json_body(c.get(&format!("/v2/{repo}/tags/list")).await).await;
        assert_eq!(tags["name"], *repo);
        assert_eq!(tags["tags"], serde_json::json!(["tags"]), "{repo}");
        // Chunked upload in that repository, with its Location.
        let blob = data(100 + i as u64, 5000);
        let loc = c.start_upload(repo).await;
        assert!(loc.contains(&format!("/v2/{repo}/blobs/uploads/")), "{loc}");
        let r = c
            .req(Method::PATCH, &loc)
            .header("content-range", "0-4999")
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{repo}");
        let bd = sha256(&blob);
        let r = c
            .req(Method::PUT, &with_query(&location(&r), &format!("digest={bd}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{repo}");
        let r = c.get(&format!("/v2/{repo}/blobs/{bd}")).await;
        assert_eq!(r.bytes().await.unwrap().as_ref(), blob.as_slice(), "{repo}");
        assert_eq!(
            c.delete(&format!("/v2/{repo}/manifests/{digest}")).await.status(),
            202,
            "{repo}"
        );
    }
    let catalog = json_body(c.get("/v2/_catalog").await).await;
    let listed: Vec<&str> = catalog["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for repo in names.iter().filter(|r| !r.starts_with('_')) {
        assert!(listed.contains(repo), "{repo} missing from {listed:?}");
    }
}

/// `--deletes off` (distribution's default): every delete is 405 UNSUPPORTED
/// and removes nothing; reads and pushes work as usual.
#[tokio::test(flavor = "multi_thread")]
async fn deletes_can_be_turned_off() {
    let s = server_with(&["--deletes", "off"]);
    let c = Client::new(&s.url);
    let repo = "nodelete/app";
    let (_, digest) = c.push_image(repo, "v1", 71).await;
    // push_image(.., seed) pushes data(seed, 1000 + seed % 100) as its layer.
    let layer = data(71, 1071);
    let layer_digest = sha256(&layer);
    for path in [
        format!("/v2/{repo}/manifests/v1"),
        format!("/v2/{repo}/manifests/{digest}"),
        format!("/v2/{repo}/blobs/{layer_digest}"),
    ] {
        assert_refused(&c, Method::DELETE, &path, None, 405, "UNSUPPORTED").await;
    }
    let r = c.get(&format!("/v2/{repo}/manifests/v1")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), Some(digest.as_str()));
    let r = c.get(&format!("/v2/{repo}/blobs/{layer_digest}")).await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), layer.as_slice());
    // Cancelling an upload is not deleting content: still allowed.
    let loc = c.start_upload(repo).await;
    assert_eq!(c.delete(&loc).await.status(), StatusCode::NO_CONTENT);
}
