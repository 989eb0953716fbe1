//! dupr-core: the engine of dupr, a duplicity-compatible backup tool.
//!
//! The backup path is one pipeline:
//! `walk` (source tree in index order) → `select` → `diff` (snapshot or delta
//! against the signature chain) → `tar` entries → `volume` writer (64 KiB chunk
//! rule, volume boundaries) → `crypt` (gzip / OpenPGP) → `backend` (storage).
//! Restore runs it backwards: `chain` picks sets → `backend` → `crypt` →
//! `tar` reader → `restore` (patch and write).
//!
//! # Using the library
//!
//! A command runs on a [`Target`]: the storage (a [`backend::Backend`]:
//! [`backend::open_local`] for `file://`, the dupr-backend crate for every
//! other scheme), the local cache, and the [`Settings`]. The commands are
//! the functions of [`ops`]; each takes a request with duplicity's defaults
//! ([`BackupRequest::new`], [`RestoreRequest::new`]) and returns data.
//!
//! ```
//! use dupr_core::{backend, ops, BackupRequest, Crypto, Index, RestoreRequest, Settings, Target};
//!
//! # fn main() -> dupr_core::Result<()> {
//! # let tmp = tempfile::tempdir().unwrap();
//! # let (src, dest) = (tmp.path().join("src"), tmp.path().join("restored"));
//! # std::fs::create_dir_all(src.join("docs")).unwrap();
//! # std::fs::write(src.join("docs/note.txt"), "hello\n").unwrap();
//! let url = format!("file://{}", tmp.path().join("archive").display());
//! let key = Crypto::symmetric(zeroize::Zeroizing::new(b"passphrase".to_vec()), true)?;
//! let mut settings = Settings::new(&url, Some(key));
//! settings.archive_dir = Some(tmp.path().join("cache"));
//! let storage = backend::open_local(&url, &settings.backend)?.expect("a file:// URL");
//! let target = Target::open(settings, storage)?;
//!
//! // Back up (a full: the target holds no chain yet).
//! let done = ops::backup(&target, BackupRequest::new(&src))?;
//! assert!(!done.incremental);
//!
//! // List what the newest backup holds.
//! let mut paths: Vec<Index> = Vec::new();
//! ops::list_current_files(&target, dupr_core::time::now(), &mut paths)?;
//! assert!(paths.iter().any(|p| p.to_string() == "docs/note.txt"));
//!
//! // Restore one file.
//! let mut req = RestoreRequest::new(dupr_core::time::now(), &dest);
//! req.path = Index::parse(b"docs/note.txt");
//! ops::restore(&target, req)?;
//! assert_eq!(std::fs::read_to_string(&dest).unwrap(), "hello\n");
//! # Ok(())
//! # }
//! ```

// Every unsafe block in shipped code says why it is sound (tests are
// exempt: their unsafe is libc calls on fixtures).
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod backend;
pub mod backup;
pub mod blocks;
pub mod browse;
pub mod cache;
pub mod chain;
pub(crate) mod check;
pub mod content;
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
pub(crate) mod verify;
pub(crate) mod volume;
pub mod walk;

pub use crypt::Crypto;
pub use error::{Error, Result};
pub use index::Index;
pub use ops::{BackupRequest, RestoreRequest, Settings, Target};

/// A test hook's setting from the environment (`DUPR_FAULTS`,
/// `DUPR_HTTP_REWRITE`, `DUPR_DPBX_CHUNK_SIZE`, `DUPR_LOCK_FALLBACK`). Only
/// builds with the `test-hooks` feature read them (the test suite's, which
/// dupr-cli's dev-dependency turns on): a shipped binary cannot be told by
/// its environment to inject faults, change its locking, or send requests
/// (and their bearer tokens) to another address.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub fn test_hook(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Without the `test-hooks` feature no hook is ever set.
#[cfg(not(feature = "test-hooks"))]
#[doc(hidden)]
pub fn test_hook(_name: &str) -> Option<String> {
    None
}

/// The prefix of every temporary dupr-core writes beside what it will
/// become (staged volumes, uploads, cache downloads): clean-up after a
/// killed run finds them by it.
pub const TEMP_PREFIX: &str = ".dupr-tmp.";

/// The temporary name for `name`, unique to this process.
pub fn temp_name(name: &str) -> String {
    format!("{TEMP_PREFIX}{}.{name}", std::process::id())
}

#[cfg(test)]
mod tests {
    /// The hooks are read exactly when the feature is on: `cargo test
    /// --workspace` runs this with it (dupr-cli's tests turn it on),
    /// `scripts/test` once more with `-p dupr-core` alone, without it.
    #[test]
    fn test_hooks_follow_the_feature() {
        std::env::set_var("DUPR_TEST_HOOK_PROBE", "1");
        assert_eq!(
            super::test_hook("DUPR_TEST_HOOK_PROBE").is_some(),
            cfg!(feature = "test-hooks")
        );
    }
}
