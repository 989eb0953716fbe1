//! Profiles: the wrapper's job (duply, duplicity-backup.sh) built in.
//!
//! A profile is a TOML file, `$XDG_CONFIG_HOME/dupr/profiles/NAME.toml` (or
//! any path given with `-c`). Its keys are either profile fields (source,
//! target, passphrase source, retention, hooks, logs, notifications) or any
//! long option of dupr's command line by its own name (`volsize = 100`,
//! `include = ["/a"]`, `encrypt-key = ["ID"]`, `no-encryption = true`):
//! options are defined once, in the clap parser, and a profile, the command
//! line (`dupr -p NAME --volsize 50 backup`) and the environment
//! (`DUPR_VOLSIZE=50`) all name them the same way.
//!
//! A profile run spawns dupr itself with the assembled command line, the
//! secrets passed in its environment only, its output copied to a log file.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Profile {
    /// Directory to back up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Target URL (duplicity's spelling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Ordered selection in filelist syntax: "+ PATTERN" includes,
    /// "- PATTERN" excludes; first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub select: Vec<String>,
    /// The passphrase in clear (the file must then be private, mode 600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<String>,
    /// A private file (mode 600) holding the passphrase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passphrase_file: Option<String>,
    /// A command printing the passphrase, e.g. "pass show backup".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passphrase_command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign_passphrase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign_passphrase_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign_passphrase_command: Option<String>,
    /// Where run logs go (default: $XDG_STATE_HOME/dupr/logs/NAME).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<String>,
    /// Delete run logs older than this many days (default 30).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_keep_days: Option<u64>,
    /// `status` fails when the last success is older than this (default 2D).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// Run `cleanup --force` after each backup (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<bool>,
    #[serde(default, skip_serializing_if = "Retention::is_empty")]
    pub retention: Retention,
    #[serde(default, skip_serializing_if = "Hooks::is_empty")]
    pub hooks: Hooks,
    #[serde(default, skip_serializing_if = "Notify::is_empty")]
    pub notify: Notify,
    /// Every other key: a dupr/duplicity long option by name.
    #[serde(flatten)]
    pub options: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Retention {
    /// `remove-older-than` (e.g. "60D").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remove_older_than: Option<String>,
    /// `remove-all-but-n-full N`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_full: Option<u32>,
    /// `remove-all-inc-of-but-n-full N`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_incrementals_of: Option<u32>,
}

impl Retention {
    fn is_empty(&self) -> bool {
        *self == Retention::default()
    }
}

#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Hooks {
    /// Shell command run before the backup; a failure stops the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre: Option<String>,
    /// Shell command run after it (CMD_ERR says how it went).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post: Option<String>,
}

impl Hooks {
    fn is_empty(&self) -> bool {
        *self == Hooks::default()
    }
}

#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Notify {
    /// Mail the run's log here (through sendmail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_from: Option<String>,
    /// POST the run record (JSON) here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// "failure" (default) or "always".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<String>,
    /// The mail command, reading the message on stdin (default: sendmail -t).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sendmail: Option<String>,
}

impl Notify {
    fn is_empty(&self) -> bool {
        *self == Notify::default()
    }
}

/// Long options a profile may not set: they belong to the invocation.
const NOT_IN_PROFILE: &[&str] = &[
    "help",
    "version",
    "generate",
    "profile",
    "config",
    "preview",
    "export-passphrase-file",
];

pub fn config_dir() -> PathBuf {
    xdg("XDG_CONFIG_HOME", ".config")
        .join("dupr")
        .join("profiles")
}

pub fn state_dir() -> PathBuf {
    xdg("XDG_STATE_HOME", ".local/state").join("dupr")
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into())).join(fallback),
    }
}

/// A loaded profile with where it came from.
pub struct Loaded {
    pub name: String,
    pub path: PathBuf,
    pub profile: Profile,
}

/// The file of profile `name` (a path if it contains a slash).
pub fn path_of(name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name)
    } else {
        config_dir().join(format!("{name}.toml"))
    }
}

/// Read and check a profile, then apply `DUPR_*` environment overrides.
pub fn load(name: &str, path: &Path) -> Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading profile {}", path.display()))?;
    let mut profile = parse(&text, path)?;
    if profile.passphrase.is_some() || profile.sign_passphrase.is_some() {
        private(path, "holds a passphrase in clear")?;
    }
    env_overrides(&mut profile);
    Ok(Loaded {
        name: name.to_string(),
        path: path.to_path_buf(),
        profile,
    })
}

/// A profile's TOML `text` (read from `path`), with its option keys
/// checked against dupr's parser.
pub fn parse(text: &str, path: &Path) -> Result<Profile> {
    let profile: Profile =
        toml::from_str(text).map_err(|e| anyhow!("profile {}: {}", path.display(), e.message()))?;
    check_options(&profile, path)?;
    Ok(profile)
}

/// Refuse a secret-bearing file others can read.
pub(crate) fn private(path: &Path, what: &str) -> Result<()> {
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} {what} but is readable by group or others (mode {:o}); fix it with: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

/// The long options of dupr's parser, and whether each takes a value.
fn long_options() -> BTreeMap<String, bool> {
    crate::cli::option_arity()
        .into_iter()
        .filter_map(|(k, takes)| k.strip_prefix("--").map(|l| (l.to_string(), takes)))
        .collect()
}

fn check_options(p: &Profile, path: &Path) -> Result<()> {
    let known = long_options();
    for k in p.options.keys() {
        if NOT_IN_PROFILE.contains(&k.as_str()) || !known.contains_key(k) {
            bail!(
                "profile {}: unknown key {k:?} (neither a profile field nor a dupr option)",
                path.display()
            );
        }
    }
    Ok(())
}

/// `DUPR_<NAME>` overrides the profile's field or option `<name>`.
fn env_overrides(p: &mut Profile) {
    let var = |k: &str| std::env::var(format!("DUPR_{}", k.to_uppercase().replace('-', "_"))).ok();
    macro_rules! field {
        ($($f:ident = $k:literal),*) => {$(
            if let Some(v) = var($k) { p.$f = Some(v); }
        )*};
    }
    field!(
        source = "source",
        target = "target",
        passphrase_file = "passphrase-file",
        passphrase_command = "passphrase-command",
        sign_passphrase_file = "sign-passphrase-file",
        sign_passphrase_command = "sign-passphrase-command",
        log_dir = "log-dir",
        max_age = "max-age"
    );
    for (k, takes) in long_options() {
        if NOT_IN_PROFILE.contains(&k.as_str()) || k == "archive-dir" {
            continue;
        }
        if let Some(v) = var(&k) {
            let value = if takes {
                toml::Value::String(v)
            } else {
                toml::Value::Boolean(!matches!(v.as_str(), "" | "0" | "false" | "no" | "off"))
            };
            p.options.insert(k, value);
        }
    }
}

/// The profile's options as command-line arguments.
/// Options naming files: a relative path is relative to the profile's
/// directory, so a scheduled run from anywhere finds them.
const FILE_OPTIONS: &[&str] = &[
    "include-filelist",
    "exclude-filelist",
    "files-from",
    "encrypt-key-file",
    "sign-key-file",
];

fn option_args(p: &Profile, base: &Path) -> Result<Vec<OsString>> {
    let mut out = Vec::new();
    for (k, v) in &p.options {
        let one = |v: &toml::Value| -> Result<Option<OsString>> {
            Ok(match v {
                toml::Value::Boolean(true) => Some(format!("--{k}").into()),
                toml::Value::Boolean(false) => None,
                toml::Value::String(s) if FILE_OPTIONS.contains(&k.as_str()) => {
                    let path = expand(s);
                    let path = if path.is_relative() {
                        base.join(path)
                    } else {
                        path
                    };
                    let mut a = OsString::from(format!("--{k}="));
                    a.push(path.as_os_str());
                    Some(a)
                }
                toml::Value::String(s) => Some(format!("--{k}={s}").into()),
                toml::Value::Integer(i) => Some(format!("--{k}={i}").into()),
                toml::Value::Float(f) => Some(format!("--{k}={f}").into()),
                other => bail!("profile option {k}: unsupported value {other}"),
            })
        };
        match v {
            toml::Value::Array(items) => {
                for i in items {
                    out.extend(one(i)?);
                }
            }
            v => out.extend(one(v)?),
        }
    }
    Ok(out)
}

/// A secret from the profile: clear text, a private file, or a command.
pub(crate) fn secret(
    clear: &Option<String>,
    file: &Option<String>,
    command: &Option<String>,
    what: &str,
) -> Result<Option<Zeroizing<String>>> {
    if let Some(s) = clear {
        return Ok(Some(Zeroizing::new(s.clone())));
    }
    if let Some(f) = file {
        let path = expand(f);
        private(&path, &format!("holds the {what}"))?;
        let s = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the {what} file {}", path.display()))?;
        return Ok(Some(Zeroizing::new(
            s.trim_end_matches(['\n', '\r']).to_string(),
        )));
    }
    if let Some(c) = command {
        let out = Command::new("sh")
            .arg("-c")
            .arg(c)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running the {what} command"))?;
        if !out.status.success() {
            bail!("the {what} command {c:?} failed ({})", out.status);
        }
        let s = Zeroizing::new(String::from_utf8_lossy(&out.stdout).into_owned());
        return Ok(Some(Zeroizing::new(
            s.trim_end_matches(['\n', '\r']).to_string(),
        )));
    }
    Ok(None)
}

/// Where a profile run's passphrase comes from. Precedence: the profile
/// (`passphrase`, `passphrase-file`, `passphrase-command`, in that order),
/// then the environment (`PASSPHRASE`), then a prompt on the terminal.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Source {
    Clear,
    File(String),
    Command(String),
    /// The environment variable of that name (taken out of the environment).
    Env(&'static str),
    /// Asked on the terminal before the run.
    Terminal,
    /// The run needs none: unencrypted, or a backup to public keys.
    NotNeeded,
    /// None can be had.
    None,
}

impl Source {
    /// What `--preview` prints: where the secret comes from, never the secret.
    fn describe(&self, var: &str) -> String {
        match self {
            Source::Clear => "from the profile (hidden)".into(),
            Source::File(f) => format!("from the file {f}"),
            Source::Command(c) => format!("from the command {c:?}"),
            Source::Env(v) => format!("from the environment variable {v} (hidden)"),
            Source::Terminal => "asked on the terminal before the run".into(),
            Source::NotNeeded => {
                "not needed (unencrypted, or a backup to public keys)".into()
            }
            Source::None => format!(
                "none: the profile names no passphrase source, {var} is unset and there is no terminal to ask on"
            ),
        }
    }

    /// The secret itself.
    fn read(&self, p: &Profile, what: &str, confirm: bool) -> Result<Option<Zeroizing<String>>> {
        let sign = what.starts_with("sign");
        let (clear, file, command) = if sign {
            (
                &p.sign_passphrase,
                &p.sign_passphrase_file,
                &p.sign_passphrase_command,
            )
        } else {
            (&p.passphrase, &p.passphrase_file, &p.passphrase_command)
        };
        match self {
            Source::Clear | Source::File(_) | Source::Command(_) => {
                secret(clear, file, command, what)
            }
            Source::Env(v) => Ok(crate::take_env(v)
                .map(|b| Zeroizing::new(String::from_utf8_lossy(&b).into_owned()))),
            Source::Terminal => prompt(confirm).map(Some),
            Source::None | Source::NotNeeded => Ok(None),
        }
    }
}

/// The profile's own source, if it names one.
fn profile_source(clear: &Option<String>, file: &Option<String>, cmd: &Option<String>) -> Source {
    match (clear, file, cmd) {
        (Some(_), _, _) => Source::Clear,
        (_, Some(f), _) => Source::File(f.clone()),
        (_, _, Some(c)) => Source::Command(c.clone()),
        _ => Source::None,
    }
}

/// The passphrase source of a run of `action`.
pub(crate) fn passphrase_source(l: &Loaded, action: &str, extra: &[OsString]) -> Source {
    let p = &l.profile;
    let own = profile_source(&p.passphrase, &p.passphrase_file, &p.passphrase_command);
    if own != Source::None {
        return own;
    }
    if std::env::var_os("PASSPHRASE").is_some() {
        return Source::Env("PASSPHRASE");
    }
    // Set in the profile, or given on this command line.
    let on = |k: &str| {
        let flag = format!("--{k}");
        p.options
            .get(k)
            .is_some_and(|v| !matches!(v, toml::Value::Boolean(false)))
            || extra.iter().any(|a| {
                let a = a.to_string_lossy();
                a == flag || a.starts_with(&format!("{flag}="))
            })
    };
    // Unencrypted archives, and backups to public keys, need no passphrase.
    let writing = matches!(action, "backup" | "bkp" | "full" | "incr" | "incremental");
    let public = on("encrypt-key") || on("hidden-encrypt-key") || on("encrypt-key-file");
    if on("no-encryption") || (writing && public) {
        return Source::NotNeeded;
    }
    if std::io::stdin().is_terminal() {
        Source::Terminal
    } else {
        Source::None
    }
}

/// The sign passphrase: the profile's, else `SIGN_PASSPHRASE` (never asked).
fn sign_source(p: &Profile) -> Source {
    let own = profile_source(
        &p.sign_passphrase,
        &p.sign_passphrase_file,
        &p.sign_passphrase_command,
    );
    if own == Source::None && std::env::var_os("SIGN_PASSPHRASE").is_some() {
        return Source::Env("SIGN_PASSPHRASE");
    }
    own
}

/// The passphrase asked on the terminal, twice when it protects new data.
fn prompt(confirm: bool) -> Result<Zeroizing<String>> {
    let bytes = crate::secret::ask(
        "GnuPG passphrase: ",
        confirm.then_some("Retype passphrase to confirm: "),
        false,
    )?
    .ok_or_else(|| anyhow!("no terminal to ask the passphrase on"))?;
    Ok(Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned()))
}

pub(crate) fn expand(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(rest),
        None => PathBuf::from(p),
    }
}

/// One step of a profile run: a dupr command line.
pub struct Step {
    pub label: &'static str,
    pub args: Vec<OsString>,
}

/// What `-p NAME ACTION` runs, in order.
pub fn plan(l: &Loaded, action: &str, rest: &[OsString], extra: &[OsString]) -> Result<Vec<Step>> {
    let p = &l.profile;
    let target = p
        .target
        .clone()
        .ok_or_else(|| anyhow!("profile {} has no target", l.name))?;
    let source = || -> Result<String> {
        p.source
            .clone()
            .ok_or_else(|| anyhow!("profile {} has no source", l.name))
    };
    let mut common = option_args(p, l.path.parent().unwrap_or(Path::new(".")))?;
    // The profile's own cache name (an imported duply profile keeps
    // duply's) wins over the default.
    if !p.options.contains_key("name") {
        common.push(format!("--name=profile-{}", l.name).into());
    }
    common.extend(extra.iter().cloned());
    let mut select = Vec::new();
    if !p.select.is_empty() {
        let f = state_dir().join(format!("{}.select", l.name));
        select.push(format!("--include-filelist={}", f.display()).into());
    }
    // `opts` are single `--name=value` words; `pos` the paths and URLs,
    // last. A path starting with '-' would read as an option: `--` first.
    let step = |label: &'static str, words: &[&str], opts: Vec<OsString>, pos: Vec<OsString>| {
        let guard = pos
            .iter()
            .any(|a| a.as_bytes().starts_with(b"-"))
            .then(|| OsString::from("--"));
        Step {
            label,
            args: words
                .iter()
                .map(OsString::from)
                .chain(common.iter().cloned())
                .chain(opts)
                .chain(guard)
                .chain(pos)
                .collect(),
        }
    };
    let t = || OsString::from(&target);
    let backup_steps = |kind: &'static str, steps: &mut Vec<Step>| -> Result<()> {
        let pos = vec![OsString::from(source()?), t()];
        steps.push(step(kind, &[kind], select.clone(), pos));
        Ok(())
    };
    let retention = |steps: &mut Vec<Step>| {
        let r = &p.retention;
        if let Some(age) = &r.remove_older_than {
            steps.push(step(
                "remove-older-than",
                &["remove-older-than", age, "--force"],
                vec![],
                vec![t()],
            ));
        }
        if let Some(n) = r.keep_full {
            let n = n.to_string();
            steps.push(step(
                "remove-all-but-n-full",
                &["remove-all-but-n-full", &n, "--force"],
                vec![],
                vec![t()],
            ));
        }
        if let Some(n) = r.keep_incrementals_of {
            let n = n.to_string();
            steps.push(step(
                "remove-all-inc-of-but-n-full",
                &["remove-all-inc-of-but-n-full", &n, "--force"],
                vec![],
                vec![t()],
            ));
        }
    };
    let mut steps = Vec::new();
    match action {
        "backup" | "bkp" => {
            backup_steps("backup", &mut steps)?;
            retention(&mut steps);
            if p.cleanup.unwrap_or(true) {
                steps.push(step("cleanup", &["cleanup", "--force"], vec![], vec![t()]));
            }
        }
        "full" => backup_steps("full", &mut steps)?,
        "incr" | "incremental" => backup_steps("incremental", &mut steps)?,
        "verify" => {
            let pos = vec![t(), OsString::from(source()?)];
            steps.push(step("verify", &["verify"], select.clone(), pos));
        }
        "list" => steps.push(step("list-current-files", &["list-current-files"], vec![], vec![t()])),
        "collection-status" => steps.push(step("collection-status", &["collection-status"], vec![], vec![t()])),
        "restore" => {
            let dest = rest.first().cloned().unwrap_or_else(|| OsString::from(source().unwrap_or_default()));
            steps.push(step("restore", &["restore"], vec![], vec![t(), dest]));
        }
        "fetch" => {
            let (Some(path), Some(dest)) = (rest.first(), rest.get(1)) else {
                bail!("usage: dupr -p NAME fetch PATH DEST");
            };
            let mut opt = OsString::from("--path-to-restore=");
            opt.push(path);
            steps.push(step("fetch", &["restore"], vec![opt], vec![t(), dest.clone()]));
        }
        "mount" => {
            let Some(dir) = rest.first() else {
                bail!("usage: dupr -p NAME mount DIR");
            };
            steps.push(step("mount", &["mount"], vec![], vec![t(), dir.clone()]));
        }
        "purge" => retention(&mut steps),
        "cleanup" => steps.push(step("cleanup", &["cleanup", "--force"], vec![], vec![t()])),
        other => bail!(
            "unknown profile action {other:?}: use backup, full, incr, verify, status, list, restore [DEST], fetch PATH DEST, mount DIR, purge, cleanup, export-keys FILE"
        ),
    }
    Ok(steps)
}

/// The machine-readable record of one run, one JSON line per run.
#[derive(Debug, Default, Serialize, Deserialize, Clone)]
pub struct RunRecord {
    pub profile: String,
    pub action: String,
    pub start: i64,
    pub end: i64,
    /// "success", "failure" or "skipped" (another run was in progress).
    pub result: String,
    pub exit_code: i32,
    pub failed_step: Option<String>,
    pub files: Option<u64>,
    pub bytes: Option<u64>,
    pub errors: Option<u64>,
    pub log: Option<String>,
}

fn records_path(name: &str) -> PathBuf {
    state_dir().join(format!("{name}.runs.jsonl"))
}

pub fn records(name: &str) -> Vec<RunRecord> {
    let Ok(f) = std::fs::File::open(records_path(name)) else {
        return Vec::new();
    };
    std::io::BufReader::new(f)
        .lines()
        .map_while(|l| l.ok())
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

fn append_record(r: &RunRecord) -> Result<()> {
    let p = records_path(&r.profile);
    std::fs::create_dir_all(p.parent().expect("has parent"))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)?;
    writeln!(f, "{}", serde_json::to_string(r)?)?;
    Ok(())
}

/// Exit code of a run skipped because another run of the profile is on.
pub const EXIT_SKIPPED_BUSY: i32 = 102;

/// Run a profile action: pre hook, the steps, post hook, log, record, notify.
pub fn run(
    l: &Loaded,
    action: &str,
    rest: &[OsString],
    extra: &[OsString],
    preview: bool,
) -> Result<i32> {
    let p = &l.profile;
    let steps = plan(l, action, rest, extra)?;
    let pass_from = passphrase_source(l, action, extra);
    let sign_from = sign_source(p);
    if preview {
        println!("# PASSPHRASE {}", pass_from.describe("PASSPHRASE"));
        if !matches!(sign_from, Source::None) {
            println!(
                "# SIGN_PASSPHRASE {}",
                sign_from.describe("SIGN_PASSPHRASE")
            );
        }
        if let Some(h) = &p.hooks.pre {
            println!("# pre hook: {h}");
        }
        for s in &steps {
            let words: Vec<String> = s
                .args
                .iter()
                .map(|a| shell_quote(&a.to_string_lossy()))
                .collect();
            println!("dupr {}", words.join(" "));
        }
        if let Some(h) = &p.hooks.post {
            println!("# post hook: {h}");
        }
        return Ok(0);
    }
    let passphrase = pass_from.read(
        p,
        "passphrase",
        matches!(action, "backup" | "bkp" | "full" | "incr" | "incremental"),
    )?;
    let sign = sign_from.read(p, "sign passphrase", false)?;
    let exe = std::env::current_exe().context("locating the dupr binary")?;
    let step_cmd = |s: &Step| {
        let mut cmd = Command::new(&exe);
        cmd.args(&s.args)
            .env_remove("PASSPHRASE")
            .env_remove("SIGN_PASSPHRASE");
        if let Some(pw) = &passphrase {
            cmd.env("PASSPHRASE", pw.as_str());
        }
        if let Some(pw) = &sign {
            cmd.env("SIGN_PASSPHRASE", pw.as_str());
        }
        cmd
    };
    if action == "mount" {
        // A mount lasts as long as the user wants: it replaces this
        // process (signals reach it), without the profile's run lock
        // (scheduled backups go on beside it), log capture or run record.
        let e = std::os::unix::process::CommandExt::exec(&mut step_cmd(&steps[0]));
        return Err(e).context("starting dupr mount");
    }
    std::fs::create_dir_all(state_dir())?;
    // One run of a profile at a time; a second one is "skipped", not failed.
    let lock_path = state_dir().join(format!("{}.lock", l.name));
    let _guard = match dupr_core::lock::RunLock::acquire_file(&lock_path) {
        Ok(g) => g,
        Err(dupr_core::Error::Locked(_)) => {
            let now = dupr_core::time::now();
            eprintln!(
                "dupr: skipped: another run of profile {} is in progress",
                l.name
            );
            append_record(&RunRecord {
                profile: l.name.clone(),
                action: action.into(),
                start: now,
                end: now,
                result: "skipped".into(),
                exit_code: EXIT_SKIPPED_BUSY,
                ..Default::default()
            })?;
            return Ok(EXIT_SKIPPED_BUSY);
        }
        Err(e) => return Err(e.into()),
    };
    if !p.select.is_empty() {
        let f = state_dir().join(format!("{}.select", l.name));
        let mut text = String::new();
        for line in &p.select {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&f, text)?;
    }
    let start = dupr_core::time::now();
    let log_dir = p
        .log_dir
        .as_deref()
        .map(expand)
        .unwrap_or_else(|| state_dir().join("logs").join(&l.name));
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("creating the log dir {}", log_dir.display()))?;
    rotate_logs(&log_dir, &l.name, p.log_keep_days.unwrap_or(30));
    let (log_path, mut log) = new_log(&log_dir, &l.name, action, start)?;
    let hook_env = hook_env(l, action);
    let mut record = RunRecord {
        profile: l.name.clone(),
        action: action.into(),
        start,
        result: "success".into(),
        log: Some(log_path.display().to_string()),
        ..Default::default()
    };
    let backup_like = matches!(action, "backup" | "bkp" | "full" | "incr" | "incremental");
    let mut code = 0;
    if backup_like {
        if let Some(h) = &p.hooks.pre {
            let c = hook(h, &hook_env, "pre", "", &mut log)?;
            if c != 0 {
                code = c;
                record.failed_step = Some("pre".into());
            }
        }
    }
    if code == 0 {
        for s in &steps {
            writeln!(log, "== dupr {}", s.label)?;
            let (c, out) = run_logged(step_cmd(s), &mut log)?;
            if matches!(s.label, "backup" | "full" | "incremental") {
                // From the statistics block duplicity prints.
                let stat = |key: &str| {
                    out.lines()
                        .find_map(|l| l.strip_prefix(key))
                        .and_then(|v| v.split_whitespace().next()?.parse().ok())
                };
                record.files = stat("SourceFiles ");
                record.bytes = stat("TotalDestinationSizeChange ");
                record.errors = stat("Errors ");
            }
            if c != 0 && !(s.label == "cleanup" && c == 101) {
                code = c;
                record.failed_step = Some(s.label.into());
                break;
            }
        }
    }
    if backup_like {
        if let Some(h) = &p.hooks.post {
            let err = if code == 0 { "" } else { "error" };
            let c = hook(h, &hook_env, "post", err, &mut log)?;
            if c != 0 && code == 0 {
                code = c;
                record.failed_step = Some("post".into());
            }
        }
    }
    record.end = dupr_core::time::now();
    record.exit_code = code;
    if code != 0 {
        record.result = "failure".into();
    }
    drop(log);
    append_record(&record)?;
    notify(l, &record, &log_path);
    let word = if code == 0 { "done" } else { "FAILED" };
    eprintln!(
        "dupr: profile {} {action} {word} (exit {code}); log: {}",
        l.name,
        log_path.display()
    );
    Ok(code)
}

/// `s` as one word for a POSIX shell (quoted only when it must be).
pub(crate) fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=/.,:@%+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Run a child, copying its output to the log and to our own streams;
/// returns its exit code and its stdout.
fn run_logged(mut cmd: Command, log: &mut std::fs::File) -> Result<(i32, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting dupr")?;
    let mut err = child.stderr.take().expect("piped");
    let err_log = log.try_clone()?;
    let t = std::thread::spawn(move || {
        let mut err_log = err_log;
        let mut buf = [0u8; 8192];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = std::io::stderr().write_all(&buf[..n]);
            let _ = err_log.write_all(&buf[..n]);
        }
    });
    let mut out = String::new();
    let mut so = child.stdout.take().expect("piped");
    let mut buf = [0u8; 8192];
    loop {
        let n = so.read(&mut buf)?;
        if n == 0 {
            break;
        }
        std::io::stdout().write_all(&buf[..n])?;
        log.write_all(&buf[..n])?;
        if out.len() < 1 << 20 {
            out.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    let status = child.wait()?;
    let _ = t.join();
    Ok((status.code().unwrap_or(1), out))
}

/// duply's hook environment.
fn hook_env(l: &Loaded, action: &str) -> Vec<(String, String)> {
    let p = &l.profile;
    let target = p.target.clone().unwrap_or_default();
    let (prot, hostpath) = target.split_once("://").unwrap_or(("", &target));
    vec![
        ("PROFILE".into(), l.name.clone()),
        (
            "CONFDIR".into(),
            l.path
                .parent()
                .unwrap_or(Path::new("."))
                .display()
                .to_string(),
        ),
        ("SOURCE".into(), p.source.clone().unwrap_or_default()),
        ("TARGET_URL_PROT".into(), format!("{prot}://")),
        ("TARGET_URL_HOSTPATH".into(), hostpath.to_string()),
        ("CMD_NEXT".into(), action.to_string()),
        ("RUN_START".into(), dupr_core::time::now().to_string()),
    ]
}

fn hook(
    cmd: &str,
    env: &[(String, String)],
    which: &str,
    err: &str,
    log: &mut std::fs::File,
) -> Result<i32> {
    writeln!(log, "== {which} hook")?;
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("CMD_PREV", if which == "pre" { "" } else { "backup" })
        .env("CMD_ERR", err)
        .env_remove("PASSPHRASE")
        .env_remove("SIGN_PASSPHRASE");
    let (code, _) = run_logged(c, log)?;
    Ok(code)
}

/// Profile actions, as they appear in log names.
const ACTIONS: &[&str] = &[
    "backup",
    "bkp",
    "full",
    "incr",
    "incremental",
    "verify",
    "list",
    "collection-status",
    "restore",
    "fetch",
    "mount",
    "purge",
    "cleanup",
];

/// Whether `file` is a run log of profile `name`:
/// `dupr-NAME-ACTION-YYYYMMDDTHHMMSSZ[-N].log`. The whole shape is checked,
/// so that profile `home` never claims the logs of `home-x` in a shared
/// log directory.
fn is_own_log(file: &str, name: &str) -> bool {
    let Some(rest) = file
        .strip_prefix(&format!("dupr-{name}-"))
        .and_then(|r| r.strip_suffix(".log"))
    else {
        return false;
    };
    ACTIONS.iter().any(|a| {
        let Some(tail) = rest.strip_prefix(a).and_then(|t| t.strip_prefix('-')) else {
            return false;
        };
        let (stamp, seq) = match tail.split_once('-') {
            Some((st, n)) => (st, Some(n)),
            None => (tail, None),
        };
        let b = stamp.as_bytes();
        let stamp_ok = b.len() == 16
            && b[8] == b'T'
            && b[15] == b'Z'
            && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
        let seq_ok = match seq {
            Some(n) => !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()),
            None => true,
        };
        stamp_ok && seq_ok
    })
}

/// A new log file of this run; a second run in the same second gets
/// `-2`, `-3`, ... (created exclusively, so two runs never share one).
fn new_log(dir: &Path, name: &str, action: &str, start: i64) -> Result<(PathBuf, std::fs::File)> {
    let stem = format!(
        "dupr-{name}-{action}-{}",
        dupr_core::time::to_filename(start)
    );
    for n in 1..1000 {
        let file = if n == 1 {
            format!("{stem}.log")
        } else {
            format!("{stem}-{n}.log")
        };
        let path = dir.join(file);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("creating the log {}", path.display()))
            }
        }
    }
    bail!(
        "creating a log in {}: too many runs this second",
        dir.display()
    )
}

fn rotate_logs(dir: &Path, name: &str, keep_days: u64) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|a| a.as_secs() > keep_days * 86_400);
        let ours = is_own_log(&e.file_name().to_string_lossy(), name);
        if old && ours {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Mail and/or POST the run record, on failure or always.
fn notify(l: &Loaded, r: &RunRecord, log_path: &Path) {
    let n = &l.profile.notify;
    let always = n.on.as_deref() == Some("always");
    if r.result == "success" && !always {
        return;
    }
    let json = serde_json::to_string(r).unwrap_or_default();
    if let Some(url) = &n.webhook {
        if let Err(e) = post(url, &json) {
            tracing::warn!("notification to {url} failed: {e}");
        }
    }
    if let Some(to) = &n.email {
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        let from = n.email_from.clone().unwrap_or_else(|| "dupr".into());
        let mail = format!(
            "From: {from}\nTo: {to}\nSubject: dupr {} {}: {}\n\n{json}\n\n{log}",
            r.profile, r.action, r.result
        );
        let sendmail = n.sendmail.clone().unwrap_or_else(|| {
            let bin = ["/usr/sbin/sendmail", "/usr/lib/sendmail"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .unwrap_or("sendmail");
            format!("{bin} -t")
        });
        let sent = Command::new("sh")
            .arg("-c")
            .arg(&sendmail)
            .stdin(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().expect("piped").write_all(mail.as_bytes())?;
                c.wait()
            });
        if !sent.is_ok_and(|s| s.success()) {
            tracing::warn!("mailing the report to {to} failed");
        }
    }
}

/// A minimal HTTP/1.1 POST for `http://` webhooks; `https://` goes through curl.
fn post(url: &str, body: &str) -> Result<()> {
    if url.starts_with("https://") {
        let s = Command::new("curl")
            .args([
                "-fsS",
                "-m",
                "30",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
                url,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().expect("piped").write_all(body.as_bytes())?;
                c.wait()
            })?;
        if !s.success() {
            bail!("curl exited {s}");
        }
        return Ok(());
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("webhook URL must be http:// or https://"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let mut s = std::net::TcpStream::connect(&addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let ok = resp
        .split_whitespace()
        .nth(1)
        .is_some_and(|c| c.starts_with('2'));
    if !ok {
        bail!("{}", resp.lines().next().unwrap_or("no response"));
    }
    Ok(())
}

/// `dupr -p NAME status`: last success, its age, and a non-zero exit when
/// it is older than the profile's max-age (for monitoring).
/// `dupr -p NAME status` as data: the profile's last runs, whether its
/// last success is older than the allowed age, and its target's chain.
#[derive(Debug, Serialize)]
pub struct ProfileStatus {
    pub profile: String,
    pub config: PathBuf,
    pub target: String,
    pub last_run: Option<RunRecord>,
    pub last_success: Option<RunRecord>,
    /// The allowed age of the last success (`--max-age`, the profile's
    /// `max-age`, else 2D) and whether it is exceeded (or never was one).
    pub max_age: String,
    pub stale: bool,
    pub target_state: TargetState,
    /// The newest chain: its full's time and its incrementals.
    pub chain_full: Option<i64>,
    pub chain_incrementals: Option<usize>,
    /// Bytes and files on the target (sizes where the backend is local).
    pub target_bytes: Option<u64>,
    pub target_files: Option<usize>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    /// Listed.
    Reachable,
    Unreachable,
    /// The profile's options do not parse, or it names no target.
    Unknown,
    OptionsDoNotParse,
}

pub fn status(l: &Loaded, max_age: Option<&str>, json: bool) -> Result<i32> {
    let st = status_of(l, max_age)?;
    let code = if st.stale { 1 } else { 0 };
    if json {
        let mut v = serde_json::to_value(&st)?;
        if let serde_json::Value::Object(o) = &mut v {
            o.insert("exit_code".into(), code.into());
        }
        println!("{v}");
        return Ok(code);
    }
    println!("Profile: {} ({})", st.profile, st.config.display());
    println!("Target: {}", st.target);
    if let Some(last) = &st.last_run {
        println!(
            "Last run: {} {} at {} (exit {})",
            last.action,
            last.result,
            dupr_core::time::pretty_local(last.start),
            last.exit_code
        );
    }
    match &st.last_success {
        Some(r) => {
            println!(
                "Last success: {} ({} ago){}",
                dupr_core::time::pretty_local(r.end),
                human_age(dupr_core::time::now() - r.end),
                r.files
                    .map(|f| format!(
                        ", {f} files, {} stored",
                        crate::render::human(r.bytes.unwrap_or(0))
                    ))
                    .unwrap_or_default()
            );
            if st.stale {
                println!(
                    "STALE: the last successful backup is older than {}",
                    st.max_age
                );
            }
        }
        None => println!("Last success: never"),
    }
    match st.target_state {
        TargetState::OptionsDoNotParse => println!("Target: the profile's options do not parse"),
        TargetState::Unreachable => println!("Target: unreachable"),
        _ => {}
    }
    if let (Some(full), Some(n)) = (st.chain_full, st.chain_incrementals) {
        println!(
            "Chain: full of {} + {n} incremental(s)",
            dupr_core::time::pretty_local(full)
        );
    }
    if let (Some(bytes), Some(files)) = (st.target_bytes, st.target_files) {
        println!(
            "Target size: {} in {files} file(s)",
            crate::render::human(bytes)
        );
    }
    Ok(code)
}

fn status_of(l: &Loaded, max_age: Option<&str>) -> Result<ProfileStatus> {
    let recs = records(&l.name);
    let now = dupr_core::time::now();
    let limit_s = max_age
        .map(str::to_string)
        .or_else(|| l.profile.max_age.clone())
        .unwrap_or_else(|| "2D".into());
    let limit = now
        - dupr_core::time::parse_time_string(&limit_s, now)
            .map_err(|e| crate::bad_value(format!("--max-age: {e}")))?;
    let last_success = recs
        .iter()
        .rev()
        .find(|r| {
            r.result == "success"
                && matches!(
                    r.action.as_str(),
                    "backup" | "bkp" | "full" | "incr" | "incremental"
                )
        })
        .cloned();
    let stale = last_success.as_ref().is_none_or(|r| now - r.end > limit);
    let mut st = ProfileStatus {
        profile: l.name.clone(),
        config: l.path.clone(),
        target: l.profile.target.clone().unwrap_or_default(),
        last_run: recs.last().cloned(),
        last_success,
        max_age: limit_s,
        stale,
        target_state: TargetState::Unknown,
        chain_full: None,
        chain_incrementals: None,
        target_bytes: None,
        target_files: None,
    };
    chain_summary(l, &mut st);
    Ok(st)
}

fn human_age(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// Chain length and target size, read from the target's file names with
/// the profile's own prefixes and storage options (as its runs use them).
fn chain_summary(l: &Loaded, st: &mut ProfileStatus) {
    use clap::FromArgMatches;
    let Some(url) = &l.profile.target else {
        return;
    };
    let Ok(steps) = plan(l, "collection-status", &[], &[]) else {
        return;
    };
    let Some(args) = steps.into_iter().next().map(|s| s.args) else {
        return;
    };
    let argv = std::iter::once(OsString::from("dupr")).chain(args);
    let Some(cli) = crate::cli::command()
        .try_get_matches_from(argv)
        .ok()
        .and_then(|m| crate::cli::Cli::from_arg_matches(&m).ok())
    else {
        st.target_state = TargetState::OptionsDoNotParse;
        return;
    };
    let opened = crate::cli::backend_options(&cli, &std::env::temp_dir())
        .ok()
        .and_then(|o| dupr_backend::open(url, &o).ok());
    let Some(b) = opened else {
        return;
    };
    let Ok(names) = b.list() else {
        st.target_state = TargetState::Unreachable;
        return;
    };
    st.target_state = TargetState::Reachable;
    let c = dupr_core::chain::Collection::from_names(&names, &crate::cli::prefixes(&cli));
    if let Some(ch) = c.last_chain() {
        st.chain_full = Some(ch.start());
        st.chain_incrementals = Some(ch.incs.len());
    }
    st.target_bytes = Some(
        names
            .iter()
            .filter_map(|n| b.local_path(n))
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum(),
    );
    st.target_files = Some(names.len());
}

/// Write a file readable by its owner only.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
