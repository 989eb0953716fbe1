//! Checks for the fuzz targets that read what a user hands dupr rather than
//! what a target hands back: duplicity-backup.conf / duply files given to
//! `dupr profile import`, and profile TOML. Shared by `fuzz/fuzz_targets/
//! {import,profile}.rs` and the replay test in
//! `crates/dupr-cli/tests/fuzz_corpus.rs`, like `checks.rs` for dupr-core.
//!
//! Beyond "no panic": whatever the importer writes, the profile loader
//! accepts, and the command lines the profile plans parse with dupr's own
//! parser; a profile that loads survives write → load unchanged.

#![allow(dead_code)]

use std::ffi::OsString;
use std::path::Path;

use dupr_cli::{cli, import, profile};

/// A target's check: panics on any violated property.
pub type Check = fn(&[u8]);

pub const TARGETS: &[(&str, Check)] = &[("import", import), ("profile", profile)];

/// Where the fuzzed config pretends to live (never read: nothing exists
/// there).
const CONF: &str = "/nonexistent/dupr-fuzz/conf";

/// First byte: bit 0 set reads the rest as a duply profile's `conf`, else
/// the importer guesses the wrapper from the variables set; the rest is
/// the file's text.
pub fn import(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let conf = Path::new(CONF);
    let dir = (mode & 1 == 1).then(|| conf.parent().expect("CONF has a parent"));
    let Ok((toml, notes)) = import::convert(&text, conf, dir, conf) else {
        return;
    };
    for n in &notes {
        assert!(!n.contains(['\n', '\r']), "a note spans lines: {n:?}");
    }
    let p = profile::parse(&toml, conf)
        .unwrap_or_else(|e| panic!("an imported profile does not load: {e:#}\n{toml}"));
    plans_parse(p, &toml);
}

/// Profile TOML: whatever loads is written back and loads the same.
pub fn profile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new(CONF);
    let Ok(p) = profile::parse(text, path) else {
        return;
    };
    let again = toml::to_string_pretty(&p)
        .unwrap_or_else(|e| panic!("a loaded profile does not serialize: {e}"));
    let back = profile::parse(&again, path)
        .unwrap_or_else(|e| panic!("a profile written from a loaded one does not load: {e:#}"));
    assert_eq!(back, p, "a profile changed in a write/load round trip");
    for action in ["backup", "full", "verify", "list", "purge", "cleanup"] {
        let l = profile::Loaded {
            name: "fuzz".into(),
            path: path.to_path_buf(),
            profile: p.clone(),
        };
        let _ = profile::plan(&l, action, &[], &[]);
    }
}

/// Every command line an imported profile plans parses with dupr's parser
/// (the importer checked each option it wrote).
fn plans_parse(p: profile::Profile, toml: &str) {
    if p.source.is_none() || p.target.is_none() {
        return;
    }
    let l = profile::Loaded {
        name: "fuzz".into(),
        path: Path::new(CONF).to_path_buf(),
        profile: p,
    };
    for action in ["backup", "verify", "purge", "cleanup"] {
        let steps = profile::plan(&l, action, &[], &[])
            .unwrap_or_else(|e| panic!("an imported profile plans no {action}: {e:#}\n{toml}"));
        for s in steps {
            let argv: Vec<OsString> = std::iter::once(OsString::from("dupr"))
                .chain(s.args)
                .collect();
            if let Err(e) = cli::command().try_get_matches_from(&argv) {
                panic!(
                    "an imported profile plans a command line dupr rejects: {argv:?}: {e}\n{toml}"
                );
            }
        }
    }
}
