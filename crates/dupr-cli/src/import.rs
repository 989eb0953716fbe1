//! `dupr profile import`: a duplicity-backup.conf or a duply profile
//! directory converted into a dupr profile.

use std::path::Path;

use anyhow::{bail, Result};

/// The profile TOML for `from`, and what could not be converted.
pub fn import(from: &Path) -> Result<(String, Vec<String>)> {
    bail!(
        "{}: importing profiles is being written (see issue 8)",
        from.display()
    )
}
