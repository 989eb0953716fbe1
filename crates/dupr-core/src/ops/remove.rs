//! Retention: cleanup and the remove-* commands.

use crate::cache::Cache;
use crate::error::Result;
use crate::time::Timestamp;

use super::{is_target_temp, Target};

/// What a deleting command removes (reference 6.6).
#[derive(Clone, Copy, Debug)]
pub enum Removal {
    /// Orphaned and incomplete sets, orphaned signatures.
    Cleanup,
    /// Whole chains ending before the time, never the latest chain.
    OlderThan(Timestamp),
    /// Chains older than the N-th newest full.
    AllButNFull(usize),
    /// Only the incrementals of chains older than the N-th newest full.
    AllIncOfButNFull(usize),
}

/// The outcome of a deleting command: what was (or, without force, would be)
/// deleted, and a report for the user.
#[derive(serde::Serialize)]
pub struct RemovalReport {
    /// The target's files selected, in deletion order (deleted only with
    /// `force`).
    pub files: Vec<String>,
    /// duplicity's listing of the sets concerned.
    #[serde(skip)]
    pub text: String,
}

/// Delete (with `force`) or list what `policy` selects, remote files first,
/// newest incrementals before their full, then the matching cache files.
pub fn remove(t: &Target, policy: Removal, force: bool) -> Result<RemovalReport> {
    use std::fmt::Write as _;
    let (names, c) = t.collection()?;
    let prefixes = &t.settings.prefixes;
    let mut doomed: Vec<String> = Vec::new();
    let mut text = String::new();
    // Manifest first: a set interrupted mid-deletion is then merely
    // incomplete (cleanup material), never a complete set missing volumes.
    let add_set = |doomed: &mut Vec<String>, s: &crate::chain::BackupSet| {
        doomed.extend(s.manifest.clone());
        doomed.extend(s.jsonstat.clone());
        doomed.extend(s.blocks.clone());
        doomed.extend(s.volumes.values().cloned());
        doomed.extend(s.sig_files(&names, prefixes));
    };
    let cutoff = |n: usize| -> Option<Timestamp> {
        if n == 0 || c.chains.len() < n {
            None
        } else {
            Some(c.chains[c.chains.len() - n].start())
        }
    };
    match policy {
        Removal::Cleanup => {
            for s in c.orphaned.iter().chain(c.incomplete.iter()) {
                add_set(&mut doomed, s);
            }
            doomed.extend(c.orphaned_sigs.iter().map(|s| s.name.clone()));
            // Block indexes of sets duplicity's own retention removed.
            doomed.extend(c.stray_blocks.iter().cloned());
            // Left by killed runs: deleted with --force, which holds the
            // target lock, so none can belong to a live run then.
            doomed.extend(names.iter().filter(|n| is_target_temp(n)).cloned());
            if doomed.is_empty() {
                text.push_str("No extraneous files found, nothing deleted in cleanup.\n");
            }
        }
        Removal::OlderThan(_) | Removal::AllButNFull(_) => {
            let limit = match policy {
                Removal::OlderThan(x) => Some(x),
                Removal::AllButNFull(n) => cutoff(n),
                _ => None,
            };
            let old: Vec<&crate::chain::Chain> = match limit {
                Some(limit) => c
                    .chains
                    .iter()
                    .take(c.chains.len().saturating_sub(1))
                    .filter(|ch| ch.end() < limit)
                    .collect(),
                None => Vec::new(),
            };
            if old.is_empty() {
                text.push_str("No old backup sets found, nothing deleted.\n");
            } else {
                text.push_str("Found old backup chains at the following times:\n");
                for ch in &old {
                    let _ = writeln!(text, "    {}", crate::time::pretty_local(ch.start()));
                    for s in ch.incs.iter().rev() {
                        add_set(&mut doomed, s);
                    }
                    add_set(&mut doomed, &ch.full);
                }
            }
            if let Some(limit) = limit {
                let kept_old: Vec<_> = c
                    .chains
                    .iter()
                    .filter(|ch| ch.start() < limit && ch.end() >= limit)
                    .collect();
                for ch in kept_old {
                    let _ = writeln!(
                        text,
                        "Chain starting {} has sets older than the limit that can't be deleted because newer sets depend on them.",
                        crate::time::pretty_local(ch.start())
                    );
                }
            }
        }
        Removal::AllIncOfButNFull(n) => {
            let old: Vec<&crate::chain::Chain> = match cutoff(n) {
                Some(limit) => c
                    .chains
                    .iter()
                    .filter(|ch| ch.end() < limit && !ch.incs.is_empty())
                    .collect(),
                None => Vec::new(),
            };
            if old.is_empty() {
                text.push_str("No old backup sets found, nothing deleted.\n");
            } else {
                text.push_str("Found old incremental sets in the chains at the following times:\n");
                for ch in &old {
                    let _ = writeln!(text, "    {}", crate::time::pretty_local(ch.start()));
                    for s in ch.incs.iter().rev() {
                        add_set(&mut doomed, s);
                    }
                }
            }
        }
    }
    if !doomed.is_empty() {
        if force {
            text.push_str("Deleting these files from the target:\n");
        } else {
            text.push_str(
                "Which can't be deleted without --force. These files would be deleted:\n",
            );
        }
        for f in &doomed {
            let _ = writeln!(text, "    {f}");
        }
        if !force {
            text.push_str("Run again with --force to delete them.\n");
        }
    }
    if force {
        for f in &doomed {
            // A signal stops between deletions (newest sets go first, so
            // what is left is still a readable archive).
            crate::interrupt::check()?;
            t.backend.delete(f)?;
            if let Some(local) = Cache::local_name(f, prefixes) {
                let _ = std::fs::remove_file(t.cache.path(&local));
            }
        }
    }
    Ok(RemovalReport {
        files: doomed,
        text,
    })
}
