//! The HTTP client that asks an upstream registry: its URLs in order
//! (failover), and the Docker token and Basic authentication it demands.
//!
//! Tokens are kept per upstream URL and scope until shortly before they
//! expire, so a pull asks the token endpoint once per repository, not once per
//! request. Credentials and tokens are never logged.

use super::challenge::{self, Challenge};
use super::Credentials;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use reqwest::{header, Method, Response, StatusCode};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What went wrong asking the upstream, in the terms the mirror decides by.
#[derive(Debug, Clone)]
pub(crate) enum UpstreamError {
    /// Every URL answered 404 (or the first that answered did).
    NotFound,
    /// Down, timed out, 5xx or 429: a cached copy is worth serving instead.
    Unavailable(String),
    /// A refusal or a broken answer: retrying later will not help.
    Failed(String),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::NotFound => f.write_str("not found upstream"),
            UpstreamError::Unavailable(m) | UpstreamError::Failed(m) => f.write_str(m),
        }
    }
}

/// Every manifest type berth stores: the upstream answers with what it has,
/// and its bytes (and so its digest) are served unchanged.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// `Authorization` values by (upstream URL, scope), with when they expire.
type AuthCache = Mutex<HashMap<(String, String), (String, Option<Instant>)>>;

pub(crate) struct UpstreamClient {
    /// Follows redirects (blob storage behind a CDN), for fetching.
    http: reqwest::Client,
    /// Does not follow them, for answering clients with the upstream's own location.
    no_redirect: reqwest::Client,
    urls: Vec<String>,
    credentials: Option<Credentials>,
    auth: AuthCache,
    /// How long the upstream may take to answer a request's head.
    timeout: Duration,
}

/// A manifest as the upstream sent it.
pub(crate) struct FetchedManifest {
    pub digest_header: Option<String>,
    pub bytes: Bytes,
}

impl UpstreamClient {
    pub(crate) fn new(urls: Vec<String>, credentials: Option<Credentials>, timeout: Duration) -> Result<Self, String> {
        let build = |redirect: reqwest::redirect::Policy| {
            reqwest::Client::builder()
                .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION"), " (pull-through mirror)"))
                .connect_timeout(timeout)
                // Between two reads of a body; a whole layer may take far longer.
                .read_timeout(timeout)
                .redirect(redirect)
                // A pure-Rust resolver: glibc's in a static binary needs NSS libraries.
                .hickory_dns(true)
                .build()
                .map_err(|e| format!("building the upstream HTTP client: {e}"))
        };
        let urls = urls
            .into_iter()
            .map(|u| u.trim_end_matches('/').to_owned())
            .collect::<Vec<_>>();
        for u in &urls {
            let parsed = reqwest::Url::parse(u).map_err(|e| format!("upstream URL {u:?}: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!("upstream URL {u:?}: only http:// and https:// are supported"));
            }
        }
        if urls.is_empty() {
            return Err("an upstream needs at least one URL".into());
        }
        Ok(UpstreamClient {
            http: build(reqwest::redirect::Policy::limited(10))?,
            no_redirect: build(reqwest::redirect::Policy::none())?,
            urls,
            credentials,
            auth: Mutex::new(HashMap::new()),
            timeout,
        })
    }

    /// `HEAD` of a manifest: its digest, if the upstream says it.
    pub(crate) async fn manifest_digest(&self, name: &str, reference: &str) -> Result<Option<String>, UpstreamError> {
        let path = format!("/v2/{name}/manifests/{reference}");
        let resp = self
            .send(Method::HEAD, &path, name, Some(MANIFEST_ACCEPT), false)
            .await?;
        Ok(digest_header(&resp))
    }

    pub(crate) async fn manifest(&self, name: &str, reference: &str) -> Result<FetchedManifest, UpstreamError> {
        let path = format!("/v2/{name}/manifests/{reference}");
        let resp = self
            .send(Method::GET, &path, name, Some(MANIFEST_ACCEPT), false)
            .await?;
        let digest_header = digest_header(&resp);
        let bytes = read_limited(resp, berth_spec::manifest::MAX_MANIFEST_SIZE).await?;
        Ok(FetchedManifest { digest_header, bytes })
    }

    /// The size of a blob, from a `HEAD`.
    pub(crate) async fn blob_size(&self, name: &str, digest: &str) -> Result<u64, UpstreamError> {
        let path = format!("/v2/{name}/blobs/{digest}");
        let resp = self.send(Method::HEAD, &path, name, None, false).await?;
        content_length(&resp)
            .ok_or_else(|| UpstreamError::Failed(format!("upstream HEAD of blob {digest} gave no Content-Length")))
    }

    /// A `GET` of a blob whose body the caller streams.
    pub(crate) async fn blob(&self, name: &str, digest: &str) -> Result<Response, UpstreamError> {
        let path = format!("/v2/{name}/blobs/{digest}");
        self.send(Method::GET, &path, name, None, false).await
    }

    /// Where a client can fetch a blob itself: the upstream's redirect target
    /// when it redirects (object storage, a CDN), else its blob URL.
    pub(crate) async fn blob_location(&self, name: &str, digest: &str) -> Result<String, UpstreamError> {
        let path = format!("/v2/{name}/blobs/{digest}");
        let resp = self.send(Method::HEAD, &path, name, None, true).await?;
        if resp.status().is_redirection() {
            if let Some(loc) = resp.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()) {
                return resp
                    .url()
                    .join(loc)
                    .map(|u| u.to_string())
                    .map_err(|e| UpstreamError::Failed(format!("upstream redirect {loc:?}: {e}")));
            }
        }
        Ok(resp.url().to_string())
    }

    /// The upstream's tags of `name`.
    pub(crate) async fn tags(&self, name: &str) -> Result<Vec<String>, UpstreamError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let path = format!("/v2/{name}/tags/list");
        let resp = self.send(Method::GET, &path, name, None, false).await?;
        let bytes = read_limited(resp, 16 << 20).await?;
        let list: TagList = serde_json::from_slice(&bytes)
            .map_err(|e| UpstreamError::Failed(format!("upstream tag list of {name} is not JSON: {e}")))?;
        Ok(list.tags.unwrap_or_default())
    }

    /// Sends the request to each URL in turn until one answers other than
    /// with a failure worth trying elsewhere. 404 ends the search: mirrors of
    /// one registry hold the same content.
    async fn send(
        &self,
        method: Method,
        path: &str,
        name: &str,
        accept: Option<&str>,
        no_redirect: bool,
    ) -> Result<Response, UpstreamError> {
        let scope = format!("repository:{name}:pull");
        let mut last = UpstreamError::Unavailable("no upstream URL".into());
        for base in &self.urls {
            match self.send_to(base, &method, path, &scope, accept, no_redirect).await {
                Ok(resp) => return Ok(resp),
                Err(e @ UpstreamError::Unavailable(_)) => {
                    tracing::warn!(upstream = %base, %path, error = %e, "upstream unavailable; trying the next URL if any");
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn send_to(
        &self,
        base: &str,
        method: &Method,
        path: &str,
        scope: &str,
        accept: Option<&str>,
        no_redirect: bool,
    ) -> Result<Response, UpstreamError> {
        let key = (base.to_owned(), scope.to_owned());
        let url = format!("{base}{path}");
        let mut authorization = self.cached_auth(&key);
        for attempt in 0..2 {
            let resp = self
                .request(method.clone(), &url, accept, authorization.as_deref(), no_redirect)
                .await?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = resp
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(challenge::parse);
                let Some(challenge) = challenge else {
                    return Err(UpstreamError::Failed(format!(
                        "upstream {base} answered 401 without a challenge berth can answer"
                    )));
                };
                let (value, expires) = self.authenticate(&challenge, scope).await?;
                self.auth.lock().unwrap().insert(key.clone(), (value.clone(), expires));
                authorization = Some(value);
                continue;
            }
            return classify(base, path, resp);
        }
        Err(UpstreamError::Failed(format!(
            "upstream {base} refused the credentials berth has for it (401)"
        )))
    }

    fn cached_auth(&self, key: &(String, String)) -> Option<String> {
        let mut map = self.auth.lock().unwrap();
        match map.get(key) {
            Some((value, None)) => Some(value.clone()),
            Some((value, Some(until))) if *until > Instant::now() => Some(value.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    async fn request(
        &self,
        method: Method,
        url: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
        no_redirect: bool,
    ) -> Result<Response, UpstreamError> {
        let client = if no_redirect { &self.no_redirect } else { &self.http };
        let mut req = client.request(method, url);
        if let Some(a) = accept {
            req = req.header(header::ACCEPT, a);
        }
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        match tokio::time::timeout(self.timeout, req.send()).await {
            Err(_) => Err(UpstreamError::Unavailable(format!(
                "upstream {url} did not answer within {:?}",
                self.timeout
            ))),
            Ok(Err(e)) => Err(UpstreamError::Unavailable(format!(
                "upstream {url}: {}",
                error_chain(&e)
            ))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    fn basic(&self) -> Option<String> {
        let c = self.credentials.as_ref()?;
        let raw = format!("{}:{}", c.username, c.password);
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
    }

    /// The `Authorization` value that answers `challenge`, and until when it holds.
    async fn authenticate(
        &self,
        challenge: &Challenge,
        scope: &str,
    ) -> Result<(String, Option<Instant>), UpstreamError> {
        match challenge {
            Challenge::Basic => match self.basic() {
                Some(b) => Ok((b, None)),
                None => Err(UpstreamError::Failed(
                    "upstream wants Basic credentials and none are configured for it".into(),
                )),
            },
            Challenge::Bearer {
                realm,
                service,
                scope: asked,
            } => {
                let mut url = reqwest::Url::parse(realm)
                    .map_err(|e| UpstreamError::Failed(format!("upstream token realm {realm:?}: {e}")))?;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", asked.as_deref().unwrap_or(scope));
                }
                let resp = self
                    .request(Method::GET, url.as_str(), None, self.basic().as_deref(), false)
                    .await?;
                let status = resp.status();
                if !status.is_success() {
                    let e = format!("upstream token endpoint {realm} answered {status}");
                    return Err(if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                        UpstreamError::Unavailable(e)
                    } else {
                        UpstreamError::Failed(e)
                    });
                }
                #[derive(serde::Deserialize)]
                struct TokenAnswer {
                    token: Option<String>,
                    access_token: Option<String>,
                    expires_in: Option<u64>,
                }
                let bytes = read_limited(resp, 1 << 20).await?;
                let answer: TokenAnswer = serde_json::from_slice(&bytes).map_err(|e| {
                    UpstreamError::Failed(format!("upstream token endpoint {realm}: not a token answer: {e}"))
                })?;
                let token = answer
                    .token
                    .or(answer.access_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| UpstreamError::Failed(format!("upstream token endpoint {realm} gave no token")))?;
                // The token spec's default lifetime is 60 s; a little is kept
                // in hand so that a token is not used as it expires.
                let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(60).max(10));
                let until = Instant::now() + lifetime - Duration::from_secs(5);
                Ok((format!("Bearer {token}"), Some(until)))
            }
        }
    }
}

/// Turns a final answer into success or the error the mirror decides by.
fn classify(base: &str, path: &str, resp: Response) -> Result<Response, UpstreamError> {
    let status = resp.status();
    if status.is_success() || status.is_redirection() {
        return Ok(resp);
    }
    let what = format!("upstream {base} answered {status} to {path}");
    Err(match status {
        StatusCode::NOT_FOUND => UpstreamError::NotFound,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => UpstreamError::Unavailable(what),
        s if s.is_server_error() => UpstreamError::Unavailable(what),
        _ => UpstreamError::Failed(what),
    })
}

fn digest_header(resp: &Response) -> Option<String> {
    resp.headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

pub(crate) fn content_length(resp: &Response) -> Option<u64> {
    resp.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The body of a small answer, refusing more than `limit` bytes.
async fn read_limited(mut resp: Response, limit: usize) -> Result<Bytes, UpstreamError> {
    let mut buf = BytesMut::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    return Err(UpstreamError::Failed(format!(
                        "upstream answer is larger than the limit of {limit} bytes"
                    )));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(e) => {
                return Err(UpstreamError::Unavailable(format!(
                    "reading the upstream answer: {}",
                    error_chain(&e)
                )))
            }
        }
    }
}

/// reqwest's errors say little at the top ("error sending request"); the
/// cause (connection refused, timed out) is further down.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
