use super::retention::{tags_to_remove, TagInfo};
use super::*;
use crate::gc::registry_tests::image;
use crate::gc::registry_tests::{data_exists, name, now_opts, push_blob, push_image, put, OCI_MANIFEST};
use crate::{GcOptions, Registry, RegistryConfig, RegistryError};
use berth_spec::{Digest, Reference};
use berth_storage::{layout, FsBackend};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn pattern(s: &str) -> Pattern {
    Pattern::parse(s).unwrap()
}

fn retention(keep_last: Option<usize>, keep_tags: Option<&str>, keep_within: Option<Duration>) -> RetentionRule {
    RetentionRule {
        repositories: pattern("**"),
        keep_last,
        keep_tags: keep_tags.map(|r| Regex::new(r).unwrap()),
        keep_within,
    }
}

fn digest(n: u8) -> Digest {
    format!("sha256:{}", format!("{n:02x}").repeat(32)).parse().unwrap()
}

/// Tags pushed `ages` seconds before `now`, all to the same digest.
fn tags(now: SystemTime, named: &[(&str, u64)]) -> Vec<TagInfo> {
    named
        .iter()
        .map(|(t, age)| TagInfo {
            tag: t.parse().unwrap(),
            digest: digest(1),
            pushed: Some(now - Duration::from_secs(*age)),
        })
        .collect()
}

fn removed(rule: &RetentionRule, tags: &[TagInfo], now: SystemTime) -> Vec<String> {
    tags_to_remove(rule, tags, now, |_| false)
        .into_iter()
        .map(|i| tags[i].tag.as_str().to_owned())
        .collect()
}

#[test]
fn keep_last_keeps_the_most_recently_pushed() {
    let now = SystemTime::now();
    let t = tags(now, &[("a", 50), ("b", 10), ("c", 30), ("d", 40)]);
    assert_eq!(removed(&retention(Some(2), None, None), &t, now), ["a", "d"]);
    assert_eq!(removed(&retention(Some(0), None, None), &t, now), ["a", "b", "c", "d"]);
    assert!(removed(&retention(Some(10), None, None), &t, now).is_empty());
}

#[test]
fn keep_tags_and_keep_within_add_to_what_stays() {
    let now = SystemTime::now();
    let t = tags(
        now,
        &[
            ("v1.0", 900),
            ("v2.0", 800),
            ("dev-1", 700),
            ("dev-2", 5),
            ("dev-3", 600),
        ],
    );
    let rule = retention(Some(1), Some(r"^v\d+\.\d+$"), Some(Duration::from_secs(650)));
    // dev-2 newest (keep-last 1), v* by name, dev-3 within 650 s.
    assert_eq!(removed(&rule, &t, now), ["dev-1"]);
    assert_eq!(
        removed(&retention(None, None, Some(Duration::from_secs(750))), &t, now),
        ["v1.0", "v2.0"]
    );
}

#[test]
fn unknown_and_future_push_times_count_as_young() {
    let now = SystemTime::now();
    let mut t = tags(now, &[("old", 1000), ("unknown", 0), ("future", 0)]);
    t[1].pushed = None;
    t[2].pushed = Some(now + Duration::from_secs(3600));
    assert_eq!(
        removed(&retention(None, None, Some(Duration::from_secs(10))), &t, now),
        ["old"]
    );
}

#[test]
fn immutable_tags_are_never_removed() {
    let now = SystemTime::now();
    let t = tags(now, &[("keep-me", 1000), ("x", 1000)]);
    let got = tags_to_remove(&retention(Some(0), None, None), &t, now, |tag| {
        tag.as_str() == "keep-me"
    });
    assert_eq!(got, [1]);
}

#[test]
fn a_rule_that_keeps_nothing_is_refused() {
    let err = retention(None, None, None).check().unwrap_err();
    assert!(err.contains("keep-last"), "{err}");
    retention(Some(3), None, None).check().unwrap();
}

#[test]
fn rules_match_by_repository_pattern() {
    let rules = Rules {
        retention: vec![
            RetentionRule {
                repositories: pattern("team/ci/**"),
                ..retention(Some(1), None, None)
            },
            RetentionRule {
                repositories: pattern("team/**"),
                ..retention(Some(5), None, None)
            },
        ],
        immutable: vec![ImmutableRule {
            repositories: pattern("prod/*"),
            tags: Some(Regex::new(r"^v").unwrap()),
        }],
        quotas: vec![],
    };
    let ci: RepoName = "team/ci/app".parse().unwrap();
    assert_eq!(rules.retention_for(&ci).unwrap().keep_last, Some(1), "first match wins");
    assert_eq!(
        rules.retention_for(&"team/x".parse().unwrap()).unwrap().keep_last,
        Some(5)
    );
    assert!(rules.retention_for(&"other".parse().unwrap()).is_none());
    let prod: RepoName = "prod/api".parse().unwrap();
    assert!(rules.immutable_rule(&prod, &"v1".parse().unwrap()).is_some());
    assert!(rules.immutable_rule(&prod, &"latest".parse().unwrap()).is_none());
    assert!(rules
        .immutable_rule(&"prod/a/b".parse().unwrap(), &"v1".parse().unwrap())
        .is_none());
}

fn registry_with(rules: Rules) -> (tempfile::TempDir, Arc<Registry>) {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FsBackend::new(dir.path()));
    let config = RegistryConfig {
        rules,
        ..RegistryConfig::default()
    };
    (dir, Arc::new(Registry::new(backend, config)))
}

/// Sets a tag's push time (its link's modification time).
fn pushed_ago(dir: &tempfile::TempDir, repo: &RepoName, tag: &str, ago: Duration) {
    let path = dir.path().join(layout::tag_current_link(repo, &tag.parse().unwrap()));
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - ago).unwrap();
}

async fn tags_of(reg: &Registry, repo: &RepoName) -> Vec<String> {
    reg.tags(repo).await.unwrap()
}

#[tokio::test]
async fn retention_removes_only_the_judged_tags_and_collects_what_they_held() {
    let rules = Rules {
        retention: vec![RetentionRule {
            repositories: pattern("app/**"),
            ..retention(Some(1), Some("^release-"), None)
        }],
        ..Rules::default()
    };
    let (dir, reg) = registry_with(rules);
    let repo = name("app/web");
    let other = name("other");
    let old = push_image(&reg, &repo, "old", b"{\"c\":1}", &[b"old-layer"]).await;
    let shared = push_image(&reg, &repo, "shared-a", b"{\"c\":2}", &[b"shared-layer"]).await;
    // Same digest under a second tag: removing shared-a must leave it.
    put(
        &reg,
        &repo,
        "release-1",
        OCI_MANIFEST,
        &image(b"{\"c\":2}", &[b"shared-layer"]),
    )
    .await
    .unwrap();
    let newest = push_image(&reg, &repo, "newest", b"{\"c\":3}", &[b"new-layer"]).await;
    // Not matched by any rule: untouched.
    push_image(&reg, &other, "old", b"{\"c\":4}", &[b"other-layer"]).await;
    for (tag, ago) in [("old", 400), ("shared-a", 300), ("release-1", 200), ("newest", 100)] {
        pushed_ago(&dir, &repo, tag, Duration::from_secs(ago));
    }
    pushed_ago(&dir, &other, "old", Duration::from_secs(1000));

    let dry = reg
        .collect_garbage(&GcOptions {
            dry_run: true,
            ..now_opts()
        })
        .await
        .unwrap();
    assert_eq!(dry.tags_deleted, ["app/web:old", "app/web:shared-a"]);
    assert_eq!(dry.manifests_deleted, 1, "only the manifest no tag holds any more");
    assert_eq!(dry.blobs_deleted, 3, "its manifest, config and layer");
    assert_eq!(tags_of(&reg, &repo).await.len(), 4, "a dry run deletes nothing");

    let report = reg.collect_garbage(&now_opts()).await.unwrap();
    assert_eq!(report.tags_deleted, dry.tags_deleted);
    assert_eq!(report.manifests_deleted, 1);
    assert_eq!(report.blobs_deleted, 3);
    assert_eq!(tags_of(&reg, &repo).await, ["newest", "release-1"]);
    assert_eq!(tags_of(&reg, &other).await, ["old"]);
    assert!(!data_exists(&dir, &old));
    assert!(data_exists(&dir, &shared) && data_exists(&dir, &newest));
    let by_digest = Reference::Digest(shared.clone());
    reg.get_manifest(&repo, &by_digest).await.unwrap();

    // A second pass finds nothing more to do.
    let again = reg.collect_garbage(&now_opts()).await.unwrap();
    assert!(again.tags_deleted.is_empty());
    assert_eq!(again.blobs_deleted, 0);
}

#[tokio::test]
async fn a_tag_pushed_again_after_judgement_is_not_removed() {
    // keep-within decides from push times: a tag re-pushed now is young.
    let rules = Rules {
        retention: vec![retention(None, None, Some(Duration::from_secs(60)))],
        ..Rules::default()
    };
    let (dir, reg) = registry_with(rules);
    let repo = name("r");
    push_image(&reg, &repo, "t", b"{\"c\":1}", &[b"l"]).await;
    pushed_ago(&dir, &repo, "t", Duration::from_secs(3600));
    let d = put(&reg, &repo, "t", OCI_MANIFEST, &image(b"{\"c\":1}", &[b"l"]))
        .await
        .unwrap();
    let report = reg.collect_garbage(&now_opts()).await.unwrap();
    assert!(report.tags_deleted.is_empty());
    assert_eq!(reg.tag_digest(&repo, &"t".parse().unwrap()).await.unwrap(), Some(d));
}

fn immutable_rules() -> Rules {
    Rules {
        immutable: vec![ImmutableRule {
            repositories: pattern("prod/**"),
            tags: Some(Regex::new(r"^v\d").unwrap()),
        }],
        // Would remove everything but the newest: immutable tags stay.
        retention: vec![retention(Some(0), None, None)],
        ..Rules::default()
    }
}

#[tokio::test]
async fn an_immutable_tag_cannot_move_but_may_be_pushed_again() {
    let (_dir, reg) = registry_with(immutable_rules());
    let repo = name("prod/api");
    let v1 = push_image(&reg, &repo, "v1", b"{\"c\":1}", &[b"a"]).await;
    // Same digest again: accepted.
    assert_eq!(
        put(&reg, &repo, "v1", OCI_MANIFEST, &image(b"{\"c\":1}", &[b"a"]))
            .await
            .unwrap(),
        v1
    );
    push_blob(&reg, &repo, b"{\"c\":2}").await;
    push_blob(&reg, &repo, b"b").await;
    let moved = image(b"{\"c\":2}", &[b"b"]);
    let err = put(&reg, &repo, "v1", OCI_MANIFEST, &moved).await.unwrap_err();
    match &err {
        RegistryError::Denied(msg) => {
            assert!(
                msg.contains("prod/api:v1") && msg.contains("immutable rule prod/**"),
                "{msg}"
            )
        }
        other => panic!("expected DENIED, got {other:?}"),
    }
    // Nothing was stored for the refused push.
    let moved_digest = Digest::sha256_of(&moved);
    assert!(reg
        .get_manifest(&repo, &Reference::Digest(moved_digest.clone()))
        .await
        .is_err());
    // By digest, and under tags the rule does not cover: accepted.
    put(&reg, &repo, &moved_digest.to_string(), OCI_MANIFEST, &moved)
        .await
        .unwrap();
    put(&reg, &repo, "latest", OCI_MANIFEST, &moved).await.unwrap();
    put(&reg, &repo, "latest", OCI_MANIFEST, &image(b"{\"c\":1}", &[b"a"]))
        .await
        .unwrap();
    assert_eq!(reg.tag_digest(&repo, &"v1".parse().unwrap()).await.unwrap(), Some(v1));
}

#[tokio::test]
async fn deleting_an_immutable_tag_needs_the_override() {
    let (_dir, reg) = registry_with(immutable_rules());
    let repo = name("prod/api");
    let v1 = push_image(&reg, &repo, "v1", b"{\"c\":1}", &[b"a"]).await;
    let tag: Reference = "v1".parse().unwrap();
    for reference in [tag.clone(), Reference::Digest(v1.clone())] {
        match reg.delete_manifest(&repo, &reference).await {
            Err(RegistryError::Denied(msg)) => assert!(msg.contains("override"), "{msg}"),
            other => panic!("expected DENIED, got {other:?}"),
        }
    }
    // Retention leaves it too.
    let report = reg.collect_garbage(&now_opts()).await.unwrap();
    assert!(report.tags_deleted.is_empty(), "{:?}", report.tags_deleted);
    reg.delete_manifest_with(&repo, &tag, true).await.unwrap();
    assert!(reg.tags(&repo).await.unwrap().is_empty());
}

fn quota(pattern_text: &str, limit: u64) -> Rules {
    Rules {
        quotas: vec![QuotaRule {
            repositories: pattern(pattern_text),
            limit,
        }],
        ..Rules::default()
    }
}

#[tokio::test]
async fn a_quota_counts_each_blob_once_per_namespace() {
    let layer = vec![7u8; 1000];
    let (_dir, reg) = registry_with(quota("team/**", 2500));
    let (a, b) = (name("team/a"), name("team/b"));
    push_image(&reg, &a, "v1", b"{\"c\":1}", &[&layer]).await;
    // The same layer in a second repository of the namespace: counted once.
    push_image(&reg, &b, "v1", b"{\"c\":1}", &[&layer]).await;
    let usage = reg.usage().await.unwrap();
    let used = usage.quotas[0].used;
    let manifest_len = image(b"{\"c\":1}", &[&layer]).len() as u64;
    assert_eq!(used, 1000 + 7 + manifest_len);
    assert_eq!(usage.repositories.len(), 2);
    assert!(usage.repositories.iter().all(|r| r.bytes == used));

    // 1000 new bytes do not fit in what is left.
    let big = vec![8u8; 1000];
    push_blob(&reg, &b, b"{\"c\":2}").await;
    push_blob(&reg, &b, &big).await;
    match put(&reg, &b, "v2", OCI_MANIFEST, &image(b"{\"c\":2}", &[&big])).await {
        Err(RegistryError::Denied(msg)) => {
            assert!(
                msg.contains("team/**") && msg.contains("2500") && msg.contains(&used.to_string()),
                "{msg}"
            )
        }
        other => panic!("expected DENIED, got {other:?}"),
    }
    // An upload announced too large is refused before its bytes come.
    assert!(matches!(
        reg.check_upload_quota(&a, None, 2000).await,
        Err(RegistryError::Denied(_))
    ));
    // A blob the namespace holds already costs nothing.
    reg.check_upload_quota(&a, Some(&Digest::sha256_of(&layer)), 2000)
        .await
        .unwrap();
    // Outside the pattern: no quota.
    reg.check_upload_quota(&name("elsewhere"), None, 1 << 40).await.unwrap();
    assert_eq!(
        reg.usage().await.unwrap().quotas[0].used,
        used,
        "the refusal counted nothing"
    );
}

#[tokio::test]
async fn usage_is_rebuilt_after_a_pass_and_counts_a_restart() {
    let layer = vec![1u8; 500];
    let (dir, reg) = registry_with(quota("q", 10_000));
    let repo = name("q");
    push_image(&reg, &repo, "v1", b"{}", &[&layer]).await;
    let before = reg.usage().await.unwrap().quotas[0].used;
    // A fresh registry on the same directory (a restart) counts the same.
    let again = Registry::new(
        Arc::new(FsBackend::new(dir.path())),
        RegistryConfig {
            rules: quota("q", 10_000),
            ..RegistryConfig::default()
        },
    );
    assert_eq!(again.usage().await.unwrap().quotas[0].used, before);
    // Deleted and collected: usage drops after the pass.
    reg.delete_manifest(&repo, &"v1".parse().unwrap()).await.unwrap();
    let d = Digest::sha256_of(&image(b"{}", &[&layer]));
    reg.delete_manifest(&repo, &Reference::Digest(d)).await.unwrap();
    reg.collect_garbage(&now_opts()).await.unwrap();
    assert_eq!(reg.usage().await.unwrap().quotas[0].used, 0);
}
