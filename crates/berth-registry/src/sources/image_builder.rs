//! Builds berth's own image, deterministically: the same executable gives
//! byte-identical layer, config and manifest on every run and every machine.
//!
//! Nothing may depend on the clock, the host or the file system: the tar
//! header is fixed (ustar, mode 0755, uid/gid 0, no user or group names,
//! mtime 0), the gzip header carries no time, name or OS, the compression
//! level is fixed, and the JSON documents are serialized from structs (fixed
//! field order) without a `created` time.

use berth_spec::{media_type, Digest, Digester};
use serde::Serialize;
use std::io::{self, Read, Write};

/// Where the executable lives in the image, and so its entrypoint.
pub const EXECUTABLE_PATH: &str = "/berth";
pub const EXPOSED_PORT: &str = "5000/tcp";
pub(crate) const GZIP_LEVEL: u32 = 6;

/// The GOARCH name of this build's architecture, as image configs spell it.
pub fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        other => other,
    }
}

/// Counts and hashes what passes through to `inner`.
pub(crate) struct HashWriter<W> {
    pub(crate) inner: W,
    pub(crate) digester: Digester,
    pub(crate) len: u64,
}

impl<W> HashWriter<W> {
    pub(crate) fn new(inner: W) -> HashWriter<W> {
        HashWriter {
            inner,
            digester: berth_spec::Algorithm::Sha256.digester(),
            len: 0,
        }
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digester.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The layer written by [`write_layer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Digest of the compressed layer (the blob).
    pub digest: Digest,
    pub size: u64,
    /// Digest of the uncompressed tar (the config's `diff_id`).
    pub diff_id: Digest,
}

/// Writes a gzip-compressed tar holding `len` bytes of `executable` at `/berth`.
/// A tar header of a regular file with nothing that varies between runs or
/// machines (owner 0:0, no names, mtime 0), so archives built from the same
/// bytes are byte-identical.
pub fn fixed_header(path: &str, size: u64, mode: u32) -> io::Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    header.set_path(path)?;
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_username("")?;
    header.set_groupname("")?;
    header.set_device_major(0)?;
    header.set_device_minor(0)?;
    header.set_cksum();
    Ok(header)
}

pub fn write_layer(executable: impl Read, len: u64, out: impl Write) -> io::Result<Layer> {
    let compressed = HashWriter {
        inner: out,
        digester: berth_spec::Algorithm::Sha256.digester(),
        len: 0,
    };
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(compressed, flate2::Compression::new(GZIP_LEVEL));
    let tar_out = HashWriter {
        inner: gz,
        digester: berth_spec::Algorithm::Sha256.digester(),
        len: 0,
    };
    let mut builder = tar::Builder::new(tar_out);
    let header = fixed_header(EXECUTABLE_PATH.trim_start_matches('/'), len, 0o755)?;
    let mut limited = executable.take(len);
    builder.append(&header, &mut limited)?;
    if limited.limit() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the executable shrank while it was being packaged",
        ));
    }
    let tar_out = builder.into_inner()?;
    let diff_id = tar_out.digester.finish();
    let compressed = tar_out.inner.finish()?;
    let mut compressed_out = compressed;
    compressed_out.flush()?;
    Ok(Layer {
        digest: compressed_out.digester.finish(),
        size: compressed_out.len,
        diff_id,
    })
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    architecture: &'a str,
    os: &'a str,
    config: RunConfig<'a>,
    rootfs: RootFs<'a>,
    history: [History<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig<'a> {
    exposed_ports: std::collections::BTreeMap<&'a str, Empty>,
    entrypoint: [&'a str; 1],
    cmd: [&'a str; 1],
    working_dir: &'a str,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: [&'a Digest; 1],
}

#[derive(Serialize)]
struct History<'a> {
    created_by: &'a str,
}

/// The image config for a layer with this `diff_id`, for `architecture`/`os`.
pub fn config_json(architecture: &str, os: &str, diff_id: &Digest) -> Vec<u8> {
    let config = ImageConfig {
        architecture,
        os,
        config: RunConfig {
            exposed_ports: [(EXPOSED_PORT, Empty {})].into_iter().collect(),
            entrypoint: [EXECUTABLE_PATH],
            cmd: ["serve"],
            working_dir: "/",
        },
        rootfs: RootFs {
            kind: "layers",
            diff_ids: [diff_id],
        },
        history: [History {
            created_by: "berth: its own executable at /berth",
        }],
    };
    serde_json::to_vec(&config).expect("a config serializes")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageManifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Desc<'a>,
    layers: [Desc<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Desc<'a> {
    media_type: &'a str,
    digest: &'a Digest,
    size: u64,
}

/// The OCI image manifest for `config` and `layer`.
pub fn manifest_json(config: &[u8], layer: &Layer) -> Vec<u8> {
    let config_digest = Digest::sha256_of(config);
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: media_type::OCI_MANIFEST,
        config: Desc {
            media_type: media_type::OCI_CONFIG,
            digest: &config_digest,
            size: config.len() as u64,
        },
        layers: [Desc {
            media_type: media_type::OCI_LAYER_GZIP,
            digest: &layer.digest,
            size: layer.size,
        }],
    };
    serde_json::to_vec(&manifest).expect("a manifest serializes")
}

/// The config of an artifact that has none: image-spec's empty descriptor, `{}`.
pub const EMPTY_CONFIG: &[u8] = b"{}";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactManifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    artifact_type: &'a str,
    config: Desc<'a>,
    layers: [TitledDesc<'a>; 1],
    subject: Desc<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TitledDesc<'a> {
    media_type: &'a str,
    digest: &'a Digest,
    size: u64,
    annotations: Title<'a>,
}

#[derive(Serialize)]
struct Title<'a> {
    #[serde(rename = "org.opencontainers.image.title")]
    title: &'a str,
}

/// An OCI artifact manifest that attaches `document` (of media type
/// `artifact_type`, saved as `title` by clients such as oras) to the image
/// manifest `subject`: image-spec's way of hanging an SBOM or a signature on
/// an image, listed by the referrers API. Its config is [`EMPTY_CONFIG`]; it
/// has no time in it, so the same document and subject give the same digest.
pub fn artifact_manifest_json(subject: &[u8], artifact_type: &str, document: &[u8], title: &str) -> Vec<u8> {
    let subject_digest = Digest::sha256_of(subject);
    let config_digest = Digest::sha256_of(EMPTY_CONFIG);
    let document_digest = Digest::sha256_of(document);
    let manifest = ArtifactManifest {
        schema_version: 2,
        media_type: media_type::OCI_MANIFEST,
        artifact_type,
        config: Desc {
            media_type: media_type::OCI_EMPTY,
            digest: &config_digest,
            size: EMPTY_CONFIG.len() as u64,
        },
        layers: [TitledDesc {
            media_type: artifact_type,
            digest: &document_digest,
            size: document.len() as u64,
            annotations: Title { title },
        }],
        subject: Desc {
            media_type: media_type::OCI_MANIFEST,
            digest: &subject_digest,
            size: subject.len() as u64,
        },
    };
    serde_json::to_vec(&manifest).expect("a manifest serializes")
}

/// True when the ELF executable asks for a program interpreter (the dynamic
/// loader), i.e. it cannot run in an empty container. Static and static-pie
/// executables have no `PT_INTERP` program header.
pub fn elf_needs_interpreter(mut file: impl Read + io::Seek) -> io::Result<bool> {
    let mut ehdr = [0u8; 64];
    file.seek(io::SeekFrom::Start(0))?;
    file.read_exact(&mut ehdr)?;
    if &ehdr[..4] != b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        // Not a 64-bit little-endian ELF: nothing berth builds for; assume it is fine.
        return Ok(false);
    }
    let phoff = u64::from_le_bytes(ehdr[0x20..0x28].try_into().unwrap());
    let phentsize = u16::from_le_bytes(ehdr[0x36..0x38].try_into().unwrap()) as u64;
    let phnum = u16::from_le_bytes(ehdr[0x38..0x3a].try_into().unwrap()) as u64;
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        file.seek(io::SeekFrom::Start(phoff + i * phentsize))?;
        let mut p_type = [0u8; 4];
        file.read_exact(&mut p_type)?;
        if u32::from_le_bytes(p_type) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;

    fn build(content: &[u8]) -> (Vec<u8>, Layer) {
        let mut out = Vec::new();
        let layer = write_layer(content, content.len() as u64, &mut out).unwrap();
        (out, layer)
    }

    #[test]
    fn layer_is_deterministic_and_digests_are_right() {
        let exe: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (a, la) = build(&exe);
        let (b, lb) = build(&exe);
        assert_eq!(a, b);
        assert_eq!(la, lb);
        assert_eq!(la.digest, Digest::sha256_of(&a));
        assert_eq!(la.size, a.len() as u64);
        // gzip header: no mtime, no name, OS "unknown".
        assert_eq!(&a[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        let mut tar_bytes = Vec::new();
        GzDecoder::new(&a[..]).read_to_end(&mut tar_bytes).unwrap();
        assert_eq!(la.diff_id, Digest::sha256_of(&tar_bytes));

        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut entries = archive.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str(), Some("berth"));
        let h = e.header().clone();
        assert_eq!(h.mode().unwrap(), 0o755);
        assert_eq!((h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()), (0, 0, 0));
        assert_eq!(h.username().unwrap(), Some(""));
        let mut content = Vec::new();
        e.read_to_end(&mut content).unwrap();
        assert_eq!(content, exe);
        assert!(entries.next().is_none());

        let (c, lc) = build(&exe[1..]);
        assert_ne!(a, c);
        assert_ne!(la.diff_id, lc.diff_id);
    }

    #[test]
    fn short_executable_is_an_error() {
        let mut out = Vec::new();
        assert!(write_layer(&b"abc"[..], 10, &mut out).is_err());
    }

    #[test]
    fn config_and_manifest_are_fixed() {
        let (_, layer) = build(b"exe");
        let config = config_json("amd64", "linux", &layer.diff_id);
        assert_eq!(config, config_json("amd64", "linux", &layer.diff_id));
        let v: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(v["architecture"], "amd64");
        assert_eq!(v["os"], "linux");
        assert_eq!(v["config"]["Entrypoint"], serde_json::json!(["/berth"]));
        assert_eq!(v["config"]["Cmd"], serde_json::json!(["serve"]));
        assert_eq!(v["config"]["ExposedPorts"], serde_json::json!({"5000/tcp": {}}));
        assert_eq!(v["rootfs"]["diff_ids"][0], layer.diff_id.to_string());
        assert!(v.get("created").is_none());

        let manifest = manifest_json(&config, &layer);
        let parsed = berth_spec::Manifest::parse(&manifest, Some(media_type::OCI_MANIFEST)).unwrap();
        assert_eq!(parsed.media_type, media_type::OCI_MANIFEST);
        assert_eq!(parsed.config.as_ref().unwrap().digest, Digest::sha256_of(&config));
        assert_eq!(parsed.layers[0].digest, layer.digest);
        assert_eq!(parsed.layers[0].size, layer.size);
    }

    #[test]
    fn artifact_manifest_refers_to_its_subject() {
        let (_, layer) = build(b"exe");
        let image = manifest_json(&config_json("amd64", "linux", &layer.diff_id), &layer);
        let sbom = br#"{"bomFormat":"CycloneDX"}"#;
        let bytes = artifact_manifest_json(&image, media_type::CYCLONEDX_JSON, sbom, "sbom.cdx.json");
        assert_eq!(
            bytes,
            artifact_manifest_json(&image, media_type::CYCLONEDX_JSON, sbom, "sbom.cdx.json")
        );
        let parsed = berth_spec::Manifest::parse(&bytes, Some(media_type::OCI_MANIFEST)).unwrap();
        assert_eq!(parsed.media_type, media_type::OCI_MANIFEST);
        assert_eq!(parsed.artifact_type.as_deref(), Some(media_type::CYCLONEDX_JSON));
        let subject = parsed.subject.unwrap();
        assert_eq!(subject.digest, Digest::sha256_of(&image));
        assert_eq!(subject.size, image.len() as u64);
        assert_eq!(subject.media_type, media_type::OCI_MANIFEST);
        let config = parsed.config.unwrap();
        assert_eq!(config.media_type, media_type::OCI_EMPTY);
        assert_eq!(
            config.digest.to_string(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(parsed.layers.len(), 1);
        assert_eq!(parsed.layers[0].digest, Digest::sha256_of(sbom));
        assert_eq!(parsed.layers[0].media_type, media_type::CYCLONEDX_JSON);
        let title = &parsed.layers[0].annotations.as_ref().unwrap()["org.opencontainers.image.title"];
        assert_eq!(title, "sbom.cdx.json");
        let other = artifact_manifest_json(&image, media_type::CYCLONEDX_JSON, b"{}", "sbom.cdx.json");
        assert_ne!(bytes, other);
    }

    #[test]
    fn goarch_names() {
        if cfg!(target_arch = "x86_64") {
            assert_eq!(goarch(), "amd64");
        }
        if cfg!(target_arch = "aarch64") {
            assert_eq!(goarch(), "arm64");
        }
    }

    #[test]
    fn elf_interpreter_detection() {
        let dynamic = std::fs::File::open("/bin/sh").unwrap();
        assert!(elf_needs_interpreter(dynamic).unwrap());
        let static_busybox = std::fs::File::open("/bin/busybox").unwrap();
        assert!(!elf_needs_interpreter(static_busybox).unwrap());
        assert!(!elf_needs_interpreter(io::Cursor::new(vec![0u8; 64])).unwrap());
    }
}
