//! The collector against the registry's own push paths, on the filesystem
//! backend: what is freed, what stays, and the interleavings of a pass with
//! pushes that the reference gate must order.

use super::*;
use crate::RegistryConfig;
use berth_spec::{Digest, Reference, RepoName};
use berth_storage::{ByteStream, FsBackend};
use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub(crate) fn registry() -> (tempfile::TempDir, Arc<Registry>) {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FsBackend::new(dir.path()));
    (dir, Arc::new(Registry::new(backend, RegistryConfig::default())))
}

pub(crate) fn now_opts() -> GcOptions {
    GcOptions {
        grace: Duration::ZERO,
        delete_untagged_after: None,
        dry_run: false,
        progress: None,
        yield_to_requests: false,
    }
}

pub(crate) fn stream(bytes: Vec<u8>) -> ByteStream {
    futures::stream::iter([Ok(Bytes::from(bytes))]).boxed()
}

pub(crate) fn sha256(bytes: &[u8]) -> Digest {
    Digest::sha256_of(bytes)
}

pub(crate) fn name(s: &str) -> RepoName {
    s.parse().unwrap()
}

pub(crate) async fn push_blob(reg: &Registry, repo: &RepoName, bytes: &[u8]) -> Digest {
    let d = sha256(bytes);
    reg.put_blob(repo, &d, stream(bytes.to_vec())).await.unwrap();
    d
}

pub(crate) fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": sha256(bytes).to_string(), "size": bytes.len()})
}

pub(crate) fn image(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": layers.iter().map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

pub(crate) async fn put(
    reg: &Registry,
    repo: &RepoName,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> Result<Digest> {
    let reference: Reference = reference.parse().unwrap();
    reg.put_manifest(repo, &reference, Some(media_type), Bytes::from(bytes.to_vec()), &[])
        .await
        .map(|p| p.digest)
}

/// Pushes config + layers + manifest under `tag`.
pub(crate) async fn push_image(reg: &Registry, repo: &RepoName, tag: &str, config: &[u8], layers: &[&[u8]]) -> Digest {
    push_blob(reg, repo, config).await;
    for l in layers {
        push_blob(reg, repo, l).await;
    }
    put(reg, repo, tag, OCI_MANIFEST, &image(config, layers)).await.unwrap()
}

pub(crate) async fn blob_readable(reg: &Registry, repo: &RepoName, d: &Digest) -> bool {
    reg.get_blob(repo, d, None, true).await.is_ok()
}

pub(crate) fn data_exists(dir: &tempfile::TempDir, d: &Digest) -> bool {
    dir.path().join(layout::blob_data(d)).exists()
}

#[tokio::test]
async fn unreferenced_blobs_go_and_images_stay() {
    let (dir, reg) = registry();
    let repo = name("gc/app");
    let kept = push_image(&reg, &repo, "v1", b"{\"c\":1}", &[b"layer-a", b"shared"]).await;
    let dropped = push_image(&reg, &repo, "v2", b"{\"c\":2}", &[b"layer-b", b"shared"]).await;
    let orphan = push_blob(&reg, &repo, b"never referenced").await;
    reg.delete_manifest(&repo, &Reference::Digest(dropped.clone()))
        .await
        .unwrap();

    let dry = reg
        .collect_garbage(&GcOptions {
            dry_run: true,
            ..now_opts()
        })
        .await
        .unwrap();
    // The deleted manifest, its config, its own layer, and the orphan.
    assert_eq!(dry.blobs_deleted, 4, "{dry:?}");
    assert!(data_exists(&dir, &orphan), "a dry run deletes nothing");

    let report = reg.collect_garbage(&now_opts()).await.unwrap();
    assert_eq!(report.blobs_deleted, 4, "{report:?}");
    assert_eq!(report.bytes_freed, dry.bytes_freed);
    for gone in [&orphan, &sha256(b"layer-b"), &sha256(b"{\"c\":2}"), &dropped] {
        assert!(!data_exists(&dir, gone), "{gone} should be gone");
        assert!(!blob_readable(&reg, &repo, gone).await);
    }
    for stays in [&kept, &sha256(b"layer-a"), &sha256(b"shared"), &sha256(b"{\"c\":1}")] {
        assert!(data_exists(&dir, stays), "{stays} must stay");
    }
    let m = reg.get_manifest(&repo, &"v1".parse().unwrap()).await.unwrap();
    assert_eq!(m.digest, kept);
    // A second pass finds nothing more.
    let again = reg.collect_garbage(&now_opts()).await.unwrap();
    assert_eq!((again.blobs_deleted, again.layer_links_deleted), (0, 0), "{again:?}");
}

#[tokio::test]
async fn the_grace_period_keeps_young_blobs() {
    let (dir, reg) = registry();
    let repo = name("gc/young");
    let layer = push_blob(&reg, &repo, b"pushed before its manifest").await;
    let report = reg
        .collect_garbage(&GcOptions {
            grace: Duration::from_secs(3600),
            ..now_opts()
        })
        .await
        .unwrap();
    assert_eq!(report.blobs_deleted, 0);
    assert!(data_exists(&dir, &layer));
}

#[tokio::test]
async fn index_children_and_referrers_stay_with_their_index_or_subject() {
    let (dir, reg) = registry();
    let repo = name("gc/multi");
    // Children pushed by digest only (as buildx does), then the index by tag.
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let config = format!("{{\"architecture\":\"{arch}\"}}").into_bytes();
        let layer = format!("layer-{arch}").into_bytes();
        push_blob(&reg, &repo, &config).await;
        push_blob(&reg, &repo, &layer).await;
        let m = image(&config, &[&layer]);
        let d = put(&reg, &repo, &sha256(&m).to_string(), OCI_MANIFEST, &m)
            .await
            .unwrap();
        children.push((d, m));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|(_, m)| descriptor(OCI_MANIFEST, m)).collect::<Vec<_>>(),
    }))
    .unwrap();
    put(&reg, &repo, "multi", OCI_INDEX, &index).await.unwrap();
    // A signature-like referrer of the index, untagged.
    push_blob(&reg, &repo, b"{}").await;
    let sig = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/example.signature",
        "config": descriptor("application/vnd.oci.empty.v1+json", b"{}"),
        "layers": [descriptor("application/vnd.oci.empty.v1+json", b"{}")],
        "subject": descriptor(OCI_INDEX, &index),
    }))
    .unwrap();
    let sig_digest = put(&reg, &repo, &sha256(&sig).to_string(), OCI_MANIFEST, &sig)
        .await
        .unwrap();
    // An untagged manifest nothing needs.
    let lone = push_image(&reg, &repo, "tmp", b"{\"lone\":1}", &[b"lone-layer"]).await;
    reg.delete_manifest(&repo, &Reference::Tag("tmp".parse().unwrap()))
        .await
        .unwrap();

    // Untagged manifests removed at once: the children and the referrer stay
    // (distribution's --delete-untagged deletes the children: #3178).
    let report = reg
        .collect_garbage(&GcOptions {
            delete_untagged_after: Some(Duration::ZERO),
            ..now_opts()
        })
        .await
        .unwrap();
    assert_eq!(report.manifests_deleted, 1, "only the lone untagged image: {report:?}");
    for (d, _) in &children {
        assert!(
            reg.get_manifest(&repo, &Reference::Digest(d.clone())).await.is_ok(),
            "child {d}"
        );
        assert!(data_exists(&dir, d));
    }
    assert!(reg.get_manifest(&repo, &Reference::Digest(sig_digest)).await.is_ok());
    assert!(reg.get_manifest(&repo, &Reference::Digest(lone.clone())).await.is_err());
    assert!(!data_exists(&dir, &lone));
    assert!(!data_exists(&dir, &sha256(b"lone-layer")));
    assert!(data_exists(&dir, &sha256(b"layer-arm64")));
}

#[tokio::test]
async fn layer_links_unused_in_a_repository_go_while_the_blob_lives_on() {
    let (dir, reg) = registry();
    let (a, b) = (name("gc/a"), name("gc/b"));
    push_image(&reg, &a, "v1", b"{\"a\":1}", &[b"common"]).await;
    // Pushed to b, never used there.
    push_blob(&reg, &b, b"common").await;
    let report = reg.collect_garbage(&now_opts()).await.unwrap();
    assert_eq!((report.blobs_deleted, report.layer_links_deleted), (0, 1), "{report:?}");
    assert!(!blob_readable(&reg, &b, &sha256(b"common")).await);
    assert!(blob_readable(&reg, &a, &sha256(b"common")).await);
    assert!(data_exists(&dir, &sha256(b"common")));
}

/// A manifest PUT in flight (its blobs pinned) when the pass sweeps: the
/// blob it names is spared, and the manifest it then stores is whole.
#[tokio::test]
async fn a_blob_pinned_by_a_push_is_spared() {
    let (dir, reg) = registry();
    let repo = name("gc/race1");
    let config = push_blob(&reg, &repo, b"{\"r\":1}").await;
    let layer = push_blob(&reg, &repo, b"race-layer").await;
    // The push has checked its blobs and not yet written its manifest.
    let pins = reg.gate.pin_all([&config, &layer]).await;
    let report = reg.collect_garbage(&now_opts()).await.unwrap();
    assert_eq!(report.blobs_deleted, 0, "{report:?}");
    assert_eq!(report.spared_in_use, 2);
    drop(pins);
    put(&reg, &repo, "v1", OCI_MANIFEST, &image(b"{\"r\":1}", &[b"race-layer"]))
        .await
        .unwrap();
    assert!(data_exists(&dir, &layer));
    // Released during this pass's run: the next pass still sees a reference.
    let report = reg.collect_garbage(&now_opts()).await.unwrap();
    assert_eq!(report.blobs_deleted, 0, "{report:?}");
}

/// A push that finished while the pass was marking (after the pass began)
/// touched its blobs: the pass may not have seen its manifest, so it spares them.
#[tokio::test]
async fn a_blob_touched_after_the_pass_began_is_spared() {
    let (dir, reg) = registry();
    let repo = name("gc/race2");
    let layer = push_blob(&reg, &repo, b"touched").await;
    let pass_start = Instant::now();
    drop(reg.gate.pin(&layer).await);
    assert_eq!(
        reg.gate.claim_for_deletion(&layer, pass_start, Duration::ZERO),
        Err(gate::Refusal::Touched)
    );
    assert!(data_exists(&dir, &layer));
}

/// The collector claims a blob first; a manifest PUT naming it then waits
/// for the deletion and is refused (the client uploads the blob again)
/// instead of being acknowledged over missing bytes.
#[tokio::test]
async fn a_push_during_a_deletion_waits_and_is_refused() {
    let (dir, reg) = registry();
    let repo = name("gc/race3");
    push_blob(&reg, &repo, b"{\"r\":3}").await;
    let layer = push_blob(&reg, &repo, b"deleted under a push").await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    reg.gate
        .claim_for_deletion(&layer, Instant::now(), Duration::ZERO)
        .unwrap();
    assert!(!blob_readable(&reg, &repo, &layer).await, "unknown while being deleted");
    let pusher = {
        let reg = reg.clone();
        let repo = repo.clone();
        tokio::spawn(async move {
            put(
                &reg,
                &repo,
                "v1",
                OCI_MANIFEST,
                &image(b"{\"r\":3}", &[b"deleted under a push"]),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!pusher.is_finished(), "the PUT waits for the deletion");
    reg.backend.delete(&layout::layer_link(&repo, &layer)).await.unwrap();
    reg.backend.delete_prefix(&layout::blob_dir(&layer)).await.unwrap();
    reg.gate.release(&layer);
    let result = pusher.await.unwrap();
    assert!(
        matches!(result, Err(RegistryError::ManifestBlobUnknown(ref d)) if d == &layer),
        "{result:?}"
    );
    // The client uploads again; now the push succeeds and is whole.
    push_blob(&reg, &repo, b"deleted under a push").await;
    put(
        &reg,
        &repo,
        "v1",
        OCI_MANIFEST,
        &image(b"{\"r\":3}", &[b"deleted under a push"]),
    )
    .await
    .unwrap();
    assert!(data_exists(&dir, &layer));
}

/// Pushers of images sharing layers, tag moves and deletes, against a
/// collector running in a loop with no grace period at all (so every blob is
/// a candidate the moment it is unreferenced). Every acknowledged image that
/// is still tagged at the end reads whole; after a last pass nothing
/// unreferenced is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_and_a_collector_in_a_loop_lose_no_acknowledged_image() {
    let (dir, reg) = registry();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (reg, stop) = (reg.clone(), stop.clone());
        tokio::spawn(async move {
            let mut passes = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                reg.collect_garbage(&now_opts()).await.unwrap();
                passes += 1;
                tokio::task::yield_now().await;
            }
            passes
        })
    };
    let mut pushers = Vec::new();
    for p in 0..8u32 {
        let reg = reg.clone();
        pushers.push(tokio::spawn(async move {
            let repo = name(&format!("stress/p{}", p % 4));
            let mut acked = Vec::new();
            let mut refused = 0;
            for i in 0..12u32 {
                let shared = format!("shared-{}", i % 3).into_bytes();
                let own = format!("own-{p}-{i}").into_bytes();
                let config = format!("{{\"p\":{p},\"i\":{i}}}").into_bytes();
                let tag = format!("t{}", i % 4);
                // As a client does: on MANIFEST_BLOB_UNKNOWN, upload again and retry.
                let mut tries = 0;
                loop {
                    for b in [&config, &shared, &own] {
                        let d = sha256(b);
                        if !blob_readable(&reg, &repo, &d).await {
                            push_blob(&reg, &repo, b).await;
                        }
                    }
                    match put(&reg, &repo, &tag, OCI_MANIFEST, &image(&config, &[&shared, &own])).await {
                        Ok(d) => {
                            acked.push((
                                repo.clone(),
                                tag.clone(),
                                d,
                                vec![config.clone(), shared.clone(), own.clone()],
                            ));
                            break;
                        }
                        Err(RegistryError::ManifestBlobUnknown(_)) if tries < 50 => {
                            refused += 1;
                            tries += 1;
                        }
                        Err(e) => panic!("push failed: {e}"),
                    }
                }
                if i % 5 == 4 {
                    let (_, _, d, _) = acked.pop().unwrap();
                    reg.delete_manifest(&repo, &Reference::Digest(d)).await.unwrap();
                }
            }
            (acked, refused)
        }));
    }
    let mut acked = Vec::new();
    for p in pushers {
        let (a, _refused) = p.await.unwrap();
        acked.extend(a);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let passes = collector.await.unwrap();
    assert!(passes > 1, "the collector must have run during the pushes");

    // Every acknowledged image its tag still points at is whole.
    let mut checked = 0;
    for (repo, tag, digest, blobs) in &acked {
        let Ok(m) = reg.get_manifest(repo, &tag.parse().unwrap()).await else {
            continue;
        };
        if &m.digest != digest {
            continue; // moved by a later push
        }
        for b in blobs {
            assert!(blob_readable(&reg, repo, &sha256(b)).await, "{repo}:{tag} lost a blob");
            assert!(data_exists(&dir, &sha256(b)));
        }
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} images left to check");

    // A last pass leaves exactly what the kept manifests reference.
    reg.collect_garbage(&now_opts()).await.unwrap();
    let stored: HashSet<Digest> = reg
        .stored_blobs()
        .await
        .unwrap()
        .into_iter()
        .map(|(d, _, _)| d)
        .collect();
    let mut referenced = HashSet::new();
    for repo in reg.stored_repositories().await.unwrap() {
        for d in reg.list_digest_dirs(&layout::revisions_dir(&repo)).await.unwrap() {
            // A deleted manifest leaves its (empty) revision directory.
            if !dir.path().join(layout::manifest_revision_link(&repo, &d)).exists() {
                continue;
            }
            let m = reg.get_manifest(&repo, &Reference::Digest(d.clone())).await.unwrap();
            let parsed = Manifest::parse(&m.bytes, Some(&m.media_type)).unwrap();
            referenced.extend(parsed.required_blobs().map(|x| x.digest.clone()));
            referenced.insert(d);
        }
    }
    assert_eq!(stored, referenced, "garbage left, or referenced blobs missing");
}

/// A manifest read (so cached), deleted, collected and pushed again is
/// stored again: the cache must not stand in for bytes the collector deleted.
#[tokio::test]
async fn a_collected_manifest_pushed_again_is_stored_again() {
    let (dir, reg) = registry();
    let repo = name("gc/again");
    let config: &[u8] = b"{\"again\":1}";
    let layer: &[u8] = b"again-layer";
    let digest = push_image(&reg, &repo, "v1", config, &[layer]).await;
    reg.get_manifest(&repo, &"v1".parse().unwrap()).await.unwrap();
    reg.delete_manifest(&repo, &Reference::Digest(digest.clone()))
        .await
        .unwrap();
    reg.collect_garbage(&now_opts()).await.unwrap();
    assert!(!data_exists(&dir, &digest));
    let again = push_image(&reg, &repo, "v1", config, &[layer]).await;
    assert_eq!(again, digest);
    assert!(data_exists(&dir, &digest), "the pushed manifest's bytes must be stored");
}

/// A pass dropped while it holds a claim (its task cancelled) releases it:
/// a push of that digest goes on instead of waiting for ever.
#[tokio::test]
async fn a_claim_dropped_half_way_is_released() {
    let (_dir, reg) = registry();
    let repo = name("gc/dropped");
    let layer = push_blob(&reg, &repo, b"claimed, then the pass is dropped").await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    let pass = PassClaims {
        started: Instant::now(),
        grace: Duration::ZERO,
        horizon: None,
    };
    let claim = reg.claim(&layer, true, &pass).await.unwrap().expect("nothing pins it");
    assert!(!blob_readable(&reg, &repo, &layer).await, "unknown while claimed");
    drop(claim);
    assert!(blob_readable(&reg, &repo, &layer).await);
    let pinned = tokio::time::timeout(Duration::from_secs(2), reg.pin_references([&layer])).await;
    assert!(pinned.is_ok(), "the pin does not wait for a dropped claim");
}
