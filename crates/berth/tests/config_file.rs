//! The config file and `--check-config` through the real executable, and how
//! berth reports a user error (no backtrace, even with RUST_BACKTRACE=1).

mod support;

use clap::CommandFactory;
use sha2::Digest as _;
use std::time::Duration;
use support::{berth_cli, examples_dir, write_config, BerthProcess};

/// stderr of a user error: short, and no trace of a backtrace.
fn assert_no_backtrace(stderr: &str) {
    let lower = stderr.to_lowercase();
    assert!(!lower.contains("backtrace") && !lower.contains("panicked"), "{stderr}");
    assert!(stderr.lines().count() <= 4, "a few lines, not a trace: {stderr}");
}

#[test]
fn check_config_accepts_the_annotated_example() {
    let example = examples_dir().join("berth.toml");
    let out = berth_cli(["serve", "--check-config", "--config", example.to_str().unwrap()]).ok();
    assert!(out.stderr.contains("configuration is valid"), "{}", out.describe());
    let effective: toml::Table = toml::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    assert_eq!(effective["listen"].as_str(), Some("127.0.0.1:5000"), "{}", out.stdout);
    assert!(
        out.stdout.contains("berth.toml line"),
        "origins are named: {}",
        out.stdout
    );
}

#[test]
fn check_config_accepts_the_rules_example_and_shows_its_sections() {
    let example = examples_dir().join("rules.toml");
    let out = berth_cli(["serve", "--check-config", "--config", example.to_str().unwrap()]).ok();
    assert!(out.stderr.contains("configuration is valid"), "{}", out.describe());
    for shown in [
        "[[retention]]",
        "keep-last = 20",
        "[[immutable]]",
        "[[quota]]",
        "limit = \"50GiB\"",
    ] {
        assert!(out.stdout.contains(shown), "{shown}: {}", out.stdout);
    }
}

#[test]
fn a_mistake_in_a_rule_is_refused_naming_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[[retention]]\nrepositories = \"ci/**\"\nkeep-tags = \"(unclosed\"\n",
    );
    let out = berth_cli(["serve", "--check-config", "--config", config.to_str().unwrap()]).fails();
    assert!(
        out.stderr.contains("retention rule for \"ci/**\"") && out.stderr.contains("regular expression"),
        "{}",
        out.describe()
    );
    assert_no_backtrace(&out.stderr);
}

#[test]
fn the_example_shows_every_option_of_serve() {
    let text = std::fs::read_to_string(examples_dir().join("berth.toml")).unwrap();
    let cli = berth::cli::Cli::command();
    let serve = cli.find_subcommand("serve").unwrap();
    let missing: Vec<&str> = serve
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|long| !["config", "check-config"].contains(long))
        .filter(|long| {
            !text
                .lines()
                .any(|l| l.trim_start_matches(['#', ' ']).starts_with(&format!("{long} =")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "examples/berth.toml does not show {missing:?}: add each, with a comment"
    );
}

#[test]
fn serve_listens_and_stores_where_the_file_says() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data-from-file");
    let config = write_config(
        dir.path(),
        &format!(
            "listen = \"127.0.0.1:0\"\ndata = {:?}\nlog-format = \"json\"\nno-self-image = true\n",
            data.display().to_string()
        ),
    );
    // Without the file berth would listen on 0.0.0.0:5000, log text and store in ./data.
    let berth = BerthProcess::spawn_args(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(berth.addr.ip().to_string(), "127.0.0.1");
    assert_ne!(berth.addr.port(), 5000);

    let blob = b"stored where the config file says".to_vec();
    let hex = hex::encode(sha2::Sha256::digest(&blob));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{}/v2/cfg/test/blobs/uploads/?digest=sha256:{hex}", berth.url))
            .header("content-type", "application/octet-stream")
            .body(blob.clone())
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status.as_u16(), 201);
    let stored = data.join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]));
    assert_eq!(std::fs::read(&stored).unwrap(), blob);
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // Sources must exist to pass the check (a missing one stops berth).
    let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
    std::fs::write(&a, b"").unwrap();
    std::fs::write(&b, b"").unwrap();
    let (a_source, b_source) = (format!("a={}", a.display()), format!("b={}", b.display()));
    let config = write_config(
        dir.path(),
        &format!(
            "listen = \"127.0.0.1:7001\"\ndata = \"/from/file\"\nlog-format = \"json\"\nupload-max-age-secs = 60\nno-self-image = true\nsource = [{a_source:?}, {b_source:?}]\n"
        ),
    );
    let out = berth_cli([
        "serve",
        "--check-config",
        "--config",
        config.to_str().unwrap(),
        "--log-format",
        "text",
    ])
    .env("BERTH_DATA", "/from/env")
    .env("BERTH_LOG_FORMAT", "json")
    .env("BERTH_SYNC", "per-file")
    .ok();
    let effective: toml::Table = toml::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.describe()));
    let get = |k: &str| effective[k].clone();
    assert_eq!(get("listen").as_str(), Some("127.0.0.1:7001"), "file over default");
    assert_eq!(get("data").as_str(), Some("/from/env"), "environment over file");
    assert_eq!(
        get("log-format").as_str(),
        Some("text"),
        "flag over environment and file"
    );
    assert_eq!(get("sync").as_str(), Some("per-file"), "environment over default");
    assert_eq!(get("upload-max-age-secs").as_integer(), Some(60));
    assert_eq!(get("no-self-image").as_bool(), Some(true));
    assert_eq!(get("self-name").as_str(), Some("berth"), "default");
    let sources: Vec<&str> = effective["source"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(sources, [a_source, b_source]);
    let line = |k: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{k} =")))
            .unwrap()
            .to_string()
    };
    assert!(line("listen").ends_with("berth.toml line 1"), "{}", out.stdout);
    assert!(line("data").ends_with("environment BERTH_DATA"), "{}", out.stdout);
    assert!(line("log-format").ends_with("command line"), "{}", out.stdout);
    assert!(line("self-name").ends_with("default"), "{}", out.stdout);
}

#[test]
fn a_bad_config_file_fails_naming_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "listen = \"127.0.0.1:0\"\n# the next key is misspelt\nlisen = \"0.0.0.0:80\"\n",
    );
    for extra in [
        &["--check-config"][..],
        &["--no-self-image", "--data", dir.path().to_str().unwrap()][..],
    ] {
        let out = berth_cli(["serve", "--config", config.to_str().unwrap()])
            .args(extra)
            .env("RUST_BACKTRACE", "1")
            .timeout(Duration::from_secs(60))
            .fails();
        assert!(
            out.stderr.contains("line 3") && out.stderr.contains("unknown key `lisen`"),
            "{}",
            out.describe()
        );
        assert_eq!(out.stdout, "", "nothing is printed as valid");
        assert_no_backtrace(&out.stderr);
    }
}

#[test]
fn check_config_refuses_what_berth_would_refuse_to_start_with() {
    let dir = tempfile::tempdir().unwrap();
    let a_file = dir.path().join("berth.toml");
    for (text, expected) in [
        (
            format!("source = [\"ok={}\", \"no-equals-sign\"]\n", a_file.display()),
            "PREFIX=PATH",
        ),
        (
            "source = [\"gone=/nonexistent/images.tar\"]\n".to_string(),
            "cannot read /nonexistent/images.tar",
        ),
        ("self-name = \"Not/Valid\"\n".to_string(), "--self-name"),
        ("log = \"berth=loud\"\n".to_string(), "log filter"),
        ("listen = \"127.0.0.1\"\n".to_string(), "line 1"),
        (format!("data = {:?}\n", a_file.to_str().unwrap()), "not a directory"),
        (
            "[auth]\n[[auth.access]]\nrepository = \"a/**\"\nusers = { x = [\"fly\"] }\n".to_string(),
            "fly",
        ),
        ("[auth]\nadmins = 3\n".to_string(), "line 2"),
        (
            "auth-config = \"/etc/berth/auth.toml\"\n[auth]\ndefault = []\n".to_string(),
            "given twice",
        ),
    ] {
        let config = write_config(dir.path(), &text);
        let out = berth_cli(["serve", "--check-config", "--config", config.to_str().unwrap()]).fails();
        assert!(out.stderr.contains(expected), "{text}: {}", out.describe());
    }
}

#[test]
fn a_missing_config_file_is_named() {
    let out = berth_cli(["serve", "--check-config", "--config", "/nonexistent/berth.toml"])
        .env("RUST_BACKTRACE", "1")
        .fails();
    assert!(out.stderr.contains("/nonexistent/berth.toml"), "{}", out.describe());
    assert_no_backtrace(&out.stderr);
}

#[test]
fn a_port_in_use_is_one_error_line_and_its_cause_without_a_backtrace() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = berth_cli([
        "serve",
        "--no-self-image",
        "--listen",
        &addr,
        "--data",
        dir.path().to_str().unwrap(),
    ])
    .env("RUST_BACKTRACE", "1")
    .timeout(Duration::from_secs(60))
    .fails();
    assert_eq!(out.status.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains(&format!("error: listening on {addr}")),
        "{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("caused by: Address already in use"),
        "{}",
        out.describe()
    );
    assert_no_backtrace(&out.stderr);
}
