//! An index of the regular files in a tar archive: where each file's bytes lie
//! in the archive, so they can be read (and served) in place, never unpacked.
//!
//! Building the index reads only the headers (the tar crate seeks past file
//! contents), so it costs one small read per entry whatever the archive's size.

use super::{Region, SourceError};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

#[derive(Debug)]
pub struct TarIndex {
    path: PathBuf,
    entries: HashMap<String, Entry>,
}

#[derive(Debug, Clone)]
enum Entry {
    File {
        offset: u64,
        len: u64,
    },
    /// A symbolic or hard link, as the normalized path of its target.
    Link(String),
}

/// Links are followed at most this many times, so a cycle cannot hang a lookup.
const MAX_LINK_HOPS: usize = 16;

impl TarIndex {
    pub fn open(path: &Path) -> Result<TarIndex, SourceError> {
        let fail = |what: String| SourceError::new(format!("{}: {what}", path.display()));
        let mut file = File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
        let file_len = file.metadata().map_err(|e| fail(e.to_string()))?.len();
        let mut magic = [0u8; 2];
        if file.read(&mut magic).map_err(|e| fail(e.to_string()))? == 2 && magic == [0x1f, 0x8b] {
            return Err(fail(
                "is gzip-compressed; layers can only be served in place from an uncompressed tar (gunzip it first)"
                    .into(),
            ));
        }
        let file = File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
        let mut archive = tar::Archive::new(file);
        let mut entries = HashMap::new();
        let iter = archive
            .entries_with_seek()
            .map_err(|e| fail(format!("not a tar archive: {e}")))?;
        for entry in iter {
            let entry = entry.map_err(|e| fail(format!("corrupt tar archive: {e}")))?;
            let raw_path = entry
                .path()
                .map_err(|e| fail(format!("corrupt tar archive: bad entry name: {e}")))?
                .into_owned();
            let Some(name) = normalize(&raw_path) else { continue };
            let kind = entry.header().entry_type();
            if kind.is_file() || kind == tar::EntryType::Continuous {
                let offset = entry.raw_file_position();
                let len = entry.size();
                // Seeking past the end of a file succeeds and the tar crate then
                // sees a clean end of archive, so truncation must be caught here.
                if offset.saturating_add(len) > file_len {
                    return Err(fail(format!(
                        "truncated: entry {name} needs bytes up to {} but the file has {file_len}",
                        offset + len
                    )));
                }
                entries.insert(name, Entry::File { offset, len });
            } else if kind.is_symlink() || kind.is_hard_link() {
                let Some(target) = entry.link_name().ok().flatten() else {
                    continue;
                };
                let target = if kind.is_symlink() && !target.is_absolute() {
                    Path::new(&name).parent().unwrap_or(Path::new("")).join(target)
                } else {
                    target.into_owned()
                };
                if let Some(target) = normalize(&target) {
                    entries.insert(name, Entry::Link(target));
                }
            }
        }
        if entries.is_empty() {
            return Err(fail("not a tar archive, or an empty one".into()));
        }
        Ok(TarIndex {
            path: path.to_owned(),
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the regular file `name` (following links) lies in the archive.
    pub fn get(&self, name: &str) -> Option<Region> {
        let mut name = normalize(Path::new(name))?;
        for _ in 0..MAX_LINK_HOPS {
            match self.entries.get(&name)? {
                Entry::File { offset, len } => {
                    return Some(Region {
                        path: self.path.clone(),
                        offset: *offset,
                        len: *len,
                    })
                }
                Entry::Link(target) => name = target.clone(),
            }
        }
        None
    }
}

/// `./a/b/../c` -> `a/c`; `None` for the root itself or paths escaping it.
fn normalize(path: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    fn header(path: &str, size: u64, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        if !path.is_empty() {
            h.set_path(path).unwrap();
        }
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(kind);
        h.set_cksum();
        h
    }

    fn archive(f: impl FnOnce(&mut tar::Builder<&mut Vec<u8>>)) -> Vec<u8> {
        let mut buf = Vec::new();
        {
            let mut b = tar::Builder::new(&mut buf);
            f(&mut b);
            b.finish().unwrap();
        }
        buf
    }

    fn read_region(r: &Region) -> Vec<u8> {
        let mut f = File::open(&r.path).unwrap();
        f.seek(SeekFrom::Start(r.offset)).unwrap();
        let mut v = vec![0; r.len as usize];
        f.read_exact(&mut v).unwrap();
        v
    }

    fn write_tmp(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(bytes).unwrap();
        t
    }

    #[test]
    fn finds_files_in_place_and_follows_links() {
        let long = format!("blobs/sha256/{}", "a".repeat(120));
        let bytes = archive(|b| {
            b.append(&header("./index.json", 5, tar::EntryType::Regular), &b"hello"[..])
                .unwrap();
            b.append(&header("dir", 0, tar::EntryType::Directory), &b""[..])
                .unwrap();
            b.append_data(&mut header("", 3, tar::EntryType::Regular), &long, &b"xyz"[..])
                .unwrap();
            let mut l = header("x/layer.tar", 0, tar::EntryType::Symlink);
            l.set_link_name("../index.json").unwrap();
            l.set_cksum();
            b.append(&l, &b""[..]).unwrap();
        });
        let t = write_tmp(&bytes);
        let idx = TarIndex::open(t.path()).unwrap();
        assert_eq!(read_region(&idx.get("index.json").unwrap()), b"hello");
        assert_eq!(read_region(&idx.get(&long).unwrap()), b"xyz");
        assert_eq!(read_region(&idx.get("x/layer.tar").unwrap()), b"hello");
        assert!(idx.get("dir").is_none());
        assert!(idx.get("missing").is_none());
    }

    #[test]
    fn truncated_archive_is_an_error_naming_the_file() {
        let bytes = archive(|b| {
            b.append(&header("big", 4096, tar::EntryType::Regular), &vec![7u8; 4096][..])
                .unwrap();
        });
        let t = write_tmp(&bytes[..1500]);
        let err = TarIndex::open(t.path()).unwrap_err().to_string();
        assert!(err.contains(&t.path().display().to_string()), "{err}");
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn garbage_and_gzip_are_errors() {
        let t = write_tmp(&[1u8; 1024]);
        assert!(TarIndex::open(t.path()).is_err());
        let t = write_tmp(&[0x1f, 0x8b, 8, 0, 0, 0]);
        assert!(TarIndex::open(t.path()).unwrap_err().to_string().contains("gzip"));
    }

    #[test]
    fn link_cycles_end() {
        let bytes = archive(|b| {
            for (from, to) in [("a", "b"), ("b", "a")] {
                let mut l = header(from, 0, tar::EntryType::Symlink);
                l.set_link_name(to).unwrap();
                l.set_cksum();
                b.append(&l, &b""[..]).unwrap();
            }
        });
        let t = write_tmp(&bytes);
        let idx = TarIndex::open(t.path()).unwrap();
        assert!(idx.get("a").is_none());
    }
}
