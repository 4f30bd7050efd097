//! Staged objects (uploads in progress) on S3, where objects cannot be
//! appended to or renamed.
//!
//! A staged object `K` is:
//!
//! ```text
//! K                                         state: {"size", "segments": [{"key", "size"}]} (JSON),
//!                                           content type STATE_CONTENT_TYPE, size also in x-amz-meta-berth-size
//! berth/v1/s3-staged/K/<offset>-<random>    one segment per append (per PATCH): the bytes it added
//! ```
//!
//! Everything is in the bucket, so any replica can continue a session that
//! another started: it reads the state (one small GET), checks the offset and
//! writes a new segment. An append streams its bytes into its segment: up to
//! [`PART_SIZE`] buffered and sent as one PUT, more as a multipart upload of
//! [`PART_SIZE`] parts (one part in flight while the next is received), so
//! memory per upload is bounded by two parts whatever the blob's size. The
//! state is written last, after the segment is complete: a crash or a failed
//! append leaves the state as it was (and an unreferenced segment, removed
//! with the upload).
//!
//! `promote` (commit) copies a single segment to the blob's key on the store
//! side (CopyObject: no bytes through berth; Ceph RGW shares the data instead
//! of copying it). Several segments (a client that sent chunks) are folded
//! into one multipart upload of [`PART_SIZE`] parts, streamed through berth.
//! Segments are ordinary objects, so a replica that did not see a session's
//! earlier chunks can re-read them to rebuild the hash state.
//!
//! Two appends racing on the same offset from different replicas both write
//! their segment; the later state write wins. Clients send an upload's
//! chunks one after the other, and the registry serialises them per replica.

use super::{errors, S3Backend};
use crate::backend::{AppendWriter, ObjectBody, Result, StorageError};
use crate::mapping::Mapping;
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, GetRange, MultipartUpload, ObjectStore, ObjectStoreExt,
    PutOptions, PutPayload,
};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Marks a state object, so that reads of the key can tell it from data.
pub(super) const STATE_CONTENT_TYPE: &str = "application/vnd.berth.s3-staged-object.v1+json";
/// The user metadata holding the staged object's data size (for `head`).
const SIZE_METADATA: &str = "berth-size";
/// Where segments live, outside distribution's tree.
pub(super) const SEGMENTS_ROOT: &str = "berth/v1/s3-staged";
/// The size of multipart parts (S3's minimum is 5 MiB, except for the last).
pub(super) const PART_SIZE: usize = 8 << 20;
/// The largest object S3's CopyObject copies; larger ones are streamed.
const MAX_COPY: u64 = 5 << 30;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(super) struct State {
    size: u64,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Segment {
    /// The segment's key (below the backend's prefix, like every key).
    key: String,
    size: u64,
}

/// What a key holds, for the operations on staged objects.
enum Current {
    Missing,
    /// An ordinary object (an upload created by an empty `put`, or data).
    Plain(u64),
    Staged(State),
}

pub(super) fn segments_dir(backend: &S3Backend, key: &str) -> Path {
    backend.path(&format!("{SEGMENTS_ROOT}/{key}"))
}

pub(super) fn is_state(attributes: &Attributes) -> bool {
    attributes
        .get(&Attribute::ContentType)
        .is_some_and(|v| v.as_ref() == STATE_CONTENT_TYPE)
}

/// The data size of a staged object, from the attributes of its state object.
pub(super) fn logical_size(attributes: &Attributes) -> Option<u64> {
    if !is_state(attributes) {
        return None;
    }
    attributes
        .get(&Attribute::Metadata(SIZE_METADATA.into()))
        .and_then(|v| v.as_ref().parse().ok())
}

async fn read_current(backend: &S3Backend, key: &str) -> Result<Current> {
    let result = match backend.get_plain(key, GetOptions::default()).await {
        Ok(r) => r,
        Err(e) if e.is_not_found() => return Ok(Current::Missing),
        Err(e) => return Err(e),
    };
    if !is_state(&result.attributes) {
        return Ok(Current::Plain(result.meta.size));
    }
    let bytes = result.bytes().await.map_err(|e| errors::map(key, e))?;
    let state = serde_json::from_slice(&bytes).map_err(|e| StorageError::Io {
        key: key.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    Ok(Current::Staged(state))
}

/// The state of the staged object `key` (an empty `put` counts as an empty one).
pub(super) async fn read_state(backend: &S3Backend, key: &str) -> Result<State> {
    match read_current(backend, key).await? {
        Current::Missing => Err(StorageError::NotFound(key.to_owned())),
        Current::Plain(0) => Ok(State::default()),
        Current::Plain(size) => Ok(State {
            size,
            segments: vec![Segment {
                key: key.to_owned(),
                size,
            }],
        }),
        Current::Staged(state) => Ok(state),
    }
}

impl State {
    /// Streams the data (or `range` of it), one segment after the other.
    pub(super) fn open(&self, backend: &S3Backend, key: &str, range: Option<Range<u64>>) -> Result<ObjectBody> {
        let range = range.unwrap_or(0..self.size);
        if range.start > range.end || range.end > self.size {
            return Err(StorageError::RangeNotSatisfiable {
                key: key.to_owned(),
                start: range.start,
                end: range.end,
                size: self.size,
            });
        }
        let mut pieces = Vec::new();
        let mut at = 0;
        for segment in &self.segments {
            let (start, end) = (range.start.max(at), range.end.min(at + segment.size));
            if start < end {
                pieces.push((segment.key.clone(), start - at..end - at));
            }
            at += segment.size;
        }
        let backend = backend.clone();
        let stream = futures::stream::iter(pieces)
            .then(move |(key, r)| {
                let backend = backend.clone();
                async move {
                    let options = GetOptions {
                        range: Some(GetRange::Bounded(r)),
                        ..GetOptions::default()
                    };
                    let result = backend.get_plain(&key, options).await.map_err(std::io::Error::other)?;
                    Ok::<_, std::io::Error>(
                        result
                            .into_stream()
                            .map_err(move |e| std::io::Error::other(errors::map(&key, e))),
                    )
                }
            })
            .try_flatten()
            .boxed();
        Ok(ObjectBody::Stream {
            stream,
            len: range.end - range.start,
        })
    }

    async fn save(&self, backend: &S3Backend, key: &str) -> Result<()> {
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, AttributeValue::from(STATE_CONTENT_TYPE));
        attributes.insert(
            Attribute::Metadata(SIZE_METADATA.into()),
            AttributeValue::from(self.size.to_string()),
        );
        let options = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        let json = serde_json::to_vec(self).expect("the state serialises");
        backend
            .store
            .put_opts(&backend.path(key), PutPayload::from(json), options)
            .await
            .map(|_| ())
            .map_err(|e| errors::map(key, e))
    }
}

/// Streams bytes into a new object: one PUT if they fit in a part, else a
/// multipart upload with one part in flight while the next is buffered.
///
/// A part is a copy of the bytes in a mapping of its own, not the received
/// chunks: a chunk from the network is a slice of the receive buffer it was
/// read into and keeps all of it alive, and those buffers, like any part
/// taken from the heap, stay in the process's heaps once freed (see
/// `crate::mapping`). Two 256 MiB pushes to Ceph peaked at 36 MiB over idle
/// with parts of received chunks (4.5 parts' worth), 45-50 MiB with parts
/// copied into heap buffers, 24-25 MiB with mapped parts (two parts, the one
/// in flight and the one filling, and the receive path). One memcpy per byte
/// is nothing next to a round trip to the store.
pub(super) struct ObjectWriter {
    backend: S3Backend,
    key: String,
    /// The part being filled (mapped on the first byte).
    part: Option<Part>,
    written: u64,
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: Option<tokio::task::JoinHandle<object_store::Result<()>>>,
}

/// Up to [`PART_SIZE`] bytes in a mapping; handed to the HTTP client as the
/// owner of a `Bytes`, unmapped when the client is done with it.
struct Part {
    map: Mapping,
    len: usize,
}

impl AsRef<[u8]> for Part {
    fn as_ref(&self) -> &[u8] {
        &self.map.as_slice()[..self.len]
    }
}

impl ObjectWriter {
    pub(super) fn new(backend: S3Backend, key: String) -> ObjectWriter {
        ObjectWriter {
            backend,
            key,
            part: None,
            written: 0,
            upload: None,
            in_flight: None,
        }
    }

    pub(super) async fn write(&mut self, mut data: Bytes) -> Result<()> {
        self.written += data.len() as u64;
        while !data.is_empty() {
            let part = match &mut self.part {
                Some(part) => part,
                None => self.part.insert(Part {
                    map: Mapping::new(PART_SIZE).map_err(|e| StorageError::io(&self.key, e))?,
                    len: 0,
                }),
            };
            let n = data.len().min(PART_SIZE - part.len);
            part.map.as_mut_slice()[part.len..part.len + n].copy_from_slice(&data.split_to(n));
            part.len += n;
            if part.len == PART_SIZE {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    /// Whether bytes wait in a part (one is mapped only for a byte to put in it).
    fn buffered(&self) -> bool {
        self.part.is_some()
    }

    /// The part being filled, as a payload; the next byte maps a new one.
    fn take_payload(&mut self) -> PutPayload {
        match self.part.take() {
            Some(part) => PutPayload::from_bytes(Bytes::from_owner(part)),
            None => PutPayload::new(),
        }
    }

    async fn wait_in_flight(&mut self) -> Result<()> {
        if let Some(part) = self.in_flight.take() {
            match part.await {
                Ok(r) => r.map_err(|e| errors::map(&self.key, e))?,
                Err(e) => return Err(StorageError::io(&self.key, std::io::Error::other(e))),
            }
        }
        Ok(())
    }

    async fn send_part(&mut self) -> Result<()> {
        if self.upload.is_none() {
            let upload = self
                .backend
                .store
                .put_multipart(&self.backend.path(&self.key))
                .await
                .map_err(|e| errors::map(&self.key, e))?;
            self.upload = Some(upload);
        }
        self.wait_in_flight().await?;
        let payload = self.take_payload();
        let part = self.upload.as_mut().expect("started above").put_part(payload);
        self.in_flight = Some(tokio::spawn(part));
        Ok(())
    }

    /// Completes the object and returns its size (nothing is written for no bytes).
    pub(super) async fn finish(&mut self) -> Result<u64> {
        if self.upload.is_none() {
            if self.buffered() {
                let payload = self.take_payload();
                let path = self.backend.path(&self.key);
                self.backend
                    .store
                    .put(&path, payload)
                    .await
                    .map_err(|e| errors::map(&self.key, e))?;
            }
            return Ok(self.written);
        }
        if self.buffered() {
            self.send_part().await?;
        }
        self.wait_in_flight().await?;
        let mut upload = self.upload.take().expect("checked");
        if let Err(e) = upload.complete().await {
            let _ = upload.abort().await;
            return Err(errors::map(&self.key, e));
        }
        Ok(self.written)
    }
}

impl Drop for ObjectWriter {
    /// An unfinished multipart upload (a client that went away mid-PATCH, a
    /// failed part) is aborted, so that the store frees its parts.
    fn drop(&mut self) {
        if let Some(mut upload) = self.upload.take() {
            if let Some(part) = self.in_flight.take() {
                part.abort();
            }
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = upload.abort().await;
                });
            }
        }
    }
}

/// Appends one segment to a staged object.
pub(super) struct S3AppendWriter {
    backend: S3Backend,
    key: String,
    state: State,
    /// Whether the state object must be written even if no byte comes (it
    /// does not exist yet, or is the empty object the upload started with).
    create: bool,
    segment: ObjectWriter,
}

impl S3AppendWriter {
    pub(super) async fn open(backend: S3Backend, key: &str, offset: u64) -> Result<S3AppendWriter> {
        let (state, create) = match read_current(&backend, key).await? {
            Current::Missing if offset == 0 => (State::default(), true),
            Current::Missing => return Err(StorageError::NotFound(key.to_owned())),
            Current::Plain(0) => (State::default(), true),
            Current::Plain(size) => {
                return Err(StorageError::Io {
                    key: key.to_owned(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("holds {size} bytes of data, not an upload"),
                    ),
                })
            }
            Current::Staged(state) => (state, false),
        };
        if state.size != offset {
            return Err(StorageError::OffsetMismatch {
                key: key.to_owned(),
                expected: offset,
                actual: state.size,
            });
        }
        let segment_key = format!("{SEGMENTS_ROOT}/{key}/{offset:020}-{}", uuid::Uuid::new_v4().simple());
        Ok(S3AppendWriter {
            segment: ObjectWriter::new(backend.clone(), segment_key),
            backend,
            key: key.to_owned(),
            state,
            create,
        })
    }
}

#[async_trait]
impl AppendWriter for S3AppendWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.segment.write(data).await
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        let added = self.segment.finish().await?;
        if added > 0 {
            self.state.segments.push(Segment {
                key: self.segment.key.clone(),
                size: added,
            });
            self.state.size += added;
        }
        if added > 0 || self.create {
            self.state.save(&self.backend, &self.key).await?;
        }
        Ok(self.state.size)
    }
}

/// Moves the staged object `from` to `to` (see the module comment), then
/// removes `from` with its segments.
pub(super) async fn promote(backend: &S3Backend, from: &str, to: &str) -> Result<()> {
    let state = read_state(backend, from).await?;
    match state.segments.as_slice() {
        [] => backend
            .store
            .put(&backend.path(to), PutPayload::new())
            .await
            .map(|_| ())
            .map_err(|e| errors::map(to, e))?,
        [one] if one.size <= MAX_COPY => backend
            .store
            .copy(&backend.path(&one.key), &backend.path(to))
            .await
            .map_err(|e| errors::map(to, e))?,
        _ => {
            let mut writer = ObjectWriter::new(backend.clone(), to.to_owned());
            let mut data = state.open(backend, from, None)?.into_stream(PART_SIZE);
            while let Some(chunk) = data.next().await {
                let chunk = chunk.map_err(|e| StorageError::io(from, e))?;
                writer.write(chunk).await?;
            }
            writer.finish().await?;
        }
    }
    use crate::backend::Backend;
    backend.delete(from).await
}
