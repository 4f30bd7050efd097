//! Builds the `object_store` S3 client from an [`S3Config`] and the AWS
//! environment variables.

use super::config::{AddressingStyle, S3Config};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{BackoffConfig, RetryConfig};
use std::time::Duration;

/// Retries for serving: throttling (503 SlowDown), 5xx, timeouts and refused
/// connections are retried with exponential backoff and full jitter for up
/// to 15 s, then reported (and the client told to retry later). Long enough
/// to ride out an RGW restart or a burst of throttling, short enough that a
/// client's request does not hang for minutes.
pub(super) fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(3),
            base: 2.0,
        },
        max_retries: 8,
        retry_timeout: Duration::from_secs(15),
    }
}

/// Retries for the startup check: a store that does not answer within a few
/// seconds makes a clear startup error, not a minute of silence.
pub(super) fn probe_retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
        max_retries: 2,
        retry_timeout: Duration::from_secs(5),
    }
}

/// The endpoint requests go to, for messages (never holds credentials).
pub(super) fn endpoint(config: &S3Config) -> String {
    config
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .or_else(|| std::env::var("AWS_ENDPOINT").ok())
        .unwrap_or_else(|| "AWS S3".to_owned())
}

pub(super) fn build(config: &S3Config, retry: RetryConfig) -> object_store::Result<AmazonS3> {
    // The HTTP client's TLS uses the process's rustls provider: ring, as
    // everywhere in berth (an error only says one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
    // AWS_ENDPOINT_URL, AWS_REGION, AWS_DEFAULT_REGION, ... as the AWS tools read them.
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&config.bucket)
        .with_retry(retry)
        .with_virtual_hosted_style_request(config.addressing == AddressingStyle::Virtual);
    if let Some(endpoint) = &config.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    // A plain-http endpoint (a store on localhost or a private network) is
    // the operator's explicit choice: allow it rather than fail obscurely.
    if endpoint(config).starts_with("http://") {
        builder = builder.with_allow_http(true);
    }
    if let Some(region) = &config.region {
        builder = builder.with_region(region);
    } else if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
        // Ceph RGW and SeaweedFS accept any region; AWS's default one.
        builder = builder.with_region("us-east-1");
    }
    if let Some(id) = &config.access_key_id {
        builder = builder.with_access_key_id(id);
    }
    if let Some(secret) = &config.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    builder.build()
}

/// The region requests are signed for: as in [`build`].
pub(super) fn region(config: &S3Config) -> String {
    config
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_else(|| "us-east-1".to_owned())
}

/// The URL of the bucket itself (for requests `object_store` does not
/// make), in the configured addressing style.
pub(super) fn bucket_url(config: &S3Config, region: &str) -> String {
    let virtual_hosted = config.addressing == AddressingStyle::Virtual;
    let explicit = config
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .or_else(|| std::env::var("AWS_ENDPOINT").ok());
    let endpoint = explicit.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    let endpoint = endpoint.trim_end_matches('/');
    match (virtual_hosted, endpoint.split_once("://")) {
        (true, Some((scheme, host))) => format!("{scheme}://{}.{host}/", config.bucket),
        _ => format!("{endpoint}/{}", config.bucket),
    }
}
