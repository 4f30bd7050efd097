//! Helpers shared by the `conformance_*` tests: a small client for the
//! distribution API and builders for the documents the tests push.
#![allow(dead_code)]

use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use sha2::Digest as _;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

pub fn sha512(bytes: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes)))
}

/// Deterministic pseudo-random bytes, different for every seed.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(bytes), "size": bytes.len()})
}

/// An OCI image manifest over `config` and `layers` (given as bytes).
pub fn image_manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": layers.iter().map(|l| descriptor(OCI_LAYER, l)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// An artifact manifest referring to `subject` (a manifest of `subject_len` bytes).
pub fn artifact_manifest(artifact_type: &str, subject: &str, subject_len: usize, note: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2},
        "layers": [{"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_len},
        "annotations": {"org.example.note": note},
    }))
    .unwrap()
}

pub fn index_manifest(children: &[(&str, &[u8])]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|(t, b)| descriptor(t, b)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// A client that sends `Authorization: <authorization>` with every request.
    pub fn with_authorization(base: &str, authorization: &str) -> Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("authorization", authorization.parse().unwrap());
        Client {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .default_headers(headers)
                .build()
                .unwrap(),
        }
    }

    /// A request to `path` (absolute path, or a full URL as found in Location).
    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        self.http.request(method, url)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.req(Method::GET, path).send().await.unwrap()
    }

    pub async fn head(&self, path: &str) -> Response {
        self.req(Method::HEAD, path).send().await.unwrap()
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.req(Method::DELETE, path).send().await.unwrap()
    }

    /// POST an upload; returns the Location of the session (asserting 202).
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let loc = header(&r, "location").map(str::to_owned);
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "POST upload for {repo}: {}",
            text(r).await
        );
        loc.expect("Location")
    }

    /// Pushes a blob with POST + PUT and returns its digest (asserting 201).
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let loc = self.start_upload(repo).await;
        let r = self
            .req(Method::PUT, &with_query(&loc, &format!("digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "PUT blob to {repo}: {}", text(r).await);
        digest
    }

    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Response {
        self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Pushes config + layers + manifest under `tag`; returns (manifest bytes, digest).
    pub async fn push_image(&self, repo: &str, tag: &str, seed: u64) -> (Vec<u8>, String) {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
        let layer = data(seed, 1000 + seed as usize % 100);
        self.push_blob(repo, &config).await;
        self.push_blob(repo, &layer).await;
        let m = image_manifest(&config, &[&layer]);
        let r = self.put_manifest(repo, tag, OCI_MANIFEST, &m).await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "PUT manifest {repo}:{tag}: {}",
            text(r).await
        );
        let d = sha256(&m);
        (m, d)
    }

    /// Pushes the `{}` empty blob used by artifacts.
    pub async fn push_empty_config(&self, repo: &str) {
        self.push_blob(repo, b"{}").await;
    }
}

pub fn with_query(url: &str, q: &str) -> String {
    if url.contains('?') {
        format!("{url}&{q}")
    } else {
        format!("{url}?{q}")
    }
}

pub fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

pub fn location(r: &Response) -> String {
    header(r, "location")
        .unwrap_or_else(|| panic!("no Location in {:?}", r.headers()))
        .to_owned()
}

pub async fn text(r: Response) -> String {
    r.text().await.unwrap_or_default()
}

pub async fn json_body(r: Response) -> Value {
    let bytes = r.bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// Every response carries the API version header, errors included.
pub fn assert_api_version(r: &Response) {
    assert_eq!(
        header(r, "docker-distribution-api-version"),
        Some("registry/2.0"),
        "{} {:?}",
        r.url(),
        r.headers()
    );
}

/// Asserts an error response: status, the API version header and the JSON
/// error code of the spec. Returns the body.
pub async fn assert_error(r: Response, status: u16, code: &str) -> Value {
    let url = r.url().clone();
    assert_api_version(&r);
    assert_eq!(r.status().as_u16(), status, "{url}");
    let body = json_body(r).await;
    let codes: Vec<&str> = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array in {body}"))
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&code), "{url}: expected {code}, got {body}");
    for e in body["errors"].as_array().unwrap() {
        assert!(e["message"].is_string(), "{body}");
    }
    body
}

/// A server for these tests. Without berth's own image: packaging it again
/// for every test server only costs time, and these tests are about the API.
pub fn server() -> crate::support::TestServer {
    server_with(&[])
}

pub fn server_with(extra: &[&str]) -> crate::support::TestServer {
    let mut args = vec!["--no-self-image"];
    args.extend_from_slice(extra);
    crate::support::TestServer::start_with(&args)
}
