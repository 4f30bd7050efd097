//! Layers to inject: a directory packed the way the self image's layer is
//! (nothing that varies between runs or machines), or a tar file as given.
//! Blocking I/O: callers run these on a blocking thread.

use super::InjectedLayer;
use crate::sources::image_builder::{HashWriter, GZIP_LEVEL};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Packs `dir` into a gzip-compressed tar written to `out`: entries in byte
/// order of their paths, owner 0:0 without names, mtime 0, permissions as on
/// disk, regular files, directories and symbolic links (anything else is an
/// error, so what is injected is what the user sees in the directory).
pub fn pack_directory(dir: &Path, out: impl Write) -> io::Result<InjectedLayer> {
    let compressed = HashWriter::new(out);
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(compressed, flate2::Compression::new(GZIP_LEVEL));
    let mut builder = tar::Builder::new(HashWriter::new(gz));
    let mut entries = Vec::new();
    walk(dir, PathBuf::new(), &mut entries)?;
    entries.sort();
    for rel in entries {
        let path = dir.join(&rel);
        let meta = std::fs::symlink_metadata(&path)?;
        let name = rel
            .to_str()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not UTF-8", rel.display())))?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_mode(mode);
        let kind = meta.file_type();
        if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder.append_data(&mut header, format!("{name}/"), io::empty())?;
        } else if kind.is_symlink() {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            let target = std::fs::read_link(&path)?;
            builder.append_link(&mut header, name, target)?;
        } else if kind.is_file() {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let file = std::fs::File::open(&path)?;
            let mut limited = file.take(meta.len());
            builder.append_data(&mut header, name, &mut limited)?;
            if limited.limit() != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} shrank while it was being packed", path.display()),
                ));
            }
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is neither a file, a directory nor a symbolic link", path.display()),
            ));
        }
    }
    let tar_out = builder.into_inner()?;
    let diff_id = tar_out.digester.finish();
    let mut compressed = tar_out.inner.finish()?;
    compressed.flush()?;
    Ok(InjectedLayer {
        digest: compressed.digester.finish(),
        size: compressed.len,
        diff_id,
        compressed: true,
    })
}

fn walk(root: &Path, rel: PathBuf, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(root.join(&rel))? {
        let entry = entry?;
        let child = rel.join(entry.file_name());
        let is_dir = entry.file_type()?.is_dir();
        out.push(child.clone());
        if is_dir {
            walk(root, child, out)?;
        }
    }
    Ok(())
}

/// Reads a layer blob (`gzip` tar or plain tar) to learn its `diff_id` (the
/// digest of the uncompressed tar) and whether it is compressed; also checks
/// that the bytes are a tar archive, so a wrong file is refused when the
/// augmentation is defined rather than when `docker run` unpacks it.
pub fn inspect_layer(mut blob: impl Read) -> io::Result<(berth_spec::Digest, bool)> {
    let mut magic = [0u8; 2];
    let n = read_full(&mut blob, &mut magic)?;
    let head = io::Cursor::new(magic[..n].to_vec()).chain(blob);
    let compressed = n == 2 && magic == [0x1f, 0x8b];
    let mut hashed = HashingReader::new(if compressed {
        Box::new(flate2::read::MultiGzDecoder::new(head)) as Box<dyn Read>
    } else {
        Box::new(head)
    });
    {
        let mut archive = tar::Archive::new(&mut hashed);
        for entry in archive.entries()? {
            entry?;
        }
    }
    // The end-of-archive blocks and any padding count towards the diff_id.
    io::copy(&mut hashed, &mut io::sink())?;
    Ok((hashed.digester.finish(), compressed))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Hashes (SHA-256) and counts what is read through it.
pub(super) struct HashingReader<R> {
    inner: R,
    pub(super) digester: berth_spec::Digester,
    pub(super) len: u64,
}

impl<R> HashingReader<R> {
    pub(super) fn new(inner: R) -> HashingReader<R> {
        HashingReader {
            inner,
            digester: berth_spec::Algorithm::Sha256.digester(),
            len: 0,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digester.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path) {
        std::fs::create_dir_all(dir.join("etc/tool")).unwrap();
        std::fs::write(dir.join("etc/tool/motd"), b"hello from berth\n").unwrap();
        std::fs::write(dir.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
        std::os::unix::fs::symlink("run.sh", dir.join("link")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn a_directory_packs_to_the_same_bytes_every_time_and_unpacks_to_itself() {
        let a = tempfile::tempdir().unwrap();
        tree(a.path());
        let mut first = Vec::new();
        let layer = pack_directory(a.path(), &mut first).unwrap();
        // Another directory with the same content, made later (other mtimes, inode order).
        let b = tempfile::tempdir().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        tree(b.path());
        let mut second = Vec::new();
        assert_eq!(pack_directory(b.path(), &mut second).unwrap(), layer);
        assert_eq!(first, second);
        assert_eq!(layer.size, first.len() as u64);
        let (diff_id, compressed) = inspect_layer(&first[..]).unwrap();
        assert!(compressed);
        assert_eq!(diff_id, layer.diff_id);
        let out = tempfile::tempdir().unwrap();
        tar::Archive::new(flate2::read::GzDecoder::new(&first[..]))
            .unpack(out.path())
            .unwrap();
        assert_eq!(
            std::fs::read(out.path().join("etc/tool/motd")).unwrap(),
            b"hello from berth\n"
        );
        assert_eq!(
            std::fs::read_link(out.path().join("link")).unwrap(),
            Path::new("run.sh")
        );
    }

    #[test]
    fn a_plain_tar_is_its_own_diff_id_and_garbage_is_refused() {
        let mut plain = Vec::new();
        {
            let mut b = tar::Builder::new(&mut plain);
            let mut h = tar::Header::new_gnu();
            h.set_size(3);
            h.set_cksum();
            b.append_data(&mut h, "x", &b"abc"[..]).unwrap();
            b.finish().unwrap();
        }
        let (diff_id, compressed) = inspect_layer(&plain[..]).unwrap();
        assert!(!compressed);
        let mut h = berth_spec::Algorithm::Sha256.digester();
        h.update(&plain);
        assert_eq!(diff_id, h.finish());
        assert!(inspect_layer(&b"\x1f\x8bnot gzip at all"[..]).is_err());
        assert!(inspect_layer(&[7u8; 700][..]).is_err());
    }
}
