use super::keys::PublicKey;
use super::*;
use jsonwebtoken::{Algorithm, EncodingKey};

fn new_key() -> SigningKey {
    let dir = tempfile::tempdir().unwrap();
    SigningKey::load_or_create(&dir.path().join("k.pem")).unwrap()
}

fn issuer(key: SigningKey) -> Issuer {
    Issuer {
        key,
        issuer: "berth".into(),
        service: "registry.test".into(),
        expiry: Duration::from_secs(300),
        refresh_expiry: Duration::from_secs(3600),
    }
}

fn verifier_for(issuer: &Issuer, built_in: bool) -> Verifier {
    let mut trust = TrustStore::default();
    trust.add(issuer.key.public.clone(), Some(&issuer.key.kid));
    Verifier::new(
        "berth".into(),
        "registry.test".into(),
        trust,
        built_in.then(|| issuer.key.kid.clone()),
    )
}

fn access(name: &str, actions: &[&str]) -> ResourceActions {
    ResourceActions {
        kind: "repository".into(),
        name: name.into(),
        actions: actions.iter().map(|s| s.to_string()).collect(),
    }
}

fn claims(exp_from_now: i64) -> Claims {
    let now = now_secs() as i64;
    Claims {
        iss: "berth".into(),
        sub: "alice".into(),
        aud: Audience::One("registry.test".into()),
        exp: (now + exp_from_now) as u64,
        nbf: (now - 10) as u64,
        iat: now as u64,
        jti: "x".into(),
        access: vec![access("a/b", &["pull", "push"])],
        berth_refresh: None,
    }
}

fn sign(header: &Header, claims: &Claims, key: &SigningKey) -> String {
    jsonwebtoken::encode(header, claims, &key.encoding).unwrap()
}

fn es256(kid: Option<&str>) -> Header {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = kid.map(str::to_owned);
    h
}

#[test]
fn issued_tokens_verify_with_their_claims() {
    let iss = issuer(new_key());
    let v = verifier_for(&iss, true);
    let t = iss.access_token("alice", vec![access("a/b", &["pull", "push"]), access("c", &["pull"])]);
    assert_eq!(t.expires_in, 300);
    let verified = v.verify(&t.token).unwrap();
    assert_eq!(verified.subject, "alice");
    assert!(verified.built_in);
    assert_eq!(verified.actions("a/b").to_string(), "pull,push");
    assert_eq!(verified.actions("c").to_string(), "pull");
    assert!(verified.actions("d").is_empty());
    // The header names the key by its thumbprint, and the claims are all there.
    let header = jsonwebtoken::decode_header(&t.token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some(iss.key.kid.as_str()));
    let raw: serde_json::Value = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&t.token)
        .unwrap()
        .claims;
    for claim in ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"] {
        assert!(raw.get(claim).is_some(), "missing {claim}: {raw}");
    }
    assert_eq!(
        raw["access"][0],
        serde_json::json!({"type": "repository", "name": "a/b", "actions": ["pull", "push"]})
    );
    // A second check comes from the cache (same verified token).
    assert!(Arc::ptr_eq(&verified, &v.verify(&t.token).unwrap()));
}

#[test]
fn refuses_expired_foreign_and_mislabelled_tokens() {
    let key = new_key();
    let kid = key.kid.clone();
    let iss = issuer(key);
    let v = verifier_for(&iss, true);
    // Expired beyond the leeway; within it is fine.
    let t = sign(&es256(Some(&kid)), &claims(-(LEEWAY_SECS as i64) - 5), &iss.key);
    assert!(matches!(v.verify(&t), Err(TokenError::Invalid(_))));
    let t = sign(&es256(Some(&kid)), &claims(-5), &iss.key);
    assert!(v.verify(&t).is_ok());
    // Another audience or issuer.
    let mut c = claims(60);
    c.aud = Audience::Many(vec!["other".into()]);
    assert!(v.verify(&sign(&es256(Some(&kid)), &c, &iss.key)).is_err());
    let mut c = claims(60);
    c.aud = Audience::Many(vec!["other".into(), "registry.test".into()]);
    assert!(v.verify(&sign(&es256(Some(&kid)), &c, &iss.key)).is_ok());
    let mut c = claims(60);
    c.iss = "mallory".into();
    assert!(v.verify(&sign(&es256(Some(&kid)), &c, &iss.key)).is_err());
    // Not valid yet.
    let mut c = claims(600);
    c.nbf = now_secs() + 300;
    assert!(v.verify(&sign(&es256(Some(&kid)), &c, &iss.key)).is_err());
    // Signed by another key that claims this key's ID.
    let other = new_key();
    assert!(matches!(
        v.verify(&sign(&es256(Some(&kid)), &claims(60), &other)),
        Err(TokenError::Invalid(_))
    ));
    // An unknown key ID, or none.
    assert_eq!(
        v.verify(&sign(&es256(Some("nope")), &claims(60), &iss.key))
            .unwrap_err(),
        TokenError::UntrustedKey
    );
    assert_eq!(
        v.verify(&sign(&es256(None), &claims(60), &iss.key)).unwrap_err(),
        TokenError::UntrustedKey
    );
    // HS256 "signed" with the public key as the secret (algorithm confusion).
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(kid.clone());
    let forged = jsonwebtoken::encode(
        &h,
        &claims(60),
        &EncodingKey::from_secret(&iss.key.public.spki).unwrap(),
    )
    .unwrap();
    assert!(v.verify(&forged).is_err());
    assert_eq!(v.verify("not.a.token").unwrap_err(), TokenError::Malformed);
    assert_eq!(v.verify("").unwrap_err(), TokenError::Malformed);
}

#[test]
fn refresh_tokens_are_not_access_tokens() {
    let iss = issuer(new_key());
    let v = verifier_for(&iss, true);
    let r = iss.refresh_token("alice", "bind");
    assert_eq!(iss.check_refresh(&r).unwrap(), ("alice".to_owned(), "bind".to_owned()));
    assert!(v.verify(&r).is_err());
    // And access tokens are not refresh tokens.
    let t = iss.access_token("alice", vec![]);
    assert!(iss.check_refresh(&t.token).is_err());
}

/// A `PUBLIC KEY` PEM block, as `openssl pkey -pubout` writes it.
fn pem_public_key(spki_der: &[u8]) -> String {
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

/// An external issuer's token, named by each kid form distribution's versions use.
#[test]
fn external_tokens_by_every_kid_form() {
    let ext = new_key();
    let public = ext.public.clone();
    let pem = pem_public_key(&public.spki);
    let mut trust = TrustStore::default();
    assert_eq!(trust.add_text(&pem).unwrap(), 1);
    let jwks = serde_json::json!({"keys": [public.to_jwk_json("keycloak-kid-1", "ES256")]}).to_string();
    assert_eq!(trust.add_text(&jwks).unwrap(), 1);
    let v = Verifier::new("berth".into(), "registry.test".into(), trust, None);
    for kid in [public.libtrust_kid(), public.thumbprint(), "keycloak-kid-1".to_owned()] {
        let t = sign(&es256(Some(&kid)), &claims(60), &ext);
        let verified = v.verify(&t).unwrap_or_else(|e| panic!("kid {kid}: {e}"));
        assert!(!verified.built_in);
        // An external issuer's push includes moving tags.
        assert_eq!(verified.actions("a/b").to_string(), "pull,push,overwrite");
    }
    // The key embedded as a JWK header, no kid.
    let mut h = es256(None);
    h.jwk = Some(serde_json::from_value(public.to_jwk_json("x", "ES256")).unwrap());
    assert!(v.verify(&sign(&h, &claims(60), &ext)).is_ok());
    // An embedded JWK that is not trusted.
    let stranger = new_key();
    let mut h = es256(None);
    h.jwk = Some(serde_json::from_value(stranger.public.to_jwk_json("x", "ES256")).unwrap());
    assert_eq!(
        v.verify(&sign(&h, &claims(60), &stranger)).unwrap_err(),
        TokenError::UntrustedKey
    );
}

#[test]
fn trust_files_are_checked() {
    let mut t = TrustStore::default();
    assert!(t.add_text("{}").is_err());
    assert!(t.add_text("{\"keys\": []}").is_err());
    assert!(t.add_text("nothing").is_err());
    let key: PublicKey = new_key().public;
    let jwks = serde_json::json!({"keys": [key.to_jwk_json("a", "ES256")]}).to_string();
    assert_eq!(t.add_text(&jwks).unwrap(), 1);
    assert_eq!(t.len(), 1);
}

// A CA and a token-signing certificate it issued (openssl, P-256, valid for
// a century), and the signing certificate's key.
const X5C_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBlzCCAT2gAwIBAgIULdNwc2KxNhj74TDsgoEI//bnyn8wCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNdGVzdCB0b2tlbiBDQTAgFw0yNjExMjkyMzIyMzBaGA8yMTI2
MTEwNTIzMjIzMFowGDEWMBQGA1UEAwwNdGVzdCB0b2tlbiBDQTBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABHtQEOmrNCHYkYMZhmAqHJYaKIw+qpI5g/XlI4hzUyG2
pAs4xT0VBKyQgKG1uSgsyEglBAc4F54s0FkbNhr3o5mjYzBhMB0GA1UdDgQWBBSE
aLIjgHDEg956bMPf+Nyp9MvR6DAfBgNVHSMEGDAWgBSEaLIjgHDEg956bMPf+Nyp
9MvR6DAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwICBDAKBggqhkjOPQQD
AgNIADBFAiBlRJ9C0wT00KHSH3sWWBxRya8ic0XaPbgGr2VTw5iKAgIhALCJxBc9
8z/+MC7eFyaM+KKbh68HR6dt+RVdHLV4+KAx
-----END CERTIFICATE-----
";
const X5C_LEAF: &str = "-----BEGIN CERTIFICATE-----
MIIBkzCCATmgAwIBAgIUAjuFQj+e4Q6h30jOWb03ORhf2y0wCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNdGVzdCB0b2tlbiBDQTAgFw0yNjExMjkyMzIyMzFaGA8yMTI2
MTEwNTIzMjIzMVowFzEVMBMGA1UEAwwMdG9rZW4gc2lnbmVyMFkwEwYHKoZIzj0C
AQYIKoZIzj0DAQcDQgAEXtJV4vHLarmO2FZToRMriIBKEGWIgyI+vN4map519MTN
+X4AEq/k+ABmDHs6lkV5+o0Lbn90lzkwJ2dq1O0moKNgMF4wDAYDVR0TAQH/BAIw
ADAOBgNVHQ8BAf8EBAMCB4AwHQYDVR0OBBYEFJZnXw+UPIdLehWppSW6126WsVZa
MB8GA1UdIwQYMBaAFIRosiOAcMSD3npsw9/43Kn0y9HoMAoGCCqGSM49BAMCA0gA
MEUCIQC99pUcyn7odCXN23viAgM/vuzXOhH/iQ0b7ffxfRkVWwIgJREl6SwbUEIQ
FFF+T7ZNClhk1fuKTWvpICxWNFYZ9v4=
-----END CERTIFICATE-----
";
const X5C_LEAF_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgIKjvsiSs7EYptgqo
GGT0Nlvfaq6/1vnmCBJkKTWSiJOhRANCAARe0lXi8ctquY7YVlOhEyuIgEoQZYiD
Ij683iZqnnX0xM35fgASr+T4AGYMezqWRXn6jQtuf3SXOTAnZ2rU7Sag
-----END PRIVATE KEY-----
";

fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

#[test]
fn x5c_chains_lead_to_a_trusted_root() {
    let mut trust = TrustStore::default();
    trust.add_text(X5C_CA).unwrap();
    let v = Verifier::new("berth".into(), "registry.test".into(), trust, None);
    let leaf_key = EncodingKey::from_ec_pem(X5C_LEAF_KEY.as_bytes()).unwrap();
    let mut h = Header::new(Algorithm::ES256);
    h.x5c = Some(vec![pem_body(X5C_LEAF)]);
    let token = jsonwebtoken::encode(&h, &claims(60), &leaf_key).unwrap();
    let verified = v.verify(&token).expect("a chain to the trusted CA");
    assert_eq!(verified.actions("a/b").to_string(), "pull,push,overwrite");
    // Signed by another key than the certificate's.
    let other = new_key();
    assert!(v
        .verify(&jsonwebtoken::encode(&h, &claims(60), &other.encoding).unwrap())
        .is_err());
    // A chain to a root that is not trusted.
    let mut trust = TrustStore::default();
    trust.add_text(keys::tests::P256_PEM).unwrap();
    let v = Verifier::new("berth".into(), "registry.test".into(), trust, None);
    assert!(v.verify(&token).is_err());
    // The signing certificate itself in the bundle: trusted directly.
    let mut trust = TrustStore::default();
    trust.add_text(X5C_LEAF).unwrap();
    let v = Verifier::new("berth".into(), "registry.test".into(), trust, None);
    assert!(v.verify(&token).is_ok());
}
