//! S3 storage for the tests: the Ceph RGW that scripts/test.sh starts, named
//! by `BERTH_TEST_S3_CEPH_{ENDPOINT,BUCKET,ACCESS_KEY,SECRET_KEY}` (as in
//! berth-storage's backend suite).
//!
//! - `BERTH_TEST_STORAGE=s3` runs any test file's [`super::TestServer`]s on
//!   Ceph: each server gets a prefix of its own in the bucket, so tests never
//!   see each other's data (and the prefix is emptied when the server stops).
//! - Tests that are about S3 take the engine with [`S3Engine::ceph`], which
//!   fails in CI (`CI=true`) when the variables are missing, never skips.

use std::time::Duration;

/// An S3 engine and bucket the tests may use.
#[derive(Clone, Debug)]
pub struct S3Engine {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

impl S3Engine {
    /// Ceph RGW from the environment. Outside CI, `None` (with a note) when
    /// it is not configured; in CI a missing engine fails the test.
    pub fn ceph() -> Option<S3Engine> {
        let engine = Self::from_env("CEPH");
        if engine.is_none() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "BERTH_TEST_S3_CEPH_ENDPOINT is not set: CI must run the S3 serving tests \
                     (scripts/test.sh starts Ceph RGW)"
                );
            }
            eprintln!("BERTH_TEST_S3_CEPH_ENDPOINT is not set: not testing against Ceph RGW");
        }
        engine
    }

    /// The engine every test server uses when `BERTH_TEST_STORAGE=s3`
    /// (which then requires Ceph's variables); `None` otherwise.
    pub fn for_test_storage() -> Option<S3Engine> {
        if std::env::var("BERTH_TEST_STORAGE").as_deref() != Ok("s3") {
            return None;
        }
        Some(Self::from_env("CEPH").expect("BERTH_TEST_STORAGE=s3 needs BERTH_TEST_S3_CEPH_ENDPOINT and the rest"))
    }

    fn from_env(engine: &str) -> Option<S3Engine> {
        let var = |what: &str| std::env::var(format!("BERTH_TEST_S3_{engine}_{what}")).ok();
        let endpoint = var("ENDPOINT").filter(|e| !e.is_empty())?;
        let need = |what: &str| var(what).unwrap_or_else(|| panic!("BERTH_TEST_S3_{engine}_{what} is not set"));
        Some(S3Engine {
            endpoint,
            bucket: need("BUCKET"),
            access_key: need("ACCESS_KEY"),
            secret_key: need("SECRET_KEY"),
        })
    }

    /// `s3://BUCKET/test-<uuid>`: storage no other test uses.
    pub fn unique_storage(&self) -> String {
        format!("s3://{}/test-{}", self.bucket, uuid::Uuid::new_v4().simple())
    }

    /// The `berth serve` arguments for `storage` on this engine (the
    /// credentials go separately: [`S3Engine::credentials`], [`S3Engine::env`]).
    pub fn serve_args(&self, storage: &str) -> Vec<String> {
        vec![
            "--storage".into(),
            storage.into(),
            "--s3-endpoint".into(),
            self.endpoint.clone(),
        ]
    }

    /// The credentials for a berth started in this process (which must not
    /// change its own environment while other tests run).
    pub fn credentials(&self) -> berth::storage::S3Credentials {
        berth::storage::S3Credentials {
            access_key_id: self.access_key.clone(),
            secret_access_key: berth::config::Secret::new(self.secret_key.clone()),
        }
    }

    /// The environment of a berth child process: the AWS tools' variables.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// Sets [`S3Engine::env`] on a command.
    pub fn configure(&self, cmd: &mut std::process::Command) {
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
    }

    /// An S3 backend on `storage` (for checks that read the bucket directly).
    pub async fn backend(&self, storage: &str) -> berth_storage::S3Backend {
        let mut config = berth_storage::S3Config::from_url(storage).expect("an s3:// URL");
        config.endpoint = Some(self.endpoint.clone());
        config.region = Some("us-east-1".into());
        config.access_key_id = Some(self.access_key.clone());
        config.secret_access_key = Some(self.secret_key.clone());
        berth_storage::S3Backend::connect(config)
            .await
            .expect("the bucket answers")
    }

    /// Removes everything berth wrote under `storage`'s prefix. Runs on a
    /// thread of its own, so it works from a test's async runtime too.
    pub fn remove(&self, storage: &str) {
        let (engine, storage) = (self.clone(), storage.to_owned());
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                use berth_storage::Backend;
                let backend = engine.backend(&storage).await;
                // The distribution layout and berth's own area.
                for top in ["docker", "berth"] {
                    match tokio::time::timeout(Duration::from_secs(60), backend.delete_prefix(top)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => eprintln!("cleaning {storage}/{top}: {e}"),
                        Err(_) => eprintln!("cleaning {storage}/{top}: timed out"),
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A fresh prefix of an engine's bucket for one test, emptied when the test
/// ends, failed or not (for tests whose servers do not own the prefix:
/// several processes, or distribution beside berth).
pub struct S3Prefix {
    pub engine: S3Engine,
    /// `s3://BUCKET/PREFIX`
    pub storage: String,
}

impl S3Prefix {
    /// A prefix of Ceph RGW's bucket; `None` as for [`S3Engine::ceph`].
    pub fn ceph() -> Option<S3Prefix> {
        let engine = S3Engine::ceph()?;
        let storage = engine.unique_storage();
        Some(S3Prefix { engine, storage })
    }
}

impl Drop for S3Prefix {
    fn drop(&mut self) {
        self.engine.remove(&self.storage);
    }
}
