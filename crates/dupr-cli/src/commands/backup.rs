//! `dupr [full|incremental] SOURCE URL`: one backup set, and its summary.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Instant;

use dupr_core::backup::Counters;
use dupr_core::ops::{self, BackupKind, BackupRequest};
use dupr_core::select::Spec;
use dupr_core::time;

use super::{
    canonical_source, json, open, selection, summary, time_value, want_args, Access,
    EXIT_NOTHING_TO_DO, EXIT_SKIPPED_FILES,
};
use crate::cli::{Cli, Command};
use crate::progress;

pub fn run(cli: &Cli, cmd: Command, args: &[OsString], spec: &Spec) -> anyhow::Result<i32> {
    want_args(args, 2, "SOURCE URL")?;
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
    let selection = selection(spec, &source)?;
    let full_if_older_than = match &cli.backup.full_if_older_than {
        Some(s) => Some(time_value("--full-if-older-than", s)?),
        None => None,
    };
    let access = if cli.general.dry_run {
        Access::Read
    } else {
        Access::Write
    };
    let (target, _lock) = open(cli, &args[1], access)?;
    let kind = match cmd {
        Command::Full => BackupKind::Full,
        Command::Incremental => BackupKind::Incremental,
        _ => BackupKind::Auto,
    };
    let json = cli.general.json;
    let counters = (cli.general.progress || json).then(|| Arc::new(Counters::default()));
    let bar = counters
        .as_ref()
        .filter(|_| !json)
        .map(|c| progress::start(c.clone(), source.clone()));
    let status_lines = counters
        .as_ref()
        .filter(|_| json)
        .map(|c| json::StatusLines::start(c.clone(), Some(source.clone())));
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
    if let Some(s) = status_lines {
        s.finish();
    }
    let outcome = outcome?;
    let stats = outcome.stats;
    let elapsed = started.elapsed().as_secs_f64();
    let exit = match cli.general.detailed_exit_codes {
        true if stats.errors > 0 => EXIT_SKIPPED_FILES,
        true if stats.skipped => EXIT_NOTHING_TO_DO,
        _ => 0,
    };
    let kind = if outcome.incremental {
        "incremental"
    } else {
        "full"
    };
    if json {
        json::line(&json::message(
            "summary",
            &stats,
            serde_json::json!({
                "kind": kind,
                "set_time": time::to_filename(stats.start_time),
                "dry_run": cli.general.dry_run,
                "seconds_elapsed": elapsed,
                "exit_code": exit,
            }),
        ));
        return Ok(exit);
    }
    if !cli.general.no_print_statistics {
        print!("{}", crate::render::backup_statistics(&stats, elapsed));
    }
    if cli.general.jsonstat {
        println!("{}", serde_json::to_string(&stats.jsonstat(elapsed))?);
    }
    let mut line = if stats.skipped {
        "backup done: nothing changed, no incremental written".to_string()
    } else {
        format!(
            "backup done: {kind} set {}, {} files ({}), {} volume(s), {} stored",
            time::to_filename(stats.start_time),
            stats.source_files,
            crate::render::human(stats.source_file_size),
            stats.volumes,
            crate::render::human(stats.stored_total)
        )
    };
    if stats.errors > 0 {
        line.push_str(&format!(
            "; {} file(s) skipped (unreadable, see the warnings)",
            stats.errors
        ));
    }
    summary(cli, &line);
    Ok(exit)
}
