//! A [`Backend`] that counts and times every operation of the backend it
//! wraps, for `/metrics`. Any backend can be wrapped (an object store later),
//! so the metrics are the same whatever stores the data.

use crate::backend::{AppendWriter, Backend, ObjectBody, ObjectMeta, Result, StorageError};
use async_trait::async_trait;
use berth_metrics::storage::Op;
use berth_metrics::Metrics;
use bytes::Bytes;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

pub struct Instrumented {
    inner: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn Backend>, metrics: Arc<Metrics>) -> Instrumented {
        Instrumented { inner, metrics }
    }
}

/// Times `fut` and records it as one `op`.
async fn timed<T>(metrics: &Metrics, op: Op, fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let start = Instant::now();
    let result = fut.await;
    let failed = matches!(&result, Err(e) if !is_answer(e));
    metrics.storage.record(op, start.elapsed(), failed);
    result
}

/// Errors that answer a question rather than report a failure: the object
/// is absent, an upload is at another offset, a range is outside the object.
fn is_answer(e: &StorageError) -> bool {
    !matches!(e, StorageError::Io { .. })
}

#[async_trait]
impl Backend for Instrumented {
    async fn get(&self, key: &str) -> Result<Bytes> {
        timed(&self.metrics, Op::Get, self.inner.get(key)).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        timed(&self.metrics, Op::Head, self.inner.head(key)).await
    }

    async fn open(&self, key: &str, range: Option<Range<u64>>) -> Result<ObjectBody> {
        timed(&self.metrics, Op::Open, self.inner.open(key, range)).await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        timed(&self.metrics, Op::Put, self.inner.put(key, data)).await
    }

    async fn abort_stale_multipart_uploads(&self, older_than: std::time::Duration) -> Result<usize> {
        self.inner.abort_stale_multipart_uploads(older_than).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        timed(&self.metrics, Op::Put, self.inner.put_if_absent(key, data)).await
    }

    async fn put_ephemeral(&self, key: &str, data: Bytes) -> Result<()> {
        timed(&self.metrics, Op::PutEphemeral, self.inner.put_ephemeral(key, data)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        timed(&self.metrics, Op::Delete, self.inner.delete(key)).await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        timed(&self.metrics, Op::DeletePrefix, self.inner.delete_prefix(prefix)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        timed(&self.metrics, Op::List, self.inner.list(prefix)).await
    }

    async fn list_keys_after(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        timed(
            &self.metrics,
            Op::List,
            self.inner.list_keys_after(prefix, start_after, limit),
        )
        .await
    }

    async fn presigned_get(&self, key: &str, expires_in: std::time::Duration) -> Result<Option<String>> {
        // Signing is local computation, not a store operation: not timed.
        self.inner.presigned_get(key, expires_in).await
    }

    async fn append(&self, key: &str, offset: u64) -> Result<Box<dyn AppendWriter>> {
        let writer = timed(&self.metrics, Op::Append, self.inner.append(key, offset)).await?;
        Ok(Box::new(InstrumentedWriter {
            inner: writer,
            metrics: self.metrics.clone(),
        }))
    }

    async fn promote(&self, from: &str, to: &str) -> Result<()> {
        timed(&self.metrics, Op::Promote, self.inner.promote(from, to)).await
    }
}

/// Times the end of an append (where its data is made durable); the writes
/// before it are the request body arriving, timed by the HTTP metrics.
struct InstrumentedWriter {
    inner: Box<dyn AppendWriter>,
    metrics: Arc<Metrics>,
}

#[async_trait]
impl AppendWriter for InstrumentedWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.inner.write(data).await
    }

    async fn finish(self: Box<Self>) -> Result<u64> {
        let InstrumentedWriter { inner, metrics } = *self;
        timed(&metrics, Op::AppendFinish, inner.finish()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FsBackend;

    #[tokio::test]
    async fn operations_and_failures_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let b = Instrumented::new(Arc::new(FsBackend::new(dir.path())), metrics.clone());
        b.put("a/b", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(&b.get("a/b").await.unwrap()[..], b"x");
        assert!(b.get("a/missing").await.unwrap_err().is_not_found());
        let s = &metrics.storage;
        assert_eq!((s.count(Op::Put), s.count(Op::Get)), (1, 2));
        assert_eq!(s.errors(Op::Get), 0, "absence is not a failure");
        // A key whose parent is a file cannot be written: a real failure.
        assert!(b.put("a/b/c", Bytes::from_static(b"y")).await.is_err());
        assert_eq!(s.errors(Op::Put), 1);
        assert!(metrics
            .render()
            .contains(r#"berth_storage_errors_total{operation="put"} 1"#));
    }
}
