//! `dupr mount URL MOUNTPOINT`: the archive as a read-only file system.

use std::ffi::OsString;
use std::path::PathBuf;

use super::{settings, want_args, Access};
use crate::cli::Cli;
use crate::{bad_value, mount};

pub fn run(cli: &Cli, args: &[OsString]) -> anyhow::Result<i32> {
    want_args(args, 2, "URL MOUNTPOINT")?;
    let mountpoint = PathBuf::from(&args[1]);
    if !mountpoint.is_dir() {
        return Err(bad_value(format!(
            "mount point {} is not a directory",
            mountpoint.display()
        )));
    }
    // Keys and passphrase are asked for once, here.
    let settings = settings(cli, &args[0], Access::Decrypt)?;
    let daemon = if cli.mount.daemon {
        Some(mount::daemonize()?)
    } else {
        None
    };
    dupr_core::interrupt::install();
    let target = super::open_target(settings)?;
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
