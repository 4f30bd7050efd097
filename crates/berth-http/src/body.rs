//! Conversions between HTTP bodies and the registry's byte streams.

use axum::body::Body;
use berth_storage::{ByteStream, ObjectBody};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::io::{self, Read, Seek, SeekFrom};
use tokio::sync::mpsc;

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
        ObjectBody::File { file, offset, len } if len <= SMALL_READ as u64 => match read_small(file, offset, len) {
            Ok(bytes) => Body::from(bytes),
            Err(e) => Body::from_stream(futures::stream::once(async move { Err::<Bytes, _>(e) })),
        },
        ObjectBody::File { file, offset, len } => Body::from_stream(file_stream(file, offset, len)),
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

/// Streams a file region, reading on a blocking thread one chunk ahead of the socket.
fn file_stream(mut file: std::fs::File, offset: u64, len: u64) -> ByteStream {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(2);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = file.seek(SeekFrom::Start(offset)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut remaining = len;
        while remaining > 0 {
            let n = remaining.min(READ_CHUNK as u64) as usize;
            let mut buf = vec![0u8; n];
            if let Err(e) = file.read_exact(&mut buf) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            remaining -= n as u64;
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                return; // the client went away
            }
        }
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from(mut rx: mpsc::Receiver<io::Result<Bytes>>) -> ByteStream {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}
