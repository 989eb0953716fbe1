//! `restore` and `verify URL SOURCE`: the state at a time, written out or
//! compared with a tree.

use std::path::PathBuf;
use std::sync::Arc;

use crate::backup::Counters;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::restore::{self, RestoreOptions, RestoreStats};
use crate::select::Selection;
use crate::time::Timestamp;
use crate::walk::Select;
use std::os::unix::ffi::OsStrExt;

use super::{refuse_incomplete, selected_walker, Target};

/// What to restore, and how.
pub struct RestoreRequest {
    /// The time whose state is restored: that of the newest backup at or
    /// before it (the oldest full when all are later).
    pub time: Timestamp,
    /// The restore target: a directory for a tree, or the file itself for a
    /// single file.
    pub dest: PathBuf,
    /// Only this archive path (`--path-to-restore`).
    pub path: Option<Index>,
    /// `--force`: write into an existing non-empty target, replacing what the
    /// archive holds there.
    pub force: bool,
    /// Set owners as recorded (has effect only when running as root).
    pub restore_owner: bool,
    /// `--numeric-owner`: owners by uid/gid only, ignoring the recorded names.
    pub numeric_owner: bool,
    /// `--rename FROM TO`: archive path prefixes placed elsewhere.
    pub rename: Vec<(Index, Index)>,
    /// Restore-time selection (archive-relative patterns).
    pub selection: Option<Arc<Selection>>,
    /// Live counters (entries placed, file bytes written) a progress
    /// display can poll.
    pub counters: Option<Arc<Counters>>,
}

impl RestoreRequest {
    /// Restore everything as of `time` into `dest` (which must not exist or
    /// be empty), owners and names as they are on this machine.
    pub fn new(time: Timestamp, dest: impl Into<PathBuf>) -> RestoreRequest {
        RestoreRequest {
            time,
            dest: dest.into(),
            path: None,
            force: false,
            restore_owner: false,
            numeric_owner: false,
            rename: Vec::new(),
            selection: None,
            counters: None,
        }
    }
}

/// Write the archive's state at `req.time` (all of it, or one path) to
/// `req.dest`; every file is checked before it reaches its place.
pub fn restore(t: &Target, req: RestoreRequest) -> Result<RestoreStats> {
    let RestoreRequest {
        time,
        dest,
        path,
        force,
        restore_owner,
        numeric_owner,
        rename,
        selection,
        counters,
    } = req;
    let (names, c) = t.collection()?;
    let ch = c
        .chain_at(time)
        .ok_or_else(|| Error::NoBackups(t.backend.display_url()))?;
    refuse_incomplete(t, &c, &names, ch, time)?;
    let sets = ch.sets_at(time);
    let opts = RestoreOptions {
        path,
        force,
        restore_owner,
        numeric_owner,
        rename,
        selection,
        counters,
        ..RestoreOptions::new(dest, t.settings.tempdir.clone(), t.settings.crypto.clone())
    };
    restore::restore(
        t.backend.as_ref(),
        Some(&t.cache),
        &sets,
        &t.settings.prefixes,
        &opts,
    )
}

/// What `verify` found.
#[derive(serde::Serialize)]
pub struct VerifyReport {
    /// Paths compared, counting those of either side.
    pub compared: u64,
    /// One line per difference ("Difference found: PATH: what"); only with
    /// `compare_data`.
    pub differences: Vec<String>,
    /// Non-fatal errors (deltas that did not apply, ...).
    pub errors: u64,
}

/// `verify URL SRC`: exercise the archive at `time`; with `compare_data`,
/// compare it (or its `path`) with `source`.
pub fn verify(
    t: &Target,
    time: Timestamp,
    source: PathBuf,
    path: Option<Index>,
    compare_data: bool,
    selection: Option<Arc<Selection>>,
) -> Result<VerifyReport> {
    let (names, c) = t.collection()?;
    let ch = c
        .chain_at(time)
        .ok_or_else(|| Error::NoBackups(t.backend.display_url()))?;
    refuse_incomplete(t, &c, &names, ch, time)?;
    let sets = ch.sets_at(time);
    // As in duplicity, SOURCE is the local counterpart of what is verified:
    // with --path-to-restore P it is compared with the archive's P (a single
    // file with a file), not with SOURCE/P.
    let local_root = source;
    let sel = selection.clone();
    let select = Box::new(
        move |_: &Index, p: &std::path::Path, m: &crate::entry::Meta| match &sel {
            Some(s) => s.select(p.as_os_str().as_bytes(), p, m),
            None => Select::Include,
        },
    );
    let local = selected_walker(&local_root, select, selection).ok();
    let mut sink = crate::verify::VerifySink::new(
        local,
        path.clone().unwrap_or_default(),
        compare_data,
        t.settings.tempdir.clone(),
    )?;
    let opts = RestoreOptions {
        path,
        force: true,
        ..RestoreOptions::new(
            PathBuf::new(),
            t.settings.tempdir.clone(),
            t.settings.crypto.clone(),
        )
    };
    restore::collate(
        t.backend.as_ref(),
        Some(&t.cache),
        &sets,
        &t.settings.prefixes,
        &opts,
        &mut sink,
    )?;
    Ok(VerifyReport {
        compared: sink.compared,
        differences: sink.differences,
        errors: sink.errors,
    })
}
