//! dupr-core: the engine of dupr, a duplicity-compatible backup tool.
//!
//! The backup path is one pipeline:
//! `walk` (source tree in index order) → `select` → `diff` (snapshot or delta
//! against the signature chain) → `tar` entries → `volume` writer (64 KiB chunk
//! rule, volume boundaries) → `crypt` (gzip / OpenPGP) → `backend` (storage).
//! Restore runs it backwards: `chain` picks sets → `backend` → `crypt` →
//! `tar` reader → `restore` (patch and write).

pub mod error;
pub mod time;
pub mod naming;

pub use error::{Error, Result};
