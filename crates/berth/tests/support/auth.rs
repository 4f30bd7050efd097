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
