//! A private containerd daemon for `ctr` tests: its own root, state and
//! sockets in a temporary directory, so it never touches the machine's
//! containerd (or the one dockerd runs). Stopped when dropped.

use super::tools::{tool, Tool};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

pub struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    /// Starts containerd and waits until `ctr version` reaches it.
    pub fn start() -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let p = |sub: &str| dir.path().join(sub).display().to_string();
        // The CRI plugin wants a CNI setup and is not needed to pull.
        let config = format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{}\"\n[ttrpc]\n  address = \"{}\"\n[debug]\n  address = \"\"\n\
             [metrics]\n  address = \"\"\n",
            p("root"),
            p("state"),
            p("containerd.sock"),
            p("containerd.sock.ttrpc")
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = std::process::Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd is installed (Debian package containerd)");
        let c = Containerd { dir, child };
        let up = super::wait_until(Duration::from_secs(20), || c.ctr(["version"]).run().success());
        assert!(up, "containerd did not start: {}", c.log());
        c
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// `ctr --address <this daemon> <args>`
    pub fn ctr<I: IntoIterator<Item = S>, S: AsRef<str>>(&self, args: I) -> Tool {
        tool("ctr")
            .arg("--address")
            .arg(self.socket().display().to_string())
            .args(args)
            .timeout(Duration::from_secs(120))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
