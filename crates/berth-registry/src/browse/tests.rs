//! The browse queries against the filesystem backend, with images pushed
//! through the registry's own push paths.

use super::*;
use crate::{RegistryConfig, RegistryError};
use berth_storage::{ByteStream, FsBackend};
use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

fn registry() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FsBackend::new(dir.path()));
    (dir, Registry::new(backend, RegistryConfig::default()))
}

fn name(s: &str) -> RepoName {
    s.parse().unwrap()
}

async fn push_blob(reg: &Registry, repo: &RepoName, bytes: &[u8]) -> Digest {
    let d = Digest::sha256_of(bytes);
    let stream: ByteStream = futures::stream::iter([Ok(Bytes::from(bytes.to_vec()))]).boxed();
    reg.put_blob(repo, &d, stream).await.unwrap();
    d
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": Digest::sha256_of(bytes).to_string(), "size": bytes.len()})
}

fn config(os: &str, arch: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "created": "2026-01-02T03:04:05Z",
        "os": os, "architecture": arch,
        "config": {"Env": ["PATH=/bin", "A=<script>"], "Entrypoint": ["/app"], "Cmd": ["--serve"],
                   "Labels": {"org.opencontainers.image.title": "demo"}, "ExposedPorts": {"8080/tcp": {}}},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [
            {"created_by": "ADD rootfs /"},
            {"created_by": "ENV A=b", "empty_layer": true},
            {"created_by": "COPY app /app"}
        ]
    }))
    .unwrap()
}

async fn put(reg: &Registry, repo: &RepoName, reference: &str, media_type: &str, bytes: &[u8]) -> Digest {
    let reference: Reference = reference.parse().unwrap();
    reg.put_manifest(repo, &reference, Some(media_type), Bytes::from(bytes.to_vec()), &[])
        .await
        .unwrap()
        .digest
}

/// Pushes an image of two layers for `os/arch`; returns its digest and its download size.
async fn push_image(reg: &Registry, repo: &RepoName, reference: &str, os: &str, arch: &str) -> (Digest, u64) {
    let cfg = config(os, arch);
    let l1 = format!("layer one of {os}/{arch}").into_bytes();
    let l2 = vec![7u8; 1000];
    for b in [&cfg, &l1, &l2] {
        push_blob(reg, repo, b).await;
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &cfg),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &l1), descriptor("application/vnd.oci.image.layer.v1.tar", &l2)],
    }))
    .unwrap();
    let size = (cfg.len() + l1.len() + l2.len()) as u64;
    (put(reg, repo, reference, OCI_MANIFEST, &manifest).await, size)
}

#[test]
fn catalog_filter_searches_and_counts_namespaces() {
    let all: Vec<String> = ["a/x/one", "a/x/two", "a/y", "b/Thing", "top"].map(String::from).into();
    let q = |search: &str, prefix: &str| CatalogQuery {
        search: search.into(),
        prefix: prefix.into(),
        offset: 0,
        limit: 10,
    };
    let (m, ns) = filter_catalog(all.clone(), &q("", ""));
    assert_eq!(m.len(), 5);
    let ns: Vec<_> = ns.iter().map(|n| (n.name.as_str(), n.repositories)).collect();
    assert_eq!(ns, [("a", 3), ("b", 1)]);

    let (m, ns) = filter_catalog(all.clone(), &q("", "a/"));
    assert_eq!(m, ["a/x/one", "a/x/two", "a/y"]);
    let ns: Vec<_> = ns.iter().map(|n| (n.name.as_str(), n.repositories)).collect();
    assert_eq!(ns, [("a/x", 2)]);

    // Case-insensitive, anywhere in the name; a prefix is a whole component.
    let (m, _) = filter_catalog(all.clone(), &q("THING", ""));
    assert_eq!(m, ["b/Thing"]);
    let (m, _) = filter_catalog(all, &q("", "a/x/o"));
    assert!(m.is_empty());
}

#[tokio::test]
async fn repository_lists_tags_with_sizes_platforms_and_referrers() {
    let (_dir, reg) = registry();
    let repo = name("team/app");
    let (amd, amd_size) = push_image(&reg, &repo, "1.0", "linux", "amd64").await;
    let (arm, arm_size) = push_image(&reg, &repo, "arm-only", "linux", "arm64").await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd.to_string(), "size": reg.get_manifest(&repo, &Reference::Digest(amd.clone())).await.unwrap().bytes.len(), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": arm.to_string(), "size": reg.get_manifest(&repo, &Reference::Digest(arm.clone())).await.unwrap().bytes.len(), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ]
    }))
    .unwrap();
    let index_digest = put(&reg, &repo, "multi", OCI_INDEX, &index).await;
    put(&reg, &repo, "latest", OCI_INDEX, &index).await;

    // A signature-like artifact whose subject is the 1.0 image.
    let empty = b"{}";
    push_blob(&reg, &repo, empty).await;
    let sig = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.signature",
        "config": descriptor("application/vnd.oci.empty.v1+json", empty),
        "layers": [descriptor("application/vnd.oci.empty.v1+json", empty)],
        "subject": {"mediaType": OCI_MANIFEST, "digest": amd.to_string(), "size": 1},
    }))
    .unwrap();
    let sig_digest = put(&reg, &repo, &Digest::sha256_of(&sig).to_string(), OCI_MANIFEST, &sig).await;

    let detail = reg.browse_repository(&repo).await.unwrap();
    let tags: Vec<_> = detail.tags.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(tags, ["1.0", "arm-only", "latest", "multi"]);
    let by = |n: &str| detail.tags.iter().find(|t| t.name == n).unwrap();
    assert_eq!(by("1.0").summary.size, amd_size);
    assert_eq!(by("1.0").summary.platforms, ["linux/amd64"]);
    assert_eq!(by("1.0").summary.kind, "image");
    assert!(by("1.0").pushed.is_some());
    assert_eq!(by("1.0").referrers.len(), 1);
    assert_eq!(by("1.0").referrers[0].digest, sig_digest);
    assert!(by("arm-only").referrers.is_empty());
    assert_eq!(by("multi").digest, index_digest);
    assert_eq!(by("multi").summary.kind, "index");
    assert_eq!(by("multi").summary.size, amd_size + arm_size);
    assert_eq!(by("multi").summary.platforms, ["linux/amd64", "linux/arm64/v8"]);

    let page = reg
        .browse_catalog(
            &CatalogQuery {
                limit: 10,
                ..Default::default()
            },
            |_| true,
        )
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.repositories[0].name, "team/app");
    assert_eq!(page.repositories[0].tags, 4);
    assert!(page.repositories[0].last_push.is_some());
    // Invisible repositories are neither listed nor counted.
    let hidden = reg.browse_catalog(&CatalogQuery::default(), |_| false).await.unwrap();
    assert_eq!(hidden.total, 0);

    // Deleting one tag leaves the other tag of the same index.
    reg.delete_manifest(&repo, &"multi".parse().unwrap()).await.unwrap();
    let after = reg.browse_repository(&repo).await.unwrap();
    let tags: Vec<_> = after.tags.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(tags, ["1.0", "arm-only", "latest"]);
}

#[tokio::test]
async fn image_detail_has_config_layers_history_and_matrix() {
    let (_dir, reg) = registry();
    let repo = name("app");
    let (amd, amd_size) = push_image(&reg, &repo, "amd", "linux", "amd64").await;
    let detail = reg.browse_image(&repo, &"amd".parse().unwrap()).await.unwrap();
    assert_eq!(detail.digest, amd);
    assert_eq!(detail.tags, ["amd"]);
    assert_eq!(detail.summary.size, amd_size);
    let config = detail.config.as_ref().unwrap();
    assert_eq!(config.env, ["PATH=/bin", "A=<script>"]);
    assert_eq!(config.entrypoint.as_deref(), Some(&["/app".to_string()][..]));
    assert_eq!(config.cmd.as_deref(), Some(&["--serve".to_string()][..]));
    assert_eq!(config.labels["org.opencontainers.image.title"], "demo");
    assert_eq!(config.exposed_ports, ["8080/tcp"]);
    assert_eq!(config.created.as_deref(), Some("2026-01-02T03:04:05Z"));
    assert_eq!(detail.layers.len(), 2);
    assert_eq!(detail.layers[1].size, 1000);
    // Layers get the history lines that made them, skipping empty ones.
    assert_eq!(detail.layers[0].created_by.as_deref(), Some("ADD rootfs /"));
    assert_eq!(detail.layers[1].created_by.as_deref(), Some("COPY app /app"));
    assert_eq!(detail.history.len(), 3);
    assert!(detail.manifest.contains("\"layers\""));

    let m = reg.get_manifest(&repo, &Reference::Digest(amd.clone())).await.unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": amd.to_string(), "size": m.bytes.len(), "platform": {"os": "linux", "architecture": "amd64"}}]
    }))
    .unwrap();
    let index_digest = put(&reg, &repo, "multi", OCI_INDEX, &index).await;
    let detail = reg.browse_image(&repo, &Reference::Digest(index_digest)).await.unwrap();
    assert!(detail.config.is_none());
    assert_eq!(detail.manifests.len(), 1);
    assert_eq!(detail.manifests[0].platform.as_deref(), Some("linux/amd64"));
    assert_eq!(detail.manifests[0].size, amd_size);
    assert!(detail.manifests[0].present);

    let missing = reg.browse_image(&repo, &"nope".parse().unwrap()).await;
    assert!(matches!(missing, Err(RegistryError::ManifestUnknown(_))));
    let missing = reg.browse_repository(&name("absent")).await;
    assert!(matches!(missing, Err(RegistryError::NameUnknown(_))));
}

#[tokio::test]
async fn a_tag_whose_manifest_is_gone_still_shows() {
    let (dir, reg) = registry();
    let repo = name("app");
    let (gone, _) = push_image(&reg, &repo, "gone", "linux", "amd64").await;
    push_image(&reg, &repo, "fine", "linux", "arm64").await;
    std::fs::remove_file(dir.path().join(layout::blob_data(&gone))).unwrap();
    // A fresh registry: nothing of the manifest left in memory.
    let reg = Registry::new(Arc::new(FsBackend::new(dir.path())), RegistryConfig::default());
    let detail = reg.browse_repository(&repo).await.unwrap();
    let kinds: Vec<_> = detail.tags.iter().map(|t| (t.name.as_str(), t.summary.kind)).collect();
    assert_eq!(kinds, [("fine", "image"), ("gone", "missing")]);
}
