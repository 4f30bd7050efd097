//! `berth self-digest` and `berth sbom`: what this executable is, for
//! checking a registry's berth image against a build from source.

use anyhow::Context;
use std::io::Write;

/// Prints the manifest digest of this executable's self image.
pub fn self_digest() -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding berth's own executable")?;
    let digest = berth_registry::sources::self_image::manifest_digest(&exe)
        .with_context(|| format!("packaging {}", exe.display()))?;
    println!("{digest}");
    Ok(())
}

/// Prints the SBOM compiled into this executable.
pub fn sbom() -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(crate::sbom::DOCUMENT).and_then(|()| out.flush()) {
        // A reader that stopped early (`berth sbom | head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("writing the SBOM"),
    }
}
