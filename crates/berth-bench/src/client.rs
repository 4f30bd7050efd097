//! A minimal HTTP/1.1 client: one keep-alive connection per worker, as a
//! registry client (docker, containerd) would use, with request bodies
//! generated on the fly.

use crate::gen::{BlobKey, PIECE};
use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use tokio::net::TcpStream;

/// Where the registry is: `http://host:port[/prefix]` or `https://...`.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub authority: HeaderValue,
    /// Path prefix before `/v2/`, without a trailing slash (usually empty).
    pub prefix: String,
    /// Sent as `Authorization` with every request (`--authorization`).
    pub authorization: Option<HeaderValue>,
    /// Set for `https://` URLs once [`Target::trust`] has given the CA.
    pub tls: Option<Tls>,
    https: bool,
}

/// How to speak TLS to the target: HTTP/1.1 over rustls, verifying the
/// server's certificate against the given CA (as a registry client would).
#[derive(Clone)]
pub struct Tls {
    connector: tokio_rustls::TlsConnector,
    server_name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls({:?})", self.server_name)
    }
}

impl Target {
    pub async fn parse(url: &str) -> anyhow::Result<Target> {
        let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => bail!("only http:// and https:// URLs are supported, got {url:?}"),
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let hostport = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_owned()
        } else {
            format!("{authority}:{}", if https { 443 } else { 80 })
        };
        let addr = tokio::net::lookup_host(&hostport)
            .await
            .with_context(|| format!("resolving {hostport}"))?
            .next()
            .ok_or_else(|| anyhow!("{hostport} does not resolve"))?;
        Ok(Target {
            addr,
            authority: HeaderValue::from_str(authority)?,
            prefix: prefix.to_owned(),
            authorization: None,
            tls: None,
            https,
        })
    }

    /// For an `https://` target, trusts the CA certificates in `ca_pem`
    /// (required: there is no system trust store in a benchmark).
    pub fn trust(&mut self, ca_pem: Option<&std::path::Path>) -> anyhow::Result<()> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName};
        if !self.https {
            return Ok(());
        }
        let path = ca_pem.ok_or_else(|| anyhow!("an https:// URL needs --cacert FILE"))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(path).with_context(|| format!("reading {}", path.display()))? {
            roots.add(cert?)?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let host = self.authority.to_str()?;
        let host = match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        let server_name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_owned())?;
        self.tls = Some(Tls {
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
            server_name,
        });
        Ok(())
    }

    /// The path of `/v2/<rest>` on this registry.
    pub fn path(&self, rest: &str) -> String {
        format!("{}/v2/{rest}", self.prefix)
    }
}

/// A request body: nothing, fixed bytes, or a generated range of a blob.
pub enum ReqBody {
    Empty,
    Full(Option<Bytes>),
    /// Bytes `pos..end` of blob `key`; `exact` false hides the length so
    /// that the request goes out with chunked transfer encoding.
    Gen {
        key: BlobKey,
        pos: u64,
        end: u64,
        exact: bool,
    },
}

impl http_body::Body for ReqBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(match self.get_mut() {
            ReqBody::Empty => None,
            ReqBody::Full(b) => b.take().map(|b| Ok(Frame::data(b))),
            ReqBody::Gen { key, pos, end, .. } => {
                if *pos >= *end {
                    None
                } else {
                    let n = (*end - *pos).min(PIECE as u64) as usize;
                    let piece = key.piece(*pos, n);
                    *pos += n as u64;
                    Some(Ok(Frame::data(piece)))
                }
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Full(b) => b.is_none(),
            ReqBody::Gen { pos, end, .. } => pos >= end,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ReqBody::Gen {
                pos, end, exact: true, ..
            } => SizeHint::with_exact(end - pos),
            ReqBody::Gen { .. } => SizeHint::default(),
        }
    }
}

impl ReqBody {
    fn exact_len(&self) -> Option<u64> {
        match self {
            ReqBody::Empty => Some(0),
            ReqBody::Full(b) => Some(b.as_ref().map_or(0, |b| b.len() as u64)),
            ReqBody::Gen {
                pos, end, exact: true, ..
            } => Some(end - pos),
            ReqBody::Gen { .. } => None,
        }
    }
}

/// One keep-alive connection.
pub struct Conn {
    sender: SendRequest<ReqBody>,
    authority: HeaderValue,
    authorization: Option<HeaderValue>,
}

impl Conn {
    pub async fn connect(target: &Target) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        stream.set_nodelay(true)?;
        let sender = match &target.tls {
            None => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
            }
            Some(tls) => {
                let stream = tls
                    .connector
                    .connect(tls.server_name.clone(), stream)
                    .await
                    .context("TLS handshake")?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
            }
        };
        Ok(Conn {
            sender,
            authority: target.authority.clone(),
            authorization: target.authorization.clone(),
        })
    }

    pub fn is_usable(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Sends one request; `path` is the path and query.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&'static str, &str)],
        body: ReqBody,
    ) -> anyhow::Result<Response<Incoming>> {
        let mut req = Request::builder().method(method).uri(path);
        let h = req.headers_mut().expect("builder is valid");
        h.insert(HOST, self.authority.clone());
        if let Some(a) = &self.authorization {
            h.insert(http::header::AUTHORIZATION, a.clone());
        }
        if let Some(len) = body.exact_len() {
            h.insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v)?);
        }
        let req = req.body(body)?;
        self.sender.ready().await?;
        Ok(self.sender.send_request(req).await?)
    }
}

/// Reads a response body to its end, returning its length and, if asked,
/// its sha256 digest.
pub async fn drain(resp: Response<Incoming>, hash: bool) -> anyhow::Result<(u64, Option<String>)> {
    let mut body = resp.into_body();
    let mut len = 0u64;
    let mut hasher = hash.then(Sha256::new);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            len += data.len() as u64;
            if let Some(h) = hasher.as_mut() {
                h.update(&data);
            }
        }
    }
    Ok((len, hasher.map(|h| format!("sha256:{}", hex::encode(h.finalize())))))
}

/// Fails unless the response has status `want`; the error carries the body's start.
pub async fn expect(resp: Response<Incoming>, want: StatusCode, what: &str) -> anyhow::Result<Response<Incoming>> {
    if resp.status() == want {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    bail!("{what}: expected {want}, got {status}: {text}")
}

/// The path and query of a Location header, which may be absolute or relative.
pub fn location(resp: &Response<Incoming>) -> anyhow::Result<String> {
    let loc = resp
        .headers()
        .get(http::header::LOCATION)
        .ok_or_else(|| anyhow!("response has no Location"))?
        .to_str()?;
    Ok(location_path(loc).to_owned())
}

fn location_path(loc: &str) -> &str {
    match loc.find("://") {
        Some(i) => {
            let after = &loc[i + 3..];
            after.find('/').map_or("/", |j| &after[j..])
        }
        None => loc,
    }
}

/// Appends a query parameter to a path that may already have a query.
pub fn with_query(path: &str, key: &str, value: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{key}={value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            location_path("http://h:5000/v2/a/blobs/uploads/x?s=1"),
            "/v2/a/blobs/uploads/x?s=1"
        );
        assert_eq!(location_path("/v2/a/blobs/uploads/x"), "/v2/a/blobs/uploads/x");
        assert_eq!(with_query("/u?a=1", "digest", "d"), "/u?a=1&digest=d");
        assert_eq!(with_query("/u", "digest", "d"), "/u?digest=d");
    }

    #[tokio::test]
    async fn targets() {
        let t = Target::parse("http://127.0.0.1:5000/").await.unwrap();
        assert_eq!(t.addr.port(), 5000);
        assert_eq!(t.path("x"), "/v2/x");
        let t = Target::parse("http://127.0.0.1:81/reg").await.unwrap();
        assert_eq!(t.path(""), "/reg/v2/");
        assert!(Target::parse("ftp://127.0.0.1").await.is_err());
        let mut t = Target::parse("https://127.0.0.1:5443").await.unwrap();
        assert!(t.trust(None).is_err(), "https needs a CA");
    }
}
