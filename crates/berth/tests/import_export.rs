//! `berth import` and `berth export` carry images across an air gap: import
//! every archive format (verifying every digest), export to an OCI layout tar
//! that skopeo, `docker load` and berth itself accept, and get the same
//! digests back after export -> import. Fails (never skips) without docker or skopeo.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use support::images::{unique, Image, Index, OciLayout};
use support::tools::{berth, http_get, skopeo_copy, tool, Output};

fn docker<I: IntoIterator<Item = S>, S: AsRef<str>>(args: I) -> support::tools::Tool {
    tool("docker").args(args)
}

#[derive(Default)]
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for r in &self.0 {
            let _ = docker(["rmi", "-f", r.as_str()]).run();
        }
    }
}

fn berth_cli(args: &[&str]) -> support::tools::Tool {
    tool(&support::berth_exe().display().to_string()).args(args)
}

fn import(archive: &Path, data: &Path, repo: Option<&str>) -> Output {
    let archive = archive.display().to_string();
    let data = data.display().to_string();
    let mut args = vec!["import", archive.as_str(), "--data", data.as_str()];
    if let Some(r) = repo {
        args.extend(["--repo", r]);
    }
    berth_cli(&args).ok()
}

/// The manifest digest `server` serves for `repo:reference`.
fn digest(url: &str, repo: &str, reference: &str) -> String {
    let (status, body) = http_get(&format!("{url}/v2/{repo}/manifests/{reference}"));
    assert_eq!(status, 200, "{repo}:{reference}: {}", String::from_utf8_lossy(&body));
    support::images::sha256_digest(&body)
}

fn tags(url: &str, repo: &str) -> Value {
    let (status, body) = http_get(&format!("{url}/v2/{repo}/tags/list"));
    assert_eq!(status, 200, "{repo}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice::<Value>(&body).unwrap()["tags"].clone()
}

#[test]
fn import_every_format_then_export_and_back_gives_the_same_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    let mut cleanup = Cleanup::default();
    let id = unique("h3-ie");

    // An OCI layout directory with bare-tag names: needs --repo.
    let image = Image::runnable(&format!("{id}-lay"));
    let index = Index::multi_arch(&format!("{id}-multi"));
    let mut layout = OciLayout::create(&p("layout"));
    layout.add_image("v1", &image);
    layout.add_index("multi", &index);
    let lay_repo = format!("{id}/lay");
    let data = p("data");
    let out = berth_cli(&[
        "import",
        &p("layout").display().to_string(),
        "--data",
        &data.display().to_string(),
    ])
    .fails();
    assert!(out.stderr.contains("--repo"), "{}", out.describe());
    let out = import(&p("layout"), &data, Some(&lay_repo));
    assert!(
        out.stdout
            .contains(&format!("imported {lay_repo}:v1 {}", image.manifest.digest)),
        "{}",
        out.describe()
    );

    // A skopeo oci-archive named app-<id>:v2, imported under that name.
    let app_repo = format!("{id}-app");
    let app = Image::runnable(&format!("{id}-app"));
    let mut l2 = OciLayout::create(&p("l2"));
    l2.add_image("x", &app);
    skopeo_copy(
        &l2.reference("x"),
        &format!("oci-archive:{}:{app_repo}:v2", p("app.tar").display()),
        false,
    );
    import(&p("app.tar"), &data, None);

    // A classic docker save from the engine.
    let classic_marker = format!("{id}-classic");
    let classic = Image::runnable(&classic_marker);
    let mut l3 = OciLayout::create(&p("l3"));
    l3.add_image("x", &classic);
    let local = format!("{classic_marker}:v3");
    cleanup.0.push(local.clone());
    skopeo_copy(&l3.reference("x"), &format!("docker-daemon:{local}"), false);
    docker(["save", "-o", &p("classic.tar").display().to_string(), &local]).ok();
    import(&p("classic.tar"), &data, None);

    // Served from storage, as imported.
    let classic_digest;
    {
        let s = berth(&["--data", &data.display().to_string()]);
        assert_eq!(tags(&s.url, &lay_repo), json!(["multi", "v1"]));
        assert_eq!(digest(&s.url, &lay_repo, "v1"), image.manifest.digest);
        assert_eq!(digest(&s.url, &lay_repo, "multi"), index.index.digest);
        assert_eq!(digest(&s.url, &app_repo, "v2"), app.manifest.digest);
        classic_digest = digest(&s.url, &classic_marker, "v3");
        // The same manifest berth synthesizes when serving the archive in place.
        let src = berth(&["--source", &format!("c={}", p("classic.tar").display())]);
        assert_eq!(digest(&src.url, &format!("c/{classic_marker}"), "v3"), classic_digest);
        let pulled = format!("{}/{classic_marker}:v3", s.host());
        cleanup.0.push(pulled.clone());
        docker(["pull", &pulled]).ok();
        let run = docker(["run", "--rm", &pulled]).ok();
        assert_eq!(run.stdout.trim(), classic_marker);
    }

    // Export, twice: the same bytes.
    let images = [
        format!("{lay_repo}:v1"),
        format!("{lay_repo}:multi"),
        format!("{app_repo}:v2"),
        format!("{classic_marker}:v3"),
    ];
    let export = |out: &Path| {
        let mut args = vec!["export".to_owned()];
        args.extend(images.iter().cloned());
        args.extend([
            "-o".to_owned(),
            out.display().to_string(),
            "--data".to_owned(),
            data.display().to_string(),
        ]);
        tool(&support::berth_exe().display().to_string()).args(&args).ok()
    };
    export(&p("export.tar"));
    export(&p("export2.tar"));
    assert!(
        std::fs::read(p("export.tar")).unwrap() == std::fs::read(p("export2.tar")).unwrap(),
        "exports are deterministic"
    );

    // berth import of the export: the same names and digests.
    let data2 = p("data2");
    import(&p("export.tar"), &data2, None);
    let s2 = berth(&["--data", &data2.display().to_string()]);
    assert_eq!(digest(&s2.url, &lay_repo, "v1"), image.manifest.digest);
    assert_eq!(digest(&s2.url, &lay_repo, "multi"), index.index.digest);
    for (_, child) in index.images.iter().map(|i| ((), &i.manifest.digest)) {
        assert_eq!(digest(&s2.url, &lay_repo, child), *child, "every platform was exported");
    }
    assert_eq!(digest(&s2.url, &app_repo, "v2"), app.manifest.digest);
    assert_eq!(digest(&s2.url, &classic_marker, "v3"), classic_digest);

    // --source serves the export in place, with the same digests.
    let s3 = berth(&["--source", &format!("x={}", p("export.tar").display())]);
    assert_eq!(digest(&s3.url, &format!("x/{lay_repo}"), "multi"), index.index.digest);
    assert_eq!(digest(&s3.url, &format!("x/{classic_marker}"), "v3"), classic_digest);

    // skopeo reads it (every platform of the index).
    let copied = p("copied");
    skopeo_copy(
        &format!("oci-archive:{}:multi", p("export.tar").display()),
        &format!("oci:{}:m", copied.display()),
        true,
    );
    assert_eq!(
        support::images::layout_ref(&copied, "m")["digest"],
        json!(index.index.digest)
    );

    // docker load takes it, and the loaded image runs.
    docker(["rmi", "-f", &local]).ok();
    let loaded_lay = format!("{lay_repo}:v1");
    cleanup.0.push(loaded_lay.clone());
    cleanup.0.push(format!("{app_repo}:v2"));
    cleanup.0.push(format!("{lay_repo}:multi"));
    docker(["load", "-i", &p("export.tar").display().to_string()]).ok();
    let run = docker(["run", "--rm", &loaded_lay]).ok();
    assert_eq!(run.stdout.trim(), format!("{id}-lay"));
    let run = docker(["run", "--rm", &local]).ok();
    assert_eq!(run.stdout.trim(), classic_marker);
}

#[test]
fn import_verifies_digests_and_names_the_broken_file() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    let image = Image::runnable(&unique("h3-ie-broken"));
    let mut layout = OciLayout::create(&p("layout"));
    layout.add_image("v1", &image);
    skopeo_copy(
        &layout.reference("v1"),
        &format!("oci-archive:{}:v1", p("good.tar").display()),
        false,
    );
    let good = std::fs::read(p("good.tar")).unwrap();
    let data = p("data");

    std::fs::write(p("truncated.tar"), &good[..good.len() / 2]).unwrap();
    let out = berth_cli(&[
        "import",
        &p("truncated.tar").display().to_string(),
        "--repo",
        "broken",
        "--data",
        &data.display().to_string(),
    ])
    .fails();
    assert!(
        out.stderr.contains("truncated.tar") && out.stderr.contains("truncated"),
        "{}",
        out.describe()
    );

    let layer = &image.layers[0].blob.bytes;
    let at = good.windows(64).position(|w| w == &layer[..64]).unwrap();
    let mut corrupt = good.clone();
    corrupt[at + layer.len() / 2] ^= 0x55;
    std::fs::write(p("corrupt.tar"), &corrupt).unwrap();
    let out = berth_cli(&[
        "import",
        &p("corrupt.tar").display().to_string(),
        "--repo",
        "broken",
        "--data",
        &data.display().to_string(),
    ])
    .fails();
    assert!(out.stderr.contains(&image.layers[0].blob.digest), "{}", out.describe());
    let s = berth(&["--data", &data.display().to_string()]);
    let (status, _) = http_get(&format!("{}/v2/broken/manifests/v1", s.url));
    assert_eq!(status, 404, "nothing is tagged after a failed import");
    drop(s);

    // The good archive imports; exporting something absent fails and writes nothing.
    import(&p("good.tar"), &data, Some("fine"));
    let out = berth_cli(&[
        "export",
        "fine:v1",
        "fine:nope",
        "-o",
        &p("out.tar").display().to_string(),
        "--data",
        &data.display().to_string(),
    ])
    .fails();
    assert!(out.stderr.contains("fine:nope"), "{}", out.describe());
    assert!(!p("out.tar").exists());
}

/// A running server remembers what it read of its directory (tags, which
/// blobs exist); `berth import` into that directory tells it to forget, so
/// what was absent, and a tag the import moves, are served as imported
/// within the server's poll interval (100 ms).
#[test]
fn an_import_into_a_served_directory_is_served_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    let data = p("data");
    let first = Image::runnable(&unique("h3-ie-live-a"));
    let second = Image::runnable(&unique("h3-ie-live-b"));
    let mut a = OciLayout::create(&p("a"));
    a.add_image("v1", &first);
    let mut b = OciLayout::create(&p("b"));
    b.add_image("v1", &second);

    let s = berth(&["--data", &data.display().to_string()]);
    let manifest = format!("{}/v2/live/manifests/v1", s.url);
    let layer = format!("{}/v2/live/blobs/{}", s.url, first.layers[0].blob.digest);
    // Asked before the import, so that the server remembers the absences.
    assert_eq!(http_get(&manifest).0, 404);
    assert_eq!(http_get(&layer).0, 404);

    let served_within = |want: &str| {
        let start = std::time::Instant::now();
        loop {
            let (status, body) = http_get(&manifest);
            if status == 200 && support::images::sha256_digest(&body) == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(3),
                "not served 3 s after the import: {status}"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    import(&p("a"), &data, Some("live"));
    let took = served_within(&first.manifest.digest);
    eprintln!("imported tag served {took:?} after the import ended");
    assert_eq!(http_get(&layer).0, 200);

    // The import moves the tag: the old digest is not served for long.
    import(&p("b"), &data, Some("live"));
    let took = served_within(&second.manifest.digest);
    eprintln!("moved tag served {took:?} after the import ended");
}
