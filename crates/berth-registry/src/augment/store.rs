//! Getting the layers of an augmentation into the blob store: from a path on
//! this machine (the config file: a directory packed deterministically, or a
//! tar file as it is) or from a blob already pushed to a repository (the HTTP
//! API). Either way the bytes are read once to learn the `diff_id`, streamed,
//! never held whole.

use super::pack::{self, HashingReader};
use super::InjectedLayer;
use crate::{Registry, RegistryError, Result};
use berth_spec::{Digest, RepoName};
use berth_storage::layout;
use bytes::Bytes;
use futures::StreamExt;
use std::io::{Read, Write};
use std::path::Path;

/// Bytes read from a file at a time when it is copied into the store.
const COPY_CHUNK: usize = 1 << 20;

impl Registry {
    /// Stores the layer at `path` (a directory or a tar file, gzip-compressed
    /// or not) as a blob and describes it. Nothing is written to temporary
    /// files (berth's own image has no /tmp): the bytes go straight into a
    /// staged object, promoted under their digest once it is known.
    pub async fn store_layer_from_path(&self, path: &Path) -> Result<InjectedLayer> {
        let io_error = |e: std::io::Error| RegistryError::Augmentation(format!("layer {}: {e}", path.display()));
        let is_dir = std::fs::metadata(path).map_err(io_error)?.is_dir();
        let owned = path.to_owned();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
        let producer = tokio::task::spawn_blocking(move || -> std::io::Result<InjectedLayer> {
            let path = owned;
            let out = std::io::BufWriter::with_capacity(COPY_CHUNK, ChannelWriter { tx });
            if is_dir {
                return pack::pack_directory(&path, out);
            }
            // A file: read once for what it is, then once more into the store.
            let mut hashed = HashingReader::new(std::io::BufReader::new(std::fs::File::open(&path)?));
            let (diff_id, compressed) = pack::inspect_layer(&mut hashed)?;
            std::io::copy(&mut hashed, &mut std::io::sink())?;
            let layer = InjectedLayer {
                digest: hashed.digester.finish(),
                size: hashed.len,
                diff_id,
                compressed,
            };
            let mut out = out;
            std::io::copy(&mut std::fs::File::open(&path)?, &mut out)?;
            out.flush()?;
            Ok(layer)
        });
        let staging_repo: RepoName = format!("{}/staging", super::PREFIX).parse().expect("a name");
        let staged = layout::upload_data(&staging_repo, &uuid::Uuid::new_v4().to_string());
        let mut writer = self.backend.append(&staged, 0).await?;
        let mut h = berth_spec::Algorithm::Sha256.digester();
        let mut written = 0u64;
        while let Some(chunk) = rx.recv().await {
            h.update(&chunk);
            written += chunk.len() as u64;
            writer.write(chunk).await?;
        }
        writer.finish().await?;
        let produced = producer.await.expect("packing does not panic");
        let layer = match produced {
            Ok(layer) => layer,
            Err(e) => {
                let _ = self.backend.delete(&staged).await;
                return Err(io_error(e));
            }
        };
        let digest = h.finish();
        if digest != layer.digest || written != layer.size {
            let _ = self.backend.delete(&staged).await;
            return Err(RegistryError::Augmentation(format!(
                "layer {}: it changed while it was stored (read {} then {digest})",
                path.display(),
                layer.digest
            )));
        }
        if self.exists(&layout::blob_data(&layer.digest)).await? {
            let _ = self.backend.delete(&staged).await;
        } else {
            self.backend.promote(&staged, &layout::blob_data(&layer.digest)).await?;
        }
        Ok(layer)
    }

    /// Describes a layer pushed to `repository` as `digest` (reading it once
    /// for its `diff_id`), for an augmentation defined over HTTP.
    pub async fn layer_from_blob(&self, repository: &RepoName, digest: &Digest) -> Result<InjectedLayer> {
        let content = self.local_blob(repository, digest, None, false).await?;
        let size = content.size;
        let body = content.body.ok_or_else(|| RegistryError::BlobUnknown(digest.clone()))?;
        let mut stream = body.into_stream(256 << 10);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(4);
        let inspect = tokio::task::spawn_blocking(move || {
            pack::inspect_layer(ChannelReader {
                rx,
                current: Bytes::new(),
            })
        });
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(RegistryError::Body)?;
            // The inspector stopped early (not a tar): its error says why.
            if tx.send(chunk).is_err() {
                break;
            }
        }
        drop(tx);
        let (diff_id, compressed) = inspect
            .await
            .expect("inspecting does not panic")
            .map_err(|e| RegistryError::Augmentation(format!("blob {digest} is not a tar layer: {e}")))?;
        Ok(InjectedLayer {
            digest: digest.clone(),
            size,
            diff_id,
            compressed,
        })
    }
}

/// A blocking writer whose bytes go to an async task, chunk by chunk.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::other("the store stopped taking the layer"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A blocking reader of chunks sent from an async task.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(chunk) => self.current = chunk,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}
