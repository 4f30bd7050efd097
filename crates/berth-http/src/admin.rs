//! berth's own API beside the distribution API, under `/berth/v1/`:
//!
//! ```text
//! GET  /berth/v1/gc     what a garbage collection pass would free (a dry run)
//! POST /berth/v1/gc     run a pass now; answers its report
//! GET  /berth/v1/usage  bytes each quota and repository holds
//! ```
//! Reports are `berth_registry::GcReport` and `berth_registry::UsageReport`
//! as JSON.

use crate::error::ApiError;
use crate::json_response;
use axum::response::Response;
use berth_registry::Registry;
use http::Method;

/// Handles a `/berth/v1/...` path, or `None` when it is not one of berth's.
pub async fn handle(reg: &Registry, path: &str, method: &Method) -> Option<Result<Response, ApiError>> {
    match path {
        "/berth/v1/gc" => Some(gc(reg, method).await),
        "/berth/v1/usage" => Some(usage(reg, method).await),
        _ => None,
    }
}

async fn gc(reg: &Registry, method: &Method) -> Result<Response, ApiError> {
    let dry_run = match *method {
        Method::GET => true,
        Method::POST => false,
        _ => return Err(ApiError::method_not_allowed()),
    };
    let report = reg.collect_garbage(&reg.gc_options(dry_run)).await?;
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
