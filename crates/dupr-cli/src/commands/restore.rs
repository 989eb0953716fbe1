//! `dupr restore URL DEST`: all, one path, or a selection, as of a time.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use dupr_core::ops;
use dupr_core::select::{Selection, Spec};

use super::{archive_path, json, open, parse_time, summary, want_args, Access};
use crate::cli::Cli;
use crate::usage;

pub fn run(cli: &Cli, args: &[OsString], spec: &Spec) -> anyhow::Result<i32> {
    want_args(args, 2, "URL DEST")?;
    dupr_core::interrupt::install();
    let t = parse_time(cli)?;
    let path = match &cli.restore.path_to_restore {
        Some(p) => Some(archive_path("--path-to-restore", p)?),
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
        let s = Selection::for_archive(spec).map_err(dupr_core::Error::from)?;
        Some(Arc::new(s))
    };
    let rename = cli
        .restore
        .rename
        .chunks(2)
        .map(|pair| {
            let parse = |p: &OsString| archive_path("--rename", p);
            Ok((parse(&pair[0])?, parse(&pair[1])?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (target, _lock) = open(cli, &args[0], Access::Decrypt)?;
    let counters = cli
        .general
        .json
        .then(|| Arc::new(dupr_core::backup::Counters::default()));
    let status_lines = counters.clone().map(|c| json::StatusLines::start(c, None));
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
            counters,
        },
    );
    if let Some(s) = status_lines {
        s.finish();
    }
    let stats = stats?;
    let exit = if stats.errors > 0 { 1 } else { 0 };
    if cli.general.json {
        json::line(&json::message(
            "summary",
            &stats,
            serde_json::json!({
                "destination": PathBuf::from(&args[1]),
                "exit_code": exit,
            }),
        ));
        return Ok(exit);
    }
    let mut line = format!(
        "restore done: {} file(s), {} written to {}",
        stats.files,
        crate::render::human(stats.bytes),
        PathBuf::from(&args[1]).display()
    );
    if stats.errors > 0 {
        line.push_str(&format!("; {} error(s), see above", stats.errors));
    }
    summary(cli, &line);
    Ok(exit)
}
