//! The policy's configuration, as it is written in TOML (under `[auth]` in
//! berth's config file, or in a file of its own given with `--auth-config`).

use crate::{Action, Actions};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A list of actions as written: `["pull", "push"]`; `"*"` is every action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActionList(pub Actions);

impl<'de> Deserialize<'de> for ActionList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ActionList, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ActionList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a list of actions ("pull", "push", "overwrite", "delete" or "*")"#)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ActionList, A::Error> {
                let mut set = Actions::NONE;
                while let Some(s) = seq.next_element::<String>()? {
                    if s == "*" {
                        set = Actions::ALL;
                    } else {
                        let a = Action::parse(&s).ok_or_else(|| {
                            de::Error::invalid_value(
                                de::Unexpected::Str(&s),
                                &r#"one of "pull", "push", "overwrite", "delete", "*""#,
                            )
                        })?;
                        set = set.with(a);
                    }
                }
                Ok(ActionList(set))
            }
        }
        d.deserialize_seq(V)
    }
}

impl Serialize for ActionList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for a in self.0.iter() {
            seq.serialize_element(a.as_str())?;
        }
        seq.end()
    }
}

fn all() -> ActionList {
    ActionList(Actions::ALL)
}

fn admin_group() -> String {
    "admin".to_owned()
}

/// The access policy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// What every signed-in user may do in every repository. Default: everything.
    #[serde(default = "all")]
    pub default: ActionList,
    /// What anyone, signed in or not, may do in every repository. Default: nothing.
    #[serde(default)]
    pub anonymous: ActionList,
    /// Users who may do everything everywhere.
    #[serde(default)]
    pub admins: Vec<String>,
    /// Members of this group may do everything everywhere.
    #[serde(default = "admin_group")]
    pub admin_group: String,
    /// Groups and their members: `[groups] ci = ["robot", "builder"]`.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// Rules by repository pattern (`[[access]]` tables); each adds to what
    /// the defaults grant.
    #[serde(default)]
    pub access: Vec<RuleConfig>,
}

impl Default for PolicyConfig {
    fn default() -> PolicyConfig {
        PolicyConfig {
            default: all(),
            anonymous: ActionList::default(),
            admins: Vec::new(),
            admin_group: admin_group(),
            groups: BTreeMap::new(),
            access: Vec::new(),
        }
    }
}

/// One `[[access]]` rule: what it grants, and to whom, in the repositories
/// its pattern matches (`*` is one name component, `**` any number).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub repository: String,
    /// Granted to everyone, signed in or not.
    #[serde(default)]
    pub anonymous: ActionList,
    /// Granted to every signed-in user.
    #[serde(default)]
    pub authenticated: ActionList,
    /// Granted to the users named: `users = { alice = ["push"] }`.
    #[serde(default)]
    pub users: BTreeMap<String, ActionList>,
    /// Granted to members of the groups named.
    #[serde(default)]
    pub groups: BTreeMap<String, ActionList>,
}
