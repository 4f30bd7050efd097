//! Clients that try to stall, exhaust or fool the server, each from a finding
//! of a hostile-client probe (issue 10, "Hostile clients"): manifests nested
//! too deep.

mod conformance_common;
mod support;

use conformance_common::*;
use reqwest::StatusCode;
use serde_json::Value;

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
