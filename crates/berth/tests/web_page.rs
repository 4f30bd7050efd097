//! The web page in a real browser (headless chromium through chromedriver):
//! open it, search, open a repository and an image, check sizes and
//! platforms against what was pushed, copy a pull command, delete a tag.
//! Screenshots of each view go to docs/screenshots/ with
//! BERTH_UPDATE_SCREENSHOTS=1.

mod conformance_common;
mod support;

use conformance_common::{
    artifact_manifest, descriptor, json_body, sha256, Client, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST,
};
use fantoccini::Locator;
use reqwest::StatusCode;
use serde_json::json;
use support::browser::Browser;
use support::images::{Entry, Layer};
use support::TestServer;

const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// An image pushed for the test, and what the page should say about it.
struct Pushed {
    digest: String,
    manifest: Vec<u8>,
    /// config + layers: what the page shows as its size.
    size: u64,
    layer_sizes: Vec<u64>,
}

/// Pushes an image for `os/arch[/variant]` with two layers, a label that
/// tries to inject markup, and a history.
async fn push_image(
    c: &Client,
    repo: &str,
    tag: Option<&str>,
    arch: &str,
    variant: Option<&str>,
    marker: &str,
) -> Pushed {
    let layers = [
        Layer::new(&[Entry::file("etc/marker", format!("{marker}\n"))]),
        Layer::new(&[Entry::file("app/data", marker.repeat(3000))]),
    ];
    let mut config = json!({
        "created": "2026-01-02T03:04:05Z",
        "architecture": arch, "os": "linux",
        "config": {
            "Env": ["PATH=/usr/bin:/bin", format!("MARKER={marker}")],
            "Entrypoint": ["/app/run"], "Cmd": ["--port", "8080"],
            "Labels": {"org.opencontainers.image.title": "<img src=x onerror=\"document.body.dataset.pwned=1\">"},
        },
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        "history": [
            {"created_by": "ADD marker /etc/marker"},
            {"created_by": "ENV MARKER", "empty_layer": true},
            {"created_by": "COPY data /app/data"},
        ],
    });
    if let Some(v) = variant {
        config["variant"] = json!(v);
    }
    let config = serde_json::to_vec(&config).unwrap();
    c.push_blob(repo, &config).await;
    for l in &layers {
        c.push_blob(repo, &l.blob.bytes).await;
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": layers.iter().map(|l| descriptor(OCI_LAYER_GZIP, &l.blob.bytes)).collect::<Vec<_>>(),
    }))
    .unwrap();
    let digest = sha256(&manifest);
    let r = c
        .put_manifest(repo, tag.unwrap_or(&digest), OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let layer_sizes: Vec<u64> = layers.iter().map(|l| l.blob.size() as u64).collect();
    Pushed {
        digest,
        manifest,
        size: config.len() as u64 + layer_sizes.iter().sum::<u64>(),
        layer_sizes,
    }
}

async fn put_tag(c: &Client, repo: &str, tag: &str, media_type: &str, manifest: &[u8]) {
    let r = c.put_manifest(repo, tag, media_type, manifest).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{repo}:{tag}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_in_a_real_browser() {
    let server = TestServer::start_with(&["--no-self-image"]);
    let c = Client::new(&server.url);
    let shots = tempfile::tempdir().unwrap();

    // team/app: 1.0 and stable share a manifest; 1.9 and 1.10 sort numerically;
    // 1.0 has a signature-like referrer.
    let app = push_image(&c, "team/app", Some("1.0"), "amd64", None, "app-1.0").await;
    put_tag(&c, "team/app", "stable", OCI_MANIFEST, &app.manifest).await;
    push_image(&c, "team/app", Some("1.9"), "amd64", None, "app-1.9").await;
    push_image(&c, "team/app", Some("1.10"), "amd64", None, "app-1.10").await;
    c.push_empty_config("team/app").await;
    let sig = artifact_manifest(
        "application/vnd.example.signature",
        &app.digest,
        app.manifest.len(),
        "signed",
    );
    put_tag(&c, "team/app", &sha256(&sig), OCI_MANIFEST, &sig).await;

    // team/multi:latest: an index of linux/amd64 and linux/arm64/v8.
    let amd = push_image(&c, "team/multi", None, "amd64", None, "multi-amd").await;
    let arm = push_image(&c, "team/multi", None, "arm64", Some("v8"), "multi-arm").await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd.digest, "size": amd.manifest.len(), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": arm.digest, "size": arm.manifest.len(), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    }))
    .unwrap();
    put_tag(&c, "team/multi", "latest", OCI_INDEX, &index).await;
    push_image(&c, "tools/lint", Some("v1"), "amd64", None, "lint").await;

    let browser = Browser::start().await;
    // A plain reference, for the futures of `wait_until`'s checks to hold.
    let b = &browser;
    let host = server.host();

    // The repository list, with its namespace tree.
    b.client.goto(&format!("{}/", server.url)).await.unwrap();
    b.wait_for("#repositories tr.repository").await;
    assert_eq!(b.texts(".repo-link").await, ["team/app", "team/multi", "tools/lint"]);
    let namespaces = b.texts(".namespace").await;
    assert_eq!(namespaces.len(), 2, "{namespaces:?}");
    assert!(
        namespaces[0].starts_with("team/") && namespaces[0].contains("(2)"),
        "{namespaces:?}"
    );
    assert_eq!(b.texts("tr.repository .tag-count").await, ["4", "1", "1"]);
    b.screenshot("repositories.png", shots.path()).await;

    // Search, typed as a person does.
    let search = b.wait_for("#search").await;
    search.send_keys("mult").await.unwrap();
    b.wait_until("the search shows team/multi alone", || async move {
        b.texts(".repo-link").await == ["team/multi"]
    })
    .await;
    b.screenshot("search.png", shots.path()).await;

    // The index's repository: platforms and size of both images.
    b.client
        .find(Locator::LinkText("team/multi"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for("#tags tr.tag").await;
    assert_eq!(b.texts("tr.tag .tag-link").await, ["latest"]);
    assert_eq!(
        b.texts("tr.tag .platforms span").await,
        ["linux/amd64", "linux/arm64/v8"]
    );
    let size = b.attr("tr.tag td[data-bytes]", "data-bytes").await.unwrap();
    assert_eq!(size, (amd.size + arm.size).to_string());

    // The index itself: the platform matrix.
    b.client
        .find(Locator::LinkText("latest"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for("#platforms tr.platform").await;
    assert_eq!(
        b.texts("#platforms tr.platform td:first-child").await,
        ["linux/amd64", "linux/arm64/v8"]
    );
    let mut sizes = Vec::new();
    for row in b
        .client
        .find_all(Locator::Css("#platforms tr.platform td[data-bytes]"))
        .await
        .unwrap()
    {
        sizes.push(row.attr("data-bytes").await.unwrap().unwrap());
    }
    assert_eq!(sizes, [amd.size.to_string(), arm.size.to_string()]);
    assert!(
        b.texts("#manifest").await[0].contains("\"manifests\": ["),
        "pretty JSON"
    );
    b.screenshot("image-index.png", shots.path()).await;

    // team/app: tags in numeric order, the referrer under its subject.
    b.client.goto(&format!("{}/#/r/team%2Fapp", server.url)).await.unwrap();
    b.wait_for("#tags tr.tag").await;
    assert_eq!(b.texts("tr.tag .tag-link").await, ["1.0", "1.9", "1.10", "stable"]);
    b.client
        .find(Locator::Css(".sort-name"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(b.texts("tr.tag .tag-link").await, ["stable", "1.10", "1.9", "1.0"]);
    let referrers = b.texts("tr.referrer").await;
    assert_eq!(referrers.len(), 2, "under 1.0 and stable: {referrers:?}");
    assert!(
        referrers[0].contains("application/vnd.example.signature"),
        "{referrers:?}"
    );
    b.screenshot("repository.png", shots.path()).await;

    // An image: config, layers with their history, and the copy button.
    b.client
        .find(Locator::LinkText("1.0"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for("#layers tr.layer").await;
    assert_eq!(b.texts("#image-digest").await, std::slice::from_ref(&app.digest));
    assert_eq!(b.attr("#image-size", "data-bytes").await.unwrap(), app.size.to_string());
    let mut layer_sizes = Vec::new();
    for cell in b.client.find_all(Locator::Css("#layers td[data-bytes]")).await.unwrap() {
        layer_sizes.push(cell.attr("data-bytes").await.unwrap().unwrap().parse::<u64>().unwrap());
    }
    assert_eq!(layer_sizes, app.layer_sizes);
    let made_by = b.texts("#layers tr.layer td:last-child").await;
    assert_eq!(made_by, ["ADD marker /etc/marker", "COPY data /app/data"]);
    assert!(b.texts("#env").await[0].contains("MARKER=app-1.0"));
    // The label that tries to inject markup is shown as text, and ran nothing.
    assert_eq!(
        b.texts("#labels td:last-child").await,
        ["<img src=x onerror=\"document.body.dataset.pwned=1\">"]
    );
    assert_eq!(b.attr("body", "data-pwned").await, None);
    let want = format!("docker pull {host}/team/app@{}", app.digest);
    let copy = b.wait_for(".pull button.copy").await;
    copy.click().await.unwrap();
    let wanted = want.as_str();
    b.wait_until("the copy button reports the command", || async move {
        b.attr(".pull button.copy", "data-copied").await.as_deref() == Some(wanted)
    })
    .await;
    let label = copy.text().await.unwrap();
    assert!(label == "Copied" || label == "Selected", "{label}");
    let status = b.texts("#status").await;
    assert!(status[0].contains(&want), "{status:?}");
    let mut values = Vec::new();
    for f in b.client.find_all(Locator::Css(".pull-command")).await.unwrap() {
        values.push(f.prop("value").await.unwrap().unwrap());
    }
    assert_eq!(
        values,
        [
            want.clone(),
            format!("docker pull {host}/team/app:1.0"),
            format!("docker pull {host}/team/app:stable")
        ]
    );
    b.screenshot("image.png", shots.path()).await;

    // Delete the tag 1.0: gone from the page and the registry; stable stays.
    b.client.goto(&format!("{}/#/r/team%2Fapp", server.url)).await.unwrap();
    b.wait_for("tr.tag[data-tag='1.0'] .delete-tag")
        .await
        .click()
        .await
        .unwrap();
    b.wait_for("tr.tag[data-tag='1.0'] .confirm-delete")
        .await
        .click()
        .await
        .unwrap();
    b.wait_until("the deleted tag's row is gone", || async move {
        b.texts("tr.tag .tag-link").await == ["1.9", "1.10", "stable"]
    })
    .await;
    let tags = json_body(c.get("/v2/team/app/tags/list").await).await;
    assert_eq!(tags["tags"], json!(["1.10", "1.9", "stable"]));
    let by_digest = c.get(&format!("/v2/team/app/manifests/{}", app.digest)).await;
    assert_eq!(by_digest.status(), StatusCode::OK, "the manifest stays for stable");
    b.client.refresh().await.unwrap();
    b.wait_for("#tags tr.tag").await;
    assert_eq!(b.texts("tr.tag .tag-link").await, ["1.9", "1.10", "stable"]);

    // The GC preview.
    b.client.goto(&format!("{}/#/gc", server.url)).await.unwrap();
    b.wait_for("dl.facts").await;
    b.screenshot("gc-preview.png", shots.path()).await;

    // A phone-sized window still shows the list.
    b.client.set_window_size(390, 844).await.unwrap();
    b.client.goto(&format!("{}/#/", server.url)).await.unwrap();
    b.wait_for("#repositories tr.repository").await;
    b.screenshot("repositories-phone.png", shots.path()).await;

    browser.close().await;
}
