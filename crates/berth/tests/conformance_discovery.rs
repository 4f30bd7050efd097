//! OCI Distribution Spec v1.1, "Content Discovery" conformance category:
//! tag listing with `n`/`last` pagination, the catalog, and the referrers API.

mod conformance_common;
mod support;

use conformance_common::*;
use reqwest::StatusCode;
use serde_json::json;

/// Follows Link rel="next" headers from `first`, collecting `field` of every page.
async fn collect_pages(c: &Client, first: &str, field: &str) -> (Vec<String>, usize) {
    let mut all = Vec::new();
    let mut next = Some(first.to_owned());
    let mut pages = 0;
    while let Some(path) = next.take() {
        pages += 1;
        assert!(pages < 100, "pagination does not end");
        let r = c.get(&path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        if let Some(link) = header(&r, "link") {
            let (url, rel) = link.split_once(';').expect("Link: <url>; rel=\"next\"");
            assert_eq!(rel.trim(), "rel=\"next\"", "{link}");
            let url = url
                .trim()
                .strip_prefix('<')
                .and_then(|u| u.strip_suffix('>'))
                .expect("<url>");
            assert!(url.starts_with("/v2/") || url.starts_with("http"), "{url}");
            next = Some(url.to_owned());
        }
        let body = json_body(r).await;
        for t in body[field].as_array().unwrap_or_else(|| panic!("{field} in {body}")) {
            all.push(t.as_str().unwrap().to_owned());
        }
    }
    (all, pages)
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_are_sorted_and_paginated() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "disc/tags";
    let (m, _) = c.push_image(repo, "zeta", 30).await;
    let pushed = [
        "beta", "alpha", "Zulu", "1.0", "10", "2", "_under", "gamma-1", "gamma.0", "latest",
    ];
    for t in pushed {
        assert_eq!(c.put_manifest(repo, t, OCI_MANIFEST, &m).await.status(), 201, "{t}");
    }
    let mut expected: Vec<String> = pushed.iter().map(|s| s.to_string()).collect();
    expected.push("zeta".into());
    expected.sort();

    let r = c.get(&format!("/v2/{repo}/tags/list")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_api_version(&r);
    assert!(header(&r, "content-type").unwrap().starts_with("application/json"));
    assert!(header(&r, "link").is_none(), "everything fits in one page");
    let body = json_body(r).await;
    assert_eq!(body["name"], repo);
    assert_eq!(body["tags"], json!(expected));

    // n only: the first n, with a Link to the rest.
    let r = c.get(&format!("/v2/{repo}/tags/list?n=3")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let link = header(&r, "link").expect("Link to the next page").to_owned();
    assert!(link.contains("n=3"), "{link}");
    assert!(link.contains(&format!("last={}", expected[2])), "{link}");
    assert_eq!(json_body(r).await["tags"], json!(expected[..3]));

    // last only: everything after it.
    let r = c.get(&format!("/v2/{repo}/tags/list?last={}", expected[4])).await;
    assert_eq!(json_body(r).await["tags"], json!(expected[5..]));
    // n and last together.
    let r = c.get(&format!("/v2/{repo}/tags/list?n=2&last={}", expected[4])).await;
    assert!(header(&r, "link").is_some());
    assert_eq!(json_body(r).await["tags"], json!(expected[5..7]));
    // last that is not a tag: everything lexically after it.
    let r = c.get(&format!("/v2/{repo}/tags/list?last=b")).await;
    let after: Vec<&String> = expected.iter().filter(|t| t.as_str() > "b").collect();
    assert_eq!(json_body(r).await["tags"], json!(after));
    // n=0 gives an empty page, and n larger than the list gives all of it without a Link.
    let r = c.get(&format!("/v2/{repo}/tags/list?n=0")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(header(&r, "link").is_none(), "n=0 must not link to a next page");
    assert_eq!(json_body(r).await["tags"], json!([]));
    let r = c.get(&format!("/v2/{repo}/tags/list?n=100")).await;
    assert!(header(&r, "link").is_none());
    assert_eq!(json_body(r).await["tags"], json!(expected));
    // The exact page boundary: n = count has no next page.
    let r = c.get(&format!("/v2/{repo}/tags/list?n={}", expected.len())).await;
    assert!(header(&r, "link").is_none());

    // Following the Links visits everything once, in order.
    for n in [1, 2, 4, 5] {
        let (all, pages) = collect_pages(&c, &format!("/v2/{repo}/tags/list?n={n}"), "tags").await;
        assert_eq!(all, expected, "n={n}");
        assert_eq!(pages, expected.len().div_ceil(n), "n={n}");
    }

    // Bad n.
    for bad in ["-1", "abc", "1.5"] {
        let r = c.get(&format!("/v2/{repo}/tags/list?n={bad}")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "n={bad}");
        assert_api_version(&r);
        assert!(json_body(r).await["errors"].is_array());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_of_unknown_repository() {
    let s = server();
    let c = Client::new(&s.url);
    assert_error(c.get("/v2/disc/nothing/tags/list").await, 404, "NAME_UNKNOWN").await;
    assert_error(c.get("/v2/disc/NotValid/tags/list").await, 400, "NAME_INVALID").await;
    // A repository with only a blob has no tags, but exists.
    c.push_blob("disc/blobonly", b"x").await;
    let r = c.get("/v2/disc/blobonly/tags/list").await;
    assert_eq!(r.status(), StatusCode::OK);
    let tags = &json_body(r).await["tags"];
    assert!(tags.is_null() || tags == &json!([]), "{tags}");
    // A name that is only the parent of a repository, or holds only an upload in progress, is no repository.
    c.push_image("disc/parent/child", "v1", 31).await;
    assert_error(c.get("/v2/disc/parent/tags/list").await, 404, "NAME_UNKNOWN").await;
    assert_error(c.get("/v2/disc/tags/list").await, 404, "NAME_UNKNOWN").await;
    c.start_upload("disc/uploading").await;
    assert_error(c.get("/v2/disc/uploading/tags/list").await, 404, "NAME_UNKNOWN").await;
    // Deleting every tag leaves an existing repository with an empty list.
    assert_eq!(c.delete("/v2/disc/parent/child/manifests/v1").await.status(), 202);
    let r = c.get("/v2/disc/parent/child/tags/list").await;
    assert_eq!(r.status(), StatusCode::OK);
    let tags = &json_body(r).await["tags"];
    assert!(tags.is_null() || tags == &json!([]), "{tags}");
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_lists_repositories_with_pagination() {
    let s = server();
    let c = Client::new(&s.url);
    let r = c.get("/v2/_catalog").await;
    assert_eq!(r.status(), StatusCode::OK);
    // Read-only image sources configured by default (berth's own image) may already be listed.
    let baseline: Vec<String> = json_body(r).await["repositories"]
        .as_array()
        .expect("repositories array")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let repos = ["zz/last", "aa", "mm/deep/er/name", "bb-b", "aa/sub"];
    for (i, r) in repos.iter().enumerate() {
        c.push_image(r, "v1", 40 + i as u64).await;
    }
    // An upload in progress does not make a repository.
    c.start_upload("uploads/only").await;
    let mut expected: Vec<String> = repos.iter().map(|s| s.to_string()).chain(baseline).collect();
    expected.sort();
    expected.dedup();
    let r = c.get("/v2/_catalog").await;
    assert_api_version(&r);
    assert_eq!(json_body(r).await["repositories"], json!(expected));
    let r = c.get("/v2/_catalog?n=2").await;
    let link = header(&r, "link").expect("Link").to_owned();
    assert!(link.contains("/v2/_catalog?") && link.contains("n=2"), "{link}");
    assert_eq!(json_body(r).await["repositories"], json!(expected[..2]));
    let r = c.get(&format!("/v2/_catalog?n=2&last={}", expected[1])).await;
    assert_eq!(json_body(r).await["repositories"], json!(expected[2..4]));
    for n in [1, 2, 3] {
        let (all, _) = collect_pages(&c, &format!("/v2/_catalog?n={n}"), "repositories").await;
        assert_eq!(all, expected, "n={n}");
    }
    let r = c.get("/v2/_catalog?n=x").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn referrers_api() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "disc/referrers";
    let (m, subject) = c.push_image(repo, "v1", 50).await;
    c.push_empty_config(repo).await;

    // None yet: an empty index, not a 404.
    let r = c.get(&format!("/v2/{repo}/referrers/{subject}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_api_version(&r);
    assert_eq!(header(&r, "content-type"), Some(OCI_INDEX));
    let body = json_body(r).await;
    assert_eq!(body["schemaVersion"], 2);
    assert_eq!(body["mediaType"], OCI_INDEX);
    assert_eq!(body["manifests"], json!([]));
    // Also for a subject that does not exist at all, and a repository that does not.
    let nothing = sha256(b"nothing");
    let r = c.get(&format!("/v2/{repo}/referrers/{nothing}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(json_body(r).await["manifests"], json!([]));

    let sig = artifact_manifest("application/vnd.example.sig", &subject, m.len(), "one");
    let sbom = artifact_manifest("application/vnd.example.sbom", &subject, m.len(), "two");
    let sig_d = sha256(&sig);
    let sbom_d = sha256(&sbom);
    for doc in [&sig, &sbom] {
        let r = c.put_manifest(repo, &sha256(doc), OCI_MANIFEST, doc).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "oci-subject"), Some(subject.as_str()));
    }
    let r = c.get(&format!("/v2/{repo}/referrers/{subject}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(header(&r, "oci-filters-applied").is_none());
    let body = json_body(r).await;
    let list = body["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{body}");
    for (doc, d, ty, note) in [
        (&sig, &sig_d, "application/vnd.example.sig", "one"),
        (&sbom, &sbom_d, "application/vnd.example.sbom", "two"),
    ] {
        let entry = list
            .iter()
            .find(|e| e["digest"] == json!(d))
            .unwrap_or_else(|| panic!("{d} missing in {body}"));
        assert_eq!(entry["mediaType"], OCI_MANIFEST);
        assert_eq!(entry["size"], json!(doc.len()));
        assert_eq!(entry["artifactType"], ty);
        assert_eq!(entry["annotations"]["org.example.note"], note);
    }

    // Filtered.
    let r = c
        .get(&format!(
            "/v2/{repo}/referrers/{subject}?artifactType=application/vnd.example.sbom"
        ))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "oci-filters-applied"), Some("artifactType"));
    let body = json_body(r).await;
    assert_eq!(body["manifests"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["manifests"][0]["digest"], json!(sbom_d));
    let r = c
        .get(&format!("/v2/{repo}/referrers/{subject}?artifactType=application/none"))
        .await;
    assert_eq!(header(&r, "oci-filters-applied"), Some("artifactType"));
    assert_eq!(json_body(r).await["manifests"], json!([]));

    // Referrers are per repository.
    let r = c.get(&format!("/v2/disc/other/referrers/{subject}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(json_body(r).await["manifests"], json!([]));

    // Deleting a referrer removes it from the list.
    let r = c.delete(&format!("/v2/{repo}/manifests/{sig_d}")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body = json_body(c.get(&format!("/v2/{repo}/referrers/{subject}")).await).await;
    assert_eq!(body["manifests"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["manifests"][0]["digest"], json!(sbom_d));

    // Without an artifactType, a manifest's referrer entry takes its config's media type.
    let plain = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.example.config", "digest": sha256(b"{}"), "size": 2},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": m.len()},
    }))
    .unwrap();
    let r = c.put_manifest(repo, &sha256(&plain), OCI_MANIFEST, &plain).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    let r = c
        .get(&format!(
            "/v2/{repo}/referrers/{subject}?artifactType=application/vnd.example.config"
        ))
        .await;
    let body = json_body(r).await;
    assert_eq!(body["manifests"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["manifests"][0]["digest"], json!(sha256(&plain)));
    assert!(
        !matches!(body["manifests"][0].get("annotations"), Some(a) if !a.is_null()),
        "{body}"
    );

    // A malformed digest is a client error.
    assert_error(
        c.get(&format!("/v2/{repo}/referrers/sha256:xyz")).await,
        400,
        "DIGEST_INVALID",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn referrers_of_a_subject_pushed_later() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "disc/later";
    c.push_empty_config(repo).await;
    // The subject does not exist yet: the push is accepted all the same.
    let config = br#"{"later":true}"#;
    let subject_doc = image_manifest(config, &[]);
    let subject = sha256(&subject_doc);
    let sig = artifact_manifest("application/vnd.example.sig", &subject, subject_doc.len(), "early");
    let r = c.put_manifest(repo, &sha256(&sig), OCI_MANIFEST, &sig).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    assert_eq!(header(&r, "oci-subject"), Some(subject.as_str()));
    let body = json_body(c.get(&format!("/v2/{repo}/referrers/{subject}")).await).await;
    assert_eq!(body["manifests"][0]["digest"], json!(sha256(&sig)));
    // Then the subject arrives.
    c.push_blob(repo, config).await;
    assert_eq!(
        c.put_manifest(repo, "v1", OCI_MANIFEST, &subject_doc).await.status(),
        201
    );
    let body = json_body(c.get(&format!("/v2/{repo}/referrers/{subject}")).await).await;
    assert_eq!(body["manifests"].as_array().unwrap().len(), 1);
    // An index can be a referrer too, and its artifactType comes from the field.
    let idx = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        "manifests": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_doc.len()},
    }))
    .unwrap();
    let r = c.put_manifest(repo, &sha256(&idx), OCI_INDEX, &idx).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    let body = json_body(c.get(&format!("/v2/{repo}/referrers/{subject}")).await).await;
    let entry = body["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["digest"] == json!(sha256(&idx)))
        .cloned()
        .expect("index referrer listed");
    assert_eq!(entry["mediaType"], OCI_INDEX);
    assert_eq!(entry["artifactType"], "application/vnd.example.bundle");
}
