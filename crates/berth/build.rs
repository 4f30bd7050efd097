//! Writes berth's bill of materials into the binary: every crate cargo
//! resolved for it (name, version, source, checksum, license, who depends on
//! whom), the Rust toolchain, and the C library linked in statically, as a
//! CycloneDX 1.5 JSON document in `$OUT_DIR/sbom.cdx.json` that `src/sbom.rs`
//! includes. The running binary can so describe itself (`berth sbom`), and its
//! self image carries the document as an OCI referrer.
//!
//! The crate list is what `cargo tree -e normal` resolves for this package on
//! this target: the features a build of berth enables, no dev- or
//! build-dependencies, and no crate only other platforms use (`cargo
//! metadata` would list the union over the workspace and its dev-dependencies).
//! Checksums come from Cargo.lock. Proc-macros and what only they use run at
//! compile time: they are listed with scope `excluded`.
//!
//! The document is part of the binary, so it must be as reproducible as the
//! rest of it: sorted, no timestamps, no serial number, no paths.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.join("../..");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed={}", workspace.join("Cargo.lock").display());
    println!("cargo::rerun-if-changed={}", workspace.join("Cargo.toml").display());
    // A member's features or dependencies change what cargo tree resolves.
    if let Ok(crates) = std::fs::read_dir(workspace.join("crates")) {
        let mut manifests: Vec<PathBuf> = crates.flatten().map(|e| e.path().join("Cargo.toml")).collect();
        manifests.sort();
        for m in manifests.iter().filter(|m| m.is_file()) {
            println!("cargo::rerun-if-changed={}", m.display());
        }
    }

    let target = env("TARGET");
    let tree = run(Command::new(env("CARGO"))
        .current_dir(&manifest_dir)
        .args([
            "tree", "--frozen", "--edges", "normal", "--prefix", "depth", "--format", "{p}\t{l}",
        ])
        .args(["--package", &env("CARGO_PKG_NAME"), "--target", &target])
        .arg("--manifest-path")
        .arg(manifest_dir.join("Cargo.toml")));
    let graph = Graph::parse(&tree);
    let lock = Lockfile::read(&workspace.join("Cargo.lock"));
    let rustc = run(Command::new(env("RUSTC")).arg("-vV"));
    let cargo = run(Command::new(env("CARGO")).arg("--version"));
    let bom = bom(&graph, &lock, &rustc, cargo.trim(), &target);
    let mut json = serde_json::to_vec_pretty(&bom).expect("the SBOM serializes");
    json.push(b'\n');
    let out = PathBuf::from(env("OUT_DIR")).join("sbom.cdx.json");
    std::fs::write(&out, json).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}

/// Runs a command to completion; its stdout, or a build failure that says why.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "berth's SBOM: {cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// A crate as cargo tree names it: name and version identify it within one resolve.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct CrateId {
    name: String,
    version: String,
}

impl CrateId {
    fn bom_ref(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

struct Crate {
    license: Option<String>,
    proc_macro: bool,
}

/// The dependency graph of the root package, from `cargo tree --prefix depth`.
struct Graph {
    root: CrateId,
    crates: BTreeMap<CrateId, Crate>,
    deps: BTreeMap<CrateId, BTreeSet<CrateId>>,
}

impl Graph {
    /// Each line is `<depth><name> v<version>[ (<source or proc-macro>)]\t<license>[ (*)]`;
    /// a line's parent is the last line one level up. `(*)` marks a crate
    /// whose dependencies were printed before.
    fn parse(tree: &str) -> Graph {
        let mut stack: Vec<CrateId> = Vec::new();
        let mut crates = BTreeMap::new();
        let mut deps: BTreeMap<CrateId, BTreeSet<CrateId>> = BTreeMap::new();
        let mut root: Option<CrateId> = None;
        for line in tree.lines().filter(|l| !l.trim().is_empty()) {
            let digits = line.bytes().take_while(u8::is_ascii_digit).count();
            let depth: usize = line[..digits]
                .parse()
                .unwrap_or_else(|_| panic!("cargo tree line {line:?}"));
            let (package, license) = line[digits..]
                .split_once('\t')
                .unwrap_or_else(|| panic!("cargo tree line {line:?}"));
            let license = license.trim().trim_end_matches("(*)").trim();
            let mut words = package.split_whitespace();
            let (Some(name), Some(version)) = (words.next(), words.next().and_then(|v| v.strip_prefix('v'))) else {
                panic!("cargo tree line {line:?}");
            };
            let id = CrateId {
                name: name.to_owned(),
                version: version.to_owned(),
            };
            crates.entry(id.clone()).or_insert_with(|| Crate {
                license: (!license.is_empty()).then(|| spdx_expression(license)),
                proc_macro: package.contains("(proc-macro)"),
            });
            stack.truncate(depth);
            if let Some(parent) = stack.last() {
                deps.entry(parent.clone()).or_default().insert(id.clone());
            }
            assert_eq!(stack.len(), depth, "cargo tree line {line:?} skips a level");
            root.get_or_insert_with(|| id.clone());
            stack.push(id);
        }
        let root = root.expect("cargo tree printed the root package");
        Graph { root, crates, deps }
    }

    /// Crates reachable from the root without going through a proc-macro:
    /// the ones whose code is in the binary.
    fn linked(&self) -> BTreeSet<CrateId> {
        let mut seen = BTreeSet::new();
        let mut pending = vec![self.root.clone()];
        while let Some(id) = pending.pop() {
            if self.crates[&id].proc_macro || !seen.insert(id.clone()) {
                continue;
            }
            pending.extend(self.deps.get(&id).into_iter().flatten().cloned());
        }
        seen
    }
}

/// crates.io still holds licenses in the old `MIT/Apache-2.0` form; SPDX spells it with OR.
fn spdx_expression(license: &str) -> String {
    license.split('/').map(str::trim).collect::<Vec<_>>().join(" OR ")
}

/// Source and checksum of each package in Cargo.lock.
struct Lockfile {
    packages: BTreeMap<CrateId, (Option<String>, Option<String>)>,
}

impl Lockfile {
    fn read(path: &Path) -> Lockfile {
        #[derive(serde::Deserialize)]
        struct Lock {
            package: Vec<Package>,
        }
        #[derive(serde::Deserialize)]
        struct Package {
            name: String,
            version: String,
            source: Option<String>,
            checksum: Option<String>,
        }
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let lock: Lock = toml::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
        let packages = lock
            .package
            .into_iter()
            .map(|p| {
                (
                    CrateId {
                        name: p.name,
                        version: p.version,
                    },
                    (p.source, p.checksum),
                )
            })
            .collect();
        Lockfile { packages }
    }
}

const CRATES_IO: [&str; 2] = [
    "registry+https://github.com/rust-lang/crates.io-index",
    "sparse+https://index.crates.io/",
];

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bom {
    bom_format: &'static str,
    spec_version: &'static str,
    version: u32,
    metadata: Metadata,
    components: Vec<Component>,
    dependencies: Vec<Dependency>,
}

#[derive(Serialize)]
struct Metadata {
    component: Component,
}

#[derive(Serialize)]
struct Component {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "bom-ref")]
    bom_ref: String,
    name: String,
    version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hashes: Vec<Hash>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    licenses: Vec<License>,
    #[serde(skip_serializing_if = "Option::is_none")]
    purl: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    properties: Vec<Property>,
}

#[derive(Serialize)]
struct Hash {
    alg: &'static str,
    content: String,
}

#[derive(Serialize)]
struct License {
    expression: String,
}

#[derive(Serialize)]
struct Property {
    name: &'static str,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Dependency {
    #[serde(rename = "ref")]
    reference: String,
    depends_on: Vec<String>,
}

fn property(name: &'static str, value: impl Into<String>) -> Property {
    Property {
        name,
        value: value.into(),
    }
}

fn bom(graph: &Graph, lock: &Lockfile, rustc_vv: &str, cargo: &str, target: &str) -> Bom {
    let linked = graph.linked();
    let crate_component = |id: &CrateId, kind: &'static str| {
        let info = &graph.crates[id];
        let (source, checksum) = lock.packages.get(id).cloned().unwrap_or_default();
        let purl = match source.as_deref() {
            Some(s) if CRATES_IO.contains(&s) => Some(format!("pkg:cargo/{}@{}", id.name, id.version)),
            _ => None,
        };
        let mut properties = vec![property(
            "cargo:source",
            source.unwrap_or_else(|| "workspace".to_owned()),
        )];
        if info.proc_macro {
            properties.push(property("cargo:kind", "proc-macro"));
        }
        Component {
            kind,
            bom_ref: id.bom_ref(),
            name: id.name.clone(),
            version: id.version.clone(),
            description: None,
            scope: (id != &graph.root).then(|| if linked.contains(id) { "required" } else { "excluded" }),
            hashes: checksum
                .map(|c| Hash {
                    alg: "SHA-256",
                    content: c,
                })
                .into_iter()
                .collect(),
            licenses: info.license.iter().map(|l| License { expression: l.clone() }).collect(),
            purl,
            properties,
        }
    };

    let rustc_line = rustc_vv.lines().next().unwrap_or_default().trim().to_owned();
    let rustc_field = |key: &str| {
        rustc_vv
            .lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    let rust_version = rustc_field("release:");
    let mut root = crate_component(&graph.root, "application");
    root.properties.extend([
        property("rust:rustc", rustc_line.clone()),
        property("rust:commit-hash", rustc_field("commit-hash:")),
        property("rust:llvm-version", rustc_field("LLVM version:")),
        property("rust:cargo", cargo),
        property("rust:target", target),
    ]);

    let mut components: Vec<Component> = graph
        .crates
        .keys()
        .filter(|id| *id != &graph.root)
        .map(|id| crate_component(id, "library"))
        .collect();
    // The standard library is compiled into every Rust binary; its version is the compiler's.
    let std_ref = format!("rust-std@{rust_version}");
    components.push(Component {
        kind: "library",
        bom_ref: std_ref.clone(),
        name: "rust-std".to_owned(),
        version: rust_version,
        description: Some(format!("The Rust standard library, from {rustc_line}")),
        scope: Some("required"),
        hashes: Vec::new(),
        licenses: vec![License {
            expression: "MIT OR Apache-2.0".to_owned(),
        }],
        purl: None,
        properties: Vec::new(),
    });
    let mut root_deps: Vec<String> = vec![std_ref];
    if let Some(libc) = static_libc() {
        root_deps.push(libc.bom_ref.clone());
        components.push(libc);
    }
    components.sort_by(|a, b| a.bom_ref.cmp(&b.bom_ref));

    let mut dependencies: Vec<Dependency> = graph
        .crates
        .keys()
        .map(|id| {
            let mut depends_on: Vec<String> = graph.deps.get(id).into_iter().flatten().map(CrateId::bom_ref).collect();
            if id == &graph.root {
                depends_on.extend(root_deps.iter().cloned());
                depends_on.sort();
            }
            Dependency {
                reference: id.bom_ref(),
                depends_on,
            }
        })
        .collect();
    dependencies.sort_by(|a, b| a.reference.cmp(&b.reference));

    Bom {
        bom_format: "CycloneDX",
        spec_version: "1.5",
        version: 1,
        metadata: Metadata { component: root },
        components,
        dependencies,
    }
}

/// glibc, when the target links it in statically (`+crt-static` on a gnu
/// target, as berth's release build does): its code is then part of the binary.
fn static_libc() -> Option<Component> {
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let static_crt = features.split(',').any(|f| f == "crt-static");
    if !static_crt || std::env::var("CARGO_CFG_TARGET_ENV").as_deref() != Ok("gnu") {
        return None;
    }
    // The static libc.a comes with the host's C library of the same version.
    let out = Command::new("getconf").arg("GNU_LIBC_VERSION").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.trim().strip_prefix("glibc ")?.to_owned();
    Some(Component {
        kind: "library",
        bom_ref: format!("glibc@{version}"),
        name: "glibc".to_owned(),
        version,
        description: Some("The GNU C library, linked in statically (crt-static)".to_owned()),
        scope: Some("required"),
        hashes: Vec::new(),
        licenses: vec![License {
            expression: "LGPL-2.1-or-later".to_owned(),
        }],
        purl: None,
        properties: Vec::new(),
    })
}
