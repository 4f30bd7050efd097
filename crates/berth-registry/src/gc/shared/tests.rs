//! The shared protocol with two registries ("replicas") on one data
//! directory, each with its own in-memory gate, so that only the store
//! orders them: what the pins, claims and lease decide, and the interleavings
//! of one replica's pushes with the other's pass. The same protocol runs on
//! Ceph RGW in `crates/berth/tests/s3_gc.rs`.

use super::*;
use crate::gc::registry_tests::{
    blob_readable, data_exists, image, name, now_opts, push_blob, push_image, put, sha256, OCI_MANIFEST,
};
use crate::{GcOptions, Registry, RegistryConfig};
use berth_spec::{Reference, RepoName};
use berth_storage::FsBackend;

/// Short enough for tests: a pin refuses claims for about
/// 2 x `pin_validity` (+1 s of store-time resolution).
fn timing() -> SharedTiming {
    SharedTiming {
        pin_validity: Duration::from_millis(250),
        claim_limit: Duration::from_secs(10),
        stale_claim: Duration::from_millis(400),
        lease_ttl: Duration::from_secs(2),
        poll: Duration::from_millis(20),
    }
}

/// How long after its last pin a digest becomes collectable.
const SETTLE: Duration = Duration::from_millis(1_700);

fn replicas(dir: &tempfile::TempDir) -> (Arc<Registry>, Arc<Registry>) {
    let replica = || {
        let backend: Arc<dyn Backend> = Arc::new(FsBackend::new(dir.path()));
        let config = RegistryConfig {
            exclusive_storage: false,
            gc_shared: timing(),
            ..RegistryConfig::default()
        };
        Arc::new(Registry::new(backend, config))
    };
    (replica(), replica())
}

fn gate(reg: &Registry) -> &SharedGate {
    reg.shared_gate.as_ref().expect("shared storage")
}

#[tokio::test]
async fn a_replica_collects_what_no_replica_references() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = replicas(&dir);
    let repo = name("shared/app");
    let kept = push_image(&a, &repo, "v1", b"{\"s\":1}", &[b"kept layer"]).await;
    let orphan = push_blob(&b, &repo, b"pushed by b, never referenced").await;

    // Just pushed: the pins spare everything.
    let young = b.collect_garbage(&now_opts()).await.unwrap();
    assert_eq!(young.blobs_deleted, 0, "{young:?}");
    assert!(young.spared_in_use >= 1, "{young:?}");

    tokio::time::sleep(SETTLE).await;
    let report = b.collect_garbage(&now_opts()).await.unwrap();
    assert_eq!(report.blobs_deleted, 1, "{report:?}");
    assert!(!data_exists(&dir, &orphan));
    for stays in [&kept, &sha256(b"kept layer"), &sha256(b"{\"s\":1}")] {
        assert!(data_exists(&dir, stays), "{stays} must stay");
        assert!(blob_readable(&a, &repo, stays).await);
    }
    // The pass removed the pins it no longer needs, and left no claim or lease.
    let backend = FsBackend::new(dir.path());
    assert!(backend.list(&layout::gc_claims_dir()).await.unwrap().is_empty());
    assert!(backend.head(&layout::gc_lease()).await.unwrap_err().is_not_found());
    assert!(
        backend.list(&layout::gc_pins_of(&orphan)).await.unwrap().is_empty(),
        "old pins are forgotten"
    );
}

/// The pusher's pin is written first: the other replica's claim sees it and
/// spares the digest, however long the push holds it.
#[tokio::test]
async fn a_pin_in_the_store_spares_the_digest_on_another_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = replicas(&dir);
    let repo = name("shared/pinned");
    let layer = push_blob(&a, &repo, b"layer a is about to reference").await;
    tokio::time::sleep(SETTLE).await;

    let pins = a.pin_references([&layer]).await.unwrap();
    let report = b.collect_garbage(&now_opts()).await.unwrap();
    assert_eq!(report.blobs_deleted, 0, "{report:?}");
    assert_eq!(report.spared_in_use, 1, "{report:?}");
    assert!(data_exists(&dir, &layer));
    pins.confirm().unwrap();
    drop(pins);

    // Once the pin is older than the horizon, the unreferenced layer goes.
    tokio::time::sleep(SETTLE).await;
    let report = b.collect_garbage(&now_opts()).await.unwrap();
    assert_eq!(report.blobs_deleted, 1, "{report:?}");
}

/// The collector's claim is written first: a manifest PUT on the other
/// replica waits until the deletion is over, then finds the layer gone and is
/// refused (the client uploads it again), rather than acknowledged over
/// missing bytes.
#[tokio::test]
async fn a_push_on_one_replica_waits_for_the_other_replicas_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = replicas(&dir);
    let repo = name("shared/race");
    push_blob(&a, &repo, b"{\"r\":1}").await;
    let layer = push_blob(&a, &repo, b"deleted under a push").await;
    tokio::time::sleep(SETTLE).await;

    let claim = gate(&b)
        .claim(&layer, SystemTime::now())
        .await
        .unwrap()
        .expect("nothing pins the layer");
    let pusher = {
        let (a, repo) = (a.clone(), repo.clone());
        tokio::spawn(async move {
            let manifest = image(b"{\"r\":1}", &[b"deleted under a push"]);
            put(&a, &repo, "v1", OCI_MANIFEST, &manifest).await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pusher.is_finished(), "the PUT waits while the layer is claimed");
    b.backend.delete(&layout::layer_link(&repo, &layer)).await.unwrap();
    b.backend.delete_prefix(&layout::blob_dir(&layer)).await.unwrap();
    gate(&b).release(claim).await.unwrap();
    let result = pusher.await.unwrap();
    assert!(
        matches!(result, Err(RegistryError::ManifestBlobUnknown(ref d)) if d == &layer),
        "{result:?}"
    );
    // The client uploads again: the push succeeds and reads whole.
    push_blob(&a, &repo, b"deleted under a push").await;
    let manifest = image(b"{\"r\":1}", &[b"deleted under a push"]);
    put(&a, &repo, "v1", OCI_MANIFEST, &manifest).await.unwrap();
    assert!(blob_readable(&b, &repo, &layer).await);
}

/// The claim is checked after the pin is written: a claim written meanwhile
/// by the other replica sees the pin and is refused (and removed).
#[tokio::test]
async fn a_claim_after_a_pin_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = replicas(&dir);
    let d = sha256(b"any digest");
    let horizon = SystemTime::now() - Duration::from_secs(5);
    let pins = a.pin_references([&d]).await.unwrap();
    let refused = gate(&b).claim(&d, horizon).await.unwrap();
    assert!(matches!(refused, Err(Busy::Pinned)));
    assert!(b.backend.list(&layout::gc_claims_dir()).await.unwrap().is_empty());
    drop(pins);
    // A horizon after the pin: the pin no longer refuses.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let later = SystemTime::now() + Duration::from_secs(1);
    let claim = gate(&b).claim(&d, later).await.unwrap().expect("old pin");
    gate(&b).release(claim).await.unwrap();
}

/// A collector that died leaves its claim: a pusher waits `stale_claim`,
/// then removes it and goes on.
#[tokio::test]
async fn a_pusher_removes_a_claim_whose_collector_died() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = replicas(&dir);
    let d = sha256(b"claimed by a dead collector");
    a.backend
        .put(&layout::gc_claim(&d), Bytes::from_static(b"dead"))
        .await
        .unwrap();
    let started = Instant::now();
    let pins = a.pin_references([&d]).await.unwrap();
    let waited = started.elapsed();
    assert!(waited >= timing().stale_claim, "waited only {waited:?}");
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert!(a.backend.head(&layout::gc_claim(&d)).await.unwrap_err().is_not_found());
    pins.confirm().unwrap();
}

/// An operation that took longer than a pin is valid fails before it
/// acknowledges (503, retry): its pin may no longer protect it.
#[tokio::test]
async fn references_written_too_long_after_their_pins_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = replicas(&dir);
    let pins = a.pin_references([&sha256(b"slow")]).await.unwrap();
    tokio::time::sleep(timing().pin_validity + Duration::from_millis(50)).await;
    let err = pins.confirm().unwrap_err();
    assert!(
        matches!(err, RegistryError::Storage(StorageError::Unavailable { .. })),
        "{err:?}"
    );
}

/// One collector per bucket: the lease. A pass on the other replica while it
/// is held is refused as busy; a lease not renewed within its time is taken
/// over, with the next epoch.
#[tokio::test]
async fn one_pass_at_a_time_across_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = replicas(&dir);
    let clock = gate(&a).clock().await.unwrap();
    let lease = gate(&a).acquire_lease(&clock).await.unwrap().expect("free");
    assert!(gate(&b).acquire_lease(&clock).await.unwrap().is_none());
    let err = b.collect_garbage(&now_opts()).await.unwrap_err();
    assert!(matches!(err, RegistryError::Busy(_)), "{err:?}");
    // A dry run needs no lease.
    let dry = GcOptions {
        dry_run: true,
        ..now_opts()
    };
    b.collect_garbage(&dry).await.unwrap();
    gate(&a).release_lease(lease).await.unwrap();
    b.collect_garbage(&now_opts()).await.unwrap();

    // a takes it and stops renewing (a crash): after lease_ttl, b takes over.
    let clock = gate(&a).clock().await.unwrap();
    let stalled = gate(&a).acquire_lease(&clock).await.unwrap().expect("free");
    assert_eq!(stalled.epoch, 1);
    tokio::time::sleep(timing().lease_ttl + Duration::from_millis(1_100)).await;
    let clock = gate(&b).clock().await.unwrap();
    let taken = gate(&b).acquire_lease(&clock).await.unwrap().expect("stale lease");
    assert_eq!(taken.epoch, 2);
    // The stalled holder finds out when it renews, and does not remove b's lease.
    let mut stalled = stalled;
    stalled.renewed = Instant::now() - timing().lease_ttl;
    assert!(matches!(
        gate(&a).renew(&mut stalled).await,
        Err(RegistryError::Busy(_))
    ));
    gate(&a).release_lease(stalled).await.unwrap();
    assert!(b.backend.head(&layout::gc_lease()).await.is_ok());
    gate(&b).release_lease(taken).await.unwrap();
}

/// Pushes on two replicas sharing layers while both run passes in a loop:
/// every acknowledged image stays whole; once quiet, what nothing references
/// is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_on_two_replicas_against_collectors_on_both() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = replicas(&dir);
    let repo = name("shared/stress");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut collectors = Vec::new();
    for reg in [a.clone(), b.clone()] {
        let stop = stop.clone();
        collectors.push(tokio::spawn(async move {
            let mut passes = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match reg.collect_garbage(&now_opts()).await {
                    Ok(_) => passes += 1,
                    Err(RegistryError::Busy(_)) => {}
                    Err(e) => panic!("pass failed: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            passes
        }));
    }
    let mut pushers = Vec::new();
    for p in 0..4u8 {
        let reg = if p % 2 == 0 { a.clone() } else { b.clone() };
        let repo = repo.clone();
        pushers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..12u8 {
                let config = format!("{{\"p\":{p},\"i\":{i}}}").into_bytes();
                let own = format!("own layer {p} {i}").into_bytes();
                let shared = format!("shared layer {}", i % 3).into_bytes();
                let tag = format!("p{p}-{i}");
                // A push refused because a layer was collected under it is
                // retried, as a client does (it uploads the layer again).
                for _attempt in 0..5 {
                    push_blob(&reg, &repo, &config).await;
                    push_blob(&reg, &repo, &own).await;
                    push_blob(&reg, &repo, &shared).await;
                    let manifest = image(&config, &[&own, &shared]);
                    match put(&reg, &repo, &tag, OCI_MANIFEST, &manifest).await {
                        Ok(d) => {
                            acknowledged.push((tag.clone(), d, vec![sha256(&config), sha256(&own), sha256(&shared)]));
                            break;
                        }
                        Err(RegistryError::ManifestBlobUnknown(_)) => continue,
                        Err(e) => panic!("push failed: {e}"),
                    }
                }
                // Some orphans and some deleted images for the collectors.
                push_blob(&reg, &repo, format!("orphan {p} {i}").as_bytes()).await;
            }
            acknowledged
        }));
    }
    let mut images = Vec::new();
    for p in pushers {
        images.extend(p.await.unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let passes: usize = futures::future::join_all(collectors)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .sum();
    assert!(passes >= 2, "the collectors ran ({passes} passes)");
    assert_eq!(images.len(), 48, "every push was eventually acknowledged");
    tokio::time::sleep(SETTLE).await;
    a.collect_garbage(&now_opts()).await.unwrap();
    for (tag, digest, blobs) in &images {
        for reg in [&a, &b] {
            let m = reg.get_manifest(&repo, &tag.parse().unwrap()).await.unwrap();
            assert_eq!(&m.digest, digest);
            for blob in blobs {
                assert!(blob_readable(reg, &repo, blob).await, "{tag}: {blob} lost");
            }
        }
    }
    for p in 0..4u8 {
        for i in 0..12u8 {
            assert!(!data_exists(&dir, &sha256(format!("orphan {p} {i}").as_bytes())));
        }
    }
}

/// Two replicas whose rules keep the newest tag of `ret/**`, make the tags
/// of `imm/**` immutable, and let `q/**` hold 3000 bytes.
fn replicas_with_rules(dir: &tempfile::TempDir) -> (Arc<Registry>, Arc<Registry>) {
    let replica = || {
        let backend: Arc<dyn Backend> = Arc::new(FsBackend::new(dir.path()));
        let config = RegistryConfig {
            exclusive_storage: false,
            gc_shared: timing(),
            rules: crate::Rules {
                retention: vec![crate::RetentionRule::new("ret/**", Some(1), None, None).unwrap()],
                immutable: vec![crate::ImmutableRule::new("imm/**", None).unwrap()],
                quotas: vec![crate::QuotaRule::new("q/**", 3000).unwrap()],
            },
            ..RegistryConfig::default()
        };
        Arc::new(Registry::new(backend, config))
    };
    (replica(), replica())
}

/// A push of a tag that a collector on another replica claimed (and
/// removes, having judged the tag before the push) waits for the removal,
/// then writes the tag again: the acknowledged tag stays.
#[tokio::test]
async fn a_tag_pushed_under_a_retention_claim_is_written_again_after_the_removal() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = replicas_with_rules(&dir);
    let repo = name("ret/app");
    push_image(&a, &repo, "old", b"{\"c\":1}", &[b"layer one"]).await;
    let tag: Tag = "old".parse().unwrap();

    // The collector on b judged `old` (and read it again): it claims it.
    let claim = gate(&b).claim_tag(&repo, &tag).await.unwrap();
    let pusher = {
        let (a, repo) = (a.clone(), repo.clone());
        tokio::spawn(async move { push_image(&a, &repo, "old", b"{\"c\":2}", &[b"layer two"]).await })
    };
    let pushed = image(b"{\"c\":2}", &[b"layer two"]);
    let new_digest = sha256(&pushed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.tag_digest(&repo, &tag).await.unwrap().as_ref() != Some(&new_digest) {
        assert!(Instant::now() < deadline, "the push never wrote the tag");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pusher.is_finished(), "the push waits while the tag is claimed");
    // The collector removes the tag it judged, then lets go.
    b.backend.delete_prefix(&layout::tag_dir(&repo, &tag)).await.unwrap();
    claim.release().await.unwrap();
    assert_eq!(pusher.await.unwrap(), new_digest);
    assert_eq!(b.tag_digest(&repo, &tag).await.unwrap(), Some(new_digest));
}

/// A pass on shared storage removes the tags retention judged, and no tag
/// pushed again since; it leaves no claim behind.
#[tokio::test]
async fn retention_on_shared_storage_removes_what_it_judged_and_leaves_no_claim() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = replicas_with_rules(&dir);
    let repo = name("ret/app");
    push_image(&a, &repo, "first", b"{\"c\":1}", &[b"l1"]).await;
    push_image(&a, &repo, "second", b"{\"c\":2}", &[b"l2"]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let newest = push_image(&a, &repo, "third", b"{\"c\":3}", &[b"l3"]).await;
    let dry = b
        .collect_garbage(&GcOptions {
            dry_run: true,
            ..now_opts()
        })
        .await
        .unwrap();
    assert_eq!(dry.tags_deleted, vec!["ret/app:first", "ret/app:second"]);
    assert_eq!(a.tags(&repo).await.unwrap().len(), 3, "a dry run removes nothing");
    let report = b.collect_garbage(&now_opts()).await.unwrap();
    assert_eq!(report.tags_deleted, vec!["ret/app:first", "ret/app:second"]);
    assert_eq!(a.tags(&repo).await.unwrap(), vec!["third"]);
    assert_eq!(
        a.tag_digest(&repo, &"third".parse().unwrap()).await.unwrap(),
        Some(newest)
    );
    let backend = FsBackend::new(dir.path());
    assert!(
        backend
            .list("berth/v1/gc/tag-claims/ret/app/_tag")
            .await
            .unwrap()
            .is_empty(),
        "no claim left"
    );
}

/// Two replicas pushing the same immutable tag to different digests at the
/// same moment: each checks that the tag is absent, and the store lets only
/// one of them create it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_first_pushes_of_an_immutable_tag_on_two_replicas_leave_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = replicas_with_rules(&dir);
    let repo = name("imm/app");
    let (ma, mb) = (image(b"{\"c\":\"a\"}", &[b"la"]), image(b"{\"c\":\"b\"}", &[b"lb"]));
    for (r, blobs) in [
        (&a, [&b"{\"c\":\"a\"}"[..], b"la"]),
        (&b, [&b"{\"c\":\"b\"}"[..], b"lb"]),
    ] {
        for blob in blobs {
            push_blob(r, &repo, blob).await;
        }
    }
    for round in 0..12 {
        let tag = format!("v{round}");
        let (ra, rb) = tokio::join!(
            put(&a, &repo, &tag, OCI_MANIFEST, &ma),
            put(&b, &repo, &tag, OCI_MANIFEST, &mb)
        );
        let stored = a.tag_digest(&repo, &tag.parse().unwrap()).await.unwrap();
        match (ra, rb) {
            (Ok(d), Err(RegistryError::Denied(_))) | (Err(RegistryError::Denied(_)), Ok(d)) => {
                assert_eq!(stored, Some(d), "round {round}: the tag points at the winner")
            }
            other => panic!("round {round}: one push must win and the other be refused: {other:?}"),
        }
    }
}

/// An image of about 1,700 bytes (its manifest, config and a 1,200-byte
/// layer): one fits the quota of `q/**`, two do not.
fn big_image(n: u8) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let config = format!("{{\"n\":{n}}}").into_bytes();
    let layer = vec![n; 1200];
    let manifest = image(&config, &[&layer]);
    (config, layer, manifest)
}

async fn push_big(reg: &Registry, repo: &RepoName, tag: &str, n: u8) -> Result<Digest> {
    let (config, layer, manifest) = big_image(n);
    push_blob(reg, repo, &config).await;
    push_blob(reg, repo, &layer).await;
    put(reg, repo, tag, OCI_MANIFEST, &manifest).await
}

/// A replica that counted the quota before another replica pushed counts
/// that push too (from the quota's log in the store), and refuses the push
/// that no longer fits.
#[tokio::test]
async fn a_quota_counts_what_another_replica_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = replicas_with_rules(&dir);
    let repo = name("q/app");
    // b counts the (empty) quota first.
    assert_eq!(b.usage().await.unwrap().quotas[0].used, 0);
    push_big(&a, &repo, "one", 1).await.unwrap();
    let refused = push_big(&b, &repo, "two", 2).await;
    assert!(
        matches!(&refused, Err(RegistryError::Denied(m)) if m.contains("quota exceeded")),
        "{refused:?}"
    );
    let used = b.usage().await.unwrap().quotas[0].used;
    assert!((1600..=3000).contains(&used), "b counts a's image: {used}");
    // The same image again adds nothing, on either replica.
    push_big(&b, &repo, "one-again", 1).await.unwrap();
}

/// Two replicas pushing at the same moment images that fit the quota one at
/// a time: the quota's lock in the store lets exactly one in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_pushes_on_two_replicas_cannot_both_fill_a_quota() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = replicas_with_rules(&dir);
    let repo = name("q/race");
    assert_eq!(a.usage().await.unwrap().quotas[0].used, 0);
    assert_eq!(b.usage().await.unwrap().quotas[0].used, 0);
    let (ra, rb) = tokio::join!(push_big(&a, &repo, "a", 1), push_big(&b, &repo, "b", 2));
    match (&ra, &rb) {
        (Ok(_), Err(RegistryError::Denied(_))) | (Err(RegistryError::Denied(_)), Ok(_)) => {}
        other => panic!("exactly one push must fit: {other:?}"),
    }
    let backend = FsBackend::new(dir.path());
    let id = crate::rules::ledger::quota_id("q/**");
    assert!(
        backend.head(&layout::quota_lock(&id)).await.unwrap_err().is_not_found(),
        "no lock left"
    );
}

/// A pass frees a deleted image's bytes for every replica: it folds the old
/// log entries into the walk and starts a new generation, and the other
/// replica counts afresh.
#[tokio::test]
async fn a_pass_on_one_replica_frees_quota_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = replicas_with_rules(&dir);
    let repo = name("q/app");
    push_big(&a, &repo, "one", 1).await.unwrap();
    assert!(push_big(&a, &repo, "two", 2).await.is_err(), "full");
    a.delete_manifest(&repo, &"one".parse().unwrap()).await.unwrap();
    let (_, _, manifest) = big_image(1);
    a.delete_manifest(&repo, &Reference::Digest(sha256(&manifest)))
        .await
        .unwrap();
    tokio::time::sleep(SETTLE).await;
    let report = b.collect_garbage(&now_opts()).await.unwrap();
    assert!(report.blobs_deleted >= 2, "{report:?}");
    let backend = FsBackend::new(dir.path());
    let id = crate::rules::ledger::quota_id("q/**");
    assert!(
        backend.list(&layout::quota_log_dir(&id)).await.unwrap().is_empty(),
        "the old entries are folded into the walk"
    );
    assert_eq!(a.usage().await.unwrap().quotas[0].used, 0);
    push_big(&a, &repo, "two", 2).await.unwrap();
}

/// On shared storage the catalog is paged from the index, once complete:
/// pushes index their repositories; a repository written behind berth's back
/// (distribution on the same bucket) is added by a reconciliation, and one
/// that is no more is removed.
#[tokio::test]
async fn the_catalog_pages_from_the_index_once_it_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = replicas(&dir);
    for repo in ["c", "a/x", "b", "a-y"] {
        push_blob(&a, &name(repo), repo.as_bytes()).await;
    }
    // Written without berth: no entry.
    let raw = FsBackend::new(dir.path());
    let hidden = sha256(b"hidden");
    raw.put(
        &layout::layer_link(&name("zed"), &hidden),
        Bytes::from(layout::link_content(&hidden)),
    )
    .await
    .unwrap();
    let page = |reg: Arc<Registry>, last: Option<&'static str>, n: Option<usize>| async move {
        reg.catalog_page(last, n, |_| true).await.unwrap()
    };
    // Not complete yet: the walk, which sees everything.
    assert!(!b.catalog_index_usable().await.unwrap());
    assert_eq!(
        page(b.clone(), None, None).await.repositories,
        ["a-y", "a/x", "b", "c", "zed"]
    );

    let repair = b.reconcile_catalog_index(None, None).await.unwrap();
    assert_eq!(repair.added, 1, "only the repository written behind berth's back");
    assert!(a.catalog_index_usable().await.unwrap());
    let first = page(a.clone(), None, Some(2)).await;
    assert_eq!(
        (first.repositories.as_slice(), first.more),
        (&["a-y".to_owned(), "a/x".to_owned()][..], true)
    );
    let next = page(a.clone(), Some("a/x"), Some(2)).await;
    assert_eq!(next.repositories, ["b", "c"]);
    assert_eq!(page(a.clone(), Some("c"), Some(2)).await.repositories, ["zed"]);
    // A cursor that is no name, and a filter.
    assert_eq!(page(a.clone(), Some("a0"), None).await.repositories, ["b", "c", "zed"]);
    let only_a = a.catalog_page(None, Some(5), |n| n.starts_with('a')).await.unwrap();
    assert_eq!(only_a.repositories, ["a-y", "a/x"]);

    // The pages come from the index: an entry removed is a name unlisted...
    let root = layout::catalog_index_root();
    raw.delete(&format!("{root}/{}", layout::catalog_entry("b")))
        .await
        .unwrap();
    assert_eq!(
        page(a.clone(), None, None).await.repositories,
        ["a-y", "a/x", "c", "zed"]
    );
    // ...until a reconciliation; which also drops the entry of a repository
    // that lost every link, once older than the pass.
    raw.delete_prefix(&layout::repository(&name("zed"))).await.unwrap();
    let since = SystemTime::now() + Duration::from_secs(2);
    let repair = a.reconcile_catalog_index(None, Some(since)).await.unwrap();
    assert_eq!(repair, crate::catalog_index::IndexRepair { added: 1, removed: 1 });
    assert_eq!(page(b.clone(), None, None).await.repositories, ["a-y", "a/x", "b", "c"]);
}
