//! A bare HTTP/1.1 GET whose response body the kernel throws away.
//!
//! Pulls measured with the hyper client were bounded by the client: on 2
//! cores it used 0.6-1.4 cores to copy every byte out of the socket, as much
//! as the servers it was measuring, so a few percent between two servers
//! drowned in the client's own cost. Here the body is received with
//! `recv(MSG_TRUNC)`, which for TCP drops the bytes in the kernel without
//! copying them to user space (tcp(7)); what is left of the client's cost is
//! the TCP receive path itself. Only for pulls without `--verify`: nothing of
//! the body is seen, only its length.

use crate::client::Target;
use anyhow::{anyhow, bail, Context};
use std::os::fd::AsRawFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Bytes asked of one `recv`. The kernel never writes to the buffer
/// (MSG_TRUNC), but the range passed must still be valid memory.
const SINK: usize = 1 << 20;

/// One keep-alive connection for GETs whose bodies are discarded.
pub struct DiscardConn {
    stream: TcpStream,
    authority: String,
    /// `Authorization: ...\r\n`, or empty.
    authorization: String,
    head: Vec<u8>,
    sink: Vec<u8>,
    usable: bool,
}

/// A response whose body was discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discarded {
    pub status: u16,
    pub body_len: u64,
}

impl DiscardConn {
    pub async fn connect(target: &Target) -> anyhow::Result<DiscardConn> {
        if target.tls.is_some() {
            bail!("--discard needs plain HTTP: over TLS every byte must be decrypted");
        }
        let stream = TcpStream::connect(target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        stream.set_nodelay(true)?;
        Ok(DiscardConn {
            stream,
            authority: target.authority.to_str()?.to_owned(),
            authorization: match &target.authorization {
                Some(a) => format!("Authorization: {}\r\n", a.to_str()?),
                None => String::new(),
            },
            head: Vec::with_capacity(4096),
            sink: vec![0; SINK],
            usable: true,
        })
    }

    /// False once the server asked to close or a response could not be read whole.
    pub fn is_usable(&self) -> bool {
        self.usable
    }

    /// GETs `path` and discards the body, which must have a Content-Length.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Discarded> {
        // Whatever happens before the end of the body leaves the connection mid-message.
        self.usable = false;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{}\r\n",
            self.authority, self.authorization
        );
        self.stream.write_all(request.as_bytes()).await?;
        let (head_len, status, body_len, keep_alive) = self.read_head().await?;
        let early = (self.head.len() - head_len) as u64;
        if early > body_len {
            bail!(
                "{} bytes after a body of {body_len}: the server sent more than asked",
                early - body_len
            );
        }
        let mut remaining = body_len - early;
        let fd = self.stream.as_raw_fd();
        while remaining > 0 {
            let want = remaining.min(SINK as u64) as usize;
            let sink = &mut self.sink;
            let n = self.stream.try_io(Interest::READABLE, || {
                let buf = sink.as_mut_ptr().cast::<libc::c_void>();
                // SAFETY: `buf` is valid for `want` <= SINK bytes during the call;
                // with MSG_TRUNC the kernel does not even write to it.
                let n = unsafe { libc::recv(fd, buf, want, libc::MSG_TRUNC | libc::MSG_DONTWAIT) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as u64)
                }
            });
            match n {
                Ok(0) => bail!("connection closed with {remaining} bytes of the body to come"),
                Ok(n) => remaining -= n.min(remaining),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.stream.readable().await?,
                Err(e) => return Err(e.into()),
            }
        }
        self.usable = keep_alive;
        Ok(Discarded { status, body_len })
    }

    /// Reads the status line and headers into `self.head`; returns the head's
    /// length, the status, the Content-Length and whether the connection stays open.
    async fn read_head(&mut self) -> anyhow::Result<(usize, u16, u64, bool)> {
        self.head.clear();
        let head_len = loop {
            if let Some(i) = self.head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.head.len() > MAX_HEAD {
                bail!("response head longer than {MAX_HEAD} bytes");
            }
            self.head.reserve(4096);
            if self.stream.read_buf(&mut self.head).await? == 0 {
                bail!("connection closed before the response head ended");
            }
        };
        let text = std::str::from_utf8(&self.head[..head_len]).context("response head is not UTF-8")?;
        parse_head(text).map(|(status, len, keep_alive)| (head_len, status, len, keep_alive))
    }
}

/// Parses a response head: status, Content-Length, and whether the
/// connection stays open. Chunked bodies are refused (nothing here needs them).
fn parse_head(head: &str) -> anyhow::Result<(u16, u64, bool)> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1 response: {status_line:?}");
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {status_line:?}"))?;
    let mut len = None;
    let mut keep_alive = version != "HTTP/1.0";
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| anyhow!("bad header line {line:?}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            len = Some(
                value
                    .parse::<u64>()
                    .with_context(|| format!("Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("Transfer-Encoding {value:?}: only bodies with a Content-Length can be discarded");
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    let len = len.ok_or_else(|| anyhow!("response without Content-Length"))?;
    Ok((status, len, keep_alive))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn heads() {
        assert_eq!(
            parse_head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\nx: y\r\n\r\n").unwrap(),
            (200, 12, true)
        );
        assert_eq!(
            parse_head("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap(),
            (404, 0, false)
        );
        assert!(parse_head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head("HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_head("SSH-2.0\r\n\r\n").is_err());
    }

    /// Bodies of any size, some arriving with the head, are counted exactly,
    /// and the connection is reused for the next response.
    #[tokio::test]
    async fn discards_bodies_and_keeps_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sizes = [0usize, 1, 5000, 3 * SINK + 17];
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            for size in sizes {
                // One request per response: read until the end of its head.
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n");
                let mut msg = head.into_bytes();
                msg.extend(std::iter::repeat_n(7u8, size));
                s.write_all(&msg).await.unwrap();
            }
        });
        let target = Target::parse(&format!("http://{addr}")).await.unwrap();
        let mut conn = DiscardConn::connect(&target).await.unwrap();
        for size in sizes {
            let r = conn.get("/v2/x/blobs/sha256:abc").await.unwrap();
            assert_eq!(
                r,
                Discarded {
                    status: 200,
                    body_len: size as u64
                }
            );
            assert!(conn.is_usable());
        }
        server.await.unwrap();
        // The server is gone: the next request fails instead of hanging.
        assert!(conn.get("/v2/").await.is_err());
        assert!(!conn.is_usable());
    }
}
