//! `dupr schedule install|list|remove`: systemd user timers, or crontab
//! lines where systemd is absent (or with `--cron`).

use std::ffi::OsString;
use std::path::Path;

use anyhow::{bail, Result};

pub fn manage(
    words: &[OsString],
    profile: Option<&str>,
    config: Option<&Path>,
    every: Option<&str>,
    cron: bool,
) -> Result<i32> {
    let _ = (words, profile, config, every, cron);
    bail!("dupr schedule is being written (issue 8)")
}
