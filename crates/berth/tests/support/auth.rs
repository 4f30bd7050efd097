//! Setup for the authentication tests: an htpasswd file and a policy file in
//! a temporary directory, Basic credentials, and key pairs for token issuers.

use std::path::PathBuf;

/// An htpasswd file (bcrypt, as `htpasswd -B` writes) and an access policy file.
pub struct AuthFiles {
    pub dir: tempfile::TempDir,
    pub htpasswd: PathBuf,
    pub policy: PathBuf,
}

/// bcrypt cost of test users: low, so that tests do not wait on it.
const TEST_COST: u32 = 5;

pub fn htpasswd_text(users: &[(&str, &str)]) -> String {
    users
        .iter()
        .map(|(u, p)| {
            // `htpasswd -B` writes $2y$; bcrypt's $2b$ is the same algorithm.
            let h = bcrypt::hash(p, TEST_COST).unwrap().replacen("$2b$", "$2y$", 1);
            format!("{u}:{h}\n")
        })
        .collect()
}

impl AuthFiles {
    pub fn new(users: &[(&str, &str)], policy: &str) -> AuthFiles {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        let policy_path = dir.path().join("auth.toml");
        std::fs::write(&htpasswd, htpasswd_text(users)).unwrap();
        std::fs::write(&policy_path, policy).unwrap();
        AuthFiles {
            dir,
            htpasswd,
            policy: policy_path,
        }
    }

    /// `--htpasswd FILE --auth-config FILE`
    pub fn args(&self) -> Vec<String> {
        vec![
            "--htpasswd".into(),
            self.htpasswd.display().to_string(),
            "--auth-config".into(),
            self.policy.display().to_string(),
        ]
    }

    /// Replaces the users (berth notices within a few seconds).
    pub fn write_users(&self, users: &[(&str, &str)]) {
        // Written aside and renamed in, as editors and `htpasswd` do.
        let tmp = self.dir.path().join("htpasswd.new");
        std::fs::write(&tmp, htpasswd_text(users)).unwrap();
        std::fs::rename(&tmp, &self.htpasswd).unwrap();
    }
}

/// The value of an `Authorization: Basic` header.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// `--no-self-image` plus `extra` plus the auth files' arguments, as a list for [`super::TestServer::start_with`].
pub fn server_args<'a>(files: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--no-self-image"];
    v.extend_from_slice(extra);
    v.extend(files.iter().map(String::as_str));
    v
}

/// A `PUBLIC KEY` PEM block for a DER SubjectPublicKeyInfo.
pub fn pem_public_key(spki_der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki_der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

/// An external token issuer made by the test: a P-256 key pair, with the
/// public key as a PEM file berth can be told to trust.
pub struct TestIssuer {
    pub dir: tempfile::TempDir,
    pub key: berth_http::auth::token::SigningKey,
    pub public_pem: PathBuf,
    pub name: String,
    pub service: String,
}

impl TestIssuer {
    pub fn new(name: &str, service: &str) -> TestIssuer {
        let dir = tempfile::tempdir().unwrap();
        let key = berth_http::auth::token::SigningKey::load_or_create(&dir.path().join("issuer-key.pem")).unwrap();
        let public_pem = dir.path().join("issuer.pem");
        std::fs::write(&public_pem, pem_public_key(&key.public.spki)).unwrap();
        TestIssuer {
            dir,
            key,
            public_pem,
            name: name.into(),
            service: service.into(),
        }
    }

    /// A token for `subject` with `access` (`(name, ["pull", "push"])`),
    /// valid for `secs`, its key named by `kid`.
    pub fn mint(&self, subject: &str, access: &[(&str, &[&str])], kid: &str, secs: i64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = serde_json::json!({
            "iss": self.name, "sub": subject, "aud": self.service,
            "exp": now + secs, "nbf": now - 5, "iat": now, "jti": format!("t{now}{subject}"),
            "access": access.iter().map(|(n, a)| serde_json::json!({"type": "repository", "name": n, "actions": a})).collect::<Vec<_>>(),
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &self.key.encoding).unwrap()
    }
}

/// A minimal external token service for [`TestIssuer`], as docker_auth or
/// GitLab would run beside a registry: `GET /token` with Basic credentials
/// answers a token granting every repository scope asked for, to the known
/// users (anonymous callers get a token with no access). HTTP/1.1 on
/// 127.0.0.1, one request per connection; stops when dropped.
pub struct TokenServer {
    pub url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    addr: std::net::SocketAddr,
    /// How many tokens it issued (so tests can tell it was used).
    pub issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl TokenServer {
    /// `kid`: how tokens name the issuer's key.
    pub fn start(issuer: TestIssuer, users: &[(&str, &str)], kid: String) -> TokenServer {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let users: Vec<(String, String)> = users.iter().map(|(u, p)| (u.to_string(), p.to_string())).collect();
        let (stop2, issued2) = (stop.clone(), issued.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut authorization = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            authorization = Some(v.trim().to_owned());
                        }
                    }
                }
                let target = request_line.split_whitespace().nth(1).unwrap_or("");
                let query = target.split_once('?').map_or("", |(_, q)| q);
                let scopes: Vec<String> = query
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("scope="))
                    .map(url_decode)
                    .collect();
                let user = authorization.as_deref().and_then(|a| {
                    use base64::Engine;
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(a.strip_prefix("Basic ")?)
                        .ok()?;
                    let text = String::from_utf8(raw).ok()?;
                    let (u, p) = text.split_once(':')?;
                    users.iter().any(|(uu, pp)| uu == u && pp == p).then(|| u.to_owned())
                });
                let (status, body) = if authorization.is_some() && user.is_none() {
                    ("401 Unauthorized", r#"{"details":"wrong credentials"}"#.to_owned())
                } else {
                    let mut access: Vec<(String, Vec<String>)> = Vec::new();
                    if user.is_some() {
                        for s in &scopes {
                            for one in s.split(' ') {
                                let parts: Vec<&str> = one.splitn(2, ':').collect();
                                if parts.len() == 2 && parts[0] == "repository" {
                                    if let Some((name, actions)) = parts[1].rsplit_once(':') {
                                        access.push((name.into(), actions.split(',').map(str::to_owned).collect()));
                                    }
                                }
                            }
                        }
                    }
                    let access: Vec<(&str, Vec<&str>)> = access
                        .iter()
                        .map(|(n, a)| (n.as_str(), a.iter().map(String::as_str).collect()))
                        .collect();
                    let access: Vec<(&str, &[&str])> = access.iter().map(|(n, a)| (*n, a.as_slice())).collect();
                    let token = issuer.mint(user.as_deref().unwrap_or(""), &access, &kid, 300);
                    issued2.fetch_add(1, Ordering::SeqCst);
                    (
                        "200 OK",
                        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string(),
                    )
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer {
            url: format!("http://{addr}/token"),
            stop,
            addr,
            issued,
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                if let Ok(b) = u8::from_str_radix(hex, 16) {
                    out.push(b);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
