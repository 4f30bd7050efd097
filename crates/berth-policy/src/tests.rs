use super::*;

fn policy(toml_text: &str) -> Policy {
    let config: PolicyConfig = toml::from_str(toml_text).expect("valid policy TOML");
    Policy::new(&config).expect("valid policy")
}

const ALICE: Principal = Principal::User("alice");
const BOB: Principal = Principal::User("bob");
const ANON: Principal = Principal::Anonymous;

#[test]
fn three_lines_for_public_pull_and_authenticated_push() {
    let p = policy(
        r#"
        [[access]]
        repository = "public/**"
        anonymous = ["pull"]
        "#,
    );
    assert!(p.decide(ANON, Action::Pull, "public/alpine").allowed);
    assert!(p.decide(ANON, Action::Pull, "public/a/b").allowed);
    assert!(!p.decide(ANON, Action::Push, "public/alpine").allowed);
    assert!(!p.decide(ANON, Action::Pull, "private/app").allowed);
    assert!(p.decide(ALICE, Action::Push, "private/app").allowed);
    assert!(p.decide(ALICE, Action::Push, "public/alpine").allowed);
    assert!(p.anonymous_may_do_anything());
    assert!(!p.anonymous_may_do_everything());
}

#[test]
fn without_configuration_users_do_everything_and_anonymous_nothing() {
    let p = Policy::default();
    for a in Action::ALL {
        assert!(p.decide(ALICE, a, "x/y").allowed);
        assert!(!p.decide(ANON, a, "x/y").allowed);
    }
    assert!(!p.anonymous_may_do_anything());
}

#[test]
fn rules_grant_per_user_and_group_on_top_of_a_smaller_default() {
    let p = policy(
        r#"
        default = ["pull"]
        [groups]
        ci = ["bob"]
        [[access]]
        repository = "team/*"
        users = { alice = ["push", "overwrite"] }
        [[access]]
        repository = "builds/**"
        groups = { ci = ["push", "delete"] }
        "#,
    );
    assert_eq!(p.actions(ALICE, "team/app").to_string(), "pull,push,overwrite");
    assert_eq!(p.actions(ALICE, "team/app/sub").to_string(), "pull");
    assert_eq!(p.actions(BOB, "team/app").to_string(), "pull");
    assert_eq!(p.actions(BOB, "builds/x/y").to_string(), "pull,push,delete");
    assert_eq!(p.actions(ALICE, "builds/x").to_string(), "pull");
    assert_eq!(p.actions(ANON, "builds/x").to_string(), "none");
}

#[test]
fn admins_by_name_or_group() {
    let p = policy(
        r#"
        default = []
        admins = ["root"]
        [groups]
        admin = ["carol"]
        "#,
    );
    assert!(p.decide(Principal::User("root"), Action::Delete, "any/thing").allowed);
    assert!(p.decide(Principal::User("carol"), Action::Overwrite, "any").allowed);
    assert_eq!(p.decide(Principal::User("carol"), Action::Pull, "any").reason, "admin");
    assert!(!p.decide(ALICE, Action::Pull, "any").allowed);
}

#[test]
fn decisions_say_why() {
    let p = policy(
        r#"
        default = ["pull"]
        [[access]]
        repository = "public/**"
        anonymous = ["pull"]
        "#,
    );
    let d = p.decide(ALICE, Action::Push, "public/x");
    assert!(!d.allowed);
    assert_eq!(d.reason, "default, rule public/** grant only pull");
    let d = p.decide(ANON, Action::Pull, "public/x");
    assert!(d.allowed);
    assert_eq!(d.reason, "rule public/**");
    let d = p.decide(ANON, Action::Pull, "other");
    assert_eq!(d.reason, "no rule matches");
}

#[test]
fn star_means_every_action() {
    let p = policy(
        r#"
        default = []
        [[access]]
        repository = "mine/**"
        users = { alice = ["*"] }
        "#,
    );
    assert_eq!(p.actions(ALICE, "mine/a"), Actions::ALL);
}

#[test]
fn configuration_errors_name_the_problem() {
    let err = toml::from_str::<PolicyConfig>("[[access]]\nrepository = \"a\"\nanonymous = [\"read\"]\n").unwrap_err();
    assert!(err.to_string().contains("read"), "{err}");
    let err = toml::from_str::<PolicyConfig>("defualt = []\n").unwrap_err();
    assert!(err.to_string().contains("defualt"), "{err}");
    let config: PolicyConfig = toml::from_str("[[access]]\nrepository = \"a//b\"\n").unwrap();
    assert!(Policy::new(&config).unwrap_err().0.contains("a//b"));
    let config: PolicyConfig =
        toml::from_str("[[access]]\nrepository = \"a\"\ngroups = { nope = [\"pull\"] }\n").unwrap();
    assert!(Policy::new(&config).unwrap_err().0.contains("nope"));
}

/// The examples in examples/ are valid and mean what they say.
#[test]
fn examples_parse() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/");
    let p = policy(&std::fs::read_to_string(format!("{root}auth.toml")).unwrap());
    assert!(p.decide(ANON, Action::Pull, "public/x").allowed);
    assert!(
        p.decide(Principal::User("builder"), Action::Overwrite, "team-a/app")
            .allowed
    );
    assert!(!p.decide(Principal::User("dave"), Action::Delete, "team-a/app").allowed);
    assert!(p.decide(Principal::User("alice"), Action::Delete, "anything").allowed);
    assert!(p.decide(Principal::User("eve"), Action::Push, "scratch/eve").allowed);
    assert!(
        !p.decide(Principal::User("eve"), Action::Push, "scratch/eve/deeper")
            .allowed
    );
    let p = policy(&std::fs::read_to_string(format!("{root}auth-public-pull.toml")).unwrap());
    assert!(p.decide(ANON, Action::Pull, "public/a/b").allowed);
    assert!(!p.decide(ANON, Action::Pull, "private").allowed);
    assert!(p.decide(ALICE, Action::Push, "private").allowed);
}
