//! The keys whose tokens berth accepts, by every name an issuer may use.

use super::keys::{pem_keys, PublicKey};
use super::TokenError;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::Header;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Default, Clone)]
pub struct TrustStore {
    by_kid: HashMap<String, Arc<PublicKey>>,
    keys: Vec<Arc<PublicKey>>,
    /// Certificates of PEM bundles (DER): the roots `x5c` chains must lead to.
    roots: Vec<Vec<u8>>,
}

/// "anyExtendedKeyUsage": a signing certificate may have no extended key
/// usage, or this one (distribution accepts any usage; webpki can only
/// require one when present).
const ANY_EKU: &[u8] = &[0x55, 0x1d, 0x25, 0x00];

impl TrustStore {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Trusts `key` under its computed key IDs and `extra_kid` (a JWKS `kid`).
    pub fn add(&mut self, key: PublicKey, extra_kid: Option<&str>) {
        let key = Arc::new(key);
        for kid in key.kids().into_iter().chain(extra_kid.map(str::to_owned)) {
            self.by_kid.insert(kid, key.clone());
        }
        self.keys.push(key);
    }

    /// Adds the keys of a file: a JWKS (`{"keys": [...]}`), a single JWK, or
    /// PEM (certificates, as in distribution's `rootcertbundle`, or public keys).
    pub fn add_file(&mut self, path: &Path) -> Result<usize, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.add_text(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn add_text(&mut self, text: &str) -> Result<usize, String> {
        let before = self.keys.len();
        if text.trim_start().starts_with('{') {
            let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
            let jwks: Vec<Jwk> = if value.get("keys").is_some() {
                serde_json::from_value::<JwkSet>(value)
                    .map_err(|e| format!("not a JWKS: {e}"))?
                    .keys
            } else {
                vec![serde_json::from_value(value).map_err(|e| format!("not a JWK: {e}"))?]
            };
            for (i, jwk) in jwks.iter().enumerate() {
                let key = PublicKey::from_jwk(jwk).map_err(|e| format!("key {}: {e}", i + 1))?;
                self.add(key, jwk.common.key_id.as_deref());
            }
        } else {
            for k in pem_keys(text)? {
                if let Some(der) = k.certificate {
                    self.roots.push(der);
                }
                self.add(k.key, None);
            }
        }
        if self.keys.len() == before {
            return Err("no public key in it".into());
        }
        Ok(self.keys.len() - before)
    }

    fn trusted_equal(&self, key: &PublicKey) -> Option<Arc<PublicKey>> {
        self.keys.iter().find(|k| k.spki == key.spki).cloned()
    }

    /// The trusted key that signed a token with this header, chosen as
    /// distribution does: an `x5c` chain first, then an embedded `jwk`, then
    /// the `kid`. Returns the key and the `kid` it was found under.
    pub fn key_for(&self, header: &Header) -> Result<(Arc<PublicKey>, Option<String>), TokenError> {
        if let Some(chain) = header.x5c_der().map_err(|_| TokenError::Malformed)? {
            let leaf = chain.first().ok_or(TokenError::Malformed)?;
            let key = leaf_key(leaf).ok_or(TokenError::Malformed)?;
            // The signing certificate itself is in the bundle...
            if let Some(k) = self.trusted_equal(&key) {
                return Ok((k, None));
            }
            // ...or its chain leads to one that is.
            self.verify_chain(leaf, &chain[1..])?;
            return Ok((Arc::new(key), None));
        }
        if let Some(jwk) = &header.jwk {
            let key = PublicKey::from_jwk(jwk).map_err(|_| TokenError::Malformed)?;
            return self
                .trusted_equal(&key)
                .map(|k| (k, None))
                .ok_or(TokenError::UntrustedKey);
        }
        let kid = header.kid.as_deref().ok_or(TokenError::UntrustedKey)?;
        self.by_kid
            .get(kid)
            .cloned()
            .map(|k| (k, Some(kid.to_owned())))
            .ok_or(TokenError::UntrustedKey)
    }
}

impl TrustStore {
    fn verify_chain(&self, leaf: &[u8], intermediates: &[Vec<u8>]) -> Result<(), TokenError> {
        use rustls_pki_types::{CertificateDer, UnixTime};
        let roots: Vec<CertificateDer<'_>> = self.roots.iter().map(|r| CertificateDer::from(r.as_slice())).collect();
        let anchors: Vec<_> = roots
            .iter()
            .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
            .collect();
        if anchors.is_empty() {
            return Err(TokenError::UntrustedKey);
        }
        let leaf = CertificateDer::from(leaf);
        let end_entity = webpki::EndEntityCert::try_from(&leaf).map_err(|_| TokenError::Malformed)?;
        let intermediates: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                &intermediates,
                UnixTime::now(),
                webpki::KeyUsage::required_if_present(ANY_EKU),
                None,
                None,
            )
            .map(|_| ())
            .map_err(|e| TokenError::Invalid(format!("x5c chain: {e}")))
    }
}

fn leaf_key(cert_der: &[u8]) -> Option<PublicKey> {
    use x509_cert::der::{Decode, Encode};
    let cert = x509_cert::Certificate::from_der(cert_der).ok()?;
    let spki = cert.tbs_certificate().subject_public_key_info().to_der().ok()?;
    PublicKey::from_spki(&spki).ok()
}
