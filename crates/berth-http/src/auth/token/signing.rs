//! The built-in token service's signing key: ECDSA P-256 (ES256), made on
//! first start and kept in the data directory, or given as a file.

use super::keys::PublicKey;
use jsonwebtoken::EncodingKey;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use std::io::Write;
use std::path::Path;

pub struct SigningKey {
    pub encoding: EncodingKey,
    pub public: PublicKey,
    /// The `kid` of every token: the key's JWK thumbprint (how JWKS users find it).
    pub kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(kid {})", self.kid)
    }
}

impl SigningKey {
    fn from_secret(secret: &p256::SecretKey) -> Result<SigningKey, String> {
        let pkcs8 = secret.to_pkcs8_der().map_err(|e| e.to_string())?;
        let spki = secret.public_key().to_public_key_der().map_err(|e| e.to_string())?;
        let public = PublicKey::from_spki(spki.as_bytes())?;
        Ok(SigningKey {
            encoding: EncodingKey::from_ec_der(pkcs8.as_bytes()),
            kid: public.thumbprint(),
            public,
        })
    }

    /// Parses a P-256 private key in PEM (`PRIVATE KEY`, PKCS#8, or `EC
    /// PRIVATE KEY`, SEC1: what `openssl genpkey` and `openssl ecparam` write).
    pub fn from_pem(text: &str) -> Result<SigningKey, String> {
        let secret = p256::SecretKey::from_pkcs8_pem(text)
            .or_else(|_| p256::SecretKey::from_sec1_pem(text))
            .map_err(|_| "not a P-256 private key in PEM (PKCS#8 or SEC1)".to_owned())?;
        SigningKey::from_secret(&secret)
    }

    /// Reads the key at `path`.
    pub fn load(path: &Path) -> Result<SigningKey, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        SigningKey::from_pem(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Reads the key at `path`, or makes one and writes it there (readable
    /// by the owner only, durably, atomically: a crash never leaves half a key).
    pub fn load_or_create(path: &Path) -> Result<SigningKey, String> {
        if path.exists() {
            return SigningKey::load(path);
        }
        let secret = loop {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
            // All but a negligible share of 32-byte strings are valid scalars.
            if let Ok(s) = p256::SecretKey::from_slice(&bytes) {
                break s;
            }
        };
        let pem = secret
            .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .map_err(|e| e.to_string())?;
        write_private(path, pem.as_bytes()).map_err(|e| format!("writing {}: {e}", path.display()))?;
        tracing::info!(target: "berth::auth", file = %path.display(), "made the token signing key");
        SigningKey::from_secret(&secret)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-signing-key-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth/token-signing-key.pem");
        let a = SigningKey::load_or_create(&path).unwrap();
        let b = SigningKey::load_or_create(&path).unwrap();
        assert_eq!(a.kid, b.kid, "a restart keeps the key");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(SigningKey::from_pem("junk").is_err());
    }

    #[test]
    fn reads_openssl_keys() {
        // One key as `openssl ecparam -name prime256v1 -genkey -noout` writes
        // it (SEC1) and as `openssl pkcs8 -topk8 -nocrypt` converts it.
        let sec1 = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIAvW9NUHYFe1wAlNoh67zODlKg0Jnu5fU+WRVhNx+HK3oAoGCCqGSM49
AwEHoUQDQgAEeZ+NZPYJRDU/tEquZRVDJ+0VdhPsIo2JHg+u/gblSYEgR6mk5CD5
sIMo3MffW+v4fY7ja1mq0mQrqxwojy+gzg==
-----END EC PRIVATE KEY-----
";
        let pkcs8 = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgC9b01QdgV7XACU2i
HrvM4OUqDQme7l9T5ZFWE3H4crehRANCAAR5n41k9glENT+0Sq5lFUMn7RV2E+wi
jYkeD67+BuVJgSBHqaTkIPmwgyjcx99b6/h9juNrWarSZCurHCiPL6DO
-----END PRIVATE KEY-----
";
        let a = SigningKey::from_pem(sec1).unwrap();
        let b = SigningKey::from_pem(pkcs8).unwrap();
        assert_eq!(a.kid, b.kid);
    }
}
