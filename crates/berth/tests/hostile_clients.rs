//! Clients that try to stall, exhaust or fool the server, each from a finding
//! of a hostile-client probe (issue 10, "Hostile clients"): manifests nested
//! too deep, manifests whose Content-Type lies, descriptors whose sizes lie.

mod conformance_common;
mod support;

use conformance_common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Pushes a config and one layer to `repo`; returns their bytes.
async fn push_blobs(c: &Client, repo: &str, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
    let layer = data(seed, 8_213);
    c.push_blob(repo, &config).await;
    c.push_blob(repo, &layer).await;
    (config, layer)
}

fn manifest_value(config: &[u8], layer: &[u8]) -> Value {
    serde_json::from_slice(&image_manifest(config, &[layer])).unwrap()
}

/// Sends `body` as a manifest with `content_type` (none when `None`).
async fn put_raw(
    c: &Client,
    repo: &str,
    reference: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = c.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"));
    if let Some(t) = content_type {
        req = req.header("content-type", t);
    }
    req.body(body).send().await.unwrap()
}

/// A 100,000-deep array in a field berth does not know (200 KB) was accepted
/// and served; now any nesting deeper than 64 is MANIFEST_INVALID.
#[tokio::test(flavor = "multi_thread")]
async fn deeply_nested_manifests_are_refused() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "hostile/deep";
    let (config, layer) = push_blobs(&c, repo, 1).await;
    let base = serde_json::to_string(&manifest_value(&config, &layer)).unwrap();
    let with_unknown = |depth: usize| {
        base.replacen(
            '{',
            &format!(r#"{{"x-unknown":{}{},"#, "[".repeat(depth), "]".repeat(depth)),
            1,
        )
    };
    let deep = with_unknown(100_000);
    assert!(deep.len() > 200_000);
    let r = c.put_manifest(repo, "deep", OCI_MANIFEST, deep.as_bytes()).await;
    let body = assert_error(r, 400, "MANIFEST_INVALID").await;
    assert!(body.to_string().contains("deeper than 64"), "{body}");
    assert_eq!(c.get(&format!("/v2/{repo}/manifests/deep")).await.status(), 404);
    assert_eq!(
        c.get(&format!("/v2/{repo}/manifests/{}", sha256(deep.as_bytes())))
            .await
            .status(),
        404
    );

    // Just past the limit (the document itself is the first level).
    let r = c
        .put_manifest(repo, "deep", OCI_MANIFEST, with_unknown(64).as_bytes())
        .await;
    assert_error(r, 400, "MANIFEST_INVALID").await;
    // Nesting that real manifests could have is fine.
    let r = c
        .put_manifest(repo, "shallow", OCI_MANIFEST, with_unknown(63).as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
}

/// An OCI manifest sent as text/plain, application/json or without a
/// Content-Type was accepted and then served as OCI: the declared type and
/// the document's mediaType must agree.
#[tokio::test(flavor = "multi_thread")]
async fn content_type_must_match_the_manifest() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "hostile/ctype";
    let (config, layer) = push_blobs(&c, repo, 2).await;
    let m = serde_json::to_vec(&manifest_value(&config, &layer)).unwrap();
    for (tag, ct) in [
        ("plain", Some("text/plain")),
        ("json", Some("application/json")),
        ("none", None),
        ("docker", Some(DOCKER_MANIFEST)),
        ("index", Some(OCI_INDEX)),
    ] {
        let r = put_raw(&c, repo, tag, ct, m.clone()).await;
        let body = assert_error(r, 400, "MANIFEST_INVALID").await;
        assert!(body.to_string().contains("Content-Type"), "{ct:?}: {body}");
        assert_eq!(
            c.get(&format!("/v2/{repo}/manifests/{tag}")).await.status(),
            404,
            "{ct:?}"
        );
    }
    // Media type parameters and case do not matter (some clients send them).
    for (tag, ct) in [
        ("params", format!("{OCI_MANIFEST}; charset=utf-8")),
        ("upper", OCI_MANIFEST.to_uppercase()),
    ] {
        let r = put_raw(&c, repo, tag, Some(&ct), m.clone()).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{ct}: {}", text(r).await);
        let r = c.get(&format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!(header(&r, "content-type"), Some(OCI_MANIFEST));
    }

    // A document without mediaType: the Content-Type names its type, and must.
    let mut bare = manifest_value(&config, &layer);
    bare.as_object_mut().unwrap().remove("mediaType");
    let bare = serde_json::to_vec(&bare).unwrap();
    for ct in [None, Some("application/json"), Some(DOCKER_MANIFEST), Some(OCI_INDEX)] {
        let r = put_raw(&c, repo, "bare", ct, bare.clone()).await;
        assert_error(r, 400, "MANIFEST_INVALID").await;
    }
    let r = put_raw(&c, repo, "bare", Some(OCI_MANIFEST), bare.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    let r = c.get(&format!("/v2/{repo}/manifests/bare")).await;
    assert_eq!(header(&r, "content-type"), Some(OCI_MANIFEST));
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bare[..]);
}

/// A layer descriptor with size 2^63, 2^64-1 or 1 for an 8,213-byte blob was
/// accepted (clients then fail the pull): every descriptor's size must be its
/// content's, and the error names the descriptor.
#[tokio::test(flavor = "multi_thread")]
async fn descriptor_sizes_must_be_true() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "hostile/sizes";
    let (config, layer) = push_blobs(&c, repo, 3).await;
    assert_eq!(layer.len(), 8_213);
    let good = manifest_value(&config, &layer);
    for (field, size) in [
        ("layers", json!(1u64 << 63)),
        ("layers", json!(u64::MAX)),
        ("layers", json!(1)),
        ("layers", json!(8_212)),
        ("layers", json!(8_214)),
        ("layers", json!(0)),
        ("config", json!(config.len() + 1)),
    ] {
        let mut m = good.clone();
        let (digest, slot) = match field {
            "layers" => (sha256(&layer), &mut m["layers"][0]["size"]),
            _ => (sha256(&config), &mut m["config"]["size"]),
        };
        *slot = size.clone();
        let body = serde_json::to_vec(&m).unwrap();
        let r = c.put_manifest(repo, "lies", OCI_MANIFEST, &body).await;
        let err = assert_error(r, 400, "MANIFEST_INVALID").await;
        let detail = &err["errors"][0]["detail"];
        assert_eq!(detail["digest"], json!(digest), "{field} {size}: {err}");
        assert_eq!(detail["size"], size, "{err}");
        assert_eq!(c.get(&format!("/v2/{repo}/manifests/lies")).await.status(), 404);
    }
    // Past u64 is not a size at all.
    let body = serde_json::to_string(&good)
        .unwrap()
        .replace(r#""size":8213"#, r#""size":18446744073709551616"#);
    let r = c.put_manifest(repo, "lies", OCI_MANIFEST, body.as_bytes()).await;
    assert_error(r, 400, "MANIFEST_INVALID").await;

    let image = serde_json::to_vec(&good).unwrap();
    let r = c.put_manifest(repo, "v1", OCI_MANIFEST, &image).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);

    // An index's children: the size of the child manifest.
    // The child's size comes from the manifest cache once it has been read,
    assert_eq!(c.get(&format!("/v2/{repo}/manifests/v1")).await.status(), 200);
    index_sizes_must_be_true(&c, repo, &image).await;
    // and from a stat of its bytes where nothing is cached (a second server on the same data).
    let s2 = server_with(&["--data", s.data.to_str().unwrap()]);
    index_sizes_must_be_true(&Client::new(&s2.url), repo, &image).await;
}

/// Pushes indexes over the manifest `image` with wrong sizes (refused, naming
/// the child) and the right one.
async fn index_sizes_must_be_true(c: &Client, repo: &str, image: &[u8]) {
    let index = |size: u64| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(image), "size": size}],
        }))
        .unwrap()
    };
    for bad in [1, image.len() as u64 - 1, 1 << 63, u64::MAX] {
        let r = c.put_manifest(repo, "idx", OCI_INDEX, &index(bad)).await;
        let err = assert_error(r, 400, "MANIFEST_INVALID").await;
        assert_eq!(err["errors"][0]["detail"]["digest"], json!(sha256(image)), "{err}");
    }
    let r = c.put_manifest(repo, "idx", OCI_INDEX, &index(image.len() as u64)).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
}

/// After a kill -9 in the middle of a tag write, tags/list listed a tag that
/// did not resolve (its directory held only `index/.../.tmp-*`), and the
/// temporary file stayed forever. Now only resolving tags are listed, and the
/// start sweeps temporary files old enough that no live write holds them.
#[tokio::test(flavor = "multi_thread")]
async fn interrupted_tag_writes_are_not_listed_and_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let repo = "hostile/tags";
    let s = server_with(&["--data", data]);
    let c = Client::new(&s.url);
    let (_, digest) = c.push_image(repo, "good", 4).await;
    let tags = dir
        .path()
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_manifests/tags");
    let hex = digest.strip_prefix("sha256:").unwrap();
    // What the crash leaves: the tag's index link half written, no current/link.
    let broken = tags.join("broken/index/sha256").join(hex);
    std::fs::create_dir_all(&broken).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let debris = broken.join(".tmp-0123456789abcdef");
    std::fs::write(&debris, &digest).unwrap();
    std::fs::File::open(&debris).unwrap().set_modified(old).unwrap();
    // The same, written a moment ago: it may be a live write's, and stays.
    let young = tags.join("young/current");
    std::fs::create_dir_all(&young).unwrap();
    std::fs::write(young.join(".tmp-fedcba9876543210"), &digest).unwrap();

    let listed = |c: Client| async move {
        let r = c.get(&format!("/v2/{repo}/tags/list")).await;
        assert_eq!(r.status(), StatusCode::OK);
        json_body(r).await["tags"].clone()
    };
    assert_eq!(listed(Client::new(&s.url)).await, json!(["good"]));
    assert_eq!(c.get(&format!("/v2/{repo}/manifests/broken")).await.status(), 404);
    drop(s);

    let s = server_with(&["--data", data]);
    assert!(
        support::wait_until(std::time::Duration::from_secs(10), || !tags.join("broken").exists()),
        "the start did not sweep {}",
        debris.display()
    );
    assert!(young.join(".tmp-fedcba9876543210").exists());
    assert_eq!(listed(Client::new(&s.url)).await, json!(["good"]));
    // The tag can be written again as usual.
    let (_, digest2) = Client::new(&s.url).push_image(repo, "broken", 5).await;
    assert_eq!(listed(Client::new(&s.url)).await, json!(["broken", "good"]));
    let r = Client::new(&s.url).get(&format!("/v2/{repo}/manifests/broken")).await;
    assert_eq!(header(&r, "docker-content-digest"), Some(digest2.as_str()));
}
