//! One backend test suite, run unchanged against every backend: the
//! filesystem, Ceph RGW and SeaweedFS. Each case is a function of a
//! [`Fixture`]; `suite!` makes one test per case and backend.
//!
//! The S3 engines are named by environment variables (scripts/test.sh starts
//! both and sets them):
//! `BERTH_TEST_S3_<ENGINE>_{ENDPOINT,BUCKET,ACCESS_KEY,SECRET_KEY}` with
//! ENGINE = CEPH or SEAWEEDFS. Without them the S3 tests say so and pass,
//! except in CI (`CI=true`), where a missing engine fails the test.

use berth_storage::{Backend, FsBackend, ObjectBody, S3Backend, S3Config, StorageError};
use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;

/// A backend on an empty store, and a way to open a second instance on the
/// same data (another process, another replica).
struct Fixture {
    engine: &'static str,
    backend: Arc<dyn Backend>,
    another: Box<dyn Fn() -> futures::future::BoxFuture<'static, Arc<dyn Backend>> + Send + Sync>,
    _dir: Option<tempfile::TempDir>,
}

fn fs_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    Fixture {
        engine: "fs",
        backend: Arc::new(FsBackend::new(&root)),
        another: Box::new(move || {
            let root = root.clone();
            Box::pin(async move { Arc::new(FsBackend::new(root)) as Arc<dyn Backend> })
        }),
        _dir: Some(dir),
    }
}

/// The engine's settings from the environment; `None` (outside CI) when unset.
fn s3_config(engine: &str) -> Option<S3Config> {
    let var = |what: &str| std::env::var(format!("BERTH_TEST_S3_{engine}_{what}")).ok();
    let Some(endpoint) = var("ENDPOINT") else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("BERTH_TEST_S3_{engine}_ENDPOINT is not set: CI must run the S3 backend suite (scripts/test.sh starts the engines)");
        }
        eprintln!("BERTH_TEST_S3_{engine}_ENDPOINT is not set: not testing against {engine}");
        return None;
    };
    Some(S3Config {
        bucket: var("BUCKET").expect("bucket"),
        // Every test in its own prefix: tests run in parallel on one bucket.
        prefix: Some(format!("suite-{}", uuid::Uuid::new_v4().simple())),
        endpoint: Some(endpoint),
        region: Some("us-east-1".into()),
        access_key_id: var("ACCESS_KEY"),
        secret_access_key: var("SECRET_KEY"),
        ..S3Config::default()
    })
}

async fn s3_fixture(engine: &'static str) -> Option<Fixture> {
    let config = s3_config(engine)?;
    let backend = S3Backend::connect(config.clone()).await.expect("connect");
    Some(Fixture {
        engine: if engine == "CEPH" { "ceph" } else { "seaweedfs" },
        backend: Arc::new(backend),
        another: Box::new(move || {
            let config = config.clone();
            Box::pin(async move { Arc::new(S3Backend::connect(config).await.unwrap()) as Arc<dyn Backend> })
        }),
        _dir: None,
    })
}

/// Removes what a case left in an S3 prefix (the filesystem's tempdir goes by itself).
async fn cleanup(f: &Fixture) {
    for top in ["t", "u", "blobs", "berth"] {
        f.backend.delete_prefix(top).await.unwrap();
    }
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod fs {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(&super::fs_fixture()).await; })*
        }
        mod ceph {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(f) = super::s3_fixture("CEPH").await {
                    super::$case(&f).await;
                    super::cleanup(&f).await;
                }
            })*
        }
        mod seaweedfs {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(f) = super::s3_fixture("SEAWEEDFS").await {
                    super::$case(&f).await;
                    super::cleanup(&f).await;
                }
            })*
        }
    };
}

suite!(
    objects_put_get_head_delete,
    list_names_children,
    list_keys_after_pages_in_byte_order,
    delete_prefix_removes_a_tree,
    open_reads_ranges,
    append_checks_offsets_and_promotes,
    append_streams_parts_and_folds_chunks,
    empty_upload_promotes_to_an_empty_object,
    another_instance_continues_an_upload,
    a_failed_append_leaves_the_upload_as_it_was,
    put_if_absent_creates_once,
    a_killed_append_leaves_nothing_once_stale_uploads_are_aborted,
);

async fn read(body: ObjectBody) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = body.into_stream(64 * 1024);
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn sorted_list(b: &dyn Backend, prefix: &str) -> Vec<String> {
    let mut names = b.list(prefix).await.unwrap();
    names.sort();
    names
}

async fn objects_put_get_head_delete(f: &Fixture) {
    let b = f.backend.as_ref();
    assert!(b.get("t/a/b").await.unwrap_err().is_not_found());
    assert!(b.head("t/a/b").await.unwrap_err().is_not_found());
    b.put("t/a/b", Bytes::from_static(b"hello")).await.unwrap();
    b.put("t/a/b", Bytes::from_static(b"world!")).await.unwrap();
    assert_eq!(&b.get("t/a/b").await.unwrap()[..], b"world!");
    let meta = b.head("t/a/b").await.unwrap();
    assert_eq!(meta.size, 6);
    let age = std::time::SystemTime::now()
        .duration_since(meta.modified.expect("both backends know when"))
        .unwrap_or_default();
    assert!(age < std::time::Duration::from_secs(300), "{age:?}");
    // A "directory" is not an object.
    assert!(b.head("t/a").await.unwrap_err().is_not_found());
    b.put_ephemeral("t/a/e", Bytes::new()).await.unwrap();
    assert_eq!(b.head("t/a/e").await.unwrap().size, 0);
    b.delete("t/a/e").await.unwrap();
    b.delete("t/a/b").await.unwrap();
    b.delete("t/a/b").await.unwrap();
    assert!(b.get("t/a/b").await.unwrap_err().is_not_found());
}

/// A process killed while an append streams into the store leaves what it
/// had begun: on S3 an open multipart upload holding its parts, which only an
/// abort frees. Aborting the stale ones frees it, and not a young one.
async fn a_killed_append_leaves_nothing_once_stale_uploads_are_aborted(f: &Fixture) {
    let b = f.backend.as_ref();
    let mut w = b.append("u/killed", 0).await.unwrap();
    // More than one part: the multipart upload is under way.
    w.write(Bytes::from(pattern(12 << 20, 7))).await.unwrap();
    // As if the process were killed: neither finished nor dropped (a drop
    // aborts). The filesystem's writer has a thread waiting on it, which a
    // forgotten writer would keep waiting (and the test's runtime with it);
    // there a killed append leaves only its file, which the upload purge
    // removes, and nothing to abort.
    let left = if f.engine == "fs" {
        drop(w);
        0
    } else {
        std::mem::forget(w);
        1
    };
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(b.abort_stale_multipart_uploads(hour).await.unwrap(), 0, "young: kept");
    let zero = std::time::Duration::ZERO;
    assert_eq!(b.abort_stale_multipart_uploads(zero).await.unwrap(), left);
    assert_eq!(b.abort_stale_multipart_uploads(zero).await.unwrap(), 0, "none left");
}

async fn put_if_absent_creates_once(f: &Fixture) {
    let b = f.backend.as_ref();
    assert!(b
        .put_if_absent("t/lease/l", Bytes::from_static(b"first"))
        .await
        .unwrap());
    assert!(!b
        .put_if_absent("t/lease/l", Bytes::from_static(b"second"))
        .await
        .unwrap());
    assert_eq!(&b.get("t/lease/l").await.unwrap()[..], b"first");
    // Concurrent callers: exactly one creates.
    let attempts = (0..8).map(|i| b.put_if_absent("t/lease/race", Bytes::from(format!("caller {i}"))));
    let won = futures::future::join_all(attempts).await;
    assert_eq!(won.into_iter().filter(|r| *r.as_ref().unwrap()).count(), 1);
    b.delete("t/lease/l").await.unwrap();
    assert!(b
        .put_if_absent("t/lease/l", Bytes::from_static(b"again"))
        .await
        .unwrap());
    b.delete_prefix("t/lease").await.unwrap();
}

async fn list_names_children(f: &Fixture) {
    let b = f.backend.as_ref();
    assert!(b.list("t/nothing").await.unwrap().is_empty());
    for key in ["t/l/x", "t/l/y/1", "t/l/y/2", "t/l/z/deep/er", "t/lx/other"] {
        b.put(key, Bytes::from_static(b"v")).await.unwrap();
    }
    assert_eq!(sorted_list(b, "t/l").await, ["x", "y", "z"]);
    assert_eq!(sorted_list(b, "t/l/y").await, ["1", "2"]);
    assert_eq!(sorted_list(b, "t").await, ["l", "lx"]);
}

async fn list_keys_after_pages_in_byte_order(f: &Fixture) {
    let b = f.backend.as_ref();
    assert!(b.list_keys_after("t/nothing", None, 10).await.unwrap().is_empty());
    // The catalog index's shape: flat entries, hex of the names (here of
    // `a`, `a-b`, `a.b`, `a/b`, `b`), put out of order.
    for key in ["612f62", "61", "612d62", "62", "612e62"] {
        b.put(&format!("t/k/{key}"), Bytes::new()).await.unwrap();
    }
    b.put("t/k/sub/nested", Bytes::new()).await.unwrap();
    b.put("t/kx/outside", Bytes::new()).await.unwrap();
    let all = b.list_keys_after("t/k", None, 100).await.unwrap();
    assert_eq!(all, ["61", "612d62", "612e62", "612f62", "62"], "in byte order, flat");
    assert_eq!(b.list_keys_after("t/k", None, 2).await.unwrap(), ["61", "612d62"]);
    assert_eq!(
        b.list_keys_after("t/k", Some("612d62"), 2).await.unwrap(),
        ["612e62", "612f62"]
    );
    // A cursor that is no key: what sorts after it.
    assert_eq!(
        b.list_keys_after("t/k", Some("612e"), 10).await.unwrap(),
        ["612e62", "612f62", "62"]
    );
    assert!(b.list_keys_after("t/k", Some("62"), 10).await.unwrap().is_empty());
}

async fn delete_prefix_removes_a_tree(f: &Fixture) {
    let b = f.backend.as_ref();
    for key in ["t/d/a", "t/d/b/c", "t/d/b/d/e", "t/dd/keep"] {
        b.put(key, Bytes::from_static(b"v")).await.unwrap();
    }
    b.delete_prefix("t/d").await.unwrap();
    // SeaweedFS (4.48) keeps the emptied "directories" of a deleted tree in
    // delimiter listings (its filer keeps directory entries); every object is
    // gone all the same. Recorded in ARCHITECTURE.md ("S3 storage").
    let left = b.list("t/d").await.unwrap();
    if f.engine == "seaweedfs" {
        assert!(left.iter().all(|n| n == "b"), "{left:?}");
    } else {
        assert!(left.is_empty(), "{left:?}");
    }
    assert!(b.get("t/d/b/c").await.unwrap_err().is_not_found());
    assert_eq!(
        &b.get("t/dd/keep").await.unwrap()[..],
        b"v",
        "a sibling sharing the name's start stays"
    );
    b.delete_prefix("t/absent").await.unwrap();
}

async fn open_reads_ranges(f: &Fixture) {
    let b = f.backend.as_ref();
    b.put("t/r", Bytes::from_static(b"0123456789")).await.unwrap();
    assert_eq!(read(b.open("t/r", None).await.unwrap()).await, b"0123456789");
    let body = b.open("t/r", Some(2..5)).await.unwrap();
    assert_eq!(body.len(), 3);
    assert_eq!(read(body).await, b"234");
    assert_eq!(read(b.open("t/r", Some(9..10)).await.unwrap()).await, b"9");
    assert!(b.open("t/r", Some(4..4)).await.unwrap().is_empty());
    for bad in [5..11, 10..12, 11..11] {
        match b.open("t/r", Some(bad.clone())).await {
            Err(StorageError::RangeNotSatisfiable { size: 10, .. }) => {}
            Err(e) => panic!("{bad:?}: {e}"),
            Ok(_) => panic!("{bad:?} opened"),
        }
    }
    assert!(matches!(b.open("t/none", None).await, Err(e) if e.is_not_found()));
    b.put("t/empty", Bytes::new()).await.unwrap();
    assert!(read(b.open("t/empty", None).await.unwrap()).await.is_empty());
}

/// Appends `data` in `chunk`-sized writes at `offset`; returns the new size.
async fn append(b: &dyn Backend, key: &str, offset: u64, data: &[u8], chunk: usize) -> Result<u64, StorageError> {
    let mut w = b.append(key, offset).await?;
    for part in data.chunks(chunk.max(1)) {
        w.write(Bytes::copy_from_slice(part)).await?;
    }
    w.finish().await
}

async fn append_checks_offsets_and_promotes(f: &Fixture) {
    let b = f.backend.as_ref();
    let first = pattern(1000, 1);
    let second = pattern(777, 2);
    assert_eq!(append(b, "u/1", 0, &first, 7).await.unwrap(), 1000);
    // A wrong offset fails before anything is stored.
    for wrong in [0, 999, 1001] {
        match append(b, "u/1", wrong, b"zz", 1).await {
            Err(StorageError::OffsetMismatch { actual: 1000, .. }) => {}
            r => panic!("offset {wrong}: {:?}", r.map_err(|e| e.to_string())),
        }
    }
    // A missing staged object at a non-zero offset is not found (a purged upload).
    assert!(append(b, "u/gone", 5, b"x", 1).await.unwrap_err().is_not_found());
    assert_eq!(append(b, "u/1", 1000, &second, 100).await.unwrap(), 1777);
    // The staged data reads back whole (how a replica rebuilds a hash state).
    let whole = [first.clone(), second.clone()].concat();
    assert_eq!(b.head("u/1").await.unwrap().size, 1777);
    assert_eq!(read(b.open("u/1", None).await.unwrap()).await, whole);
    assert_eq!(
        read(b.open("u/1", Some(990..1010)).await.unwrap()).await,
        &whole[990..1010]
    );
    b.promote("u/1", "blobs/one/data").await.unwrap();
    assert_eq!(&b.get("blobs/one/data").await.unwrap()[..], &whole[..]);
    assert_eq!(b.head("blobs/one/data").await.unwrap().size, 1777);
    assert!(b.head("u/1").await.unwrap_err().is_not_found());
    assert!(b.promote("u/1", "blobs/two/data").await.unwrap_err().is_not_found());
    // Promoting over an existing object replaces it.
    assert_eq!(append(b, "u/2", 0, b"new bytes", 4).await.unwrap(), 9);
    b.promote("u/2", "blobs/one/data").await.unwrap();
    assert_eq!(&b.get("blobs/one/data").await.unwrap()[..], b"new bytes");
    // A staged object that is deleted takes everything it stored with it.
    assert_eq!(append(b, "u/3", 0, b"abc", 1).await.unwrap(), 3);
    b.delete("u/3").await.unwrap();
    assert!(b.head("u/3").await.unwrap_err().is_not_found());
    assert!(append(b, "u/3", 3, b"d", 1).await.unwrap_err().is_not_found());
}

/// Appends bigger than a multipart part, and several appends (a client
/// sending chunks) folded into one blob; on the filesystem the same calls.
async fn append_streams_parts_and_folds_chunks(f: &Fixture) {
    let b = f.backend.as_ref();
    let big = pattern(19 << 20, 3);
    assert_eq!(append(b, "u/big", 0, &big, 1 << 20).await.unwrap(), big.len() as u64);
    b.promote("u/big", "blobs/big/data").await.unwrap();
    assert!(b.get("blobs/big/data").await.unwrap() == big, "one big append");
    let chunks = [
        pattern(3 << 20, 4),
        pattern(9 << 20, 5),
        pattern(100, 6),
        pattern(6 << 20, 7),
    ];
    let mut offset = 0;
    for chunk in &chunks {
        offset = append(b, "u/chunks", offset, chunk, 256 << 10).await.unwrap();
    }
    b.promote("u/chunks", "blobs/chunks/data").await.unwrap();
    assert!(
        b.get("blobs/chunks/data").await.unwrap() == chunks.concat(),
        "chunks folded in order"
    );
    assert_eq!(b.head("blobs/chunks/data").await.unwrap().size, offset);
}

async fn empty_upload_promotes_to_an_empty_object(f: &Fixture) {
    let b = f.backend.as_ref();
    // As a POST creates a session: an empty object, then appends.
    b.put_ephemeral("u/e", Bytes::new()).await.unwrap();
    assert_eq!(b.head("u/e").await.unwrap().size, 0);
    assert_eq!(append(b, "u/e", 0, b"", 1).await.unwrap(), 0);
    assert_eq!(b.head("u/e").await.unwrap().size, 0);
    b.promote("u/e", "blobs/e/data").await.unwrap();
    assert_eq!(b.head("blobs/e/data").await.unwrap().size, 0);
    assert!(b.get("blobs/e/data").await.unwrap().is_empty());
    // Appending nothing to no object at offset 0 creates it (a monolithic empty blob).
    assert_eq!(append(b, "u/e2", 0, b"", 1).await.unwrap(), 0);
    assert_eq!(b.head("u/e2").await.unwrap().size, 0);
}

/// A session started through one instance is continued and finished through
/// another: all of its state is in the store.
async fn another_instance_continues_an_upload(f: &Fixture) {
    let a = f.backend.as_ref();
    let b = (f.another)().await;
    let one = pattern(6 << 20, 8);
    let two = pattern(1234, 9);
    a.put_ephemeral("u/shared", Bytes::new()).await.unwrap();
    assert_eq!(
        append(a, "u/shared", 0, &one, 64 << 10).await.unwrap(),
        one.len() as u64
    );
    assert_eq!(b.head("u/shared").await.unwrap().size, one.len() as u64);
    match append(b.as_ref(), "u/shared", 0, b"x", 1).await {
        Err(StorageError::OffsetMismatch { actual, .. }) => assert_eq!(actual, one.len() as u64),
        r => panic!("{:?}", r.map_err(|e| e.to_string())),
    }
    let size = append(b.as_ref(), "u/shared", one.len() as u64, &two, 1000)
        .await
        .unwrap();
    assert_eq!(size, (one.len() + two.len()) as u64);
    assert!(read(a.open("u/shared", None).await.unwrap()).await == [one.clone(), two.clone()].concat());
    b.promote("u/shared", "blobs/shared/data").await.unwrap();
    assert!(a.get("blobs/shared/data").await.unwrap() == [one, two].concat());
}

/// An append whose writer is dropped before `finish` (a client gone
/// mid-PATCH) changes nothing: the upload continues at the old offset.
async fn a_failed_append_leaves_the_upload_as_it_was(f: &Fixture) {
    let b = f.backend.as_ref();
    assert_eq!(append(b, "u/f", 0, b"kept", 2).await.unwrap(), 4);
    {
        let mut w = b.append("u/f", 4).await.unwrap();
        w.write(Bytes::from(pattern(9 << 20, 10))).await.unwrap();
        drop(w);
    }
    // The filesystem appends in place, so what a dropped writer wrote may be
    // there (its last batch may still be landing); an object store keeps the
    // old state. Either way the offset check keeps a continuation from
    // writing at a stale offset, and reads agree with the size.
    let mut size = b.head("u/f").await.unwrap().size;
    let mut attempts = 0;
    let total = loop {
        match append(b, "u/f", size, b"!", 1).await {
            Ok(total) => break total,
            Err(StorageError::OffsetMismatch { actual, .. }) if actual > size && attempts < 50 => {
                attempts += 1;
                size = actual;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(total, size + 1);
    let data = read(b.open("u/f", None).await.unwrap()).await;
    assert_eq!(data.len() as u64, total);
    assert_eq!(&data[..4], b"kept");
    assert_eq!(data.last(), Some(&b'!'));
}
