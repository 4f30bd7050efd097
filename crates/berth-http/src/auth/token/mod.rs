//! Bearer tokens of the Docker token authentication spec: JWTs whose
//! `access` claim lists what the bearer may do. berth issues them itself
//! ([`service`], signed with [`SigningKey`]) or accepts those of an external
//! issuer whose keys it is given ([`TrustStore`]); both are verified the same way.

pub mod keys;
pub mod service;
pub mod signing;
pub mod trust;

use berth_policy::{Action, Actions};
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use signing::SigningKey;
pub use trust::TrustStore;

/// Clock skew allowed on `exp` and `nbf` (what distribution allows).
pub const LEEWAY_SECS: u64 = 60;

/// One entry of the `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceActions {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    pub aud: Audience,
    pub exp: u64,
    #[serde(default)]
    pub nbf: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default)]
    pub jti: String,
    #[serde(default)]
    pub access: Vec<ResourceActions>,
    /// Set on berth's refresh tokens only, which are never access tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub berth_refresh: Option<String>,
}

/// `aud` is a string or a list of strings (RFC 7519).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// A verified token, as requests use it.
#[derive(Debug)]
pub struct Verified {
    /// The user the token was issued to; empty for anonymous tokens.
    pub subject: String,
    expires: u64,
    /// repository name -> actions.
    repositories: HashMap<String, Actions>,
    /// Whether berth issued it (its actions came from berth's policy).
    pub built_in: bool,
}

impl Verified {
    /// What the token allows in `repository`.
    pub fn actions(&self, repository: &str) -> Actions {
        self.repositories.get(repository).copied().unwrap_or(Actions::NONE)
    }

    fn expired(&self, now: u64) -> bool {
        now > self.expires.saturating_add(LEEWAY_SECS)
    }
}

/// Reads the actions of one `access` entry. External issuers know nothing
/// of `overwrite`: for them `push` includes it (distribution's meaning), and
/// `*` is everything.
fn actions_of(names: &[String], built_in: bool) -> Actions {
    let mut set = Actions::NONE;
    for n in names {
        match n.as_str() {
            "*" => set = Actions::ALL,
            "push" if !built_in => set = set.with(Action::Push).with(Action::Overwrite),
            other => {
                if let Some(a) = Action::parse(other) {
                    set = set.with(a);
                }
            }
        }
    }
    set
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    /// No trusted key has the token's key ID (or x5c chain, or JWK).
    UntrustedKey,
    /// Signature, issuer, audience, or time did not check out.
    Invalid(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Malformed => f.write_str("malformed token"),
            TokenError::UntrustedKey => f.write_str("token signed by an untrusted key"),
            TokenError::Invalid(why) => write!(f, "invalid token: {why}"),
        }
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Verified tokens at most; when full the cache is cleared (tokens live minutes).
const CACHE_MAX: usize = 4096;
/// Longer bearer tokens are refused unread.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Verifies tokens, remembering the verified ones by their text so that a
/// client using one token for many requests pays for one signature check.
pub struct Verifier {
    issuer: String,
    service: String,
    trust: TrustStore,
    built_in_kid: Option<String>,
    /// By signature (short to hash; unique to the token), with the whole
    /// token, compared on a hit.
    cache: RwLock<HashMap<Box<str>, Cached>>,
}

/// A verified token's whole text and what it allows.
type Cached = (Box<str>, Arc<Verified>);

impl Verifier {
    /// `built_in_kid`: the key ID of berth's own signing key, whose tokens
    /// carry actions from berth's policy.
    pub fn new(issuer: String, service: String, trust: TrustStore, built_in_kid: Option<String>) -> Verifier {
        Verifier {
            issuer,
            service,
            trust,
            built_in_kid,
            cache: RwLock::new(HashMap::new()),
        }
    }

    pub fn verify(&self, token: &str) -> Result<Arc<Verified>, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let signature = token.rsplit('.').next().unwrap_or("");
        // A read lock: requests on other threads look up at the same time.
        if let Some((whole, v)) = self.cache.read().unwrap().get(signature) {
            if whole.as_ref() == token && !v.expired(now_secs()) {
                return Ok(v.clone());
            }
        }
        let verified = Arc::new(self.verify_uncached(token)?);
        let mut cache = self.cache.write().unwrap();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(signature.into(), (token.into(), verified.clone()));
        Ok(verified)
    }

    fn verify_uncached(&self, token: &str) -> Result<Verified, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let (key, kid) = self.trust.key_for(&header)?;
        if !key.key_type.algorithms().contains(&header.alg) {
            return Err(TokenError::Invalid(format!(
                "algorithm {:?} does not fit the signing key",
                header.alg
            )));
        }
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.service]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data =
            jsonwebtoken::decode::<Claims>(token, &key.decoding, &v).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let claims = data.claims;
        if claims.berth_refresh.is_some() {
            return Err(TokenError::Invalid("a refresh token is not an access token".into()));
        }
        let built_in = self.built_in_kid.is_some() && self.built_in_kid.as_deref() == kid.as_deref();
        let mut repositories: HashMap<String, Actions> = HashMap::new();
        for ra in &claims.access {
            if ra.kind == "repository" {
                let set = actions_of(&ra.actions, built_in);
                let e = repositories.entry(ra.name.clone()).or_default();
                *e = e.union(set);
            }
        }
        Ok(Verified {
            subject: claims.sub,
            expires: claims.exp,
            repositories,
            built_in,
        })
    }
}

/// Signs access and refresh tokens with berth's own key.
pub struct Issuer {
    pub key: SigningKey,
    pub issuer: String,
    pub service: String,
    pub expiry: Duration,
    pub refresh_expiry: Duration,
}

/// A signed token and when it was made.
pub struct Issued {
    pub token: String,
    pub issued_at: u64,
    pub expires_in: u64,
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the operating system's random numbers");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Issuer {
    fn header(&self) -> Header {
        let mut h = Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(self.key.kid.clone());
        h.typ = Some("JWT".into());
        h
    }

    fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&self.header(), claims, &self.key.encoding).expect("ES256 signing with a valid key")
    }

    pub fn access_token(&self, subject: &str, access: Vec<ResourceActions>) -> Issued {
        let now = now_secs();
        let exp = self.expiry.as_secs();
        let token = self.sign(&Claims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            aud: Audience::One(self.service.clone()),
            exp: now + exp,
            nbf: now,
            iat: now,
            jti: random_id(),
            access,
            berth_refresh: None,
        });
        Issued {
            token,
            issued_at: now,
            expires_in: exp,
        }
    }

    /// A refresh token for `subject`. `binding` ties it to the user's current
    /// password entry: when the password changes, the token stops working.
    pub fn refresh_token(&self, subject: &str, binding: &str) -> String {
        let now = now_secs();
        self.sign(&Claims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            aud: Audience::One(self.refresh_audience()),
            exp: now + self.refresh_expiry.as_secs(),
            nbf: now,
            iat: now,
            jti: random_id(),
            access: Vec::new(),
            berth_refresh: Some(binding.to_owned()),
        })
    }

    fn refresh_audience(&self) -> String {
        format!("{}#refresh", self.service)
    }

    /// Checks a refresh token: (subject, binding).
    pub fn check_refresh(&self, token: &str) -> Result<(String, String), TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.kid.as_deref() != Some(self.key.kid.as_str()) || header.alg != jsonwebtoken::Algorithm::ES256 {
            return Err(TokenError::UntrustedKey);
        }
        let mut v = Validation::new(jsonwebtoken::Algorithm::ES256);
        v.leeway = LEEWAY_SECS;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[self.refresh_audience()]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.key.public.decoding, &v)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let binding = data
            .claims
            .berth_refresh
            .ok_or_else(|| TokenError::Invalid("not a refresh token".into()))?;
        Ok((data.claims.sub, binding))
    }

    /// The JWKS document of the signing key.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.key.public.to_jwk_json(&self.key.kid, "ES256")] })
    }
}

#[cfg(test)]
mod tests;
