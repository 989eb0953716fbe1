//! dupr: the command-line edge. Parses duplicity's command line, hands it
//! to the commands (`dupr_cli::commands`), and turns errors into one line
//! and duplicity's exit codes.

// Every unsafe block in shipped code says why it is sound (tests are
// exempt: their unsafe is libc calls on fixtures).
#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::OsString;
use std::process::ExitCode;

use clap::FromArgMatches;
use dupr_core::time;

use dupr_cli::cli::{self, Cli};
use dupr_cli::{commands, log, Exit};

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
    let json = cli.general.json;
    let result = match commands::profile::run(&cli, &argv) {
        Ok(Some(code)) => Ok(code),
        Ok(None) => commands::run(cli, spec),
        Err(e) => Err(e),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            // One line naming the culprit; causes joined on it, each once.
            let msg = dupr_core::error::report(e.as_ref());
            let code = exit_code(&e);
            if json {
                eprintln!("{}", commands::json::error(code, &msg));
            } else {
                eprintln!("dupr: {msg}");
            }
            log::fatal(code, error_class(&e, code), &msg);
            ExitCode::from(code as u8)
        }
    }
}
