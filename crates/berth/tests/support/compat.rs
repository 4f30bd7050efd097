//! What the compatibility tests with CNCF distribution push to one registry
//! and read back from the other (on a shared data directory or bucket): a
//! multi-arch index, single-layer images under several tags, a multi-layer
//! image with a layer above S3's 5 MiB part size, a blob uploaded in chunks
//! and a deleted image.

use super::images::{layout_blob, layout_ref, sha256_digest, unique, Blob, Entry, Image, Index, Layer, OciLayout};
use super::images::{Platform, OCI_INDEX, OCI_MANIFEST};
use super::tools::{http_get, skopeo, skopeo_copy, skopeo_raw};
use serde_json::Value;

/// The repositories the fixture pushes to (the whole catalog).
pub const REPOSITORIES: [&str; 2] = ["h2/compat/multi", "h2/compat/one"];

/// What both directions push and then expect to read back.
pub struct Fixture {
    _tmp: tempfile::TempDir,
    src: OciLayout,
    pub index: Index,
    pub a: Image,
    pub b: Image,
    /// Three layers, one of them 7 MiB that does not compress.
    pub layered: Image,
    /// An image pushed as h2/compat/one:doomed and deleted (by [`Fixture::push_and_delete_doomed`]).
    pub doomed: Image,
    /// A blob of h2/compat/one uploaded in chunks (by [`Fixture::upload_chunked`]).
    pub chunked: Blob,
}

/// `len` bytes that gzip cannot shrink (xorshift64 from `seed`).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

impl Fixture {
    pub fn new(prefix: &str) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let mut src = OciLayout::create(tmp.path());
        let index = Index::multi_arch(&unique(&format!("{prefix}-multi")));
        let a = Image::runnable(&unique(&format!("{prefix}-a")));
        let b = Image::runnable(&unique(&format!("{prefix}-b")));
        let marker = unique(&format!("{prefix}-layered"));
        let seed = u64::from_le_bytes(sha256_digest(marker.as_bytes()).as_bytes()[7..15].try_into().unwrap());
        let layered = Image::new(
            Platform::amd64(),
            vec![
                Layer::busybox(&[]),
                Layer::new(&[Entry::file("marker", format!("{marker}\n"))]),
                Layer::new(&[Entry::file("noise", noise(seed, 7 << 20))]),
            ],
            &["/bin/busybox", "cat", "/marker"],
        );
        let doomed = Image::runnable(&unique(&format!("{prefix}-doomed")));
        src.add_index("multi", &index);
        src.add_image("a", &a);
        src.add_image("b", &b);
        src.add_image("layered", &layered);
        src.add_image("doomed", &doomed);
        Fixture {
            _tmp: tmp,
            src,
            index,
            a,
            b,
            layered,
            doomed,
            chunked: Blob::new(noise(seed ^ 0x5eed, (7 << 20) + 150_000)),
        }
    }

    /// Pushes with skopeo: the index as h2/compat/multi:v1, `a` as
    /// h2/compat/one:v1 and :latest, `b` as h2/compat/one:v2, `layered` as
    /// h2/compat/one:layers.
    pub fn push(&self, host: &str) {
        skopeo_copy(
            &self.src.reference("multi"),
            &format!("docker://{host}/h2/compat/multi:v1"),
            true,
        );
        for (from, tag) in [("a", "v1"), ("a", "latest"), ("b", "v2"), ("layered", "layers")] {
            skopeo_copy(
                &self.src.reference(from),
                &format!("docker://{host}/h2/compat/one:{tag}"),
                false,
            );
        }
    }

    /// Pushes `doomed` as h2/compat/one:doomed and deletes it with skopeo
    /// (a DELETE of the manifest by digest, which takes its tag with it).
    pub fn push_and_delete_doomed(&self, host: &str) {
        let r = format!("docker://{host}/h2/compat/one:doomed");
        skopeo_copy(&self.src.reference("doomed"), &r, false);
        skopeo(["delete", "--tls-verify=false"]).arg(&r).ok();
    }

    /// Uploads [`Fixture::chunked`] to h2/compat/one the way containerd and
    /// skopeo's chunked mode do: POST, PATCHes with `Content-Range` (3 MiB,
    /// under S3's part minimum, then 4 MiB, then 100 KB) and the rest with the
    /// closing PUT.
    pub fn upload_chunked(&self, url: &str) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = reqwest::Client::new();
            let absolute = |loc: &str| {
                if loc.starts_with("http") {
                    loc.to_owned()
                } else {
                    format!("{url}{loc}")
                }
            };
            let location = |r: &reqwest::Response| {
                let loc = r.headers()["location"].to_str().unwrap();
                absolute(loc)
            };
            let r = c
                .post(format!("{url}/v2/h2/compat/one/blobs/uploads/"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202, "POST: {:?}", r.text().await);
            let mut loc = location(&r);
            let bytes = &self.chunked.bytes;
            let mut at = 0;
            for len in [3 << 20, 4 << 20, 100_000] {
                let r = c
                    .patch(&loc)
                    .header("content-type", "application/octet-stream")
                    .header("content-range", format!("{at}-{}", at + len - 1))
                    .body(bytes[at..at + len].to_vec())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202, "PATCH at {at}: {:?}", r.text().await);
                at += len;
                assert_eq!(r.headers()["range"].to_str().unwrap(), format!("0-{}", at - 1));
                loc = location(&r);
            }
            let sep = if loc.contains('?') { '&' } else { '?' };
            let r = c
                .put(format!("{loc}{sep}digest={}", self.chunked.digest))
                .header("content-type", "application/octet-stream")
                .body(bytes[at..].to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "PUT: {:?}", r.text().await);
        });
    }

    /// Reads everything back from the registry at `host` (`url` is its base
    /// URL); with `chunked_and_doomed`, also what [`Fixture::upload_chunked`]
    /// and [`Fixture::push_and_delete_doomed`] did.
    pub fn check(&self, host: &str, url: &str, chunked_and_doomed: bool) {
        let multi = format!("{host}/h2/compat/multi:v1");
        assert_eq!(skopeo_raw(&multi), self.index.index.bytes, "index of {multi}");
        for img in &self.index.images {
            let r = format!("{host}/h2/compat/multi@{}", img.manifest.digest);
            assert_eq!(skopeo_raw(&r), img.manifest.bytes, "{r}");
        }
        for (tag, img) in [
            ("v1", &self.a),
            ("latest", &self.a),
            ("v2", &self.b),
            ("layers", &self.layered),
        ] {
            let r = format!("{host}/h2/compat/one:{tag}");
            assert_eq!(sha256_digest(&skopeo_raw(&r)), img.manifest.digest, "{r}");
        }

        let out = skopeo(["list-tags", "--tls-verify=false"])
            .arg(format!("docker://{host}/h2/compat/one"))
            .ok();
        let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.describe()));
        let mut tags: Vec<&str> = v["Tags"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        tags.sort_unstable();
        assert_eq!(tags, ["latest", "layers", "v1", "v2"], "{v}");

        let (status, body) = http_get(&format!("{url}/v2/_catalog"));
        assert_eq!(status, 200);
        let catalog: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(catalog["repositories"], serde_json::json!(REPOSITORIES), "{catalog}");

        // Every blob comes out whole: copy it all into a fresh layout (the
        // layered image by digest).
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().display();
        skopeo_copy(&format!("docker://{multi}"), &format!("oci:{dir}:multi"), true);
        skopeo_copy(
            &format!("docker://{host}/h2/compat/one:v2"),
            &format!("oci:{dir}:b"),
            false,
        );
        skopeo_copy(
            &format!("docker://{host}/h2/compat/one@{}", self.layered.manifest.digest),
            &format!("oci:{dir}:layered"),
            false,
        );
        assert_eq!(layout_ref(out.path(), "multi")["digest"], self.index.index.digest);
        assert_eq!(layout_ref(out.path(), "b")["digest"], self.b.manifest.digest);
        assert_eq!(
            layout_ref(out.path(), "layered")["digest"],
            self.layered.manifest.digest
        );
        for img in self.index.images.iter().chain([&self.b, &self.layered]) {
            for blob in img.blobs() {
                assert_eq!(layout_blob(out.path(), &blob.digest), blob.bytes);
            }
        }

        if chunked_and_doomed {
            self.check_chunked_and_doomed(url);
        }
    }

    fn check_chunked_and_doomed(&self, url: &str) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = reqwest::Client::new();
            let blob = format!("{url}/v2/h2/compat/one/blobs/{}", self.chunked.digest);
            let r = c.get(&blob).send().await.unwrap();
            assert_eq!(r.status(), 200, "GET {blob}");
            assert!(
                r.bytes().await.unwrap() == self.chunked.bytes,
                "the chunked blob came back different"
            );
            let r = c
                .get(&blob)
                .header("range", "bytes=5000000-5000099")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 206, "ranged GET {blob}");
            assert_eq!(
                r.bytes().await.unwrap().as_ref(),
                &self.chunked.bytes[5_000_000..5_000_100]
            );

            let accept = format!("{OCI_MANIFEST}, {OCI_INDEX}");
            for reference in ["doomed", self.doomed.manifest.digest.as_str()] {
                let m = format!("{url}/v2/h2/compat/one/manifests/{reference}");
                let r = c.get(&m).header("accept", &accept).send().await.unwrap();
                assert_eq!(r.status(), 404, "GET {m}: the deleted image is still served");
            }
        });
    }
}
