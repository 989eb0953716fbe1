//! dupr-core: the engine of dupr, a duplicity-compatible backup tool.
//!
//! The backup path is one pipeline:
//! `walk` (source tree in index order) → `select` → `diff` (snapshot or delta
//! against the signature chain) → `tar` entries → `volume` writer (64 KiB chunk
//! rule, volume boundaries) → `crypt` (gzip / OpenPGP) → `backend` (storage).
//! Restore runs it backwards: `chain` picks sets → `backend` → `crypt` →
//! `tar` reader → `restore` (patch and write).

// Every unsafe block in shipped code says why it is sound (tests are
// exempt: their unsafe is libc calls on fixtures).
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod backend;
pub mod backup;
pub mod blocks;
pub mod browse;
pub mod cache;
pub mod chain;
pub mod check;
pub mod crypt;
pub mod delta;
pub mod entry;
pub mod error;
pub mod index;
pub mod interrupt;
pub mod keys;
pub mod lock;
pub mod manifest;
pub mod naming;
pub mod ops;
pub mod restore;
pub mod select;
pub mod signature;
pub mod sigtar;
pub mod status;
pub mod stream;
pub mod tar;
pub mod time;
pub mod verify;
pub mod volume;
pub mod walk;

pub use error::{Error, Result};

/// The prefix of every temporary dupr-core writes beside what it will
/// become (staged volumes, uploads, cache downloads): clean-up after a
/// killed run finds them by it.
pub const TEMP_PREFIX: &str = ".dupr-tmp.";

/// The temporary name for `name`, unique to this process.
pub fn temp_name(name: &str) -> String {
    format!("{TEMP_PREFIX}{}.{name}", std::process::id())
}
