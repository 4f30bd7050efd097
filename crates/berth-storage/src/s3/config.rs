//! Where an S3 backend's data lives and how to reach it: `s3://BUCKET[/PREFIX]`
//! plus the endpoint, region, addressing style and credentials, each taken
//! from the berth option when given, else from the AWS tools' environment
//! variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_ENDPOINT_URL`, `AWS_REGION`, ...), which `object_store` reads.

use std::fmt;

/// How requests name the bucket: in the path (`http://host/bucket/key`, what
/// Ceph RGW, SeaweedFS and MinIO answer without DNS set-up) or in the host
/// name (`http://bucket.host/key`, AWS's preference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressingStyle {
    #[default]
    Path,
    Virtual,
}

/// The settings of an S3 backend. `Debug` never shows the secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Keys are stored below `PREFIX/` when set (no leading or trailing `/`).
    pub prefix: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub addressing: AddressingStyle,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("addressing", &self.addressing)
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum S3UrlError {
    #[error("{0:?} is not an s3:// URL")]
    NotS3(String),
    #[error("{0:?} names no bucket (expected s3://BUCKET[/PREFIX])")]
    NoBucket(String),
    #[error("{0:?}: the prefix has an empty, `.` or `..` component")]
    BadPrefix(String),
}

impl S3Config {
    /// Whether `storage` names an S3 location rather than a directory.
    pub fn is_s3_url(storage: &str) -> bool {
        storage.starts_with("s3://")
    }

    /// Parses `s3://BUCKET[/PREFIX]`; every other setting is left unset.
    pub fn from_url(url: &str) -> Result<S3Config, S3UrlError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| S3UrlError::NotS3(url.to_owned()))?;
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, p.trim_end_matches('/')),
            None => (rest, ""),
        };
        if bucket.is_empty() {
            return Err(S3UrlError::NoBucket(url.to_owned()));
        }
        let prefix = match prefix {
            "" => None,
            p if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") => {
                return Err(S3UrlError::BadPrefix(url.to_owned()))
            }
            p => Some(p.to_owned()),
        };
        Ok(S3Config {
            bucket: bucket.to_owned(),
            prefix,
            ..S3Config::default()
        })
    }

    /// `s3://BUCKET[/PREFIX]` (what the startup line shows: no credentials).
    pub fn url(&self) -> String {
        match &self.prefix {
            Some(p) => format!("s3://{}/{p}", self.bucket),
            None => format!("s3://{}", self.bucket),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let c = S3Config::from_url("s3://reg").unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_deref()), ("reg", None));
        let c = S3Config::from_url("s3://reg/a/b/").unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_deref()), ("reg", Some("a/b")));
        assert_eq!(c.url(), "s3://reg/a/b");
        assert!(matches!(S3Config::from_url("s3:///x"), Err(S3UrlError::NoBucket(_))));
        assert!(matches!(
            S3Config::from_url("s3://b/a//c"),
            Err(S3UrlError::BadPrefix(_))
        ));
        assert!(matches!(
            S3Config::from_url("s3://b/../c"),
            Err(S3UrlError::BadPrefix(_))
        ));
        assert!(matches!(S3Config::from_url("/data"), Err(S3UrlError::NotS3(_))));
        assert!(S3Config::is_s3_url("s3://b") && !S3Config::is_s3_url("./data"));
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = S3Config {
            bucket: "b".into(),
            secret_access_key: Some("hunter2".into()),
            ..S3Config::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && shown.contains("<redacted>"), "{shown}");
    }
}
