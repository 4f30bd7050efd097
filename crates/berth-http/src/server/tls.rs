//! TLS: the certificate and key from PEM files (rustls with the ring
//! provider, TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 through ALPN), reloaded when
//! the files change or on demand (SIGHUP) without touching open connections,
//! and optional client certificates whose subject reaches the HTTP layer.
//!
//! Each new connection takes the configuration current at its handshake; a
//! reload swaps it for the next ones. A reload that fails (a half-written
//! file, a key that does not match the certificate) keeps the previous one
//! and is tried again when the files change again.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// Where the PEM files are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, server certificate first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates that client certificates must chain to. Clients
    /// without a certificate are still accepted (other authentication may
    /// apply); those that present one must present a valid one.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("{0}")]
    Config(String),
}

/// The TLS configuration of a server, swapped whole on reload.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    /// What the files looked like when they were last read.
    stamps: Mutex<Vec<Option<Stamp>>>,
}

/// Enough of a file's metadata to notice it was replaced or rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Reads the files; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let stamps = stamps(&files);
        let config = build(&files)?;
        Ok(Arc::new(Tls {
            files,
            current: RwLock::new(Arc::new(config)),
            stamps: Mutex::new(stamps),
        }))
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the files again and uses them for new connections.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = stamps(&self.files);
        let result = build(&self.files);
        // Remembered even on failure: the same broken files are not retried
        // every poll, only once they change again.
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = stamps;
        let config = result?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// Reloads if any file changed since it was last read; logs the outcome.
    pub fn reload_if_changed(&self) {
        let now = stamps(&self.files);
        if *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) == now {
            return;
        }
        self.reload_logged("the files changed");
    }

    /// Reloads and logs the outcome.
    pub fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(cert = %self.files.cert.display(), why, "reloaded the TLS certificate"),
            Err(e) => tracing::error!(error = %e, why,
                "could not reload the TLS certificate; new connections keep the previous one"),
        }
    }

    /// Checks the files for changes every `every`, until the task is aborted.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let tls = self.clone();
            // A few stats and, rarely, a few small reads: off the async threads all the same.
            let _ = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await;
        }
    }
}

fn stamps(files: &TlsFiles) -> Vec<Option<Stamp>> {
    use std::os::unix::fs::MetadataExt;
    [Some(&files.cert), Some(&files.key), files.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| {
            std::fs::metadata(p).ok().map(|m| Stamp {
                modified: m.modified().ok(),
                len: m.len(),
                inode: m.ino(),
            })
        })
        .collect()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "no certificate (-----BEGIN CERTIFICATE-----) in the file".into(),
        });
    }
    Ok(certs)
}

fn build(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(|e| TlsError::Pem {
        path: files.key.clone(),
        what: format!("no usable private key: {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(path)? {
                roots.add(ca).map_err(|e| TlsError::Pem {
                    path: path.clone(),
                    what: format!("not a usable CA certificate: {e}"),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Config(format!("{}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError::Config(format!(
            "{} and {} do not make a certificate and its key: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The verified certificate a client presented, as a request extension:
/// `req.extensions().get::<ClientCertificate>()`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ClientCertificate(Arc<Subject>);

#[derive(Debug)]
struct Subject {
    common_name: Option<String>,
    subject: String,
}

impl ClientCertificate {
    /// Reads the subject of a (verified) end-entity certificate.
    pub fn from_der(der: &[u8]) -> Option<ClientCertificate> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let common_name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Some(ClientCertificate(Arc::new(Subject {
            common_name,
            subject: subject.to_string(),
        })))
    }

    /// The subject's common name (CN), the usual user name.
    pub fn common_name(&self) -> Option<&str> {
        self.0.common_name.as_deref()
    }

    /// The whole subject, as in `CN=alice, O=Example`.
    pub fn subject(&self) -> &str {
        &self.0.subject
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Request;
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

    struct Ca(rcgen::Certificate, KeyPair);

    impl Ca {
        fn new() -> Ca {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, "test CA");
            let key = KeyPair::generate().unwrap();
            Ca(p.self_signed(&key).unwrap(), key)
        }

        /// (certificate PEM, key PEM)
        fn issue(&self, sans: &[&str], cn: &str, usage: ExtendedKeyUsagePurpose) -> (String, String) {
            let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.distinguished_name.push(DnType::OrganizationName, "Example");
            p.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            (p.signed_by(&key, &self.0, &self.1).unwrap().pem(), key.serialize_pem())
        }
    }

    /// What a handler sees of the client's certificate, over HTTP/2 and
    /// HTTP/1.1; clients without one are served, a certificate from another
    /// CA is refused at the handshake.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_certificates_reach_the_handlers() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, rogue) = (Ca::new(), Ca::new());
        let (cert, key) = ca.issue(&["localhost"], "localhost", ExtendedKeyUsagePurpose::ServerAuth);
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let files = TlsFiles {
            cert: write("server.crt", &cert),
            key: write("server.key", &key),
            client_ca: Some(write("ca.crt", &ca.0.pem())),
        };
        let tls = Tls::load(files).unwrap();
        let router = axum::Router::new().route(
            "/who",
            axum::routing::get(|req: Request| async move {
                match req.extensions().get::<ClientCertificate>() {
                    Some(c) => format!("{} | {}", c.common_name().unwrap_or("-"), c.subject()),
                    None => "anonymous".to_owned(),
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let options = crate::ServerOptions {
            tls: Some(tls),
            ..Default::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::server::serve_router(listener, router, options, async move {
            let _ = stopped.await;
        }));

        let root = reqwest::Certificate::from_pem(ca.0.pem().as_bytes()).unwrap();
        let client = |identity: Option<(String, String)>, http1: bool| {
            let mut b = reqwest::Client::builder()
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(root.clone());
            if let Some((cert, key)) = identity {
                b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
            }
            if http1 {
                b = b.http1_only();
            }
            b.build().unwrap()
        };
        let url = format!("https://localhost:{port}/who");
        let alice = ca.issue(&[], "alice", ExtendedKeyUsagePurpose::ClientAuth);
        for http1 in [false, true] {
            let r = client(Some(alice.clone()), http1).get(&url).send().await.unwrap();
            let expect = if http1 {
                http::Version::HTTP_11
            } else {
                http::Version::HTTP_2
            };
            assert_eq!(r.version(), expect);
            let body = r.text().await.unwrap();
            assert!(body.starts_with("alice | "), "{body}");
            assert!(body.contains("CN=alice") && body.contains("O=Example"), "{body}");
            let r = client(None, http1).get(&url).send().await.unwrap();
            assert_eq!(r.text().await.unwrap(), "anonymous");
        }
        let mallory = rogue.issue(&[], "mallory", ExtendedKeyUsagePurpose::ClientAuth);
        assert!(client(Some(mallory), false).get(&url).send().await.is_err());
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        let (cert, key) = ca.issue(&["localhost"], "localhost", ExtendedKeyUsagePurpose::ServerAuth);
        let (_, other_key) = ca.issue(&["localhost"], "localhost", ExtendedKeyUsagePurpose::ServerAuth);
        let path = |n: &str| dir.path().join(n);
        std::fs::write(path("cert"), &cert).unwrap();
        std::fs::write(path("key"), &key).unwrap();
        std::fs::write(path("other.key"), &other_key).unwrap();
        std::fs::write(path("garbage"), "not pem").unwrap();
        let files = |c: &str, k: &str| TlsFiles {
            cert: path(c),
            key: path(k),
            client_ca: None,
        };
        Tls::load(files("cert", "key")).unwrap();
        for (c, k, says) in [
            ("missing", "key", "missing"),
            ("garbage", "key", "no certificate"),
            ("cert", "garbage", "no usable private key"),
            ("cert", "other.key", "do not make a certificate and its key"),
        ] {
            let e = Tls::load(files(c, k)).unwrap_err().to_string();
            assert!(e.contains(says), "{c} {k}: {e}");
        }
        // A failed reload keeps the working configuration.
        let tls = Tls::load(files("cert", "key")).unwrap();
        let before = tls.config();
        std::fs::write(path("key"), &other_key).unwrap();
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.config()));
        std::fs::write(path("key"), &key).unwrap();
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.config()));
    }
}
