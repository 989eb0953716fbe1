//! `dupr profile import`: a duplicity-backup.conf or a duply profile
//! directory converted into a dupr profile.
//!
//! Both wrappers keep their settings in bash that they `source`: zertrin's
//! duplicity-backup.sh a file of variables and arrays, duply
//! `<profile>/conf`. [`Shell`] evaluates the subset such files use
//! (assignments, quoting, arrays over several lines, comments, `$VAR` and
//! `${VAR}` of earlier variables and of HOME) without running anything.
//! The converters then map each setting to a profile field or to a dupr
//! option, in the order the wrapper put them on duplicity's command line
//! (selection rules are order-sensitive), and say in a note what they could
//! not convert and why. Secrets never appear in a note.

mod duply;
mod options;
mod output;
mod shell;
mod zertrin;

use std::any::TypeId;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{ArgAction, CommandFactory};

use crate::cli::Cli;
use crate::profile::{shell_quote, Profile};

use duply::*;
use options::*;
use output::*;
use shell::*;
use zertrin::*;

/// The profile TOML for `from`, and what could not be converted.
pub fn import(from: &Path) -> Result<(String, Vec<String>)> {
    let meta = std::fs::metadata(from).with_context(|| format!("reading {}", from.display()))?;
    let (conf, dir) = if meta.is_dir() {
        let conf = from.join("conf");
        if !conf.is_file() {
            bail!(
                "{} is a directory without a conf file: not a duply profile",
                from.display()
            );
        }
        (conf, Some(from.to_path_buf()))
    } else {
        (from.to_path_buf(), None)
    };
    let text =
        std::fs::read_to_string(&conf).with_context(|| format!("reading {}", conf.display()))?;
    convert(&text, &conf, dir.as_deref(), from)
}

/// [`import`] of `text`, the content of `conf`: a duply profile when `dir`
/// (its directory) is given or when its variables are duply's, else a
/// duplicity-backup.sh config. `from` is what the user named (for the
/// profile's header comment).
pub fn convert(
    text: &str,
    conf: &Path,
    dir: Option<&Path>,
    from: &Path,
) -> Result<(String, Vec<String>)> {
    let duply_conf = dir.is_some()
        || {
            let sh = Shell::parse(text, base_env());
            let has = |names: &[&str]| names.iter().any(|n| sh.vars.contains_key(*n));
            if has(&["ROOT", "DEST", "INCLIST", "EXCLIST", "STATIC_OPTIONS"]) {
                false
            } else if has(&["SOURCE", "TARGET", "GPG_KEY", "DUPL_PARAMS"]) {
                true
            } else {
                bail!(
                "{}: neither a duplicity-backup.sh config (no ROOT or DEST) nor a duply conf (no SOURCE or TARGET)",
                from.display()
            );
            }
        };
    if duply_conf {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => conf
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
        };
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        duply(&dir, text)?.finish(from, "duply profile")
    } else {
        zertrin(text)?.finish(from, "duplicity-backup.sh config")
    }
}

/// What a config may read from the environment of the import: values that
/// are the same when the backup runs later.
fn base_env() -> BTreeMap<String, String> {
    ["HOME", "USER", "LOGNAME"]
        .into_iter()
        .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
        .collect()
}

/// duplicity's default cache root, where the wrappers' caches live.
fn duplicity_cache_root() -> Option<PathBuf> {
    match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(x) => Some(PathBuf::from(x).join("duplicity")),
        None => Some(PathBuf::from(std::env::var_os("HOME")?).join(".cache/duplicity")),
    }
}

/// Backend credentials the wrappers export for duplicity.
fn is_credential(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "AWS_",
        "GS_",
        "SWIFT_",
        "DPBX_",
        "B2_",
        "AZURE_",
        "CLOUDFILES_",
        "GOOGLE_",
        "BOTO_",
        "MEGA_",
        "PCA_",
        "ONEDRIVE_",
        "HUBIC_",
        "OS_",
        "RCLONE_",
        "BACKEND_",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
        || ["FTP_PASSWORD", "IMAP_PASSWORD"].contains(&name)
        || ["PASSWORD", "SECRET", "TOKEN"]
            .iter()
            .any(|w| name.contains(w))
}

/// Does the URL carry a password (`scheme://user:pass@host`)?
fn url_has_password(url: &str) -> bool {
    url.split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
        .and_then(|auth| auth.rsplit_once('@'))
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// Python's `urllib.parse.quote` (keeps `/`), as duply uses for user names.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Access to the parsed file: each setting is taken once; what was not
/// taken at the end was not converted.
struct Conv {
    sh: Shell,
    taken: BTreeSet<String>,
    o: Out,
}

impl Conv {
    fn new(mut sh: Shell) -> Conv {
        let mut o = Out::new();
        o.notes.append(&mut sh.notes);
        Conv {
            sh,
            taken: BTreeSet::new(),
            o,
        }
    }

    fn take(&mut self, name: &str) -> Option<Var> {
        if !self.taken.insert(name.to_string()) {
            return None;
        }
        self.sh.vars.get(name).cloned()
    }

    /// A setting's text (an array's first element), noting a value that ran
    /// a command.
    fn var(&mut self, name: &str) -> Option<String> {
        let v = self.take(name)?;
        if v.dynamic {
            self.o.note(format!(
                "{name} (line {}) runs a command or uses an expansion import does not evaluate; that part was left out of its value",
                v.line
            ));
        }
        Some(v.text())
    }

    fn nonempty(&mut self, name: &str) -> Option<String> {
        self.var(name).filter(|s| !s.is_empty())
    }

    /// `${NAME[@]}`: the elements (a string is one element), or None if unset.
    fn list(&mut self, name: &str) -> Option<Vec<String>> {
        Some(match self.take(name)?.val {
            Val::Str(s) => vec![s],
            Val::Arr(a) => a,
        })
    }

    /// Take settings without converting them; the non-empty ones.
    fn discard(&mut self, names: &[&str]) -> Vec<String> {
        names
            .iter()
            .filter(|n| self.take(n).is_some_and(|v| !v.is_empty() || v.dynamic))
            .map(|n| n.to_string())
            .collect()
    }

    fn put(&mut self, long: &str, raw: &str, origin: &str) {
        self.o.put(long, Some(raw), origin);
    }

    fn flag(&mut self, long: &str, origin: &str) {
        self.o.put(long, None, origin);
    }

    fn words(&mut self, text: &str, origin: &str) {
        let w = self.sh.split(text);
        self.o.words(&w, origin);
    }

    fn target_notes(&mut self, url: &str) {
        if url_has_password(url) {
            self.o.note(
                "the target URL holds a password: the profile is private (mode 600), but the password would be better in FTP_PASSWORD in the environment of the scheduled run",
            );
        }
    }

    /// Notes for what is left: credentials, other exported variables, and
    /// settings without a dupr equivalent. Empty ones and helpers read by
    /// other settings are passed over.
    fn leftovers(mut self, wrapper: &str) -> Out {
        let mut env = Vec::new();
        for (name, v) in std::mem::take(&mut self.sh.vars) {
            if self.taken.contains(&name) || v.is_empty() || self.sh.used.contains(&name) {
                continue;
            }
            if v.exported || is_credential(&name) {
                env.push(name);
            } else {
                self.o.note(format!(
                    "{name} (line {}): not a {wrapper} setting dupr has an equivalent for",
                    v.line
                ));
            }
        }
        if !env.is_empty() {
            let (what, them) = if env.len() == 1 {
                ("not a profile field", "it")
            } else {
                ("not profile fields", "them")
            };
            self.o.note(format!(
                "{}: {what} (dupr keeps no backend credentials in a profile); set {them} in the environment of the scheduled run",
                env.join(", ")
            ));
        }
        let unset: Vec<String> = self
            .sh
            .unset
            .iter()
            .map(|(n, l)| format!("${n} (line {l})"))
            .collect();
        if !unset.is_empty() {
            self.o.note(format!(
                "{} not set in the file: taken as empty (the wrapper may have had them from its environment)",
                unset.join(", ")
            ));
        }
        self.o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("HOME".to_string(), "/home/u".to_string())].into()
    }

    fn str_of(sh: &Shell, n: &str) -> String {
        sh.vars[n].text()
    }

    #[test]
    fn import_shell_quoting_arrays_and_expansion() {
        let sh = Shell::parse(
            r#"
# comment
ROOT="/"   # trailing comment
A='single $HOME "x"'
B="double $HOME ${HOME}/x \"q\" \$lit"
C=plain\ word#nocomment
INCLIST=( "/home/u/docs" \
          '/etc'   # inside the array
          "${HOME}/My Files"
        )
EMPTY=()
D=~/tilde
E="${UNSET:-fallback} ${A:+set}"
F="$B-suffix"
G=$(hostname -f)
export H=exported
I=1; J=2
P="$P one"
P="$P two"
K+=x
K+=y
"#,
            env(),
        );
        assert_eq!(str_of(&sh, "ROOT"), "/");
        assert_eq!(str_of(&sh, "A"), "single $HOME \"x\"");
        assert_eq!(str_of(&sh, "B"), "double /home/u /home/u/x \"q\" $lit");
        assert_eq!(str_of(&sh, "C"), "plain word#nocomment");
        assert_eq!(
            sh.vars["INCLIST"].val,
            Val::Arr(vec![
                "/home/u/docs".into(),
                "/etc".into(),
                "/home/u/My Files".into()
            ])
        );
        assert_eq!(sh.vars["EMPTY"].val, Val::Arr(vec![]));
        assert_eq!(str_of(&sh, "D"), "/home/u/tilde");
        assert_eq!(str_of(&sh, "E"), "fallback set");
        assert!(sh.used.contains("A") && sh.used.contains("B"));
        assert_eq!(
            str_of(&sh, "F"),
            "double /home/u /home/u/x \"q\" $lit-suffix"
        );
        assert!(sh.vars["G"].dynamic);
        assert_eq!(str_of(&sh, "G"), "");
        assert!(sh.vars["H"].exported && !sh.vars["I"].exported);
        assert_eq!(
            (str_of(&sh, "I"), str_of(&sh, "J")),
            ("1".into(), "2".into())
        );
        assert_eq!(str_of(&sh, "P"), " one two");
        assert_eq!(str_of(&sh, "K"), "xy");
        // Self-references and ${X:-...} of unset names are not "unset".
        assert!(sh.unset.is_empty(), "{:?}", sh.unset);
        assert!(sh.notes.is_empty(), "{:?}", sh.notes);
    }

    /// A value dupr's parser would refuse is dropped with a note, so the
    /// imported profile's runs do not all fail on it (found by fuzzing).
    #[test]
    fn import_drops_option_values_dupr_refuses() {
        let conf = Path::new("/nonexistent/conf");
        let text = "SOURCE=/srv\nTARGET=file:///b\nGPG_KEY=disabled\nVOLSIZE=1x\nDUPL_PARAMS=\"$DUPL_PARAMS --volsize $VOLSIZE --num-retries 3\"\n";
        let (toml, notes) = convert(text, conf, Some(Path::new("/nonexistent")), conf).unwrap();
        assert!(!toml.lines().any(|l| l.starts_with("volsize")), "{toml}");
        assert!(toml.contains("num-retries = 3"), "{toml}");
        assert!(
            notes
                .iter()
                .any(|n| n.contains("--volsize \"1x\" is not a value dupr takes")),
            "{notes:?}"
        );
    }

    /// `A=$A$A` doubles a value per line: 64 lines would be 2^64 bytes.
    /// Expansion stops at a budget, with a note, in bounded time.
    #[test]
    fn import_shell_expansion_is_bounded() {
        let mut text = String::from("A=xxxxxxxxxxxxxxxx\n");
        for _ in 0..64 {
            text.push_str("A=\"$A$A\"\nB=(\"$A\" \"$A\" $A)\n");
        }
        let t = std::time::Instant::now();
        let sh = Shell::parse(&text, env());
        assert!(t.elapsed().as_secs() < 10, "took {:?}", t.elapsed());
        assert!(str_of(&sh, "A").len() <= EXPANSION_BUDGET);
        assert!(
            sh.vars["A"].dynamic,
            "a cut value is marked as not evaluated"
        );
        assert!(
            sh.notes
                .iter()
                .any(|n| n.contains("expand to more than 16 MiB")),
            "{:?}",
            sh.notes
        );
    }

    #[test]
    fn import_shell_blocks_and_commands_are_not_taken() {
        let sh = Shell::parse(
            "X=1\nif [ -n \"$X\" ]; then\n  Y=2\nfi\nZ=$MISSING\nsource /etc/other\nf() {\n  W=3\n}\nV=4\n[ -z \"$X\" ] && U=5\nexport X\n",
            env(),
        );
        assert!(sh.vars.contains_key("X") && sh.vars.contains_key("V"));
        for n in ["Y", "W", "U"] {
            assert!(!sh.vars.contains_key(n), "{n} taken");
        }
        assert!(sh.vars["X"].exported);
        assert_eq!(sh.unset.get("MISSING"), Some(&5));
        let notes = sh.notes.join("\n");
        assert!(notes.contains("line 2: a `if` block"), "{notes}");
        assert!(notes.contains("Y (line 3)"), "{notes}");
        assert!(notes.contains("the command `source`"), "{notes}");
        assert!(notes.contains("W (line 8)"), "{notes}");
        assert!(notes.contains("line 11: the command `[`"), "{notes}");
    }

    #[test]
    fn import_options_are_typed_and_canonical() {
        let mut o = Out::new();
        let words: Vec<String> = [
            "--full-if-older-than",
            "14D",
            "--volsize=50",
            "-v4",
            "--s3-use-new-style",
            "--exclude-globbing-filelist",
            "/etc/x",
            "--asynchronous-up",
            "--no-such-option",
            "value",
            "--progress-rate",
            "2.5",
            "--encrypt-key",
            "A",
            "--encrypt-key=B",
            "--preview",
            "stray",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        o.words(&words, "STATIC_OPTIONS");
        let g = |k: &str| o.p.options.get(k).cloned();
        assert_eq!(
            g("full-if-older-than"),
            Some(toml::Value::String("14D".into()))
        );
        assert_eq!(g("volsize"), Some(toml::Value::Integer(50)));
        assert_eq!(g("verbosity"), Some(toml::Value::String("4".into())));
        assert_eq!(g("s3-use-new-style"), Some(toml::Value::Boolean(true)));
        assert_eq!(g("asynchronous-upload"), Some(toml::Value::Boolean(true)));
        assert_eq!(g("progress-rate"), Some(toml::Value::Float(2.5)));
        assert_eq!(
            g("encrypt-key"),
            Some(toml::Value::Array(vec![
                toml::Value::String("A".into()),
                toml::Value::String("B".into())
            ]))
        );
        assert!(
            matches!(&o.sel[..], [Sel::List { key, path }] if key == "exclude-filelist" && path == "/etc/x")
        );
        let notes = o.notes.join("\n");
        assert!(
            notes.contains("--no-such-option value: not an option"),
            "{notes}"
        );
        assert!(
            notes.contains("--preview belongs on the command line"),
            "{notes}"
        );
        assert!(notes.contains("\"stray\" is not an option"), "{notes}");
    }

    #[test]
    fn import_select_lines_survive_the_filelist_reader() {
        assert_eq!(select_line(true, "/a b").unwrap(), "+ /a b");
        assert_eq!(select_line(false, " lead").unwrap(), "- ' lead'");
        assert_eq!(select_line(false, "'q'").unwrap(), "- ''q''");
        assert_eq!(select_line(false, ""), None);
        assert_eq!(
            filelist_lines("# c\n\n  + /a  \n/b\n- /c\r\n'/d'\n", false),
            vec!["+ /a", "- /b", "- /c", "- '/d'"]
        );
        assert_eq!(filelist_lines("/x\n", true), vec!["+ /x"]);
        assert_eq!(
            split_keyset("A, B\\, C ,,D"),
            vec!["A".to_string(), "B, C".into(), "D".into()]
        );
    }

    #[test]
    fn import_zertrin_selection_order() {
        // No INCLIST/EXCLIST: the filelist stays a file, order unchanged.
        let out =
            zertrin("ROOT=/\nDEST=file:///b\nINCEXCFILE=/nonexistent/list\nEXDEVICEFILES=1\n")
                .unwrap();
        let (text, _) = out.finish(Path::new("x.conf"), "t").unwrap();
        let p: Profile = toml::from_str(&text).unwrap();
        assert_eq!(p.select, vec!["- **"]);
        assert_eq!(
            p.options["include-filelist"],
            toml::Value::Array(vec![toml::Value::String("/nonexistent/list".into())])
        );
        assert_eq!(
            p.options["exclude-device-files"],
            toml::Value::Boolean(true)
        );

        // With patterns before it, a readable filelist is copied in place.
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list");
        std::fs::write(&list, "- /a/tmp\n/a/keep\n").unwrap();
        let conf = format!(
            "ROOT=/\nDEST=file:///b\nEXCLIST=( '/**.DS_Store' )\nINCLIST=( /a )\nINCEXCFILE={}\nSTATIC_OPTIONS=\"--exclude-other-filesystems\"\n",
            list.display()
        );
        let (text, notes) = zertrin(&conf)
            .unwrap()
            .finish(Path::new("x.conf"), "t")
            .unwrap();
        let p: Profile = toml::from_str(&text).unwrap();
        assert_eq!(
            p.select,
            vec!["- /**.DS_Store", "+ /a", "- /a/tmp", "+ /a/keep", "- **"]
        );
        assert!(!p.options.contains_key("include-filelist"));
        assert_eq!(
            p.options["exclude-other-filesystems"],
            toml::Value::Boolean(true)
        );
        assert!(
            notes.iter().any(|n| n.contains("copied into select")),
            "{notes:?}"
        );
        assert!(
            !notes.iter().any(|n| n.contains("selection order")),
            "{notes:?}"
        );

        // A selection option after a pattern cannot keep its place.
        let (_, notes) = zertrin("ROOT=/\nDEST=file:///b\nSTATIC_OPTIONS=\"--include /x --exclude-if-present .nobackup\"\n")
            .unwrap()
            .finish(Path::new("x.conf"), "t")
            .unwrap();
        assert!(
            notes.iter().any(|n| n.contains("selection order")),
            "{notes:?}"
        );
    }

    #[test]
    fn import_zertrin_keys_and_passphrases() {
        let conf = "ROOT=/\nDEST=file:///b\nENCRYPTION=yes\nPASSPHRASE='s3cret'\nGPG_ENC_KEY=AAAA\nGPG_SIGN_KEY=BBBB\nHIDE_KEY_ID=yes\nGPG_OPTIONS=''\nCLEAN_UP_TYPE=remove-all-inc-of-but-n-full\nCLEAN_UP_VARIABLE=3\nREMOVE_INCREMENTALS_OLDER_THAN=2\n";
        let (text, notes) = zertrin(conf).unwrap().finish(Path::new("x"), "t").unwrap();
        let p: Profile = toml::from_str(&text).unwrap();
        assert_eq!(
            p.options["hidden-encrypt-key"],
            toml::Value::Array(vec![toml::Value::String("AAAA".into())])
        );
        assert_eq!(p.options["sign-key"], toml::Value::String("BBBB".into()));
        assert!(!p.options.contains_key("gpg-options"));
        assert_eq!(p.passphrase.as_deref(), Some("s3cret"));
        assert_eq!(p.sign_passphrase.as_deref(), Some("s3cret"));
        assert_eq!(p.retention.keep_incrementals_of, Some(2));
        assert!(notes.iter().all(|n| !n.contains("s3cret")));
        assert!(notes.iter().any(|n| n.contains("passphrase-file")));

        let (text, notes) =
            zertrin("ROOT=/\nDEST=file:///b\nENCRYPTION=no\nPASSPHRASE=x\nGPG_ENC_KEY=AAAA\n")
                .unwrap()
                .finish(Path::new("x"), "t")
                .unwrap();
        let p: Profile = toml::from_str(&text).unwrap();
        assert_eq!(p.options["no-encryption"], toml::Value::Boolean(true));
        assert!(p.passphrase.is_none() && !p.options.contains_key("encrypt-key"));
        assert!(notes
            .iter()
            .any(|n| n.contains("not needed with ENCRYPTION=no")));
    }

    #[test]
    fn import_duply_conf() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("web");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(
            d.join("exclude"),
            "- /srv/www/cache\n/srv/www/tmp\n+ /srv/www\n- **\n",
        )
        .unwrap();
        std::fs::write(d.join("gpgkey.AAAA.pub.asc"), "").unwrap();
        let conf = "GPG_KEY='AAAA,BBBB'\nGPG_KEYS_ENC='CCCC'\nGPG_PW='pw'\nGPG_OPTS='--compress-algo=bzip2'\nTARGET='sftp://host//srv/b'\nTARGET_USER='bob smith'\nTARGET_PASS='x'\nSOURCE='/srv/www'\nMAX_AGE=2M\nMAX_FULL_BACKUPS=3\nMAX_FULLS_WITH_INCRS=1\nMAX_FULLBKP_AGE=1M\nDUPL_PARAMS=\"$DUPL_PARAMS --full-if-older-than $MAX_FULLBKP_AGE \"\nVOLSIZE=50\nDUPL_PARAMS=\"$DUPL_PARAMS --volsize $VOLSIZE --exclude-if-present '.nobackup'\"\nVERBOSITY=5\nTEMP_DIR=/var/tmp\nexport AWS_ACCESS_KEY_ID=k\n";
        std::fs::write(d.join("conf"), conf).unwrap();
        let (text, notes) = import(&d).unwrap();
        let p: Profile = toml::from_str(&text).unwrap();
        let s = |v: &str| toml::Value::String(v.into());
        assert_eq!(p.source.as_deref(), Some("/srv/www"));
        assert_eq!(p.target.as_deref(), Some("sftp://bob%20smith@host//srv/b"));
        assert_eq!(p.options["name"], s("duply_web"));
        assert_eq!(
            p.options["encrypt-key"],
            toml::Value::Array(vec![s("AAAA"), s("BBBB"), s("CCCC")])
        );
        assert_eq!(p.options["sign-key"], s("AAAA"));
        assert_eq!(
            p.options["gpg-options"],
            toml::Value::Array(vec![s("--compress-algo=bzip2")])
        );
        assert_eq!(p.options["full-if-older-than"], s("1M"));
        assert_eq!(p.options["volsize"], toml::Value::Integer(50));
        assert_eq!(p.options["verbosity"], s("5"));
        assert_eq!(p.options["tempdir"], s("/var/tmp"));
        assert_eq!(
            p.options["exclude-if-present"],
            toml::Value::Array(vec![s(".nobackup")])
        );
        assert_eq!(p.passphrase.as_deref(), Some("pw"));
        assert_eq!(p.retention.remove_older_than.as_deref(), Some("2M"));
        assert_eq!(p.retention.keep_full, Some(3));
        assert_eq!(p.retention.keep_incrementals_of, Some(1));
        assert_eq!(
            p.select,
            vec!["- /srv/www/cache", "- /srv/www/tmp", "+ /srv/www", "- **"]
        );
        let all = notes.join("\n");
        for want in [
            "gpgkey.AAAA.pub.asc",
            "FTP_PASSWORD",
            "AWS_ACCESS_KEY_ID",
            "purge commands",
            "first GPG_KEY",
        ] {
            assert!(all.contains(want), "no note about {want}: {all}");
        }
        assert!(!all.contains("only through DUPL_PARAMS"), "{all}");

        std::fs::write(
            d.join("conf"),
            "GPG_KEY='disabled'\nTARGET='file:///b'\nSOURCE='/s'\n",
        )
        .unwrap();
        let (text, _) = import(&d).unwrap();
        let p: Profile = toml::from_str(&text).unwrap();
        assert_eq!(p.options["no-encryption"], toml::Value::Boolean(true));
        assert!(!p.options.contains_key("encrypt-key") && p.passphrase.is_none());
    }
}
