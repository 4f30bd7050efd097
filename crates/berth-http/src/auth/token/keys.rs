//! Public keys that sign tokens, and the key IDs (`kid`) that name them.
//!
//! Issuers name their key in one of two ways, and both must work:
//! - CNCF distribution v2 and the issuers of its era (docker_auth, GitLab,
//!   Harbor's core) use libtrust's key ID: SHA-256 of the DER
//!   SubjectPublicKeyInfo, its first 240 bits in base32, in twelve groups of
//!   four joined by `:` (`ABCD:EFGH:...`).
//! - distribution v3 and JWKS-based issuers (Keycloak) use the `kid` in the
//!   JWKS, or the RFC 7638 JWK thumbprint (SHA-256, base64url).
//!
//! A trusted key is therefore registered under every name it may be given.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use sha2_011::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    P256,
    P384,
    Rsa,
    Ed25519,
}

impl KeyType {
    /// The signature algorithms a key of this type may verify.
    pub fn algorithms(self) -> &'static [Algorithm] {
        match self {
            KeyType::P256 => &[Algorithm::ES256],
            KeyType::P384 => &[Algorithm::ES384],
            KeyType::Rsa => &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            KeyType::Ed25519 => &[Algorithm::EdDSA],
        }
    }
}

/// A public key in the forms verification needs.
#[derive(Clone)]
pub struct PublicKey {
    pub key_type: KeyType,
    /// DER SubjectPublicKeyInfo (what libtrust's key ID hashes).
    pub spki: Vec<u8>,
    /// The key's JWK members, for the thumbprint: EC (x, y), RSA (n, e), Ed25519 (x, "").
    a: Vec<u8>,
    b: Vec<u8>,
    pub decoding: DecodingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({:?}, {})", self.key_type, self.libtrust_kid())
    }
}

const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

// A few lines of DER writing (definite lengths only), to build the
// SubjectPublicKeyInfo of a key that came as a JWK.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn der_uint(be: &[u8]) -> Vec<u8> {
    let trimmed = trim_zeros(be);
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    der(0x02, &content)
}

fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut content = vec![0u8];
    content.extend_from_slice(bytes);
    der(0x03, &content)
}

fn trim_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[start..]
}

fn spki_of(algorithm: Vec<u8>, key_bits: &[u8]) -> Vec<u8> {
    let mut body = der(0x30, &algorithm);
    body.extend(bit_string(key_bits));
    der(0x30, &body)
}

impl PublicKey {
    fn ec(key_type: KeyType, point: &[u8]) -> Result<PublicKey, String> {
        let coord = if key_type == KeyType::P256 { 32 } else { 48 };
        if point.len() != 1 + 2 * coord || point[0] != 4 {
            return Err("an EC key must be an uncompressed point of its curve".into());
        }
        let curve = if key_type == KeyType::P256 { OID_P256 } else { OID_P384 };
        let mut alg = der(0x06, OID_EC);
        alg.extend(der(0x06, curve));
        Ok(PublicKey {
            key_type,
            spki: spki_of(alg, point),
            a: point[1..1 + coord].to_vec(),
            b: point[1 + coord..].to_vec(),
            decoding: DecodingKey::from_ec_der(point),
        })
    }

    fn rsa(n: &[u8], e: &[u8]) -> Result<PublicKey, String> {
        let (n, e) = (trim_zeros(n), trim_zeros(e));
        if n.len() < 256 {
            return Err("RSA keys shorter than 2048 bits are not accepted".into());
        }
        let mut pkcs1 = der_uint(n);
        pkcs1.extend(der_uint(e));
        let pkcs1 = der(0x30, &pkcs1);
        let mut alg = der(0x06, OID_RSA);
        alg.extend([0x05, 0x00]);
        Ok(PublicKey {
            key_type: KeyType::Rsa,
            spki: spki_of(alg, &pkcs1),
            a: n.to_vec(),
            b: e.to_vec(),
            decoding: DecodingKey::from_rsa_raw_components(n, e),
        })
    }

    fn ed25519(x: &[u8]) -> Result<PublicKey, String> {
        if x.len() != 32 {
            return Err("an Ed25519 key is 32 bytes".into());
        }
        Ok(PublicKey {
            key_type: KeyType::Ed25519,
            spki: spki_of(der(0x06, OID_ED25519), x),
            a: x.to_vec(),
            b: Vec::new(),
            decoding: DecodingKey::from_ed_der(x),
        })
    }

    /// From a DER SubjectPublicKeyInfo (a `PUBLIC KEY` PEM block, or a certificate's key).
    pub fn from_spki(spki_der: &[u8]) -> Result<PublicKey, String> {
        use spki::der::Decode;
        let info = spki::SubjectPublicKeyInfoRef::from_der(spki_der).map_err(|e| format!("bad public key: {e}"))?;
        let bits = info
            .subject_public_key
            .as_bytes()
            .ok_or("bad public key: not whole bytes")?;
        let oid = info.algorithm.oid.as_bytes();
        let key = if oid == OID_EC {
            let curve = info
                .algorithm
                .parameters
                .and_then(|p| p.decode_as::<spki::ObjectIdentifier>().ok())
                .ok_or("EC key without a named curve")?;
            match curve.as_bytes() {
                c if c == OID_P256 => PublicKey::ec(KeyType::P256, bits)?,
                c if c == OID_P384 => PublicKey::ec(KeyType::P384, bits)?,
                _ => return Err(format!("EC curve {curve} is not supported (P-256 and P-384 are)")),
            }
        } else if oid == OID_RSA {
            let (n, e) = parse_pkcs1(bits).ok_or("bad RSA public key")?;
            PublicKey::rsa(&n, &e)?
        } else if oid == OID_ED25519 {
            PublicKey::ed25519(bits)?
        } else {
            return Err(format!("key algorithm {} is not supported", info.algorithm.oid));
        };
        // Keep the issuer's own encoding: it is what libtrust hashed.
        Ok(PublicKey {
            spki: spki_der.to_vec(),
            ..key
        })
    }

    /// From a JSON Web Key.
    pub fn from_jwk(jwk: &Jwk) -> Result<PublicKey, String> {
        let b64 = |s: &str| {
            B64URL
                .decode(s.trim_end_matches('='))
                .map_err(|e| format!("bad base64url in JWK: {e}"))
        };
        match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(ec) => {
                let (kt, len) = match ec.curve {
                    EllipticCurve::P256 => (KeyType::P256, 32),
                    EllipticCurve::P384 => (KeyType::P384, 48),
                    ref c => return Err(format!("JWK curve {c:?} is not supported")),
                };
                let pad = |v: Vec<u8>| -> Result<Vec<u8>, String> {
                    if v.len() > len {
                        return Err("JWK coordinate too long".into());
                    }
                    let mut out = vec![0u8; len - v.len()];
                    out.extend(v);
                    Ok(out)
                };
                let mut point = vec![4u8];
                point.extend(pad(b64(&ec.x)?)?);
                point.extend(pad(b64(&ec.y)?)?);
                PublicKey::ec(kt, &point)
            }
            AlgorithmParameters::RSA(rsa) => PublicKey::rsa(&b64(&rsa.n)?, &b64(&rsa.e)?),
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                PublicKey::ed25519(&b64(&okp.x)?)
            }
            _ => Err("JWK key type not supported (EC P-256/P-384, RSA and Ed25519 are)".into()),
        }
    }

    /// libtrust's key ID (distribution v2 era).
    pub fn libtrust_kid(&self) -> String {
        let sum = Sha256::digest(&self.spki);
        let b32 = data_encoding::BASE32_NOPAD.encode(&sum[..30]);
        b32.as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).expect("base32 is ascii"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The RFC 7638 JWK thumbprint (SHA-256, base64url).
    pub fn thumbprint(&self) -> String {
        self.thumbprint_with(|b| b)
    }

    fn thumbprint_with(&self, coord: impl Fn(&[u8]) -> &[u8]) -> String {
        let e = |b: &[u8]| B64URL.encode(b);
        let json = match self.key_type {
            KeyType::P256 | KeyType::P384 => {
                let crv = if self.key_type == KeyType::P256 {
                    "P-256"
                } else {
                    "P-384"
                };
                format!(
                    r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
                    e(coord(&self.a)),
                    e(coord(&self.b))
                )
            }
            KeyType::Rsa => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, e(&self.b), e(&self.a)),
            KeyType::Ed25519 => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, e(&self.a)),
        };
        B64URL.encode(Sha256::digest(json.as_bytes()))
    }

    /// Every key ID an issuer may use for this key: libtrust's, the
    /// thumbprint, and the thumbprint as distribution v3 computes it (EC
    /// coordinates without leading zero bytes, which differs for one key in 256).
    pub fn kids(&self) -> Vec<String> {
        let mut kids = vec![self.libtrust_kid(), self.thumbprint()];
        let trimmed = self.thumbprint_with(trim_zeros);
        if !kids.contains(&trimmed) {
            kids.push(trimmed);
        }
        kids
    }

    /// The public JWK of this key (for the JWKS berth serves).
    pub fn to_jwk_json(&self, kid: &str, alg: &str) -> serde_json::Value {
        let e = |b: &[u8]| B64URL.encode(b);
        match self.key_type {
            KeyType::P256 | KeyType::P384 => serde_json::json!({
                "kty": "EC",
                "crv": if self.key_type == KeyType::P256 { "P-256" } else { "P-384" },
                "x": e(&self.a), "y": e(&self.b), "kid": kid, "alg": alg, "use": "sig",
            }),
            KeyType::Rsa => serde_json::json!({
                "kty": "RSA", "n": e(&self.a), "e": e(&self.b), "kid": kid, "alg": alg, "use": "sig",
            }),
            KeyType::Ed25519 => serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "x": e(&self.a), "kid": kid, "alg": alg, "use": "sig",
            }),
        }
    }
}

/// (modulus, exponent) of a PKCS#1 RSAPublicKey.
fn parse_pkcs1(der_bytes: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    use spki::der::asn1::UintRef;
    use spki::der::{Decode, Reader, SliceReader};
    let mut r = SliceReader::new(der_bytes).ok()?;
    let (n, e) = r
        .sequence(|r| {
            let n = UintRef::decode(r)?;
            let e = UintRef::decode(r)?;
            Ok::<_, spki::der::Error>((n.as_bytes().to_vec(), e.as_bytes().to_vec()))
        })
        .ok()?;
    r.finish().ok()?;
    Some((n, e))
}

/// A key from PEM, with the certificate it came in (DER), if any.
pub struct PemKey {
    pub key: PublicKey,
    pub certificate: Option<Vec<u8>>,
}

/// The public keys in a PEM text: `PUBLIC KEY` blocks and the keys of
/// `CERTIFICATE` blocks (a root certificate bundle, as distribution takes).
pub fn keys_from_pem(text: &str) -> Result<Vec<PublicKey>, String> {
    Ok(pem_keys(text)?.into_iter().map(|k| k.key).collect())
}

/// Like [`keys_from_pem`], keeping the certificates.
pub fn pem_keys(text: &str) -> Result<Vec<PemKey>, String> {
    use x509_cert::der::{DecodePem, Encode};
    let mut keys = Vec::new();
    for (i, block) in pem_blocks(text).into_iter().enumerate() {
        let n = i + 1;
        let mut certificate = None;
        let key = match block.0.as_str() {
            "PUBLIC KEY" => {
                let der = spki::SubjectPublicKeyInfoOwned::from_pem(block.1.as_bytes())
                    .and_then(|k| k.to_der())
                    .map_err(|e| format!("PEM block {n}: {e}"))?;
                PublicKey::from_spki(&der)
            }
            "CERTIFICATE" => {
                let cert = x509_cert::Certificate::from_pem(block.1.as_bytes())
                    .map_err(|e| format!("PEM block {n} (certificate): {e}"))?;
                let der = cert
                    .tbs_certificate()
                    .subject_public_key_info()
                    .to_der()
                    .map_err(|e| format!("PEM block {n}: {e}"))?;
                certificate = Some(cert.to_der().map_err(|e| format!("PEM block {n}: {e}"))?);
                PublicKey::from_spki(&der)
            }
            other => {
                return Err(format!(
                    "PEM block {n} is a {other:?}; expected CERTIFICATE or PUBLIC KEY (never a private key)"
                ))
            }
        }
        .map_err(|e| format!("PEM block {n}: {e}"))?;
        keys.push(PemKey { key, certificate });
    }
    Ok(keys)
}

/// Splits PEM text into (label, whole block text) pairs.
fn pem_blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) {
            current = Some((label.to_owned(), format!("{line}\n")));
        } else if let Some(label) = line.strip_prefix("-----END ").and_then(|l| l.strip_suffix("-----")) {
            if let Some((l, mut body)) = current.take() {
                if l == label {
                    body.push_str(line);
                    body.push('\n');
                    out.push((l, body));
                }
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // Keys made with openssl; their key IDs computed independently with
    // Python (hashlib, base64) from `openssl pkey -outform DER` and the
    // RFC 7638 member strings.
    pub(crate) const P256_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEX6b/Q/mjS6KdEvex7F2nCSb7LBTR
rcnT9JiYVY45eqUMaV6GXN+K8OPuXPOV6gc5hpaxuDOY0aTZOtQmrP/K9A==
-----END PUBLIC KEY-----
";
    const RSA_CERT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIDETCCAfmgAwIBAgIUP5puDlSq4opjMxWZHiqp3StCdjUwDQYJKoZIhvcNAQEL
BQAwFzEVMBMGA1UEAwwMdG9rZW4taXNzdWVyMCAXDTI2MTEyOTIyMzIzOVoYDzIx
MjYxMTA1MjIzMjM5WjAXMRUwEwYDVQQDDAx0b2tlbi1pc3N1ZXIwggEiMA0GCSqG
SIb3DQEBAQUAA4IBDwAwggEKAoIBAQC6qdyRqLiWOb+VgbZbOCvESmLYVYBiV7K0
HGOJymJjFJ820SZOCcV/OTyhU5r+P8OXDP6EdiKPBC6Yb1igrfkqQCq/li8acYxf
HzYFRarOPez2/RMvaDTv3Ys2jP5zXZNq0G4itziqJWg5bIIUqPGi1qi5aaWKu3Uc
klIPauT/nZFoMkqSz0s09J1Xmhm8x5K2N3Ua/imOnKgj0HqO59XBU1wCjnDNCTOe
7X+4t3ACqZDzu/Z36GcXrZQ0c0Diz5bPjPENTSeV75miuE4qG6G7eKiSDfMKTo1C
i0bS+sCpHnD11b7rlk9z4ahzO2gjramcgTW4Qnw5433/eApk3AFPAgMBAAGjUzBR
MB0GA1UdDgQWBBShpdoBORvric7RjpsuWgHmL4lCfjAfBgNVHSMEGDAWgBShpdoB
ORvric7RjpsuWgHmL4lCfjAPBgNVHRMBAf8EBTADAQH/MA0GCSqGSIb3DQEBCwUA
A4IBAQBtYrpfYuGexnXXVDy0djr2xOSBrENu1Y6k2DzuUlJGVpc7ai+JVthbKlYw
6DBhfJA2QIE5NZtFyPb7yLnwvk88pPpSePcQbNmwavY3R1UbtKtfh3QCUdiYZMin
QpZ4RE2AXkIR+mwehq2FjuEt1Xh26rK9eLivOQskXvhEkFEVzazT9zb5Bg/ZZtBr
0GOONWScTiL8Ph4UPuTaQVgsu2cLqJgcFeWHIlJQSTaX++xgibljDyohMAO+Lhln
wcJwcG4r4hNCwOb7+kWRjWRCCWJvpXDG0yFAlhmvhxqPwRp7mM3sHL5DHXs0FvuN
4XYQoMDILgYx4gF8iOrLoE12EERW
-----END CERTIFICATE-----
";

    #[test]
    fn kid_forms_of_a_pem_key() {
        let keys = keys_from_pem(P256_PEM).unwrap();
        assert_eq!(keys.len(), 1);
        let k = &keys[0];
        assert_eq!(k.key_type, KeyType::P256);
        assert_eq!(
            k.libtrust_kid(),
            "RPO7:OVPZ:S5XA:AF55:XIIP:F4LQ:LRJ6:RCL2:O4JT:FIMQ:AQA2:4K6S"
        );
        assert_eq!(k.thumbprint(), "ikiAO7CSFLd-EMeNVJ7IvGHXTbbSHgwNuPPm0IH9jpQ");
        assert!(k.kids().contains(&k.libtrust_kid()));
    }

    #[test]
    fn kid_forms_of_a_certificate_key() {
        let keys = keys_from_pem(&format!("{P256_PEM}{RSA_CERT_PEM}")).unwrap();
        assert_eq!(keys.len(), 2);
        let k = &keys[1];
        assert_eq!(k.key_type, KeyType::Rsa);
        assert_eq!(
            k.libtrust_kid(),
            "PUQ6:FMGF:QG72:UZCW:LHZE:Q5AZ:5JLK:IHAB:GJUR:DRLD:WZBJ:QHOG"
        );
        assert_eq!(k.thumbprint(), "O_46w7-7F-WER_tPdp_Wi7x11vBFUt_tZ3d9FU9e138");
        // Rebuilt from its JWK, the key has the same DER and so the same kids.
        let jwk: Jwk = serde_json::from_value(k.to_jwk_json("x", "RS256")).unwrap();
        let again = PublicKey::from_jwk(&jwk).unwrap();
        assert_eq!(again.spki, k.spki);
        assert_eq!(again.kids(), k.kids());
    }

    #[test]
    fn jwk_and_pem_forms_agree() {
        let pem_key = &keys_from_pem(P256_PEM).unwrap()[0];
        let jwk: Jwk = serde_json::from_value(pem_key.to_jwk_json("x", "ES256")).unwrap();
        let jwk_key = PublicKey::from_jwk(&jwk).unwrap();
        // Rebuilding the SubjectPublicKeyInfo from the JWK gives the same DER, so the same kids.
        assert_eq!(jwk_key.spki, pem_key.spki);
        assert_eq!(jwk_key.kids(), pem_key.kids());
    }

    #[test]
    fn refuses_private_keys_and_junk() {
        let err = keys_from_pem("-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n").unwrap_err();
        assert!(err.contains("never a private key"), "{err}");
        assert!(keys_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
        assert!(keys_from_pem("no pem at all").unwrap().is_empty());
    }
}
