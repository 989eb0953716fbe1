//! `dupr -p NAME ACTION ...` and the wrapper commands (`profile ...`,
//! `schedule ...`, `import-keys FILE`), handled before the duplicity
//! command line.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{anyhow, bail, Result};

use crate::cli::{self, Cli};
use crate::profile::{
    config_dir, expand, load, path_of, plan, private, records, write_private, Profile, Retention,
};
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
        return Ok(Some(manage(&cli.args[1..])?));
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

/// `dupr profile list|show NAME|create NAME|edit-check NAME|import FILE|DIR`.
fn manage(words: &[OsString]) -> Result<i32> {
    let w: Vec<String> = words
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    match w.first().map(String::as_str) {
        Some("list") => {
            let mut names: Vec<String> = std::fs::read_dir(config_dir())
                .map(|rd| {
                    rd.flatten()
                        .filter_map(|e| {
                            e.file_name()
                                .to_str()
                                .and_then(|n| n.strip_suffix(".toml"))
                                .map(str::to_string)
                        })
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            for n in names {
                let last = records(&n).last().map(|r| {
                    format!("last {} {} {}", r.action, r.result, dupr_core::time::pretty_local(r.end))
                });
                println!("{n}\t{}", last.unwrap_or_else(|| "never run".into()));
            }
            Ok(0)
        }
        Some("show") => {
            let name = w.get(1).ok_or_else(|| anyhow!("usage: dupr profile show NAME"))?;
            let l = load(name, &path_of(name))?;
            let mut shown = l.profile.clone();
            if shown.passphrase.is_some() {
                shown.passphrase = Some("(hidden)".into());
            }
            if shown.sign_passphrase.is_some() {
                shown.sign_passphrase = Some("(hidden)".into());
            }
            println!("# {}", l.path.display());
            print!("{}", toml::to_string(&shown)?);
            Ok(0)
        }
        Some("create") => {
            let name = w.get(1).ok_or_else(|| anyhow!("usage: dupr profile create NAME [SOURCE TARGET]"))?;
            let path = path_of(name);
            if path.exists() {
                bail!("profile {} exists already", path.display());
            }
            let p = Profile {
                source: Some(w.get(2).cloned().unwrap_or_else(|| "/home/me".into())),
                target: Some(w.get(3).cloned().unwrap_or_else(|| "file:///mnt/backup".into())),
                passphrase_file: Some(format!("~/.config/dupr/{name}.passphrase")),
                cleanup: Some(true),
                retention: Retention {
                    remove_older_than: Some("60D".into()),
                    ..Default::default()
                },
                options: [("full-if-older-than".to_string(), toml::Value::String("14D".into()))]
                    .into_iter()
                    .collect(),
                ..Default::default()
            };
            write_private(&path, &toml::to_string(&p)?)?;
            println!("created {}", path.display());
            Ok(0)
        }
        Some("edit-check") => {
            let name = w.get(1).ok_or_else(|| anyhow!("usage: dupr profile edit-check NAME"))?;
            let l = load(name, &path_of(name))?;
            let steps = plan(&l, "backup", &[], &[])?;
            // The assembled command lines must parse.
            for s in &steps {
                let mut argv = vec![OsString::from("dupr")];
                argv.extend(s.args.iter().cloned());
                crate::cli::command()
                    .try_get_matches_from(&argv)
                    .map_err(|e| anyhow!("profile {name}: {}", e.kind()))?;
            }
            if let Some(f) = &l.profile.passphrase_file {
                private(&expand(f), "holds the passphrase")?;
            }
            println!("profile {name} is valid ({} step(s) in a backup run)", steps.len());
            Ok(0)
        }
        Some("import") => {
            let from = w.get(1).ok_or_else(|| anyhow!("usage: dupr profile import FILE|DIR [NAME]"))?;
            let (text, notes) = crate::import::import(Path::new(from))?;
            let name = w.get(2).cloned().unwrap_or_else(|| {
                Path::new(from)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "imported".into())
            });
            let path = path_of(&name);
            if path.exists() {
                bail!("profile {} exists already", path.display());
            }
            write_private(&path, &text)?;
            println!("imported {from} as profile {name} ({})", path.display());
            for n in &notes {
                println!("not converted: {n}");
            }
            Ok(0)
        }
        _ => bail!("usage: dupr profile list|show NAME|create NAME [SOURCE TARGET]|edit-check NAME|import FILE|DIR [NAME]"),
    }
}
