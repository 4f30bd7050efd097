//! Conversions between HTTP bodies and the registry's byte streams.

use crate::sendfile::{Region, PLACEHOLDER, PLACEHOLDER_LEN, REGIONS};
use axum::body::Body;
use berth_storage::{ByteStream, ObjectBody};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http_body::{Frame, SizeHint};
use std::io::{self, Read, Seek, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A request body as a stream of byte chunks.
pub fn request_stream(body: Body) -> ByteStream {
    body.into_data_stream().map_err(io::Error::other).boxed()
}

/// Reads a whole request body, refusing more than `limit` bytes.
pub async fn read_limited(body: Body, limit: usize) -> Result<Option<Bytes>, io::Error> {
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(io::Error::other)?;
        if buf.len() + chunk.len() > limit {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf.freeze()))
}

/// Chunk size for file reads: large enough to amortise syscalls, small
/// enough that 64 concurrent downloads stay within a few MiB.
const READ_CHUNK: usize = 128 * 1024;

/// A response body for stored bytes.
pub fn response_body(body: ObjectBody) -> Body {
    match body {
        ObjectBody::Stream { stream, .. } => Body::from_stream(stream),
        ObjectBody::Bytes(b) => Body::from(b),
        ObjectBody::File { file, offset, len } if len <= SMALL_READ as u64 => match read_small(file, offset, len) {
            Ok(bytes) => Body::from(bytes),
            Err(e) => Body::from_stream(futures::stream::once(async move { Err::<Bytes, _>(e) })),
        },
        ObjectBody::File { file, offset, len } => Body::new(FileBody {
            remaining: len,
            state: FileState::Start(Some((file, offset))),
        }),
    }
}

/// A file region as a response body: zero-copy placeholders when the
/// connection supports them (see [`crate::sendfile`]), else read chunks.
struct FileBody {
    remaining: u64,
    state: FileState,
}

enum FileState {
    /// Not polled yet: the mode is chosen on the connection's task.
    Start(Option<(std::fs::File, u64)>),
    Placeholders,
    Stream(ByteStream),
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = self.get_mut();
        if let FileState::Start(start) = &mut this.state {
            let (file, offset) = start.take().expect("a body is not polled after it failed");
            let len = this.remaining;
            this.state = match REGIONS.try_with(|r| r.clone()) {
                Ok(regions) => {
                    regions
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_back(Region::new(file, offset, len));
                    FileState::Placeholders
                }
                Err(_) => FileState::Stream(ObjectBody::File { file, offset, len }.into_stream(READ_CHUNK)),
            };
        }
        match &mut this.state {
            FileState::Placeholders => {
                if this.remaining == 0 {
                    return Poll::Ready(None);
                }
                let n = this.remaining.min(PLACEHOLDER_LEN as u64) as usize;
                this.remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&PLACEHOLDER[..n])))))
            }
            FileState::Stream(stream) => stream.poll_next_unpin(cx).map(|item| {
                item.map(|chunk| {
                    chunk.map(|c| {
                        this.remaining = this.remaining.saturating_sub(c.len() as u64);
                        Frame::data(c)
                    })
                })
            }),
            FileState::Start(_) => unreachable!("the mode was chosen above"),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Regions up to this size are read in place: from the page cache that takes
/// a few microseconds, far less than handing the read to a blocking thread.
const SMALL_READ: usize = 64 * 1024;

fn read_small(mut file: std::fs::File, offset: u64, len: u64) -> io::Result<Bytes> {
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact(&mut buf)?;
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sendfile::Regions;
    use http_body_util::BodyExt;
    use std::io::Write;

    fn temp_file(len: usize) -> (std::path::PathBuf, Vec<u8>) {
        let path = std::env::temp_dir().join(format!("berth-body-test-{}-{len}", std::process::id()));
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::File::create(&path).unwrap().write_all(&data).unwrap();
        (path, data)
    }

    fn file_body(path: &std::path::Path, offset: u64, len: u64) -> Body {
        let file = std::fs::File::open(path).unwrap();
        response_body(ObjectBody::File { file, offset, len })
    }

    #[tokio::test]
    async fn without_a_sendfile_connection_the_file_is_read() {
        let (path, data) = temp_file(3 * READ_CHUNK + 17);
        let got = file_body(&path, 5, data.len() as u64 - 10)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&got[..], &data[5..data.len() - 5]);
        let small = file_body(&path, 1, 100).collect().await.unwrap().to_bytes();
        assert_eq!(&small[..], &data[1..101]);
        std::fs::remove_file(path).unwrap();
    }

    #[tokio::test]
    async fn on_a_sendfile_connection_the_region_is_queued_and_placeholders_sent() {
        let (path, data) = temp_file(PLACEHOLDER_LEN + SMALL_READ + 1);
        let regions = Regions::default();
        let len = data.len() as u64 - 3;
        let got = REGIONS
            .scope(regions.clone(), async { file_body(&path, 3, len).collect().await })
            .await
            .unwrap()
            .to_bytes();
        // The bytes themselves travel by sendfile; the body only carries their count.
        assert_eq!(got.len() as u64, len);
        assert!(got.iter().all(|&b| b == 0));
        let queued = regions.lock().unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!((queued[0].offset, queued[0].remaining), (3, len));
        std::fs::remove_file(path).unwrap();
    }
}
