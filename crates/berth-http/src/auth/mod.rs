//! Authentication: who is calling. The HTTP layer identifies the caller
//! (Basic credentials checked against an htpasswd file, or a bearer token),
//! asks the access policy ([`berth_policy`]) or the token's claims what the
//! caller may do, and answers 401/403 with the right challenge when not.
//!
//! Without auth configured, [`crate::AppState::auth`] is `None` and no request
//! pays anything for this module.

pub mod basic;
mod cache;
mod challenge;
pub mod htpasswd;
mod limiter;
pub mod scope;
pub mod token;

use crate::error::ApiError;
use crate::route::Route;
use berth_policy::{Action, Policy, Principal};
use berth_spec::ErrorCode;
use htpasswd::{LoginError, Users};
use http::request::Parts;
use http::{header, HeaderValue, Method, StatusCode};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use token::{Issuer, TrustStore, Verified, Verifier};

/// How tokens are handled.
pub enum TokenMode {
    /// berth issues tokens at `/token` and accepts them.
    BuiltIn {
        key: token::SigningKey,
        /// The realm clients are sent to; by default `<scheme>://<Host>/token`.
        realm: Option<String>,
        /// Whether derived realms say `https` (berth serves TLS).
        https: bool,
        expiry: Duration,
    },
    /// Tokens come from another service; berth only verifies them.
    External { realm: String, trust: TrustStore },
}

pub struct TokenSettings {
    /// The `service` of challenges and the `aud` of tokens.
    pub service: String,
    /// The `iss` of tokens.
    pub issuer: String,
    pub mode: TokenMode,
}

/// Everything authentication needs, as the binary configures it.
pub struct AuthSettings {
    pub policy: Policy,
    /// The htpasswd file; without it nobody can sign in with a password.
    pub htpasswd: Option<PathBuf>,
    /// The realm of Basic challenges.
    pub basic_realm: String,
    pub tokens: Option<TokenSettings>,
    /// Whether a verified TLS client certificate identifies its holder: the
    /// subject's common name is the user name (for requests without an
    /// `Authorization` header; explicit credentials win).
    pub client_certificates: bool,
}

/// Refresh tokens of the built-in service last this long (docker keeps one
/// after `docker login` and uses it instead of the password).
const REFRESH_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);

struct Tokens {
    service: String,
    /// Set when berth issues tokens.
    issuer: Option<Issuer>,
    verifier: Verifier,
    realm: Option<String>,
    https: bool,
}

pub struct Auth {
    policy: Policy,
    users: Arc<Users>,
    basic_realm: String,
    tokens: Option<Tokens>,
    client_certificates: bool,
}

impl Auth {
    pub fn new(settings: AuthSettings) -> Result<Auth, String> {
        let users = match &settings.htpasswd {
            Some(path) => Users::open(path).map_err(|e| format!("--htpasswd {}: {e}", path.display()))?,
            None => Users::fixed(Default::default()),
        };
        let tokens = settings.tokens.map(|t| match t.mode {
            TokenMode::BuiltIn {
                key,
                realm,
                https,
                expiry,
            } => {
                let mut trust = TrustStore::default();
                trust.add(key.public.clone(), Some(&key.kid));
                let kid = key.kid.clone();
                Tokens {
                    verifier: Verifier::new(t.issuer.clone(), t.service.clone(), trust, Some(kid)),
                    issuer: Some(Issuer {
                        key,
                        issuer: t.issuer,
                        service: t.service.clone(),
                        expiry: expiry.max(Duration::from_secs(60)),
                        refresh_expiry: REFRESH_EXPIRY,
                    }),
                    service: t.service,
                    realm,
                    https,
                }
            }
            TokenMode::External { realm, trust } => Tokens {
                verifier: Verifier::new(t.issuer, t.service.clone(), trust, None),
                issuer: None,
                service: t.service,
                realm: Some(realm),
                https: false,
            },
        });
        Ok(Auth {
            policy: settings.policy,
            users: Arc::new(users),
            basic_realm: settings.basic_realm,
            tokens,
            client_certificates: settings.client_certificates,
        })
    }

    /// Re-reads the htpasswd file whenever it changes (until the task is aborted).
    pub fn watch_htpasswd(&self) -> tokio::task::JoinHandle<()> {
        self.users.watch()
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// Who is calling, once identified.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    Anonymous,
    User(Arc<str>),
    Token(Arc<Verified>),
}

impl Caller {
    fn name(&self) -> &str {
        match self {
            Caller::Anonymous => "",
            Caller::User(u) => u,
            Caller::Token(t) => &t.subject,
        }
    }

    fn principal(&self) -> Principal<'_> {
        match self.name() {
            "" => Principal::Anonymous,
            n => Principal::User(n),
        }
    }
}

/// The outcome of looking at a request's credentials without waiting.
enum Identified {
    Caller(Caller),
    /// Basic credentials to check with bcrypt, and their cache key.
    Check(cache::Key, basic::Credentials),
}

/// What a request needs, from its route and method.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Need<'a> {
    /// `/v2/`: only whether credentials are needed at all.
    Base,
    /// The catalog: anyone, filtered to what the caller may pull.
    Catalog,
    Repository(&'a str, Action),
    /// berth's administration API: members of the policy's admins only.
    Admin,
    /// Nothing to check (the handler answers 404 or 405, or checks the
    /// permit itself).
    Nothing,
}

/// What a request to berth's own API (`/berth/...`) needs. Operations on the
/// whole registry (garbage collection) are for administrators; the rest
/// decide per repository with the [`Permit`] in their handlers.
/// The name the policy decides for: an augmented repository
/// (`aug/<id>/<base>`) is read as its base is, since it serves the base's
/// content plus layers an administrator defined; writes there are refused by
/// the registry whatever the policy says.
pub(crate) fn policy_name(repository: &str) -> &str {
    berth_registry::augment::split_name(repository).map_or(repository, |(_, base)| base)
}

pub(crate) fn need_berth_api(path: &str) -> Need<'static> {
    match path {
        "/berth/v1/gc" | "/berth/v1/usage" => Need::Admin,
        p if p == crate::admin::AUGMENTATIONS || p.starts_with(crate::admin::AUGMENTATIONS_SLASH) => Need::Admin,
        _ => Need::Nothing,
    }
}

pub(crate) fn need<'a>(route: &Route<'a>, method: &Method) -> Need<'a> {
    let read = matches!(*method, Method::GET | Method::HEAD);
    match route {
        Route::Base => Need::Base,
        Route::Catalog => Need::Catalog,
        Route::Tags { name } | Route::Referrers { name, .. } if read => Need::Repository(name, Action::Pull),
        Route::Manifest { name, .. } | Route::Blob { name, .. } if read => Need::Repository(name, Action::Pull),
        Route::Manifest { name, .. } if method == Method::PUT => Need::Repository(name, Action::Push),
        Route::Manifest { name, .. } | Route::Blob { name, .. } if method == Method::DELETE => {
            Need::Repository(name, Action::Delete)
        }
        Route::UploadStart { name } if method == Method::POST => Need::Repository(name, Action::Push),
        Route::Upload { name, .. } if matches!(*method, Method::GET | Method::PATCH | Method::PUT | Method::DELETE) => {
            Need::Repository(name, Action::Push)
        }
        _ => Need::Nothing,
    }
}

/// What the access log says about a request's authorization.
#[derive(Debug, Default)]
pub struct AuthRecord {
    pub user: String,
    pub action: Option<&'static str>,
    pub repository: Option<String>,
    /// `allowed (<why>)` or `denied (<why>)`, further decisions appended.
    pub access: String,
}

/// Shared between a request's handler and its log line, which is written
/// when the response body ends.
pub type SharedRecord = Arc<Mutex<AuthRecord>>;

/// What a request may do, handed to the handlers.
pub struct Permit {
    checked: Option<Checked>,
}

struct Checked {
    auth: Arc<Auth>,
    caller: Caller,
    realm: Realm,
    /// `None` when the request log is off: then nothing is written down.
    record: Option<SharedRecord>,
}

impl Permit {
    /// No authorization configured: everything is allowed, nothing is recorded.
    pub fn unrestricted() -> Permit {
        Permit { checked: None }
    }

    pub(crate) fn is_unrestricted(&self) -> bool {
        self.checked.is_none()
    }

    /// Whether the caller may administer the registry (always, without auth).
    pub fn is_admin(&self) -> bool {
        self.checked.as_ref().is_none_or(|c| c.auth.is_admin(&c.caller))
    }

    /// The signed-in user (or a token's subject); `None` when anonymous or without auth.
    pub(crate) fn user(&self) -> Option<&str> {
        let c = self.checked.as_ref()?;
        Some(c.caller.name()).filter(|n| !n.is_empty())
    }

    /// Whether the caller sees `repository` in the catalog (it may pull there).
    pub(crate) fn lists(&self, repository: &str) -> bool {
        let Some(c) = &self.checked else { return true };
        c.auth
            .policy
            .actions(c.caller.principal(), repository)
            .contains(Action::Pull)
    }

    /// Whether the caller may do `action` in `repository` (by the policy, or
    /// by its token's claims), recording the decision under `what`.
    pub(crate) fn may(&self, action: Action, repository: &str, what: &str) -> bool {
        let Some(c) = &self.checked else { return true };
        let Some(record) = &c.record else {
            return c.auth.allows(&c.caller, action, repository);
        };
        let (allowed, why) = c.auth.explain(&c.caller, action, repository);
        record.lock().unwrap().access.push_str(&format!(
            "; {what}: {} {action} {repository} ({why})",
            if allowed { "allowed" } else { "denied" }
        ));
        allowed
    }

    /// Whether the caller may override an immutable tag in `repository`: an
    /// admin (everyone is, without access control). Records the decision.
    pub(crate) fn may_override_immutable(&self, repository: &str) -> bool {
        let Some(c) = &self.checked else { return true };
        let admin = c.auth.is_admin(&c.caller);
        if let Some(record) = &c.record {
            record.lock().unwrap().access.push_str(&format!(
                "; override immutable in {repository}: {}",
                if admin {
                    "allowed (admin)"
                } else {
                    "denied (not an admin)"
                }
            ));
        }
        admin
    }

    /// Like [`Permit::may`], but a refusal is the error to answer with.
    pub(crate) fn require(&self, action: Action, repository: &str, what: &str) -> Result<(), ApiError> {
        if self.may(action, repository, what) {
            return Ok(());
        }
        let c = self.checked.as_ref().expect("refusals only happen with auth");
        Err(c.auth.refusal(&c.caller, &c.realm, action, repository))
    }
}

/// The client's address, for the failed-login limiter: the connection's
/// peer, which the server loop puts into each request (the log uses it too).
fn client_addr(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<crate::access_log::ClientAddr>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// What a request's challenge realm is made from, kept until a challenge is
/// needed (most requests need none, so the URL is not built for them).
#[derive(Clone)]
pub(crate) struct Realm {
    host: Option<HeaderValue>,
    https: bool,
}

impl Realm {
    fn of(parts: &Parts) -> Realm {
        Realm {
            host: parts.headers.get(header::HOST).cloned().or_else(|| {
                parts
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            }),
            https: parts.uri.scheme_str() == Some("https"),
        }
    }
}

/// A host name as it may appear in a realm URL (nothing that could break the header).
fn plausible_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_'))
}

impl Auth {
    /// The realm of Bearer challenges, or the Basic realm.
    fn realm_url(&self, realm: &Realm) -> String {
        let Some(t) = &self.tokens else {
            return self.basic_realm.clone();
        };
        if let Some(r) = &t.realm {
            return r.clone();
        }
        let host = realm
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .filter(|h| plausible_host(h))
            .unwrap_or("localhost");
        let scheme = if t.https || realm.https { "https" } else { "http" };
        format!("{scheme}://{host}/token")
    }

    fn challenge(&self, realm: &Realm, scope: Option<&str>, error: Option<&str>) -> HeaderValue {
        let url = self.realm_url(realm);
        match &self.tokens {
            Some(t) => challenge::bearer(&url, &t.service, scope, error),
            None => challenge::basic(&url),
        }
    }

    fn unauthorized(&self, realm: &Realm, scope: Option<&str>, error: Option<&str>, message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
            .with_header(header::WWW_AUTHENTICATE, self.challenge(realm, scope, error))
    }

    /// Whether `caller` is one of the policy's administrators (by name, so a
    /// token's subject counts as the user it names).
    fn is_admin(&self, caller: &Caller) -> bool {
        let name = caller.name();
        !name.is_empty() && self.policy.is_admin(name)
    }

    /// Whether `caller` may do `action` in `repository`.
    fn allows(&self, caller: &Caller, action: Action, repository: &str) -> bool {
        match caller {
            Caller::Token(t) => t.actions(repository).contains(action),
            _ => self
                .policy
                .actions(caller.principal(), policy_name(repository))
                .contains(action),
        }
    }

    /// Whether `caller` may do `action` in `repository`, and why (for the log).
    fn explain(&self, caller: &Caller, action: Action, repository: &str) -> (bool, String) {
        match caller {
            Caller::Token(t) => {
                let allowed = t.actions(repository).contains(action);
                let why = if allowed {
                    "token".to_owned()
                } else {
                    format!("token grants {} here", t.actions(repository))
                };
                (allowed, why)
            }
            _ => {
                let d = self.policy.decide(caller.principal(), action, policy_name(repository));
                match policy_name(repository) {
                    base if base != repository => (d.allowed, format!("as {base}: {}", d.reason)),
                    _ => (d.allowed, d.reason),
                }
            }
        }
    }

    /// The answer to a refused request: 401 with a challenge when other
    /// credentials (or a token with more scope) could help, 403 otherwise.
    fn refusal(&self, caller: &Caller, realm: &Realm, action: Action, repository: &str) -> ApiError {
        // Tokens are asked for with docker's actions: push includes overwrite.
        let asked = match action {
            Action::Pull => "pull",
            Action::Push | Action::Overwrite => "pull,push",
            Action::Delete => "delete",
        };
        let scope = format!("repository:{repository}:{asked}");
        let detail = serde_json::json!([{"Type": "repository", "Name": repository, "Action": action.as_str()}]);
        match caller {
            Caller::Anonymous => self
                .unauthorized(realm, Some(&scope), None, "authentication required")
                .with_detail(detail),
            // An anonymous token: signing in may help.
            Caller::Token(t) if t.subject.is_empty() => self
                .unauthorized(
                    realm,
                    Some(&scope),
                    Some("insufficient_scope"),
                    "authentication required",
                )
                .with_detail(detail),
            // The policy would let this user have a token that allows it: ask for one.
            Caller::Token(t)
                if self.tokens.is_some()
                    && (!t.built_in
                        || self
                            .policy
                            .decide(caller.principal(), action, policy_name(repository))
                            .allowed) =>
            {
                self.unauthorized(realm, Some(&scope), Some("insufficient_scope"), "insufficient scope")
                    .with_detail(detail)
            }
            _ => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Denied,
                "requested access to the resource is denied",
            )
            .with_detail(detail),
        }
    }

    /// Identifies the caller from the `Authorization` header without waiting:
    /// anonymous, a bearer token (verified, usually from the cache), or Basic
    /// credentials checked a short while ago. Credentials that need a bcrypt
    /// check come back as [`Identified::Check`].
    fn identify(&self, parts: &Parts, realm: &Realm) -> Result<Identified, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Ok(Identified::Caller(
                self.certificate_holder(parts).unwrap_or(Caller::Anonymous),
            ));
        };
        let bad = |msg: &str| self.unauthorized(realm, None, None, msg);
        // from_utf8 is quicker than HeaderValue::to_str on a long token.
        let value = std::str::from_utf8(value.as_bytes()).map_err(|_| bad("malformed Authorization header"))?;
        let (scheme, rest) = basic::split_scheme(value).ok_or_else(|| bad("malformed Authorization header"))?;
        if scheme.eq_ignore_ascii_case("bearer") {
            let Some(t) = &self.tokens else {
                return Err(bad("this registry takes Basic credentials, not bearer tokens"));
            };
            return match t.verifier.verify(rest) {
                Ok(v) => Ok(Identified::Caller(Caller::Token(v))),
                Err(e) => {
                    tracing::info!(target: "berth::auth", client = %client_addr(parts), error = %e, "bearer token refused");
                    Err(self.unauthorized(realm, None, Some("invalid_token"), &e.to_string()))
                }
            };
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(bad("unsupported authorization scheme"));
        }
        let key = self.users.basic_key(rest);
        if let Some(user) = self.users.cached(&key) {
            return Ok(Identified::Caller(Caller::User(user)));
        }
        let creds = basic::parse(rest).ok_or_else(|| bad("malformed Basic credentials"))?;
        Ok(Identified::Check(key, creds))
    }

    /// The user a verified client certificate names, when certificates identify.
    fn certificate_holder(&self, parts: &Parts) -> Option<Caller> {
        if !self.client_certificates {
            return None;
        }
        let cert = parts.extensions.get::<crate::ClientCertificate>()?;
        let name = cert.common_name().filter(|n| !n.is_empty())?;
        Some(Caller::User(Arc::from(name)))
    }

    /// Checks Basic credentials the cache did not know (bcrypt on the blocking pool).
    async fn check(
        &self,
        key: cache::Key,
        creds: basic::Credentials,
        client: IpAddr,
        realm: &Realm,
    ) -> Result<Caller, ApiError> {
        self.users
            .login_keyed(key, &creds.user, &creds.password, client)
            .await
            .map(Caller::User)
            .map_err(|e| self.login_error(e, realm))
    }

    fn login_error(&self, e: LoginError, realm: &Realm) -> ApiError {
        match e {
            LoginError::Invalid => self.unauthorized(realm, None, None, "invalid user name or password"),
            LoginError::Limited(wait) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                "too many failed logins; try again later",
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1))),
        }
    }

    async fn login(&self, user: &str, password: &str, client: IpAddr, realm: &Realm) -> Result<Arc<str>, ApiError> {
        self.users
            .login(user, password, client)
            .await
            .map_err(|e| self.login_error(e, realm))
    }

    /// Identifies the caller and checks what the request needs. On success
    /// the permit goes to the handler; `record` is filled for the log line.
    pub(crate) async fn authorize(
        self: &Arc<Self>,
        parts: &Parts,
        need: Need<'_>,
        record: Option<&SharedRecord>,
    ) -> Result<Permit, ApiError> {
        let note = |f: &dyn Fn(&mut AuthRecord)| {
            if let Some(r) = record {
                f(&mut r.lock().unwrap());
            }
        };
        let realm = Realm::of(parts);
        let identified = match self.identify(parts, &realm) {
            Ok(Identified::Caller(c)) => Ok(c),
            // Boxed: the bcrypt path's state stays out of every other request's future.
            Ok(Identified::Check(key, creds)) => Box::pin(self.check(key, creds, client_addr(parts), &realm)).await,
            Err(e) => Err(e),
        };
        let caller = match identified {
            Ok(c) => c,
            Err(e) => {
                note(&|r| r.access = "denied (bad credentials)".into());
                return Err(e);
            }
        };
        note(&|r| r.user = caller.name().to_owned());
        match need {
            Need::Nothing => {}
            Need::Catalog => note(&|r| r.access = "allowed (catalog lists what the caller may pull)".into()),
            Need::Base => {
                // docker decides from /v2/ whether to send credentials: ask for
                // them whenever some request may need them.
                let needed = matches!(caller, Caller::Anonymous) && !self.policy.anonymous_may_do_everything();
                if needed {
                    note(&|r| r.access = "denied (credentials may be needed)".into());
                    return Err(self.unauthorized(&realm, None, None, "authentication required"));
                }
                note(&|r| r.access = "allowed".into());
            }
            Need::Admin => {
                let admin = self.is_admin(&caller);
                note(&|r| {
                    r.action = Some("admin");
                    r.access = if admin {
                        "allowed (administrator)"
                    } else {
                        "denied (administrators only)"
                    }
                    .into();
                });
                if !admin {
                    return Err(match caller {
                        Caller::Anonymous => self.unauthorized(&realm, None, None, "authentication required"),
                        _ => ApiError::new(
                            StatusCode::FORBIDDEN,
                            ErrorCode::Denied,
                            "only administrators may use this endpoint",
                        ),
                    });
                }
            }
            Need::Repository(name, action) => {
                let allowed = match record {
                    None => self.allows(&caller, action, name),
                    Some(r) => {
                        let (allowed, why) = self.explain(&caller, action, name);
                        let mut rec = r.lock().unwrap();
                        rec.action = Some(action.as_str());
                        rec.repository = Some(name.to_owned());
                        rec.access = format!("{} ({why})", if allowed { "allowed" } else { "denied" });
                        allowed
                    }
                };
                if !allowed {
                    return Err(self.refusal(&caller, &realm, action, name));
                }
            }
        }
        Ok(Permit {
            checked: Some(Checked {
                auth: self.clone(),
                caller,
                realm,
                record: record.cloned(),
            }),
        })
    }
}

#[cfg(test)]
mod tests;
