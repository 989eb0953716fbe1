//! `cleanup`, `remove-older-than`, `remove-all-but-n-full`,
//! `remove-all-inc-of-but-n-full`: retention, a dry run without `--force`.

use std::ffi::OsString;

use dupr_core::ops;

use super::{json, open, summary, time_value, want_args, Access, EXIT_NOTHING_TO_DO};
use crate::bad_value;
use crate::cli::{Cli, Command};

pub fn run(cli: &Cli, cmd: Command, args: &[OsString]) -> anyhow::Result<i32> {
    let (policy, url) = match cmd {
        Command::Cleanup => {
            want_args(args, 1, "URL")?;
            (ops::Removal::Cleanup, &args[0])
        }
        _ => {
            want_args(args, 2, "TIME|COUNT URL")?;
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
    let (target, _lock) = open(cli, url, Access::Read)?;
    let _target_lock = if cli.general.force && !cli.general.dry_run {
        dupr_core::interrupt::install();
        Some(target.lock_target()?)
    } else {
        None
    };
    let r = ops::remove(&target, policy, cli.general.force)?;
    let deleted = cli.general.force && !cli.general.dry_run;
    let exit = if r.files.is_empty() && cli.general.detailed_exit_codes {
        EXIT_NOTHING_TO_DO
    } else {
        0
    };
    if cli.general.json {
        json::line(&json::message(
            "remove",
            &r,
            serde_json::json!({"deleted": deleted, "exit_code": exit}),
        ));
        return Ok(exit);
    }
    print!("{}", r.text);
    let verb = if deleted {
        "deleted"
    } else {
        "would delete (use --force)"
    };
    if r.files.is_empty() {
        summary(cli, "nothing to delete");
        return Ok(exit);
    }
    summary(cli, &format!("{verb} {} file(s)", r.files.len()));
    Ok(0)
}
