//! dupr: the command-line edge. Parses duplicity's command line, runs the
//! engine's operations, and turns errors into one line and duplicity's exit
//! codes.

// Every unsafe block in shipped code says why it is sound (tests are
// exempt: their unsafe is libc calls on fixtures).
#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context};
use clap::FromArgMatches;
use dupr_core::backup::Counters;
use dupr_core::crypt::SymmetricKeyAlgorithm;
use dupr_core::crypt::{Codec, Crypto, PublicKeyOptions, Tuning};
use dupr_core::index::Index;
use dupr_core::ops::{self, BackupKind, BackupRequest, Settings, Target};
use dupr_core::select::{Selection, Spec};
use dupr_core::time;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use zeroize::Zeroizing;

use dupr_cli::cli::{self, Cli, Command};
use dupr_cli::{
    bad_value, keyexport, log, mount, profile, progress, schedule, secret, take_env, usage, Exit,
};

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
    let crypto = crypto.map(|c| Crypto::tuned(c, &tuning));
    let codec = if cli.crypt.no_encryption {
        if cli.crypt.no_compression {
            Codec::Plain
        } else {
            Codec::Gzip(tuning.level)
        }
    } else {
        match &crypto {
            Some(c) => Codec::Gpg(c.clone()),
            None if writing => {
                return Err(anyhow!(Exit(
                31,
                "no passphrase: set PASSPHRASE, or pass --no-encryption for an unencrypted backup"
                    .into()
            )))
            }
            None => Codec::GZIP,
        }
    };
    // Reading with neither passphrase nor key: files encrypted to a key of
    // the GnuPG home still open, and others say what they need.
    let crypto = match crypto {
        None if !writing && !cli.crypt.no_encryption => Some(Crypto::keyring_only()),
        c => c,
    };
    let tempdir = cli
        .general
        .tempdir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let backend = cli::backend_options(cli, &tempdir)?;
    Ok(Settings {
        url,
        archive_dir: cli.general.archive_dir.clone(),
        name: cli.general.name.clone(),
        codec,
        incremental_level: (!tuning.level_given).then_some(dupr_core::crypt::INCREMENTAL_LEVEL),
        crypto,
        prefixes: cli::prefixes(cli),
        tempdir,
        check_remote: !cli.general.no_check_remote,
        backend,
    })
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

/// The command line minus the profile options and the positionals: the
/// options a profile run passes on to each step.
fn passthrough(argv: &[OsString]) -> Vec<OsString> {
    const OWN_VALUED: &[&str] = &[
        "-p",
        "--profile",
        "-c",
        "--config",
        "--max-age",
        "--every",
        "--export-passphrase-file",
    ];
    const OWN_FLAGS: &[&str] = &["--preview", "--cron"];
    let valued: std::collections::BTreeSet<String> = cli::option_arity()
        .into_iter()
        .filter_map(|(k, takes)| takes.then_some(k))
        .collect();
    let mut out = Vec::new();
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        let name = s.split('=').next().unwrap_or(&s).to_string();
        if OWN_VALUED.contains(&name.as_str()) {
            if !s.contains('=') {
                it.next();
            }
            continue;
        }
        if OWN_FLAGS.contains(&name.as_str()) || !s.starts_with('-') {
            continue;
        }
        out.push(a.clone());
        if valued.contains(&name) && !s.contains('=') {
            if let Some(v) = it.next() {
                out.push(v.clone());
            }
        }
    }
    out
}

/// `dupr -p NAME ACTION ...`, `dupr profile ...`.
fn run_profile(cli: &Cli, argv: &[OsString]) -> anyhow::Result<Option<i32>> {
    let words: Vec<String> = cli
        .args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let first = words.first().map(String::as_str);
    let second = words.get(1).map(String::as_str);
    if first == Some("profile")
        && matches!(
            second,
            Some("list" | "show" | "create" | "edit-check" | "import")
        )
    {
        return Ok(Some(profile::manage(&cli.args[1..])?));
    }
    if first == Some("schedule") && matches!(second, Some("install" | "list" | "remove")) {
        return Ok(Some(schedule::manage(
            &cli.args[1..],
            cli.profile.profile.as_deref(),
            cli.profile.config.as_deref(),
            cli.profile.every.as_deref(),
            cli.profile.cron,
            cli.profile.preview || cli.general.dry_run,
        )?));
    }
    if first == Some("import-keys") && cli.args.len() == 2 {
        return Ok(Some(keyexport::import_keys(
            Path::new(&cli.args[1]),
            cli.profile.export_passphrase_file.as_deref(),
        )?));
    }
    let (name, path) = match (&cli.profile.profile, &cli.profile.config) {
        (_, Some(c)) => (
            cli.profile.profile.clone().unwrap_or_else(|| {
                c.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "profile".into())
            }),
            c.clone(),
        ),
        (Some(n), None) => (n.clone(), profile::path_of(n)),
        (None, None) => return Ok(None),
    };
    let l = profile::load(&name, &path)?;
    let action = first.unwrap_or("backup");
    if action == "status" {
        return Ok(Some(profile::status(&l, cli.profile.max_age.as_deref())?));
    }
    if action == "export-keys" {
        let out = cli
            .args
            .get(1)
            .ok_or_else(|| usage("usage: dupr -p NAME export-keys FILE"))?;
        return Ok(Some(keyexport::export_keys(
            &l,
            Path::new(out),
            cli.profile.export_passphrase_file.as_deref(),
        )?));
    }
    let rest = cli.args.get(1..).unwrap_or_default();
    Ok(Some(profile::run(
        &l,
        action,
        rest,
        &passthrough(argv),
        cli.profile.preview,
    )?))
}

fn run(cli: Cli, spec: Spec) -> anyhow::Result<i32> {
    let (cmd, args) = cli::resolve(&cli.args).map_err(usage)?;
    match cmd {
        Command::Backup | Command::Full | Command::Incremental => {
            want_args(&args, 2, "SOURCE URL")?;
            // SIGINT/SIGTERM stop the run at its next safe point.
            dupr_core::interrupt::install();
            // As duplicity: a bad URL is a command-line error, found before
            // the source is looked at.
            if let Some(u) = args[1].to_str() {
                dupr_core::backend::url::Url::parse(u)?;
            }
            let source = canonical_source(&args[0]);
            if !source.exists() {
                return Err(dupr_core::Error::SourceMissing(source).into());
            }
            // A bad selection fails before anything is read or written.
            let selection = selection(&spec, &source)?;
            let full_if_older_than = match &cli.backup.full_if_older_than {
                Some(s) => Some(time_value("--full-if-older-than", s)?),
                None => None,
            };
            let target = Target::open(settings(
                &cli,
                &args[1],
                if cli.general.dry_run {
                    Access::Read
                } else {
                    Access::Write
                },
            )?)?;
            let _lock = dupr_core::lock::RunLock::acquire(target.cache.dir())?;
            let kind = match cmd {
                Command::Full => BackupKind::Full,
                Command::Incremental => BackupKind::Incremental,
                _ => BackupKind::Auto,
            };
            let counters = cli.general.progress.then(|| Arc::new(Counters::default()));
            let bar = counters
                .as_ref()
                .map(|c| progress::start(c.clone(), source.clone()));
            let started = Instant::now();
            let outcome = ops::backup(
                &target,
                BackupRequest {
                    source,
                    source_arg: args[0].as_bytes().to_vec(),
                    volsize_mib: cli.backup.volsize,
                    max_blocksize: cli.backup.max_blocksize,
                    dry_run: cli.general.dry_run,
                    counters,
                    selection,
                    kind,
                    full_if_older_than,
                    full_if_n_inc: cli.backup.full_if_n_inc,
                    allow_source_mismatch: cli.general.allow_source_mismatch,
                    skip_if_no_change: cli.backup.skip_if_no_change,
                    files_changed: !cli.backup.no_files_changed,
                    copy_links: cli.backup.copy_links,
                    jsonstat: cli.general.jsonstat,
                },
            );
            if let Some(b) = bar {
                b.finish();
            }
            let outcome = outcome?;
            let stats = outcome.stats;
            let elapsed = started.elapsed().as_secs_f64();
            if !cli.general.no_print_statistics {
                print!("{}", stats.render(elapsed));
            }
            if cli.general.jsonstat {
                println!("{}", stats.to_json(elapsed));
            }
            let kind = if outcome.incremental {
                "incremental"
            } else {
                "full"
            };
            let mut line = if stats.skipped {
                "backup done: nothing changed, no incremental written".to_string()
            } else {
                format!(
                    "backup done: {kind} set {}, {} files ({}), {} volume(s), {} stored",
                    time::to_filename(stats.start_time),
                    stats.source_files,
                    dupr_core::backup::human(stats.source_file_size),
                    stats.volumes,
                    dupr_core::backup::human(stats.stored_total)
                )
            };
            if stats.errors > 0 {
                line.push_str(&format!(
                    "; {} file(s) skipped (unreadable, see the warnings)",
                    stats.errors
                ));
            }
            summary(&cli, &line);
            Ok(match cli.general.detailed_exit_codes {
                true if stats.errors > 0 => EXIT_SKIPPED_FILES,
                true if stats.skipped => EXIT_NOTHING_TO_DO,
                _ => 0,
            })
        }
        Command::Restore => {
            want_args(&args, 2, "URL DEST")?;
            dupr_core::interrupt::install();
            let t = parse_time(&cli)?;
            let path = match &cli.restore.path_to_restore {
                Some(p) => Some(
                    Index::parse(p.as_bytes())
                        .ok_or_else(|| bad_value(format!("--path-to-restore: bad path {p:?}")))?,
                ),
                None => None,
            };
            let selection = if spec.is_empty() {
                None
            } else if path.is_some() {
                return Err(usage(
                    "--path-to-restore cannot be combined with restore file selection options; \
                     use --path-to-restore for one archive path, or --include/--exclude for patterns",
                ));
            } else {
                let s = Selection::for_archive(&spec).map_err(dupr_core::Error::from)?;
                Some(Arc::new(s))
            };
            let rename = cli
                .restore
                .rename
                .chunks(2)
                .map(|pair| {
                    let parse = |p: &OsString| {
                        Index::parse(p.as_bytes())
                            .ok_or_else(|| bad_value(format!("--rename: bad path {p:?}")))
                    };
                    Ok((parse(&pair[0])?, parse(&pair[1])?))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let target = Target::open(settings(&cli, &args[0], Access::Decrypt)?)?;
            let _lock = dupr_core::lock::RunLock::acquire(target.cache.dir())?;
            let stats = ops::restore(
                &target,
                ops::RestoreRequest {
                    time: t,
                    dest: PathBuf::from(&args[1]),
                    path,
                    force: cli.general.force,
                    restore_owner: !cli.restore.no_restore_ownership,
                    numeric_owner: cli.restore.numeric_owner,
                    rename,
                    selection,
                },
            )?;
            let mut line = format!(
                "restore done: {} file(s), {} written to {}",
                stats.files,
                dupr_core::backup::human(stats.bytes),
                PathBuf::from(&args[1]).display()
            );
            if stats.errors > 0 {
                line.push_str(&format!("; {} error(s), see above", stats.errors));
            }
            summary(&cli, &line);
            Ok(if stats.errors > 0 { 1 } else { 0 })
        }
        Command::Mount => {
            want_args(&args, 2, "URL MOUNTPOINT")?;
            let mountpoint = PathBuf::from(&args[1]);
            if !mountpoint.is_dir() {
                return Err(bad_value(format!(
                    "mount point {} is not a directory",
                    mountpoint.display()
                )));
            }
            // Keys and passphrase are asked for once, here.
            let settings = settings(&cli, &args[0], Access::Decrypt)?;
            let daemon = if cli.mount.daemon {
                Some(mount::daemonize()?)
            } else {
                None
            };
            dupr_core::interrupt::install();
            let target = Target::open(settings)?;
            let scratch = target.settings.tempdir.clone();
            let lock_dir = target.cache.dir().to_path_buf();
            let browser = {
                // Only while the cache is brought up to date: a mount may
                // stay for days and must not hold back scheduled backups.
                let _lock = dupr_core::lock::RunLock::acquire(&lock_dir)?;
                dupr_core::browse::Browser::open(
                    target,
                    &scratch,
                    cli.mount.mount_cache_mib.saturating_mul(1 << 20),
                )?
            };
            mount::serve(browser, &mountpoint, || {
                if let Some(d) = daemon {
                    d.ready();
                }
            })?;
            Ok(0)
        }
        Command::ListCurrentFiles => {
            want_args(&args, 1, "URL")?;
            let t = parse_time(&cli)?;
            let target = Target::open(settings(&cli, &args[0], Access::Read)?)?;
            let _lock = dupr_core::lock::RunLock::acquire(target.cache.dir())?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            ops::list_current_files(&target, t, &mut out)?;
            out.flush().context("writing to stdout")?;
            Ok(0)
        }
        Command::CollectionStatus => {
            want_args(&args, 1, "URL")?;
            let target = Target::open(settings(&cli, &args[0], Access::Read)?)?;
            let _lock = dupr_core::lock::RunLock::acquire(target.cache.dir())?;
            if let Some(n) = cli.restore.show_changes_in_set {
                print!("{}", ops::changes_in_set(&target, n, cli.general.jsonstat)?);
            } else if let Some(p) = &cli.restore.file_changed {
                let ix = Index::parse(p.as_bytes())
                    .ok_or_else(|| bad_value(format!("--file-changed: bad path {p:?}")))?;
                print!("{}", ops::file_changed(&target, &ix)?);
            } else {
                print!("{}", ops::collection_status(&target)?);
            }
            Ok(0)
        }
        Command::Verify if args.len() == 1 => {
            let percent = match &cli.restore.read_data_subset {
                None => 100.0,
                Some(s) => s
                    .trim_end_matches('%')
                    .parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=100.0).contains(p) && *p > 0.0)
                    .ok_or_else(|| {
                        bad_value(format!(
                            "--read-data-subset {s:?}: expected a percentage above 0, like 10%"
                        ))
                    })?,
            };
            let target = Target::open(settings(&cli, &args[0], Access::Decrypt)?)?;
            let _lock = dupr_core::lock::RunLock::acquire(target.cache.dir())?;
            let r = ops::check(&target, percent)?;
            for p in &r.problems {
                println!("Problem: {} ({}): {}", p.file, p.set, p.what);
                if !p.per_path {
                    if p.later_sets > 0 {
                        println!(
                            "  affects this set and the {} later set(s) of its chain",
                            p.later_sets
                        );
                    }
                } else if p.affected.is_empty() {
                    println!("  affected paths: unknown (its signature file is unreadable)");
                } else {
                    let later = if p.later_sets > 0 {
                        format!(" and the {} later set(s) of its chain", p.later_sets)
                    } else {
                        String::new()
                    };
                    println!("  affects {} path(s) in this set{later}:", p.affected.len());
                    for ix in &p.affected {
                        println!("    {}", String::from_utf8_lossy(ix.display_bytes()));
                    }
                }
            }
            let line = format!(
                "Check complete: {} set(s), {} of {} volume(s) read ({}), {} problem(s) found.",
                r.sets,
                r.volumes_read,
                r.volumes_total,
                dupr_core::backup::human(r.bytes_read),
                r.problems.len()
            );
            println!("{line}");
            Ok(if r.problems.is_empty() { 0 } else { 1 })
        }
        Command::Verify => {
            want_args(&args, 2, "URL SOURCE")?;
            let source = canonical_source(&args[1]);
            let selection = selection(&spec, &source)?;
            let t = parse_time(&cli)?;
            let target = Target::open(settings(&cli, &args[0], Access::Decrypt)?)?;
            let _lock = dupr_core::lock::RunLock::acquire(target.cache.dir())?;
            let path = match &cli.restore.path_to_restore {
                Some(p) => Some(
                    Index::parse(p.as_bytes())
                        .ok_or_else(|| bad_value(format!("--path-to-restore: bad path {p:?}")))?,
                ),
                None => None,
            };
            let r = ops::verify(
                &target,
                t,
                source,
                path,
                cli.restore.compare_data,
                selection,
            )?;
            for d in &r.differences {
                println!("{d}");
            }
            println!(
                "Verify complete: {} file(s) compared, {} difference(s) found.",
                r.compared,
                r.differences.len()
            );
            Ok(if r.differences.is_empty() && r.errors == 0 {
                0
            } else {
                1
            })
        }
        Command::Cleanup
        | Command::RemoveOlderThan
        | Command::RemoveAllButNFull
        | Command::RemoveAllIncOfButNFull => {
            let (policy, url) = match cmd {
                Command::Cleanup => {
                    want_args(&args, 1, "URL")?;
                    (ops::Removal::Cleanup, &args[0])
                }
                _ => {
                    want_args(&args, 2, "TIME|COUNT URL")?;
                    let a = args[0].to_string_lossy();
                    let count = || -> anyhow::Result<usize> {
                        let name = match cmd {
                            Command::RemoveAllButNFull => "remove-all-but-n-full",
                            _ => "remove-all-inc-of-but-n-full",
                        };
                        a.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                            bad_value(format!("{name}: expected a count above 0, got {a:?}"))
                        })
                    };
                    let p = match cmd {
                        Command::RemoveOlderThan => {
                            ops::Removal::OlderThan(time_value("remove-older-than", &a)?)
                        }
                        Command::RemoveAllButNFull => ops::Removal::AllButNFull(count()?),
                        _ => ops::Removal::AllIncOfButNFull(count()?),
                    };
                    (p, &args[1])
                }
            };
            let target = Target::open(settings(&cli, url, Access::Read)?)?;
            let _lock = dupr_core::lock::RunLock::acquire(target.cache.dir())?;
            let _target_lock = if cli.general.force && !cli.general.dry_run {
                dupr_core::interrupt::install();
                Some(target.lock_target()?)
            } else {
                None
            };
            let r = ops::remove(&target, policy, cli.general.force)?;
            print!("{}", r.text);
            let verb = if cli.general.force && !cli.general.dry_run {
                "deleted"
            } else {
                "would delete (use --force)"
            };
            if r.files.is_empty() {
                summary(&cli, "nothing to delete");
                return Ok(if cli.general.detailed_exit_codes {
                    EXIT_NOTHING_TO_DO
                } else {
                    0
                });
            }
            summary(&cli, &format!("{verb} {} file(s)", r.files.len()));
            Ok(0)
        }
    }
}

/// The class name duplicity puts after the code in its log record, where
/// dupr's error is one of the same kind.
fn error_class(e: &anyhow::Error, code: i32) -> Option<&'static str> {
    match code {
        23 if e.downcast_ref::<Exit>().is_some()
            || matches!(
                e.downcast_ref::<dupr_core::Error>(),
                Some(dupr_core::Error::BadUrl { .. })
            ) =>
        {
            Some("CommandLineError")
        }
        23 => Some("UserError"),
        50..=56 => Some("BackendException"),
        _ => None,
    }
}

fn exit_code(e: &anyhow::Error) -> i32 {
    if let Some(x) = e.downcast_ref::<Exit>() {
        return x.0;
    }
    if let Some(x) = e.downcast_ref::<dupr_core::Error>() {
        return x.exit_code();
    }
    1
}

/// Keep memory frugal with many threads handing 1 MiB blocks around: glibc
/// would otherwise raise its mmap threshold after the first freed block and
/// keep freed blocks in per-thread arenas (peak RSS 103 MiB on a full
/// backup instead of ~40).
fn frugal_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called first thing,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    frugal_malloc();
    dupr_core::crypt::protect_process();
    let argv: Vec<OsString> = std::env::args_os().collect();
    if let Some(code) = cli::help(&argv) {
        return ExitCode::from(code);
    }
    let matches = match cli::command().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) => return ExitCode::from(cli::parse_error(e)),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return ExitCode::from(cli::parse_error(e)),
    };
    if let Some(what) = &cli.general.generate {
        return ExitCode::from(cli::generate(what));
    }
    if let Err(e) = log::init(&cli.general) {
        eprintln!("dupr: {e}");
        return ExitCode::from(exit_code(&e) as u8);
    }
    let spec =
        match cli::selection_spec(&matches, cli.general.current_time.unwrap_or_else(time::now)) {
            Ok(s) => s,
            Err(msg) => {
                // duplicity 3's code for a bad option value.
                eprintln!("dupr: {msg}");
                log::fatal(23, Some("CommandLineError"), &msg);
                return ExitCode::from(23);
            }
        };
    if let Err(msg) = cli::check_values(&cli) {
        eprintln!("dupr: {msg}");
        log::fatal(23, Some("CommandLineError"), &msg);
        return ExitCode::from(23);
    }
    if let Some(t) = cli.general.current_time {
        time::set_now(t);
    }
    cli::warn_ignored(&cli);
    let result = match run_profile(&cli, &argv) {
        Ok(Some(code)) => Ok(code),
        Ok(None) => run(cli, spec),
        Err(e) => Err(e),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            // One line naming the culprit; causes joined on it.
            let mut msg = e.to_string();
            for c in e.chain().skip(1) {
                msg.push_str(": ");
                msg.push_str(&c.to_string());
            }
            eprintln!("dupr: {msg}");
            let code = exit_code(&e);
            log::fatal(code, error_class(&e, code), &msg);
            ExitCode::from(code as u8)
        }
    }
}
