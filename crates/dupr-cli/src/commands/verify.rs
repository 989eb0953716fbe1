//! `dupr verify URL` (the archive's own integrity, `--read-data-subset`)
//! and `dupr verify URL SOURCE` (the archive against a tree).

use std::ffi::OsString;

use dupr_core::ops;
use dupr_core::select::Spec;

use super::{archive_path, canonical_source, json, open, parse_time, selection, want_args, Access};
use crate::bad_value;
use crate::cli::Cli;

/// `dupr verify URL`: read back volumes and check them against their
/// manifests.
pub fn check(cli: &Cli, args: &[OsString]) -> anyhow::Result<i32> {
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
    let (target, _lock) = open(cli, &args[0], Access::Decrypt)?;
    let r = ops::check(&target, percent)?;
    let exit = if r.problems.is_empty() { 0 } else { 1 };
    if cli.general.json {
        json::line(&json::message(
            "verify",
            &r,
            serde_json::json!({"exit_code": exit}),
        ));
        return Ok(exit);
    }
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
        crate::render::human(r.bytes_read),
        r.problems.len()
    );
    println!("{line}");
    Ok(exit)
}

/// `dupr verify URL SOURCE`.
pub fn against_source(cli: &Cli, args: &[OsString], spec: &Spec) -> anyhow::Result<i32> {
    want_args(args, 2, "URL SOURCE")?;
    let source = canonical_source(&args[1]);
    let selection = selection(spec, &source)?;
    let t = parse_time(cli)?;
    let (target, _lock) = open(cli, &args[0], Access::Decrypt)?;
    let path = match &cli.restore.path_to_restore {
        Some(p) => Some(archive_path("--path-to-restore", p)?),
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
    let exit = if r.differences.is_empty() && r.errors == 0 {
        0
    } else {
        1
    };
    if cli.general.json {
        json::line(&json::message(
            "verify",
            &r,
            serde_json::json!({"exit_code": exit}),
        ));
        return Ok(exit);
    }
    for d in &r.differences {
        println!("{d}");
    }
    println!(
        "Verify complete: {} file(s) compared, {} difference(s) found.",
        r.compared,
        r.differences.len()
    );
    Ok(exit)
}
