//! `collection-status` and `list-current-files`: answered from manifests,
//! file names and the signature chain only; no volume is read.

use crate::backend::Backend;
use crate::cache::Cache;
use crate::chain::{Collection, SigFile};
use std::sync::Arc;

use crate::crypt::{self, Codec, Crypto};
use crate::entry::Meta;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::naming::Prefixes;
use crate::sigtar::{SigMerge, SigtarReader};
use crate::time::{self, Timestamp};

/// Readers of signature files, from the local cache where it has them.
pub fn sig_readers(
    backend: &dyn Backend,
    cache: &Cache,
    files: &[&SigFile],
    prefixes: &Prefixes,
    crypto: Option<&Arc<Crypto>>,
    want_sigs: bool,
) -> Result<Vec<SigtarReader<Box<dyn std::io::Read + Send>>>> {
    let mut readers = Vec::new();
    for f in files {
        let local = Cache::local_name(&f.name, prefixes).map(|l| cache.path(&l));
        let r: Box<dyn std::io::Read + Send> = match local.filter(|p| p.exists()) {
            Some(p) => {
                let f = std::fs::File::open(&p).map_err(|e| Error::io(&p, e))?;
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                crate::stream::ahead_if_large(crypt::decoder(f, &Codec::GZIP)?, len)
            }
            None => {
                let p = &f.parsed;
                let codec = Codec::for_name(p.encrypted, p.gzipped, crypto, &f.name)?;
                crypt::decoder(backend.open(&f.name)?, &codec)?
            }
        };
        readers.push(SigtarReader::new(r, &f.name, want_sigs));
    }
    Ok(readers)
}

/// Where list-current-files' answer goes: the newest full's time first,
/// then every path present at the time asked for, in archive order. The
/// command line renders it as duplicity's text or as JSON.
pub trait ListSink {
    /// The time of the newest chain's full backup (None when there is none),
    /// before any path.
    fn last_full(&mut self, time: Option<Timestamp>) -> std::io::Result<()>;
    /// One path present at the time asked for, with its metadata.
    fn file(&mut self, index: &Index, meta: &Meta) -> std::io::Result<()>;
}

/// The paths alone, collected (for a short listing; a million paths want a
/// sink that writes them out).
impl ListSink for Vec<Index> {
    fn last_full(&mut self, _time: Option<Timestamp>) -> std::io::Result<()> {
        Ok(())
    }
    fn file(&mut self, index: &Index, _meta: &Meta) -> std::io::Result<()> {
        self.push(index.clone());
        Ok(())
    }
}

/// collection-status as data: the chains (oldest first, the primary last),
/// what is outside them, and the problems found.
#[derive(Debug, serde::Serialize)]
pub struct StatusReport {
    /// The complete chains, oldest first.
    pub chains: Vec<ChainReport>,
    /// Sets not part of any chain (cleanup material).
    pub orphaned_sets: usize,
    /// Sets without their manifest or volumes (cleanup material, or an
    /// interrupted backup the next one resumes).
    pub incomplete_sets: usize,
    /// The incomplete sets, orphaned sets and stray signature files found.
    pub problems: Vec<StatusProblem>,
}

/// One backup chain in a [`StatusReport`].
#[derive(Debug, serde::Serialize)]
pub struct ChainReport {
    /// The newest chain: the one restores and incrementals use.
    pub primary: bool,
    /// The chain's full backup time, epoch seconds.
    pub start: Timestamp,
    /// The end time of its newest set, epoch seconds.
    pub end: Timestamp,
    /// A signature chain matches it (incrementals can build on it).
    pub signatures: bool,
    /// Its sets, the full first.
    pub sets: Vec<SetReport>,
}

/// One backup set in a [`ChainReport`].
#[derive(Debug, serde::Serialize)]
pub struct SetReport {
    /// "full" or "incremental".
    pub kind: &'static str,
    /// The set's time (its end), epoch seconds.
    pub time: Timestamp,
    /// The same time as file names carry it (`20261207T120000Z`).
    pub time_name: String,
    /// The number of volume files on the target.
    pub volumes: usize,
}

/// A file of the target that fits no chain, or a set missing its manifest.
#[derive(Debug, serde::Serialize)]
pub struct StatusProblem {
    /// The file concerned (for a set without one, the manifest it lacks).
    pub file: String,
    /// The time of the set concerned.
    pub time: Timestamp,
    /// What is wrong and what to do about it.
    pub what: String,
}

/// The report for `c`, with `problems` as found by the caller.
pub fn status_report(c: &Collection, problems: Vec<StatusProblem>) -> StatusReport {
    let n = c.chains.len();
    let chains = c
        .chains
        .iter()
        .enumerate()
        .map(|(i, ch)| ChainReport {
            primary: i + 1 == n,
            start: ch.start(),
            end: ch.end(),
            signatures: c.sig_chain_for(ch).is_some(),
            sets: ch
                .sets()
                .map(|s| SetReport {
                    kind: if s.is_full() { "full" } else { "incremental" },
                    time: s.end,
                    time_name: time::to_filename(s.end),
                    volumes: s.volumes.len(),
                })
                .collect(),
        })
        .collect();
    StatusReport {
        chains,
        orphaned_sets: c.orphaned.len(),
        incomplete_sets: c.incomplete.len(),
        problems,
    }
}

/// Hand `sink` every path present at `t`, with its metadata.
pub fn list_current_files(
    backend: &dyn Backend,
    cache: &Cache,
    c: &Collection,
    t: Timestamp,
    prefixes: &Prefixes,
    crypto: Option<&Arc<Crypto>>,
    sink: &mut dyn ListSink,
) -> Result<u64> {
    let url = backend.display_url();
    let sc = c
        .sig_chain_at(t)
        .ok_or_else(|| Error::NoBackups(url.clone()))?;
    let readers = sig_readers(backend, cache, &sc.files_at(t), prefixes, crypto, false)?;
    let mut m = SigMerge::new(readers)?;
    let mut n = 0;
    while let Some(e) = m.next_present()? {
        let meta = e.meta.expect("present");
        sink.file(&e.index, &meta)
            .map_err(|e| Error::io("stdout", e))?;
        n += 1;
    }
    Ok(n)
}
