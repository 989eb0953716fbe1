//! Backup sets, backup chains and signature chains, collected from a target
//! listing exactly as duplicity does (reference section 6).

use std::collections::BTreeMap;

use crate::naming::{self, FileType, ParsedName, Prefixes, SetType};
use crate::time::Timestamp;

/// One backup set on the target: a full or an incremental, with its volumes,
/// manifest and side files, as its file names describe it.
#[derive(Clone, Debug)]
pub struct BackupSet {
    /// Full or incremental.
    pub set_type: SetType,
    /// Start time of an incremental (None for a full).
    pub start: Option<Timestamp>,
    /// Time of a full, end time of an incremental.
    pub end: Timestamp,
    /// Volume file names by volume number, from 1.
    pub volumes: BTreeMap<u32, String>,
    /// The manifest's file name; None while the set is incomplete.
    pub manifest: Option<String>,
    /// The `--jsonstat` statistics file, when the run wrote one.
    pub jsonstat: Option<String>,
    /// dupr's block index of the volumes, when the run wrote one.
    pub blocks: Option<String>,
    /// Whether the set's files are encrypted (`.gpg`).
    pub encrypted: bool,
}

impl BackupSet {
    /// True when the manifest is present: duplicity writes it last, so a set
    /// without one was interrupted or damaged.
    pub fn is_complete(&self) -> bool {
        self.manifest.is_some()
    }

    /// True for a full backup set.
    pub fn is_full(&self) -> bool {
        self.set_type == SetType::Full
    }

    /// The signature files among `names` that belong to this set.
    pub fn sig_files(&self, names: &[String], prefixes: &Prefixes) -> Vec<String> {
        names
            .iter()
            .filter(|n| {
                naming::parse(n, prefixes).is_some_and(|p| {
                    p.kind == FileType::Signature
                        && !p.partial
                        && p.set == self.set_type
                        && p.start == self.start
                        && p.end == self.end
                })
            })
            .cloned()
            .collect()
    }

    /// Every remote file of this set.
    pub fn files(&self) -> Vec<String> {
        self.volumes
            .values()
            .cloned()
            .chain(self.manifest.clone())
            .chain(self.jsonstat.clone())
            .chain(self.blocks.clone())
            .collect()
    }
}

/// A backup chain: a full set and the incrementals that build on it, each
/// starting where the one before ends.
#[derive(Clone, Debug)]
pub struct Chain {
    /// The full set the chain starts with.
    pub full: BackupSet,
    /// The incrementals, oldest first.
    pub incs: Vec<BackupSet>,
}

impl Chain {
    /// The chain's start: its full set's time.
    pub fn start(&self) -> Timestamp {
        self.full.end
    }

    /// The chain's end: the newest set's end time.
    pub fn end(&self) -> Timestamp {
        self.incs.last().map_or(self.full.end, |s| s.end)
    }

    /// The full set, then the incrementals, oldest first.
    pub fn sets(&self) -> impl Iterator<Item = &BackupSet> {
        std::iter::once(&self.full).chain(self.incs.iter())
    }

    /// The full set plus incrementals ending at or before `t`.
    pub fn sets_at(&self, t: Timestamp) -> Vec<&BackupSet> {
        self.sets().filter(|s| s.is_full() || s.end <= t).collect()
    }
}

/// One signature file (sigtar) on the target.
#[derive(Clone, Debug)]
pub struct SigFile {
    /// The file name.
    pub name: String,
    /// Start time of an incremental's signatures (None for a full's).
    pub start: Option<Timestamp>,
    /// Time of a full, end time of an incremental.
    pub end: Timestamp,
    /// The name, parsed.
    pub parsed: ParsedName,
}

/// A signature chain: a full signature file and the incremental ones that
/// follow it, each starting where the one before ends.
#[derive(Clone, Debug)]
pub struct SigChain {
    /// The full signature file.
    pub full: SigFile,
    /// The incremental signature files, oldest first.
    pub incs: Vec<SigFile>,
}

impl SigChain {
    /// The chain's end: the newest signature file's end time.
    pub fn end(&self) -> Timestamp {
        self.incs.last().map_or(self.full.end, |s| s.end)
    }

    /// The full signature file, then the incremental ones, oldest first.
    pub fn files(&self) -> impl Iterator<Item = &SigFile> {
        std::iter::once(&self.full).chain(self.incs.iter())
    }

    /// Signature files describing the state at time `t`.
    pub fn files_at(&self, t: Timestamp) -> Vec<&SigFile> {
        self.files()
            .filter(|f| f.start.is_none() || f.end <= t)
            .collect()
    }
}

/// All backup and signature chains of a target, and the files that fit none.
#[derive(Debug, Default)]
pub struct Collection {
    /// Complete chains sorted by end time.
    pub chains: Vec<Chain>,
    /// Complete incrementals that fit no chain.
    pub orphaned: Vec<BackupSet>,
    /// Sets without a manifest.
    pub incomplete: Vec<BackupSet>,
    /// Signature chains sorted by end time.
    pub sig_chains: Vec<SigChain>,
    /// Incremental signature files that extend no signature chain.
    pub orphaned_sigs: Vec<SigFile>,
    /// Block indexes whose set is gone (duplicity's own retention leaves
    /// them); never a reason to call a set incomplete.
    pub stray_blocks: Vec<String>,
}

impl Collection {
    /// The collection a target listing makes. Names that do not parse (other
    /// files, other prefixes) and partial files are left out.
    pub fn from_names<S: AsRef<str>>(names: &[S], prefixes: &Prefixes) -> Self {
        let mut sets: BTreeMap<(u8, Option<Timestamp>, Timestamp), BackupSet> = BTreeMap::new();
        let mut sigs: Vec<SigFile> = Vec::new();
        let mut blocks = Vec::new();
        for name in names {
            let name = name.as_ref();
            let Some(p) = naming::parse(name, prefixes) else {
                continue;
            };
            if p.partial {
                continue;
            }
            match p.kind {
                FileType::Blocks => blocks.push(((p.set as u8, p.start, p.end), name.to_string())),
                FileType::Signature => sigs.push(SigFile {
                    name: name.to_string(),
                    start: p.start,
                    end: p.end,
                    parsed: p,
                }),
                FileType::Volume(_) | FileType::Manifest | FileType::JsonStat => {
                    let key = (p.set as u8, p.start, p.end);
                    let set = sets.entry(key).or_insert_with(|| BackupSet {
                        set_type: p.set,
                        start: p.start,
                        end: p.end,
                        volumes: BTreeMap::new(),
                        manifest: None,
                        jsonstat: None,
                        blocks: None,
                        encrypted: p.encrypted,
                    });
                    match p.kind {
                        FileType::Volume(n) => {
                            set.encrypted |= p.encrypted;
                            set.volumes.insert(n, name.to_string());
                        }
                        FileType::JsonStat => set.jsonstat = Some(name.to_string()),
                        _ => set.manifest = Some(name.to_string()),
                    }
                }
            }
        }
        let mut c = Collection::default();
        for (key, name) in blocks {
            match sets.get_mut(&key) {
                Some(set) => set.blocks = Some(name),
                None => c.stray_blocks.push(name),
            }
        }
        let (mut fulls, mut incs): (Vec<BackupSet>, Vec<BackupSet>) = (Vec::new(), Vec::new());
        for s in sets.into_values() {
            if !s.is_complete() {
                c.incomplete.push(s);
            } else if s.is_full() {
                fulls.push(s);
            } else {
                incs.push(s);
            }
        }
        fulls.sort_by_key(|s| s.end);
        incs.sort_by_key(|s| (s.end, s.start));
        let mut chains: Vec<Chain> = fulls
            .into_iter()
            .map(|full| Chain {
                full,
                incs: Vec::new(),
            })
            .collect();
        for inc in incs {
            let start = inc.start.unwrap_or(inc.end);
            let mut placed = false;
            for ch in chains.iter_mut() {
                if ch.end() == start {
                    ch.incs.push(inc.clone());
                    placed = true;
                    break;
                }
                // Same start as the chain's last inc but a later end: replace it.
                if let Some(last) = ch.incs.last_mut() {
                    if last.start == inc.start && inc.end > last.end {
                        *last = inc.clone();
                        placed = true;
                        break;
                    }
                }
            }
            if !placed {
                c.orphaned.push(inc);
            }
        }
        chains.sort_by_key(|ch| ch.end());
        c.chains = chains;

        let (mut sfull, mut snew): (Vec<SigFile>, Vec<SigFile>) = sigs
            .into_iter()
            .partition(|s| s.parsed.set == SetType::Full);
        sfull.sort_by_key(|s| s.end);
        snew.sort_by_key(|s| (s.start, s.end));
        let mut sch: Vec<SigChain> = sfull
            .into_iter()
            .map(|full| SigChain {
                full,
                incs: Vec::new(),
            })
            .collect();
        for s in snew {
            match sch.iter_mut().find(|ch| Some(ch.end()) == s.start) {
                Some(ch) => ch.incs.push(s),
                None => c.orphaned_sigs.push(s),
            }
        }
        sch.sort_by_key(|ch| ch.end());
        c.sig_chains = sch;
        c
    }

    /// A set the state at `t` read from `ch` would silently leave out: one
    /// ending after the newest complete set that state uses and at or before
    /// `t`, with volumes or a signature file but no manifest. Returns the
    /// set's time and what is missing, for [`crate::Error::IncompleteSet`].
    pub fn incomplete_at(
        &self,
        ch: &Chain,
        t: Timestamp,
        names: &[String],
        prefixes: &Prefixes,
    ) -> Option<(Timestamp, String)> {
        let used_end = ch.sets_at(t).last().map_or(ch.full.end, |s| s.end);
        let covers = |end: Timestamp| used_end < end && end <= t;
        let manifest_name = |set: SetType, start, end, encrypted| {
            naming::name(
                &ParsedName {
                    set,
                    kind: FileType::Manifest,
                    start,
                    end,
                    encrypted,
                    gzipped: false,
                    partial: false,
                },
                prefixes,
            )
        };
        if let Some(s) = self
            .incomplete
            .iter()
            .filter(|s| covers(s.end))
            .min_by_key(|s| s.end)
        {
            return Some((
                s.end,
                format!(
                    "its manifest {} is missing from the target ({} volume file(s) present)",
                    manifest_name(s.set_type, s.start, s.end, s.encrypted),
                    s.volumes.len()
                ),
            ));
        }
        // A complete incremental that fits no chain: a set before it is gone.
        if let Some(s) = self
            .orphaned
            .iter()
            .filter(|s| s.start.is_some_and(|st| covers(st) && st >= ch.start()))
            .min_by_key(|s| s.end)
        {
            let start = s.start.unwrap_or(s.end);
            return Some((
                s.end,
                format!(
                    "it builds on a set ending {} that is missing from the target",
                    crate::time::to_filename(start)
                ),
            ));
        }
        // A signature file without its set: the set's manifest and volumes
        // are both gone, but listings would show its state.
        let sig = names
            .iter()
            .filter_map(|n| naming::parse(n, prefixes).map(|p| (n, p)))
            .filter(|(_, p)| p.kind == FileType::Signature && !p.partial && covers(p.end))
            .filter(|(_, p)| p.start.is_none_or(|st| st >= ch.start()))
            .min_by_key(|(_, p)| p.end)?;
        Some((
            sig.1.end,
            format!(
                "signature file {} is present but its manifest {} and volumes are missing",
                sig.0,
                manifest_name(sig.1.set, sig.1.start, sig.1.end, sig.1.encrypted)
            ),
        ))
    }

    /// The latest chain, which incrementals extend.
    pub fn last_chain(&self) -> Option<&Chain> {
        self.chains.last()
    }

    /// The chain whose state is wanted at `t` (reference 6.4): one spanning
    /// `t`, else the latest ending before `t`, else the oldest.
    pub fn chain_at(&self, t: Timestamp) -> Option<&Chain> {
        if let Some(ch) = self
            .chains
            .iter()
            .rev()
            .find(|ch| ch.start() <= t && t <= ch.end())
        {
            return Some(ch);
        }
        self.chains
            .iter()
            .rev()
            .find(|ch| ch.end() < t)
            .or_else(|| self.chains.first())
    }

    /// The signature chain ending where the given backup chain ends.
    pub fn sig_chain_for(&self, ch: &Chain) -> Option<&SigChain> {
        self.sig_chains.iter().rev().find(|s| s.end() == ch.end())
    }

    /// The signature chain for the state at `t`.
    pub fn sig_chain_at(&self, t: Timestamp) -> Option<&SigChain> {
        let ch = self.chain_at(t)?;
        self.sig_chains
            .iter()
            .rev()
            .find(|s| s.full.end == ch.start())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Collection {
        Collection::from_names(v, &Prefixes::default())
    }

    #[test]
    fn chains_and_orphans() {
        let c = names(&[
            "duplicity-full.20200101T000000Z.vol1.difftar.gz",
            "duplicity-full.20200101T000000Z.manifest",
            "duplicity-full-signatures.20200101T000000Z.sigtar.gz",
            "duplicity-inc.20200101T000000Z.to.20200102T000000Z.vol1.difftar.gz",
            "duplicity-inc.20200101T000000Z.to.20200102T000000Z.manifest",
            "duplicity-new-signatures.20200101T000000Z.to.20200102T000000Z.sigtar.gz",
            "duplicity-inc.20200105T000000Z.to.20200106T000000Z.vol1.difftar.gz",
            "duplicity-inc.20200105T000000Z.to.20200106T000000Z.manifest",
            "duplicity-full.20200201T000000Z.vol1.difftar.gz",
            "lockfile",
        ]);
        assert_eq!(c.chains.len(), 1);
        assert_eq!(c.chains[0].incs.len(), 1);
        assert_eq!(c.orphaned.len(), 1);
        assert_eq!(c.incomplete.len(), 1);
        assert_eq!(c.sig_chains.len(), 1);
        assert_eq!(c.sig_chains[0].incs.len(), 1);
        let ch = &c.chains[0];
        assert!(c.sig_chain_for(ch).is_some());
        let t = crate::time::from_filename("20200101T120000Z").unwrap();
        assert_eq!(ch.sets_at(t).len(), 1);
    }
}
