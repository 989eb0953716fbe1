//! The commands: one function each, and what they share (the target's
//! settings from the command line, opening it under the run lock, argument
//! checks). `run` dispatches a parsed command line; `profile::run`
//! handles `-p NAME ...` and the profile/schedule/key wrappers first.

mod backup;
pub mod json;
mod mount;
pub mod profile;
mod remove;
mod restore;
mod status;
mod verify;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::anyhow;
use dupr_core::crypt::SymmetricKeyAlgorithm;
use dupr_core::crypt::{Crypto, PublicKeyOptions, Tuning};
use dupr_core::index::Index;
use dupr_core::lock::RunLock;
use dupr_core::ops::{Settings, Target};
use dupr_core::select::{Selection, Spec};
use dupr_core::time;
use zeroize::Zeroizing;

use crate::cli::{self, Cli, Command};
use crate::{bad_value, secret, take_env, usage, Exit};

/// Run a parsed command line (not a profile: see [`profile::run`]).
pub fn run(cli: Cli, spec: Spec) -> anyhow::Result<i32> {
    let (cmd, args) = cli::resolve(&cli.args).map_err(usage)?;
    let cli = &cli;
    match cmd {
        Command::Backup | Command::Full | Command::Incremental => {
            backup::run(cli, cmd, &args, &spec)
        }
        Command::Restore => restore::run(cli, &args, &spec),
        Command::Mount => mount::run(cli, &args),
        Command::ListCurrentFiles => status::list(cli, &args),
        Command::CollectionStatus => status::collection(cli, &args),
        Command::Verify if args.len() == 1 => verify::check(cli, &args),
        Command::Verify => verify::against_source(cli, &args, &spec),
        Command::Cleanup
        | Command::RemoveOlderThan
        | Command::RemoveAllButNFull
        | Command::RemoveAllIncOfButNFull => remove::run(cli, cmd, &args),
    }
}

/// The target named by `url`, opened with the command line's settings,
/// and the run lock on its cache (held while the returned lock lives).
fn open(cli: &Cli, url: &OsString, access: Access) -> anyhow::Result<(Target, RunLock)> {
    let target = open_target(settings(cli, url, access)?)?;
    let lock = RunLock::acquire(target.cache.dir())?;
    Ok((target, lock))
}

/// The target of `settings`: its storage (dupr-backend serves every
/// scheme) and its local cache.
fn open_target(settings: dupr_core::ops::Settings) -> dupr_core::Result<Target> {
    let backend = dupr_backend::open(&settings.url, &settings.backend)?;
    Target::open(settings, backend)
}

/// A path inside the archive given to `option`.
fn archive_path(option: &str, p: &OsStr) -> anyhow::Result<Index> {
    Index::parse(p.as_bytes()).ok_or_else(|| bad_value(format!("{option}: bad path {p:?}")))
}

/// A time string given to `option`.
fn time_value(option: &str, s: &str) -> anyhow::Result<time::Timestamp> {
    time::parse_time_string(s, time::now()).map_err(|e| bad_value(format!("{option}: {e}")))
}

/// The passphrase: `PASSPHRASE`, else asked (twice when it protects new
/// data) if `ask`. Asked as duplicity asks (Python's getpass): on the
/// controlling terminal when there is one; without one, if `stdin_ok`, on
/// standard input, with echo off if that is a terminal, prompts on stderr.
/// Standard input closed before a passphrase (e.g. /dev/null): none.
/// Commands that work from the cache (`stdin_ok` false: duplicity asks
/// nothing for them) never wait on standard input.
fn passphrase(
    ask: bool,
    confirm: bool,
    stdin_ok: bool,
) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
    if let Some(p) = take_env("PASSPHRASE") {
        return Ok(Some(p));
    }
    if !ask {
        return Ok(None);
    }
    secret::ask(
        "GnuPG passphrase for decryption: ",
        confirm.then_some("Retype passphrase for encryption to confirm: "),
        stdin_ok,
    )
}

/// The public-key options of the command line.
fn key_options(cli: &Cli) -> PublicKeyOptions {
    let mut encrypt = cli.crypt.encrypt_key.clone();
    let mut sign = cli.crypt.sign_key.clone();
    if let Some(k) = &cli.crypt.encrypt_sign_key {
        encrypt.push(k.clone());
        sign.get_or_insert_with(|| k.clone());
    }
    PublicKeyOptions {
        encrypt,
        hidden: cli.crypt.hidden_encrypt_key.clone(),
        sign,
        encrypt_files: cli.crypt.encrypt_key_file.clone(),
        sign_file: cli.crypt.sign_key_file.clone(),
        compress: !cli.crypt.no_compression,
        ..Default::default()
    }
}

/// Target settings; `writing` says whether new encrypted data will be made.
/// `--gpg-options` as duplicity passes them to gpg: the options that shape
/// written messages are honoured, the rest are warned about and ignored.
fn gpg_tuning(cli: &Cli) -> anyhow::Result<Tuning> {
    let mut t = Tuning {
        compress: !cli.crypt.no_compression,
        ..Tuning::default()
    };
    if let Some(l) = cli.crypt.compress_level {
        t.level = l;
        t.level_given = true;
    }
    let words: Vec<String> = cli
        .crypt
        .gpg_options
        .iter()
        .flat_map(|o| o.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let (name, inline) = match w.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (w.clone(), None),
        };
        let value = |i: &mut usize| -> anyhow::Result<String> {
            if let Some(v) = &inline {
                return Ok(v.clone());
            }
            *i += 1;
            words
                .get(*i)
                .cloned()
                .ok_or_else(|| bad_value(format!("--gpg-options: {name} needs a value")))
        };
        match name.as_str() {
            "--compress-algo" | "--compression-algo" => {
                let v = value(&mut i)?.to_ascii_lowercase();
                match v.as_str() {
                    "none" | "uncompressed" | "0" => t.compress = false,
                    "zip" | "zlib" | "bzip2" | "1" | "2" | "3" => t.compress = true,
                    _ => {
                        return Err(bad_value(format!(
                            "--gpg-options: unknown compression {v:?}"
                        )))
                    }
                }
            }
            "-z" | "--compress-level" | "--bzip2-compress-level" => {
                let v = value(&mut i)?;
                t.level_given = true;
                t.level = v.parse::<u32>().ok().filter(|l| *l <= 9).ok_or_else(|| {
                    bad_value(format!("--gpg-options: bad compression level {v:?}"))
                })?;
                if t.level == 0 {
                    t.compress = false;
                }
            }
            z if z.starts_with("-z") && z[2..].parse::<u32>().is_ok() => {
                t.level_given = true;
                t.level = z[2..].parse::<u32>().unwrap_or(6).min(9);
                if t.level == 0 {
                    t.compress = false;
                }
            }
            "--cipher-algo" | "--personal-cipher-preferences" => {
                let v = value(&mut i)?.to_ascii_uppercase();
                t.cipher = match v.as_str() {
                    "AES" | "AES128" => SymmetricKeyAlgorithm::AES128,
                    "AES192" => SymmetricKeyAlgorithm::AES192,
                    "AES256" => SymmetricKeyAlgorithm::AES256,
                    other => {
                        tracing::warn!(
                            "--gpg-options: cipher {other} is not written by dupr; using AES256"
                        );
                        SymmetricKeyAlgorithm::AES256
                    }
                };
            }
            other => tracing::warn!("--gpg-options: {other} has no effect in dupr; ignored"),
        }
        i += 1;
    }
    Ok(t)
}

/// What a command does with the archive, which decides the secrets asked for.
#[derive(Clone, Copy, PartialEq)]
enum Access {
    /// Writes new files (backups): encrypts, signs.
    Write,
    /// Reads file contents (restore, verify): decrypts.
    Decrypt,
    /// Works from names and the local cache (listing, status, retention):
    /// decrypts only to rebuild a lost cache, so a public-key archive needs
    /// no secret key, as with duplicity.
    Read,
}

fn settings(cli: &Cli, url: &OsString, access: Access) -> anyhow::Result<Settings> {
    let writing = access == Access::Write;
    let url = url
        .to_str()
        .ok_or_else(|| usage("the target URL is not valid UTF-8"))?
        .to_string();
    // A bad URL fails before any passphrase is asked for.
    dupr_core::backend::url::Url::parse(&url)?;
    let mut keys = key_options(cli);
    let sign_passphrase = take_env("SIGN_PASSPHRASE");
    let public_key =
        !keys.encrypt.is_empty() || !keys.hidden.is_empty() || !keys.encrypt_files.is_empty();
    let tuning = gpg_tuning(cli)?;
    let crypto = if cli.crypt.no_encryption {
        // Unencrypted archives: a passphrase may still open encrypted files.
        passphrase(false, false, false)?
            .map(|p| Crypto::symmetric(p, !cli.crypt.no_compression))
            .transpose()?
    } else if keys.any() {
        // Public keys need a passphrase only to decrypt (restore, verify);
        // symmetric encryption always does.
        let ask = access == Access::Decrypt || !public_key;
        keys.passphrase = passphrase(ask, writing && !public_key, access != Access::Read)?;
        keys.sign_passphrase = sign_passphrase;
        keys.writing = writing;
        Some(Crypto::public(keys)?)
    } else {
        let p = passphrase(true, writing, access != Access::Read)?;
        // duplicity refuses too (exit 31): an empty passphrase protects nothing.
        if writing && p.as_ref().is_some_and(|p| p.is_empty()) {
            return Err(anyhow!(Exit(
                31,
                "PASSPHRASE is empty: refusing to encrypt with an empty passphrase (set one, or pass --no-encryption)".into()
            )));
        }
        p.map(|p| Crypto::symmetric(p, !cli.crypt.no_compression))
            .transpose()?
    };
    let tempdir = cli
        .general
        .tempdir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let backend = cli::backend_options(cli, &tempdir)?;
    let mut settings = Settings::new(url, crypto);
    settings.archive_dir = cli.general.archive_dir.clone();
    settings.name = cli.general.name.clone();
    settings.prefixes = cli::prefixes(cli);
    settings.tempdir = tempdir;
    settings.check_remote = !cli.general.no_check_remote;
    settings.backend = backend;
    Ok(settings.with_encoding(!cli.crypt.no_encryption, &tuning, writing)?)
}

fn want_args(args: &[OsString], n: usize, what: &str) -> anyhow::Result<()> {
    if args.len() != n {
        return Err(usage(format!(
            "expected {what}, got {} argument(s)",
            args.len()
        )));
    }
    Ok(())
}

fn parse_time(cli: &Cli) -> anyhow::Result<time::Timestamp> {
    match &cli.general.time {
        Some(s) => time_value("--time", s),
        None => Ok(time::now()),
    }
}

/// `--detailed-exit-codes`: the run succeeded but skipped unreadable files.
const EXIT_SKIPPED_FILES: i32 = 100;
/// `--detailed-exit-codes`: there was nothing to do.
const EXIT_NOTHING_TO_DO: i32 = 101;

/// The final one-line summary on stderr (not at verbosity 0, "error").
fn summary(cli: &Cli, line: &str) {
    if !matches!(cli.general.verbosity.as_deref(), Some("0" | "e" | "error")) {
        eprintln!("dupr: {line}");
    }
}

/// The compiled selection for a source tree; None when no option selects.
fn selection(spec: &Spec, source: &Path) -> anyhow::Result<Option<Arc<Selection>>> {
    if spec.is_empty() {
        return Ok(None);
    }
    let s = Selection::new(source, spec).map_err(dupr_core::Error::from)?;
    Ok(Some(Arc::new(s)))
}

/// The source as duplicity matches it: `./src/` is `src`.
fn canonical_source(arg: &OsString) -> PathBuf {
    PathBuf::from(OsString::from_vec(dupr_core::select::canonical(
        arg.as_bytes(),
    )))
}
