//! Command-line compatibility with duplicity 3.2.1 and 0.8.22, driven through
//! the real `dupr` binary:
//!
//! * every long option of both duplicitys parses (the embedded lists are
//!   checked against the installed duplicity sources), unknown options and
//!   abbreviations behave like duplicity's;
//! * options dupr accepts but ignores warn, in one line, and do no harm;
//! * per-command help (insta snapshots), the man page and shell completions;
//! * two real-world command lines (a zertrin/duplicity-backup.sh run with
//!   public keys, a nightly shell script) run unchanged but for the URL, and
//!   stock duplicity 3.2.1 restores what they wrote;
//! * bad command lines fail with one line naming the culprit and touch
//!   neither the target nor the cache;
//! * duplicity 3.2's restore-time `--include`/`--exclude`, compared with
//!   duplicity 3.2.1 on the same archive;
//! * one focused test each for `--rename`, `--numeric-owner`,
//!   `--skip-if-no-change`, `--full-if-n-inc`, `--no-files-changed`,
//!   `--jsonstat`, `--log-file`, `--current-time`, and collection-status's
//!   `--file-changed` and `--show-changes-in-set`.

use crate::common;

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::*;

// ------------------------------------------------------------------ helpers

/// [`Env::dupr`] without the outer shell's knobs that change output.
fn dupr_in(env: &Env) -> assert_cmd::Command {
    let mut c = env.dupr();
    for v in ["DUPR_ARCHIVE_DIR", "COLUMNS", "LINES"] {
        c.env_remove(v);
    }
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// Run and require success.
fn ok(mut c: assert_cmd::Command) -> Output {
    let o = c.output().expect("run dupr");
    assert!(o.status.success(), "dupr failed: {:?}\n{}", c, show(&o));
    o
}

fn run(mut c: assert_cmd::Command) -> Output {
    c.output().expect("run dupr")
}

fn no_panic(o: &Output) {
    let e = text(&o.stderr);
    assert!(
        o.status.code() != Some(101) && !e.contains("panicked"),
        "dupr panicked:\n{}",
        show(o)
    );
}

/// The lines of stderr that are not the usage hint.
fn error_lines(o: &Output) -> Vec<String> {
    text(&o.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("Enter 'dupr --help'"))
        .map(str::to_string)
        .collect()
}

fn write(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// Give every entry under `root` (and `root`) a fixed, distinct mtime,
/// children before parents.
fn fix_mtimes(root: &Path, base: i64) {
    let mut all: Vec<Vec<u8>> = tree_paths(root).into_iter().collect();
    let index: Vec<(Vec<u8>, i64)> = all
        .iter()
        .enumerate()
        .map(|(i, p)| (p.clone(), base + 10 * i as i64))
        .collect();
    all.sort_by_key(|p| std::cmp::Reverse(p.iter().filter(|&&b| b == b'/').count()));
    for rel in &all {
        let t = index.iter().find(|(p, _)| p == rel).unwrap().1;
        set_mtime(&root.join(OsStr::from_bytes(rel)), t);
    }
    set_mtime(root, base - 1);
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// Every entry (files and directories) below `dir`, recursively.
fn everything_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(everything_below(&p));
            }
            out.push(p);
        }
    }
    out
}

/// The backup sets in a target, oldest first: ("full"|"inc", end time).
fn sets_in(target: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = names_in(target)
        .into_iter()
        .filter(|n| n.contains(".manifest"))
        .filter_map(|n| {
            let rest = n.strip_suffix(".gpg").unwrap_or(&n).to_string();
            let rest = rest.strip_suffix(".gz").unwrap_or(&rest).to_string();
            let stem = rest.strip_suffix(".manifest")?;
            if let Some(t) = stem.strip_prefix("duplicity-full.") {
                Some(("full".to_string(), t.to_string()))
            } else {
                let inc = stem.strip_prefix("duplicity-inc.")?;
                let (_, end) = inc.split_once(".to.")?;
                Some(("inc".to_string(), end.to_string()))
            }
        })
        .collect();
    v.sort_by(|a, b| a.1.cmp(&b.1));
    v
}

/// `list-current-files` paths (raw bytes).
fn listing(o: &Output) -> BTreeSet<Vec<u8>> {
    parse_listing(&o.stdout)
}

fn set(items: &[&str]) -> BTreeSet<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

fn show_set(s: &BTreeSet<Vec<u8>>) -> String {
    s.iter()
        .map(|p| format!("{:?}", lossy(p)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `restored` holds exactly `expected` (relative paths, "." for the root),
/// and each of them matches the same path under `src`: type, permission
/// bits, contents, symlink target, mtime (except symlinks').
fn assert_selected_copy(src: &Path, restored: &Path, expected: &BTreeSet<Vec<u8>>) {
    let mut got = tree_paths(restored);
    got.insert(b".".to_vec());
    assert_eq!(
        &got,
        expected,
        "restored paths in {}:\n  got:  {}\n  want: {}",
        restored.display(),
        show_set(&got),
        show_set(expected)
    );
    let mut diffs = Vec::new();
    for rel in expected {
        let (a, b) = if rel == b"." {
            (src.to_path_buf(), restored.to_path_buf())
        } else {
            (
                src.join(OsStr::from_bytes(rel)),
                restored.join(OsStr::from_bytes(rel)),
            )
        };
        let (ma, mb) = (
            fs::symlink_metadata(&a).unwrap(),
            fs::symlink_metadata(&b).unwrap(),
        );
        let name = lossy(rel);
        if ma.file_type() != mb.file_type() {
            diffs.push(format!("{name}: type differs"));
            continue;
        }
        if ma.file_type().is_symlink() {
            if fs::read_link(&a).unwrap() != fs::read_link(&b).unwrap() {
                diffs.push(format!("{name}: symlink target differs"));
            }
            continue;
        }
        if ma.mode() & 0o7777 != mb.mode() & 0o7777 {
            diffs.push(format!(
                "{name}: mode {:o} vs {:o}",
                ma.mode() & 0o7777,
                mb.mode() & 0o7777
            ));
        }
        if ma.mtime() != mb.mtime() {
            diffs.push(format!("{name}: mtime {} vs {}", ma.mtime(), mb.mtime()));
        }
        if ma.is_file() && fs::read(&a).unwrap() != fs::read(&b).unwrap() {
            diffs.push(format!("{name}: contents differ"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} vs {}:\n  {}",
        src.display(),
        restored.display(),
        diffs.join("\n  ")
    );
}

/// A duplicity archive dir of its own, under the env.
fn dup_archive(env: &Env, tag: &str) -> PathBuf {
    let p = env.path().join(format!("dup-archive-{tag}"));
    fs::create_dir_all(&p).unwrap();
    p
}

fn osv(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

// ------------------------------------------------------------------ gpg key

const KEY_PASS: &str = "zertrin-passphrase";

/// One signing+encryption key pair, generated once per run by the real gpg.
struct TestKey {
    master: PathBuf,
    /// Short (8 hex digit) key id of the primary key, as duplicity-backup.sh
    /// configurations usually give it.
    short_id: String,
}

fn gpg(home: &Path, args: &[&str]) -> Output {
    let out = Command::new("gpg")
        .env("GNUPGHOME", home)
        .env("LC_ALL", "C")
        .args(["--batch", "--no-tty"])
        .args(args)
        .output()
        .expect("run gpg");
    assert!(
        out.status.success(),
        "gpg {args:?} failed: {}",
        text(&out.stderr)
    );
    out
}

fn kill_agent(home: &Path) {
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", home)
        .args(["--kill", "gpg-agent"])
        .output();
}

fn test_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-compat-key");
        let home = dir.join("home");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&home).unwrap();
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
        let base = ["--pinentry-mode", "loopback", "--passphrase", KEY_PASS];
        let mut a = base.to_vec();
        a.extend([
            "--quick-gen-key",
            "Backup <backup@example.org>",
            "ed25519",
            "sign",
            "never",
        ]);
        gpg(&home, &a);
        let listing = text(
            &gpg(
                &home,
                &["--with-colons", "--list-keys", "backup@example.org"],
            )
            .stdout,
        );
        let fpr = listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .map(|l| l.split(':').nth(9).unwrap().to_string())
            .expect("fingerprint");
        let mut a = base.to_vec();
        a.extend(["--quick-add-key", &fpr, "cv25519", "encr", "never"]);
        gpg(&home, &a);
        kill_agent(&home);
        TestKey {
            master: home,
            short_id: fpr[fpr.len() - 8..].to_string(),
        }
    })
}

/// A per-test copy of the key's GnuPG home; its agent is stopped on drop.
struct Home(PathBuf);

impl Home {
    fn new(env: &Env) -> Home {
        let k = test_key();
        let h = env.path().join("gnupg");
        copy_tree(&k.master, &h);
        fs::set_permissions(&h, fs::Permissions::from_mode(0o700)).unwrap();
        Home(h)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn as_str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        kill_agent(&self.0);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else if ft.is_file() {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

// ------------------------------------------- 1. every duplicity option parses

/// How to give an option a plausible value.
#[derive(Clone, Copy, Debug)]
enum V {
    /// A switch.
    Flag,
    /// A literal value (written `--opt=value` when it starts with '-').
    S(&'static str),
    /// A time string.
    Time,
    /// An existing regular file (a filelist, a key ring, a CA bundle...).
    File,
    /// An existing directory.
    Dir,
    /// A log file to create.
    LogFile,
    /// The test key's id.
    Key,
    /// Two values.
    Two(&'static str, &'static str),
}

use V::*;

/// Every long option of duplicity 3.2.1 (cli_data.py's OptionKwargs) and its
/// aliases (OptionAliases: -r, -t/--time, -v, -V).
const OPTIONS_321: &[(&str, V)] = &[
    ("--allow-source-mismatch", Flag),
    ("--archive-dir", Dir),
    ("--asynchronous-upload", Flag),
    ("--azure-blob-tier", S("Cool")),
    ("--azure-max-connections", S("4")),
    ("--azure-max-block-size", S("4194304")),
    ("--azure-max-single-put-size", S("67108864")),
    ("--b2-hide-files", Flag),
    ("--backend-retry-delay", S("2")),
    ("--cf-backend", S("pyrax")),
    ("--check-remote", Flag),
    ("--compare-data", Flag),
    ("--compression", Flag),
    ("--concurrency", S("2")),
    ("--config-dir", Dir),
    ("--copy-blocksize", S("128")),
    ("--copy-links", Flag),
    ("--dry-run", Flag),
    ("--encryption", Flag),
    ("--encrypt-key", Key),
    ("--encrypt-sign-key", Key),
    ("--encrypt-secret-keyring", File),
    ("--exclude", S("**/cache")),
    ("--exclude-device-files", Flag),
    ("--exclude-filelist", File),
    ("--exclude-if-present", S(".nobackup")),
    ("--exclude-older-than", Time),
    ("--exclude-other-filesystems", Flag),
    ("--exclude-regexp", S("\\.tmp$")),
    ("--file-changed", S("precious/a.txt")),
    ("--file-prefix", S("pfx-")),
    ("--file-prefix-archive", S("arch-")),
    ("--file-prefix-manifest", S("man-")),
    ("--file-prefix-signature", S("sig-")),
    ("--file-prefix-jsonstat", S("json-")),
    ("--files-changed", Flag),
    ("--files-from", File),
    ("--filter-globbing", Flag),
    ("--filter-ignorecase", Flag),
    ("--filter-literal", Flag),
    ("--filter-regexp", Flag),
    ("--filter-strictcase", Flag),
    ("--force", Flag),
    ("--ftp-passive", Flag),
    ("--ftp-regular", Flag),
    ("--full-if-older-than", Time),
    ("--full-if-n-inc", S("3")),
    ("--gpg-binary", S("/usr/bin/gpg")),
    ("--gpg-options", S("--compress-algo=zlib")),
    ("--use-gpgsm", Flag),
    ("--hidden-encrypt-key", Key),
    ("--idr-fakeroot", Dir),
    ("--ignore-errors", Flag),
    ("--imap-full-address", Flag),
    ("--imap-mailbox", S("INBOX")),
    ("--include", S("**/precious")),
    ("--include-filelist", File),
    ("--include-regexp", S("precious")),
    ("--jsonstat", Flag),
    ("--log-fd", S("2")),
    ("--log-file", LogFile),
    ("--log-timestamp", Flag),
    ("--max-blocksize", S("4096")),
    ("--metadata-sync-mode", S("partial")),
    ("--mf-purge", Flag),
    ("--mp-segment-size", S("100")),
    ("--name", S("nightly")),
    ("--no-check-remote", Flag),
    ("--no-compression", Flag),
    ("--no-encryption", Flag),
    ("--no-files-changed", Flag),
    ("--no-restore-ownership", Flag),
    ("--no-print-statistics", Flag),
    ("--null-separator", Flag),
    ("--num-retries", S("2")),
    ("--numeric-owner", Flag),
    ("--par2-options", S("-q")),
    ("--par2-redundancy", S("10")),
    ("--par2-volumes", S("1")),
    ("--path-to-restore", S("precious/a.txt")),
    ("--print-statistics", Flag),
    ("--progress", Flag),
    ("--progress-rate", S("3")),
    ("--rename", Two("precious/a.txt", "a.txt")),
    ("--restore-ownership", Flag),
    ("--restore-time", Time),
    ("--rsync-options", S("--bwlimit=100")),
    ("--s3-endpoint-url", S("http://127.0.0.1:3900")),
    ("--s3-unencrypted-connection", Flag),
    ("--s3-use-deep-archive", Flag),
    ("--s3-use-glacier", Flag),
    ("--s3-use-glacier-ir", Flag),
    ("--s3-use-ia", Flag),
    ("--s3-use-onezone-ia", Flag),
    ("--s3-use-rrs", Flag),
    ("--s3-multipart-chunk-size", S("20")),
    ("--s3-multipart-max-procs", S("4")),
    ("--s3-use-server-side-encryption", Flag),
    ("--s3-use-server-side-kms-encryption", Flag),
    ("--s3-kms-key-id", S("kms-key-1")),
    ("--s3-kms-grant", S("grant-1")),
    ("--s3-region-name", S("eu-central-1")),
    ("--swift-storage-policy", S("gold")),
    ("--scp-command", S("scp -q")),
    ("--sftp-command", S("sftp -q")),
    ("--show-changes-in-set", S("0")),
    ("--sign-key", Key),
    ("--skip-if-no-change", Flag),
    ("--ssh-askpass", Flag),
    ("--ssh-options", S("-oIdentityFile=/dev/null")),
    ("--ssl-cacert-file", File),
    ("--ssl-cacert-path", Dir),
    ("--ssl-no-check-certificate", Flag),
    ("--tempdir", Dir),
    ("--timeout", S("30")),
    ("--time-separator", S("_")),
    ("--use-agent", Flag),
    ("--verbosity", S("4")),
    ("--version", Flag),
    ("--volsize", S("25")),
    ("--webdav-headers", S("X-Backup,nightly")),
    ("--current-time", S("1700000000")),
    ("--pydevd", Flag),
    ("--skip-volume", S("1")),
    // OptionAliases
    ("-r", S("precious/a.txt")),
    ("-t", Time),
    ("--time", Time),
    ("-v", S("4")),
    ("-V", Flag),
];

/// Every option of duplicity 0.8.22 (commandline.py's add_option calls).
const OPTIONS_0822: &[(&str, V)] = &[
    ("--allow-source-mismatch", Flag),
    ("--archive-dir", Dir),
    ("--asynchronous-upload", Flag),
    ("--compare-data", Flag),
    ("--config-dir", Dir),
    ("--copy-links", Flag),
    ("--current-time", S("1700000000")),
    ("--dry-run", Flag),
    ("--encrypt-key", Key),
    ("--encrypt-secret-keyring", File),
    ("--encrypt-sign-key", Key),
    ("--exclude", S("**/cache")),
    ("--exclude-device-files", Flag),
    ("--exclude-filelist", File),
    ("--exclude-filelist-stdin", Flag),
    ("--exclude-globbing-filelist", File),
    ("--exclude-if-present", S(".nobackup")),
    ("--exclude-other-filesystems", Flag),
    ("--exclude-regexp", S("\\.tmp$")),
    ("--exclude-older-than", Time),
    ("--fail-on-volume", S("1")),
    ("--file-prefix", S("pfx-")),
    ("--file-prefix-manifest", S("man-")),
    ("--file-prefix-archive", S("arch-")),
    ("--file-prefix-signature", S("sig-")),
    ("--skip-volume", S("1")),
    ("--file-to-restore", S("precious/a.txt")),
    ("-r", S("precious/a.txt")),
    ("--force", Flag),
    ("--ftp-passive", Flag),
    ("--ftp-regular", Flag),
    ("--full-if-older-than", Time),
    ("--gio", Flag),
    ("--gpg-binary", S("/usr/bin/gpg")),
    ("--gpg-options", S("--compress-algo=zlib")),
    ("--hidden-encrypt-key", Key),
    ("--idr-fakeroot", Dir),
    ("--ignore-errors", Flag),
    ("--imap-full-address", Flag),
    ("--imap-mailbox", S("INBOX")),
    ("--include", S("**/precious")),
    ("--include-filelist", File),
    ("--include-filelist-stdin", Flag),
    ("--include-globbing-filelist", File),
    ("--include-regexp", S("precious")),
    ("--log-fd", S("2")),
    ("--log-file", LogFile),
    ("--log-timestamp", Flag),
    ("--max-blocksize", S("4096")),
    ("--name", S("nightly")),
    ("--no-encryption", Flag),
    ("--no-compression", Flag),
    ("--no-print-statistics", Flag),
    ("--null-separator", Flag),
    ("--num-retries", S("2")),
    ("--numeric-owner", Flag),
    ("--do-not-restore-ownership", Flag),
    ("--old-filenames", Flag),
    ("--metadata-sync-mode", S("full")),
    ("--par2-redundancy", S("10")),
    ("--par2-options", S("-q")),
    ("--par2-volumes", S("1")),
    ("--progress", Flag),
    ("--progress-rate", S("3")),
    ("--pydevd", Flag),
    ("--rename", Two("precious/a.txt", "a.txt")),
    ("--restore-time", Time),
    ("--time", Time),
    ("-t", Time),
    ("--rsync-options", S("--bwlimit=100")),
    ("--s3-european-buckets", Flag),
    ("--s3-use-rrs", Flag),
    ("--s3-use-ia", Flag),
    ("--s3-use-glacier", Flag),
    ("--s3-use-glacier-ir", Flag),
    ("--s3-use-deep-archive", Flag),
    ("--s3-use-onezone-ia", Flag),
    ("--s3-use-new-style", Flag),
    ("--s3-unencrypted-connection", Flag),
    ("--s3-multipart-chunk-size", S("20")),
    ("--s3-multipart-max-procs", S("4")),
    ("--s3-multipart-max-timeout", S("60")),
    ("--s3-use-multiprocessing", Flag),
    ("--s3-use-server-side-encryption", Flag),
    ("--s3-use-server-side-kms-encryption", Flag),
    ("--s3-kms-key-id", S("kms-key-1")),
    ("--s3-kms-grant", S("grant-1")),
    ("--s3-region-name", S("eu-central-1")),
    ("--s3-endpoint-url", S("http://127.0.0.1:3900")),
    ("--swift-storage-policy", S("gold")),
    ("--azure-max-single-put-size", S("67108864")),
    ("--azure-max-block-size", S("4194304")),
    ("--azure-max-connections", S("4")),
    ("--azure-blob-tier", S("Archive")),
    ("--scp-command", S("scp -q")),
    ("--sftp-command", S("sftp -q")),
    ("--cf-backend", S("cloudfiles")),
    ("--b2-hide-files", Flag),
    ("--short-filenames", Flag),
    ("--sign-key", Key),
    ("--ssh-askpass", Flag),
    ("--ssh-options", S("-oIdentityFile=/dev/null")),
    ("--ssl-cacert-file", File),
    ("--ssl-cacert-path", Dir),
    ("--ssl-no-check-certificate", Flag),
    ("--tempdir", Dir),
    ("--timeout", S("30")),
    ("--time-separator", S("_")),
    ("--use-agent", Flag),
    ("--verbosity", S("4")),
    ("-v", S("4")),
    ("-V", Flag),
    ("--version", Flag),
    ("--mf-purge", Flag),
    ("--mp-segment-size", S("100")),
    ("--volsize", S("25")),
    ("--file-changed", S("precious/a.txt")),
    ("--no-files-changed", Flag),
    ("--show-changes-in-set", S("0")),
    ("--backend-retry-delay", S("2")),
];

/// duplicity 3.2.1's option names, from its own cli_data module.
fn installed_options_321() -> BTreeSet<String> {
    let py = Dup::V3.bin().parent().unwrap().join("python3");
    let script = "from duplicity import cli_data as c\n\
                  names = set(c.all_options)\n\
                  for k, v in vars(c.OptionAliases).items():\n\
                  \x20   if isinstance(v, list): names.update(v)\n\
                  print('\\n'.join(sorted(names)))\n";
    let out = Command::new(&py)
        .args(["-c", script])
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).lines().map(str::to_string).collect()
}

/// duplicity 0.8.22's option names, from the add_option calls of its
/// commandline.py (parsed, not imported).
fn installed_options_0822() -> BTreeSet<String> {
    let bin = Dup::V08.bin();
    let first = fs::read_to_string(&bin)
        .unwrap_or_else(|e| panic!("read {}: {e}", bin.display()))
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let py = first
        .strip_prefix("#!")
        .map(|s| s.split_whitespace().next().unwrap().to_string())
        .unwrap_or_else(|| "python3".into());
    let script = "import ast, importlib.util\n\
                  src = open(importlib.util.find_spec('duplicity.commandline').origin).read()\n\
                  names = set()\n\
                  for n in ast.walk(ast.parse(src)):\n\
                  \x20   if isinstance(n, ast.Call) and getattr(n.func, 'attr', '') == 'add_option':\n\
                  \x20       names.update(a.value for a in n.args if isinstance(a, ast.Constant) and str(a.value).startswith('-'))\n\
                  print('\\n'.join(sorted(names)))\n";
    let out = Command::new(&py)
        .args(["-c", script])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn embedded_option_lists_match_the_installed_duplicitys() {
    for (label, embedded, installed) in [
        ("3.2.1", OPTIONS_321, installed_options_321()),
        ("0.8.22", OPTIONS_0822, installed_options_0822()),
    ] {
        assert!(installed.len() > 100, "{label}: {installed:?}");
        let ours: BTreeSet<String> = embedded.iter().map(|(o, _)| o.to_string()).collect();
        let missing: Vec<&String> = installed.difference(&ours).collect();
        let extra: Vec<&String> = ours.difference(&installed).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "duplicity {label}: options missing from the embedded list: {missing:?}; \
             not in duplicity: {extra:?}"
        );
    }
}

/// `dupr collection-status <option> [value] file://<empty dir>` for every
/// option of both duplicitys: never a usage error, never a crash.
#[test]
fn every_duplicity_option_parses() {
    let env = Env::new();
    let home = Home::new(&env);
    let key = test_key().short_id.clone();
    fs::create_dir_all(env.target()).unwrap();
    let file = env.path().join("a-file");
    write(&file, b"- **/nothing-here\n");
    let dir = env.path().join("a-dir");
    fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, (opt, v)) in OPTIONS_321.iter().chain(OPTIONS_0822).enumerate() {
        if !seen.insert(*opt) {
            continue;
        }
        let log = env.path().join(format!("log-{i}.txt"));
        let values: Vec<OsString> = match v {
            Flag => vec![],
            S(s) => vec![s.into()],
            Time => vec!["1D".into()],
            File => vec![file.clone().into()],
            Dir => vec![dir.clone().into()],
            LogFile => vec![log.clone().into()],
            Key => vec![key.clone().into()],
            Two(a, b) => vec![a.into(), b.into()],
        };
        let mut args: Vec<OsString> = Vec::new();
        if values.len() == 1 && values[0].as_bytes().starts_with(b"-") && opt.starts_with("--") {
            // duplicity 3 needs --opt=value for values starting with '-'.
            let mut s = OsString::from(format!("{opt}="));
            s.push(&values[0]);
            args.push(s);
        } else {
            args.push(opt.into());
            args.extend(values);
        }
        let mut c = dupr_in(&env);
        c.env("GNUPGHOME", home.path())
            .arg("collection-status")
            .args(&args)
            .arg(env.target_url())
            .write_stdin("");
        let o = run(c);
        let e = text(&o.stderr);
        let code = o.status.code();
        if matches!(code, Some(2) | Some(23) | Some(101) | None)
            || e.contains("no such option")
            || e.contains("panicked")
        {
            failures.push(format!(
                "{}: exit {code:?}: {}",
                args.iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
                e.trim()
            ));
        }
        // Parsing an option never writes to the target.
        assert!(
            names_in(&env.target()).is_empty(),
            "{opt} wrote to the target"
        );
    }
    assert!(
        failures.is_empty(),
        "{} option(s) rejected:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

#[test]
fn unknown_option_is_a_usage_error() {
    let env = Env::new();
    fs::create_dir_all(env.target()).unwrap();
    let o = run({
        let mut c = dupr_in(&env);
        c.args(["collection-status", "--definitely-not-an-option"])
            .arg(env.target_url());
        c
    });
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let lines = error_lines(&o);
    assert_eq!(lines.len(), 1, "{}", show(&o));
    assert!(
        lines[0].contains("no such option: --definitely-not-an-option"),
        "{}",
        show(&o)
    );
    assert!(o.stdout.is_empty(), "{}", show(&o));
}

/// `--no-encr` is `--no-encryption` (both duplicitys accept unambiguous
/// abbreviations): without a passphrase the backup works and its volumes
/// are gzip, not OpenPGP. `--vol 1` is `--volsize 1`.
#[test]
fn unambiguous_abbreviations_work() {
    let env = Env::new();
    write(
        &env.src().join("big.bin"),
        &pseudo_random_bytes(2_500_000, 9),
    );
    write(&env.src().join("small.txt"), b"small\n");
    ok({
        let mut c = dupr_in(&env);
        c.args(["full", "--no-encr", "--vol", "1", "--no-print-stat"])
            .arg(env.src())
            .arg(env.target_url());
        c
    });
    let names = names_in(&env.target());
    let vols: Vec<&String> = names.iter().filter(|n| n.contains(".difftar")).collect();
    assert!(
        vols.len() >= 2,
        "--vol 1 should split 2.5 MB into volumes of 1 MiB: {names:?}"
    );
    assert!(
        vols.iter().all(|n| n.ends_with(".difftar.gz")),
        "--no-encr should mean --no-encryption: {names:?}"
    );
    let o = ok({
        let mut c = dupr_in(&env);
        c.args(["list-current-files", "--no-encr"])
            .arg(env.target_url());
        c
    });
    assert_eq!(listing(&o), listing_of_tree(&env.src()));
}

/// An ambiguous abbreviation is a usage error naming the candidates, as in
/// both duplicitys ("ambiguous option: --exclude-o could match
/// --exclude-older-than, --exclude-other-filesystems").
#[test]
fn ambiguous_abbreviation_is_reported_as_ambiguous() {
    let env = Env::new();
    fs::create_dir_all(env.target()).unwrap();
    let o = run({
        let mut c = dupr_in(&env);
        c.args(["collection-status", "--exclude-o"])
            .arg(env.target_url());
        c
    });
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let e = text(&o.stderr);
    assert!(e.contains("--exclude-o"), "{e}");
    assert!(
        e.contains("ambiguous")
            && e.contains("--exclude-older-than")
            && e.contains("--exclude-other-filesystems"),
        "an ambiguous abbreviation should be called ambiguous and list the candidates, \
         not 'no such option':\n{e}"
    );
}

/// duplicity 0.8's selection spellings select like their 3.x names:
/// `--exclude-globbing-filelist F`, `--exclude-filelist-stdin`,
/// `--include-filelist-stdin`.
#[test]
fn duplicity_08_selection_spellings_select() {
    let cases: &[(&[&str], &str, &[&str])] = &[
        (
            &["--exclude-globbing-filelist", "LIST"],
            "SRC/a\n",
            &[".", "c.txt"],
        ),
        (
            &["--include-globbing-filelist", "LIST"],
            "SRC/a\n- **\n",
            &[".", "a", "a/b.txt"],
        ),
        (&["--exclude-filelist-stdin"], "SRC/a\n", &[".", "c.txt"]),
        (
            &["--include-filelist-stdin"],
            "SRC/a\n- **\n",
            &[".", "a", "a/b.txt"],
        ),
    ];
    for (opts, list, want) in cases {
        let env = Env::new();
        small(&env);
        let list = list.replace("SRC", env.src().to_str().unwrap());
        let file = env.path().join("list");
        fs::write(&file, &list).unwrap();
        let opts: Vec<String> = opts
            .iter()
            .map(|o| o.replace("LIST", file.to_str().unwrap()))
            .collect();
        ok({
            let mut c = dupr_in(&env);
            c.args(["full", "--no-encryption", "--no-print-statistics"])
                .args(&opts)
                .arg(env.src())
                .arg(env.target_url())
                .write_stdin(list.clone());
            c
        });
        let o = ok({
            let mut c = dupr_in(&env);
            c.args(["list-current-files", "--no-encryption"])
                .arg(env.target_url());
            c
        });
        assert_eq!(listing(&o), set(want), "{opts:?}");
    }
}

// ------------------------------------- 2. warnings for ignored options

#[test]
fn ignored_options_warn_once_and_the_backup_still_works() {
    let cases: &[&[&str]] = &[
        &["--gio"],
        &["--short-filenames"],
        &["--asynchronous-upload"],
        &["--old-filenames"],
        &["--ssh-askpass"],
        &["--s3-use-multiprocessing"],
        &["--s3-multipart-max-timeout", "60"],
        &["--use-agent"],
        &["--time-separator", "_"],
        &["--copy-blocksize", "128"],
        &["--ignore-errors"],
        &["--metadata-sync-mode", "partial"],
        &["--gpg-binary", "/usr/bin/gpg"],
        &["--par2-redundancy", "10"],
    ];
    for case in cases {
        let env = Env::new();
        write(&env.src().join("a/b.txt"), b"b\n");
        write(&env.src().join("c.txt"), b"c\n");
        let o = ok({
            let mut c = dupr_in(&env);
            c.env("PASSPHRASE", "pw")
                .args(["full", "--no-print-statistics"])
                .args(*case)
                .arg(env.src())
                .arg(env.target_url());
            c
        });
        let e = text(&o.stderr);
        // The warning, besides the final summary line.
        let lines: Vec<&str> = e
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("dupr: backup done"))
            .collect();
        let opt = case[0];
        let name = opt.trim_start_matches('-');
        assert_eq!(lines.len(), 1, "{case:?}: expected one warning line:\n{e}");
        // The par2 options share one warning about "--par2-*".
        let named =
            lines[0].contains(name) || (name.starts_with("par2-") && lines[0].contains("--par2-"));
        assert!(
            lines[0].starts_with("dupr: warning: ") && named,
            "{case:?}: the warning should name {opt}:\n{e}"
        );
        assert_eq!(
            sets_in(&env.target()).len(),
            1,
            "{case:?}: {:?}",
            names_in(&env.target())
        );
        let o = ok({
            let mut c = dupr_in(&env);
            c.env("PASSPHRASE", "pw")
                .arg("list-current-files")
                .arg(env.target_url());
            c
        });
        assert_eq!(listing(&o), listing_of_tree(&env.src()), "{case:?}");
    }
}

// ---------------------------------------------- 3. help and its snapshots

fn help_text(env: &Env, args: &[&str]) -> String {
    let o = ok({
        let mut c = dupr_in(env);
        c.env("COLUMNS", "100").env("LINES", "50").args(args);
        c
    });
    assert!(o.stderr.is_empty(), "{}", show(&o));
    text(&o.stdout)
}

/// The long options a help text lists.
fn help_options(h: &str) -> BTreeSet<String> {
    h.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.split('=').next().unwrap().to_string())
        .collect()
}

#[test]
fn help_snapshots() {
    let env = Env::new();
    let main = help_text(&env, &["--help"]);
    let full = help_text(&env, &["full", "--help"]);
    let restore = help_text(&env, &["restore", "--help"]);
    let status = help_text(&env, &["--help-collection-status"]);
    insta::assert_snapshot!("dupr_help", main);
    insta::assert_snapshot!("dupr_full_help", full);
    insta::assert_snapshot!("dupr_restore_help", restore);
    insta::assert_snapshot!("dupr_help_collection_status", status);
    let mount = help_text(&env, &["mount", "--help"]);
    insta::assert_snapshot!("dupr_mount_help", mount);
    let m = help_options(&mount);
    for o in [
        "--mount-cache-mib",
        "--daemon",
        "--archive-dir",
        "--encrypt-key",
    ] {
        assert!(m.contains(o), "mount --help lacks {o}:\n{mount}");
    }
    for o in ["--volsize", "--include", "--path-to-restore"] {
        assert!(!m.contains(o), "mount --help shows {o}:\n{mount}");
    }

    let (f, r, s) = (
        help_options(&full),
        help_options(&restore),
        help_options(&status),
    );
    for o in [
        "--path-to-restore",
        "--file-to-restore",
        "--rename",
        "--time",
    ] {
        assert!(r.contains(o), "restore --help lacks {o}:\n{restore}");
    }
    for o in ["--volsize", "--exclude-filelist", "--full-if-older-than"] {
        assert!(!r.contains(o), "restore --help shows {o}:\n{restore}");
    }
    for o in [
        "--exclude-filelist",
        "--volsize",
        "--include",
        "--encrypt-key",
    ] {
        assert!(f.contains(o), "full --help lacks {o}:\n{full}");
    }
    assert!(!f.contains("--path-to-restore"), "{full}");
    assert!(
        s.contains("--file-changed") && !s.contains("--volsize"),
        "{status}"
    );
    // duplicity's --help-COMMAND and dupr's COMMAND --help are the same page.
    assert_eq!(status, help_text(&env, &["collection-status", "--help"]));
    assert_eq!(full, help_text(&env, &["--help-full"]));
    // Every usage line names dupr, and the main page lists every command.
    assert!(main.contains("Usage: dupr"), "{main}");
    for c in [
        "full",
        "incremental",
        "restore",
        "verify",
        "collection-status",
        "list-current-files",
        "cleanup",
        "remove-older-than",
        "remove-all-but-n-full",
        "remove-all-inc-of-but-n-full",
    ] {
        assert!(main.contains(c), "dupr --help does not mention {c}");
    }
}

// ------------------------------------------------ 4. man page, completions

#[test]
fn man_page_and_completions() {
    let env = Env::new();
    let gen = |what: &str| -> Output {
        run({
            let mut c = dupr_in(&env);
            c.args(["--generate", what]);
            c
        })
    };
    let man = gen("man");
    assert!(man.status.success(), "{}", show(&man));
    let page = text(&man.stdout);
    assert!(page.lines().any(|l| l.starts_with(".TH")), "{page}");
    assert!(page.contains(".SH"), "{page}");
    let plain = page.replace("\\-", "-");
    assert!(plain.contains("--exclude-filelist"), "{page}");
    assert!(plain.contains("--path-to-restore"), "{page}");
    // troff itself accepts it, when groff is installed.
    if let Ok(o) = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(&man.stdout).unwrap();
            ch.wait_with_output().unwrap()
        })
    {
        assert!(o.status.success(), "groff: {}", text(&o.stderr));
    }
    for shell in ["bash", "zsh", "fish"] {
        let o = gen(shell);
        assert!(o.status.success(), "{shell}: {}", show(&o));
        let s = text(&o.stdout);
        assert!(!s.trim().is_empty(), "{shell}: empty completion script");
        assert!(
            s.contains("--exclude-filelist"),
            "{shell} completion lacks --exclude-filelist"
        );
        assert!(s.contains("dupr"), "{shell}");
    }
    let script = env.path().join("dupr.bash");
    fs::write(&script, gen("bash").stdout).unwrap();
    let o = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(o.status.success(), "bash -n: {}", text(&o.stderr));
    // The script really registers a completion for dupr.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!("source '{}' && complete -p dupr", script.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success() && text(&o.stdout).contains("dupr"),
        "{}",
        show(&o)
    );
    let o = gen("nonsense");
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(text(&o.stderr).contains("nonsense"), "{}", show(&o));
    assert!(o.stdout.is_empty());
}

// ------------------------------------------------ 5. the seeds' commands

/// The seeds' source tree under `root` (standing in for "/").
fn seed_tree(root: &Path) {
    write(&root.join("precious/report.txt"), b"quarterly report\n");
    write(
        &root.join("precious/photos/p1.jpg"),
        &pseudo_random_bytes(120_000, 11),
    );
    write(&root.join("data/secret/key.pem"), b"-----BEGIN KEY-----\n");
    write(
        &root.join("data/secret/nested/x.bin"),
        &pseudo_random_bytes(5000, 12),
    );
    write(&root.join("data/public/readme.md"), b"public\n");
    write(&root.join("data/secretive.txt"), b"not the secret dir\n");
    write(&root.join("other/o.txt"), b"other\n");
    let d = root.join("home/vagrant/directory-to-backup");
    write(&d.join("cache/x"), b"cached\n");
    write(&d.join("keep.txt"), b"keep me\n");
    write(&d.join(".DS_Store"), b"mac\n");
    write(&d.join("sub/.DS_Store"), b"mac\n");
    write(&d.join("sub/real.txt"), b"real\n");
    write(&d.join(OsStr::from_bytes(b"Icon\r")), b"");
    fs::set_permissions(
        root.join("data/secret/key.pem"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fix_mtimes(root, 1_690_000_000);
}

/// What `--include=ROOT/precious --include=ROOT/data/secret --exclude=**`
/// selects.
fn seed1_selection() -> BTreeSet<Vec<u8>> {
    set(&[
        ".",
        "data",
        "data/secret",
        "data/secret/key.pem",
        "data/secret/nested",
        "data/secret/nested/x.bin",
        "precious",
        "precious/photos",
        "precious/photos/p1.jpg",
        "precious/report.txt",
    ])
}

/// zertrin/duplicity-backup.sh: `duplicity <cmd> <verbosity> <STATIC_OPTIONS>
/// <encryption opts> <includes> --exclude=** ROOT DEST`, with PASSPHRASE and
/// SIGN_PASSPHRASE exported, then its status, listing, restore-file, verify,
/// cleanup and retention commands.
#[test]
fn seed1_duplicity_backup_sh_public_key() {
    let env = Env::new();
    let home = Home::new(&env);
    let key = test_key().short_id.clone();
    let root = env.path().join("ROOT");
    seed_tree(&root);
    let r = root.to_str().unwrap().to_string();
    let dest = env.target_url();
    let verbosity = ["-v4"];
    let statics = [
        "--full-if-older-than",
        "14D",
        "--s3-european-buckets",
        "--s3-use-new-style",
    ];
    let enc = ["--encrypt-key", &key, "--sign-key", &key];
    let selection = [
        format!("--include={r}/precious"),
        format!("--include={r}/data/secret"),
        "--exclude=**".to_string(),
    ];
    let dupr = || {
        let mut c = dupr_in(&env);
        c.env("GNUPGHOME", home.path())
            .env("PASSPHRASE", KEY_PASS)
            .env("SIGN_PASSPHRASE", KEY_PASS);
        c
    };

    // The backup (the script's default action: no command word).
    let o = ok({
        let mut c = dupr();
        c.args(verbosity)
            .args(statics)
            .args(enc)
            .args(&selection)
            .arg(&root)
            .arg(&dest);
        c
    });
    // The S3 options (EU region, bucket style) count for s3:// targets only.
    let e = text(&o.stderr);
    assert!(!e.contains("warning"), "{e}");
    assert!(text(&o.stdout).contains("SourceFiles"), "{}", show(&o));
    let sets = sets_in(&env.target());
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(sets[0].0, "full");
    assert!(
        names_in(&env.target()).iter().all(|n| n.ends_with(".gpg")),
        "{:?}",
        names_in(&env.target())
    );

    // collection-status
    let o = ok({
        let mut c = dupr();
        c.arg("collection-status")
            .args(verbosity)
            .args(statics)
            .args(enc)
            .arg(&dest);
        c
    });
    let s = text(&o.stdout);
    assert!(
        s.contains("Number of contained backup sets: 1") && s.contains("Full"),
        "{s}"
    );

    // list-current-files: exactly the selection.
    let o = ok({
        let mut c = dupr();
        c.arg("list-current-files")
            .args(verbosity)
            .args(statics)
            .args(enc)
            .arg(&dest);
        c
    });
    assert_eq!(listing(&o), seed1_selection(), "{}", text(&o.stdout));

    // --restore-file: the 0.8 spelling --file-to-restore.
    let out = env.path().join("report.txt");
    ok({
        let mut c = dupr();
        c.arg("restore")
            .args(verbosity)
            .args(statics)
            .args(enc)
            .args(["--file-to-restore", "precious/report.txt"])
            .arg(&dest)
            .arg(&out);
        c
    });
    assert_eq!(fs::read(&out).unwrap(), b"quarterly report\n");
    assert_eq!(
        fs::metadata(&out).unwrap().mtime(),
        fs::metadata(root.join("precious/report.txt"))
            .unwrap()
            .mtime()
    );

    // verify, with the same selection: no differences, every selected entry compared.
    for extra in [&[][..], &["--compare-data"][..]] {
        let o = ok({
            let mut c = dupr();
            c.arg("verify")
                .args(verbosity)
                .args(statics)
                .args(enc)
                .args(extra)
                .args(&selection)
                .arg(&dest)
                .arg(&root);
            c
        });
        let s = text(&o.stdout);
        assert!(
            s.contains(&format!(
                "Verify complete: {} file(s) compared, 0 difference(s) found.",
                seed1_selection().len()
            )),
            "{extra:?}: {s}"
        );
    }
    // ... and a changed selected file is a difference (exit 1).
    let report = root.join("precious/report.txt");
    let mtime = fs::metadata(&report).unwrap().mtime();
    fs::write(&report, b"quarterly report, edited\n").unwrap();
    set_mtime(&report, mtime + 5);
    let o = run({
        let mut c = dupr();
        c.args(["verify", "--compare-data"])
            .args(enc)
            .args(&selection)
            .arg(&dest)
            .arg(&root);
        c
    });
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stdout).contains("precious/report.txt"),
        "{}",
        show(&o)
    );
    fs::write(&report, b"quarterly report\n").unwrap();
    set_mtime(&report, mtime);

    // cleanup --force and remove-older-than 60D --force: nothing to delete.
    let before = names_in(&env.target());
    for (args, says) in [
        (vec!["cleanup", "--force"], "No extraneous files found"),
        (
            vec!["remove-older-than", "60D", "--force"],
            "No old backup sets found",
        ),
    ] {
        let o = ok({
            let mut c = dupr();
            c.args(&args[..1])
                .args(verbosity)
                .args(&args[1..])
                .args(statics)
                .args(enc)
                .arg(&dest);
            c
        });
        let said = format!("{}{}", text(&o.stdout), text(&o.stderr));
        assert!(said.contains(says), "{args:?}: {said}");
        assert_eq!(
            names_in(&env.target()),
            before,
            "{args:?} deleted something"
        );
    }

    // Stock duplicity 3.2.1 restores the archive, with the same key and passphrase.
    let restored = env.restore_dir("dup3");
    let archive = dup_archive(&env, "seed1");
    run_duplicity(
        Dup::V3,
        [
            OsStr::new("restore"),
            OsStr::new("--archive-dir"),
            archive.as_os_str(),
            OsStr::new("--encrypt-key"),
            OsStr::new(&key),
            OsStr::new("--sign-key"),
            OsStr::new(&key),
            OsStr::new(&dest),
            restored.as_os_str(),
        ],
        &[
            ("GNUPGHOME", home.as_str()),
            ("PASSPHRASE", KEY_PASS),
            ("SIGN_PASSPHRASE", KEY_PASS),
        ],
    );
    assert_selected_copy(&root, &restored, &seed1_selection());
}

/// A nightly shell script, run twice:
/// `duplicity remove-older-than 60D --force URL`, then
/// `duplicity --exclude '/**.DS_Store' --exclude '/**Icon?'
///  --exclude '/home/vagrant/directory-to-backup/cache/*'
///  /home/vagrant/directory-to-backup URL`, then `duplicity cleanup --force URL`.
#[test]
fn seed2_nightly_script() {
    let env = Env::new();
    let root = env.path().join("ROOT");
    seed_tree(&root);
    let d = root.join("home/vagrant/directory-to-backup");
    let dest = env.target_url();
    let script = |night: usize| {
        let dupr = || {
            let mut c = dupr_in(&env);
            c.env("PASSPHRASE", "nightly-secret");
            c
        };
        // On the first night the target does not exist yet: duplicity 3.2.1
        // says "No old backup sets found, nothing deleted." and exits 0.
        let o = run({
            let mut c = dupr();
            c.args(["remove-older-than", "60D", "--force"]).arg(&dest);
            c
        });
        no_panic(&o);
        assert_eq!(o.status.code(), Some(0), "night {night}: {}", show(&o));
        assert!(
            text(&o.stdout).contains("No old backup sets found"),
            "night {night}: {}",
            show(&o)
        );
        let o = ok({
            let mut c = dupr();
            c.args([
                "--exclude",
                "/**.DS_Store",
                "--exclude",
                "/**Icon?",
                "--exclude",
            ])
            .arg(format!(
                "{}/home/vagrant/directory-to-backup/cache/*",
                root.display()
            ))
            .arg(&d)
            .arg(&dest);
            c
        });
        assert!(text(&o.stdout).contains("SourceFiles"), "{}", show(&o));
        ok({
            let mut c = dupr();
            c.args(["cleanup", "--force"]).arg(&dest);
            c
        });
    };
    script(1);
    // The next night: keep.txt changed.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let keep = d.join("keep.txt");
    fs::write(&keep, b"keep me, night two\n").unwrap();
    set_mtime(&keep, 1_700_000_000);
    script(2);

    let kinds: Vec<String> = sets_in(&env.target()).into_iter().map(|s| s.0).collect();
    assert_eq!(kinds, ["full", "inc"], "{:?}", names_in(&env.target()));
    let o = ok({
        let mut c = dupr_in(&env);
        c.env("PASSPHRASE", "nightly-secret")
            .arg("list-current-files")
            .arg(&dest);
        c
    });
    let got = listing(&o);
    assert_eq!(
        got,
        set(&[".", "cache", "keep.txt", "sub", "sub/real.txt"]),
        "{}",
        show_set(&got)
    );
    // Restored, keep.txt has the second night's contents.
    let out = env.restore_dir("nightly");
    ok({
        let mut c = dupr_in(&env);
        c.env("PASSPHRASE", "nightly-secret").arg(&dest).arg(&out);
        c
    });
    assert_eq!(
        fs::read(out.join("keep.txt")).unwrap(),
        b"keep me, night two\n"
    );
    assert!(out.join("cache").is_dir());
    assert!(names_in(&out.join("cache")).is_empty());
}

// ------------------------------------ 6. bad command lines upload nothing

#[test]
fn bad_command_lines_upload_nothing() {
    let env = Env::new();
    let root = env.path().join("ROOT");
    write(&root.join("a/f.txt"), b"f\n");
    write(&root.join("b.txt"), b"b\n");
    let r = root.to_str().unwrap().to_string();
    fs::create_dir_all(env.target()).unwrap();
    let cases: Vec<(Vec<String>, Option<i32>, String)> = vec![
        (
            vec!["--definitely-not-an-option".into()],
            Some(2),
            "--definitely-not-an-option".into(),
        ),
        (
            vec!["--exclude".into(), format!("{r}//x")],
            Some(15),
            format!("{r}//x"),
        ),
        (
            vec!["--include".into(), format!("{r}/a")],
            Some(16),
            format!("{r}/a"),
        ),
        (
            vec!["--exclude".into(), "/elsewhere/x".into()],
            Some(14),
            "/elsewhere/x".into(),
        ),
        (
            vec!["--exclude-regexp".into(), "(".into()],
            Some(15),
            "\"(\"".into(),
        ),
        (
            vec!["--exclude-filelist".into(), "/nonexistent".into()],
            None,
            "/nonexistent".into(),
        ),
        (
            vec!["--exclude-older-than".into(), "garbage".into()],
            None,
            "garbage".into(),
        ),
    ];
    for (args, code, culprit) in &cases {
        let o = run({
            let mut c = dupr_in(&env);
            c.env("PASSPHRASE", "pw")
                .arg("full")
                .args(args)
                .arg(&root)
                .arg(env.target_url());
            c
        });
        no_panic(&o);
        match code {
            Some(c) => assert_eq!(o.status.code(), Some(*c), "{args:?}: {}", show(&o)),
            None => assert!(
                !o.status.success() && o.status.code() != Some(101),
                "{args:?}: {}",
                show(&o)
            ),
        }
        let lines = error_lines(&o);
        assert_eq!(lines.len(), 1, "{args:?}: one line expected:\n{}", show(&o));
        assert!(
            lines[0].starts_with("dupr: ") && lines[0].contains(culprit.as_str()),
            "{args:?}: the error should name {culprit:?}:\n{}",
            show(&o)
        );
        assert!(
            names_in(&env.target()).is_empty(),
            "{args:?} wrote to the target: {:?}",
            names_in(&env.target())
        );
        let cached = everything_below(&env.cache());
        assert!(cached.is_empty(), "{args:?} left in the cache: {cached:?}");
    }
}

/// The filelist error says why once, not twice.
#[test]
fn missing_filelist_error_names_the_cause_once() {
    let env = Env::new();
    let o = run({
        let mut c = dupr_in(&env);
        c.env("PASSPHRASE", "pw")
            .args(["full", "--exclude-filelist", "/nonexistent"])
            .arg(env.src())
            .arg(env.target_url());
        c
    });
    assert!(!o.status.success(), "{}", show(&o));
    let e = text(&o.stderr);
    assert_eq!(
        e.matches("No such file or directory").count(),
        1,
        "the cause is repeated: {e}"
    );
}

/// An unterminated character class is literal (duplicity 3.2.1 backs up
/// with it too): the backup succeeds, warns naming the pattern, and
/// excludes exactly the file literally named `x[ab`.
#[test]
fn unterminated_class_is_literal_and_warned_about() {
    let env = Env::new();
    let root = env.path().join("ROOT");
    write(&root.join("x[ab"), b"literal\n");
    write(&root.join("xa"), b"xa\n");
    write(&root.join("xb"), b"xb\n");
    let pattern = format!("{}/x[ab", root.display());
    let o = ok({
        let mut c = dupr_in(&env);
        c.env("PASSPHRASE", "pw")
            .args(["full", "--no-print-statistics", "--exclude"])
            .arg(&pattern)
            .arg(&root)
            .arg(env.target_url());
        c
    });
    let e = text(&o.stderr);
    assert!(
        e.lines()
            .any(|l| l.to_lowercase().contains("warn") && l.contains(&pattern)),
        "no warning naming {pattern:?}:\n{e}"
    );
    let o = ok({
        let mut c = dupr_in(&env);
        c.env("PASSPHRASE", "pw")
            .arg("list-current-files")
            .arg(env.target_url());
        c
    });
    assert_eq!(listing(&o), set(&[".", "xa", "xb"]), "{}", show(&o));
}

// ------------------------------- 7. restore selection (duplicity 3.2)

fn restore_tree(root: &Path) {
    write(&root.join("data/a.txt"), b"a\n");
    write(&root.join("data/sub/b.txt"), b"b\n");
    write(&root.join("data/sub/c.log"), b"c\n");
    write(&root.join("other/d.txt"), b"d\n");
    write(&root.join("top.txt"), b"top\n");
    fix_mtimes(root, 1_680_000_000);
}

#[test]
fn restore_selection_like_duplicity_3() {
    let env = Env::new();
    restore_tree(&env.src());
    ok({
        let mut c = dupr_in(&env);
        c.args(["full", "--no-encryption", "--no-print-statistics"])
            .arg(env.src())
            .arg(env.target_url());
        c
    });
    let archive = dup_archive(&env, "restore-sel");
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--include", "data/**", "--exclude", "**"],
            &[
                ".",
                "data",
                "data/a.txt",
                "data/sub",
                "data/sub/b.txt",
                "data/sub/c.log",
            ],
        ),
        (
            &["--exclude", "other"],
            &[
                ".",
                "data",
                "data/a.txt",
                "data/sub",
                "data/sub/b.txt",
                "data/sub/c.log",
                "top.txt",
            ],
        ),
        (
            &["--include", "data/sub", "--exclude", "**"],
            &[".", "data", "data/sub", "data/sub/b.txt", "data/sub/c.log"],
        ),
        (
            &[
                "--exclude",
                "**.log",
                "--include",
                "data",
                "--exclude",
                "**",
            ],
            &[".", "data", "data/a.txt", "data/sub", "data/sub/b.txt"],
        ),
    ];
    for (i, (opts, want)) in cases.iter().enumerate() {
        let ours = env.restore_dir(&format!("dupr-{i}"));
        ok({
            let mut c = dupr_in(&env);
            c.args(["restore", "--no-encryption"])
                .args(*opts)
                .arg(env.target_url())
                .arg(&ours);
            c
        });
        assert_selected_copy(&env.src(), &ours, &set(want));
        let theirs = env.restore_dir(&format!("dup-{i}"));
        let mut a: Vec<OsString> = osv(&["restore", "--no-encryption", "--archive-dir"]);
        a.push(archive.clone().into());
        a.extend(osv(opts));
        a.push(env.target_url().into());
        a.push(theirs.clone().into());
        run_duplicity(Dup::V3, &a, &[]);
        let d = tree_diffs(&ours, &theirs);
        assert!(
            d.is_empty(),
            "{opts:?}: dupr and duplicity 3.2.1 restore differently:\n  {}",
            d.join("\n  ")
        );
    }

    // --path-to-restore with --include: a usage error, nothing restored.
    let dest = env.restore_dir("both");
    let o = run({
        let mut c = dupr_in(&env);
        c.args([
            "restore",
            "--no-encryption",
            "--path-to-restore",
            "data",
            "--include",
            "data/**",
        ])
        .arg(env.target_url())
        .arg(&dest);
        c
    });
    assert!(
        matches!(o.status.code(), Some(2) | Some(23)),
        "{}",
        show(&o)
    );
    let e = error_lines(&o);
    assert!(
        e.len() == 1 && e[0].contains("--path-to-restore"),
        "{}",
        show(&o)
    );
    assert!(!dest.exists() || names_in(&dest).is_empty());

    // An absolute pattern: exit 14 in both.
    let dest = env.restore_dir("abs");
    let o = run({
        let mut c = dupr_in(&env);
        c.args([
            "restore",
            "--no-encryption",
            "--include",
            "/data/**",
            "--exclude",
            "**",
        ])
        .arg(env.target_url())
        .arg(&dest);
        c
    });
    assert_eq!(o.status.code(), Some(14), "{}", show(&o));
    assert!(text(&o.stderr).contains("/data/**"), "{}", show(&o));
    assert!(!dest.exists() || names_in(&dest).is_empty());
    let theirs = env.restore_dir("abs-dup");
    let mut a = osv(&["restore", "--no-encryption", "--archive-dir"]);
    a.push(archive.clone().into());
    a.extend(osv(&["--include", "/data/**", "--exclude", "**"]));
    a.push(env.target_url().into());
    a.push(theirs.into());
    let o = try_duplicity(Dup::V3, &a, &[]);
    assert_eq!(o.status.code(), Some(14), "duplicity 3.2.1: {}", show(&o));
}

// ------------------------------------------- 8. one option, one effect

/// A two-file tree for the focused tests: a/b.txt and c.txt.
fn small(env: &Env) {
    write(&env.src().join("a/b.txt"), b"bee\n");
    write(&env.src().join("c.txt"), b"sea\n");
    fix_mtimes(&env.src(), 1_650_000_000);
}

fn backup(env: &Env, extra: &[&str]) -> Output {
    ok({
        let mut c = dupr_in(env);
        c.args(["--no-encryption"])
            .args(extra)
            .arg(env.src())
            .arg(env.target_url());
        c
    })
}

/// Edit `rel` in the source so the next backup sees a change.
fn touch_change(env: &Env, rel: &str, content: &[u8], mtime: i64) {
    let p = env.src().join(rel);
    fs::write(&p, content).unwrap();
    set_mtime(&p, mtime);
}

#[test]
fn restore_rename() {
    let env = Env::new();
    small(&env);
    backup(&env, &["full", "--no-print-statistics"]);
    let ours = env.restore_dir("rename");
    ok({
        let mut c = dupr_in(&env);
        c.args([
            "restore",
            "--no-encryption",
            "--rename",
            "a/b.txt",
            "renamed.txt",
        ])
        .arg(env.target_url())
        .arg(&ours);
        c
    });
    assert_eq!(fs::read(ours.join("renamed.txt")).unwrap(), b"bee\n");
    assert!(!ours.join("a/b.txt").exists());
    assert_eq!(fs::read(ours.join("c.txt")).unwrap(), b"sea\n");
    let archive = dup_archive(&env, "rename");
    let theirs = env.restore_dir("rename-dup");
    let mut a = osv(&["restore", "--no-encryption", "--archive-dir"]);
    a.push(archive.into());
    a.extend(osv(&["--rename", "a/b.txt", "renamed.txt"]));
    a.push(env.target_url().into());
    a.push(theirs.clone().into());
    run_duplicity(Dup::V3, &a, &[]);
    let d = tree_diffs(&ours, &theirs);
    assert!(
        d.is_empty(),
        "--rename differs from duplicity 3.2.1:\n  {}",
        d.join("\n  ")
    );
}

/// `--numeric-owner`: owners come back by number, not by name. As root, a
/// file owned by uid/gid 1 is backed up (tar names it e.g. "daemon"), then
/// restored in a mount namespace whose /etc/passwd and /etc/group give
/// that name uid 5555 / gid 5556: by name it gets 5555:5556, with
/// --numeric-owner 1:1, for dupr and for duplicity 3.2.1 alike.
#[test]
fn restore_numeric_owner() {
    let env = Env::new();
    small(&env);
    if !is_root() {
        // Only root restores owners; as another user both ways give us the files.
        backup(&env, &["full", "--no-print-statistics"]);
        let dest = env.restore_dir("numeric");
        ok({
            let mut c = dupr_in(&env);
            c.args(["restore", "--no-encryption", "--numeric-owner"])
                .arg(env.target_url())
                .arg(&dest);
            c
        });
        let uid = unsafe { libc::geteuid() };
        assert_eq!(fs::metadata(dest.join("c.txt")).unwrap().uid(), uid);
        eprintln!("restore_numeric_owner: not root, only the plain restore was checked");
        return;
    }
    let owned = env.src().join("c.txt");
    let c = std::ffi::CString::new(owned.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::lchown(c.as_ptr(), 1, 1) }, 0);
    let name_of = |db: &str| -> String {
        let o = Command::new("getent").args([db, "1"]).output().unwrap();
        assert!(o.status.success(), "getent {db} 1");
        text(&o.stdout).split(':').next().unwrap().to_string()
    };
    let (user, group) = (name_of("passwd"), name_of("group"));
    backup(&env, &["full", "--no-print-statistics"]);
    let pw = env.path().join("fake-passwd");
    let gr = env.path().join("fake-group");
    fs::write(
        &pw,
        format!("root:x:0:0:root:/root:/bin/sh\n{user}:x:5555:5556::/:/bin/sh\n"),
    )
    .unwrap();
    fs::write(&gr, format!("root:x:0:\n{group}:x:5556:\n")).unwrap();
    // Run `prog args` with the fake databases mounted over the real ones.
    let in_ns = |prog: &Path, args: &[OsString], extra_env: &[(&str, &OsStr)]| -> Output {
        let mut c = Command::new("unshare");
        c.args(["-m", "sh", "-c"])
            .arg(
                "mount --bind \"$1\" /etc/passwd && mount --bind \"$2\" /etc/group \
                 && shift 2 && exec \"$@\"",
            )
            .arg("sh")
            .arg(&pw)
            .arg(&gr)
            .arg(prog)
            .args(args)
            .env("LC_ALL", "C.UTF-8")
            .env("XDG_CACHE_HOME", env.cache())
            .env("PYTHONWARNINGS", "ignore")
            .env_remove("PASSPHRASE")
            .env_remove("DUPR_ARCHIVE_DIR");
        for (k, v) in extra_env {
            c.env(k, v);
        }
        let o = c.output().expect("run unshare");
        assert!(
            o.status.success(),
            "{prog:?} {args:?} in a mount namespace:\n{}",
            show(&o)
        );
        o
    };
    // The 0.8 spelling --do-not-restore-ownership: we own everything.
    let plain = env.restore_dir("no-owner");
    ok({
        let mut c = dupr_in(&env);
        c.args(["restore", "--no-encryption", "--do-not-restore-ownership"])
            .arg(env.target_url())
            .arg(&plain);
        c
    });
    let m = fs::symlink_metadata(plain.join("c.txt")).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0), "--do-not-restore-ownership");
    let archive = dup_archive(&env, "numeric");
    for numeric in [false, true] {
        let want = if numeric { (1, 1) } else { (5555, 5556) };
        let tag = if numeric { "numeric" } else { "names" };
        let ours = env.restore_dir(&format!("dupr-{tag}"));
        let mut a = osv(&["restore", "--no-encryption"]);
        if numeric {
            a.push("--numeric-owner".into());
        }
        a.push(env.target_url().into());
        a.push(ours.clone().into());
        in_ns(&dupr_bin(), &a, &[]);
        let m = fs::symlink_metadata(ours.join("c.txt")).unwrap();
        assert_eq!((m.uid(), m.gid()), want, "dupr, numeric-owner={numeric}");
        let m = fs::symlink_metadata(ours.join("a/b.txt")).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0));

        let theirs = env.restore_dir(&format!("dup-{tag}"));
        let mut a = osv(&["restore", "--no-encryption", "--archive-dir"]);
        a.push(archive.clone().into());
        if numeric {
            a.push("--numeric-owner".into());
        }
        a.push(env.target_url().into());
        a.push(theirs.clone().into());
        in_ns(&Dup::V3.bin(), &a, &[]);
        let m = fs::symlink_metadata(theirs.join("c.txt")).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            want,
            "duplicity 3.2.1, numeric-owner={numeric} (the oracle)"
        );
    }
}

const T0: i64 = 1_760_000_000;

fn at(t: i64) -> String {
    t.to_string()
}

#[test]
fn skip_if_no_change_writes_no_set() {
    let env = Env::new();
    small(&env);
    backup(
        &env,
        &["full", "--no-print-statistics", "--current-time", &at(T0)],
    );
    let before = names_in(&env.target());
    let o = backup(
        &env,
        &[
            "incremental",
            "--skip-if-no-change",
            "--current-time",
            &at(T0 + 100),
        ],
    );
    assert_eq!(names_in(&env.target()), before, "{}", show(&o));
    assert_eq!(sets_in(&env.target()).len(), 1);
    // Without the option the same unchanged tree gives an (empty) incremental.
    backup(
        &env,
        &[
            "incremental",
            "--no-print-statistics",
            "--current-time",
            &at(T0 + 200),
        ],
    );
    assert_eq!(sets_in(&env.target()).len(), 2);
    // With a change, --skip-if-no-change writes the incremental.
    touch_change(&env, "c.txt", b"sea, changed\n", 1_650_500_000);
    backup(
        &env,
        &[
            "incremental",
            "--skip-if-no-change",
            "--no-print-statistics",
            "--current-time",
            &at(T0 + 300),
        ],
    );
    let kinds: Vec<String> = sets_in(&env.target()).into_iter().map(|s| s.0).collect();
    assert_eq!(kinds, ["full", "inc", "inc"]);
}

/// A skipped incremental uploads nothing, and its statistics say so
/// (duplicity 3.2.1: "TotalDestinationSizeChange 0 (0 bytes)").
#[test]
fn skip_if_no_change_statistics_report_nothing_written() {
    let env = Env::new();
    small(&env);
    backup(
        &env,
        &["full", "--no-print-statistics", "--current-time", &at(T0)],
    );
    let o = backup(
        &env,
        &[
            "incremental",
            "--skip-if-no-change",
            "--current-time",
            &at(T0 + 100),
        ],
    );
    let s = text(&o.stdout);
    let line = s
        .lines()
        .find(|l| l.starts_with("TotalDestinationSizeChange"))
        .unwrap_or_else(|| panic!("no statistics:\n{}", show(&o)));
    assert_eq!(
        line, "TotalDestinationSizeChange 0 (0 bytes)",
        "nothing was uploaded:\n{s}"
    );
}

/// `--full-if-n-inc 2`: duplicity 3.2.1 forces a full once the chain holds
/// two incrementals, so backups go full, inc, inc, full, inc. Both run the
/// same sequence on the same tree edits.
#[test]
fn full_if_n_inc() {
    let env = Env::new();
    small(&env);
    let dup_target = env.path().join("dup-target");
    let archive = dup_archive(&env, "n-inc");
    for i in 0..5 {
        touch_change(
            &env,
            "c.txt",
            format!("sea {i}\n").as_bytes(),
            1_650_100_000 + i,
        );
        let t = at(T0 + 100 * i);
        backup(
            &env,
            &[
                "--full-if-n-inc",
                "2",
                "--no-print-statistics",
                "--current-time",
                &t,
            ],
        );
        let mut a = osv(&[
            "--no-encryption",
            "--full-if-n-inc",
            "2",
            "--current-time",
            &t,
        ]);
        a.extend(osv(&["--archive-dir"]));
        a.push(archive.clone().into());
        a.push(env.src().into());
        a.push(file_url(&dup_target).into());
        run_duplicity(Dup::V3, &a, &[]);
    }
    let ours: Vec<String> = sets_in(&env.target()).into_iter().map(|s| s.0).collect();
    let theirs: Vec<String> = sets_in(&dup_target).into_iter().map(|s| s.0).collect();
    assert_eq!(
        theirs,
        ["full", "inc", "inc", "full", "inc"],
        "duplicity 3.2.1"
    );
    assert_eq!(ours, theirs, "dupr vs duplicity 3.2.1");
}

/// The plain (unencrypted, uncompressed) manifest of the only set.
fn manifest_text(target: &Path) -> String {
    let names = names_in(target);
    let m = names
        .iter()
        .find(|n| n.ends_with(".manifest"))
        .unwrap_or_else(|| panic!("no plain manifest in {names:?}"));
    text(&fs::read(target.join(m)).unwrap())
}

#[test]
fn no_files_changed_writes_an_empty_filelist() {
    let env = Env::new();
    small(&env);
    backup(
        &env,
        &["full", "--no-files-changed", "--no-print-statistics"],
    );
    let m = manifest_text(&env.target());
    assert!(m.lines().any(|l| l == "Filelist 0"), "{m}");
    assert!(!m.contains("b.txt"), "{m}");
    // The default records the new files.
    let env2 = Env::new();
    small(&env2);
    backup(&env2, &["full", "--no-print-statistics"]);
    let m = manifest_text(&env2.target());
    let n: usize = m
        .lines()
        .find_map(|l| l.strip_prefix("Filelist "))
        .unwrap_or_else(|| panic!("{m}"))
        .parse()
        .unwrap();
    assert!(
        n >= 2 && m.contains("a/b.txt") && m.contains("c.txt"),
        "{m}"
    );
}

/// The number after `"key":` in a JSON text.
fn json_number(json: &str, key: &str) -> Option<f64> {
    let at = json.find(&format!("\"{key}\""))?;
    let rest = json[at + key.len() + 2..].trim_start().strip_prefix(':')?;
    let num: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
        .collect();
    num.parse().ok()
}

#[test]
fn jsonstat_prints_json_statistics() {
    let env = Env::new();
    small(&env);
    let o = backup(&env, &["full", "--jsonstat"]);
    let s = text(&o.stdout);
    let json = s
        .lines()
        .find(|l| l.trim_start().starts_with('{') && l.contains("\"SourceFiles\""))
        .map(str::to_string)
        .or_else(|| {
            // A pretty-printed object spans lines.
            let start = s.find('{')?;
            let end = s.rfind('}')?;
            Some(s[start..=end].to_string())
        })
        .unwrap_or_else(|| panic!("no JSON statistics:\n{s}"));
    assert!(json.trim_end().ends_with('}'), "{json}");
    // ., a, a/b.txt, c.txt
    assert_eq!(json_number(&json, "SourceFiles"), Some(4.0), "{json}");
    assert_eq!(
        json_number(&json, "NewFiles").map(|n| n > 0.0),
        Some(true),
        "{json}"
    );
    assert_eq!(json_number(&json, "Errors"), Some(0.0), "{json}");
}

/// duplicity 3.2.1 also stores the JSON statistics as a file of the set
/// (`duplicity-full.<time>.jsonstat[.gpg]`), which `--file-prefix-jsonstat`
/// names.
#[test]
fn jsonstat_file_is_stored_with_the_set() {
    let env = Env::new();
    small(&env);
    backup(&env, &["full", "--jsonstat", "--no-print-statistics"]);
    let names = names_in(&env.target());
    assert!(
        names.iter().any(|n| n.contains(".jsonstat")),
        "no jsonstat file in the target: {names:?}"
    );
}

#[test]
fn log_file_gets_the_warnings() {
    let env = Env::new();
    small(&env);
    let log = env.path().join("dupr.log");
    let pattern = format!("{}/x[ab", env.src().display());
    let o = backup(
        &env,
        &[
            "full",
            "--no-print-statistics",
            "--log-file",
            log.to_str().unwrap(),
            "--gio",
            "--exclude",
            &pattern,
        ],
    );
    let stderr = text(&o.stderr);
    assert!(
        stderr.contains("--gio") && stderr.contains(&pattern),
        "{stderr}"
    );
    let logged = fs::read_to_string(&log).expect("the log file exists");
    assert!(
        logged.contains(&pattern),
        "log file lacks the pattern warning:\n{logged}"
    );
    assert!(
        logged.contains("--gio"),
        "log file lacks the --gio warning that went to stderr:\n--- log ---\n{logged}\n--- stderr ---\n{stderr}"
    );
}

#[test]
fn current_time_names_the_set() {
    let env = Env::new();
    small(&env);
    backup(
        &env,
        &[
            "full",
            "--no-print-statistics",
            "--current-time",
            "1700000000",
        ],
    );
    let sets = sets_in(&env.target());
    assert_eq!(sets, [("full".to_string(), "20231114T221320Z".to_string())]);
    let names = names_in(&env.target());
    assert!(
        names.iter().all(|n| n.contains("20231114T221320Z")),
        "{names:?}"
    );
    let o = ok({
        let mut c = dupr_in(&env);
        c.args(["collection-status", "--no-encryption"])
            .arg(env.target_url());
        c
    });
    assert!(
        text(&o.stdout).contains("Tue Nov 14 22:13:20 2023"),
        "{}",
        show(&o)
    );
}

/// A full, then an incremental that changes a/b.txt and adds d.txt.
fn history(env: &Env) {
    small(env);
    backup(
        env,
        &["full", "--no-print-statistics", "--current-time", &at(T0)],
    );
    touch_change(env, "a/b.txt", b"bee, changed\n", 1_650_600_000);
    write(&env.src().join("d.txt"), b"new\n");
    backup(
        env,
        &[
            "incremental",
            "--no-print-statistics",
            "--current-time",
            &at(T0 + 3600),
        ],
    );
}

#[test]
fn collection_status_file_changed() {
    let env = Env::new();
    history(&env);
    let o = ok({
        let mut c = dupr_in(&env);
        c.args([
            "collection-status",
            "--no-encryption",
            "--file-changed",
            "a/b.txt",
        ])
        .arg(env.target_url());
        c
    });
    let s = text(&o.stdout);
    assert!(s.contains("a/b.txt"), "{s}");
    assert!(s.contains("Total number of backup: 2"), "{s}");
    let rows: Vec<&str> = s
        .lines()
        .filter(|l| l.trim_start().starts_with("Full") || l.trim_start().starts_with("Incremental"))
        .collect();
    assert_eq!(rows.len(), 2, "{s}");
    assert!(
        rows[0].contains("Full") && rows[0].trim_end().ends_with("New"),
        "{s}"
    );
    assert!(
        rows[1].contains("Incremental") && rows[1].trim_end().ends_with("Changed"),
        "{s}"
    );
    // c.txt never changed after the full: one row.
    let o = ok({
        let mut c = dupr_in(&env);
        c.args([
            "collection-status",
            "--no-encryption",
            "--file-changed",
            "c.txt",
        ])
        .arg(env.target_url());
        c
    });
    assert!(
        text(&o.stdout).contains("Total number of backup: 1"),
        "{}",
        show(&o)
    );
}

#[test]
fn collection_status_show_changes_in_set() {
    let env = Env::new();
    history(&env);
    let changes = |n: &str| -> String {
        text(
            &ok({
                let mut c = dupr_in(&env);
                c.args([
                    "collection-status",
                    "--no-encryption",
                    "--show-changes-in-set",
                    n,
                ])
                .arg(env.target_url());
                c
            })
            .stdout,
        )
    };
    let row = |s: &str, path: &str| -> Option<String> {
        s.lines()
            .find(|l| l.split_whitespace().next() == Some(path))
            .map(|l| l.split_whitespace().last().unwrap().to_string())
    };
    let newest = changes("0");
    assert!(newest.contains("Total number of changes: 2"), "{newest}");
    assert_eq!(
        row(&newest, "a/b.txt").as_deref(),
        Some("changed"),
        "{newest}"
    );
    assert_eq!(row(&newest, "d.txt").as_deref(), Some("new"), "{newest}");
    assert_eq!(row(&newest, "c.txt"), None, "{newest}");
    let full = changes("1");
    assert_eq!(row(&full, "a/b.txt").as_deref(), Some("new"), "{full}");
    assert_eq!(row(&full, "c.txt").as_deref(), Some("new"), "{full}");
    assert_eq!(row(&full, "d.txt"), None, "{full}");
}

/// `collection-status --show-changes-in-set N --jsonstat` prints the
/// changes as JSON in duplicity 3.2.1 (`{"inc-<time>": {"json_stat": ...,
/// "files_changed": {"a/b.txt": "changed", ...}}}`).
#[test]
fn show_changes_in_set_with_jsonstat_prints_json() {
    let env = Env::new();
    history(&env);
    let o = ok({
        let mut c = dupr_in(&env);
        c.args([
            "collection-status",
            "--no-encryption",
            "--show-changes-in-set",
            "0",
            "--jsonstat",
        ])
        .arg(env.target_url());
        c
    });
    let s = text(&o.stdout);
    assert!(
        s.contains("\"files_changed\"") && s.contains("\"a/b.txt\": \"changed\""),
        "expected duplicity's JSON form:\n{s}"
    );
}

/// verify without --compare-data counts what duplicity 3.2.1 counts: every
/// entry of the archive and the source (here the source has entries the
/// selective backup left out).
#[test]
fn verify_counts_files_like_duplicity() {
    let env = Env::new();
    small(&env);
    write(&env.src().join("extra/e.txt"), b"e\n");
    fix_mtimes(&env.src(), 1_650_000_000);
    let src = env.src();
    let exclude = format!("{}/extra", src.display());
    backup(
        &env,
        &["full", "--no-print-statistics", "--exclude", &exclude],
    );
    let o = run({
        let mut c = dupr_in(&env);
        c.args(["verify", "--no-encryption"])
            .arg(env.target_url())
            .arg(&src);
        c
    });
    let ours = text(&o.stdout)
        .lines()
        .find(|l| l.starts_with("Verify complete"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{}", show(&o)));
    let archive = dup_archive(&env, "verify");
    let mut a = osv(&["verify", "--no-encryption", "--archive-dir"]);
    a.push(archive.into());
    a.push(env.target_url().into());
    a.push(src.into());
    let d = try_duplicity(Dup::V3, &a, &[]);
    let theirs = text(&d.stdout)
        .lines()
        .chain(text(&d.stderr).lines())
        .find(|l| l.starts_with("Verify complete"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("duplicity: {}", show(&d)));
    assert_eq!(ours, theirs, "dupr vs duplicity 3.2.1");
    assert_eq!(o.status.code(), d.status.code());
}
