//! berth's own API beside the distribution API, under `/berth/v1/`:
//!
//! ```text
//! GET  /berth/v1/gc     what a garbage collection pass would free (a dry run)
//! POST /berth/v1/gc     run a pass now; answers its report
//! GET  /berth/v1/usage  bytes each quota and repository holds
//! POST /berth/v1/augmentations        define an augmentation; answers its id and image name
//! GET  /berth/v1/augmentations/<id>   an augmentation's definition
//! ```
//! Reports are `berth_registry::GcReport` and `berth_registry::UsageReport`
//! as JSON. All of them are for the policy's administrators.

use crate::error::ApiError;
use crate::json_response;
use axum::body::Body;
use axum::response::Response;
use berth_registry::{Augmentation, Registry};
use berth_spec::{Digest, ErrorCode, RepoName};
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) const AUGMENTATIONS: &str = "/berth/v1/augmentations";
pub(crate) const AUGMENTATIONS_SLASH: &str = "/berth/v1/augmentations/";
/// An augmentation request is a short JSON document.
const AUGMENTATION_REQUEST_LIMIT: usize = 64 << 10;

/// Handles a `/berth/v1/...` path, or `None` when it is not one of berth's.
pub async fn handle(reg: &Arc<Registry>, req: &Parts, body: Body) -> Option<Result<Response, ApiError>> {
    let method = &req.method;
    match req.uri.path() {
        "/berth/v1/gc" => Some(gc(reg, method).await),
        "/berth/v1/usage" => Some(usage(reg, method).await),
        AUGMENTATIONS => Some(define_augmentation(reg, req, body).await),
        p if p.starts_with(AUGMENTATIONS_SLASH) => {
            Some(show_augmentation(reg, method, &p[AUGMENTATIONS_SLASH.len()..]).await)
        }
        _ => None,
    }
}

/// What `POST /berth/v1/augmentations` takes: layers pushed beforehand as
/// blobs of a repository, and the settings to change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AugmentationRequest {
    /// An image to name in the answer (`docker.io/library/busybox:latest`);
    /// the augmentation applies to any image.
    #[serde(default)]
    base: Option<String>,
    #[serde(default)]
    layers: Vec<LayerRef>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerRef {
    repository: String,
    digest: String,
}

fn bad_request(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::Unsupported, message)
}

async fn define_augmentation(reg: &Registry, req: &Parts, body: Body) -> Result<Response, ApiError> {
    if req.method != Method::POST {
        return Err(ApiError::method_not_allowed());
    }
    let bytes = crate::body::read_limited(body, AUGMENTATION_REQUEST_LIMIT)
        .await
        .map_err(|e| bad_request(format!("reading the request failed: {e}")))?
        .ok_or_else(|| bad_request(format!("the request is larger than {AUGMENTATION_REQUEST_LIMIT} bytes")))?;
    let asked: AugmentationRequest =
        serde_json::from_slice(&bytes).map_err(|e| bad_request(format!("the request is not an augmentation: {e}")))?;
    let mut layers = Vec::with_capacity(asked.layers.len());
    for l in &asked.layers {
        let repository: RepoName = l.repository.parse().map_err(berth_registry::RegistryError::from)?;
        let digest: Digest = l.digest.parse().map_err(berth_registry::RegistryError::from)?;
        layers.push(reg.layer_from_blob(&repository, &digest).await?);
    }
    let aug = Augmentation {
        layers,
        env: asked.env,
        entrypoint: asked.entrypoint,
        cmd: asked.cmd,
        working_dir: asked.working_dir,
        labels: asked.labels,
    };
    let id = reg.define_augmentation(&aug).await?;
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let prefix = format!("{}/{id}", berth_registry::augment::PREFIX);
    let image = asked.base.as_deref().map(|b| format!("{host}/{prefix}/{b}"));
    tracing::info!(augmentation = %id, layers = aug.layers.len(), "augmentation defined");
    let answer = serde_json::json!({"id": id, "prefix": prefix, "image": image, "definition": aug});
    let mut resp = json_response(serde_json::to_vec(&answer).expect("JSON serializes"));
    *resp.status_mut() = StatusCode::CREATED;
    if let Ok(location) = HeaderValue::from_str(&format!("{AUGMENTATIONS_SLASH}{id}")) {
        resp.headers_mut().insert(http::header::LOCATION, location);
    }
    Ok(resp)
}

async fn show_augmentation(reg: &Registry, method: &Method, id: &str) -> Result<Response, ApiError> {
    if *method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NameUnknown,
            format!("no augmentation {id:?}"),
        )
    };
    if !berth_registry::augment::is_id(id) {
        return Err(unknown());
    }
    let aug = reg.augmentation(id).await?.ok_or_else(unknown)?;
    let answer = serde_json::json!({"id": id, "prefix": format!("{}/{id}", berth_registry::augment::PREFIX), "definition": &*aug});
    Ok(json_response(serde_json::to_vec(&answer).expect("JSON serializes")))
}

async fn gc(reg: &Arc<Registry>, method: &Method) -> Result<Response, ApiError> {
    let dry_run = match *method {
        Method::GET => true,
        Method::POST => false,
        _ => return Err(ApiError::method_not_allowed()),
    };
    let report = reg.collect_garbage_detached(reg.gc_options(dry_run)).await?;
    if !dry_run {
        tracing::info!(
            blobs_deleted = report.blobs_deleted,
            bytes_freed = report.bytes_freed,
            manifests_deleted = report.manifests_deleted,
            "garbage collection pass asked for over HTTP"
        );
    }
    Ok(json_response(serde_json::to_vec(&report).expect("reports serialize")))
}

async fn usage(reg: &Registry, method: &Method) -> Result<Response, ApiError> {
    if *method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    let report = reg.usage().await?;
    Ok(json_response(serde_json::to_vec(&report).expect("reports serialize")))
}
