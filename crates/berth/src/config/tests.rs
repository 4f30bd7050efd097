//! Precedence, unknown keys, sections and redaction, on a test command with
//! one option of each kind, and on berth's own `serve`.

use super::*;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, Parser)]
struct TestCli {
    #[command(subcommand)]
    command: TestCommand,
}

#[derive(Debug, Subcommand)]
enum TestCommand {
    Serve(TestArgs),
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Fast,
    Safe,
    PerFile,
}

/// One option of each kind; the environment variables are the tests' own.
#[derive(Debug, Args)]
struct TestArgs {
    #[arg(long, env = "BERTH_TEST_NAME", default_value = "default-name")]
    name: String,
    #[arg(long, env = "BERTH_TEST_COUNT", default_value_t = 7)]
    count: u64,
    #[arg(long, env = "BERTH_TEST_QUIET")]
    quiet: bool,
    #[arg(long, env = "BERTH_TEST_MODE", value_enum, default_value_t = Mode::Fast)]
    mode: Mode,
    #[arg(long = "item", env = "BERTH_TEST_ITEM")]
    items: Vec<String>,
    #[arg(long, env = "BERTH_TEST_ADDR")]
    addr: Option<std::net::SocketAddr>,
    #[arg(long, env = "BERTH_TEST_PASSWORD")]
    password: Option<Secret>,
    #[arg(long)]
    password_file: Option<PathBuf>,
    #[arg(long, env = "BERTH_TEST_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    check_config: bool,
}

/// A structured section, as the access policy will have.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TestSections {
    access: Option<Access>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Access {
    default_policy: String,
    #[serde(default)]
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Rule {
    repository: String,
    actions: Vec<String>,
}

/// The environment is the process's: tests that set it take turns.
static ENV: Mutex<()> = Mutex::new(());

const TEST_VARS: &[&str] = &[
    "BERTH_TEST_NAME",
    "BERTH_TEST_COUNT",
    "BERTH_TEST_QUIET",
    "BERTH_TEST_MODE",
    "BERTH_TEST_ITEM",
    "BERTH_TEST_ADDR",
    "BERTH_TEST_PASSWORD",
    "BERTH_TEST_CONFIG",
];

/// Runs `resolve` on `serve <args>` with a config file holding `toml` (if
/// any) and exactly the environment `env`.
fn run(toml: Option<&str>, env: &[(&str, &str)], args: &[&str]) -> anyhow::Result<(TestArgs, Effective, TestSections)> {
    let _turn = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut argv: Vec<String> = vec!["test".into(), "serve".into()];
    if let Some(text) = toml {
        let path = dir.path().join("berth.toml");
        std::fs::write(&path, text).unwrap();
        argv.push("--config".into());
        argv.push(path.display().to_string());
    }
    argv.extend(args.iter().map(|s| s.to_string()));
    for var in TEST_VARS {
        std::env::remove_var(var);
    }
    for (k, v) in env {
        std::env::set_var(k, v);
    }
    let result = resolve::<TestCli, TestSections>(argv, "serve");
    for (k, _) in env {
        std::env::remove_var(k);
    }
    let resolved = result?;
    let TestCommand::Serve(args) = resolved.cli.command else {
        panic!("not serve")
    };
    Ok((
        args,
        resolved.effective.expect("serve has an effective configuration"),
        resolved.sections,
    ))
}

fn ok(toml: Option<&str>, env: &[(&str, &str)], args: &[&str]) -> (TestArgs, Effective) {
    let (a, e, _) = run(toml, env, args).unwrap_or_else(|e| panic!("{e:#}"));
    (a, e)
}

fn err(toml: &str, env: &[(&str, &str)], args: &[&str]) -> String {
    match run(Some(toml), env, args) {
        Ok((a, _, _)) => panic!("accepted: {a:?}"),
        Err(e) => format!("{e:#}"),
    }
}

fn origin(e: &Effective, key: &str) -> Origin {
    e.get(key).unwrap_or_else(|| panic!("no {key}")).origin.clone()
}

const FILE: &str = r#"
name = "from-file"
count = 42
quiet = true
mode = "safe"
item = ["f1", "f2"]
"#;

#[test]
fn defaults_apply_without_a_file() {
    let (a, e) = ok(None, &[], &[]);
    assert_eq!(
        (a.name.as_str(), a.count, a.quiet, a.mode),
        ("default-name", 7, false, Mode::Fast)
    );
    assert!(a.items.is_empty());
    assert_eq!(origin(&e, "name"), Origin::Default);
    assert!(e.file.is_none());
}

#[test]
fn the_file_overrides_defaults_for_every_kind_of_option() {
    let (a, e) = ok(Some(FILE), &[], &[]);
    assert_eq!(a.name, "from-file");
    assert_eq!(a.count, 42);
    assert!(a.quiet);
    assert_eq!(a.mode, Mode::Safe);
    assert_eq!(a.items, ["f1", "f2"]);
    // Lines count from 1 and the file starts with a blank line.
    assert_eq!(origin(&e, "name"), Origin::File(2));
    assert_eq!(origin(&e, "item"), Origin::File(6));
}

#[test]
fn the_environment_overrides_the_file() {
    let env = [
        ("BERTH_TEST_NAME", "from-env"),
        ("BERTH_TEST_COUNT", "5"),
        ("BERTH_TEST_QUIET", "false"),
        ("BERTH_TEST_MODE", "per-file"),
        ("BERTH_TEST_ITEM", "e1"),
    ];
    let (a, e) = ok(Some(FILE), &env, &[]);
    assert_eq!(a.name, "from-env");
    assert_eq!(a.count, 5);
    assert!(!a.quiet, "BERTH_TEST_QUIET=false beats quiet = true in the file");
    assert_eq!(a.mode, Mode::PerFile);
    assert_eq!(a.items, ["e1"], "a repeatable option is replaced, not merged");
    assert_eq!(origin(&e, "count"), Origin::Environment("BERTH_TEST_COUNT".into()));
}

#[test]
fn flags_override_the_environment_and_the_file() {
    let env = [
        ("BERTH_TEST_NAME", "from-env"),
        ("BERTH_TEST_COUNT", "5"),
        ("BERTH_TEST_MODE", "fast"),
    ];
    let flags = [
        "--name",
        "from-flag",
        "--count=9",
        "--mode",
        "per-file",
        "--item",
        "c1",
        "--item",
        "c2",
    ];
    let (a, e) = ok(Some(FILE), &env, &flags);
    assert_eq!(a.name, "from-flag");
    assert_eq!(a.count, 9);
    assert_eq!(a.mode, Mode::PerFile);
    assert_eq!(a.items, ["c1", "c2"]);
    assert!(a.quiet, "not given as a flag nor in the environment: from the file");
    assert_eq!(origin(&e, "name"), Origin::CommandLine);
    assert_eq!(origin(&e, "quiet"), Origin::File(4));
}

#[test]
fn a_switch_set_as_a_flag_beats_false_in_the_file() {
    let (a, _) = ok(Some("quiet = false\n"), &[], &["--quiet"]);
    assert!(a.quiet);
    let (a, e) = ok(Some("quiet = false\n"), &[], &[]);
    assert!(!a.quiet);
    assert_eq!(e.get("quiet").unwrap().value, Some(toml::Value::Boolean(false)));
}

#[test]
fn a_single_value_may_stand_for_a_list_and_values_starting_with_a_dash_stay_values() {
    let (a, _) = ok(Some("item = \"only\"\nname = \"-dash\"\n"), &[], &[]);
    assert_eq!(a.items, ["only"]);
    assert_eq!(a.name, "-dash");
}

#[test]
fn unknown_keys_are_errors_naming_the_key_and_line() {
    let e = err("name = \"x\"\n\nlisten = \"127.0.0.1:5000\"\n", &[], &[]);
    assert!(e.contains("line 3") && e.contains("unknown key `listen`"), "{e}");
    assert!(e.contains("count, item, mode, name"), "lists the valid keys: {e}");
    let e = err("zeta = 1\nalpha = 2\n", &[], &[]);
    assert!(
        e.contains("line 1") && e.contains("`zeta`"),
        "the first error in the file is reported: {e}"
    );
}

#[test]
fn snake_case_keys_are_refused_with_the_kebab_case_spelling() {
    let e = err("# comment\npassword_file = \"/x\"\n", &[], &[]);
    assert!(
        e.contains("line 2") && e.contains("`password_file`") && e.contains("`password-file`"),
        "{e}"
    );
}

#[test]
fn unknown_sections_and_unknown_keys_in_sections_are_errors_with_lines() {
    let e = err("name = \"x\"\n[acess]\ndefault-policy = \"deny\"\n", &[], &[]);
    assert!(
        e.contains("line 2") && e.contains("unknown section `acess`") && e.contains("[access]"),
        "{e}"
    );
    let e = err(
        "[access]\ndefault-policy = \"deny\"\n\n[[access.rules]]\nrepository = \"a/**\"\nactoins = [\"pull\"]\n",
        &[],
        &[],
    );
    assert!(e.contains("line 6") && e.contains("actoins"), "{e}");
    let e = err("[access]\ndefault-policy = 3\n", &[], &[]);
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn sections_deserialize_into_typed_structs() {
    let text = r#"
name = "n"

[access]
default-policy = "deny"

[[access.rules]]
repository = "public/**"
actions = ["pull"]

[[access.rules]]
repository = "team/*"
actions = ["pull", "push"]
"#;
    let (args, _, sections) = run(Some(text), &[], &[]).unwrap();
    assert_eq!(args.name, "n");
    let access = sections.access.expect("the [access] section");
    assert_eq!(access.default_policy, "deny");
    assert_eq!(access.rules.len(), 2);
    assert_eq!(access.rules[1].actions, ["pull", "push"]);
    let (_, _, none) = run(Some("name = \"n\"\n"), &[], &[]).unwrap();
    assert_eq!(none, TestSections::default());
}

#[test]
fn a_section_name_used_as_a_key_and_an_option_used_as_a_section_are_errors() {
    let e = err("access = 1\n", &[], &[]);
    assert!(e.contains("line 1") && e.contains("[access]"), "{e}");
    let e = err("\n[name]\nx = 1\n", &[], &[]);
    assert!(e.contains("line 2") && e.contains("not a table"), "{e}");
}

#[test]
fn bad_values_are_errors_naming_the_key_and_line() {
    let e = err("name = \"ok\"\ncount = \"many\"\n", &[], &[]);
    assert!(e.contains("line 2") && e.contains("count") && e.contains("many"), "{e}");
    let e = err("mode = \"fastest\"\n", &[], &[]);
    assert!(
        e.contains("line 1") && e.contains("fastest") && e.contains("per-file"),
        "lists the choices: {e}"
    );
    let e = err("addr = \"localhost\"\n", &[], &[]);
    assert!(e.contains("line 1") && e.contains("addr"), "{e}");
    let e = err("quiet = \"yes\"\n", &[], &[]);
    assert!(e.contains("line 1") && e.contains("true"), "{e}");
    let e = err("name = [\"a\", \"b\"]\n", &[], &[]);
    assert!(e.contains("line 1") && e.contains("one value"), "{e}");
    let e = err("item = [\"a\",\n  [\"b\"]]\n", &[], &[]);
    assert!(e.contains("line 2"), "{e}");
    let e = err("name = \"unterminated\n", &[], &[]);
    assert!(e.contains("line 1"), "TOML syntax errors name the line too: {e}");
}

#[test]
fn a_bad_value_in_the_file_is_an_error_even_when_a_flag_overrides_it() {
    let e = err("count = \"many\"\n", &[], &["--count", "3"]);
    assert!(e.contains("line 1") && e.contains("count"), "{e}");
}

#[test]
fn the_config_options_cannot_be_set_in_the_file() {
    let e = err("config = \"other.toml\"\n", &[], &[]);
    assert!(e.contains("line 1") && e.contains("`config`"), "{e}");
    let e = err("check-config = true\n", &[], &[]);
    assert!(e.contains("`check-config`"), "{e}");
}

#[test]
fn a_missing_config_file_is_an_error_naming_it() {
    let _turn = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let e = resolve::<TestCli, TestSections>(["test", "serve", "--config", "/nonexistent/berth.toml"], "serve")
        .unwrap_err();
    assert!(format!("{e:#}").contains("/nonexistent/berth.toml"), "{e:#}");
}

#[test]
fn secrets_come_from_the_environment_only_and_are_redacted() {
    let (a, e) = ok(Some("name = \"n\"\n"), &[("BERTH_TEST_PASSWORD", "hunter2")], &[]);
    assert_eq!(a.password.as_ref().map(Secret::expose), Some("hunter2"));
    assert_eq!(format!("{a:?}").matches("hunter2").count(), 0, "Debug redacts: {a:?}");
    let rendered = e.render();
    assert!(!rendered.contains("hunter2"), "{rendered}");
    assert!(rendered.contains("password = \"<redacted>\""), "{rendered}");
    assert!(rendered.contains("BERTH_TEST_PASSWORD"), "{rendered}");

    let e = err("password = \"hunter2\"\n", &[], &[]);
    assert!(
        e.contains("line 1") && e.contains("secret") && e.contains("BERTH_TEST_PASSWORD"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");

    let e = run(None, &[], &["--password", "hunter2"]).unwrap_err().to_string();
    assert!(e.contains("BERTH_TEST_PASSWORD") && !e.contains("hunter2"), "{e}");

    // A file holding the secret is named by its path, which is no secret.
    let (a, e) = ok(Some("password-file = \"/run/secrets/pw\"\n"), &[], &[]);
    assert_eq!(a.password_file.as_deref(), Some(Path::new("/run/secrets/pw")));
    assert!(e.render().contains("password-file = \"/run/secrets/pw\""));
}

#[test]
fn the_rendered_configuration_is_a_config_file_that_gives_the_same_options() {
    let (a, e) = ok(
        Some(FILE),
        &[("BERTH_TEST_ADDR", "127.0.0.1:5001")],
        &["--name", "x y \"quoted\""],
    );
    let rendered = e.render();
    assert!(rendered.contains("count = 42"), "numbers stay numbers: {rendered}");
    assert!(rendered.contains("item = [\"f1\", \"f2\"]"), "{rendered}");
    assert!(rendered.contains("# password is not set"), "{rendered}");
    let (b, _) = ok(Some(&rendered), &[], &[]);
    assert_eq!(
        (b.name, b.count, b.quiet, b.mode, b.items, b.addr),
        (a.name, a.count, a.quiet, a.mode, a.items, a.addr)
    );
}

#[test]
fn other_subcommands_parse_as_before() {
    let _turn = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let r = resolve::<TestCli, TestSections>(["test", "other"], "serve").unwrap();
    assert!(matches!(r.cli.command, TestCommand::Other) && r.effective.is_none());
    let e = resolve::<TestCli, TestSections>(["test", "serve", "--bogus"], "serve").unwrap_err();
    assert!(
        e.downcast_ref::<clap::Error>().is_some(),
        "usage errors stay clap's: {e}"
    );
}

#[test]
fn berth_serve_takes_listen_data_and_sources_from_the_file() {
    let _turn = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.toml");
    let text = "listen = \"127.0.0.1:5050\"\ndata = \"/srv/berth\"\nsync = \"per-file\"\nno-self-image = true\nsource = [\"m=a.tar\", \"n=b\"]\nupload-max-age-secs = 60\n";
    std::fs::write(&path, text).unwrap();
    let argv = [
        "berth",
        "serve",
        "--config",
        path.to_str().unwrap(),
        "--upload-max-age-secs",
        "30",
    ];
    let (cli, effective) = parse_cli(argv).unwrap_or_else(|e| panic!("{e:#}"));
    let Command::Serve(args) = cli.command else {
        panic!("not serve")
    };
    assert_eq!(args.listen, "127.0.0.1:5050".parse().unwrap());
    assert_eq!(args.data, Path::new("/srv/berth"));
    assert_eq!(args.sync, crate::cli::SyncArg::PerFile);
    assert!(args.no_self_image);
    assert_eq!(args.sources, ["m=a.tar", "n=b"]);
    assert_eq!(args.upload_max_age_secs, 30);
    assert_eq!(effective.unwrap().get("data").unwrap().origin, Origin::File(2));

    std::fs::write(&path, "log_format = \"json\"\n").unwrap();
    let e = parse_cli(["berth", "serve", "--config", path.to_str().unwrap()]).unwrap_err();
    assert!(format!("{e:#}").contains("`log-format`"), "{e:#}");
}

#[test]
fn berth_options_named_like_secrets_are_declared_as_secrets() {
    let cmd = Cli::command();
    let serve = cmd.find_subcommand("serve").unwrap();
    let wrong: Vec<String> = serve.get_arguments().filter_map(secret::misdeclared).collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[derive(Debug, Parser)]
struct RequiredCli {
    #[command(subcommand)]
    command: RequiredCommand,
}

#[derive(Debug, Subcommand)]
enum RequiredCommand {
    Serve {
        #[arg(long, required = true)]
        realm: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[test]
fn an_option_clap_requires_may_come_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.toml");
    std::fs::write(&path, "realm = \"from-file\"\n").unwrap();
    let _turn = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let r = resolve::<RequiredCli, TestSections>(["t", "serve", "--config", path.to_str().unwrap()], "serve").unwrap();
    let RequiredCommand::Serve { realm, .. } = r.cli.command;
    assert_eq!(realm, "from-file");
    let e = resolve::<RequiredCli, TestSections>(["t", "serve"], "serve").unwrap_err();
    let e = e.downcast::<clap::Error>().expect("clap's own error");
    assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
}
