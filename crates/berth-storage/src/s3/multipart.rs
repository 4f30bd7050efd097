//! Multipart uploads that a replica left open. A replica killed while it
//! streams a PATCH into a multipart upload never completes nor aborts it, and
//! the store keeps its parts (and their space) until someone aborts it.
//! `object_store` cannot list multipart uploads, so this module sends S3's
//! `ListMultipartUploads` itself, signed with `object_store`'s SigV4 signer
//! and the store's own credentials, and aborts through `object_store`.

use super::{client, errors, S3Backend};
use crate::backend::{Result, StorageError};
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use std::time::{Duration, SystemTime};

/// One open multipart upload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OpenUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<SystemTime>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListResult {
    #[serde(default)]
    upload: Vec<UploadEntry>,
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UploadEntry {
    key: String,
    upload_id: String,
    initiated: Option<String>,
}

/// Where the next page of a listing starts: S3's key and upload id markers.
type NextPage = Option<(String, String)>;

/// Parses one page of a `ListMultipartUploads` answer.
fn parse_page(xml: &str) -> std::result::Result<(Vec<OpenUpload>, NextPage), String> {
    let page: ListResult = quick_xml::de::from_str(xml).map_err(|e| e.to_string())?;
    let uploads = page
        .upload
        .into_iter()
        .map(|u| OpenUpload {
            key: u.key,
            upload_id: u.upload_id,
            initiated: u.initiated.as_deref().and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .ok()
                    .map(SystemTime::from)
            }),
        })
        .collect();
    let next = match (page.is_truncated, page.next_key_marker, page.next_upload_id_marker) {
        (true, Some(k), Some(u)) => Some((k, u)),
        _ => None,
    };
    Ok((uploads, next))
}

impl S3Backend {
    /// The multipart uploads open below the backend's prefix.
    pub(crate) async fn open_multipart_uploads(&self, s3: &AmazonS3) -> Result<Vec<OpenUpload>> {
        let prefix = self
            .config
            .prefix
            .as_deref()
            .map(|p| format!("{}/", p.trim_matches('/')));
        let credential = s3
            .credentials()
            .get_credential()
            .await
            .map_err(|e| errors::map("multipart uploads", e))?;
        let region = client::region(&self.config);
        let bucket_url = client::bucket_url(&self.config, &region);
        let http = reqwest13::Client::new();
        let mut out = Vec::new();
        let mut marker: NextPage = None;
        loop {
            let mut url = reqwest13::Url::parse(&bucket_url).map_err(|e| failed(e.to_string()))?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("uploads", "");
                if let Some(p) = &prefix {
                    q.append_pair("prefix", p);
                }
                if let Some((k, u)) = &marker {
                    q.append_pair("key-marker", k);
                    q.append_pair("upload-id-marker", u);
                }
            }
            let mut request = http::Request::builder()
                .method(http::Method::GET)
                .uri(url.as_str())
                .body(object_store::client::HttpRequestBody::empty())
                .map_err(|e| failed(e.to_string()))?;
            AwsAuthorizer::new(&credential, "s3", &region)
                .try_authorize(&mut request, None)
                .map_err(|e| errors::map("multipart uploads", e))?;
            let mut send = http.get(url.as_str());
            for (name, value) in request.headers() {
                send = send.header(name.as_str(), value.as_bytes());
            }
            let answer = send.send().await.map_err(|e| unavailable(e.to_string()))?;
            let status = answer.status();
            let body = answer.text().await.map_err(|e| unavailable(e.to_string()))?;
            if !status.is_success() {
                return Err(failed(format!("ListMultipartUploads answered {status}: {body}")));
            }
            let (uploads, next) = parse_page(&body).map_err(failed)?;
            out.extend(uploads);
            match next {
                Some(n) => marker = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// Aborts the multipart uploads below the prefix begun more than
    /// `older_than` ago (by the store's clock against this one's: the ages
    /// that matter are hours). Returns how many were aborted.
    pub(crate) async fn abort_multipart_uploads_older_than(&self, older_than: Duration) -> Result<usize> {
        let s3 = &self.store;
        let now = SystemTime::now();
        let mut aborted = 0;
        for upload in self.open_multipart_uploads(s3).await? {
            let old = upload
                .initiated
                .is_some_and(|t| now.duration_since(t).is_ok_and(|age| age >= older_than));
            if !old {
                continue;
            }
            let path = Path::from(upload.key.as_str());
            match s3.abort_multipart(&path, &upload.upload_id).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => aborted += 1,
                Err(e) => return Err(errors::map(&upload.key, e)),
            }
        }
        Ok(aborted)
    }
}

fn failed(message: String) -> StorageError {
    StorageError::io("multipart uploads", std::io::Error::other(message))
}

fn unavailable(message: String) -> StorageError {
    StorageError::Unavailable {
        key: "multipart uploads".into(),
        source: std::io::Error::other(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_page_is_parsed() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>p/berth/v1/s3-staged/x/0-1</NextKeyMarker><NextUploadIdMarker>2~abc</NextUploadIdMarker>
  <MaxUploads>1000</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>p/a&amp;b</Key><UploadId>1~xyz</UploadId><Initiated>2026-11-30T10:00:00.000Z</Initiated>
    <StorageClass>STANDARD</StorageClass></Upload>
  <Upload><Key>p/berth/v1/s3-staged/x/0-1</Key><UploadId>2~abc</UploadId><Initiated>2026-11-30T11:00:00Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let (uploads, next) = parse_page(xml).unwrap();
        assert_eq!(uploads.len(), 2);
        assert_eq!(uploads[0].key, "p/a&b");
        assert_eq!(uploads[0].upload_id, "1~xyz");
        assert_eq!(
            uploads[0].initiated,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_032_800))
        );
        assert_eq!(next, Some(("p/berth/v1/s3-staged/x/0-1".into(), "2~abc".into())));
        let empty = r#"<ListMultipartUploadsResult><Bucket>b</Bucket><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"#;
        assert_eq!(parse_page(empty).unwrap(), (vec![], None));
    }
}
