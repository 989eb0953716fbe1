//! The reports: list-current-files, collection-status (text and data),
//! verify without a source, --file-changed, --show-changes-in-set.

use crate::cache::Cache;
use crate::chain::Collection;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::naming::FileType;
use crate::restore::{self};
use crate::status;
use crate::time::Timestamp;
use std::io::Read;

use super::{refuse_incomplete, Target};

/// `list-current-files`: the newest full's time, then every path present
/// at `time`, handed to `sink`.
pub fn list_current_files(
    t: &Target,
    time: Timestamp,
    sink: &mut dyn status::ListSink,
) -> Result<u64> {
    let (names, c) = t.collection()?;
    // duplicity 3.2.1's first line: the full of the newest chain, whatever
    // the time asked for.
    sink.last_full(c.last_chain().map(|ch| ch.start()))
        .map_err(|e| Error::io("stdout", e))?;
    let ch = c
        .chain_at(time)
        .ok_or_else(|| Error::NoBackups(t.backend.display_url()))?;
    refuse_incomplete(t, &c, &names, ch, time)?;
    t.sync(&names)?;
    status::list_current_files(
        t.backend.as_ref(),
        &t.cache,
        &c,
        time,
        &t.settings.prefixes,
        t.settings.crypto.as_ref(),
        sink,
    )
}

/// `collection-status`: the sets on the target sorted into chains, and the
/// problems found (which sets are incomplete, and why).
pub fn collection_status(t: &Target) -> Result<(Collection, Vec<status::StatusProblem>)> {
    let (names, c) = t.collection()?;
    let problems = status_problems(t, &c, &names);
    Ok((c, problems))
}

/// `collection-status` as data (`--json`).
pub fn collection_report(t: &Target) -> Result<status::StatusReport> {
    let (names, c) = t.collection()?;
    let problems = status_problems(t, &c, &names);
    Ok(status::status_report(&c, problems))
}

/// The incomplete sets of `c` and why; a set whose partial manifest is in
/// the cache is an interrupted backup.
fn status_problems(t: &Target, c: &Collection, names: &[String]) -> Vec<status::StatusProblem> {
    let partial: Vec<Timestamp> = t
        .cache
        .list()
        .unwrap_or_default()
        .iter()
        .filter_map(|n| crate::naming::parse(n, &t.settings.prefixes))
        .filter(|p| p.partial && p.kind == FileType::Manifest)
        .map(|p| p.end)
        .collect();
    crate::check::incomplete_problems(c, names, &t.settings.prefixes)
        .into_iter()
        .map(|(end, what, file)| status::StatusProblem {
            what: if partial.contains(&end) {
                "incomplete set: an interrupted backup, which the next backup resumes".to_string()
            } else {
                what
            },
            file,
            time: end,
        })
        .collect()
}

/// `verify URL` without a source tree: read the target's volumes (or a
/// `percent` sample) and report damage with the paths it affects.
pub fn check(t: &Target, percent: f64) -> Result<crate::check::CheckReport> {
    let (names, c) = t.collection()?;
    if c.chains.is_empty() {
        return Err(Error::NoBackups(t.backend.display_url()));
    }
    // A file that cannot be cached is damage to report, not a reason to
    // stop: the check reads the target's copies itself.
    if let Err(e) = t.sync(&names) {
        tracing::warn!("{e}");
    }
    crate::check::check(
        t.backend.as_ref(),
        &t.cache,
        &c,
        &names,
        &t.settings.prefixes,
        &crate::check::CheckOptions {
            percent,
            tempdir: t.settings.tempdir.clone(),
            crypto: t.settings.crypto.as_ref(),
        },
    )
}

/// One set of the latest chain whose Filelist names a path.
#[derive(Debug, serde::Serialize)]
pub struct FileChange {
    /// "full" or "incremental".
    pub kind: &'static str,
    /// The set's time.
    pub time: Timestamp,
    /// "new", "changed" or "deleted".
    pub change: &'static str,
}

/// `collection-status --file-changed PATH`: the sets of the latest chain
/// whose Filelist names the path, oldest first; None without a chain.
pub fn file_changed(t: &Target, path: &Index) -> Result<Option<Vec<FileChange>>> {
    let (names, c) = t.collection()?;
    let Some(chain) = c.last_chain() else {
        return Ok(None);
    };
    t.sync(&names)?;
    let mut rows = Vec::new();
    for (i, set) in chain.sets().enumerate() {
        let m = restore::load_manifest_with_filelist(
            t.backend.as_ref(),
            Some(&t.cache),
            set,
            &t.settings.prefixes,
            t.settings.crypto.as_ref(),
        )?;
        if let Some((change, _)) = m.filelist.iter().find(|(_, ix)| ix == path) {
            rows.push(FileChange {
                kind: if i == 0 { "full" } else { "incremental" },
                time: set.end,
                change: change.word(),
            });
        }
    }
    Ok(Some(rows))
}

/// One set's changes, as its manifest's Filelist records them
/// (`collection-status --show-changes-in-set`).
pub struct SetChanges {
    /// True for the chain's full set.
    pub full: bool,
    /// The set's time.
    pub end: Timestamp,
    /// The statistics stored with the set (`--jsonstat`), as JSON text.
    pub jsonstat: Option<String>,
    /// Changed paths in the order the manifest lists them.
    pub files: Vec<(crate::manifest::Change, Index)>,
}

/// The Filelist of the N-th newest set of the latest chain (0 = newest).
/// As in duplicity, a negative N counts from the oldest end (-1 = the
/// full); with `every`, a negative N means every set of the chain, newest
/// first. Empty when there is no chain.
pub fn changes_in_set(t: &Target, n: i64, every: bool) -> Result<Vec<SetChanges>> {
    let (names, c) = t.collection()?;
    let Some(chain) = c.last_chain() else {
        return Ok(Vec::new());
    };
    let mut sets: Vec<_> = chain.sets().collect();
    sets.reverse(); // newest first, as duplicity numbers them
    let chosen: Vec<_> = if every && n < 0 {
        sets.clone()
    } else {
        let len = sets.len() as i64;
        let i = if n < 0 { len + n } else { n };
        let set = usize::try_from(i)
            .ok()
            .and_then(|i| sets.get(i).copied())
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--show-changes-in-set {n}: the latest chain has {len} set(s), numbered 0 (newest) to {} or -1 (oldest) to -{len}",
                    len - 1
                ))
            })?;
        vec![set]
    };
    t.sync(&names)?;
    let mut out = Vec::with_capacity(chosen.len());
    for set in chosen {
        let m = restore::load_manifest_with_filelist(
            t.backend.as_ref(),
            Some(&t.cache),
            set,
            &t.settings.prefixes,
            t.settings.crypto.as_ref(),
        )?;
        let jsonstat = set
            .jsonstat
            .as_deref()
            .and_then(|r| Cache::local_name(r, &t.settings.prefixes))
            .and_then(|l| std::fs::File::open(t.cache.path(&l)).ok())
            .and_then(|f| {
                let mut s = String::new();
                flate2::read::GzDecoder::new(f)
                    .read_to_string(&mut s)
                    .ok()?;
                Some(s.trim().to_string())
            })
            // Pasted into a JSON document: only if it is JSON.
            .filter(|s| serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok());
        out.push(SetChanges {
            full: set.is_full(),
            end: set.end,
            jsonstat,
            files: m.filelist,
        });
    }
    Ok(out)
}
