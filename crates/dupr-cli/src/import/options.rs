//! dupr's own options, as the converters write them: each value is tried
//! on dupr's parser before it goes into a profile.

use super::*;

#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) enum Kind {
    Flag,
    Int,
    Float,
    Str,
}

pub(super) struct Spec {
    pub(super) long: String,
    pub(super) kind: Kind,
    pub(super) append: bool,
    pub(super) selection: bool,
}

/// dupr's long options as the clap parser defines them.
pub(super) struct Options {
    pub(super) specs: Vec<Spec>,
    pub(super) names: BTreeMap<String, usize>,
    pub(super) shorts: BTreeMap<char, usize>,
}

/// Options that belong to an invocation, not to a profile (profile.rs).
pub(super) const NOT_IN_PROFILE: &[&str] = &[
    "help", "version", "generate", "profile", "config", "preview",
];

impl Options {
    pub(super) fn new() -> Options {
        let mut cmd = Cli::command();
        cmd.build();
        let ints = [
            TypeId::of::<u64>(),
            TypeId::of::<u32>(),
            TypeId::of::<usize>(),
            TypeId::of::<i64>(),
            TypeId::of::<i32>(),
        ];
        let mut o = Options {
            specs: Vec::new(),
            names: BTreeMap::new(),
            shorts: BTreeMap::new(),
        };
        for a in cmd.get_arguments() {
            let Some(long) = a.get_long() else { continue };
            let takes = a.get_num_args().is_some_and(|n| n.takes_values())
                && !matches!(a.get_action(), ArgAction::SetTrue | ArgAction::Count);
            let t = a.get_value_parser().type_id();
            let kind = if !takes {
                Kind::Flag
            } else if ints.iter().any(|i| t == *i) {
                Kind::Int
            } else if t == TypeId::of::<f64>() {
                Kind::Float
            } else {
                Kind::Str
            };
            let ix = o.specs.len();
            o.specs.push(Spec {
                long: long.to_string(),
                kind,
                append: matches!(a.get_action(), ArgAction::Append),
                selection: a.get_help_heading() == Some("Selection"),
            });
            o.names.insert(long.to_string(), ix);
            for alias in a.get_all_aliases().unwrap_or_default() {
                o.names.insert(alias.to_string(), ix);
            }
            if let Some(c) = a.get_short() {
                o.shorts.insert(c, ix);
            }
        }
        o
    }

    /// A long option by name, alias or unique abbreviation.
    pub(super) fn find(&self, name: &str) -> Result<usize, String> {
        if let Some(&ix) = self.names.get(name) {
            return Ok(ix);
        }
        let hits: BTreeSet<usize> = self
            .names
            .range(name.to_string()..)
            .take_while(|(k, _)| k.starts_with(name))
            .map(|(_, &ix)| ix)
            .collect();
        match hits.len() {
            1 => Ok(*hits.first().expect("one")),
            0 => Err("not an option dupr knows".into()),
            _ => Err(format!(
                "ambiguous abbreviation of {}",
                hits.iter()
                    .map(|&i| format!("--{}", self.specs[i].long))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}
