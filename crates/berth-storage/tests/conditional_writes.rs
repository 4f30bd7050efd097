//! What conditional writes the CI engines support, measured through
//! `object_store` (the client berth uses): `PUT` with `If-None-Match: *`
//! (create only if absent) and `PUT` with `If-Match: <ETag>` (replace only
//! the version read), the building blocks of compare-and-swap. berth does not
//! depend on them; ARCHITECTURE.md ("S3 storage") records the result, and
//! this test pins it, so that an engine upgrade that changes it is noticed.
//! Run with the engines' variables (see backend_suite.rs); `--nocapture`
//! prints the table.

use berth_storage::{S3Backend, S3Config};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

#[derive(Debug, PartialEq, Eq)]
struct Support {
    if_none_match_creates: bool,
    if_none_match_refuses_existing: bool,
    if_match_replaces_current: bool,
    if_match_refuses_stale: bool,
}

fn config(engine: &str) -> Option<S3Config> {
    let var = |what: &str| std::env::var(format!("BERTH_TEST_S3_{engine}_{what}")).ok();
    let Some(endpoint) = var("ENDPOINT") else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("BERTH_TEST_S3_{engine}_ENDPOINT is not set: CI must probe {engine}");
        }
        eprintln!("BERTH_TEST_S3_{engine}_ENDPOINT is not set: not probing {engine}");
        return None;
    };
    Some(S3Config {
        bucket: var("BUCKET").expect("bucket"),
        prefix: Some(format!("probe-{}", uuid::Uuid::new_v4().simple())),
        endpoint: Some(endpoint),
        region: Some("us-east-1".into()),
        access_key_id: var("ACCESS_KEY"),
        secret_access_key: var("SECRET_KEY"),
        ..S3Config::default()
    })
}

async fn probe(engine: &str) -> Option<Support> {
    let backend = S3Backend::connect(config(engine)?).await.unwrap();
    let store = backend.object_store();
    let key = backend.store_path("cas/key");
    let create = |body: &'static str| {
        let key = key.clone();
        async move {
            store
                .put_opts(
                    &key,
                    PutPayload::from_static(body.as_bytes()),
                    PutOptions::from(PutMode::Create),
                )
                .await
        }
    };
    let if_none_match_creates = create("one").await.is_ok();
    let if_none_match_refuses_existing = matches!(
        create("two").await,
        Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. })
    );
    let current = store.head(&key).await.unwrap();
    let version = UpdateVersion {
        e_tag: current.e_tag.clone(),
        version: None,
    };
    let update = |version: UpdateVersion, body: &'static str| {
        let key = key.clone();
        async move {
            store
                .put_opts(
                    &key,
                    PutPayload::from_static(body.as_bytes()),
                    PutOptions::from(PutMode::Update(version)),
                )
                .await
        }
    };
    let if_match_replaces_current = update(version.clone(), "three").await.is_ok();
    // `version` is now stale if the update went through; else replace the
    // object unconditionally so that it is.
    if !if_match_replaces_current {
        store.put(&key, PutPayload::from_static(b"four")).await.unwrap();
    }
    let if_match_refuses_stale = matches!(
        update(version, "five").await,
        Err(object_store::Error::Precondition { .. })
    );
    store.delete(&key).await.unwrap();
    let support = Support {
        if_none_match_creates,
        if_none_match_refuses_existing,
        if_match_replaces_current,
        if_match_refuses_stale,
    };
    println!("{engine}: {support:?} (ETag as the store sent it: {:?})", current.e_tag);
    Some(support)
}

#[tokio::test]
async fn ceph_rgw_16_creates_conditionally_but_refuses_a_quoted_if_match() {
    if let Some(support) = probe("CEPH").await {
        assert_eq!(
            support,
            Support {
                if_none_match_creates: true,
                if_none_match_refuses_existing: true,
                if_match_replaces_current: false,
                if_match_refuses_stale: true,
            }
        );
    }
}

#[tokio::test]
async fn seaweedfs_supports_both_conditions() {
    if let Some(support) = probe("SEAWEEDFS").await {
        assert_eq!(
            support,
            Support {
                if_none_match_creates: true,
                if_none_match_refuses_existing: true,
                if_match_replaces_current: true,
                if_match_refuses_stale: true,
            }
        );
    }
}
