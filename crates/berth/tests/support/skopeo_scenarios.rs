//! skopeo scenarios shared by the test files that run skopeo against berth
//! (on the filesystem, on S3).

use super::images::{layout_blob, layout_ref, sha256_digest, unique, Index, OciLayout};
use super::tools::{skopeo_copy, skopeo_raw};
use super::TestServer;

/// Copies `index` (and every image in it) into berth with `skopeo copy --all`
/// and back out into a fresh OCI layout: every manifest and blob keeps its digest.
pub fn copy_index_in_and_out_keeps_digests(server: &TestServer) {
    let index = Index::multi_arch(&unique("h2-skopeo-index"));
    let tmp = tempfile::tempdir().unwrap();
    let mut src = OciLayout::create(&tmp.path().join("src"));
    src.add_index("multi", &index);

    let image = format!("{}/h2/skopeo/multi:v1", server.host());
    skopeo_copy(&src.reference("multi"), &format!("docker://{image}"), true);

    // The index is served byte for byte, and so is each platform's manifest.
    let raw = skopeo_raw(&image);
    assert_eq!(sha256_digest(&raw), index.index.digest, "index digest changed in berth");
    assert_eq!(raw, index.index.bytes);
    for img in &index.images {
        let raw = skopeo_raw(&format!("{}/h2/skopeo/multi@{}", server.host(), img.manifest.digest));
        assert_eq!(raw, img.manifest.bytes, "manifest of {:?}", img.platform);
    }

    let out = tmp.path().join("out");
    skopeo_copy(
        &format!("docker://{image}"),
        &format!("oci:{}:back", out.display()),
        true,
    );
    let d = layout_ref(&out, "back");
    assert_eq!(
        d["digest"], index.index.digest,
        "index digest after the round trip: {d}"
    );
    assert_eq!(layout_blob(&out, &index.index.digest), index.index.bytes);
    for img in &index.images {
        assert_eq!(layout_blob(&out, &img.manifest.digest), img.manifest.bytes);
        for b in img.blobs() {
            assert_eq!(layout_blob(&out, &b.digest), b.bytes, "blob {}", b.digest);
        }
    }
}
