//! Authentication settings from the command line: which users, which
//! policy, which tokens. The HTTP layer does the work ([`berth_http::auth`]);
//! the policy lives in [`berth_policy`].

use crate::cli::ServeArgs;
use anyhow::{bail, Context};
use berth_http::auth::token::{SigningKey, TrustStore};
use berth_http::auth::{Auth, AuthSettings, TokenMode, TokenSettings};
use berth_policy::{Policy, PolicyConfig};
use std::path::Path;
use std::time::Duration;

/// Where the built-in token service keeps the key it made, under the data directory.
pub const SIGNING_KEY_PATH: &str = "berth/v1/auth/token-signing-key.pem";

/// Reads a policy file (TOML, the same keys as `[auth]` in a config file).
pub fn load_policy(path: &Path) -> anyhow::Result<PolicyConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}: invalid access policy", path.display()))
}

/// The authentication `args` ask for, or `None` when they ask for none
/// (then every request is allowed and pays nothing for auth).
pub fn build(args: &ServeArgs) -> anyhow::Result<Option<Auth>> {
    let external = !args.token_trust.is_empty();
    let section = args.sections.auth.as_ref();
    let client_certificates = args.tls_client_ca.is_some();
    if args.htpasswd.is_none()
        && args.auth_config.is_none()
        && section.is_none()
        && !args.token
        && !external
        && !client_certificates
    {
        return Ok(None);
    }
    let config = match (&args.auth_config, section) {
        (Some(_), Some(_)) => {
            bail!("the access policy is given twice: by --auth-config and by [auth] in the config file; keep one")
        }
        (Some(path), None) => load_policy(path)?,
        (None, Some(section)) => section.clone(),
        (None, None) => PolicyConfig::default(),
    };
    let policy = Policy::new(&config).map_err(|e| anyhow::anyhow!("access policy: {e}"))?;
    let tokens = if external {
        if args.token {
            bail!("--token (berth issues tokens) and --token-trust (another service does) exclude each other");
        }
        let realm = args
            .token_realm
            .clone()
            .context("--token-trust needs --token-realm: the URL where clients get tokens")?;
        let mut trust = TrustStore::default();
        for path in &args.token_trust {
            let n = trust.add_file(path).map_err(|e| anyhow::anyhow!("--token-trust {e}"))?;
            tracing::info!(target: "berth::auth", file = %path.display(), keys = n, "trusting token signing keys");
        }
        Some(TokenSettings {
            service: args.token_service.clone(),
            issuer: args.token_issuer.clone(),
            mode: TokenMode::External { realm, trust },
        })
    } else if args.token {
        let key = match &args.token_key {
            Some(path) => SigningKey::load(path),
            None => SigningKey::load_or_create(&args.data.join(SIGNING_KEY_PATH)),
        }
        .map_err(|e| anyhow::anyhow!("token signing key: {e}"))?;
        tracing::info!(target: "berth::auth", kid = %key.kid, "token service signing key");
        Some(TokenSettings {
            service: args.token_service.clone(),
            issuer: args.token_issuer.clone(),
            mode: TokenMode::BuiltIn {
                key,
                realm: args.token_realm.clone(),
                // The realm clients are sent to: https when berth serves TLS.
                https: args.tls_cert.is_some(),
                expiry: Duration::from_secs(args.token_expiry_secs),
            },
        })
    } else {
        None
    };
    let auth = Auth::new(AuthSettings {
        policy,
        htpasswd: args.htpasswd.clone(),
        basic_realm: "berth".into(),
        tokens,
        client_certificates,
    })
    .map_err(|e| anyhow::anyhow!(e))?;
    Ok(Some(auth))
}
