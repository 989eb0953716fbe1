//! `dupr -p NAME ACTION ...` and the wrapper commands (`profile ...`,
//! `schedule ...`, `import-keys FILE`), handled before the duplicity
//! command line.

use std::ffi::OsString;
use std::path::Path;

use crate::cli::{self, Cli};
use crate::{keyexport, profile, schedule, usage};

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
pub fn run(cli: &Cli, argv: &[OsString]) -> anyhow::Result<Option<i32>> {
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
        return Ok(Some(profile::status(
            &l,
            cli.profile.max_age.as_deref(),
            cli.general.json,
        )?));
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
