//! dupr's command line as a library: the binary (`main.rs`) parses
//! arguments and dispatches; the modules here hold what the commands share
//! (options, profiles and their importer, key export, logs, mount,
//! schedules), so tests and fuzz targets can reach them without a process.

// Every unsafe block in shipped code says why it is sound (tests are
// exempt: their unsafe is libc calls on fixtures).
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod cli;
pub mod commands;
pub mod import;
pub mod keyexport;
pub mod log;
pub mod mount;
pub mod profile;
pub mod progress;
pub mod render;
pub mod schedule;
pub mod secret;

pub use secret::take_env;

use anyhow::anyhow;

/// An error with a chosen exit code that is not a core error.
#[derive(Debug)]
pub struct Exit(pub i32, pub String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}
impl std::error::Error for Exit {}

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow!(Exit(2, msg.into()))
}

/// A bad option value: one line naming the option, exit 23 (duplicity
/// 3.2.1's code for any bad value, a time string included).
pub fn bad_value(msg: impl Into<String>) -> anyhow::Error {
    anyhow!(Exit(23, msg.into()))
}
