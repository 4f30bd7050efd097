//! The built-in token service: `GET /token?service=&scope=` (Basic
//! credentials or anonymous) and the OAuth2 form `POST /token`
//! (`grant_type=password|refresh_token`, which containerd tries first), as
//! the Docker token authentication spec describes them; and the public key
//! at `/.well-known/jwks.json`.
//!
//! The token grants what was asked for and the policy allows; granting less
//! (or nothing) is not an error: the registry refuses what the token lacks.

use super::{ResourceActions, TokenError};
use crate::auth::scope::Scope;
use crate::auth::{Auth, SharedRecord};
use crate::body::read_limited;
use crate::error::ApiError;
use crate::{json_response, query_pairs};
use axum::body::Body;
use axum::response::Response;
use berth_policy::{Action, Actions, Principal};
use berth_spec::{ErrorCode, RepoName};
use http::request::Parts;
use http::{header, Method, StatusCode};
use sha2_011::{Digest, Sha256};
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;

/// Token request forms are small; larger bodies are refused.
const MAX_FORM: usize = 64 * 1024;

/// Ties a refresh token to the user's password entry: a hash of the stored
/// bcrypt hash (itself salted), so changing the password revokes it.
fn binding(stored_hash: &str) -> String {
    let sum = Sha256::digest(stored_hash.as_bytes());
    sum[..12].iter().map(|b| format!("{b:02x}")).collect()
}

fn bad_request(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, message)
}

/// The actions asked for in a scope. `push` also asks for `overwrite`
/// (clients do not know berth's finer action), `*` for everything.
fn asked(actions: &[String]) -> Actions {
    let mut set = Actions::NONE;
    for a in actions {
        match a.as_str() {
            "*" => set = Actions::ALL,
            "push" => set = set.with(Action::Push).with(Action::Overwrite),
            other => {
                if let Some(a) = Action::parse(other) {
                    set = set.with(a);
                }
            }
        }
    }
    set
}

impl Auth {
    /// What a token for `who` asking for `scopes` grants.
    pub(crate) fn grant(&self, who: Principal<'_>, scopes: &[Scope]) -> Vec<ResourceActions> {
        let mut repos: BTreeMap<String, Actions> = BTreeMap::new();
        let mut catalog = false;
        for s in scopes {
            match s.kind.as_str() {
                "repository" => {
                    if s.name.parse::<RepoName>().is_err() {
                        continue;
                    }
                    let granted =
                        asked(&s.actions).intersection(self.policy.actions(who, crate::auth::policy_name(&s.name)));
                    let e = repos.entry(s.name.clone()).or_default();
                    *e = e.union(granted);
                }
                // The catalog lists only what the caller may pull, so anyone may ask for it.
                "registry" if s.name == "catalog" => catalog = true,
                _ => {}
            }
        }
        let mut access: Vec<ResourceActions> = repos
            .into_iter()
            .filter(|(_, a)| !a.is_empty())
            .map(|(name, a)| ResourceActions {
                kind: "repository".into(),
                name,
                actions: a.iter().map(|a| a.as_str().to_owned()).collect(),
            })
            .collect();
        if catalog {
            access.push(ResourceActions {
                kind: "registry".into(),
                name: "catalog".into(),
                actions: vec!["*".into()],
            });
        }
        access
    }

    /// `/.well-known/jwks.json`
    pub(crate) fn jwks(&self) -> Option<Response> {
        let issuer = self.tokens.as_ref()?.issuer.as_ref()?;
        Some(json_response(serde_json::to_vec(&issuer.jwks()).expect("json")))
    }

    /// `GET` or `POST /token`. `None` when berth issues no tokens (the path is then unknown).
    pub(crate) async fn token_endpoint(
        &self,
        parts: &Parts,
        body: Body,
        record: Option<&SharedRecord>,
    ) -> Option<Result<Response, ApiError>> {
        let tokens = self.tokens.as_ref()?;
        let issuer = tokens.issuer.as_ref()?;
        let realm = crate::auth::Realm::of(parts);
        let basic_realm = self.basic_realm.clone();
        let client = super::super::client_addr(parts);
        // Basic challenge on a failed login: the token endpoint takes passwords.
        let basic_401 = |msg: &str| {
            ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, msg)
                .with_header(header::WWW_AUTHENTICATE, crate::auth::challenge::basic(&basic_realm))
        };
        let result = async {
            let (form, post) = match parts.method {
                Method::GET => (query_pairs(parts), false),
                Method::POST => {
                    let bytes = read_limited(body, MAX_FORM)
                        .await
                        .map_err(|_| bad_request("could not read the form"))?
                        .ok_or_else(|| bad_request("token request form too large"))?;
                    (form_urlencoded::parse(&bytes).into_owned().collect(), true)
                }
                _ => return Err(ApiError::method_not_allowed()),
            };
            let get = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
            if let Some(service) = get("service") {
                if service != tokens.service {
                    return Err(bad_request(&format!(
                        "this token service issues tokens for service {:?}, not {service:?}",
                        tokens.service
                    )));
                }
            }
            let scopes = Scope::parse_all(form.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.as_str()));
            let mut refresh = None;
            let user: Option<String> = if post {
                match get("grant_type") {
                    Some("password") => {
                        let (u, p) = (get("username").unwrap_or(""), get("password").unwrap_or(""));
                        let user = self.users.login(u, p, client).await.map_err(|e| match e {
                            super::super::htpasswd::LoginError::Limited(_) => ApiError::new(
                                StatusCode::TOO_MANY_REQUESTS,
                                ErrorCode::TooManyRequests,
                                "too many failed logins; try again later",
                            ),
                            _ => basic_401("invalid user name or password"),
                        })?;
                        if get("access_type") == Some("offline") {
                            refresh = Some(self.refresh_for(issuer, &user));
                        }
                        Some(user.to_string())
                    }
                    Some("refresh_token") => {
                        let given = get("refresh_token").unwrap_or("");
                        let user = self.check_refresh(issuer, given).map_err(|e| {
                            tracing::info!(target: "berth::auth", %client, error = %e, "refresh token refused");
                            basic_401("invalid refresh token")
                        })?;
                        refresh = Some(given.to_owned());
                        Some(user)
                    }
                    other => {
                        return Err(bad_request(&format!(
                            "grant_type {:?} is not supported (password and refresh_token are)",
                            other.unwrap_or("")
                        )))
                    }
                }
            } else {
                match parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
                    None => None,
                    Some(v) => {
                        let creds = crate::auth::basic::split_scheme(v)
                            .filter(|(s, _)| s.eq_ignore_ascii_case("basic"))
                            .and_then(|(_, c)| crate::auth::basic::parse(c))
                            .ok_or_else(|| basic_401("the token endpoint takes Basic credentials"))?;
                        let user = self.login(&creds.user, &creds.password, client, &realm).await?;
                        if get("offline_token") == Some("true") {
                            refresh = Some(self.refresh_for(issuer, &user));
                        }
                        Some(user.to_string())
                    }
                }
            };
            let who = match &user {
                Some(u) => Principal::User(u),
                None => Principal::Anonymous,
            };
            let access = self.grant(who, &scopes);
            let granted: Vec<String> = access
                .iter()
                .map(|r| format!("{}:{}:{}", r.kind, r.name, r.actions.join(",")))
                .collect();
            if let Some(record) = record {
                let mut rec = record.lock().unwrap();
                rec.user = user.clone().unwrap_or_default();
                let asked: Vec<String> = scopes.iter().map(Scope::to_string).collect();
                rec.access = format!(
                    "token issued; asked [{}], granted [{}]",
                    asked.join(" "),
                    granted.join(" ")
                );
            }
            let issued = issuer.access_token(user.as_deref().unwrap_or(""), access);
            let issued_at = time::OffsetDateTime::from_unix_timestamp(issued.issued_at as i64)
                .ok()
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                .unwrap_or_default();
            let mut body = serde_json::json!({
                "token": issued.token,
                "access_token": issued.token,
                "expires_in": issued.expires_in,
                "issued_at": issued_at,
            });
            if let Some(r) = refresh {
                body["refresh_token"] = serde_json::Value::String(r);
            }
            if post {
                body["scope"] = serde_json::Value::String(granted.join(" "));
            }
            let mut resp = json_response(serde_json::to_vec(&body).expect("json"));
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
            Ok(resp)
        }
        .await;
        if let (Err(_), Some(record)) = (&result, record) {
            let mut rec = record.lock().unwrap();
            if rec.access.is_empty() {
                rec.access = "no token issued".into();
            }
        }
        Some(result)
    }

    fn refresh_for(&self, issuer: &super::Issuer, user: &str) -> String {
        let stored = self.users.table().hash_of(user).map(binding).unwrap_or_default();
        issuer.refresh_token(user, &stored)
    }

    /// The user a refresh token stands for, if the token is valid and the
    /// user's password has not changed since it was issued.
    fn check_refresh(&self, issuer: &super::Issuer, token: &str) -> Result<String, TokenError> {
        let (user, bound) = issuer.check_refresh(token)?;
        let table = self.users.table();
        let current = table
            .hash_of(&user)
            .map(binding)
            .ok_or_else(|| TokenError::Invalid(format!("user {user:?} no longer exists")))?;
        if bool::from(current.as_bytes().ct_eq(bound.as_bytes())) {
            Ok(user)
        } else {
            Err(TokenError::Invalid(
                "the password changed since the token was issued".into(),
            ))
        }
    }
}
