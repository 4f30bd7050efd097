use super::*;
use berth_policy::PolicyConfig;

fn auth_with(policy_toml: &str, tokens: bool) -> Arc<Auth> {
    auth_with_certificates(policy_toml, tokens, false)
}

fn auth_with_certificates(policy_toml: &str, tokens: bool, client_certificates: bool) -> Arc<Auth> {
    let config: PolicyConfig = toml::from_str(policy_toml).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens.then(|| TokenSettings {
        service: "svc".into(),
        issuer: "berth".into(),
        mode: TokenMode::BuiltIn {
            key: token::SigningKey::load_or_create(&dir.path().join("k.pem")).unwrap(),
            realm: None,
            https: false,
            expiry: Duration::from_secs(300),
        },
    });
    Arc::new(
        Auth::new(AuthSettings {
            policy: Policy::new(&config).unwrap(),
            htpasswd: None,
            basic_realm: "berth".into(),
            tokens,
            client_certificates,
        })
        .unwrap(),
    )
}

#[test]
fn what_each_request_needs() {
    let name = |n: Need| match n {
        Need::Repository(name, a) => format!("{name}:{a}"),
        Need::Base => "base".into(),
        Need::Catalog => "catalog".into(),
        Need::Admin => "admin".into(),
        Need::Nothing => "nothing".into(),
    };
    use crate::route;
    fn r(p: &str) -> route::Route<'_> {
        route::parse(p).unwrap()
    }
    let cases = [
        ("/v2/", Method::GET, "base"),
        ("/v2/_catalog", Method::GET, "catalog"),
        ("/v2/a/b/tags/list", Method::GET, "a/b:pull"),
        ("/v2/a/manifests/v1", Method::HEAD, "a:pull"),
        ("/v2/a/manifests/v1", Method::PUT, "a:push"),
        ("/v2/a/manifests/v1", Method::DELETE, "a:delete"),
        ("/v2/a/blobs/sha256:00", Method::GET, "a:pull"),
        ("/v2/a/blobs/sha256:00", Method::DELETE, "a:delete"),
        ("/v2/a/blobs/uploads/", Method::POST, "a:push"),
        ("/v2/a/blobs/uploads/x", Method::PATCH, "a:push"),
        ("/v2/a/blobs/uploads/x", Method::PUT, "a:push"),
        ("/v2/a/blobs/uploads/x", Method::GET, "a:push"),
        ("/v2/a/referrers/sha256:00", Method::GET, "a:pull"),
        ("/v2/a/manifests/v1", Method::POST, "nothing"),
    ];
    for (path, method, want) in cases {
        assert_eq!(name(need(&r(path), &method)), want, "{method} {path}");
    }
    assert_eq!(name(need_berth_api("/berth/v1/gc")), "admin");
    assert_eq!(name(need_berth_api("/berth/v1/other")), "nothing");
}

/// The parts of a request to `path` from a client that presented a
/// certificate for `cn` (when given), with `authorization` (when given).
fn request_parts(path: &str, cn: Option<&str>, authorization: Option<&str>) -> Parts {
    let mut b = http::Request::builder().uri(path);
    if let Some(a) = authorization {
        b = b.header(header::AUTHORIZATION, a);
    }
    let (mut parts, ()) = b.body(()).unwrap().into_parts();
    if let Some(cn) = cn {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
        parts
            .extensions
            .insert(crate::ClientCertificate::from_der(cert.der()).unwrap());
    }
    parts
}

#[tokio::test]
async fn client_certificates_name_users_when_enabled() {
    let policy = r#"
        default = []
        admins = ["root"]
        [[access]]
        repository = "team/**"
        users = { carol = ["pull", "push"] }
        "#;
    let push = Need::Repository("team/app", Action::Push);
    let auth = auth_with_certificates(policy, false, true);
    let permit = auth
        .authorize(
            &request_parts("/v2/team/app/blobs/uploads/", Some("carol"), None),
            push,
            None,
        )
        .await
        .unwrap();
    assert_eq!(permit.user(), Some("carol"));
    // Someone else's certificate does not get carol's rights.
    let e = auth
        .authorize(
            &request_parts("/v2/team/app/blobs/uploads/", Some("mallory"), None),
            push,
            None,
        )
        .await
        .err()
        .unwrap();
    assert_eq!(e.status, StatusCode::FORBIDDEN);
    // Without a certificate the caller is anonymous.
    let e = auth
        .authorize(&request_parts("/v2/team/app/blobs/uploads/", None, None), push, None)
        .await
        .err()
        .unwrap();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    // Certificates identify only when berth is told they do.
    let off = auth_with_certificates(policy, false, false);
    let e = off
        .authorize(
            &request_parts("/v2/team/app/blobs/uploads/", Some("carol"), None),
            push,
            None,
        )
        .await
        .err()
        .unwrap();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_admin_api_is_for_administrators() {
    let policy = r#"
        default = ["pull"]
        admins = ["root"]
        "#;
    let auth = auth_with_certificates(policy, false, true);
    let record = SharedRecord::default();
    let permit = auth
        .authorize(
            &request_parts("/berth/v1/gc", Some("root"), None),
            Need::Admin,
            Some(&record),
        )
        .await
        .unwrap();
    assert!(permit.is_admin());
    assert_eq!(record.lock().unwrap().access, "allowed (administrator)");
    let record = SharedRecord::default();
    let e = auth
        .authorize(
            &request_parts("/berth/v1/gc", Some("bob"), None),
            Need::Admin,
            Some(&record),
        )
        .await
        .err()
        .unwrap();
    assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, ErrorCode::Denied));
    assert_eq!(record.lock().unwrap().access, "denied (administrators only)");
    let e = auth
        .authorize(&request_parts("/berth/v1/gc", None, None), Need::Admin, None)
        .await
        .err()
        .unwrap();
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    assert!(Permit::unrestricted().is_admin());
}

#[test]
fn tokens_grant_the_intersection_of_asked_and_allowed() {
    let auth = auth_with(
        r#"
        default = ["pull"]
        [[access]]
        repository = "public/**"
        anonymous = ["pull"]
        [[access]]
        repository = "team/**"
        users = { alice = ["push", "overwrite"] }
        "#,
        true,
    );
    let scopes = scope::Scope::parse_all([
        "repository:team/app:pull,push repository:public/x:pull,push,delete",
        "repository:private/y:pull",
        "registry:catalog:*",
        "repository:BAD NAME:pull",
    ]);
    let show = |g: Vec<token::ResourceActions>| -> Vec<String> {
        g.into_iter()
            .map(|r| format!("{}:{}:{}", r.kind, r.name, r.actions.join(",")))
            .collect()
    };
    assert_eq!(
        show(auth.grant(Principal::User("alice"), &scopes)),
        [
            "repository:private/y:pull",
            "repository:public/x:pull",
            "repository:team/app:pull,push,overwrite",
            "registry:catalog:*"
        ]
    );
    assert_eq!(
        show(auth.grant(Principal::User("bob"), &scopes)),
        [
            "repository:private/y:pull",
            "repository:public/x:pull",
            "repository:team/app:pull",
            "registry:catalog:*"
        ]
    );
    assert_eq!(
        show(auth.grant(Principal::Anonymous, &scopes)),
        ["repository:public/x:pull", "registry:catalog:*"]
    );
}

#[test]
fn refusals_ask_for_credentials_or_deny() {
    let auth = auth_with("default = [\"pull\"]", false);
    let realm = &Realm {
        host: None,
        https: false,
    };
    let e = auth.refusal(&Caller::Anonymous, realm, Action::Pull, "a");
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    assert!(e
        .headers
        .iter()
        .any(|(k, v)| k == header::WWW_AUTHENTICATE && v == "Basic realm=\"berth\""));
    let e = auth.refusal(&Caller::User("bob".into()), realm, Action::Push, "a");
    assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, ErrorCode::Denied));

    let auth = auth_with("default = [\"pull\", \"push\"]", true);
    let realm = &Realm {
        host: Some(HeaderValue::from_static("h")),
        https: false,
    };
    let e = auth.refusal(&Caller::Anonymous, realm, Action::Push, "a/b");
    let challenge = |e: &ApiError| {
        e.headers
            .iter()
            .find(|(k, _)| k == header::WWW_AUTHENTICATE)
            .map(|(_, v)| v.to_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(
        challenge(&e),
        "Bearer realm=\"http://h/token\",service=\"svc\",scope=\"repository:a/b:pull,push\""
    );
    // A built-in token that lacks an action the policy would grant: ask for a better token.
    let issuer = auth.tokens.as_ref().unwrap().issuer.as_ref().unwrap();
    let t = issuer.access_token("bob", vec![]);
    let v = auth.tokens.as_ref().unwrap().verifier.verify(&t.token).unwrap();
    let e = auth.refusal(&Caller::Token(v.clone()), realm, Action::Push, "a/b");
    assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    assert!(
        challenge(&e).ends_with(",error=\"insufficient_scope\""),
        "{}",
        challenge(&e)
    );
    // One the policy would never grant: denied.
    let e = auth.refusal(&Caller::Token(v), realm, Action::Delete, "a/b");
    assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, ErrorCode::Denied));
}

/// Network bytes reach these parsers: mutated and random inputs must be
/// refused, never panic. (Not a substitute for the fuzz targets; a quick
/// guard that runs with the unit tests.)
#[test]
fn parsers_survive_mangled_input() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let dir = tempfile::tempdir().unwrap();
    let key = token::SigningKey::load_or_create(&dir.path().join("k.pem")).unwrap();
    let kid = key.kid.clone();
    let issuer = Issuer {
        key,
        issuer: "berth".into(),
        service: "svc".into(),
        expiry: Duration::from_secs(60),
        refresh_expiry: Duration::from_secs(60),
    };
    let mut trust = TrustStore::default();
    trust.add(issuer.key.public.clone(), Some(&kid));
    let verifier = Verifier::new("berth".into(), "svc".into(), trust, Some(kid));
    let valid = issuer
        .access_token(
            "alice",
            vec![token::ResourceActions {
                kind: "repository".into(),
                name: "a".into(),
                actions: vec!["pull".into()],
            }],
        )
        .token;
    assert!(verifier.verify(&valid).is_ok());
    let alphabet = b"AZaz09-_.=:/,*$ \n{}\"[]";
    for _ in 0..3000 {
        // A valid token with a few bytes changed, cut, or doubled.
        let mut t = valid.clone().into_bytes();
        for _ in 0..1 + next() % 3 {
            let i = (next() as usize) % t.len();
            match next() % 3 {
                0 => t[i] = alphabet[(next() as usize) % alphabet.len()],
                1 => t.truncate(i),
                _ => t.insert(i, alphabet[(next() as usize) % alphabet.len()]),
            }
            if t.is_empty() {
                break;
            }
        }
        let t = String::from_utf8_lossy(&t).into_owned();
        let _ = verifier.verify(&t);
        // Random text for the other parsers.
        let len = (next() % 200) as usize;
        let junk: String = (0..len)
            .map(|_| alphabet[(next() as usize) % alphabet.len()] as char)
            .collect();
        let _ = htpasswd::UserTable::parse(&junk);
        let _ = scope::Scope::parse_all([junk.as_str()]);
        let _ = basic::parse(&junk);
        let _ = TrustStore::default().add_text(&junk);
        let _ = TrustStore::default().add_text(&format!(
            "-----BEGIN PUBLIC KEY-----\n{junk}\n-----END PUBLIC KEY-----\n"
        ));
        let _ = issuer.check_refresh(&t);
    }
}
